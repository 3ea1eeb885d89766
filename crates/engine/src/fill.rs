//! Filling the fresh areas of a process being restored with the image's pages.
//!
//! The areas are new anonymous mappings in another process. Written through /proc/PID/mem,
//! each page is first faulted in (allocated and zeroed) and then copied over. UFFDIO_COPY
//! allocates each page and copies into it in one step, without a fault and without zeroing
//! it first. On our 2-vCPU VMs, where fresh memory also faults in the hypervisor, that is
//! 0.4 s per GiB against 0.9 s (4 KiB pages) or 2 s (huge pages) through /proc/PID/mem.
//!
//! So the process is given a userfaultfd by an injected userfaultfd(2) call, with
//! UFFD_USER_MODE_ONLY so that an ordinary user may create it. We take a copy with
//! pidfd_getfd(2) and register every area for missing pages. The ioctls act on the
//! descriptor's address space, not the caller's, so we copy into the areas from here.
//! Closing the descriptor at both ends unregisters the areas again before the process
//! runs. The kernel must see no missing page in a registered area. With user-mode-only
//! handling, its own accesses there would fail with EFAULT. So the task state, which the
//! kernel reads from the process's memory, is restored only after `finish`.
//!
//! Where userfaultfd is missing (a kernel built without it, or a container's seccomp
//! policy), the pages go through /proc/PID/mem as before: slower, but the same result.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rmosix_image::Area;

use crate::inject::Injector;
use crate::mem::Memory;
use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::sys;

const PAGE: u64 = 4096;

/// How the pages get into the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// UFFDIO_COPY through the process's userfaultfd.
    Copy,
    /// Writes to /proc/PID/mem.
    Write,
}

/// Places page runs into the areas of one stopped process.
pub struct Filler<'m> {
    mem: &'m Memory,
    uffd: Option<Uffd>,
}

/// The process's userfaultfd: our copy and its number in the process.
struct Uffd {
    ours: OwnedFd,
    theirs: i32,
}

impl<'m> Filler<'m> {
    /// Prepare to fill `areas`, freshly mapped and still empty in stopped `pid`.
    pub fn open(
        pid: Pid,
        inj: &Injector,
        mem: &'m Memory,
        areas: &[&Area],
    ) -> io::Result<Filler<'m>> {
        let flags = libc::O_CLOEXEC as u64 | sys::UFFD_USER_MODE_ONLY;
        let theirs = inj.call(pid, libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0])?;
        if theirs < 0 {
            tracing::debug!(
                pid,
                errno = -theirs,
                "no userfaultfd; pages go through /proc/PID/mem"
            );
            return Ok(Filler { mem, uffd: None });
        }
        let theirs = theirs as i32;
        let taken = PidFd::open(pid).and_then(|p| p.get_fd(theirs));
        let uffd = match taken.and_then(|ours| register(&ours, areas).map(|()| ours)) {
            Ok(ours) => Uffd { ours, theirs },
            Err(err) => {
                close_in(pid, inj, theirs)?;
                return Err(io::Error::new(err.kind(), format!("userfaultfd: {err}")));
            }
        };
        Ok(Filler {
            mem,
            uffd: Some(uffd),
        })
    }

    /// Which way pages go in.
    pub fn method(&self) -> Method {
        match self.uffd {
            Some(_) => Method::Copy,
            None => Method::Write,
        }
    }

    /// Place `data` at `addr`, which lies inside one of the areas. With UFFDIO_COPY, both must
    /// be whole pages and no page may have been placed before.
    pub fn place(&self, addr: u64, data: &[u8]) -> io::Result<()> {
        let Some(uffd) = &self.uffd else {
            return self.mem.write(addr, data);
        };
        if !addr.is_multiple_of(PAGE) || !(data.len() as u64).is_multiple_of(PAGE) {
            return Err(io::Error::other(format!(
                "image pages at {addr:#x} (+{:#x}) are not whole pages",
                data.len()
            )));
        }
        let mut done = 0usize;
        while done < data.len() {
            let mut copy = sys::UffdioCopy {
                dst: addr + done as u64,
                src: data[done..].as_ptr() as u64,
                len: (data.len() - done) as u64,
                ..Default::default()
            };
            // SAFETY: UFFDIO_COPY reads `len` bytes at `src`, which `data` holds, and writes
            // only `copy` of the live struct; `dst` is in the other process.
            let ret = unsafe { libc::ioctl(uffd.ours.as_raw_fd(), sys::UFFDIO_COPY, &mut copy) };
            if copy.copy > 0 {
                done += copy.copy as usize;
            }
            if ret == 0 {
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // A partial copy: go on from where it stopped.
                Some(libc::EAGAIN) | Some(libc::EINTR) => continue,
                Some(libc::EEXIST) => {
                    return Err(io::Error::other(format!(
                        "image sends the page at {:#x} twice",
                        copy.dst
                    )));
                }
                _ => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("UFFDIO_COPY to {:#x}: {err}", copy.dst),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Done placing: close the userfaultfd at both ends, which unregisters the areas.
    pub fn finish(self, pid: Pid, inj: &Injector) -> io::Result<()> {
        match self.uffd {
            Some(uffd) => {
                drop(uffd.ours);
                close_in(pid, inj, uffd.theirs)
            }
            None => Ok(()),
        }
    }
}

/// Complete the API handshake on our copy and register every area for missing pages.
fn register(uffd: &OwnedFd, areas: &[&Area]) -> io::Result<()> {
    let mut api = sys::UffdioApi {
        api: sys::UFFD_API,
        ..Default::default()
    };
    // SAFETY: UFFDIO_API fills the live struct it is given.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), sys::UFFDIO_API, &mut api) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for area in areas {
        let mut reg = sys::UffdioRegister {
            start: area.start,
            len: area.len(),
            mode: sys::UFFDIO_REGISTER_MODE_MISSING,
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
    }
    Ok(())
}

fn close_in(pid: Pid, inj: &Injector, fd: i32) -> io::Result<()> {
    let what = "close the userfaultfd";
    inj.call_ok(pid, libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0], what)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps;
    use crate::seccomp::{ARCH, BPF_JEQ_K, BPF_LD_W_ABS, BPF_RET_K, NR, jump, stmt};
    use crate::spawn::spawn_husk;

    /// Maps four pages in a fresh husk, places two of them, and reads the area back.
    fn fill_a_husk() -> Method {
        let pid = spawn_husk(false).unwrap();
        let mem = Memory::open(pid).unwrap();
        let inj = Injector::find(&mem, &maps::read(pid).unwrap()).unwrap();
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let len = 4 * PAGE;
        let start = inj
            .call_ok(
                pid,
                libc::SYS_mmap,
                [0, len, prot, flags, u64::MAX, 0],
                "mmap",
            )
            .unwrap();
        let area = maps::read(pid)
            .unwrap()
            .into_iter()
            .find(|a| a.start <= start && start < a.end)
            .unwrap();
        let filler = Filler::open(pid, &inj, &mem, &[&area]).unwrap();
        let method = filler.method();
        let first = vec![0x5a; PAGE as usize];
        let third: Vec<u8> = (0..PAGE).map(|i| i as u8).collect();
        filler.place(start, &first).unwrap();
        filler.place(start + 2 * PAGE, &third).unwrap();
        if method == Method::Copy {
            let again = filler.place(start, &first).unwrap_err();
            assert!(again.to_string().contains("twice"), "{again}");
        }
        filler.finish(pid, &inj).unwrap();

        let back = mem.read_vec(start, len as usize).unwrap();
        let page = |n: usize| &back[n * PAGE as usize..(n + 1) * PAGE as usize];
        assert_eq!(page(0), &first[..]);
        assert!(page(1).iter().all(|&b| b == 0));
        assert_eq!(page(2), &third[..]);
        assert!(page(3).iter().all(|&b| b == 0));
        // The userfaultfd is gone from the husk's descriptor table.
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
            let target = std::fs::read_link(fd.unwrap().path()).unwrap();
            assert!(
                !target.to_string_lossy().contains("userfaultfd"),
                "{target:?}"
            );
        }
        // SAFETY: killing our own traced child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = crate::ptrace::wait(pid, 0);
        method
    }

    #[test]
    fn pages_land_by_uffdio_copy() {
        assert_eq!(fill_a_husk(), Method::Copy);
    }

    #[test]
    fn pages_land_through_proc_mem_without_userfaultfd() {
        // A thread whose filter (inherited by the husk it forks) refuses userfaultfd(2), as a
        // container's seccomp policy may.
        let method = std::thread::spawn(|| {
            let prog = [
                stmt(BPF_LD_W_ABS, ARCH),
                jump(BPF_JEQ_K, sys::AUDIT_ARCH_X86_64, 0, 3),
                stmt(BPF_LD_W_ABS, NR),
                jump(BPF_JEQ_K, libc::SYS_userfaultfd as u32, 0, 1),
                stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
                stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW),
            ];
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: prctl and seccomp read the live program; they affect only this thread.
            unsafe {
                assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
                let set = libc::SECCOMP_SET_MODE_FILTER;
                assert_eq!(libc::syscall(libc::SYS_seccomp, set, 0, &fprog), 0);
            }
            fill_a_husk()
        })
        .join()
        .unwrap();
        assert_eq!(method, Method::Write);
    }
}
