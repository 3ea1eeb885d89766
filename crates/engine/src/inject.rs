//! Running system calls inside a stopped tracee ("injection"): point its instruction pointer at a
//! `syscall` instruction already in its address space, load the call into the registers,
//! single-step, read the result, put the registers back. The instruction we use lives in the
//! vdso, which every process has (static ones too) and which restore keeps in place.
//!
//! Registers are saved with `orig_rax` as they were: when the tracee had been stopped inside an
//! interrupted system call (rax = -ERESTART*), putting them back makes the kernel restart that
//! call on resume, as if nothing happened. The injected registers carry `orig_rax = -1` so the
//! kernel never "restarts" the injected call itself.

use std::io;

use rmosix_image::Area;

use crate::mem::Memory;
use crate::ptrace::{self, Pid, Regs, Stop};

/// The mask an injected call runs with: everything but SIGTRAP. The single-step's trap is a
/// SIGTRAP the kernel forces on the tracee, and a forced signal that is blocked has its
/// disposition reset to SIG_DFL (force_sig_info_to_task in kernel/signal.c): with SIGTRAP
/// blocked, every injected call would wipe the program's own SIGTRAP handler.
const STEP_MASK: u64 = !(1 << (libc::SIGTRAP - 1));

/// Knows where a tracee keeps a `syscall` instruction.
#[derive(Debug, Clone, Copy)]
pub struct Injector {
    /// Address of a `syscall` (0f 05) instruction inside the tracee's vdso.
    pub syscall_ip: u64,
}

impl Injector {
    /// Find a `syscall` instruction in the vdso of `pid`.
    pub fn find(mem: &Memory, areas: &[Area]) -> io::Result<Injector> {
        let vdso = areas
            .iter()
            .find(|a| a.name == "[vdso]")
            .ok_or_else(|| io::Error::other("process has no vdso"))?;
        let text = mem.read_vec(vdso.start, vdso.len() as usize)?;
        let at = text
            .windows(2)
            .position(|w| w == [0x0f, 0x05])
            .ok_or_else(|| io::Error::other("no syscall instruction in the vdso"))?;
        Ok(Injector {
            syscall_ip: vdso.start + at as u64,
        })
    }

    /// Registers that make the tracee execute system call `nr` with `args` at the next step.
    pub fn call_regs(&self, base: &Regs, nr: i64, args: [u64; 6]) -> Regs {
        let mut regs = *base;
        regs.rip = self.syscall_ip;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        regs
    }

    /// Run one system call in the stopped tracee `pid`, with every blockable signal but
    /// SIGTRAP blocked so nothing interrupts it, and return the raw result (negative errno on
    /// failure). The tracee's registers and signal mask are as before when this returns.
    pub fn call(&self, pid: Pid, nr: i64, args: [u64; 6]) -> io::Result<i64> {
        let saved = ptrace::get_regs(pid)?;
        let mask = ptrace::get_sigmask(pid)?;
        ptrace::set_sigmask(pid, STEP_MASK)?;
        // The call runs with no stack pointer. No call we inject uses the stack. But the
        // kernel refuses to change the alternate signal stack while the caller's stack
        // pointer lies on it (EPERM). A process frozen in a handler running there would
        // otherwise keep its own restore from setting the altstack.
        let base = Regs { rsp: 0, ..saved };
        let result = self.step_call(pid, &base, nr, args);
        ptrace::set_regs(pid, &saved)?;
        ptrace::set_sigmask(pid, mask)?;
        result
    }

    fn step_call(&self, pid: Pid, base: &Regs, nr: i64, args: [u64; 6]) -> io::Result<i64> {
        ptrace::set_regs(pid, &self.call_regs(base, nr, args))?;
        ptrace::step(pid)?;
        loop {
            match ptrace::wait_stop(pid)? {
                Stop::Trap => break,
                // The remote's filter hands calls from our instruction to us (see `seccomp`):
                // this one is ours, let it run.
                Stop::Event(libc::PTRACE_EVENT_SECCOMP) => ptrace::step(pid)?,
                // A stop that overtook the step (an earlier PTRACE_INTERRUPT, a group stop):
                // step again from where it is; the call has not run yet if rip is unchanged.
                _ => {
                    let now = ptrace::get_regs(pid)?;
                    if now.rip != self.syscall_ip {
                        break;
                    }
                    ptrace::step(pid)?;
                }
            }
        }
        Ok(ptrace::get_regs(pid)?.rax as i64)
    }

    /// Like `call`, turning a negative result into an error that names the call.
    pub fn call_ok(&self, pid: Pid, nr: i64, args: [u64; 6], what: &str) -> io::Result<u64> {
        let ret = self.call(pid, nr, args)?;
        if (-4095..0).contains(&ret) {
            let err = io::Error::from_raw_os_error(-ret as i32);
            return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
        }
        Ok(ret as u64)
    }
}

/// A scratch area mapped inside a tracee for the arguments of injected calls.
pub struct Scratch {
    /// Its address in the tracee.
    pub addr: u64,
    /// Its length.
    pub len: u64,
}

impl Scratch {
    /// Map `len` bytes of anonymous memory in the tracee.
    pub fn map(inj: &Injector, pid: Pid, len: u64) -> io::Result<Scratch> {
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let addr = inj.call_ok(
            pid,
            libc::SYS_mmap,
            [0, len, prot, flags, u64::MAX, 0],
            "mmap scratch",
        )?;
        Ok(Scratch { addr, len })
    }

    /// Unmap it again.
    pub fn unmap(self, inj: &Injector, pid: Pid) -> io::Result<()> {
        inj.call_ok(
            pid,
            libc::SYS_munmap,
            [self.addr, self.len, 0, 0, 0, 0],
            "munmap scratch",
        )
        .map(drop)
    }
}
