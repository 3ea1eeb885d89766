//! A deterministic simulation of the balancer at scale (issue 9: 1,000 nodes, 10,000 jobs):
//! every node runs the real [`decide`] once a simulated second on the view the daemon would
//! give it, and the decisions are carried out on a simulated cluster. docs/balancing.md,
//! "Simulation", gives the model and the figures.
//!
//! Real code: [`decide`], [`Policy`], [`Usage`] (the processes' statistics, fed the samples
//! schedstat would give) and [`LinkSpeeds::transfer_time`]. Modelled, because they are
//! private to other crates or are the world itself: the gauge's smoothing (`crates/gauge`,
//! smooth.rs: MOSIX's exported load, rising at once and falling by 7/8 a second), the gossip
//! (each figure reaches each node after an epidemic's delay), the daemon's loop
//! (`crates/daemon/src/balancer.rs`: what it samples, when a process may first be decided on,
//! the moves it adds to the view in `with_own_moves`, placement at exec), the CPUs (shared as a fair scheduler
//! shares them) and the moves (memory over the link while the process runs on, as the
//! engine's pre-copy sends it, then a freeze).
//!
//! Everything is drawn from one seed and nothing depends on the host: two runs with one seed
//! give the same figures.

use std::time::Duration;

use rmosix_config::NodeId;

use crate::flood::mix;
use crate::{
    ClusterView, DecayClass, Decision, LinkSpeeds, Modes, NodeInfo, ONE_PROCESS, Policy, Process,
    ProcessId, Round, STANDARD_SPEED, Sample, Usage, decide, ready_to_leave,
};
use fair::fair_share_makespan;
use moves::{Moves, Phase};
use tail::Tail;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The daemon's fixed link speed (`LINK_SPEED` in crates/daemon/src/balancer.rs), bytes a
/// second.
const LINK_SPEED: u64 = 100_000_000;
/// What a move costs besides sending the memory, which goes while the process runs on (the
/// engine's pre-copy): the final round's freeze, in seconds of work lost. The engine's pauses
/// are of a few to a hundred milliseconds (docs/engine.md); this is generous.
const FREEZE: f64 = 0.2;
/// A job's image when it has just exec'd, before it has touched its data: what a placement at
/// its exec sends (the program's own pages; its libraries are mapped from the target's
/// identical files, docs/engine.md).
const EXEC_IMAGE: u64 = 4 * MIB;
/// The daemon's `SHOWN_THERE_AFTER`: a move counts in its target's load this long.
const SHOWN_THERE_AFTER: f64 = 3.0;
/// The daemon's `SHOWN_HERE_AFTER`: a move is taken off this node's load this long.
const SHOWN_HERE_AFTER: f64 = 1.5;
/// The gauge's exported load keeps this much of the gap a second when it falls (smooth.rs).
const UPPER_KEEP: f64 = 7.0 / 8.0;
/// The gossip's rounds (`Tuning`: every 200 ms to 3 random members), as an epidemic.
const GOSSIP_ROUND: f64 = 0.2;
const GOSSIP_FANOUT: f64 = 3.0;
/// Published figures kept per node: older ones are never seen (an epidemic reaches every
/// node within 2 s at 1,000 nodes).
const HISTORY: usize = 16;
/// The balance room's clock and round numbers start here, as the daemon's do (`CLOCK_BASE`,
/// seconds since the epoch).
const CLOCK_BASE: u64 = 3600;
const EPOCH_BASE: u64 = 1_796_000_000;

/// A small seeded generator (SplitMix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(&[self.0])
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Log-uniform in [low, high): as many values in each doubling.
    fn log_between(&mut self, low: f64, high: f64) -> f64 {
        (low.ln() + (high.ln() - low.ln()) * self.unit()).exp()
    }

    fn pick<T: Copy>(&mut self, values: &[T]) -> T {
        values[(self.next() % values.len() as u64) as usize]
    }
}

/// How the nodes' speeds and CPUs are drawn.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Hardware {
    /// Three equal clusters (60 % of the nodes: one standard CPU; 2 CPUs of twice the speed;
    /// one CPU of 1.5 times) and the rest drawn: speed 0.5 to 3 standard, 1 to 4 CPUs.
    Mixed,
    /// Speeds log-uniform over 16 times (0.25 to 4 standard), 1 to 8 CPUs.
    Unequal,
}

/// Where and when the jobs start.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Start {
    /// Released uniformly over the first `over` seconds, each at a random home.
    Arrivals { over: u64 },
    /// All at once, on the first `percent` % of the nodes (homes drawn among them).
    Burst { percent: usize },
    /// All at once, each at a random home.
    Everywhere,
}

/// One simulated run.
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub name: &'static str,
    pub nodes: usize,
    pub jobs: usize,
    pub hardware: Hardware,
    pub start: Start,
    pub seed: u64,
    /// Each job's work, standard-CPU seconds, drawn uniformly between these.
    pub work: (f64, f64),
    pub policy: Policy,
}

/// What a run measured.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Report {
    /// From the first start to the last end, seconds.
    pub makespan: f64,
    /// The fluid lower bound ([`ideal_makespan`]).
    pub ideal: f64,
    /// The best a balancer not knowing the jobs' work could do ([`fair_share_makespan`]).
    pub fair: f64,
    pub moves_mean: f64,
    pub moves_max: u32,
    /// Moves that took a job back to a node it had left less than 30 s before.
    pub returns: u64,
    /// The mean age of the other nodes' figures in the views decided on: seconds since the
    /// figure's period closed.
    pub mean_view_age: f64,
    /// Every job finished, each exactly once, with all its work done.
    pub all_done: bool,
    /// Where the time past the ideal went.
    pub tail: Tail,
    /// Which moves were made.
    pub moves: Moves,
}

impl Report {
    pub fn ratio(&self) -> f64 {
        self.makespan / self.ideal
    }
}

#[derive(Clone, Copy, Debug)]
struct Node {
    speed: u32,
    cpus: f64,
    total_memory: u64,
}

impl Node {
    /// Standard CPUs it is worth.
    fn capacity(&self) -> f64 {
        f64::from(self.speed) / f64::from(STANDARD_SPEED) * self.cpus
    }

    /// The gauge's `mosix_units`: a run-queue length in normalised load units.
    fn units(&self, runnable: f64) -> u32 {
        (ONE_PROCESS * runnable / self.capacity()).round() as u32
    }
}

#[derive(Clone, Copy, Debug)]
struct JobSpec {
    home: usize,
    release: u64,
    /// Standard-CPU seconds.
    work: f64,
    /// Fraction of a CPU it wants while it runs.
    demand: f64,
    memory: u64,
}

/// The ideal makespan: that of the best preemptive schedule, where any job may run on any
/// CPU at any moment and moves cost nothing (a fluid bound no balancer can beat). One job
/// runs on one CPU at a time, at most its demand of it, so the best schedule of jobs all
/// released at 0 on CPUs of speeds s1 >= s2 >= ... takes
/// `max(total work / total speed, max over k of (k largest works) / (k fastest CPUs' speeds))`
/// (Horvath, Lam and Sethi, 1977; k = 1 is "the longest job on the fastest CPU"), and never
/// less than any job's work over its demand times the fastest speed. With releases, the bound
/// holds for the jobs released at or after each release time `r`, from `r`: the ideal is the
/// largest such `r + bound`. Seconds from the first release.
fn ideal_makespan(nodes: &[Node], jobs: &[JobSpec]) -> f64 {
    let mut speeds: Vec<f64> = nodes
        .iter()
        .flat_map(|n| {
            let speed = f64::from(n.speed) / f64::from(STANDARD_SPEED);
            std::iter::repeat_n(speed, n.cpus.round() as usize)
        })
        .collect();
    speeds.sort_by(|a, b| b.total_cmp(a));
    let fastest = speeds.first().copied().unwrap_or(0.0);
    let mut releases: Vec<u64> = jobs.iter().map(|j| j.release).collect();
    releases.sort_unstable();
    releases.dedup();
    let first = releases.first().copied().unwrap_or(0) as f64;
    let mut ideal = 0.0f64;
    for &r in &releases {
        let mut works: Vec<f64> = jobs
            .iter()
            .filter(|j| j.release >= r)
            .map(|j| j.work)
            .collect();
        works.sort_by(|a, b| b.total_cmp(a));
        let (mut work_sum, mut speed_sum, mut bound) = (0.0, 0.0, 0.0f64);
        for (k, work) in works.iter().enumerate() {
            work_sum += work;
            if let Some(speed) = speeds.get(k) {
                speed_sum += speed;
            }
            bound = bound.max(work_sum / speed_sum);
        }
        ideal = ideal.max(r as f64 + bound);
    }
    let slowest_job = jobs
        .iter()
        .map(|j| j.release as f64 + j.work / (j.demand * fastest))
        .fold(0.0, f64::max);
    ideal.max(slowest_job) - first
}

fn draw_nodes(rng: &mut Rng, count: usize, hardware: Hardware) -> Vec<Node> {
    let memory = [16 * GIB, 32 * GIB, 64 * GIB, 128 * GIB];
    (0..count)
        .map(|i| {
            let (speed, cpus) = match hardware {
                Hardware::Mixed => match i * 10 / count {
                    0 | 1 => (10_000.0, 1.0),
                    2 | 3 => (20_000.0, 2.0),
                    4 | 5 => (15_000.0, 1.0),
                    _ => (rng.between(5_000.0, 30_000.0), rng.pick(&[1.0, 2.0, 4.0])),
                },
                Hardware::Unequal => (
                    rng.log_between(2_500.0, 40_000.0),
                    rng.pick(&[1.0, 2.0, 4.0, 8.0]),
                ),
            };
            Node {
                speed: speed.round() as u32,
                cpus,
                total_memory: rng.pick(&memory),
            }
        })
        .collect()
}

fn draw_jobs(rng: &mut Rng, scenario: &Scenario) -> Vec<JobSpec> {
    (0..scenario.jobs)
        .map(|_| {
            let (home, release) = match scenario.start {
                Start::Arrivals { over } => (
                    (rng.next() % scenario.nodes as u64) as usize,
                    rng.next() % (over + 1),
                ),
                Start::Burst { percent } => {
                    let busy = (scenario.nodes * percent / 100).max(1);
                    ((rng.next() % busy as u64) as usize, 0)
                }
                Start::Everywhere => ((rng.next() % scenario.nodes as u64) as usize, 0),
            };
            let demand = if rng.unit() < 0.75 {
                1.0
            } else {
                rng.between(0.7, 1.0)
            };
            JobSpec {
                home,
                release,
                work: rng.between(scenario.work.0, scenario.work.1),
                demand,
                memory: rng.log_between(16.0 * MIB as f64, GIB as f64) as u64,
            }
        })
        .collect()
}

/// The gossip as an epidemic: the chance that a figure published at one node has reached a
/// given other node within `r` gossip rounds, for `r` = 0, 1, ... until it is certain. Push
/// gossip with fan-out f: an uninformed node escapes a round with chance e^(-f x) when a
/// share x is informed.
fn epidemic(nodes: usize) -> Vec<f64> {
    let n = nodes.max(2) as f64;
    let mut informed = 1.0 / n;
    let mut reached = vec![0.0];
    while reached.len() < 64 && *reached.last().unwrap() < 1.0 - 1e-9 {
        informed = 1.0 - (1.0 - informed) * (-GOSSIP_FANOUT * informed).exp();
        reached.push(((informed - 1.0 / n) / (1.0 - 1.0 / n)).min(1.0));
    }
    *reached.last_mut().unwrap() = 1.0;
    reached
}

/// What one node has published at the end of one second.
#[derive(Clone, Copy, Default)]
struct Published {
    load: u32,
    free_memory: u64,
    ready: u32,
}

/// The daemon's record of a process where it runs (`Tracked` in balancer.rs).
#[derive(Clone, Copy)]
struct Tracked {
    usage: Usage,
    /// Whether schedstat was read at the last tick: the next one gives a sample.
    read: bool,
    /// Its last move, or when the loop first saw it.
    since: u64,
}

impl Tracked {
    fn new(now: u64) -> Tracked {
        Tracked {
            usage: Usage::new(DecayClass::Normal),
            read: false,
            since: now,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Place {
    Waiting,
    On(usize),
    /// Its memory goes to `to` while it runs on here (pre-copy), until `until`; meanwhile no
    /// loop decides on it (an order is under way).
    Leaving {
        to: usize,
        until: f64,
    },
    Done(f64),
}

struct Job {
    spec: JobSpec,
    left: f64,
    place: Place,
    /// At home: the home daemon's record, kept while the job is away.
    home_track: Tracked,
    /// Away: the host's record, new at each arrival.
    guest_track: Tracked,
    moves: u32,
    /// The last node it left and when, to count returns.
    left_node: Option<(usize, f64)>,
    /// CPU time and time waited for a CPU during the last second.
    ran: f64,
    waited: f64,
}

impl Job {
    fn id(&self, index: usize) -> ProcessId {
        ProcessId {
            home: node_id(self.spec.home),
            pid: index as u32 + 1,
        }
    }
}

fn node_id(index: usize) -> NodeId {
    NodeId::new(index as u16 + 1).expect("node numbers fit")
}

/// How `cpus` CPUs are shared among processes that want `demands` (fractions of one CPU),
/// as a fair scheduler shares them: max-min fairness, each gets what it wants if that is no
/// more than an equal share of what the others leave, and the rest is split evenly.
fn fair_shares(cpus: f64, demands: impl Iterator<Item = f64>) -> Vec<f64> {
    let demands: Vec<f64> = demands.collect();
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by(|&a, &b| demands[a].total_cmp(&demands[b]));
    let mut shares = vec![0.0; demands.len()];
    let mut left = cpus;
    for (served, &i) in order.iter().enumerate() {
        let equal = left / (order.len() - served) as f64;
        shares[i] = demands[i].min(equal).min(1.0);
        left -= shares[i];
    }
    shares
}

/// A move a node ordered, as its daemon remembers it (`Sent` in balancer.rs).
#[derive(Clone, Copy)]
struct Sent {
    /// From when the view may show it: the move's end, which the daemon hears of (its own
    /// process's from the supervisor's answer, a guest's when its home's recall returns).
    from: f64,
    to: usize,
    /// The job ran here before it left (not a placement at its exec): its share comes off
    /// this node's load until the gauge shows it gone.
    ran_here: bool,
}

/// The simulated cluster.
struct Cluster {
    policy: Policy,
    links: LinkSpeeds,
    nodes: Vec<Node>,
    jobs: Vec<Job>,
    /// Jobs running on each node.
    running: Vec<Vec<usize>>,
    /// The gauge per node: exported (smoothed) run-queue length and last period's.
    upper: Vec<f64>,
    last_runnable: Vec<f64>,
    /// Published figures, by second modulo [`HISTORY`].
    published: Vec<[Published; HISTORY]>,
    /// What each node's last round counted ready to leave, published with its next figures.
    ready: Vec<u32>,
    /// Moves each node ordered lately (the daemon's `sent`).
    sent: Vec<Vec<Sent>>,
    /// When each node kept a job it could have placed at its exec (the daemon's `kept`).
    kept: Vec<Vec<f64>>,
    /// Moves and placements each node ordered in its last second: (the second, how many).
    ordered: Vec<(u64, usize)>,
    reached: Vec<f64>,
    seed: u64,
    returns: u64,
    age_sum: f64,
    age_count: f64,
    moves: Moves,
}

impl Cluster {
    fn new(scenario: &Scenario, nodes: Vec<Node>, specs: &[JobSpec]) -> Cluster {
        let count = nodes.len();
        let published: Vec<[Published; HISTORY]> = nodes
            .iter()
            .map(|n| {
                [Published {
                    load: 0,
                    free_memory: n.total_memory,
                    ready: 0,
                }; HISTORY]
            })
            .collect();
        Cluster {
            policy: scenario.policy.clone(),
            links: LinkSpeeds::uniform(LINK_SPEED),
            jobs: specs
                .iter()
                .map(|&spec| Job {
                    spec,
                    left: spec.work,
                    place: Place::Waiting,
                    home_track: Tracked::new(0),
                    guest_track: Tracked::new(0),
                    moves: 0,
                    left_node: None,
                    ran: 0.0,
                    waited: 0.0,
                })
                .collect(),
            nodes,
            running: vec![Vec::new(); count],
            upper: vec![0.0; count],
            last_runnable: vec![0.0; count],
            published,
            ready: vec![0; count],
            sent: vec![Vec::new(); count],
            kept: vec![Vec::new(); count],
            ordered: vec![(0, 0); count],
            reached: epidemic(count),
            seed: scenario.seed,
            returns: 0,
            age_sum: 0.0,
            age_count: 0.0,
            moves: Moves::default(),
        }
    }

    /// Starts the second [s, s+1): moves that have ended land; returns the jobs released now,
    /// for [`Cluster::start`].
    fn admit(&mut self, s: u64) -> Vec<usize> {
        let now = s as f64;
        let mut released = Vec::new();
        for index in 0..self.jobs.len() {
            let job = &mut self.jobs[index];
            let to = match job.place {
                Place::Waiting if job.spec.release == s => {
                    released.push(index);
                    continue;
                }
                Place::Leaving { to, until } if until <= now => {
                    let from = self.running.iter().position(|r| r.contains(&index));
                    if let Some(from) = from {
                        self.running[from].retain(|&j| j != index);
                    }
                    job.left += FREEZE;
                    if to == job.spec.home {
                        // The home daemon sees it back at its next tick (`t.node` changed).
                        job.home_track.usage.moved();
                        job.home_track.read = false;
                        job.home_track.since = s;
                    } else {
                        job.guest_track = Tracked::new(s);
                    }
                    to
                }
                _ => continue,
            };
            job.place = Place::On(to);
            self.running[to].push(index);
            if job.moves > 0 {
                let crowded = self.running[to].len() as f64 > self.nodes[to].cpus;
                self.moves.landed(job.moves, crowded);
            }
        }
        released
    }

    /// The job `index`, released at its home at the second `s`, execs there: the home daemon
    /// places it at its exec, before it runs (`place_at_exec` in crates/daemon/src/
    /// balancer.rs: at most a round's moves a second, on the view with this node's own moves),
    /// or it starts at home. A placed job is stopped until it lands: a few hundred
    /// milliseconds for an image this small (docs/make.md), counted as a freeze.
    fn start(&mut self, index: usize, s: u64, phase: Phase, view: &mut ClusterView) {
        let home = self.jobs[index].spec.home;
        self.jobs[index].home_track = Tracked::new(s);
        let to = if self.ordered_at(home, s) < self.policy.max_moves_per_round {
            self.view_of(home, s, view);
            let process = Process {
                id: self.jobs[index].id(index),
                class: DecayClass::Normal,
                usage: Usage::new(DecayClass::Normal),
                memory: EXEC_IMAGE,
                memory_need: 0,
                locked: false,
                since_move: Duration::ZERO,
                moves: 0,
                just_execed: true,
                data: None,
            };
            decide(
                &self.policy,
                &round_at(home, s),
                view,
                &self.links,
                &[process],
            )
            .first()
            .map(|d| usize::from(d.target().get()) - 1)
        } else {
            None
        };
        let now = s as f64;
        let Some(to) = to else {
            self.kept[home].push(now);
            self.jobs[index].place = Place::On(home);
            self.running[home].push(index);
            return;
        };
        self.order(home, s);
        self.sent[home].push(Sent {
            from: now,
            to,
            ran_here: false,
        });
        let job = &mut self.jobs[index];
        job.moves = 1;
        job.left += FREEZE;
        job.left_node = Some((home, now));
        job.guest_track = Tracked::new(s);
        job.place = Place::On(to);
        self.running[to].push(index);
        let crowded = self.running[to].len() as f64 > self.nodes[to].cpus;
        let crowded_home = self.running[home].len() as f64 + 1.0 > self.nodes[home].cpus;
        self.moves.ordered(1, phase, false, crowded_home);
        self.moves.landed(1, crowded);
    }

    /// How many moves and placements `node` ordered at the second `s`.
    fn ordered_at(&mut self, node: usize, s: u64) -> usize {
        let (second, count) = &mut self.ordered[node];
        if *second != s {
            *second = s;
            *count = 0;
        }
        *count
    }

    /// `node` orders a move or a placement at the second `s`.
    fn order(&mut self, node: usize, s: u64) {
        self.ordered_at(node, s);
        self.ordered[node].1 += 1;
    }

    /// Runs every node for the second [s, s+1): its CPUs are shared fairly ([`fair_shares`]),
    /// and a job that ends frees its share for the rest of the second.
    fn run(&mut self, s: u64) {
        for node in 0..self.nodes.len() {
            let info = self.nodes[node];
            let speed = f64::from(info.speed) / f64::from(STANDARD_SPEED);
            let mut runnable = 0.0;
            for &j in &self.running[node] {
                self.jobs[j].ran = 0.0;
                self.jobs[j].waited = 0.0;
            }
            let mut elapsed = 0.0;
            while elapsed < 1.0 && !self.running[node].is_empty() {
                let wanted: f64 = self.running[node]
                    .iter()
                    .map(|&j| self.jobs[j].spec.demand)
                    .sum();
                let shares = fair_shares(
                    info.cpus,
                    self.running[node].iter().map(|&j| self.jobs[j].spec.demand),
                );
                let step = self.running[node]
                    .iter()
                    .zip(&shares)
                    .map(|(&j, share)| self.jobs[j].left / (share * speed))
                    .fold(1.0 - elapsed, f64::min);
                for (&j, share) in self.running[node].iter().zip(&shares) {
                    let job = &mut self.jobs[j];
                    let cpu = share * step;
                    job.ran += cpu;
                    job.waited += job.spec.demand * step - cpu;
                    job.left -= cpu * speed;
                }
                runnable += wanted * step;
                elapsed += step;
                let jobs = &mut self.jobs;
                let mut departed = 0.0;
                self.running[node].retain(|&j| {
                    if jobs[j].left > 1e-9 {
                        return true;
                    }
                    jobs[j].place = Place::Done(s as f64 + elapsed);
                    departed += jobs[j].spec.demand;
                    false
                });
                // The daemon takes an ended process's demand off the exported load at once
                // (balancer.rs `ended_here`, smooth.rs `departed`), and the open period
                // counts as if it had not been in it.
                self.upper[node] = (self.upper[node] - departed).max(0.0);
                runnable = (runnable - departed * elapsed).max(0.0);
            }
            // The gauge closes its period and publishes (smooth.rs: rises at once, falls
            // by 7/8 a second).
            self.upper[node] = if runnable > self.upper[node] {
                runnable
            } else {
                runnable + (self.upper[node] - runnable) * UPPER_KEEP
            };
            self.last_runnable[node] = runnable;
            let used: u64 = self.running[node]
                .iter()
                .map(|&j| self.jobs[j].spec.memory)
                .sum();
            self.published[node][(s as usize + 1) % HISTORY] = Published {
                load: info.units(self.upper[node]),
                free_memory: info
                    .total_memory
                    .saturating_sub(used + info.total_memory / 8),
                ready: self.ready[node],
            };
        }
    }

    /// The daemon's sampling at the tick `t`: the processes its loop would decide on. A
    /// process is decided on from its second reading after it arrived (the first has nothing
    /// to compare with).
    fn sample(&mut self, node: usize, t: u64) -> Vec<Process> {
        let mut processes = Vec::new();
        for &j in &self.running[node] {
            let job = &mut self.jobs[j];
            if matches!(job.place, Place::Leaving { .. }) {
                continue;
            }
            let id = job.id(j);
            let at_home = node == job.spec.home;
            let track = if at_home {
                &mut job.home_track
            } else {
                &mut job.guest_track
            };
            let was_read = std::mem::replace(&mut track.read, true);
            if !was_read {
                continue;
            }
            let sample = Sample {
                interval: Duration::from_secs(1),
                ran: Duration::from_secs_f64(job.ran),
                waited: Duration::from_secs_f64(job.waited),
                forwarded: None,
            };
            track.usage.update(DecayClass::Normal, &sample);
            processes.push(Process {
                id,
                class: DecayClass::Normal,
                usage: track.usage,
                memory: job.spec.memory,
                memory_need: 0,
                locked: false,
                since_move: Duration::from_secs(t - track.since),
                // A guest's moves before it came are not known where it runs: it counts one.
                moves: if at_home { job.moves } else { 1 },
                just_execed: false,
                data: None,
            });
        }
        processes
    }

    /// When the figures of node `subject`'s gauge period that closed at second `k` reach
    /// `observer`: the node publishes them at its own phase of the second (its publishing
    /// timer is not its gauge's), then the epidemic carries them.
    fn reaches(&self, observer: usize, subject: usize, k: u64) -> f64 {
        let unit = |u: u64| (u >> 11) as f64 / (1u64 << 53) as f64;
        let phase = unit(mix(&[self.seed, subject as u64]));
        let u = unit(mix(&[self.seed, observer as u64, subject as u64, k]));
        let rounds = self.reached.iter().position(|&p| u < p).unwrap_or(0);
        k as f64 + phase + rounds as f64 * GOSSIP_ROUND
    }

    /// `observer`'s view at the tick `t`: its own figures as of now, the others' as the
    /// gossip has brought them, then the daemon's `with_own_moves`.
    fn view_of(&mut self, observer: usize, t: u64, view: &mut ClusterView) {
        let clock = (CLOCK_BASE + t) as f64;
        for (subject, info) in view.nodes.values_mut().enumerate() {
            let (k, heard) = if subject == observer {
                (t, clock)
            } else {
                let mut k = t.saturating_sub(1);
                loop {
                    let arrived = self.reaches(observer, subject, k);
                    if arrived <= t as f64 || k == 0 || t - k + 1 >= HISTORY as u64 {
                        break (k, CLOCK_BASE as f64 + arrived.min(t as f64));
                    }
                    k -= 1;
                }
            };
            if subject != observer {
                self.age_sum += (t - k) as f64;
                self.age_count += 1.0;
            }
            let figures = self.published[subject][k as usize % HISTORY];
            info.load = figures.load;
            info.free_memory = figures.free_memory;
            info.ready = figures.ready;
            info.heard = Duration::from_secs_f64(heard);
        }
        // with_own_moves (crates/daemon/src/balancer.rs, private there): this node's load is
        // at most its last period's, less the processes it sent in the last 1.5 s and plus
        // those it kept at their exec in that time; each target of a move of the last 3 s
        // carries the process's share.
        let now = t as f64;
        self.sent[observer].retain(|sent| now - sent.from < SHOWN_THERE_AFTER);
        self.kept[observer].retain(|&at| now - at < SHOWN_HERE_AFTER);
        let own = node_id(observer);
        let last_load = self.nodes[observer].units(self.last_runnable[observer]);
        let own_share = view.nodes[&own].process_share().round() as u32;
        let me = view.nodes.get_mut(&own).expect("every node is in the view");
        me.load = me.load.min(last_load);
        for sent in &self.sent[observer] {
            let target = view
                .nodes
                .get_mut(&node_id(sent.to))
                .expect("targets are nodes");
            target.load = target
                .load
                .saturating_add(target.process_share().round() as u32);
            if sent.ran_here && now - sent.from < SHOWN_HERE_AFTER {
                let me = view.nodes.get_mut(&own).expect("every node is in the view");
                me.load = me.load.saturating_sub(own_share);
            }
        }
        let kept = self.kept[observer].len() as u32;
        let me = view.nodes.get_mut(&own).expect("every node is in the view");
        me.load = me.load.saturating_add(own_share.saturating_mul(kept));
    }

    /// Carries out one decision of `node`'s loop at the tick `t`.
    fn carry_out(&mut self, node: usize, t: u64, phase: Phase, decision: Decision) {
        self.order(node, t);
        let index = decision.process().pid as usize - 1;
        let to = usize::from(decision.target().get()) - 1;
        let now = t as f64;
        let job = &mut self.jobs[index];
        assert_eq!(
            job.place,
            Place::On(node),
            "decided on a job that is not here"
        );
        let transfer = self
            .links
            .transfer_time(
                job.spec.memory,
                node_id(node),
                node_id(to),
                node_id(job.spec.home),
            )
            .as_secs_f64();
        if job
            .left_node
            .is_some_and(|(left, at)| left == to && now - at < 30.0)
        {
            self.returns += 1;
        }
        job.left_node = Some((node, now));
        self.sent[node].push(Sent {
            from: now + transfer,
            to,
            ran_here: true,
        });
        job.place = Place::Leaving {
            to,
            until: now + transfer,
        };
        job.moves += 1;
        let crowded = self.running[node].len() as f64 > self.nodes[node].cpus;
        let by_host = node != job.spec.home;
        self.moves.ordered(job.moves, phase, by_host, crowded);
    }

    fn everything_done(&self) -> bool {
        self.jobs.iter().all(|j| matches!(j.place, Place::Done(_)))
    }
}

/// The round `node`'s loop decides at the second `t`, numbered as the daemon numbers them.
fn round_at(node: usize, t: u64) -> Round {
    Round {
        here: node_id(node),
        now: Duration::from_secs(CLOCK_BASE + t),
        number: EPOCH_BASE + t,
    }
}

/// The part of the run the second `t` is in.
fn phase_at(t: u64, tail: &Tail) -> Phase {
    if t < moves::SPREAD {
        Phase::Spread
    } else if tail.at == 0.0 {
        Phase::Middle
    } else {
        Phase::Drain
    }
}

/// Runs one scenario to its end and reports.
pub(crate) fn simulate(scenario: &Scenario) -> Report {
    let mut rng = Rng::new(scenario.seed);
    let nodes = draw_nodes(&mut rng, scenario.nodes, scenario.hardware);
    let specs = draw_jobs(&mut rng, scenario);
    let ideal = ideal_makespan(&nodes, &specs);
    let fair = fair_share_makespan(&nodes, &specs);
    let mut cluster = Cluster::new(scenario, nodes, &specs);
    let mut view = ClusterView::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        view.insert(
            node_id(i),
            NodeInfo {
                alive: true,
                modes: Modes::default(),
                load: 0,
                speed: node.speed,
                cpus: node.cpus,
                free_memory: node.total_memory,
                total_memory: node.total_memory,
                ready: 0,
                heard: Duration::from_secs(CLOCK_BASE),
            },
        );
    }
    // Far beyond any sensible makespan: a run that gets here has lost jobs.
    let limit = (ideal * 20.0) as u64 + 1000;
    let first = specs.iter().map(|j| j.release).min().unwrap_or(0) as f64;
    let mut tail = Tail::default();
    let mut s = 0;
    while s < limit && !cluster.everything_done() {
        for index in cluster.admit(s) {
            let phase = phase_at(s, &tail);
            cluster.start(index, s, phase, &mut view);
        }
        cluster.watch_drain(&mut tail, s, first);
        cluster.run(s);
        let t = s + 1;
        for node in 0..cluster.nodes.len() {
            let processes = cluster.sample(node, t);
            if processes.is_empty() {
                cluster.ready[node] = 0;
                continue;
            }
            cluster.view_of(node, t, &mut view);
            let round = round_at(node, t);
            let decisions = decide(&cluster.policy, &round, &view, &cluster.links, &processes);
            cluster.ready[node] =
                ready_to_leave(&cluster.policy, &round, &view, &processes, &decisions);
            let phase = phase_at(t, &tail);
            for decision in decisions {
                cluster.carry_out(node, t, phase, decision);
            }
        }
        cluster.count_held(&mut tail, t);
        s = t;
    }
    let ends: Vec<f64> = cluster
        .jobs
        .iter()
        .filter_map(|j| match j.place {
            Place::Done(at) => Some(at),
            _ => None,
        })
        .collect();
    let all_done =
        ends.len() == cluster.jobs.len() && cluster.jobs.iter().all(|j| j.left.abs() < 1e-6);
    let moves: Vec<u32> = cluster.jobs.iter().map(|j| j.moves).collect();
    Report {
        makespan: ends.iter().copied().fold(0.0, f64::max) - first,
        ideal,
        fair,
        moves_mean: f64::from(moves.iter().sum::<u32>()) / moves.len().max(1) as f64,
        moves_max: moves.iter().copied().max().unwrap_or(0),
        returns: cluster.returns,
        mean_view_age: cluster.age_sum / cluster.age_count.max(1.0),
        all_done,
        tail,
        moves: cluster.moves,
    }
}

mod fair;
mod moves;
mod tail;
mod tests;
