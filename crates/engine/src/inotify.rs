//! A non-blocking inotify instance: how home hears that what it told a remote about a file
//! changed (`homefill` for the bytes it lends, `homepaths` for the answers it vouches for).
//! Events are queued by the kernel before the changing call returns, so reading the queue
//! before a message to the remote puts every earlier change ahead of that message.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

/// The instances a job leaves its user: it makes one only if the user could make this many
/// more after it. Instances count against the user's `fs.inotify.max_user_instances` (128 by
/// default), across all their processes; a crowd of jobs that took them all would leave the
/// user's other programs none (`tail -f`, editors, desktop daemons).
pub const LEFT_TO_THE_USER: usize = 16;
/// How long a job that found too little room waits before it asks again: doubled at each
/// refusal in a row, up to [`ASK_AGAIN_AT_MOST`]. A crowd short of instances stays short for
/// a while, and each ask opens and closes [`LEFT_TO_THE_USER`] of them.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(1);
const ASK_AGAIN_AT_MOST: Duration = Duration::from_secs(64);

/// One inotify instance.
pub struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    /// A fresh instance, close-on-exec and non-blocking.
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes flags and returns a fresh descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and owned only here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { fd })
    }

    /// Watch `path` for `mask`; its watch descriptor (the same for every path of one inode).
    pub fn watch(&self, path: &CStr, mask: u32) -> io::Result<i32> {
        // SAFETY: a NUL-terminated path and a mask.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stop watching `wd`: the kernel queues IN_IGNORED for it.
    pub fn unwatch(&self, wd: i32) {
        // SAFETY: removes a watch of this instance; a stale `wd` only fails with EINVAL.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Read the events queued so far: the watches that fired. None: events may have been
    /// lost (the queue overflowed, or reading it failed); anything watched may have changed,
    /// and the instance should be dropped.
    pub fn drain(&self) -> Option<HashSet<i32>> {
        Some(self.events()?.into_iter().map(|event| event.wd).collect())
    }

    /// Read the events queued so far, in order. None: events may have been lost, as for
    /// [`Inotify::drain`].
    pub fn events(&self) -> Option<Vec<Event>> {
        let mut events = Vec::new();
        // Aligned for struct inotify_event.
        let mut buf = vec![0u64; 512];
        loop {
            let size = buf.len() * 8;
            // SAFETY: read fills at most `size` bytes of a live buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), size) };
            if n <= 0 {
                return match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) if n < 0 => Some(events),
                    Some(libc::EINTR) if n < 0 => continue,
                    _ => None,
                };
            }
            // SAFETY: the kernel wrote `n` bytes into `buf`.
            let raw = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
            let mut at = 0;
            while at + 16 <= raw.len() {
                let word =
                    |i: usize| u32::from_ne_bytes(raw[at + i..at + i + 4].try_into().unwrap());
                let (wd, mask, name_len) = (word(0) as i32, word(4), word(12) as usize);
                let name = raw.get(at + 16..at + 16 + name_len).unwrap_or_default();
                // The name is padded with NULs to the next event's alignment.
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                at += 16 + name_len;
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    return None;
                }
                events.push(Event {
                    wd,
                    mask,
                    name: OsStr::from_bytes(name).to_owned(),
                });
            }
        }
    }
}

/// An instance made when first needed, if the user has room for it (see
/// [`LEFT_TO_THE_USER`]); after a refusal, not asked for again for a while
/// ([`ASK_AGAIN_AFTER`], doubling).
#[derive(Default)]
pub struct LazyInotify {
    inotify: Option<Inotify>,
    /// When it may be asked for again after refusals, and how long the next wait is.
    refused: Option<(Instant, Duration)>,
}

impl LazyInotify {
    /// The instance, if made.
    pub fn get(&self) -> Option<&Inotify> {
        self.inotify.as_ref()
    }

    /// The instance, made now if it was not: an error if it cannot be, or was refused a
    /// moment ago.
    pub fn get_or_make(&mut self) -> io::Result<&Inotify> {
        self.get_or_make_at(Instant::now())
    }

    fn get_or_make_at(&mut self, now: Instant) -> io::Result<&Inotify> {
        if self.inotify.is_none() {
            if let Some((again, _)) = self.refused
                && now < again
            {
                return Err(io::Error::other("refused a moment ago"));
            }
            match leaving_room(LEFT_TO_THE_USER) {
                Ok(inotify) => {
                    self.inotify = Some(inotify);
                    self.refused = None;
                }
                Err(err) => {
                    let wait = self.refused.map_or(ASK_AGAIN_AFTER, |(_, wait)| wait);
                    self.refused = Some((now + wait, (wait * 2).min(ASK_AGAIN_AT_MOST)));
                    return Err(err);
                }
            }
        }
        Ok(self.inotify.as_ref().expect("made above"))
    }

    /// Drop the instance (its events may have been lost); the next need makes a new one.
    pub fn reset(&mut self) {
        self.inotify = None;
    }
}

/// A fresh instance if `room` more could be made after it. The only way to learn the room
/// is to take it: the kernel counts a user's instances but shows the count nowhere. They are
/// closed again at once.
fn leaving_room(room: usize) -> io::Result<Inotify> {
    let inotify = Inotify::new()?;
    let mut taken = Vec::with_capacity(room);
    while taken.len() < room {
        match Inotify::new() {
            Ok(more) => taken.push(more),
            Err(err) => {
                return Err(io::Error::new(
                    err.kind(),
                    format!(
                        "room for {} more inotify instances, not {room}: {err}",
                        taken.len()
                    ),
                ));
            }
        }
    }
    Ok(inotify)
}

/// One event: what happened (`mask`) to watch `wd`, or to the entry `name` of the directory
/// it watches (empty: to the watched object itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub wd: i32,
    pub mask: u32,
    pub name: OsString,
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::*;

    /// The descriptors the child test may hold, set by the parent; the kernel refuses an
    /// instance past it (EMFILE) as it does one past the user's instances.
    const CHILD_LIMIT: &str = "RMOSIX_TEST_NOFILE";

    #[test]
    fn an_instance_is_made_only_if_the_room_asked_for_is_left() {
        let limit: u64 = 64;
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", "inotify::tests::with_few_descriptors"])
            .args(["--ignored", "--test-threads=1"])
            .env(CHILD_LIMIT, limit.to_string());
        // SAFETY: setrlimit is async-signal-safe and touches nothing but the child.
        unsafe {
            child.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = child.output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("1 passed"), "{said}");
    }

    /// Run by the test above, in a process of its own whose descriptors are limited.
    #[test]
    #[ignore = "run by an_instance_is_made_only_if_the_room_asked_for_is_left"]
    fn with_few_descriptors() {
        let limit: usize = std::env::var(CHILD_LIMIT).unwrap().parse().unwrap();
        // Numbers at or past the limit (inherited) take no room below it; the listing's own
        // descriptor is closed again.
        let below_limit = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<usize>().ok())
            .filter(|&fd| fd < limit)
            .count();
        let open = below_limit - 1;
        // Hold instances until exactly `room` descriptors are free.
        let room = 5;
        let held: Vec<Inotify> = (open..limit - room)
            .map(|_| Inotify::new().unwrap())
            .collect();
        let refused = leaving_room(room)
            .err()
            .expect("no room for one and 5 more");
        assert!(
            refused
                .to_string()
                .starts_with("room for 4 more inotify instances, not 5: "),
            "{refused}"
        );
        let mut held = held.into_iter();
        drop(held.next());
        leaving_room(room).expect("room for one and 5 more");
        // None of the instances taken to learn the room is kept.
        leaving_room(room).expect("room again");

        // A job's instance, with room for itself and LEFT_TO_THE_USER - 1 more, then for
        // all, then short again: asked for again later and later while short.
        let mut held: Vec<Inotify> = held.collect();
        held.truncate(held.len() - (LEFT_TO_THE_USER - (room + 1)));
        let mut lazy = LazyInotify::default();
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let said = |r: io::Result<&Inotify>| r.err().map(|e| e.to_string()).unwrap_or_default();
        let short = "room for 15 more inotify instances, not 16";
        assert!(said(lazy.get_or_make_at(at(0.0))).starts_with(short));
        held.pop();
        assert_eq!(said(lazy.get_or_make_at(at(0.9))), "refused a moment ago");
        assert!(
            lazy.get_or_make_at(at(1.0)).is_ok(),
            "asked again after 1 s"
        );
        assert!(lazy.get().is_some());
        lazy.reset();
        held.push(Inotify::new().unwrap());
        assert!(said(lazy.get_or_make_at(at(2.0))).starts_with(short));
        assert!(said(lazy.get_or_make_at(at(3.0))).starts_with(short));
        assert_eq!(said(lazy.get_or_make_at(at(4.9))), "refused a moment ago");
        assert!(said(lazy.get_or_make_at(at(5.0))).starts_with(short));
        assert_eq!(said(lazy.get_or_make_at(at(8.9))), "refused a moment ago");
    }
}
