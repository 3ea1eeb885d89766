//! The parts of `rmosix-lab bench` about a cluster with little to do, on the two labs of the
//! spreading part (4 nodes of half a CPU, one lab balancing, one not):
//!
//! - **One job alone** (`bench alone`): one `crunch` job on an idle cluster, under mosrun with
//!   the daemons balancing, against the same job run bare (not under mosrun, unknown to
//!   rmosix) on node 1 of the same lab, in turns. Target: no slower (the median under mosrun
//!   at most the slowest bare run: the bare runs' own spread is what "slower" can be told
//!   from). No node is better than node 1 for it, so every move is needless and reported.
//! - **From idle to running** (`bench idle`): nodes 2, 3 and 4 each run one job, then node 1
//!   gets two, one more than its share; node 4's job is shorter and ends first. The figure
//!   is the time from that end (the job's exit, as the bench sees it, polling every
//!   [`POLL`](crate::POLL)) to the arrival of mosrun's log line saying one of node 1's jobs
//!   now runs on node 4. Target: at most 2 s. Baseline, in the same run on the lab without
//!   balancing: `migrate PID 4` by hand of the same job, from the command's start to the same
//!   log line. A run in which one of node 1's jobs is placed on another node at its start
//!   (none waits) is tried again, up to three times in all, and the report says how often.
//! - **Idle daemons** (`bench idle`): each daemon's CPU time (`/proc/PID/stat`, utime +
//!   stime, every thread) over a window while nothing runs, as a share of one CPU. Target:
//!   at most 0.5 %. Baseline: the daemons of the lab without balancing.
//!
//! The figures are in README's Performance table, with the run they came from.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::batch::{self, Batch, Calibration, Event, Supervision};
use crate::bench::{self, BenchError, Stats, load_average, progress, show};
use crate::cmd::run;
use crate::proc::{args_of, children_of};
use crate::turns::{self, Kind, Labs, Run, SETTLE_TIMEOUT, detail, load_line, row};
use crate::{LabError, Node, POLL};

/// The node whose job ends first, under node 1's waiting job.
const FREED: u16 = 4;
/// CPU time of the job that ends first, and of the others: at half a CPU, the short one ends
/// after 12 s (time enough for node 1 to see every node busy before), the long ones of nodes
/// 2 and 3 twelve seconds later, which is how long the waiting job may take to move.
const SHORT_CPU_S: f64 = 6.0;
const LONG_CPU_S: f64 = 12.0;
/// The load, in CPU-bound processes, from which a node counts as busy: the exported load
/// rises to one within seconds (crates/gauge).
const BUSY_PROCESSES: f64 = 0.75;
/// How long node 1 may take to see nodes 2 to 4 busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the freed node's job ended the move there may take before the run counts
/// as a miss (the other long jobs end about then).
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a run is tried in all when one of node 1's jobs was placed on another node at
/// its start (the view of a node's load can lag a job there by a second), so that none
/// waits: such a run says nothing about idle to running.
const TRIES: usize = 3;
/// How long the short job may take to end, under a loaded machine.
const SHORT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long mosrun's log line may take after `migrate` by hand.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// The targets: idle to running, and an idle daemon's share of one CPU.
const TARGET_HANDOFF_S: f64 = 2.0;
const TARGET_DAEMON_PCT: f64 = 0.5;

/// The one-job part's runs.
#[derive(Debug)]
pub(crate) struct Alone {
    bare: Vec<Run>,
    mosrun: Vec<Run>,
    /// The balancing daemons' log lines of the moves they decided during the runs: a move
    /// here is needless, and its line says which rule made it.
    decisions: Vec<String>,
    load_before: String,
    load_after: String,
}

/// One job on node 1, bare and under mosrun with balancing, in turns.
pub(crate) fn alone(
    labs: &Labs,
    rounds: u64,
    runs: usize,
    stop: &AtomicBool,
) -> Result<Alone, BenchError> {
    let load_before = load_average();
    let nodes = labs.balancing.nodes();
    let logged_before: Vec<usize> = nodes.iter().map(|node| node.log().len()).collect();
    let mut bare = Kind::new(
        "alone: one job on node1, bare, balancing on".to_owned(),
        true,
        vec![1],
        runs,
    );
    bare.supervision = Supervision::Bare;
    let mosrun = Kind::new(
        "alone: one job on node1 under mosrun, balancing on".to_owned(),
        true,
        vec![1],
        runs,
    );
    let [bare, mosrun]: [Vec<Run>; 2] = turns::take_turns(labs, rounds, &[bare, mosrun], stop)?
        .try_into()
        .expect("one list of runs per kind");
    let decisions = nodes
        .iter()
        .zip(logged_before)
        .flat_map(|(node, before)| {
            let log = node.log();
            log.get(before..)
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains("balancing: "))
                .map(|line| format!("node{}: {line}", node.id()))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Alone {
        bare,
        mosrun,
        decisions,
        load_before,
        load_after: load_average(),
    })
}

/// The one-job part's section, and its target.
pub(crate) fn render_alone(o: &mut String, m: &Alone) -> Vec<(String, String, bool)> {
    let (bare, mosrun) = (turns::makespan(&m.bare), turns::makespan(&m.mosrun));
    let ratio = bench::slowdown(bare, mosrun).map(|pct| 1.0 + pct / 1e2);
    let moves: usize = m.mosrun.iter().map(Run::moves).sum();
    let _ = writeln!(
        o,
        "\nOne job alone on an idle cluster (the same crunch job, node1 of the balancing lab)"
    );
    row(
        o,
        &format!("bare, not under mosrun ({})", turns::runs(m.bare.len())),
        &show(bare, 2, "s"),
        "",
    );
    row(
        o,
        &format!(
            "under mosrun, daemons balancing ({})",
            turns::runs(m.mosrun.len())
        ),
        &show(mosrun, 2, "s"),
        &ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}x bare")),
    );
    detail(
        o,
        "moves, all runs (none needed)",
        &format!("{moves}{}", if moves > 0 { ": NEEDLESS" } else { "" }),
    );
    for line in &m.decisions {
        let _ = writeln!(o, "    {line}");
    }
    let identical = turns::render_jobs(o, m.bare.first(), m.bare.iter(), &m.mosrun);
    load_line(o, &m.load_before, &m.load_after);
    vec![
        (
            "alone: no slower than the bare runs".to_owned(),
            ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}x")),
            matches!((bare, mosrun), (Some(b), Some(m)) if m.no_slower_than(&b)),
        ),
        (
            "alone: no needless move".to_owned(),
            format!("{moves} moves"),
            moves == 0,
        ),
        (
            "alone: outputs as bare".to_owned(),
            turns::identical(identical),
            identical,
        ),
    ]
}

/// One run of the idle-to-running scenario and its baseline.
#[derive(Debug)]
struct HandoffRun {
    /// From the freed node's job's end to the waiting job's move there; `None` if it did not
    /// come within [`HANDOFF_TIMEOUT`].
    latency_s: Option<f64>,
    /// Moves besides that one, before it (needless here: every node had work).
    needless: usize,
    /// How long node 1 took to see nodes 2 to 4 busy.
    busy_s: f64,
    /// Baseline: `migrate PID 4` by hand, from its start to mosrun's log line.
    by_hand_s: f64,
    /// The same, to the end of the `migrate` command.
    by_hand_command_s: f64,
}

/// The idle-to-running part's runs.
#[derive(Debug)]
pub(crate) struct Handoff {
    runs: Vec<HandoffRun>,
    /// Runs tried again because no job waited at node 1 (see [`TRIES`]).
    retried: usize,
    load_before: String,
    load_after: String,
}

/// `runs` runs of the idle-to-running scenario, each followed by its baseline.
pub(crate) fn handoff(
    labs: &Labs,
    calibration: Calibration,
    runs: usize,
    stop: &AtomicBool,
) -> Result<Handoff, BenchError> {
    let load_before = load_average();
    let mut taken = Vec::with_capacity(runs);
    let mut retried = 0;
    for i in 1..=runs {
        progress(&format!(
            "idle: node{FREED}'s job ends under a job waiting on node1, and the same job \
             moved by hand, run {i}/{runs}"
        ));
        let mut tries = 1;
        let run = loop {
            match handoff_once(labs, calibration, stop)? {
                Some(run) => break run,
                None if tries < TRIES => {
                    progress("idle: a job of node1 was placed away at its start; again");
                    retried += 1;
                    tries += 1;
                }
                None => {
                    return Err(BenchError::Scenario {
                        what: format!(
                            "in {TRIES} tries a job of node1 was placed away at its start, so \
                             none waited there"
                        ),
                    });
                }
            }
        };
        taken.push(run);
    }
    Ok(Handoff {
        runs: taken,
        retried,
        load_before,
        load_after: load_average(),
    })
}

/// One run: nodes 2 to 4 busy, then node 1 with two jobs; times node 4's job's end to one of
/// node 1's running there. Ends every job, then takes the baseline. `None`: one of node 1's
/// jobs went to another node before node 4's job ended, so none waited.
fn handoff_once(
    labs: &Labs,
    calibration: Calibration,
    stop: &AtomicBool,
) -> Result<Option<HandoffRun>, BenchError> {
    let lab = &labs.balancing;
    let (short, long) = (
        calibration.rounds_for(SHORT_CPU_S),
        calibration.rounds_for(LONG_CPU_S),
    );
    batch::wait_idle(lab, SETTLE_TIMEOUT, stop)?;
    let mut others = Batch::start(lab, &labs.program, long, &[2, 3])?;
    let mut freed = Batch::start(lab, &labs.program, short, &[FREED])?;
    let busy = |status: &str| {
        let shown = batch::processes_shown(status);
        (2..=FREED).all(|n| shown.iter().any(|&(m, p)| m == n && p >= BUSY_PROCESSES))
    };
    let Some(busy) = batch::wait_loads(lab, BUSY_TIMEOUT, stop, busy)? else {
        let status = run(lab.node(1).command("mosctl").arg("status"))?;
        return Err(BenchError::Scenario {
            what: format!(
                "node1 did not see nodes 2 to {FREED} busy within {BUSY_TIMEOUT:?}; it shows:\n\
                 {status}"
            ),
        });
    };
    let busy_s = busy.as_secs_f64();
    let mut crowd = Batch::start(lab, &labs.program, long, &[1, 1])?;
    let mut ended: Option<Instant> = None;
    let mut needless = 0;
    let latency_s = 'watch: loop {
        for event in freed.poll()? {
            match event {
                Event::Ended { at, .. } => ended = Some(freed.started() + at),
                Event::Moved { .. } => needless += 1,
            }
        }
        for event in others.poll()? {
            if let Event::Moved { .. } = event {
                needless += 1;
            }
        }
        for event in crowd.poll()? {
            let Event::Moved { to, at, .. } = event else {
                continue;
            };
            let at = crowd.started() + at;
            match ended {
                Some(end) if to == FREED && at >= end => {
                    break 'watch Some((at - end).as_secs_f64());
                }
                Some(_) => needless += 1,
                None => return Ok(None),
            }
        }
        if let Some(end) = ended {
            if end.elapsed() >= HANDOFF_TIMEOUT {
                break None;
            }
        } else if freed.elapsed() >= SHORT_TIMEOUT {
            return Err(BenchError::Scenario {
                what: format!("node{FREED}'s job did not end within {SHORT_TIMEOUT:?}"),
            });
        }
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted.into());
        }
        thread::sleep(POLL);
    };
    // Ends every job of the scenario.
    drop((crowd, others, freed));
    let (by_hand_s, by_hand_command_s) = by_hand(labs, long)?;
    Ok(Some(HandoffRun {
        latency_s,
        needless,
        busy_s,
        by_hand_s,
        by_hand_command_s,
    }))
}

/// Baseline: one job under mosrun on node 1 of the lab without balancing, moved to node
/// [`FREED`] by hand; seconds from the `migrate` command's start to mosrun's log line, and to
/// the command's end.
fn by_hand(labs: &Labs, rounds: u64) -> Result<(f64, f64), BenchError> {
    let mut job = Batch::start(&labs.still, &labs.program, rounds, &[1])?;
    let (pid, home) = job.pid(0);
    let asked = Instant::now();
    let command_ms = bench::migrate(
        labs.still.node(usize::from(home)),
        &pid.to_string(),
        &FREED.to_string(),
    )?;
    loop {
        let moved = job.poll()?.into_iter().find_map(|event| match event {
            Event::Moved { at, .. } => Some(job.started() + at),
            Event::Ended { .. } => None,
        });
        if let Some(moved) = moved {
            return Ok(((moved - asked).as_secs_f64(), command_ms / 1e3));
        }
        if asked.elapsed() >= LOG_TIMEOUT {
            return Err(BenchError::Scenario {
                what: format!(
                    "mosrun logged no move within {LOG_TIMEOUT:?} of `migrate {pid} {FREED}`"
                ),
            });
        }
        thread::sleep(POLL);
    }
}

/// The idle-to-running part's section, and its target.
pub(crate) fn render_handoff(o: &mut String, m: &Handoff) -> Vec<(String, String, bool)> {
    let latency = Stats::of(m.runs.iter().filter_map(|r| r.latency_s));
    let missed = m.runs.iter().filter(|r| r.latency_s.is_none()).count();
    let by_hand = Stats::of(m.runs.iter().map(|r| r.by_hand_s));
    let needless: usize = m.runs.iter().map(|r| r.needless).sum();
    let _ = writeln!(
        o,
        "\nFrom idle to running: nodes 2 to {FREED} busy with one job each, node1 with two; \
         node{FREED}'s job ends ({:.0} CPU-s, the others {:.0})",
        SHORT_CPU_S, LONG_CPU_S
    );
    row(
        o,
        &format!(
            "node{FREED}'s job's end to node1's running there ({})",
            turns::runs(m.runs.len())
        ),
        &show(latency, 2, "s"),
        &match (missed, m.retried) {
            (0, 0) => String::new(),
            (0, r) => format!("{r} runs tried again: a job of node1 placed away at its start"),
            (n, 0) => format!("{n} runs without it in {HANDOFF_TIMEOUT:?}"),
            (n, r) => format!(
                "{n} runs without it in {HANDOFF_TIMEOUT:?}; {r} tried again: a job of node1 \
                 placed away at its start"
            ),
        },
    );
    row(
        o,
        &format!("baseline: `migrate PID {FREED}` by hand, to mosrun's line"),
        &show(by_hand, 2, "s"),
        &match (latency, by_hand) {
            (Some(l), Some(b)) if b.median > 0.0 => {
                format!("the daemons take {:.1}x that", l.median / b.median)
            }
            _ => String::new(),
        },
    );
    detail(
        o,
        "`migrate` command's own wall time",
        &show(
            Stats::of(m.runs.iter().map(|r| r.by_hand_command_s)),
            2,
            "s",
        ),
    );
    detail(
        o,
        &format!("node1 seeing nodes 2 to {FREED} busy (≥ {BUSY_PROCESSES} process)"),
        &show(Stats::of(m.runs.iter().map(|r| r.busy_s)), 1, "s"),
    );
    detail(
        o,
        "other moves before it, all runs (none needed)",
        &needless.to_string(),
    );
    detail(
        o,
        "resolution",
        &format!(
            "the end seen polling every {} ms; the move by its log line's arrival",
            POLL.as_millis()
        ),
    );
    load_line(o, &m.load_before, &m.load_after);
    vec![(
        format!("idle to running ≤ {TARGET_HANDOFF_S} s (median)"),
        latency.map_or_else(|| "n/a".to_owned(), |l| format!("{:.2} s", l.median)),
        missed == 0 && latency.is_some_and(|l| l.median <= TARGET_HANDOFF_S),
    )]
}

/// Idle daemons' CPU time, as a share of one CPU, node by node.
#[derive(Debug)]
pub(crate) struct DaemonCpu {
    balancing: Vec<f64>,
    still: Vec<f64>,
    window_s: f64,
    tick_s: f64,
    load_before: String,
    load_after: String,
}

/// Watches every daemon of both labs, idle, for `window`.
pub(crate) fn daemon_cpu(
    labs: &Labs,
    window: Duration,
    stop: &AtomicBool,
) -> Result<DaemonCpu, BenchError> {
    batch::wait_idle(&labs.balancing, SETTLE_TIMEOUT, stop)?;
    progress(&format!(
        "idle: every daemon's CPU time over {} s, nothing running",
        window.as_secs()
    ));
    let load_before = load_average();
    let tick_s = 1.0 / clock_ticks()?;
    let daemons = |lab: &crate::Lab| -> Result<Vec<u32>, BenchError> {
        lab.nodes().iter().map(daemon_of).collect()
    };
    let (balancing, still) = (daemons(&labs.balancing)?, daemons(&labs.still)?);
    let all: Vec<u32> = balancing.iter().chain(&still).copied().collect();
    let before = cpu_ticks(&all)?;
    let started = Instant::now();
    while started.elapsed() < window {
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted.into());
        }
        thread::sleep(Duration::from_millis(100));
    }
    let after = cpu_ticks(&all)?;
    let window_s = started.elapsed().as_secs_f64();
    let pct: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 * tick_s / window_s * 1e2)
        .collect();
    let (balancing, still) = pct.split_at(balancing.len());
    Ok(DaemonCpu {
        balancing: balancing.to_vec(),
        still: still.to_vec(),
        window_s,
        tick_s,
        load_before,
        load_after: load_average(),
    })
}

/// The node's daemon, as a host PID: the child of its init that runs `mosixd --map …` (guests
/// left by a stopped daemon run `mosixd guest`).
fn daemon_of(node: &Node) -> Result<u32, BenchError> {
    children_of(node.init_pid())
        .into_iter()
        .find(|&pid| args_of(pid).get(1).is_some_and(|a| a == "--map"))
        .ok_or_else(|| BenchError::Scenario {
            what: format!("node {} runs no daemon", node.id()),
        })
}

/// Clock ticks per second, the unit of /proc/PID/stat's times (`getconf CLK_TCK`).
fn clock_ticks() -> Result<f64, BenchError> {
    let out = run(Command::new("getconf").arg("CLK_TCK"))?;
    out.trim().parse().map_err(|_| BenchError::Parse {
        program: "getconf CLK_TCK".to_owned(),
        line: out.clone(),
        field: "CLK_TCK",
    })
}

/// utime + stime of each process in `pids`, in clock ticks, all threads counted.
fn cpu_ticks(pids: &[u32]) -> Result<Vec<u64>, BenchError> {
    pids.iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/stat");
            let stat = fs::read_to_string(&path).map_err(|source| LabError::Io {
                action: "read",
                path: path.clone().into(),
                source,
            })?;
            ticks_in_stat(&stat).ok_or_else(|| BenchError::Parse {
                program: path,
                line: stat.clone(),
                field: "utime+stime",
            })
        })
        .collect()
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line; the command name (field 2,
/// in parentheses) may hold spaces and parentheses, so fields are counted after the last `)`.
fn ticks_in_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts with field 3 (state): utime is the 12th word, stime the 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The idle daemons' section, and its target.
pub(crate) fn render_daemons(o: &mut String, m: &DaemonCpu) -> Vec<(String, String, bool)> {
    let pct = |v: &[f64]| v.iter().map(|p| format!("{p:.2}")).collect::<Vec<_>>();
    let (balancing, still) = (
        Stats::of(m.balancing.iter().copied()),
        Stats::of(m.still.iter().copied()),
    );
    let _ = writeln!(
        o,
        "\nIdle daemons: CPU time (utime + stime) over {:.0} s, nothing running, as % of one CPU",
        m.window_s
    );
    row(
        o,
        "daemons balancing, node1..node4",
        &show(balancing, 2, "%"),
        &pct(&m.balancing).join(" "),
    );
    row(
        o,
        "baseline: daemons not balancing",
        &show(still, 2, "%"),
        &pct(&m.still).join(" "),
    );
    detail(
        o,
        "resolution (one clock tick over the window)",
        &format!("{:.3} %", m.tick_s / m.window_s * 1e2),
    );
    load_line(o, &m.load_before, &m.load_after);
    vec![(
        format!("idle daemon ≤ {TARGET_DAEMON_PCT} % of a CPU (median)"),
        balancing.map_or_else(|| "n/a".to_owned(), |b| format!("{:.2} %", b.median)),
        balancing.is_some_and(|b| b.median <= TARGET_DAEMON_PCT),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        // A name with a space and a parenthesis; utime 250, stime 31.
        let stat = "4711 (mosixd (x) y) S 1 4711 4711 0 -1 4194560 1339 0 0 0 250 31 0 0 \
                    20 0 5 0 1234 0 0";
        assert_eq!(ticks_in_stat(stat), Some(281));
        assert_eq!(ticks_in_stat("4711 (mosixd) S 1 2"), None);
        let own = fs::read_to_string("/proc/self/stat").expect("own stat");
        assert!(ticks_in_stat(&own).is_some(), "{own}");
    }
}
