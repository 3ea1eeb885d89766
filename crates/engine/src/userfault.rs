//! What `fill` and `track` both do with a userfaultfd: give a stopped process one by an
//! injected userfaultfd(2) call, take a copy with pidfd_getfd(2), close the process's own
//! descriptor, and drive the copy (the handshake, registering areas). The ioctls act on the
//! descriptor's address space, not the caller's, so all of it works from the supervisor.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rmosix_image::Area;

use crate::inject::Injector;
use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::sys;

/// A userfaultfd in stopped `pid`, with UFFD_USER_MODE_ONLY so that an ordinary user may
/// create one: its number there, or the errno the call failed with (no userfaultfd in this
/// kernel, or a seccomp policy that refuses it).
pub fn create_in(pid: Pid, inj: &Injector) -> io::Result<Result<i32, i32>> {
    let flags = libc::O_CLOEXEC as u64 | sys::UFFD_USER_MODE_ONLY;
    let fd = inj.call(pid, libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
    Ok(if fd < 0 {
        Err(-fd as i32)
    } else {
        Ok(fd as i32)
    })
}

/// Our copy of the process's descriptor `theirs`.
pub fn take(pid: Pid, theirs: i32) -> io::Result<OwnedFd> {
    PidFd::open(pid)?.get_fd(theirs)
}

/// Close the process's descriptor `fd`.
pub fn close_in(pid: Pid, inj: &Injector, fd: i32) -> io::Result<()> {
    let what = "close the userfaultfd";
    inj.call_ok(pid, libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0], what)
        .map(drop)
}

/// The API handshake, asking for `features`.
pub fn handshake(uffd: &OwnedFd, features: u64) -> io::Result<()> {
    let mut api = sys::UffdioApi {
        api: sys::UFFD_API,
        features,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API fills the live struct it is given.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), sys::UFFDIO_API, &mut api) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Register `area` in `mode` (UFFDIO_REGISTER_MODE_*); the error names the area.
pub fn register(uffd: &OwnedFd, area: &Area, mode: u64) -> io::Result<()> {
    let mut reg = sys::UffdioRegister {
        start: area.start,
        len: area.len(),
        mode,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER reads the range and fills `ioctls` of the live struct.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), sys::UFFDIO_REGISTER, &mut reg) } != 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("register {:#x}-{:#x}: {err}", area.start, area.end),
        ));
    }
    Ok(())
}
