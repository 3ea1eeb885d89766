//! The guests' side of the control socket: a guest registers, which it may only if it is a
//! guest this node's daemon started (see `records`), then reports the process it hosts until
//! that process leaves; and the list of hosted processes, which anyone may ask for, as anyone
//! may run ps(1).
//!
//! A guest connection has no request timeout once registered: the process it hosts may run for
//! days without news. It counts against its user's connections like any other.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt};
use tracing::{debug, warn};

use rmosix_wire::{GuestReport, HostedProcess, Reply};

use crate::chain;
use crate::control::Conn;
use crate::daemon::Shared;
use crate::hosted::{self, Process, Registration};
use crate::peer::held_note;
use crate::procfs;
use crate::records::Spawned;
use crate::sys;
use crate::throttle::Verdict;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
enum NotAGuest {
    #[error("the kernel names no process for this connection")]
    NoPid,
    #[error("cannot identify the connecting process")]
    Unreadable(#[source] io::Error),
    #[error("the connecting process has ended")]
    Ended,
    #[error(
        "process {} is not a guest this node's mosixd started for uid {} and node {}",
        .0.pid, .0.uid, .0.home_node
    )]
    NotStarted(Spawned),
}

/// How long the daemon waits, once a guest's connection has ended, for the guest to exit and
/// its record to be removed. A guest closes its connection as it exits; one that lives on
/// registers again, and keeps its record. (A guest an earlier daemon started is no child of
/// this one, so no reaping tells this one when it ends.)
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Serve a guest that asked to register for a session from `home_node`: check it is one,
/// then take its reports until it closes or says its process left.
pub(crate) async fn serve_guest(shared: &Shared, mut conn: Conn, home_node: u16) {
    let (guest, pidfd) = match identify(shared, &conn, home_node) {
        Ok(guest) => guest,
        Err(why) => {
            let uid = conn.caller.uid;
            if let Verdict::Log { held } = shared.throttle_user(uid, Instant::now()) {
                warn!(
                    uid,
                    pid = conn.caller.pid,
                    "guest registration refused: {}{}",
                    chain(&why),
                    held_note(held)
                );
            }
            let _ = conn
                .reply(&Reply::Error {
                    message: chain(&why),
                })
                .await;
            return;
        }
    };
    let registration = shared
        .hosted()
        .register(guest.pid, guest.uid, guest.home_node);
    debug!(
        guest = guest.pid,
        uid = guest.uid,
        home_node,
        "guest registered"
    );
    if conn.reply(&Reply::Ok).await.is_ok() {
        take_reports(shared, &mut conn, &guest, &registration).await;
    }
    shared.hosted().unregister(&registration);
    shared.hosted_left.notify_waiters();
    drop(conn);
    if sys::exits_within(pidfd, EXIT_WAIT).await {
        shared.records.remove(&guest);
        debug!(guest = guest.pid, "guest gone");
    }
}

/// The reports of a registered guest, until its process leaves or the connection ends.
async fn take_reports(shared: &Shared, conn: &mut Conn, guest: &Spawned, reg: &Registration) {
    loop {
        match conn.recv::<GuestReport>().await {
            Ok(Some(GuestReport::Running { pid, home_pid })) => {
                // Only its own child can be the process a guest runs: a husk is forked by its
                // guest. Anything else would put another process's figures in the list.
                let child = procfs::read_stat(pid).is_ok_and(|s| s.ppid == guest.pid);
                if !child {
                    // A guest is its user's to control: the line is throttled per user.
                    if let Verdict::Log { held } = shared.throttle_user(guest.uid, Instant::now()) {
                        warn!(
                            guest = guest.pid,
                            pid,
                            "ignoring a guest's report about a process not its child{}",
                            held_note(held)
                        );
                    }
                    continue;
                }
                shared.hosted().running(reg, Process { pid, home_pid });
                shared.metrics.guest_arrived();
                debug!(guest = guest.pid, pid, home_pid, "hosting a process");
            }
            Ok(Some(GuestReport::Waited { ms })) => {
                shared.hosted().waited(reg, Duration::from_millis(ms));
            }
            Ok(Some(GuestReport::Left { how })) => {
                let process = shared.hosted().left(reg);
                shared.hosted_left.notify_waiters();
                if let (Some(p), rmosix_wire::Departure::Ended) = (process, how) {
                    crate::balancer::ended_here(shared, p.pid);
                }
                shared.metrics.guest_left(how);
                debug!(guest = guest.pid, ?process, ?how, "a hosted process left");
                // A guest ends once its process has left; it has nothing more to say.
                return;
            }
            Ok(None) => return,
            Err(e) => {
                debug!(guest = guest.pid, "guest dropped: {}", chain(&e));
                return;
            }
        }
    }
}

/// The guest whose registration `conn` carries, if this node started one for its client's
/// uid and `home_node`: the process that connected, named by its PID and start time, must
/// have a record.
///
/// The PID comes from SO_PEERCRED and the start time from /proc; the process the PID names
/// could have changed between the two if the client had ended and its PID had been reused.
/// So the daemon also takes a pidfd of the client (SO_PEERPIDFD, Linux 6.5), which names it
/// for good, and checks after reading /proc that it still runs: then the PID was still its.
fn identify(shared: &Shared, conn: &Conn, home_node: u16) -> Result<(Spawned, OwnedFd), NotAGuest> {
    let caller = &conn.caller;
    let pid = caller.pid.ok_or(NotAGuest::NoPid)?;
    let pidfd = getsockopt(&conn.stream, sockopt::PeerPidfd)
        .map_err(|e| NotAGuest::Unreadable(e.into()))?;
    let stat = procfs::read_stat(pid).map_err(NotAGuest::Unreadable)?;
    if has_exited(&pidfd).map_err(NotAGuest::Unreadable)? {
        return Err(NotAGuest::Ended);
    }
    let guest = Spawned {
        pid,
        start_ticks: stat.start_ticks,
        uid: caller.uid,
        home_node,
    };
    if shared.records.contains(&guest) {
        Ok((guest, pidfd))
    } else {
        Err(NotAGuest::NotStarted(guest))
    }
}

/// Whether the process of `pidfd` has exited: a pidfd becomes readable then (pidfd_open(2)).
fn has_exited(pidfd: &OwnedFd) -> io::Result<bool> {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let ready = poll(&mut fds, PollTimeout::ZERO)?;
    Ok(ready > 0)
}

/// Whether the process `guest` names still runs.
pub(crate) fn is_alive(guest: &Spawned) -> bool {
    procfs::read_stat(guest.pid).is_ok_and(|s| s.start_ticks == guest.start_ticks)
}

/// The hosted processes with their figures.
pub(crate) async fn list(shared: &Shared) -> Reply {
    match figures(shared).await {
        Ok(processes) => Reply::Guests { processes },
        Err(e) => Reply::Error {
            message: format!("cannot read /proc: {e}"),
        },
    }
}

/// The guests whose home is `node`, for that node's `mosps` (an empty list if /proc cannot
/// be read).
pub(crate) async fn hosted_from(shared: &Shared, node: u16) -> Vec<HostedProcess> {
    let mut processes = figures(shared).await.unwrap_or_default();
    processes.retain(|p| p.home_node == node);
    processes
}

/// The hosted processes' figures. /proc (two files a guest, hundreds of guests on a node
/// others crowd) is read on the blocking pool, not on a runtime thread.
async fn figures(shared: &Shared) -> io::Result<Vec<HostedProcess>> {
    let entries = shared.hosted().entries();
    let units = shared.units;
    tokio::task::spawn_blocking(move || {
        let uptime = procfs::uptime()?;
        Ok(hosted::figures(
            &entries,
            |pid| procfs::read_stat(pid).ok(),
            uptime,
            units,
        ))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use tokio::net::UnixStream;

    use super::*;

    fn pidfd_of_client(stream: &UnixStream) -> OwnedFd {
        getsockopt(stream, sockopt::PeerPidfd).unwrap()
    }

    #[tokio::test]
    async fn a_clients_pidfd_tells_whether_it_still_runs() {
        // Our own end of a pair names us, and we run.
        let (ours, _theirs) = UnixStream::pair().unwrap();
        assert!(!has_exited(&pidfd_of_client(&ours)).unwrap());

        // A client that connected and has exited (and been reaped: its PID is free for reuse).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let status = tokio::process::Command::new("python3")
            .arg("-c")
            .arg("import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])")
            .arg(&path)
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let (stream, _) = listener.accept().await.unwrap();
        let pidfd = pidfd_of_client(&stream);
        assert!(has_exited(&pidfd).unwrap());
        assert!(sys::exits_within(pidfd, Duration::ZERO).await);
    }

    #[tokio::test]
    async fn waiting_for_a_client_to_exit_ends_when_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        // It connects, then waits for a line on stdin before exiting.
        let mut client = tokio::process::Command::new("python3")
            .arg("-c")
            .arg("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); sys.stdin.readline()")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let pidfd = pidfd_of_client(&stream);
        let waiting = tokio::spawn(sys::exits_within(pidfd, Duration::from_secs(600)));
        drop(client.stdin.take());
        assert!(waiting.await.unwrap());
        assert!(client.wait().await.unwrap().success());
        // A client that runs on is waited for no longer than told.
        let (ours, _theirs) = UnixStream::pair().unwrap();
        assert!(!sys::exits_within(pidfd_of_client(&ours), Duration::ZERO).await);
    }
}
