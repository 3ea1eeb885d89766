//! The balancing loop (docs/balancing.md, "The daemon's loop"): once a second, sample the
//! processes of this node that run at home, build the balance room's view of the cluster
//! from the gossip view, ask [`rmosix_balance::decide`], and order each move from the
//! process's supervisor the way a `migrate` request does (`control::order`).
//!
//! Decided on here: this node's own processes at home, and its guests (processes of other
//! nodes that run here). A guest sent home, or on to a third node, goes by the recall `mosctl
//! expel` uses: its home's daemon orders the move from its supervisor (`send_guest`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use rmosix_balance::{
    ClusterView, DecayClass, Decision, LinkSpeeds, Modes, NodeInfo, Placing, Policy, Process,
    ProcessId, Round, Sample, Traffic, Usage, best_node, decide, ready_to_leave,
};
use rmosix_view::{Liveness, NodeView, Status};
use rmosix_wire::{Advice, Decay, Reply};

use rmosix_config::NodeId;

use crate::daemon::{FileTraffic, Shared};
use crate::hosted::Balanced;
use crate::procfs;
use crate::table::SupervisorId;
use crate::{cluster, control, modes};

/// How often the loop decides.
const EVERY: Duration = Duration::from_secs(1);

/// The link speed a move's cost is computed with, bytes per second, to a node this node has
/// not moved a process to yet: 100 MB/s, about a gigabit link. Moves the loop orders measure
/// their own (see [`Recent::moved`]).
const LINK_SPEED: u64 = 100_000_000;
/// The bounds of a measured link speed, bytes per second: a move's time is mostly fixed costs
/// when its image is small, and a figure outside these says more about the move than the link.
const LINK_SPEED_BOUNDS: (u64, u64) = (10_000_000, 10_000_000_000);

/// How long a move this loop ordered counts in its target's load before the gossip can show
/// it: the target's gauge closes a period (1 s), publishes it (1 s), and the gossip carries it.
const SHOWN_THERE_AFTER: Duration = Duration::from_secs(3);
/// How long a move this loop ordered is taken off this node's own load: the gauge's last
/// period shows it gone once the period after the move has closed.
const SHOWN_HERE_AFTER: Duration = Duration::from_millis(1500);
/// How long an order of the loop's may go unanswered and its process still count as on its
/// way: a move that takes longer is one whose supervisor no longer answers.
const ORDER_UNANSWERED: Duration = Duration::from_secs(60);

/// The balance room's clock starts this far after the loop's start, so that a node heard
/// before the loop started still gets a time of hearing (see [`NodeInfo::heard`]).
const CLOCK_BASE: Duration = Duration::from_secs(3600);

/// What the loop keeps about one supervised process.
struct Tracked {
    usage: Usage,
    /// Where its file traffic through MFS goes.
    data: Traffic,
    /// Where it ran last round (`None`: home).
    node: Option<u16>,
    /// Its last reading; `None` while it is away or after it came back.
    last: Option<Reading>,
    /// Its last move, or when the loop first saw it.
    since: Instant,
}

/// Runs the loop for as long as the daemon serves.
pub(crate) async fn run(shared: Arc<Shared>) {
    let start = Instant::now();
    let policy = Policy::default();
    let mut tracked: HashMap<i32, Tracked> = HashMap::new();
    let mut guests: HashMap<ProcessId, Guest> = HashMap::new();
    let Some(balancing) = &shared.balancing else {
        return;
    };
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!("balancing every {}s", EVERY.as_secs());
    loop {
        ticks.tick().await;
        let now = Instant::now();
        // Reading /proc for every process takes a while on a crowded node (two files a
        // process): off the runtime's threads, which accept and serve the node's clients.
        let sampled = tokio::task::spawn_blocking({
            let shared = shared.clone();
            move || {
                let mut traffic = shared.take_file_traffic();
                let mut processes = sample(&shared, &mut tracked, &mut traffic, now);
                processes.extend(sample_guests(&shared, &mut guests, &mut traffic, now));
                (processes, tracked, guests)
            }
        })
        .await;
        let processes;
        (processes, tracked, guests) = match sampled {
            Ok(sampled) => sampled,
            Err(e) => {
                warn!("balancing stopped: its sampling failed: {e}");
                return;
            }
        };
        lock(balancing).demand_here = demand_here(&tracked, &guests);
        if processes.is_empty() {
            shared.cluster.set_ready(0);
            continue;
        }
        let clock = now.duration_since(start) + CLOCK_BASE;
        let mut view = current_view(shared.as_ref(), clock);
        with_own_moves(&mut view, &shared, &mut lock(balancing), now);
        let round = round_at(shared.own, clock);
        let links = lock(balancing).links(shared.own);
        debug!(?view, ?processes, ?links, "balancing round");
        let decisions = decide(&policy, &round, &view, &links, &processes);
        // What is left here ready to leave after this round's moves, for the others' flood
        // prevention.
        shared.cluster.set_ready(ready_to_leave(
            &policy, &round, &view, &processes, &decisions,
        ));
        for decision in decisions {
            if decision.process().home == shared.own {
                let memory = processes
                    .iter()
                    .find(|p| p.id == decision.process())
                    .map_or(0, |p| p.memory);
                carry_out(&shared, &mut tracked, decision, memory);
            } else {
                send_guest(&shared, &mut guests, decision);
            }
        }
    }
}

/// What each process running here wants of a CPU, by its PID here.
fn demand_here(
    tracked: &HashMap<i32, Tracked>,
    guests: &HashMap<ProcessId, Guest>,
) -> HashMap<i32, f64> {
    let own = tracked
        .iter()
        .filter(|(_, t)| t.node.is_none())
        .map(|(&pid, t)| (pid, t.usage.demand().min(1.0)));
    let hosted = guests
        .values()
        .map(|g| (g.pid, g.tracked.usage.demand().min(1.0)));
    own.chain(hosted).collect()
}

/// This node's process `pid` has ended, wherever it ran: it loads no node this node placed
/// or sent it to (see `Recent::ended`).
pub(crate) fn ended(shared: &Shared, pid: i32) {
    if let Some(balancing) = &shared.balancing {
        lock(balancing).ended(pid);
    }
}

/// A process running here, own or guest (`pid`: its PID here), has ended. The load this
/// node gossips drops by what it wanted at once, so that a node it freed gets waiting work
/// within a round of the others' balancing, not after the exported load's slow fall
/// (docs/balancing.md, "The daemon's loop"). A process that moves away is not counted here:
/// the loop that sent it counts it (`with_own_moves`), and the slow fall keeps others from
/// filling at once a node that has just shed work.
pub(crate) fn ended_here(shared: &Shared, pid: i32) {
    let Some(balancing) = &shared.balancing else {
        return;
    };
    let demand = lock(balancing).demand_here.remove(&pid);
    // A process that wanted little of a CPU did not hold the load up.
    if let Some(demand) = demand.filter(|&d| d >= DEPARTED_AT_LEAST) {
        debug!(pid, demand, "a process ended: the load gossiped drops now");
        cluster::departed(shared, demand);
    }
}

/// The demand below which a process's end leaves the load to fall by itself.
const DEPARTED_AT_LEAST: f64 = 0.1;

/// Updates `tracked` from the table and /proc; the processes to decide on: supervised here,
/// at home, no order under way, and sampled at least twice.
fn sample(
    shared: &Shared,
    tracked: &mut HashMap<i32, Tracked>,
    traffic: &mut FileTraffic,
    now: Instant,
) -> Vec<Process> {
    let mut came_back = shared
        .balancing
        .as_ref()
        .map(|b| std::mem::take(&mut lock(b).came_back))
        .unwrap_or_default();
    let table = shared.table().processes();
    tracked.retain(|pid, _| table.iter().any(|e| e.pid == *pid));
    let mut processes = Vec::new();
    for entry in table {
        let class = decay_class(entry.advice.decay);
        let t = tracked.entry(entry.pid).or_insert_with(|| Tracked {
            usage: Usage::new(class),
            data: Traffic::default(),
            node: entry.node,
            last: None,
            since: now,
        });
        if t.node != entry.node {
            // Moved, by this loop, a `migrate` or an expel.
            t.node = entry.node;
            t.since = now;
            t.last = None;
            t.usage.moved();
        }
        if let Some(share) = came_back.remove(&entry.pid) {
            let u = t.usage;
            t.usage = Usage::from_figures(u.demand(), u.cpu(), share, u.cpu_since_move());
        }
        if entry.node.is_some() {
            continue;
        }
        let moved = traffic.remove(&entry.pid);
        let Some(memory) = measure(t, class, entry.pid, None, moved, now) else {
            continue;
        };
        if entry.moving {
            continue;
        }
        processes.push(Process {
            id: ProcessId {
                home: shared.own,
                pid: entry.pid as u32,
            },
            class,
            usage: t.usage,
            memory,
            memory_need: memory_need(entry.advice),
            locked: entry.advice.locked,
            since_move: now.duration_since(t.since),
            moves: entry.moves,
            just_execed: false,
            data: t.data.top(),
        });
    }
    processes
}

/// The memory a process said it will need (`mosrun -m`), in bytes.
fn memory_need(advice: Advice) -> u64 {
    advice.memory_need_mb.saturating_mul(1 << 20)
}

/// The balance room's decay class for mosrun's advice.
fn decay_class(decay: Decay) -> DecayClass {
    match decay {
        Decay::Normal => DecayClass::Normal,
        Decay::CpuBound => DecayClass::CpuBound,
        Decay::IoBound => DecayClass::IoBound,
        Decay::NoDecay => DecayClass::NoDecay,
        Decay::Slow => DecayClass::Slow,
        Decay::Fast => DecayClass::Fast,
        Decay::Keep(kept) => DecayClass::Keep(kept),
    }
}

/// Samples `pid` into `t`: the bytes a move of it sends, once it has two samples. `waited`:
/// how long a guest has waited here for calls forwarded home, in all (`None` at home);
/// `moved`: its file traffic by node since the last sample.
fn measure(
    t: &mut Tracked,
    class: DecayClass,
    pid: i32,
    waited: Option<Duration>,
    moved: Option<HashMap<u16, u64>>,
    now: Instant,
) -> Option<u64> {
    let Ok((ran, queued)) = read_schedstat(pid) else {
        t.last = None;
        return None;
    };
    let reading = Reading {
        ran,
        queued,
        waited,
        at: now,
    };
    let last = t.last.replace(reading)?;
    let moved: Vec<(NodeId, u64)> = moved
        .into_iter()
        .flatten()
        .filter_map(|(node, bytes)| Some((NodeId::new(node)?, bytes)))
        .collect();
    t.data.update(class, now.duration_since(last.at), &moved);
    t.usage.update(
        class,
        &Sample {
            interval: now.duration_since(last.at),
            ran: ran.saturating_sub(last.ran),
            waited: queued.saturating_sub(last.queued),
            forwarded: waited.map(|w| w.saturating_sub(last.waited.unwrap_or_default())),
        },
    );
    let stat = procfs::read_stat(pid).ok()?;
    Some(stat.rss_kib.saturating_mul(1024))
}

/// One reading of a process's figures.
#[derive(Clone, Copy)]
struct Reading {
    /// Run and run-queue time from schedstat.
    ran: Duration,
    queued: Duration,
    /// A guest's wait for calls forwarded home, in all.
    waited: Option<Duration>,
    at: Instant,
}

/// What the loop keeps about one guest, by its home identity.
struct Guest {
    /// Its PID here.
    pid: i32,
    tracked: Tracked,
    /// When the loop last asked its home to send it away: it is left alone for
    /// [`RECALL_QUIET`] after, and while that move runs.
    recalled: Option<Instant>,
}

/// A guest sent away gets no new decision while its home carries the move out
/// ([`Recent::recalling`]), and none for this long after it was asked for: a move refused
/// (and logged) is not asked for again at once.
const RECALL_QUIET: Duration = Duration::from_secs(10);

/// Updates `guests` from the hosted processes and /proc; the guests to decide on, each by its
/// home identity. Its moves before it came here are not known: it counts one (it came here),
/// and its time since its last move is its time here.
fn sample_guests(
    shared: &Shared,
    guests: &mut HashMap<ProcessId, Guest>,
    traffic: &mut FileTraffic,
    now: Instant,
) -> Vec<Process> {
    let hosted: Vec<(ProcessId, Balanced)> = shared
        .hosted()
        .processes()
        .into_iter()
        .filter_map(|p| {
            let id = ProcessId {
                home: NodeId::new(p.home_node)?,
                pid: u32::try_from(p.home_pid).ok()?,
            };
            Some((id, p))
        })
        .collect();
    guests.retain(|id, g| hosted.iter().any(|(i, p)| i == id && p.pid == g.pid));
    let mut processes = Vec::new();
    for (id, p) in hosted {
        let g = guests.entry(id).or_insert_with(|| Guest {
            pid: p.pid,
            tracked: Tracked {
                usage: Usage::new(DecayClass::Normal),
                data: Traffic::default(),
                node: None,
                last: None,
                since: now,
            },
            recalled: None,
        });
        let Some(memory) = measure(
            &mut g.tracked,
            DecayClass::Normal,
            p.pid,
            Some(p.waited),
            traffic.remove(&p.pid),
            now,
        ) else {
            continue;
        };
        let recalling = shared
            .balancing
            .as_ref()
            .is_some_and(|b| lock(b).recalling(id));
        if recalling
            || g.recalled
                .is_some_and(|at| now.duration_since(at) < RECALL_QUIET)
        {
            continue;
        }
        processes.push(Process {
            id,
            class: DecayClass::Normal,
            usage: g.tracked.usage,
            memory,
            memory_need: 0,
            locked: false,
            since_move: now.duration_since(g.tracked.since),
            moves: 1,
            just_execed: false,
            data: g.tracked.data.top(),
        });
    }
    processes
}

/// A decision about a guest, carried out by its home: home, or on to another node. Its home
/// orders the move from the process's supervisor (`modes::send_guest`), as for `expel`.
fn send_guest(shared: &Arc<Shared>, guests: &mut HashMap<ProcessId, Guest>, decision: Decision) {
    let process = decision.process();
    let (home, Ok(pid)) = (process.home.get(), i32::try_from(process.pid)) else {
        return;
    };
    let to = match decision {
        Decision::Move { to, .. } => Some(to.get()),
        Decision::GoHome { .. } => None,
    };
    info!(home, pid, ?to, reason = ?decision.reason(), "balancing: sending a guest away (home: none)");
    let mut forwarded = 0;
    if let Some(g) = guests.get_mut(&process) {
        g.recalled = Some(Instant::now());
        forwarded = (g.tracked.usage.forwarded() * 1000.0).round() as u16;
    }
    let followed = Followed::Recall(process);
    if let Some(balancing) = &shared.balancing {
        lock(balancing)
            .sent
            .push(Sent::followed(Instant::now(), decision.target(), followed));
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        modes::send_guest(&shared, home, pid, to, forwarded).await;
        // Whether it went or not (a refusal is logged): a guest that stayed counts here
        // again once the windows from now have passed, as every move not followed does.
        if let Some(balancing) = &shared.balancing {
            lock(balancing).answered(followed, true, Instant::now());
        }
    });
}

/// What this node's balancing did lately that the gossiped view does not show yet: the moves
/// it ordered (by the loop and at exec), when and where to, and the processes it placed here
/// at their exec.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    sent: Vec<Sent>,
    /// Processes of this node's placed here at their exec, when, and their PIDs.
    kept: Vec<(Instant, Option<i32>)>,
    /// Processes of this node another node's balancer sent back, with the share of their
    /// time they waited there for calls forwarded here: until the loop takes it.
    came_back: HashMap<i32, f64>,
    /// The speed of the moves the loop ordered from here to each node, bytes per second.
    speeds: BTreeMap<NodeId, u64>,
    /// What each process running here (own or guest, by its PID here) wanted of a CPU at
    /// the loop's last round: what this node's load loses when it leaves.
    demand_here: HashMap<i32, f64>,
}

/// A process this node sent to `to` at `at`. For a move whose end this node hears of
/// (`followed`), the windows in which the view does not show it yet count from the move's
/// end, not its order: until then it still runs here, its memory crossing the link while it
/// does (a 1 GiB process takes 10 s at 100 MB/s, twice that for a guest sent on, which
/// crosses its home), and the gauge still counts it here.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    to: NodeId,
    /// It ran here, and counts in this node's measured load until the view shows it gone;
    /// false for a process placed before it ran (at its exec, or starting), which never did.
    ran_here: bool,
    followed: Option<Followed>,
    /// When its move was answered with success; `None` while under way.
    done: Option<Instant>,
    /// Its PID, for a process of this node's: once it ends it loads its target no more,
    /// though the view may not show it gone yet.
    pid: Option<i32>,
}

/// How this node hears of a move's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followed {
    /// One of its own processes, moved by its order to the supervisor.
    Order(u64),
    /// A guest, moved by the recall its home carries out (`modes::send_guest` waits for the
    /// move's outcome).
    Recall(ProcessId),
}

impl Sent {
    /// One whose move is not followed here: a placement at exec, or an operator's order.
    fn at(at: Instant, to: NodeId) -> Sent {
        Sent {
            at,
            to,
            ran_here: true,
            followed: None,
            done: None,
            pid: None,
        }
    }

    /// The same, of this node's process `pid` (None where unknown).
    fn of(self, pid: Option<i32>) -> Sent {
        Sent { pid, ..self }
    }

    /// A process placed at `to` before it ran here (at its exec, or starting).
    fn before_it_ran(at: Instant, to: NodeId) -> Sent {
        Sent {
            ran_here: false,
            ..Sent::at(at, to)
        }
    }

    /// One whose move's end this node hears of by `followed`.
    fn followed(at: Instant, to: NodeId, followed: Followed) -> Sent {
        Sent {
            followed: Some(followed),
            ..Sent::at(at, to)
        }
    }

    /// Whether the view may not show it yet, gone from here or there after a `window`: from
    /// its move's end, or from its order for one not followed (or, for one whose move has
    /// gone unanswered for [`ORDER_UNANSWERED`], from then).
    fn unshown(&self, window: Duration, now: Instant) -> bool {
        let since = match (self.followed, self.done) {
            (Some(_), None) if now.duration_since(self.at) < ORDER_UNANSWERED => return true,
            (Some(_), None) => self.at + ORDER_UNANSWERED,
            (Some(_), Some(done)) => done,
            (None, _) => self.at,
        };
        now.duration_since(since) < window
    }
}

impl Recent {
    /// A process about to start, or just exec'd (`pid`, where known), was sent to `to`, or
    /// (`None`) starts here.
    fn placed(&mut self, now: Instant, to: Option<NodeId>, pid: Option<i32>) {
        match to {
            Some(to) => self.sent.push(Sent::before_it_ran(now, to).of(pid)),
            None => self.kept.push((now, pid)),
        }
    }

    /// This node's process `pid` ended: wherever it was placed or sent, it counts there no
    /// more. A compiler under `mosrun make` lives a second or less, and counted at its
    /// target for the whole window the gossip takes to show it, it made the targets look
    /// busier than this node, which then kept more compilers than its share.
    fn ended(&mut self, pid: i32) {
        self.sent.retain(|s| s.pid != Some(pid));
        self.kept.retain(|&(_, kept)| kept != Some(pid));
    }

    /// The move followed by `followed` was answered at `now`: done, or (`moved` false) failed
    /// or dropped, and the process is where it was.
    fn answered(&mut self, followed: Followed, moved: bool, now: Instant) {
        if moved {
            for sent in self
                .sent
                .iter_mut()
                .filter(|s| s.followed == Some(followed))
            {
                sent.done = Some(now);
            }
        } else {
            self.sent.retain(|s| s.followed != Some(followed));
        }
    }

    /// Whether a move of the guest `id` that this node asked its home for is under way.
    fn recalling(&self, id: ProcessId) -> bool {
        self.sent
            .iter()
            .any(|s| s.followed == Some(Followed::Recall(id)) && s.done.is_none())
    }

    /// A move of `bytes` from here to `to` took `took`, from the order to the supervisor's
    /// answer: its rate (the move's whole cost, as the payback rule wants it, freeze and
    /// rounds included) updates the figure of that link, a quarter at a time.
    fn moved(&mut self, to: NodeId, bytes: u64, took: Duration) {
        if bytes == 0 || took.is_zero() {
            return;
        }
        let (low, high) = LINK_SPEED_BOUNDS;
        let rate = (bytes as f64 / took.as_secs_f64()).clamp(low as f64, high as f64) as u64;
        self.speeds
            .entry(to)
            .and_modify(|speed| *speed = (*speed * 3 + rate) / 4)
            .or_insert(rate);
    }

    /// The link speeds as measured from `own`; [`LINK_SPEED`] where nothing was.
    fn links(&self, own: NodeId) -> LinkSpeeds {
        let mut links = LinkSpeeds::uniform(LINK_SPEED);
        for (&to, &speed) in &self.speeds {
            links.pairs.insert((own, to), speed);
        }
        links
    }

    /// Forgets what the view shows by `now`.
    fn forget_shown(&mut self, now: Instant) {
        self.sent.retain(|s| s.unshown(SHOWN_THERE_AFTER, now));
        self.kept
            .retain(|(at, _)| now.duration_since(*at) < SHOWN_HERE_AFTER);
    }
}

fn lock(recent: &Mutex<Recent>) -> MutexGuard<'_, Recent> {
    recent
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The view as this node's own moves leave it, before the gossip shows them. The loads it
/// gossips change slowly on purpose (MOSIX's exported load rises at once and falls over
/// seconds, so that others do not all pick a node that was busy a moment ago), and a target's
/// load shows a new process 2 to 3 s after it came. Deciding on those alone, a node that has
/// just sent most of its processes away still sees itself loaded and sends the rest, and its
/// targets, still looking idle, send their surplus back: jobs bounce for half a minute (see
/// docs/balancing.md, "Measured"). So this node's own load is at most its load over the
/// gauge's last period (`last_load`, unsmoothed), less each process it sent in the last
/// [`SHOWN_HERE_AFTER`] and plus each it placed here at exec in that time; and each target
/// of a move of the last [`SHOWN_THERE_AFTER`] carries the process's share.
fn with_own_moves(view: &mut ClusterView, shared: &Shared, recent: &mut Recent, now: Instant) {
    recent.forget_shown(now);
    apply_own_moves(view, shared.own, shared.cluster.last_load(), recent, now);
}

fn apply_own_moves(
    view: &mut ClusterView,
    own: NodeId,
    last_load: u32,
    recent: &Recent,
    now: Instant,
) {
    let own_share = view
        .get(own)
        .map(NodeInfo::process_share)
        .filter(|share| share.is_finite())
        .map(|share| share.round() as u32);
    if let Some(me) = view.nodes.get_mut(&own) {
        me.load = me.load.min(last_load);
    }
    for sent in &recent.sent {
        if let Some(target) = view.nodes.get_mut(&sent.to) {
            let share = target.process_share();
            if share.is_finite() {
                target.load = target.load.saturating_add(share.round() as u32);
            }
        }
        // A process placed before it ran never counted here: the load here loses nothing.
        if sent.ran_here
            && sent.unshown(SHOWN_HERE_AFTER, now)
            && let (Some(me), Some(share)) = (view.nodes.get_mut(&own), own_share)
        {
            me.load = me.load.saturating_sub(share);
        }
    }
    if let (Some(me), Some(share)) = (view.nodes.get_mut(&own), own_share) {
        let kept = u32::try_from(recent.kept.len()).unwrap_or(u32::MAX);
        me.load = me.load.saturating_add(share.saturating_mul(kept));
    }
}

/// Another node's balancer sends our process `pid` on, having found it waited `per_mille`
/// of its time there for calls forwarded here: its statistics keep that share (rule 6 then
/// weighs it before sending it out again), as if it had been measured here.
pub(crate) fn forwarded_away(shared: &Shared, pid: i32, per_mille: u16) {
    if let Some(balancing) = &shared.balancing {
        let share = f64::from(per_mille.min(1000)) / 1000.0;
        lock(balancing).came_back.insert(pid, share);
    }
}

/// Where a process of this node's supervisor `supervisor`, stopped at its exec, should run
/// (rule 5 of docs/balancing.md: its image is smallest now, so a burst of execs spreads at
/// once): the node [`decide`] places it on, or `None` to run here. It counts in the view
/// the next placements and rounds decide on, here or there, until the gossip shows it. Not
/// placed: a process of another supervisor, one away, locked or with an order under way, one
/// whose program is known to fork or end soon (see `programs`), or any while this node does
/// not balance.
pub(crate) fn place_at_exec(shared: &Shared, supervisor: SupervisorId, pid: i32) -> Option<NodeId> {
    let balancing = shared.balancing.as_ref()?;
    let (entry, worth_placing) = {
        let table = shared.table();
        (table.entry_of(supervisor, pid)?, table.worth_placing(pid))
    };
    if entry.node.is_some() || entry.moving || entry.advice.locked || !worth_placing {
        return None;
    }
    let memory = procfs::read_stat(pid).ok()?.rss_kib.saturating_mul(1024);
    let process = Process {
        moves: entry.moves,
        just_execed: true,
        ..unsampled(shared.own, u32::try_from(pid).ok()?, memory, entry.advice)
    };
    let now = Instant::now();
    let policy = Policy::default();
    let mut view = current_view(shared, CLOCK_BASE);
    let mut recent = lock(balancing);
    with_own_moves(&mut view, shared, &mut recent, now);
    // A burst of execs places at most a round's moves a second, as the loop moves at most
    // that many a round: the rest start here, and the loop spreads them from their second
    // sample on. A thousand processes started at once do not become a thousand moves at once.
    let placed_lately = recent
        .sent
        .iter()
        .filter(|s| now.duration_since(s.at) < EVERY)
        .count();
    let round = round_at(shared.own, CLOCK_BASE);
    let links = recent.links(shared.own);
    let to = if placed_lately < policy.max_moves_per_round {
        let decisions = decide(&policy, &round, &view, &links, &[process]);
        decisions.first().map(Decision::target)
    } else {
        None
    };
    debug!(pid, ?view, ?to, "placement at exec");
    if let Some(to) = to {
        info!(pid, to = to.get(), "balancing: placing it at its exec");
    }
    recent.placed(now, to, Some(pid));
    to
}

/// Where an operator's order sends a process of this node's that runs at `here` (`migrate
/// PID balance`), or one about to start here (`mosrun -b`, `pid` 0): the node the balance
/// room's [`best_node`] picks from the cluster view as it is now, or `None` if it is best
/// where it is. While this node balances, the view shows its recent moves, and the answer
/// counts among them.
pub(crate) fn best_for(
    shared: &Shared,
    pid: i32,
    here: NodeId,
    memory: u64,
    advice: Advice,
    placing: Placing,
) -> Option<NodeId> {
    let now = Instant::now();
    let mut view = current_view(shared, CLOCK_BASE);
    let mut recent = shared.balancing.as_ref().map(lock);
    if let Some(recent) = recent.as_mut() {
        with_own_moves(&mut view, shared, recent, now);
    }
    let round = round_at(here, CLOCK_BASE);
    let process = Process {
        just_execed: placing == Placing::Starting,
        ..unsampled(shared.own, u32::try_from(pid).unwrap_or(0), memory, advice)
    };
    let links = recent
        .as_ref()
        .map_or_else(|| LinkSpeeds::uniform(LINK_SPEED), |r| r.links(shared.own));
    let to = best_node(&Policy::default(), &round, &view, &links, &process, placing);
    if let Some(recent) = recent.as_mut() {
        match placing {
            Placing::Starting => recent.placed(now, to, None),
            Placing::Running => {
                let pid = Some(pid).filter(|&pid| pid > 0);
                recent.sent.extend(to.map(|to| Sent::at(now, to).of(pid)))
            }
        }
    }
    to
}

/// A process of this node's (`own`) with no statistics yet, as its job's `advice` says: one
/// about to start or that has just exec'd. `memory`: the bytes a move of it would send.
fn unsampled(own: NodeId, pid: u32, memory: u64, advice: Advice) -> Process {
    let class = decay_class(advice.decay);
    Process {
        id: ProcessId { home: own, pid },
        class,
        usage: Usage::new(class),
        memory,
        memory_need: memory_need(advice),
        locked: advice.locked,
        since_move: Duration::ZERO,
        moves: 0,
        just_execed: false,
        data: None,
    }
}

/// The first two fields of `/proc/PID/schedstat`: time run and time waited on a run queue,
/// in nanoseconds.
fn read_schedstat(pid: i32) -> std::io::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    parse_schedstat(&text).ok_or_else(|| std::io::Error::other("unexpected schedstat format"))
}

fn parse_schedstat(text: &str) -> Option<(Duration, Duration)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let ran = fields.next()?.ok()?;
    let waited = fields.next()?.ok()?;
    Some((Duration::from_nanos(ran), Duration::from_nanos(waited)))
}

/// The balance room's view of this node's gossip view now, on the loop's `clock`.
fn current_view(shared: &Shared, clock: Duration) -> ClusterView {
    cluster_view(
        &shared.cluster.snapshot(),
        clock,
        shared.own,
        shared.modes(),
        shared.cluster.compat(),
    )
}

/// A round decided at `here` at `clock`, numbered by the seconds since the epoch, which all
/// nodes share roughly.
fn round_at(here: NodeId, clock: Duration) -> Round {
    Round {
        here,
        now: clock,
        number: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The balance room's view of the gossip view at `clock`: nodes that have published, alive
/// when the failure detector says so, heard `age` ago. This node (`own`) has the modes it
/// has now (`modes`), not those it last published, so that `mosctl stay` holds from the next
/// round. A node whose compatibility key differs from this node's (`compat`: another kernel,
/// see `KernelFacts`) could not take a process from here, and is left out.
fn cluster_view(
    snapshot: &[NodeView],
    clock: Duration,
    own: NodeId,
    modes: Status,
    compat: &[u8],
) -> ClusterView {
    let mut view = ClusterView::new();
    for node in snapshot {
        let (Some(state), Some(age)) = (&node.state, node.age) else {
            continue;
        };
        if state.compat != compat {
            continue;
        }
        let s = if node.node == own {
            modes
        } else {
            state.status
        };
        view.insert(
            node.node,
            NodeInfo {
                alive: node.liveness == Liveness::Alive,
                modes: Modes {
                    stay: s.stay,
                    lstay: s.lstay,
                    block: s.block,
                    quiet: s.quiet,
                    expel: s.expel,
                },
                load: state.load,
                ready: state.ready,
                speed: state.speed,
                cpus: f64::from(state.milli_cpus) / 1000.0,
                free_memory: state.mem_free,
                total_memory: state.mem_total,
                heard: clock.saturating_sub(age),
            },
        );
    }
    view
}

/// Orders one decision from the process's supervisor, and logs the answer when it comes.
fn carry_out(
    shared: &Arc<Shared>,
    tracked: &mut HashMap<i32, Tracked>,
    decision: Decision,
    memory: u64,
) {
    let process = decision.process();
    let Ok(pid) = i32::try_from(process.pid) else {
        return;
    };
    let heading = decision.target();
    let target = match decision {
        Decision::Move { to, .. } => Some(to),
        Decision::GoHome { .. } => None,
    };
    let reason = decision.reason();
    let to = target.map(NodeId::get);
    info!(pid, ?to, ?reason, "balancing: moving a process");
    match control::order(shared, pid, to, 0) {
        Ok((id, waiter)) => {
            if let Some(t) = tracked.get_mut(&pid) {
                // Its next sample starts after the move.
                t.last = None;
            }
            let ordered = Instant::now();
            // Before its answer can come.
            if let Some(balancing) = &shared.balancing {
                let sent = Sent::followed(ordered, heading, Followed::Order(id));
                lock(balancing).sent.push(sent.of(Some(pid)));
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                let moved = match waiter.await {
                    Ok(Ok(())) => {
                        info!(pid, order = id, ?to, "balancing: moved");
                        true
                    }
                    Ok(Err(failure)) => {
                        warn!(pid, order = id, ?to, "balancing: move refused: {failure}");
                        false
                    }
                    Err(_) => {
                        warn!(
                            pid,
                            order = id,
                            "balancing: the supervisor went away during the move"
                        );
                        false
                    }
                };
                if let Some(balancing) = &shared.balancing {
                    let mut recent = lock(balancing);
                    recent.answered(Followed::Order(id), moved, Instant::now());
                    if let (true, Some(to)) = (moved, target) {
                        recent.moved(to, memory, ordered.elapsed());
                    }
                }
            });
        }
        Err(Reply::Ok) => {}
        Err(Reply::Failed(failure)) => {
            warn!(pid, ?to, "balancing: move refused: {failure}");
        }
        Err(Reply::Error { message }) => warn!(pid, ?to, "balancing: {message}"),
        Err(other) => warn!(pid, ?to, "balancing: unexpected answer {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_run_and_wait_time() {
        assert_eq!(
            parse_schedstat("1500000000 250000000 42\n"),
            Some((Duration::from_millis(1500), Duration::from_millis(250)))
        );
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    fn info(load: u32) -> NodeInfo {
        NodeInfo {
            alive: true,
            modes: Modes::default(),
            load,
            ready: 0,
            speed: rmosix_balance::STANDARD_SPEED,
            cpus: 1.0,
            free_memory: 1 << 30,
            total_memory: 2 << 30,
            heard: CLOCK_BASE,
        }
    }

    fn node(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    #[test]
    fn the_view_shows_this_nodes_own_moves_before_the_gossip_does() {
        let mut view = ClusterView::new();
        view.insert(node(1), info(800));
        view.insert(node(2), info(0));
        view.insert(node(3), info(0));
        let now = Instant::now();
        let long_ago = now - Duration::from_secs(2);
        let recent = Recent {
            sent: vec![
                Sent::at(now, node(2)),
                Sent::at(now, node(2)),
                Sent::at(long_ago, node(3)),
            ],
            ..Recent::default()
        };
        // Its last period saw 3 processes; two left since, one before that period closed.
        apply_own_moves(&mut view, node(1), 300, &recent, now);
        assert_eq!(view.get(node(1)).unwrap().load, 100);
        assert_eq!(view.get(node(2)).unwrap().load, 200);
        assert_eq!(view.get(node(3)).unwrap().load, 100);
    }

    /// The loads of nodes 1 and 2 in node 1's view at `now`, with `recent` applied: node 1
    /// gossiped and last measured `here`, node 2 gossiped 0.
    fn own_and_target_load(here: u32, recent: &Recent, now: Instant) -> (u32, u32) {
        let mut view = ClusterView::new();
        view.insert(node(1), info(here));
        view.insert(node(2), info(0));
        apply_own_moves(&mut view, node(1), here, recent, now);
        (
            view.get(node(1)).unwrap().load,
            view.get(node(2)).unwrap().load,
        )
    }

    #[test]
    fn a_process_placed_before_it_ran_counts_there_and_takes_nothing_from_here() {
        let now = Instant::now();
        let mut recent = Recent::default();
        recent.placed(now, Some(node(2)), Some(10));
        recent.placed(now, Some(node(2)), Some(11));
        // They never ran here.
        assert_eq!(own_and_target_load(300, &recent, now), (300, 200));
    }

    #[test]
    fn a_placed_process_that_ended_counts_nowhere_though_the_view_does_not_show_it_yet() {
        let now = Instant::now();
        let mut recent = Recent::default();
        recent.placed(now, Some(node(2)), Some(10));
        recent.placed(now, None, Some(11));
        recent.placed(now, Some(node(2)), None);
        assert_eq!(own_and_target_load(300, &recent, now), (400, 200));
        recent.ended(10);
        assert_eq!(own_and_target_load(300, &recent, now), (400, 100));
        recent.ended(11);
        assert_eq!(own_and_target_load(300, &recent, now), (300, 100));
        recent.ended(12);
        assert_eq!(own_and_target_load(300, &recent, now), (300, 100));
    }

    #[test]
    fn a_move_under_way_counts_gone_from_here_until_it_is_done() {
        let start = Instant::now();
        let mut recent = Recent::default();
        let guest = ProcessId {
            home: node(3),
            pid: 42,
        };
        let (seven, eight, recall) = (
            Followed::Order(7),
            Followed::Order(8),
            Followed::Recall(guest),
        );
        for followed in [seven, eight, recall] {
            recent.sent.push(Sent::followed(start, node(2), followed));
        }
        // Ten seconds on, all three still cross the link: gone from here, there already.
        let later = start + Duration::from_secs(10);
        recent.forget_shown(later);
        assert_eq!(own_and_target_load(300, &recent, later), (0, 300));
        assert!(recent.recalling(guest));
        // One is refused: it is here again, at once.
        recent.answered(eight, false, later);
        assert_eq!(own_and_target_load(300, &recent, later), (100, 200));
        // The others are done: the windows count from their end.
        recent.answered(seven, true, later);
        recent.answered(recall, true, later);
        assert!(!recent.recalling(guest));
        let shown_here = later + SHOWN_HERE_AFTER;
        recent.forget_shown(shown_here);
        assert_eq!(own_and_target_load(300, &recent, shown_here), (300, 200));
        recent.forget_shown(later + SHOWN_THERE_AFTER);
        assert!(recent.sent.is_empty());
    }

    #[test]
    fn processes_placed_here_at_exec_count_here_until_the_gauge_shows_them() {
        let now = Instant::now();
        let mut recent = Recent {
            kept: vec![(now, None), (now - Duration::from_millis(500), None)],
            ..Recent::default()
        };
        assert_eq!(own_and_target_load(100, &recent, now).0, 300);
        // Once the gauge's period after them has closed, its load shows them.
        recent.forget_shown(now + SHOWN_HERE_AFTER);
        let mut later = ClusterView::new();
        later.insert(node(1), info(300));
        apply_own_moves(&mut later, node(1), 300, &recent, now);
        assert_eq!(later.get(node(1)).unwrap().load, 300);
    }

    #[test]
    fn link_speeds_follow_the_moves_made_within_bounds() {
        let mut recent = Recent::default();
        let links = recent.links(node(1));
        assert_eq!(links.between(node(1), node(2)), LINK_SPEED);
        recent.moved(node(2), 400_000_000, Duration::from_secs(1));
        assert_eq!(recent.links(node(1)).between(node(1), node(2)), 400_000_000);
        recent.moved(node(2), 0, Duration::from_secs(1));
        recent.moved(node(2), 200_000_000, Duration::from_secs(1));
        assert_eq!(recent.links(node(1)).between(node(2), node(1)), 350_000_000);
        // A tiny image moved in a long time says nothing below the floor.
        recent.moved(node(3), 1, Duration::from_secs(10));
        let links = recent.links(node(1));
        assert_eq!(links.between(node(1), node(3)), LINK_SPEED_BOUNDS.0);
        assert_eq!(links.between(node(1), node(4)), LINK_SPEED);
    }

    #[test]
    fn own_schedstat_reads() {
        let (ran, _) = read_schedstat(std::process::id() as i32).unwrap();
        assert!(ran > Duration::ZERO);
    }
}
