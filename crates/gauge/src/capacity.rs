//! What the node may use: CPUs and memory, as its cgroup and affinity allow.
//!
//! CPUs = min(online CPUs, CPUs in the process's affinity mask, the strictest CPU quota on the
//! way from its cgroup to the top); a quota may be a fraction (150000/100000 = 1.5 CPUs).
//! Memory total = min(MemTotal, the strictest memory limit); free = min(MemAvailable, and for
//! each limited ancestor, its limit minus what it uses, page cache it may drop not counted).

use std::path::Path;

use crate::GaugeError;
use crate::cgroup::{Layout, Place, Version};
use crate::root::{Root, malformed, read, read_optional};

/// The node's capacity at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Capacity {
    /// Usable CPUs, possibly fractional, > 0.
    pub(crate) cpus: f64,
    /// Memory the node may use, bytes.
    pub(crate) mem_total: u64,
    /// Memory still free for it, bytes.
    pub(crate) mem_free: u64,
}

impl Capacity {
    /// Reads the capacity of the node described by `root` and `layout`.
    pub(crate) fn read(root: &Root, layout: &Layout) -> Result<Capacity, GaugeError> {
        let online_path = root.path("/sys/devices/system/cpu/online");
        let online = count_cpu_list(read(&online_path)?.trim())
            .ok_or_else(|| malformed(&online_path, "not a CPU list"))?;
        let status_path = root.proc_own("status");
        let status = read(&status_path)?;
        let affinity = field(&status, "Cpus_allowed_list:")
            .and_then(count_cpu_list)
            .ok_or_else(|| malformed(&status_path, "no Cpus_allowed_list line"))?;
        let mut cpus = f64::from(online.min(affinity).max(1));
        if let Some(place) = &layout.cpu
            && let Some(quota) = cpu_quota(place)?
        {
            cpus = cpus.min(quota);
        }

        let meminfo_path = root.path("/proc/meminfo");
        let meminfo = read(&meminfo_path)?;
        let kib = |name| {
            field(&meminfo, name)
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|k| k * 1024)
                .ok_or_else(|| malformed(&meminfo_path, format!("no {name} line")))
        };
        let (mut mem_total, mut mem_free) = (kib("MemTotal:")?, kib("MemAvailable:")?);
        if let Some(place) = &layout.memory {
            for limit in memory_limits(place)? {
                mem_total = mem_total.min(limit.max);
                mem_free = mem_free.min(limit.max.saturating_sub(limit.used));
            }
        }
        Ok(Capacity {
            cpus,
            mem_total,
            mem_free: mem_free.min(mem_total),
        })
    }
}

/// The value after `name` on its line of a `Name: value` file.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// The number of CPUs in a list such as `0-3,8,10-11`; `None` if malformed or empty.
pub(crate) fn count_cpu_list(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)? + 1)?;
    }
    (n > 0).then_some(n)
}

/// The strictest CPU quota, in CPUs, of the cgroup and its ancestors; `None` if none is set.
/// v2: `cpu.max` = `max PERIOD` or `QUOTA PERIOD`; v1: `cpu.cfs_quota_us` (-1: none) over
/// `cpu.cfs_period_us`. The kernel enforces every level, so the smallest wins.
fn cpu_quota(place: &Place) -> Result<Option<f64>, GaugeError> {
    let mut best: Option<f64> = None;
    for dir in place.ancestors() {
        let quota = match place.version {
            Version::V2 => {
                let path = dir.join("cpu.max");
                let Some(text) = read_optional(&path)? else {
                    continue;
                };
                let mut f = text.split_whitespace();
                match (f.next(), f.next().map(str::parse::<u64>)) {
                    (Some("max"), Some(Ok(_))) => None,
                    (Some(q), Some(Ok(p))) if p > 0 => Some(
                        q.parse::<u64>()
                            .map_err(|_| malformed(&path, "quota is not a number"))?
                            as f64
                            / p as f64,
                    ),
                    _ => return Err(malformed(&path, "not `max|QUOTA PERIOD`")),
                }
            }
            Version::V1 => {
                let (qp, pp) = (dir.join("cpu.cfs_quota_us"), dir.join("cpu.cfs_period_us"));
                let (Some(q), Some(p)) = (read_optional(&qp)?, read_optional(&pp)?) else {
                    continue;
                };
                let q: i64 = q
                    .trim()
                    .parse()
                    .map_err(|_| malformed(&qp, "not a number"))?;
                let p: u64 = p
                    .trim()
                    .parse()
                    .map_err(|_| malformed(&pp, "not a number"))?;
                (q > 0 && p > 0).then(|| q as f64 / p as f64)
            }
        };
        if let Some(q) = quota {
            best = Some(best.map_or(q, |b: f64| b.min(q)));
        }
    }
    Ok(best)
}

/// A memory limit set on one cgroup, and what that cgroup uses now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MemoryLimit {
    max: u64,
    used: u64,
}

/// The limits set on the cgroup and its ancestors, each with its cgroup's usage.
///
/// Usage is `memory.current` (v2) or `memory.usage_in_bytes` (v1) minus the inactive page
/// cache (`inactive_file`, v1 `total_inactive_file` in `memory.stat`): the kernel drops that
/// before it reclaims anything else, so it is as free as MemAvailable counts it.
fn memory_limits(place: &Place) -> Result<Vec<MemoryLimit>, GaugeError> {
    let (limit_file, usage_file, inactive_key) = match place.version {
        Version::V2 => ("memory.max", "memory.current", "inactive_file"),
        Version::V1 => (
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "total_inactive_file",
        ),
    };
    let mut limits = Vec::new();
    for dir in place.ancestors() {
        let limit_path = dir.join(limit_file);
        let Some(limit) = read_optional(&limit_path)? else {
            continue;
        };
        let limit = limit.trim();
        if limit == "max" {
            continue;
        }
        let max: u64 = limit
            .parse()
            .map_err(|_| malformed(&limit_path, "not a number"))?;
        let used = read_number(&dir.join(usage_file))?.unwrap_or(0);
        let inactive = match read_optional(&dir.join("memory.stat"))? {
            Some(stat) => stat
                .lines()
                .find_map(|l| {
                    l.strip_prefix(inactive_key)?
                        .strip_prefix(' ')?
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0),
            None => 0,
        };
        limits.push(MemoryLimit {
            max,
            used: used.saturating_sub(inactive),
        });
    }
    Ok(limits)
}

/// A file holding one number, if it exists.
fn read_number(path: &Path) -> Result<Option<u64>, GaugeError> {
    read_optional(path)?
        .map(|t| {
            t.trim()
                .parse()
                .map_err(|_| malformed(path, "not a number"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
    }
}
