//! A deterministic simulation of the view's gossip at scale (issue 9): up to a thousand
//! nodes in one thread, on a simulated clock, with a seeded network that delays and loses
//! datagrams. Each node is the engine's own foca ([`swim`]: same settings and codec) and
//! its own table, and behaves as the engine does: it greets every node at start, sends its
//! window every `window_period` ([`window_step`]), answers windows, wants and profiles
//! ([`answer`]), and greets one silent node every `publish_period`. What is left out:
//! sealing and the checks in front of foca (tested in `tests.rs` on real sockets; a
//! datagram is counted at its sealed size), and tokio.
//!
//! Everything happens at an event of one queue, ordered by time and then by when it was
//! queued, so a seed decides the whole run. Figures go to stderr:
//! `cargo test --release -p rmosix-view sim -- --nocapture`.

use std::collections::BTreeMap;
use std::time::Duration;

use foca::{AccumulatingRuntime, OwnedNotification, Timer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;

use rmosix_config::NodeId;

use crate::Tuning;
use crate::engine::{Swim, answer, silent_nodes, swim, window_step};
use crate::message::{self, Message};
use crate::seal::{HEADER_LEN, MAX_PLAIN, TAG_LEN};
use crate::state::NodeState;
use crate::swim::Id;
use crate::table::Table;

/// What the network does to a datagram.
#[derive(Clone, Copy, Debug)]
struct Network {
    /// Each datagram takes a delay drawn uniformly from zero to this.
    max_latency: Duration,
    /// The share of datagrams lost (0 to 1).
    loss: f64,
}

enum Event {
    Start(usize),
    /// The engine's `publish_period` tick: greet one silent node.
    Greet(usize),
    /// The engine's `window_period` tick.
    Window(usize),
    Timer(usize, Timer<Id>),
    /// A message (a datagram's plain text) from one node to another.
    Datagram {
        from: usize,
        to: usize,
        plain: Vec<u8>,
    },
    Crash(usize),
    /// The node's daemon publishes a new state.
    Publish(usize, NodeState),
}

struct Node {
    id: Id,
    foca: Swim,
    runtime: AccumulatingRuntime<Id>,
    table: Table,
    first_tag: u16,
    state: NodeState,
    /// Started and not crashed.
    up: bool,
    crashed: bool,
    /// Bytes sent, sealed, since the start.
    sent: u64,
}

/// A live node that another live node holds dead: who, whom, since when.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FalseDown {
    observer: usize,
    node: usize,
    from: Duration,
    to: Option<Duration>,
}

struct Sim {
    now: Duration,
    /// The simulated clock's zero, for the tables, which take instants.
    base: Instant,
    queue: BTreeMap<(Duration, u64), Event>,
    queued: u64,
    rng: SmallRng,
    network: Network,
    tuning: Tuning,
    nodes: Vec<Node>,
    map: Vec<NodeId>,
    /// A digest of every datagram put on the network (arrival time, sender, receiver,
    /// bytes): the trace.
    trace: u64,
    delivered: u64,
    lost: u64,
    /// foca or a decoder refused what it was handed: never expected.
    errors: u64,
    false_downs: Vec<FalseDown>,
}

/// What a sealed datagram adds to its message.
const SEAL: u64 = (HEADER_LEN + TAG_LEN) as u64;

fn node_id(index: usize) -> NodeId {
    NodeId::new(u16::try_from(index + 1).expect("fewer than 65535 nodes")).expect("not 0")
}

fn index(node: NodeId) -> usize {
    usize::from(node.get()) - 1
}

/// Each node's first state: its load is its number, and a 32-byte compatibility key (a
/// SHA-256 digest, as the daemon publishes) makes profiles their real size.
fn first_state(index: usize) -> NodeState {
    NodeState {
        load: u32::try_from(index + 1).expect("small"),
        speed: 10_000,
        milli_cpus: 4000,
        mem_total: 16 << 30,
        mem_free: 9 << 30,
        utilisation_pct: 30,
        compat: vec![0x5a; 32],
        ..NodeState::default()
    }
}

/// FNV-1a, to fold the trace into one number.
fn fold(digest: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(digest, |d, b| {
        (d ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Sim {
    /// `count` nodes that start at random moments within the first `spread`.
    fn new(count: usize, seed: u64, network: Network, spread: Duration) -> Sim {
        let tuning = Tuning::default();
        let map: Vec<NodeId> = (0..count).map(node_id).collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        let nodes = (0..count)
            .map(|i| {
                let id = Id {
                    node: node_id(i),
                    generation: 1,
                };
                Node {
                    id,
                    foca: swim(id, &tuning, count, rng.random()),
                    runtime: AccumulatingRuntime::new(),
                    table: Table::new(node_id(i), map.iter().copied()),
                    first_tag: rng.random(),
                    state: first_state(i),
                    up: false,
                    crashed: false,
                    sent: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            now: Duration::ZERO,
            base: Instant::now(),
            queue: BTreeMap::new(),
            queued: 0,
            rng,
            network,
            tuning,
            nodes,
            map,
            trace: 0xcbf2_9ce4_8422_2325,
            delivered: 0,
            lost: 0,
            errors: 0,
            false_downs: Vec::new(),
        };
        for i in 0..count {
            let at = sim.rng.random_range(Duration::ZERO..=spread);
            sim.at(at, Event::Start(i));
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn at(&mut self, at: Duration, event: Event) {
        self.queue.insert((at, self.queued), event);
        self.queued += 1;
    }

    /// Runs every event up to `until`, looking at `done` every `step`; returns the first
    /// look at which it held, or `None` if it did not by `until`.
    fn run_until(
        &mut self,
        until: Duration,
        step: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let mut look = self.now;
        loop {
            if done(self) {
                return Some(self.now);
            }
            if look >= until {
                return None;
            }
            look = (look + step).min(until);
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > look {
                    break;
                }
                let ((at, _), event) = entry.remove_entry();
                self.now = at;
                self.handle(event);
            }
            self.now = look;
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.instant();
        let i = match event {
            Event::Start(i) => {
                self.nodes[i].up = true;
                self.publish(i);
                for other in 0..self.nodes.len() {
                    if other != i {
                        self.announce(i, other);
                    }
                }
                // tokio's intervals tick at once, then every period.
                self.at(self.now, Event::Greet(i));
                self.at(self.now, Event::Window(i));
                i
            }
            Event::Greet(i) if self.nodes[i].up => {
                let node = &self.nodes[i];
                let silent = silent_nodes(&node.foca, node.id.node, self.map.iter().copied());
                if !silent.is_empty() {
                    let pick = silent[self.rng.random_range(0..silent.len())];
                    self.announce(i, index(pick));
                }
                self.at(self.now + self.tuning.publish_period, Event::Greet(i));
                i
            }
            Event::Window(i) if self.nodes[i].up => {
                let node = &self.nodes[i];
                if let Some((to, plain)) = window_step(
                    &node.foca,
                    &node.table,
                    self.map.iter().copied(),
                    self.tuning.window,
                    &mut self.rng,
                    now,
                ) {
                    self.send(i, index(to), plain);
                }
                self.at(self.now + self.tuning.window_period, Event::Window(i));
                i
            }
            Event::Timer(i, timer) if self.nodes[i].up => {
                let node = &mut self.nodes[i];
                if node.foca.handle_timer(timer, &mut node.runtime).is_err() {
                    self.errors += 1;
                }
                i
            }
            Event::Datagram { from, to, plain } if self.nodes[to].up => {
                self.delivered += 1;
                let node = &mut self.nodes[to];
                match Message::decode(&plain) {
                    Ok(Message::Foca(message)) => {
                        if node.foca.handle_data(message, &mut node.runtime).is_err() {
                            self.errors += 1;
                        }
                    }
                    Ok(message) => {
                        for reply in answer(&mut node.table, message, now) {
                            self.send(to, from, reply);
                        }
                    }
                    Err(_) => self.errors += 1,
                }
                to
            }
            Event::Crash(i) => {
                self.nodes[i].up = false;
                self.nodes[i].crashed = true;
                return;
            }
            Event::Publish(i, state) => {
                self.nodes[i].state = state;
                self.publish(i);
                return;
            }
            // A stopped node neither hears nor acts.
            Event::Greet(_) | Event::Window(_) | Event::Timer(..) | Event::Datagram { .. } => {
                return;
            }
        };
        self.flush(i);
    }

    /// The engine's `publish`.
    fn publish(&mut self, i: usize) {
        let now = self.instant();
        let node = &mut self.nodes[i];
        node.table.publish_own(&node.state, node.first_tag, now);
    }

    /// The engine's `announce`.
    fn announce(&mut self, i: usize, to: usize) {
        let node = &mut self.nodes[i];
        let dst = Id {
            node: node_id(to),
            generation: 0,
        };
        if node.foca.announce(dst, &mut node.runtime).is_err() {
            self.errors += 1;
        }
    }

    /// Puts a message on the network, counted at its sealed size.
    fn send(&mut self, from: usize, to: usize, plain: Vec<u8>) {
        assert!(plain.len() <= MAX_PLAIN, "{} bytes", plain.len());
        self.nodes[from].sent += plain.len() as u64 + SEAL;
        if self.rng.random_bool(self.network.loss) {
            self.lost += 1;
            return;
        }
        let delay = self
            .rng
            .random_range(Duration::ZERO..=self.network.max_latency);
        let mut digest = fold(self.trace, &(self.now + delay).as_nanos().to_be_bytes());
        digest = fold(
            digest,
            &[from as u8, (from >> 8) as u8, to as u8, (to >> 8) as u8],
        );
        self.trace = fold(digest, &plain);
        self.at(self.now + delay, Event::Datagram { from, to, plain });
    }

    /// The engine's `flush`: timers into the queue, datagrams onto the network, and the
    /// verdicts on live nodes noted.
    fn flush(&mut self, i: usize) {
        while let Some((after, timer)) = self.nodes[i].runtime.to_schedule() {
            self.at(self.now + after, Event::Timer(i, timer));
        }
        while let Some(notification) = self.nodes[i].runtime.to_notify() {
            match notification {
                OwnedNotification::MemberDown(id) if self.nodes[index(id.node)].up => {
                    self.false_downs.push(FalseDown {
                        observer: i,
                        node: index(id.node),
                        from: self.now,
                        to: None,
                    });
                }
                OwnedNotification::MemberUp(id) => {
                    let now = self.now;
                    for down in self
                        .false_downs
                        .iter_mut()
                        .filter(|d| d.observer == i && d.node == index(id.node) && d.to.is_none())
                    {
                        down.to = Some(now);
                    }
                }
                _ => {}
            }
        }
        while let Some((to, bytes)) = self.nodes[i].runtime.to_send() {
            self.send(i, index(to.node), message::foca(&bytes));
        }
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].up)
    }

    /// The mean age of the figures every live node holds of every other live node, now;
    /// `None` if one holds none of another.
    fn mean_age(&self) -> Option<Duration> {
        let now = self.instant();
        let live: Vec<usize> = self.live().collect();
        let mut total = Duration::ZERO;
        let mut pairs = 0u32;
        for &viewer in &live {
            for &subject in &live {
                if viewer != subject {
                    total += self.nodes[viewer].table.age(node_id(subject), now)?;
                    pairs += 1;
                }
            }
        }
        Some(total / pairs.max(1))
    }

    /// A test of "every node has started, and every live one holds the current state of
    /// every node in `of`", for [`Sim::run_until`]. It remembers who already knew, so a look
    /// costs one view and those of the nodes that learnt since the last look.
    fn knowing(of: Vec<usize>) -> impl FnMut(&Sim) -> bool {
        let mut pending: Option<Vec<usize>> = None;
        move |sim| {
            if !sim.nodes.iter().all(|n| n.up || n.crashed) {
                return false;
            }
            let pending = pending.get_or_insert_with(|| sim.live().collect());
            let now = sim.instant();
            while let Some(&observer) = pending.last() {
                let view = sim.nodes[observer].table.snapshot(now);
                let knows = !sim.nodes[observer].up
                    || of
                        .iter()
                        .all(|&k| view[k].state.as_ref() == Some(&sim.nodes[k].state));
                if !knows {
                    return false;
                }
                pending.pop();
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAN: Network = Network {
        max_latency: Duration::from_millis(20),
        loss: 0.0,
    };

    const LOSSY: Network = Network { loss: 0.05, ..LAN };

    /// How often the tests look at the views: the resolution of the figures.
    const LOOK: Duration = Duration::from_millis(10);

    /// Nodes start at random moments within this.
    const SPREAD: Duration = Duration::from_secs(1);

    /// The chance a bound on the spread of news may be missed, per run: the bounds below
    /// are the age model's, with tails cut at this.
    const MISS: f64 = 0.01;

    /// foca's fan-out of periodic gossip (`foca_config`).
    const FAN_OUT: f64 = 3.0;

    /// The age model of MOSIX's gossip (reference 5.4, after Amar, Barak, Drezner and
    /// Okun, 2009) for `n` nodes each sending a window of `w` entries a step: an entry is in
    /// the windows while it is younger than `T` steps, so every step about `X` nodes
    /// receive a fresh copy of each node's entry. Returns (T, X).
    fn age_model(n: usize, w: usize) -> (f64, f64) {
        let n = n as f64;
        // A window holds all entries when w ≥ n: every copy is fresh.
        let w = (w as f64).min(n - 1.0);
        let t = (n - 1.0) / n * (w * (n - 1.0) / (n - w)).ln();
        let e = (n * t / (n - 1.0)).exp();
        (t, n * e / (n - 1.0 + e))
    }

    /// How long until every live node holds figures of `subjects` nodes published after a
    /// given moment. After `T` steps, every copy in the windows is newer than that moment
    /// (see [`age_model`]); then each step a node receives one of a subject with chance
    /// p = 1 - (1 - 1/(n-1))^X, X thinned by the loss; so all `n` hold all `subjects` after
    /// ln(n·subjects/MISS)/p more steps but with chance MISS. A step is a window period and
    /// a hop; a new profile costs a want and an answer (two hops) more at each hop, so a
    /// step at most three hops.
    fn news_bound(n: usize, subjects: usize, network: Network) -> Duration {
        let tuning = Tuning::default();
        let (t, x) = age_model(n, tuning.window);
        let x = x * (1.0 - network.loss);
        let p = 1.0 - (1.0 - 1.0 / (n as f64 - 1.0)).powf(x);
        let steps = t + ((n * subjects) as f64 / MISS).ln() / p;
        (tuning.window_period + network.max_latency * 3).mul_f64(steps.ceil())
    }

    /// Rounds of gossip for news to reach all `n` nodes when every holder passes it to
    /// `fan_out` members a round: about log_{f+1}(n) + ln(n)/f for push gossip (Pittel, "On
    /// spreading a rumor", 1987, for f = 1: log2 n + ln n), plus one round for the news to
    /// wait for the first gossip.
    fn epidemic_rounds(n: usize, fan_out: f64) -> f64 {
        let n = n as f64;
        n.ln() / (fan_out + 1.0).ln() + n.ln() / fan_out + 1.0
    }

    /// How long until every node has every state from a cold start: the last start, then
    /// every node's first figures spread as news (the greetings at start make every node a
    /// member of every other's foca within a hop).
    fn knowledge_bound(n: usize, network: Network) -> Duration {
        SPREAD + news_bound(n, n, network)
    }

    /// How long until every node holds a crashed node dead: some node probes it within
    /// `PROBES` probe periods (each of the n-1 others probes one member a period, so it
    /// goes unprobed a period with chance (1-1/(n-1))^(n-1) ≈ 1/e, and four periods with
    /// chance 2%); the probe fails by the end of its period and makes it a suspect; the
    /// suspicion times out; and the verdict spreads in foca's gossip, which carries
    /// membership alone, in plain epidemic rounds.
    fn death_bound(n: usize, network: Network) -> Duration {
        const PROBES: u32 = 4;
        let tuning = Tuning::default();
        let round = tuning.gossip_period + network.max_latency;
        tuning.probe_period * (PROBES + 1)
            + tuning.suspect_to_down
            + round.mul_f64(epidemic_rounds(n, FAN_OUT * (1.0 - network.loss)))
    }

    /// Starts `count` nodes and runs until all know all; returns the time that took.
    fn converge(sim: &mut Sim) -> Duration {
        let all = (0..sim.nodes.len()).collect();
        sim.run_until(Duration::from_secs(120), LOOK, Sim::knowing(all))
            .expect("the cluster never converged")
    }

    /// Nodes `publishers` publish a new state one after another, each once the last one is
    /// known everywhere, in turn a new load and a new mode (which is a new profile); returns
    /// the longest time one took to be known everywhere.
    fn spread_news(sim: &mut Sim, publishers: &[usize]) -> Duration {
        let mut longest = Duration::ZERO;
        for (turn, &k) in publishers.iter().enumerate() {
            let start = sim.now;
            let mut state = sim.nodes[k].state.clone();
            if turn % 2 == 0 {
                state.load += 1_000_000;
            } else {
                state.status.stay = !state.status.stay;
            }
            sim.handle(Event::Publish(k, state));
            let known = sim
                .run_until(
                    start + Duration::from_secs(120),
                    LOOK,
                    Sim::knowing(vec![k]),
                )
                .expect("the news never spread");
            longest = longest.max(known - start);
        }
        longest
    }

    /// Crashes `victims` one after another, each once the last is dead everywhere; returns
    /// the longest time one took to be held dead by every live node.
    fn crash(sim: &mut Sim, victims: &[usize]) -> Duration {
        let mut longest = Duration::ZERO;
        for &k in victims {
            let start = sim.now;
            sim.handle(Event::Crash(k));
            let mut pending: Vec<usize> = sim.live().collect();
            let dead = sim
                .run_until(start + Duration::from_secs(120), LOOK, |s| {
                    // The nodes already holding it dead keep holding it dead: foca never
                    // takes a down member back under the same identity.
                    pending.retain(|&observer| {
                        let node = &s.nodes[observer];
                        !node
                            .foca
                            .iter_membership_state()
                            .any(|m| m.id().node == node_id(k) && m.state() == foca::State::Down)
                    });
                    pending.is_empty()
                })
                .expect("the crashed node was never held dead");
            longest = longest.max(dead - start);
        }
        longest
    }

    /// What the cluster costs and how old its views are, in steady state: the mean age over
    /// every (viewer, subject) pair of live nodes, sampled each simulated second for
    /// `seconds`, and the bytes each node sent a second over that time (mean and max).
    struct Steady {
        mean_age: Duration,
        worst_sample: Duration,
        mean_rate: f64,
        max_rate: f64,
    }

    fn steady(sim: &mut Sim, seconds: u32) -> Steady {
        let start = sim.now;
        let sent: Vec<u64> = sim.nodes.iter().map(|n| n.sent).collect();
        let mut samples = Vec::new();
        for second in 1..=seconds {
            sim.run_until(start + Duration::from_secs(second.into()), LOOK, |_| false);
            samples.push(
                sim.mean_age()
                    .expect("a live node holds nothing of another"),
            );
        }
        let elapsed = (sim.now - start).as_secs_f64();
        let rates: Vec<f64> = sim
            .live()
            .map(|i| (sim.nodes[i].sent - sent[i]) as f64 / elapsed)
            .collect();
        Steady {
            mean_age: samples.iter().sum::<Duration>() / seconds,
            worst_sample: samples.iter().copied().max().unwrap_or_default(),
            mean_rate: rates.iter().sum::<f64>() / rates.len() as f64,
            max_rate: rates.iter().copied().fold(0.0, f64::max),
        }
    }

    fn report(what: &str, figure: Duration, bound: Duration) {
        eprintln!("sim: {what}: {figure:.2?} (bound {bound:.2?})");
        assert!(figure <= bound, "{what}: {figure:?} is above {bound:?}");
    }

    /// Knowledge, news and death in a cluster of `n`, each checked against its bound.
    fn scenario(n: usize, seed: u64, network: Network) -> Sim {
        let label = format!("{n} nodes, {}% loss", network.loss * 100.0);
        let mut sim = Sim::new(n, seed, network, SPREAD);
        let known = converge(&mut sim);
        report(
            &format!("{label}: every state known everywhere after"),
            known,
            knowledge_bound(n, network),
        );
        let news = spread_news(&mut sim, &[0, n / 3, n / 2, n - 1]);
        report(
            &format!("{label}: a new state known everywhere within"),
            news,
            news_bound(n, 1, network),
        );
        let dead = crash(&mut sim, &[n / 4, n - 2]);
        report(
            &format!("{label}: a crashed node dead everywhere within"),
            dead,
            death_bound(n, network),
        );
        eprintln!(
            "sim: {label}: {} datagrams delivered, {} lost, {:.1?} simulated",
            sim.delivered, sim.lost, sim.now
        );
        assert_eq!(
            sim.errors, 0,
            "foca or a decoder refused what it was handed"
        );
        sim
    }

    #[test]
    fn sim_100_nodes_learn_every_state_and_a_death_within_the_bounds() {
        let sim = scenario(100, 1, LAN);
        assert!(sim.false_downs.is_empty(), "{:?}", sim.false_downs);
    }

    #[test]
    fn sim_with_5_percent_loss_the_bounds_hold_and_no_live_node_is_held_dead() {
        let mut sim = scenario(100, 2, LOSSY);
        // A live node held dead would need a probe and all three indirect probes lost
        // (each 2 and 4 datagrams: about 10% and 19% at 5% loss, together 0.06%), then no
        // refutation within the suspicion timeout. Over a further minute:
        let minute = sim.now + Duration::from_secs(60);
        sim.run_until(minute, Duration::from_secs(1), |_| false);
        eprintln!(
            "sim: 100 nodes, 5% loss: {} live nodes held dead by someone",
            sim.false_downs.len()
        );
        assert!(sim.false_downs.is_empty(), "{:?}", sim.false_downs);
        assert_eq!(sim.errors, 0);
    }

    /// A whole run with `seed`: its trace, what it delivered, and when all knew all.
    fn fingerprint(seed: u64) -> (u64, u64, Duration) {
        let mut sim = Sim::new(30, seed, LOSSY, SPREAD);
        let known = converge(&mut sim);
        sim.run_until(
            known + Duration::from_secs(3),
            Duration::from_secs(1),
            |_| false,
        );
        (sim.trace, sim.delivered, known)
    }

    #[test]
    fn sim_the_same_seed_gives_the_same_run_and_another_seed_another() {
        assert_eq!(fingerprint(7), fingerprint(7));
        assert_ne!(fingerprint(7).0, fingerprint(8).0);
    }

    #[test]
    #[ignore = "about half a minute in release; run with --ignored"]
    fn sim_500_nodes_learn_every_state_and_a_death_within_the_bounds() {
        let sim = scenario(500, 3, LAN);
        assert!(sim.false_downs.is_empty(), "{:?}", sim.false_downs);
    }

    /// Issue 9's targets at 1,000 nodes: a mean age of at most 2 s, at most 10 KB/s sent a
    /// node (everything: foca's probes and news, windows, wants and profiles, 50 bytes of
    /// seal a datagram), and a crashed node dead everywhere within 10 s.
    #[test]
    #[ignore = "one to three minutes in release; run with --ignored"]
    fn sim_1000_nodes() {
        const NODES: usize = 1000;
        const MEAN_AGE: Duration = Duration::from_secs(2);
        const RATE: f64 = 10_000.0;
        const DEATH: Duration = Duration::from_secs(10);
        let mut sim = Sim::new(NODES, 9, LAN, SPREAD);
        let known = converge(&mut sim);
        eprintln!("sim: 1000 nodes: every state known everywhere after {known:.2?}");
        // Warm-up: the startup's greetings and profile wants are over after a few seconds.
        sim.run_until(
            known + Duration::from_secs(3),
            Duration::from_secs(1),
            |_| false,
        );
        let steady = steady(&mut sim, 20);
        let dead = crash(&mut sim, &[NODES / 4, NODES - 2]);
        let (t, x) = age_model(NODES, sim.tuning.window);
        let window_period = sim.tuning.window_period.as_secs_f64();
        let print = |name: &str, value: String| println!("{name}: {value}");
        print("nodes", NODES.to_string());
        print("window_entries", sim.tuning.window.to_string());
        print("window_period_ms", (window_period * 1000.0).to_string());
        print(
            "every_state_known_after_s",
            format!("{:.2}", known.as_secs_f64()),
        );
        print(
            "mean_age_s",
            format!("{:.3}", steady.mean_age.as_secs_f64()),
        );
        print(
            "worst_mean_age_sample_s",
            format!("{:.3}", steady.worst_sample.as_secs_f64()),
        );
        print(
            "model_mean_age_s",
            format!(
                "{:.3}",
                window_period
                    * (1.0 / (1.0 - (1.0 - 1.0 / (NODES as f64 - 1.0)).powf(x)) + t
                        - (NODES as f64 - 1.0) / x
                            * ((NODES as f64 - 1.0
                                + (NODES as f64 * t / (NODES as f64 - 1.0)).exp())
                            .ln()
                                - (NODES as f64).ln()))
            ),
        );
        print(
            "bytes_per_node_per_s_mean",
            format!("{:.0}", steady.mean_rate),
        );
        print(
            "bytes_per_node_per_s_max",
            format!("{:.0}", steady.max_rate),
        );
        print(
            "crash_dead_everywhere_s",
            format!("{:.2}", dead.as_secs_f64()),
        );
        print("datagrams_delivered", sim.delivered.to_string());
        print("simulated_s", format!("{:.1}", sim.now.as_secs_f64()));
        assert_eq!(
            sim.errors, 0,
            "foca or a decoder refused what it was handed"
        );
        assert!(sim.false_downs.is_empty(), "{:?}", sim.false_downs);
        assert!(
            steady.mean_age <= MEAN_AGE,
            "mean age {:?}",
            steady.mean_age
        );
        assert!(steady.max_rate <= RATE, "{} bytes/s", steady.max_rate);
        assert!(dead <= DEATH, "dead everywhere after {dead:?}");
    }
}
