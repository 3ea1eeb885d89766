//! [`LabError`]: one variant per step of building, using or tearing down a lab.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::MAX_NODES;

/// What went wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// Labs need root (network namespaces, cgroups, mounts).
    #[error("a lab needs root (network namespaces, cgroups, mounts)")]
    NeedsRoot,
    /// The configuration asks for no nodes or more than the subnet plan allows.
    #[error("a lab has 1 to {MAX_NODES} nodes, not {0}")]
    NodeCount(usize),
    /// The CPU quota is not a positive number of CPUs.
    #[error("a node's cpu quota is a positive number of CPUs, not {0}")]
    CpuQuota(f64),
    /// A node's memory limit is too small for its init and daemon to live.
    #[error("a node's memory limit is at least {least} MiB, not {mib}")]
    MemoryLimit {
        /// The limit asked for, in MiB.
        mib: u64,
        /// The least the lab sets, in MiB.
        least: u64,
    },
    /// A program the lab runs (mosixd, or for the demo mosrun, migrate, mosctl) is missing.
    #[error(
        "{}: not found; build the workspace first (`cargo build --workspace`, or `cargo test --workspace` for tests)",
        path.display()
    )]
    MissingBinary {
        /// Where the program was looked for.
        path: PathBuf,
    },
    /// A helper command (`ip`, `unshare`, ...) could not be started.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// A helper command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A file or directory of the lab (lab dir, map, key, log, cgroup file) could not be used.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What the lab was doing: "create", "write", "read", "remove".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No cgroup hierarchy on this machine offers the `cpu` controller.
    #[error(
        "no cgroup hierarchy with the cpu controller (looked for cgroup v1 at /sys/fs/cgroup/cpu and v2 at /sys/fs/cgroup and /sys/fs/cgroup/unified)"
    )]
    NoCpuCgroup,
    /// Memory limits were asked for, but no cgroup hierarchy offers the `memory` controller.
    #[error(
        "no cgroup hierarchy with the memory controller (looked for cgroup v1 at /sys/fs/cgroup/memory and v2 at /sys/fs/cgroup and /sys/fs/cgroup/unified)"
    )]
    NoMemoryCgroup,
    /// A node's namespaces did not come up: its launcher exited or its init never appeared.
    #[error("node {node}: {what}; log tail:\n{tail}")]
    NodeStart {
        /// The node.
        node: u16,
        /// What failed.
        what: String,
        /// The end of the node's log.
        tail: String,
    },
    /// A node's daemon did not create its socket in time.
    #[error("node {node}: no daemon socket {socket} after {timeout:?}; log tail:\n{tail}")]
    NotReady {
        /// The node.
        node: u16,
        /// The socket path inside the node.
        socket: &'static str,
        /// How long the lab waited.
        timeout: Duration,
        /// The end of the node's log.
        tail: String,
    },
    /// A node's daemon exited while the lab was starting.
    #[error("node {node}: daemon exited during start; log tail:\n{tail}")]
    DaemonExited {
        /// The node.
        node: u16,
        /// The end of the node's log.
        tail: String,
    },
    /// There is no daemon to stop, or one already runs where one should start.
    #[error("node {node}: {what}")]
    DaemonState {
        /// The node.
        node: u16,
        /// What was found, e.g. "no daemon runs".
        what: &'static str,
    },
    /// A daemon sent SIGTERM did not exit in time.
    #[error("node {node}: daemon still running {timeout:?} after SIGTERM; log tail:\n{tail}")]
    DaemonLingers {
        /// The node.
        node: u16,
        /// How long the lab waited.
        timeout: Duration,
        /// The end of the node's log.
        tail: String,
    },
    /// The daemon log never showed the awaited text.
    #[error("node {node}: log has no {needle:?} after {timeout:?}; log tail:\n{tail}")]
    LogTimeout {
        /// The node.
        node: u16,
        /// The awaited text.
        needle: String,
        /// How long the lab waited.
        timeout: Duration,
        /// The end of the node's log.
        tail: String,
    },
    /// A process got no child in time.
    #[error("process {pid} has no child after {timeout:?}")]
    NoChild {
        /// The parent, as the host sees it.
        pid: u32,
        /// How long the lab waited.
        timeout: Duration,
    },
    /// A process has no PID in a node's namespace (it is gone).
    #[error("process {pid} is gone or not in a node")]
    NotInNode {
        /// The process, as the host sees it.
        pid: u32,
    },
    /// Processes of a node were still alive when they should have been gone.
    #[error("node {node}: processes still alive {timeout:?} after the node was killed")]
    NodeLingers {
        /// The node.
        node: u16,
        /// How long the lab waited.
        timeout: Duration,
    },
    /// A cgroup could not be removed in time (it still has processes).
    #[error("cannot remove cgroup {} within {timeout:?}", path.display())]
    CgroupBusy {
        /// The cgroup directory.
        path: PathBuf,
        /// How long the lab waited.
        timeout: Duration,
        /// The last error from rmdir.
        #[source]
        source: io::Error,
    },
    /// Teardown went on past some failures; these are all of them.
    #[error("lab {lab}: teardown incomplete: {}", list(.errors))]
    Teardown {
        /// The lab's name.
        lab: String,
        /// Every step that failed.
        errors: Vec<LabError>,
    },
    /// A job of a batch (the spreading bench's, the demo's) printed less than it owes.
    #[error("`{command}` printed no {what}; its output:\n{output}")]
    JobOutput {
        /// The job's command line.
        command: String,
        /// What was missing.
        what: &'static str,
        /// What it printed.
        output: String,
    },
    /// Node 1 did not see every node up and idle in time.
    #[error("node 1 did not see every node idle within {timeout:?}; mosctl status:\n{status}")]
    NotIdle {
        /// How long the lab waited.
        timeout: Duration,
        /// What node 1's `mosctl status` printed last.
        status: String,
    },
    /// A job that moved printed otherwise than the same job never moved.
    #[error("`{command}` printed {moved:?} after its moves, {still:?} never moved")]
    Diverged {
        /// The job's command line.
        command: String,
        /// What it printed after moving.
        moved: String,
        /// What it printed never moved.
        still: String,
    },
    /// Jobs of a batch still ran at their deadline; they were killed.
    #[error("{running} of {jobs} jobs still ran after {timeout:?}")]
    BatchTimeout {
        /// How many still ran.
        running: usize,
        /// How many the batch had.
        jobs: usize,
        /// How long they were given.
        timeout: Duration,
    },
    /// A tool run in a node did not end in time; it was killed.
    #[error("`{command}` did not end within {timeout:?}")]
    ToolTimeout {
        /// The command line.
        command: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The demo was interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

fn list(errors: &[LabError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&e.to_string());
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
    }
    out
}
