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

/// Options for a husk: the kill-with-tracer guarantee, and the stops of calls the filter hands
/// to its tracer (calls from the injection instruction, see `seccomp`; without this option
/// the kernel would fail them with ENOSYS, injected ones included).
pub const HUSK_OPTIONS: libc::c_int =
    libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACESECCOMP;

/// Fork a child that waits until it is seized and then runs `then` (which must only make
/// async-signal-safe calls, as the caller may be multi-threaded); seize it with `options` and
/// return it stopped in a PTRACE_EVENT_STOP, about to go on to `then`.
fn fork_seized(options: libc::c_int, then: impl FnOnce()) -> io::Result<Pid> {
    let [gate_read, gate_write] = pipe()?;
    // SAFETY: the child only calls close, read, `then` and _exit, all async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fork_failed([gate_read, gate_write]));
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls on fds this child owns.
        unsafe {
            libc::close(gate_write);
            // EOF arrives once the parent has seized us and closed its end.
            wait_for_eof(gate_read);
            libc::close(gate_read);
        }
        then();
        // SAFETY: _exit is async-signal-safe; `then` is not meant to return.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: closing our copy of the child's end.
    unsafe { libc::close(gate_read) };
    let seized = seize_stopped(pid, options);
    // SAFETY: closing our end releases the child from its read.
    unsafe { libc::close(gate_write) };
    seized.map(|()| pid)
}

/// Read pipe end `fd` until its writers are gone (async-signal-safe: read and errno only).
fn wait_for_eof(fd: i32) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reading one byte into a live buffer.
        let got = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        let interrupted =
            got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
        if got <= 0 && !interrupted {
            return;
        }
    }
}

/// fork(2)'s error, after closing the pipe made for the child that never came.
fn fork_failed(ends: [i32; 2]) -> io::Error {
    let err = io::Error::last_os_error();
    for fd in ends {
        // SAFETY: our own descriptors, used by no one else.
        unsafe { libc::close(fd) };
    }
    err
}

/// A pipe's [read, write] ends, both close-on-exec.
fn pipe() -> io::Result<[i32; 2]> {
    let mut ends = [0i32; 2];
    // SAFETY: `ends` is a live array of two fds for pipe2 to fill.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ends)
}

/// Seize our child `pid` with `options` and interrupt it: on return it is in a
/// PTRACE_EVENT_STOP. On failure the child is killed, as it must not run on unsupervised.
fn seize_stopped(pid: Pid, options: libc::c_int) -> io::Result<()> {
    if let Err(err) = ptrace::seize(pid, options).and_then(|()| ptrace::interrupt(pid)) {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(err);
    }
    loop {
        match ptrace::wait(pid, 0)? {
            Some((_, Stop::Interrupted)) => return Ok(()),
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Some((_, Stop::Signal(sig))) => ptrace::cont(pid, sig)?,
            Some(_) => ptrace::cont(pid, 0)?,
            None => unreachable!("blocking wait returned nothing"),
        }
    }
}

/// Start the program at `path` (looked up in PATH as execvp does) with `argv` as a supervised
/// program, stopped before it execs.
pub fn spawn_program(path: &str, argv: &[String]) -> io::Result<Pid> {
    let path = CString::new(path).map_err(|_| io::Error::other("the path holds a NUL byte"))?;
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
            libc::execvp(path.as_ptr(), ptrs.as_ptr());
        }
        // Falling through exits with 127, as a shell does for a program it cannot run.
    })
}

/// Start a husk: an empty process for an image to be restored into, stopped. It never runs
/// anything of its own after that: it is restored into while stopped. Unless `keep_fds`, it
/// holds no file descriptor, so the restored process owns nothing on this node (a call that
/// escaped forwarding could never touch a local file), and it dies with its supervisor.
pub fn spawn_husk(keep_fds: bool) -> io::Result<Pid> {
    let [ready_read, ready_write] = pipe()?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child only calls prctl, getppid, setpgid, close_range, rt_sigaction, close,
    // pause and _exit, all async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fork_failed([ready_read, ready_write]));
    }
    if pid == 0 {
        // SAFETY: plain system calls on this child's own state and descriptors.
        unsafe {
            // Until it is seized (with EXITKILL), a dead parent must take the husk along too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            libc::close(ready_read);
            // A process group of its own, under a parent in another group of the same
            // session: the group is not orphaned, so the kernel does not discard the terminal
            // stops (SIGTSTP, SIGTTIN, SIGTTOU) that home relays, as it would in the guest's
            // group, whose leader's parent is in another session.
            libc::setpgid(0, 0);
            if !keep_fds {
                let (ready, max) = (ready_write as u32, u32::MAX);
                if ready > 0 {
                    libc::syscall(libc::SYS_close_range, 0u32, ready - 1, 0u32);
                }
                libc::syscall(libc::SYS_close_range, ready + 1, max, 0u32);
            }
            // Default dispositions, whatever the guest ignores (a Rust program ignores
            // SIGPIPE): restore sets only those the image holds, and the others must be the
            // defaults the process had. The raw call reaches glibc's reserved signals too.
            let default = [0u64; 4];
            for sig in 1..=64 {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    0usize,
                    8usize,
                );
            }
            // Closing the last end tells the parent the husk is ready.
            libc::close(ready_write);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closing our copy of the child's end.
    unsafe { libc::close(ready_write) };
    // EOF means the child has closed its descriptors.
    wait_for_eof(ready_read);
    // SAFETY: our own descriptor.
    unsafe { libc::close(ready_read) };
    seize_stopped(pid, HUSK_OPTIONS).map(|()| pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_husk_holds_no_descriptor_and_stays_stopped() {
        let pid = spawn_husk(false).unwrap();
        let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|fd| std::fs::read_link(fd.unwrap().path()).unwrap())
            .collect();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // SAFETY: killing our own traced child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = ptrace::wait(pid, 0);
        assert!(fds.is_empty(), "the husk inherited {fds:?}");
        // Field 3, after the parenthesised name: t is a tracing stop.
        let after_name = &state[state.rfind(')').unwrap() + 2..];
        assert!(after_name.starts_with('t'), "{state}");
    }
}
