//! rmosix-lab: a virtual cluster on one machine, for tests, benchmarks and the demo.
//!
//! A [`Lab`] of N nodes gives each node its own network, UTS, mount and PID namespaces, a
//! private /tmp and /run, a cgroup with an optional CPU quota and memory limit, and an address
//! 10.231.0.K on a bridge in a hub namespace. Each node runs the workspace's `mosixd` with a shared map and
//! key in the lab dir (`/var/tmp/rmosix-lab-…`, which all nodes see). The host namespace
//! gets an `unreachable 10.231.0.0/16` route (left in place; it is idempotent and harmless),
//! so lab traffic never leaves the lab's namespaces. [`Node::command`] runs programs inside
//! a node, [`Node::kill`] makes a node die and [`Node::revive`] brings it back,
//! [`Node::cut`] and [`Node::heal`] partition it off and back, [`Node::stop_daemon`] and
//! [`Node::start_daemon`] restart its daemon under running jobs, [`Node::run`] and
//! [`Node::run_as`] run a tool there to its end ([`ToolRun`]). Dropping the lab removes every
//! namespace, interface and cgroup it made, also when a test panics; [`cleanup_stale`]
//! removes what crashed runs left.
//!
//! It needs root. Tests start with `if !rmosix_lab::require_root() { return; }`.
//!
//! This room leaves the daemon, the tools and their behaviour to `daemon` and `tools`; it
//! only builds the machine room they run in. Its door: [`Lab`], [`LabConfig`], [`Node`],
//! [`LabError`], [`cleanup_stale`], the jobs [`Job`] and [`Terminal`] (a program on a
//! pseudo-terminal), the process helpers [`child_of`], [`wait_child_of`], [`pid_in_node`],
//! the test helpers [`bin_dir_of_current_test`], [`require_root`] and [`compiled`] (a test's
//! C program), and the `rmosix-lab` binary's [`demo`], [`shell`] and [`bench`] (with its
//! [`BenchError`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod bench;
mod captured;
mod cgroup;
mod cmd;
mod cprog;
mod demo;
mod error;
mod execbench;
mod filebench;
mod iobench;
mod job;
mod lab;
mod makebench;
mod net;
mod node;
mod proc;
mod quietbench;
mod spreadbench;
mod terminal;
mod tool;
mod turns;
mod unequalbench;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

pub use bench::{BenchError, Scope, bench};
pub use captured::{Captured, wait_until};
pub use cprog::compiled;
pub use demo::{demo, shell};
pub use error::LabError;
pub use job::{
    Job, JobError, NodeProcess, calls_served_for, leftovers_in, log_field, processes_in,
};
pub use lab::{Lab, LabConfig, cleanup_stale};
pub use node::{BusyLoop, Node};
pub use proc::{child_of, pid_in_node, wait_child_of};
pub use terminal::{Program, Terminal};
pub use tool::ToolRun;

/// The most nodes a lab has.
pub const MAX_NODES: usize = 20;

/// How long the lab sleeps between two looks at something it waits for (a socket, a log
/// line, a process). Every wait also has a deadline.
const POLL: Duration = Duration::from_millis(10);

/// The message of a test skipped for want of root.
const SKIP: &str = "skipped: needs root for network namespaces";

/// The directory of the workspace binaries built with the running test:
/// `…/target/<profile>/deps/test-xxx` gives `…/target/<profile>`.
///
/// # Panics
/// If the running program's path cannot be read, or `mosixd` is not there (the message
/// says to build the workspace).
pub fn bin_dir_of_current_test() -> PathBuf {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => panic!("rmosix-lab: cannot find the running test's path: {e}"),
    };
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let daemon = dir.join("mosixd");
    if !daemon.is_file() {
        panic!("{}", LabError::MissingBinary { path: daemon });
    }
    dir
}

/// Whether this process runs as root (effective UID 0). If not, prints
/// `skipped: needs root for network namespaces` and returns false, unless
/// `RMOSIX_REQUIRE_ROOT=1`, where a skip is a failure.
///
/// # Panics
/// Without root when `RMOSIX_REQUIRE_ROOT=1`.
pub fn require_root() -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    if std::env::var_os("RMOSIX_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("{SKIP} (RMOSIX_REQUIRE_ROOT=1 forbids skipping)");
    }
    eprintln!("{SKIP}");
    false
}

/// The effective UID, from the second field of `Uid:` in /proc/self/status.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_read() {
        assert!(effective_uid().is_some());
    }
}
