//! The daemon's only unsafe code: handing a socket to the guest process as fd 3 under the
//! guest's credentials, and taking it over in the guest.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The fd number on which `mosixd guest` finds its session socket.
pub(crate) const GUEST_FD: RawFd = 3;

/// Credentials a guest runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GuestCreds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Arrange for the child of `cmd` to get `session` as fd 3 and, if `creds` is given, to drop
/// to those credentials (setgroups, then setgid, then setuid: each step needs the privilege
/// the next one gives up).
///
/// `session` must stay open until `cmd` has been spawned.
/// A close-on-exec copy of `fd` numbered above the guest's fds, so that placing the guest's
/// fds with dup2 in the child can never overwrite one not yet placed.
pub(crate) fn above_guest_fds(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned().and_then(|copy| {
        // SAFETY: F_DUPFD_CLOEXEC returns a fresh fd that nothing else owns.
        let high = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if high < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `high` is fresh and owned only by the OwnedFd made here.
        Ok(unsafe { OwnedFd::from_raw_fd(high) })
    })
}

/// Set up `cmd` to run as `creds` (when given) with `fds` as its fds 3, 4, ... The fds must
/// be numbered above them (see `above_guest_fds`) and stay open until spawn returns.
pub(crate) fn prepare_guest<const N: usize>(
    cmd: &mut tokio::process::Command,
    fds: [RawFd; N],
    creds: Option<GuestCreds>,
) {
    // Collected before the fork: the child must not allocate.
    let creds = creds.map(|c| {
        (
            c.uid,
            c.gid,
            c.groups
                .into_iter()
                .map(|g| g as libc::gid_t)
                .collect::<Vec<_>>(),
        )
    });
    let child_setup = move || -> io::Result<()> {
        // SAFETY: runs in the forked child before exec, where only async-signal-safe calls are
        // allowed (signal-safety(7)): setgroups, setgid, setuid and dup2 are plain system
        // calls, nothing here allocates or locks, and `groups` is a live slice that was built
        // in the parent. The fds are above GUEST_FD + N, so no dup2 overwrites another.
        unsafe {
            if let Some((uid, gid, groups)) = &creds
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            for (i, fd) in fds.iter().enumerate() {
                // dup2 clears close-on-exec on the copy.
                if libc::dup2(*fd, GUEST_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    };
    // SAFETY: `child_setup` is async-signal-safe, as argued inside it.
    unsafe { cmd.pre_exec(child_setup) };
}

/// In the guest: take fds 3 and 4 (the session socket and the keys pipe).
pub(crate) fn take_guest_fds() -> io::Result<[OwnedFd; 2]> {
    let take = |fd: RawFd| {
        // SAFETY: F_GETFD only asks whether the fd is open. If it is, it is what the daemon
        // passed (nothing in this fresh process has opened files yet) and no other object
        // owns it, so the OwnedFd becomes its single owner.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(OwnedFd::from_raw_fd(fd))
        }
    };
    Ok([take(GUEST_FD)?, take(GUEST_FD + 1)?])
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// Run a shell as a guest would be run and return what it wrote to fd 3.
    async fn run_as_guest(script: &str, creds: Option<GuestCreds>) -> String {
        let (ours, pair_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs = above_guest_fds(std::os::fd::AsFd::as_fd(&pair_end)).unwrap();
        drop(pair_end);
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", script]);
        prepare_guest(&mut cmd, [theirs.as_raw_fd()], creds);
        let mut child = cmd.spawn().unwrap();
        drop(theirs);
        ours.set_nonblocking(true).unwrap();
        let mut ours = tokio::net::UnixStream::from_std(ours).unwrap();
        let mut out = String::new();
        ours.read_to_string(&mut out).await.unwrap();
        assert!(child.wait().await.unwrap().success());
        out
    }

    #[tokio::test]
    async fn the_guest_finds_its_socket_on_fd_3() {
        let out = run_as_guest("echo hello >&3", None).await;
        assert_eq!(out, "hello\n");
    }

    #[tokio::test]
    async fn root_starts_the_guest_with_the_owners_credentials() {
        if !nix::unistd::geteuid().is_root() {
            // CI runs as root and sets this, so there a skip is a failure.
            assert!(
                std::env::var_os("RMOSIX_REQUIRE_ROOT").is_none_or(|v| v != "1"),
                "needs root to switch credentials"
            );
            eprintln!("skipped: needs root to switch credentials");
            return;
        }
        let creds = GuestCreds {
            uid: 65534,
            gid: 65533,
            groups: vec![65533, 100],
        };
        let out = run_as_guest("id -u >&3; id -g >&3; id -G >&3", Some(creds)).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..2], ["65534", "65533"]);
        let mut groups: Vec<&str> = lines[2].split_whitespace().collect();
        groups.sort_unstable();
        assert_eq!(groups, ["100", "65533"]);
    }
}
