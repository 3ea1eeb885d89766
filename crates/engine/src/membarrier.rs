//! A process's membarrier(2) registrations, which belong to its memory (the mm) and go with
//! it. The freeze reads them with an injected `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3)
//! and the restore makes the register commands the target has not made yet (a registration
//! cannot be undone, and a shell keeps the ones the process made before it left).
//! Without them, the process's `MEMBARRIER_CMD_PRIVATE_EXPEDITED` fails with EPERM where it
//! resumes.

use std::io;

use crate::inject::Injector;
use crate::ptrace::Pid;

/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (uapi linux/membarrier.h).
const GET_REGISTRATIONS: u64 = 1 << 9;
/// The register commands, each the bit GET_REGISTRATIONS reports for it: global expedited,
/// private expedited, its sync-core and its rseq flavours.
const REGISTER_COMMANDS: [u64; 4] = [1 << 2, 1 << 4, 1 << 6, 1 << 8];

/// The registrations of stopped `pid`: none where the kernel cannot tell (before 6.3).
pub fn read(pid: Pid, inj: &Injector) -> io::Result<u64> {
    let ret = inj.call(
        pid,
        libc::SYS_membarrier,
        [GET_REGISTRATIONS, 0, 0, 0, 0, 0],
    )?;
    Ok(if ret < 0 { 0 } else { ret as u64 })
}

/// Make in stopped `pid` the registrations of `registered` that it lacks.
pub fn restore(pid: Pid, inj: &Injector, registered: u64) -> io::Result<()> {
    let missing = registered & !read(pid, inj)?;
    let unknown = missing & !REGISTER_COMMANDS.iter().fold(0, |all, c| all | c);
    if unknown != 0 {
        return Err(io::Error::other(format!(
            "unknown membarrier registrations {unknown:#x}"
        )));
    }
    for command in REGISTER_COMMANDS {
        if missing & command != 0 {
            let what = format!("membarrier({command:#x}), a registration of the process");
            inj.call_ok(pid, libc::SYS_membarrier, [command, 0, 0, 0, 0, 0], &what)?;
        }
    }
    Ok(())
}
