//! Reading the image of a stopped process and streaming it: header first, then page runs, then
//! the end marker; and pre-copy's rounds (see `precopy`). Nothing touches disk.

use std::io::{self, Write};
use std::sync::mpsc;
use std::time::Instant;

use rmosix_image::{
    self as image, Area, CpuTimer, EndOfImage, Header, MmLayout, PrctlValue, Registers, SigAction,
    Task,
};
use rmosix_wire::NotMovable;

use crate::converge::{Converge, Decision, Limits, Round};
use crate::cputime::Carry;
use crate::inject::{Injector, Scratch};
use crate::mem::{Memory, le_u64};
use crate::ptrace::{self, Pid, Regs};
use crate::samefile::Held;
use crate::sys;
use crate::throttle::{Level, Throttle, Unthrottled};
use crate::track::{Tracker, Written};
use crate::{mapfile, maps, precopy, track};

/// Page data goes out in runs of at most this many bytes (fits a frame).
const RUN_BYTES: usize = 4 << 20;
const PAGE: u64 = 4096;
/// The interval timers that count the process's CPU time and so move with it.
pub const CPU_TIMERS: [i32; 2] = [libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];
const PIECE: usize = 64 << 10;

/// Check what keeps `pid` from moving (threads, shared writable memory, SysV shm, mlock,
/// real-time policy, a seccomp policy of its own). `ours`: how many of its seccomp filters
/// rmosix installed itself (home's CPU-time filter, see `cputime`). Works on a running
/// process.
pub fn check_movable(pid: Pid, ours: u32) -> io::Result<Result<(), NotMovable>> {
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
    // one sends it home), so the filters here are the program's own, but for ours.
    let seccomp = field("Seccomp:") as u32;
    let only_ours = seccomp == 2 && field("Seccomp_filters:") <= u64::from(ours);
    if seccomp != 0 && !only_ours {
        return Ok(Err(NotMovable::Seccomp(seccomp)));
    }
    if field("VmLck:") > 0 {
        return Ok(Err(NotMovable::Locked));
    }
    let policy = stat_fields(pid)?.get(40).copied().unwrap_or(0);
    if policy == libc::SCHED_FIFO as u64 || policy == libc::SCHED_RR as u64 {
        return Ok(Err(NotMovable::RealTime));
    }
    for mapped in maps::read_smaps(pid)? {
        if let Some(why) = not_movable_area(&mapped) {
            return Ok(Err(why));
        }
    }
    Ok(Ok(()))
}

/// Backings a copy of the pages cannot stand in for, by the name maps gives them: sockets
/// (a packet socket's rings), anonymous inodes (io_uring's rings, perf buffers) and DMA
/// buffers.
const KERNEL_BACKED: [&str; 3] = ["socket:", "anon_inode:", "/dmabuf:"];

/// Why one area keeps its process from moving, if it does.
fn not_movable_area(mapped: &maps::Mapped) -> Option<NotMovable> {
    let area = &mapped.area;
    if area.is_vdso_block() || area.name == "[vsyscall]" {
        return None;
    }
    let name = || match area.name.as_str() {
        "" => "(anonymous)".to_owned(),
        name => name.to_owned(),
    };
    if area.name.starts_with("/SYSV") {
        return Some(NotMovable::SysvShm);
    }
    // VM_IO, VM_PFNMAP, VM_MIXEDMAP: pages a driver put there, not memory of the process.
    let raw = ["io", "pf", "mm"].into_iter().find(|code| mapped.has(code));
    if KERNEL_BACKED.iter().any(|p| area.name.starts_with(p)) || raw.is_some() {
        return Some(NotMovable::KernelMapping(name()));
    }
    // Shared anonymous memory shows as "/dev/zero (deleted)": shared writable memory first.
    if area.shared && area.write {
        return Some(NotMovable::SharedWritable(name()));
    }
    if area.name.starts_with("/dev/") {
        return Some(NotMovable::Device(area.name.clone()));
    }
    None
}

/// Numeric fields of /proc/PID/stat after the command name (index 0 is field 3, the state, as 0).
pub(crate) fn stat_fields(pid: Pid) -> io::Result<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// The mm layout of `pid` as /proc/PID/stat shows it, with `brk` (which it does not show).
pub(crate) fn mm_layout(pid: Pid, brk: u64) -> io::Result<MmLayout> {
    let stat = stat_fields(pid)?;
    // /proc/PID/stat field numbers (proc(5)) minus 3, since stat_fields starts at field 3.
    let f = |n: usize| stat.get(n - 3).copied().unwrap_or(0);
    Ok(MmLayout {
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
    })
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
/// at the same place in every process. Each with its advice, its guard regions and the file
/// it maps (see `mapfile`).
pub fn image_areas(pid: Pid) -> io::Result<Vec<Area>> {
    let mut areas = Vec::new();
    for mapped in maps::read_smaps(pid)? {
        let mut area = mapped.area;
        if area.name == "[vsyscall]" {
            continue;
        }
        // VmFlags shows "gu" where guard regions are (Linux 6.18): only those are scanned.
        if mapped.flags.iter().any(|f| f == "gu") {
            area.guards = track::guard_runs(pid, area.start, area.end)?;
        }
        mapfile::identify(pid, &mut area);
        areas.push(area);
    }
    Ok(areas)
}

/// A failure to read the process's memory, as opposed to one to send what was read: the
/// move fails on this node, and the link is fine.
#[derive(Debug, thiserror::Error)]
#[error("cannot read its memory at {addr:#x} (+{len:#x}): {err}")]
pub struct Unread {
    addr: u64,
    len: usize,
    err: io::Error,
}

/// The memory read that `err` reports, if it is one.
pub fn unread(err: &io::Error) -> Option<&Unread> {
    err.get_ref()?.downcast_ref::<Unread>()
}

/// Copy the fields named between two register structs of the same field names.
macro_rules! copy_regs {
    ($from:expr => $to:ident) => {
        $to {
            r15: $from.r15,
            r14: $from.r14,
            r13: $from.r13,
            r12: $from.r12,
            rbp: $from.rbp,
            rbx: $from.rbx,
            r11: $from.r11,
            r10: $from.r10,
            r9: $from.r9,
            r8: $from.r8,
            rax: $from.rax,
            rcx: $from.rcx,
            rdx: $from.rdx,
            rsi: $from.rsi,
            rdi: $from.rdi,
            orig_rax: $from.orig_rax,
            rip: $from.rip,
            cs: $from.cs,
            eflags: $from.eflags,
            rsp: $from.rsp,
            ss: $from.ss,
            fs_base: $from.fs_base,
            gs_base: $from.gs_base,
            ds: $from.ds,
            es: $from.es,
            fs: $from.fs,
            gs: $from.gs,
        }
    };
}

/// Registers as the image stores them: field by field, so neither side depends on the
/// other's layout.
pub fn regs_to_image(regs: &Regs) -> Registers {
    copy_regs!(regs => Registers)
}

/// Registers from an image.
pub fn regs_from_image(image: &Registers) -> Regs {
    copy_regs!(image => Regs)
}

/// Read the header of stopped `pid`: registers, signal state, per-task state, mm layout, areas.
/// `at_exec`: it has been stopped since its exec event, which came after the kernel reset
/// its dispositions (see [`Dispositions`]).
pub fn read_header(
    pid: Pid,
    inj: &Injector,
    facts: &rmosix_image::KernelFacts,
    cpu: &Carry,
    at_exec: bool,
) -> io::Result<Header> {
    let mut regs = ptrace::get_regs(pid)?;
    rewind_interrupted_call(&mut regs);
    let xstate = ptrace::get_xstate(pid)?;
    let sigmask = ptrace::get_sigmask(pid)?;
    let rseq = ptrace::get_rseq(pid)?;
    let robust_list = ptrace::get_robust_list(pid)?;
    let mem = Memory::open(pid)?;

    let scratch = Scratch::map(inj, pid, PAGE)?;
    let dispositions = match at_exec {
        true => Dispositions::ResetByExec,
        false => Dispositions::Asked,
    };
    let result = read_task_state(pid, inj, &mem, &scratch, dispositions);
    scratch.unmap(inj, pid)?;
    let TaskState {
        sigactions,
        altstack,
        tid_address,
        brk,
        cpu_timers,
        prctl,
    } = result?;

    let mm = mm_layout(pid, brk)?;
    let auxv = std::fs::read(format!("/proc/{pid}/auxv"))?;
    let (pending, shared_pending) = crate::signals::pending_apart(pid)?;
    let membarrier = crate::membarrier::read(pid, inj)?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
    let areas = image_areas(pid)?;
    let task = Task {
        regs: regs_to_image(&regs),
        xstate,
        sigmask,
        altstack,
        rseq: (rseq.rseq_abi_pointer != 0).then_some((
            rseq.rseq_abi_pointer,
            rseq.rseq_abi_size,
            rseq.signature,
        )),
        robust_list,
        tid_address,
        pending,
        comm: comm.trim_end_matches('\n').to_owned(),
        prctl,
        sched: crate::sched::read(pid)?,
    };
    Ok(Header {
        version: image::FORMAT_VERSION,
        facts: facts.clone(),
        mm,
        auxv,
        areas,
        sigactions,
        cpu_timers,
        limits: crate::limits::read(pid),
        cpu: cpu.now(pid)?,
        shared_pending,
        membarrier,
        tasks: vec![task],
        local_files: match cpu {
            Carry::Remote { system_files, .. } => crate::dfsa::list(pid, system_files)?,
            Carry::Home { .. } => Vec::new(),
        },
    })
}

/// What injected calls read of a frozen task.
struct TaskState {
    sigactions: Vec<SigAction>,
    altstack: (u64, i32, u64),
    tid_address: u64,
    brk: u64,
    cpu_timers: Vec<CpuTimer>,
    prctl: Vec<PrctlValue>,
}

/// How the dispositions of a task are read.
#[derive(Clone, Copy)]
enum Dispositions {
    /// One injected `rt_sigaction` a signal: only the task can tell its flags and masks.
    Asked,
    /// From its ignored signals in /proc/PID/status: an exec leaves every disposition
    /// SIG_IGN or SIG_DFL with no flags, mask or restorer (`flush_signal_handlers`), and a
    /// task stopped since its exec event has not changed one. Placing a fresh `cc1` took
    /// 62 injected calls for this, as many as the rest of its move at home.
    ResetByExec,
}

/// What only the task itself can tell: dispositions, altstack, tid address, brk, the
/// settings prctl reads.
fn read_task_state(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    scratch: &Scratch,
    dispositions: Dispositions,
) -> io::Result<TaskState> {
    let sigactions = match dispositions {
        Dispositions::ResetByExec => {
            let masks = crate::signals::status_masks(pid)?;
            // A handler shows the task ran code of its own since: asked, then.
            match masks.caught {
                0 => ignored_after_exec(masks.ignored),
                _ => asked_dispositions(pid, inj, mem, scratch)?,
            }
        }
        Dispositions::Asked => asked_dispositions(pid, inj, mem, scratch)?,
    };
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
    let prctl = crate::prctl::read(pid, inj, mem, scratch.addr)?;
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
        prctl,
    })
}

/// The dispositions of stopped `pid` that are not the default with no flags or mask, each
/// read by an injected `rt_sigaction`.
fn asked_dispositions(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    scratch: &Scratch,
) -> io::Result<Vec<SigAction>> {
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
    Ok(sigactions)
}

/// The dispositions of a task whose exec reset them, which ignores the signals of mask
/// `ignored` (bit n-1: signal n): SIG_IGN for those, the default for the others.
fn ignored_after_exec(ignored: u64) -> Vec<SigAction> {
    (1..=64)
        .filter(|&sig| ignored & (1 << (sig - 1)) != 0)
        .map(|sig| SigAction {
            sig,
            handler: libc::SIG_IGN as u64,
            flags: 0,
            restorer: 0,
            mask: 0,
        })
        .collect()
}

/// The four u64 words at `addr` (a k_sigaction, an itimerval).
fn words4(mem: &Memory, addr: u64) -> io::Result<[u64; 4]> {
    let words = mem.read_words(addr, 4)?;
    Ok(words.try_into().expect("4 words"))
}

/// In the stop that arms tracking of stopped `pid`, registered for `areas`: note the pages of
/// its file mappings that are its own, then protect the file mappings (see
/// [`Tracker::protect_files`]). Protected in the stop, no write falls between the note and
/// the protection; the rounds' [`page_kinds`] then tell a marker from an own page.
pub fn protect_file_mappings(pid: Pid, areas: &[Area], tracker: &Tracker) -> io::Result<()> {
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut own: Vec<(u64, u64)> = Vec::new();
    for area in areas
        .iter()
        .filter(|a| a.file.is_some() && !a.is_vdso_block())
    {
        let mut addr = area.start;
        while addr < area.end {
            let len = (area.end - addr).min(RUN_BYTES as u64);
            let kinds = page_kinds(&pagemap, area, (addr, len), None)?;
            for (i, kind) in kinds.into_iter().enumerate() {
                let at = addr + i as u64 * PAGE;
                match own.last_mut() {
                    _ if kind != PageKind::Own => {}
                    Some((_, end)) if *end == at => *end += PAGE,
                    _ => own.push((at, at + PAGE)),
                }
            }
            addr += len;
        }
    }
    tracker.protect_files(areas, own);
    Ok(())
}

/// Stream the page contents of `areas` of stopped `pid`, skipping pages that were never
/// touched (anonymous areas, per /proc/PID/pagemap) and pages that are all zero.
pub fn write_pages(pid: Pid, areas: &[Area], out: &mut impl Write) -> io::Result<u64> {
    let mem = Memory::open(pid)?;
    let pages = (areas, &Held::default(), None);
    stream_pages(pid, &mem, pages, out, Unreadable::Fail, &mut Unthrottled)
}

/// Stream pre-copy's running rounds of running `pid` (see `precopy`): every page of `areas`
/// (which the receiver maps), then, round after round, the pages written since the round
/// before, found and protected again by `tracker`, until the policy (`converge`) says to
/// freeze. Each round ends with an end marker; the last one's says that no running round
/// follows. What the last scan found is left to the final round (see [`Tracker::owe`]).
/// The file pages of the files in `held` stay here: the receiver maps its own (see
/// `samefile`). Returns the page bytes sent.
///
/// The rounds stream on a helper thread, and this thread serves `throttle` meanwhile (see
/// [`Throttle`]), so that a duty cycle run here keeps time while the rounds wait on the link.
/// The level last set stays in force when this returns, however it returns.
pub fn dump_first_round(
    pid: Pid,
    areas: &[Area],
    held: &Held,
    tracker: &Tracker,
    throttle: &mut dyn Throttle,
    out: &mut (impl Write + Send),
) -> io::Result<u64> {
    let (levels, wanted) = mpsc::channel();
    let mut asked = Asked {
        levels,
        can_slow: throttle.can_slow(),
    };
    std::thread::scope(|scope| {
        let sending = (areas, held, tracker);
        let rounds =
            scope.spawn(move || send_rounds(pid, sending, &mut asked, Limits::default(), out));
        let served = serve(throttle, &wanted);
        let sent = rounds.join().expect("the rounds' thread panicked");
        // An error of the rounds explains why the throttle failed too (the process ended).
        sent.and_then(|sent| served.map(|()| sent))
    })
}

/// What the rounds' thread asks of the throttle: each level, passed on to the caller's
/// thread.
struct Asked {
    levels: mpsc::Sender<Level>,
    can_slow: bool,
}

impl Throttle for Asked {
    fn can_slow(&self) -> bool {
        self.can_slow
    }
    fn set(&mut self, level: Level) -> io::Result<()> {
        // The serving thread goes until the rounds end, when this sender goes too.
        let _ = self.levels.send(level);
        Ok(())
    }
}

/// Serve `throttle` with the levels `wanted` brings, and its ticks when it wants them, until
/// the rounds end. After a failure it only waits for their end.
fn serve(throttle: &mut dyn Throttle, wanted: &mpsc::Receiver<Level>) -> io::Result<()> {
    let mut failed = None;
    loop {
        let next = match failed {
            None => throttle.next_tick(),
            Some(_) => None,
        };
        let got = match next {
            Some(wait) => wanted.recv_timeout(wait),
            None => wanted
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        let done = match got {
            Ok(level) => throttle.set(level),
            Err(mpsc::RecvTimeoutError::Timeout) => throttle.tick(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return failed.map_or(Ok(()), Err);
            }
        };
        if let (Err(err), None) = (done, &failed) {
            failed = Some(err);
        }
    }
}

/// [`dump_first_round`] within `limits`, on the calling thread: `throttle` gets the levels,
/// and a tick between pieces of work.
fn send_rounds(
    pid: Pid,
    (areas, held, tracker): (&[Area], &Held, &Tracker),
    throttle: &mut dyn Throttle,
    limits: Limits,
    out: &mut impl Write,
) -> io::Result<u64> {
    let mem = Memory::open(pid)?;
    let mut policy = Converge::new(limits, throttle.can_slow());
    // The caller protected the areas just before: writes since count for the second round.
    let mut started = Instant::now();
    let own = tracker.own_in_files();
    let pages = (areas, held, own.as_deref());
    let mut sent = stream_pages(pid, &mem, pages, out, Unreadable::Skip, throttle)?;
    let (mut total, mut zero) = (sent, Vec::new());
    loop {
        let pending = collect_round(pid, areas, tracker, throttle)?;
        // What the next scan finds is written from here on.
        let scanned = Instant::now();
        let round = Round {
            sent,
            took: scanned - started,
            written: pending.bytes(),
        };
        let decision = policy.after(round);
        let more = matches!(decision, Decision::Another(_));
        write_end(out, sent, std::mem::take(&mut zero), more)?;
        match decision {
            Decision::Another(level) => {
                throttle.set(level)?;
                started = scanned;
                sent = send_round(&mem, tracker, pending, &mut zero, out, throttle)?;
                total += sent;
            }
            Decision::Freeze(why) => {
                // Protected again by the scan, so the final round's scan will not report
                // them: it sends them on our word. Parts not tracked it finds by itself.
                for run in pending.runs.iter().chain(&pending.file_runs) {
                    tracker.owe((run.start, run.end));
                }
                tracing::info!(
                    pid,
                    rounds = policy.rounds(),
                    bytes = total,
                    left = round.written,
                    throttle = policy.level().stopped_percent(),
                    rate = policy.rate().unwrap_or(0.0) as u64,
                    ?why,
                    "running rounds sent"
                );
                return Ok(total);
            }
        }
    }
}

/// What a running round's scan found for the next round to send.
#[derive(Default)]
struct Pending {
    /// Runs written since the last scan, in the parts the receiver keeps; protected again.
    runs: Vec<Written>,
    /// The same, in file mappings (see [`Sending::Written`]).
    file_runs: Vec<Written>,
    /// Bytes of kept parts that are not tracked (mapped anew since the first round): the
    /// final round sends them whole. They are not registered for tracking here, while the
    /// process runs: see [`Tracker::register`].
    untracked: u64,
}

impl Pending {
    /// Page bytes to send, as far as a scan can tell (zapped runs cost nothing).
    fn bytes(&self) -> u64 {
        let runs = self.runs.iter().chain(&self.file_runs);
        let runs = runs.filter(|r| r.holds_data);
        runs.map(|r| r.end - r.start).sum::<u64>() + self.untracked
    }
}

/// Scan what running `pid` wrote since the last scan, in the parts of its areas that the
/// receiver keeps from `first` (the rule of `precopy::kept_parts`, applied to the areas now).
fn collect_round(
    pid: Pid,
    first: &[Area],
    tracker: &Tracker,
    throttle: &mut dyn Throttle,
) -> io::Result<Pending> {
    let now = image_areas(pid)?;
    let kept = precopy::kept_parts(first, &now);
    let mut pending = Pending::default();
    let areas = now.iter().filter(|a| !a.is_vdso_block());
    for (area, kept_end) in areas.zip(kept) {
        if kept_end > area.start && !only_the_file(area) {
            let found = tracker.collect(area.start, kept_end)?;
            match found.map(|runs| outside_guards(runs, &area.guards)) {
                Some(runs) if area.file.is_some() => pending.file_runs.extend(runs),
                Some(runs) => pending.runs.extend(runs),
                None => pending.untracked += kept_end - area.start,
            }
        }
        throttle.tick()?;
    }
    Ok(pending)
}

/// Send what a scan found: the written runs (zapped ones go to `zero`). Parts not tracked
/// wait for the final round.
fn send_round(
    mem: &Memory,
    tracker: &Tracker,
    pending: Pending,
    zero: &mut Vec<(u64, u64)>,
    out: &mut impl Write,
    throttle: &mut dyn Throttle,
) -> io::Result<u64> {
    let mut sent = 0;
    let mut buf = vec![0u8; PIECE];
    let owe = Unreadable::Owe(tracker);
    let file_runs = pending.file_runs.into_iter().map(|r| (r, true));
    for (run, in_file) in pending
        .runs
        .into_iter()
        .map(|r| (r, false))
        .chain(file_runs)
    {
        if !run.holds_data {
            zero.push((run.start, run.end));
            continue;
        }
        let sending = match in_file {
            true => Sending::Written,
            false => Sending::Anonymous(Some(&mut *zero)),
        };
        let range = (run.start, run.end);
        sent += send_run(mem, out, &mut buf, range, sending, owe, throttle)?;
    }
    Ok(sent)
}

/// How the pages of a run go out.
enum Sending<'z> {
    /// Anonymous memory: pages that are all zero are left out (the receiver's are zero), and
    /// listed in the vector, if given.
    Anonymous(Option<&'z mut Vec<(u64, u64)>>),
    /// Pages the process wrote in a file mapping: all of them, zeros too, since the file
    /// would show through where nothing lands.
    Written,
    /// Pages of a file mapping that the process never wrote: the file's own content, tagged
    /// [`image::FILE_PAGES`]; zero pages are left out (a copy of the file is zero there).
    FileContent,
}

/// Whether `area` holds the file's pages only: a shared mapping of a known file (read-only,
/// since shared writable ones do not move) has no page of the process's own, so the part
/// the receiver keeps from the first round needs nothing more.
fn only_the_file(area: &Area) -> bool {
    area.shared && area.file.is_some()
}

/// `runs` but for the pages of `guards` (sorted, apart). A scan finds a guard page written:
/// its marker replaced the page, and carries no write protection.
fn outside_guards(runs: Vec<Written>, guards: &[(u64, u64)]) -> Vec<Written> {
    let mut left = Vec::with_capacity(runs.len());
    for mut run in runs {
        let (first, last) = (run.start, run.end);
        for &(start, end) in guards.iter().filter(|g| g.0 < last && g.1 > first) {
            if start > run.start {
                left.push(Written { end: start, ..run });
            }
            run.start = end;
        }
        if run.start < run.end {
            left.push(run);
        }
    }
    left
}

/// What to do with a piece of a run that cannot be read.
#[derive(Clone, Copy)]
enum Unreadable<'t> {
    /// Fail the stream: the process is frozen, and all of it must read.
    Fail,
    /// Skip it: the first round of a running process, which may unmap an area meanwhile. The
    /// final round sends again every area that changed.
    Skip,
    /// Skip it, and owe it to the final round: a later round's pages were protected again by
    /// the scan that found them, so no scan reports them again.
    Owe(&'t Tracker),
}

/// Send the pages of `areas` that hold something (see [`page_kinds`], which takes
/// `own_at_protect`), but the file pages of the files in `held`.
fn stream_pages(
    pid: Pid,
    mem: &Memory,
    (areas, held, own_at_protect): (&[Area], &Held, Option<&Runs>),
    out: &mut impl Write,
    unreadable: Unreadable,
    throttle: &mut dyn Throttle,
) -> io::Result<u64> {
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut sent = 0u64;
    let mut buf = vec![0u8; PIECE];
    for area in areas.iter().filter(|a| !a.is_vdso_block()) {
        let mut addr = area.start;
        while addr < area.end {
            let len = (area.end - addr).min(RUN_BYTES as u64);
            let kinds = page_kinds(&pagemap, area, (addr, len), own_at_protect)?;
            // Read each run of pages of one kind that holds data, and send it.
            let mut page = 0usize;
            while page < kinds.len() {
                let kind = kinds[page];
                let first = page;
                while page < kinds.len() && kinds[page] == kind {
                    page += 1;
                }
                let sending = match kind {
                    PageKind::Empty => continue,
                    PageKind::Own if area.file.is_some() => Sending::Written,
                    PageKind::Own => Sending::Anonymous(None),
                    PageKind::File if held.holds(area) => continue,
                    PageKind::File => Sending::FileContent,
                };
                let range = (addr + first as u64 * PAGE, addr + page as u64 * PAGE);
                sent += send_run(mem, out, &mut buf, range, sending, unreadable, throttle)?;
            }
            addr += len;
        }
    }
    Ok(sent)
}

/// Stream the final round of a pre-copied image of stopped `pid`: the header; in the parts of
/// its areas that the receiver keeps from `first` (see `precopy::kept_parts`), the pages
/// written since the last running round and those the rounds owe; all of the other parts;
/// and the end marker, with the runs to empty. The file pages of the files in `held` stay
/// here, as in the running rounds.
/// `at_exec`: as for [`read_header`].
pub fn dump_final_round(
    pid: Pid,
    facts: &rmosix_image::KernelFacts,
    cpu: &Carry,
    (first, held): (&[Area], &Held),
    tracker: &Tracker,
    (out, at_exec): (&mut impl Write, bool),
) -> io::Result<(Header, u64)> {
    let mem = Memory::open(pid)?;
    let inj = Injector::find(&mem, &maps::read(pid)?)?;
    let header = read_header(pid, &inj, facts, cpu, at_exec)?;
    if precopy::vdso_block(first) != precopy::vdso_block(&header.areas) {
        return Err(io::Error::other("the vdso moved during the first round"));
    }
    image::write_message(out, &header)?;
    let areas: Vec<&Area> = header.areas.iter().filter(|a| !a.is_vdso_block()).collect();
    let kept = precopy::kept_parts(first, &header.areas);
    let owed = tracker.owed();
    let own = tracker.own_in_files();
    let (mut sent, mut zero) = (0, Vec::new());
    let mut buf = vec![0u8; PIECE];
    let unthrottled = &mut Unthrottled;
    for (area, &kept_end) in areas.iter().zip(&kept) {
        let kept_part = (area.start, kept_end);
        let written = match only_the_file(area) {
            true => Some(Vec::new()),
            false => tracker.written(area.start, kept_end)?,
        };
        let runs = match written {
            Some(runs) => precopy::with_owed(runs, &owed, kept_part),
            None => vec![Written {
                start: area.start,
                end: kept_end,
                holds_data: true,
            }],
        };
        for run in outside_guards(runs, &area.guards) {
            if !run.holds_data {
                zero.push((run.start, run.end));
                continue;
            }
            let sending = match area.file {
                Some(_) => Sending::Written,
                None => Sending::Anonymous(Some(&mut zero)),
            };
            let (range, fail) = ((run.start, run.end), Unreadable::Fail);
            sent += send_run(&mem, out, &mut buf, range, sending, fail, unthrottled)?;
        }
        if kept_end < area.end {
            let rest = area.from(kept_end);
            let fail = Unreadable::Fail;
            let pages = (&[rest][..], held, own.as_deref());
            sent += stream_pages(pid, &mem, pages, out, fail, unthrottled)?;
        }
    }
    write_end(out, sent, zero, false)?;
    Ok((header, sent))
}

/// Read `[start, end)` through `buf`, a piece at a time, and send it as `sending` says. A
/// piece that cannot be read is dealt with as `unreadable` says. The throttle ticks after
/// each piece.
fn send_run(
    mem: &Memory,
    out: &mut impl Write,
    buf: &mut [u8],
    (start, end): (u64, u64),
    mut sending: Sending,
    unreadable: Unreadable,
    throttle: &mut dyn Throttle,
) -> io::Result<u64> {
    let (mut sent, mut addr) = (0, start);
    while addr < end {
        let len = (end - addr).min(buf.len() as u64) as usize;
        let piece = &mut buf[..len];
        match (mem.read(addr, piece), unreadable) {
            (Ok(()), _) => sent += send_piece(out, addr, piece, &mut sending)?,
            (Err(err), Unreadable::Fail) => {
                return Err(io::Error::other(Unread { addr, len, err }));
            }
            (Err(_), Unreadable::Skip) => {}
            (Err(_), Unreadable::Owe(tracker)) => tracker.owe((addr, addr + len as u64)),
        }
        addr += len as u64;
        throttle.tick()?;
    }
    Ok(sent)
}

/// What a page of an area holds, for the first round and the new parts of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageKind {
    /// Nothing to send: never touched (anonymous memory), a guard region, or past the end
    /// of the file a file mapping maps.
    Empty,
    /// The process's own page: anonymous memory, or written in a file mapping.
    Own,
    /// A page of a file mapping that the process never wrote: it reads the file.
    File,
}

/// Runs of pages, [start, end) each, sorted and apart.
type Runs = [(u64, u64)];

/// Whether `at` lies in one of `runs`.
fn in_runs(runs: &Runs, at: u64) -> bool {
    let after = runs.partition_point(|r| r.0 <= at);
    after > 0 && at < runs[after - 1].1
}

/// /proc/PID/pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const PM_GUARD: u64 = 1 << 58;
const PM_UFFD_WP: u64 = 1 << 57;

/// What each page of [addr, addr+len) in `area` holds, by /proc/PID/pagemap. An area whose
/// file is not known is read whole, as anonymous memory, but for its guard regions.
///
/// Once tracking protects a file mapping, a page absent there carries a marker that
/// pagemap shows as swapped (with the uffd-wp bit), as it shows an own page swapped out:
/// `own_at_protect`, the runs that were the process's own when the file mappings were
/// protected (see [`protect_file_mappings`]), tells them apart. A page written since has
/// lost the bit.
fn page_kinds(
    pagemap: &std::fs::File,
    area: &Area,
    (addr, len): (u64, u64),
    own_at_protect: Option<&Runs>,
) -> io::Result<Vec<PageKind>> {
    use std::os::unix::fs::FileExt;
    let pages = (len / PAGE) as usize;
    let mut raw = vec![0u8; pages * 8];
    pagemap
        .read_exact_at(&mut raw, addr / PAGE * 8)
        .map_err(|err| match err.kind() {
            // A pagemap reads nothing once the address space it was opened on is gone: the
            // process exec'd (during a running round) or ended.
            io::ErrorKind::UnexpectedEof => {
                io::Error::other("its address space is gone: it exec'd or ended")
            }
            _ => err,
        })?;
    // Pages from here on lie past the end of the file (reading one faults with SIGBUS).
    let past_end = area.file.as_ref().map(|file| {
        let from_file_start = file.size.next_multiple_of(PAGE).saturating_sub(area.offset);
        area.start.saturating_add(from_file_start)
    });
    Ok(raw
        .chunks_exact(8)
        .enumerate()
        .map(|(i, entry)| {
            let entry = le_u64(entry, 0);
            let at = addr + i as u64 * PAGE;
            let marker = entry & (PM_SWAPPED | PM_UFFD_WP | PM_FILE) == PM_SWAPPED | PM_UFFD_WP
                && own_at_protect.is_some_and(|own| !in_runs(own, at));
            let own = !marker
                && (entry & PM_SWAPPED != 0 || entry & (PM_PRESENT | PM_FILE) == PM_PRESENT);
            match past_end {
                _ if entry & PM_GUARD != 0 => PageKind::Empty,
                Some(end) if at >= end => PageKind::Empty,
                Some(_) if own => PageKind::Own,
                Some(_) => PageKind::File,
                None if own || area.inode != 0 => PageKind::Own,
                None => PageKind::Empty,
            }
        })
        .collect())
}

/// Send one piece read at `addr` as `sending` says; returns the bytes sent.
fn send_piece(
    out: &mut impl Write,
    addr: u64,
    piece: &[u8],
    sending: &mut Sending,
) -> io::Result<u64> {
    match sending {
        Sending::Written => {
            image::write_pages(out, addr, piece)?;
            Ok(piece.len() as u64)
        }
        Sending::FileContent => send_nonzero(out, addr | image::FILE_PAGES, piece, None),
        Sending::Anonymous(zeros) => send_nonzero(out, addr, piece, zeros.as_deref_mut()),
    }
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

/// End a stream of pages: the marker, then flush. `more_rounds`: a running round follows.
fn write_end(
    out: &mut impl Write,
    bytes: u64,
    zero: Vec<(u64, u64)>,
    more_rounds: bool,
) -> io::Result<()> {
    let end = EndOfImage {
        bytes,
        zero,
        more_rounds,
    };
    image::write_message(out, &end)?;
    out.flush()
}

/// Stream a whole image of stopped `pid`. `at_exec`: as for [`read_header`].
pub fn dump(
    pid: Pid,
    facts: &rmosix_image::KernelFacts,
    cpu: &Carry,
    out: &mut impl Write,
    at_exec: bool,
) -> io::Result<(Header, u64)> {
    let inj = Injector::find(&Memory::open(pid)?, &maps::read(pid)?)?;
    let header = read_header(pid, &inj, facts, cpu, at_exec)?;
    image::write_message(out, &header)?;
    let bytes = write_pages(pid, &header.areas, out)?;
    write_end(out, bytes, Vec::new(), false)?;
    Ok((header, bytes))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;
    use crate::restore;
    use crate::testing::{Husk, PAGE as TEST_PAGE};

    /// Stands in for a process that runs during the rounds: at each tick it writes the next
    /// page of the area with a new value, and zaps every seventh page it comes to, as long as
    /// its budget lasts: `PER_ROUND` writes in the first round and in each of the next three.
    struct Writer<'h> {
        husk: &'h Husk,
        budget: u64,
        done: u64,
        levels: Vec<Level>,
    }

    const PER_ROUND: u64 = 20;

    impl Throttle for Writer<'_> {
        fn set(&mut self, level: Level) -> io::Result<()> {
            self.levels.push(level);
            if self.levels.len() <= 3 {
                self.budget += PER_ROUND;
            }
            Ok(())
        }

        fn tick(&mut self) -> io::Result<()> {
            if self.budget == 0 {
                return Ok(());
            }
            self.budget -= 1;
            self.done += 1;
            let pages = self.husk.area.len() / TEST_PAGE;
            let at = self.husk.area.start + (self.done * 5 % pages) * TEST_PAGE;
            if self.done.is_multiple_of(7) {
                let args = [at, TEST_PAGE, libc::MADV_DONTNEED as u64, 0, 0, 0];
                self.husk
                    .inj
                    .call_ok(self.husk.pid, libc::SYS_madvise, args, "madvise")?;
            } else {
                self.husk.mem.write(at, &[self.done as u8 | 1; 64])?;
            }
            Ok(())
        }
    }

    /// Stands in for a process that execs during its first round: at the first tick, it
    /// lets a child waiting on a pipe exec and waits until it has.
    struct ExecOnTick {
        child: Pid,
        go: Option<std::fs::File>,
    }

    impl Throttle for ExecOnTick {
        fn set(&mut self, _level: Level) -> io::Result<()> {
            Ok(())
        }

        fn tick(&mut self) -> io::Result<()> {
            let Some(mut go) = self.go.take() else {
                return Ok(());
            };
            go.write_all(b"x")?;
            let comm = format!("/proc/{}/comm", self.child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(&comm)? != "sleep\n" {
                assert!(Instant::now() < deadline, "the child did not exec");
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }

    #[test]
    fn an_exec_leaves_the_signals_it_ignores_ignored_and_the_rest_default() {
        let ignored = (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGRTMAX() - 1));
        let actions = ignored_after_exec(ignored);
        let sigs: Vec<i32> = actions.iter().map(|a| a.sig).collect();
        assert_eq!(sigs, [libc::SIGINT, libc::SIGRTMAX()]);
        assert!(actions.iter().all(
            |a| a.handler == libc::SIG_IGN as u64 && (a.flags, a.restorer, a.mask) == (0, 0, 0)
        ));
        assert!(ignored_after_exec(0).is_empty());
    }

    #[test]
    fn a_round_that_meets_an_exec_says_that_the_address_space_is_gone() {
        let (rx, tx) = io::pipe().unwrap();
        // SAFETY: the child only reads a pipe and execs (async-signal-safe calls).
        let child = unsafe { libc::fork() };
        if child == 0 {
            let mut byte = 0u8;
            // SAFETY: async-signal-safe calls only, in the child.
            unsafe {
                libc::read(rx.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                let argv = [c"sleep".as_ptr(), c"60".as_ptr(), std::ptr::null()];
                libc::execv(c"/bin/sleep".as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        drop(rx);
        let areas = image_areas(child).unwrap();
        let mem = Memory::open(child).unwrap();
        let mut exec = ExecOnTick {
            child,
            go: Some(std::fs::File::from(std::os::fd::OwnedFd::from(tx))),
        };
        let mut out = Vec::new();
        let (skip, pages) = (Unreadable::Skip, (&areas[..], &Held::default(), None));
        let streamed = stream_pages(child, &mem, pages, &mut out, skip, &mut exec);
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        assert!(exec.go.is_none(), "the round never ticked");
        let err = streamed.unwrap_err();
        assert!(err.to_string().contains("exec'd or ended"), "{err}");
    }

    #[test]
    fn a_read_that_fails_is_told_apart_from_a_send_that_fails() {
        let husk = Husk::new(4);
        let mut buf = vec![0u8; PIECE];
        let (fail, unthrottled) = (Unreadable::Fail, &mut Unthrottled);
        // Nothing is mapped at the lowest pages.
        let unmapped = (TEST_PAGE, 3 * TEST_PAGE);
        let mut out = Vec::new();
        let err = send_run(
            &husk.mem,
            &mut out,
            &mut buf,
            unmapped,
            Sending::Written,
            fail,
            unthrottled,
        )
        .unwrap_err();
        let read = unread(&err).expect("a read failure");
        assert!(
            read.to_string()
                .starts_with("cannot read its memory at 0x1000"),
            "{read}"
        );
        let mapped = (husk.area.start, husk.area.end);
        let mut full: &mut [u8] = &mut [];
        let err = send_run(
            &husk.mem,
            &mut full,
            &mut buf,
            mapped,
            Sending::Written,
            fail,
            unthrottled,
        )
        .unwrap_err();
        assert!(unread(&err).is_none(), "{err}");
    }

    #[test]
    fn pages_tracking_marked_in_a_file_mapping_are_the_files_and_written_ones_the_processs() {
        let husk = Husk::new(1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mapped");
        std::fs::write(&path, vec![b'f'; 64 * TEST_PAGE as usize]).unwrap();
        // Open and map the file in the husk: private and writable, as a program's data.
        let mut raw = path.to_str().unwrap().as_bytes().to_vec();
        raw.push(0);
        husk.mem.write(husk.area.start, &raw).unwrap();
        let (cwd, rdwr) = (libc::AT_FDCWD as u64, libc::O_RDWR as u64);
        let open = [cwd, husk.area.start, rdwr, 0, 0, 0];
        let fd = husk
            .inj
            .call_ok(husk.pid, libc::SYS_openat, open, "openat")
            .unwrap();
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let map = [0, 64 * TEST_PAGE, prot, libc::MAP_PRIVATE as u64, fd, 0];
        let start = husk
            .inj
            .call_ok(husk.pid, libc::SYS_mmap, map, "mmap")
            .unwrap();
        // Page 2 written (its own), the others untouched: a read would bring its neighbours
        // in too (the kernel maps the page cache around a read fault), a write only its page.
        husk.mem.write(start + 2 * TEST_PAGE, b"own").unwrap();

        let areas = image_areas(husk.pid).unwrap();
        let area = areas.iter().find(|a| a.start == start).unwrap();
        assert!(area.file.is_some(), "{area:?}");
        let tracker = Tracker::open(husk.pid, &husk.inj).unwrap();
        tracker.register(&areas);
        protect_file_mappings(husk.pid, &areas, &tracker).unwrap();
        tracker.protect(&areas);

        let pagemap = std::fs::File::open(format!("/proc/{}/pagemap", husk.pid)).unwrap();
        let range = (start, 64 * TEST_PAGE);
        // Read alone, the markers on the untouched pages look like own pages swapped out.
        let alone = page_kinds(&pagemap, area, range, None).unwrap();
        assert_eq!(alone, [PageKind::Own; 64]);
        let own = tracker.own_in_files();
        let kinds = page_kinds(&pagemap, area, range, own.as_deref()).unwrap();
        let mut expected = [PageKind::File; 64];
        expected[2] = PageKind::Own;
        assert_eq!(kinds, expected);
    }

    #[test]
    fn guard_regions_are_cut_out_of_written_runs() {
        let run = |start, end| Written {
            start,
            end,
            holds_data: true,
        };
        let runs = vec![run(0x1000, 0x6000), run(0x8000, 0x9000)];
        let guards = [(0x2000, 0x3000), (0x5000, 0x8000)];
        assert_eq!(
            outside_guards(runs, &guards),
            [
                run(0x1000, 0x2000),
                run(0x3000, 0x5000),
                run(0x8000, 0x9000)
            ]
        );
    }

    #[test]
    fn rounds_then_a_final_round_leave_the_receiver_with_what_the_process_holds() {
        const PAGES: u64 = 64;
        let (source, target) = Husk::pair(PAGES);
        let area = (source.area.start, source.area.len() as usize);
        let data: Vec<u8> = (0..area.1).map(|i| (i / 4096 * 3 + i) as u8 | 1).collect();
        source.mem.write(area.0, &data).unwrap();

        let areas = image_areas(source.pid).unwrap();
        let tracker = Tracker::open(source.pid, &source.inj).unwrap();
        tracker.register(&areas);
        tracker.protect(&areas);
        let mut writer = Writer {
            husk: &source,
            budget: PER_ROUND,
            done: 0,
            levels: Vec::new(),
        };
        // No pause is short enough: rounds go on until nothing is written, or the bound.
        let limits = Limits {
            pause: Duration::ZERO,
            rounds: 6,
            ..Limits::default()
        };
        let mut stream = Vec::new();
        let held = Held::default();
        send_rounds(
            source.pid,
            (&areas, &held, &tracker),
            &mut writer,
            limits,
            &mut stream,
        )
        .unwrap();
        // Rounds that keep finding writes (until the policy finds them stuck at the highest
        // throttle level, or finds none).
        assert!(writer.levels.len() >= 3, "{:?}", writer.levels);
        // Written after the last running round, before the freeze.
        source
            .mem
            .write(area.0 + 9 * TEST_PAGE, &[0xee; 100])
            .unwrap();
        let facts = crate::facts::probe().unwrap();
        dump_final_round(
            source.pid,
            &facts,
            &Carry::Home {
                away: Default::default(),
            },
            (&areas, &held),
            &tracker,
            (&mut stream, false),
        )
        .unwrap();

        let mut frames = image::FrameReader::new(&stream[..]);
        let inj = restore::restore_first_round(target.pid, &areas, &held, &mut frames).unwrap();
        let header = restore::read_header(&mut frames).unwrap();
        restore::restore_final_round(target.pid, &inj, &areas, &held, &header, &mut frames)
            .unwrap();
        assert!(frames.next_frame().is_err(), "the whole stream was read");

        let moved = target.mem.read_vec(area.0, area.1).unwrap();
        let held = source.mem.read_vec(area.0, area.1).unwrap();
        for (n, (m, h)) in moved.chunks(4096).zip(held.chunks(4096)).enumerate() {
            assert!(m == h, "page {n} differs");
        }
        assert!(
            held.chunks(4096).any(|p| p.iter().all(|&b| b == 0)),
            "pages were zapped"
        );
    }
}
