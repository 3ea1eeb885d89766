//! Pre-copy's running rounds with processes that never stop writing: one that rewrites all of
//! its memory all the time (the rounds cannot catch up unless it is slowed down) and one that
//! rewrites a part of it (they shrink to that part). Each is moved out, home, out to another
//! node, on to a third and home again, and after each move checks every word of its memory
//! against what it last wrote (`bench/rewrite.c`, also the bench's program). A page a round
//! left out, or placed out of order, shows as `FAIL`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmosix_lab::{Job, Lab, LabConfig, bin_dir_of_current_test, require_root};

/// Deadline of one step: a migration, a check, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// How long the test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(10);

/// Compiles the bench's rewrite.c into the target's tmp dir and returns its path.
fn rewrite_program() -> String {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/rewrite.c");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rounds");
    fs::create_dir_all(&dir).expect("create the program's dir");
    let out = dir.join("rewrite");
    let built = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(src)
        .output()
        .expect("run cc (install gcc)");
    assert!(
        built.status.success(),
        "cc {src} failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    out.to_string_lossy().into_owned()
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
    let outputs = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&job.stdout()),
            String::from_utf8_lossy(&job.stderr())
        )
    };
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    for (moves, target) in ["2", "home", "3", "4", "home"].into_iter().enumerate() {
        job.migrate(target)
            .unwrap_or_else(|e| panic!("migrate {target}: {e}\n{}", outputs()));
        job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + STEP;
        loop {
            let out = String::from_utf8_lossy(&job.stdout()).into_owned();
            assert!(
                !out.contains("FAIL"),
                "after the move to {target}:\n{}",
                outputs()
            );
            if out.matches("checked ").count() > moves {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no check after the move to {target} within {STEP:?}\n{}",
                outputs()
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
        outputs()
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
    let program = rewrite_program();
    moves_and_checks(&lab, &program, "256", "256");
    moves_and_checks(&lab, &program, "256", "32");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}
