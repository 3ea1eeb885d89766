//! Signals as the kernel describes them (`siginfo_t`): a signal that crosses between the shell
//! and the remote, or waits out a move, keeps its sender, code and value. A POSIX timer's
//! `si_value` reaches the handler at the remote as it would at home.
//!
//! Where a signal is queued decides how: a process may queue any siginfo to itself, so a
//! stopped one gets its signals by an injected `rt_tgsigqueueinfo`. From outside, the kernel
//! lets us queue only codes below zero that are not `SI_TKILL` (a timer's, `sigqueue`'s); any
//! other is sent with `kill(2)`, and its siginfo is put in place at its delivery stop with
//! `PTRACE_SETSIGINFO` (see [`Arriving`]).

use std::collections::VecDeque;
use std::io;

use serde::{Deserialize, Serialize};

use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::ptrace::{self, Pid};

/// Bytes of a `siginfo_t`.
const SIGINFO_LEN: usize = std::mem::size_of::<libc::siginfo_t>();

/// One signal with its `siginfo_t`, as raw bytes (checked to be one on receipt).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigInfo(Vec<u8>);

impl std::fmt::Debug for SigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigInfo(sig {}, code {})", self.signo(), self.code())
    }
}

impl SigInfo {
    /// From the kernel's struct.
    pub fn from_raw(info: &libc::siginfo_t) -> SigInfo {
        // SAFETY: siginfo_t is plain old data of SIGINFO_LEN bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((info as *const libc::siginfo_t).cast::<u8>(), SIGINFO_LEN)
        };
        SigInfo(bytes.to_vec())
    }

    /// A bare signal, as `kill(2)` from nobody would describe it: for signals whose siginfo
    /// is not known.
    pub fn bare(sig: i32) -> SigInfo {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        info.si_signo = sig;
        info.si_code = libc::SI_USER;
        SigInfo::from_raw(&info)
    }

    /// Whether a peer's bytes describe a signal: the right length and a signal number.
    pub fn is_valid(&self) -> bool {
        self.0.len() == SIGINFO_LEN && (1..=64).contains(&self.signo())
    }

    /// The kernel's struct (zeros where a peer sent less).
    pub fn to_raw(&self) -> libc::siginfo_t {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let n = self.0.len().min(SIGINFO_LEN);
        // SAFETY: we write at most SIGINFO_LEN bytes into the live struct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.0.as_ptr(),
                (&mut info as *mut libc::siginfo_t).cast::<u8>(),
                n,
            )
        };
        info
    }

    /// The signal number.
    pub fn signo(&self) -> i32 {
        self.word(0)
    }

    /// Its `si_code`.
    pub fn code(&self) -> i32 {
        self.word(8)
    }

    fn word(&self, at: usize) -> i32 {
        self.0
            .get(at..at + 4)
            .map_or(0, |b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// Whether another process may queue it as it is (rt_tgsigqueueinfo(2): a code below zero
    /// that is not SI_TKILL).
    fn queueable_from_outside(&self) -> bool {
        self.code() < 0 && self.code() != libc::SI_TKILL
    }
}

/// The siginfo of the signal `pid` is stopped for (a signal-delivery stop), or a bare one
/// for `sig` if the kernel does not say.
pub fn at_stop(pid: Pid, sig: i32) -> SigInfo {
    ptrace::get_siginfo(pid).map_or_else(|_| SigInfo::bare(sig), |info| SigInfo::from_raw(&info))
}

/// The signals pending for `pid` (its own queue, then its process's), with their siginfo.
pub fn pending(pid: Pid) -> io::Result<Vec<SigInfo>> {
    let mut found = Vec::new();
    for flags in [0, libc::PTRACE_PEEKSIGINFO_SHARED] {
        let mut skip = 0;
        loop {
            // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
            let mut batch: [libc::siginfo_t; 16] = unsafe { std::mem::zeroed() };
            let n = ptrace::peek_siginfo(pid, skip, flags, &mut batch)?;
            found.extend(batch[..n].iter().map(SigInfo::from_raw));
            skip += n as u64;
            if n < batch.len() {
                break;
            }
        }
    }
    Ok(found)
}

/// Queue `signals` in stopped `pid`, each with its siginfo, by calls the process makes to
/// itself (which the kernel allows for any siginfo).
pub fn queue_in(pid: Pid, signals: &[SigInfo]) -> io::Result<()> {
    if signals.is_empty() {
        return Ok(());
    }
    let mem = Memory::open(pid)?;
    let inj = Injector::find(&mem, &crate::maps::read(pid)?)?;
    let scratch = Scratch::map(&inj, pid, 4096)?;
    let queued = (|| {
        for info in signals {
            mem.write(scratch.addr, &info.0)?;
            let args = [
                pid as u64,
                pid as u64,
                info.signo() as u64,
                scratch.addr,
                0,
                0,
            ];
            inj.call_ok(pid, libc::SYS_rt_tgsigqueueinfo, args, "rt_tgsigqueueinfo")?;
        }
        Ok(())
    })();
    scratch.unmap(&inj, pid)?;
    queued
}

/// Signals sent into a traced process from outside, waiting for their delivery stops to get
/// their siginfo.
pub struct Arriving {
    /// For each signal sent with kill(2), the siginfo it stands for, in the order sent.
    sent: [VecDeque<SigInfo>; 64],
}

impl Default for Arriving {
    fn default() -> Self {
        Arriving {
            sent: std::array::from_fn(|_| VecDeque::new()),
        }
    }
}

impl Arriving {
    /// Send `info` into running or stopped `pid` (our tracee).
    pub fn send(&mut self, pid: Pid, info: SigInfo) {
        let sig = info.signo();
        if info.queueable_from_outside() {
            let raw = info.to_raw();
            // SAFETY: rt_tgsigqueueinfo reads the live siginfo; a thread-group leader's tid is
            // its pid.
            let queued = unsafe {
                libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, pid, sig, &raw as *const _)
            };
            if queued == 0 {
                return;
            }
        }
        // SAFETY: plain kill of our own tracee.
        unsafe { libc::kill(pid, sig) };
        if (1..=64).contains(&sig) {
            self.sent[(sig - 1) as usize].push_back(info);
        }
    }

    /// `pid` stopped to take `sig`: if it is one we sent with kill(2), put its real siginfo
    /// in place. A standard signal sent twice while pending arrives once, with the first
    /// siginfo, as Linux merges them.
    pub fn at_delivery(&mut self, pid: Pid, sig: i32) {
        let Some(queue) = (1..=64)
            .contains(&sig)
            .then(|| &mut self.sent[(sig - 1) as usize])
        else {
            return;
        };
        let Some(info) = queue.pop_front() else {
            return;
        };
        if sig < libc::SIGRTMIN() {
            queue.clear();
        }
        let ours = ptrace::get_siginfo(pid).is_ok_and(|now| {
            // SAFETY: reading the sender of a kill(2), which sets si_pid.
            now.si_code == libc::SI_USER && unsafe { now.si_pid() } == std::process::id() as i32
        });
        if ours && let Err(err) = ptrace::set_siginfo(pid, &info.to_raw()) {
            tracing::debug!(pid, sig, %err, "cannot set a relayed signal's siginfo");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_siginfo_keeps_its_fields_through_bytes() {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
        let mut raw: libc::siginfo_t = unsafe { std::mem::zeroed() };
        raw.si_signo = libc::SIGUSR1;
        raw.si_code = libc::SI_TIMER;
        let info = SigInfo::from_raw(&raw);
        assert!(info.is_valid());
        assert_eq!((info.signo(), info.code()), (libc::SIGUSR1, libc::SI_TIMER));
        assert!(info.queueable_from_outside());
        assert!(!SigInfo::bare(libc::SIGTERM).queueable_from_outside());
        assert!(!SigInfo(vec![1, 2, 3]).is_valid());
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<SigInfo>(&json).unwrap(), info);
    }
}
