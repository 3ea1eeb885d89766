//! rmosix config room: the cluster map (`/etc/mosix.map`) and node identity.
//!
//! This room turns the text of a MOSIX map into a [`Map`] of [`Node`]s, each with a [`NodeId`],
//! a main [`Host`] and any alias addresses, and answers "which node is this machine?"
//! ([`Map::find_own`], [`Map::check_own`]). Every fault is a [`MapError`] naming the file, the
//! line and what is wrong, e.g. `/etc/mosix.map:7: range 10-19 overlaps node 12 (line 3)`.
//!
//! It is pure: the only I/O is [`Map::load`] reading the file. Host names are stored
//! unresolved; resolving them (DNS) is the caller's business, passed in as a closure.
//!
//! # Map grammar
//!
//! ```text
//! # first-ID  address      count      a range: IDs 1..4 at 10.0.0.1..10.0.0.4
//! 1           10.0.0.1     4
//! 5           node5.lan    1          # a host name needs count 1
//! 6           fd00::10     2          # IPv6: consecutive addresses too
//! 3           192.168.1.3  ALIAS      # another address of node 3
//! ```
//!
//! IDs are 1-65535, fields are separated by spaces or tabs, `#` starts a comment, and a map
//! holds at most [`MAX_ENTRIES`] entry lines.
//!
//! The door: [`Map`], [`Node`], [`NodeId`], [`Host`], [`MapError`], [`ParseNodeIdError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod map;
mod node;
mod parse;

pub use error::MapError;
pub use map::Map;
pub use node::{Host, Node, NodeId, ParseNodeIdError};
pub use parse::MAX_ENTRIES;
