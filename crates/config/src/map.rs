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
