//! Pre-copy's running rounds with processes that never stop writing: one that rewrites all of
//! its memory all the time (the rounds cannot catch up unless it is slowed down) and one that
//! rewrites a part of it (they shrink to that part). Each is moved out, home, out to another
//! node, on to a third and home again, and after each move checks every word of its memory
//! against what it last wrote (`bench/rewrite.c`, also the bench's program). A page a round
//! left out, or placed out of order, shows as `FAIL`. And while such a process leaves home
//! slowed down, the home supervisor serves the rest of its job and the signals sent to it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmosix_lab::{Job, Lab, LabConfig, Node, bin_dir_of_current_test, processes_in, require_root};

/// Deadline of one step: a migration, a check, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// How long the test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(10);

/// `src` (relative to the crate), compiled into the target's tmp dir as `name`.
fn c_program(src: &str, name: &str) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("rounds")
        .join(name);
    rmosix_lab::compiled(src, out, &[])
}

/// Starts `rewrite MIB WRITE_MIB` under mosrun at node 1, moves it around and has it check
/// its memory after each move.
fn moves_and_checks(lab: &Lab, program: &str, mib: &str, write_mib: &str) {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args([program, mib, write_mib])
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    for (moves, target) in ["2", "home", "3", "4", "home"].into_iter().enumerate() {
        job.migrate(target)
            .unwrap_or_else(|e| panic!("migrate {target}: {e}\n{}", job.outputs()));
        job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + STEP;
        loop {
            let out = String::from_utf8_lossy(&job.stdout()).into_owned();
            assert!(
                !out.contains("FAIL"),
                "after the move to {target}:\n{}",
                job.outputs()
            );
            if out.matches("checked ").count() > moves {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no check after the move to {target} within {STEP:?}\n{}",
                job.outputs()
            );
            std::thread::sleep(POLL);
        }
    }
    // It went on rewriting between the checks: the last one saw later passes than the first.
    let out = String::from_utf8_lossy(&job.stdout()).into_owned();
    let passes: Vec<u64> = out
        .lines()
        .flat_map(str::split_whitespace)
        .filter_map(|w| w.strip_prefix("passes=")?.parse().ok())
        .collect();
    assert!(
        passes.first() < passes.last(),
        "passes {passes:?}\n{}",
        job.outputs()
    );
    job.signal("KILL").unwrap_or_else(|e| panic!("{e}"));
    let _ = job.finish(STEP);
}

#[test]
fn processes_that_keep_rewriting_their_memory_arrive_whole_after_each_move() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(4, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 4-node lab: {e}"));
    let program = c_program("bench/rewrite.c", "rewrite");
    moves_and_checks(&lab, &program, "256", "256");
    moves_and_checks(&lab, &program, "256", "32");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A process that rewrites all of its memory moves out: the rounds cannot catch up with it
/// unless home slows it down, which its supervisor's loop does (a duty cycle of stops and
/// continues) while it serves the rest of the job. Once the process is slowed, the target's
/// guest is stopped, so that the rounds wait on the link until the test lets them go; the
/// other process of the job (a ticker, whose every tick is a signal its tracer must let
/// through) ticks on meanwhile, and a signal sent to the moving process reaches its handler.
/// Then the move ends, and the process checks every page of its memory at the remote.
#[test]
fn a_process_slowed_down_on_its_way_out_its_signals_and_the_rest_of_its_job_are_served() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let job = start_slowed(&lab);
    let pid = job.pid().to_string();

    // The rounds may end between the test's look at the log and the guest's stop: then the
    // process waits, held stopped, for its final round, and its signals with it. Move it
    // home and try again.
    let (migrate, guest, ended) = (1..=3)
        .find_map(|_| {
            let ended = rounds_ended(&stderr(&job));
            let mut migrate = spawn_migrate(lab.node(1), &pid, "2");
            wait_slowed(&job, &mut migrate);
            let guest = the_guest(lab.node(2));
            host_kill("STOP", guest);
            if rounds_ended(&stderr(&job)) == ended {
                return Some((migrate, guest, ended));
            }
            host_kill("CONT", guest);
            let done = migrate.wait_with_output().expect("migrate");
            assert!(done.status.success(), "{done:?}\n{}", job.outputs());
            job.migrate("home")
                .unwrap_or_else(|e| panic!("{e}\n{}", job.outputs()));
            None
        })
        .unwrap_or_else(|| {
            panic!(
                "the rounds ended before the guest stopped, 3 times\n{}",
                job.outputs()
            )
        });

    let ticked = ticks(&stdout(&job));
    job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
    wait_until("the signal and the other process's ticks", &job, || {
        let out = stdout(&job);
        out.contains("usr1 passes=") && ticks(&out) >= ticked + 5
    });
    assert_eq!(
        rounds_ended(&stderr(&job)),
        ended,
        "the rounds ended while the guest was stopped:\n{}",
        job.outputs()
    );
    host_kill("CONT", guest);
    let done = migrate.wait_with_output().expect("migrate");
    assert!(done.status.success(), "{done:?}\n{}", job.outputs());
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 2);
    checks_a_whole_pass(&job);
    job.signal("KILL").unwrap_or_else(|e| panic!("{e}"));
    let _ = job.finish(STEP);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// The target dies while home slows a process down on its way there: the move fails, the
/// duty cycle lets the process go, and it runs on at home, where it answers its signals and
/// checks every page of its memory.
#[test]
fn a_target_dying_while_home_slows_a_process_down_leaves_it_running_at_home() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let job = start_slowed(&lab);
    let pid = job.pid().to_string();
    let mut migrate = spawn_migrate(lab.node(1), &pid, "2");
    wait_slowed(&job, &mut migrate);
    lab.node(2).kill();
    let done = migrate.wait_with_output().expect("migrate");
    assert_eq!(done.status.code(), Some(1), "{done:?}\n{}", job.outputs());
    let failed = String::from_utf8_lossy(&done.stderr);
    assert!(
        failed.starts_with(&format!("migrate: cannot move {pid} to node 2: ")),
        "{done:?}"
    );
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
    checks_a_whole_pass(&job);
    let ticked = ticks(&stdout(&job));
    wait_until("the other process's ticks", &job, || {
        ticks(&stdout(&job)) > ticked
    });
    job.signal("KILL").unwrap_or_else(|e| panic!("{e}"));
    let _ = job.finish(STEP);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// `mosrun slowed 256` at node 1 (progs/rounds/slowed.c), once it is ready.
fn start_slowed(lab: &Lab) -> Job<'_> {
    let program = c_program("tests/progs/rounds/slowed.c", "slowed");
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args([program.as_str(), "256"])
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job
}

/// `migrate PID TO` started at `node`, its output kept.
fn spawn_migrate(node: &Node, pid: &str, to: &str) -> Child {
    node.command("migrate")
        .args([pid, to])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start migrate")
}

/// Waits until home raises the throttle level of `job`'s process, which `migrate` moves
/// out (once the first round shows that the process writes faster than the rounds send).
fn wait_slowed(job: &Job, migrate: &mut Child) {
    let slowed = slowings(&stderr(job));
    wait_until("the process to be slowed down", job, || {
        let moved = migrate.try_wait().expect("migrate").is_some();
        assert!(
            !moved,
            "moved without being slowed down:\n{}",
            job.outputs()
        );
        slowings(&stderr(job)) > slowed
    });
}

/// Asks `job`'s process (slowed.c) for its pass until two passes begun after the first
/// answer: the one between them checked every page.
fn checks_a_whole_pass(job: &Job) {
    let passes = |out: &str| -> Vec<u64> {
        out.lines()
            .filter_map(|l| l.strip_prefix("usr1 passes=")?.parse().ok())
            .collect()
    };
    let before = passes(&stdout(job)).len();
    let (mut asked, mut first) = (before, None);
    job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
    wait_until("a whole pass", job, || {
        let out = stdout(job);
        assert!(!out.contains("FAIL"), "{}", job.outputs());
        let seen = passes(&out);
        if seen.len() == asked {
            return false;
        }
        let first = *first.get_or_insert(seen[before]);
        if seen.last().is_some_and(|&last| last >= first + 2) {
            return true;
        }
        // Answered: ask again.
        asked = seen.len();
        job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
        false
    });
}

fn stdout(job: &Job) -> String {
    String::from_utf8_lossy(&job.stdout()).into_owned()
}

fn stderr(job: &Job) -> String {
    String::from_utf8_lossy(&job.stderr()).into_owned()
}

/// How often the home supervisor raised a process's throttle level, from its log.
fn slowings(log: &str) -> usize {
    log.matches("slowing the process down").count()
}

/// How many moves' running rounds have ended, from the supervisor's log.
fn rounds_ended(log: &str) -> usize {
    log.matches("running rounds sent").count()
}

/// The ticker's last tick.
fn ticks(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The host PID of the one `mosixd guest` of `node` (a child of its daemon).
fn the_guest(node: &Node) -> u32 {
    let mut found = Vec::new();
    wait_for(
        &format!("one guest on node {}", node.id()),
        || format!("{:#?}", processes_in(node)),
        || {
            let procs = processes_in(node);
            let daemons: Vec<u32> = procs
                .iter()
                .filter(|p| p.host_ppid == node.init_pid() && p.name == "mosixd")
                .map(|p| p.host_pid)
                .collect();
            found = procs
                .into_iter()
                .filter(|p| daemons.contains(&p.host_ppid) && p.name == "mosixd")
                .map(|p| p.host_pid)
                .collect();
            found.len() == 1
        },
    );
    found[0]
}

/// `kill -SIG` to a host process.
fn host_kill(sig: &str, host_pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(host_pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {host_pid} failed");
}

/// Waits until `cond` holds, looking every [`POLL`]; panics after [`STEP`] with `what` and
/// `job`'s outputs.
fn wait_until(what: &str, job: &Job, cond: impl FnMut() -> bool) {
    wait_for(what, || job.outputs(), cond);
}

/// Waits until `cond` holds, looking every [`POLL`]; panics after [`STEP`] with `what` and
/// `context()`.
fn wait_for(what: &str, context: impl Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {STEP:?}\n{}",
            context()
        );
        std::thread::sleep(POLL);
    }
}
