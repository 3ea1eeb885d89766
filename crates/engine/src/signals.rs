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

use rmosix_image::{SIGINFO_LEN, SigInfo};

use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::ptrace::{self, Pid};

/// A `siginfo_t` as the image carries it.
pub fn from_raw(info: &libc::siginfo_t) -> SigInfo {
    // SAFETY: siginfo_t is plain old data of SIGINFO_LEN bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts((info as *const libc::siginfo_t).cast::<u8>(), SIGINFO_LEN)
    };
    SigInfo::from_bytes(bytes.to_vec())
}

/// The kernel's struct of `info` (zeros where a peer sent less).
pub fn to_raw(info: &SigInfo) -> libc::siginfo_t {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut raw: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let n = info.bytes().len().min(SIGINFO_LEN);
    // SAFETY: we write at most SIGINFO_LEN bytes into the live struct.
    unsafe {
        std::ptr::copy_nonoverlapping(
            info.bytes().as_ptr(),
            (&mut raw as *mut libc::siginfo_t).cast::<u8>(),
            n,
        )
    };
    raw
}

/// Whether another process may queue `info` as it is (rt_tgsigqueueinfo(2): a code below
/// zero that is not SI_TKILL).
fn queueable_from_outside(info: &SigInfo) -> bool {
    info.code() < 0 && info.code() != libc::SI_TKILL
}

/// The siginfo of the signal `pid` is stopped for (a signal-delivery stop), or a bare one
/// for `sig` if the kernel does not say.
pub fn at_stop(pid: Pid, sig: i32) -> SigInfo {
    ptrace::get_siginfo(pid).map_or_else(|_| SigInfo::bare(sig), |info| from_raw(&info))
}

/// The signal sets of `pid` that /proc/PID/status shows, as masks (bit n-1 for signal n).
pub struct StatusMasks {
    /// Pending for it or for its process (`SigPnd`, `ShdPnd`).
    pub pending: u64,
    /// Blocked now (`SigBlk`): a wait's own mask while it waits, where PTRACE_GETSIGMASK
    /// answers the mask the wait will put back.
    pub blocked: u64,
    /// Caught (`SigCgt`).
    pub caught: u64,
    /// Ignored (`SigIgn`).
    pub ignored: u64,
}

/// Read the signal sets of `pid` from /proc/PID/status.
pub fn status_masks(pid: Pid) -> io::Result<StatusMasks> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    Ok(StatusMasks {
        pending: field("SigPnd:") | field("ShdPnd:"),
        blocked: field("SigBlk:"),
        caught: field("SigCgt:"),
        ignored: field("SigIgn:"),
    })
}

/// The signals pending for stopped `pid`, with their siginfo: its own, then its process's.
pub fn pending_apart(pid: Pid) -> io::Result<(Vec<SigInfo>, Vec<SigInfo>)> {
    Ok((peek(pid, 0)?, peek(pid, libc::PTRACE_PEEKSIGINFO_SHARED)?))
}

/// The signals pending for stopped `pid`, its own and its process's.
pub fn pending(pid: Pid) -> io::Result<Vec<SigInfo>> {
    let (mut own, shared) = pending_apart(pid)?;
    own.extend(shared);
    Ok(own)
}

/// One of `pid`'s queues of pending signals (`flags`: PTRACE_PEEKSIGINFO_SHARED or not).
fn peek(pid: Pid, flags: libc::c_uint) -> io::Result<Vec<SigInfo>> {
    let mut found = Vec::new();
    loop {
        // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
        let mut batch: [libc::siginfo_t; 16] = unsafe { std::mem::zeroed() };
        let n = ptrace::peek_siginfo(pid, found.len() as u64, flags, &mut batch)?;
        found.extend(batch[..n].iter().map(from_raw));
        if n < batch.len() {
            return Ok(found);
        }
    }
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
            mem.write(scratch.addr, info.bytes())?;
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
        if queueable_from_outside(&info) {
            let raw = to_raw(&info);
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
        if ours && let Err(err) = ptrace::set_siginfo(pid, &to_raw(&info)) {
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
        let info = from_raw(&raw);
        assert!(info.is_valid());
        assert_eq!((info.signo(), info.code()), (libc::SIGUSR1, libc::SI_TIMER));
        assert_eq!(to_raw(&info).si_code, libc::SI_TIMER);
        assert!(queueable_from_outside(&info));
        assert!(!queueable_from_outside(&SigInfo::bare(libc::SIGTERM)));
        assert_eq!(SIGINFO_LEN, std::mem::size_of::<libc::siginfo_t>());
    }
}
