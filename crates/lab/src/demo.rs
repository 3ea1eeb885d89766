//! What the `rmosix-lab` binary does: `demo` (a program moving through a 3-node lab while it
//! prints) and `shell` (a lab to explore by hand).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cmd::describe;
use crate::{Lab, LabConfig, LabError, Node, pid_in_node, wait_child_of};

/// The demo's CPU-bound program: counts primes by trial division and prints its progress
/// every second, until its stdin ends (the demo closes it once the tour is over), so it runs
/// as long as the tour takes on any machine. Watching stdin is a poll(2) that, while the
/// program is away, is forwarded home. It prints no host name: under migration its system
/// calls run at home, so `gethostname` would always say node1.
const PROGRAM: &str = r#"import select, sys, time
start = last = time.monotonic()
count, n = 0, 2
while True:
    if all(n % d for d in range(2, int(n ** 0.5) + 1)):
        count += 1
    n += 1
    if n % 2000 == 0:
        now = time.monotonic()
        if now - last >= 1:
            print(f"[{now - start:5.1f}s] {count} primes below {n}", flush=True)
            last = now
        if select.select([sys.stdin], [], [], 0)[0] and sys.stdin.readline() == "":
            break
print(f"done: {count} primes below {n} in {time.monotonic() - start:.1f}s", flush=True)
"#;
/// Time between two demo steps, so the output shows the program running on each node.
const STEP_PAUSE: Duration = Duration::from_secs(4);
/// How long the program's processes may take to appear.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `rmosix-lab demo`: starts a lab of `nodes` nodes (3 by default), runs a CPU-bound Python
/// program on node 1 under `mosrun`, moves it to node 2, asks `mosctl where`, moves it to
/// node 3, then home, waits for it to finish and tears the lab down. `stop` (set by Ctrl-C)
/// ends the demo early with [`LabError::Interrupted`].
pub fn demo(nodes: usize, bin_dir: &Path, stop: &AtomicBool) -> Result<(), LabError> {
    for tool in ["mosrun", "migrate", "mosctl"] {
        let path = bin_dir.join(tool);
        if !path.is_file() {
            return Err(LabError::MissingBinary { path });
        }
    }
    let lab = Lab::start(LabConfig::new(nodes, bin_dir))?;
    let home = lab.node(1);
    let program = lab.work_dir().join("primes.py");
    fs::write(&program, PROGRAM).map_err(|source| LabError::Io {
        action: "write",
        path: program.clone(),
        source,
    })?;
    say(&format!("lab ready in {}", lab.dir().display()));
    say("node 1: mosrun python3 primes.py");
    let mut cmd = home.command("mosrun");
    cmd.arg("python3")
        .arg(&program)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped());
    let mut job = cmd.spawn().map_err(|source| LabError::Spawn {
        command: describe(&cmd),
        source,
    })?;
    let result = drive(&lab, &mut job, stop);
    if result.is_err() {
        let _ = job.kill();
        let _ = job.wait();
    }
    result?;
    lab.stop()
}

/// Moves the running job through the nodes, then waits for it.
fn drive(lab: &Lab, job: &mut Child, stop: &AtomicBool) -> Result<(), LabError> {
    let home = lab.node(1);
    // nsenter (job) -> mosrun -> python3
    let mosrun = wait_child_of(job.id(), SPAWN_TIMEOUT)?;
    let python = wait_child_of(mosrun, SPAWN_TIMEOUT)?;
    let pid = pid_in_node(python)
        .ok_or(LabError::NotInNode { pid: python })?
        .to_string();
    say(&format!("the program is PID {pid} on node 1"));
    let mut targets: Vec<String> = (2..=lab.nodes().len().min(3))
        .map(|n| n.to_string())
        .collect();
    targets.push("home".to_owned());
    for target in targets {
        if pause(job, stop, STEP_PAUSE)? {
            break;
        }
        say(&format!("migrate {pid} {target}"));
        run_in(home, "migrate", &[&pid, &target], stop)?;
        let place = capture_in(home, "mosctl", &["where", &pid])?;
        let now = if target == "home" {
            "1".to_owned()
        } else {
            target
        };
        say(&format!(
            "now on node {now} (mosctl where {pid}: {})",
            place.trim()
        ));
    }
    if !pause(job, stop, STEP_PAUSE)? {
        say("closing the program's input: it finishes at home");
        drop(job.stdin.take());
    }
    while !pause(job, stop, Duration::from_secs(3600))? {}
    let status = job.wait().map_err(|source| LabError::Spawn {
        command: "mosrun".to_owned(),
        source,
    })?;
    say(&format!("mosrun ended: {status}"));
    if !status.success() {
        return Err(LabError::DemoStep {
            command: "mosrun python3 primes.py".to_owned(),
            status,
        });
    }
    Ok(())
}

/// Waits `time`, or less if the job ends (returns true) or Ctrl-C is pressed (error).
fn pause(job: &mut Child, stop: &AtomicBool, time: Duration) -> Result<bool, LabError> {
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted);
        }
        if job.try_wait().ok().flatten().is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(false)
}

/// Runs a tool inside `node`, its output going to ours.
fn run_in(node: &Node, tool: &str, args: &[&str], stop: &AtomicBool) -> Result<(), LabError> {
    let mut cmd = node.command(tool);
    cmd.args(args).stdin(Stdio::null());
    let status = cmd.status().map_err(|source| LabError::Spawn {
        command: describe(&cmd),
        source,
    })?;
    if stop.load(Ordering::Relaxed) {
        return Err(LabError::Interrupted);
    }
    if !status.success() {
        return Err(LabError::DemoStep {
            command: format!("{tool} {}", args.join(" ")),
            status,
        });
    }
    Ok(())
}

/// Runs a tool inside `node` and returns what it printed.
fn capture_in(node: &Node, tool: &str, args: &[&str]) -> Result<String, LabError> {
    let mut cmd: Command = node.command(tool);
    cmd.args(args).stderr(Stdio::inherit());
    crate::cmd::run(&mut cmd)
}

/// `rmosix-lab shell`: starts a lab, prints how to enter each node, and keeps it until
/// `stop` is set (Ctrl-C).
pub fn shell(nodes: usize, bin_dir: &Path, stop: &AtomicBool) -> Result<(), LabError> {
    let lab = Lab::start(LabConfig::new(nodes, bin_dir))?;
    println!("lab {} is up: {}", lab.name(), lab.dir().display());
    println!(
        "map {}, key {}",
        lab.map_path().display(),
        lab.key_path().display()
    );
    for node in lab.nodes() {
        let join = node
            .cgroup_path()
            .map(|cg| format!("echo $$ > {}/cgroup.procs; ", cg.display()))
            .unwrap_or_default();
        println!(
            "node {} ({}, log {}):\n  sh -c '{join}exec nsenter --target {} --net --uts --mount --pid -- bash'",
            node.id(),
            node.addr(),
            node.log_path().display(),
            node.init_pid(),
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
