//! Home's half of read-ahead: it lends a remote bytes of a regular file the shell has open,
//! read with `pread` on the supervisor's copy of the descriptor (the description's offset
//! does not move), and watches the file with inotify so that the remote hears of any change
//! (`ToGuest::Stale`) before anything else home sends it afterwards. The remote's half is
//! `readahead`; docs/forwarding.md, "Fewer round trips: reads", gives the argument.
//!
//! The watch is read only when home is about to send the remote something, never polled: a
//! change that happened before that moment has queued its event by then, as the kernel
//! queues it before the writing call returns.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::RawFd;

use tracing::debug;

use crate::files::Freed;
use crate::inotify::LazyInotify;
use crate::ptrace::Pid;
use crate::readahead::Loan;
use crate::session::ReadAsk;
use crate::table::MAX_BUF;

/// What changes the bytes of a file, or what a path names: a write, a truncation, a
/// change of attributes, a writer closing (after writes through a mapping), a rename or
/// deletion. The kernel adds IN_IGNORED when a watch goes (its file is gone).
const CHANGES: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVE_SELF
    | libc::IN_DELETE_SELF;
/// kcmp(2)'s type for "the same open file description".
const KCMP_FILE: libc::c_int = 0;

/// What one remote holds of the shell's files, and the watch on them.
#[derive(Default)]
pub struct Lender {
    /// Made at the first loan.
    inotify: LazyInotify,
    /// Per watch, the shell descriptors the remote may hold bytes of.
    lent: HashMap<i32, BTreeSet<i32>>,
    /// Descriptors whose files changed, for the next word to the remote.
    stale: BTreeSet<i32>,
}

impl Lender {
    /// Lend the bytes for `read` (shell descriptor `read.fd`, whose copy `copy` is ours): what
    /// it asks for at `read.at` (pread64) or at the description's offset, and up to
    /// `read.ahead` bytes in all from there. None: the descriptor does not qualify (not a
    /// regular file; opened for writing only or with O_DIRECT; for read, a description
    /// another descriptor or process shares) and the read runs as any other call.
    /// `opened_away`: the shell opened the description for its process away (see
    /// [`OpenedAway`]): nobody else holds it, and it is not looked for elsewhere.
    pub fn lend(
        &mut self,
        shell: Pid,
        copy: RawFd,
        read: &ReadAsk,
        opened_away: bool,
    ) -> Option<Loan> {
        let ReadAsk {
            fd,
            count,
            at,
            ahead,
            ..
        } = *read;
        // SAFETY: fstat fills a live, zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on a descriptor we own.
        if unsafe { libc::fstat(copy, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG
        {
            return None;
        }
        // SAFETY: F_GETFL takes no argument.
        let flags = unsafe { libc::fcntl(copy, libc::F_GETFL) };
        // Opened read-write too: the process's own writes go home, where the watch sees
        // them as any other (O_DIRECT ones too, but those bypass the page cache: not lent).
        let readable = flags & libc::O_ACCMODE != libc::O_WRONLY;
        if flags < 0 || flags & libc::O_DIRECT != 0 || !readable {
            return None;
        }
        if at.is_none() && !opened_away && shared(shell, fd) {
            return None;
        }
        // The watch goes first: a change after it is seen, one before it is in the bytes.
        let wd = self.watch(copy)?;
        let start = match at {
            Some(at) => i64::try_from(at).ok()?,
            // SAFETY: lseek on a descriptor we own; SEEK_CUR by 0 only reads the offset.
            None => unsafe { libc::lseek(copy, 0, libc::SEEK_CUR) },
        };
        if start < 0 {
            return None;
        }
        // A loan for pread64 may begin before its offset, so that it covers the read.
        let start = match (at, read.from) {
            (Some(at), Some(from)) if from <= at && at - from < MAX_BUF => from as i64,
            _ => start,
        };
        let reaches = at.map_or(count, |at| at.saturating_add(count) - start as u64);
        let len = ahead.max(reaches).min(MAX_BUF) as usize;
        let mut bytes = vec![0u8; len];
        // SAFETY: pread writes at most `len` bytes into a live buffer of `len` bytes.
        let n = unsafe { libc::pread(copy, bytes.as_mut_ptr().cast(), len, start) };
        if n < 0 {
            return None;
        }
        bytes.truncate(n as usize);
        // A write that ended while we read may have torn the bytes: they serve this read only.
        // So do they when the watch could not be read (and is gone).
        let keep = !self.drain().contains(&wd) && self.inotify.get().is_some();
        if keep {
            self.lent.entry(wd).or_default().insert(fd);
        }
        debug!(fd, start, bytes = n, keep, "lent");
        Some(Loan {
            start: start as u64,
            eof: (n as usize) < len,
            bytes,
            keep,
        })
    }

    /// Lend ahead what the remote's open `id` opened under shell descriptor `fd` (our copy
    /// `copy`), before the program asks: `ahead` bytes from the description's offset, for its
    /// first `read`, and the file's status, for its `fstat`. Both are taken once the watch is
    /// on, so a change after them is told as for any loan. None: the file does not qualify
    /// (see [`Lender::lend`]).
    pub fn lend_at_open(
        &mut self,
        shell: Pid,
        copy: RawFd,
        (id, fd): (u64, i32),
        ahead: u64,
        opened_away: bool,
    ) -> Option<(Loan, Vec<u8>)> {
        let ask = ReadAsk {
            id,
            fd,
            buf: 0,
            count: 0,
            at: None,
            from: None,
            ahead,
        };
        let loan = self.lend(shell, copy, &ask, opened_away)?;
        let mut status = vec![0u8; std::mem::size_of::<libc::stat>()];
        // SAFETY: fstat writes one struct stat into `status`, which is that size.
        if unsafe { libc::fstat(copy, status.as_mut_ptr().cast()) } != 0 {
            return None;
        }
        debug!(fd, "lent at its open");
        Some((loan, status))
    }

    /// Descriptors whose files changed since the remote was last told: it must drop their
    /// bytes before it reads anything else home sends.
    pub fn changed(&mut self) -> Vec<i32> {
        self.drain();
        self.seen_changed()
    }

    /// The descriptors `changed` would give, but for changes not read from the watch yet.
    /// Right after a loan, to be told before it: a change read after the loan's own look
    /// may have torn its bytes, so it must be told after the loan, to drop them.
    pub fn seen_changed(&mut self) -> Vec<i32> {
        std::mem::take(&mut self.stale).into_iter().collect()
    }

    /// Watch the file of `copy`; its watch descriptor.
    fn watch(&mut self, copy: RawFd) -> Option<i32> {
        let inotify = match self.inotify.get_or_make() {
            Ok(inotify) => inotify,
            Err(err) => {
                debug!(%err, "no inotify: nothing is lent");
                return None;
            }
        };
        // The magic link names the very file the descriptor refers to, renamed or deleted.
        let path = std::ffi::CString::new(format!("/proc/self/fd/{copy}")).ok()?;
        inotify.watch(&path, CHANGES).ok()
    }

    /// Read the events queued so far: the descriptors lent under a watch that fired become
    /// stale, and are no longer lent under it. Returns the watches that fired.
    fn drain(&mut self) -> HashSet<i32> {
        let Some(inotify) = self.inotify.get() else {
            return HashSet::new();
        };
        match inotify.drain() {
            Some(fired) => {
                for wd in &fired {
                    if let Some(fds) = self.lent.remove(wd) {
                        self.stale.extend(fds);
                    }
                }
                fired
            }
            None => {
                // Events may be lost: every loan is stale, and the next loan starts a new
                // watch.
                let fired = self.lent.keys().copied().collect();
                self.all_stale();
                self.inotify.reset();
                fired
            }
        }
    }

    fn all_stale(&mut self) {
        for (_, fds) in self.lent.drain() {
            self.stale.extend(fds);
        }
    }
}

/// Whether the open file description of shell descriptor `fd` is shared: another descriptor
/// of the shell or any process we see (but ourselves, whose copies follow the shell's)
/// refers to it, as kcmp(2) compares them: the kernel's descriptions, with no path walk. A
/// `stat` of each `/proc/PID/fd/N` link first, to pick those of the same file, made about
/// a sixth of mosrun's CPU time in a `mosrun make -j8` (`perf record`, docs/make.md). A
/// process whose descriptors we cannot read might share it: yes.
///
/// A description the shell `opened_away` ([`OpenedAway`]) is not looked for at all: it is in
/// no other table (see there) unless a process took it from the shell with `pidfd_getfd(2)`
/// (the shell's own user or root), which it may do at any time after a look, as it may
/// write to the process's memory. The look cost every loan for `read` of a file the process
/// opened away a scan of every process's descriptors: in a Lua build under `mosrun make -j8`,
/// 42,612 `kcmp`s and 15,633 `getdents64`s, most of mosrun's system calls (docs/make.md).
fn shared(shell: Pid, fd: i32) -> bool {
    let me = std::process::id() as Pid;
    let Ok(procs) = fs::read_dir("/proc") else {
        return true;
    };
    let number = |entry: &fs::DirEntry| entry.file_name().to_str()?.parse::<i32>().ok();
    for pid in procs.flatten().filter_map(|entry| number(&entry)) {
        if pid == me {
            continue;
        }
        let fds = match fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => fds,
            // Gone meanwhile.
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => {
                debug!(pid, %err, "cannot read the descriptors of a process: not lending");
                return true;
            }
        };
        for entry in fds.flatten() {
            let Some(other) = number(&entry) else {
                continue;
            };
            if pid == shell && other == fd {
                continue;
            }
            // SAFETY: kcmp compares two processes' descriptors; it touches no memory.
            if unsafe { libc::syscall(libc::SYS_kcmp, shell, pid, KCMP_FILE, fd, other) } == 0 {
                debug!(pid, other, "a shared description: not lending");
                return true;
            }
        }
    }
    false
}

/// The shell's descriptors whose open file descriptions the shell itself made for its
/// process away (an open it ran for it), and that it has not passed on since. Such a
/// description is in no other process: the process away cannot fork (a fork brings it
/// home, and its deputy with its record ends), and the shell hands a descriptor to another
/// only by `sendmsg` with `SCM_RIGHTS`, after which nothing counts as opened away. A
/// descriptor of the shell's that the program got otherwise (inherited, opened before it
/// left, received) may be anyone's.
#[derive(Default)]
pub struct OpenedAway {
    fds: BTreeSet<i32>,
}

impl OpenedAway {
    /// The shell is about to run `nr` with `args`: the numbers it may free or replace are
    /// no longer what was opened, and a message may carry any descriptor away.
    pub fn before(&mut self, nr: i64, args: &[u64; 6]) {
        if matches!(nr, libc::SYS_sendmsg | libc::SYS_sendmmsg) {
            self.fds.clear();
        }
        let freed = Freed::by(nr, args);
        self.fds.retain(|&fd| !freed.covers(fd));
    }

    /// The shell ran `nr` for the process, which returned `ret`: a new description if it
    /// is an open that succeeded.
    pub fn after(&mut self, nr: i64, ret: i64) {
        let opens = matches!(
            nr,
            libc::SYS_open | libc::SYS_openat | libc::SYS_openat2 | libc::SYS_creat
        );
        // A failed open returns an error, which is no number.
        if let (true, Ok(fd @ 0..)) = (opens, i32::try_from(ret)) {
            self.fds.insert(fd);
        }
    }

    /// Whether the description under `fd` was opened away and is the shell's alone.
    pub fn contains(&self, fd: i32) -> bool {
        self.fds.contains(&fd)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;

    fn ask(fd: i32, at: Option<u64>, count: u64, ahead: u64) -> ReadAsk {
        ReadAsk {
            id: 1,
            fd,
            buf: 0x1000,
            count,
            at,
            from: None,
            ahead,
        }
    }

    fn me() -> Pid {
        std::process::id() as Pid
    }

    /// A file of `n` known bytes, opened read-only.
    fn file(n: usize) -> (tempfile::NamedTempFile, fs::File) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&(0..n).map(|i| i as u8).collect::<Vec<_>>())
            .unwrap();
        let ro = fs::File::open(tmp.path()).unwrap();
        (tmp, ro)
    }

    #[test]
    fn a_pread_loan_is_the_files_bytes_and_a_write_makes_it_stale() {
        let (mut tmp, ro) = file(10_000);
        let mut lender = Lender::default();
        let loan = lender
            .lend(me(), ro.as_raw_fd(), &ask(99, Some(1000), 10, 4096), false)
            .unwrap();
        assert_eq!((loan.start, loan.eof, loan.keep), (1000, false, true));
        assert_eq!(
            loan.bytes,
            (1000..5096).map(|i| i as u8).collect::<Vec<_>>()
        );
        assert!(lender.changed().is_empty());
        tmp.write_all(b"more").unwrap();
        assert_eq!(lender.changed(), vec![99]);
        // Told once.
        assert!(lender.changed().is_empty());
    }

    #[test]
    fn a_pread_loan_begins_where_the_remote_asks_if_that_is_before_the_read_and_near() {
        let (_tmp, ro) = file(10_000);
        let mut lender = Lender::default();
        let chunk = |at: u64, from: u64| ReadAsk {
            from: Some(from),
            ..ask(98, Some(at), 10, 4096)
        };
        let loan = lender
            .lend(me(), ro.as_raw_fd(), &chunk(5000, 4096), false)
            .unwrap();
        assert_eq!(loan.start, 4096);
        assert_eq!(
            loan.bytes,
            (4096..8192).map(|i| i as u8).collect::<Vec<_>>()
        );
        // After the read, or farther before it than a loan reaches: from the read.
        let after = lender
            .lend(me(), ro.as_raw_fd(), &chunk(5000, 6000), false)
            .unwrap();
        assert_eq!(after.start, 5000);
        let far = ReadAsk {
            from: Some(0),
            ..ask(98, Some(MAX_BUF + 5), 10, 4096)
        };
        assert_eq!(
            lender
                .lend(me(), ro.as_raw_fd(), &far, false)
                .map(|l| l.start),
            Some(MAX_BUF + 5)
        );
        // A loan reaches past the read, whatever `ahead` says.
        let short = ReadAsk {
            from: Some(4096),
            ..ask(98, Some(8000), 1000, 16)
        };
        let loan = lender.lend(me(), ro.as_raw_fd(), &short, false).unwrap();
        assert_eq!((loan.start, loan.bytes.len()), (4096, 4904));
    }

    #[test]
    fn a_change_after_a_loan_is_told_after_it() {
        let (mut tmp, ro) = file(10_000);
        let mut lender = Lender::default();
        let loan = lender
            .lend(me(), ro.as_raw_fd(), &ask(3, Some(0), 10, 4096), false)
            .unwrap();
        assert!(loan.keep);
        tmp.write_all(b"more").unwrap();
        // Told before the loan: nothing. After it: the loan's descriptor.
        assert!(lender.seen_changed().is_empty());
        assert_eq!(lender.changed(), vec![3]);
    }

    #[test]
    fn a_truncation_makes_a_loan_stale_and_the_end_is_marked() {
        let (tmp, ro) = file(100);
        let mut lender = Lender::default();
        let loan = lender
            .lend(me(), ro.as_raw_fd(), &ask(7, Some(0), 10, 4096), false)
            .unwrap();
        assert!(loan.eof && loan.bytes.len() == 100);
        tmp.as_file().set_len(10).unwrap();
        assert_eq!(lender.changed(), vec![7]);
    }

    #[test]
    fn a_read_write_file_is_lent_for_pread_and_its_own_writes_make_it_stale() {
        let (tmp, _) = file(100);
        let rw = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        let mut lender = Lender::default();
        let loan = lender
            .lend(me(), rw.as_raw_fd(), &ask(5, Some(0), 10, 4096), false)
            .unwrap();
        assert!(loan.keep && loan.eof && loan.bytes.len() == 100);
        std::os::unix::fs::FileExt::write_at(&rw, b"x", 3).unwrap();
        assert_eq!(lender.changed(), vec![5]);
    }

    #[test]
    fn files_opened_for_writing_only_are_not_lent_nor_are_pipes() {
        let (tmp, _) = file(100);
        let wo = fs::OpenOptions::new().write(true).open(tmp.path()).unwrap();
        let mut lender = Lender::default();
        assert!(
            lender
                .lend(me(), wo.as_raw_fd(), &ask(5, Some(0), 10, 4096), false)
                .is_none()
        );
        let (r, _w) = std::io::pipe().unwrap();
        assert!(
            lender
                .lend(me(), r.as_raw_fd(), &ask(5, None, 10, 4096), false)
                .is_none()
        );
    }

    #[test]
    fn a_descriptor_counts_as_opened_away_from_its_open_until_it_is_freed_or_sent() {
        let mut away = OpenedAway::default();
        away.after(libc::SYS_openat, 5);
        away.after(libc::SYS_openat, -2);
        assert!(!away.contains(-2), "a failed open");
        away.after(libc::SYS_read, 6);
        away.after(libc::SYS_open, 7);
        assert!(away.contains(5) && away.contains(7));
        assert!(!away.contains(6), "not an open");
        away.before(libc::SYS_close, &[5, 0, 0, 0, 0, 0]);
        assert!(!away.contains(5), "closed");
        away.before(libc::SYS_dup2, &[3, 7, 0, 0, 0, 0]);
        assert!(!away.contains(7), "replaced by another description");
        away.after(libc::SYS_openat, 8);
        away.after(libc::SYS_openat, 9);
        away.before(libc::SYS_close_range, &[9, u64::from(u32::MAX), 0, 0, 0, 0]);
        assert!(away.contains(8) && !away.contains(9));
        away.before(libc::SYS_sendmsg, &[4, 0, 0, 0, 0, 0]);
        assert!(!away.contains(8), "a message may carry it away");
    }

    #[test]
    fn a_description_another_process_holds_is_shared_and_another_of_the_same_file_is_not() {
        let (tmp, ro) = file(100);
        // Children hold the descriptions as their stdin (our own process is never looked at).
        let holding = |f: fs::File| {
            std::process::Command::new("sleep")
                .arg("30")
                .stdin(f)
                .spawn()
                .unwrap()
        };
        let mut a = holding(ro.try_clone().unwrap());
        let mut b = holding(ro.try_clone().unwrap());
        let mut c = holding(fs::File::open(tmp.path()).unwrap());
        let a_shares = shared(a.id() as Pid, 0);
        let c_shares = shared(c.id() as Pid, 0);
        for child in [&mut a, &mut b, &mut c] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert!(a_shares, "a and b hold the same description");
        assert!(!c_shares, "c opened the file on its own");
    }
}
