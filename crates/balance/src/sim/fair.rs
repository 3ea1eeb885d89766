//! What a balancer that does not know the jobs' remaining work could do at best: the makespan
//! of the whole cluster shared fairly, as if it were one machine whose scheduler moved jobs
//! among all its CPUs for free. The ideal ([`ideal_makespan`]) knows every job's work and runs
//! the longest first on the fastest CPUs; a fair share gives every job left the same rate, so
//! the longest jobs are the last ones left, on fewer jobs than CPUs, each running no faster
//! than one CPU. No balancer of unknown jobs on fair schedulers gets below this by sharing
//! better; it could only by guessing the jobs' lengths (docs/balancing.md, "Simulation").

use super::*;

/// The makespan of `jobs` on `nodes` under one fair scheduler over every CPU: each moment,
/// the `n` jobs left share the `min(n, CPUs)` fastest CPUs (max-min fair), none faster than
/// its demand of the fastest CPU. Seconds from the first release.
pub(crate) fn fair_share_makespan(nodes: &[Node], jobs: &[JobSpec]) -> f64 {
    let mut speeds: Vec<f64> = nodes
        .iter()
        .flat_map(|n| {
            let speed = f64::from(n.speed) / f64::from(STANDARD_SPEED);
            std::iter::repeat_n(speed, n.cpus.round() as usize)
        })
        .collect();
    speeds.sort_by(|a, b| b.total_cmp(a));
    let fastest = speeds.first().copied().unwrap_or(0.0);
    // The capacity of the k fastest CPUs.
    let fastest_k: Vec<f64> = std::iter::once(0.0)
        .chain(speeds.iter().scan(0.0, |sum, s| {
            *sum += s;
            Some(*sum)
        }))
        .collect();
    let mut pending: Vec<&JobSpec> = jobs.iter().collect();
    pending.sort_by_key(|j| std::cmp::Reverse(j.release));
    let first = pending.last().map_or(0.0, |j| j.release as f64);
    // Jobs left: (work left, most they can run at), the most ascending.
    let mut active: Vec<(f64, f64)> = Vec::new();
    let mut now = first;
    let mut rates: Vec<f64> = Vec::new();
    while !active.is_empty() || !pending.is_empty() {
        while pending.last().is_some_and(|j| j.release as f64 <= now) {
            let job = pending.pop().expect("just looked");
            active.push((job.work, job.demand * fastest));
        }
        let next_release = pending.last().map_or(f64::INFINITY, |j| j.release as f64);
        if active.is_empty() {
            now = next_release;
            continue;
        }
        active.sort_by(|a, b| a.1.total_cmp(&b.1));
        // Max-min fair: each gets an equal share of what the ones before it left, at most
        // what it can run at.
        let mut left = fastest_k[active.len().min(speeds.len())];
        rates.clear();
        for (i, &(_, most)) in active.iter().enumerate() {
            let rate = most.min(left / (active.len() - i) as f64);
            rates.push(rate);
            left -= rate;
        }
        let step = active
            .iter()
            .zip(&rates)
            .map(|(&(work, _), &rate)| work / rate)
            .fold(next_release - now, f64::min);
        for ((work, _), rate) in active.iter_mut().zip(&rates) {
            *work -= rate * step;
        }
        active.retain(|&(work, _)| work > 1e-9);
        now += step;
    }
    now - first
}
