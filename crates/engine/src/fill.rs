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
//! Several threads place pages at once. Fresh memory on a VM is first backed by the
//! hypervisor when it is touched. That is a wait more than work, and a second thread copies
//! while the first waits: on our VMs, 1 GiB of UFFDIO_COPY takes 0.24 s with two threads or
//! more, against 0.44-0.64 s with one.
//!
//! Where userfaultfd is missing (a kernel built without it, or a container's seccomp
//! policy), the pages go through /proc/PID/mem as before: slower, but the same result.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use rmosix_image::Area;

use crate::inject::Injector;
use crate::mem::Memory;
use crate::ptrace::Pid;
use crate::{sys, userfault};

const PAGE: u64 = 4096;
/// Threads that place pages at once.
const PLACERS: usize = 4;
/// Page runs read ahead of the placers.
const QUEUED: usize = 2 * PLACERS;

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
    /// The areas registered with the userfaultfd, as (start, end). Pages elsewhere (those a
    /// pre-copy's final round sends into areas filled before) are written through memory.
    registered: Vec<(u64, u64)>,
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
        let theirs = match userfault::create_in(pid, inj)? {
            Ok(theirs) => theirs,
            Err(errno) => {
                tracing::debug!(pid, errno, "no userfaultfd; pages go through /proc/PID/mem");
                return Ok(Filler {
                    mem,
                    uffd: None,
                    registered: Vec::new(),
                });
            }
        };
        let taken = userfault::take(pid, theirs);
        let uffd = match taken.and_then(|ours| register(&ours, areas).map(|()| ours)) {
            Ok(ours) => Uffd { ours, theirs },
            Err(err) => {
                userfault::close_in(pid, inj, theirs)?;
                return Err(io::Error::new(err.kind(), format!("userfaultfd: {err}")));
            }
        };
        Ok(Filler {
            mem,
            uffd: Some(uffd),
            registered: areas.iter().map(|a| (a.start, a.end)).collect(),
        })
    }

    /// Which way pages go in.
    pub fn method(&self) -> Method {
        match self.uffd {
            Some(_) => Method::Copy,
            None => Method::Write,
        }
    }

    /// Place `data` at `addr`. Inside a registered area, by UFFDIO_COPY: both must be whole
    /// pages and no page may have been placed before. Elsewhere, through memory.
    pub fn place(&self, addr: u64, data: &[u8]) -> io::Result<()> {
        let end = addr + data.len() as u64;
        let inside = |&(start, stop): &(u64, u64)| start <= addr && end <= stop;
        let Some(uffd) = self
            .uffd
            .as_ref()
            .filter(|_| self.registered.iter().any(inside))
        else {
            return self.mem.write(addr, data).map_err(|err| {
                let len = data.len();
                io::Error::new(
                    err.kind(),
                    format!("writing {len:#x} bytes at {addr:#x}: {err}"),
                )
            });
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

    /// Place every page run that `next` yields, on PLACERS threads, until it yields None.
    /// `next` runs on the calling thread; it fills the buffer it is given (a recycled one,
    /// or a new one) with the run's bytes and returns the run's address.
    pub fn fill(
        &self,
        mut next: impl FnMut(&mut Vec<u8>) -> io::Result<Option<u64>>,
    ) -> io::Result<()> {
        let (runs, queue) = mpsc::sync_channel::<(u64, Vec<u8>)>(QUEUED);
        // Shared by the placers only, so that when the last one stops (on an error), the
        // queue closes and feeding stops too.
        let queue = Arc::new(Mutex::new(queue));
        let (spare, spares) = mpsc::channel::<Vec<u8>>();
        // Set by the first placer that fails: the others stop too, and so does feeding,
        // rather than placing the rest of an image that cannot be restored.
        let failed = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let placers: Vec<_> = (0..PLACERS)
                .map(|_| {
                    let (queue, spare, failed) = (Arc::clone(&queue), spare.clone(), &failed);
                    scope.spawn(move || -> io::Result<()> {
                        while !failed.load(Ordering::Relaxed) {
                            // One placer waits on the channel, the idle ones on the lock.
                            let run = queue.lock().expect("placer queue").recv();
                            let Ok((addr, data)) = run else {
                                return Ok(());
                            };
                            if let Err(err) = self.place(addr, &data) {
                                failed.store(true, Ordering::Relaxed);
                                return Err(err);
                            }
                            // The reader may have finished already; the buffer is just dropped.
                            let _ = spare.send(data);
                        }
                        Ok(())
                    })
                })
                .collect();
            drop(queue);
            let fed = (|| loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let mut buf = spares.try_recv().unwrap_or_default();
                let Some(addr) = next(&mut buf)? else {
                    return Ok(());
                };
                // Every placer has stopped on an error, which the join below reports.
                if runs.send((addr, buf)).is_err() {
                    return Ok(());
                }
            })();
            drop(runs);
            let mut placed = Ok(());
            for placer in placers {
                let result = placer.join().expect("a page placer panicked");
                placed = placed.and(result);
            }
            // A placer's error explains why feeding stopped; otherwise feeding's own.
            placed.and(fed)
        })
    }

    /// Done placing: close the userfaultfd at both ends, which unregisters the areas.
    pub fn finish(self, pid: Pid, inj: &Injector) -> io::Result<()> {
        match self.uffd {
            Some(uffd) => {
                drop(uffd.ours);
                userfault::close_in(pid, inj, uffd.theirs)
            }
            None => Ok(()),
        }
    }
}

/// Complete the API handshake on our copy and register every area for missing pages.
fn register(uffd: &OwnedFd, areas: &[&Area]) -> io::Result<()> {
    userfault::handshake(uffd, 0)?;
    areas
        .iter()
        .try_for_each(|area| userfault::register(uffd, area, sys::UFFDIO_REGISTER_MODE_MISSING))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{ARCH, BPF_JEQ_K, BPF_LD_W_ABS, BPF_RET_K, NR, jump, stmt};
    use crate::testing::Husk;

    /// Pages in the test area: enough runs to keep every placer busy.
    const PAGES: u64 = 64;

    fn filler(husk: &Husk) -> Filler<'_> {
        Filler::open(husk.pid, &husk.inj, &husk.mem, &[&husk.area]).unwrap()
    }

    /// What page `n` of the test area is filled with (odd pages stay unsent).
    fn page_bytes(n: u64) -> Vec<u8> {
        (0..PAGE).map(|i| (i * 7 + n * 13) as u8 | 1).collect()
    }

    /// Fills the even pages of a husk's area, one run each, and reads the area back.
    fn fill_a_husk() -> Method {
        let husk = Husk::new(PAGES);
        let filler = filler(&husk);
        let method = filler.method();
        let mut runs = (0..PAGES).step_by(2);
        filler
            .fill(|buf| {
                let Some(n) = runs.next() else {
                    return Ok(None);
                };
                *buf = page_bytes(n);
                Ok(Some(husk.area.start + n * PAGE))
            })
            .unwrap();
        filler.finish(husk.pid, &husk.inj).unwrap();

        let back = husk
            .mem
            .read_vec(husk.area.start, husk.area.len() as usize)
            .unwrap();
        for (n, page) in (0..PAGES).zip(back.chunks(PAGE as usize)) {
            if n % 2 == 0 {
                assert_eq!(page, &page_bytes(n)[..], "page {n}");
            } else {
                assert!(page.iter().all(|&b| b == 0), "page {n} was never sent");
            }
        }
        // The userfaultfd is gone from the husk's descriptor table.
        for fd in std::fs::read_dir(format!("/proc/{}/fd", husk.pid)).unwrap() {
            let target = std::fs::read_link(fd.unwrap().path()).unwrap();
            let target = target.to_string_lossy();
            assert!(!target.contains("userfaultfd"), "{target}");
        }
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

    #[test]
    fn a_failed_placement_or_read_ends_the_fill_with_its_error() {
        let husk = Husk::new(PAGES);
        let filler = filler(&husk);
        let start = husk.area.start;
        // The same page twice: a placer fails, and feeding stops.
        let mut sent = 0;
        let err = filler
            .fill(|buf| {
                sent += 1;
                *buf = page_bytes(0);
                Ok(Some(start))
            })
            .unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        assert!(
            sent < 1000,
            "feeding went on after the failure: {sent} runs"
        );
        let err = filler
            .fill(|_| Err(io::Error::other("stream broke")))
            .unwrap_err();
        assert_eq!(err.to_string(), "stream broke");
        let err = filler
            .fill(|buf| {
                *buf = vec![1; 100];
                Ok(Some(start + PAGE))
            })
            .unwrap_err();
        assert!(err.to_string().contains("not whole pages"), "{err}");
        filler.finish(husk.pid, &husk.inj).unwrap();
    }
}
