//! Whether a thread that waits for a lock through MFS has a signal to take.
//!
//! Once a FUSE request has reached the daemon, the kernel waits for its answer: fuser 0.18
//! answers FUSE_INTERRUPT with ENOSYS, after which the kernel sends no more interrupts and
//! lets only a fatal signal end the wait, and not even that once the request has been read
//! (`request_wait_answer` in fs/fuse/dev.c). A lock that must wait is tried again from the
//! requesting node (fs.rs), so the wait ends when the daemon answers; it answers EINTR as soon
//! as the waiting thread has a signal that the kernel would deliver to it, read from
//! `/proc/TID/status` (FUSE names the calling thread). The kernel turns a lock's EINTR into
//! ERESTARTSYS: the handler runs and the call fails with EINTR or restarts (SA_RESTART), as a
//! local lock's wait does; a fatal signal kills the thread.
//!
//! The answer must not come without such a signal: with none pending for the thread, the
//! kernel would hand ERESTARTSYS (512) to the process as an errno. So a signal sent to the
//! process as a whole (`ShdPnd`) counts only in a process of one thread, which the kernel
//! then picks to take it; in a process of more threads another thread may take it, as it
//! may locally too. A fatal signal is put in every thread's own set (`SigPnd`) by the kernel.

/// The signal sets of one thread, as `/proc/TID/status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// `SigPnd`: pending for this thread.
    own: u64,
    /// `ShdPnd`: pending for its process, to be taken by any of its threads.
    shared: u64,
    /// `SigBlk`: blocked by this thread.
    blocked: u64,
    /// `SigIgn`: ignored by its process.
    ignored: u64,
    /// `Threads`: the threads of its process.
    threads: u32,
}

impl Signals {
    /// The sets of a status file's text; `None` if one is missing or malformed.
    pub fn parse(status: &str) -> Option<Signals> {
        let field = |name: &str| crate::status::field(status, name);
        let mask = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(Signals {
            own: mask("SigPnd")?,
            shared: mask("ShdPnd")?,
            blocked: mask("SigBlk")?,
            ignored: mask("SigIgn")?,
            threads: field("Threads")?.parse().ok()?,
        })
    }

    /// Whether a signal is pending that the kernel delivers to this thread when its call
    /// returns (see the module's doc).
    pub fn interrupt(&self) -> bool {
        let shared = if self.threads == 1 { self.shared } else { 0 };
        (self.own | shared) & !self.blocked & !self.ignored != 0
    }
}

/// Whether thread `tid` (of the daemon's PID namespace) has a signal to take. A thread the
/// daemon cannot see (0: from a PID namespace outside the daemon's) has none that it knows.
pub fn pending_for(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|status| Signals::parse(&status))
        .is_some_and(|signals| signals.interrupt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit of signal `n` in a set.
    fn bit(n: i32) -> u64 {
        1 << (n - 1)
    }

    fn status(own: u64, shared: u64, blocked: u64, ignored: u64, threads: u32) -> String {
        format!(
            "Name:\tpython3\nTgid:\t42\nThreads:\t{threads}\nSigQ:\t1/6863\n\
             SigPnd:\t{own:016x}\nShdPnd:\t{shared:016x}\nSigBlk:\t{blocked:016x}\n\
             SigIgn:\t{ignored:016x}\nSigCgt:\t0000000000000200\n"
        )
    }

    fn interrupts(own: u64, shared: u64, blocked: u64, ignored: u64, threads: u32) -> bool {
        Signals::parse(&status(own, shared, blocked, ignored, threads))
            .expect("a well-formed status")
            .interrupt()
    }

    #[test]
    fn the_sets_are_read_from_a_status_file() {
        let text = status(bit(9), bit(10), bit(2), bit(13), 3);
        assert_eq!(
            Signals::parse(&text),
            Some(Signals {
                own: 1 << 8,
                shared: 1 << 9,
                blocked: 1 << 1,
                ignored: 1 << 12,
                threads: 3,
            })
        );
    }

    #[test]
    fn a_status_without_a_set_or_with_junk_says_nothing() {
        let text = status(0, 0, 0, 0, 1);
        let without: String = text
            .lines()
            .filter(|l| !l.starts_with("ShdPnd"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(Signals::parse(&without), None);
        assert_eq!(
            Signals::parse(&text.replace("SigBlk:\t0000000000000000", "SigBlk:\tzz")),
            None
        );
        assert_eq!(Signals::parse(""), None);
    }

    #[test]
    fn a_pending_signal_interrupts_unless_blocked_or_ignored() {
        let usr1 = bit(libc::SIGUSR1);
        assert!(!interrupts(0, 0, 0, 0, 1));
        assert!(interrupts(usr1, 0, 0, 0, 1));
        assert!(interrupts(0, usr1, 0, 0, 1));
        assert!(!interrupts(usr1, 0, usr1, 0, 1));
        assert!(!interrupts(0, usr1, usr1, 0, 1));
        assert!(!interrupts(usr1, usr1, 0, usr1, 1));
        // Another signal blocked does not hide this one.
        assert!(interrupts(usr1, 0, bit(libc::SIGINT), 0, 1));
    }

    #[test]
    fn a_signal_to_a_process_of_many_threads_interrupts_only_when_fatal() {
        let usr1 = bit(libc::SIGUSR1);
        assert!(!interrupts(0, usr1, 0, 0, 4));
        // The kernel puts SIGKILL in every thread's own set as the process dies.
        let kill = bit(libc::SIGKILL);
        assert!(interrupts(kill, kill, 0, 0, 4));
        assert!(interrupts(usr1, 0, 0, 0, 4));
    }

    #[test]
    fn a_thread_that_is_not_there_has_no_signal() {
        assert!(!pending_for(0));
        assert!(!pending_for(u32::MAX));
    }

    #[test]
    fn this_thread_with_nothing_pending_has_no_signal() {
        // SAFETY: gettid has no failure mode.
        let tid = unsafe { libc::gettid() } as u32;
        assert!(!pending_for(tid));
    }
}
