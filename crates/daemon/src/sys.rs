//! The daemon's only unsafe code: handing a socket to the guest process as fd 3 under the
//! guest's credentials, taking it over in the guest, asking the kernel which groups the
//! client of a control connection had when it connected, and waiting for a process to exit
//! through its pidfd.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The fd number on which `mosixd guest` finds its session socket.
pub(crate) const GUEST_FD: RawFd = 3;

/// Credentials a guest runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GuestCreds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// The supplementary groups of the process that connected the Unix socket `fd`, as they were
/// when it called connect(2) (SO_PEERGROUPS, Linux 4.13). Like SO_PEERCRED's uid and gid, the
/// kernel records them then, so they cannot change with whatever later holds the client's PID.
pub(crate) fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65536; start with room for the usual handful and grow once if told to.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes that the kernel fills; it writes
        // at most `len` bytes and sets `len` to what it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) || count <= groups.len() {
            return Err(err);
        }
        groups.resize(count, 0);
    }
}

/// Whether the process of `pidfd` exits within `limit`: a pidfd becomes readable then
/// (pidfd_open(2)). Must be called inside a tokio runtime.
pub(crate) async fn exits_within(pidfd: OwnedFd, limit: Duration) -> bool {
    // SAFETY: the AsyncFd owns `pidfd` until it is dropped, and an OwnedFd stays open and
    // gives the same descriptor for all its life, as register_with_interest requires.
    let registered = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) };
    match registered {
        Ok(fd) => matches!(tokio::time::timeout(limit, fd.readable()).await, Ok(Ok(_))),
        Err(_) => false,
    }
}

/// A descriptor limit, as getrlimit(2) gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FdLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raise the soft RLIMIT_NOFILE to the hard limit, so that the connections of all users and
/// peers fit (see `limits`); returns the limit as it was.
pub(crate) fn raise_fd_limit() -> io::Result<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(FdLimit { soft, hard })
}

/// The nice value the daemon runs at, the highest priority: it is its node's service, and
/// must answer its tools, supervisors and peers however crowded the node is (a thousand
/// CPU-bound jobs at normal priority left it a few milliseconds of CPU a second, and
/// supervisors gave up registering). Its own work is small. Its guests run at normal priority.
const DAEMON_NICE: i32 = -20;

/// Gives the calling thread, and the threads it starts from now on, [`DAEMON_NICE`]: call
/// before the runtime starts its threads (Linux keeps a nice value per thread).
pub fn raise_priority() -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory; `who` 0 is the calling
    // thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS as _, 0, DAEMON_NICE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

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

/// Make `dir` a directory of user `uid` (group `gid`) that only they can enter, in a
/// parent this daemon's user owns (made if missing, readable by all): when the daemon runs
/// as root, no one else can put anything in the parent, so nothing there but the user's own
/// directory can be at that path. One found already must be a directory (not a link) of
/// that user's with no access for others.
pub(crate) fn user_dir(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)?;
    // Made by someone else (beside a socket in a directory anyone can write), its entries
    // could be swapped between this check and the guest's open.
    let euid = nix::unistd::geteuid();
    let parent_meta = std::fs::symlink_metadata(parent)?;
    if !parent_meta.is_dir()
        || parent_meta.uid() != euid.as_raw()
        || parent_meta.permissions().mode() & 0o022 != 0
    {
        return Err(io::Error::other(format!(
            "{} is not a directory only uid {euid} can write",
            parent.display()
        )));
    }
    let root = euid.is_root();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) if root => {
            std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
        }
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let owner = if root { uid } else { euid.as_raw() };
    if !meta.is_dir() || meta.uid() != owner || meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a directory of uid {owner}'s only",
            dir.display()
        )));
    }
    Ok(())
}

/// Set up `cmd` to run as `creds` (when given) with `fds` as its fds 3, 4, ..., in a session
/// of its own, with the descriptor limit `fd_limit`. The fds must be numbered above them (see
/// `above_guest_fds`) and stay open until spawn returns.
///
/// Its own session: a guest outlives its daemon (it owns its session socket), so signals meant
/// for the daemon's process group or terminal must not reach it. The limit: the daemon raised
/// its own for its connections; the guest runs a user's process and gets the usual one back.
pub(crate) fn prepare_guest<const N: usize>(
    cmd: &mut tokio::process::Command,
    fds: [RawFd; N],
    creds: Option<GuestCreds>,
    fd_limit: FdLimit,
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
    let limit = libc::rlimit {
        rlim_cur: fd_limit.soft,
        rlim_max: fd_limit.hard,
    };
    let child_setup = move || -> io::Result<()> {
        // SAFETY: runs in the forked child before exec, where only async-signal-safe calls are
        // allowed (signal-safety(7)): setsid, setrlimit, setpriority, setgroups, setgid, setuid
        // and dup2 are plain system calls, nothing here allocates or locks, and `groups` is a
        // live slice that was built in the parent. The fds are above GUEST_FD + N, so no dup2
        // overwrites another.
        unsafe {
            // Back to normal priority (see DAEMON_NICE): a guest runs a job like any other.
            if libc::setsid() < 0
                || libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0
                || libc::setpriority(libc::PRIO_PROCESS as _, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // setgroups, then setgid, then setuid: each step needs the privilege the next one
            // gives up.
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
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn a_users_directory_is_theirs_alone_in_a_parent_only_the_daemon_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let dir = tmp.path().join("mosixd.digests").join(me.to_string());
        user_dir(&dir, me, gid).unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (me, 0o700));
        // Made already: the same checks pass again.
        user_dir(&dir, me, gid).unwrap();
        // Open to others: refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(user_dir(&dir, me, gid).is_err());
        // A link where the directory belongs: refused.
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(tmp.path(), &dir).unwrap();
        assert!(user_dir(&dir, me, gid).is_err());
        // A parent others may write: refused.
        let open = tmp.path().join("open.digests");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(user_dir(&open.join(me.to_string()), me, gid).is_err());
    }

    /// Run a shell as a guest would be run and return what it wrote to fd 3.
    async fn run_as_guest(script: &str, creds: Option<GuestCreds>) -> String {
        let (ours, pair_end) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs = above_guest_fds(std::os::fd::AsFd::as_fd(&pair_end)).unwrap();
        drop(pair_end);
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", script]);
        let fd_limit = FdLimit {
            soft: 512,
            hard: getrlimit(Resource::RLIMIT_NOFILE).unwrap().1,
        };
        prepare_guest(&mut cmd, [theirs.as_raw_fd()], creds, fd_limit);
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
    async fn the_guest_leads_its_own_session_with_the_usual_fd_limit() {
        // Field 6 of /proc/self/stat is the session id; $$ is the shell's own pid.
        let out = run_as_guest(
            "set -- $(cut -d' ' -f6 /proc/self/stat) $$; \
             [ \"$1\" = \"$2\" ] && echo leader >&3; ulimit -n >&3",
            None,
        )
        .await;
        assert_eq!(out, "leader\n512\n");
    }

    #[test]
    fn peer_groups_are_those_of_the_connecting_process() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut groups = peer_groups(std::os::fd::AsFd::as_fd(&ours)).unwrap();
        groups.sort_unstable();
        let mut mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        mine.sort_unstable();
        mine.dedup();
        assert_eq!(groups, mine);
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
