//! The balancer proper: [`decide`] turns one node's view of the cluster and the statistics of
//! the processes running on it into [`Decision`]s. docs/balancing.md gives the reasoning.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rmosix_config::NodeId;

use crate::flood::{allowance, mean_load, mix, possible_senders};
use crate::usage::{DecayClass, Usage};
use crate::view::{ClusterView, LinkSpeeds, NodeInfo};

/// A process as the cluster knows it: its home node and its PID there. A guest keeps the
/// identity of its shell at home.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ProcessId {
    /// The node it was started on, where its shell (and deputy) stays.
    pub home: NodeId,
    /// Its PID at home.
    pub pid: u32,
}

/// What the balancer knows of one process running on this node (its own or a guest).
#[derive(Clone, PartialEq, Debug)]
pub struct Process {
    /// Who it is. It is a guest here when `id.home` is not this node.
    pub id: ProcessId,
    /// Its decay class (`mosrun -c/-i/-n/-s/-f/-d`).
    pub class: DecayClass,
    /// Its decayed statistics.
    pub usage: Usage,
    /// Bytes a move must send (its image: resident and swapped memory).
    pub memory: u64,
    /// Memory it says it will need (`mosrun -m`), bytes; 0 if it said nothing. A target must
    /// have room for the larger of this and `memory`.
    pub memory_need: u64,
    /// Locked (`mosrun -L`, `/proc/PID/lock`): it never moves by itself, only home when its
    /// node expels it.
    pub locked: bool,
    /// Time since its last move (since its start if it never moved).
    pub since_move: Duration,
    /// How many times it has moved.
    pub moves: u32,
    /// It has just called `execve` and not run since: a placement candidate.
    pub just_execed: bool,
    /// The node whose files (`/mfs/N`) it reads and writes most, if any.
    pub data: Option<DataNode>,
}

/// Where a process's file traffic goes: the node serving most of it through MFS, and how
/// much, decayed as its other statistics are.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct DataNode {
    /// The node serving the files.
    pub node: NodeId,
    /// Bytes a second read from and written to that node's files.
    pub bytes_per_second: f64,
}

impl Process {
    /// Whether it is a guest on `node`.
    fn is_guest_on(&self, node: NodeId) -> bool {
        self.id.home != node
    }
}

/// Why a process should move.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reason {
    /// Its node expels its guests (`mosctl expel`).
    Expel,
    /// Its node runs out of free memory (memory ushering).
    Memory,
    /// Its calls forwarded home cost more than running away gains.
    Forwarding,
    /// It has just exec'd and runs better elsewhere (placement).
    Placement,
    /// It is CPU-bound and runs better on a less loaded node (load balancing).
    Balance,
    /// Its file traffic goes mostly to one node, where it runs faster (the process goes to
    /// its data).
    Data,
}

/// One thing to do. Processes that should stay get none.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Move the process to another node that is not its home.
    Move {
        /// The process.
        process: ProcessId,
        /// Where to.
        to: NodeId,
        /// Why.
        reason: Reason,
    },
    /// Bring the process home.
    GoHome {
        /// The process.
        process: ProcessId,
        /// Why.
        why: Reason,
    },
}

impl Decision {
    /// The process the decision is about.
    pub fn process(&self) -> ProcessId {
        match *self {
            Decision::Move { process, .. } | Decision::GoHome { process, .. } => process,
        }
    }

    /// The node the process should go to.
    pub fn target(&self) -> NodeId {
        match *self {
            Decision::Move { to, .. } => to,
            Decision::GoHome { process, .. } => process.home,
        }
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        match *self {
            Decision::Move { reason, .. } => reason,
            Decision::GoHome { why, .. } => why,
        }
    }
}

/// Which decision round this is, where, and when.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Round {
    /// The node deciding: the node the processes run on.
    pub here: NodeId,
    /// Now, on the clock of [`NodeInfo::heard`].
    pub now: Duration,
    /// A round number all nodes share roughly (seconds since the epoch will do). It seeds the
    /// choices among near-equal targets and the flood-prevention ranking, so that different
    /// rounds spread differently and the same round decides the same.
    pub number: u64,
}

/// The balancer's tunables. [`Policy::default`] holds the values we chose and why.
#[derive(Clone, PartialEq, Debug)]
pub struct Policy {
    /// A process moves for balance only if the target's load plus this percentage of the load
    /// the process adds there stays below this node's load (with `min_load_difference`).
    /// 130 %: the stabilising factor of the simplified MOSIX policy in Kerrighed (reference
    /// 5.5). Above 100 %, two equally loaded nodes never swap a process.
    pub stability_percent: u32,
    /// And by this many load units more. 10: twice gossimon's "equal load" band (5 units,
    /// reference 5.8), so that measurement noise does not move anything.
    pub min_load_difference: f64,
    /// Targets whose projected loads are within this many units of the best are equally good;
    /// one of them is chosen by hash. 10 units: a tenth of one process on a standard CPU.
    pub near_equal: f64,
    /// A CPU-bound process moves for balance only once what the move saves is this many times
    /// the time the move takes (memory / link speed): the time it has wanted a CPU (run or
    /// waited for one) since its last move, taken as its remaining time, times the share of
    /// that time the target saves (MOSIX: "enough CPU time to pay back the migration cost",
    /// reference 5.5; we count the time wanted, so that a crowded node's processes are not
    /// held by their small share). 2: a move pays for itself even if the process ends sooner
    /// than its age foretells.
    pub payback_factor: f64,
    /// A process that has moved stays at least this long, times its number of moves (up to
    /// `residence_moves_cap`), before it moves for balance or calls again: the later moves of a
    /// much-moved process come slower. Memory ushering and expel ignore it. 15 s: the gossip
    /// shows a move everywhere within 3 to 5 s, but while a burst spreads the loads around a
    /// new guest keep changing for longer, and a guest's host counts it as moved once only (it
    /// does not know its earlier moves). A simulated burst of 10,000 jobs on 100 of 1,000
    /// nodes made 1.92 moves a job with 15 s, 2.07 with 10 s (docs/balancing.md,
    /// "Simulation").
    pub min_residence: Duration,
    /// Moves counted in the residence time at most. 2: at most 30 s.
    pub residence_moves_cap: u32,
    /// A process is CPU-bound, and a candidate for balance, when it wants at least this much
    /// of a CPU (decayed demand). 0.6.
    pub cpu_bound_demand: f64,
    /// A guest goes home for its forwarded calls when they take at least this share of its time
    /// and staying away speeds it up by less than 1 minus this; a process leaves home for
    /// balance only if, counting its last known forwarding share, it runs at least 1 plus this
    /// times faster away. 0.05: 5 %, a band between going out and coming home.
    pub forwarding_margin: f64,
    /// Memory ushering starts when free memory falls below this part (per mille) of the total.
    /// 50: 5 %.
    pub usher_below_per_mille: u32,
    /// Ushering goes on until free memory is back above this part (per mille), and no move of
    /// any kind may leave a target with less. 100: 10 %, twice the start, so that a target does
    /// not start ushering as soon as it has received.
    pub usher_until_per_mille: u32,
    /// A node's entry older than this is no target: what we know of it may be false. 6 s:
    /// three times the mean age the gossip aims at (issue 9: 2 s).
    pub stale_after: Duration,
    /// At most this many balance and placement moves per node per round (ushering and expel
    /// are not counted). 8.
    pub max_moves_per_round: usize,
    /// A process placed at its exec goes only where it would run this many times as fast as
    /// here (each counting it in the load). 1.5: a place is taken only for a clear gain; a
    /// node that looks a little busier than another (its load still falling after a job's
    /// end, the gauge's noise) keeps its new process, and so does a node in a cluster where
    /// every node is about as busy. A move at exec is cheap, but it is still a move, and a
    /// process placed where it runs little faster is the next to be sent on, with all its
    /// memory (docs/balancing.md, "Simulation").
    pub placement_gain: f64,
    /// Flood prevention deals a target's room over this many rounds when several nodes would
    /// send to it: the others' moves reach the view that much later (a gauge period, its
    /// publication and the gossip: about 3 s, the daemon's `SHOWN_THERE_AFTER`), and until
    /// then every round would deal the same room again. 3.
    pub flood_rounds: u32,
    /// A CPU-bound process moves to a free CPU, whatever the loads, when it would run there
    /// at least this many times faster than here and the gain pays for the move (rule 6,
    /// by speed). 1.2: five processes on four CPUs (each runs at 0.8 of a CPU) go to an idle
    /// CPU of their speed; a process alone on its CPU goes only to a CPU 1.2 times faster.
    pub idle_speedup: f64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            stability_percent: 130,
            min_load_difference: 10.0,
            near_equal: 10.0,
            payback_factor: 2.0,
            min_residence: Duration::from_secs(15),
            residence_moves_cap: 2,
            cpu_bound_demand: 0.6,
            forwarding_margin: 0.05,
            usher_below_per_mille: 50,
            usher_until_per_mille: 100,
            stale_after: Duration::from_secs(6),
            max_moves_per_round: 8,
            placement_gain: 1.5,
            flood_rounds: 3,
            idle_speedup: 1.2,
        }
    }
}

impl Policy {
    /// The load above which a node would send a process of `demand` (fraction of a CPU) to
    /// `target`, whose load is now `target_load`.
    pub(crate) fn move_threshold(&self, target: &NodeInfo, target_load: f64, demand: f64) -> f64 {
        let added = demand.clamp(0.0, 1.0) * target.process_share();
        target_load + added * f64::from(self.stability_percent) / 100.0 + self.min_load_difference
    }

    /// Whether an entry was heard of recently enough to be believed.
    pub(crate) fn is_fresh(&self, round: &Round, node: &NodeInfo) -> bool {
        round.now.saturating_sub(node.heard) <= self.stale_after
    }

    /// Whether a process has stayed long enough since its last move.
    fn has_resided(&self, process: &Process) -> bool {
        let moves = process.moves.min(self.residence_moves_cap);
        process.since_move >= self.min_residence * moves
    }

    /// Whether rule 6 (balance) may look at `process` at all: it has run since its exec, is
    /// CPU-bound, and has stayed its residence time.
    fn may_balance(&self, process: &Process) -> bool {
        !process.just_execed
            && process.usage.demand() >= self.cpu_bound_demand
            && self.has_resided(process)
    }

    fn floor(&self, info: &NodeInfo, per_mille: u32) -> i128 {
        i128::from(info.total_memory) * i128::from(per_mille) / 1000
    }
}

/// Decides, for the processes running on `round.here`, which should move and where.
///
/// Call it once per round (about a second) with this node's fresh entry in `view`, the
/// processes that run here now (its own and guests) and their statistics. It does no I/O and
/// is deterministic: the same inputs give the same decisions. Each process gets at most one
/// decision; every guest gets one when this node expels. If `round.here` is not in the view,
/// nothing is decided.
///
/// The rules, in order of precedence (docs/balancing.md):
/// 1. expel: every guest goes home, or to a node that would run it better than home;
/// 2. (`quiet`: nothing more; `stay`: nothing leaves; `lstay`: own processes stay; locked
///    processes stay; a guest whose home is dead stays, as no move can pass its home);
/// 3. memory ushering, largest processes first, even against CPU balance;
/// 4. guests whose forwarded calls cost more than running away gains go home;
/// 5. processes that have just exec'd go to the best node by load;
/// 6. CPU-bound processes whose move pays for itself go to less loaded nodes, or to a free
///    CPU much faster than their share here.
pub fn decide(
    policy: &Policy,
    round: &Round,
    view: &ClusterView,
    links: &LinkSpeeds,
    processes: &[Process],
) -> Vec<Decision> {
    let Some(me) = view.get(round.here) else {
        return Vec::new();
    };
    let mut plan = Plan::new(policy, round, view, links, me);
    if me.modes.expel {
        plan.expel(processes);
    }
    if me.modes.quiet || me.modes.stay {
        return plan.decisions;
    }
    let movable: Vec<&Process> = processes
        .iter()
        .filter(|p| plan.may_leave(p) && !plan.decided.contains(&p.id))
        .collect();
    plan.usher(&movable);
    plan.forward_home(&movable);
    plan.go_to_data(&movable);
    plan.place(&movable);
    // What this node's processes want of a CPU, together (an unsampled one counts as one).
    // They share only if they want more than its CPUs, or than one CPU on a node of less:
    // a process alone under a quota of half a CPU wants a whole one (it waits for the CPU
    // the quota withholds), and gets all a process can get here.
    let wanted: f64 = processes.iter().map(|p| p.usage.demand().min(1.0)).sum();
    plan.balance(&movable, wanted > me.cpus.max(1.0));
    plan.decisions
}

/// How many of `processes`, running on `round.here`, rule 6 could send away now, once the
/// round's `decisions` are carried out: those not decided on that may leave by themselves
/// (not locked, not held by the node's modes) and that balance may look at (CPU-bound,
/// resided). The daemon publishes it with its load ([`NodeInfo::ready`]): a node loaded
/// above a target's bar whose processes must all stay sends nothing there, and flood
/// prevention must not deal it that target's room.
pub fn ready_to_leave(
    policy: &Policy,
    round: &Round,
    view: &ClusterView,
    processes: &[Process],
    decisions: &[Decision],
) -> u32 {
    let Some(me) = view.get(round.here) else {
        return 0;
    };
    if me.modes.quiet || me.modes.stay {
        return 0;
    }
    let ready = processes
        .iter()
        .filter(|p| decisions.iter().all(|d| d.process() != p.id))
        .filter(|p| may_leave(view, round.here, me, p) && policy.may_balance(p))
        .count();
    u32::try_from(ready).unwrap_or(u32::MAX)
}

/// Whether `p`, running on `here` (whose entry is `me`), may leave by itself (not counting
/// expel): not locked, not held by the node's `stay` or `lstay`, and, a guest, with a home
/// alive to pass through.
fn may_leave(view: &ClusterView, here: NodeId, me: &NodeInfo, p: &Process) -> bool {
    let guest = p.is_guest_on(here);
    let kept_home = me.modes.lstay && !guest;
    let home_reachable = !guest || view.get(p.id.home).is_some_and(|home| home.alive);
    !p.locked && !me.modes.stay && !kept_home && home_reachable
}

/// The load a CPU-bound process feels on `node` at `load` (counting it): the load itself, but
/// never less than one process on one of the node's CPUs (`100 / its speed in standard
/// CPUs`): a process runs no faster than its CPU, however many of them are idle. Load alone
/// would call a node of eight slow CPUs with two processes lightly loaded, and fill it with
/// processes that each run at a slow CPU's speed (docs/balancing.md, "Simulation").
fn felt_load(node: &NodeInfo, load: f64) -> f64 {
    load.max(crate::view::ONE_PROCESS / node.throughput(0.0))
}

/// A CPU is free for a process that would get this share of it at least. A node's own
/// daemon, its shells and the gauge's noise keep a few units of load on an idle node, which
/// on a node of a quarter CPU (a process's share: 400 units) took a few hundredths of a CPU
/// off every process: counted exactly, such a node had no free CPU while it ran nothing, and
/// the speed rule sent nothing there (`./dev bench unequal`: one run in three left its node 4
/// idle throughout, 1.26 times the ideal).
const FREE_CPU: f64 = 0.9;

/// A placement at exec goes to one of the least loaded quarter of the nodes it could go to:
/// every home sees the same least loaded node, and homes that exec at once would crowd it
/// before the gossip shows any of them there (docs/balancing.md, rule 5).
const PLACEMENT_WIDENING: usize = 4;

/// Whether the process [`best_node`] places is already counted in its node's load.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placing {
    /// It runs on `round.here` (`migrate PID balance`).
    Running,
    /// It has not started yet (`mosrun -b`): `round.here` would have its load too.
    Starting,
}

/// Where an operator's order sends `process` from `round.here`: `migrate PID balance` (it
/// runs there) or `mosrun -b` (it is about to start there). The least loaded node, with the
/// process's share, among those that would take it by the balance rule's hysteresis as if it
/// wanted a whole CPU; `None` if it is best where it is. An order, not an automatic move:
/// payback, residence time, flood prevention, the process's lock and this node's `stay`
/// modes are not consulted; the targets' modes, liveness and free memory are.
pub fn best_node(
    policy: &Policy,
    round: &Round,
    view: &ClusterView,
    links: &LinkSpeeds,
    process: &Process,
    placing: Placing,
) -> Option<NodeId> {
    let me = view.get(round.here)?;
    let plan = Plan::new(policy, round, view, links, me);
    let mut here_load = plan.load_of(round.here);
    if placing == Placing::Starting {
        here_load += plan.share(round.here, 1.0);
    }
    let targets = view
        .nodes
        .iter()
        .filter(|&(&id, _)| plan.accepts(id, process) && plan.has_room(id, process))
        .filter(|&(&id, info)| policy.move_threshold(info, plan.load_of(id), 1.0) < here_load)
        .map(|(&id, _)| (id, plan.load_of(id) + plan.share(id, 1.0)))
        .collect();
    plan.pick(process, targets)
}

/// One round's work in progress: the loads and free memory as this node's decisions so far
/// change them.
struct Plan<'a> {
    policy: &'a Policy,
    round: &'a Round,
    view: &'a ClusterView,
    links: &'a LinkSpeeds,
    me: &'a NodeInfo,
    /// Projected load per node.
    load: BTreeMap<NodeId, f64>,
    /// Projected free memory per node (may go below zero on paper).
    free: BTreeMap<NodeId, i128>,
    /// Balance and placement moves sent to each node this round.
    sent: BTreeMap<NodeId, u32>,
    /// The cluster's mean load, for flood prevention, worked out when first needed.
    mean_load: OnceCell<f64>,
    /// The nodes that may send work this round, for flood prevention, when first needed.
    senders: OnceCell<Vec<(u32, NodeId, bool)>>,
    /// What flood prevention allows this node to send to each node this round, worked out
    /// for each target when first needed.
    allowed: RefCell<BTreeMap<NodeId, u32>>,
    /// Balance and placement moves this round.
    moves: usize,
    decided: BTreeSet<ProcessId>,
    decisions: Vec<Decision>,
}

impl<'a> Plan<'a> {
    fn new(
        policy: &'a Policy,
        round: &'a Round,
        view: &'a ClusterView,
        links: &'a LinkSpeeds,
        me: &'a NodeInfo,
    ) -> Plan<'a> {
        Plan {
            policy,
            round,
            view,
            links,
            me,
            load: view
                .nodes
                .iter()
                .map(|(&id, info)| (id, f64::from(info.load)))
                .collect(),
            free: view
                .nodes
                .iter()
                .map(|(&id, info)| (id, i128::from(info.free_memory)))
                .collect(),
            sent: BTreeMap::new(),
            mean_load: OnceCell::new(),
            senders: OnceCell::new(),
            allowed: RefCell::new(BTreeMap::new()),
            moves: 0,
            decided: BTreeSet::new(),
            decisions: Vec::new(),
        }
    }
}

impl Plan<'_> {
    fn here(&self) -> NodeId {
        self.round.here
    }

    fn load_of(&self, node: NodeId) -> f64 {
        self.load.get(&node).copied().unwrap_or(f64::INFINITY)
    }

    fn free_of(&self, node: NodeId) -> i128 {
        self.free.get(&node).copied().unwrap_or(0)
    }

    /// The load a process of `demand` adds to `node`.
    fn share(&self, node: NodeId, demand: f64) -> f64 {
        self.view.get(node).map_or(f64::INFINITY, |info| {
            demand.clamp(0.0, 1.0) * info.process_share()
        })
    }

    /// Whether `p` may leave this node by itself (not counting expel).
    fn may_leave(&self, p: &Process) -> bool {
        may_leave(self.view, self.here(), self.me, p)
    }

    /// Whether `node` may receive `p`, memory aside: up, known recently, able to run
    /// anything, and taking part (not blocking, expelling or quiet), unless it is `p`'s home,
    /// which always takes its own processes back.
    fn accepts(&self, node: NodeId, p: &Process) -> bool {
        if node == self.here() {
            return false;
        }
        let Some(info) = self.view.get(node) else {
            return false;
        };
        let usable = info.alive
            && self.policy.is_fresh(self.round, info)
            && info.process_share().is_finite();
        let open = node == p.id.home || !(info.modes.block || info.modes.expel || info.modes.quiet);
        usable && open
    }

    /// Whether `node` keeps enough free memory after receiving `p`.
    fn has_room(&self, node: NodeId, p: &Process) -> bool {
        let Some(info) = self.view.get(node) else {
            return false;
        };
        let needed = i128::from(p.memory.max(p.memory_need));
        self.free_of(node) - needed >= self.policy.floor(info, self.policy.usher_until_per_mille)
    }

    /// The cluster's mean load, for flood prevention, worked out once a round.
    fn mean_load(&self) -> f64 {
        *self
            .mean_load
            .get_or_init(|| mean_load(self.policy, self.round, self.view))
    }

    /// Whether this node may still send a process to `node` this round, by balance or to its
    /// data (a placement at exec has its own room: [`Plan::may_place`]).
    fn may_send(&self, node: NodeId) -> bool {
        let mean = self.mean_load();
        let allowed = *self.allowed.borrow_mut().entry(node).or_insert_with(|| {
            let senders = self
                .senders
                .get_or_init(|| possible_senders(self.policy, self.round, self.view));
            allowance(self.policy, self.round, self.view, node, mean, senders)
        });
        self.sent.get(&node).copied().unwrap_or(0) < allowed
    }

    /// Whether flood prevention lets this node place another process at its exec on `node`
    /// this round: up to the node's room, as for a lone sender, neither paced nor shared
    /// with the other nodes that could send there. Those could send only processes that
    /// have stayed their residence time, by rule 6, not the ones this node execs; dealing
    /// them a share kept `mosrun make -j8` at node 1 from placing a compiler on a node
    /// running one while the others ran three (docs/balancing.md, rule 5).
    fn may_place(&self, node: NodeId) -> bool {
        let room = allowance(
            self.policy,
            self.round,
            self.view,
            node,
            self.mean_load(),
            &[],
        );
        self.sent.get(&node).copied().unwrap_or(0) < room
    }

    /// Of `candidates` (node, projected load after the move), the least loaded, or one of
    /// those within `near_equal` of it chosen by hash of this node, the round and the process.
    fn pick(&self, p: &Process, candidates: Vec<(NodeId, f64)>) -> Option<NodeId> {
        self.pick_among(p, candidates, usize::MAX)
    }

    /// [`Plan::pick`], choosing among the least loaded `1 / widening` of the candidates at
    /// least.
    fn pick_among(
        &self,
        p: &Process,
        mut candidates: Vec<(NodeId, f64)>,
        widening: usize,
    ) -> Option<NodeId> {
        candidates.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let best = candidates.first()?.1;
        let near = candidates
            .iter()
            .take_while(|c| c.1 <= best + self.policy.near_equal)
            .count()
            .max(candidates.len() / widening);
        let key = mix(&[
            u64::from(self.here().get()),
            self.round.number,
            u64::from(p.id.home.get()),
            u64::from(p.id.pid),
        ]);
        Some(candidates[(key % near as u64) as usize].0)
    }

    /// Records a decision and its effect on the projected loads and memory. `counted_here`
    /// says whether this node's load already includes the process.
    fn record(&mut self, p: &Process, to: NodeId, reason: Reason, demand: f64, counted_here: bool) {
        if counted_here {
            let here_share = self.share(self.here(), demand);
            *self.load.entry(self.here()).or_insert(0.0) -= here_share;
        }
        let to_share = self.share(to, demand);
        *self.load.entry(to).or_insert(0.0) += to_share;
        *self.free.entry(self.here()).or_insert(0) += i128::from(p.memory);
        *self.free.entry(to).or_insert(0) -= i128::from(p.memory.max(p.memory_need));
        if matches!(reason, Reason::Balance | Reason::Placement | Reason::Data) {
            *self.sent.entry(to).or_insert(0) += 1;
            self.moves += 1;
        }
        self.decided.insert(p.id);
        self.decisions.push(if to == p.id.home {
            Decision::GoHome {
                process: p.id,
                why: reason,
            }
        } else {
            Decision::Move {
                process: p.id,
                to,
                reason,
            }
        });
    }

    /// Rule 1: every guest leaves. Home takes it back unless another node would run it better
    /// by the balance hysteresis and has room; a locked guest, or one whose home is dead (no
    /// move can pass its home), goes home.
    fn expel(&mut self, processes: &[Process]) {
        let here = self.here();
        for p in processes.iter().filter(|p| p.is_guest_on(here)) {
            if self.decided.contains(&p.id) {
                continue;
            }
            let demand = p.usage.demand();
            let home = p.id.home;
            let home_alive = self.view.get(home).is_some_and(|info| info.alive);
            let mut to = home;
            if !p.locked && home_alive {
                let home_load = if self.accepts(home, p) {
                    self.load_of(home) + self.share(home, demand)
                } else {
                    f64::INFINITY
                };
                let others: Vec<(NodeId, f64)> = self
                    .view
                    .nodes
                    .iter()
                    .filter_map(|(&id, info)| {
                        let fits = id != home && self.accepts(id, p) && self.has_room(id, p);
                        let threshold = self.policy.move_threshold(info, self.load_of(id), demand);
                        (fits && threshold < home_load).then_some((id, threshold))
                    })
                    .collect();
                if let Some(other) = self.pick(p, others) {
                    to = other;
                }
            }
            self.record(p, to, Reason::Expel, demand, true);
        }
    }

    /// Rule 3: when free memory is below the low mark, send the largest processes that fit
    /// elsewhere to the least loaded nodes with room, until free memory is above the high mark.
    fn usher(&mut self, movable: &[&Process]) {
        let below = self
            .policy
            .floor(self.me, self.policy.usher_below_per_mille);
        if i128::from(self.me.free_memory) >= below {
            return;
        }
        let until = self
            .policy
            .floor(self.me, self.policy.usher_until_per_mille);
        let mut largest: Vec<&Process> = movable.to_vec();
        largest.sort_by(|a, b| b.memory.cmp(&a.memory).then(a.id.cmp(&b.id)));
        for p in largest {
            if self.free_of(self.here()) >= until {
                break;
            }
            if p.memory == 0 || self.decided.contains(&p.id) {
                continue;
            }
            let demand = p.usage.demand();
            let targets: Vec<(NodeId, f64)> = self
                .view
                .nodes
                .keys()
                .filter(|&&id| self.accepts(id, p) && self.has_room(id, p))
                .map(|&id| (id, self.load_of(id) + self.share(id, demand)))
                .collect();
            if let Some(to) = self.pick(p, targets) {
                self.record(p, to, Reason::Memory, demand, true);
            }
        }
    }

    /// Rule 4: a guest goes home when its forwarded calls cost more than running here gains.
    /// Away, a share `f` of its time waits for calls and the rest runs at this node's rate; at
    /// home the calls are local (taken as free) and it runs at home's rate with it added. The
    /// speed-up of staying is `rate_here × (1 - f) / rate_home`; it goes home when that is
    /// below 1 by the margin and `f` itself is at least the margin (otherwise home is merely
    /// less loaded, which is rule 6's business).
    fn forward_home(&mut self, movable: &[&Process]) {
        for p in movable {
            let home = p.id.home;
            if !p.is_guest_on(self.here())
                || self.decided.contains(&p.id)
                || !self.policy.has_resided(p)
                || !self.accepts(home, p)
                || !self.has_room(home, p)
            {
                continue;
            }
            let (Some(home_info), demand) = (self.view.get(home), p.usage.demand()) else {
                continue;
            };
            let here_rate = self.me.throughput(self.load_of(self.here()));
            let home_rate =
                home_info.throughput(self.load_of(home) + self.share(home, demand.max(0.01)));
            let forwarded = p.usage.forwarded();
            let speedup = here_rate * (1.0 - forwarded) / home_rate;
            if forwarded >= self.policy.forwarding_margin
                && speedup < 1.0 - self.policy.forwarding_margin
            {
                self.record(p, home, Reason::Forwarding, demand, true);
            }
        }
    }

    /// Rule 4b: a process whose file traffic goes mostly to node `N` (its `/mfs/N` files)
    /// spends the share of its time that traffic takes over the link waiting; at `N` the
    /// files are local (taken as free). It goes there, as rule 4 sends a guest home, when that
    /// share is at least `forwarding_margin` and it would run there faster by the margin. The
    /// residence time applies, and flood prevention as for balance.
    fn go_to_data(&mut self, movable: &[&Process]) {
        for p in movable {
            let Some(data) = p.data else { continue };
            let to = data.node;
            if to == self.here()
                || self.decided.contains(&p.id)
                || !self.policy.has_resided(p)
                || self.moves >= self.policy.max_moves_per_round
                || !self.accepts(to, p)
                || !self.has_room(to, p)
                || !self.may_send(to)
            {
                continue;
            }
            let (Some(there), demand) = (self.view.get(to), p.usage.demand()) else {
                continue;
            };
            let waiting = self.data_wait(p, self.here());
            let here_rate = self.me.throughput(self.load_of(self.here()));
            let there_rate = there.throughput(self.load_of(to) + self.share(to, demand.max(0.01)));
            let speedup = there_rate / (here_rate * (1.0 - waiting));
            if waiting >= self.policy.forwarding_margin
                && speedup > 1.0 + self.policy.forwarding_margin
            {
                self.record(p, to, Reason::Data, demand, true);
            }
        }
    }

    /// The share of its time `p` would wait for its data's traffic running at `at`: none at
    /// the data's node; elsewhere its bytes over the link between the two, at most all of it.
    fn data_wait(&self, p: &Process, at: NodeId) -> f64 {
        match p.data {
            Some(data) if data.node != at => {
                let speed = self.links.between(at, data.node).max(1) as f64;
                (data.bytes_per_second / speed).min(1.0)
            }
            _ => 0.0,
        }
    }

    /// Rule 5: a process that has just exec'd (its image is smallest now) and would share a
    /// CPU here goes to one of the least loaded nodes where it would run at least
    /// `placement_gain` times as fast as here. It counts as wanting a whole CPU (it has not
    /// run yet), unless declared I/O-bound (`mosrun -i`), which keeps it where it is.
    fn place(&mut self, movable: &[&Process]) {
        for p in movable {
            if !p.just_execed || p.class == DecayClass::IoBound || self.decided.contains(&p.id) {
                continue;
            }
            let here_load = self.load_of(self.here()) + self.share(self.here(), 1.0);
            let shares_here = !self.has_idle_cpu(self.me, self.load_of(self.here()), 1.0);
            // What it would need to run at elsewhere to go.
            let wanted_rate = self.me.throughput(here_load) * self.policy.placement_gain;
            let targets: Vec<(NodeId, f64)> =
                if shares_here && self.moves < self.policy.max_moves_per_round {
                    self.view
                        .nodes
                        .iter()
                        .filter(|&(&id, _)| self.accepts(id, p) && self.has_room(id, p))
                        .filter(|&(&id, _)| self.may_place(id))
                        .map(|(&id, info)| (id, info, self.load_of(id) + self.share(id, 1.0)))
                        .filter(|&(_, info, load)| info.throughput(load) >= wanted_rate)
                        .map(|(id, _, load)| (id, load))
                        .collect()
                } else {
                    Vec::new()
                };
            match self.pick_among(p, targets, PLACEMENT_WIDENING) {
                Some(to) => self.record(p, to, Reason::Placement, 1.0, false),
                None => *self.load.entry(self.here()).or_insert(0.0) = here_load,
            }
        }
    }

    /// Rule 6: CPU-bound processes (most demanding first) that have stayed long enough go to
    /// a node whose load, with the process's share there and the hysteresis, stays below this
    /// node's, or to a free CPU `idle_speedup` times faster than they run here, if the move
    /// pays for itself; flood prevention limits how many go to one node per round. A process leaving home must also run faster away by the margin,
    /// counting the share of time its calls took when it was last away.
    ///
    /// `sharing`: this node's CPU-bound processes outnumber its CPUs. Unless they do, the speed
    /// rule takes each to run at a whole CPU here, whatever the load says: a quarter more load
    /// than one process on one CPU (the node's daemon, a shell, a busy host under a lab) would
    /// otherwise send a process alone on its node to an idle node of the same speed, where the
    /// load rule's hysteresis keeps it.
    fn balance(&mut self, movable: &[&Process], sharing: bool) {
        let mut candidates: Vec<&Process> = movable
            .iter()
            .copied()
            .filter(|p| self.policy.may_balance(p))
            .collect();
        candidates.sort_by(|a, b| {
            b.usage
                .demand()
                .min(1.0)
                .total_cmp(&a.usage.demand().min(1.0))
                .then(a.memory.cmp(&b.memory))
                .then(a.id.cmp(&b.id))
        });
        // No target's bar is lower than this: every candidate wants at least
        // `cpu_bound_demand`, and during the round targets only gain load. Once this node's
        // load (which only falls) is not above it, no candidate can move by load; and once
        // its processes' rate (which only rises) is within `idle_speedup` of the fastest idle
        // CPU's (which only falls), none can move by speed: a settled node stops here instead
        // of looking at every node for every process.
        let others = || self.view.nodes.iter().filter(|&(&id, _)| id != self.here());
        let lowest_bar = others()
            .map(|(&id, info)| {
                self.balance_bar(info, self.load_of(id), self.policy.cpu_bound_demand)
            })
            .fold(f64::INFINITY, f64::min);
        let fastest_idle = self
            .others()
            .filter(|&(&id, info)| {
                self.has_idle_cpu(info, self.load_of(id), self.policy.cpu_bound_demand)
            })
            .map(|(_, info)| info.throughput(0.0))
            .fold(0.0, f64::max);
        // The nodes this node's least demanding candidate could move to, by load or by
        // speed: a superset of every candidate's targets, worked out again after each move
        // (loads change).
        let mut below_bar: Option<Vec<NodeId>> = None;
        for p in candidates {
            let here_felt = felt_load(self.me, self.load_of(self.here()));
            let here_rate = self.me.throughput(self.load_of(self.here()));
            let speed_rate = if sharing {
                here_rate
            } else {
                self.me.throughput(0.0)
            };
            let settled =
                here_felt <= lowest_bar && speed_rate * self.policy.idle_speedup >= fastest_idle;
            if self.moves >= self.policy.max_moves_per_round || settled {
                break;
            }
            if self.decided.contains(&p.id) {
                continue;
            }
            let demand = p.usage.demand().min(1.0);
            let least = self.policy.cpu_bound_demand;
            let below = below_bar.get_or_insert_with(|| {
                self.others()
                    .filter(|&(&id, info)| {
                        let load = self.load_of(id);
                        self.balance_bar(info, load, least) < here_felt
                            || self.speeds_up(info, load, least, speed_rate)
                    })
                    .map(|(&id, _)| id)
                    .collect()
            });
            let targets: Vec<(NodeId, f64)> = below
                .iter()
                .filter_map(|&id| self.view.get(id).map(|info| (id, info)))
                .filter(|&(id, _)| self.accepts(id, p) && self.has_room(id, p))
                .filter(|&(id, info)| {
                    let load = self.load_of(id);
                    let by_load = self.balance_bar(info, load, demand) < here_felt;
                    let there_rate = info.throughput(load + self.share(id, demand));
                    (by_load || self.speeds_up(info, load, demand, speed_rate))
                        && self.pays_back(p, id, here_rate / there_rate)
                })
                .filter(|&(id, info)| {
                    // Away from home its calls are forwarded; away from its data, its file
                    // traffic crosses a link: either must still leave it faster there.
                    let leaving_home = !p.is_guest_on(self.here());
                    if !leaving_home && p.data.is_none() {
                        return true;
                    }
                    let forwarded = if leaving_home {
                        p.usage.forwarded()
                    } else {
                        0.0
                    };
                    let rate = info.throughput(self.load_of(id) + self.share(id, demand));
                    let there = rate * (1.0 - forwarded) * (1.0 - self.data_wait(p, id));
                    let here = here_rate * (1.0 - self.data_wait(p, self.here()));
                    there / here > 1.0 + self.policy.forwarding_margin
                })
                .filter(|&(id, _)| self.may_send(id))
                .map(|(id, info)| {
                    (
                        id,
                        felt_load(info, self.load_of(id) + self.share(id, demand)),
                    )
                })
                .collect();
            if let Some(to) = self.pick(p, targets) {
                self.record(p, to, Reason::Balance, demand, true);
                below_bar = None;
            }
        }
    }

    /// Every node of the view but this one.
    fn others(&self) -> impl Iterator<Item = (&NodeId, &NodeInfo)> {
        let here = self.here();
        self.view.nodes.iter().filter(move |&(&id, _)| id != here)
    }

    /// Whether `target`, now at `target_load`, has a CPU free for a process of `demand`: with
    /// it, the target still has a CPU per process, and it would run as fast as one of them,
    /// or nearly ([`FREE_CPU`]).
    fn has_idle_cpu(&self, target: &NodeInfo, target_load: f64, demand: f64) -> bool {
        let with = target_load + demand.clamp(0.0, 1.0) * target.process_share();
        target.throughput(with) >= target.throughput(0.0) * FREE_CPU
    }

    /// Whether a process that runs at `here_rate` here would run at least `idle_speedup`
    /// times faster on a free CPU of `target` (now at `target_load`): the speed rule, for the
    /// end of a run, when CPUs fall idle while processes still share theirs, or run on slower
    /// ones, elsewhere. The load rule's hysteresis would keep five processes on four CPUs
    /// (load 125 against an idle standard node's bar of 140) although each would run a
    /// quarter faster. It cannot ping-pong: back here the process would run slower than there.
    fn speeds_up(&self, target: &NodeInfo, target_load: f64, demand: f64, here_rate: f64) -> bool {
        self.has_idle_cpu(target, target_load, demand)
            && target.throughput(0.0) > here_rate * self.policy.idle_speedup
    }

    /// The load `here` must feel for a process of `demand` to move to `target` (now at
    /// `target_load`) for balance: the hysteresis over the target's load with the process,
    /// and the minimum difference over what one CPU of the target's speed amounts to.
    fn balance_bar(&self, target: &NodeInfo, target_load: f64, demand: f64) -> f64 {
        let by_load = self.policy.move_threshold(target, target_load, demand);
        by_load.max(felt_load(target, 0.0) + self.policy.min_load_difference)
    }

    /// Whether moving `p` to `to`, where it would run `1 / slowdown` times as fast as here,
    /// pays for itself. What a move gains is the process's remaining time times the share of
    /// it the faster CPU saves (`1 - slowdown`); no one knows the remaining time, so it is
    /// taken as the time the process has already wanted a CPU (run or waited for one) since
    /// its last move: a process that has run long is likely to run longer (half of all
    /// processes that reached an age live at least as long again, Harchol-Balter and Downey,
    /// 1997). The gain must be `payback_factor` times the move's cost. Its time wanted, not its
    /// CPU time: on a crowded node, the one that most needs to shed work, a process gets a
    /// sliver of a CPU, and its CPU time would hold it there long after it has shown that it
    /// is long-running (docs/balancing.md, "Simulation").
    fn pays_back(&self, p: &Process, to: NodeId, slowdown: f64) -> bool {
        let cost = self
            .links
            .transfer_time(p.memory, self.here(), to, p.id.home)
            .as_secs_f64();
        let saved = (1.0 - slowdown).max(0.0);
        p.usage.wanted_since_move().as_secs_f64() * saved >= cost * self.policy.payback_factor
    }
}
