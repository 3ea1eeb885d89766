//! Real programs migrated while they run: Python, Perl, C with live FPU/SSE/AVX registers,
//! timers and an alternate signal stack (dynamic and static), gzip in a pipeline, a
//! process with more than a GiB of memory, execve and fork at the remote.
//!
//! Each program runs twice under `mosrun` on node 1 of a 3-node lab: once unmoved, for the
//! reference output and exit status, and once moved to node 2, home and node 3 while it
//! computes. Both runs must print the same bytes and end the same way, and nodes 2 and 3
//! must be empty again afterwards.
//!
//! The programs (in `tests/progs/suite/`) print `computing K` before round K of their work
//! and read one line from stdin after it. The test moves a program when it sees `computing
//! K`, so the move lands in the middle of the round, and sends the line once `migrate` has
//! returned: what the program does after the line (open a file, load a C extension, exec,
//! fork) runs at the new place, and no program can end before the test is done with it. No
//! test sleeps or measures time; every wait has a deadline.

use std::error::Error;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{Job, JobError, Lab, LabConfig, Node, bin_dir_of_current_test, leftovers_in};

/// The guest programs.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/suite");
/// The system's python (a pyenv shim on PATH would run another one).
const PYTHON: &str = "/usr/bin/python3";
const PERL: &str = "/usr/bin/perl";
/// Deadline of one step: output to appear, a remote's helpers to go.
const STEP: Duration = Duration::from_secs(60);
/// Deadline of a whole job's end once its last line was sent.
const RUN: Duration = Duration::from_secs(120);
/// How long a test sleeps between two looks at a node's processes.
const POLL: Duration = Duration::from_millis(10);
/// Mebibytes the big program fills: 1.1 GiB.
const BIG_MIB: &str = "1126";
/// Bytes of gzip's input: `gzip -1` takes about 1.2 s for 64 MiB of it on one of our CPUs.
const GZIP_INPUT: usize = 96 << 20;
/// CPUs each node of the gzip lab may use: with [`GZIP_INPUT`], gzip runs 3-4 s unmoved.
const GZIP_CPU_QUOTA: f64 = 0.5;

/// One move of a job: when stdout shows `after`, `migrate PID target`, then `mosctl where`
/// must say `node`; then the job gets its line.
struct Move {
    after: &'static str,
    target: &'static str,
    node: u16,
}

/// Out to node 2, home, out to node 3, each during one of three rounds.
const TOUR: [Move; 3] = [
    Move {
        after: "computing 1\n",
        target: "2",
        node: 2,
    },
    Move {
        after: "computing 2\n",
        target: "home",
        node: 1,
    },
    Move {
        after: "computing 3\n",
        target: "3",
        node: 3,
    },
];

// ---- The programs ----

#[test]
fn interpreters_keep_output_files_late_imports_and_status_across_moves() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let dir = lab.work_dir();
    let dir = path_str(&dir);
    // work.py exits 3, work.pl 4: the status passes through mosrun either way.
    let script = format!("{PROGS}/work.py");
    let python = same_when_moved(&lab, "work.py", |tag| {
        vec![PYTHON.into(), script.clone(), dir.into(), tag.into()]
    });
    assert_eq!(python.status.code(), Some(3), "{}", shown(&python));
    let out = String::from_utf8_lossy(&python.stdout);
    for line in [
        "_decimal loaded at start: False\n",
        "after move 3: ",
        "pair: through a socket pair made before the move\n",
        "udp: a datagram sent after the move True\n",
        "poll: [1]\n",
        "select: True\n",
        "recvmsg: scat tered 0\n",
        "passed descriptor reads: opened before the first move\n",
        "udp recvmsg: to myself True\n",
        "truncated: 0123 True\n",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }

    let script = format!("{PROGS}/work.pl");
    let perl = same_when_moved(&lab, "work.pl", |tag| {
        vec![PERL.into(), script.clone(), dir.into(), tag.into()]
    });
    assert_eq!(perl.status.code(), Some(4), "{}", shown(&perl));
    let out = String::from_utf8_lossy(&perl.stdout);
    assert!(out.contains("MD5 loaded at start: 0\n"), "{out}");
    assert!(out.contains("checksum "), "{out}");
}

/// state.c with its timer ticking all the time, also while its forwarded calls run.
#[test]
fn c_registers_timer_ticks_altstack_and_file_survive_moves_dynamic_and_static() {
    if !rmosix_lab::require_root() {
        return;
    }
    c_state_survives_moves("ticks ok\nhandler on the alternate stack PASS\nPASS\n");
}

/// state.c, built dynamic and static, unmoved and moved in one lab; its output must end
/// with `end`.
fn c_state_survives_moves(end: &str) {
    let lab = start_lab();
    for linking in [Linking::Dynamic, Linking::Static] {
        let program = c_program("state", linking);
        let dir = lab.work_dir();
        let out = same_when_moved(&lab, &format!("state ({linking:?})"), |tag| {
            let file = dir.join(format!("state-{linking:?}-{tag}.txt"));
            vec![program.clone(), path_str(&file).to_owned()]
        });
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", shown(&out));
        assert!(text.ends_with(end), "{text}");
        assert!(!text.contains("FAIL"), "{text}");
    }
}

#[test]
fn gzip_in_a_pipeline_compresses_the_same_bytes_when_moved() {
    if !rmosix_lab::require_root() {
        return;
    }
    let mut config = LabConfig::new(3, bin_dir_of_current_test());
    config.cpu_quota = Some(GZIP_CPU_QUOTA);
    let lab = Lab::start(config).unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    let input = compressible_input(GZIP_INPUT);
    let argv = ["gzip", "-1"];
    let reference = gzip_run(&lab, input, &argv, None);
    assert!(reference.status.success(), "{}", shown(&reference));
    let moved = gzip_run(&lab, input, &argv, Some(reference.stdout.len()));
    assert_eq!(moved.status, reference.status, "{}", shown(&moved));
    assert_same_bytes("gzip -1 output", &reference.stdout, &moved.stdout);
    nodes_are_empty_again(&lab);
}

#[test]
fn a_process_with_more_than_a_gibibyte_moves_intact() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("big", Linking::Dynamic);
    let out = same_when_moved(&lab, "big", |_| vec![program.clone(), BIG_MIB.into()]);
    assert!(out.status.success(), "{}", shown(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("filled\n"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn execve_and_fork_at_the_remote_run_at_home() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    execve_at_the_remote(&lab);
    fork_at_the_remote(&lab);
}

/// exec.py, moved to node 2, execs `sh`: the shell prints what it prints unmoved, runs at
/// home, and its status 5 is mosrun's.
fn execve_at_the_remote(lab: &Lab) {
    let argv = [PYTHON, &format!("{PROGS}/exec.py")];
    let reference = {
        let job = start(lab.node(1), &argv);
        // One line at a time: Python reads ahead, and what it read is lost in the exec.
        job.send(b"\n").unwrap_or_else(|e| fail(e));
        wait_output(&job, "exec-ok\n");
        job.send(b"the end\n").unwrap_or_else(|e| fail(e));
        finish(job)
    };
    assert_eq!(reference.status.code(), Some(5), "{}", shown(&reference));

    let job = start(lab.node(1), &argv);
    wait_output(&job, "computing 1\n");
    migrate(&job, "2", 2);
    job.send(b"\n").unwrap_or_else(|e| fail(e));
    wait_output(&job, "exec-ok\n");
    assert_eq!(
        location(&job),
        1,
        "after execve the new program runs at home"
    );
    job.send(b"the end\n").unwrap_or_else(|e| fail(e));
    let moved = finish(job);
    assert_same_output("exec.py", &reference, &moved);
    nodes_are_empty_again(lab);
}

/// fork.py, moved to node 2, forks: the parent comes home first, the child prints and ends,
/// the parent sees its status; then the parent moves on to node 3.
fn fork_at_the_remote(lab: &Lab) {
    let argv = [PYTHON, &format!("{PROGS}/fork.py")];
    let reference = {
        let job = start(lab.node(1), &argv);
        job.send(b"\n\n").unwrap_or_else(|e| fail(e));
        finish(job)
    };
    assert!(reference.status.success(), "{}", shown(&reference));

    let job = start(lab.node(1), &argv);
    wait_output(&job, "computing 1\n");
    migrate(&job, "2", 2);
    job.send(b"\n").unwrap_or_else(|e| fail(e));
    wait_output(&job, "computing 2\n");
    assert_eq!(location(&job), 1, "fork brings the parent home first");
    migrate(&job, "3", 3);
    job.send(b"\n").unwrap_or_else(|e| fail(e));
    let moved = finish(job);
    assert_same_output("fork.py", &reference, &moved);
    let text = String::from_utf8_lossy(&moved.stdout);
    assert!(
        text.contains("child: hello\nparent: child exited with 0\n"),
        "{text}"
    );
    nodes_are_empty_again(lab);
}

// ---- Running a program unmoved and moved ----

/// Runs `argv(TAG)` unmoved, then moved along [`TOUR`] (TAG "unmoved", then "moved", for
/// the names of the program's files); asserts that both printed the same and ended the
/// same way and that nodes 2 and 3 are empty again, and returns the moved run's output.
fn same_when_moved(lab: &Lab, name: &str, argv: impl Fn(&str) -> Vec<String>) -> Output {
    let unmoved_argv = argv("unmoved");
    let reference = run_touring(lab, &unmoved_argv, false);
    let moved_argv = argv("moved");
    let moved = run_touring(lab, &moved_argv, true);
    assert_same_output(name, &reference, &moved);
    nodes_are_empty_again(lab);
    moved
}

/// Runs a three-round program on node 1, moving it along [`TOUR`] if `moving`. Each round's
/// calls run where the last move put the program: when the next round begins, it must still
/// be there (a call the forwarding does not serve would have taken it home).
fn run_touring(lab: &Lab, argv: &[String], moving: bool) -> Output {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let job = start(lab.node(1), &argv);
    let mut placed = None;
    for step in &TOUR {
        wait_output(&job, step.after);
        if let Some(node) = placed {
            let now = location(&job);
            assert_eq!(
                now,
                node,
                "the previous round's calls took it from node {node} to node {now}:\n{}",
                String::from_utf8_lossy(&job.stderr())
            );
        }
        if moving {
            migrate(&job, step.target, step.node);
            placed = Some(step.node);
        }
        job.send(b"\n").unwrap_or_else(|e| fail(e));
    }
    finish(job)
}

/// One gzip run on node 1, its stdin fed from `input` by a thread (a pipe both ways). With
/// `moving` (the size of the unmoved run's output), gzip moves to node 2, home and node 3
/// as its output passes 15%, 35% and 55% of that size; the last tenth of the input is held
/// back until the last move is done, so gzip cannot finish first.
fn gzip_run(lab: &Lab, input: &[u8], argv: &[&str], moving: Option<usize>) -> Output {
    let held_back = input.len() / 10;
    let (release, released) = mpsc::channel::<()>();
    thread::scope(|scope| {
        // Started inside the scope, so that a panic here kills gzip before the scope waits
        // for the feeder.
        let job = start(lab.node(1), argv);
        let mut stdin = job.take_stdin().expect("gzip's stdin is a pipe");
        let feeder = scope.spawn(move || {
            let (head, tail) = input.split_at(input.len() - held_back);
            stdin.write_all(head)?;
            // Also released when the sender is dropped: a failing test must not hang here.
            let _ = released.recv();
            stdin.write_all(tail)
            // Dropping stdin closes the pipe: gzip sees the end of its input.
        });
        if let Some(total) = moving {
            for (step, percent) in TOUR.iter().zip([15, 35, 55]) {
                let size = total * percent / 100;
                job.wait_stdout(&format!("{size} bytes of output"), STEP, |out| {
                    out.len() >= size
                })
                .unwrap_or_else(|e| fail(e));
                migrate(&job, step.target, step.node);
            }
        }
        drop(release);
        let fed = feeder.join().expect("the feeder thread panicked");
        fed.unwrap_or_else(|e| panic!("cannot feed gzip: {e}"));
        finish(job)
    })
}

// ---- Job steps that panic with the whole story ----

fn start<'lab>(node: &'lab Node, argv: &[&str]) -> Job<'lab> {
    // The engine's events go to mosrun's stderr, which a failure shows (MOSRUN_LOG=debug
    // for more).
    let mut cmd = node.command("mosrun");
    let log = std::env::var("MOSRUN_LOG").unwrap_or_else(|_| "info".to_owned());
    cmd.env("MOSRUN_LOG", log).args(argv).stdin(Stdio::piped());
    Job::spawn(node, cmd).unwrap_or_else(|e| fail(e))
}

fn wait_output(job: &Job<'_>, needle: &str) {
    job.wait_output(needle, STEP).unwrap_or_else(|e| fail(e));
}

/// Moves the job to `target` and checks that `mosctl where` then says `node`.
fn migrate(job: &Job<'_>, target: &str, node: u16) {
    job.migrate(target)
        .unwrap_or_else(|e| fail_with(e, &job.stdout(), &job.stderr()));
    let now = location(job);
    assert_eq!(
        now,
        node,
        "`migrate {} {target}` left it on node {now}",
        job.pid()
    );
}

fn location(job: &Job<'_>) -> u16 {
    job.location()
        .unwrap_or_else(|e| fail_with(e, &job.stdout(), &job.stderr()))
}

fn finish(job: Job<'_>) -> Output {
    job.finish(RUN).unwrap_or_else(|e| fail(e))
}

/// Panics with `error` and its causes.
fn fail(error: JobError) -> ! {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    panic!("{text}");
}

/// Like [`fail`], with the job's output so far.
fn fail_with(error: JobError, stdout: &[u8], stderr: &[u8]) -> ! {
    panic!(
        "{error}\njob stdout:\n{}\njob stderr:\n{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
}

// ---- Checks ----

fn assert_same_output(name: &str, reference: &Output, moved: &Output) {
    assert_eq!(
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&reference.stdout),
        "{name}: stdout moved (left) differs from unmoved (right); moved run's stderr:\n{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert_eq!(
        moved.status,
        reference.status,
        "{name}: exit status moved (left) differs from unmoved (right)\n{}",
        shown(moved)
    );
}

/// Compares large outputs without printing them.
fn assert_same_bytes(name: &str, want: &[u8], got: &[u8]) {
    if want == got {
        return;
    }
    let first = want.iter().zip(got).position(|(a, b)| a != b);
    panic!(
        "{name}: moved run gave {} bytes, unmoved {}; first difference at {:?}",
        got.len(),
        want.len(),
        first.unwrap_or(want.len().min(got.len()))
    );
}

/// Waits until nodes 2 and 3 run nothing but their init and daemon: no husk, no guest
/// supervisor left by the job that just ended. They may take a moment to go after mosrun
/// ended; a deadline bounds it.
fn nodes_are_empty_again(lab: &Lab) {
    for node in &lab.nodes()[1..] {
        let deadline = Instant::now() + STEP;
        loop {
            let left = leftovers_in(node);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} still runs {left:#?} {STEP:?} after the job ended",
                node.id()
            );
            thread::sleep(POLL);
        }
    }
}

fn shown(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---- Inputs ----

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("lab paths are UTF-8")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Linking {
    Dynamic,
    Static,
}

/// `progs/suite/NAME.c`, compiled with `-mavx2` (and `-static` for [`Linking::Static`]) into
/// the target's tmp dir, which every node sees.
fn c_program(name: &str, linking: Linking) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("suite");
    let src = format!("{PROGS}/{name}.c");
    let flags = ["-Wextra", "-Werror", "-mavx2"];
    match linking {
        Linking::Dynamic => rmosix_lab::compiled(src, dir.join(name), &flags),
        Linking::Static => {
            let static_flags = [&flags[..], &["-static"]].concat();
            rmosix_lab::compiled(src, dir.join(format!("{name}-static")), &static_flags)
        }
    }
}

/// `len` bytes of text that compresses about fourfold: lines of words from a small
/// vocabulary, picked by xorshift64 with a fixed seed. Made once per test process.
fn compressible_input(len: usize) -> &'static [u8] {
    static INPUT: OnceLock<Vec<u8>> = OnceLock::new();
    INPUT.get_or_init(|| {
        const WORDS: [&[u8]; 16] = [
            b"home",
            b"deputy",
            b"remote",
            b"shell",
            b"husk",
            b"image",
            b"node",
            b"migrate",
            b"freeze",
            b"restore",
            b"page",
            b"area",
            b"register",
            b"signal",
            b"timer",
            b"fd",
        ];
        let mut out = Vec::with_capacity(len + 16);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut column = 0;
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = WORDS[(x & 15) as usize];
            out.extend_from_slice(word);
            column += word.len() + 1;
            if x >> 60 == 0 {
                out.extend_from_slice(format!(" {}", (x >> 20) % 100_000).as_bytes());
            }
            if column > 72 {
                out.push(b'\n');
                column = 0;
            } else {
                out.push(b' ');
            }
        }
        out.truncate(len);
        out
    })
}

/// Signals racing forwarded calls: writes.c, moved to node 2 while it waits for a line on
/// stdin, with SIGALRM every millisecond (SA_RESTART) from a timer that lives at home. Every
/// call must run exactly once: the read gets its line (never a kernel-internal restart code,
/// never a lost line) and every written line comes out once, in order. This once failed in
/// all those ways; docs/forwarding.md says what keeps it right.
#[test]
fn forwarded_calls_interrupted_by_timer_signals_run_once() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("writes", Linking::Dynamic);
    let job = start(lab.node(1), &[&program, "2000"]);
    wait_output(&job, "ready\n");
    // No `mosctl where` here: with the bug, the program may be gone by then.
    job.migrate("2").unwrap_or_else(|e| fail(e));
    let _ = job.send(b"\n");
    let out = finish(job);
    let want: String = std::iter::once("ready\n".to_owned())
        .chain((1..=2000).map(|i| format!("line {i}\n")))
        .collect();
    let got = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = got.lines().collect();
    let repeated: Vec<&str> = lines
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let failed: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("FAIL"))
        .collect();
    assert!(
        got == want && out.status.success(),
        "status {}; failures {failed:?}; lines written twice {repeated:?}",
        out.status
    );
    nodes_are_empty_again(&lab);
}
