//! What can go wrong while measuring the node.

use std::io;
use std::path::PathBuf;

/// A failed measurement: which file, and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum GaugeError {
    /// A file the gauge needs could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file was read but did not hold what the kernel documents.
    #[error("{path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was missing or malformed, e.g. `no MemTotal line`.
        what: String,
    },
    /// A cgroup path given as text is not one.
    #[error("cgroup {path}: {what}")]
    CgroupPath {
        /// The text.
        path: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The cgroup named for the node does not exist.
    #[error("cgroup {cgroup} does not exist: no directory {}", dir.display())]
    NoSuchCgroup {
        /// The cgroup's path.
        cgroup: String,
        /// Where it would be, in the hierarchy of the `cpu` controller.
        dir: PathBuf,
    },
    /// No cgroup hierarchy this process sees carries the `cpu` controller at the cgroup named
    /// for the node.
    #[error("cgroup {cgroup}: no mounted cgroup hierarchy with the cpu controller shows it")]
    CgroupNotMounted {
        /// The cgroup's path.
        cgroup: String,
    },
    /// The thread CPU clock, used to time the speed loop, failed.
    #[error("cannot read the thread CPU clock")]
    Clock(#[source] nix::Error),
}
