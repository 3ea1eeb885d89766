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
    /// The thread CPU clock, used to time the speed loop, failed.
    #[error("cannot read the thread CPU clock")]
    Clock(#[source] nix::Error),
}
