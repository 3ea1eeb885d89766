//! A node's cgroup: where it lives (cgroup v1 or v2), its CPU quota in the `cpu` controller,
//! its memory limit in the `memory` controller, and its removal once its processes are gone.
//! In cgroup v2 both are one directory; in v1 each controller has its own hierarchy, and a
//! node with a memory limit has a second directory of the same name under the `memory` one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{LabError, POLL};

/// The CFS period the quota is a share of: 100 ms, the kernel's default.
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts (1 ms).
const MIN_QUOTA_US: u64 = 1_000;
/// The batch sub-cgroup's name and its weight (v1 `cpu.shares`; the kernel's least is 2,
/// against 1024 for a task at nice 0).
const BATCH: &str = "batch";
const BATCH_SHARES: &str = "2";

/// A cgroup hierarchy with the controller it was detected for (`cpu` or `memory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// cgroup v1, the directory the controller is mounted on.
    V1(PathBuf),
    /// cgroup v2, the mount point of the unified hierarchy.
    V2(PathBuf),
}

impl Hierarchy {
    /// Finds the `cpu` controller: v1 at /sys/fs/cgroup/cpu first, then v2 at /sys/fs/cgroup
    /// or /sys/fs/cgroup/unified if its `cgroup.controllers` lists `cpu`.
    pub(crate) fn detect() -> Option<Hierarchy> {
        Hierarchy::detect_controller("cpu", "cpu.cfs_quota_us")
    }

    /// Finds the `memory` controller, as [`Hierarchy::detect`] finds `cpu`: v1 at
    /// /sys/fs/cgroup/memory first, then v2.
    pub(crate) fn detect_memory() -> Option<Hierarchy> {
        Hierarchy::detect_controller("memory", "memory.limit_in_bytes")
    }

    /// v1 at /sys/fs/cgroup/CONTROLLER if it has `v1_file`, else v2 at /sys/fs/cgroup or
    /// /sys/fs/cgroup/unified if its `cgroup.controllers` lists the controller.
    fn detect_controller(controller: &str, v1_file: &str) -> Option<Hierarchy> {
        let v1 = Path::new("/sys/fs/cgroup").join(controller);
        if v1.join(v1_file).exists() {
            return Some(Hierarchy::V1(v1));
        }
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(Path::new)
            .find(|root| {
                fs::read_to_string(root.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
            })
            .map(|root| Hierarchy::V2(root.to_owned()))
    }

    /// The directory holding the lab's cgroups.
    pub(crate) fn root(&self) -> &Path {
        match self {
            Hierarchy::V1(p) | Hierarchy::V2(p) => p,
        }
    }
}

/// One node's cgroup.
#[derive(Debug, Clone)]
pub(crate) struct Cgroup {
    /// The directory in the `cpu` hierarchy.
    path: PathBuf,
    /// Whether it is in a v1 hierarchy, where a cgroup may hold processes and weighted
    /// children at once.
    v1: bool,
    /// The directory that holds the memory limit when it is not `path`: the node's cgroup
    /// in a v1 `memory` hierarchy. `None` without a limit, or in v2 where `path` has it.
    memory: Option<PathBuf>,
}

impl Cgroup {
    /// Creates the cgroup `name` and sets its quota (`None`: unlimited).
    pub(crate) fn create(
        hierarchy: &Hierarchy,
        name: &str,
        quota: Option<f64>,
    ) -> Result<Cgroup, LabError> {
        if let Hierarchy::V2(root) = hierarchy {
            // Children only get the cpu files if the parent delegates the controller.
            write(&root.join("cgroup.subtree_control"), "+cpu")?;
        }
        let path = hierarchy.root().join(name);
        fs::create_dir(&path).map_err(|source| LabError::Io {
            action: "create cgroup",
            path: path.clone(),
            source,
        })?;
        let cgroup = Cgroup {
            path,
            v1: matches!(hierarchy, Hierarchy::V1(_)),
            memory: None,
        };
        let quota_us = quota.map(|cpus| ((cpus * PERIOD_US as f64) as u64).max(MIN_QUOTA_US));
        match hierarchy {
            Hierarchy::V1(_) => {
                write(
                    &cgroup.path.join("cpu.cfs_period_us"),
                    &PERIOD_US.to_string(),
                )?;
                let quota = quota_us.map_or_else(|| "-1".to_owned(), |q| q.to_string());
                write(&cgroup.path.join("cpu.cfs_quota_us"), &quota)?;
            }
            Hierarchy::V2(_) => {
                let quota = quota_us.map_or_else(|| "max".to_owned(), |q| q.to_string());
                write(
                    &cgroup.path.join("cpu.max"),
                    &format!("{quota} {PERIOD_US}"),
                )?;
            }
        }
        Ok(cgroup)
    }

    /// Limits the memory of the node's processes to `bytes` (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`), in `memory`, the hierarchy of the `memory` controller: in the
    /// node's own directory when that hierarchy is the `cpu` one (v2), else in a directory of
    /// the same name there. Call it before any process joins the node.
    pub(crate) fn limit_memory(&mut self, memory: &Hierarchy, bytes: u64) -> Result<(), LabError> {
        let cpu_root = self.path.parent().unwrap_or(&self.path);
        let dir = if memory.root() == cpu_root {
            self.path.clone()
        } else {
            let name = self.path.file_name().unwrap_or_default();
            let dir = memory.root().join(name);
            fs::create_dir(&dir).map_err(|source| LabError::Io {
                action: "create cgroup",
                path: dir.clone(),
                source,
            })?;
            self.memory = Some(dir.clone());
            dir
        };
        match memory {
            Hierarchy::V1(_) => write(&dir.join("memory.limit_in_bytes"), &bytes.to_string()),
            Hierarchy::V2(root) => {
                // Children only get the memory files if the parent delegates the controller.
                write(&root.join("cgroup.subtree_control"), "+memory")?;
                write(&dir.join("memory.max"), &bytes.to_string())
            }
        }
    }

    /// The cgroup directory in the `cpu` hierarchy.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup directory whose files hold the node's memory limit and use: its own
    /// directory in the `memory` hierarchy (v1), else [`Cgroup::path`].
    pub(crate) fn memory_path(&self) -> &Path {
        self.memory.as_deref().unwrap_or(&self.path)
    }

    /// The files a process writes its PID to in order to join (`cgroup.procs`, which both
    /// versions have): the `cpu` cgroup's, and the `memory` one's when it is apart.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        std::iter::once(&self.path)
            .chain(&self.memory)
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    /// The [`Cgroup::procs_files`] joined by ':', as the lab's shell scripts take them.
    pub(crate) fn procs_list(&self) -> std::ffi::OsString {
        let files: Vec<_> = self
            .procs_files()
            .into_iter()
            .map(PathBuf::into_os_string)
            .collect();
        files.join(std::ffi::OsStr::new(":"))
    }

    /// PIDs (host view) of the processes in the cgroup and its sub-cgroups, in either
    /// hierarchy.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = std::iter::once(&self.path)
            .chain(&self.memory)
            .flat_map(|dir| procs_of(dir))
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Removes the cgroup (in both hierarchies), retrying while the kernel still counts
    /// exiting processes in it.
    pub(crate) fn remove(&self, timeout: Duration) -> Result<(), LabError> {
        if let Some(memory) = &self.memory {
            remove_dir(memory, timeout)?;
        }
        remove_dir(&self.path, timeout)
    }

    /// The `cgroup.procs` of the node's batch sub-cgroup, made on first use: its processes
    /// together weigh as little as the kernel allows against the node's own tasks. `None` in
    /// cgroup v2, where a cgroup holding processes (the node's daemon) cannot hand the `cpu`
    /// controller to children.
    pub(crate) fn batch_procs_file(&self) -> Result<Option<PathBuf>, LabError> {
        if !self.v1 {
            return Ok(None);
        }
        let dir = self.path.join(BATCH);
        match fs::create_dir(&dir) {
            Ok(()) => write(&dir.join("cpu.shares"), BATCH_SHARES)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(LabError::Io {
                    action: "create cgroup",
                    path: dir,
                    source,
                });
            }
        }
        Ok(Some(dir.join("cgroup.procs")))
    }
}

/// PIDs listed in the `cgroup.procs` of the cgroup directory `path` and of the cgroups below.
pub(crate) fn procs_of(path: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for child in children(path) {
        pids.extend(procs_of(&child));
    }
    pids
}

/// The cgroups right below the cgroup directory `path`.
fn children(path: &Path) -> Vec<PathBuf> {
    fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// `rmdir` a cgroup and those below it, retrying on EBUSY until `timeout`; a missing one
/// counts as removed.
pub(crate) fn remove_dir(path: &Path, timeout: Duration) -> Result<(), LabError> {
    for child in children(path) {
        remove_dir(&child, timeout)?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) if Instant::now() >= deadline => {
                return Err(LabError::CgroupBusy {
                    path: path.to_owned(),
                    timeout,
                    source,
                });
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn write(path: &Path, value: &str) -> Result<(), LabError> {
    fs::write(path, value).map_err(|source| LabError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_finds_a_hierarchy_with_cpu_files_or_none() {
        match Hierarchy::detect() {
            Some(Hierarchy::V1(p)) => assert!(p.join("cpu.cfs_quota_us").exists()),
            Some(Hierarchy::V2(p)) => assert!(p.join("cgroup.controllers").exists()),
            None => {}
        }
        match Hierarchy::detect_memory() {
            Some(Hierarchy::V1(p)) => assert!(p.join("memory.limit_in_bytes").exists()),
            Some(Hierarchy::V2(p)) => assert!(p.join("cgroup.controllers").exists()),
            None => {}
        }
    }
}
