//! [`Lab`]: building a virtual cluster, and taking it down again without leftovers.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cgroup::{self, Cgroup, Hierarchy};
use crate::net;
use crate::node::{Node, NodeSpec};
use crate::{LabError, MAX_NODES};

/// Prefix of every network namespace a lab creates: `rmx-<creator pid>-<n>-hub` and
/// `rmx-<creator pid>-<n>-n<K>`.
const NETNS_PREFIX: &str = "rmx-";
/// Prefix of lab cgroups (`rmosix-lab-<pid>-<n>-n<K>`) and lab dirs
/// (`/var/tmp/rmosix-lab-<pid>-<n>`).
const PREFIX: &str = "rmosix-lab-";
/// Where lab dirs go: shared by all nodes, unlike /tmp and /run, which each node replaces.
const LAB_PARENT: &str = "/var/tmp";
/// Marks a lab dir kept by `RMOSIX_KEEP_LAB=1`, so [`cleanup_stale`] leaves it alone.
const KEPT_MARK: &str = "KEPT";
/// How long all daemons together may take to create their sockets.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node's init may take to appear.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The least memory limit a node may have, in MiB: its init, daemon and a tool or two must
/// fit, or the kernel kills them before any test begins.
const MIN_MEMORY_MIB: u64 = 64;
/// How long a cgroup may stay busy after its processes were killed.
const CGROUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Labs started by this process so far: makes names unique when tests run in parallel.
static LABS: AtomicU32 = AtomicU32::new(0);

/// What lab to build.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// How many nodes, 1 to 20.
    pub nodes: usize,
    /// CPUs each node may use (e.g. 0.5); `None` leaves them unlimited.
    pub cpu_quota: Option<f64>,
    /// CPUs of the nodes that differ from `cpu_quota`, by node (e.g. node 1 with a whole
    /// CPU beside nodes of a quarter). Empty by default.
    pub node_cpu_quota: BTreeMap<u16, f64>,
    /// Memory each node's processes may use together, in MiB (its cgroup's memory limit);
    /// `None` leaves it unlimited.
    pub memory_mib: Option<u64>,
    /// Memory limits of the nodes that differ from `memory_mib`, by node, in MiB. Empty by
    /// default.
    pub node_memory_mib: BTreeMap<u16, u64>,
    /// Where `mosixd`, `mosrun`, `migrate` and `mosctl` live; see
    /// [`bin_dir_of_current_test`](crate::bin_dir_of_current_test).
    pub bin_dir: PathBuf,
    /// Whether the daemons move processes by themselves (their balancing loop). Off by
    /// default: `mosixd --no-balance`, so that a test's processes stay where it puts them.
    pub balance: bool,
    /// The nodes whose daemon serves metrics (`mosixd --metrics ADDR`), and the address in
    /// the node's own network, e.g. `127.0.0.1:9464`. None by default.
    pub metrics: BTreeMap<u16, SocketAddr>,
    /// Further options of every node's daemon, each one word without blanks (e.g.
    /// `--same-files=/tmp/same/`). None by default.
    pub daemon_args: Vec<String>,
    /// Options of the nodes whose daemon's differ from `daemon_args`, by node: they stand
    /// for `daemon_args` there (e.g. node 3 without a `--dfsa` the others declare). Empty
    /// by default.
    pub node_daemon_args: BTreeMap<u16, Vec<String>>,
}

impl LabConfig {
    /// `nodes` nodes without a CPU quota, running the binaries in `bin_dir`.
    pub fn new(nodes: usize, bin_dir: impl Into<PathBuf>) -> LabConfig {
        LabConfig {
            nodes,
            cpu_quota: None,
            node_cpu_quota: BTreeMap::new(),
            memory_mib: None,
            node_memory_mib: BTreeMap::new(),
            bin_dir: bin_dir.into(),
            balance: false,
            metrics: BTreeMap::new(),
            daemon_args: Vec::new(),
            node_daemon_args: BTreeMap::new(),
        }
    }

    /// The further options of node `k`'s daemon: its own, else `daemon_args`.
    pub fn daemon_args_of(&self, k: u16) -> &[String] {
        self.node_daemon_args.get(&k).unwrap_or(&self.daemon_args)
    }

    /// The CPUs node `k` may use: its own quota, else `cpu_quota`.
    pub fn quota_of(&self, k: u16) -> Option<f64> {
        self.node_cpu_quota.get(&k).copied().or(self.cpu_quota)
    }

    /// The memory node `k`'s processes may use, in MiB: its own limit, else `memory_mib`.
    pub fn memory_of(&self, k: u16) -> Option<u64> {
        self.node_memory_mib.get(&k).copied().or(self.memory_mib)
    }

    /// Every memory limit the lab would set, of any node, in MiB.
    fn memory_limits(&self) -> impl Iterator<Item = u64> + '_ {
        self.memory_mib
            .into_iter()
            .chain(self.node_memory_mib.values().copied())
    }

    /// Every quota the lab would set, of any node.
    fn quotas(&self) -> impl Iterator<Item = f64> + '_ {
        self.cpu_quota
            .into_iter()
            .chain(self.node_cpu_quota.values().copied())
    }
}

/// A running virtual cluster. Dropping it tears it down (also when a test panics).
#[derive(Debug)]
pub struct Lab {
    name: String,
    dir: PathBuf,
    hub: Option<String>,
    /// Node network namespaces created so far.
    netns: Vec<String>,
    /// Node cgroups created so far.
    cgroups: Vec<Cgroup>,
    nodes: Vec<Node>,
    torn_down: bool,
}

impl Lab {
    /// Builds the lab: removes leftovers of crashed runs, writes map and key, makes the
    /// network and cgroups, starts every node's `mosixd` and waits until each listens.
    /// On error, whatever was built is torn down again.
    pub fn start(cfg: LabConfig) -> Result<Lab, LabError> {
        if !(1..=MAX_NODES).contains(&cfg.nodes) {
            return Err(LabError::NodeCount(cfg.nodes));
        }
        if let Some(q) = cfg.quotas().find(|q| !(q.is_finite() && *q > 0.0)) {
            return Err(LabError::CpuQuota(q));
        }
        if let Some(m) = cfg.memory_limits().find(|&m| m < MIN_MEMORY_MIB) {
            return Err(LabError::MemoryLimit {
                mib: m,
                least: MIN_MEMORY_MIB,
            });
        }
        let daemon = cfg.bin_dir.join("mosixd");
        if !daemon.is_file() {
            return Err(LabError::MissingBinary { path: daemon });
        }
        if crate::effective_uid() != Some(0) {
            return Err(LabError::NeedsRoot);
        }
        if let Err(e) = cleanup_stale() {
            tracing::warn!(error = %e, "removing leftovers of earlier labs");
        }
        let unique = format!(
            "{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            name: format!("{NETNS_PREFIX}{unique}"),
            dir: Path::new(LAB_PARENT).join(format!("{PREFIX}{unique}")),
            hub: None,
            netns: Vec::new(),
            cgroups: Vec::new(),
            nodes: Vec::new(),
            torn_down: false,
        };
        // From here on, an early return drops `lab`, which removes what exists so far.
        lab.build(&cfg, &daemon, &unique)?;
        Ok(lab)
    }

    fn build(&mut self, cfg: &LabConfig, daemon: &Path, unique: &str) -> Result<(), LabError> {
        let span = tracing::info_span!("lab", name = %self.name, nodes = cfg.nodes);
        let _enter = span.enter();
        create_dir(&self.dir)?;
        create_dir(&self.work_dir())?;
        write_map(&self.map_path(), &self.name, cfg.nodes)?;
        write_key(&self.key_path())?;

        let hierarchy = Hierarchy::detect();
        if hierarchy.is_none()
            && (cfg.quotas().next().is_some() || cfg.memory_limits().next().is_some())
        {
            return Err(LabError::NoCpuCgroup);
        }
        let memory = Hierarchy::detect_memory();
        if memory.is_none() && cfg.memory_limits().next().is_some() {
            return Err(LabError::NoMemoryCgroup);
        }
        net::block_host_route()?;
        let hub = format!("{}-hub", self.name);
        self.hub = Some(hub.clone());
        net::create_hub(&hub)?;
        let ids = 1..=cfg.nodes as u16;
        let names: Vec<String> = ids.clone().map(|k| format!("{}-n{k}", self.name)).collect();
        for (k, ns) in ids.clone().zip(&names) {
            net::add_netns(ns)?;
            self.netns.push(ns.clone());
            net::attach_node(&hub, ns, k)?;
            if let Some(h) = &hierarchy {
                let mut cg = Cgroup::create(h, &format!("{PREFIX}{unique}-n{k}"), cfg.quota_of(k))?;
                let limited = match (cfg.memory_of(k), &memory) {
                    (Some(mib), Some(memory)) => cg.limit_memory(memory, mib << 20),
                    _ => Ok(()),
                };
                // Kept before the error returns, so that teardown removes what was made.
                self.cgroups.push(cg);
                limited?;
            }
        }
        for (k, ns) in ids.zip(&names) {
            let spec = NodeSpec {
                id: k,
                netns: ns.clone(),
                hub: hub.clone(),
                peers: names.iter().filter(|n| *n != ns).cloned().collect(),
                cgroup: self.cgroups.get(usize::from(k) - 1).cloned(),
                lab_dir: &self.dir,
                bin_dir: &cfg.bin_dir,
                daemon,
                map: &self.map_path(),
                key: &self.key_path(),
                balance: cfg.balance,
                metrics: cfg.metrics.get(&k).copied(),
                daemon_args: cfg.daemon_args_of(k),
            };
            self.nodes.push(Node::start(spec, INIT_TIMEOUT)?);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            node.wait_ready(deadline, START_TIMEOUT)?;
        }
        tracing::info!(dir = %self.dir.display(), "lab ready");
        Ok(())
    }

    /// Node `n` (1-based, as in the map).
    ///
    /// # Panics
    /// If the lab has no node `n`.
    pub fn node(&self, n: usize) -> &Node {
        match n.checked_sub(1).and_then(|i| self.nodes.get(i)) {
            Some(node) => node,
            None => panic!(
                "lab {} has nodes 1 to {}, not {n}",
                self.name,
                self.nodes.len()
            ),
        }
    }

    /// All nodes, node 1 first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The lab's unique name; its network namespaces are named `<name>-hub` and `<name>-nK`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lab's directory, seen at the same path by the host and every node:
    /// `/var/tmp/rmosix-lab-<pid>-<n>/` with `mosix.map`, `key`, `nodeK.log` and `work/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A directory for tests' files, visible to every node: `<dir>/work`.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The cluster map all nodes share.
    pub fn map_path(&self) -> PathBuf {
        self.dir.join("mosix.map")
    }

    /// The cluster key all nodes share.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key")
    }

    /// Tears the lab down now and reports every step that failed (dropping it does the same
    /// and logs the failures).
    pub fn stop(mut self) -> Result<(), LabError> {
        self.teardown()
    }

    /// Kills the nodes, waits for their processes to go, deletes namespaces (and with them
    /// every veth and the bridge) and cgroups, and removes the lab dir unless
    /// `RMOSIX_KEEP_LAB=1`. Goes on past failures and reports them all.
    fn teardown(&mut self) -> Result<(), LabError> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Ok(());
        }
        let mut errors = Vec::new();
        for node in &self.nodes {
            if let Err(e) = node.kill_namespace() {
                errors.push(e);
            }
        }
        for ns in self.netns.iter().chain(&self.hub) {
            if let Err(e) = net::del_netns(ns) {
                errors.push(e);
            }
        }
        for cg in &self.cgroups {
            // A node that lingered still has processes: kill them so the cgroup can go.
            kill_pids(&cg.pids());
            if let Err(e) = cg.remove(CGROUP_TIMEOUT) {
                errors.push(e);
            }
        }
        if std::env::var_os("RMOSIX_KEEP_LAB").is_some_and(|v| v == "1") {
            if let Err(e) = fs::write(self.dir.join(KEPT_MARK), "") {
                tracing::warn!(error = %e, "marking kept lab dir");
            }
            eprintln!("rmosix-lab: kept {}", self.dir.display());
        } else if let Err(source) = fs::remove_dir_all(&self.dir)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(LabError::Io {
                action: "remove",
                path: self.dir.clone(),
                source,
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(LabError::Teardown {
                lab: self.name.clone(),
                errors,
            })
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, "lab teardown");
            eprintln!("rmosix-lab: {e}");
        }
    }
}

/// Removes what crashed earlier labs left behind: network namespaces named `rmx-<pid>-…`
/// and cgroups and lab dirs named `rmosix-lab-<pid>-…` whose creating process is gone.
/// Their processes are killed first. Kept lab dirs (`RMOSIX_KEEP_LAB=1`) stay.
/// [`Lab::start`] calls it; labs of live processes are never touched.
pub fn cleanup_stale() -> Result<(), LabError> {
    let mut errors = Vec::new();
    for ns in net::list_netns()? {
        if !is_stale(ns.strip_prefix(NETNS_PREFIX)) {
            continue;
        }
        tracing::info!(netns = %ns, "removing stale network namespace");
        if let Ok(pids) = crate::cmd::ip(&["netns", "pids", &ns]) {
            let pids: Vec<u32> = pids
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            kill_pids(&pids);
        }
        if let Err(e) = net::del_netns(&ns) {
            errors.push(e);
        }
    }
    let mut roots: Vec<PathBuf> = [Hierarchy::detect(), Hierarchy::detect_memory()]
        .into_iter()
        .flatten()
        .map(|h| h.root().to_owned())
        .collect();
    // In cgroup v2 both controllers are in one hierarchy.
    roots.dedup();
    for root in &roots {
        for dir in stale_entries(root) {
            tracing::info!(cgroup = %dir.display(), "removing stale cgroup");
            kill_pids(&cgroup::procs_of(&dir));
            if let Err(e) = cgroup::remove_dir(&dir, CGROUP_TIMEOUT) {
                errors.push(e);
            }
        }
    }
    for dir in stale_entries(Path::new(LAB_PARENT)) {
        if dir.join(KEPT_MARK).exists() {
            continue;
        }
        tracing::info!(dir = %dir.display(), "removing stale lab dir");
        if let Err(source) = fs::remove_dir_all(&dir) {
            errors.push(LabError::Io {
                action: "remove",
                path: dir,
                source,
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LabError::Teardown {
            lab: "stale labs".to_owned(),
            errors,
        })
    }
}

/// Entries of `parent` named `rmosix-lab-<pid>-…` whose creator is gone.
fn stale_entries(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            is_stale(name.to_str().and_then(|n| n.strip_prefix(PREFIX)))
        })
        .map(|e| e.path())
        .collect()
}

/// Whether a name's rest after the prefix, `<pid>-…`, names a creator that is gone.
fn is_stale(rest: Option<&str>) -> bool {
    let Some(pid) = rest.and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
        return false;
    };
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// SIGKILLs leftover processes (of a stale lab, or of a node that did not die).
fn kill_pids(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = Command::new("kill");
    cmd.arg("-KILL").args(pids.iter().map(u32::to_string));
    // Some may have exited meanwhile; kill then fails for those, which is fine.
    let _ = crate::cmd::run(&mut cmd);
}

fn create_dir(path: &Path) -> Result<(), LabError> {
    fs::create_dir(path).map_err(|source| LabError::Io {
        action: "create",
        path: path.to_owned(),
        source,
    })
}

/// The map: one range line for all nodes, 10.231.0.1 upwards.
fn write_map(path: &Path, name: &str, nodes: usize) -> Result<(), LabError> {
    let text = format!(
        "# rmosix lab {name}: {nodes} node(s), node K at 10.231.0.K (written by rmosix-lab)\n\
         # first-ID address count\n\
         1 {} {nodes}\n",
        net::node_addr(1)
    );
    fs::write(path, text).map_err(|source| LabError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// The cluster key, as `mosctl keygen` writes it: 32 random bytes as 64 hex digits and a
/// newline, mode 0600.
fn write_key(path: &Path) -> Result<(), LabError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| LabError::Io {
            action,
            path,
            source,
        }
    };
    let mut bytes = [0u8; 32];
    let random = Path::new("/dev/urandom");
    fs::File::open(random)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("read", random))?;
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.push('\n');
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(hex.as_bytes()))
        .map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_need_a_dead_creator() {
        let me = std::process::id().to_string();
        assert!(!is_stale(Some(&format!("{me}-0-hub"))));
        assert!(is_stale(Some(&format!("{}-3-n1", u32::MAX))));
        assert!(!is_stale(Some("hub")));
        assert!(!is_stale(None));
    }

    #[test]
    fn a_node_with_options_of_its_own_has_those_instead_of_everyones() {
        let mut cfg = LabConfig::new(3, "/bin");
        cfg.daemon_args = vec!["--dfsa=/shared".to_owned()];
        cfg.node_daemon_args.insert(3, Vec::new());
        assert_eq!(cfg.daemon_args_of(1), ["--dfsa=/shared"]);
        assert_eq!(cfg.daemon_args_of(2), ["--dfsa=/shared"]);
        assert!(cfg.daemon_args_of(3).is_empty());
    }

    #[test]
    fn map_and_key_have_the_expected_shape() {
        let dir = std::env::temp_dir().join(format!("rmosix-lab-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("mkdir");
        let (map, key) = (dir.join("mosix.map"), dir.join("key"));
        write_map(&map, "rmx-test", 3).expect("map");
        write_key(&key).expect("key");
        let map_text = fs::read_to_string(&map).expect("read map");
        assert!(map_text.lines().any(|l| l == "1 10.231.0.1 3"));
        let key_text = fs::read_to_string(&key).expect("read key");
        assert_eq!(key_text.len(), 65);
        assert!(key_text[..64].bytes().all(|b| b.is_ascii_hexdigit()));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&key).expect("stat key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_node_quota_overrides_the_common_one() {
        let mut cfg = LabConfig::new(3, "/nonexistent");
        assert_eq!(cfg.quota_of(1), None);
        cfg.cpu_quota = Some(0.25);
        cfg.node_cpu_quota.insert(1, 1.0);
        assert_eq!(
            [cfg.quota_of(1), cfg.quota_of(2), cfg.quota_of(3)],
            [Some(1.0), Some(0.25), Some(0.25)]
        );
    }

    #[test]
    fn a_node_memory_limit_overrides_the_common_one() {
        let mut cfg = LabConfig::new(3, "/nonexistent");
        assert_eq!(cfg.memory_of(1), None);
        cfg.memory_mib = Some(1024);
        cfg.node_memory_mib.insert(1, 256);
        assert_eq!(
            [cfg.memory_of(1), cfg.memory_of(2), cfg.memory_of(3)],
            [Some(256), Some(1024), Some(1024)]
        );
    }

    #[test]
    fn bad_configs_are_refused_before_anything_is_built() {
        let bin = PathBuf::from("/nonexistent");
        assert!(matches!(
            Lab::start(LabConfig::new(0, &bin)),
            Err(LabError::NodeCount(0))
        ));
        assert!(matches!(
            Lab::start(LabConfig::new(21, &bin)),
            Err(LabError::NodeCount(21))
        ));
        let cfg = LabConfig {
            cpu_quota: Some(-1.0),
            ..LabConfig::new(2, &bin)
        };
        assert!(matches!(Lab::start(cfg), Err(LabError::CpuQuota(_))));
        let mut cfg = LabConfig::new(2, &bin);
        cfg.node_cpu_quota.insert(2, 0.0);
        assert!(matches!(Lab::start(cfg), Err(LabError::CpuQuota(q)) if q == 0.0));
        let mut cfg = LabConfig::new(2, &bin);
        cfg.node_memory_mib.insert(1, 16);
        assert!(matches!(
            Lab::start(cfg),
            Err(LabError::MemoryLimit { mib: 16, .. })
        ));
        assert!(matches!(
            Lab::start(LabConfig::new(2, &bin)),
            Err(LabError::MissingBinary { .. })
        ));
    }
}
