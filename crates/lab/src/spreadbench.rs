//! The balancing parts of `rmosix-lab bench` (issue 9; `bench spread` runs them all, `bench
//! unequal`, `bench alone` and `bench idle` one each), with the job program `bench/crunch.c`,
//! its rounds calibrated to [`JOB_CPU_S`] CPU-seconds on this machine at the start of the run
//! (see `batch`). Each figure has a baseline taken in the same run; the labs and the turns
//! they are taken in are `turns`'.
//!
//! - **Spreading** (here): eight jobs started with mosrun on node 1 of a 4-node lab with half
//!   a CPU per node, the daemons balancing; the figure is the makespan, from the first start
//!   to the last end. Target: at least 3.5 times as fast as the same 8 jobs on node 1 alone
//!   (ideal 4x). Baselines, on a second lab just like it but with balancing off: (a) the 8
//!   jobs on node 1 alone, where they share its half CPU, and (b) the lab's own ceiling: 2
//!   jobs started on each node, nothing moving. Each job's stdout must be byte for byte what
//!   the same job printed in the unmoved run (a). Figures: README, Performance.
//! - **Unequal nodes** (`unequalbench`): the same 8 jobs on nodes of 1, 0.5, 0.25 and 0.25
//!   CPU, against the fluid ideal.
//! - **One job alone**, **from idle to running** and **idle daemons** (`quietbench`), on the
//!   labs of the spreading part.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::batch::{self, Calibration};
use crate::bench::{BenchError, load_average, progress, show};
use crate::quietbench::{self, Alone, DaemonCpu, Handoff};
use crate::turns::{self, Kind, Labs, Run, detail, load_line, row};
use crate::unequalbench::{self, Unequal};

/// Nodes of each lab, and CPUs each node may use.
const NODES: usize = 4;
const CPU_QUOTA: f64 = 0.5;
/// Jobs of a batch, and the CPU time of one.
pub(crate) const JOBS: usize = 8;
pub(crate) const JOB_CPU_S: f64 = 4.0;
/// The speed-up over node 1 alone we aim for (the ideal is NODES).
const TARGET_SPEEDUP: f64 = 3.5;

/// Which balancing parts a bench run takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts {
    pub(crate) spread: bool,
    pub(crate) unequal: bool,
    pub(crate) alone: bool,
    pub(crate) idle: bool,
}

/// How many runs of each kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Runs {
    /// The 8 jobs on node 1 alone (a minute each).
    pub(crate) alone: usize,
    /// 2 jobs started on each node.
    pub(crate) ceiling: usize,
    /// 8 jobs started on node 1, the daemons balancing.
    pub(crate) spread: usize,
    /// The 8 jobs on node 1 alone of the unequal lab (half a minute each).
    pub(crate) unequal_alone: usize,
    /// The 8 jobs started where the ideal puts them on the unequal lab.
    pub(crate) unequal_ceiling: usize,
    /// 8 jobs started on node 1 of the unequal lab, the daemons balancing.
    pub(crate) unequal: usize,
    /// One job alone, each way (bare and under mosrun).
    pub(crate) single: usize,
    /// A node freed under a waiting job, and the move by hand.
    pub(crate) handoff: usize,
    /// How long idle daemons are watched.
    pub(crate) idle_window: Duration,
}

/// The spreading part's runs.
#[derive(Debug)]
pub(crate) struct Spread {
    alone: Vec<Run>,
    ceiling: Vec<Run>,
    spread: Vec<Run>,
    load_before: String,
    load_after: String,
}

/// Everything the balancing parts measured.
#[derive(Debug)]
pub(crate) struct Measured {
    calibration: Calibration,
    spread: Option<Spread>,
    unequal: Option<Unequal>,
    alone: Option<Alone>,
    handoff: Option<Handoff>,
    daemons: Option<DaemonCpu>,
}

/// Starts the labs of `parts`, calibrates the job, and measures.
pub(crate) fn measure(
    bin_dir: &Path,
    runs: Runs,
    parts: Parts,
    stop: &AtomicBool,
) -> Result<Measured, BenchError> {
    let mut calibration = None;
    let calibrate = |labs: &Labs, calibration: &mut Option<Calibration>| {
        if let Some(c) = *calibration {
            return Ok::<_, BenchError>(c);
        }
        let c = batch::calibrate(&labs.program, JOB_CPU_S)?;
        progress(&format!(
            "a job is crunch {} rounds ({:.3} ms of CPU a round here)",
            c.rounds, c.ms_per_round
        ));
        *calibration = Some(c);
        Ok(c)
    };
    let (mut spread, mut alone, mut handoff, mut daemons, mut unequal) =
        (None, None, None, None, None);
    if parts.spread || parts.alone || parts.idle {
        let labs = Labs::start(bin_dir, &[CPU_QUOTA; NODES], "spread")?;
        let c = calibrate(&labs, &mut calibration)?;
        if parts.spread {
            spread = Some(measure_spread(&labs, c.rounds, runs, stop)?);
        }
        if parts.alone {
            alone = Some(quietbench::alone(&labs, c.rounds, runs.single, stop)?);
        }
        if parts.idle {
            handoff = Some(quietbench::handoff(&labs, c, runs.handoff, stop)?);
            daemons = Some(quietbench::daemon_cpu(&labs, runs.idle_window, stop)?);
        }
        labs.stop()?;
    }
    if parts.unequal {
        let labs = Labs::start(bin_dir, &unequalbench::QUOTAS, "unequal")?;
        let c = calibrate(&labs, &mut calibration)?;
        unequal = Some(unequalbench::measure(&labs, c, runs, stop)?);
        labs.stop()?;
    }
    Ok(Measured {
        calibration: calibration.expect("some part ran, and calibrated"),
        spread,
        unequal,
        alone,
        handoff,
        daemons,
    })
}

/// The spreading part: the 8 jobs started on node 1 balancing, 2 on each node, and the 8 on
/// node 1 alone, in turns.
fn measure_spread(
    labs: &Labs,
    rounds: u64,
    runs: Runs,
    stop: &AtomicBool,
) -> Result<Spread, BenchError> {
    let load_before = load_average();
    let kinds = [
        Kind::new(
            format!("spread: {JOBS} jobs started on node1, balancing"),
            true,
            vec![1; JOBS],
            runs.spread,
        ),
        Kind::new(
            "spread: 2 jobs started on each node, balancing off".to_owned(),
            false,
            (0..JOBS).map(|k| (k % NODES) as u16 + 1).collect(),
            runs.ceiling,
        ),
        Kind::new(
            format!("spread: {JOBS} jobs on node1 alone, balancing off (about a minute)"),
            false,
            vec![1; JOBS],
            runs.alone,
        ),
    ];
    let [spread, ceiling, alone]: [Vec<Run>; 3] = turns::take_turns(labs, rounds, &kinds, stop)?
        .try_into()
        .expect("one list of runs per kind");
    Ok(Spread {
        alone,
        ceiling,
        spread,
        load_before,
        load_after: load_average(),
    })
}

/// The report's sections, and their targets (name, value, met).
pub(crate) fn render(o: &mut String, m: &Measured) -> Vec<(String, String, bool)> {
    let mut targets = Vec::new();
    if let Some(s) = &m.spread {
        targets.extend(render_spread(o, s, &m.calibration));
    }
    if let Some(u) = &m.unequal {
        targets.extend(unequalbench::render(o, u, &m.calibration));
    }
    if let Some(a) = &m.alone {
        targets.extend(quietbench::render_alone(o, a));
    }
    if let Some(h) = &m.handoff {
        targets.extend(quietbench::render_handoff(o, h));
    }
    if let Some(d) = &m.daemons {
        targets.extend(quietbench::render_daemons(o, d));
    }
    targets
}

/// The spreading part's section.
fn render_spread(
    o: &mut String,
    m: &Spread,
    calibration: &Calibration,
) -> Vec<(String, String, bool)> {
    let (alone, ceiling, spread) = (
        turns::makespan(&m.alone),
        turns::makespan(&m.ceiling),
        turns::makespan(&m.spread),
    );
    let (ceiling_x, spread_x) = (
        turns::speedup(alone, &m.ceiling),
        turns::speedup(alone, &m.spread),
    );
    let ideal = JOBS as f64 * calibration.job_cpu_s() / (NODES as f64 * CPU_QUOTA);
    let _ = writeln!(
        o,
        "\nSpreading: {JOBS} CPU-bound jobs (crunch, {} rounds: {:.1} CPU-s each, calibrated \
         here at the start), {NODES}-node lab, {CPU_QUOTA} CPU per node; makespan from the \
         first start to the last end",
        calibration.rounds,
        calibration.job_cpu_s()
    );
    let x = turns::times;
    turns::alone_row(o, JOBS, m.alone.len(), alone);
    row(
        o,
        &format!(
            "2 jobs started on each node, no moves ({})",
            turns::runs(m.ceiling.len())
        ),
        &show(ceiling, 1, "s"),
        &format!("lab's ceiling: {}", x(ceiling_x)),
    );
    row(
        o,
        &format!(
            "{JOBS} jobs started on node1, balancing ({})",
            turns::runs(m.spread.len())
        ),
        &show(spread, 1, "s"),
        &format!("speed-up {}", x(spread_x)),
    );
    let share = match (spread_x, ceiling_x) {
        (Some(s), Some(c)) if c.median > 0.0 => format!("{:.0} %", s.median / c.median * 1e2),
        _ => "n/a".to_owned(),
    };
    detail(o, "speed-up over node1 alone, of the ceiling's", &share);
    detail(
        o,
        &format!("ideal makespan ({NODES} × {CPU_QUOTA} CPU always busy)"),
        &format!("{ideal:.1} s"),
    );
    turns::render_moves(o, &m.spread, NODES, JOBS - JOBS / NODES);
    let identical = turns::render_jobs(
        o,
        m.alone.first(),
        m.alone.iter().chain(&m.ceiling),
        &m.spread,
    );
    load_line(o, &m.load_before, &m.load_after);
    vec![
        (
            format!("spread speed-up ≥ {TARGET_SPEEDUP}x (median)"),
            spread_x.map_or_else(|| "n/a".to_owned(), |s| format!("{:.2}x", s.median)),
            spread_x.is_some_and(|s| s.median >= TARGET_SPEEDUP),
        ),
        (
            "spread: outputs as never moved".to_owned(),
            turns::identical(identical),
            identical,
        ),
    ]
}
