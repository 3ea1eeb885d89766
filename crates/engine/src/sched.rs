//! The scheduling a process keeps when it moves: its policy (`SCHED_OTHER`, `SCHED_BATCH`,
//! `SCHED_IDLE`, `SCHED_FIFO`, `SCHED_RR`, with `SCHED_RESET_ON_FORK`), its real-time priority
//! and its nice value.
//!
//! A job started under `nice -n 19` or `chrt --idle 0` must not compete at full weight with
//! the target's daemon and its own work once it moves: the freeze reads the task's
//! scheduling from outside (reading needs no privilege), the image carries it, and the
//! restore sets it again by injected calls where the target's differs, so that the process's
//! own credentials and limits decide (a husk starts at its guest's, SCHED_OTHER and nice 0).
//! A setting the target refuses (a lower nice than RLIMIT_NICE allows, a real-time policy
//! without the privilege) fails the restore with its reason, and the process stays where it
//! was, as for `prctl` settings.
//!
//! Afterwards `setpriority(PRIO_PROCESS, 0, n)` (`nice(3)`) runs at home and then at the
//! remote (see `forward`); `sched_setscheduler` and friends take the process home.

use std::io;

use rmosix_image::Sched;

use crate::inject::Injector;
use crate::mem::Memory;
use crate::ptrace::Pid;

/// `pid`'s scheduling.
pub fn read(pid: Pid) -> io::Result<Sched> {
    // SAFETY: plain calls on a PID; the parameter is written into our own variable.
    let policy = unsafe { libc::sched_getscheduler(pid) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    if unsafe { libc::sched_getparam(pid, &mut param) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // The system call answers 20 - nice (1 to 40), so that no value is the error's -1 (the
    // libc wrapper turns it back into a nice value, and -1 then needs errno to tell).
    // SAFETY: as above.
    let raw = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, pid) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Sched {
        policy,
        priority: param.sched_priority,
        nice: 20 - raw as i32,
    })
}

/// Give stopped `pid` the scheduling `want`, by injected calls, where it has another. `at`:
/// a scratch page of the task.
pub fn restore(pid: Pid, inj: &Injector, mem: &Memory, at: u64, want: &Sched) -> io::Result<()> {
    let has = read(pid)?;
    // The nice value first: it stays with the task whatever its policy, and a real-time
    // policy set first would make a lower nice need no privilege it should need.
    if has.nice != want.nice {
        let args = [libc::PRIO_PROCESS as u64, 0, want.nice as u64, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_setpriority, args, "setpriority")?;
    }
    if (has.policy, has.priority) != (want.policy, want.priority) {
        mem.write(at, &want.priority.to_le_bytes())?;
        let args = [0, want.policy as u64, at, 0, 0, 0];
        inj.call_ok(
            pid,
            libc::SYS_sched_setscheduler,
            args,
            "sched_setscheduler",
        )?;
    }
    Ok(())
}
