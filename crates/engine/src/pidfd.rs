//! Process file descriptors: a stable handle on a process, and copies of its open files.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::ptrace::Pid;

/// A pidfd(2) for one process.
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Open a handle on `pid`.
    pub fn open(pid: Pid) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a fresh fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and owned only here.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// A copy of the process's descriptor `fd` (pidfd_getfd(2): we must be able to ptrace it).
    pub fn get_fd(&self, fd: i32) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_getfd returns a fresh descriptor or -1.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.0.as_raw_fd(), fd, 0) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `got` is fresh and owned only here.
        Ok(unsafe { OwnedFd::from_raw_fd(got as i32) })
    }
}
