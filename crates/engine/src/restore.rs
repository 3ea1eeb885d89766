//! Restoring an image into a stopped process: a husk on the target, or the shell at home when a
//! process comes back. The order matters and is the reason for this module's shape:
//!
//! 1. unregister the process's own rseq area, before the memory it points to goes away (the kernel
//!    would otherwise write cpu ids into whatever lands there);
//! 2. unmap everything but the vdso block, which holds the `syscall` instruction we inject with;
//! 3. move the vdso block (`[vvar]`, `[vvar_vclock]`, `[vdso]`) to the image's addresses: glibc
//!    caches pointers into it;
//! 4. map every image area at its address with its protection, advice and file (see
//!    `mapfile`), install the guard regions once all are mapped, and fill the areas from the
//!    stream (see `fill`: by UFFDIO_COPY where the kernel has userfaultfd);
//! 5. restore brk and auxv (PR_SET_MM_MAP), dispositions, altstack, robust list, tid address and
//!    rseq with injected calls;
//! 6. load signal mask, XSAVE area and registers last.

use std::io::{self, Read};

use rmosix_image::{
    self as image, Advice, Area, EndOfImage, FrameHead, FrameReader, Header, MmLayout, SigAction,
    Task,
};

use crate::dump::regs_from_image;
use crate::fill::Filler;
use crate::inject::{Injector, Scratch};
use crate::mapfile::Backings;
use crate::maps;
use crate::mem::Memory;
use crate::ptrace::{self, Pid};
use crate::samefile::Held;
use crate::{precopy, sys};

/// Restore the image whose header was already read from `frames` into stopped `pid`; reads the
/// page frames up to the end marker. Returns the injector, now pointing into the moved vdso.
///
/// A restore that fails still reads the image to its end marker (unless the stream itself
/// broke), so that the session stays in step: the sender learns why, and a shell that
/// could not take its process back goes on serving it.
pub fn restore_into<R: Read>(
    pid: Pid,
    header: &Header,
    frames: &mut FrameReader<R>,
) -> io::Result<Injector> {
    to_the_end(frames, |frames, at_end| {
        only_task(header)?;
        let (inj, end) = map_first_round(pid, &header.areas, &Held::default(), frames, at_end)?;
        last_marker(&end)?;
        restore_task(pid, &inj, header)?;
        Ok(inj)
    })
}

/// The running rounds of a pre-copy (see `precopy`): map `areas` in stopped `pid`, fill them
/// from the first round's page frames, then place each later round's pages over them and
/// empty the runs its end marker names, up to the marker that says no round follows.
/// Returns the injector, as `restore_into`. `held`: the files this node said it holds (see
/// `samefile`), whose file pages do not come.
pub fn restore_first_round<R: Read>(
    pid: Pid,
    areas: &[Area],
    held: &Held,
    frames: &mut FrameReader<R>,
) -> io::Result<Injector> {
    to_the_end(frames, |frames, at_end| {
        let (inj, mut end) = map_first_round(pid, areas, held, frames, at_end)?;
        let areas: Vec<&Area> = areas.iter().filter(|a| !a.is_vdso_block()).collect();
        let mem = Memory::open(pid)?;
        while end.more_rounds {
            end = place_round(&mem, &areas, frames, at_end)?;
            empty(pid, &inj, &end.zero)?;
        }
        Ok(inj)
    })
}

/// The final round of a pre-copy, whose header was read already: unmap what the process
/// unmapped since `first`, map what is new, place what changed, empty the runs the end marker
/// names, then restore the task. `held`: as for the first round.
pub fn restore_final_round<R: Read>(
    pid: Pid,
    inj: &Injector,
    first: &[Area],
    held: &Held,
    header: &Header,
    frames: &mut FrameReader<R>,
) -> io::Result<()> {
    to_the_end(frames, |frames, at_end| {
        only_task(header)?;
        if precopy::vdso_block(first) != precopy::vdso_block(&header.areas) {
            return Err(io::Error::other("the vdso moved during the first round"));
        }
        let areas: Vec<&Area> = header.areas.iter().filter(|a| !a.is_vdso_block()).collect();
        let kept = precopy::kept_parts(first, &header.areas);
        for old in first.iter().filter(|a| !a.is_vdso_block()) {
            let keeps = areas.iter().zip(&kept).find(|(a, _)| a.start == old.start);
            let gone_from = match keeps {
                Some((_, &kept_end)) if kept_end > old.start => kept_end,
                _ => old.start,
            };
            if gone_from < old.end {
                let args = [gone_from, old.end - gone_from, 0, 0, 0, 0];
                inj.call_ok(pid, libc::SYS_munmap, args, "munmap")?;
            }
        }
        let mut new = Vec::new();
        for (area, &kept_end) in areas.iter().zip(&kept) {
            if kept_end < area.end && !grown_in_place(pid, inj, area, kept_end)? {
                new.push(area.from(kept_end));
            }
        }
        let new: Vec<&Area> = new.iter().collect();
        let end = map_and_fill(pid, inj, &new, &areas, held, frames, at_end)?;
        last_marker(&end)?;
        empty(pid, inj, &end.zero)?;
        // Guard regions installed or removed since the first round, in the kept parts (the
        // new ones have theirs): all set anew.
        for (area, &kept_end) in areas.iter().zip(&kept) {
            let within = |runs: &[(u64, u64)]| -> Vec<(u64, u64)> {
                let runs = runs.iter().map(|&(s, e)| (s, e.min(kept_end)));
                runs.filter(|&(s, e)| s < e).collect()
            };
            if let Some(old) = first.iter().find(|a| a.start == area.start) {
                advise_runs(pid, inj, &within(&old.guards), sys::MADV_GUARD_REMOVE)?;
            }
            advise_runs(pid, inj, &within(&area.guards), sys::MADV_GUARD_INSTALL)?;
        }
        restore_task(pid, inj, header)
    })
}

/// Grow the kept part [start, kept_end) of anonymous `area` to its whole length in place,
/// with its guard regions: the rest of its pages then arrive through memory. Mapped beside
/// the kept part, the rest could stay a mapping of its own (the kernel does not always
/// merge the two), and a program's mremap of the whole area, one mapping at home, would
/// fail with EFAULT. False where the area is not that case or the room is taken: the rest
/// is then mapped as a new area.
fn grown_in_place(pid: Pid, inj: &Injector, area: &Area, kept_end: u64) -> io::Result<bool> {
    if kept_end == area.start || area.file.is_some() || area.advice.contains(&Advice::Droppable) {
        return Ok(false);
    }
    let (start, old_len, new_len) = (area.start, kept_end - area.start, area.len());
    let grown = inj.call(pid, libc::SYS_mremap, [start, old_len, new_len, 0, 0, 0])?;
    if grown != start as i64 {
        return Ok(false);
    }
    advise_runs(
        pid,
        inj,
        &area.from(kept_end).guards,
        sys::MADV_GUARD_INSTALL,
    )?;
    Ok(true)
}

/// An image and a final round end with one marker, which says no round follows.
fn last_marker(end: &EndOfImage) -> io::Result<()> {
    if end.more_rounds {
        return Err(io::Error::other(
            "image has a running round's end marker where its last one belongs",
        ));
    }
    Ok(())
}

/// Empty the runs an end marker names (zapped or zeroed since an earlier round).
fn empty(pid: Pid, inj: &Injector, runs: &[(u64, u64)]) -> io::Result<()> {
    advise_runs(pid, inj, runs, libc::MADV_DONTNEED)
}

/// `madvise(advice)` on each of `runs`.
fn advise_runs(pid: Pid, inj: &Injector, runs: &[(u64, u64)], advice: i32) -> io::Result<()> {
    for &(start, stop) in runs {
        let args = [start, stop - start, advice as u64, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_madvise, args, "madvise")?;
    }
    Ok(())
}

/// Place one later running round: its pages go over those of earlier rounds, so through
/// memory (UFFDIO_COPY fills only missing pages), inside the first round's `areas`. One
/// thread does: writing into pages already there runs at several GB/s, far above what the
/// link brings. Returns its end marker.
fn place_round<R: Read>(
    mem: &Memory,
    areas: &[&Area],
    frames: &mut FrameReader<R>,
    at_end: &mut bool,
) -> io::Result<EndOfImage> {
    let mut data = Vec::new();
    loop {
        match frames
            .next_frame_into(&mut data)
            .map_err(io::Error::other)?
        {
            FrameHead::Pages { addr } => {
                within(areas, addr, data.len())?;
                mem.write(addr, &data)?;
            }
            FrameHead::Message => return end_marker(&data, at_end),
        }
    }
}

/// Check that `len` bytes of pages at `addr` lie inside one of `areas`.
fn within(areas: &[&Area], addr: u64, len: usize) -> io::Result<()> {
    let stop = addr.saturating_add(len as u64);
    if !areas.iter().any(|a| a.start <= addr && stop <= a.end) {
        return Err(io::Error::other(format!(
            "image pages at {addr:#x} lie outside its areas"
        )));
    }
    Ok(())
}

/// Decode an end marker; note whether it is the stream's last.
fn end_marker(data: &[u8], at_end: &mut bool) -> io::Result<EndOfImage> {
    let end = serde_json::from_slice::<EndOfImage>(data).map_err(io::Error::other)?;
    *at_end = !end.more_rounds;
    Ok(end)
}

/// Run `restore` over an image or the running rounds of one; if it fails before the last end
/// marker (`at_end`), read and drop the rest, up to that marker.
fn to_the_end<R: Read, T>(
    frames: &mut FrameReader<R>,
    restore: impl FnOnce(&mut FrameReader<R>, &mut bool) -> io::Result<T>,
) -> io::Result<T> {
    let mut at_end = false;
    let restored = restore(frames, &mut at_end);
    if restored.is_err() {
        let mut data = Vec::new();
        while !at_end {
            match frames.next_frame_into(&mut data) {
                Ok(FrameHead::Pages { .. }) => {}
                Ok(FrameHead::Message) if end_marker(&data, &mut at_end).is_ok() => {}
                // A broken stream, or a message that ends no round: in step no more.
                _ => break,
            }
        }
    }
    restored
}

/// Empty stopped `pid`, move its vdso block where `areas` has it, map the other areas and fill
/// them from the page frames (none for the file pages of the files in `held`).
fn map_first_round<R: Read>(
    pid: Pid,
    areas: &[Area],
    held: &Held,
    frames: &mut FrameReader<R>,
    at_end: &mut bool,
) -> io::Result<(Injector, EndOfImage)> {
    let mem = Memory::open(pid)?;
    let own = maps::read(pid)?;
    let mut inj = Injector::find(&mem, &own)?;

    release_memory(pid, &inj, &own)?;
    move_vdso_block(pid, &mut inj, &own, areas)?;

    let areas: Vec<&Area> = areas.iter().filter(|a| !a.is_vdso_block()).collect();
    let end = map_and_fill(pid, &inj, &areas, &areas, held, frames, at_end)?;
    Ok((inj, end))
}

/// Map `fresh` (each with its file, see `mapfile`) and fill them from the page frames up to
/// the next end marker, which it returns; pages elsewhere in `areas` go through memory. The
/// process keeps no descriptor of the files, whatever the outcome.
fn map_and_fill<R: Read>(
    pid: Pid,
    inj: &Injector,
    fresh: &[&Area],
    areas: &[&Area],
    held: &Held,
    frames: &mut FrameReader<R>,
    at_end: &mut bool,
) -> io::Result<EndOfImage> {
    let backings = Backings::open(pid, inj, fresh, held)?;
    // Guard regions go in once every area is mapped: the kernel marks an area that has some
    // ("gu" in VmFlags, Linux 6.18), and the mark spreads to any neighbour mapped after it
    // that the kernel merges with it.
    let filled = fresh
        .iter()
        .try_for_each(|area| map_area(pid, inj, area, backings.fd_of(area)))
        .and_then(|()| {
            fresh
                .iter()
                .try_for_each(|area| advise_runs(pid, inj, &area.guards, sys::MADV_GUARD_INSTALL))
        })
        .and_then(|()| fill(pid, inj, fresh, areas, &backings, frames, at_end));
    let closed = backings.close(pid, inj);
    let end = filled?;
    closed.map(|()| end)
}

/// The advice an area takes again after it is mapped (see `Advice`); `GrowsDown` and
/// `Droppable` are kinds of mapping, given to mmap.
fn madvice(advice: Advice) -> Option<i32> {
    match advice {
        Advice::WipeOnFork => Some(libc::MADV_WIPEONFORK),
        Advice::DontFork => Some(libc::MADV_DONTFORK),
        Advice::DontDump => Some(libc::MADV_DONTDUMP),
        Advice::HugePage => Some(libc::MADV_HUGEPAGE),
        Advice::NoHugePage => Some(libc::MADV_NOHUGEPAGE),
        Advice::Mergeable => Some(libc::MADV_MERGEABLE),
        Advice::GrowsDown | Advice::Droppable => None,
    }
}

/// Map `area` at its address, with its protection and advice: the file open as `fd` in the
/// process, or anonymous and empty.
fn map_area(pid: Pid, inj: &Injector, area: &Area, fd: Option<i32>) -> io::Result<()> {
    // Anonymous memory stands in for a file that could not be named: private, since shared
    // anonymous memory (which maps shows as "/dev/zero") could not move again.
    let kind = if area.advice.contains(&Advice::Droppable) {
        libc::MAP_DROPPABLE
    } else if area.shared && fd.is_some() {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let mut flags = kind | libc::MAP_FIXED;
    if area.advice.contains(&Advice::GrowsDown) {
        flags |= libc::MAP_GROWSDOWN;
    }
    let (fd, offset) = match fd {
        Some(fd) => (fd as u64, area.offset),
        None => {
            flags |= libc::MAP_ANONYMOUS;
            (u64::MAX, 0)
        }
    };
    let prot = maps::prot(area) as u64;
    let advice: Vec<i32> = area.advice.iter().filter_map(|&a| madvice(a)).collect();
    // An area that takes advice is mapped inaccessible first, so that the kernel cannot
    // merge it, still plain, into a neighbour of its protection: a neighbour marked as
    // holding guard regions (a kept area, in a last round) would pass its mark on, and the
    // mark stays when the advice splits them again. Advised, then given its protection, it
    // merges only with its like. Not an executable one: a process that denies itself
    // write-execute memory (PR_SET_MDWE) may not make an area executable.
    let exec = prot & libc::PROT_EXEC as u64 != 0;
    let first_prot = if advice.is_empty() || exec { prot } else { 0 };
    let args = [area.start, area.len(), first_prot, flags as u64, fd, offset];
    let what = format!("mmap {:#x}-{:#x}", area.start, area.end);
    inj.call_ok(pid, libc::SYS_mmap, args, &what)?;
    let whole = [(area.start, area.end)];
    for advice in advice {
        advise_runs(pid, inj, &whole, advice)?;
    }
    if first_prot != prot {
        let args = [area.start, area.len(), prot, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_mprotect, args, "mprotect")?;
    }
    Ok(())
}

/// Place the page frames up to the next end marker, which it returns: by UFFDIO_COPY into
/// the anonymous ones of `fresh` (empty areas), through memory elsewhere in `areas`; file
/// content into the copies among `backings`.
fn fill<R: Read>(
    pid: Pid,
    inj: &Injector,
    fresh: &[&Area],
    areas: &[&Area],
    backings: &Backings,
    frames: &mut FrameReader<R>,
    at_end: &mut bool,
) -> io::Result<EndOfImage> {
    let mem = Memory::open(pid)?;
    // A private file mapping cannot be registered for missing pages, nor can a droppable
    // one: their pages go through memory (in a file mapping, that gives the process its own
    // copy of the page).
    let registrable = |a: &&Area| a.file.is_none() && !a.advice.contains(&Advice::Droppable);
    let anonymous: Vec<&Area> = fresh.iter().copied().filter(registrable).collect();
    let filler = Filler::open(pid, inj, &mem, &anonymous)?;
    tracing::debug!(pid, method = ?filler.method(), "filling the areas");
    let mut end = None;
    let filled = filler.fill(|data| {
        loop {
            match frames.next_frame_into(data).map_err(io::Error::other)? {
                FrameHead::Pages { addr } if addr & image::FILE_PAGES != 0 => {
                    backings.place(fresh, addr & !image::FILE_PAGES, data)?;
                }
                FrameHead::Pages { addr } => {
                    within(areas, addr, data.len())?;
                    return Ok(Some(addr));
                }
                FrameHead::Message => {
                    end = Some(end_marker(data, at_end)?);
                    return Ok(None);
                }
            }
        }
    });
    // Closed even after a failure: a shell that stays a shell must not keep the descriptor.
    let finished = filler.finish(pid, inj);
    filled.and(finished)?;
    end.ok_or_else(|| io::Error::other("image ended without its end marker"))
}

/// Restore what is not memory: brk and auxv, dispositions and the rest of the task state, then
/// signal mask, XSAVE area and registers.
fn restore_task(pid: Pid, inj: &Injector, header: &Header) -> io::Result<()> {
    let mem = Memory::open(pid)?;
    let scratch = Scratch::map(
        inj,
        pid,
        4096 + header.auxv.len().next_multiple_of(4096) as u64,
    )?;
    let task = only_task(header)?;
    let result = restore_task_state(pid, inj, &mem, &scratch, header, task);
    scratch.unmap(inj, pid)?;
    result?;

    ptrace::set_sigmask(pid, task.sigmask)?;
    ptrace::set_xstate(pid, &task.xstate)?;
    ptrace::set_regs(pid, &regs_from_image(&task.regs))
}

/// The one task of an image: processes with threads do not move yet (`check_movable`
/// refuses them), so an image that holds another number of tasks is refused.
fn only_task(header: &Header) -> io::Result<&Task> {
    match header.tasks.as_slice() {
        [task] => Ok(task),
        tasks => Err(io::Error::other(format!(
            "image holds {} tasks; this node restores processes of one task only",
            tasks.len()
        ))),
    }
}

/// Empty the address space of stopped `pid` but for the vdso block: unregister its rseq area
/// first, then unmap every other area, a run of them at a time (see `release_runs`).
pub fn release_memory(pid: Pid, inj: &Injector, areas: &[Area]) -> io::Result<()> {
    let rseq = ptrace::get_rseq(pid)?;
    if rseq.rseq_abi_pointer != 0 {
        let args = [
            rseq.rseq_abi_pointer,
            u64::from(rseq.rseq_abi_size),
            sys::RSEQ_FLAG_UNREGISTER,
            u64::from(rseq.signature),
            0,
            0,
        ];
        inj.call_ok(pid, libc::SYS_rseq, args, "unregister rseq")?;
    }
    for (start, end) in release_runs(areas) {
        let args = [start, end - start, 0, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_munmap, args, "munmap")?;
    }
    Ok(())
}

/// The ranges that cover every area but the vdso block and `[vsyscall]` (which no call can
/// unmap), and nothing else mapped: from the first area to the last between two kept ones,
/// gaps included (munmap passes over them). A freshly exec'd `cc1` maps some 50 areas: an
/// injected call each took as long as the rest of its placement at home.
fn release_runs(areas: &[Area]) -> Vec<(u64, u64)> {
    let mut sorted: Vec<&Area> = areas.iter().collect();
    sorted.sort_by_key(|a| a.start);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut open: Option<(u64, u64)> = None;
    for area in sorted {
        if area.is_vdso_block() || area.name == "[vsyscall]" {
            runs.extend(open.take());
        } else {
            let start = open.map_or(area.start, |(start, _)| start);
            open = Some((start, area.end));
        }
    }
    runs.extend(open);
    runs
}

/// Move the vdso block areas of the process to where the image had them, by way of a spot free
/// in both layouts so that no move lands on an area not yet moved.
fn move_vdso_block(pid: Pid, inj: &mut Injector, own: &[Area], image: &[Area]) -> io::Result<()> {
    let ours: Vec<&Area> = own.iter().filter(|a| a.is_vdso_block()).collect();
    let mut plan = Vec::new();
    for area in &ours {
        let target = image
            .iter()
            .find(|a| a.name == area.name)
            .ok_or_else(|| io::Error::other(format!("image has no {} area", area.name)))?;
        if target.len() != area.len() {
            return Err(io::Error::other(format!("{} differs in size", area.name)));
        }
        plan.push((area.start, target.start, area.len()));
    }
    if plan.iter().all(|(from, to, _)| from == to) {
        return Ok(());
    }
    let total: u64 = plan.iter().map(|p| p.2).sum();
    let temp = free_gap(own, image, total)?;
    let mut cursor = temp;
    for step in &mut plan {
        remap(pid, inj, step.0, cursor, step.2)?;
        step.0 = cursor;
        cursor += step.2;
    }
    for (from, to, len) in plan {
        remap(pid, inj, from, to, len)?;
    }
    Ok(())
}

fn remap(pid: Pid, inj: &mut Injector, from: u64, to: u64, len: u64) -> io::Result<()> {
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    inj.call_ok(
        pid,
        libc::SYS_mremap,
        [from, len, len, flags, to, 0],
        "mremap vdso",
    )?;
    if (from..from + len).contains(&inj.syscall_ip) {
        inj.syscall_ip = inj.syscall_ip - from + to;
    }
    Ok(())
}

/// An address range of `len` bytes that no area of either layout touches.
fn free_gap(a: &[Area], b: &[Area], len: u64) -> io::Result<u64> {
    let mut used: Vec<(u64, u64)> = a.iter().chain(b).map(|x| (x.start, x.end)).collect();
    used.sort();
    // Search downward from below the usual mmap base, above the low 4 GiB.
    let mut candidate = 0x7e00_0000_0000u64;
    while candidate > 0x1_0000_0000 {
        if used
            .iter()
            .all(|&(s, e)| candidate + len <= s || candidate >= e)
        {
            return Ok(candidate);
        }
        candidate -= 0x10_0000_0000;
    }
    Err(io::Error::other(
        "no free address range to move the vdso through",
    ))
}

/// Set stopped `pid`'s mm fields to `mm` by an injected `prctl(PR_SET_MM_MAP)`, its auxv to
/// the `(address, length)` given (none: the auxv stays), with the struct laid out at `at`.
pub(crate) fn set_mm_map(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    at: u64,
    mm: &MmLayout,
    auxv: Option<(u64, u32)>,
) -> io::Result<()> {
    let (auxv, auxv_size) = auxv.unwrap_or((0, 0));
    let map = sys::PrctlMmMap {
        start_code: mm.start_code,
        end_code: mm.end_code,
        start_data: mm.start_data,
        end_data: mm.end_data,
        start_brk: mm.start_brk,
        brk: mm.brk,
        start_stack: mm.start_stack,
        arg_start: mm.arg_start,
        arg_end: mm.arg_end,
        env_start: mm.env_start,
        env_end: mm.env_end,
        auxv,
        auxv_size,
        // -1: the exe link stays, and the call needs no privilege.
        exe_fd: u32::MAX,
    };
    // SAFETY: PrctlMmMap is repr(C) plain data; we view its bytes to copy them out.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&map as *const sys::PrctlMmMap).cast::<u8>(),
            std::mem::size_of::<sys::PrctlMmMap>(),
        )
    };
    mem.write(at, bytes)?;
    let args = [
        sys::PR_SET_MM,
        sys::PR_SET_MM_MAP,
        at,
        bytes.len() as u64,
        0,
        0,
    ];
    inj.call_ok(pid, libc::SYS_prctl, args, "prctl(PR_SET_MM_MAP)")
        .map(drop)
}

fn restore_task_state(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    scratch: &Scratch,
    header: &Header,
    task: &Task,
) -> io::Result<()> {
    let auxv_addr = scratch.addr + 4096;
    mem.write(auxv_addr, &header.auxv)?;
    let auxv = (auxv_addr, header.auxv.len() as u32);
    set_mm_map(pid, inj, mem, scratch.addr, &header.mm, Some(auxv))?;

    // The image holds the dispositions that are not the default. A signal the process
    // still catches or ignores (a shell keeps the program's dispositions from before it
    // left, and the program may have reset one away) goes back to SIG_DFL first.
    let image_holds = header
        .sigactions
        .iter()
        .fold(0u64, |mask, a| mask | 1 << (a.sig - 1));
    let stale = not_default(pid)? & !image_holds;
    let default = SigAction {
        sig: 0,
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let resets = (1..=64)
        .filter(|sig: &i32| stale & 1 << (sig - 1) != 0)
        .map(|sig| SigAction { sig, ..default });
    for action in resets.chain(header.sigactions.iter().copied()) {
        let mut raw = Vec::with_capacity(32);
        for word in [action.handler, action.flags, action.restorer, action.mask] {
            raw.extend_from_slice(&word.to_le_bytes());
        }
        mem.write(scratch.addr, &raw)?;
        inj.call_ok(
            pid,
            libc::SYS_rt_sigaction,
            [action.sig as u64, scratch.addr, 0, 8, 0, 0],
            "rt_sigaction",
        )?;
    }
    // Always set the altstack, a disabled one too: the process keeps the one it had (a husk
    // inherits its guest's), which now points into unmapped memory, and an SA_ONSTACK handler
    // would die on it.
    let (sp, flags, size) = task.altstack;
    let mut raw = Vec::with_capacity(24);
    raw.extend_from_slice(&sp.to_le_bytes());
    // SS_ONSTACK is a status the kernel reports, not a flag it accepts.
    raw.extend_from_slice(&(flags & !libc::SS_ONSTACK).to_le_bytes());
    raw.extend_from_slice(&0u32.to_le_bytes());
    raw.extend_from_slice(&size.to_le_bytes());
    mem.write(scratch.addr, &raw)?;
    let args = [scratch.addr, 0, 0, 0, 0, 0];
    inj.call_ok(pid, libc::SYS_sigaltstack, args, "sigaltstack")?;
    let (head, len) = task.robust_list;
    if head != 0 {
        inj.call_ok(
            pid,
            libc::SYS_set_robust_list,
            [head, len, 0, 0, 0, 0],
            "set_robust_list",
        )?;
    }
    // The name ps shows: a husk still has its supervisor's. The kernel copies at most 15
    // bytes and a NUL.
    let mut comm: Vec<u8> = task.comm.bytes().take(15).collect();
    comm.push(0);
    mem.write(scratch.addr, &comm)?;
    let args = [libc::PR_SET_NAME as u64, scratch.addr, 0, 0, 0, 0];
    inj.call_ok(pid, libc::SYS_prctl, args, "prctl(PR_SET_NAME)")?;
    crate::prctl::restore(pid, inj, mem, scratch.addr, &task.prctl)?;
    crate::sched::restore(pid, inj, mem, scratch.addr, &task.sched)?;
    crate::membarrier::restore(pid, inj, header.membarrier)?;
    inj.call_ok(
        pid,
        libc::SYS_set_tid_address,
        [task.tid_address, 0, 0, 0, 0, 0],
        "set_tid_address",
    )?;
    // Last, so that the injected calls above hardly count towards the CPU-time timers.
    for timer in &header.cpu_timers {
        let raw: Vec<u8> = timer
            .itimerval
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        mem.write(scratch.addr, &raw)?;
        let args = [timer.which as u64, scratch.addr, 0, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_setitimer, args, "setitimer")?;
    }
    if let Some((addr, len, sig)) = task.rseq {
        inj.call_ok(
            pid,
            libc::SYS_rseq,
            [addr, u64::from(len), 0, u64::from(sig), 0, 0],
            "rseq",
        )?;
    }
    Ok(())
}

/// The signals whose disposition in `pid` is not SIG_DFL (SigCgt and SigIgn of
/// /proc/PID/status), as a mask (bit n-1 for signal n).
fn not_default(pid: Pid) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigCgt:")
                .or_else(|| l.strip_prefix("SigIgn:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .fold(0, |all, mask| all | mask))
}

/// Read the image header that opens a stream, refusing another format version.
pub fn read_header<R: Read>(frames: &mut FrameReader<R>) -> io::Result<Header> {
    let header: Header = frames.message().map_err(io::Error::other)?;
    if header.version != image::FORMAT_VERSION {
        return Err(io::Error::other(format!(
            "image format {} (this node reads {})",
            header.version,
            image::FORMAT_VERSION
        )));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(start: u64, end: u64, name: &str) -> Area {
        crate::precopy::tests::area(start, end, false, name)
    }

    #[test]
    fn memory_is_released_in_runs_that_pass_over_the_vdso_block_only() {
        let areas = [
            area(0x7000, 0x8000, "[stack]"),
            area(0x1000, 0x2000, "/usr/bin/cc1"),
            area(0x3000, 0x4000, "/usr/bin/cc1"),
            area(0x5000, 0x5800, "[vvar]"),
            area(0x5800, 0x6000, "[vdso]"),
            area(0x6000, 0x7000, ""),
            area(0xffff_ffff_ff60_0000, 0xffff_ffff_ff60_1000, "[vsyscall]"),
        ];
        assert_eq!(release_runs(&areas), [(0x1000, 0x4000), (0x6000, 0x8000)]);
        assert_eq!(release_runs(&areas[3..5]), []);
    }
}
