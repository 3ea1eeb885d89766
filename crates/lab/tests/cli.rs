//! The `rmosix-lab` binary: exit codes, its message when tools are missing, `shell` until
//! SIGTERM, and (about 40 s) the whole demo with the workspace's real tools.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

const EXE: &str = env!("CARGO_BIN_EXE_rmosix-lab");

/// A copy of `rmosix-lab` in `dir` (its bin dir is where it lives) beside a stand-in mosixd.
fn lab_exe_beside_fake_daemon(dir: &str) -> PathBuf {
    let bin = common::bin_dir_with_daemon(dir, common::FAKE_MOSIXD);
    let exe = bin.join("rmosix-lab");
    let staged = bin.join(format!(".rmosix-lab.{}", std::process::id()));
    fs::copy(EXE, &staged).expect("copy rmosix-lab");
    fs::rename(&staged, &exe).expect("install rmosix-lab");
    exe
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(EXE)
        .args(["demo", "--nodes", "0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(EXE).arg("fly").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn demo_without_the_tools_says_what_to_build() {
    let exe = lab_exe_beside_fake_daemon("cli-no-tools");
    let out = Command::new(&exe).arg("demo").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "rmosix-lab: {}: not found; build the workspace first",
        exe.with_file_name("mosrun").display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn shell_keeps_the_lab_until_sigterm_and_then_removes_it() {
    if !rmosix_lab::require_root() {
        return;
    }
    let exe = lab_exe_beside_fake_daemon("cli-shell");
    let mut shell = Command::new(&exe)
        .args(["shell", "--nodes", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn shell");
    let mut lines = BufReader::new(shell.stdout.take().expect("stdout"))
        .lines()
        .map(|l| l.expect("shell output"));
    let first = lines.next().expect("first line");
    let dir = PathBuf::from(first.rsplit(' ').next().expect("lab dir"));
    assert!(dir.join("mosix.map").exists(), "{first}");
    // "  sh -c 'echo $$ > CG/cgroup.procs; exec nsenter --target PID ... -- bash'"
    let mut hostnames = Vec::new();
    for line in lines.by_ref() {
        if line.contains("Ctrl-C") {
            break;
        }
        if let Some(enter) = line.trim().strip_prefix("sh -c '") {
            let enter = enter
                .strip_suffix("bash'")
                .expect("enter command ends with bash");
            let out = Command::new("sh")
                .args(["-c", &format!("{enter}uname -n")])
                .output()
                .expect("enter node");
            assert!(
                out.status.success(),
                "{line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            hostnames.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    assert_eq!(hostnames, ["node1", "node2"]);
    let status = Command::new("kill")
        .args(["-TERM", &shell.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(shell.wait().expect("shell").success());
    assert!(!dir.exists(), "lab dir {} left", dir.display());
}

/// The demo with the workspace's real mosixd, mosrun and mosctl: the jobs started on node 1
/// spread by themselves, all end, and one that moved prints what it prints never moved.
/// Needs `cargo build --workspace`.
#[test]
fn demo_spreads_the_jobs_over_the_cluster() {
    if !rmosix_lab::require_root() {
        return;
    }
    let bin = rmosix_lab::bin_dir_of_current_test();
    let exe = Path::new(EXE);
    assert_eq!(exe.parent(), Some(bin.as_path()));
    let out = Command::new(exe).arg("demo").output().expect("run demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for step in [
        ") moved to node ",
        "node 1's mosps -a:",
        "all 8 jobs done in ",
        "node 1 alone took ",
        " (the same)",
    ] {
        assert!(stderr.contains(step), "no {step:?} in:\n{stderr}");
    }
    // mosps at node 1 showed a job running at another node.
    let away = stderr.lines().any(|line| {
        let Some((_, places)) = line.split_once(" jobs  ") else {
            return false;
        };
        // node1 [1 6]  node2 [3 5]  node3 []  ...: the nodes after node 1 are not all empty.
        places
            .split("  ")
            .skip(1)
            .any(|place| !place.ends_with("[]"))
    });
    assert!(away, "no job shown away from node 1:\n{stderr}");
    assert!(out.status.success(), "{stderr}");
}
