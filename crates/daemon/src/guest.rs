//! Starting a guest for a session, and the guest mode of the `mosixd` binary.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;

use rmosix_engine::Channel;
use rmosix_seal::{End, SessionKeys};
use rmosix_wire::DaemonSocket;
use tokio::process::Child;

use crate::daemon::Shared;
use crate::procfs;
use crate::records::Spawned;
use crate::reports::DaemonReports;
use crate::sys::{self, GuestCreds};

/// What ps shows for a guest: the daemon's name.
const GUEST_NAME: &str = "mosixd";
const GUEST_NAME_C: &std::ffi::CStr = c"mosixd";
/// Start `mosixd guest` as the given user on the session `socket`, for a session from node
/// `from`, and record it (see `records`); the session keys reach it through a pipe (never the
/// command line or environment, which others may read). It reports to this daemon's socket.
///
/// A daemon running as root switches the guest to `creds`. A daemon run by an ordinary user
/// (for development) can only start guests as that user and refuses anyone else.
///
/// The guest does not depend on the daemon once started: it owns its session socket and
/// runs in a session of its own, and nothing kills it when the returned `Child` is dropped.
/// So a daemon that stops (a restart, a package upgrade) leaves the processes it hosts
/// running; the guests register with the next daemon, which finds their records.
pub(crate) fn spawn_guest(
    shared: &Shared,
    from: u16,
    creds: GuestCreds,
    socket: OwnedFd,
    keys: &SessionKeys,
) -> io::Result<(Child, Spawned)> {
    let euid = nix::unistd::geteuid().as_raw();
    let uid = creds.uid;
    let digests = digests_arg(shared, &creds);
    let switch = if euid == 0 {
        Some(creds)
    } else if uid == euid {
        None
    } else {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("daemon runs as uid {euid}, cannot start a guest for uid {uid}"),
        ));
    };
    let (keys_read, keys_write) = std::io::pipe()?;
    let keys_read = OwnedFd::from(keys_read);
    // The daemon's own binary, even once another replaced it on disk (an upgrade): a guest
    // runs the version of the daemon that accepted its session, and is started at all (the
    // path of a replaced binary names nothing).
    let mut cmd = tokio::process::Command::new("/proc/self/exe");
    cmd.arg0(GUEST_NAME)
        .arg("guest")
        .arg("--report-to")
        .arg(&shared.socket)
        .arg("--home")
        .arg(from.to_string())
        .args(dfsa_args(shared))
        .args(digests)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let socket = sys::above_guest_fds(socket.as_fd())?;
    let keys_read = sys::above_guest_fds(keys_read.as_fd())?;
    sys::prepare_guest(
        &mut cmd,
        [socket.as_raw_fd(), keys_read.as_raw_fd()],
        switch,
        shared.guest_fd_limit,
    );
    let mut child = cmd.spawn()?;
    // The keys only once the record is there: the guest registers after reading them, and
    // finds itself recorded. A guest that gets no keys (the pipe closes empty) ends at once.
    let record = match record(shared, &child, uid, from) {
        Ok(record) => record,
        Err(e) => {
            let _ = child.start_kill();
            return Err(e);
        }
    };
    // 64 bytes fit any pipe buffer: this write never blocks.
    if let Err(e) = (&keys_write).write_all(&keys.to_bytes()) {
        let _ = child.start_kill();
        shared.records.remove(&record);
        return Err(e);
    }
    Ok((child, record))
}

/// The guest's option that names the directory where the guests of its user keep the
/// digests of files (see `rmosix_engine::keep_digests_in`): `DIGESTS/UID` beside the
/// control socket, made for the user (0700, theirs) the first time. Nothing if it cannot
/// be made: the guest then reads every file it needs a digest of.
fn digests_arg(shared: &Shared, creds: &GuestCreds) -> Option<String> {
    let dir = shared
        .socket
        .with_extension("digests")
        .join(creds.uid.to_string());
    match sys::user_dir(&dir, creds.uid, creds.gid) {
        Ok(()) => Some(format!("--digests={}", dir.display())),
        Err(err) => {
            tracing::warn!(dir = %dir.display(), %err, "no directory for the user's digests");
            None
        }
    }
}

/// The guest's options that name this node's file systems that are the same everywhere.
fn dfsa_args(shared: &Shared) -> Vec<String> {
    let consistent = shared.consistent.get().cloned().unwrap_or_default();
    let mfs = consistent.mfs.map(|dir| format!("--dfsa-mfs={dir}"));
    let mounts = consistent
        .mounts
        .into_iter()
        .map(|dir| format!("--dfsa={dir}"));
    let system = (consistent.system.into_iter()).map(|prefix| format!("--dfsa-system={prefix}"));
    mfs.into_iter().chain(mounts).chain(system).collect()
}

/// Record a guest just spawned: its PID and start time (it has not been reaped, so its PID is
/// still its own), the uid it runs as and its home node.
fn record(shared: &Shared, child: &Child, uid: u32, home_node: u16) -> io::Result<Spawned> {
    let pid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("the guest has no PID"))?;
    let record = Spawned {
        pid,
        start_ticks: procfs::read_stat(pid)?.start_ticks,
        uid,
        home_node,
    };
    shared.records.add(&record)?;
    Ok(record)
}

/// Body of `mosixd guest`: serve the session on fd 3 with the keys from fd 4, reporting to the
/// daemon at `report_to` as a guest for a session from node `home_node`. Runs with the
/// session owner's credentials, already set by the daemon before exec.
/// `consistent`: this node's file systems that are the same everywhere (DFSA).
pub fn run_guest(
    report_to: &Path,
    home_node: u16,
    consistent: &rmosix_engine::Consistent,
) -> io::Result<()> {
    // Started through /proc/self/exe, whose name the kernel gave it: ps shows the daemon's.
    nix::sys::prctl::set_name(GUEST_NAME_C).map_err(io::Error::from)?;
    let [socket, keys_pipe] = sys::take_guest_fds()?;
    let mut raw = [0u8; 64];
    std::fs::File::from(keys_pipe).read_exact(&mut raw)?;
    let keys = SessionKeys::from_bytes(&raw)?;
    let channel = Channel::sealed(std::net::TcpStream::from(socket), &keys, End::Guest)?;
    // Root's daemon, or one of the guest's own user: the only ones that start guests.
    let daemon = DaemonSocket {
        path: report_to.to_owned(),
        trusted_user: None,
    };
    let mut reports = DaemonReports::start(daemon, home_node)?;
    let served = rmosix_engine::serve_guest(channel, consistent, &mut reports);
    // Delivers the last report, if a daemon is there to take it.
    reports.stop();
    served
}
