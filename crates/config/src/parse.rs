//! The map grammar: lines into entries, entries into nodes.
//!
//! Checking runs in two passes. The first reads every line on its own (field count, numbers,
//! addresses), so syntax faults are reported in file order. The second lays the ranges out,
//! in file order, then the `ALIAS` lines, which may name a node defined further down.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use crate::error::MapError;
use crate::node::{Host, Node, NodeId};

/// The most entry lines (not blank, not comment) a map may hold, as in MOSIX.
pub const MAX_ENTRIES: usize = 256;

/// The third field's keyword for an additional address of an existing node.
const ALIAS: &str = "ALIAS";

/// One entry line, checked on its own.
struct Entry {
    line: usize,
    id: NodeId,
    host: Host,
    kind: Kind,
}

enum Kind {
    /// `count` nodes from `id` at consecutive addresses from `host` (a name only when 1).
    Range { count: u16 },
    /// `host` is another address of node `id`.
    Alias,
}

/// Parses a whole map. `path` only names the file in errors.
pub(crate) fn parse(text: &str, path: &Path) -> Result<BTreeMap<NodeId, Node>, MapError> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split_once('#').map_or(raw, |(before, _)| before);
        let fields: Vec<&str> = content.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if entries.len() == MAX_ENTRIES {
            return Err(MapError::TooManyEntries {
                path: path.to_path_buf(),
                line,
            });
        }
        entries.push(parse_entry(&fields, line, path)?);
    }
    build(entries, path)
}

/// Checks one entry line's fields.
fn parse_entry(fields: &[&str], line: usize, path: &Path) -> Result<Entry, MapError> {
    let &[id_text, address_text, third] = fields else {
        return Err(MapError::FieldCount {
            path: path.to_path_buf(),
            line,
            found: fields.len(),
        });
    };
    let not_a_number = |field, text: &str| MapError::NotANumber {
        path: path.to_path_buf(),
        line,
        field,
        text: text.to_owned(),
    };
    if !is_decimal(id_text) {
        return Err(not_a_number("node number", id_text));
    }
    let id: NodeId = id_text.parse().map_err(|_| MapError::BadNodeId {
        path: path.to_path_buf(),
        line,
        text: id_text.to_owned(),
    })?;
    let kind = if third == ALIAS {
        Kind::Alias
    } else {
        if !is_decimal(third) {
            return Err(not_a_number("count", third));
        }
        // Digits too many for a u32 are a range past 65535 all the same.
        let count = third.parse::<u32>().unwrap_or(u32::MAX);
        if count == 0 {
            return Err(MapError::ZeroCount {
                path: path.to_path_buf(),
                line,
            });
        }
        let last = u32::from(id.get()) + (count - 1).min(u32::from(u16::MAX));
        match u16::try_from(count) {
            Ok(count) if last <= u32::from(u16::MAX) => Kind::Range { count },
            _ => {
                return Err(MapError::IdOverflow {
                    path: path.to_path_buf(),
                    line,
                    first: id,
                    count: third.to_owned(),
                });
            }
        }
    };
    let host = parse_host(address_text).ok_or_else(|| MapError::BadAddress {
        path: path.to_path_buf(),
        line,
        text: address_text.to_owned(),
    })?;
    if let Kind::Range { count } = kind {
        match &host {
            Host::Name(name) if count > 1 => {
                return Err(MapError::NameRange {
                    path: path.to_path_buf(),
                    line,
                    name: name.clone(),
                    count,
                });
            }
            Host::Ip(ip) if nth_address(*ip, count - 1).is_none() => {
                return Err(MapError::AddressOverflow {
                    path: path.to_path_buf(),
                    line,
                    address: *ip,
                    count,
                });
            }
            _ => {}
        }
    }
    Ok(Entry {
        line,
        id,
        host,
        kind,
    })
}

/// Lays out the checked entries: ranges first, in file order, then aliases.
fn build(entries: Vec<Entry>, path: &Path) -> Result<BTreeMap<NodeId, Node>, MapError> {
    let mut nodes: BTreeMap<NodeId, Node> = BTreeMap::new();
    // Who holds each address already: (node, line).
    let mut owners: HashMap<HostKey, (NodeId, usize)> = HashMap::new();
    let mut claim = |host: &Host, id: NodeId, line: usize| match owners.get(&HostKey::of(host)) {
        Some(&(other_node, other_line)) => Err(MapError::DuplicateAddress {
            path: path.to_path_buf(),
            line,
            node: id,
            address: host.clone(),
            other_node,
            other_line,
        }),
        None => {
            owners.insert(HostKey::of(host), (id, line));
            Ok(())
        }
    };

    let (ranges, aliases): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|entry| matches!(entry.kind, Kind::Range { .. }));
    for entry in ranges {
        let Kind::Range { count } = entry.kind else {
            continue;
        };
        let first = entry.id;
        // parse_entry checked that the range ends at or below 65535.
        let last = NodeId::new(first.get() + (count - 1)).unwrap_or(NodeId::MAX);
        if let Some((&node, clash)) = nodes.range(first..=last).next() {
            let other_line = clash.line;
            return Err(if count == 1 {
                MapError::DuplicateNode {
                    path: path.to_path_buf(),
                    line: entry.line,
                    node,
                    other_line,
                }
            } else {
                MapError::Overlap {
                    path: path.to_path_buf(),
                    line: entry.line,
                    first,
                    last,
                    node,
                    other_line,
                }
            });
        }
        for offset in 0..count {
            let id = NodeId::new(first.get() + offset).unwrap_or(NodeId::MAX);
            let host = match &entry.host {
                // parse_entry checked that the addresses do not run out.
                Host::Ip(ip) => Host::Ip(nth_address(*ip, offset).unwrap_or(*ip)),
                Host::Name(name) => Host::Name(name.clone()),
            };
            claim(&host, id, entry.line)?;
            nodes.insert(
                id,
                Node {
                    id,
                    host,
                    aliases: Vec::new(),
                    line: entry.line,
                },
            );
        }
    }
    for entry in aliases {
        let Some(node) = nodes.get_mut(&entry.id) else {
            return Err(MapError::UnknownAlias {
                path: path.to_path_buf(),
                line: entry.line,
                node: entry.id,
            });
        };
        claim(&entry.host, entry.id, entry.line)?;
        node.aliases.push(entry.host);
    }
    if nodes.is_empty() {
        return Err(MapError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(nodes)
}

/// Plain decimal digits, at least one.
fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// An IP address, else a host name (RFC 1123 labels), else `None`.
fn parse_host(text: &str) -> Option<Host> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Host::Ip(ip));
    }
    is_host_name(text).then(|| Host::Name(text.to_owned()))
}

/// Letters, digits and inner hyphens in dot-separated labels of 1-63 bytes, 253 bytes in all,
/// one trailing dot allowed. The last label may not be all digits (RFC 3696 section 2), so a
/// mistyped address such as `10.0.0.256` is not taken for a name.
fn is_host_name(text: &str) -> bool {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.split('.').all(label_ok) && !name.rsplit('.').next().is_some_and(is_decimal)
}

/// `ip` plus `offset`, in the same family; `None` past the family's last address.
fn nth_address(ip: IpAddr, offset: u16) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add(u32::from(offset))
            .map(|n| IpAddr::from(n.to_be_bytes())),
        IpAddr::V6(v6) => u128::from(v6)
            .checked_add(u128::from(offset))
            .map(|n| IpAddr::from(n.to_be_bytes())),
    }
}

/// An address as compared for duplicates: IPv4-mapped IPv6 as IPv4, names without case or
/// trailing dot.
#[derive(PartialEq, Eq, Hash)]
pub(crate) enum HostKey {
    Ip(IpAddr),
    Name(String),
}

impl HostKey {
    pub(crate) fn of(host: &Host) -> HostKey {
        match host {
            Host::Ip(ip) => HostKey::Ip(ip.to_canonical()),
            Host::Name(name) => {
                HostKey::Name(name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        for good in ["node5", "node5.lan", "a-b.example.org", "node5.lan.", "x1"] {
            assert!(is_host_name(good), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 127].join(".") + ".bc";
        for bad in [
            "",
            ".",
            "-node",
            "node-",
            "a..b",
            "under_score",
            "10.0.0.256",
            "10.0.0",
            "1",
            "fe80::1%eth0",
            "nöde",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn next_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(nth_address(ip("10.0.0.255"), 1), Some(ip("10.0.1.0")));
        assert_eq!(
            nth_address(ip("255.255.255.255"), 0),
            Some(ip("255.255.255.255"))
        );
        assert_eq!(nth_address(ip("255.255.255.255"), 1), None);
        assert_eq!(nth_address(ip("fd00::ffff"), 1), Some(ip("fd00::1:0")));
        assert_eq!(
            nth_address(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1),
            None
        );
    }

    #[test]
    fn host_keys_ignore_case_dot_and_mapping() {
        let key = |h: Host| HostKey::of(&h);
        assert!(key(Host::Name("Node5.LAN.".into())) == key(Host::Name("node5.lan".into())));
        assert!(
            key(Host::Ip("::ffff:10.0.0.1".parse().unwrap()))
                == key(Host::Ip("10.0.0.1".parse().unwrap()))
        );
    }
}
