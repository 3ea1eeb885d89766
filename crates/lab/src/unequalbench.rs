//! The unequal-nodes part of `rmosix-lab bench` (`bench unequal`): the 8 jobs of the
//! spreading part started on node 1 of a 4-node lab whose nodes have 1, 0.5, 0.25 and 0.25
//! CPU (node 1 the fast one), the daemons balancing. Target: a makespan within 15 % of the
//! ideal one.
//!
//! The ideal is fluid: every CPU of the lab busy until the work is done, total CPU work over
//! total CPU (8 × 4 CPU-s over 2 CPUs: 16 s), but never less than one job on the fastest node
//! (4 CPU-s over 1 CPU), since a job runs on one CPU at a time. Here 16 s is also reachable
//! with whole jobs: 4, 2, 1 and 1 per node each finish in 16 s.
//!
//! Baselines, in the same run on a lab just like it with balancing off: the 8 jobs on node 1
//! alone (32 s ideally), whose outputs every moved job must print again, and the lab's own
//! ceiling: the jobs started where the ideal puts them, nothing moving. The ceiling is what
//! this machine gives the lab in this run: on a busy host the quotas stop setting the
//! nodes' speeds (every node cgroup has the same `cpu.shares`), and the ideal goes out of
//! reach for any placement.
//!
//! The figures are in README's Performance table, with the run they came from.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;

use crate::batch::Calibration;
use crate::bench::{BenchError, Stats, load_average, show};
use crate::spreadbench::{JOBS, Runs};
use crate::turns::{self, Kind, Labs, Run, detail, load_line, row};

/// CPUs of node 1, 2, 3 and 4.
pub(crate) const QUOTAS: [f64; 4] = [1.0, 0.5, 0.25, 0.25];
/// The ideal placement, in proportion to the CPUs: 4, 2, 1 and 1 jobs.
const CEILING_HOMES: [u16; 8] = [1, 1, 1, 1, 2, 2, 3, 4];
/// How far above the ideal makespan the median may be.
const TARGET_ABOVE_IDEAL: f64 = 0.15;

/// The unequal part's runs.
#[derive(Debug)]
pub(crate) struct Unequal {
    alone: Vec<Run>,
    ceiling: Vec<Run>,
    spread: Vec<Run>,
    load_before: String,
    load_after: String,
}

/// Takes the 8 jobs on node 1 alone and started there balancing, in turns.
pub(crate) fn measure(
    labs: &Labs,
    calibration: Calibration,
    runs: Runs,
    stop: &AtomicBool,
) -> Result<Unequal, BenchError> {
    let load_before = load_average();
    let kinds = [
        Kind::new(
            format!("unequal: {JOBS} jobs started on node1, balancing"),
            true,
            vec![1; JOBS],
            runs.unequal,
        ),
        Kind::new(
            "unequal: 4, 2, 1 and 1 jobs started on node1..node4, balancing off".to_owned(),
            false,
            CEILING_HOMES.to_vec(),
            runs.unequal_ceiling,
        ),
        Kind::new(
            format!("unequal: {JOBS} jobs on node1 alone, balancing off (about 30 s)"),
            false,
            vec![1; JOBS],
            runs.unequal_alone,
        ),
    ];
    let [spread, ceiling, alone]: [Vec<Run>; 3] =
        turns::take_turns(labs, calibration.rounds, &kinds, stop)?
            .try_into()
            .expect("one list of runs per kind");
    Ok(Unequal {
        alone,
        ceiling,
        spread,
        load_before,
        load_after: load_average(),
    })
}

/// The fluid ideal makespan of `jobs` jobs of `job_cpu_s` CPU-seconds on nodes of `quotas`
/// CPUs: all the work over all the CPUs, but no less than one job on the fastest node.
fn ideal_makespan(jobs: usize, job_cpu_s: f64, quotas: &[f64]) -> f64 {
    let total: f64 = quotas.iter().sum();
    let fastest = quotas.iter().copied().fold(0.0, f64::max);
    (jobs as f64 * job_cpu_s / total).max(job_cpu_s / fastest)
}

/// The unequal part's section, and its targets (name, value, met).
pub(crate) fn render(
    o: &mut String,
    m: &Unequal,
    calibration: &Calibration,
) -> Vec<(String, String, bool)> {
    let (alone, ceiling, spread) = (
        turns::makespan(&m.alone),
        turns::makespan(&m.ceiling),
        turns::makespan(&m.spread),
    );
    let ideal = ideal_makespan(JOBS, calibration.job_cpu_s(), &QUOTAS);
    let over = |runs: &[Run], base: f64| Stats::of(runs.iter().map(|r| r.makespan_s / base));
    let over_ideal = over(&m.spread, ideal);
    let quotas: Vec<String> = QUOTAS.iter().map(f64::to_string).collect();
    let _ = writeln!(
        o,
        "\nUnequal nodes: the same {JOBS} jobs, {}-node lab of {} CPU (node1 first)",
        QUOTAS.len(),
        quotas.join(", ")
    );
    turns::alone_row(o, JOBS, m.alone.len(), alone);
    row(
        o,
        &format!(
            "4, 2, 1, 1 jobs started on node1..4, no moves ({})",
            turns::runs(m.ceiling.len())
        ),
        &show(ceiling, 1, "s"),
        &format!(
            "lab's ceiling: {} of the ideal",
            turns::times(over(&m.ceiling, ideal))
        ),
    );
    row(
        o,
        &format!(
            "{JOBS} jobs started on node1, balancing ({})",
            turns::runs(m.spread.len())
        ),
        &show(spread, 1, "s"),
        &format!(
            "{} of the ideal, speed-up {}",
            turns::times(over_ideal),
            turns::times(turns::speedup(alone, &m.spread))
        ),
    );
    detail(
        o,
        "ideal makespan (fluid: work / CPUs, ≥ 1 job on node1)",
        &format!(
            "{ideal:.1} s ({JOBS} × {:.1} CPU-s / {} CPU)",
            calibration.job_cpu_s(),
            QUOTAS.iter().sum::<f64>()
        ),
    );
    detail(
        o,
        "balancing's makespan over the ceiling's",
        &turns::times(ceiling.and_then(|c| over(&m.spread, c.median))),
    );
    // 4, 2, 1 and 1 jobs per node: everything but node 1's four moves.
    turns::render_moves(o, &m.spread, QUOTAS.len(), JOBS / 2);
    let identical = turns::render_jobs(
        o,
        m.alone.first(),
        m.alone.iter().chain(&m.ceiling),
        &m.spread,
    );
    load_line(o, &m.load_before, &m.load_after);
    let limit = 1.0 + TARGET_ABOVE_IDEAL;
    vec![
        (
            format!("unequal: makespan ≤ {limit:.2}x the ideal"),
            over_ideal.map_or_else(|| "n/a".to_owned(), |s| format!("{:.2}x", s.median)),
            over_ideal.is_some_and(|s| s.median <= limit),
        ),
        (
            "unequal: outputs as never moved".to_owned(),
            turns::identical(identical),
            identical,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ideal_is_fluid_but_a_job_needs_its_own_cpu() {
        // 8 × 4 CPU-s over 2 CPUs.
        assert_eq!(ideal_makespan(8, 4.0, &QUOTAS), 16.0);
        // One job cannot use more than the fastest node: 4 CPU-s on 1 CPU, not over 2.
        assert_eq!(ideal_makespan(1, 4.0, &QUOTAS), 4.0);
        // Equal nodes: the spreading part's 8 × 4 / (4 × 0.5).
        assert_eq!(ideal_makespan(8, 4.0, &[0.5; 4]), 16.0);
    }

    #[test]
    fn the_ceiling_places_jobs_in_proportion_to_the_cpus() {
        let total: f64 = QUOTAS.iter().sum();
        for (node, quota) in (1..).zip(QUOTAS) {
            let placed = CEILING_HOMES.iter().filter(|&&n| n == node).count();
            assert_eq!(placed as f64, JOBS as f64 * quota / total, "node {node}");
            // So every node ends when the fluid ideal does.
            assert_eq!(
                placed as f64 * 4.0 / quota,
                ideal_makespan(JOBS, 4.0, &QUOTAS)
            );
        }
    }
}
