//! The operator's and the user's verbs on running processes, in a 3-node lab with balancing
//! off (the daemons decide only when asked): `mosps` lists each job where it runs, with its
//! lock, its moves, why its last move failed, and CPU time and memory read where it runs, for
//! its owner or everyone; `migrate PID lock|unlock` for whoever could kill it;
//! `migrate PID balance` sends a job to an idle node when its own is busy and leaves it when
//! no node is better; `mosrun -b` starts a job on an idle node, or at home when home is best.
//!
//! The job (`spin.c`, shared with tests/balance.rs) says "ready" and stirs 1 MiB until
//! NAME.stop exists.

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod spin;

use rmosix_lab::{Job, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, require_root};

/// Deadline of one step: a tool run, a job's start or end.
const STEP: Duration = Duration::from_secs(60);
/// How long a test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(100);
/// An ordinary user.
const NOBODY: u32 = 65534;

fn lab() -> Lab {
    let mut cfg = LabConfig::new(3, bin_dir_of_current_test());
    cfg.cpu_quota = Some(1.0);
    Lab::start(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Stops the job `name`, which must end well with what a never-moved run computes.
fn stop(lab: &Lab, program: &str, job: Job, name: &str) {
    fs::write(lab.work_dir().join(format!("{name}.stop")), b"").expect("write a stop file");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    let stdout = String::from_utf8_lossy(&done.stdout);
    let line = spin::result_line(&stdout).unwrap_or_else(|| panic!("no result: {done:?}"));
    spin::assert_as_never_moved(program, &[line], &String::from_utf8_lossy(&done.stderr));
}

fn run(node: &Node, tool: &str, args: &[&str]) -> ToolRun {
    node.run(tool, args, STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

fn run_as(node: &Node, uid: u32, tool: &str, args: &[&str]) -> ToolRun {
    node.run_as(uid, tool, args, STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `tool ARGS` as root, which must succeed.
fn ok(node: &Node, tool: &str, args: &[&str]) -> String {
    let done = run(node, tool, args);
    assert!(
        done.status.success(),
        "node {}: {tool} {}: {done:?}\n{}",
        node.id(),
        args.join(" "),
        node.log()
    );
    done.stdout
}

/// mosps's line for `pid`, split into its columns (the command last, whole).
fn mosps_row(text: &str, pid: u32) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&pid.to_string()))
        .unwrap_or_else(|| panic!("no line for {pid}:\n{text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    // PID USER NODE LOCK NMIGS TIME RSS CANTMOVE COMMAND...; CANTMOVE is "-" here or words.
    let mut row: Vec<String> = fields[..7].iter().map(|f| f.to_string()).collect();
    row.push(fields[7..].join(" "));
    row
}

/// The load one CPU-bound process adds to node `n` (one CPU) as node 1 sees it: 100 on a
/// standard CPU, less on a faster one (the load is divided by the node's speed).
fn one_process(lab: &Lab, n: u16) -> f64 {
    let out = ok(lab.node(1), "mosctl", &["getspeed", &n.to_string()]);
    let speed: f64 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("speed {out:?}"));
    100.0 * 10_000.0 / speed
}

/// Waits until node 1 sees node `n`'s load at least (`above`) or below `processes` times
/// what one CPU-bound process adds there.
fn wait_load(lab: &Lab, n: u16, above: bool, processes: f64) {
    let load = processes * one_process(lab, n);
    let deadline = Instant::now() + STEP;
    loop {
        let out = run(lab.node(1), "mosctl", &["getload", &n.to_string()]);
        let now: Option<f64> = out.stdout.trim().parse().ok();
        if now.is_some_and(|l| (l >= load) == above) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {n}'s load stays at {now:?}, not {} {load}",
            if above { "at least" } else { "below" }
        );
        std::thread::sleep(POLL);
    }
}

#[test]
fn mosps_shows_where_jobs_run_their_moves_locks_and_failures() {
    if !require_root() {
        return;
    }
    let program = spin::program("operate");
    let lab = lab();
    let (home, two) = (lab.node(1), lab.node(2));
    let a = spin::start(&lab, &[], &program, "ps-a");
    let b = spin::start(&lab, &["-L"], &program, "ps-b");
    let (pa, pb) = (a.pid(), b.pid());
    a.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    a.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    // A failed move is shown until one succeeds.
    ok(two, "mosctl", &["block"]);
    let refused = run(home, "migrate", &[&pb.to_string(), "2"]);
    assert!(!refused.status.success(), "{refused:?}");

    let all = ok(home, "mosps", &["-a"]);
    let row_a = mosps_row(&all, pa);
    assert_eq!(row_a[1..5], ["root", "3", "no", "2"], "{all}");
    // Its CPU time and memory come from node 3, where it runs.
    assert_ne!(row_a[5], "-", "{all}");
    assert!(row_a[6].parse::<u64>().unwrap_or(0) > 0, "{all}");
    assert!(row_a[7].starts_with("- "), "{all}");
    let row_b = mosps_row(&all, pb);
    assert_eq!(row_b[1..5], ["root", "1", "yes", "0"], "{all}");
    assert!(
        row_b[7].contains("block"),
        "no reason for the refused move: {all}"
    );
    let reason = refused
        .stderr
        .trim()
        .split_once("to node 2: ")
        .map(|(_, why)| why.to_owned())
        .unwrap_or_else(|| panic!("{refused:?}"));
    let wide = ok(home, "mosps", &["-w"]);
    assert!(
        wide.contains(&reason),
        "mosps -w shows the whole reason {reason:?}\n{wide}"
    );

    ok(two, "mosctl", &["noblock"]);
    ok(home, "migrate", &[&pb.to_string(), "2"]);
    let row_b = mosps_row(&ok(home, "mosps", &[]), pb);
    assert_eq!(row_b[2..5], ["2", "yes", "1"]);
    assert!(row_b[7].starts_with("- "), "the reason stays: {row_b:?}");

    // migrate lock|unlock, for whoever could kill it.
    ok(home, "migrate", &[&pa.to_string(), "lock"]);
    assert_eq!(mosps_row(&ok(home, "mosps", &[]), pa)[3], "yes");
    ok(home, "migrate", &[&pb.to_string(), "unlock"]);
    assert_eq!(mosps_row(&ok(home, "mosps", &[]), pb)[3], "no");
    let denied = run_as(home, NOBODY, "migrate", &[&pa.to_string(), "unlock"]);
    assert_eq!(denied.status.code(), Some(1), "{denied:?}");
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    assert_eq!(mosps_row(&ok(home, "mosps", &[]), pa)[3], "yes");

    // Everyone's, or one user's: nobody has none here, and sees only the header.
    let theirs = run_as(home, NOBODY, "mosps", &[]);
    assert!(theirs.status.success(), "{theirs:?}");
    assert_eq!(theirs.stdout.lines().count(), 1, "{theirs:?}");
    assert_eq!(ok(home, "mosps", &["-u", "nobody"]).lines().count(), 1);
    assert_eq!(ok(home, "mosps", &["-u", "root"]).lines().count(), 3);
    stop(&lab, &program, a, "ps-a");
    stop(&lab, &program, b, "ps-b");
    // Ended jobs leave the list.
    assert_eq!(ok(home, "mosps", &["-a"]).lines().count(), 1);
}

#[test]
fn migrate_balance_moves_a_job_off_a_busy_node_and_leaves_one_that_is_best_where_it_is() {
    if !require_root() {
        return;
    }
    let program = spin::program("operate");
    let lab = lab();
    let home = lab.node(1);
    let a = spin::start(&lab, &[], &program, "bal-a");
    let b = spin::start(&lab, &[], &program, "bal-b");
    // Two CPU-bound jobs on one CPU: node 1's load reaches two processes' worth.
    wait_load(&lab, 1, true, 1.5);
    ok(home, "migrate", &[&a.pid().to_string(), "balance"]);
    let at = a.location().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        at == 2 || at == 3,
        "balance left it at {at}\n{}",
        home.log()
    );
    // Once node 1 shows one process's load, the other is best where it is.
    wait_load(&lab, 1, false, 1.5);
    ok(home, "migrate", &[&b.pid().to_string(), "balance"]);
    assert_eq!(b.location().unwrap_or_else(|e| panic!("{e}")), 1);
    stop(&lab, &program, a, "bal-a");
    stop(&lab, &program, b, "bal-b");
}

#[test]
fn mosrun_b_starts_at_home_when_it_is_best_and_elsewhere_when_it_is_busy() {
    if !require_root() {
        return;
    }
    let program = spin::program("operate");
    let lab = lab();
    let home = lab.node(1);
    // An idle cluster: home is as good as any, and the job starts there.
    let a = spin::start(&lab, &["-b"], &program, "b-a");
    home.wait_log("best node for a new job: this one", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.location().unwrap_or_else(|e| panic!("{e}")), 1);
    // Node 1 busy with two more, not under mosrun: the next goes elsewhere.
    let hogs: Vec<Child> = (0..2)
        .map(|k| {
            home.command(&program)
                .arg(lab.work_dir().join(format!("b-hog{k}")))
                .stdout(Stdio::null())
                .spawn()
                .expect("start a hog")
        })
        .collect();
    wait_load(&lab, 1, true, 2.5);
    let c = spin::start(&lab, &["-b"], &program, "b-c");
    // It moved as it started; its supervisor tells the daemon so just after.
    let deadline = Instant::now() + STEP;
    while ![2, 3].contains(&c.location().unwrap_or_else(|e| panic!("{e}"))) {
        assert!(
            Instant::now() < deadline,
            "-b left it at home\n{}",
            home.log()
        );
        std::thread::sleep(POLL);
    }
    for k in 0..2 {
        fs::write(lab.work_dir().join(format!("b-hog{k}.stop")), b"").expect("stop a hog");
    }
    for mut hog in hogs {
        hog.wait().expect("a hog ends");
    }
    stop(&lab, &program, a, "b-a");
    stop(&lab, &program, c, "b-c");
}

/// `mosrun -L` locks the job, and the lock is inherited: the two children its shell forks
/// are locked too (mosps shows LOCK yes for the shell and each child).
#[test]
fn the_children_a_locked_job_forks_are_locked_too() {
    if !require_root() {
        return;
    }
    let program = spin::program("operate");
    let lab = lab();
    let names = ["locked-a", "locked-b"];
    let script = names
        .iter()
        .map(|n| format!("{program} {} & ", lab.work_dir().join(n).display()))
        .chain(["wait".to_owned()])
        .collect::<String>();
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args(["-L", "sh", "-c", &script])
        .current_dir(lab.work_dir())
        .stdin(Stdio::null());
    let job = Job::spawn(lab.node(1), cmd).unwrap_or_else(|e| panic!("{e}"));
    job.wait_stdout("two children ready", STEP, |out| {
        String::from_utf8_lossy(out).matches("ready").count() == 2
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let all = ok(lab.node(1), "mosps", &["-a"]);
    let rows: Vec<Vec<String>> = all
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .map(|pid| mosps_row(&all, pid))
        .collect();
    // The last column is CANTMOVE ("-") and the command.
    let children = rows
        .iter()
        .filter(|r| r[7].starts_with(&format!("- {program} ")))
        .count();
    assert_eq!(children, 2, "the shell's two children in mosps:\n{all}");
    assert_eq!(
        mosps_row(&all, job.pid())[3],
        "yes",
        "the shell is locked:\n{all}"
    );
    assert!(
        rows.iter().all(|r| r[3] == "yes"),
        "every process of the job is locked:\n{all}"
    );
    for name in names {
        fs::write(lab.work_dir().join(format!("{name}.stop")), b"").expect("write a stop file");
    }
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
}
