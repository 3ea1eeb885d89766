//! The remote's seccomp filter and its user-notification listener. The filter lets the calls the
//! table marks Local run on the remote node and turns every other call into a notification that
//! the guest supervisor forwards home.
//!
//! The guest still drives the husk by injection (to dump it for going home, to emulate a file
//! mmap), and some injected calls are not Local (userfaultfd and close for write tracking,
//! getitimer). Those come from the injection `syscall` instruction (the "gate") and are not
//! allowed by address, since the program can jump to the same instruction: a call from the
//! gate returns SECCOMP_RET_TRACE. The kernel then stops the husk for its tracer, the guest,
//! which lets the call run only while it is injecting one itself; at any other time the call
//! is the program's, and is refused (see [`refuse_gate_call`]). Local calls are allowed
//! before the address is looked at, so the vdso's own fallbacks (clock_gettime of a CPU
//! clock, say), which may use the same instruction, never stop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::sys::{self, SockFilter};
use crate::table;

pub(crate) const BPF_LD_W_ABS: u16 = 0x20;
pub(crate) const BPF_JEQ_K: u16 = 0x15;
const BPF_JSET_K: u16 = 0x45;
pub(crate) const BPF_RET_K: u16 = 0x06;

pub(crate) fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

pub(crate) fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Offsets into `struct seccomp_data`.
pub(crate) const NR: u32 = 0;
pub(crate) const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
const ARG0_LO: u32 = 16;
const ARG3_LO: u32 = 16 + 3 * 8;

/// Where a jump of the filter goes: over `n` instructions, to the gate check, or to the
/// final allow. Resolved once the program is whole (classic BPF jumps are relative and at
/// most 255 instructions forward).
#[derive(Clone, Copy)]
enum Target {
    Skip(u8),
    Gate,
    Allow,
}

/// A filter program being written, its jumps resolved at the end.
struct Program(Vec<(SockFilter, Target, Target)>);

impl Program {
    fn stmt(&mut self, code: u16, k: u32) {
        self.0
            .push((stmt(code, k), Target::Skip(0), Target::Skip(0)));
    }

    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.0.push((stmt(code, k), jt, jf));
    }

    /// Allow call `nr` unless its first argument (its low 32 bits) is one of `not_local`,
    /// which go on to the gate check. Other calls go on with their number loaded.
    fn local_unless_arg0(&mut self, nr: i64, not_local: &[i32]) {
        let block = 2 + not_local.len() as u8;
        self.jump(BPF_JEQ_K, nr as u32, Target::Skip(0), Target::Skip(block));
        self.stmt(BPF_LD_W_ABS, ARG0_LO);
        for value in not_local {
            self.jump(BPF_JEQ_K, *value as u32, Target::Gate, Target::Skip(0));
        }
        self.stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW);
    }

    /// The program, with `gate_check` (whose last instruction is the final allow) appended.
    fn finish(self, gate_check: Vec<SockFilter>) -> Vec<SockFilter> {
        let gate = self.0.len();
        let allow = gate + gate_check.len() - 1;
        let offset = |at: usize, target: Target| match target {
            Target::Skip(n) => n,
            Target::Gate => u8::try_from(gate - at - 1).expect("the filter's jumps fit a byte"),
            Target::Allow => u8::try_from(allow - at - 1).expect("the filter's jumps fit a byte"),
        };
        let mut prog: Vec<SockFilter> = self
            .0
            .into_iter()
            .enumerate()
            .map(|(at, (ins, jt, jf))| SockFilter {
                jt: offset(at, jt),
                jf: offset(at, jf),
                ..ins
            })
            .collect();
        prog.extend(gate_check);
        prog
    }
}

/// Build the filter program. `gate` is the address right after the injection instruction.
pub fn build_filter(gate: u64) -> Vec<SockFilter> {
    // mmap and the calls whose first argument decides are local for some arguments only:
    // each has a block of its own before the list of local calls.
    let by_arg0 = table::LOCAL_UNLESS_ARG0;
    let local: Vec<i64> = table::local_calls()
        .into_iter()
        .filter(|&nr| nr != libc::SYS_mmap && !by_arg0.iter().any(|(n, _)| *n == nr))
        .collect();
    let mut prog = Program(Vec::new());
    prog.stmt(BPF_LD_W_ABS, ARCH);
    prog.jump(
        BPF_JEQ_K,
        sys::AUDIT_ARCH_X86_64,
        Target::Skip(1),
        Target::Skip(0),
    );
    prog.stmt(BPF_RET_K, sys::SECCOMP_RET_KILL_PROCESS);
    prog.stmt(BPF_LD_W_ABS, NR);
    // mmap runs locally only for anonymous memory; a file mmap goes on to the gate check.
    prog.jump(
        BPF_JEQ_K,
        libc::SYS_mmap as u32,
        Target::Skip(0),
        Target::Skip(3),
    );
    prog.stmt(BPF_LD_W_ABS, ARG3_LO);
    prog.jump(
        BPF_JSET_K,
        libc::MAP_ANONYMOUS as u32,
        Target::Skip(0),
        Target::Gate,
    );
    prog.stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW);
    for (nr, not_local) in by_arg0 {
        prog.local_unless_arg0(*nr, not_local);
    }
    for nr in local {
        prog.jump(BPF_JEQ_K, nr as u32, Target::Allow, Target::Skip(0));
    }
    prog.finish(vec![
        stmt(BPF_LD_W_ABS, IP_LO),
        jump(BPF_JEQ_K, gate as u32, 0, 3),
        stmt(BPF_LD_W_ABS, IP_HI),
        jump(BPF_JEQ_K, (gate >> 32) as u32, 0, 1),
        stmt(BPF_RET_K, sys::SECCOMP_RET_TRACE),
        stmt(BPF_RET_K, sys::SECCOMP_RET_USER_NOTIF),
        stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW),
    ])
}

/// The husk stopped at `PTRACE_EVENT_SECCOMP` outside an injection: the program itself made a
/// call from the gate. Skip it with `ENOSYS`, as a sandbox refuses a call; it must not run
/// here unforwarded. The husk stays stopped; the caller resumes it.
pub fn refuse_gate_call(pid: Pid) -> io::Result<()> {
    let mut regs = crate::ptrace::get_regs(pid)?;
    tracing::debug!(
        pid,
        nr = regs.orig_rax as i64,
        "refused a call made from the gate"
    );
    // At a seccomp stop a call number of -1 skips the call; rax is what it returns.
    regs.orig_rax = u64::MAX;
    regs.rax = (-libc::ENOSYS) as u64;
    crate::ptrace::set_regs(pid, &regs)
}

/// The filter home gives a process that has been away: its CPU-time calls (`cputime`) go to
/// the home supervisor, which adds the time it used away; everything else runs.
pub fn build_clock_filter() -> Vec<SockFilter> {
    let mut prog = Program(Vec::new());
    prog.stmt(BPF_LD_W_ABS, ARCH);
    prog.jump(
        BPF_JEQ_K,
        sys::AUDIT_ARCH_X86_64,
        Target::Skip(1),
        Target::Skip(0),
    );
    prog.stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW);
    prog.stmt(BPF_LD_W_ABS, NR);
    for (nr, counted) in table::CPU_TIME_CALLS {
        if counted.is_empty() {
            prog.jump(BPF_JEQ_K, *nr as u32, Target::Gate, Target::Skip(0));
        } else {
            prog.local_unless_arg0(*nr, counted);
        }
    }
    // Here "the gate" is the notification, and the final instruction the allow.
    prog.stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW);
    prog.finish(vec![
        stmt(BPF_RET_K, sys::SECCOMP_RET_USER_NOTIF),
        stmt(BPF_RET_K, sys::SECCOMP_RET_ALLOW),
    ])
}

/// Install the remote's filter in stopped husk `pid` and take its listener fd into this
/// process.
pub fn install(pid: Pid, inj: &Injector) -> io::Result<Listener> {
    install_filter(pid, inj, &build_filter(inj.syscall_ip + 2))
}

/// Install `prog` in stopped `pid` (setting its no_new_privs bit, which an unprivileged
/// filter needs) and take its listener fd into this process.
pub fn install_filter(pid: Pid, inj: &Injector, prog: &[SockFilter]) -> io::Result<Listener> {
    let mem = Memory::open(pid)?;
    let scratch = Scratch::map(
        inj,
        pid,
        4096 + (prog.len() * 8).next_multiple_of(4096) as u64,
    )?;
    let result: io::Result<OwnedFd> = (|| {
        let mut raw = Vec::with_capacity(prog.len() * 8);
        for ins in prog {
            raw.extend_from_slice(&ins.code.to_le_bytes());
            raw.push(ins.jt);
            raw.push(ins.jf);
            raw.extend_from_slice(&ins.k.to_le_bytes());
        }
        let filter_at = scratch.addr + 4096;
        mem.write(filter_at, &raw)?;
        // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        let mut fprog = Vec::with_capacity(16);
        fprog.extend_from_slice(&(prog.len() as u64).to_le_bytes());
        fprog.extend_from_slice(&filter_at.to_le_bytes());
        mem.write(scratch.addr, &fprog)?;
        inj.call_ok(
            pid,
            libc::SYS_prctl,
            [sys::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0],
            "no_new_privs",
        )?;
        let args = [
            sys::SECCOMP_SET_MODE_FILTER,
            sys::SECCOMP_FILTER_FLAG_NEW_LISTENER | sys::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
            scratch.addr,
            0,
            0,
            0,
        ];
        let fd = inj.call_ok(pid, libc::SYS_seccomp, args, "seccomp")?;
        let listener = PidFd::open(pid)?.get_fd(fd as i32)?;
        inj.call_ok(
            pid,
            libc::SYS_close,
            [fd, 0, 0, 0, 0, 0],
            "close listener in husk",
        )?;
        Ok(listener)
    })();
    scratch.unmap(inj, pid)?;
    let listener = Listener { fd: result? };
    listener.wake_on_this_cpu();
    Ok(listener)
}

/// The user-notification listener of a husk's filter.
pub struct Listener {
    fd: OwnedFd,
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

impl Listener {
    /// Ask the kernel to hand over the CPU directly at each notification and each answer
    /// (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, Linux 6.6): the trapped process wakes this
    /// supervisor on its own CPU, and the answer wakes it back there. Without it, each wake
    /// goes through the scheduler and, on a VM, an inter-processor interrupt: a trapped call
    /// costs 25-30 µs on this 2-vCPU VM instead of 2 (`./dev bench io`). An older kernel
    /// refuses the flag and the calls work as before, only slower.
    fn wake_on_this_cpu(&self) {
        // SAFETY: the ioctl takes its flags by value and touches no memory of ours.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                sys::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                sys::SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            tracing::debug!(%err, "this kernel wakes a supervisor through the scheduler");
        }
    }

    /// Whether every task that had the filter is gone: the listener then polls as hung up
    /// (and readable) for ever, and nothing will come.
    pub fn hung_up(&self) -> bool {
        let mut fd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, no wait.
        let ready = unsafe { libc::poll(&mut fd, 1, 0) };
        ready > 0 && fd.revents & libc::POLLHUP != 0
    }

    /// Receive the next notification (blocks; poll the fd first).
    pub fn recv(&self) -> io::Result<sys::SeccompNotif> {
        let mut notif = sys::SeccompNotif::default();
        // SAFETY: notif is a live, correctly sized struct seccomp_notif.
        let ret = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                sys::SECCOMP_IOCTL_NOTIF_RECV,
                &mut notif,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(notif)
    }

    /// Answer notification `id`: the call returns `val` (a negative value is an errno).
    /// ENOENT means the call was interrupted meanwhile (a signal); the caller ignores it.
    pub fn respond(&self, id: u64, val: i64) -> io::Result<()> {
        self.send(sys::SeccompNotifResp {
            id,
            val: if val < 0 { 0 } else { val },
            error: if val < 0 { val as i32 } else { 0 },
            flags: 0,
        })
    }

    /// Let call `id` go on in the process as if no filter had stopped it.
    pub fn let_run(&self, id: u64) -> io::Result<()> {
        self.send(sys::SeccompNotifResp {
            id,
            val: 0,
            error: 0,
            flags: sys::SECCOMP_USER_NOTIF_FLAG_CONTINUE,
        })
    }

    /// Answer call `id` by putting `file` into the process as descriptor `fd` (replacing
    /// any there), close-on-exec if `cloexec`: the call returns `fd`.
    ///
    /// The kernel installs the file in `pid`'s own context, and wakes it for that through the
    /// scheduler, not on this CPU as [`Listener::wake_on_this_cpu`] asks of the other
    /// answers: on an idle VM the process then goes to the other, halted vCPU, and this
    /// supervisor is woken back on its own, two inter-processor interrupts a file. So the
    /// process may run only on this CPU for the call ([`HeldHere`]): the header loop of
    /// `./dev bench files` (stat, open, read, close) went from 112-116 to 74-76 µs an
    /// operation on this 2-vCPU VM.
    pub fn answer_with_file(
        &self,
        id: u64,
        pid: Pid,
        file: &impl AsRawFd,
        fd: i32,
        cloexec: bool,
    ) -> io::Result<()> {
        let _held = HeldHere::hold(pid);
        let add = sys::SeccompNotifAddfd {
            id,
            flags: sys::SECCOMP_ADDFD_FLAG_SETFD | sys::SECCOMP_ADDFD_FLAG_SEND,
            srcfd: file.as_raw_fd() as u32,
            newfd: fd as u32,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: add is a live, correctly sized struct seccomp_notif_addfd.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::SECCOMP_IOCTL_NOTIF_ADDFD, &add) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn send(&self, resp: sys::SeccompNotifResp) -> io::Result<()> {
        // SAFETY: resp is a live, correctly sized struct seccomp_notif_resp.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), sys::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Process `pid` held to the CPU this thread runs on, until dropped: then it has its own
/// CPUs again. Nothing is held where the process may not run on this CPU, or where this
/// thread may not set its affinity. The process can see the single CPU only through a
/// `sched_getaffinity` made in the moment between its call's answer and the drop (setting
/// its affinity goes home, which waits for the drop).
struct HeldHere {
    pid: Pid,
    own: Option<libc::cpu_set_t>,
}

impl HeldHere {
    fn hold(pid: Pid) -> HeldHere {
        HeldHere {
            pid,
            own: Self::to_this_cpu(pid),
        }
    }

    /// Hold `pid` to this CPU; the CPUs it had, if it was.
    fn to_this_cpu(pid: Pid) -> Option<libc::cpu_set_t> {
        // SAFETY: sched_getcpu only reads which CPU this thread runs on.
        let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
        let own = affinity(pid).ok()?;
        // SAFETY: CPU_ISSET reads the set; a CPU number past its size reads as unset.
        if cpu >= libc::CPU_SETSIZE as usize || !unsafe { libc::CPU_ISSET(cpu, &own) } {
            return None;
        }
        set_affinity(pid, &cpu_set([cpu])).ok().map(|()| own)
    }
}

impl Drop for HeldHere {
    fn drop(&mut self) {
        let Some(own) = &self.own else {
            return;
        };
        // Gone (nothing to give back), or its cpuset changed meanwhile and allows none of
        // its CPUs (EINVAL): then every CPU, which the kernel narrows to what the cpuset
        // allows, rather than leave it on one.
        if let Err(err) = set_affinity(self.pid, own)
            && err.raw_os_error() == Some(libc::EINVAL)
        {
            let _ = set_affinity(self.pid, &cpu_set(0..libc::CPU_SETSIZE as usize));
        }
    }
}

/// The set of `cpus` (each below `CPU_SETSIZE`; any other is left out).
fn cpu_set(cpus: impl IntoIterator<Item = usize>) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus
        .into_iter()
        .filter(|&cpu| cpu < libc::CPU_SETSIZE as usize)
    {
        // SAFETY: `cpu` is within the set's size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// The CPUs `pid` (0: this thread) may run on.
fn affinity(pid: Pid) -> io::Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most the set's size into `set`.
    match unsafe { libc::sched_getaffinity(pid, std::mem::size_of_val(&set), &mut set) } {
        0 => Ok(set),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Let `pid` (0: this thread) run only on the CPUs of `set`.
fn set_affinity(pid: Pid, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: sched_setaffinity reads the set, of its size.
    match unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(set), set) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter for the subset the filter uses, to check its decisions.
    fn run(prog: &[SockFilter], data: &sys::SeccompData) -> u32 {
        let word = |off: u32| -> u32 {
            let mut bytes = [0u8; 64];
            bytes[0..4].copy_from_slice(&data.nr.to_le_bytes());
            bytes[4..8].copy_from_slice(&data.arch.to_le_bytes());
            bytes[8..16].copy_from_slice(&data.instruction_pointer.to_le_bytes());
            for (i, a) in data.args.iter().enumerate() {
                bytes[16 + i * 8..24 + i * 8].copy_from_slice(&a.to_le_bytes());
            }
            u32::from_le_bytes(bytes[off as usize..off as usize + 4].try_into().unwrap())
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            pc += 1;
            match ins.code {
                BPF_LD_W_ABS => acc = word(ins.k),
                BPF_JEQ_K => pc += if acc == ins.k { ins.jt } else { ins.jf } as usize,
                BPF_JSET_K => pc += if acc & ins.k != 0 { ins.jt } else { ins.jf } as usize,
                BPF_RET_K => return ins.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    fn call(nr: i64, ip: u64, args: [u64; 6]) -> sys::SeccompData {
        sys::SeccompData {
            nr: nr as i32,
            arch: sys::AUDIT_ARCH_X86_64,
            instruction_pointer: ip,
            args,
        }
    }

    #[test]
    fn homes_clock_filter_hands_over_cpu_time_calls_only() {
        let prog = build_clock_filter();
        let ip = 0x40_1000;
        let with = |nr: i64, arg0: i64| run(&prog, &call(nr, ip, [arg0 as u64, 0, 0, 0, 0, 0]));
        let notif = sys::SECCOMP_RET_USER_NOTIF;
        let allow = sys::SECCOMP_RET_ALLOW;
        assert_eq!(
            with(
                libc::SYS_clock_gettime,
                libc::CLOCK_PROCESS_CPUTIME_ID.into()
            ),
            notif
        );
        assert_eq!(
            with(
                libc::SYS_clock_gettime,
                libc::CLOCK_THREAD_CPUTIME_ID.into()
            ),
            notif
        );
        assert_eq!(
            with(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC.into()),
            allow
        );
        assert_eq!(with(libc::SYS_getrusage, libc::RUSAGE_SELF.into()), notif);
        assert_eq!(
            with(libc::SYS_getrusage, libc::RUSAGE_CHILDREN.into()),
            allow
        );
        assert_eq!(with(libc::SYS_times, 0), notif);
        for nr in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_fork,
            libc::SYS_mmap,
        ] {
            assert_eq!(with(nr, 0), allow, "{nr}");
        }
        let mut foreign = call(libc::SYS_times, ip, [0; 6]);
        foreign.arch = 0x4000_0003;
        assert_eq!(run(&prog, &foreign), allow);
    }

    #[test]
    fn filter_follows_the_table() {
        let gate = 0x7fff_1234_5002;
        let prog = build_filter(gate);
        let ip = 0x40_1000;
        assert_eq!(
            run(&prog, &call(libc::SYS_read, ip, [0; 6])),
            sys::SECCOMP_RET_USER_NOTIF
        );
        // A call from the gate stops for the tracer, which runs it only when it injects it.
        assert_eq!(
            run(&prog, &call(libc::SYS_read, gate, [0; 6])),
            sys::SECCOMP_RET_TRACE
        );
        // A local call is allowed wherever it comes from (the vdso's own fallbacks may use
        // the gate's instruction).
        let monotonic = [libc::CLOCK_MONOTONIC as u64, 0, 0, 0, 0, 0];
        assert_eq!(
            run(&prog, &call(libc::SYS_clock_gettime, gate, monotonic)),
            sys::SECCOMP_RET_ALLOW
        );
        // The process's CPU-time clock is answered by the guest (see `cputime`).
        let cpu_clock = [libc::CLOCK_PROCESS_CPUTIME_ID as u64, 0, 0, 0, 0, 0];
        assert_eq!(
            run(&prog, &call(libc::SYS_clock_gettime, ip, cpu_clock)),
            sys::SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run(&prog, &call(libc::SYS_read, gate + (1 << 32), [0; 6])),
            sys::SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run(&prog, &call(libc::SYS_futex, ip, [0; 6])),
            sys::SECCOMP_RET_ALLOW
        );
        let anon = [
            0,
            4096,
            3,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ];
        assert_eq!(
            run(&prog, &call(libc::SYS_mmap, ip, anon)),
            sys::SECCOMP_RET_ALLOW
        );
        let file = [0, 4096, 1, libc::MAP_PRIVATE as u64, 3, 0];
        assert_eq!(
            run(&prog, &call(libc::SYS_mmap, ip, file)),
            sys::SECCOMP_RET_USER_NOTIF
        );
        assert_eq!(
            run(&prog, &call(libc::SYS_mmap, gate, file)),
            sys::SECCOMP_RET_TRACE
        );
        // A file mmap whose flags happen to equal a local call's number is still a file mmap.
        let odd = [0, 4096, 1, libc::SYS_futex as u64, 3, 0];
        assert_eq!(
            run(&prog, &call(libc::SYS_mmap, ip, odd)),
            sys::SECCOMP_RET_USER_NOTIF
        );
        for option in [
            0,
            libc::PR_SET_NAME,
            libc::PR_SET_SECCOMP,
            libc::PR_GET_NO_NEW_PRIVS,
        ] {
            let args = [option as u64, 0, 0, 0, 0, 0];
            let local = table::route(libc::SYS_prctl, &args) == table::Route::Local;
            let verdict = run(&prog, &call(libc::SYS_prctl, ip, args));
            let expected = if local {
                sys::SECCOMP_RET_ALLOW
            } else {
                sys::SECCOMP_RET_USER_NOTIF
            };
            assert_eq!(verdict, expected, "prctl {option}");
        }
        for nr in 0..460 {
            let local = table::route(nr, &anon) == table::Route::Local;
            for (at, other) in [
                (ip, sys::SECCOMP_RET_USER_NOTIF),
                (gate, sys::SECCOMP_RET_TRACE),
            ] {
                let verdict = run(&prog, &call(nr, at, anon));
                let expected = if local { sys::SECCOMP_RET_ALLOW } else { other };
                assert_eq!(verdict, expected, "syscall {nr} from {at:#x}");
            }
        }
        let mut foreign = call(libc::SYS_getpid, ip, [0; 6]);
        foreign.arch = 0x4000_0003;
        assert_eq!(run(&prog, &foreign), sys::SECCOMP_RET_KILL_PROCESS);
    }

    /// The CPUs `pid` may run on, by number.
    fn cpus_of(pid: Pid) -> Vec<usize> {
        let set = affinity(pid).unwrap();
        // SAFETY: CPU_ISSET reads the set, within its size.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    }

    #[test]
    fn a_listener_hangs_up_once_the_process_with_its_filter_is_gone() {
        let husk = crate::testing::Husk::new(1);
        let listener = install_filter(husk.pid, &husk.inj, &build_clock_filter()).unwrap();
        assert!(!listener.hung_up(), "the husk still has the filter");
        drop(husk);
        assert!(listener.hung_up());
        assert!(
            listener.recv().is_err(),
            "nothing comes of a hung-up listener"
        );
    }

    #[test]
    fn a_process_is_held_to_this_cpu_and_given_its_own_back() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        let own = cpus_of(pid);
        // This thread stays on one CPU the child may use, so that the one it is held to is
        // known.
        let here = own[0];
        set_affinity(0, &cpu_set([here])).unwrap();
        {
            let _held = HeldHere::hold(pid);
            assert_eq!(cpus_of(pid), [here]);
        }
        assert_eq!(cpus_of(pid), own);
        if own.len() > 1 {
            // A process that may not run on this CPU is left as it is.
            let elsewhere = own[1];
            set_affinity(pid, &cpu_set([elsewhere])).unwrap();
            {
                let _held = HeldHere::hold(pid);
                assert_eq!(cpus_of(pid), [elsewhere]);
            }
            assert_eq!(cpus_of(pid), [elsewhere]);
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
