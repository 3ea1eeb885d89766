//! A non-blocking inotify instance: how home hears that what it told a remote about a file
//! changed (`homefill` for the bytes it lends, `homepaths` for the answers it vouches for).
//! Events are queued by the kernel before the changing call returns, so reading the queue
//! before a message to the remote puts every earlier change ahead of that message.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

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
