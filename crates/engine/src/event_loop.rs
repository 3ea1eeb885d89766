//! The one event loop both supervisors turn: a poll(2) over the fds their sources name
//! (SIGCHLD as a signalfd, sessions, the daemon, the seccomp listener), which says which
//! sources are ready. A source whose bytes already wait in user space (a session reader that
//! decrypted more than was read) counts as ready without a poll. One thread: ptrace requires
//! every request to come from the thread that attached.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// The fds of one turn of the loop, each with the source it stands for.
pub struct Turn<K> {
    fds: Vec<libc::pollfd>,
    keys: Vec<K>,
    ready: Vec<bool>,
}

impl<K: Copy> Turn<K> {
    /// An empty turn.
    pub fn new() -> Turn<K> {
        Turn {
            fds: Vec::new(),
            keys: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Watch `fd` for `key`; `buffered`: its source has input already.
    pub fn watch(&mut self, key: K, fd: RawFd, buffered: bool) {
        self.fds.push(libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        self.keys.push(key);
        self.ready.push(buffered);
    }

    /// Wait until a source is ready, at most `timeout` (None: no bound), and return the
    /// ready ones in the order they were watched. An interrupted poll returns none.
    /// ppoll(2) rather than poll(2): a duty cycle's switches are a tenth of a millisecond
    /// apart at its highest level, finer than poll's milliseconds.
    pub fn wait(mut self, timeout: Option<Duration>) -> io::Result<Vec<K>> {
        let timeout = if self.ready.contains(&true) {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let timespec = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos().into(),
        });
        let timespec = timespec
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a live vector of pollfd of the length passed; `timespec` is null or
        // points to a live local; a null mask leaves the signal mask as it is.
        let n = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                timespec,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(err);
        }
        Ok(self
            .keys
            .iter()
            .zip(self.fds.iter().zip(&self.ready))
            .filter(|(_, (fd, buffered))| **buffered || fd.revents != 0)
            .map(|(key, _)| *key)
            .collect())
    }
}

impl<K: Copy> Default for Turn<K> {
    fn default() -> Self {
        Turn::new()
    }
}

/// SIGCHLD as a readable fd, so ptrace stops wake the poll loop.
pub struct SigChld {
    fd: OwnedFd,
}

impl SigChld {
    /// Block SIGCHLD in this (single-threaded) process and open a signalfd for it.
    pub fn new() -> io::Result<SigChld> {
        // SAFETY: sigset operations on a local; signalfd returns a fresh fd we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SigChld {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The fd to poll.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Consume pending notifications (several SIGCHLDs may merge into one).
    pub fn drain(&self) {
        let mut buf = [0u8; 128 * 4];
        // SAFETY: reading into a live buffer from our own non-blocking fd.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_turn_reports_readable_and_buffered_sources() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        let mut turn = Turn::new();
        turn.watch("b", b.as_raw_fd(), false);
        turn.watch("d", d.as_raw_fd(), true);
        // d has nothing to read but says it holds input; b has nothing yet.
        assert_eq!(turn.wait(None).unwrap(), ["d"]);
        a.write_all(b"x").unwrap();
        let mut turn = Turn::new();
        turn.watch("b", b.as_raw_fd(), false);
        turn.watch("d", d.as_raw_fd(), false);
        assert_eq!(turn.wait(None).unwrap(), ["b"]);
        let mut turn = Turn::new();
        turn.watch("d", d.as_raw_fd(), false);
        assert!(
            turn.wait(Some(Duration::from_millis(10)))
                .unwrap()
                .is_empty()
        );
    }
}
