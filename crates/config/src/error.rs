//! [`MapError`]: every way a map can be unreadable, malformed or not name this machine.

use std::fmt::Display;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::node::{Host, NodeId};
use crate::parse::MAX_ENTRIES;

/// A map that cannot be used, or a node that cannot be found in it.
///
/// Line faults carry the map's path and the 1-based line; their text reads
/// `/etc/mosix.map:7: range 10-19 overlaps node 12 (line 3)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The file could not be read.
    #[error("{path}: cannot read the map")]
    Read {
        /// The map file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// An entry line without exactly three fields.
    #[error("{path}:{line}: expected 3 fields (node, address, count or ALIAS), found {found}")]
    FieldCount {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// How many fields the line has.
        found: usize,
    },

    /// A node number or count that is not a decimal number.
    #[error("{path}:{line}: {field} '{text}' is not a number")]
    NotANumber {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// Which field: `node number` or `count`.
        field: &'static str,
        /// The field as written.
        text: String,
    },

    /// A node number of 0 or above 65535.
    #[error("{path}:{line}: node number must be 1-65535, got {text}")]
    BadNodeId {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The number as written.
        text: String,
    },

    /// An address field that is neither an IP address nor a host name.
    #[error("{path}:{line}: '{text}' is neither an IP address nor a host name")]
    BadAddress {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The field as written.
        text: String,
    },

    /// A range of 0 nodes.
    #[error("{path}:{line}: count must be at least 1")]
    ZeroCount {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
    },

    /// A range that runs past node 65535.
    #[error("{path}:{line}: range of {count} nodes from {first} runs past node 65535")]
    IdOverflow {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The first node of the range.
        first: NodeId,
        /// The count as written.
        count: String,
    },

    /// A host name with a count above 1 (names have no "next address").
    #[error("{path}:{line}: host name '{name}' needs count 1, got {count}")]
    NameRange {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The host name.
        name: String,
        /// The count.
        count: u16,
    },

    /// A range whose addresses run past the last IPv4 (or IPv6) address.
    #[error("{path}:{line}: range of {count} addresses from {address} runs past {}", last_address(.address))]
    AddressOverflow {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The first address of the range.
        address: IpAddr,
        /// The count.
        count: u16,
    },

    /// A range of several nodes that takes a node number already defined.
    #[error("{path}:{line}: range {first}-{last} overlaps node {node} (line {other_line})")]
    Overlap {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The first node of the range.
        first: NodeId,
        /// The last node of the range.
        last: NodeId,
        /// The first node of the range that is already defined.
        node: NodeId,
        /// The line that defines it.
        other_line: usize,
    },

    /// A single node whose number is already defined.
    #[error("{path}:{line}: node {node} is already defined (line {other_line})")]
    DuplicateNode {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The node.
        node: NodeId,
        /// The line that defines it first.
        other_line: usize,
    },

    /// An address (or host name) given twice.
    #[error(
        "{path}:{line}: node {node} gets address {address}, already given to node {other_node} (line {other_line})"
    )]
    DuplicateAddress {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The node this line gives the address to.
        node: NodeId,
        /// The address.
        address: Host,
        /// The node that has it already.
        other_node: NodeId,
        /// The line that gave it.
        other_line: usize,
    },

    /// More entry lines than a map may hold.
    #[error("{path}:{line}: more than {MAX_ENTRIES} entries")]
    TooManyEntries {
        /// The map file.
        path: PathBuf,
        /// The 1-based line of the first entry too many.
        line: usize,
    },

    /// An `ALIAS` line for a node that no range defines.
    #[error("{path}:{line}: ALIAS for node {node}, which no other line defines")]
    UnknownAlias {
        /// The map file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The node.
        node: NodeId,
    },

    /// A map without nodes.
    #[error("{path}: no nodes in the map")]
    Empty {
        /// The map file.
        path: PathBuf,
    },

    /// None of the local addresses belongs to a node.
    #[error("{path}: none of this machine's addresses ({}) is in the map", list(.local))]
    NotFound {
        /// The map file.
        path: PathBuf,
        /// The addresses looked for.
        local: Vec<IpAddr>,
    },

    /// The local addresses belong to more than one node.
    #[error("{path}: this machine's addresses belong to several nodes ({}); choose one with --node", list(.nodes))]
    Ambiguous {
        /// The map file.
        path: PathBuf,
        /// The nodes that match, lowest first.
        nodes: Vec<NodeId>,
    },

    /// An explicitly chosen node that the map does not have.
    #[error("{path}: node {node} is not in the map")]
    NotInMap {
        /// The map file.
        path: PathBuf,
        /// The node asked for.
        node: NodeId,
    },
}

/// `a, b, c`.
fn list<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The highest address of `address`'s family.
fn last_address(address: &IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => IpAddr::from([u8::MAX; 4]),
        IpAddr::V6(_) => IpAddr::from([u16::MAX; 8]),
    }
}
