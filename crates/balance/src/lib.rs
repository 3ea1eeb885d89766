//! rmosix balance room: where processes should run, as a pure function.
//!
//! Each node's daemon calls [`decide`] about once a second for the processes running on it,
//! its own and guests, with what it knows of the cluster ([`ClusterView`] of [`NodeInfo`]s
//! with their [`Modes`]), of the links ([`LinkSpeeds`]), and of each [`Process`] (its
//! [`Usage`] statistics, decayed by [`DecayClass`] from raw [`Sample`]s). It gets back
//! [`Decision`]s: move this process there, or bring it home, each with a [`Reason`]. Processes
//! that should stay get none.
//!
//! The room does no I/O, keeps no state between rounds and knows no clock: time, the round
//! number that seeds its choices, and every figure are inputs, so a decision can be replayed
//! and every rule is unit-tested on small made-up views. Gossip (filling the view), reading
//! `/proc` (the samples) and carrying out moves belong to the daemon.
//!
//! The rules, their constants ([`Policy`]) and the cases they get wrong are in
//! docs/balancing.md.
//!
//! The door: [`decide`], [`ready_to_leave`] (published with the load), [`best_node`] and [`Placing`] (an operator's order), [`Policy`], [`Round`], [`ClusterView`], [`NodeInfo`], [`Modes`],
//! [`LinkSpeeds`], [`Process`], [`ProcessId`], [`Usage`], [`Sample`], [`DecayClass`],
//! [`Traffic`] and [`DataNode`] (where a process's file traffic goes),
//! [`Decision`], [`Reason`], [`NodeId`] (the config room's), and the constants
//! [`STANDARD_SPEED`], [`ONE_PROCESS`], [`SLOW_KEEP_PER_MILLE`], [`FAST_KEEP_PER_MILLE`],
//! [`PRIOR_SECONDS`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decide;
mod flood;
mod traffic;
mod usage;
mod view;

/// The balancer at scale, simulated (docs/balancing.md, "Simulation").
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use decide::{
    DataNode, Decision, Placing, Policy, Process, ProcessId, Reason, Round, best_node, decide,
    ready_to_leave,
};
pub use rmosix_config::NodeId;
pub use traffic::Traffic;
pub use usage::{
    DecayClass, FAST_KEEP_PER_MILLE, PRIOR_SECONDS, SLOW_KEEP_PER_MILLE, Sample, Usage,
};
pub use view::{ClusterView, LinkSpeeds, Modes, NodeInfo, ONE_PROCESS, STANDARD_SPEED};
