//! The gauge: samples the node's counters and keeps its smoothed load and capacity.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::{SysconfVar, sysconf};

use crate::GaugeError;
use crate::capacity::Capacity;
use crate::cgroup::{Layout, Place, Version};
use crate::root::{Root, malformed, read, read_optional, read_proc_small};
use crate::smooth::{Smoother, mosix_units};
use crate::speed::measure_speed;

/// What the node shows the cluster, in MOSIX's terms (reference §2.2: `cpus`, `load`,
/// `speed`, `util`, `tmem`, `mem`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// CPUs the node may use: online, in its affinity, within its cgroup's quota (may be
    /// fractional).
    pub cpus: f64,
    /// CPU speed, [`STANDARD_SPEED`](crate::STANDARD_SPEED) = a standard CPU.
    pub speed: u32,
    /// Exported load in MOSIX units (100 = one busy process on one standard CPU): rises at
    /// once, decays slowly. This is what gossip carries.
    pub load: u32,
    /// Percentage of the node's CPUs busy over the last period.
    pub utilisation_pct: u8,
    /// Memory the node may use, bytes.
    pub mem_total: u64,
    /// Memory free for it, bytes.
    pub mem_free: u64,
    /// Average run-queue length (processes running or waiting) over the last period,
    /// unsmoothed: what the node's own balancing decides on.
    pub runnable: f64,
}

/// Measures one node: call [`Gauge::sample`] every ~100 ms, read [`Gauge::reading`] when
/// gossiping.
///
/// The node is the cgroup the [`Root`] names, or else the cgroup of its process (the daemon
/// itself by default), with its sub-cgroups: its load counts only the tasks in there. The
/// root cgroup makes the whole machine the node.
#[derive(Debug)]
pub struct Gauge {
    root: Root,
    layout: Layout,
    capacity: Capacity,
    speed: u32,
    clock_ticks: f64,
    smoother: Smoother,
    last: Option<(Instant, Counters)>,
}

/// Cumulative counters at one instant.
#[derive(Debug)]
enum Counters {
    /// The node is a cgroup: per-task times from `/proc/TID/schedstat`, and the cgroup's CPU
    /// usage where the kernel keeps it for that cgroup.
    Cgroup {
        tasks: HashMap<u32, TaskTimes>,
        usage: Option<Duration>,
    },
    /// The node is the machine: `/proc/stat`.
    Machine { busy_ticks: u64, running: u32 },
}

/// A task's cumulative time on a CPU and waiting for one (`/proc/TID/schedstat`).
#[derive(Debug, Clone, Copy)]
struct TaskTimes {
    on_cpu: u64,
    waiting: u64,
}

impl Gauge {
    /// Starts measuring the node `root` names; measures the CPU speed first (~50 ms of CPU).
    pub fn new(root: Root) -> Result<Gauge, GaugeError> {
        Gauge::with_speed(root, measure_speed()?)
    }

    /// Starts measuring with a known speed (`mosctl setspeed`, or a test). Fails if a cgroup
    /// named for the node ([`Root::with_cgroup`]) does not exist.
    pub fn with_speed(root: Root, speed: u32) -> Result<Gauge, GaugeError> {
        let layout = Layout::read(&root)?;
        let capacity = Capacity::read(&root, &layout)?;
        // USER_HZ, the unit of /proc/stat; 100 on every Linux build in practice.
        let clock_ticks = sysconf(SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|&t| t > 0)
            .unwrap_or(100);
        let gauge = Gauge {
            root,
            layout,
            capacity,
            speed: speed.max(1),
            clock_ticks: clock_ticks as f64,
            smoother: Smoother::new(),
            last: None,
        };
        if gauge.node_cgroup().is_some() {
            let path = gauge.root.proc_own("schedstat");
            if read_optional(&path)?.is_none() {
                return Err(malformed(
                    &path,
                    "missing: the kernel lacks CONFIG_SCHED_INFO",
                ));
            }
        }
        Ok(gauge)
    }

    /// Replaces the speed (`mosctl setspeed N`); the load follows from the next reading on.
    pub fn set_speed(&mut self, speed: u32) {
        self.speed = speed.max(1);
    }

    /// Processes that wanted `processes` CPUs left the node for good: see
    /// [`Smoother::departed`](crate::Smoother::departed).
    pub fn departed(&mut self, processes: f64) {
        self.smoother.departed(processes);
    }

    /// Reads the counters at `now` (the caller's clock, taken just before the call) and folds
    /// the interval since the last sample into the load. Every [`PERIOD`](crate::PERIOD) the
    /// load is smoothed and the layout, CPUs and memory are read again.
    pub fn sample(&mut self, now: Instant) -> Result<(), GaugeError> {
        let counters = self.read_counters()?;
        let Some((then, before)) = self.last.take() else {
            self.last = Some((now, counters));
            return Ok(());
        };
        let Some(dt) = now.checked_duration_since(then).filter(|d| !d.is_zero()) else {
            self.last = Some((then, before));
            return Ok(());
        };
        let interval = self.interval(&before, &counters, dt);
        self.last = Some((now, counters));
        // None: the node changed between machine and cgroup; the next sample compares again.
        if let Some((runnable, busy)) = interval
            && self.smoother.push(dt, runnable, busy)
        {
            self.refresh()?;
        }
        Ok(())
    }

    /// Reads the layout and capacity again: the process may have been moved to another
    /// cgroup, and quotas, limits and affinity change. When the measured process is gone
    /// (a [`Root::for_pid`] whose process exited) the last ones stay.
    fn refresh(&mut self) -> Result<(), GaugeError> {
        if !self.root.proc_own("status").exists() {
            return Ok(());
        }
        self.layout = Layout::read(&self.root)?;
        self.capacity = Capacity::read(&self.root, &self.layout)?;
        Ok(())
    }

    /// How often to call [`Gauge::sample`]. Once a [`PERIOD`](crate::PERIOD) when the node is
    /// a cgroup: its counters add time up, so nothing is lost between samples, and a sample
    /// reads one file per task (about 4 µs each here). Ten times a period when the node is the
    /// whole machine: its run queue (`procs_running`) is a snapshot, and a sample costs 5 µs.
    pub fn sample_every(&self) -> Duration {
        match self.node_cgroup() {
            Some(_) => crate::PERIOD,
            None => crate::PERIOD / 10,
        }
    }

    /// The node as of the last closed period (load 0 until one has closed).
    pub fn reading(&self) -> Reading {
        let cpus = self.capacity.cpus;
        let (runnable, busy) = self.smoother.last_period();
        Reading {
            cpus,
            speed: self.speed,
            load: mosix_units(self.smoother.upper(), cpus, self.speed),
            utilisation_pct: (100.0 * busy / cpus).round().clamp(0.0, 100.0) as u8,
            mem_total: self.capacity.mem_total,
            mem_free: self.capacity.mem_free,
            runnable,
        }
    }

    /// The node's cgroup, `None` when the node is the whole machine.
    fn node_cgroup(&self) -> Option<&Place> {
        self.layout.cpu.as_ref().filter(|p| !p.is_root())
    }

    /// Average runnable tasks and busy CPUs between two readings `dt` apart; `None` if they
    /// are not of the same kind.
    fn interval(&self, before: &Counters, after: &Counters, dt: Duration) -> Option<(f64, f64)> {
        let dt_ns = dt.as_nanos() as f64;
        match (before, after) {
            (
                Counters::Cgroup {
                    tasks: old,
                    usage: u0,
                },
                Counters::Cgroup { tasks, usage: u1 },
            ) => {
                let cap = u64::try_from(dt.as_nanos()).unwrap_or(u64::MAX);
                let (mut runnable, mut on_cpu) = (0u64, 0u64);
                for (tid, now) in tasks {
                    // A task not seen before (new, or moved in) counts for at most the interval.
                    // A TID whose counters went back is a new task that reuses the number.
                    let seen = old
                        .get(tid)
                        .filter(|was| now.on_cpu >= was.on_cpu && now.waiting >= was.waiting);
                    let (r, c) = match seen {
                        Some(was) => (
                            now.on_cpu.saturating_sub(was.on_cpu)
                                + now.waiting.saturating_sub(was.waiting),
                            now.on_cpu.saturating_sub(was.on_cpu),
                        ),
                        None => (
                            now.on_cpu.saturating_add(now.waiting).min(cap),
                            now.on_cpu.min(cap),
                        ),
                    };
                    runnable += r.min(cap);
                    on_cpu += c.min(cap);
                }
                let busy = match (u0, u1) {
                    (Some(a), Some(b)) => b.saturating_sub(*a).as_nanos() as f64,
                    _ => on_cpu as f64,
                };
                Some((runnable as f64 / dt_ns, busy / dt_ns))
            }
            (
                Counters::Machine { busy_ticks: b0, .. },
                Counters::Machine {
                    busy_ticks: b1,
                    running,
                },
            ) => {
                let busy = b1.saturating_sub(*b0) as f64 / self.clock_ticks / dt.as_secs_f64();
                // A snapshot at the end of the interval, as MOSIX samples the run queue at ticks.
                Some((f64::from(*running), busy))
            }
            _ => None,
        }
    }

    /// Reads the cumulative counters of the node.
    fn read_counters(&self) -> Result<Counters, GaugeError> {
        let Some(place) = self.node_cgroup() else {
            return read_machine(&self.root);
        };
        let mut tasks = HashMap::new();
        let list = match place.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.threads",
        };
        let mut tids = Vec::new();
        list_tasks(&place.dir, list, &mut tids)?;
        let mut buf = [0u8; 256];
        for tid in tids {
            let path = self.root.path(format!("/proc/{tid}/schedstat"));
            let Some(text) = read_proc_small(&path, &mut buf)? else {
                continue;
            };
            let mut f = text.split_whitespace().map(str::parse::<u64>);
            match (f.next(), f.next()) {
                (Some(Ok(on_cpu)), Some(Ok(waiting))) => {
                    tasks.insert(tid, TaskTimes { on_cpu, waiting });
                }
                _ => return Err(malformed(&path, "not `ON_CPU_NS WAITING_NS SLICES`")),
            }
        }
        let usage = match &self.layout.usage {
            Some(p) => read_usage(p)?,
            None => None,
        };
        Ok(Counters::Cgroup { tasks, usage })
    }
}

/// Appends the TIDs listed in `list` in `dir` and in every cgroup below it: the node's
/// processes may sit in sub-cgroups (cgroup v2 keeps processes out of inner cgroups).
fn list_tasks(dir: &Path, list: &str, tids: &mut Vec<u32>) -> Result<(), GaugeError> {
    let path = dir.join(list);
    let Some(text) = read_optional(&path)? else {
        return Ok(());
    };
    for line in text.lines() {
        tids.push(
            line.trim()
                .parse()
                .map_err(|_| malformed(&path, "a line is not a TID"))?,
        );
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // Removed since we read its list.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(GaugeError::Read {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let subdirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    for sub in subdirs {
        list_tasks(&sub, list, tids)?;
    }
    Ok(())
}

/// CPU time the cgroup (with its descendants) used: v2 `cpu.stat` `usage_usec`, v1
/// `cpuacct.usage` (ns).
fn read_usage(place: &Place) -> Result<Option<Duration>, GaugeError> {
    Ok(match place.version {
        Version::V2 => {
            let path = place.dir.join("cpu.stat");
            let Some(text) = read_optional(&path)? else {
                return Ok(None);
            };
            let usec = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                .ok_or_else(|| malformed(&path, "no usage_usec line"))?;
            Some(Duration::from_micros(usec))
        }
        Version::V1 => {
            let path = place.dir.join("cpuacct.usage");
            let Some(text) = read_optional(&path)? else {
                return Ok(None);
            };
            Some(Duration::from_nanos(
                text.trim()
                    .parse()
                    .map_err(|_| malformed(&path, "not a number"))?,
            ))
        }
    })
}

/// The machine's busy ticks and running tasks from `/proc/stat`.
///
/// Busy is user + nice + system + irq + softirq (guest time is inside user; idle, iowait
/// and steal are not work of this machine). `procs_running` includes the reader, which is
/// not load, so one is taken off.
fn read_machine(root: &Root) -> Result<Counters, GaugeError> {
    let path = root.path("/proc/stat");
    let text = read(&path)?;
    let cpu = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .ok_or_else(|| malformed(&path, "no cpu line"))?;
    let f: Vec<u64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let busy_ticks = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| f.get(i).copied().unwrap_or(0))
        .sum();
    let running: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("procs_running ")?.trim().parse().ok())
        .ok_or_else(|| malformed(&path, "no procs_running line"))?;
    Ok(Counters::Machine {
        busy_ticks,
        running: running.saturating_sub(1),
    })
}
