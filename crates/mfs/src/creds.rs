//! Per-thread file-system identity.
//!
//! glibc's setgroups(3) and setres[ug]id(3) change every thread of the process (they signal
//! each thread to make the same call), so a worker that serves one user would change the
//! identity of the whole daemon. The raw system calls change only the calling thread, which is
//! what each worker needs: the kernel checks file access against the thread's fsuid, fsgid
//! and groups. Moving fsuid away from 0 drops only the file capabilities (CAP_DAC_OVERRIDE,
//! CAP_FOWNER, ...) from the thread's effective set; the others would still let a worker
//! serving an ordinary user write past its disk quota and the blocks reserved for root
//! (CAP_SYS_RESOURCE), so a worker serving anyone but root keeps no effective capability.
//! Capabilities, too, are the calling thread's own.

use std::io;

use caps::{CapSet, CapsHashSet};

use crate::protocol::Caller;

/// A worker thread's own credentials, which it serves each caller with.
pub struct Worker {
    /// The thread's permitted capabilities, read once: a worker only moves them in and out
    /// of its effective set, which leaves the permitted set as it was.
    permitted: CapsHashSet,
}

impl Worker {
    /// The calling thread as a worker: with a file-system context of its own (cwd, root,
    /// umask) and a umask of 0, since the requesting node's kernel has applied the caller's
    /// umask to the modes already, and the daemon's must not apply a second time.
    pub fn start() -> io::Result<Worker> {
        // SAFETY: unshare(CLONE_FS) affects only the calling thread.
        if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: umask cannot fail; after the unshare it is this thread's alone.
        unsafe { libc::umask(0) };
        let permitted = caps::read(None, CapSet::Permitted).map_err(io::Error::other)?;
        Ok(Worker { permitted })
    }

    /// Run the calling thread's file accesses as `caller` until the next call: with its ids
    /// and groups, and with no effective capability unless it is root. The calling thread
    /// must be the one that started the worker.
    pub fn become_caller(&self, caller: &Caller) -> io::Result<()> {
        become_caller(&self.permitted, caller)
    }
}

fn become_caller(permitted: &CapsHashSet, caller: &Caller) -> io::Result<()> {
    // What the last caller's call took away comes back first: setgroups needs CAP_SETGID.
    caps::set(None, CapSet::Effective, permitted).map_err(io::Error::other)?;
    // SAFETY: SYS_setgroups reads `len` gids from the pointer, which the slice provides; the
    // raw call changes only this thread's credentials.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            caller.groups.len(),
            caller.groups.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // setfsuid/setfsgid report no error: they return the previous id, and a second call with
    // an invalid id (-1) returns the current one, which tells whether the change took.
    // SAFETY: plain system calls on this thread's credentials.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, caller.gid);
        libc::syscall(libc::SYS_setfsuid, caller.uid);
    }
    // SAFETY: as above; -1 changes nothing.
    let (gid, uid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32,
            libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32,
        )
    };
    if (uid, gid) != (caller.uid, caller.gid) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    if caller.uid != 0 {
        caps::clear(None, CapSet::Effective).map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The effective capabilities of the calling thread, as its status shows them.
    fn effective() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap()
    }

    #[test]
    fn a_worker_serving_anyone_but_root_keeps_no_capability_and_gets_them_back_for_root() {
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            return; // Only root changes ids; the CI runs as root.
        }
        // A thread of its own: the ids and capabilities it changes are its alone.
        std::thread::spawn(|| {
            let worker = Worker::start().unwrap();
            let become_caller = |caller: &Caller| worker.become_caller(caller);
            let full = effective();
            assert_ne!(full, 0);
            let ana = Caller {
                uid: 1001,
                gid: 1001,
                groups: vec![1003],
            };
            become_caller(&ana).unwrap();
            assert_eq!(effective(), 0);
            let root = Caller {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
            };
            become_caller(&root).unwrap();
            assert_eq!(effective(), full);
            // And from root to a user again, as a worker goes from one request to the next.
            become_caller(&ana).unwrap();
            assert_eq!(effective(), 0);
        })
        .join()
        .unwrap();
    }
}
