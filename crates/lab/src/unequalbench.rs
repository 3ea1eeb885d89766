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
//! Baseline, in the same run on a lab just like it with balancing off: the 8 jobs on node 1
//! alone (32 s ideally), whose outputs every moved job must print again.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;

use crate::batch::Calibration;
use crate::bench::{BenchError, Stats, load_average, show};
use crate::spreadbench::{JOBS, Runs};
use crate::turns::{self, Kind, Labs, Run, detail, load_line, row};

/// CPUs of node 1, 2, 3 and 4.
pub(crate) const QUOTAS: [f64; 4] = [1.0, 0.5, 0.25, 0.25];
/// How far above the ideal makespan the median may be.
const TARGET_ABOVE_IDEAL: f64 = 0.15;

/// The unequal part's runs.
#[derive(Debug)]
pub(crate) struct Unequal {
    alone: Vec<Run>,
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
            format!("unequal: {JOBS} jobs on node1 alone, balancing off (about 30 s)"),
            false,
            vec![1; JOBS],
            runs.unequal_alone,
        ),
    ];
    let [spread, alone]: [Vec<Run>; 2] = turns::take_turns(labs, calibration.rounds, &kinds, stop)?
        .try_into()
        .expect("one list of runs per kind");
    Ok(Unequal {
        alone,
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
    let (alone, spread) = (turns::makespan(&m.alone), turns::makespan(&m.spread));
    let ideal = ideal_makespan(JOBS, calibration.job_cpu_s(), &QUOTAS);
    let over_ideal = Stats::of(m.spread.iter().map(|r| r.makespan_s / ideal));
    let quotas: Vec<String> = QUOTAS.iter().map(f64::to_string).collect();
    let _ = writeln!(
        o,
        "\nUnequal nodes: the same {JOBS} jobs, {}-node lab of {} CPU (node1 first)",
        QUOTAS.len(),
        quotas.join(", ")
    );
    row(
        o,
        &format!(
            "{JOBS} jobs on node1 alone, balancing off ({})",
            turns::runs(m.alone.len())
        ),
        &show(alone, 1, "s"),
        "",
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
    // 4, 2, 1 and 1 jobs per node: everything but node 1's four moves.
    turns::render_moves(o, &m.spread, QUOTAS.len(), JOBS / 2);
    let identical = turns::render_jobs(o, m.alone.first(), m.alone.iter(), &m.spread);
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
}
