//! What a node knows of the cluster: [`ClusterView`] of [`NodeInfo`]s with their [`Modes`],
//! and the measured [`LinkSpeeds`] a move's cost is computed from.

use std::collections::BTreeMap;
use std::time::Duration;

use rmosix_config::NodeId;

/// The speed of the standard CPU, MOSIX's yardstick: a node of speed 20000 runs a CPU-bound
/// process twice as fast as a standard one (gossimon's `MOSIX_STD_SPEED`, reference 5.2).
pub const STANDARD_SPEED: u32 = 10_000;

/// Load units of one CPU-busy process on one standard CPU (reference 5.2).
pub const ONE_PROCESS: f64 = 100.0;

/// A node's modes, as set by `mosctl` (reference 1.4). All off is a node that takes part in
/// balancing both ways.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Modes {
    /// `mosctl stay`: no process leaves this node by itself (automatic moves out stop).
    pub stay: bool,
    /// `mosctl lstay`: this node's own processes do not leave by themselves; guests may.
    pub lstay: bool,
    /// `mosctl block`: no guest may arrive (the node's own processes may still come home).
    pub block: bool,
    /// `mosctl quiet`: the node takes no part in balancing: it decides nothing and is no
    /// target (except home for its own processes).
    pub quiet: bool,
    /// `mosctl expel`: every guest leaves; acts as `block` too.
    pub expel: bool,
}

/// What the view holds about one node.
#[derive(Clone, PartialEq, Debug)]
pub struct NodeInfo {
    /// Whether the failure detector believes it is up. A dead node is never a target.
    pub alive: bool,
    /// Its `mosctl` modes.
    pub modes: Modes,
    /// Its load in MOSIX units, **already normalised** by speed and CPUs as gossip carries it
    /// and `mosmon` shows it: `100 × runnable / cpus × STANDARD_SPEED / speed`. One CPU-busy
    /// process on an idle standard single-CPU node is 100; on a node of two such CPUs, 50.
    pub load: u32,
    /// Its speed, [`STANDARD_SPEED`] for a standard CPU (`mosctl setspeed`).
    pub speed: u32,
    /// How many CPUs it may use, fractional under a cgroup quota (`cpu.max` of half a CPU is
    /// 0.5). Speed and CPUs give the load one more process adds ([`NodeInfo::process_share`]).
    pub cpus: f64,
    /// Free memory, bytes (what its cgroup still allows, if it has a limit).
    pub free_memory: u64,
    /// Total memory, bytes (its cgroup's limit, if any).
    pub total_memory: u64,
    /// How many of its processes could leave it by balance now, as its daemon counted them
    /// at its last round ([`crate::ready_to_leave`]). A node with none sends nothing, so
    /// flood prevention deals it no share of a target's room.
    pub ready: u32,
    /// When this entry was last heard of, on the caller's monotonic clock (the same clock as
    /// [`crate::Round::now`]). An entry older than [`crate::Policy::stale_after`] is no target.
    pub heard: Duration,
}

impl NodeInfo {
    /// The load units one process using a whole CPU adds to this node: 100 on one standard
    /// CPU, less on faster or more CPUs (gossimon's `calcFutureLoad`, reference 5.2).
    /// Infinite for a node that reports no speed or no CPUs, so that it is never chosen.
    pub fn process_share(&self) -> f64 {
        let capacity = self.capacity();
        if capacity > 0.0 {
            ONE_PROCESS / capacity
        } else {
            f64::INFINITY
        }
    }

    /// How many standard CPUs the node is worth: speed / standard speed × CPUs.
    pub fn capacity(&self) -> f64 {
        f64::from(self.speed) / f64::from(STANDARD_SPEED) * self.cpus.max(0.0)
    }

    /// The rate, in standard CPUs, at which one CPU-bound process runs on this node when the
    /// node's load (counting that process) is `load`: a whole CPU of this speed while the
    /// node has a CPU per runnable process, a share of it beyond.
    pub(crate) fn throughput(&self, load: f64) -> f64 {
        let alone = f64::from(self.speed) / f64::from(STANDARD_SPEED) * self.cpus.clamp(0.0, 1.0);
        if load <= 0.0 {
            alone
        } else {
            alone.min(ONE_PROCESS / load)
        }
    }
}

/// What one node knows of all nodes, itself included, keyed by node number.
#[derive(Clone, Default, PartialEq, Debug)]
pub struct ClusterView {
    /// The nodes. A node missing here is unknown: never a target.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
}

impl ClusterView {
    /// An empty view.
    pub fn new() -> ClusterView {
        ClusterView::default()
    }

    /// Adds or replaces a node's entry.
    pub fn insert(&mut self, node: NodeId, info: NodeInfo) {
        self.nodes.insert(node, info);
    }

    /// A node's entry.
    pub fn get(&self, node: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&node)
    }
}

/// Measured link speeds, bytes per second: one figure for every pair, and any pairs measured
/// apart. Links are taken as symmetric.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LinkSpeeds {
    /// The speed of a pair that has no figure of its own.
    pub default: u64,
    /// Figures for single pairs, either way round.
    pub pairs: BTreeMap<(NodeId, NodeId), u64>,
}

impl LinkSpeeds {
    /// The same speed between every two nodes.
    pub fn uniform(bytes_per_second: u64) -> LinkSpeeds {
        LinkSpeeds {
            default: bytes_per_second,
            pairs: BTreeMap::new(),
        }
    }

    /// The speed between `a` and `b`.
    pub fn between(&self, a: NodeId, b: NodeId) -> u64 {
        self.pairs
            .get(&(a, b))
            .or_else(|| self.pairs.get(&(b, a)))
            .copied()
            .unwrap_or(self.default)
    }

    /// How long sending `bytes` from `from` to `to` takes for a process whose home is `home`.
    /// A move between two remotes is relayed by home (docs/design.md), so its bytes cross
    /// two links.
    pub fn transfer_time(&self, bytes: u64, from: NodeId, to: NodeId, home: NodeId) -> Duration {
        let leg = |a, b| {
            let speed = self.between(a, b).max(1) as f64;
            bytes as f64 / speed
        };
        let seconds = if from == home || to == home {
            leg(from, to)
        } else {
            leg(from, home) + leg(home, to)
        };
        Duration::from_secs_f64(seconds.min(1e9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u16) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn node(speed: u32, cpus: f64) -> NodeInfo {
        NodeInfo {
            alive: true,
            modes: Modes::default(),
            load: 0,
            speed,
            cpus,
            free_memory: 0,
            total_memory: 0,
            ready: 0,
            heard: Duration::ZERO,
        }
    }

    #[test]
    fn process_share_follows_speed_and_cpus() {
        assert_eq!(node(10_000, 1.0).process_share(), 100.0);
        assert_eq!(node(20_000, 1.0).process_share(), 50.0);
        assert_eq!(node(10_000, 4.0).process_share(), 25.0);
        assert_eq!(node(10_000, 0.5).process_share(), 200.0);
        assert!(node(0, 1.0).process_share().is_infinite());
        assert!(node(10_000, 0.0).process_share().is_infinite());
    }

    #[test]
    fn throughput_is_one_cpu_at_most_and_shared_beyond() {
        let fast = node(20_000, 2.0);
        assert_eq!(fast.throughput(25.0), 2.0);
        // Four CPU-bound processes on two CPUs of twice the standard speed: load 100, each
        // runs at one standard CPU.
        assert_eq!(fast.throughput(100.0), 1.0);
        let half = node(10_000, 0.5);
        assert_eq!(half.throughput(200.0), 0.5);
    }

    #[test]
    fn transfers_between_remotes_cross_home_twice() {
        let mut links = LinkSpeeds::uniform(100);
        links.pairs.insert((n(2), n(1)), 50);
        assert_eq!(links.between(n(1), n(2)), 50);
        assert_eq!(links.between(n(2), n(3)), 100);
        assert_eq!(
            links.transfer_time(100, n(1), n(3), n(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            links.transfer_time(100, n(2), n(1), n(1)),
            Duration::from_secs(2)
        );
        // 2 -> 3 for a process of node 1: 2 -> 1 (2 s) then 1 -> 3 (1 s).
        assert_eq!(
            links.transfer_time(100, n(2), n(3), n(1)),
            Duration::from_secs(3)
        );
    }
}
