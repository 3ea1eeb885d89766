//! The resource limits a process keeps when it moves (`RLIMIT_*`: its stack, address space,
//! open files, core size, CPU time...).
//!
//! `ulimit -v 4000000; mosrun ./simulate` must not run without its limit once it moves: the
//! freeze reads the process's limits from outside, the image carries them, and the guest
//! sets them again where the husk's differ (a husk starts with its guest's limits). A hard
//! limit is never raised above the husk's: the node's own limit on what runs there holds
//! (as a login's would), and the process gets the lower one. Back home, the shell has kept
//! home's all along.
//!
//! Afterwards the process's own limits are read where it runs, as long as they are home's
//! (`getrlimit`, `prlimit64` of itself without a new limit: no round trip); a change of
//! them runs at home, for the shell that keeps them for a return, and then here (see
//! `forward`). A limit another process sets on the shell at home (`prlimit --pid`) is not
//! seen here.

use std::io;

use rmosix_image::Limit;

use crate::ptrace::Pid;

/// How many limits the kernel has (`RLIM_NLIMITS`).
const RESOURCES: u32 = 16;

/// One limit of `pid`, read from outside (the caller may read it if it could signal it).
fn read_one(pid: Pid, resource: u32) -> io::Result<Limit> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 with no new limit writes the old one into our own variable.
    let ret = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limit {
        resource,
        soft: old.rlim_cur,
        hard: old.rlim_max,
    })
}

/// Whether `pid` can hold a descriptor under number `fd`: it lies below its limit of open
/// files. False where the limit cannot be read.
pub fn takes_descriptor(pid: Pid, fd: u64) -> bool {
    read_one(pid, libc::RLIMIT_NOFILE).is_ok_and(|limit| fd < limit.soft)
}

/// `pid`'s limits; none if they cannot be read (a process whose ids changed, say): its
/// limits then stay the node's, and are read from home.
pub fn read(pid: Pid) -> Vec<Limit> {
    (0..RESOURCES)
        .map(|resource| read_one(pid, resource))
        .collect::<io::Result<_>>()
        .unwrap_or_default()
}

/// Give husk `pid`, restored here, the limits `want` where it has others, no hard limit
/// above its own. At home the shell kept its own all along.
pub fn restore(pid: Pid, want: &[Limit]) -> io::Result<()> {
    for want in want.iter().filter(|limit| limit.resource < RESOURCES) {
        let has = read_one(pid, want.resource)?;
        let hard = want.hard.min(has.hard);
        let new = libc::rlimit64 {
            rlim_cur: want.soft.min(hard),
            rlim_max: hard,
        };
        if (new.rlim_cur, new.rlim_max) == (has.soft, has.hard) {
            continue;
        }
        let resource = want.resource as libc::__rlimit_resource_t;
        // SAFETY: prlimit64 reads the new limit from our own variable. No hard limit rises,
        // so this asks no privilege of the guest that the husk's own call would not.
        if unsafe { libc::prlimit64(pid, resource, &new, std::ptr::null_mut()) } != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::other(format!(
                "cannot set resource limit {}: {err}",
                want.resource
            )));
        }
    }
    Ok(())
}

/// Whether `pid` runs with the limits `home` gave it (none carried: no).
pub fn as_home(pid: Pid, home: &[Limit]) -> bool {
    !home.is_empty()
        && home
            .iter()
            .all(|limit| read_one(pid, limit.resource).is_ok_and(|has| has == *limit))
}

/// Whether call `nr` with `args` reads the process's own limits, changing none.
pub fn reads_own(nr: i64, args: &[u64; 6]) -> bool {
    match nr {
        libc::SYS_getrlimit => true,
        libc::SYS_prlimit64 => args[0] == 0 && args[2] == 0,
        _ => false,
    }
}

/// Whether call `nr` with `args` changes the process's own limits.
pub fn sets_own(nr: i64, args: &[u64; 6]) -> bool {
    match nr {
        libc::SYS_setrlimit => true,
        libc::SYS_prlimit64 => args[0] == 0 && args[2] != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_limits_are_read_whole_and_compared_to_homes() {
        let pid = std::process::id() as Pid;
        let limits = read(pid);
        assert_eq!(limits.len(), RESOURCES as usize);
        let stack = limits[libc::RLIMIT_STACK as usize];
        let mut own = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into our own variable.
        let ret = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut own) };
        assert_eq!(ret, 0);
        assert_eq!((stack.soft, stack.hard), (own.rlim_cur, own.rlim_max));
        assert!(as_home(pid, &limits));
        let mut other = limits.clone();
        other[libc::RLIMIT_CORE as usize].soft ^= 1;
        assert!(!as_home(pid, &other));
        assert!(!as_home(pid, &[]), "none carried");
    }

    #[test]
    fn reads_and_changes_of_the_own_limits_are_told_apart_from_anothers() {
        let new = 0x1000;
        assert!(reads_own(libc::SYS_getrlimit, &[3, new, 0, 0, 0, 0]));
        assert!(reads_own(libc::SYS_prlimit64, &[0, 3, 0, new, 0, 0]));
        assert!(!reads_own(libc::SYS_prlimit64, &[0, 3, new, 0, 0, 0]));
        assert!(
            !reads_own(libc::SYS_prlimit64, &[42, 3, 0, new, 0, 0]),
            "another's"
        );
        assert!(sets_own(libc::SYS_setrlimit, &[3, new, 0, 0, 0, 0]));
        assert!(sets_own(libc::SYS_prlimit64, &[0, 3, new, 0, 0, 0]));
        assert!(!sets_own(libc::SYS_prlimit64, &[42, 3, new, 0, 0, 0]));
        assert!(!sets_own(libc::SYS_prlimit64, &[0, 3, 0, new, 0, 0]));
    }
}
