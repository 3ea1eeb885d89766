//! Per-thread file-system identity.
//!
//! glibc's setgroups(3) and setres[ug]id(3) change every thread of the process (they signal
//! each thread to make the same call), so a worker that serves one user would change the
//! identity of the whole daemon. The raw system calls change only the calling thread, which is
//! what each worker needs: the kernel checks file access against the thread's fsuid, fsgid
//! and groups. Moving fsuid away from 0 also drops the file capabilities (CAP_DAC_OVERRIDE,
//! CAP_FOWNER, ...) from the thread's effective set; moving it back to 0 restores them.

use std::io;

use crate::protocol::Caller;

/// Run the calling thread's file accesses as `caller` until the next call.
pub fn become_caller(caller: &Caller) -> io::Result<()> {
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
    Ok(())
}

/// Give the calling thread a file-system context of its own (cwd, root, umask), and a umask
/// of 0: the requesting node's kernel has applied the caller's umask to the modes already,
/// and the daemon's must not apply a second time.
pub fn own_umask() -> io::Result<()> {
    // SAFETY: unshare(CLONE_FS) affects only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: umask cannot fail; after the unshare it is this thread's alone.
    unsafe { libc::umask(0) };
    Ok(())
}
