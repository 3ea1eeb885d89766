//! What the daemon reads about local processes from /proc: the owner of a process someone
//! wants to move or supervise, for kill(2)'s rule (`/proc/PID/status`); the parent, start
//! time, CPU time and resident memory of a guest or of a process it hosts (`/proc/PID/stat`).
//! Never the identity of a client: that comes from its connection (see control::Caller).

use std::io;
use std::time::Duration;

use nix::unistd::{SysconfVar, sysconf};

/// A process's credentials as far as permission checks need them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Creds {
    /// Real uid.
    pub real_uid: u32,
    /// Saved set-user-ID.
    pub saved_uid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Read the credentials of `pid`. Fails if it does not exist (or vanished meanwhile).
pub(crate) fn read_creds(pid: i32) -> io::Result<Creds> {
    if pid <= 0 {
        return Err(io::ErrorKind::NotFound.into());
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| io::Error::other("unexpected /proc status format"))
}

/// Pick the `Uid:` (real, effective, saved, fs) and `Groups:` lines out of a status file.
fn parse_status(text: &str) -> Option<Creds> {
    let mut uids = None;
    let mut groups = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            let ids: Vec<u32> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            uids = Some((*ids.first()?, *ids.get(2)?));
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            groups = Some(
                rest.split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?,
            );
        }
    }
    let (real_uid, saved_uid) = uids?;
    Some(Creds {
        real_uid,
        saved_uid,
        groups: groups?,
    })
}

/// What `/proc/PID/stat` says about a process, in the kernel's units (see [`Units`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Its parent's PID.
    pub ppid: i32,
    /// CPU time it used, user and system, in clock ticks.
    pub cpu_ticks: u64,
    /// When it started, in clock ticks after boot. With the PID it names one process for as
    /// long as the machine runs: a PID is reused, never together with its start time.
    pub start_ticks: u64,
    /// Resident memory, in KiB: VmRSS of `/proc/PID/status`. The stat line's own figure is
    /// the kernel's quick read of per-CPU counters, some hundred KiB off for a process that
    /// maps files (a process restored with its file mappings does); status sums them.
    pub rss_kib: u64,
}

/// The program `pid` runs: its executable's device and inode (`/proc/PID/exe`).
pub(crate) fn program_of(pid: i32) -> io::Result<crate::programs::ProgramId> {
    use std::os::unix::fs::MetadataExt;
    if pid <= 0 {
        return Err(io::ErrorKind::NotFound.into());
    }
    let meta = std::fs::metadata(format!("/proc/{pid}/exe"))?;
    Ok(crate::programs::ProgramId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Read `/proc/PID/stat` and `/proc/PID/status`. Fails if the process does not exist (or
/// vanished meanwhile).
pub(crate) fn read_stat(pid: i32) -> io::Result<Stat> {
    if pid <= 0 {
        return Err(io::ErrorKind::NotFound.into());
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_stat(&text, &status).ok_or_else(|| io::Error::other("unexpected /proc stat format"))
}

/// Pick fields 4 (ppid), 14 and 15 (utime, stime) and 22 (starttime) out of a stat line
/// (proc_pid_stat(5)), and VmRSS out of the status text (0 without one: a process that is
/// ending has no memory). The command name, field 2, may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(text: &str, status: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts with field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:"));
    let rss_kib = rss.and_then(|v| v.split_whitespace().next()?.parse().ok());
    Some(Stat {
        ppid: fields.get(4 - 3)?.parse().ok()?,
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        rss_kib: rss_kib.unwrap_or(0),
    })
}

/// How long the machine has been up (the first field of /proc/uptime): the clock that process
/// start times count on.
pub(crate) fn uptime() -> io::Result<Duration> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    parse_uptime(&text).ok_or_else(|| io::Error::other("unexpected /proc/uptime format"))
}

fn parse_uptime(text: &str) -> Option<Duration> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The unit of [`Stat`]'s times: clock ticks a second (USER_HZ). Fixed while the machine
/// runs, so read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Units {
    pub ticks_per_second: u64,
}

impl Units {
    /// Ask the kernel (sysconf).
    pub fn probe() -> io::Result<Units> {
        let ask = |var| match sysconf(var) {
            Ok(Some(n)) if n > 0 => Ok(n as u64),
            Ok(_) => Err(io::Error::other(format!("sysconf({var:?}) has no value"))),
            Err(e) => Err(io::Error::from(e)),
        };
        Ok(Units {
            ticks_per_second: ask(SysconfVar::CLK_TCK)?,
        })
    }

    /// `ticks` as a duration.
    pub fn duration(&self, ticks: u64) -> Duration {
        let per_second = self.ticks_per_second;
        Duration::from_secs(ticks / per_second)
            + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second)
    }
}

/// kill(2)'s rule: a caller may act on a process if it is root, or if its uid is the target's
/// real or saved set-user-ID.
pub(crate) fn may_act(caller_uid: u32, target: &Creds) -> bool {
    caller_uid == 0 || caller_uid == target.real_uid || caller_uid == target.saved_uid
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4711\nPPid:\t1\n\
        Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t100\t100\t100\nFDSize:\t64\n\
        Groups:\t4 27 100 \nNStgid:\t4711\n";

    #[test]
    fn status_lines_are_parsed() {
        let creds = parse_status(STATUS).unwrap();
        assert_eq!(
            creds,
            Creds {
                real_uid: 1000,
                saved_uid: 1002,
                groups: vec![4, 27, 100],
            }
        );
        let no_groups = STATUS.replace("Groups:\t4 27 100 ", "Groups:");
        assert!(parse_status(&no_groups).unwrap().groups.is_empty());
        assert!(parse_status("Name:\tx\n").is_none());
        assert!(parse_status("Uid:\tx y z w\nGroups:\n").is_none());
        assert!(parse_status("Uid:\t1\nGroups:\n").is_none());
    }

    #[test]
    fn permission_follows_kill() {
        let creds = parse_status(STATUS).unwrap();
        assert!(may_act(0, &creds));
        assert!(may_act(1000, &creds));
        assert!(may_act(1002, &creds));
        assert!(!may_act(1001, &creds), "effective uid does not count");
        assert!(!may_act(1003, &creds));
    }

    #[test]
    fn stat_lines_are_parsed_from_the_last_parenthesis() {
        // Fields 1 to 24 of a stat line; the name holds a space and a parenthesis.
        let line = "4711 (my (prog) x) R 4700 4711 4711 0 -1 4194304 100 0 0 0 \
                    250 50 0 0 20 0 1 0 123456 10000000 2048 18446744073709551615\n";
        let status = "Name:\tmy (prog) x\nVmRSS:\t    8192 kB\n";
        assert_eq!(
            parse_stat(line, status),
            Some(Stat {
                ppid: 4700,
                cpu_ticks: 300,
                start_ticks: 123456,
                rss_kib: 8192,
            })
        );
        assert_eq!(parse_stat(line, "Name:\tx\n").map(|s| s.rss_kib), Some(0));
        assert_eq!(parse_stat("4711 (x) R 1 2 3", status), None);
        assert_eq!(parse_stat("no parenthesis", status), None);
        let junk = line.replace(" 250 ", " x ");
        assert_eq!(parse_stat(&junk, status), None);
    }

    #[test]
    fn uptime_and_ticks_are_durations() {
        assert_eq!(
            parse_uptime("12345.67 54321.00\n"),
            Some(Duration::from_millis(12_345_670))
        );
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("-1 0"), None);
        let units = Units {
            ticks_per_second: 100,
        };
        assert_eq!(units.duration(250), Duration::from_millis(2500));
        let units = Units::probe().unwrap();
        assert!(units.ticks_per_second > 0);
        assert!(uptime().unwrap() > Duration::ZERO);
    }

    #[test]
    fn this_process_is_readable() {
        let creds = read_creds(std::process::id() as i32).unwrap();
        assert!(may_act(nix::unistd::getuid().as_raw(), &creds));
        assert!(read_creds(0).is_err());
        assert!(read_creds(-1).is_err());
        let stat = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(stat.ppid as u32, std::os::unix::process::parent_id());
        assert!(stat.rss_kib > 0);
        assert!(read_stat(0).is_err());
    }
}
