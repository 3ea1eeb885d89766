//! Starting processes under our supervision: a program for `mosrun`, a husk for a guest.
//!
//! The child waits on a pipe until it has been seized, so it never runs a user instruction
//! untraced and no signal is needed to synchronise (a SIGSTOP/SIGCONT handshake would leave a
//! SIGCONT queued for the program).

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

/// Fork a child that waits until it is seized and then runs `then` (which must only make
/// async-signal-safe calls, as the caller may be multi-threaded); seize it with `options` and
/// return it stopped in a PTRACE_EVENT_STOP, about to go on to `then`.
fn fork_seized(options: libc::c_int, then: impl FnOnce()) -> io::Result<Pid> {
    let mut gate = [0i32; 2];
    // SAFETY: gate is a live array of two fds for pipe2 to fill.
    if unsafe { libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let [gate_read, gate_write] = gate;
    // SAFETY: the child only calls close, read, `then` and _exit, all async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on fds this child owns.
        unsafe {
            libc::close(gate_write);
            let mut byte = 0u8;
            // EOF arrives once the parent has seized us and closed its end.
            while libc::read(gate_read, (&mut byte as *mut u8).cast(), 1) < 0 {}
            libc::close(gate_read);
        }
        then();
        // SAFETY: _exit is async-signal-safe; `then` is not meant to return.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: closing our copy of the child's end.
    unsafe { libc::close(gate_read) };
    let seized = ptrace::seize(pid, options).and_then(|()| ptrace::interrupt(pid));
    // SAFETY: closing our end releases the child from its read.
    unsafe { libc::close(gate_write) };
    if let Err(err) = seized {
        // SAFETY: our own child, which must not run on unsupervised.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(err);
    }
    loop {
        match ptrace::wait(pid, 0)? {
            Some((_, Stop::Interrupted)) => return Ok(pid),
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Some((_, Stop::Signal(sig))) => ptrace::cont(pid, sig)?,
            Some(_) => ptrace::cont(pid, 0)?,
            None => unreachable!("blocking wait returned nothing"),
        }
    }
}

/// Start `argv` as a supervised program, stopped before it execs.
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
        // SAFETY: signal and execvp are async-signal-safe; ptrs is a NUL-terminated array of
        // live C strings built before fork.
        unsafe {
            // The Rust runtime ignores SIGPIPE in mosrun; the program gets the default back,
            // as std::process::Command would give it.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execvp(ptrs[0], ptrs.as_ptr());
        }
        // Falling through exits with 127, as a shell does for a program it cannot run.
    })
}

/// Start a husk: an empty process for an image to be restored into. It keeps no file
/// descriptors (unless `keep_fds`), so a call that escaped forwarding could never touch a
/// local file.
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
