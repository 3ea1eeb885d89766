//! The table of system calls: where each one runs when the process is remote, and how its
//! arguments cross. It decides at both ends of a session:
//!
//! - at the remote, [`route`] says whether a call runs locally (the seccomp filter is built
//!   from it), goes home, or is forwarded, and [`Row::buffers`] says which buffers the guest
//!   reads from the remote's memory and in what order it sends them;
//! - at home, [`Shape::at_home`] derives every length and buffer of a forwarded call from
//!   the same rows and the call's own arguments, and checks what the remote sent against
//!   them before home touches any memory. A call that does not fit is refused with `EFAULT`
//!   (a buffer that does not match its length) or `EINVAL` (a length over the limits, a call
//!   no remote ships), and never runs. Nothing the peer says about sizes is trusted.
//!
//! Rows also say where a call may run at home: in the shell, or (for some calls on regular
//! files and directories, see `files`) in the supervisor on a copy of the descriptor. A call
//! that could run where the process is, because its descriptor lives there (a file system
//! that is the same on every node), is a new row of this table, not a new mechanism.
//! See docs/forwarding.md.

use crate::sockopts::{self, OptShape};
use crate::{ioctls, msg};

/// Bytes of the kernel's `sigset_t`, which calls that take a mask insist on.
pub const SIGSET: u64 = 8;

/// Largest buffer one forwarded call moves. Larger reads and writes are shortened, which
/// read(2) and write(2) allow; other lengths over it are refused with EINVAL.
pub const MAX_BUF: u64 = 4 << 20;
/// Longest path a call carries, its NUL included (PATH_MAX).
pub const PATH_MAX: u64 = 4096;

/// Where a system call made at the remote runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// On the remote node: pure computation and per-task state (memory, futexes, signal masks
    /// and handlers, clocks, sleeps). Never leaves the seccomp filter.
    Local,
    /// In the home shell, with the arguments of this row.
    Forward(Row),
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
    /// Reads the process's own CPU use (its CPU-time clock, getrusage of itself): the guest
    /// answers it from what the process used everywhere (see `cputime`).
    CpuTime,
}

/// How a forwarded call's arguments cross, and where it may run at home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Its arguments, in order (missing ones are plain values).
    pub args: &'static [Arg],
    /// At home the call may run in the supervisor on a copy of its descriptor (its first
    /// [`Arg::Fd`]) when that is a regular file or directory: it then never blocks.
    pub on_copy: bool,
}

/// One argument of a forwarded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A plain value (flags, count, offset).
    Val,
    /// A file descriptor, as the process numbers it.
    Fd,
    /// A NUL-terminated path read from remote memory (NULL passes through).
    Path,
    /// A buffer sent home.
    In(Len),
    /// A buffer the call fills, sent back; `Valid` says how much of it is meaningful.
    Out(Len, Valid),
    /// A buffer sent home and back.
    InOut(Len),
    /// The signal mask a call waits with (a `sigset_t`, sent home).
    Sigmask,
    /// pselect6's sixth argument: a `{const sigset_t *ss; size_t ss_len}` pair. The mask it
    /// points to is sent home (nothing where its pointer is NULL), and home points a pair of
    /// its own at home's copy.
    SigsetPair,
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
    /// The u32 that argument `n` points to (socklen_t in/out lengths). That argument is itself
    /// a 4-byte buffer sent home, so home reads the length from what was sent.
    DerefU32(usize),
    /// As [`Len::DerefU32`], counted in records of this many bytes.
    DerefU32Times(usize, u64),
    /// An fd_set for `nfds` in argument 0.
    FdSet,
}

/// How much of an out buffer the call wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valid {
    /// All of it, when the call succeeds.
    All,
    /// As many bytes as the call returned.
    Ret,
    /// As many records of this size as the call returned.
    RetTimes(u64),
    /// All of it, whatever the call returned: a buffer that was sent home holds the
    /// program's own bytes where the call wrote nothing, and a failing call may write into
    /// it too (getsockopt's `ERANGE` tells the length it needs, poll its `revents`).
    Always,
}

impl Valid {
    /// Bytes of a buffer of `len` that hold results after the call returned `ret`.
    pub fn bytes(self, len: u64, ret: i64) -> u64 {
        if let Valid::Always = self {
            return len;
        }
        if ret < 0 {
            return 0;
        }
        match self {
            Valid::All | Valid::Always => len,
            Valid::Ret => (ret as u64).min(len),
            Valid::RetTimes(size) => (ret as u64).saturating_mul(size).min(len),
        }
    }
}

/// One buffer argument of a row: which argument points at it and how it crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufArg {
    /// The argument that points at it.
    pub arg: usize,
    /// Its kind (never [`Arg::Val`] or [`Arg::Fd`]).
    pub kind: Arg,
}

impl BufArg {
    /// Its contents travel home.
    pub fn sent(&self) -> bool {
        matches!(
            self.kind,
            Arg::Path | Arg::In(_) | Arg::InOut(_) | Arg::Sigmask | Arg::SigsetPair
        )
    }

    /// How much of it comes back, if anything.
    pub fn back(&self) -> Option<Valid> {
        match self.kind {
            Arg::Out(_, valid) => Some(valid),
            Arg::InOut(_) => Some(Valid::Always),
            _ => None,
        }
    }
}

impl Row {
    /// The buffer arguments that `args` points at (a NULL pointer is no buffer), in the order
    /// the guest sends them and home reads them.
    pub fn buffers(&self, args: &[u64; 6]) -> impl Iterator<Item = BufArg> + use<> {
        let (kinds, args) = (self.args, *args);
        kinds
            .iter()
            .enumerate()
            .filter(move |&(i, kind)| !matches!(kind, Arg::Val | Arg::Fd) && args[i] != 0)
            .map(|(arg, &kind)| BufArg { arg, kind })
    }

    /// The argument that holds the call's descriptor, if it has one.
    pub fn fd_arg(&self) -> Option<usize> {
        self.args.iter().position(|a| *a == Arg::Fd)
    }
}

/// Where a buffer of a call goes in the shell: an argument points at it, or (for the buffers
/// a msghdr points to) the msghdr does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Argument `n` points at it.
    Arg(usize),
    /// The msghdr points at it: `msg::NAME`, `msg::DATA` or `msg::CONTROL`.
    Nested(usize),
    /// Argument `n` points at a `{pointer, size}` pair that points at it (pselect6's mask).
    Pair(usize),
}

/// One buffer of a call as home runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Where it goes.
    pub slot: Slot,
    /// Its length, derived at home.
    pub len: u64,
    /// Its contents came from the remote (they are `Shape::sent` in order).
    pub sent: bool,
    /// How much of it goes back after the call.
    pub back: Option<Valid>,
}

/// A forwarded call as home runs it: each buffer with the length the table gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The call's buffers, in the order their contents were sent.
    pub bufs: Vec<Buf>,
    /// May run in the supervisor on a copy of descriptor argument `n` (see [`Row::on_copy`]).
    pub on_copy: Option<usize>,
}

/// Why home refuses a forwarded call; the call does not run, and the remote gets the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// What the remote sent does not match the buffers the table gives the call.
    #[error("its buffers do not match its arguments")]
    Mismatch,
    /// A length over the limits, or a call that no remote ships.
    #[error("its arguments are out of bounds")]
    Invalid,
}

impl Refusal {
    /// The errno the call fails with.
    pub fn errno(self) -> i32 {
        match self {
            Refusal::Mismatch => libc::EFAULT,
            Refusal::Invalid => libc::EINVAL,
        }
    }
}

impl Shape {
    /// The shape of call `nr` with `args` as home runs it, checked against `sent`, the
    /// buffers the remote sent, in order. Pure: nothing is touched, whatever the input.
    pub fn at_home(nr: i64, args: &[u64; 6], sent: &[Vec<u8>]) -> Result<Shape, Refusal> {
        let shape = match shipped(nr, args) {
            Some(Route::Forward(row)) => Shape::of_row(row, args, sent)?,
            Some(Route::Message) => Shape::of_message(nr, args, sent)?,
            _ => return Err(Refusal::Invalid),
        };
        let sent_lens: Vec<u64> = shape
            .bufs
            .iter()
            .filter(|b| b.sent)
            .map(|b| b.len)
            .collect();
        if sent_lens.len() != sent.len()
            || sent_lens
                .iter()
                .zip(sent)
                .any(|(&len, data)| data.len() as u64 != len)
        {
            return Err(Refusal::Mismatch);
        }
        Ok(shape)
    }

    fn of_row(row: Row, args: &[u64; 6], sent: &[Vec<u8>]) -> Result<Shape, Refusal> {
        let mut bufs = Vec::new();
        let mut sent_at = 0;
        for buf in row.buffers(args) {
            let len = match buf.kind {
                // A path's length is what was sent: it must end with its NUL.
                Arg::Path => {
                    let path = sent.get(sent_at).ok_or(Refusal::Mismatch)?;
                    if path.last() != Some(&0) || path.len() as u64 > PATH_MAX {
                        return Err(Refusal::Mismatch);
                    }
                    path.len() as u64
                }
                Arg::In(len) | Arg::Out(len, _) | Arg::InOut(len) => {
                    length_at_home(len, args, &row, sent)?
                }
                Arg::Sigmask => SIGSET,
                // The mask the pair points to, or nothing where its pointer is NULL.
                Arg::SigsetPair => match sent.get(sent_at).map(Vec::len) {
                    Some(0) => 0,
                    Some(8) => SIGSET,
                    _ => return Err(Refusal::Mismatch),
                },
                Arg::Val | Arg::Fd => unreachable!("not a buffer"),
            };
            if buf.sent() {
                sent_at += 1;
            }
            let slot = match buf.kind {
                Arg::SigsetPair => Slot::Pair(buf.arg),
                _ => Slot::Arg(buf.arg),
            };
            bufs.push(Buf {
                slot,
                len,
                sent: buf.sent(),
                back: buf.back(),
            });
        }
        Ok(Shape {
            bufs,
            on_copy: row.fd_arg().filter(|_| row.on_copy),
        })
    }

    /// sendmsg and recvmsg: the msghdr is sent, and the lengths of the buffers it points to
    /// come from its fields; the data's length from argument 3, where the guest puts the sum
    /// of the iovec lengths (see `msg`).
    fn of_message(nr: i64, args: &[u64; 6], sent: &[Vec<u8>]) -> Result<Shape, Refusal> {
        let raw = sent.first().ok_or(Refusal::Mismatch)?;
        if args[1] == 0 || raw.len() as u64 != msg::HDR_LEN {
            return Err(Refusal::Mismatch);
        }
        let hdr = msg::MsgHdr::parse(raw).ok_or(Refusal::Mismatch)?;
        let sending = nr == libc::SYS_sendmsg;
        let name = if hdr.name == 0 {
            0
        } else {
            u64::from(hdr.namelen)
        };
        let control = if hdr.control == 0 { 0 } else { hdr.controllen };
        let data = args[3];
        if [name, control, data].iter().any(|&len| len > MAX_BUF) {
            return Err(Refusal::Invalid);
        }
        let back = |valid| (!sending).then_some(valid);
        let nested = |slot, len, valid| Buf {
            slot: Slot::Nested(slot),
            len,
            sent: sending,
            back: back(valid),
        };
        let bufs = vec![
            Buf {
                slot: Slot::Arg(1),
                len: msg::HDR_LEN,
                sent: true,
                back: back(Valid::All),
            },
            nested(msg::NAME, name, Valid::All),
            nested(msg::DATA, data, Valid::Ret),
            nested(msg::CONTROL, control, Valid::All),
        ];
        Ok(Shape {
            bufs,
            on_copy: None,
        })
    }

    /// Bytes of scratch memory the buffers take in the shell, each aligned to 16, with room
    /// for the pair a [`Slot::Pair`] buffer needs.
    pub fn scratch_len(&self) -> u64 {
        self.bufs
            .iter()
            .map(|b| b.len.next_multiple_of(16) + if let Slot::Pair(_) = b.slot { 16 } else { 0 })
            .sum()
    }
}

/// What home accepts from a remote: a forwarded call as the guest ships it. Calls the guest
/// turns into others (readv into read, sendmmsg into sendmsg, a file mmap into pread64) are
/// not shipped as themselves, nor are calls that run at the remote or go home.
fn shipped(nr: i64, args: &[u64; 6]) -> Option<Route> {
    match route(nr, args) {
        route @ (Route::Forward(_) | Route::Message) => Some(route),
        Route::Exit => Some(Route::Forward(Row {
            args: &[Arg::Val],
            on_copy: false,
        })),
        _ => None,
    }
}

/// A buffer's length at home, from the call's own arguments and the buffers sent.
fn length_at_home(len: Len, args: &[u64; 6], row: &Row, sent: &[Vec<u8>]) -> Result<u64, Refusal> {
    let n = match len {
        Len::Arg(i) => args[i],
        Len::ArgTimes(i, size) => args[i].checked_mul(size).ok_or(Refusal::Invalid)?,
        Len::Fixed(n) => n,
        Len::DerefU32(i) | Len::DerefU32Times(i, _) if args[i] == 0 => 0,
        Len::DerefU32(i) | Len::DerefU32Times(i, _) => {
            let size = match len {
                Len::DerefU32Times(_, size) => size,
                _ => 1,
            };
            // The socklen argument is a sent 4-byte buffer: find its contents.
            let at = row
                .buffers(args)
                .filter(|b| b.sent())
                .position(|b| b.arg == i)
                .ok_or(Refusal::Invalid)?;
            let raw: [u8; 4] = sent
                .get(at)
                .and_then(|d| d.as_slice().try_into().ok())
                .ok_or(Refusal::Mismatch)?;
            u64::from(u32::from_le_bytes(raw))
                .checked_mul(size)
                .ok_or(Refusal::Invalid)?
        }
        Len::FdSet => fd_set_len(args[0]).ok_or(Refusal::Invalid)?,
    };
    if n > MAX_BUF {
        return Err(Refusal::Invalid);
    }
    Ok(n)
}

/// Bytes of an fd_set for `nfds` descriptors, in whole longs as the kernel reads it.
pub fn fd_set_len(nfds: u64) -> Option<u64> {
    nfds.checked_add(63).map(|n| n / 64 * 8)
}

use Arg::{Fd, In, InOut, Out, Path, Val};
use Len::{Arg as A, ArgTimes, DerefU32, DerefU32Times, FdSet, Fixed};
use Valid::{All, Ret, RetTimes};

const STAT: u64 = 144;
const STATFS: u64 = 120;
const TIMESPEC: u64 = 16;
const ITIMERVAL: u64 = 32;
const ITIMERSPEC: u64 = 32;
const RLIMIT: u64 = 16;
const RUSAGE: u64 = 144;
const TMS: u64 = 32;
const SIGINFO: u64 = 128;
const SOCKLEN: Arg = InOut(Fixed(4));

/// A row of a call that runs in the shell at home.
const fn fwd(args: &'static [Arg]) -> Route {
    Route::Forward(Row {
        args,
        on_copy: false,
    })
}

/// A row of a call that, on a regular file or directory, may run in the supervisor on a copy
/// of its descriptor (see `files`).
const fn on_copy(args: &'static [Arg]) -> Route {
    Route::Forward(Row {
        args,
        on_copy: true,
    })
}

/// Where `nr` runs, given its arguments (a few calls depend on them).
pub fn route(nr: i64, args: &[u64; 6]) -> Route {
    use Route::{Exit, Home, Local};
    match nr {
        libc::SYS_read => on_copy(&[Fd, Out(A(2), Ret), Val]),
        libc::SYS_write => on_copy(&[Fd, In(A(2)), Val]),
        libc::SYS_open => fwd(&[Path, Val, Val]),
        libc::SYS_close => fwd(&[Fd]),
        libc::SYS_stat | libc::SYS_lstat => fwd(&[Path, Out(Fixed(STAT), All)]),
        libc::SYS_fstat => on_copy(&[Fd, Out(Fixed(STAT), All)]),
        libc::SYS_poll => fwd(&[InOut(ArgTimes(1, 8)), Val, Val]),
        libc::SYS_lseek => on_copy(&[Fd, Val, Val]),
        libc::SYS_mmap if args[3] & libc::MAP_ANONYMOUS as u64 != 0 => Local,
        libc::SYS_mmap => Route::MmapFile,
        libc::SYS_ioctl => ioctl(args[1]),
        libc::SYS_pread64 => on_copy(&[Fd, Out(A(2), Ret), Val, Val]),
        libc::SYS_pwrite64 => on_copy(&[Fd, In(A(2)), Val, Val]),
        libc::SYS_readv | libc::SYS_writev => Route::Vector,
        libc::SYS_sendmsg | libc::SYS_recvmsg => Route::Message,
        // glibc's resolver sends its A and AAAA queries with one sendmmsg.
        libc::SYS_sendmmsg | libc::SYS_recvmmsg => Route::Batch,
        libc::SYS_access => fwd(&[Path, Val]),
        libc::SYS_pipe => fwd(&[Out(Fixed(8), All)]),
        libc::SYS_select => fwd(&[
            Val,
            InOut(FdSet),
            InOut(FdSet),
            InOut(FdSet),
            InOut(Fixed(TIMESPEC)),
        ]),
        // glibc's select() calls it without a mask; the guest keeps the mask's meaning at
        // the remote (see `guest`: a signal it lets in runs its handler with it).
        libc::SYS_pselect6 => fwd(&[
            Val,
            InOut(FdSet),
            InOut(FdSet),
            InOut(FdSet),
            InOut(Fixed(TIMESPEC)),
            Arg::SigsetPair,
        ]),
        libc::SYS_dup | libc::SYS_dup2 | libc::SYS_dup3 => fwd(&[Fd, Val, Val]),
        // ITIMER_VIRTUAL and ITIMER_PROF count the process's own CPU time and move with it;
        // ITIMER_REAL is wall-clock time, shared with alarm(), and stays at home.
        libc::SYS_getitimer | libc::SYS_setitimer if args[0] != libc::ITIMER_REAL as u64 => {
            Route::Continue
        }
        libc::SYS_getitimer => fwd(&[Val, Out(Fixed(ITIMERVAL), All)]),
        libc::SYS_alarm => fwd(&[Val]),
        libc::SYS_setitimer => fwd(&[Val, In(Fixed(ITIMERVAL)), Out(Fixed(ITIMERVAL), All)]),
        libc::SYS_sendfile => fwd(&[Fd, Fd, InOut(Fixed(8)), Val]),
        libc::SYS_socket | libc::SYS_listen | libc::SYS_shutdown => fwd(&[Val, Val, Val]),
        libc::SYS_connect | libc::SYS_bind => fwd(&[Fd, In(A(2)), Val]),
        libc::SYS_accept => fwd(&[Fd, Out(DerefU32(2), All), SOCKLEN]),
        libc::SYS_accept4 => fwd(&[Fd, Out(DerefU32(2), All), SOCKLEN, Val]),
        libc::SYS_sendto => fwd(&[Fd, In(A(2)), Val, Val, In(A(5)), Val]),
        libc::SYS_recvfrom => fwd(&[Fd, Out(A(2), Ret), Val, Val, Out(DerefU32(5), All), SOCKLEN]),
        libc::SYS_getsockname | libc::SYS_getpeername => fwd(&[Fd, Out(DerefU32(2), All), SOCKLEN]),
        libc::SYS_socketpair => fwd(&[Val, Val, Val, Out(Fixed(8), All)]),
        // optval's shape depends on the option (see `sockopts`). A getsockopt's buffer goes
        // home and back whole: some options read a request from it first.
        libc::SYS_setsockopt => match sockopts::set(args[1], args[2]) {
            OptShape::Home => Home,
            OptShape::Bytes | OptShape::Filter => fwd(&[Fd, Val, Val, In(A(4)), Val]),
        },
        libc::SYS_getsockopt => match sockopts::get(args[1], args[2]) {
            OptShape::Home => Home,
            OptShape::Bytes => fwd(&[Fd, Val, Val, InOut(DerefU32(4)), SOCKLEN]),
            OptShape::Filter => fwd(&[
                Fd,
                Val,
                Val,
                InOut(DerefU32Times(4, sockopts::SOCK_FILTER)),
                SOCKLEN,
            ]),
        },
        libc::SYS_exit | libc::SYS_exit_group => Exit,
        libc::SYS_wait4 => fwd(&[Val, Out(Fixed(4), All), Val, Out(Fixed(144), All)]),
        libc::SYS_kill | libc::SYS_tkill | libc::SYS_tgkill => fwd(&[Val, Val, Val]),
        libc::SYS_uname => fwd(&[Out(Fixed(390), All)]),
        libc::SYS_fcntl => match args[1] as i32 {
            libc::F_GETLK
            | libc::F_SETLK
            | libc::F_SETLKW
            | libc::F_OFD_GETLK
            | libc::F_OFD_SETLK
            | libc::F_OFD_SETLKW => fwd(&[Val, Val, InOut(Fixed(32))]),
            // F_GETOWN_EX, F_SETOWN_EX: a struct f_owner_ex.
            15 | 16 => fwd(&[Val, Val, InOut(Fixed(8))]),
            _ => fwd(&[Val, Val, Val]),
        },
        libc::SYS_fsync | libc::SYS_fdatasync => on_copy(&[Fd]),
        libc::SYS_flock
        | libc::SYS_ftruncate
        | libc::SYS_fchdir
        | libc::SYS_fchmod
        | libc::SYS_fchown
        | libc::SYS_umask
        | libc::SYS_fadvise64
        | libc::SYS_close_range => fwd(&[Val, Val, Val, Val]),
        libc::SYS_truncate
        | libc::SYS_chdir
        | libc::SYS_rmdir
        | libc::SYS_unlink
        | libc::SYS_chmod
        | libc::SYS_mkdir
        | libc::SYS_creat
        | libc::SYS_chown
        | libc::SYS_lchown => fwd(&[Path, Val, Val]),
        libc::SYS_getdents => fwd(&[Fd, Out(A(2), Ret), Val]),
        libc::SYS_getdents64 => on_copy(&[Fd, Out(A(2), Ret), Val]),
        libc::SYS_getcwd => fwd(&[Out(A(1), Ret), Val]),
        libc::SYS_rename | libc::SYS_link | libc::SYS_symlink => fwd(&[Path, Path]),
        libc::SYS_readlink => fwd(&[Path, Out(A(2), Ret), Val]),
        libc::SYS_getrlimit => fwd(&[Val, Out(Fixed(RLIMIT), All)]),
        libc::SYS_setrlimit => fwd(&[Val, In(Fixed(RLIMIT))]),
        libc::SYS_prlimit64 => fwd(&[Val, Val, In(Fixed(RLIMIT)), Out(Fixed(RLIMIT), All)]),
        libc::SYS_sysinfo => fwd(&[Out(Fixed(112), All)]),
        libc::SYS_getpid
        | libc::SYS_getppid
        | libc::SYS_gettid
        | libc::SYS_getuid
        | libc::SYS_geteuid
        | libc::SYS_getgid
        | libc::SYS_getegid
        | libc::SYS_getpgrp
        | libc::SYS_setsid
        | libc::SYS_sync => fwd(&[]),
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
        | libc::SYS_setpriority => fwd(&[Val, Val, Val]),
        libc::SYS_getgroups => fwd(&[Val, Out(ArgTimes(0, 4), All)]),
        libc::SYS_getresuid | libc::SYS_getresgid => {
            fwd(&[Out(Fixed(4), All), Out(Fixed(4), All), Out(Fixed(4), All)])
        }
        libc::SYS_statfs => fwd(&[Path, Out(Fixed(STATFS), All)]),
        libc::SYS_fstatfs => fwd(&[Fd, Out(Fixed(STATFS), All)]),
        libc::SYS_utime => fwd(&[Path, In(Fixed(16))]),
        libc::SYS_utimes => fwd(&[Path, In(Fixed(32))]),
        libc::SYS_epoll_create
        | libc::SYS_epoll_create1
        | libc::SYS_eventfd
        | libc::SYS_eventfd2
        | libc::SYS_timerfd_create => fwd(&[Val, Val]),
        libc::SYS_epoll_ctl => fwd(&[Fd, Val, Fd, In(Fixed(12))]),
        libc::SYS_epoll_wait => fwd(&[Val, Out(ArgTimes(2, 12), RetTimes(12)), Val, Val]),
        libc::SYS_epoll_pwait => fwd(&[
            Val,
            Out(ArgTimes(2, 12), RetTimes(12)),
            Val,
            Val,
            Arg::Sigmask,
            Val,
        ]),
        libc::SYS_timerfd_settime => {
            fwd(&[Val, Val, In(Fixed(ITIMERSPEC)), Out(Fixed(ITIMERSPEC), All)])
        }
        libc::SYS_timerfd_gettime => fwd(&[Val, Out(Fixed(ITIMERSPEC), All)]),
        libc::SYS_timer_create => fwd(&[Val, In(Fixed(64)), Out(Fixed(4), All)]),
        libc::SYS_timer_settime => {
            fwd(&[Val, Val, In(Fixed(ITIMERSPEC)), Out(Fixed(ITIMERSPEC), All)])
        }
        libc::SYS_timer_gettime => fwd(&[Val, Out(Fixed(ITIMERSPEC), All)]),
        libc::SYS_timer_getoverrun | libc::SYS_timer_delete => fwd(&[Val]),
        libc::SYS_openat => fwd(&[Fd, Path, Val, Val]),
        libc::SYS_mkdirat | libc::SYS_unlinkat | libc::SYS_fchmodat => fwd(&[Val, Path, Val]),
        libc::SYS_faccessat => fwd(&[Val, Path, Val]),
        libc::SYS_faccessat2 => fwd(&[Val, Path, Val, Val]),
        libc::SYS_fchownat => fwd(&[Val, Path, Val, Val, Val]),
        libc::SYS_newfstatat => fwd(&[Val, Path, Out(Fixed(STAT), All), Val]),
        libc::SYS_renameat => fwd(&[Val, Path, Val, Path]),
        libc::SYS_renameat2 | libc::SYS_linkat => fwd(&[Val, Path, Val, Path, Val]),
        libc::SYS_symlinkat => fwd(&[Path, Val, Path]),
        libc::SYS_readlinkat => fwd(&[Val, Path, Out(A(3), Ret), Val]),
        libc::SYS_ppoll => fwd(&[
            InOut(ArgTimes(1, 8)),
            Val,
            InOut(Fixed(TIMESPEC)),
            Arg::Sigmask,
            Val,
        ]),
        libc::SYS_utimensat => fwd(&[Val, Path, In(Fixed(2 * TIMESPEC)), Val]),
        libc::SYS_pipe2 => fwd(&[Out(Fixed(8), All), Val]),
        libc::SYS_statx => fwd(&[Val, Path, Val, Val, Out(Fixed(256), All)]),
        libc::SYS_rt_sigqueueinfo => fwd(&[Val, Val, In(Fixed(128))]),
        // The shell's signal mask is the program's, so that a signal the program blocks
        // stays pending at home, where its signalfd reads it: a change of the mask runs in
        // the shell, then in the process (see `forward`). Pending signals and the waits for
        // them are the shell's (sigsuspend's mask as pselect6's).
        // (The old mask comes back, but the guest leaves it: the process's own call writes it.)
        libc::SYS_rt_sigprocmask => fwd(&[Val, In(Fixed(SIGSET)), Out(Fixed(SIGSET), All), Val]),
        libc::SYS_rt_sigpending => fwd(&[Out(Fixed(SIGSET), All), Val]),
        libc::SYS_rt_sigsuspend => fwd(&[Arg::Sigmask, Val]),
        libc::SYS_rt_sigtimedwait => fwd(&[
            In(Fixed(SIGSET)),
            Out(Fixed(SIGINFO), All),
            In(Fixed(TIMESPEC)),
            Val,
        ]),

        libc::SYS_prctl => prctl(args[0]),
        // A process's CPU-time clocks and its own rusage count what it used on every node;
        // its children's are home's, where they run. times(2) reports both: home's answer
        // has the process's own times replaced (see `forward`).
        libc::SYS_clock_gettime
            if matches!(
                args[0] as i32,
                libc::CLOCK_PROCESS_CPUTIME_ID | libc::CLOCK_THREAD_CPUTIME_ID
            ) =>
        {
            Route::CpuTime
        }
        libc::SYS_getrusage if args[0] as i32 == libc::RUSAGE_CHILDREN => {
            fwd(&[Val, Out(Fixed(RUSAGE), All)])
        }
        libc::SYS_getrusage => Route::CpuTime,
        libc::SYS_times => fwd(&[Out(Fixed(TMS), All)]),
        libc::SYS_clock_gettime => Local,

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
        | libc::SYS_rt_sigreturn
        | libc::SYS_sigaltstack
        | libc::SYS_pause
        | libc::SYS_sched_yield
        | libc::SYS_nanosleep
        | libc::SYS_clock_nanosleep
        | libc::SYS_clock_getres
        | libc::SYS_gettimeofday
        | libc::SYS_time
        | libc::SYS_getrandom
        | libc::SYS_arch_prctl
        | libc::SYS_set_tid_address
        | libc::SYS_restart_syscall
        | libc::SYS_membarrier
        | libc::SYS_sched_getaffinity
        | libc::SYS_getcpu => Local,

        // Everything else, fork/clone/execve among them, runs after going home.
        _ => Home,
    }
}

/// prctl changes per-task state, which runs where the process runs (what it set travels in
/// the image, see `prctl`), but for the options in [`PRCTL_NOT_LOCAL`]. A program's own
/// seccomp filter and no_new_privs must live at home (where they are kept, and never meet
/// the calls a move injects; the husk has rmosix's filter and no_new_privs). Its relations
/// and credentials are the shell's: its parent's death signal and its children's reaper
/// concern processes at home, and its capabilities and securebits are those of the shell,
/// where the calls that change ids run.
fn prctl(option: u64) -> Route {
    match option as i32 {
        libc::PR_SET_SECCOMP | libc::PR_SET_NO_NEW_PRIVS => Route::Home,
        libc::PR_GET_PDEATHSIG | libc::PR_GET_CHILD_SUBREAPER => fwd(&[Val, Out(Fixed(4), All)]),
        option if PRCTL_NOT_LOCAL.contains(&option) => fwd(&[Val, Val, Val, Val, Val]),
        _ => Route::Local,
    }
}

/// The prctl options that do not run at the remote (see [`prctl`]).
const PRCTL_NOT_LOCAL: &[i32] = &[
    libc::PR_SET_SECCOMP,
    libc::PR_SET_NO_NEW_PRIVS,
    libc::PR_GET_SECCOMP,
    libc::PR_GET_NO_NEW_PRIVS,
    libc::PR_SET_PDEATHSIG,
    libc::PR_GET_PDEATHSIG,
    libc::PR_SET_CHILD_SUBREAPER,
    libc::PR_GET_CHILD_SUBREAPER,
    libc::PR_SET_KEEPCAPS,
    libc::PR_GET_KEEPCAPS,
    libc::PR_SET_SECUREBITS,
    libc::PR_GET_SECUREBITS,
    libc::PR_CAPBSET_READ,
    libc::PR_CAPBSET_DROP,
    libc::PR_CAP_AMBIENT,
    libc::PR_SET_PTRACER,
];

/// The calls that read a process's own CPU use, as (number, the values of its first argument
/// that make it one; none: all of them): CPU-time clocks, getrusage of itself, times.
pub const CPU_TIME_CALLS: &[(i64, &[i32])] = &[
    (
        libc::SYS_clock_gettime,
        &[
            libc::CLOCK_PROCESS_CPUTIME_ID,
            libc::CLOCK_THREAD_CPUTIME_ID,
        ],
    ),
    (
        libc::SYS_getrusage,
        &[libc::RUSAGE_SELF, libc::RUSAGE_THREAD],
    ),
    (libc::SYS_times, &[]),
];

/// Calls that run locally but for some values of their first argument, with those values,
/// for the filter (which compares their low 32 bits: prctl's option is an int, and a clock
/// id is one too).
pub const LOCAL_UNLESS_ARG0: &[(i64, &[i32])] = &[
    (libc::SYS_prctl, PRCTL_NOT_LOCAL),
    (
        libc::SYS_clock_gettime,
        &[
            libc::CLOCK_PROCESS_CPUTIME_ID,
            libc::CLOCK_THREAD_CPUTIME_ID,
        ],
    ),
];

/// An ioctl forwards with exactly the bytes the kernel's definition of its request reads or
/// writes (see `ioctls`); a request we do not know goes home and runs there.
fn ioctl(request: u64) -> Route {
    match ioctls::find(request) {
        Some(known) => fwd(known.args()),
        None => Route::Home,
    }
}

/// Every call the filter lets run locally, for building it.
pub fn local_calls() -> Vec<i64> {
    (0..512)
        .filter(|&nr| route(nr, &[0, 0, 0, libc::MAP_ANONYMOUS as u64, 0, 0]) == Route::Local)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
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
        assert!(matches!(
            route(libc::SYS_pselect6, &masked),
            Route::Forward(_)
        ));
        assert_eq!(route(libc::SYS_recvmsg, &[0; 6]), Route::Message);
        assert_eq!(route(libc::SYS_sendmmsg, &[0; 6]), Route::Batch);
        assert_eq!(route(libc::SYS_recvmmsg, &[0; 6]), Route::Batch);
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
    fn rows_point_at_real_arguments() {
        for nr in 0..512 {
            let Route::Forward(row) = route(nr, &[0; 6]) else {
                continue;
            };
            assert!(row.args.len() <= 6, "{nr}");
            assert!(
                !row.on_copy || row.fd_arg().is_some(),
                "{nr}: on_copy without Fd"
            );
            for arg in row.args {
                let len = match arg {
                    In(len) | Out(len, _) | InOut(len) => *len,
                    _ => continue,
                };
                if let A(i) | ArgTimes(i, _) | DerefU32(i) | DerefU32Times(i, _) = len {
                    assert!(i < row.args.len(), "{nr}: length from missing argument {i}");
                }
                if let DerefU32(i) | DerefU32Times(i, _) = len {
                    assert_eq!(
                        row.args[i], SOCKLEN,
                        "{nr}: a length must come from a socklen"
                    );
                }
            }
        }
    }

    fn shape(nr: i64, args: [u64; 6], sent: &[&[u8]]) -> Result<Shape, Refusal> {
        let sent: Vec<Vec<u8>> = sent.iter().map(|d| d.to_vec()).collect();
        Shape::at_home(nr, &args, &sent)
    }

    fn buf(arg: usize, len: u64, sent: bool, back: Option<Valid>) -> Buf {
        Buf {
            slot: Slot::Arg(arg),
            len,
            sent,
            back,
        }
    }

    #[test]
    fn home_derives_every_length_from_the_table() {
        let read = shape(libc::SYS_read, [3, 0x1000, 100, 0, 0, 0], &[]).unwrap();
        assert_eq!(read.bufs, [buf(1, 100, false, Some(Valid::Ret))]);
        assert_eq!(read.on_copy, Some(0));
        let write = shape(libc::SYS_write, [3, 0x1000, 5, 0, 0, 0], &[b"hello"]).unwrap();
        assert_eq!(write.bufs, [buf(1, 5, true, None)]);
        // A NULL pointer is no buffer.
        let stat = shape(libc::SYS_fstat, [3, 0, 0, 0, 0, 0], &[]).unwrap();
        assert!(stat.bufs.is_empty());
        // accept's address length comes from the socklen that was sent with it.
        let accept = [3, 0x1000, 0x2000, 0, 0, 0];
        let got = shape(libc::SYS_accept, accept, &[&16u32.to_le_bytes()]).unwrap();
        assert_eq!(
            got.bufs,
            [
                buf(1, 16, false, Some(Valid::All)),
                buf(2, 4, true, Some(Valid::Always))
            ]
        );
        let open = shape(libc::SYS_openat, [0, 0x1000, 0, 0, 0, 0], &[b"/etc/x\0"]).unwrap();
        assert_eq!(open.bufs, [buf(1, 7, true, None)]);
    }

    #[test]
    fn a_socket_options_buffer_takes_the_shape_of_its_option() {
        let sol_socket = libc::SOL_SOCKET as u64;
        // SO_GET_FILTER counts instructions of 8 bytes; its buffer goes home and back.
        let filter = [3, sol_socket, libc::SO_GET_FILTER as u64, 0x1000, 0x2000, 0];
        let got = shape(
            libc::SYS_getsockopt,
            filter,
            &[&[1; 24], &3u32.to_le_bytes()],
        )
        .unwrap();
        assert_eq!(
            got.bufs,
            [
                buf(3, 24, true, Some(Valid::Always)),
                buf(4, 4, true, Some(Valid::Always))
            ]
        );
        let bytes = shape(
            libc::SYS_getsockopt,
            filter,
            &[&[1; 3], &3u32.to_le_bytes()],
        );
        assert_eq!(bytes, Err(Refusal::Mismatch));
        let huge = (u32::MAX / 8).to_le_bytes();
        let huge = shape(libc::SYS_getsockopt, filter, &[&[], &huge]);
        assert_eq!(huge, Err(Refusal::Invalid));
        // A plain option: optlen bytes. A pointer-carrying one makes the process go home.
        let rcvbuf = [3, sol_socket, libc::SO_RCVBUF as u64, 0x1000, 0x2000, 0];
        let got = shape(
            libc::SYS_getsockopt,
            rcvbuf,
            &[&[0; 4], &4u32.to_le_bytes()],
        )
        .unwrap();
        assert_eq!(got.bufs[0].len, 4);
        let attach = [3, sol_socket, libc::SO_ATTACH_FILTER as u64, 0x1000, 16, 0];
        assert_eq!(route(libc::SYS_setsockopt, &attach), Route::Home);
        // A failed call brings back what it may have written into what was sent.
        assert_eq!(Valid::Always.bytes(4, -i64::from(libc::ERANGE)), 4);
        assert_eq!(Valid::All.bytes(4, -1), 0);
    }

    #[test]
    fn calls_that_do_not_fit_the_table_are_refused() {
        // The data sent is not the length the arguments give.
        let short = shape(libc::SYS_write, [3, 0x1000, 5, 0, 0, 0], &[b"hell"]);
        assert_eq!(short, Err(Refusal::Mismatch));
        let missing = shape(libc::SYS_write, [3, 0x1000, 5, 0, 0, 0], &[]);
        assert_eq!(missing, Err(Refusal::Mismatch));
        let extra = shape(libc::SYS_read, [3, 0x1000, 5, 0, 0, 0], &[b"12345"]);
        assert_eq!(extra, Err(Refusal::Mismatch));
        // A length the guest would have shortened, or one that overflows.
        let huge = shape(libc::SYS_read, [3, 0x1000, MAX_BUF + 1, 0, 0, 0], &[]);
        assert_eq!(huge, Err(Refusal::Invalid));
        let poll = shape(libc::SYS_poll, [0x1000, u64::MAX / 4, 0, 0, 0, 0], &[]);
        assert_eq!(poll, Err(Refusal::Invalid));
        let select = [u64::MAX, 0x1000, 0, 0, 0, 0];
        assert_eq!(shape(libc::SYS_select, select, &[]), Err(Refusal::Invalid));
        // A path without its NUL, or longer than PATH_MAX.
        let unended = shape(libc::SYS_openat, [0, 0x1000, 0, 0, 0, 0], &[b"/etc/x"]);
        assert_eq!(unended, Err(Refusal::Mismatch));
        let long = vec![b'a'; PATH_MAX as usize + 1];
        let long = shape(libc::SYS_openat, [0, 0x1000, 0, 0, 0, 0], &[&long]);
        assert_eq!(long, Err(Refusal::Mismatch));
        // A socklen that is not 4 bytes.
        let accept = [3, 0x1000, 0x2000, 0, 0, 0];
        let odd = shape(libc::SYS_accept, accept, &[&[16, 0]]);
        assert_eq!(odd, Err(Refusal::Mismatch));
        let big = shape(libc::SYS_accept, accept, &[&u32::MAX.to_le_bytes()]);
        assert_eq!(big, Err(Refusal::Invalid));
        // Calls no remote ships as themselves.
        for nr in [
            libc::SYS_fork,
            libc::SYS_futex,
            libc::SYS_readv,
            libc::SYS_sendmmsg,
        ] {
            assert_eq!(shape(nr, [0; 6], &[]), Err(Refusal::Invalid), "{nr}");
        }
        assert_eq!(shape(-1, [0; 6], &[]), Err(Refusal::Invalid));
    }

    #[test]
    fn a_pselect6_mask_travels_as_the_set_its_pair_points_to() {
        let args = [4, 0x1000, 0, 0, 0, 0x2000];
        let with = shape(libc::SYS_pselect6, args, &[&[0; 8], &[1; 8]]).unwrap();
        assert_eq!(
            with.bufs.last(),
            Some(&Buf {
                slot: Slot::Pair(5),
                len: SIGSET,
                sent: true,
                back: None,
            })
        );
        assert_eq!(with.scratch_len(), 16 + 16 + 16);
        // A pair whose pointer is NULL: no mask.
        let without = shape(libc::SYS_pselect6, args, &[&[0; 8], &[]]).unwrap();
        assert_eq!(without.bufs.last().map(|b| b.len), Some(0));
        let odd = shape(libc::SYS_pselect6, args, &[&[0; 8], &[1; 4]]);
        assert_eq!(odd, Err(Refusal::Mismatch));
    }

    #[test]
    fn a_message_takes_its_nested_lengths_from_its_msghdr() {
        let hdr = msg::MsgHdr {
            name: 0x1000,
            namelen: 16,
            iov: 0x2000,
            iovlen: 2,
            control: 0,
            controllen: 99,
            flags: 0,
        }
        .to_bytes();
        let args = [3, 0x3000, 0, 10, 0, 0];
        let send = shape(libc::SYS_sendmsg, args, &[&hdr, &[1; 16], &[2; 10], &[]]).unwrap();
        let lens: Vec<u64> = send.bufs.iter().map(|b| b.len).collect();
        // No control pointer: no control buffer, whatever its length says.
        assert_eq!(lens, [msg::HDR_LEN, 16, 10, 0]);
        assert!(send.bufs.iter().all(|b| b.sent && b.back.is_none()));
        let recv = shape(libc::SYS_recvmsg, args, &[&hdr]).unwrap();
        assert!(recv.bufs[1..].iter().all(|b| !b.sent && b.back.is_some()));
        let wrong = shape(libc::SYS_sendmsg, args, &[&hdr, &[1; 15], &[2; 10], &[]]);
        assert_eq!(wrong, Err(Refusal::Mismatch));
        let huge = [3, 0x3000, 0, MAX_BUF + 1, 0, 0];
        assert_eq!(
            shape(libc::SYS_recvmsg, huge, &[&hdr]),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            shape(libc::SYS_recvmsg, args, &[&hdr[..55]]),
            Err(Refusal::Mismatch)
        );
    }

    proptest::proptest! {
        /// Whatever a peer sends, home's reading of a call never panics, and a call it
        /// accepts has exactly the buffers the table gives it, within the limits.
        #[test]
        fn home_accepts_only_calls_that_fit(
            nr in -2i64..460,
            args in proptest::array::uniform6(proptest::prop_oneof![
                0u64..64, proptest::num::u64::ANY, Just(0u64), Just(MAX_BUF), 0u64..0x10000,
            ]),
            sent in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..80), 0..6),
        ) {
            check_home_shape(nr, &args, &sent);
        }
    }

    use proptest::prelude::Just;

    /// The invariants of an accepted call (see `home_accepts_only_calls_that_fit`).
    pub(crate) fn check_home_shape(nr: i64, args: &[u64; 6], sent: &[Vec<u8>]) {
        let Ok(shape) = Shape::at_home(nr, args, sent) else {
            return;
        };
        let sent_bufs: Vec<&Buf> = shape.bufs.iter().filter(|b| b.sent).collect();
        assert_eq!(sent_bufs.len(), sent.len());
        for (buf, data) in sent_bufs.iter().zip(sent) {
            assert_eq!(buf.len, data.len() as u64);
        }
        for buf in &shape.bufs {
            assert!(buf.len <= MAX_BUF);
            match buf.slot {
                Slot::Arg(i) => assert!(i < 6 && args[i] != 0),
                Slot::Nested(k) => assert!(k <= msg::CONTROL),
                Slot::Pair(i) => assert!(i < 6 && args[i] != 0 && buf.len <= SIGSET),
            }
        }
        assert!(shape.scratch_len() <= 6 * (MAX_BUF + 16));
    }
}
