//! Reading the image of a stopped process and streaming it: header first, then page runs, then
//! the end marker. Nothing touches disk.

use std::io::{self, Write};

use rmosix_image::{self as image, Area, CpuTimer, Header, MmLayout, Registers, SigAction};
use serde::{Deserialize, Serialize};

use rmosix_wire::NotMovable;

use crate::inject::{Injector, Scratch};
use crate::maps;
use crate::mem::{Memory, le_u64};
use crate::precopy;
use crate::ptrace::{self, Pid, Regs};
use crate::sys;
use crate::track::{Tracker, Written};

/// Page data goes out in runs of at most this many bytes (fits a frame).
const RUN_BYTES: usize = 4 << 20;
const PAGE: u64 = 4096;
/// The interval timers that count the process's CPU time and so move with it.
pub const CPU_TIMERS: [i32; 2] = [libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];
const PIECE: usize = 64 << 10;

/// The end-of-image marker.
#[derive(Debug, Serialize, Deserialize)]
pub struct EndOfImage {
    /// Bytes of page data sent.
    pub bytes: u64,
    /// Runs (start, end) that read as zeros now but may still hold the first round's data at
    /// the receiver, in the final round of a pre-copy: the receiver empties them.
    #[serde(default)]
    pub zero: Vec<(u64, u64)>,
}

/// Check what keeps `pid` from moving (threads, shared writable memory, SysV shm, mlock,
/// real-time policy). Works on a running process.
pub fn check_movable(pid: Pid) -> io::Result<Result<(), NotMovable>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let threads = field("Threads:") as u32;
    if threads > 1 {
        return Ok(Err(NotMovable::Threads(threads)));
    }
    // 1: strict mode, 2: filters. A remote never has filters of the program's (installing
    // one sends it home), so the count here is the program's own.
    let seccomp = field("Seccomp:") as u32;
    if seccomp != 0 {
        return Ok(Err(NotMovable::Seccomp(seccomp)));
    }
    if field("VmLck:") > 0 {
        return Ok(Err(NotMovable::Locked));
    }
    let policy = stat_fields(pid)?.get(40).copied().unwrap_or(0);
    if policy == libc::SCHED_FIFO as u64 || policy == libc::SCHED_RR as u64 {
        return Ok(Err(NotMovable::RealTime));
    }
    for area in maps::read(pid)? {
        if area.name.starts_with("/SYSV") {
            return Ok(Err(NotMovable::SysvShm));
        }
        if area.shared && area.write {
            let what = if area.name.is_empty() {
                "(anonymous)".into()
            } else {
                area.name.clone()
            };
            return Ok(Err(NotMovable::SharedWritable(what)));
        }
        if area.name.starts_with("/dev/") {
            return Ok(Err(NotMovable::Device(area.name)));
        }
    }
    Ok(Ok(()))
}

/// Signals pending for the thread or the process (SigPnd, ShdPnd in /proc/PID/status).
pub(crate) fn pending_signals(pid: Pid) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .fold(0, |all, mask| all | mask))
}

/// Numeric fields of /proc/PID/stat after the command name (index 0 is field 3, the state, as 0).
fn stat_fields(pid: Pid) -> io::Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// A process frozen inside a system call shows rax = -ERESTART* and orig_rax = the call. The
/// kernel would restart it on resume in *this* process; in an image we do it by hand: point rip
/// back at the `syscall` instruction and reload rax, so the call runs again wherever the image
/// resumes. A call restarted through restart_syscall (ERESTART_RESTARTBLOCK: nanosleep and
/// friends) cannot carry its restart block along and returns EINTR instead, as after a signal
/// with a handler.
fn rewind_interrupted_call(regs: &mut Regs) {
    if (regs.orig_rax as i64) < 0 {
        return;
    }
    match regs.rax as i64 {
        sys::ERESTARTSYS | sys::ERESTARTNOINTR | sys::ERESTARTNOHAND => {
            regs.rax = regs.orig_rax;
            regs.rip -= 2;
        }
        sys::ERESTART_RESTARTBLOCK => regs.rax = (-libc::EINTR) as u64,
        _ => {}
    }
    regs.orig_rax = u64::MAX;
}

/// The areas of `pid` that an image holds: all but the vsyscall page, which the kernel puts
/// at the same place in every process.
pub fn image_areas(pid: Pid) -> io::Result<Vec<Area>> {
    Ok(maps::read(pid)?
        .into_iter()
        .filter(|a| a.name != "[vsyscall]")
        .collect())
}

/// Registers as the image stores them.
pub fn regs_to_image(regs: &Regs) -> Registers {
    // SAFETY: user_regs_struct is 27 u64 fields, repr(C), no padding.
    let words: [u64; 27] = unsafe { std::mem::transmute(*regs) };
    Registers(words.to_vec())
}

/// Registers from an image.
pub fn regs_from_image(image: &Registers) -> io::Result<Regs> {
    let words: [u64; 27] = image
        .0
        .as_slice()
        .try_into()
        .map_err(|_| io::Error::other("image has a bad register set"))?;
    // SAFETY: as above, every bit pattern is a valid user_regs_struct.
    Ok(unsafe { std::mem::transmute::<[u64; 27], Regs>(words) })
}

/// Read the header of stopped `pid`: registers, signal state, per-task state, mm layout, areas.
/// `skip` names areas that belong to rmosix rather than the program (none at home).
pub fn read_header(
    pid: Pid,
    inj: &Injector,
    facts: &rmosix_image::KernelFacts,
) -> io::Result<Header> {
    let mut regs = ptrace::get_regs(pid)?;
    rewind_interrupted_call(&mut regs);
    let xstate = ptrace::get_xstate(pid)?;
    let sigmask = ptrace::get_sigmask(pid)?;
    let rseq = ptrace::get_rseq(pid)?;
    let robust_list = ptrace::get_robust_list(pid)?;
    let mem = Memory::open(pid)?;

    let scratch = Scratch::map(inj, pid, PAGE)?;
    let result = read_task_state(pid, inj, &mem, &scratch);
    scratch.unmap(inj, pid)?;
    let TaskState {
        sigactions,
        altstack,
        tid_address,
        brk,
        cpu_timers,
    } = result?;

    let stat = stat_fields(pid)?;
    // /proc/PID/stat field numbers (proc(5)) minus 3, since stat_fields starts at field 3.
    let f = |n: usize| stat.get(n - 3).copied().unwrap_or(0);
    let mm = MmLayout {
        start_code: f(26),
        end_code: f(27),
        start_stack: f(28),
        start_data: f(45),
        end_data: f(46),
        start_brk: f(47),
        brk,
        arg_start: f(48),
        arg_end: f(49),
        env_start: f(50),
        env_end: f(51),
    };
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))?;
    let pending_signals = pending_signals(pid)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    let areas = image_areas(pid)?;
    Ok(Header {
        version: image::FORMAT_VERSION,
        facts: facts.clone(),
        regs: regs_to_image(&regs),
        xstate,
        sigmask,
        sigactions,
        altstack,
        rseq: (rseq.rseq_abi_pointer != 0).then_some((
            rseq.rseq_abi_pointer,
            rseq.rseq_abi_size,
            rseq.signature,
        )),
        robust_list,
        tid_address,
        mm,
        auxv,
        areas,
        pending_signals,
        comm: comm.trim_end_matches('\n').to_owned(),
        cpu_timers,
    })
}

/// What injected calls read of a frozen task.
struct TaskState {
    sigactions: Vec<SigAction>,
    altstack: (u64, i32, u64),
    tid_address: u64,
    brk: u64,
    cpu_timers: Vec<CpuTimer>,
}

/// What only the task itself can tell: dispositions, altstack, tid address, brk.
fn read_task_state(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    scratch: &Scratch,
) -> io::Result<TaskState> {
    let mut sigactions = Vec::new();
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        inj.call_ok(
            pid,
            libc::SYS_rt_sigaction,
            [sig as u64, 0, scratch.addr, 8, 0, 0],
            "rt_sigaction",
        )?;
        let [handler, flags, restorer, mask] = words4(mem, scratch.addr)?;
        let action = SigAction {
            sig,
            handler,
            flags,
            restorer,
            mask,
        };
        if action.handler != 0 || action.flags != 0 || action.mask != 0 {
            sigactions.push(action);
        }
    }
    inj.call_ok(
        pid,
        libc::SYS_sigaltstack,
        [0, scratch.addr, 0, 0, 0, 0],
        "sigaltstack",
    )?;
    // stack_t: ss_sp, ss_flags (an int, padded), ss_size.
    let ss = mem.read_words(scratch.addr, 3)?;
    let altstack = (ss[0], ss[1] as u32 as i32, ss[2]);
    inj.call_ok(
        pid,
        libc::SYS_prctl,
        [sys::PR_GET_TID_ADDRESS, scratch.addr, 0, 0, 0, 0],
        "prctl",
    )?;
    let tid_address = mem.read_words(scratch.addr, 1)?[0];
    let brk = inj.call(pid, libc::SYS_brk, [0; 6])? as u64;
    let mut cpu_timers = Vec::new();
    for which in CPU_TIMERS {
        let args = [which as u64, scratch.addr, 0, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_getitimer, args, "getitimer")?;
        cpu_timers.push(CpuTimer {
            which,
            itimerval: words4(mem, scratch.addr)?,
        });
    }
    Ok(TaskState {
        sigactions,
        altstack,
        tid_address,
        brk,
        cpu_timers,
    })
}

/// The four u64 words at `addr` (a k_sigaction, an itimerval).
fn words4(mem: &Memory, addr: u64) -> io::Result<[u64; 4]> {
    let words = mem.read_words(addr, 4)?;
    Ok(words.try_into().expect("4 words"))
}

/// Stream the page contents of `areas` of stopped `pid`, skipping pages that were never
/// touched (anonymous areas, per /proc/PID/pagemap) and pages that are all zero.
pub fn write_pages(pid: Pid, areas: &[Area], out: &mut impl Write) -> io::Result<u64> {
    stream_pages(pid, areas, out, Unreadable::Fail)
}

/// Stream the first round of a pre-copy: the pages of `areas` of running `pid`, then the end
/// marker. The process may unmap an area meanwhile: what cannot be read is skipped, since the
/// final round sends again every area that changed.
pub fn dump_first_round(pid: Pid, areas: &[Area], out: &mut impl Write) -> io::Result<u64> {
    let bytes = stream_pages(pid, areas, out, Unreadable::Skip)?;
    write_end(out, bytes, Vec::new())?;
    Ok(bytes)
}

/// What to do with a page run that cannot be read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unreadable {
    Fail,
    Skip,
}

fn stream_pages(
    pid: Pid,
    areas: &[Area],
    out: &mut impl Write,
    unreadable: Unreadable,
) -> io::Result<u64> {
    let mem = Memory::open(pid)?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; PIECE];
    for area in areas.iter().filter(|a| !a.is_vdso_block()) {
        let mut addr = area.start;
        while addr < area.end {
            let len = (area.end - addr).min(RUN_BYTES as u64);
            let present = present_pages(&pagemap, addr, len, area.inode == 0)?;
            // Read each run of present pages and send its non-zero parts.
            let mut page = 0usize;
            while page < present.len() {
                if !present[page] {
                    page += 1;
                    continue;
                }
                let first = page;
                while page < present.len() && present[page] {
                    page += 1;
                }
                let (start, end) = (addr + first as u64 * PAGE, addr + page as u64 * PAGE);
                sent += send_run(&mem, out, &mut buf, (start, end), None, unreadable)?;
            }
            addr += len;
        }
    }
    Ok(sent)
}

/// Stream the final round of a pre-copied image of stopped `pid`: the header; in the parts of
/// its areas that the receiver keeps from `first` (see `precopy::kept_parts`), the pages
/// written since; all of the other parts; and the end marker, with the runs to empty.
pub fn dump_final_round(
    pid: Pid,
    facts: &rmosix_image::KernelFacts,
    first: &[Area],
    tracker: &Tracker,
    out: &mut impl Write,
) -> io::Result<(Header, u64)> {
    let mem = Memory::open(pid)?;
    let inj = Injector::find(&mem, &maps::read(pid)?)?;
    let header = read_header(pid, &inj, facts)?;
    if precopy::vdso_block(first) != precopy::vdso_block(&header.areas) {
        return Err(io::Error::other("the vdso moved during the first round"));
    }
    image::write_message(out, &header)?;
    let areas: Vec<&Area> = header.areas.iter().filter(|a| !a.is_vdso_block()).collect();
    let kept = precopy::kept_parts(first, &header.areas);
    let (mut sent, mut zero) = (0, Vec::new());
    let mut buf = vec![0u8; PIECE];
    for (area, &kept_end) in areas.iter().zip(&kept) {
        let untracked = || Written {
            start: area.start,
            end: kept_end,
            holds_data: true,
        };
        let runs = tracker.written(area.start, kept_end)?;
        for run in runs.unwrap_or_else(|| vec![untracked()]) {
            if !run.holds_data {
                zero.push((run.start, run.end));
                continue;
            }
            let range = (run.start, run.end);
            let zeros = Some(&mut zero);
            sent += send_run(&mem, out, &mut buf, range, zeros, Unreadable::Fail)?;
        }
        if kept_end < area.end {
            let rest = Area {
                start: kept_end,
                ..(*area).clone()
            };
            sent += write_pages(pid, &[rest], out)?;
        }
    }
    write_end(out, sent, zero)?;
    Ok((header, sent))
}

/// Read `[start, end)` through `buf`, a piece at a time, and send what is not zero; the zero
/// runs go to `zeros`, if given. A piece that cannot be read fails the stream, or is skipped.
fn send_run(
    mem: &Memory,
    out: &mut impl Write,
    buf: &mut [u8],
    (start, end): (u64, u64),
    mut zeros: Option<&mut Vec<(u64, u64)>>,
    unreadable: Unreadable,
) -> io::Result<u64> {
    let (mut sent, mut addr) = (0, start);
    while addr < end {
        let len = (end - addr).min(buf.len() as u64) as usize;
        let piece = &mut buf[..len];
        match mem.read(addr, piece) {
            Ok(()) => sent += send_nonzero(out, addr, piece, zeros.as_deref_mut())?,
            Err(_) if unreadable == Unreadable::Skip => {}
            Err(err) => return Err(err),
        }
        addr += piece.len() as u64;
    }
    Ok(sent)
}

/// Which pages of [addr, addr+len) hold data. For file-backed areas every page may (an untouched
/// page still reads from the file); for anonymous ones only present or swapped pages do.
fn present_pages(
    pagemap: &std::fs::File,
    addr: u64,
    len: u64,
    anonymous: bool,
) -> io::Result<Vec<bool>> {
    use std::os::unix::fs::FileExt;
    let pages = (len / PAGE) as usize;
    if !anonymous {
        return Ok(vec![true; pages]);
    }
    let mut raw = vec![0u8; pages * 8];
    pagemap.read_exact_at(&mut raw, addr / PAGE * 8)?;
    Ok(raw
        .chunks_exact(8)
        .map(|e| le_u64(e, 0) & (3 << 62) != 0)
        .collect())
}

/// Send the non-zero pages of `run` at `addr`; add the runs of zero pages to `zeros`, if
/// given (adjacent runs merged).
fn send_nonzero(
    out: &mut impl Write,
    addr: u64,
    run: &[u8],
    mut zeros: Option<&mut Vec<(u64, u64)>>,
) -> io::Result<u64> {
    let mut sent = 0;
    let pages: Vec<&[u8]> = run.chunks(PAGE as usize).collect();
    let mut i = 0;
    while i < pages.len() {
        if pages[i].iter().all(|&b| b == 0) {
            if let Some(zeros) = zeros.as_deref_mut() {
                let at = addr + i as u64 * PAGE;
                match zeros.last_mut() {
                    Some(last) if last.1 == at => last.1 += PAGE,
                    _ => zeros.push((at, at + PAGE)),
                }
            }
            i += 1;
            continue;
        }
        let first = i;
        while i < pages.len() && !pages[i].iter().all(|&b| b == 0) {
            i += 1;
        }
        let start = first * PAGE as usize;
        let end = (i * PAGE as usize).min(run.len());
        image::write_pages(out, addr + start as u64, &run[start..end])?;
        sent += (end - start) as u64;
    }
    Ok(sent)
}

/// End an image: the marker, then flush.
fn write_end(out: &mut impl Write, bytes: u64, zero: Vec<(u64, u64)>) -> io::Result<()> {
    image::write_message(out, &EndOfImage { bytes, zero })?;
    out.flush()
}

/// Stream a whole image of stopped `pid`.
pub fn dump(
    pid: Pid,
    facts: &rmosix_image::KernelFacts,
    out: &mut impl Write,
) -> io::Result<(Header, u64)> {
    let inj = Injector::find(&Memory::open(pid)?, &maps::read(pid)?)?;
    let header = read_header(pid, &inj, facts)?;
    image::write_message(out, &header)?;
    let bytes = write_pages(pid, &header.areas, out)?;
    write_end(out, bytes, Vec::new())?;
    Ok((header, bytes))
}
