//! rmosix daemon room: `mosixd`, the per-node daemon that wires the other rooms together.
//!
//! It listens in two places:
//!
//! * on TCP for other nodes' daemons. Every connection must complete the transport room's
//!   authenticated handshake and then say what it wants in a [`rmosix_wire::LinkHello`]: a
//!   ping, a recall of a process the peer hosts (`mosctl expel`), MFS calls (`files`),
//!   or a guest session, for which the daemon starts `mosixd guest` under the requested
//!   uid and groups and pipes the link's bytes to it ([`run_guest`] is that mode's body);
//! * on a Unix socket for the local tools and job supervisors (`mosrun`), speaking the wire
//!   room's control protocol. It keeps the table of supervised processes, checks who may
//!   move what, and hands migrations to the supervisor that owns the process. The guests it
//!   started report there too, each the process it hosts; only a guest this node started may
//!   (see `records`), and anyone may list them. Root sets the node's modes there
//!   (`mosctl block`, `expel`, `bring`; see `modes`).
//!
//! No user or stranger may take what the others need: each client's identity is the one the
//! kernel recorded for its connection, connections are counted per user and per address
//! against the daemon's descriptors, idle ones are closed, and failures anyone can cause
//! are logged at a bounded rate (docs/security.md).
//!
//! It joins the cluster view (`cluster`): it measures its node with the gauge room, publishes
//! the figures every second through the view room's gossip, reloads the map on SIGHUP and
//! leaves the view on SIGTERM; `mosctl status|getload|...|setspeed` read and set them.
//!
//! Unless started with `--no-balance` it runs the balancing loop (`balancer`): once a second
//! it asks the balance room where this node's own processes and its guests should run, orders
//! its own processes' moves from their supervisors as `migrate` would, and sends guests home
//! by the recall `expel` uses.
//!
//! With `--metrics ADDR` it serves its figures to Prometheus (`metrics`, docs/metrics.md):
//! loads and liveness, processes and guests, moves with their image sizes and freeze times,
//! forwarded-call times, gossip drops. The supervisors tally what only they see.
//!
//! Unless started with `--no-mfs` it mounts MFS at `/mfs` (`files`, docs/mfs.md) and serves
//! this node's files to the other nodes' MFS on `Purpose::Files` links, each call as its
//! caller; `mosctl nomfs|mfs` closes and opens them.
//!
//! On a node crowded with jobs (a thousand under `mosrun`) its threads wait for a CPU far
//! longer than they work, each wake-up tens of milliseconds, so it keeps both few: it runs at
//! nice -20 with at least two runtime threads, accepts on whichever runtime thread is free and
//! serves a connection on the thread that accepted it, and reads /proc where a runtime thread
//! would block: the balancing loop's samples and the lists of `mosps` and `mosctl guests` on
//! the blocking pool, a report's one read in `block_in_place`, none under the table's lock
//! (docs/balancing.md, "Failures", the thousand jobs).
//!
//! Placement policy, membership and the migration engine itself live in other rooms.
//!
//! The door: [`cli`] (`mosixd`'s command line), [`Config`], [`Daemon`], [`DaemonError`],
//! [`RecordsError`], [`run_guest`].
#![warn(missing_docs)]

mod balancer;
pub mod cli;
mod cluster;
mod control;
mod daemon;
mod files;
mod guest;
mod guests;
mod hosted;
mod limits;
mod metrics;
mod modes;
mod own;
mod peer;
mod processes;
mod procfs;
mod programs;
mod records;
mod reports;
mod sys;
mod table;
mod throttle;

pub use daemon::{Config, Daemon, DaemonError};
pub use guest::run_guest;
pub use records::RecordsError;
pub use sys::raise_priority;

/// An error and its sources as one line, `outer: inner: innermost`, for logs and for error
/// messages that cross to a client.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
