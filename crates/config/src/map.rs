//! [`Map`]: the parsed cluster map and the questions asked of it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::MapError;
use crate::node::{Host, Node, NodeId};
use crate::parse;

/// A checked cluster map: at least one node, no number or address given twice, every alias
/// attached to a defined node.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Map {
    path: PathBuf,
    nodes: BTreeMap<NodeId, Node>,
}

impl Map {
    /// Where MOSIX keeps the map.
    pub const DEFAULT_PATH: &str = "/etc/mosix.map";

    /// Reads and parses the map at `path`.
    pub fn load(path: &Path) -> Result<Map, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Map::parse(&text, path)
    }

    /// Parses map text; `path` names the file in errors and in [`Map::path`].
    pub fn parse(text: &str, path: &Path) -> Result<Map, MapError> {
        Ok(Map {
            path: path.to_path_buf(),
            nodes: parse::parse(text, path)?,
        })
    }

    /// The file this map came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Node `id`, if the map has it.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// All nodes, lowest number first.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// Which node has one of these local addresses (main address or alias). `resolve` turns a
    /// host name into addresses (callers pass a DNS lookup; tests pass a closure); it is only
    /// called for nodes given by name. IPv4-mapped IPv6 addresses match their IPv4 form.
    ///
    /// Fails when no node matches, or when several do (then the caller should ask for an
    /// explicit node and use [`Map::check_own`]).
    pub fn find_own(
        &self,
        local: &[IpAddr],
        resolve: impl Fn(&str) -> Vec<IpAddr>,
    ) -> Result<NodeId, MapError> {
        let is_local = |ip: &IpAddr| local.iter().any(|l| l.to_canonical() == ip.to_canonical());
        let matches: Vec<NodeId> = self
            .nodes()
            .filter(|node| {
                node.hosts().any(|host| match host {
                    Host::Ip(ip) => is_local(ip),
                    Host::Name(name) => resolve(name).iter().any(is_local),
                })
            })
            .map(|node| node.id)
            .collect();
        match matches.as_slice() {
            [] => Err(MapError::NotFound {
                path: self.path.clone(),
                local: local.to_vec(),
            }),
            [one] => Ok(*one),
            _ => Err(MapError::Ambiguous {
                path: self.path.clone(),
                nodes: matches,
            }),
        }
    }

    /// Uses an explicitly chosen node (`--node N`): fails when the map does not have it.
    pub fn check_own(&self, id: NodeId) -> Result<NodeId, MapError> {
        if self.nodes.contains_key(&id) {
            Ok(id)
        } else {
            Err(MapError::NotInMap {
                path: self.path.clone(),
                node: id,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/etc/mosix.map";

    fn parse(text: &str) -> Result<Map, MapError> {
        Map::parse(text, Path::new(PATH))
    }

    fn id(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The error text for `text`, which must fail.
    fn fault(text: &str) -> String {
        match parse(text) {
            Ok(map) => panic!("parsed: {map:?}"),
            Err(err) => err.to_string(),
        }
    }

    fn hosts(map: &Map) -> Vec<(u16, String)> {
        map.nodes()
            .map(|n| (n.id.get(), n.host.to_string()))
            .collect()
    }

    #[test]
    fn range_gives_consecutive_ids_and_addresses() {
        let map = parse("1 10.0.0.1 4\n").unwrap();
        assert_eq!(
            hosts(&map),
            [
                (1, "10.0.0.1".into()),
                (2, "10.0.0.2".into()),
                (3, "10.0.0.3".into()),
                (4, "10.0.0.4".into()),
            ]
        );
        assert!(map.nodes().all(|n| n.line == 1 && n.aliases.is_empty()));
        assert_eq!(map.path(), Path::new(PATH));
    }

    #[test]
    fn range_crosses_octets() {
        let map = parse("10 10.0.0.254 3").unwrap();
        assert_eq!(map.node(id(12)).unwrap().host, Host::Ip(ip("10.0.1.0")));
    }

    #[test]
    fn ranges_to_the_very_end() {
        let map = parse("65535 255.255.255.255 1\n1 1.0.0.0 65534").unwrap();
        assert_eq!(map.nodes().count(), 65535);
        assert_eq!(
            map.node(NodeId::MAX).unwrap().host,
            Host::Ip(ip("255.255.255.255"))
        );
        assert_eq!(
            map.node(id(65534)).unwrap().host,
            Host::Ip(ip("1.0.255.253"))
        );
    }

    #[test]
    fn several_lines_in_any_order() {
        let map = parse("20 10.0.1.1 2\n1 10.0.0.1 2\n").unwrap();
        let ids: Vec<u16> = map.nodes().map(|n| n.id.get()).collect();
        assert_eq!(ids, [1, 2, 20, 21]);
        assert_eq!(map.node(id(20)).unwrap().line, 1);
        assert_eq!(map.node(id(1)).unwrap().line, 2);
        assert!(map.node(id(3)).is_none());
    }

    #[test]
    fn comments_blank_lines_and_tabs() {
        let text = "# cluster A\n\
                    \n\
                    \t  \n\
                    1\t10.0.0.1 \t 2   # two nodes\n\
                    #3 10.0.0.3 1\n\
                    \t3 10.0.0.9 1#tight comment\r\n";
        let map = parse(text).unwrap();
        assert_eq!(
            hosts(&map),
            [
                (1, "10.0.0.1".into()),
                (2, "10.0.0.2".into()),
                (3, "10.0.0.9".into()),
            ]
        );
        assert_eq!(map.node(id(3)).unwrap().line, 6);
    }

    #[test]
    fn ipv6_ranges() {
        let map = parse("1 fd00::fffe 3\n9 ::1 1").unwrap();
        assert_eq!(
            hosts(&map),
            [
                (1, "fd00::fffe".into()),
                (2, "fd00::ffff".into()),
                (3, "fd00::1:0".into()),
                (9, "::1".into()),
            ]
        );
    }

    #[test]
    fn host_name_with_count_one() {
        let map = parse("5 node5.lan 1\n6 Node6 1").unwrap();
        assert_eq!(
            map.node(id(5)).unwrap().host,
            Host::Name("node5.lan".into())
        );
        assert_eq!(map.node(id(6)).unwrap().host, Host::Name("Node6".into()));
    }

    #[test]
    fn aliases_attach_to_nodes_in_any_order() {
        let text = "2 192.168.1.2 ALIAS\n\
                    1 10.0.0.1 3\n\
                    2 node2-backup ALIAS\n\
                    3 fd00::3 ALIAS\n";
        let map = parse(text).unwrap();
        let two = map.node(id(2)).unwrap();
        assert_eq!(two.host, Host::Ip(ip("10.0.0.2")));
        assert_eq!(
            two.aliases,
            [
                Host::Ip(ip("192.168.1.2")),
                Host::Name("node2-backup".into())
            ]
        );
        assert_eq!(two.line, 2);
        assert_eq!(map.node(id(3)).unwrap().aliases, [Host::Ip(ip("fd00::3"))]);
        assert!(map.node(id(1)).unwrap().aliases.is_empty());
        assert_eq!(map.nodes().count(), 3);
    }

    #[test]
    fn exactly_max_entries_is_fine() {
        let text: String = (1..=256)
            .map(|n| format!("{n} 10.{}.{}.1 1\n", n / 256, n % 256))
            .collect();
        assert_eq!(parse(&text).unwrap().nodes().count(), 256);
    }

    #[test]
    fn field_count() {
        assert_eq!(
            fault("1 10.0.0.1 1\n\n2 10.0.0.2\n"),
            "/etc/mosix.map:3: expected 3 fields (node, address, count or ALIAS), found 2"
        );
        assert_eq!(
            fault("1 10.0.0.1 1 extra # comment"),
            "/etc/mosix.map:1: expected 3 fields (node, address, count or ALIAS), found 4"
        );
    }

    #[test]
    fn not_a_number() {
        assert_eq!(
            fault("one 10.0.0.1 1"),
            "/etc/mosix.map:1: node number 'one' is not a number"
        );
        assert_eq!(
            fault("-1 10.0.0.1 1"),
            "/etc/mosix.map:1: node number '-1' is not a number"
        );
        assert_eq!(
            fault("1 10.0.0.1 four"),
            "/etc/mosix.map:1: count 'four' is not a number"
        );
        // Only the upper-case word is the keyword.
        assert_eq!(
            fault("1 10.0.0.1 1\n1 10.0.0.9 alias"),
            "/etc/mosix.map:2: count 'alias' is not a number"
        );
    }

    #[test]
    fn bad_node_id() {
        assert_eq!(
            fault("0 10.0.0.1 1"),
            "/etc/mosix.map:1: node number must be 1-65535, got 0"
        );
        assert_eq!(
            fault("1 10.0.0.1 1\n65536 10.0.0.2 1"),
            "/etc/mosix.map:2: node number must be 1-65535, got 65536"
        );
        assert_eq!(
            fault("0 10.0.0.1 ALIAS"),
            "/etc/mosix.map:1: node number must be 1-65535, got 0"
        );
    }

    #[test]
    fn bad_address() {
        for bad in ["10.0.0.256", "10.0.0", "fe80::1%eth0", "no_such", "-x"] {
            assert_eq!(
                fault(&format!("1 {bad} 1")),
                format!("/etc/mosix.map:1: '{bad}' is neither an IP address nor a host name")
            );
        }
    }

    #[test]
    fn zero_count() {
        assert_eq!(
            fault("1 10.0.0.1 0"),
            "/etc/mosix.map:1: count must be at least 1"
        );
    }

    #[test]
    fn id_overflow() {
        assert_eq!(
            fault("65530 10.0.0.1 7"),
            "/etc/mosix.map:1: range of 7 nodes from 65530 runs past node 65535"
        );
        assert_eq!(
            fault("1 10.0.0.1 65536"),
            "/etc/mosix.map:1: range of 65536 nodes from 1 runs past node 65535"
        );
        assert_eq!(
            fault("1 10.0.0.1 99999999999999999999999"),
            "/etc/mosix.map:1: range of 99999999999999999999999 nodes from 1 runs past node 65535"
        );
    }

    #[test]
    fn name_range() {
        assert_eq!(
            fault("1 node1.lan 2"),
            "/etc/mosix.map:1: host name 'node1.lan' needs count 1, got 2"
        );
    }

    #[test]
    fn address_overflow() {
        assert_eq!(
            fault("1 255.255.255.254 3"),
            "/etc/mosix.map:1: range of 3 addresses from 255.255.255.254 runs past 255.255.255.255"
        );
        assert_eq!(
            fault("1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 2"),
            "/etc/mosix.map:1: range of 2 addresses from ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
             runs past ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn overlap() {
        let text = "1 10.0.0.1 2\n\
                    # spare\n\
                    12 10.0.0.12 1\n\
                    15 10.0.0.15 1\n\
                    \n\
                    \n\
                    10 10.0.1.10 10\n";
        assert_eq!(
            fault(text),
            "/etc/mosix.map:7: range 10-19 overlaps node 12 (line 3)"
        );
    }

    #[test]
    fn duplicate_node() {
        assert_eq!(
            fault("1 10.0.0.1 4\n3 10.0.1.3 1"),
            "/etc/mosix.map:2: node 3 is already defined (line 1)"
        );
    }

    #[test]
    fn duplicate_address() {
        assert_eq!(
            fault("1 10.0.0.1 4\n9 10.0.0.3 1"),
            "/etc/mosix.map:2: node 9 gets address 10.0.0.3, already given to node 3 (line 1)"
        );
        // The range's own addresses clash at its first shared one.
        assert_eq!(
            fault("5 10.0.0.3 1\n1 10.0.0.1 4"),
            "/etc/mosix.map:2: node 3 gets address 10.0.0.3, already given to node 5 (line 1)"
        );
        // IPv4-mapped IPv6 is the same address.
        assert_eq!(
            fault("1 10.0.0.1 1\n2 ::ffff:10.0.0.1 1"),
            "/etc/mosix.map:2: node 2 gets address ::ffff:10.0.0.1, already given to node 1 (line 1)"
        );
        // Host names compare without case.
        assert_eq!(
            fault("1 node.lan 1\n2 NODE.lan 1"),
            "/etc/mosix.map:2: node 2 gets address NODE.lan, already given to node 1 (line 1)"
        );
    }

    #[test]
    fn duplicate_alias_address() {
        assert_eq!(
            fault("1 10.0.0.1 2\n2 10.0.0.1 ALIAS"),
            "/etc/mosix.map:2: node 2 gets address 10.0.0.1, already given to node 1 (line 1)"
        );
        assert_eq!(
            fault("1 10.0.0.1 2\n1 10.9.0.1 ALIAS\n2 10.9.0.1 ALIAS"),
            "/etc/mosix.map:3: node 2 gets address 10.9.0.1, already given to node 1 (line 2)"
        );
    }

    #[test]
    fn too_many_entries() {
        let mut text = String::from("# big cluster\n");
        for n in 1..=257 {
            text.push_str(&format!("{n} 10.{}.{}.1 1\n", n / 256, n % 256));
        }
        assert_eq!(fault(&text), "/etc/mosix.map:258: more than 256 entries");
    }

    #[test]
    fn unknown_alias() {
        assert_eq!(
            fault("1 10.0.0.1 2\n3 10.0.0.3 ALIAS"),
            "/etc/mosix.map:2: ALIAS for node 3, which no other line defines"
        );
        // An alias does not define its node for another alias.
        assert_eq!(
            fault("1 10.0.0.1 1\n3 10.0.0.3 ALIAS\n3 10.0.0.4 ALIAS"),
            "/etc/mosix.map:2: ALIAS for node 3, which no other line defines"
        );
    }

    #[test]
    fn empty() {
        assert_eq!(fault(""), "/etc/mosix.map: no nodes in the map");
        assert_eq!(
            fault("# nothing yet\n\n  \t\n"),
            "/etc/mosix.map: no nodes in the map"
        );
    }

    #[test]
    fn syntax_faults_come_in_file_order() {
        assert_eq!(
            fault("1 10.0.0.1 2\n2 10.0.0.9 1\n3 bad_name 1"),
            "/etc/mosix.map:3: 'bad_name' is neither an IP address nor a host name"
        );
    }

    #[test]
    fn errors_name_the_given_path() {
        let err = Map::parse("0 10.0.0.1 1", Path::new("/tmp/test.map")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/tmp/test.map:1: node number must be 1-65535, got 0"
        );
    }

    #[test]
    fn load_reads_the_file() {
        let path = std::env::temp_dir().join(format!("rmosix-config-{}.map", std::process::id()));
        std::fs::write(&path, "1 10.0.0.1 2 # test\n").unwrap();
        let loaded = Map::load(&path);
        std::fs::remove_file(&path).unwrap();
        let map = loaded.unwrap();
        assert_eq!(map.path(), path);
        assert_eq!(map.nodes().count(), 2);
    }

    #[test]
    fn load_reports_read_errors() {
        let err = Map::load(Path::new("/nonexistent/rmosix/mosix.map")).unwrap_err();
        assert!(matches!(err, MapError::Read { .. }));
        assert_eq!(
            err.to_string(),
            "/nonexistent/rmosix/mosix.map: cannot read the map"
        );
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(
            source.downcast_ref::<std::io::Error>().unwrap().kind(),
            std::io::ErrorKind::NotFound
        );
    }

    fn no_dns(_: &str) -> Vec<IpAddr> {
        Vec::new()
    }

    #[test]
    fn find_own_by_address_and_alias() {
        let map = parse("1 10.0.0.1 4\n3 192.168.1.3 ALIAS\n9 fd00::9 1").unwrap();
        assert_eq!(
            map.find_own(&[ip("127.0.0.1"), ip("10.0.0.2")], no_dns)
                .unwrap(),
            id(2)
        );
        assert_eq!(map.find_own(&[ip("192.168.1.3")], no_dns).unwrap(), id(3));
        assert_eq!(map.find_own(&[ip("fd00::9")], no_dns).unwrap(), id(9));
        assert_eq!(
            map.find_own(&[ip("::ffff:10.0.0.4")], no_dns).unwrap(),
            id(4)
        );
    }

    #[test]
    fn find_own_resolves_names() {
        let map = parse("1 10.0.0.1 2\n5 node5.lan 1\n1 gw.lan ALIAS").unwrap();
        let dns = |name: &str| match name {
            "node5.lan" => vec![ip("10.1.0.5"), ip("fd00::5")],
            "gw.lan" => vec![ip("10.9.9.9")],
            _ => Vec::new(),
        };
        assert_eq!(map.find_own(&[ip("fd00::5")], dns).unwrap(), id(5));
        assert_eq!(map.find_own(&[ip("10.9.9.9")], dns).unwrap(), id(1));
        assert_eq!(map.find_own(&[ip("10.0.0.2")], dns).unwrap(), id(2));
    }

    #[test]
    fn find_own_not_found() {
        let map = parse("1 10.0.0.1 4").unwrap();
        let err = map
            .find_own(&[ip("127.0.0.1"), ip("192.168.1.7"), ip("::1")], no_dns)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/mosix.map: none of this machine's addresses (127.0.0.1, 192.168.1.7, ::1) is in the map"
        );
        assert_eq!(
            map.find_own(&[], no_dns).unwrap_err().to_string(),
            "/etc/mosix.map: none of this machine's addresses () is in the map"
        );
    }

    #[test]
    fn find_own_ambiguous() {
        let map = parse("1 10.0.0.1 4\n7 host7 1").unwrap();
        let err = map
            .find_own(&[ip("10.0.0.3"), ip("10.0.0.1"), ip("10.7.0.7")], |_| {
                vec![ip("10.7.0.7")]
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/mosix.map: this machine's addresses belong to several nodes (1, 3, 7); \
             choose one with --node"
        );
    }

    #[test]
    fn check_own() {
        let map = parse("1 10.0.0.1 4").unwrap();
        assert_eq!(map.check_own(id(4)).unwrap(), id(4));
        assert_eq!(
            map.check_own(id(5)).unwrap_err().to_string(),
            "/etc/mosix.map: node 5 is not in the map"
        );
    }

    /// A small xorshift generator: junk without a dependency, the same junk every run.
    struct Junk(u64);

    impl Junk {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            let n = usize::try_from(self.next() % from.len() as u64).unwrap_or(0);
            from[n]
        }
    }

    #[test]
    fn junk_never_panics() {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "9",
            "65535",
            "65536",
            "255",
            "10.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ALIAS",
            "alias",
            "node",
            "-",
            ".",
            ":",
            "#",
            " ",
            " ",
            "\t",
            "\n",
            "\r\n",
            "ö",
            "\u{0}",
            "99999999999999999999",
            "_",
            "%",
        ];
        let mut junk = Junk(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = junk.next() % 24;
            let text: String = (0..len).map(|_| junk.pick(PIECES)).collect();
            if let Ok(map) = parse(&text) {
                assert!(map.nodes().count() >= 1);
                let _ = map.find_own(&[ip("10.0.0.1")], |_| vec![ip("10.0.0.1")]);
            }
        }
    }

    #[test]
    fn structured_junk_never_panics() {
        // Lines of three plausible fields hit the semantic checks, not just the syntax ones.
        const IDS: &[&str] = &["1", "2", "3", "65534", "65535", "0", "x"];
        const ADDRESSES: &[&str] = &["10.0.0.1", "10.0.0.2", "255.255.255.255", "::1", "h", "H."];
        const THIRDS: &[&str] = &["1", "2", "3", "ALIAS", "0", "65535", "70000"];
        let mut junk = Junk(42);
        let mut parsed = 0;
        for _ in 0..5_000 {
            let lines = junk.next() % 6;
            let text: String = (0..lines)
                .map(|_| {
                    format!(
                        "{} {} {}\n",
                        junk.pick(IDS),
                        junk.pick(ADDRESSES),
                        junk.pick(THIRDS)
                    )
                })
                .collect();
            if parse(&text).is_ok() {
                parsed += 1;
            }
        }
        // Valid maps come up now and then, so both outcomes are exercised.
        assert!(parsed > 0);
    }
}
