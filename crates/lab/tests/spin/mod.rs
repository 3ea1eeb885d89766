//! Shared by the lab tests whose jobs are `spin.c` (tests/progs/balance): a CPU-bound job
//! that says "ready" and stirs 1 MiB until NAME.stop exists, and the check of what it printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rmosix_lab::{Job, Lab};

/// How long a job may take to say "ready".
const READY: Duration = Duration::from_secs(60);

/// `spin`, compiled for the test binary `test` (each its own copy: test binaries run at once).
pub fn program(test: &str) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(test)
        .join("spin");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/balance/spin.c");
    rmosix_lab::compiled(src, out, &["-O2"])
}

/// `mosrun OPTIONS spin NAME` at node 1, once it says "ready"; mosrun logs its moves.
pub fn start<'l>(lab: &'l Lab, options: &[&str], program: &str, name: &str) -> Job<'l> {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args(options)
        .arg(program)
        .arg(lab.work_dir().join(name))
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info");
    let job = Job::spawn(lab.node(1), cmd).unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("ready", READY)
        .unwrap_or_else(|e| panic!("{e}"));
    job
}

/// The result line of a job's stdout, "rounds=R sum=S"; `None` when it printed none.
pub fn result_line(stdout: &str) -> Option<&str> {
    stdout.lines().find(|l| l.starts_with("rounds="))
}

/// Checks that each result line is what a never-moved run of as many rounds prints: one run
/// of `spin - R...` at the host for all of them. `context` goes into the failure message.
pub fn assert_as_never_moved(program: &str, lines: &[&str], context: &str) {
    let rounds = |line: &str| -> u64 {
        line.strip_prefix("rounds=")
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("not a result line: {line:?}\n{context}"))
    };
    let mut counts: Vec<u64> = lines.iter().map(|l| rounds(l)).collect();
    counts.sort_unstable();
    counts.dedup();
    let still = Command::new(program)
        .arg("-")
        .args(counts.iter().map(u64::to_string))
        .output()
        .expect("run spin at the host");
    let expected: BTreeMap<u64, String> = String::from_utf8_lossy(&still.stdout)
        .lines()
        .map(|l| (rounds(l), l.to_owned()))
        .collect();
    for line in lines {
        assert_eq!(
            Some(*line),
            expected.get(&rounds(line)).map(String::as_str),
            "a moved job computed otherwise than a never-moved one\n{context}"
        );
    }
}
