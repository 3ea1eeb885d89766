//! Each tool's command line, flags every tool shares, logging set-up and output.
//!
//! The command lines live here rather than in the binaries so that what documents them (man
//! pages, shell completions: `rmosix-package`) reads the same clap definitions the tools
//! parse with.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

use tracing_subscriber::EnvFilter;

use rmosix_wire::{DAEMON_USER_ENV, DEFAULT_SOCKET, DaemonSocket, SOCKET_ENV};

pub mod migrate;
pub mod mosctl;
pub mod mosmon;
pub mod mosps;
pub mod mosrun;

/// Flags of every tool; flatten into the tool's own clap struct.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Control socket of the local mosixd.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// A user (name or uid) whose mosixd to trust besides root and yourself.
    #[arg(long, value_name = "USER", env = DAEMON_USER_ENV, value_parser = parse_user, global = true)]
    pub daemon_user: Option<u32>,
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

    /// The daemon these flags point at.
    pub fn daemon(&self) -> DaemonSocket {
        DaemonSocket {
            path: self.socket.clone(),
            trusted_user: self.daemon_user,
        }
    }
}

/// A user named by `--daemon-user` or [`DAEMON_USER_ENV`]: a uid, or a name in the user
/// database.
pub fn parse_user(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user {text:?}")),
        Err(e) => Err(format!("cannot look up user {text:?}: {e}")),
    }
}

/// Write `text` to stdout. A reader that has gone (`mosctl status | head -1`) ends the output
/// quietly: the tool has nothing more to say to anyone, so a broken pipe is no error.
pub fn print_out(text: &str) -> io::Result<()> {
    write_quietly(&mut io::stdout().lock(), text.as_bytes())
}

fn write_quietly(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_named_by_uid_or_name() {
        assert_eq!(parse_user("4242"), Ok(4242));
        assert_eq!(parse_user("root"), Ok(0));
        assert!(parse_user("no-such-user-rmosix").is_err());
    }

    #[test]
    fn a_broken_pipe_ends_the_output_quietly() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        drop(reader);
        // Rust programs ignore SIGPIPE, so the write fails with EPIPE instead of killing us.
        let big = vec![b'x'; 1 << 20];
        write_quietly(&mut writer, &big).unwrap();
        let mut full: &mut [u8] = &mut [0u8; 4];
        let err = write_quietly(&mut full, &big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }
}
