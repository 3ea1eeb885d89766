//! The table of system calls: where each one runs when the process is remote, and how its
//! buffers cross. The seccomp filter (which calls run locally) and the forwarding code (how to
//! ship a call home) both derive from this one table; see docs/forwarding.md.

/// Where a system call made at the remote runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// On the remote node: pure computation and per-task state (memory, futexes, signal masks
    /// and handlers, clocks, sleeps). Never leaves the seccomp filter.
    Local,
    /// In the home shell, with these argument kinds.
    Forward(&'static [Arg]),
    /// Needs the process at home (fork, exec, calls we cannot ship): go home, then run it there.
    Home,
    /// `mmap` of a home file: the contents come home-to-remote as a private copy.
    MmapFile,
    /// `readv`/`writev`: shipped as one `read`/`write` of the gathered buffer.
    Vector,
    /// `sendmsg`/`recvmsg`: the msghdr and the buffers it points to (see `msg`).
    Message,
    /// `sendmmsg`: one forwarded `sendmsg` per message, in order, until one fails.
    Batch,
    /// The process ends: run it at home, where the exit status is collected.
    Exit,
    /// Runs where the process runs, but only for these arguments, which the filter does not
    /// look at: the guest lets the call continue after the notification.
    Continue,
}

/// One argument of a forwarded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A plain value (fd, flags, count).
    Val,
    /// A NUL-terminated path read from remote memory (NULL passes through).
    Path,
    /// A buffer sent home.
    In(Len),
    /// A buffer the call fills, sent back; `Valid` says how much of it is meaningful.
    Out(Len, Valid),
    /// A buffer sent home and back.
    InOut(Len),
}

/// How long a buffer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// The value of argument `n`.
    Arg(usize),
    /// The value of argument `n` times a record size.
    ArgTimes(usize, u64),
    /// A fixed size.
    Fixed(u64),
    /// The u32 that argument `n` points to (socklen_t in/out lengths).
    DerefU32(usize),
    /// An fd_set for `nfds` in argument 0.
    FdSet,
}

/// How much of an out buffer the call wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valid {
    /// All of it (when the call succeeds).
    All,
    /// As many bytes as the call returned.
    Ret,
    /// As many records of this size as the call returned.
    RetTimes(u64),
}

use Arg::{In, InOut, Out, Path, Val};
use Len::{Arg as A, ArgTimes, DerefU32, FdSet, Fixed};
use Valid::{All, Ret, RetTimes};

const STAT: u64 = 144;
const STATFS: u64 = 120;
const TIMESPEC: u64 = 16;
const ITIMERVAL: u64 = 32;
const ITIMERSPEC: u64 = 32;
const RLIMIT: u64 = 16;
const SOCKLEN: Arg = InOut(Fixed(4));

/// Where `nr` runs, given its arguments (a few calls depend on them).
pub fn route(nr: i64, args: &[u64; 6]) -> Route {
    use Route::{Exit, Forward as F, Home, Local};
    match nr {
        libc::SYS_read => F(&[Val, Out(A(2), Ret), Val]),
        libc::SYS_write => F(&[Val, In(A(2)), Val]),
        libc::SYS_open => F(&[Path, Val, Val]),
        libc::SYS_close => F(&[Val]),
        libc::SYS_stat | libc::SYS_lstat => F(&[Path, Out(Fixed(STAT), All)]),
        libc::SYS_fstat => F(&[Val, Out(Fixed(STAT), All)]),
        libc::SYS_poll => F(&[InOut(ArgTimes(1, 8)), Val, Val]),
        libc::SYS_lseek => F(&[Val, Val, Val]),
        libc::SYS_mmap if args[3] & libc::MAP_ANONYMOUS as u64 != 0 => Local,
        libc::SYS_mmap => Route::MmapFile,
        libc::SYS_ioctl => ioctl(args[1]),
        libc::SYS_pread64 => F(&[Val, Out(A(2), Ret), Val, Val]),
        libc::SYS_pwrite64 => F(&[Val, In(A(2)), Val, Val]),
        libc::SYS_readv | libc::SYS_writev => Route::Vector,
        libc::SYS_sendmsg | libc::SYS_recvmsg => Route::Message,
        // glibc's resolver sends its A and AAAA queries with one sendmmsg.
        libc::SYS_sendmmsg => Route::Batch,
        libc::SYS_access => F(&[Path, Val]),
        libc::SYS_pipe => F(&[Out(Fixed(8), All)]),
        libc::SYS_select => F(&[
            Val,
            InOut(FdSet),
            InOut(FdSet),
            InOut(FdSet),
            InOut(Fixed(TIMESPEC)),
        ]),
        // What glibc's select() calls: without a signal mask (argument 5, a pointer to a
        // {sigset pointer, size} pair, which would need a second level of copying) it is
        // select with a timespec.
        libc::SYS_pselect6 if args[5] == 0 => F(&[
            Val,
            InOut(FdSet),
            InOut(FdSet),
            InOut(FdSet),
            InOut(Fixed(TIMESPEC)),
            Val,
        ]),
        libc::SYS_dup | libc::SYS_dup2 | libc::SYS_dup3 => F(&[Val, Val, Val]),
        // ITIMER_VIRTUAL and ITIMER_PROF count the process's own CPU time and move with it;
        // ITIMER_REAL is wall-clock time, shared with alarm(), and stays at home.
        libc::SYS_getitimer | libc::SYS_setitimer if args[0] != libc::ITIMER_REAL as u64 => {
            Route::Continue
        }
        libc::SYS_getitimer => F(&[Val, Out(Fixed(ITIMERVAL), All)]),
        libc::SYS_alarm => F(&[Val]),
        libc::SYS_setitimer => F(&[Val, In(Fixed(ITIMERVAL)), Out(Fixed(ITIMERVAL), All)]),
        libc::SYS_sendfile => F(&[Val, Val, InOut(Fixed(8)), Val]),
        libc::SYS_socket | libc::SYS_listen | libc::SYS_shutdown => F(&[Val, Val, Val]),
        libc::SYS_connect | libc::SYS_bind => F(&[Val, In(A(2)), Val]),
        libc::SYS_accept => F(&[Val, Out(DerefU32(2), All), SOCKLEN]),
        libc::SYS_accept4 => F(&[Val, Out(DerefU32(2), All), SOCKLEN, Val]),
        libc::SYS_sendto => F(&[Val, In(A(2)), Val, Val, In(A(5)), Val]),
        libc::SYS_recvfrom => F(&[
            Val,
            Out(A(2), Ret),
            Val,
            Val,
            Out(DerefU32(5), All),
            SOCKLEN,
        ]),
        libc::SYS_getsockname | libc::SYS_getpeername => F(&[Val, Out(DerefU32(2), All), SOCKLEN]),
        libc::SYS_socketpair => F(&[Val, Val, Val, Out(Fixed(8), All)]),
        libc::SYS_setsockopt => F(&[Val, Val, Val, In(A(4)), Val]),
        libc::SYS_getsockopt => F(&[Val, Val, Val, Out(DerefU32(4), All), SOCKLEN]),
        libc::SYS_exit | libc::SYS_exit_group => Exit,
        libc::SYS_wait4 => F(&[Val, Out(Fixed(4), All), Val, Out(Fixed(144), All)]),
        libc::SYS_kill | libc::SYS_tkill | libc::SYS_tgkill => F(&[Val, Val, Val]),
        libc::SYS_uname => F(&[Out(Fixed(390), All)]),
        libc::SYS_fcntl => match args[1] as i32 {
            libc::F_GETLK
            | libc::F_SETLK
            | libc::F_SETLKW
            | libc::F_OFD_GETLK
            | libc::F_OFD_SETLK
            | libc::F_OFD_SETLKW => F(&[Val, Val, InOut(Fixed(32))]),
            // F_GETOWN_EX, F_SETOWN_EX: a struct f_owner_ex.
            15 | 16 => F(&[Val, Val, InOut(Fixed(8))]),
            _ => F(&[Val, Val, Val]),
        },
        libc::SYS_flock
        | libc::SYS_fsync
        | libc::SYS_fdatasync
        | libc::SYS_ftruncate
        | libc::SYS_fchdir
        | libc::SYS_fchmod
        | libc::SYS_fchown
        | libc::SYS_umask
        | libc::SYS_fadvise64
        | libc::SYS_close_range => F(&[Val, Val, Val, Val]),
        libc::SYS_truncate
        | libc::SYS_chdir
        | libc::SYS_rmdir
        | libc::SYS_unlink
        | libc::SYS_chmod
        | libc::SYS_mkdir
        | libc::SYS_creat
        | libc::SYS_chown
        | libc::SYS_lchown => F(&[Path, Val, Val]),
        libc::SYS_getdents | libc::SYS_getdents64 => F(&[Val, Out(A(2), Ret), Val]),
        libc::SYS_getcwd => F(&[Out(A(1), Ret), Val]),
        libc::SYS_rename | libc::SYS_link | libc::SYS_symlink => F(&[Path, Path]),
        libc::SYS_readlink => F(&[Path, Out(A(2), Ret), Val]),
        libc::SYS_getrlimit => F(&[Val, Out(Fixed(RLIMIT), All)]),
        libc::SYS_setrlimit => F(&[Val, In(Fixed(RLIMIT))]),
        libc::SYS_prlimit64 => F(&[Val, Val, In(Fixed(RLIMIT)), Out(Fixed(RLIMIT), All)]),
        libc::SYS_sysinfo => F(&[Out(Fixed(112), All)]),
        libc::SYS_getpid
        | libc::SYS_getppid
        | libc::SYS_gettid
        | libc::SYS_getuid
        | libc::SYS_geteuid
        | libc::SYS_getgid
        | libc::SYS_getegid
        | libc::SYS_getpgrp
        | libc::SYS_setsid
        | libc::SYS_sync => F(&[]),
        libc::SYS_setpgid
        | libc::SYS_getpgid
        | libc::SYS_getsid
        | libc::SYS_setuid
        | libc::SYS_setgid
        | libc::SYS_setreuid
        | libc::SYS_setregid
        | libc::SYS_setresuid
        | libc::SYS_setresgid
        | libc::SYS_getpriority
        | libc::SYS_setpriority => F(&[Val, Val, Val]),
        libc::SYS_getgroups => F(&[Val, Out(ArgTimes(0, 4), All)]),
        libc::SYS_getresuid | libc::SYS_getresgid => {
            F(&[Out(Fixed(4), All), Out(Fixed(4), All), Out(Fixed(4), All)])
        }
        libc::SYS_statfs => F(&[Path, Out(Fixed(STATFS), All)]),
        libc::SYS_fstatfs => F(&[Val, Out(Fixed(STATFS), All)]),
        libc::SYS_utime => F(&[Path, In(Fixed(16))]),
        libc::SYS_utimes => F(&[Path, In(Fixed(32))]),
        libc::SYS_epoll_create
        | libc::SYS_epoll_create1
        | libc::SYS_eventfd
        | libc::SYS_eventfd2
        | libc::SYS_timerfd_create => F(&[Val, Val]),
        libc::SYS_epoll_ctl => F(&[Val, Val, Val, In(Fixed(12))]),
        libc::SYS_epoll_wait => F(&[Val, Out(ArgTimes(2, 12), RetTimes(12)), Val, Val]),
        libc::SYS_epoll_pwait => F(&[
            Val,
            Out(ArgTimes(2, 12), RetTimes(12)),
            Val,
            Val,
            In(Fixed(8)),
            Val,
        ]),
        libc::SYS_timerfd_settime => {
            F(&[Val, Val, In(Fixed(ITIMERSPEC)), Out(Fixed(ITIMERSPEC), All)])
        }
        libc::SYS_timerfd_gettime => F(&[Val, Out(Fixed(ITIMERSPEC), All)]),
        libc::SYS_timer_create => F(&[Val, In(Fixed(64)), Out(Fixed(4), All)]),
        libc::SYS_timer_settime => {
            F(&[Val, Val, In(Fixed(ITIMERSPEC)), Out(Fixed(ITIMERSPEC), All)])
        }
        libc::SYS_timer_gettime => F(&[Val, Out(Fixed(ITIMERSPEC), All)]),
        libc::SYS_timer_getoverrun | libc::SYS_timer_delete => F(&[Val]),
        libc::SYS_openat => F(&[Val, Path, Val, Val]),
        libc::SYS_mkdirat | libc::SYS_unlinkat | libc::SYS_fchmodat => F(&[Val, Path, Val]),
        libc::SYS_faccessat => F(&[Val, Path, Val]),
        libc::SYS_faccessat2 => F(&[Val, Path, Val, Val]),
        libc::SYS_fchownat => F(&[Val, Path, Val, Val, Val]),
        libc::SYS_newfstatat => F(&[Val, Path, Out(Fixed(STAT), All), Val]),
        libc::SYS_renameat => F(&[Val, Path, Val, Path]),
        libc::SYS_renameat2 | libc::SYS_linkat => F(&[Val, Path, Val, Path, Val]),
        libc::SYS_symlinkat => F(&[Path, Val, Path]),
        libc::SYS_readlinkat => F(&[Val, Path, Out(A(3), Ret), Val]),
        libc::SYS_ppoll => F(&[
            InOut(ArgTimes(1, 8)),
            Val,
            InOut(Fixed(TIMESPEC)),
            In(Fixed(8)),
            Val,
        ]),
        libc::SYS_utimensat => F(&[Val, Path, In(Fixed(2 * TIMESPEC)), Val]),
        libc::SYS_pipe2 => F(&[Out(Fixed(8), All), Val]),
        libc::SYS_statx => F(&[Val, Path, Val, Val, Out(Fixed(256), All)]),
        libc::SYS_rt_sigqueueinfo => F(&[Val, Val, In(Fixed(128))]),

        // Computation and per-task state: run where the process runs.
        libc::SYS_brk
        | libc::SYS_munmap
        | libc::SYS_mprotect
        | libc::SYS_mremap
        | libc::SYS_madvise
        | libc::SYS_mincore
        | libc::SYS_msync
        | libc::SYS_futex
        | libc::SYS_futex_waitv
        | libc::SYS_set_robust_list
        | libc::SYS_get_robust_list
        | libc::SYS_rseq
        | libc::SYS_rt_sigaction
        | libc::SYS_rt_sigprocmask
        | libc::SYS_rt_sigreturn
        | libc::SYS_rt_sigpending
        | libc::SYS_rt_sigsuspend
        | libc::SYS_rt_sigtimedwait
        | libc::SYS_sigaltstack
        | libc::SYS_pause
        | libc::SYS_sched_yield
        | libc::SYS_nanosleep
        | libc::SYS_clock_nanosleep
        | libc::SYS_clock_gettime
        | libc::SYS_clock_getres
        | libc::SYS_gettimeofday
        | libc::SYS_time
        | libc::SYS_getrandom
        | libc::SYS_arch_prctl
        | libc::SYS_set_tid_address
        | libc::SYS_restart_syscall
        | libc::SYS_membarrier
        | libc::SYS_sched_getaffinity
        | libc::SYS_getcpu
        | libc::SYS_getrusage
        | libc::SYS_times
        | libc::SYS_prctl => Local,

        // Everything else, fork/clone/execve among them, runs after going home.
        _ => Home,
    }
}

/// ioctl requests we know the argument of; others go home.
fn ioctl(request: u64) -> Route {
    use Route::Forward as F;
    const TERMIOS: u64 = 60;
    match request as libc::c_ulong {
        libc::TCGETS => F(&[Val, Val, Out(Fixed(TERMIOS), All)]),
        libc::TCSETS | libc::TCSETSW | libc::TCSETSF => F(&[Val, Val, In(Fixed(TERMIOS))]),
        libc::TIOCGWINSZ => F(&[Val, Val, Out(Fixed(8), All)]),
        libc::TIOCSWINSZ => F(&[Val, Val, In(Fixed(8))]),
        libc::TIOCGPGRP | libc::FIONREAD | libc::TIOCOUTQ => F(&[Val, Val, Out(Fixed(4), All)]),
        libc::TIOCSPGRP | libc::FIONBIO | libc::FIOASYNC => F(&[Val, Val, In(Fixed(4))]),
        libc::FIOCLEX | libc::FIONCLEX | libc::TCFLSH | libc::TCXONC | libc::TCSBRK => {
            F(&[Val, Val, Val])
        }
        _ => Route::Home,
    }
}

/// Every call the filter lets run locally, for building it.
pub fn local_calls() -> Vec<i64> {
    (0..512)
        .filter(|&nr| route(nr, &[0, 0, 0, libc::MAP_ANONYMOUS as u64, 0, 0]) == Route::Local)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_calls_forward_and_computation_stays() {
        assert!(matches!(route(libc::SYS_read, &[0; 6]), Route::Forward(_)));
        assert_eq!(route(libc::SYS_futex, &[0; 6]), Route::Local);
        assert_eq!(route(libc::SYS_fork, &[0; 6]), Route::Home);
        assert_eq!(route(libc::SYS_execve, &[0; 6]), Route::Home);
        assert_eq!(route(libc::SYS_exit_group, &[0; 6]), Route::Exit);
        let anon = [
            0,
            4096,
            3,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ];
        assert_eq!(route(libc::SYS_mmap, &anon), Route::Local);
        let file = [0, 4096, 1, libc::MAP_PRIVATE as u64, 3, 0];
        assert_eq!(route(libc::SYS_mmap, &file), Route::MmapFile);
        assert!(matches!(
            route(libc::SYS_ioctl, &[1, libc::TCGETS, 0, 0, 0, 0]),
            Route::Forward(_)
        ));
        assert_eq!(
            route(libc::SYS_ioctl, &[1, 0xdead, 0, 0, 0, 0]),
            Route::Home
        );
        // glibc's select() passes no signal mask; one with a mask goes home.
        let select = [4, 0x1000, 0, 0, 0x2000, 0];
        assert!(matches!(
            route(libc::SYS_pselect6, &select),
            Route::Forward(_)
        ));
        let masked = [4, 0x1000, 0, 0, 0x2000, 0x3000];
        assert_eq!(route(libc::SYS_pselect6, &masked), Route::Home);
        assert_eq!(route(libc::SYS_recvmsg, &[0; 6]), Route::Message);
        assert_eq!(route(libc::SYS_sendmmsg, &[0; 6]), Route::Batch);
        let virtual_timer = [libc::ITIMER_VIRTUAL as u64, 0x1000, 0, 0, 0, 0];
        assert_eq!(route(libc::SYS_setitimer, &virtual_timer), Route::Continue);
        assert!(matches!(
            route(libc::SYS_setitimer, &[0, 0x1000, 0, 0, 0, 0]),
            Route::Forward(_)
        ));
    }

    #[test]
    fn local_set_holds_no_environment_call() {
        let local = local_calls();
        for nr in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_getpid,
            libc::SYS_kill,
            libc::SYS_execve,
        ] {
            assert!(!local.contains(&nr), "{nr} must not run locally");
        }
        assert!(local.contains(&libc::SYS_mmap) && local.contains(&libc::SYS_clock_gettime));
    }

    #[test]
    fn buffer_specs_point_at_real_arguments() {
        for nr in 0..512 {
            if let Route::Forward(args) = route(nr, &[0; 6]) {
                assert!(args.len() <= 6, "{nr}");
                for arg in args {
                    let len = match arg {
                        In(len) | Out(len, _) | InOut(len) => *len,
                        _ => continue,
                    };
                    if let A(i) | ArgTimes(i, _) | DerefU32(i) = len {
                        assert!(
                            i < args.len(),
                            "syscall {nr}: length from missing argument {i}"
                        );
                    }
                }
            }
        }
    }
}
