//! Exit codes and error lines of `migrate`, `mosctl` and `mosmon`, from the real binaries.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("MOSIX_SOCKET")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const MIGRATE: &str = env!("CARGO_BIN_EXE_migrate");
const MOSCTL: &str = env!("CARGO_BIN_EXE_mosctl");
const MOSMON: &str = env!("CARGO_BIN_EXE_mosmon");

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["4711"],
        &["4711", "balanced"],
        &["4711", "-3"],
        &["x", "3"],
        &["0", "3"],
        &["4711", "3", "extra"],
        &["--frob", "4711", "3"],
    ] {
        let out = run(MIGRATE, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "migrate {args:?}: {}",
            stderr(&out)
        );
    }
    for args in [
        &[][..],
        &["frob"],
        &["where"],
        &["where", "x"],
        &["keygen"],
        &["status", "1"],
    ] {
        let out = run(MOSCTL, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "mosctl {args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn migrate_without_a_daemon_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-daemon.sock");
    let socket = socket.to_str().unwrap();
    let out = run(MIGRATE, &["--socket", socket, "4711", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "migrate: cannot move 4711 to node 3: cannot reach mosixd at {socket}: \
             No such file or directory (os error 2)\n"
        )
    );
    // The environment variable names the socket too.
    let out = Command::new(MIGRATE)
        .args(["4711", "home"])
        .env("MOSIX_SOCKET", socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with(&format!(
        "migrate: cannot move 4711 home: cannot reach mosixd at {socket}:"
    )));
}

#[test]
fn mosctl_without_a_daemon_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-daemon.sock");
    for cmd in [&["status"][..], &["where", "1"]] {
        let out = run(
            MOSCTL,
            &[&["--socket", socket.to_str().unwrap()], cmd].concat(),
        );
        assert_eq!(out.status.code(), Some(1), "{cmd:?}");
        assert!(
            stderr(&out).starts_with("mosctl: cannot reach mosixd at"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn keygen_writes_a_private_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let out = run(MOSCTL, &["keygen", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = fs::read_to_string(&path).unwrap();
    assert_eq!(key.len(), 65);
    assert!(key.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));

    let out = run(MOSCTL, &["keygen", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "mosctl: {}: cannot create the cluster key: File exists (os error 17)\n",
            path.display()
        )
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        key,
        "the old key must survive"
    );
}

#[test]
fn mosmon_needs_a_terminal_and_one_view() {
    // Output captured: a pipe, not a terminal. It says so before touching the terminal or
    // the daemon.
    let out = run(MOSMON, &["--socket", "/nonexistent/mosixd.sock"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "mosmon: standard output is not a terminal\n");
    assert!(out.stdout.is_empty());
    for args in [&["-l", "-m"][..], &["-s", "-u"], &["-x"], &["extra"]] {
        let out = run(MOSMON, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "mosmon {args:?}: {}",
            stderr(&out)
        );
    }
}
