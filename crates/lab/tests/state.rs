//! Kernel state a moved process keeps: what it set at home answers the same at a remote,
//! and what it set anywhere survives each move. Each program (in `tests/progs/state/`) sets
//! its state, says `ready`, and on each line `check NAME` checks it and prints `NAME ok` or
//! `NAME FAIL: why`, then `checked NAME`. The test checks it at home, moves it out to node 2,
//! on to node 3 and home, and has it check at each stop, where the test may act too (send it
//! a signal, look at it with `ps`).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rmosix_lab::{Job, Lab, LabConfig, bin_dir_of_current_test, require_root};

/// The programs of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/state");
/// Deadline of one step: a migration, a check, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// Where the process is at each check: home, out, on to a third node, home again.
const STOPS: [&str; 4] = ["home", "2", "3", "home"];

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"))
}

/// Compiles `progs/state/NAME.c` once per test process into the target's tmp dir and returns
/// the program's path.
fn c_program(name: &str) -> String {
    static BUILT: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state");
    fs::create_dir_all(&dir).expect("create the programs' dir");
    let out = dir.join(name);
    // Another test process may compile at the same time: build aside, then rename.
    let staged = dir.join(format!(".{name}.{}", std::process::id()));
    let src = format!("{PROGS}/{name}.c");
    let result = Command::new("gcc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&staged)
        .arg(&src)
        .output()
        .expect("run gcc (install gcc and libc6-dev)");
    assert!(
        result.status.success(),
        "gcc {src} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    fs::rename(&staged, &out).expect("install the compiled program");
    let path = out.to_string_lossy().into_owned();
    built.push((name.to_owned(), path.clone()));
    path
}

/// Runs `argv` under mosrun at node 1 (with `env` added), has it check its state at each of
/// [`STOPS`] and ends it. `at_stop(job, k)` runs at stop `k` after the move and before the
/// check. Returns its output.
fn tour(lab: &Lab, argv: &[&str], env: &[(&str, &str)], at_stop: impl Fn(&Job, usize)) -> String {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args(argv)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    let outputs = |job: &Job| {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&job.stdout()),
            String::from_utf8_lossy(&job.stderr())
        )
    };
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    for (k, target) in STOPS.into_iter().enumerate() {
        if k > 0 {
            job.migrate(target)
                .unwrap_or_else(|e| panic!("migrate {target}: {e}\n{}", outputs(&job)));
        }
        at_stop(&job, k);
        let name = format!("{k}@{target}");
        job.send(format!("check {name}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        job.wait_output(&format!("checked {name}\n"), STEP)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = String::from_utf8_lossy(&job.stdout()).into_owned();
        assert!(!out.contains("FAIL"), "at {name}:\n{}", outputs(&job));
    }
    job.send(b"end\n").unwrap_or_else(|e| panic!("{e}"));
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        done.status.success(),
        "{:?}\n{out}\n{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    out
}

/// The program reads its own command line and environment from /proc wherever it runs, and
/// `ps` at home shows its command while it is away.
#[test]
fn proc_cmdline_and_environ_read_the_programs_own_wherever_it_runs() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("cmdline");
    let argv = [program.as_str(), "alpha", "beta gamma"];
    let command = argv.join(" ");
    tour(
        &lab,
        &argv,
        &[("RMOSIX_STATE", "environ-check")],
        |job, k| {
            if STOPS[k] == "home" {
                return;
            }
            let pid = job.pid().to_string();
            let shown = job
                .tool("ps", &["-o", "args=", "-p", &pid])
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                shown.trim(),
                command,
                "ps at home while at node {}",
                STOPS[k]
            );
        },
    );
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}
