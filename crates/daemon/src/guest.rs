//! Starting a guest for a session, and the guest mode of the `mosixd` binary.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;

use rmosix_engine::{Channel, Left, Reports};
use rmosix_seal::{End, SessionKeys};
use tokio::process::Child;

use crate::sys::{self, FdLimit, GuestCreds};

/// Start `mosixd guest` as the given user on the session `socket`; the session keys reach it
/// through a pipe (never the command line or environment, which others may read).
///
/// A daemon running as root switches the guest to `creds`. A daemon run by an ordinary user
/// (for development) can only start guests as that user and refuses anyone else.
///
/// The guest does not depend on the daemon once started: it owns its session socket and
/// runs in a session of its own, and nothing kills it when the returned `Child` is dropped.
/// So a daemon that stops (a restart, a package upgrade) leaves the processes it hosts
/// running; the new daemon does not need to know them.
pub(crate) fn spawn_guest(
    creds: GuestCreds,
    socket: OwnedFd,
    keys: &SessionKeys,
    fd_limit: FdLimit,
) -> io::Result<Child> {
    let euid = nix::unistd::geteuid().as_raw();
    let switch = if euid == 0 {
        Some(creds)
    } else if creds.uid == euid {
        None
    } else {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "daemon runs as uid {euid}, cannot start a guest for uid {}",
                creds.uid
            ),
        ));
    };
    let (keys_read, keys_write) = std::io::pipe()?;
    // 64 bytes fit any pipe buffer: this write never blocks.
    (&keys_write).write_all(&keys.to_bytes())?;
    drop(keys_write);
    let keys_read = OwnedFd::from(keys_read);
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("guest").stdin(Stdio::null()).stdout(Stdio::null());
    let socket = sys::above_guest_fds(socket.as_fd())?;
    let keys_read = sys::above_guest_fds(keys_read.as_fd())?;
    sys::prepare_guest(
        &mut cmd,
        [socket.as_raw_fd(), keys_read.as_raw_fd()],
        switch,
        fd_limit,
    );
    cmd.spawn()
}

/// Body of `mosixd guest`: serve the session on fd 3 with the keys from fd 4. Runs with the
/// session owner's credentials, already set by the daemon before exec.
pub fn run_guest() -> io::Result<()> {
    let [socket, keys_pipe] = sys::take_guest_fds()?;
    let mut raw = [0u8; 64];
    std::fs::File::from(keys_pipe).read_exact(&mut raw)?;
    let keys = SessionKeys::from_bytes(&raw)?;
    let channel = Channel::sealed(std::net::TcpStream::from(socket), &keys, End::Guest)?;
    rmosix_engine::serve_guest(channel, &mut LogReports)
}

/// A guest's reports, as lines of its log.
struct LogReports;

impl Reports for LogReports {
    fn running(&mut self, husk: i32, home_pid: i32) {
        tracing::info!(husk, home_pid, "hosting a process");
    }

    fn left(&mut self, how: Left) {
        tracing::info!(?how, "the process left");
    }
}
