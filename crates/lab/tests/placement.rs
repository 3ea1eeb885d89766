//! mosrun's MOSIX placement options in a 3-node lab: `-N` and `-jLIST` start the program on
//! another node, `-F` lets it run at home when that node cannot take it, and without `-F`
//! mosrun fails before the program ran any of its code. `-z` gives argv[0] apart.
//!
//! The program (`placed.c`) creates NAME.ran first thing, says "ready", and computes until
//! NAME.stop exists. Each wait has a deadline.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rmosix_lab::{
    Job, Lab, LabConfig, bin_dir_of_current_test, calls_served_for, log_field, require_root,
};

/// Deadline of one step: the program's start, its move, its end.
const STEP: Duration = Duration::from_secs(60);
/// How long a test sleeps between two looks at where the program runs.
const POLL: Duration = Duration::from_millis(10);

fn placed_program() -> String {
    program("placed")
}

/// `tests/progs/placement/NAME.c`, compiled.
fn program(name: &str) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("placement")
        .join(name);
    let src = format!(
        "{}/tests/progs/placement/{name}.c",
        env!("CARGO_MANIFEST_DIR")
    );
    rmosix_lab::compiled(src, out, &["-Wextra", "-Werror"])
}

/// `sh -c SCRIPT` at node 1, with no input, mosrun logging as `log` says, without colours:
/// what it did.
fn shell_at_node_1(lab: &Lab, script: &str, log: &str) -> Output {
    (lab.node(1).command("sh"))
        .args(["-c", script])
        .env("MOSRUN_LOG", log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run a shell")
}

/// `mosrun OPTIONS placed NAME` at node 1 (`args` end with the program and NAME).
fn start<'l>(lab: &'l Lab, args: &[&str]) -> Job<'l> {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args(args)
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("ready", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job
}

/// Waits until the job's program runs on one of `nodes`; returns that node.
fn runs_on(job: &Job, nodes: &[u16]) -> u16 {
    let deadline = Instant::now() + STEP;
    loop {
        let at = job.location().unwrap_or_else(|e| panic!("{e}"));
        if nodes.contains(&at) {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "it runs on node {at}, not on {nodes:?}\n{}",
            job.outputs()
        );
        std::thread::sleep(POLL);
    }
}

/// Lets the program end, which must go well.
fn stop(job: Job, name: &Path) -> String {
    fs::write(name.with_extension("stop"), b"").expect("write the stop file");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        done.status.success() && stdout.ends_with("done\n"),
        "{:?}\n{stdout}\n{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    stdout
}

/// `mosrun -NODE PROGRAM NAME` at node 1 must fail with the reason, the program never run.
fn refused_before_it_ran(lab: &Lab, node: &str, program: &str, name: &Path) {
    let out = lab
        .node(1)
        .command("mosrun")
        .args([
            &format!("-{node}"),
            program,
            name.to_str().expect("a UTF-8 path"),
        ])
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run mosrun");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot start it on node {node}")),
        "no reason: {stderr}"
    );
    assert!(
        !name.with_extension("ran").exists(),
        "the refused program ran: {stderr}"
    );
}

fn name(lab: &Lab, what: &str) -> PathBuf {
    lab.work_dir().join(what)
}

#[test]
fn a_program_starts_on_the_node_asked_for_or_at_home_as_asked_when_that_node_cannot() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    let program = placed_program();
    let path = |n: &PathBuf| n.to_str().expect("a UTF-8 path").to_owned();

    // -2: on node 2.
    let two = name(&lab, "two");
    let job = start(&lab, &["-2", &program, &path(&two)]);
    runs_on(&job, &[2]);
    stop(job, &two);

    // -j2-3: on node 2 or 3.
    let drawn = name(&lab, "drawn");
    let job = start(&lab, &["-j2-3", &program, &path(&drawn)]);
    runs_on(&job, &[2, 3]);
    stop(job, &drawn);

    // -9 (no such node) -F: at home.
    let fallen = name(&lab, "fallen");
    let job = start(&lab, &["-9", "-F", &program, &path(&fallen)]);
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
    stop(job, &fallen);

    // -9 without -F: mosrun fails with the reason, and the program never ran.
    let refused = name(&lab, "refused");
    refused_before_it_ran(&lab, "9", &program, &refused);
    // A node that is down, without -F: the same.
    lab.node(3).stop_daemon().unwrap_or_else(|e| panic!("{e}"));
    refused_before_it_ran(&lab, "3", &program, &refused);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A program placed at its exec moves before it runs any of its code: it stays stopped
/// through its move, which carries the few pages of a program not yet started, not the
/// A program placed at its exec arrives with the dispositions its exec left: the signals
/// it inherited ignored (as from `nohup`, a shell's `trap ''`, or a shell that started it
/// in the background) ignored, every other the default with no flags or mask, as when it
/// runs without rmosix. (Home reads them from /proc then, not by asking the process for
/// each signal.)
#[test]
fn a_program_placed_at_its_exec_keeps_the_signals_it_inherited_ignored() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let program = program("dispositions");
    let run = |script: String| {
        let out = shell_at_node_1(&lab, &script, "info");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{script}: {stderr}");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    for traps in ["trap '' INT USR1;", ""] {
        let (plain, _) = run(format!("{traps} exec {program}"));
        let (placed, log) = run(format!("{traps} exec mosrun -2 {program}"));
        assert!(
            log.lines()
                .any(|l| l.contains(" placed ") && l.contains("node=2")),
            "not placed at node 2:\n{log}"
        );
        assert_eq!(placed, plain, "{log}");
        if !traps.is_empty() {
            assert!(
                plain.contains(" 2:ign") && plain.contains(" 10:ign"),
                "{plain}"
            );
        }
    }
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A program away asks home once whether its standard error (a file) is a terminal: home's
/// answer, no, holds for that descriptor until the program puts something else under its
/// number, and the next two `isatty`s are answered where it runs. After `dup2` of a
/// pseudo-terminal's slave over it, the question goes home again and the answer is yes.
/// (mosrun's trace of each call it serves, by pid.)
#[test]
fn a_descriptor_home_said_is_no_terminal_is_asked_again_only_once_it_changes() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let program = program("terminals");
    let log = lab.work_dir().join("terminals.log");
    let script = format!("exec mosrun -2 {program} 2>{}", log.display());
    let out = shell_at_node_1(&lab, &script, "info,rmosix_engine::home=trace");
    let log = fs::read_to_string(&log).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{log}");
    assert_eq!(stdout, "terminals: 0 0 0 1\n", "{log}");
    let pid = (log.lines())
        .find(|l| l.contains(" placed ") && l.contains("node=2"))
        .and_then(|l| log_field(l, "pid"))
        .unwrap_or_else(|| panic!("not placed at node 2:\n{log}"));
    let calls = calls_served_for(&log, pid);
    let ioctls = calls.iter().filter(|&&nr| nr == libc::SYS_ioctl).count();
    // The first isatty, the pseudo-terminal's grantpt, unlockpt and ptsname, the last isatty.
    assert_eq!(ioctls, 5, "{log}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// 64 MiB `grows` writes first thing once it runs (it would, during the rounds of a move
/// that let it run).
#[test]
fn a_program_placed_at_its_exec_moves_before_it_runs() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let grows = name(&lab, "grows");
    let job = start(
        &lab,
        &["-2", &program("grows"), grows.to_str().expect("UTF-8")],
    );
    runs_on(&job, &[2]);
    let log = String::from_utf8_lossy(&job.stderr()).into_owned();
    let sent: u64 = (log.lines())
        .find(|line| line.contains("migrated"))
        .and_then(|line| {
            line.split(" bytes=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no move logged:\n{log}"));
    assert!(sent < 4 << 20, "the move carried {sent} bytes:\n{log}");
    stop(job, &grows);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn z_runs_a_path_with_an_argv0_of_its_own() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let program = placed_program();
    let named = name(&lab, "named");
    let named_path = named.to_str().expect("a UTF-8 path").to_owned();
    let job = start(&lab, &["-2", "-z", &program, "another-name", &named_path]);
    let stdout = stop(job, &named);
    assert!(stdout.starts_with("ready argv0=another-name\n"), "{stdout}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// `-F` with the node asked for down: with its daemon stopped, then with the node killed,
/// `mosrun -3 -F` runs the program at home (and without `-F` refuses it, before it ran).
#[test]
fn a_program_asked_for_a_node_that_is_down_runs_at_home_with_f() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    let program = placed_program();
    let path = |n: &PathBuf| n.to_str().expect("a UTF-8 path").to_owned();

    lab.node(3).stop_daemon().unwrap_or_else(|e| panic!("{e}"));
    let stopped = name(&lab, "stopped");
    let job = start(&lab, &["-3", "-F", &program, &path(&stopped)]);
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
    stop(job, &stopped);

    lab.node(3).kill();
    let killed = name(&lab, "killed");
    let job = start(&lab, &["-3", "-F", &program, &path(&killed)]);
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
    stop(job, &killed);
    refused_before_it_ran(&lab, "3", &program, &name(&lab, "refused"));
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}
