//! Flags every tool shares, logging set-up, and one request to the daemon.

use std::io::{self, IsTerminal};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use tracing_subscriber::EnvFilter;

use rmosix_wire::{DEFAULT_SOCKET, DecodeError, LineReader, Reply, Request, SOCKET_ENV, send_line};

/// Flags of every tool; flatten into the tool's own clap struct.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Control socket of the local mosixd.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// Log filter for stderr, e.g. `debug` (default: $RUST_LOG, else warnings only).
    #[arg(long, value_name = "L", global = true)]
    pub log_level: Option<String>,
}

impl CommonArgs {
    /// Send tracing output to stderr as `--log-level` (else `RUST_LOG`, else `warn`) says.
    /// Call once, first thing in `main`.
    pub fn init_logging(&self) {
        let filter = match &self.log_level {
            Some(level) => EnvFilter::new(level),
            None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        };
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal())
            .init();
    }
}

/// Why the daemon gave no answer. (An answer that is [`Reply::Error`] is not an `AskError`.)
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The socket could not be reached: no daemon, or no permission.
    #[error("cannot reach mosixd at {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The request could not be sent.
    #[error("cannot send the request to mosixd")]
    Send(#[source] io::Error),
    /// The reply could not be read.
    #[error("cannot read mosixd's reply")]
    Receive(#[source] DecodeError),
    /// The daemon closed the connection without a reply.
    #[error("mosixd closed the connection without replying")]
    NoReply,
}

/// Send `request` to the daemon at `socket` and wait for its reply. Blocks until the daemon
/// answers; a `migrate` waits for the whole move.
pub fn ask(socket: &Path, request: &Request) -> Result<Reply, AskError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| AskError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    send_line(&mut stream, request).map_err(AskError::Send)?;
    LineReader::new()
        .recv(&mut stream)
        .map_err(AskError::Receive)?
        .ok_or(AskError::NoReply)
}
