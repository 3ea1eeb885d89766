//! Thin, checked wrappers over ptrace(2) and waitpid(2). Every request here must come from the
//! thread that seized the tracee (a kernel rule), which is why the engine stays synchronous.

use std::io;

use crate::sys;

/// A process id as the tracer sees it.
pub type Pid = libc::pid_t;

/// General-purpose registers, including `fs_base` (`struct user_regs_struct`).
pub type Regs = libc::user_regs_struct;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn request(req: libc::c_uint, pid: Pid, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: every caller passes either plain integers or a pointer to a live buffer of the size
    // the request writes (checked at each call site below).
    check(unsafe {
        libc::ptrace(
            req,
            pid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    })
}

/// Attach without stopping (PTRACE_SEIZE), so group stops and PTRACE_INTERRUPT work.
pub fn seize(pid: Pid, options: libc::c_int) -> io::Result<()> {
    request(libc::PTRACE_SEIZE, pid, 0, options as usize).map(drop)
}

/// Ask a running tracee to stop in a PTRACE_EVENT_STOP trap.
pub fn interrupt(pid: Pid) -> io::Result<()> {
    request(libc::PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// Resume a stopped tracee, delivering `sig` (0 for none).
pub fn cont(pid: Pid, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT, pid, 0, sig as usize).map(drop)
}

/// Execute one instruction, then stop with SIGTRAP.
pub fn step(pid: Pid) -> io::Result<()> {
    step_with(pid, 0)
}

/// Execute one instruction delivering `sig` (0 for none): with a handler for it, the tracee
/// stops at the handler's first instruction, its signal frame built.
pub fn step_with(pid: Pid, sig: i32) -> io::Result<()> {
    request(libc::PTRACE_SINGLESTEP, pid, 0, sig as usize).map(drop)
}

/// Let a tracee in group stop stay stopped but still see SIGCONT (job control while traced).
pub fn listen(pid: Pid) -> io::Result<()> {
    request(libc::PTRACE_LISTEN, pid, 0, 0).map(drop)
}

/// Registers of a stopped tracee.
pub fn get_regs(pid: Pid) -> io::Result<Regs> {
    // SAFETY: user_regs_struct is plain old data; all-zero is a valid value.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    request(
        libc::PTRACE_GETREGS,
        pid,
        0,
        &mut regs as *mut Regs as usize,
    )?;
    Ok(regs)
}

/// Set the registers of a stopped tracee.
pub fn set_regs(pid: Pid, regs: &Regs) -> io::Result<()> {
    request(libc::PTRACE_SETREGS, pid, 0, regs as *const Regs as usize).map(drop)
}

/// The whole XSAVE area (x87, SSE, AVX, AVX-512, ...) of a stopped tracee.
pub fn get_xstate(pid: Pid) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16384];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    request(
        libc::PTRACE_GETREGSET,
        pid,
        sys::NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Load an XSAVE area into a stopped tracee.
pub fn set_xstate(pid: Pid, xstate: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: xstate.as_ptr() as *mut _,
        iov_len: xstate.len(),
    };
    request(
        libc::PTRACE_SETREGSET,
        pid,
        sys::NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

/// The blocked-signal mask of a stopped tracee.
pub fn get_sigmask(pid: Pid) -> io::Result<u64> {
    let mut mask = 0u64;
    request(
        sys::PTRACE_GETSIGMASK,
        pid,
        8,
        &mut mask as *mut u64 as usize,
    )?;
    Ok(mask)
}

/// Set the blocked-signal mask of a stopped tracee.
pub fn set_sigmask(pid: Pid, mask: u64) -> io::Result<()> {
    request(sys::PTRACE_SETSIGMASK, pid, 8, &mask as *const u64 as usize).map(drop)
}

/// Where the tracee's rseq area is registered (pointer 0 when none).
pub fn get_rseq(pid: Pid) -> io::Result<sys::RseqConfiguration> {
    let mut conf = sys::RseqConfiguration::default();
    request(
        sys::PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<sys::RseqConfiguration>(),
        &mut conf as *mut _ as usize,
    )?;
    Ok(conf)
}

/// The message of the last ptrace event (new child's pid for fork events).
pub fn event_msg(pid: Pid) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    request(
        libc::PTRACE_GETEVENTMSG,
        pid,
        0,
        &mut msg as *mut _ as usize,
    )?;
    Ok(msg)
}

/// The robust futex list head of any task we may trace (no stop needed).
pub fn get_robust_list(pid: Pid) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both out-pointers point to live locals of the sizes the kernel writes.
    check(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            pid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    })?;
    Ok((head, len as u64))
}

/// What waitpid reported about one tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The process exited with this status.
    Exited(i32),
    /// The process was killed by this signal.
    Killed(i32),
    /// Signal-delivery stop: the tracee is about to receive `sig`.
    Signal(i32),
    /// Group stop of a seized tracee (SIGSTOP, SIGTSTP, ...) with the stopping signal.
    Group(i32),
    /// PTRACE_EVENT_STOP without a group stop: the answer to PTRACE_INTERRUPT.
    Interrupted,
    /// A ptrace event (fork, clone, exec, ...) with its PTRACE_EVENT_* number.
    Event(i32),
    /// Stopped by a syscall trap (TRACESYSGOOD) or the trap of our own single-step. A
    /// SIGTRAP the program raised or caused (raise, int3) is a [`Stop::Signal`].
    Trap,
}

/// Decode a waitpid status. `sigtrap_code` gives the si_code of a SIGTRAP stop (asked only
/// for those): it tells our single-step's trap from a SIGTRAP of the program's own.
pub fn decode(status: i32, sigtrap_code: impl FnOnce() -> Option<i32>) -> Stop {
    if libc::WIFEXITED(status) {
        return Stop::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Stop::Killed(libc::WTERMSIG(status));
    }
    let sig = libc::WSTOPSIG(status);
    let event = status >> 16;
    if event == sys::PTRACE_EVENT_STOP {
        return match sig {
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Stop::Group(sig),
            _ => Stop::Interrupted,
        };
    }
    if event != 0 {
        return Stop::Event(event);
    }
    if sig == libc::SIGTRAP | 0x80 {
        return Stop::Trap;
    }
    // A single-step reports TRAP_BRKPT (at a system call's exit) or TRAP_TRACE (the debug
    // exception), and a step into a signal handler stops with the code SIGTRAP itself
    // (ptrace_notify in signal_delivered); int3 is SI_KERNEL, raise and kill are SI_TKILL
    // and SI_USER. A process has no hardware breakpoints but those a tracer sets, and we
    // set none.
    let ours = |code| matches!(code, Some(TRAP_BRKPT | TRAP_TRACE | libc::SIGTRAP) | None);
    if sig == libc::SIGTRAP && ours(sigtrap_code()) {
        return Stop::Trap;
    }
    Stop::Signal(sig)
}

/// si_code values of the traps a tracer causes (asm-generic/siginfo.h).
const TRAP_BRKPT: i32 = 1;
const TRAP_TRACE: i32 = 2;

/// Replace the siginfo of the signal a tracee is stopped for (at its delivery stop).
pub fn set_siginfo(pid: Pid, info: &libc::siginfo_t) -> io::Result<()> {
    request(
        libc::PTRACE_SETSIGINFO,
        pid,
        0,
        info as *const libc::siginfo_t as usize,
    )
    .map(drop)
}

/// Read siginfos of signals pending for a stopped tracee without taking them, from `skip`
/// on: its own queue, or its process's with PTRACE_PEEKSIGINFO_SHARED. Returns how many it
/// filled.
pub fn peek_siginfo(
    pid: Pid,
    skip: u64,
    flags: libc::c_uint,
    into: &mut [libc::siginfo_t],
) -> io::Result<usize> {
    let args = libc::ptrace_peeksiginfo_args {
        off: skip,
        flags,
        nr: into.len() as i32,
    };
    let n = request(
        libc::PTRACE_PEEKSIGINFO,
        pid,
        &args as *const _ as usize,
        into.as_mut_ptr() as usize,
    )?;
    Ok(n as usize)
}

/// The siginfo of the signal a tracee is stopped for.
pub fn get_siginfo(pid: Pid) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    request(
        libc::PTRACE_GETSIGINFO,
        pid,
        0,
        &mut info as *mut libc::siginfo_t as usize,
    )?;
    Ok(info)
}

/// Wait for the next stop of tracee `pid`. If it ends instead, fail with an error that
/// [`is_end`] knows, and leave its end in place for whoever reaps the job's children: a
/// process that ends while a step of a move or of a call waits for it to stop still has its
/// end reported.
pub fn wait_stop(pid: Pid) -> io::Result<Stop> {
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::__WALL;
        // SAFETY: info is a live out-parameter.
        if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } == 0 {
            if matches!(
                info.si_code,
                libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED
            ) {
                return Err(io::Error::other(Ended));
            }
            // The stop peeked at is the one this takes: only this thread waits for `pid`.
            if let Some((_, stop)) = wait(pid, 0)? {
                return Ok(stop);
            }
            continue;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What [`wait_stop`] fails with when the process ended.
#[derive(Debug)]
struct Ended;

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the process ended")
    }
}

impl std::error::Error for Ended {}

/// Whether `err` says that the process ended (see [`wait_stop`]).
pub fn is_end(err: &io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<Ended>())
}

/// Wait for a state change of `pid` (or any child with -1), retrying on EINTR.
pub fn wait(pid: Pid, flags: libc::c_int) -> io::Result<Option<(Pid, Stop)>> {
    loop {
        let mut status = 0;
        // SAFETY: status is a live out-parameter.
        let got = unsafe { libc::waitpid(pid, &mut status, flags | libc::__WALL) };
        if got > 0 {
            let code = || get_siginfo(got).ok().map(|info| info.si_code);
            return Ok(Some((got, decode(status, code))));
        }
        if got == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
