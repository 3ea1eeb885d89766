//! Forwarded calls on the shell's regular files and directories, run by the home supervisor
//! itself instead of by injection into the shell. Which calls may run so is a column of the
//! table (`table::Row::on_copy`); whether the descriptor qualifies is decided here.
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

use crate::deputy::{Backs, Call};
use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::table::Slot;

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

    /// Run `call` here if its row allows it (`table::Row::on_copy`) and its descriptor is a
    /// regular file or directory of the shell: returns its result and the out-buffers as
    /// (remote address, bytes), or None when it must run in the shell.
    pub fn try_run(&mut self, call: &Call) -> Option<(i64, Backs)> {
        let fd_arg = call.shape.on_copy?;
        let fd = self.file(call.args[fd_arg] as i32)?;
        let mut local = call.args;
        local[fd_arg] = fd as u64;
        let mut sent = call.sent.iter();
        let mut buffers: Vec<Vec<u8>> = call
            .shape
            .bufs
            .iter()
            .map(|buf| match buf.sent {
                true => sent.next().cloned().unwrap_or_default(),
                false => vec![0; buf.len as usize],
            })
            .collect();
        for (buf, data) in call.shape.bufs.iter().zip(&mut buffers) {
            if let Slot::Arg(i) = buf.slot {
                local[i] = data.as_mut_ptr() as u64;
            }
        }
        // SAFETY: only rows marked on_copy get here (read, write, pread64, pwrite64, lseek,
        // fstat, getdents64, fsync, fdatasync), on a descriptor we own. Their shape comes from
        // the table and was checked against what the remote sent: every pointer argument
        // points into a live buffer of exactly the length the table derives from the very
        // arguments the call receives (a read's count is its buffer's length; fstat's buffer
        // is a whole struct stat).
        let ret = unsafe {
            libc::syscall(
                call.nr, local[0], local[1], local[2], local[3], local[4], local[5],
            )
        };
        let ret = crate::sys::answer_of(ret);
        let backs = call
            .shape
            .bufs
            .iter()
            .zip(buffers)
            .filter_map(|(buf, mut data)| {
                let Slot::Arg(i) = buf.slot else {
                    return None;
                };
                let n = buf.back?.bytes(buf.len, ret) as usize;
                data.truncate(n);
                (n > 0).then_some((call.args[i], data))
            })
            .collect();
        Some((ret, backs))
    }

    /// The remote read `bytes` of shell descriptor `fd` from bytes lent to it (see
    /// `readahead`): advance the description's offset as its reads would have. False: `fd`
    /// is not a file of the shell.
    pub fn advance(&mut self, fd: i32, bytes: u64) -> bool {
        let (Some(copy), Ok(by)) = (self.file(fd), i64::try_from(bytes)) else {
            return false;
        };
        // SAFETY: lseek on a descriptor we own.
        unsafe { libc::lseek(copy, by, libc::SEEK_CUR) >= 0 }
    }

    /// Set the offset of `fd`'s open file description (shared with the shell) to `pos`.
    pub fn seek(&mut self, fd: i32, pos: u64) -> bool {
        let (Some(copy), Ok(pos)) = (self.file(fd), i64::try_from(pos)) else {
            return false;
        };
        // SAFETY: lseek on a descriptor we own.
        unsafe { libc::lseek(copy, pos, libc::SEEK_SET) >= 0 }
    }

    /// Our copy of shell descriptor `fd`, if it is a regular file or directory.
    pub fn file(&mut self, fd: i32) -> Option<i32> {
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
        let freed = Freed::by(nr, args);
        self.fds.retain(|&fd, _| !freed.covers(fd));
    }

    /// Another file went under number `fd` behind the shell's calls: its copy is stale.
    pub fn forget_fd(&mut self, fd: i32) {
        self.fds.remove(&fd);
    }
}

/// The descriptor numbers a call may free or put another description under: `close`,
/// `dup2`/`dup3` (the new number), `close_range`.
pub enum Freed {
    /// None: the call frees no number.
    Nothing,
    /// The numbers from the first to the last, both included.
    Range(u32, u32),
}

impl Freed {
    /// What call `nr` with `args` may free.
    pub fn by(nr: i64, args: &[u64; 6]) -> Freed {
        let one = |fd: u64| Freed::Range(fd as u32, fd as u32);
        match nr {
            libc::SYS_close => one(args[0]),
            libc::SYS_dup2 | libc::SYS_dup3 => one(args[1]),
            libc::SYS_close_range => Freed::Range(args[0] as u32, args[1] as u32),
            _ => Freed::Nothing,
        }
    }

    /// Whether number `fd` is among them.
    pub fn covers(&self, fd: i32) -> bool {
        match *self {
            Freed::Nothing => false,
            Freed::Range(first, last) => (first..=last).contains(&(fd as u32)),
        }
    }
}
