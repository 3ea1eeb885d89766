//! Starting processes under our supervision: a program for `mosrun`, a husk for a guest.

use std::ffi::CString;
use std::io;

use crate::ptrace::{self, Pid, Stop};

/// Options for a supervised program: a dead supervisor kills it, and its children, clones and
/// execs are reported (ptrace events only; no per-syscall stops, so it runs at native speed).
pub const PROGRAM_OPTIONS: libc::c_int = libc::PTRACE_O_EXITKILL
    | libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC;

/// Options for a husk: only the kill-with-tracer guarantee.
pub const HUSK_OPTIONS: libc::c_int = libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD;

/// Fork a child that stops itself with SIGSTOP right away and then runs `then` (which must only
/// make async-signal-safe calls, as the caller may be multi-threaded), seize it with `options`
/// and return it in a ptrace stop.
fn fork_seized(options: libc::c_int, then: impl FnOnce()) -> io::Result<Pid> {
    // SAFETY: the child only calls raise() and `then`, which are async-signal-safe by contract.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(libc::SIGSTOP) };
        then();
        // SAFETY: _exit is async-signal-safe; `then` is not meant to return.
        unsafe { libc::_exit(127) };
    }
    // Wait for the self-stop, then seize; the seized tracee reports a PTRACE_EVENT_STOP.
    let mut status = 0;
    // SAFETY: status is a live out-parameter.
    if unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) } != pid {
        return Err(io::Error::last_os_error());
    }
    ptrace::seize(pid, options)?;
    // Wake it from the self-stop; once its SIGCONT is seen (and swallowed), stop it for good.
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    loop {
        match ptrace::wait(pid, 0)? {
            Some((_, Stop::Interrupted)) => return Ok(pid),
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Some((_, Stop::Signal(libc::SIGCONT))) => {
                ptrace::interrupt(pid)?;
                ptrace::cont(pid, 0)?;
            }
            Some((_, Stop::Signal(sig))) => ptrace::cont(pid, sig)?,
            Some(_) => ptrace::cont(pid, 0)?,
            None => unreachable!("blocking wait returned nothing"),
        }
    }
}

/// Start `argv` as a supervised program, stopped before its first instruction of `execvp`.
pub fn spawn_program(argv: &[String]) -> io::Result<Pid> {
    let args: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_str()).map_err(|_| io::Error::other("argument holds a NUL byte"))
        })
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    fork_seized(PROGRAM_OPTIONS, move || {
        // SAFETY: ptrs is a NUL-terminated array of live C strings built before fork.
        unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
        // Falling through exits with 127, as a shell does for a program it cannot run.
    })
}

/// Start a husk: an empty process for an image to be restored into. It keeps no file
/// descriptors, so a call that escaped forwarding could never touch a local file.
pub fn spawn_husk(keep_fds: bool) -> io::Result<Pid> {
    fork_seized(HUSK_OPTIONS, move || {
        if !keep_fds {
            // SAFETY: close_range is a plain system call.
            unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
        }
        loop {
            // SAFETY: pause is async-signal-safe; the husk waits here to be restored into.
            unsafe { libc::pause() };
        }
    })
}
