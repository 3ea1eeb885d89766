//! What the `rmosix-lab` binary does: `demo` (CPU-bound jobs started on one node of a lab
//! spreading over it by themselves) and `shell` (a lab to explore by hand).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::batch::{self, Batch, Event, Supervision};
use crate::cmd::{describe, run};
use crate::{Lab, LabConfig, LabError, Node};

/// CPUs each node of the demo's lab may use: with 4 nodes, the 2 vCPUs we build on.
const CPU_QUOTA: f64 = 0.5;
/// Jobs per node of the lab, all started on node 1, and the CPU time of one.
const JOBS_PER_NODE: usize = 2;
const JOB_CPU_S: f64 = 4.0;
/// How often the demo shows the loads and where the jobs run.
const SHOW_EVERY: Duration = Duration::from_secs(2);
/// When the demo shows `mosps` whole, once: the jobs have spread by then.
const MOSPS_AT: Duration = Duration::from_secs(4);
/// How long node 1 may take to see the whole lab, and the jobs to end.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the demo sleeps between two looks at its jobs.
const TICK: Duration = Duration::from_millis(50);

/// `rmosix-lab demo`: starts a lab of `nodes` nodes (4 by default) with half a CPU each and
/// the daemons balancing, starts two CPU-bound jobs per node (`crunch`, about 4 CPU-seconds
/// each) on node 1 under `mosrun`, and shows them spread by themselves: each move as mosrun
/// logs it, and every two seconds each node's load as node 1 sees it (`mosctl status`) and
/// where each job runs (`mosps`, shown whole once). Then it runs the same jobs on node 1 alone,
/// bare, and ends with the speed-up measured; runs one job that moved again at the host,
/// never moved, to show that it prints the same; and tears the lab down. `stop` (set by
/// Ctrl-C) ends it early with [`LabError::Interrupted`].
pub fn demo(nodes: usize, bin_dir: &Path, stop: &AtomicBool) -> Result<(), LabError> {
    for tool in ["mosrun", "mosctl", "mosps", "mosmon"] {
        let path = bin_dir.join(tool);
        if !path.is_file() {
            return Err(LabError::MissingBinary { path });
        }
    }
    say(&format!(
        "starting a {nodes}-node lab, {CPU_QUOTA} CPU per node, each daemon balancing"
    ));
    let mut cfg = LabConfig::new(nodes, bin_dir);
    cfg.cpu_quota = Some(CPU_QUOTA);
    cfg.balance = true;
    let lab = Lab::start(cfg)?;
    say(&format!("lab ready in {}", lab.dir().display()));
    say(&format!(
        "to watch it live with mosmon, in another terminal: {}",
        enter_line(lab.node(1), &bin_dir.join("mosmon").display().to_string())
    ));
    let program = batch::compile(&lab.work_dir())?;
    let calibration = batch::calibrate(&program, JOB_CPU_S)?;
    batch::wait_idle(&lab, IDLE_TIMEOUT, stop)?;
    let jobs = JOBS_PER_NODE * nodes;
    let rounds = calibration.rounds;
    say(&format!(
        "node 1: mosrun crunch {rounds} K &, for K = 1 to {jobs} ({jobs} CPU-bound jobs of about \
         {JOB_CPU_S} CPU-seconds each on this machine)"
    ));
    say(
        "every 2 s: each node's load as node 1 sees it (mosctl status: 100 is one busy process \
         on a standard CPU) and the jobs on each node (mosps at node 1)",
    );
    let mut batch = Batch::start(&lab, &program, rounds, &vec![1; jobs])?;
    watch(&lab, &mut batch, stop)?;
    let makespan = batch.elapsed().as_secs_f64();
    let done = batch.finish()?;
    let moves: usize = done.iter().map(|j| j.moves.len()).sum();
    say(&format!(
        "all {jobs} jobs done in {makespan:.1} s, after {moves} moves. Now the same {jobs} jobs \
         on node 1 alone, bare (about {:.0} s)",
        jobs as f64 * JOB_CPU_S / CPU_QUOTA
    ));
    let mut alone = Batch::start_as(Supervision::Bare, &lab, &program, rounds, &vec![1; jobs])?;
    alone.wait(RUN_TIMEOUT, stop, |_, _| {})?;
    let alone_s = alone.elapsed().as_secs_f64();
    let cpu_s: f64 = done.iter().map(|j| j.cpu_s).sum();
    let ideal_s = cpu_s / (nodes as f64 * CPU_QUOTA);
    say(&format!(
        "node 1 alone took {alone_s:.1} s: spread over {nodes} nodes, the jobs ran {:.2}x faster \
         (ideal {nodes} nodes busy throughout: {ideal_s:.1} s for their {cpu_s:.1} CPU-seconds; \
         `./dev bench spread` repeats both runs and gives their spread)",
        alone_s / makespan,
    ));
    if let Some(moved) = done.iter().find(|j| !j.moves.is_empty()) {
        let path: Vec<String> = std::iter::once(moved.home)
            .chain(moved.moves.iter().map(|&(_, to)| to))
            .map(|n| format!("node {n}"))
            .collect();
        say(&format!(
            "job {} ran on {} and printed: {}",
            moved.seed,
            path.join(", then "),
            moved.output.trim()
        ));
        let mut still = Command::new(&program);
        still.args([rounds.to_string(), moved.seed.to_string()]);
        say(&format!(
            "the same job never moved (crunch {rounds} {}, at the host):",
            moved.seed
        ));
        let output = output_of(&mut still, stop)?;
        if output != moved.output {
            return Err(LabError::Diverged {
                command: format!("crunch {rounds} {}", moved.seed),
                moved: moved.output.clone(),
                still: output,
            });
        }
        say(&format!("{} (the same)", output.trim()));
    }
    lab.stop()
}

/// Shows each move as it comes and, every [`SHOW_EVERY`], the loads and where the jobs run,
/// until every job has ended. Lines come in the order of their times: a look at the lab takes
/// a while (a `mosctl where` per job), and moves logged meanwhile are shown before it if they
/// came first.
fn watch(lab: &Lab, batch: &mut Batch, stop: &AtomicBool) -> Result<(), LabError> {
    let mut next_show = Instant::now();
    let mut mosps_shown = false;
    loop {
        let look = if Instant::now() >= next_show {
            next_show += SHOW_EVERY;
            let whole = !mosps_shown && batch.elapsed() >= MOSPS_AT;
            mosps_shown |= whole;
            Some(look(lab, batch, whole)?)
        } else {
            None
        };
        let mut lines: Vec<(Duration, String)> = batch
            .poll()?
            .into_iter()
            .map(|event| match event {
                Event::Moved { job, to, at } => (
                    at,
                    format!(
                        "[{:5.1}s] job {} (PID {} of node 1) moved to node {to}",
                        at.as_secs_f64(),
                        job + 1,
                        batch.pid(job).0
                    ),
                ),
                Event::Ended { job, at } => (
                    at,
                    format!("[{:5.1}s] job {} ended", at.as_secs_f64(), job + 1),
                ),
            })
            .collect();
        lines.extend(look.into_iter().flatten());
        // Stable: a look's two lines stay in their order.
        lines.sort_by_key(|(at, _)| *at);
        for (_, line) in lines {
            say(&line);
        }
        if batch.is_done() {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        if batch.elapsed() >= RUN_TIMEOUT {
            return Err(LabError::BatchTimeout {
                running: batch.running().len(),
                jobs: batch.len(),
                timeout: RUN_TIMEOUT,
            });
        }
        std::thread::sleep(TICK);
    }
}

/// One look at the lab, as of when it began: each node's load as node 1's `mosctl status`
/// shows it, and the jobs on each node as node 1's `mosps -a` shows them: two lines, each with
/// that time, and mosps's own table after them if `whole`.
fn look(lab: &Lab, batch: &Batch, whole: bool) -> Result<Vec<(Duration, String)>, LabError> {
    let at = batch.elapsed();
    let status = run(lab.node(1).command("mosctl").arg("status"))?;
    let mosps = run(lab.node(1).command("mosps").arg("-a"))?;
    let loads: Vec<String> = batch::loads(&status)
        .into_iter()
        .map(|(node, load)| {
            let load = load.map_or_else(|| "-".to_owned(), |l| l.to_string());
            format!("node{node} {load:>4}")
        })
        .collect();
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); lab.nodes().len()];
    for (pid, node) in mosps_nodes(&mosps) {
        let job = (0..batch.len()).find(|&job| batch.pid(job).0 == pid);
        if let (Some(job), Some(jobs)) = (job, on.get_mut(usize::from(node).wrapping_sub(1))) {
            jobs.push(job + 1);
        }
    }
    let places: Vec<String> = on
        .iter()
        .enumerate()
        .map(|(i, jobs)| {
            let jobs: Vec<String> = jobs.iter().map(usize::to_string).collect();
            format!("node{} [{}]", i + 1, jobs.join(" "))
        })
        .collect();
    let mut lines = vec![
        format!("[{:5.1}s] load  {}", at.as_secs_f64(), loads.join("  ")),
        format!("         jobs  {}", places.join("  ")),
    ];
    if whole {
        lines.push("         node 1's mosps -a:".to_owned());
        lines.extend(mosps.lines().map(|line| format!("           {line}")));
    }
    Ok(lines.into_iter().map(|line| (at, line)).collect())
}

/// Each process `mosps` lists, by PID, with its NODE column.
fn mosps_nodes(table: &str) -> Vec<(u32, u16)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            let pid = columns.next()?.parse().ok()?;
            let node = columns.nth(1)?.parse().ok()?;
            Some((pid, node))
        })
        .collect()
}

/// A shell command line that runs `program` (a path) in `node`'s namespaces and cgroup.
fn enter_line(node: &Node, program: &str) -> String {
    let join: String = node
        .cgroup_procs_files()
        .iter()
        .map(|procs| format!("echo $$ > {}; ", procs.display()))
        .collect();
    format!(
        "sh -c '{join}exec nsenter --target {} --net --uts --mount --pid -- {program}'",
        node.init_pid()
    )
}

/// Runs `cmd` at the host and returns its stdout; Ctrl-C (`stop`) kills it.
fn output_of(cmd: &mut Command, stop: &AtomicBool) -> Result<String, LabError> {
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if stop.load(Ordering::Relaxed) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LabError::Interrupted);
            }
            Ok(None) => std::thread::sleep(TICK),
            Err(source) => return Err(LabError::Spawn { command, source }),
        }
    }
    let output = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command,
            status: output.status,
            stderr: String::new(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `rmosix-lab shell`: starts a lab, prints how to enter each node, and keeps it until
/// `stop` is set (Ctrl-C).
pub fn shell(cfg: LabConfig, stop: &AtomicBool) -> Result<(), LabError> {
    let bin_dir = cfg.bin_dir.clone();
    let lab = Lab::start(cfg)?;
    println!("lab {} is up: {}", lab.name(), lab.dir().display());
    println!(
        "map {}, key {}",
        lab.map_path().display(),
        lab.key_path().display()
    );
    for node in lab.nodes() {
        println!(
            "node {} ({}, log {}):\n  {}",
            node.id(),
            node.addr(),
            node.log_path().display(),
            enter_line(node, "bash"),
        );
    }
    println!(
        "(mosrun, migrate, mosctl are in {}; Ctrl-C tears the lab down)",
        bin_dir.display()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("tearing down lab {}", lab.name());
    lab.stop()
}

fn say(what: &str) {
    eprintln!("demo: {what}");
}

#[cfg(test)]
mod tests {
    use super::mosps_nodes;

    #[test]
    fn mosps_lines_give_each_process_and_its_node() {
        let table = "\
    PID USER NODE LOCK NMIGS     TIME  RSS CANTMOVE COMMAND
   4711 root    3 no       1 00:00:02  812 -        crunch 90 1
   4712 ana     1 yes      0 00:00:01  640 node 2 is blocked crunch 90 2
";
        assert_eq!(mosps_nodes(table), [(4711, 3), (4712, 1)]);
        assert!(mosps_nodes("mosps: cannot reach the daemon\n").is_empty());
    }
}
