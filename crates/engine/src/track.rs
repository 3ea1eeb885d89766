//! Which pages a running process writes: what pre-copy needs to send the image while the
//! process runs and then, frozen, only what changed since.
//!
//! The process is given a userfaultfd by an injected call, as in `fill`. We take a copy with
//! pidfd_getfd(2) and close the process's own descriptor at once, so its descriptor table is
//! as it was. On our copy every area is registered for write-protect faults in asynchronous
//! mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7) while the process is stopped (see
//! [`Tracker::register`]), then write-protected while it runs on. A write to a protected page
//! does not stop the process: the kernel lifts the page's protection and goes on. Pages that
//! are absent get a marker, so that their first touch counts as a write, but a read does not.
//! PAGEMAP_SCAN on /proc/PID/pagemap then lists the pages that lost their protection: pages
//! written, faulted in by a write, or zapped (MADV_DONTNEED leaves neither page nor marker).
//!
//! Dropping the tracker closes the last descriptor of the userfaultfd, which unregisters the
//! areas and lifts the protection: a migration that fails leaves nothing behind.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use rmosix_image::Area;

use crate::inject::Injector;
use crate::ptrace::Pid;
use crate::{sys, userfault};

/// Regions read per PAGEMAP_SCAN call.
const REGIONS: usize = 512;

/// Write tracking armed on the areas of one process.
pub struct Tracker {
    /// The tracking lasts as long as this last descriptor of the userfaultfd.
    uffd: OwnedFd,
    pid: Pid,
    /// See [`Tracker::owe`]. Behind a lock: the rounds run on a thread of their own, and the
    /// final round reads it through the same shared reference.
    owed: Mutex<Vec<(u64, u64)>>,
    /// See [`Tracker::protect_files`]: None until it ran.
    own_in_files: Mutex<Option<Vec<(u64, u64)>>>,
}

/// A run of pages written since tracking was armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub start: u64,
    pub end: u64,
    /// The pages hold data (present or swapped out); else they were zapped and read as zeros.
    pub holds_data: bool,
}

/// Whether tracking covers `area`: everything but the kernel's vdso block and vsyscall page.
fn is_tracked(area: &Area) -> bool {
    !area.is_vdso_block() && area.name != "[vsyscall]"
}

impl Tracker {
    /// Give stopped `pid` a userfaultfd for write tracking; nothing is tracked before
    /// [`Tracker::protect`], which the process need not be stopped for. Fails on kernels
    /// before 6.7 and where userfaultfd is refused: the caller then moves the process frozen.
    pub fn open(pid: Pid, inj: &Injector) -> io::Result<Tracker> {
        let theirs = userfault::create_in(pid, inj)?.map_err(io::Error::from_raw_os_error)?;
        let taken = userfault::take(pid, theirs);
        userfault::close_in(pid, inj, theirs)?;
        let uffd = taken?;
        userfault::handshake(&uffd, sys::UFFD_FEATURE_WP_ASYNC).map_err(|err| {
            io::Error::new(err.kind(), format!("asynchronous write-protect: {err}"))
        })?;
        Ok(Tracker {
            uffd,
            pid,
            owed: Mutex::new(Vec::new()),
            own_in_files: Mutex::new(None),
        })
    }

    /// Register `areas` (but the kernel's vdso block) for write tracking. The process must be
    /// stopped, and `areas` read in that stop. A registration splits an area where the range
    /// registered ends inside it, and a running process could have grown, merged or mapped
    /// anew an area since its list was read: it would find it cut in two, and an mremap of
    /// the whole fail with EFAULT. Areas it maps later are not registered, and
    /// [`Tracker::written`] says so.
    pub fn register(&self, areas: &[Area]) {
        for area in areas.iter().filter(|a| is_tracked(a)) {
            if let Err(err) = userfault::register(&self.uffd, area, sys::UFFDIO_REGISTER_MODE_WP) {
                tracing::debug!(%err, start = area.start, "an area left untracked");
            }
        }
    }

    /// In the stop, protect the file mappings among the registered `areas` at once, and keep
    /// `own`, the runs of their pages that are the process's own now (see
    /// `dump::protect_file_mappings`). [`Tracker::protect`] then leaves them alone.
    pub fn protect_files(&self, areas: &[Area], own: Vec<(u64, u64)>) {
        let files = areas.iter().filter(|a| is_tracked(a) && a.file.is_some());
        for area in files {
            if let Err(err) = write_protect(&self.uffd, area) {
                tracing::debug!(%err, start = area.start, "an area left unprotected");
            }
        }
        *self.own_in_files.lock().expect("own pages") = Some(own);
    }

    /// The runs of pages of file mappings that were the process's own when they were
    /// protected, if [`Tracker::protect_files`] did it.
    pub fn own_in_files(&self) -> Option<Vec<(u64, u64)>> {
        self.own_in_files.lock().expect("own pages").clone()
    }

    /// Track the writes to the registered `areas` from now on. The process may run
    /// meanwhile: a page it writes before its protection is set is read afterwards by the
    /// first round anyway. An area it unmapped since it was registered is skipped, and so
    /// are file mappings [`Tracker::protect_files`] protected already.
    pub fn protect(&self, areas: &[Area]) {
        let files_done = self.own_in_files.lock().expect("own pages").is_some();
        let areas = areas.iter().filter(|a| !(files_done && a.file.is_some()));
        for area in areas.filter(|a| is_tracked(a)) {
            if let Err(err) = write_protect(&self.uffd, area) {
                tracing::debug!(%err, start = area.start, "an area left unprotected");
            }
        }
    }

    /// The runs of pages in [start, end) written since they were protected. None if part of the
    /// range is not tracked: mapped anew since (a fresh mapping is not registered, and its
    /// untouched pages carry no marker), or the process has exec'd. Then every page there
    /// must count as written.
    pub fn written(&self, start: u64, end: u64) -> io::Result<Option<Vec<Written>>> {
        match self.scan(start, end, sys::PM_SCAN_CHECK_WPASYNC) {
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Like [`Tracker::written`], and protect the runs found again in the same step, so that
    /// a write that comes after is found by the next call: a running round's scan. Each page
    /// is tested and protected again under its page-table lock (PM_SCAN_WP_MATCHING), so no
    /// write falls between the two. The caller must send every run returned, or
    /// [`Tracker::owe`] it to the final round: nothing else will report it again.
    ///
    /// Pages of areas not tracked are neither reported nor protected (without
    /// PM_SCAN_CHECK_WPASYNC the kernel skips such areas, where with it a scan that fails
    /// halfway would have protected pages it never reported). A second scan then looks for
    /// them, and None says that part of the range must be sent whole.
    pub fn collect(&self, start: u64, end: u64) -> io::Result<Option<Vec<Written>>> {
        let found = self.scan(start, end, sys::PM_SCAN_WP_MATCHING)?;
        Ok(self.all_tracked(start, end)?.then_some(found))
    }

    /// Whether every page of [start, end) lies in an area registered for write tracking.
    fn all_tracked(&self, start: u64, end: u64) -> io::Result<bool> {
        let pagemap = self.pagemap()?;
        let mut region = [sys::PageRegion::default(); 1];
        let mut arg = sys::PmScanArg {
            size: size_of::<sys::PmScanArg>() as u64,
            start,
            end,
            vec: region.as_mut_ptr() as u64,
            vec_len: 1,
            max_pages: 1,
            // Pages whose area does not allow asynchronous write-protect.
            category_inverted: sys::PAGE_IS_WPALLOWED,
            category_mask: sys::PAGE_IS_WPALLOWED,
            ..Default::default()
        };
        // SAFETY: PAGEMAP_SCAN reads `arg`, writes at most one region to our live array and
        // `walk_end` of `arg`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), sys::PAGEMAP_SCAN, &mut arg) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("PAGEMAP_SCAN: {err}")));
        }
        Ok(n == 0)
    }

    /// Ranges whose writes a running round collected but did not send (it stopped there, or
    /// could not read them): the final round sends them, whatever its own scan says.
    pub fn owe(&self, range: (u64, u64)) {
        self.owed.lock().expect("owed ranges").push(range);
    }

    /// What [`Tracker::owe`] recorded, in the order it came.
    pub fn owed(&self) -> Vec<(u64, u64)> {
        self.owed.lock().expect("owed ranges").clone()
    }

    /// Opened anew each time: after an exec, a pagemap opened earlier would show the old
    /// address space.
    fn pagemap(&self) -> io::Result<File> {
        File::open(format!("/proc/{}/pagemap", self.pid))
    }

    /// The written runs of [start, end), by PAGEMAP_SCAN with `flags`.
    fn scan(&self, start: u64, end: u64, flags: u64) -> io::Result<Vec<Written>> {
        let return_mask = sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED;
        let scan = Scan {
            flags,
            category_mask: sys::PAGE_IS_WRITTEN,
            return_mask,
        };
        let found = scan.regions(&self.pagemap()?, start, end)?;
        Ok(found
            .into_iter()
            .map(|r| Written {
                start: r.start,
                end: r.end,
                holds_data: r.categories & return_mask != 0,
            })
            .collect())
    }
}

/// The guard regions (MADV_GUARD_INSTALL) of `pid` in [start, end), as (start, end) runs.
/// Their pages cannot be read: a read of one fails with EFAULT or EIO.
pub fn guard_runs(pid: Pid, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
    let scan = Scan {
        flags: 0,
        category_mask: sys::PAGE_IS_GUARD,
        return_mask: sys::PAGE_IS_GUARD,
    };
    let found = scan.regions(&pagemap, start, end)?;
    Ok(found.into_iter().map(|r| (r.start, r.end)).collect())
}

/// One PAGEMAP_SCAN query: the pages in all of `category_mask`'s categories, reported with
/// those of `return_mask`.
struct Scan {
    flags: u64,
    category_mask: u64,
    return_mask: u64,
}

impl Scan {
    /// The regions of [start, end) that match, call after call until the walk ends.
    fn regions(&self, pagemap: &File, start: u64, end: u64) -> io::Result<Vec<sys::PageRegion>> {
        let mut found = Vec::new();
        let mut regions = [sys::PageRegion::default(); REGIONS];
        let mut at = start;
        while at < end {
            let mut arg = sys::PmScanArg {
                size: size_of::<sys::PmScanArg>() as u64,
                start: at,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: REGIONS as u64,
                flags: self.flags,
                category_mask: self.category_mask,
                return_mask: self.return_mask,
                ..Default::default()
            };
            // SAFETY: PAGEMAP_SCAN reads `arg`, writes at most `vec_len` regions to `vec` (our
            // live array) and `walk_end` of `arg`.
            let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), sys::PAGEMAP_SCAN, &mut arg) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EPERM) {
                    return Err(err);
                }
                return Err(io::Error::new(err.kind(), format!("PAGEMAP_SCAN: {err}")));
            }
            found.extend_from_slice(&regions[..n as usize]);
            // A full vector stops the walk where the next region would start; the pages
            // after it were neither reported nor (with PM_SCAN_WP_MATCHING) protected.
            if arg.walk_end <= at {
                break;
            }
            at = arg.walk_end;
        }
        Ok(found)
    }
}

/// Write-protect all of `area`, registered for asynchronous write-protect faults.
fn write_protect(uffd: &OwnedFd, area: &Area) -> io::Result<()> {
    let mut wp = sys::UffdioWriteprotect {
        start: area.start,
        len: area.len(),
        mode: sys::UFFDIO_WRITEPROTECT_MODE_WP,
    };
    // SAFETY: UFFDIO_WRITEPROTECT reads the live struct.
    if unsafe { libc::ioctl(uffd.as_raw_fd(), sys::UFFDIO_WRITEPROTECT, &mut wp) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Husk, PAGE};

    /// A tracker armed on the area of stopped `husk`.
    fn tracking(husk: &Husk) -> Tracker {
        let tracker = Tracker::open(husk.pid, &husk.inj).unwrap();
        tracker.register(std::slice::from_ref(&husk.area));
        tracker.protect(std::slice::from_ref(&husk.area));
        tracker
    }

    #[test]
    fn writes_first_touches_and_zaps_are_found_and_reads_are_not() {
        let husk = Husk::new(16);
        let (start, page) = (husk.area.start, |n: u64| husk.area.start + n * PAGE);
        husk.mem
            .write(start, &vec![1u8; 8 * PAGE as usize])
            .unwrap();
        let tracker = tracking(&husk);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", husk.pid))
            .unwrap()
            .count();
        assert_eq!(fds, 0, "the husk keeps no userfaultfd");

        husk.mem.write(page(3), &[2u8; 8]).unwrap();
        let advice = [page(5), PAGE, libc::MADV_DONTNEED as u64, 0, 0, 0];
        husk.inj
            .call_ok(husk.pid, libc::SYS_madvise, advice, "madvise")
            .unwrap();
        husk.mem.write(page(12), &[3u8; 8]).unwrap();
        // Reads, of a page present and of one never touched, are no writes.
        husk.mem.read_vec(page(1), 8).unwrap();
        husk.mem.read_vec(page(14), 8).unwrap();

        let written = tracker.written(start, husk.area.end).unwrap().unwrap();
        let run = |n: u64, holds_data| Written {
            start: page(n),
            end: page(n + 1),
            holds_data,
        };
        assert_eq!(written, [run(3, true), run(5, false), run(12, true)]);
    }

    #[test]
    fn a_scan_that_collects_protects_again_so_each_write_is_found_once() {
        let husk = Husk::new(16);
        let (start, end) = (husk.area.start, husk.area.end);
        let page = |n: u64| start + n * PAGE;
        let run = |n: u64, holds_data| Written {
            start: page(n),
            end: page(n + 1),
            holds_data,
        };
        husk.mem
            .write(start, &vec![1u8; 16 * PAGE as usize])
            .unwrap();
        let tracker = tracking(&husk);

        husk.mem.write(page(3), &[2u8; 8]).unwrap();
        let zap = |n: u64| {
            let advice = [page(n), PAGE, libc::MADV_DONTNEED as u64, 0, 0, 0];
            husk.inj
                .call_ok(husk.pid, libc::SYS_madvise, advice, "madvise")
                .unwrap();
        };
        zap(5);
        let first = tracker.collect(start, end).unwrap().unwrap();
        assert_eq!(first, [run(3, true), run(5, false)]);
        // Found and protected again in one step: nothing new, nothing found.
        assert_eq!(tracker.collect(start, end).unwrap().unwrap(), []);
        // Written again, and the zapped page touched (it had its marker back): found again.
        husk.mem.write(page(3), &[3u8; 8]).unwrap();
        husk.mem.write(page(5), &[4u8; 8]).unwrap();
        husk.mem.write(page(9), &[5u8; 8]).unwrap();
        let again = tracker.collect(start, end).unwrap().unwrap();
        assert_eq!(again, [run(3, true), run(5, true), run(9, true)]);
        // A plain scan sees what the collecting one left: nothing, then a new write.
        assert_eq!(tracker.written(start, end).unwrap().unwrap(), []);
        husk.mem.write(page(12), &[6u8; 8]).unwrap();
        assert_eq!(
            tracker.written(start, end).unwrap().unwrap(),
            [run(12, true)]
        );
        assert_eq!(
            tracker.written(start, end).unwrap().unwrap(),
            [run(12, true)]
        );
    }

    #[test]
    fn a_collecting_scan_of_an_area_mapped_anew_protects_nothing_and_says_so() {
        let husk = Husk::new(8);
        let tracker = tracking(&husk);
        let (start, len) = (husk.area.start, husk.area.len());
        // Remap the upper half: the lower one stays tracked.
        let half = start + len / 2;
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64;
        let args = [half, len / 2, prot, flags, u64::MAX, 0];
        husk.inj
            .call_ok(husk.pid, libc::SYS_mmap, args, "mmap")
            .unwrap();
        husk.mem.write(start, &[1u8; 8]).unwrap();
        assert_eq!(tracker.collect(start, start + len).unwrap(), None);
        assert_eq!(tracker.collect(half, start + len).unwrap(), None);
        // The tracked half was collected all the same (the None told the caller to send the
        // whole range): its write is not reported again.
        assert_eq!(tracker.collect(start, half).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn an_area_mapped_anew_is_not_tracked() {
        let husk = Husk::new(8);
        let tracker = tracking(&husk);
        let (start, len) = (husk.area.start, husk.area.len());
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64;
        let args = [start, len, prot, flags, u64::MAX, 0];
        husk.inj
            .call_ok(husk.pid, libc::SYS_mmap, args, "mmap")
            .unwrap();
        assert_eq!(tracker.written(start, start + len).unwrap(), None);
    }

    #[test]
    fn a_dropped_tracker_leaves_the_pages_writable_and_untracked() {
        let husk = Husk::new(4);
        husk.mem.write(husk.area.start, &[1u8; 8]).unwrap();
        let tracker = tracking(&husk);
        drop(tracker);
        husk.mem.write(husk.area.start, &[2u8; 8]).unwrap();
        let uffd_flags = std::fs::read_to_string(format!("/proc/{}/smaps", husk.pid)).unwrap();
        assert!(
            !uffd_flags.contains(" uw"),
            "an area is still registered:\n{uffd_flags}"
        );
    }
}
