//! What the balancing benches share (`spreadbench`, `unequalbench`, `quietbench`): two labs
//! alike but for balancing, batches of `crunch` jobs of several kinds taken in turns on
//! them, and the report's rows.
//!
//! The two labs stand side by side and the kinds of runs alternate, so a change of the
//! machine's load hits every kind alike. Before each run on the balancing lab, the bench
//! waits until node 1 sees every node's load back near 0: the exported load falls slowly
//! (crates/gauge), and a node that still looks busy from the last run would not get work.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::batch::{self, Batch, Done, Supervision};
use crate::bench::{BenchError, Stats, progress, show};
use crate::{Lab, LabConfig};

/// How long a batch may take: 8 jobs of 4 CPU-s on half a CPU need 64 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long node 1 may take to see every node idle before a run on the balancing lab.
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Two labs of the same nodes and CPU quotas, the daemons of one balancing, of the other not,
/// and the job program compiled in the first.
pub(crate) struct Labs {
    pub(crate) still: Lab,
    pub(crate) balancing: Lab,
    pub(crate) program: PathBuf,
}

impl Labs {
    /// Starts both labs, node K with `quotas[K-1]` CPUs, and compiles `crunch`.
    pub(crate) fn start(bin_dir: &Path, quotas: &[f64], what: &str) -> Result<Labs, BenchError> {
        let lab = |balance: bool| {
            let mut cfg = LabConfig::new(quotas.len(), bin_dir);
            cfg.node_cpu_quota = (1..).zip(quotas.iter().copied()).collect();
            cfg.balance = balance;
            Lab::start(cfg)
        };
        let still = lab(false)?;
        let balancing = lab(true)?;
        progress(&format!(
            "{what}: labs ready in {} (balancing off) and {} (on)",
            still.dir().display(),
            balancing.dir().display()
        ));
        let program = batch::compile(&still.work_dir())?;
        Ok(Labs {
            still,
            balancing,
            program,
        })
    }

    /// Tears both labs down.
    pub(crate) fn stop(self) -> Result<(), BenchError> {
        self.balancing.stop()?;
        self.still.stop()?;
        Ok(())
    }
}

/// One kind of batch run: where its jobs start, on which lab, how, and how many runs.
pub(crate) struct Kind {
    /// What it is, for progress lines and the report.
    pub(crate) what: String,
    pub(crate) balancing: bool,
    pub(crate) supervision: Supervision,
    /// Job K's node is `homes[K-1]`.
    pub(crate) homes: Vec<u16>,
    pub(crate) runs: usize,
}

impl Kind {
    /// `runs` batches under mosrun of jobs started on `homes`.
    pub(crate) fn new(what: String, balancing: bool, homes: Vec<u16>, runs: usize) -> Kind {
        Kind {
            what,
            balancing,
            supervision: Supervision::Mosrun,
            homes,
            runs,
        }
    }
}

/// One batch: its makespan and its jobs.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) makespan_s: f64,
    pub(crate) jobs: Vec<Done>,
    /// How long node 1 took to see every node idle before it (balancing lab only).
    pub(crate) settle_s: Option<f64>,
}

impl Run {
    /// How many moves its jobs made.
    pub(crate) fn moves(&self) -> usize {
        self.jobs.iter().map(|j| j.moves.len()).sum()
    }
}

/// Takes the runs of every kind in turns (run 1 of each kind, then run 2, …); each kind's
/// runs, in the order of `kinds`. Every job is `crunch rounds K`.
pub(crate) fn take_turns(
    labs: &Labs,
    rounds: u64,
    kinds: &[Kind],
    stop: &AtomicBool,
) -> Result<Vec<Vec<Run>>, BenchError> {
    let mut taken: Vec<Vec<Run>> = kinds.iter().map(|_| Vec::new()).collect();
    let most = kinds.iter().map(|k| k.runs).max().unwrap_or(0);
    for i in 0..most {
        for (kind, runs) in kinds.iter().zip(&mut taken) {
            if i >= kind.runs {
                continue;
            }
            progress(&format!("{}, run {}/{}", kind.what, i + 1, kind.runs));
            let lab = if kind.balancing {
                &labs.balancing
            } else {
                &labs.still
            };
            let settle_s = if kind.balancing {
                Some(batch::wait_idle(lab, SETTLE_TIMEOUT, stop)?.as_secs_f64())
            } else {
                None
            };
            let mut batch =
                Batch::start_as(kind.supervision, lab, &labs.program, rounds, &kind.homes)?;
            batch.wait(RUN_TIMEOUT, stop, |_, _| {})?;
            let jobs = batch.finish()?;
            let makespan = jobs.iter().map(|j| j.ended).max().unwrap_or_default();
            runs.push(Run {
                makespan_s: makespan.as_secs_f64(),
                jobs,
                settle_s,
            });
        }
    }
    Ok(taken)
}

/// "1 run", "3 runs".
pub(crate) fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// The baseline row both spreading parts print: the jobs on node 1 alone.
pub(crate) fn alone_row(o: &mut String, jobs: usize, runs_taken: usize, makespan: Option<Stats>) {
    row(
        o,
        &format!(
            "{jobs} jobs on node1 alone, balancing off ({})",
            runs(runs_taken)
        ),
        &show(makespan, 1, "s"),
        "",
    );
}

/// A row of a part's table: name, figure, and what it means beside a baseline.
pub(crate) fn row(o: &mut String, name: &str, value: &str, after: &str) {
    let line = format!("  {name:<51} {value:<25} {after}");
    let _ = writeln!(o, "{}", line.trim_end());
}

/// A detail under a part's table.
pub(crate) fn detail(o: &mut String, name: &str, value: &str) {
    let _ = writeln!(o, "    {name:<49} {value}");
}

/// Whether every job of `runs` printed what the same job printed in `reference`, and a line
/// saying so (or which differ).
pub(crate) fn compare_outputs<'a>(
    reference: Option<&Run>,
    runs: impl IntoIterator<Item = &'a Run>,
) -> (bool, String) {
    let Some(reference) = reference else {
        return (false, "n/a (no unmoved run)".to_owned());
    };
    let mut jobs = 0;
    let mut moved = 0;
    let mut differ = Vec::new();
    for (r, run) in runs.into_iter().enumerate() {
        for (job, expected) in run.jobs.iter().zip(&reference.jobs) {
            jobs += 1;
            moved += usize::from(!job.moves.is_empty());
            if job.output != expected.output || job.output.is_empty() {
                differ.push(format!("run {} job {}", r + 1, job.seed));
            }
        }
    }
    if differ.is_empty() {
        (
            true,
            format!(
                "identical to the unmoved run in every run ({jobs} jobs, {moved} of them moved)"
            ),
        )
    } else {
        (false, format!("DIFFER: {}", differ.join(", ")))
    }
}

/// "identical" or "DIFFER", for the targets.
pub(crate) fn identical(same: bool) -> String {
    if same { "identical" } else { "DIFFER" }.to_owned()
}

/// Median, min and max of the makespans of `runs`.
pub(crate) fn makespan(runs: &[Run]) -> Option<Stats> {
    Stats::of(runs.iter().map(|r| r.makespan_s))
}

/// Speed-up of each of `runs` over the median of `base`.
pub(crate) fn speedup(base: Option<Stats>, runs: &[Run]) -> Option<Stats> {
    let base = base?.median;
    Stats::of(runs.iter().map(|r| base / r.makespan_s))
}

/// `3.51x [3.50x–3.53x]`.
pub(crate) fn times(s: Option<Stats>) -> String {
    show(s, 2, "x").replace(" x ", "x ")
}

/// Details of the moves of balancing runs of `nodes` nodes, `needed` of them needed.
pub(crate) fn render_moves(o: &mut String, runs: &[Run], nodes: usize, needed: usize) {
    let first = |r: &Run| {
        r.jobs
            .iter()
            .flat_map(|j| j.moves.first().map(|(at, _)| at.as_secs_f64()))
            .reduce(f64::min)
    };
    let last = |r: &Run| {
        r.jobs
            .iter()
            .flat_map(|j| j.moves.last().map(|(at, _)| at.as_secs_f64()))
            .reduce(f64::max)
    };
    let at_end: Vec<String> = runs
        .iter()
        .map(|r| {
            (1..=nodes as u16)
                .map(|n| r.jobs.iter().filter(|j| j.last == n).count().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    detail(
        o,
        &format!("moves per run ({needed} needed)"),
        &show(Stats::of(runs.iter().map(|r| r.moves() as f64)), 0, "moves"),
    );
    detail(
        o,
        "first move after the start",
        &show(Stats::of(runs.iter().filter_map(first)), 1, "s"),
    );
    detail(
        o,
        "last move after the start",
        &show(Stats::of(runs.iter().filter_map(last)), 1, "s"),
    );
    detail(
        o,
        &format!("jobs on node1..node{nodes} at their end, each run"),
        &at_end.join(" | "),
    );
    detail(
        o,
        "wait for node1 to see the lab idle before a run",
        &show(Stats::of(runs.iter().filter_map(|r| r.settle_s)), 1, "s"),
    );
}

/// The rows every part of whole jobs ends with: the CPU time of a job, whether every job
/// printed what the same job printed in `reference`, and a warning if a run meant to stay
/// put (`unmoved`) logged moves. Returns whether the outputs were identical.
pub(crate) fn render_jobs<'a>(
    o: &mut String,
    reference: Option<&Run>,
    unmoved: impl Iterator<Item = &'a Run> + Clone,
    moved: &'a [Run],
) -> bool {
    let all = unmoved.clone().chain(moved);
    let cpu = Stats::of(all.clone().flat_map(|r| r.jobs.iter().map(|j| j.cpu_s)));
    row(o, "CPU time of one job, every run", &show(cpu, 2, "s"), "");
    let (identical, outputs) = compare_outputs(reference, all);
    row(o, "outputs", &outputs, "");
    let unmoved_moves: usize = unmoved.map(Run::moves).sum();
    if unmoved_moves > 0 {
        let _ = writeln!(
            o,
            "  (the runs without balancing logged {unmoved_moves} moves: their baselines are off)"
        );
    }
    identical
}

/// The line of load averages a part ends with.
pub(crate) fn load_line(o: &mut String, before: &str, after: &str) {
    let _ = writeln!(
        o,
        "  load average before / after this part: {before} / {after}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outputs: &[&str], moved: &[bool]) -> Run {
        let jobs = outputs
            .iter()
            .zip(moved)
            .enumerate()
            .map(|(k, (out, &m))| Done {
                seed: k + 1,
                home: 1,
                last: 1,
                output: (*out).to_owned(),
                cpu_s: 1.0,
                ended: Duration::from_secs(1),
                moves: if m {
                    vec![(Duration::from_millis(500), 2)]
                } else {
                    Vec::new()
                },
            })
            .collect();
        Run {
            makespan_s: 1.0,
            jobs,
            settle_s: None,
        }
    }

    #[test]
    fn outputs_are_compared_job_by_job_with_the_reference() {
        let reference = run(&["a", "b"], &[false, false]);
        let same = run(&["a", "b"], &[true, false]);
        let (ok, line) = compare_outputs(Some(&reference), [&reference, &same]);
        assert!(ok, "{line}");
        assert!(line.contains("4 jobs, 1 of them moved"), "{line}");
        let other = run(&["a", "c"], &[false, true]);
        let (ok, line) = compare_outputs(Some(&reference), [&same, &other]);
        assert!(!ok);
        assert_eq!(line, "DIFFER: run 2 job 2");
        let empty = run(&["", ""], &[false, false]);
        assert!(!compare_outputs(Some(&empty), [&empty]).0);
        assert!(!compare_outputs(None, [&same]).0);
    }
}
