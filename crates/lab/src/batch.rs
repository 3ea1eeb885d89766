//! A batch of CPU-bound jobs started at once under `mosrun` (or bare, as a baseline), for the
//! balancing benches (`spreadbench`, `turns`) and the demo: the job program (`bench/crunch.c`), its calibration to
//! CPU-seconds on this machine, and a [`Batch`] that starts the jobs on chosen nodes and
//! reports each move (from its mosrun's log) and each end as they happen.
//!
//! Job `k` (from 1) runs `crunch ROUNDS k`: every job does the same work from its own seed, and
//! its stdout is one line that depends on every step, so a job that moved must print what the
//! same job never moved prints.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cmd::{describe, run};
use crate::{Lab, LabError, pid_in_node, wait_child_of};

/// The job program, compiled where it is needed.
const SOURCE: &str = include_str!("../bench/crunch.c");
/// How long mosrun and its program may take to appear.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the batch sleeps between two looks at its jobs.
const TICK: Duration = Duration::from_millis(20);
/// The CPU time a calibration run aims at, at least: long enough that starting the program
/// is lost in it, short enough to repeat.
const CALIBRATION_MS: f64 = 250.0;
/// Calibration runs timed at the final size; the median counts.
const CALIBRATION_RUNS: usize = 3;

/// The load (MOSIX units: one busy process on half a CPU shows 200) under which a node counts
/// as idle, and how often [`wait_idle`] and [`wait_loads`] ask.
const IDLE_LOAD: u32 = 20;
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Writes `crunch.c` into `dir` and compiles it there with `gcc -O2`; returns the program.
pub(crate) fn compile(dir: &Path) -> Result<PathBuf, LabError> {
    let source = dir.join("crunch.c");
    fs::write(&source, SOURCE).map_err(|e| LabError::Io {
        action: "write",
        path: source.clone(),
        source: e,
    })?;
    let program = dir.join("crunch");
    run(Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&program)
        .arg(&source))?;
    Ok(program)
}

/// How many rounds of `crunch` make a job of a given CPU time on this machine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calibration {
    /// Rounds of one job.
    pub(crate) rounds: u64,
    /// CPU time of one round, in ms (median of the timed runs).
    pub(crate) ms_per_round: f64,
}

impl Calibration {
    /// The CPU time of one job, in seconds, as calibrated.
    pub(crate) fn job_cpu_s(&self) -> f64 {
        self.rounds as f64 * self.ms_per_round / 1e3
    }

    /// The rounds of a job of `cpu_s` CPU-seconds.
    pub(crate) fn rounds_for(&self, cpu_s: f64) -> u64 {
        (cpu_s * 1e3 / self.ms_per_round).round().max(1.0) as u64
    }
}

/// Times `program` at the host (no namespace, no quota: CPU time is what is measured, and it
/// does not depend on the quota) until a run takes at least [`CALIBRATION_MS`] of CPU, then
/// [`CALIBRATION_RUNS`] times at that size; the rounds that take `cpu_s` CPU-seconds at the
/// median rate.
pub(crate) fn calibrate(program: &Path, cpu_s: f64) -> Result<Calibration, LabError> {
    let mut rounds: u64 = 64;
    while cpu_ms(program, rounds)? < CALIBRATION_MS {
        rounds *= 2;
    }
    let mut per_round = Vec::with_capacity(CALIBRATION_RUNS);
    for _ in 0..CALIBRATION_RUNS {
        per_round.push(cpu_ms(program, rounds)? / rounds as f64);
    }
    per_round.sort_by(f64::total_cmp);
    let ms_per_round = per_round[per_round.len() / 2];
    let mut calibration = Calibration {
        rounds: 0,
        ms_per_round,
    };
    calibration.rounds = calibration.rounds_for(cpu_s);
    Ok(calibration)
}

/// CPU time of one bare run of `program ROUNDS 0`, in ms, as it reports it.
fn cpu_ms(program: &Path, rounds: u64) -> Result<f64, LabError> {
    let mut cmd = Command::new(program);
    cmd.args([rounds.to_string(), "0".to_owned()]);
    let command = describe(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(LabError::CommandFailed {
            command,
            status: out.status,
            stderr,
        });
    }
    reported_cpu_ms(&stderr).ok_or(LabError::JobOutput {
        command,
        what: "cpu_ms=",
        output: stderr,
    })
}

/// The `cpu_ms=` that crunch printed on stderr (mosrun's log lines may surround it).
fn reported_cpu_ms(stderr: &str) -> Option<f64> {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("cpu_ms="))
        .and_then(|v| v.parse().ok())
}

/// The text after `name=` in a log line, up to the next space (fields are `name=value`).
pub(crate) fn field_text<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
}

/// What happened to a job of a batch, and when (since the batch started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Event {
    /// Job `job` (an index into the batch) now runs on node `to`.
    Moved { job: usize, to: u16, at: Duration },
    /// Job `job` ended (well: a failure ends the batch with an error).
    Ended { job: usize, at: Duration },
}

/// A job of a batch that ended.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    /// Its seed (job `k` of the batch has seed `k`, from 1).
    pub(crate) seed: usize,
    /// The node it was started on.
    pub(crate) home: u16,
    /// The node it ran on last.
    pub(crate) last: u16,
    /// Everything it printed on stdout.
    pub(crate) output: String,
    /// The CPU time it reported, in seconds (on every node it ran on).
    pub(crate) cpu_s: f64,
    /// When it ended, since the batch started.
    pub(crate) ended: Duration,
    /// Its moves: when, and to which node.
    pub(crate) moves: Vec<(Duration, u16)>,
}

/// Whether a batch's jobs run under mosrun, or bare (unknown to rmosix: the baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Supervision {
    Mosrun,
    Bare,
}

impl Supervision {
    /// What the command line starts with, for messages.
    fn prefix(self) -> &'static str {
        match self {
            Supervision::Mosrun => "mosrun ",
            Supervision::Bare => "",
        }
    }
}

/// One running job.
struct Running {
    command: String,
    home: u16,
    /// Where it runs now, as its mosrun's log says.
    at: u16,
    /// Its PID inside its home node.
    pid: u32,
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Vec<String>,
    moves: Vec<(Duration, u16)>,
    ended: Option<Duration>,
}

/// A batch of `crunch` jobs under mosrun, started together. Dropping it kills the jobs still
/// running (each mosrun dies with its `nsenter`, and its program with it).
pub(crate) struct Batch {
    started: Instant,
    jobs: Vec<Running>,
    /// Log lines of every job's stderr: job index, arrival, line.
    lines: Receiver<(usize, Instant, String)>,
}

impl Batch {
    /// Starts `mosrun PROGRAM ROUNDS K` for job `K` = 1, 2, … on node `homes[K-1]` of `lab`,
    /// one after the other (the clock starts before the first), and returns once every
    /// program runs. `MOSRUN_LOG=info` makes mosrun log each move.
    pub(crate) fn start(
        lab: &Lab,
        program: &Path,
        rounds: u64,
        homes: &[u16],
    ) -> Result<Batch, LabError> {
        Batch::start_as(Supervision::Mosrun, lab, program, rounds, homes)
    }

    /// [`Batch::start`], the jobs under mosrun or bare.
    pub(crate) fn start_as(
        supervision: Supervision,
        lab: &Lab,
        program: &Path,
        rounds: u64,
        homes: &[u16],
    ) -> Result<Batch, LabError> {
        let (tx, lines) = mpsc::channel();
        let started = Instant::now();
        let mut batch = Batch {
            started,
            jobs: Vec::with_capacity(homes.len()),
            lines,
        };
        for (index, &home) in homes.iter().enumerate() {
            let node = lab.node(usize::from(home));
            let mut cmd = match supervision {
                Supervision::Mosrun => {
                    let mut cmd = node.command("mosrun");
                    cmd.arg(program);
                    cmd
                }
                Supervision::Bare => node.command(program),
            };
            cmd.args([rounds.to_string(), (index + 1).to_string()])
                .current_dir(lab.work_dir())
                .env("MOSRUN_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let command = format!(
                "node {home}: {}crunch {rounds} {}",
                supervision.prefix(),
                index + 1
            );
            let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
                command: describe(&cmd),
                source,
            })?;
            let stdout = child.stdout.take().map(|out| {
                thread::spawn(move || {
                    let mut text = String::new();
                    let _ = BufReader::new(out).read_to_string(&mut text);
                    text
                })
            });
            if let Some(err) = child.stderr.take() {
                let tx = tx.clone();
                thread::spawn(move || {
                    for line in BufReader::new(err).lines() {
                        let Ok(line) = line else { break };
                        if tx.send((index, Instant::now(), line)).is_err() {
                            break;
                        }
                    }
                });
            }
            // Pushed before its PID is known, so that an error below kills it with the batch.
            batch.jobs.push(Running {
                command,
                home,
                at: home,
                pid: 0,
                child,
                stdout,
                stderr: Vec::new(),
                moves: Vec::new(),
                ended: None,
            });
            let job = &mut batch.jobs[index];
            // nsenter -> mosrun -> crunch, or nsenter -> crunch
            let mut crunch = wait_child_of(job.child.id(), SPAWN_TIMEOUT)?;
            if supervision == Supervision::Mosrun {
                crunch = wait_child_of(crunch, SPAWN_TIMEOUT)?;
            }
            job.pid = pid_in_node(crunch).ok_or(LabError::NotInNode { pid: crunch })?;
        }
        Ok(batch)
    }

    /// How many jobs.
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Job `job`'s PID inside its home node (what `mosctl where` takes), and that node.
    pub(crate) fn pid(&self, job: usize) -> (u32, u16) {
        (self.jobs[job].pid, self.jobs[job].home)
    }

    /// The jobs that have not ended yet, by index.
    pub(crate) fn running(&self) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&j| self.jobs[j].ended.is_none())
            .collect()
    }

    /// Time since the batch started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the batch started: its events' times are since then.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Whether every job has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.jobs.iter().all(|j| j.ended.is_some())
    }

    /// Reads what the jobs logged and which ended since the last call, without waiting. A
    /// job that ended badly is an error (the batch is dropped with it, killing the others).
    pub(crate) fn poll(&mut self) -> Result<Vec<Event>, LabError> {
        let mut events = Vec::new();
        while let Ok((job, when, line)) = self.lines.try_recv() {
            let at = when.duration_since(self.started);
            let running = &mut self.jobs[job];
            if let Some(to) = moved_to(&line, running.home) {
                running.at = to;
                running.moves.push((at, to));
                events.push(Event::Moved { job, to, at });
            }
            running.stderr.push(line);
        }
        for (job, running) in self.jobs.iter_mut().enumerate() {
            if running.ended.is_some() {
                continue;
            }
            let status = running.child.try_wait().map_err(|source| LabError::Spawn {
                command: running.command.clone(),
                source,
            })?;
            if let Some(status) = status {
                check(running, status)?;
                let at = self.started.elapsed();
                running.ended = Some(at);
                events.push(Event::Ended { job, at });
            }
        }
        Ok(events)
    }

    /// Polls until every job has ended, calling `on_event` for each event; an error after
    /// `timeout` (the jobs are killed) or on Ctrl-C (`stop`).
    pub(crate) fn wait(
        &mut self,
        timeout: Duration,
        stop: &AtomicBool,
        mut on_event: impl FnMut(&Batch, Event),
    ) -> Result<(), LabError> {
        let deadline = self.started + timeout;
        loop {
            for event in self.poll()? {
                on_event(self, event);
            }
            if self.is_done() {
                return Ok(());
            }
            if stop.load(Ordering::Relaxed) {
                return Err(LabError::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(LabError::BatchTimeout {
                    running: self.running().len(),
                    jobs: self.jobs.len(),
                    timeout,
                });
            }
            thread::sleep(TICK);
        }
    }

    /// The ended batch's jobs, in order, with their output and the CPU time they reported.
    /// Waits for the jobs' log lines still in flight.
    ///
    /// # Panics
    /// If a job has not ended ([`Batch::wait`] first).
    pub(crate) fn finish(mut self) -> Result<Vec<Done>, LabError> {
        assert!(self.is_done(), "finish() before every job ended");
        let mut outputs = Vec::with_capacity(self.jobs.len());
        for job in &mut self.jobs {
            let output = job.stdout.take().map(|t| t.join().unwrap_or_default());
            outputs.push(output.unwrap_or_default());
        }
        // Every job ended and its stdout is closed; its stderr closes with it, so the lines
        // still to come are already sent or about to be.
        while let Ok((job, when, line)) = self.lines.recv_timeout(Duration::from_millis(200)) {
            let at = when.duration_since(self.started);
            let running = &mut self.jobs[job];
            if let Some(to) = moved_to(&line, running.home) {
                running.at = to;
                running.moves.push((at, to));
            }
            running.stderr.push(line);
        }
        let mut done = Vec::with_capacity(self.jobs.len());
        for (index, (job, output)) in self.jobs.iter().zip(outputs).enumerate() {
            let stderr = job.stderr.join("\n");
            let cpu_s = reported_cpu_ms(&stderr).ok_or_else(|| LabError::JobOutput {
                command: job.command.clone(),
                what: "cpu_ms=",
                output: stderr.clone(),
            })? / 1e3;
            done.push(Done {
                seed: index + 1,
                home: job.home,
                last: job.at,
                output,
                cpu_s,
                ended: job.ended.unwrap_or_default(),
                moves: job.moves.clone(),
            });
        }
        Ok(done)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for job in &mut self.jobs {
            if matches!(job.child.try_wait(), Ok(None)) {
                let _ = job.child.kill();
                let _ = job.child.wait();
            }
        }
    }
}

/// A job that ended: an error unless it ended well.
fn check(job: &Running, status: ExitStatus) -> Result<(), LabError> {
    if status.success() {
        return Ok(());
    }
    Err(LabError::CommandFailed {
        command: job.command.clone(),
        status,
        stderr: job.stderr.join("\n"),
    })
}

/// The node a mosrun log line says its program now runs on, if it tells of a move: `migrated`
/// and `moved on` name the target in `node=`, `came home` means `home`.
fn moved_to(line: &str, home: u16) -> Option<u16> {
    let line = crate::bench::strip_ansi(line);
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.contains(&"came") && words.contains(&"home") {
        return Some(home);
    }
    let is_move = words.contains(&"migrated") || words.windows(2).any(|w| w == ["moved", "on"]);
    if !is_move {
        return None;
    }
    field_text(&line, "node")?.parse().ok()
}

/// Waits until node 1 of `lab` sees every node up with a load under [`IDLE_LOAD`]: the
/// exported load falls slowly (crates/gauge), and a node that still looks busy from earlier
/// work gets no new work. Returns how long that took.
pub(crate) fn wait_idle(
    lab: &Lab,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Duration, LabError> {
    let nodes = lab.nodes().len();
    let idle = |status: &str| {
        let loads = loads(status);
        loads.len() == nodes && loads.iter().all(|(_, l)| l.is_some_and(|l| l < IDLE_LOAD))
    };
    match wait_loads(lab, timeout, stop, idle)? {
        Some(waited) => Ok(waited),
        None => Err(LabError::NotIdle {
            timeout,
            status: run(lab.node(1).command("mosctl").arg("status"))?,
        }),
    }
}

/// Asks node 1 of `lab` for every node's load (`mosctl status`) until `wanted` holds of what
/// it prints; how long that took, or `None` after `timeout`.
pub(crate) fn wait_loads(
    lab: &Lab,
    timeout: Duration,
    stop: &AtomicBool,
    wanted: impl Fn(&str) -> bool,
) -> Result<Option<Duration>, LabError> {
    let started = Instant::now();
    loop {
        let status = run(lab.node(1).command("mosctl").arg("status"))?;
        if wanted(&status) {
            return Ok(Some(started.elapsed()));
        }
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        thread::sleep(IDLE_POLL);
    }
}

/// Each node's load in `mosctl status` output (`node 2: up, load 37, …`), `None` for a node
/// that is not up or shows no figures.
pub(crate) fn loads(status: &str) -> Vec<(u16, Option<u32>)> {
    status
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("node ")?;
            let (node, rest) = rest.split_once(": ")?;
            let node = node.parse().ok()?;
            if rest.starts_with("this node") {
                return None;
            }
            let load = rest
                .strip_prefix("up, load ")
                .and_then(|r| r.split(',').next())
                .and_then(|l| l.parse().ok());
            Some((node, load))
        })
        .collect()
}

/// How many CPU-bound processes each node's load in `mosctl status` output stands for: its
/// load over the load one process adds there, `100 × 10000 / (speed × cpus)` (the load is
/// normalised to a standard CPU: docs/balancing.md, "Load units"). Nodes not up are left out.
pub(crate) fn processes_shown(status: &str) -> Vec<(u16, f64)> {
    status
        .lines()
        .filter_map(|line| {
            let (node, rest) = line.strip_prefix("node ")?.split_once(": up, ")?;
            let (mut load, mut speed, mut cpus) = (None, None, None);
            for part in rest.split(", ") {
                let number = |v: &str| v.parse::<f64>().ok();
                if let Some(v) = part.strip_prefix("load ") {
                    load = number(v);
                } else if let Some(v) = part.strip_prefix("speed ") {
                    speed = number(v);
                } else if let Some(v) = part.strip_suffix(" CPUs").or(part.strip_suffix(" CPU")) {
                    cpus = number(v);
                }
            }
            let one_process = 100.0 * 10_000.0 / (speed? * cpus?);
            Some((node.parse().ok()?, load? / one_process))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_are_read_from_mosrun_log_lines() {
        let out = "2026-12-04T05:00:00Z  INFO rmosix_engine::legs: migrated pid=7 node=3 \
                   bytes=270336 first_bytes=262144 freeze_ms=2.1 total_ms=9.0";
        assert_eq!(moved_to(out, 1), Some(3));
        let on = "2026-12-04T05:00:00Z  INFO rmosix_engine::home: moved on pid=7 from=3 node=4 \
                  precopied=true freeze_ms=1 total_ms=5";
        assert_eq!(moved_to(on, 1), Some(4));
        let back = "2026-12-04T05:00:00Z  INFO rmosix_engine::home: came home pid=7 node=4 \
                    precopied=true freeze_ms=1 total_ms=5";
        assert_eq!(moved_to(back, 2), Some(2));
        assert_eq!(moved_to("cpu_ms=4000.0", 1), None);
        assert_eq!(moved_to("seed=1 rounds=3 sum=00", 1), None);
    }

    #[test]
    fn cpu_time_is_read_among_log_lines() {
        let stderr = "INFO rmosix_engine::legs: migrated pid=7 node=3\ncpu_ms=4012.5\n";
        assert_eq!(reported_cpu_ms(stderr), Some(4012.5));
        assert_eq!(reported_cpu_ms("cpu_ms=x"), None);
    }

    #[test]
    fn loads_come_from_the_status_lines() {
        let status = "node 1: this node, 8 supervised processes, 0 hosted\n\
                      node 1: up, load 400, speed 10000, 0.5 CPUs, memory 1 of 2 MiB free, \
                      utilisation 50%\n\
                      node 2: up, load 0, speed 10000, 0.5 CPUs, memory 1 of 2 MiB free, \
                      utilisation 0%, block\n\
                      node 3: dead\n";
        assert_eq!(loads(status), vec![(1, Some(400)), (2, Some(0)), (3, None)]);
    }

    #[test]
    fn a_load_stands_for_processes_by_speed_and_cpus() {
        let status = "node 1: this node, 0 supervised processes, 0 hosted\n\
                      node 1: up, load 400, speed 10000, 0.5 CPUs, memory 1 of 2 MiB free\n\
                      node 2: up, load 53, speed 41809, 0.5 CPUs, memory 1 of 2 MiB free\n\
                      node 3: up, load 25, speed 20000, 2 CPUs, memory 1 of 2 MiB free\n\
                      node 4: dead\n";
        let shown = processes_shown(status);
        let nodes: Vec<u16> = shown.iter().map(|&(n, _)| n).collect();
        assert_eq!(nodes, [1, 2, 3]);
        // One process on half a standard CPU shows 200: 400 is two.
        assert!((shown[0].1 - 2.0).abs() < 1e-9);
        // Half of a CPU 4.18 times as fast as the standard: one shows 47.8.
        assert!((shown[1].1 - 53.0 / 47.8302).abs() < 1e-3);
        // Two CPUs twice as fast: one process shows 25.
        assert!((shown[2].1 - 1.0).abs() < 1e-9);
    }
}
