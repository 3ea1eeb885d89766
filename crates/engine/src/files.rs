//! Forwarded calls on the shell's regular files and directories, run by the home supervisor
//! itself instead of by injection into the shell.
//!
//! A descriptor taken from the shell with pidfd_getfd(2) shares the shell's open file
//! description: offset, flags and locks are the same object, so `lseek`, `read`, `write`,
//! `fstat` and friends on it are the shell's own calls, minus the interrupt, the register
//! juggling and the single-step (three wake-ups of the shell) that injection costs. Only
//! regular files and directories qualify: calls on them never block, so the supervisor's
//! loop never waits on one. Pipes, sockets and terminals, which block and meet signals and
//! job control, still run in the shell.
//!
//! The copies follow the shell's descriptor table: a call the shell runs that can free a
//! descriptor number (close, dup2, dup3, close_range) drops the copies it affects first.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::session::{Backs, BufSpec};

/// Calls that may run here; each takes the descriptor as its first argument.
const LOCAL_CALLS: [i64; 9] = [
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_getdents64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
];

/// Copies of the shell's file descriptors (None: not a regular file or directory).
pub struct ShellFiles {
    pidfd: PidFd,
    fds: HashMap<i32, Option<OwnedFd>>,
}

impl ShellFiles {
    /// For the shell `pid`.
    pub fn open(pid: Pid) -> io::Result<ShellFiles> {
        Ok(ShellFiles {
            pidfd: PidFd::open(pid)?,
            fds: HashMap::new(),
        })
    }

    /// Run the call here if it is on a regular file or directory of the shell: returns its
    /// result and the out-buffers as (remote address, bytes), or None when it must run in the
    /// shell. `data` holds the buffers sent home, in the order of `bufs` with `send`.
    pub fn try_run(
        &mut self,
        nr: i64,
        args: &[u64; 6],
        bufs: &[BufSpec],
        data: &[Vec<u8>],
    ) -> Option<(i64, Backs)> {
        if !LOCAL_CALLS.contains(&nr) {
            return None;
        }
        let fd = self.file(args[0] as i32)?;
        let mut local = *args;
        local[0] = fd as u64;
        let mut sent = data.iter();
        let mut buffers: Vec<Vec<u8>> = bufs
            .iter()
            .map(|spec| match spec.send {
                true => sent.next().cloned().unwrap_or_default(),
                false => vec![0; spec.len as usize],
            })
            .collect();
        for (spec, buf) in bufs.iter().zip(&mut buffers) {
            local[spec.arg as usize] = buf.as_mut_ptr() as u64;
        }
        // SAFETY: the call is one of LOCAL_CALLS on a descriptor we own, and every pointer
        // argument points into a live buffer of the length the call may use (its length
        // argument was checked against the buffer size by the guest, which sized `bufs`).
        let ret = unsafe {
            libc::syscall(
                nr, local[0], local[1], local[2], local[3], local[4], local[5],
            )
        };
        let ret = if ret < 0 {
            -i64::from(
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            )
        } else {
            ret
        };
        let backs = bufs
            .iter()
            .zip(buffers)
            .filter_map(|(spec, mut buf)| {
                let n = spec.back?.bytes(spec.len, ret) as usize;
                buf.truncate(n);
                (n > 0).then_some((args[spec.arg as usize], buf))
            })
            .collect();
        Some((ret, backs))
    }

    /// Our copy of shell descriptor `fd`, if it is a regular file or directory.
    fn file(&mut self, fd: i32) -> Option<i32> {
        if !self.fds.contains_key(&fd) {
            let copy = self.take(fd);
            self.fds.insert(fd, copy);
        }
        self.fds.get(&fd)?.as_ref().map(|f| f.as_raw_fd())
    }

    fn take(&self, fd: i32) -> Option<OwnedFd> {
        let copy = self.pidfd.get_fd(fd).ok()?;
        // SAFETY: fstat fills a live, zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(copy.as_raw_fd(), &mut st) } != 0 {
            return None;
        }
        let kind = st.st_mode & libc::S_IFMT;
        (kind == libc::S_IFREG || kind == libc::S_IFDIR).then_some(copy)
    }

    /// The shell is about to run `nr`: drop the copies of descriptor numbers it may free.
    pub fn forget(&mut self, nr: i64, args: &[u64; 6]) {
        match nr {
            libc::SYS_close => {
                self.fds.remove(&(args[0] as i32));
            }
            libc::SYS_dup2 | libc::SYS_dup3 => {
                self.fds.remove(&(args[1] as i32));
            }
            libc::SYS_close_range => {
                let (first, last) = (args[0] as u32, args[1] as u32);
                self.fds
                    .retain(|fd, _| !(first..=last).contains(&(*fd as u32)));
            }
            _ => {}
        }
    }
}
