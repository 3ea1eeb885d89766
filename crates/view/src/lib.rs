//! rmosix view room: what every node knows of the others, learnt by gossip.
//!
//! Each node publishes its [`NodeState`] (load, speed, CPUs, memory, utilisation, `mosctl`
//! modes, compatibility key) and learns everyone else's, with whether each node answers
//! ([`Liveness`]). Membership and failure detection are foca's (SWIM with suspicion; see
//! docs/gossip.md for why foca); the states travel as MOSIX's infod has them travel: every
//! time step each node refreshes its own entry and sends a window of the youngest entries
//! it holds to one random live node, each entry carrying its age rather than a clock.
//!
//! Every datagram is sealed with a key derived from the cluster key (AES-256-GCM), so a
//! machine without the key can neither read the view nor change it; datagrams from
//! addresses not in the map, from one node's address claiming another node, or seen before
//! are dropped and counted ([`Counters`]). The wire format is in `seal.rs` (the datagram),
//! `message.rs` (what it carries), `swim.rs` (foca's messages) and `state.rs` (an entry).
//!
//! This room leaves to others what the figures mean and where they come from (the daemon
//! measures them), and what to do with them (the balancer).
//!
//! The door: [`View`], [`ViewHandle`], [`Tuning`], [`NodeState`], [`Status`], [`NodeView`],
//! [`Liveness`], [`Counters`], [`PublishError`], [`DEFAULT_PORT`], [`MAX_COMPAT`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
mod message;
mod seal;
mod state;
mod swim;
mod table;

#[cfg(test)]
mod sim;

#[cfg(test)]
mod tests;

pub use engine::{DEFAULT_PORT, PublishError, Tuning, View, ViewHandle};
pub use state::{MAX_COMPAT, NodeState, Status};
pub use table::{Counters, Liveness, NodeView};
