//! The node modes and map questions of `mosctl` in 3-node labs, as an operator uses them: a
//! blocked node refuses new guests with the reason (a `migrate`, a move on from another node,
//! `mosrun -N`) and keeps the ones it has, `noblock` lets
//! them in again, `expel` sends every guest home (none lost) and leaves the node blocked,
//! `bring` brings a node's processes home, only root may do any of this, and anyone may ask
//! `whois` and `isup`, whose "no" for a stopped daemon comes within a bound.
//!
//! The job is the failures suite's `ticks.py`: it says "ready", prints "tick I" after each
//! 0.1 s of computing until its go file exists, then "done". Its output proves it ran on,
//! without a tick lost or repeated, wherever it was sent. Each wait has a deadline.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmosix_lab::{
    Job, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, require_root, wait_until,
};

/// The jobs.
const JOBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/failures");
/// The system's python: readable by every user.
const PYTHON: &str = "/usr/bin/python3";
/// Deadline of one step: a tool run, a migration, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// Deadline of `mosctl isup` for a node whose daemon is gone: the daemon gives up after 3 s.
const ISUP_BOUND: Duration = Duration::from_secs(10);
/// An ordinary user.
const NOBODY: u32 = 65534;

fn start_lab(nodes: usize) -> Lab {
    match Lab::start(LabConfig::new(nodes, bin_dir_of_current_test())) {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start a {nodes}-node lab: {e}"),
    }
}

/// `tool ARGS` inside `node` as root, to its end.
fn run(node: &Node, tool: &str, args: &[&str]) -> ToolRun {
    node.run(tool, args, STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `tool ARGS` inside `node` as user and group `uid` (no supplementary groups), to its end.
fn run_as(node: &Node, uid: u32, tool: &str, args: &[&str]) -> ToolRun {
    node.run_as(uid, tool, args, STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `mosctl ARGS` as root at `node`, which must succeed.
fn mosctl(node: &Node, args: &[&str]) -> ToolRun {
    let done = run(node, "mosctl", args);
    assert!(
        done.status.success(),
        "node {}: mosctl {}: {done:?}\n{}",
        node.id(),
        args.join(" "),
        node.log()
    );
    done
}

/// `migrate PID TARGET` at `home`, which must succeed.
fn move_to(home: &Node, pid: u32, target: &str) {
    let done = run(home, "migrate", &[&pid.to_string(), target]);
    assert!(done.status.success(), "migrate {pid} {target}: {done:?}");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A `ticks.py` job at `home` as root, with its go file, once it is ready.
fn ticks_job<'a>(lab: &Lab, home: &'a Node, name: &str) -> (Job<'a>, PathBuf) {
    let go = lab.work_dir().join(format!("go-{name}"));
    let ticks = format!("{JOBS}/ticks.py");
    let mut cmd = home.command("mosrun");
    cmd.args([PYTHON, &ticks, path_str(&go)])
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(home, cmd).unwrap_or_else(|e| panic!("node {}: mosrun: {e}", home.id()));
    if let Err(e) = job.wait_output("ready\n", STEP) {
        panic!("{e}");
    }
    (job, go)
}

/// Ends a ticks job through its go file and checks it ran as an unmoved one would: "ready",
/// then ticks 0, 1, 2, ... with none missing or repeated, then "done", and status 0.
fn finish_ticks(job: Job<'_>, go: &Path) {
    fs::write(go, "").expect("write go file");
    let out = match job.finish(STEP) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"ready"), "{stdout}");
    assert_eq!(lines.last(), Some(&"done"), "{stdout}");
    for (i, line) in lines[1..lines.len() - 1].iter().enumerate() {
        assert_eq!(*line, format!("tick {i}"), "{stdout}");
    }
}

/// Where the job's program runs, by `mosctl where` at its home.
fn location(job: &Job<'_>) -> u16 {
    match job.location() {
        Ok(node) => node,
        Err(e) => panic!("{e}"),
    }
}

/// The processes `mosctl guests` lists at `node`, as (home node, home PID).
fn guests(node: &Node) -> Vec<(u16, u32)> {
    let done = mosctl(node, &["guests"]);
    done.stdout
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let node = fields.first().and_then(|f| f.parse::<u16>().ok());
            let pid = fields.get(1).and_then(|f| f.parse::<u32>().ok());
            match (node, pid) {
                (Some(node), Some(pid)) => (node, pid),
                _ => panic!("not a line of mosctl guests: {line:?}\n{}", done.stdout),
            }
        })
        .collect()
}

/// Waits until `mosctl guests` at `node` lists exactly `expected`, in any order. A guest
/// tells its daemon that its process runs there without waiting for it (its supervisor never
/// waits for the daemon), so `migrate` can answer a moment before the listing shows the move.
fn wait_for_guests(node: &Node, mut expected: Vec<(u16, u32)>) {
    expected.sort_unstable();
    wait_until(
        &format!("node {} lists the guests {expected:?}", node.id()),
        STEP,
        || {
            let mut hosted = guests(node);
            hosted.sort_unstable();
            hosted == expected
        },
        || format!("{}\n{}", mosctl(node, &["guests"]).stdout, node.log()),
    );
}

#[test]
fn a_blocked_node_refuses_new_guests_keeps_its_own_and_noblock_lets_them_in() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (home, two) = (lab.node(1), lab.node(2));
    let (job, go) = ticks_job(&lab, home, "block");
    let pid = job.pid().to_string();

    mosctl(two, &["block"]);
    let refused = run(home, "migrate", &[&pid, "2"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr,
        format!("migrate: cannot move {pid} to node 2: node 2 is blocked\n")
    );
    assert_eq!(location(&job), 1);
    // Blocking twice is no error; the other nodes take guests as before.
    mosctl(two, &["block"]);
    move_to(home, job.pid(), "3");
    assert_eq!(location(&job), 3);
    // A move on from node 3 to the blocked node is refused too, and the process runs on at 3.
    let refused = run(home, "migrate", &[&pid, "2"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("node 2 is blocked"),
        "{refused:?}\n{}",
        home.log()
    );
    assert_eq!(location(&job), 3);
    // A program started for node 2 is refused before it runs, or runs at home with -F.
    let said = "print('ran')";
    let refused = run(home, "mosrun", &["-2", PYTHON, "-c", said]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("cannot start it on node 2")
            && refused.stderr.contains("node 2 is blocked"),
        "{refused:?}"
    );
    assert_eq!(refused.stdout, "");
    let fallen = run(home, "mosrun", &["-2", "-F", PYTHON, "-c", said]);
    assert!(fallen.status.success(), "{fallen:?}");
    assert_eq!(fallen.stdout, "ran\n");

    mosctl(two, &["noblock"]);
    move_to(home, job.pid(), "2");
    assert_eq!(location(&job), 2);
    // Blocking keeps the guests a node has.
    mosctl(two, &["block"]);
    wait_for_guests(two, vec![(1, job.pid())]);
    assert_eq!(location(&job), 2);
    move_to(home, job.pid(), "home");
    assert_eq!(location(&job), 1);
    finish_ticks(job, &go);
}

#[test]
fn only_root_sets_modes_and_anyone_asks_whois() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (home, two) = (lab.node(1), lab.node(2));
    for verb in [
        "stay", "nostay", "lstay", "nolstay", "block", "noblock", "quiet", "noquiet", "expel",
        "bring",
    ] {
        let refused = run_as(two, NOBODY, "mosctl", &[verb]);
        assert_eq!(refused.status.code(), Some(1), "{verb}: {refused:?}");
        assert_eq!(
            refused.stderr,
            format!("mosctl: {verb}: permission denied (root only)\n"),
            "{verb}"
        );
    }
    // Nothing changed: node 2 shows no mode, and still takes guests.
    let status = mosctl(two, &["status"]).stdout;
    let own = status
        .lines()
        .find(|l| l.starts_with("node 2: up"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(own.ends_with('%'), "a mode was set: {own}");
    let (job, go) = ticks_job(&lab, home, "refused");
    move_to(home, job.pid(), "2");
    assert_eq!(location(&job), 2);

    let addr = |n: usize| lab.node(n).addr().to_string();
    let whois = |args: &[&str]| {
        let done = run_as(home, NOBODY, "mosctl", args);
        assert!(done.status.success(), "{args:?}: {done:?}");
        done.stdout
    };
    assert_eq!(whois(&["whois", "2"]), format!("{}\n", addr(2)));
    assert_eq!(whois(&["whois", &addr(3)]), "3\n");
    assert_eq!(whois(&["whois"]), format!("this is node 1 ({})\n", addr(1)));
    let unknown = run_as(home, NOBODY, "mosctl", &["whois", "9"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.starts_with("mosctl: whois: no node 9 in "),
        "{unknown:?}"
    );
    move_to(home, job.pid(), "home");
    finish_ticks(job, &go);
}

#[test]
fn isup_says_yes_for_a_live_daemon_and_no_within_a_bound_for_a_stopped_one() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (home, three) = (lab.node(1), lab.node(3));
    let isup = |node: &str| {
        home.run_as(NOBODY, "mosctl", &["isup", node], ISUP_BOUND)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    for node in ["1", "2", "3"] {
        let up = isup(node);
        assert!(up.status.success(), "{node}: {up:?}");
        assert_eq!(up.stdout, "yes\n", "{node}");
    }
    if let Err(e) = three.stop_daemon() {
        panic!("{e}");
    }
    let down = isup("3");
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    assert_eq!(down.stdout, "no\n");
    // A node whose machine is gone (nothing answers at its address) as well.
    three.kill();
    let gone = isup("3");
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    assert_eq!(gone.stdout, "no\n");
    let unknown = isup("9");
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.starts_with("mosctl: isup: no node 9 in "),
        "{unknown:?}"
    );
}

#[test]
fn expel_sends_every_guest_home_and_leaves_the_node_blocked() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (one, two, three) = (lab.node(1), lab.node(2), lab.node(3));
    // Three guests from node 1 and two from node 3.
    let homes = [one, one, one, three, three];
    let jobs: Vec<_> = homes
        .iter()
        .enumerate()
        .map(|(i, home)| ticks_job(&lab, home, &format!("expel-{i}")))
        .collect();
    for (job, _) in &jobs {
        move_to(job.home(), job.pid(), "2");
    }
    let expected = jobs
        .iter()
        .map(|(job, _)| (job.home().id(), job.pid()))
        .collect();
    wait_for_guests(two, expected);

    mosctl(two, &["expel"]);
    for (job, _) in &jobs {
        assert_eq!(location(job), job.home().id());
    }
    wait_until(
        "node 2 hosts nothing",
        STEP,
        || guests(two).is_empty(),
        || two.log(),
    );
    // The node is blocked now.
    let first = &jobs[0].0;
    let refused = run(one, "migrate", &[&first.pid().to_string(), "2"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.ends_with(": node 2 is blocked\n"),
        "{refused:?}"
    );
    // Expelling an empty node is no error.
    mosctl(two, &["expel"]);
    mosctl(two, &["noblock"]);
    move_to(one, first.pid(), "2");
    assert_eq!(location(first), 2);
    move_to(one, first.pid(), "home");
    // None was lost: each ran on and ends as an unmoved one would.
    for (job, go) in jobs {
        finish_ticks(job, &go);
    }
}

#[test]
fn bring_brings_home_the_processes_that_run_elsewhere() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let one = lab.node(1);
    let (far, far_go) = ticks_job(&lab, one, "bring-far");
    let (near, near_go) = ticks_job(&lab, one, "bring-near");
    let (stays, stays_go) = ticks_job(&lab, one, "bring-home");
    move_to(one, far.pid(), "3");
    move_to(one, near.pid(), "2");
    assert_eq!(location(&far), 3);

    mosctl(one, &["bring"]);
    for job in [&far, &near, &stays] {
        assert_eq!(location(job), 1);
    }
    wait_until(
        "nodes 2 and 3 host nothing",
        STEP,
        || guests(lab.node(2)).is_empty() && guests(lab.node(3)).is_empty(),
        || format!("{}\n{}", lab.node(2).log(), lab.node(3).log()),
    );
    // Nothing away: nothing to do.
    mosctl(one, &["bring"]);
    finish_ticks(far, &far_go);
    finish_ticks(near, &near_go);
    finish_ticks(stays, &stays_go);
}

#[test]
fn a_guest_whose_home_does_not_answer_stays_through_expel_and_goes_once_it_does() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (one, two, three) = (lab.node(1), lab.node(2), lab.node(3));
    let (near, near_go) = ticks_job(&lab, one, "stay-1");
    let (far, far_go) = ticks_job(&lab, three, "stay-3");
    move_to(one, near.pid(), "2");
    move_to(three, far.pid(), "2");
    if let Err(e) = three.stop_daemon() {
        panic!("{e}");
    }

    // Node 1's guest goes; node 3's stays, named with the reason, and runs on.
    let partly = run(two, "mosctl", &["expel"]);
    assert_eq!(partly.status.code(), Some(1), "{partly:?}");
    let prefix = format!("mosctl: expel: process {} (home node 3): ", far.pid());
    assert!(
        partly.stderr.starts_with(&prefix) && partly.stderr.lines().count() == 1,
        "{partly:?}"
    );
    assert_eq!(location(&near), 1);
    assert_eq!(guests(two), vec![(3, far.pid())]);

    // Once node 3's daemon is back and its supervisor registered again, expel sends it home.
    if let Err(e) = three.start_daemon() {
        panic!("{e}");
    }
    wait_until(
        "node 3's supervisor registers again",
        STEP,
        || far.location().is_ok(),
        || three.log(),
    );
    assert_eq!(location(&far), 2);
    mosctl(two, &["expel"]);
    assert_eq!(location(&far), 3);
    wait_until(
        "node 2 hosts nothing",
        STEP,
        || guests(two).is_empty(),
        || two.log(),
    );
    finish_ticks(near, &near_go);
    finish_ticks(far, &far_go);
}
