//! A process's CPU time follows it: its CPU-time clocks, getrusage(2) and times(2) report
//! what it used wherever it ran, not only on the node it runs on now.
//!
//! No call can add time to what a kernel counts for a process, so these calls are answered
//! by the supervisors. At a remote the guest answers them from the process's total when it
//! arrived (carried in the image) plus what its husk has used since. At home, once the
//! process has been away, its kernel's count misses the time used away; a small seccomp
//! filter then hands these calls to the home supervisor, which adds it (see `home`).
//! Children's times (`RUSAGE_CHILDREN`, `tms_cutime`) are home's: children run at home.

use std::io;

use rmosix_image::{CpuUse, Usage};

use crate::dump::stat_fields;
use crate::ptrace::Pid;

/// Clock ticks per second of times(2) and /proc/PID/stat (USER_HZ on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// What `pid` has used, as its own kernel counts it. Its CPU-time clock gives the total to
/// the nanosecond; /proc's user and system ticks split it, as the kernel splits it for
/// getrusage (cputime_adjust).
pub fn used_by(pid: Pid) -> io::Result<Usage> {
    let total = process_clock_ns(pid)?;
    let fields = stat_fields(pid)?;
    // proc(5) numbers the fields from 1, with the state (field 3) first after the name.
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let (user_ticks, system_ticks) = (field(14), field(15));
    let ticks = user_ticks + system_ticks;
    let user_ns = if ticks == 0 {
        total
    } else {
        (u128::from(total) * u128::from(user_ticks) / u128::from(ticks)) as u64
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let status_field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Usage {
        user_ns,
        system_ns: total - user_ns,
        minflt: field(10),
        majflt: field(12),
        nvcsw: status_field("voluntary_ctxt_switches:"),
        nivcsw: status_field("nonvoluntary_ctxt_switches:"),
        maxrss_kb: status_field("VmHWM:"),
    })
}

/// The CPU-time clock of process `pid`, in nanoseconds (clock_getcpuclockid(3)).
fn process_clock_ns(pid: Pid) -> io::Result<u64> {
    // MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED): the precise clock, as glibc builds it.
    let clock = (!(pid as libc::clockid_t) << 3) | 2;
    // SAFETY: timespec is plain old data; all-zero is a valid value.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime fills the live timespec.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

/// Where a dumped process's CPU use comes from.
#[derive(Debug, Clone)]
pub enum Carry {
    /// At home: its kernel's count, plus what it used `away` before.
    Home {
        /// What it used on other nodes.
        away: Usage,
    },
    /// At a remote: what it had used when it arrived, plus what its husk used since, all of
    /// it away.
    Remote {
        /// Its use as the image that brought it here said.
        arrived: CpuUse,
        /// The digests of the system files it holds here, by descriptor, which its image
        /// carries (see `sysfiles`).
        system_files: std::collections::HashMap<i32, String>,
    },
}

impl Carry {
    /// The process's use now, for the image of `pid`.
    pub fn now(&self, pid: Pid) -> io::Result<CpuUse> {
        let own = used_by(pid)?;
        Ok(match self {
            Carry::Home { away } => CpuUse {
                total: own.plus(away),
                away: *away,
            },
            Carry::Remote { arrived, .. } => CpuUse {
                total: arrived.total.plus(&own),
                away: arrived.away.plus(&own),
            },
        })
    }
}

/// A call's result, and the bytes it writes into the caller, as (address, bytes).
pub type Answer = (i64, Vec<(u64, Vec<u8>)>);

/// The answer to a CPU-time call of a process whose use is `usage`: the call's result and
/// what it writes, as (address, bytes). None for a call this module does not answer.
pub fn answer(nr: i64, args: &[u64; 6], usage: &Usage) -> Option<Answer> {
    match nr {
        libc::SYS_clock_gettime => {
            let at = args[1];
            Some((0, vec![(at, timespec(usage.cpu_ns()).to_vec())]))
        }
        libc::SYS_getrusage => Some((0, vec![(args[1], rusage(usage).to_vec())])),
        _ => None,
    }
}

/// A `struct timespec` of `ns` nanoseconds.
fn timespec(ns: u64) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    raw[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    raw
}

/// A `struct rusage` (144 bytes) for `usage`; the fields Linux does not keep stay zero.
fn rusage(usage: &Usage) -> [u8; 144] {
    let timeval = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000 / 1000];
    let [user_s, user_us] = timeval(usage.user_ns);
    let [system_s, system_us] = timeval(usage.system_ns);
    // ru_utime, ru_stime, then 14 longs: maxrss, ixrss, idrss, isrss, minflt, majflt,
    // nswap, inblock, oublock, msgsnd, msgrcv, nsignals, nvcsw, nivcsw.
    let words = [
        user_s,
        user_us,
        system_s,
        system_us,
        usage.maxrss_kb,
        0,
        0,
        0,
        usage.minflt,
        usage.majflt,
        0,
        0,
        0,
        0,
        0,
        0,
        usage.nvcsw,
        usage.nivcsw,
    ];
    let mut raw = [0u8; 144];
    for (i, word) in words.iter().enumerate() {
        raw[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    raw
}

/// times(2) for process `pid` at home, whose own use is `usage`: its children's times as its
/// kernel counts them (children run at home), and the clock ticks since boot it returns.
pub fn times_at_home(pid: Pid, args: &[u64; 6], usage: &Usage) -> io::Result<Answer> {
    // SAFETY: tms is plain old data; all-zero is a valid value.
    let mut ours: libc::tms = unsafe { std::mem::zeroed() };
    // SAFETY: times fills the live struct; its result is the machine's ticks since boot,
    // the same for every process of this node.
    let now = unsafe { libc::times(&mut ours) } as i64;
    if args[0] == 0 {
        return Ok((now, Vec::new()));
    }
    let fields = stat_fields(pid)?;
    // cutime and cstime, fields 16 and 17 of proc(5), counted from the state (field 3).
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let mut children = [0u8; 32];
    children[16..24].copy_from_slice(&field(16).to_le_bytes());
    children[24..].copy_from_slice(&field(17).to_le_bytes());
    Ok((now, vec![(args[0], tms(usage, &children))]))
}

/// Clock ticks of `ns` nanoseconds, as times(2) counts them.
pub fn ticks(ns: u64) -> u64 {
    ns / (1_000_000_000 / TICKS_PER_SECOND)
}

/// A `struct tms` whose own times are `usage`'s and whose children's times are those home
/// reported (`home`, the 32 bytes times(2) filled in the shell).
pub fn tms(usage: &Usage, home: &[u8]) -> Vec<u8> {
    let mut raw = home.to_vec();
    raw.resize(32, 0);
    raw[..8].copy_from_slice(&ticks(usage.user_ns).to_le_bytes());
    raw[8..16].copy_from_slice(&ticks(usage.system_ns).to_le_bytes());
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_counted_to_the_nanosecond_and_split_as_the_kernel_splits_it() {
        let me = std::process::id() as Pid;
        // Burn a little CPU so that there is something to count.
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = used_by(me).unwrap();
        assert!(usage.cpu_ns() > 0 && usage.maxrss_kb > 0, "{usage:?}");
        let later = used_by(me).unwrap();
        assert!(later.cpu_ns() >= usage.cpu_ns());
    }

    #[test]
    fn answers_are_the_kernels_structs() {
        let usage = Usage {
            user_ns: 2_500_000_000,
            system_ns: 1_000_000,
            minflt: 7,
            majflt: 1,
            nvcsw: 3,
            nivcsw: 4,
            maxrss_kb: 1024,
        };
        let (ret, writes) =
            answer(libc::SYS_clock_gettime, &[2, 0x1000, 0, 0, 0, 0], &usage).unwrap();
        assert_eq!((ret, writes[0].0), (0, 0x1000));
        assert_eq!(writes[0].1, timespec(2_501_000_000));
        let (_, writes) = answer(libc::SYS_getrusage, &[0, 0x2000, 0, 0, 0, 0], &usage).unwrap();
        let raw = &writes[0].1;
        let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(1), word(2), word(3)), (2, 500_000, 0, 1000));
        assert_eq!(
            (word(4), word(8), word(9), word(16), word(17)),
            (1024, 7, 1, 3, 4)
        );
        assert_eq!(std::mem::size_of::<libc::rusage>(), raw.len());
        let tms = tms(&usage, &[9; 32]);
        assert_eq!(&tms[..8], &250u64.to_le_bytes());
        assert_eq!(&tms[16..], &[9; 16]);
        assert_eq!(answer(libc::SYS_read, &[0; 6], &usage), None);
    }
}
