//! Programs on a terminal, moved: their terminal stays at home, and every ioctl on it crosses
//! with exactly the bytes the kernel's definition of its request reads or writes.
//!
//! Each test runs its program in node 1 of a 3-node lab on a pseudo-terminal
//! ([`Terminal`]), types at it as a user would, and waits for what it shows, each wait with a
//! deadline; a failure shows the terminal's transcript. Nothing sleeps or measures time.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{JobError, Lab, LabConfig, Terminal, bin_dir_of_current_test};

/// The guest programs.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/terminal");
/// The system's python (a pyenv shim on PATH would run another one).
const PYTHON: &str = "/usr/bin/python3";
/// Deadline of one step: text to appear on the terminal.
const STEP: Duration = Duration::from_secs(60);
/// How long a test sleeps between two looks at a process.
const POLL: Duration = Duration::from_millis(10);

/// ioctls.c on the terminal, moved between its steps: every forwarded request gives at the
/// remote what it gave at home and writes no byte past the kernel's size (a TCGETS reply
/// once wrote glibc's 60-byte termios into the kernel's 36 bytes and smashed the stacks of
/// programs that read their terminal's attributes); a request the table does not know takes
/// the process home, where it gives the result it gave before.
#[test]
fn forwarded_ioctls_copy_the_kernels_sizes_and_unknown_ones_run_at_home() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = ioctls_program();
    let term = Terminal::start(lab.node(1), &["mosrun", program], &[("TERM", "dumb")])
        .unwrap_or_else(|e| fail(e));
    let expect = |text: &str| term.expect(text, STEP).unwrap_or_else(|e| fail(e));

    expect("ready\r\n");
    let pid = term.program().unwrap_or_else(|e| fail(e)).pid;
    let at = |node: u16, why: &str| at_node(&term, pid, node, why);
    move_to(&term, pid, "2", 2);
    term.send(b"\n").unwrap_or_else(|e| fail(e));
    expect("forwarded\r\n");
    at(2, "every request of the table is forwarded");

    term.send(b"\n").unwrap_or_else(|e| fail(e));
    expect("unknown\r\n");
    at(1, "TIOCGDEV, unknown to the table, takes it home");

    move_to(&term, pid, "3", 3);
    term.send(b"\n").unwrap_or_else(|e| fail(e));
    expect("undefined\r\n");
    at(1, "a request no kernel defines takes it home");

    term.send(b"\n").unwrap_or_else(|e| fail(e));
    let (status, transcript) = term.finish(STEP).unwrap_or_else(|e| fail(e));
    assert!(
        status.success() && transcript.contains("PASS\n") && !transcript.contains("FAIL"),
        "status {status}; transcript:\n{transcript}"
    );
}

/// A Python REPL at its prompt, started by an interactive bash (job control) on the
/// terminal, moved to node 2, on to node 3, home and out again: it evaluates what is typed
/// at each place; Ctrl-C at the remote shows KeyboardInterrupt and the REPL goes on; Ctrl-Z
/// at the remote stops the job, `fg` brings it back; `exit(7)` is the job's status.
#[test]
fn a_python_repl_on_a_terminal_follows_moves_ctrl_c_ctrl_z_and_fg() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let term = start_bash(&lab);
    let expect = |text: &str| term.expect(text, STEP).unwrap_or_else(|e| fail(e));
    let send = |text: &str| term.send(text.as_bytes()).unwrap_or_else(|e| fail(e));
    let evaluates = |expression: &str, value: &str| {
        send(&format!("{expression}\n"));
        expect(&format!("{value}\r\n>>> "));
    };

    send(&format!("mosrun {PYTHON} -q\n"));
    expect(">>> ");
    let program = term.program().unwrap_or_else(|e| fail(e));
    let pid = program.pid;
    let key = |key: &str| {
        // Python notices Ctrl-C only while it waits in select (natively too): a key typed
        // while the REPL still sets its prompt up is seen at the next one.
        waits_in(
            &term,
            program.host_pid,
            &[libc::SYS_select, libc::SYS_pselect6],
        );
        send(key);
    };
    evaluates("6 * 7", "42");

    move_to(&term, pid, "2", 2);
    evaluates("6 * 8", "48");
    key("\x03");
    expect("KeyboardInterrupt\r\n>>> ");
    evaluates("6 * 9", "54");
    key("\x1a");
    expect("Stopped");
    expect("bash$ ");
    send("fg\n");
    expect(&format!("mosrun {PYTHON} -q\r\n"));
    evaluates("7 * 7", "49");
    at_node(&term, pid, 2, "after Ctrl-C, Ctrl-Z and fg");

    move_to(&term, pid, "3", 3);
    evaluates("7 * 8", "56");
    move_to(&term, pid, "home", 1);
    evaluates("7 * 9", "63");
    move_to(&term, pid, "2", 2);
    send("exit(7)\n");
    expect("bash$ ");
    send("echo status=$?\n");
    expect("status=7\r\n");
    send("exit\n");
    let (status, transcript) = term.finish(STEP).unwrap_or_else(|e| fail(e));
    assert!(
        status.success(),
        "status {status}; transcript:\n{transcript}"
    );
}

/// A job that reads the terminal, moved to node 2 while it waits for a line, stopped with
/// Ctrl-Z and sent to the background with `bg`: its read, run again at home by its shell
/// from a background group, gets SIGTTIN, which stops the job again. (The kernel once
/// discarded terminal stops at the remote: neither stopped it.) `fg` gives it the terminal
/// back and the line it waited for.
#[test]
fn a_remote_job_that_reads_the_terminal_in_the_background_stops() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let term = start_bash(&lab);
    let expect = |text: &str| term.expect(text, STEP).unwrap_or_else(|e| fail(e));
    let send = |text: &str| term.send(text.as_bytes()).unwrap_or_else(|e| fail(e));
    let script = "import sys; print('reading'); print('got', input()); sys.exit(5)";
    send(&format!("mosrun {PYTHON} -c \"{script}\"\n"));
    expect("reading\r\n");
    let program = term.program().unwrap_or_else(|e| fail(e));
    waits_in(&term, program.host_pid, &[libc::SYS_read]);
    move_to(&term, program.pid, "2", 2);
    waits_in(&term, program.host_pid, &[libc::SYS_read]);
    send("\x1a");
    expect("Stopped");
    expect("bash$ ");
    send("bg\n");
    expect("Stopped");
    at_node(&term, program.pid, 2, "stopped in the background");
    send("fg\n");
    waits_in(&term, program.host_pid, &[libc::SYS_read]);
    send("hello\n");
    expect("got hello\r\n");
    expect("bash$ ");
    send("echo status=$?\n");
    expect("status=5\r\n");
}

// ---- Steps that panic with the transcript ----

/// Waits until the program's process at home (the program, or its shell while it runs
/// elsewhere) is blocked in one of `calls`.
fn waits_in(term: &Terminal<'_>, host_pid: u32, calls: &[i64]) {
    let deadline = Instant::now() + STEP;
    loop {
        let call = fs::read_to_string(format!("/proc/{host_pid}/syscall")).unwrap_or_default();
        let nr = call.split_whitespace().next().and_then(|n| n.parse().ok());
        if nr.is_some_and(|nr| calls.contains(&nr)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not blocked in {calls:?} after {STEP:?} ({call:?}); transcript:\n{}",
            term.transcript()
        );
        thread::sleep(POLL);
    }
}

/// Moves program `pid` of the terminal to `target` and checks that it is then on `node`.
fn move_to(term: &Terminal<'_>, pid: u32, target: &str, node: u16) {
    term.migrate(pid, target)
        .unwrap_or_else(|e| fail_with(e, term));
    at_node(term, pid, node, &format!("`migrate {pid} {target}`"));
}

/// Checks that program `pid` of the terminal runs on `node`; `why` says what put it there.
fn at_node(term: &Terminal<'_>, pid: u32, node: u16, why: &str) {
    let now = term.location(pid).unwrap_or_else(|e| fail_with(e, term));
    assert_eq!(
        now,
        node,
        "{why}: it runs on node {now}, not {node}; transcript:\n{}",
        term.transcript()
    );
}

/// Panics with `error` and its cause (a terminal's errors carry its transcript).
fn fail(error: JobError) -> ! {
    match std::error::Error::source(&error) {
        Some(cause) => panic!("{error}: {cause}"),
        None => panic!("{error}"),
    }
}

/// Like [`fail`], with the transcript so far.
fn fail_with(error: JobError, term: &Terminal<'_>) -> ! {
    panic!("{error}\ntranscript:\n{}", term.transcript());
}

// ---- Inputs ----

/// An interactive bash on a terminal in node 1, at its first prompt, reporting a job's
/// stop as soon as it happens (`set -b`).
fn start_bash(lab: &Lab) -> Terminal<'_> {
    let home = lab.work_dir();
    let env = [
        ("TERM", "dumb"),
        ("PS1", "bash$ "),
        ("HOME", path_str(&home)),
        ("HISTFILE", "/dev/null"),
    ];
    let term = Terminal::start(lab.node(1), &["bash", "--norc", "--noprofile", "-i"], &env)
        .unwrap_or_else(|e| fail(e));
    term.send(b"set -b\n").unwrap_or_else(|e| fail(e));
    term.expect("bash$ set -b\r\nbash$ ", STEP)
        .unwrap_or_else(|e| fail(e));
    term
}

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

/// `progs/terminal/ioctls.c`, compiled into the target's tmp dir.
fn ioctls_program() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("terminal")
            .join("ioctls");
        rmosix_lab::compiled(format!("{PROGS}/ioctls.c"), out, &["-Wextra", "-Werror"])
    })
}
