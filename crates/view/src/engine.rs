//! The gossip engine: one tokio task that owns the UDP socket and foca, sends this node's
//! window of entries every step, seals what it and foca send, checks and opens what
//! arrives, and keeps the table up to date. The [`ViewHandle`] talks to it through a channel
//! and reads the table.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{
    AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PeriodicParams, State,
    Timer,
};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use rmosix_config::{Host, Map, NodeId};
use rmosix_transport::ClusterKey;

use crate::message::{self, FOCA_ROOM, Message};
use crate::seal::{MAX_DATAGRAM, Refusal, ReplayWindow, Sealer, Sender};
use crate::state::{MAX_COMPAT, NodeState};
use crate::swim::{Id, SwimCodec};
use crate::table::{Counters, NodeView, Shared, Table, lock};

/// The gossip port when none is given: UDP 4660, the number of the daemons' TCP port
/// (TCP and UDP ports are separate, so both protocols share one number and one firewall
/// rule).
pub const DEFAULT_PORT: u16 = 4660;

/// How fast the view learns and forgets. The defaults suit a LAN: a dead node is marked
/// dead everywhere about 3-5 s after it stops (one probe period to be probed, the probe's
/// round trip, the suspicion timeout, then the news spreads with the next gossip); the mean
/// age of a node's figures in the others' views stays under 2 s up to 1,000 nodes, for
/// under 10 KB/s a node (docs/gossip.md).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// How often foca probes one member (SWIM's protocol period).
    pub probe_period: Duration,
    /// How long a probe waits for its answer before asking others to probe indirectly.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute the suspicion before it is declared dead.
    pub suspect_to_down: Duration,
    /// How often the node announces itself to one node of the map it does not hear (so a
    /// node that comes back is found).
    pub publish_period: Duration,
    /// How often foca sends its backlog of membership news to a few random members.
    pub gossip_period: Duration,
    /// MOSIX's time step: how often the node sends its window of entries to one node.
    pub window_period: Duration,
    /// How many entries a window holds at most: this node's own, then the youngest others
    /// (as many as fit in one datagram, about 130).
    pub window: usize,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            probe_period: Duration::from_secs(1),
            // A LAN answers in well under a millisecond; 300 ms leaves room for a busy
            // node's scheduler without waiting long on a dead one.
            probe_rtt: Duration::from_millis(300),
            suspect_to_down: Duration::from_secs(2),
            publish_period: Duration::from_secs(1),
            gossip_period: Duration::from_millis(200),
            // 10 windows of 72 entries a second: by the age model of MOSIX's gossip, a mean
            // age of 1.8 s at 1,000 nodes, for 8-9 KB/s a node (docs/gossip.md).
            window_period: Duration::from_millis(100),
            window: 72,
        }
    }
}

/// Why a state cannot be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The compatibility key is too long to gossip.
    #[error("compatibility key of {len} bytes is longer than {MAX_COMPAT}; publish a digest")]
    CompatTooLong {
        /// Its length.
        len: usize,
    },
    /// The engine has stopped (it panicked, or the runtime is shutting down).
    #[error("the cluster view has stopped")]
    Stopped,
}

/// foca with our identity and codec. It carries membership only: the entries travel in
/// windows of their own (see `message`).
pub(crate) type Swim = Foca<Id, SwimCodec, SmallRng, NoCustomBroadcast>;

/// Starts cluster views; see [`View::start`].
pub struct View;

/// A running view. Dropping it stops the engine at once, as a crash would (the others
/// declare this node dead within seconds); [`ViewHandle::leave`] says goodbye first.
pub struct ViewHandle {
    own: NodeId,
    /// Our first identity's generation (tests address crafted datagrams to it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) generation: u64,
    commands: mpsc::UnboundedSender<Command>,
    shared: Shared,
    local: SocketAddr,
    task: JoinHandle<()>,
}

enum Command {
    Publish(NodeState),
    ReloadMap(Map),
    Leave,
}

impl View {
    /// Starts gossiping as node `own` of `map`, on UDP `bind`, sealed with `key`, with `first`
    /// as this node's state until [`ViewHandle::publish`] replaces it; the other
    /// nodes are reached at their map address and `bind`'s port. Must be called inside a
    /// tokio runtime. Fails if the socket cannot be bound, or if `own` is not in the map.
    pub async fn start(
        own: NodeId,
        map: &Map,
        key: &ClusterKey,
        bind: SocketAddr,
        first: NodeState,
    ) -> io::Result<ViewHandle> {
        View::start_tuned(own, map, key, bind, first, Tuning::default()).await
    }

    /// As [`View::start`], with other timings (tests use shorter ones).
    pub async fn start_tuned(
        own: NodeId,
        map: &Map,
        key: &ClusterKey,
        bind: SocketAddr,
        first: NodeState,
        tuning: Tuning,
    ) -> io::Result<ViewHandle> {
        if map.node(own).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {own} is not in {}", map.path().display()),
            ));
        }
        if first.compat.len() > MAX_COMPAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                PublishError::CompatTooLong {
                    len: first.compat.len(),
                },
            ));
        }
        let socket = UdpSocket::bind(bind).await?;
        let local = socket.local_addr()?;
        let shared: Shared = std::sync::Arc::new(std::sync::Mutex::new(Table::new(
            own,
            map.nodes().map(|n| n.id),
        )));
        let peers = Peers::resolve(map, local.port()).await;
        let generation = generation();
        let random = SystemRandom::new();
        let mut seed = [0u8; 8];
        random
            .fill(&mut seed)
            .map_err(|_| io::Error::other("no random bytes for the gossip engine"))?;
        let seed = u64::from_ne_bytes(seed);
        let foca = swim(
            Id {
                node: own,
                generation,
            },
            &tuning,
            map.nodes().count(),
            seed,
        );
        let (commands, inbox) = mpsc::unbounded_channel();
        let mut engine = Engine {
            own,
            generation,
            seq: 0,
            // Each run starts its profile tags somewhere else, so that a restarted node's
            // profile is asked for again (the others also forget a node that comes back as
            // a new run, for the 1 in 65536 that start where the old run was).
            first_tag: seed as u16,
            targets: SmallRng::seed_from_u64(seed.rotate_left(32)),
            outbox: Vec::new(),
            own_state: first,
            socket,
            sealer: Sealer::new(key),
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: Vec::new(),
            peers,
            windows: HashMap::new(),
            generations: HashMap::new(),
            shared: shared.clone(),
            gates: HashMap::new(),
            tuning,
            port: local.port(),
            leaving: false,
        };
        // In the table before this returns: from the start, this node's own figures are
        // in every snapshot (`mosctl status`, the balancer).
        engine.publish();
        info!(node = own.get(), %local, generation, "cluster view started");
        let task = tokio::spawn(engine.run(inbox));
        Ok(ViewHandle {
            own,
            generation,
            commands,
            shared,
            local,
            task,
        })
    }
}

impl ViewHandle {
    /// This node.
    pub fn node(&self) -> NodeId {
        self.own
    }

    /// Where the socket is bound (useful when `bind` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Tells the cluster this node's state; it goes out with the next window (within
    /// [`Tuning::window_period`]) and with every window after until replaced.
    pub fn publish(&self, state: NodeState) -> Result<(), PublishError> {
        if state.compat.len() > MAX_COMPAT {
            return Err(PublishError::CompatTooLong {
                len: state.compat.len(),
            });
        }
        self.commands
            .send(Command::Publish(state))
            .map_err(|_| PublishError::Stopped)
    }

    /// Every node of the current map, lowest number first, with its latest state and
    /// liveness. This node is always alive, with the state it last published.
    pub fn snapshot(&self) -> Vec<NodeView> {
        lock(&self.shared).snapshot(Instant::now())
    }

    /// What was dropped, and why.
    pub fn counters(&self) -> Counters {
        lock(&self.shared).counters
    }

    /// Takes a new map (after SIGHUP): nodes that left it leave the view at once, and their
    /// datagrams are refused from now on; new nodes are greeted. This node must still be in
    /// it; if not, the map is refused (and logged) and the old one kept.
    pub fn reload_map(&self, map: Map) -> Result<(), PublishError> {
        self.commands
            .send(Command::ReloadMap(map))
            .map_err(|_| PublishError::Stopped)
    }

    /// Tells the others this node leaves (they mark it dead at once, not after the
    /// suspicion timeout), then stops. For an orderly shutdown.
    pub async fn leave(mut self) {
        if self.commands.send(Command::Leave).is_ok() {
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for ViewHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A start time unique to this run, for the generation of our datagrams and entries: the
/// nanoseconds since 1970. A restarted daemon's is larger, so the others take its datagrams
/// (see seal::ReplayWindow) and its identity wins over the old one (see swim::Id).
fn generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// foca as a node runs it, here and in the simulation (`sim`): identity `id`, settings
/// from `tuning` for a map of `nodes` nodes, member choice seeded with `seed`, our codec.
pub(crate) fn swim(id: Id, tuning: &Tuning, nodes: usize, seed: u64) -> Swim {
    Foca::new(
        id,
        foca_config(tuning, nodes),
        SmallRng::seed_from_u64(seed),
        SwimCodec,
    )
}

/// MOSIX's `mindead`: a window goes to a random live member, and with chance
/// 1/max(members, `ANY_CYCLE`) to any node of the map instead, so the nodes believed dead
/// get about one window a step from the whole cluster, and a small cluster still reaches a
/// node foca has not found yet within a second or two.
const ANY_CYCLE: usize = 10;

/// One time step of a node, here and in the simulation: where its window goes (see
/// [`ANY_CYCLE`]) and the window (its own entry, refreshed, then the youngest others).
/// `None` when the map holds no other node.
pub(crate) fn window_step(
    foca: &Swim,
    table: &Table,
    map: impl Iterator<Item = NodeId>,
    size: usize,
    rng: &mut SmallRng,
    now: Instant,
) -> Option<(NodeId, Vec<u8>)> {
    let own = foca.identity().node;
    let members: Vec<NodeId> = foca.iter_members().map(|m| m.id().node).collect();
    let any = members.is_empty() || rng.random_bool(1.0 / members.len().max(ANY_CYCLE) as f64);
    let to = if any {
        let others: Vec<NodeId> = map.filter(|n| *n != own).collect();
        *others.get(rng.random_range(0..others.len().max(1)))?
    } else {
        members[rng.random_range(0..members.len())]
    };
    Some((to, message::window(table.window(size, now))))
}

/// What a node does with a window, a want or profiles from another: takes what is younger,
/// and returns the messages to send back to it (the profiles it lacks, the profiles asked).
pub(crate) fn answer(table: &mut Table, message: Message<'_>, now: Instant) -> Vec<Vec<u8>> {
    match message {
        Message::Window(entries) => {
            let wants = table.merge(&entries, now);
            message::want(&wants)
        }
        Message::Want(wants) => message::profiles(&table.profiles(&wants, now)),
        Message::Profiles(profiles) => {
            for (entry, profile) in profiles {
                table.take(entry, profile, now);
            }
            Vec::new()
        }
        Message::Foca(_) => Vec::new(),
    }
}

/// The nodes of `map` other than `own` that foca does not count as active members.
pub(crate) fn silent_nodes(
    foca: &Swim,
    own: NodeId,
    map: impl Iterator<Item = NodeId>,
) -> Vec<NodeId> {
    let active: Vec<NodeId> = foca.iter_members().map(|m| m.id().node).collect();
    map.filter(|n| *n != own && !active.contains(n)).collect()
}

fn foca_config(tuning: &Tuning, nodes: usize) -> Config {
    Config {
        probe_period: tuning.probe_period,
        probe_rtt: tuning.probe_rtt,
        num_indirect_probes: NonZeroUsize::new(3).expect("3 is not 0"),
        max_transmissions: max_transmissions(nodes),
        suspect_to_down_after: tuning.suspect_to_down,
        // A dead node is remembered (and announced to now and then) for a day; the map
        // bounds how many there can be.
        remove_down_after: Some(Duration::from_secs(24 * 60 * 60)),
        max_packet_size: NonZeroUsize::new(FOCA_ROOM).expect("not 0"),
        // A node the others declared dead learns it, and comes back under a new identity.
        notify_down_members: true,
        periodic_announce: Some(PeriodicParams {
            frequency: Duration::from_secs(30),
            num_members: NonZeroUsize::new(1).expect("not 0"),
        }),
        periodic_announce_to_down_members: Some(PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(1).expect("not 0"),
        }),
        periodic_gossip: Some(PeriodicParams {
            frequency: tuning.gossip_period,
            num_members: NonZeroUsize::new(3).expect("not 0"),
        }),
    }
}

/// How many times a piece of membership news is passed on: foca's LAN rule, 4·log10(n+1),
/// at least 2.
fn max_transmissions(nodes: usize) -> NonZeroU8 {
    let n = (4.0 * ((nodes as f64) + 1.0).log10())
        .ceil()
        .clamp(2.0, 255.0);
    NonZeroU8::new(n as u8).expect("at least 2")
}

/// The map's nodes as socket addresses: where to send, and whose an address is.
#[derive(Default)]
struct Peers {
    to: HashMap<NodeId, SocketAddr>,
    from: HashMap<IpAddr, NodeId>,
}

impl Peers {
    /// Host names are looked up now (at start and at each reload); a name that does not
    /// resolve leaves its node unreachable until the next reload, and says so.
    async fn resolve(map: &Map, port: u16) -> Peers {
        let mut peers = Peers::default();
        for node in map.nodes() {
            for (i, host) in node.hosts().enumerate() {
                let ips: Vec<IpAddr> = match host {
                    Host::Ip(ip) => vec![*ip],
                    Host::Name(name) => {
                        match tokio::net::lookup_host((name.as_str(), port)).await {
                            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                            Err(e) => {
                                warn!(node = node.id.get(), host = %name, "cannot resolve: {e}");
                                Vec::new()
                            }
                        }
                    }
                };
                if i == 0
                    && let Some(ip) = ips.first()
                {
                    peers.to.insert(node.id, SocketAddr::new(*ip, port));
                }
                for ip in ips {
                    peers.from.insert(ip.to_canonical(), node.id);
                }
            }
        }
        peers
    }
}

/// At most one log line per reason per window; the count of the rest follows.
const LOG_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Gate {
    opened: Option<Instant>,
    held: u64,
}

struct Engine {
    own: NodeId,
    generation: u64,
    /// Sequence number of our next datagram.
    seq: u64,
    /// The tag of our first profile (see `Table::publish_own`).
    first_tag: u16,
    /// Picks whom each window goes to (nothing secret).
    targets: SmallRng,
    /// Our messages other than foca's, to send at the next flush.
    outbox: Vec<(NodeId, Vec<u8>)>,
    own_state: NodeState,
    socket: UdpSocket,
    sealer: Sealer,
    foca: Swim,
    runtime: AccumulatingRuntime<Id>,
    timers: Vec<(Instant, Timer<Id>)>,
    peers: Peers,
    windows: HashMap<NodeId, ReplayWindow>,
    /// The run (foca generation) of each node last seen up: one that comes up as a new run
    /// is relearned from scratch (see `Table::forget`).
    generations: HashMap<NodeId, u64>,
    shared: Shared,
    gates: HashMap<&'static str, Gate>,
    tuning: Tuning,
    port: u16,
    /// Set once this node leaves: foca then reports itself defunct, which is no news.
    leaving: bool,
}

impl Engine {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        // Greet every node of the map once; then one silent node per period.
        let others: Vec<NodeId> = self
            .peers
            .to
            .keys()
            .copied()
            .filter(|&n| n != self.own)
            .collect();
        for node in others {
            self.announce(node);
        }
        self.flush().await;
        let mut publish = tokio::time::interval(self.tuning.publish_period);
        let mut step = tokio::time::interval(self.tuning.window_period);
        step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.iter().map(|(at, _)| *at).min();
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.receive(&mut buf[..len], from),
                    Err(e) => debug!("gossip socket: {e}"),
                },
                command = inbox.recv() => match command {
                    Some(Command::Publish(state)) => {
                        self.own_state = state;
                        self.publish();
                    }
                    Some(Command::ReloadMap(map)) => self.reload(map).await,
                    Some(Command::Leave) => {
                        self.leaving = true;
                        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
                            debug!("leaving: {e}");
                        }
                        self.flush().await;
                        info!(node = self.own.get(), "left the cluster view");
                        return;
                    }
                    None => return,
                },
                () = sleep_until(next_timer) => self.fire_timers(),
                _ = publish.tick() => self.announce_to_one_silent(),
                _ = step.tick() => self.send_window(),
            }
            self.flush().await;
        }
    }

    /// Checks a datagram, in order of cost: its form, its source address against the map, the
    /// node it claims against that address, its seal, its freshness, then foca's message.
    fn receive(&mut self, datagram: &mut [u8], from: SocketAddr) {
        let claimed = match Sealer::peek(datagram) {
            Ok(sender) => sender,
            Err(_) => return self.refuse("malformed", from, |c| &mut c.malformed),
        };
        let Some(&node) = self.peers.from.get(&from.ip().to_canonical()) else {
            return self.refuse("unknown_source", from, |c| &mut c.unknown_source);
        };
        if node != claimed.node || node == self.own {
            return self.refuse("wrong_sender", from, |c| &mut c.wrong_sender);
        }
        let (sender, plain) = match self.sealer.open(datagram) {
            Ok(opened) => opened,
            Err(Refusal::BadSeal) => return self.refuse("bad_seal", from, |c| &mut c.bad_seal),
            Err(Refusal::Malformed) => {
                return self.refuse("malformed", from, |c| &mut c.malformed);
            }
        };
        let fresh = match self.windows.get_mut(&node) {
            Some(window) => window.take(sender),
            None => {
                self.windows.insert(node, ReplayWindow::starting_at(sender));
                true
            }
        };
        if !fresh {
            return self.refuse("replayed", from, |c| &mut c.replayed);
        }
        let message = match Message::decode(plain) {
            Ok(message) => message,
            Err(e) => {
                debug!(node = node.get(), "gossip not understood: {e}");
                return self.refuse("malformed", from, |c| &mut c.malformed);
            }
        };
        let Message::Foca(plain) = message else {
            let replies = answer(&mut lock(&self.shared), message, Instant::now());
            lock(&self.shared).counters.accepted += 1;
            self.outbox
                .extend(replies.into_iter().map(|reply| (node, reply)));
            return;
        };
        // foca's own header names a sender too: it must be the one the seal vouches for.
        match foca::Codec::decode_header(&mut SwimCodec, plain) {
            Ok(header) if header.src.node == node => {}
            Ok(_) => return self.refuse("wrong_sender", from, |c| &mut c.wrong_sender),
            Err(_) => return self.refuse("malformed", from, |c| &mut c.malformed),
        }
        match self.foca.handle_data(plain, &mut self.runtime) {
            Ok(()) => lock(&self.shared).counters.accepted += 1,
            Err(e) => {
                debug!(node = node.get(), "gossip not understood: {e}");
                self.refuse("malformed", from, |c| &mut c.malformed);
            }
        }
    }

    /// Counts a dropped datagram, and logs it unless a line for the same reason went out
    /// within the window.
    fn refuse(
        &mut self,
        reason: &'static str,
        from: SocketAddr,
        count: fn(&mut Counters) -> &mut u64,
    ) {
        *count(&mut lock(&self.shared).counters) += 1;
        let now = Instant::now();
        let gate = self.gates.entry(reason).or_default();
        match gate.opened {
            Some(opened) if now.duration_since(opened) < LOG_WINDOW => gate.held += 1,
            _ => {
                if gate.held > 0 {
                    warn!(
                        reason,
                        %from,
                        held = gate.held,
                        "gossip datagram dropped ({} more for this reason in the last {}s)",
                        gate.held,
                        LOG_WINDOW.as_secs()
                    );
                } else {
                    warn!(reason, %from, "gossip datagram dropped");
                }
                gate.opened = Some(now);
                gate.held = 0;
            }
        }
    }

    /// Puts our latest state in the table, for the next window.
    fn publish(&mut self) {
        lock(&self.shared).publish_own(&self.own_state, self.first_tag, Instant::now());
    }

    /// MOSIX's time step: our window to one node.
    fn send_window(&mut self) {
        let step = window_step(
            &self.foca,
            &lock(&self.shared),
            self.peers.to.keys().copied(),
            self.tuning.window,
            &mut self.targets,
            Instant::now(),
        );
        self.outbox.extend(step);
    }

    /// Announce ourselves to `node` (at whatever generation it runs: foca takes an
    /// announcement addressed to any identity at its node).
    fn announce(&mut self, node: NodeId) {
        let dst = Id {
            node,
            generation: 0,
        };
        if let Err(e) = self.foca.announce(dst, &mut self.runtime) {
            debug!(node = node.get(), "cannot announce: {e}");
        }
    }

    /// MOSIX's `mindead`: of the nodes we do not hear, greet one chosen at random each
    /// period, so a node that comes back (or starts late) is found without every node
    /// flooding every dead one.
    fn announce_to_one_silent(&mut self) {
        let silent = silent_nodes(&self.foca, self.own, self.peers.to.keys().copied());
        if silent.is_empty() {
            return;
        }
        let mut pick = [0u8; 8];
        let index = match SystemRandom::new().fill(&mut pick) {
            Ok(()) => (u64::from_ne_bytes(pick) % silent.len() as u64) as usize,
            Err(_) => 0,
        };
        self.announce(silent[index]);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.timers = later;
        for (_, timer) in due {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                debug!("gossip timer: {e}");
            }
        }
    }

    async fn reload(&mut self, map: Map) {
        if map.node(self.own).is_none() {
            warn!(
                node = self.own.get(),
                map = %map.path().display(),
                "new map does not name this node; keeping the old one"
            );
            return;
        }
        let peers = Peers::resolve(&map, self.port).await;
        let nodes: Vec<NodeId> = map.nodes().map(|n| n.id).collect();
        // Members that left the map: foca stops probing them here, without telling the
        // others (their maps are their business).
        let gone: Vec<foca::Member<Id>> = self
            .foca
            .iter_membership_state()
            .filter(|m| !nodes.contains(&m.id().node))
            .map(|m| foca::Member::new(*m.id(), m.incarnation(), State::Down))
            .collect();
        if let Err(e) = self
            .foca
            .apply_many(gone.into_iter(), false, &mut self.runtime)
        {
            debug!("forgetting nodes that left the map: {e}");
        }
        let new: Vec<NodeId> = peers
            .to
            .keys()
            .copied()
            .filter(|n| *n != self.own && !self.peers.to.contains_key(n))
            .collect();
        self.windows.retain(|node, _| nodes.contains(node));
        self.peers = peers;
        lock(&self.shared).set_nodes(nodes.iter().copied());
        self.foca
            .set_config(foca_config(&self.tuning, nodes.len()))
            .unwrap_or_else(|e| debug!("gossip settings unchanged: {e}"));
        for node in new {
            self.announce(node);
        }
        info!(nodes = nodes.len(), map = %map.path().display(), "cluster view took a new map");
    }

    /// Sends what foca produced, takes its timers, logs its news and refreshes liveness.
    async fn flush(&mut self) {
        let now = Instant::now();
        while let Some((at, timer)) = self.runtime.to_schedule() {
            self.timers.push((now + at, timer));
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    info!(node = id.node.get(), "node is up");
                    let before = self.generations.insert(id.node, id.generation);
                    if before.is_some_and(|g| g != id.generation) {
                        lock(&self.shared).forget(id.node);
                    }
                }
                OwnedNotification::MemberDown(id) => warn!(node = id.node.get(), "node is dead"),
                OwnedNotification::Defunct if !self.leaving => {
                    warn!("the others declared this node dead; rejoining")
                }
                _ => {}
            }
        }
        let mut sends = std::mem::take(&mut self.outbox);
        sends.extend(
            std::iter::from_fn(|| self.runtime.to_send())
                .map(|(to, m)| (to.node, message::foca(&m))),
        );
        for (to, plain) in sends {
            let Some(&addr) = self.peers.to.get(&to) else {
                continue;
            };
            let sender = Sender {
                node: self.own,
                generation: self.generation,
                seq: self.seq,
            };
            self.seq += 1;
            let datagram = match self.sealer.seal(sender, &plain) {
                Ok(datagram) => datagram,
                Err(_) => {
                    warn!("no random bytes to seal gossip");
                    continue;
                }
            };
            match self.socket.send_to(&datagram, addr).await {
                Ok(_) => lock(&self.shared).counters.sent += 1,
                Err(e) => debug!(node = to.get(), %addr, "gossip not sent: {e}"),
            }
        }
        let members: Vec<(NodeId, State)> = self
            .foca
            .iter_membership_state()
            .map(|m| (m.id().node, m.state()))
            .collect();
        lock(&self.shared).set_members(members);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_is_passed_on_more_often_in_larger_clusters() {
        assert_eq!(max_transmissions(1).get(), 2);
        assert_eq!(max_transmissions(3).get(), 3);
        assert_eq!(max_transmissions(255).get(), 10);
        assert_eq!(max_transmissions(65535).get(), 20);
    }
}
