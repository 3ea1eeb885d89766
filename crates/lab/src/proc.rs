//! Reading processes from the host's `/proc`: children, the PID a node sees, start times.

use std::fs;
use std::time::{Duration, Instant};

use crate::LabError;
use crate::POLL;

/// The first (oldest) child of the host process `host_pid`, if it has one.
///
/// Children are read from `/proc/PID/task/*/children`, so a child of any thread counts.
/// Use it to go from the `Child` that [`Node::command`](crate::Node::command) returns
/// (the `nsenter` outside the node) to the program inside, and from `mosrun` to its program.
/// A fresh child may not have called `execve` yet; its PID is already the program's.
pub fn child_of(host_pid: u32) -> Option<u32> {
    children_of(host_pid)
        .into_iter()
        .min_by_key(|&pid| start_time(pid).unwrap_or(u64::MAX))
}

/// Every child of the host process `host_pid`, of any of its threads.
pub(crate) fn children_of(host_pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{host_pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path().join("children");
            fs::read_to_string(path).ok()
        })
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The arguments of the host process `pid` (`argv[0]` first); empty if it is gone.
pub(crate) fn args_of(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Like [`child_of`], but waits up to `timeout` for the child to appear.
pub fn wait_child_of(host_pid: u32, timeout: Duration) -> Result<u32, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(child) = child_of(host_pid) {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            return Err(LabError::NoChild {
                pid: host_pid,
                timeout,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The PID that the process `host_pid` has in its own (innermost) PID namespace, the one to
/// pass to `migrate` or `mosctl` run inside its node: the last field of `NSpid:` in
/// `/proc/PID/status`. `None` if the process is gone.
pub fn pid_in_node(host_pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// A process as the host sees it: its PID and its start time (in clock ticks since boot), so
/// that a later, unrelated process that got the same PID is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcId {
    pub(crate) pid: u32,
    start: u64,
}

impl ProcId {
    /// Identifies the live process `pid`, or `None` if there is none.
    pub(crate) fn of(pid: u32) -> Option<ProcId> {
        Some(ProcId {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether this very process is still running (a zombie counts as gone: it runs no code,
    /// and a PID namespace's init only becomes a zombie once every process in it is gone).
    pub(crate) fn is_running(&self) -> bool {
        match stat_fields(self.pid) {
            Some((state, start)) => start == self.start && !matches!(state, 'Z' | 'X'),
            None => false,
        }
    }
}

/// The CPU time `pid` has used, user and system, in seconds (`/proc/PID/stat`); not its
/// children's.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: fields 14 and 15 are utime and stime, in clock ticks.
    let user: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (ticks > 0).then(|| (user + system) as f64 / ticks as f64)
}

/// Start time of `pid` in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

/// State letter and start time from `/proc/PID/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn stat_fields(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: field 3 is the state, field 22 the start time.
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_process_has_used_cpu_time_and_a_gone_one_has_none() {
        let me = std::process::id();
        let before = cpu_seconds(me).expect("our own CPU time");
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            std::hint::black_box(0u64);
        }
        let after = cpu_seconds(me).expect("our own CPU time");
        assert!(after >= before + 0.1, "{before} then {after}");
        assert_eq!(cpu_seconds(u32::MAX), None);
    }

    #[test]
    fn own_process_is_running_and_in_its_namespace() {
        let me = std::process::id();
        let id = ProcId::of(me).expect("own stat");
        assert!(id.is_running());
        assert!(pid_in_node(me).is_some());
    }

    #[test]
    fn child_is_found_and_gone_process_is_not_running() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id();
        let found = wait_child_of(me, Duration::from_secs(5)).expect("child");
        // Other tests of this binary may have children too; ours must be among them.
        let id = ProcId::of(child.id()).expect("child stat");
        assert!(id.is_running());
        assert!(found > 0);
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!id.is_running());
        assert!(pid_in_node(u32::MAX).is_none());
    }
}
