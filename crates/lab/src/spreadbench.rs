//! The spreading part of `rmosix-lab bench` (`bench spread` runs it alone): issue 9's figure
//! of the daemons' own balancing. Eight CPU-bound jobs of about 4 CPU-seconds each
//! (`bench/crunch.c`, its rounds calibrated to that CPU time on this machine at the start of
//! the run; see `batch`) are started with mosrun on node 1 of a 4-node lab with half a CPU per
//! node, the daemons balancing; the figure is the makespan, from the first start to the last
//! end. Target: at least 3.5 times as fast as the same 8 jobs on node 1 alone (ideal 4x).
//!
//! Baselines, in the same run, on a second lab just like it but with balancing off:
//! (a) the 8 jobs on node 1 alone, where they share its half CPU, and (b) the lab's own
//! ceiling: 2 jobs started on each node, nothing moving. The two labs stand side by side and
//! the runs alternate, so a change of the machine's load hits them alike.
//!
//! Each job's stdout must be byte for byte what the same job printed in the unmoved run (a).
//! Before each balancing run, the bench waits until node 1 sees every node's load back near 0:
//! the exported load falls slowly (crates/gauge), and a node that still looks busy from the
//! last run would not get work.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::batch::{self, Batch, Calibration, Done};
use crate::bench::{BenchError, Stats, load_average, progress, show};
use crate::{Lab, LabConfig};

/// Nodes of each lab, and CPUs each node may use.
const NODES: usize = 4;
const CPU_QUOTA: f64 = 0.5;
/// Jobs of a batch, and the CPU time of one.
const JOBS: usize = 8;
const JOB_CPU_S: f64 = 4.0;
/// The speed-up over node 1 alone we aim for (the ideal is NODES).
const TARGET_SPEEDUP: f64 = 3.5;
/// How long a batch may take: node 1 alone needs JOBS × JOB_CPU_S / CPU_QUOTA (64 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long node 1 may take to see every node idle before a balancing run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How many runs of each kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runs {
    /// The 8 jobs on node 1 alone (a minute each).
    pub(crate) alone: usize,
    /// 2 jobs started on each node.
    pub(crate) ceiling: usize,
    /// 8 jobs started on node 1, the daemons balancing.
    pub(crate) spread: usize,
}

/// One batch: its makespan and its jobs.
#[derive(Debug)]
struct Run {
    makespan_s: f64,
    jobs: Vec<Done>,
    /// How long node 1 took to see every node idle before it (balancing runs only).
    settle_s: Option<f64>,
}

/// Everything the spreading part measured.
#[derive(Debug)]
pub(crate) struct Measured {
    calibration: Calibration,
    alone: Vec<Run>,
    ceiling: Vec<Run>,
    spread: Vec<Run>,
    load_before: String,
    load_after: String,
}

/// Starts the two labs, calibrates the job, then takes `runs` of each kind, alternating.
pub(crate) fn measure(
    bin_dir: &Path,
    runs: Runs,
    stop: &AtomicBool,
) -> Result<Measured, BenchError> {
    let load_before = load_average();
    let lab = |balance: bool| {
        let mut cfg = LabConfig::new(NODES, bin_dir);
        cfg.cpu_quota = Some(CPU_QUOTA);
        cfg.balance = balance;
        Lab::start(cfg)
    };
    let still = lab(false)?;
    let balancing = lab(true)?;
    progress(&format!(
        "spread: labs ready in {} (balancing off) and {} (on)",
        still.dir().display(),
        balancing.dir().display()
    ));
    let program = batch::compile(&still.work_dir())?;
    let calibration = batch::calibrate(&program, JOB_CPU_S)?;
    progress(&format!(
        "spread: a job is crunch {} rounds ({:.3} ms of CPU a round here)",
        calibration.rounds, calibration.ms_per_round
    ));
    let node1 = vec![1; JOBS];
    let each: Vec<u16> = (0..JOBS).map(|k| (k % NODES) as u16 + 1).collect();
    let mut m = Measured {
        calibration,
        alone: Vec::new(),
        ceiling: Vec::new(),
        spread: Vec::new(),
        load_before,
        load_after: String::new(),
    };
    let rounds = calibration.rounds;
    for i in 0..runs.alone.max(runs.ceiling).max(runs.spread) {
        if i < runs.spread {
            progress(&format!(
                "spread: {JOBS} jobs started on node1, balancing, run {}/{}",
                i + 1,
                runs.spread
            ));
            let settle_s = batch::wait_idle(&balancing, SETTLE_TIMEOUT, stop)?.as_secs_f64();
            let mut run = batch_run(&balancing, &program, rounds, &node1, stop)?;
            run.settle_s = Some(settle_s);
            m.spread.push(run);
        }
        if i < runs.ceiling {
            progress(&format!(
                "spread: 2 jobs started on each node, balancing off, run {}/{}",
                i + 1,
                runs.ceiling
            ));
            m.ceiling
                .push(batch_run(&still, &program, rounds, &each, stop)?);
        }
        if i < runs.alone {
            progress(&format!(
                "spread: {JOBS} jobs on node1 alone, balancing off, run {}/{} (about a minute)",
                i + 1,
                runs.alone
            ));
            m.alone
                .push(batch_run(&still, &program, rounds, &node1, stop)?);
        }
    }
    m.load_after = load_average();
    balancing.stop()?;
    still.stop()?;
    Ok(m)
}

/// Runs one batch to its end.
fn batch_run(
    lab: &Lab,
    program: &Path,
    rounds: u64,
    homes: &[u16],
    stop: &AtomicBool,
) -> Result<Run, BenchError> {
    let mut batch = Batch::start(lab, program, rounds, homes)?;
    batch.wait(RUN_TIMEOUT, stop, |_, _| {})?;
    let jobs = batch.finish()?;
    let makespan = jobs.iter().map(|j| j.ended).max().unwrap_or_default();
    Ok(Run {
        makespan_s: makespan.as_secs_f64(),
        jobs,
        settle_s: None,
    })
}

/// The report's section, and its targets (name, value, met).
pub(crate) fn render(o: &mut String, m: &Measured) -> Vec<(String, String, bool)> {
    let makespan = |runs: &[Run]| Stats::of(runs.iter().map(|r| r.makespan_s));
    let (alone, ceiling, spread) = (
        makespan(&m.alone),
        makespan(&m.ceiling),
        makespan(&m.spread),
    );
    // Speed-up of each run over the median of node 1 alone.
    let speedup = |runs: &[Run]| {
        let base = alone?.median;
        Stats::of(runs.iter().map(|r| base / r.makespan_s))
    };
    let (ceiling_x, spread_x) = (speedup(&m.ceiling), speedup(&m.spread));
    let ideal = JOBS as f64 * m.calibration.job_cpu_s() / (NODES as f64 * CPU_QUOTA);
    let _ = writeln!(
        o,
        "\nSpreading: {JOBS} CPU-bound jobs (crunch, {} rounds: {:.1} CPU-s each, calibrated \
         here at the start), {NODES}-node lab, {CPU_QUOTA} CPU per node; makespan from the \
         first start to the last end",
        m.calibration.rounds,
        m.calibration.job_cpu_s()
    );
    let x = |s: Option<Stats>| show(s, 2, "x").replace(" x ", "x ");
    let rows = [
        (
            format!(
                "{JOBS} jobs on node1 alone, balancing off ({})",
                runs(m.alone.len())
            ),
            show(alone, 1, "s"),
            String::new(),
        ),
        (
            format!(
                "2 jobs started on each node, no moves ({})",
                runs(m.ceiling.len())
            ),
            show(ceiling, 1, "s"),
            format!("lab's ceiling: {}", x(ceiling_x)),
        ),
        (
            format!(
                "{JOBS} jobs started on node1, balancing ({})",
                runs(m.spread.len())
            ),
            show(spread, 1, "s"),
            format!("speed-up {}", x(spread_x)),
        ),
    ];
    for (name, value, after) in rows {
        let line = format!("  {name:<52}{value:<26}{after}");
        let _ = writeln!(o, "{}", line.trim_end());
    }
    let share = match (spread_x, ceiling_x) {
        (Some(s), Some(c)) if c.median > 0.0 => format!("{:.0} %", s.median / c.median * 1e2),
        _ => "n/a".to_owned(),
    };
    let moves = |r: &Run| r.jobs.iter().map(|j| j.moves.len()).sum::<usize>() as f64;
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
    let at_end: Vec<String> = m
        .spread
        .iter()
        .map(|r| {
            (1..=NODES as u16)
                .map(|n| r.jobs.iter().filter(|j| j.last == n).count().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let needed = JOBS - JOBS / NODES;
    let details = [
        (
            "speed-up over node1 alone, of the ceiling's".to_owned(),
            share,
        ),
        (
            format!("ideal makespan ({NODES} × {CPU_QUOTA} CPU always busy)"),
            format!("{ideal:.1} s"),
        ),
        (
            format!("moves per run ({needed} needed)"),
            show(Stats::of(m.spread.iter().map(moves)), 0, "moves"),
        ),
        (
            "first move after the start".to_owned(),
            show(Stats::of(m.spread.iter().filter_map(first)), 1, "s"),
        ),
        (
            "last move after the start".to_owned(),
            show(Stats::of(m.spread.iter().filter_map(last)), 1, "s"),
        ),
        (
            format!("jobs on node1..node{NODES} at their end, each run"),
            at_end.join(" | "),
        ),
        (
            "wait for node1 to see the lab idle before a run".to_owned(),
            show(
                Stats::of(m.spread.iter().filter_map(|r| r.settle_s)),
                1,
                "s",
            ),
        ),
    ];
    for (name, value) in details {
        let _ = writeln!(o, "    {name:<50}{value}");
    }
    let all = || m.alone.iter().chain(&m.ceiling).chain(&m.spread);
    let cpu = Stats::of(all().flat_map(|r| r.jobs.iter().map(|j| j.cpu_s)));
    let _ = writeln!(
        o,
        "  {:<52}{}",
        "CPU time of one job, every run",
        show(cpu, 2, "s")
    );
    let unmoved_moves: usize = m
        .alone
        .iter()
        .chain(&m.ceiling)
        .map(|r| moves(r) as usize)
        .sum();
    let (identical, outputs) = compare_outputs(m);
    let _ = writeln!(o, "  {:<52}{outputs}", "outputs");
    if unmoved_moves > 0 {
        let _ = writeln!(
            o,
            "  (the runs without balancing logged {unmoved_moves} moves: their baselines are off)"
        );
    }
    let _ = writeln!(
        o,
        "  load average before / after this part: {} / {}",
        m.load_before, m.load_after
    );
    vec![
        (
            format!("spread speed-up ≥ {TARGET_SPEEDUP}x (median)"),
            spread_x.map_or_else(|| "n/a".to_owned(), |s| format!("{:.2}x", s.median)),
            spread_x.is_some_and(|s| s.median >= TARGET_SPEEDUP),
        ),
        (
            "spread: outputs as never moved".to_owned(),
            if identical { "identical" } else { "DIFFER" }.to_owned(),
            identical,
        ),
    ]
}

/// "1 run", "3 runs".
fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// Whether every job of every run printed what the same job printed in the first run on node
/// 1 alone, and a line saying so (or which differ).
fn compare_outputs(m: &Measured) -> (bool, String) {
    let Some(reference) = m.alone.first() else {
        return (false, "n/a (no unmoved run)".to_owned());
    };
    let runs = m.alone.iter().chain(&m.ceiling).chain(&m.spread);
    let mut jobs = 0;
    let mut moved = 0;
    let mut differ = Vec::new();
    for (r, run) in runs.enumerate() {
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
