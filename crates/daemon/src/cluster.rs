//! The daemon's side of the cluster view (docs/gossip.md, "Wiring it into the daemon"): the
//! gauge that measures this node, the view that gossips it, and the task that publishes the
//! one into the other every second.
//!
//! The gauge samples on a thread of its own (it reads /proc and /sys synchronously, every
//! [`Gauge::sample_every`]); the publisher reads it, adds the node's modes and its
//! compatibility key, and hands the state to the view.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use rmosix_config::{Host, Map, MapError, NodeId};
use rmosix_gauge::{CgroupPath, Gauge, GaugeError, Root, mosix_units};
use rmosix_transport::ClusterKey;
use rmosix_view::{Counters, MAX_COMPAT, NodeState, NodeView, Status, View, ViewHandle};
use rmosix_wire::{Liveness, NodeFigures, NodeModes, NodeStatus};

use crate::daemon::{DaemonError, Shared};

/// How often this node's state is published: the view's own publish period, so every
/// republication carries fresh figures.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The gauge and the view of one daemon.
pub(crate) struct Cluster {
    gauge: Arc<Mutex<Gauge>>,
    /// `None` once the daemon has left the cluster (on SIGTERM).
    view: Mutex<Option<ViewHandle>>,
    /// A digest of this node's `KernelFacts`: what a move here needs to match.
    compat: Vec<u8>,
    /// How many of its processes the balancer found ready to leave at its last round.
    ready: AtomicU32,
}

impl Cluster {
    /// Measures this node, the daemon's cgroup or `cgroup`, and joins the cluster: the view
    /// listens on UDP at this node's address in `map` and `port` (the number of the daemon's
    /// TCP port).
    pub async fn start(
        own: NodeId,
        map: &Map,
        key: &ClusterKey,
        port: u16,
        cgroup: Option<CgroupPath>,
    ) -> Result<Cluster, DaemonError> {
        let compat = compat_key().map_err(DaemonError::Probe)?;
        let root = match cgroup {
            Some(cgroup) => Root::host().with_cgroup(cgroup),
            None => Root::host(),
        };
        let gauge = Gauge::new(root).map_err(|e| match e {
            GaugeError::NoSuchCgroup { .. } | GaugeError::CgroupNotMounted { .. } => {
                DaemonError::NodeCgroup(e)
            }
            e => DaemonError::Gauge(e),
        })?;
        let ip = own_ip(own, map).await?;
        let bind = SocketAddr::new(ip, port);
        let gauge = Arc::new(Mutex::new(gauge));
        let cluster = Cluster {
            gauge,
            view: Mutex::new(None),
            compat,
            ready: AtomicU32::new(0),
        };
        // A starting node has no modes set yet.
        let first = cluster.state(Status::default());
        let view = View::start(own, map, key, bind, first)
            .await
            .map_err(|source| DaemonError::Gossip { addr: bind, source })?;
        *lock(&cluster.view) = Some(view);
        spawn_sampler(Arc::downgrade(&cluster.gauge));
        Ok(cluster)
    }

    /// Every node of the map as the view has it; empty once the daemon has left.
    pub fn snapshot(&self) -> Vec<NodeView> {
        lock(&self.view)
            .as_ref()
            .map(ViewHandle::snapshot)
            .unwrap_or_default()
    }

    /// What the view dropped and why; zeros once the daemon has left.
    pub fn counters(&self) -> Counters {
        lock(&self.view)
            .as_ref()
            .map(ViewHandle::counters)
            .unwrap_or_default()
    }

    /// `mosctl setspeed`: the gauge's speed, from its next reading on. In memory only.
    pub fn set_speed(&self, speed: u32) {
        lock(&self.gauge).set_speed(speed);
    }

    /// This node's load over the gauge's last period, unsmoothed: it falls as soon as a
    /// process has left, where the load gossiped falls over seconds. For its own balancing.
    pub fn last_load(&self) -> u32 {
        let reading = lock(&self.gauge).reading();
        mosix_units(reading.runnable, reading.cpus, reading.speed)
    }

    /// The digest of this node's `KernelFacts` it gossips: nodes with another cannot take
    /// its processes.
    pub fn compat(&self) -> &[u8] {
        &self.compat
    }

    /// Hands a reloaded map to the view.
    pub fn reload_map(&self, map: Map) {
        if let Some(view) = lock(&self.view).as_ref()
            && view.reload_map(map).is_err()
        {
            warn!("the cluster view has stopped; the new map reaches peer links only");
        }
    }

    /// Tells the others this node leaves, so they mark it dead at once.
    pub async fn leave(&self) {
        let view = lock(&self.view).take();
        if let Some(view) = view {
            view.leave().await;
        }
    }

    /// How many of this node's processes could leave by balance now, as the balancer's last
    /// round counted them: gossiped from the next publication on.
    pub fn set_ready(&self, ready: u32) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// This node's state now: the gauge's last reading, the processes ready to leave, the
    /// modes, the compatibility key.
    pub fn state(&self, status: Status) -> NodeState {
        let reading = lock(&self.gauge).reading();
        NodeState {
            load: reading.load,
            ready: self.ready.load(Ordering::Relaxed),
            speed: reading.speed,
            milli_cpus: (reading.cpus * 1000.0)
                .round()
                .clamp(0.0, f64::from(u32::MAX)) as u32,
            mem_total: reading.mem_total,
            mem_free: reading.mem_free,
            utilisation_pct: reading.utilisation_pct,
            status,
            compat: self.compat.clone(),
        }
    }
}

/// A node of the view as the tools see it: a dead node's last figures are not shown, as they
/// no longer say anything.
pub(crate) fn node_status(view: &NodeView) -> NodeStatus {
    let liveness = match view.liveness {
        rmosix_view::Liveness::Alive => Liveness::Up,
        rmosix_view::Liveness::Suspect => Liveness::Suspect,
        rmosix_view::Liveness::Dead => Liveness::Dead,
    };
    let figures = match liveness {
        Liveness::Dead => None,
        _ => view.state.as_ref().map(figures),
    };
    NodeStatus {
        node: view.node.get(),
        liveness,
        figures,
    }
}

/// Every node of the current map as the cluster view has it, lowest number first. A node the
/// view does not know yet (the map was just reloaded) is dead until it is heard.
pub(crate) fn every_node(shared: &Shared) -> Vec<NodeStatus> {
    let seen: HashMap<u16, NodeStatus> = shared
        .cluster
        .snapshot()
        .iter()
        .map(|view| (view.node.get(), node_status(view)))
        .collect();
    shared
        .map()
        .nodes()
        .map(|n| {
            seen.get(&n.id.get()).cloned().unwrap_or(NodeStatus {
                node: n.id.get(),
                liveness: Liveness::Dead,
                figures: None,
            })
        })
        .collect()
}

/// A node's state as the tools (and the metrics) show its figures.
pub(crate) fn figures(state: &NodeState) -> NodeFigures {
    let s = state.status;
    NodeFigures {
        load: state.load,
        speed: state.speed,
        milli_cpus: state.milli_cpus,
        mem_total: state.mem_total,
        mem_free: state.mem_free,
        utilisation_pct: state.utilisation_pct,
        modes: NodeModes {
            stay: s.stay,
            lstay: s.lstay,
            block: s.block,
            quiet: s.quiet,
            expel: s.expel,
        },
    }
}

/// Every [`PUBLISH_EVERY`], publish this node's state. Runs for as long as the daemon serves.
pub(crate) async fn publish(shared: &Shared) {
    let mut ticks = tokio::time::interval(PUBLISH_EVERY);
    loop {
        ticks.tick().await;
        publish_now(shared);
    }
}

/// Gossips this node's state as it is now.
fn publish_now(shared: &Shared) {
    let state = shared.cluster.state(shared.modes());
    let published = lock(&shared.cluster.view)
        .as_ref()
        .map(|view| view.publish(state));
    if let Some(Err(e)) = published {
        warn!("cannot publish this node's state: {e}");
    }
}

/// Processes that wanted `processes` CPUs in all have left this node for good: its
/// exported load drops by them (see `Smoother::departed`), and the others hear it now, not
/// at the next publication.
pub(crate) fn departed(shared: &Shared, processes: f64) {
    lock(&shared.cluster.gauge).departed(processes);
    publish_now(shared);
}

/// Samples the gauge on a thread of its own until the daemon drops it. A plain thread, not
/// `spawn_blocking`: the runtime waits for its blocking tasks when it shuts down.
fn spawn_sampler(gauge: Weak<Mutex<Gauge>>) {
    let spawned = std::thread::Builder::new()
        .name("gauge".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                let Some(gauge) = gauge.upgrade() else { return };
                let every = {
                    let mut gauge = lock(&gauge);
                    match gauge.sample(Instant::now()) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            warn!("cannot measure this node's load: {}", crate::chain(&e));
                            failing = true;
                        }
                        Err(e) => debug!("cannot measure this node's load: {e}"),
                    }
                    gauge.sample_every()
                };
                drop(gauge);
                std::thread::sleep(every);
            }
        });
    if let Err(e) = spawned {
        warn!("cannot start the gauge's thread; the load stays 0: {e}");
    }
}

/// SHA-256 of this node's `KernelFacts` (their JSON form: fields in declaration order).
fn compat_key() -> io::Result<Vec<u8>> {
    let facts = rmosix_engine::probe()?;
    let bytes = serde_json::to_vec(&facts).map_err(io::Error::other)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let key = digest.as_ref().to_vec();
    debug_assert!(key.len() <= MAX_COMPAT);
    Ok(key)
}

/// This node's address in the map, resolved if a name.
async fn own_ip(own: NodeId, map: &Map) -> Result<IpAddr, DaemonError> {
    let node = map.node(own).ok_or_else(|| MapError::NotInMap {
        path: map.path().to_owned(),
        node: own,
    })?;
    match &node.host {
        Host::Ip(ip) => Ok(*ip),
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), 0))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(|a| a.ip())
            .ok_or_else(|| DaemonError::OwnAddress { name: name.clone() }),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
