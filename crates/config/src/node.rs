//! Node identity: [`NodeId`], [`Host`] and [`Node`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A node number from the map, 1-65535 (0 is never a node).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct NodeId(u16);

impl NodeId {
    /// The highest node number MOSIX allows.
    pub const MAX: NodeId = NodeId(u16::MAX);

    /// `Some` for 1-65535, `None` for 0.
    pub fn new(n: u16) -> Option<NodeId> {
        (n != 0).then_some(NodeId(n))
    }

    /// The number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<NodeId> for u16 {
    fn from(id: NodeId) -> u16 {
        id.0
    }
}

/// A node number that is not a decimal number in 1-65535.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node number must be 1-65535, got {text}")]
pub struct ParseNodeIdError {
    /// The text as given.
    pub text: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// Plain decimal digits only: no sign, no spaces (leading zeros are fine).
    fn from_str(s: &str) -> Result<NodeId, ParseNodeIdError> {
        let err = || ParseNodeIdError { text: s.to_owned() };
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        s.parse::<u16>().ok().and_then(NodeId::new).ok_or_else(err)
    }
}

/// Where a node is reached: an IP address, or a host name left for the caller to resolve.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name, as written in the map.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// One node of the map.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Node {
    /// Its number.
    pub id: NodeId,
    /// Its main address.
    pub host: Host,
    /// Further addresses, from `ALIAS` lines, in file order.
    pub aliases: Vec<Host>,
    /// The 1-based line of the map that defines it.
    pub line: usize,
}

impl Node {
    /// The main address, then the aliases.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.host).chain(&self.aliases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_refuses_zero() {
        assert_eq!(NodeId::new(0), None);
        assert_eq!(NodeId::new(7).map(NodeId::get), Some(7));
        assert_eq!(NodeId::MAX.get(), 65535);
    }

    #[test]
    fn parses_and_displays() {
        let id: NodeId = "42".parse().unwrap();
        assert_eq!(id.get(), 42);
        assert_eq!(id.to_string(), "42");
        assert_eq!("007".parse::<NodeId>().unwrap().get(), 7);
        assert_eq!("65535".parse::<NodeId>().unwrap(), NodeId::MAX);
    }

    #[test]
    fn parse_errors_name_the_text() {
        for bad in [
            "0",
            "65536",
            "99999999999999999999",
            "",
            "-1",
            "+1",
            " 1",
            "x",
            "1.5",
        ] {
            let err = bad.parse::<NodeId>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("node number must be 1-65535, got {bad}")
            );
        }
    }

    #[test]
    fn orders_by_number() {
        let ids: Vec<NodeId> = [3, 1, 2].into_iter().filter_map(NodeId::new).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(
            sorted.iter().map(|id| id.get()).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn host_displays() {
        assert_eq!(
            Host::Ip("10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
        assert_eq!(Host::Ip("fd00::1".parse().unwrap()).to_string(), "fd00::1");
        assert_eq!(Host::Name("node5.lan".into()).to_string(), "node5.lan");
    }
}
