//! Where a run's makespan goes past the ideal: the drain, from the first second fewer jobs are
//! left than the cluster has CPUs, to the last end. Before it, every CPU can be busy; in it,
//! a job that shares a CPU, or runs on a CPU much slower than an idle one, holds the end back.
//! This instrument records the state at the drain's start and, each second of the drain, why
//! each job that would run much faster on an idle CPU was not moved (docs/balancing.md, "Simulation").

use super::*;

/// A job on a CPU this many times slower than the fastest idle one is held back by its CPU.
pub(crate) const SLOWER: f64 = 1.5;

/// Why a job that would gain from a move did not move this second, as the balancer's rules
/// see it (the order of [`Held`]'s fields is the order they are checked in).
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub(crate) struct Held {
    /// Arrived this second or last: the daemon has not two readings of it yet.
    pub unsampled: f64,
    /// Its decayed demand is below `cpu_bound_demand`.
    pub low_demand: f64,
    /// It moved less than its residence time ago.
    pub residence: f64,
    /// It has not wanted a CPU long enough to pay for a move to the fastest idle node: the
    /// time wanted since its last move, times the share of it that move would save, is less
    /// than `payback_factor` times the move's cost.
    pub payback: f64,
    /// It may move, but no target passed the hysteresis or flood prevention.
    pub hysteresis_or_flood: f64,
}

/// The drain of one run.
#[derive(Clone, Default, PartialEq, Debug)]
pub(crate) struct Tail {
    /// When it started (seconds from the first release), 0 if it never did.
    pub at: f64,
    /// Jobs left then, and the standard-CPU seconds of work they had left.
    pub jobs: usize,
    pub work: f64,
    /// Of those jobs, how many shared a CPU, and how many ran [`SLOWER`] times slower than
    /// they would on the fastest idle CPU.
    pub sharing: usize,
    pub gaining: usize,
    /// The best the rest could do from there: the ideal of the jobs left, released then, with
    /// what they had left ([`ideal_makespan`]). `at + rest_ideal` against the run's ideal is
    /// what was lost before the drain; the makespan against it, what was lost in it.
    pub rest_ideal: f64,
    /// Job-seconds, over the drain, of jobs that would gain from a move and were held.
    pub held: Held,
    /// Job-seconds in the drain spent moving.
    pub moving: f64,
}

impl Cluster {
    fn total_cpus(&self) -> usize {
        self.nodes.iter().map(|n| n.cpus.round() as usize).sum()
    }

    fn jobs_left(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| !matches!(j.place, Place::Done(_)))
            .count()
    }

    /// The fastest speed (standard CPUs) among nodes with an idle CPU, 0 if none.
    fn fastest_idle(&self) -> f64 {
        self.nodes
            .iter()
            .zip(&self.running)
            .filter(|(n, running)| running.len() < n.cpus.round() as usize)
            .map(|(n, _)| f64::from(n.speed) / f64::from(STANDARD_SPEED))
            .fold(0.0, f64::max)
    }

    /// Whether the jobs on `node` would gain from a move now: each runs [`SLOWER`] times
    /// slower than it would on the fastest idle CPU (a whole CPU of its node's speed, or its
    /// share of the node's CPUs).
    fn would_gain(&self, node: usize, fastest_idle: f64) -> bool {
        self.rate_on(node) * SLOWER <= fastest_idle
    }

    /// The rate of a job wanting a whole CPU on `node` now, standard CPUs.
    fn rate_on(&self, node: usize) -> f64 {
        let info = self.nodes[node];
        let speed = f64::from(info.speed) / f64::from(STANDARD_SPEED);
        let jobs = self.running[node].len().max(1) as f64;
        speed * (info.cpus / jobs).min(1.0)
    }

    /// Starts the drain's record if fewer jobs are left than CPUs (once).
    pub(super) fn watch_drain(&self, tail: &mut Tail, s: u64, first: f64) {
        if tail.at > 0.0 || self.jobs.iter().any(|j| j.place == Place::Waiting) {
            return;
        }
        let left = self.jobs_left();
        if left >= self.total_cpus() || left == 0 {
            return;
        }
        let fastest_idle = self.fastest_idle();
        tail.at = s as f64 - first;
        tail.jobs = left;
        let rest: Vec<JobSpec> = self
            .jobs
            .iter()
            .filter(|j| !matches!(j.place, Place::Done(_)))
            .map(|j| JobSpec {
                release: 0,
                work: j.left,
                ..j.spec
            })
            .collect();
        tail.work = rest.iter().map(|j| j.work).sum();
        tail.rest_ideal = ideal_makespan(&self.nodes, &rest);
        for (node, running) in self.running.iter().enumerate() {
            if running.len() > self.nodes[node].cpus.round() as usize {
                tail.sharing += running.len();
            }
            if self.would_gain(node, fastest_idle) {
                tail.gaining += running.len();
            }
        }
    }

    /// In the drain, after this second's decisions at tick `t`: why each job that would gain
    /// from a move did not move.
    pub(super) fn count_held(&self, tail: &mut Tail, t: u64) {
        if tail.at == 0.0 {
            return;
        }
        tail.moving += self
            .jobs
            .iter()
            .filter(|j| matches!(j.place, Place::Leaving { .. }))
            .count() as f64;
        let fastest_idle = self.fastest_idle();
        let Some(idle) = self.nodes.iter().zip(&self.running).position(|(n, r)| {
            r.len() < n.cpus.round() as usize
                && f64::from(n.speed) / f64::from(STANDARD_SPEED) == fastest_idle
        }) else {
            return;
        };
        for node in 0..self.nodes.len() {
            if !self.would_gain(node, fastest_idle) {
                continue;
            }
            // What a move saves of the job's remaining time (`decide`'s payback).
            let saved = 1.0 - self.rate_on(node) / fastest_idle;
            for &j in &self.running[node] {
                let job = &self.jobs[j];
                let at_home = node == job.spec.home;
                let track = if at_home {
                    &job.home_track
                } else {
                    &job.guest_track
                };
                let moves = if at_home { job.moves } else { 1 };
                let cost = self
                    .links
                    .transfer_time(
                        job.spec.memory,
                        node_id(node),
                        node_id(idle),
                        node_id(job.spec.home),
                    )
                    .as_secs_f64();
                let resided = Duration::from_secs(t - track.since)
                    >= self.policy.min_residence * moves.min(self.policy.residence_moves_cap);
                let held = &mut tail.held;
                if t - track.since < 2 {
                    held.unsampled += 1.0;
                } else if track.usage.demand() < self.policy.cpu_bound_demand {
                    held.low_demand += 1.0;
                } else if !resided {
                    held.residence += 1.0;
                } else if track.usage.wanted_since_move().as_secs_f64() * saved
                    < cost * self.policy.payback_factor
                {
                    held.payback += 1.0;
                } else {
                    held.hysteresis_or_flood += 1.0;
                }
            }
        }
    }
}
