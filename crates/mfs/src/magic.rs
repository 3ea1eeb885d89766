//! `/mfs/magic`: whether the call the kernel resolves it for creates a file.
//!
//! FUSE asks for a symlink's target without saying which call follows it. But the thread that
//! made the call waits in it for the daemon's answer, so `/proc/TID/syscall` (readable by
//! root, as the daemon is) gives the call's number and arguments: `open` (flags in argument
//! 2), `openat` (argument 3), `creat` (always creates) and `openat2` (the flags are the first
//! u64 of the `struct open_how` argument 3 points to, read from the thread's memory). Any
//! other call, or a thread that cannot be read, does not create: it is told the node of the
//! process's last creation (docs/mfs.md, "Special entries").

/// A thread waiting in a system call, as `/proc/TID/syscall` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blocked {
    nr: i64,
    args: [u64; 6],
}

/// Whether thread `tid`, waiting for `/mfs/magic` to be resolved, does so to create a file.
pub fn creates_a_file(tid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/syscall")) else {
        return false;
    };
    parse(&text).is_some_and(|call| creates(&call, |how| read_u64(tid, how)))
}

/// `/proc/TID/syscall`: `NR ARG1 ... ARG6 SP PC` (all but NR in hex) for a thread in a
/// call; `-1 SP PC` outside one and `running` while it runs, which name no call (fs/proc/
/// base.c, proc_pid_syscall).
fn parse(text: &str) -> Option<Blocked> {
    let mut fields = text.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    Some(Blocked { nr, args })
}

/// Whether `call` creates a file where its path leads; `how_flags` reads the first u64
/// (the flags) of an `open_how` at an address of the caller's memory.
fn creates(call: &Blocked, how_flags: impl FnOnce(u64) -> Option<u64>) -> bool {
    let has_creat = |flags: u64| flags & libc::O_CREAT as u64 != 0;
    match call.nr {
        libc::SYS_creat => true,
        libc::SYS_open => has_creat(call.args[1]),
        libc::SYS_openat => has_creat(call.args[2]),
        libc::SYS_openat2 => how_flags(call.args[2]).is_some_and(has_creat),
        _ => false,
    }
}

/// The u64 at `addr` in thread `tid`'s memory.
fn read_u64(tid: u32, addr: u64) -> Option<u64> {
    let mut word = [0u8; 8];
    let local = libc::iovec {
        iov_base: word.as_mut_ptr().cast(),
        iov_len: word.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: word.len(),
    };
    // SAFETY: `local` is 8 writable bytes that live for the call; the kernel checks `remote`
    // against the other process's mappings and never touches ours there.
    let got = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (got == word.len() as isize).then(|| u64::from_ne_bytes(word))
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    const AT_FDCWD: u64 = libc::AT_FDCWD as u32 as u64;

    fn call(nr: i64, args: [u64; 6]) -> Blocked {
        Blocked { nr, args }
    }

    #[test]
    fn the_kernels_lines_give_the_call_or_nothing() {
        let line =
            "257 0xffffff9c 0x7ffc5b8e0b10 0x241 0x1b6 0x0 0x0 0x7ffc5b8e0a98 0x7f1c2d8f2b4d\n";
        assert_eq!(
            parse(line),
            Some(call(
                libc::SYS_openat,
                [AT_FDCWD, 0x7ffc5b8e0b10, 0x241, 0x1b6, 0, 0]
            ))
        );
        // Outside a call, running, cut short, or not the kernel's.
        assert_eq!(parse("-1 0x7ffc5b8e0a98 0x7f1c2d8f2b4d\n"), None);
        assert_eq!(parse("running\n"), None);
        assert_eq!(parse("257 0xffffff9c 0x7ffc5b8e0b10\n"), None);
        assert_eq!(parse("257 ffffff9c 0x1 0x2 0x3 0x4 0x5 0x6 0x7\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn only_opens_with_o_creat_and_creat_create() {
        let creat = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
        let no_memory = |_| None;
        assert!(creates(
            &call(libc::SYS_creat, [0x1000, 0o644, 0, 0, 0, 0]),
            no_memory
        ));
        let open = |flags: i32| call(libc::SYS_open, [0x1000, flags as u64, 0o644, 0, 0, 0]);
        assert!(creates(&open(creat), no_memory));
        assert!(!creates(&open(libc::O_RDONLY), no_memory));
        let openat = |flags: i32| {
            call(
                libc::SYS_openat,
                [AT_FDCWD, 0x1000, flags as u64, 0o644, 0, 0],
            )
        };
        assert!(creates(&openat(creat), no_memory));
        assert!(!creates(&openat(libc::O_RDWR), no_memory));
        // openat2's flags are read where argument 3 points, and only there.
        let openat2 = call(libc::SYS_openat2, [AT_FDCWD, 0x1000, 0x2000, 24, 0, 0]);
        let how = |flags: i32| move |at: u64| (at == 0x2000).then_some(flags as u64);
        assert!(creates(&openat2, how(creat)));
        assert!(!creates(&openat2, how(libc::O_RDONLY)));
        assert!(!creates(&openat2, no_memory));
        // O_CREAT's bit in another call's arguments means nothing.
        let mkdir = call(libc::SYS_mkdir, [0x1000, libc::O_CREAT as u64, 0, 0, 0, 0]);
        assert!(!creates(&mkdir, no_memory));
    }

    /// Whether [`creates_a_file`] says so of a thread of this process that waits in `nr` with
    /// the arguments `args` makes of a fifo's path (an open of a fifo waits for the other
    /// end, which is then opened here to let it go).
    fn seen_in_the_call(nr: i64, args: fn(u64) -> [u64; 6]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let fifo = CString::new(dir.path().join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (tell, told) = mpsc::channel();
        let path = fifo.as_ptr() as u64;
        let waiter = std::thread::spawn(move || {
            // SAFETY: gettid cannot fail.
            tell.send(unsafe { libc::gettid() } as u32).unwrap();
            let args = args(path);
            // SAFETY: the path lives until this thread is joined; an `open_how` (openat2's)
            // is leaked by `how`.
            unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
        });
        let tid = told.recv().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let in_the_call = loop {
            let text = std::fs::read_to_string(format!("/proc/{tid}/syscall"))
                .unwrap_or_else(|e| panic!("thread {tid} ended before it waited in {nr}: {e}"));
            if parse(&text).is_some_and(|c| c.nr == nr) {
                break creates_a_file(tid);
            }
            assert!(
                Instant::now() < deadline,
                "thread {tid} never waited in {nr}: {text}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        // O_RDWR on a fifo never waits, and is the other end of either.
        // SAFETY: a valid C string.
        let other_end = unsafe { libc::open(fifo.as_ptr(), libc::O_RDWR) };
        assert!(other_end >= 0);
        let fd = waiter.join().unwrap();
        // SAFETY: both descriptors are this test's.
        unsafe {
            libc::close(other_end);
            libc::close(fd as i32);
        }
        in_the_call
    }

    /// The address of an `open_how` for openat2, leaked so that it outlives the waiting
    /// thread's call, which reads it, as [`creates_a_file`] does through process_vm_readv.
    fn how(flags: i32, mode: u64) -> u64 {
        let how: &'static [u64; 3] = Box::leak(Box::new([flags as u64, mode, 0]));
        how.as_ptr() as u64
    }

    #[test]
    fn a_thread_waiting_in_a_creating_open_is_seen_to_create() {
        const CREAT: u64 = (libc::O_RDONLY | libc::O_CREAT) as u64;
        assert!(seen_in_the_call(libc::SYS_openat, |p| {
            [AT_FDCWD, p, CREAT, 0o600, 0, 0]
        }));
        assert!(!seen_in_the_call(libc::SYS_openat, |p| {
            [AT_FDCWD, p, libc::O_RDONLY as u64, 0, 0, 0]
        }));
        assert!(seen_in_the_call(libc::SYS_open, |p| [
            p, CREAT, 0o600, 0, 0, 0
        ]));
        assert!(seen_in_the_call(libc::SYS_creat, |p| [
            p, 0o600, 0, 0, 0, 0
        ]));
        assert!(seen_in_the_call(libc::SYS_openat2, |p| {
            [
                AT_FDCWD,
                p,
                how(libc::O_RDONLY | libc::O_CREAT, 0o600),
                24,
                0,
                0,
            ]
        }));
        assert!(!seen_in_the_call(libc::SYS_openat2, |p| {
            [AT_FDCWD, p, how(libc::O_RDONLY, 0), 24, 0, 0]
        }));
    }
}
