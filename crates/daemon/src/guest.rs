//! Starting a guest for a session, and the guest mode of the `mosixd` binary.

use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;

use tokio::process::Child;

use crate::sys::{self, GuestCreds};

/// Start `mosixd guest` as the given user, connected to the returned socket.
///
/// A daemon running as root switches the guest to `creds`. A daemon run by an ordinary user
/// (for development) can only start guests as that user and refuses anyone else.
pub(crate) fn spawn_guest(creds: GuestCreds) -> io::Result<(Child, tokio::net::UnixStream)> {
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
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("guest")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    sys::prepare_guest(&mut cmd, theirs.as_raw_fd(), switch);
    let child = cmd.spawn()?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok((child, tokio::net::UnixStream::from_std(ours)?))
}

/// Body of `mosixd guest`: serve the session on fd 3 with the engine. Runs with the session
/// owner's credentials, already set by the daemon before exec.
pub fn run_guest() -> io::Result<()> {
    let fd = sys::take_guest_fd()?;
    rmosix_engine::serve_guest(std::os::unix::net::UnixStream::from(fd))
}
