//! Shared by the lab tests whose jobs are `spin.c` (tests/progs/balance): a CPU-bound job
//! that says "ready" and stirs 1 MiB until NAME.stop exists.

use std::path::Path;
use std::process::Stdio;
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
