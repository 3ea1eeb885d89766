//! Write-behind in real labs: a remote's writes to a pipe at home are answered at once and
//! reach home later, in order (docs/forwarding.md, "Fewer round trips: writes"). A program
//! moved to node 2 must write the same bytes and end the same way as one never moved; a
//! reader at home must get what it wrote without the program making another call, and
//! before the effects of a signal; EPIPE and EAGAIN must come as at home; and a link that
//! breaks while bytes written behind wait must lose the process with those bytes named.
//!
//! The program is `tests/progs/writebehind/behind.c`. It prints `ready` and reads a line
//! before it starts, so that the test moves it first. No test sleeps or measures time; every
//! wait has a deadline.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{Job, Lab, LabConfig, bin_dir_of_current_test, require_root};

/// Deadline of one step: output to appear, a move, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// How long the test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(10);

/// `progs/writebehind/behind.c`, compiled into the target's tmp dir.
fn behind() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/progs/writebehind/behind.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("writebehind")
            .join("behind");
        rmosix_lab::compiled(src, out, &[])
    })
}

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(2, bin_dir_of_current_test())).expect("start a 2-node lab")
}

/// Where it runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Place {
    Home,
    Moved,
}

/// Starts `behind ARGS` under mosrun at node 1, moves it to node 2 if `place` says so, and
/// lets it start.
fn start<'lab>(lab: &'lab Lab, args: &[&str], place: Place) -> Job<'lab> {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.arg(behind())
        .args(args)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .expect("the program starts");
    if place == Place::Moved {
        job.migrate("2").expect("migrate to node 2");
        assert_eq!(job.location().expect("mosctl where"), 2);
    }
    job.send(b"go\n").expect("let it start");
    job
}

fn finish(job: Job<'_>) -> Output {
    job.finish(STEP).expect("the job ends")
}

/// A new FIFO `name` in the lab's work dir, which every node sees.
fn make_fifo(lab: &Lab, name: &str) -> PathBuf {
    let path = lab.work_dir().join(name);
    let _ = fs::remove_file(&path);
    let made = Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
    path
}

/// A FIFO in the lab's work dir (every node sees it), with its read end open here,
/// non-blocking, so that the program's open for writing does not wait.
fn fifo(lab: &Lab, name: &str) -> (PathBuf, File) {
    let path = make_fifo(lab, name);
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("open the FIFO's read end");
    (path, reader)
}

/// The FIFO `name`, read by a child (`cat`) whose stdout the test drains: killing the child
/// closes the read end for good. A read end this test process held itself would also be
/// open, for a moment, in every child another test thread forks, until that child execs; a
/// write meant to fail with EPIPE then found a reader (one run in four, under load).
fn fifo_read_by_child(lab: &Lab, name: &str) -> (PathBuf, Child, File) {
    let path = make_fifo(lab, name);
    let mut cat = Command::new("cat")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start cat");
    let out = File::from(OwnedFd::from(cat.stdout.take().expect("cat's stdout")));
    // SAFETY: setting a status flag of a descriptor we own.
    let flagged = unsafe { libc::fcntl(out.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(flagged, 0, "make cat's stdout non-blocking");
    (path, cat, out)
}

/// What waits in the non-blocking `reader` now.
fn drain(reader: &mut File) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return got,
            Err(e) => panic!("read the FIFO: {e}"),
        }
    }
}

/// Waits until `cond` holds; panics after STEP with `what`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {STEP:?}");
        thread::sleep(POLL);
    }
}

/// What `three_pieces` in behind.c writes.
fn three_pieces() -> Vec<u8> {
    let mut expected = b"x".to_vec();
    for c in [b'a', b'b', b'c'] {
        expected.extend_from_slice(&[c; 1000]);
    }
    expected
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn a_pipe_writer_moved_writes_the_same_bytes_as_one_never_moved() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    // 12 MiB in 4 KiB writes, each its own call; the last ones are written behind when the
    // program exits, which must not overtake them.
    let args = ["stream", "3000"];
    let home = finish(start(&lab, &args, Place::Home));
    let moved = finish(start(&lab, &args, Place::Moved));
    assert!(home.status.success(), "{home:?}");
    assert_eq!(moved.status.code(), home.status.code());
    assert_eq!(home.stdout.len(), "ready\n".len() + 3000 * 4096);
    assert!(
        moved.stdout == home.stdout,
        "the moved program's output differs: {} bytes against {}",
        moved.stdout.len(),
        home.stdout.len()
    );
}

#[test]
fn bytes_written_behind_reach_home_without_another_call_and_before_a_signals_effects() {
    if !require_root() {
        return;
    }
    let lab = start_lab();

    // The program writes, then makes no call that goes home: the bytes come anyway.
    let (path, mut reader) = fifo(&lab, "quiet");
    let job = start(&lab, &["quiet", path_str(&path)], Place::Moved);
    let mut got = Vec::new();
    wait_until("the written-behind bytes at home", || {
        got.extend(drain(&mut reader));
        got.len() >= three_pieces().len()
    });
    assert_eq!(got, three_pieces());
    job.signal("USR1").expect("kill -USR1");
    let done = finish(job);
    assert!(done.status.success(), "{done:?}");

    // A signal the remote's own kernel sends (a CPU-time timer) runs a handler that makes
    // a file at home: when the file is there, so are the bytes written before.
    let (path, mut reader) = fifo(&lab, "prof");
    let mark = lab.work_dir().join("prof-mark");
    let _ = fs::remove_file(&mark);
    let job = start(
        &lab,
        &["prof", path_str(&path), path_str(&mark)],
        Place::Moved,
    );
    wait_until("the handler's file", || mark.exists());
    assert_eq!(drain(&mut reader), three_pieces());
    let done = finish(job);
    assert!(done.status.success(), "{done:?}");
}

/// Runs `behind MODE FIFO` at home and moved, with `between` run once it started.
fn both_ways(lab: &Lab, mode: &str, between: impl Fn(&Job<'_>, &mut File)) -> [Output; 2] {
    [Place::Home, Place::Moved].map(|place| {
        let (path, mut reader) = fifo(lab, mode);
        let job = start(lab, &[mode, path_str(&path)], place);
        between(&job, &mut reader);
        finish(job)
    })
}

#[test]
fn epipe_and_eagain_come_as_at_home() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    // The reader closes after the first writes went; the next writes fail, with SIGPIPE
    // ignored and with its default action, which kills the program.
    let [home, moved] = [Place::Home, Place::Moved].map(|place| {
        let (path, mut cat, mut reader) = fifo_read_by_child(&lab, "epipe");
        let job = start(&lab, &["epipe", path_str(&path)], place);
        job.wait_output("opened\n", STEP).expect("the first writes");
        let mut got = Vec::new();
        wait_until("the first writes at home", || {
            got.extend(drain(&mut reader));
            got.len() >= three_pieces().len()
        });
        // Closed before the line that lets the program write again is sent.
        cat.kill().expect("kill cat");
        cat.wait().expect("reap cat");
        job.send(b"closed\n").expect("send the line");
        finish(job)
    });
    assert_eq!(home.status.signal(), Some(libc::SIGPIPE), "{home:?}");
    assert_eq!(moved.status.signal(), home.status.signal(), "{moved:?}");
    let expected = "ready\nopened\nignored: Broken pipe\nignored again: Broken pipe\n";
    assert_eq!(String::from_utf8_lossy(&home.stdout), expected);
    assert_eq!(String::from_utf8_lossy(&moved.stdout), expected);

    // A non-blocking pipe nobody reads: EAGAIN once it is full, after the same bytes.
    let [home, moved] = both_ways(&lab, "eagain", |_, _| {});
    let home_out = String::from_utf8_lossy(&home.stdout).into_owned();
    assert!(
        home_out.ends_with(", then Resource temporarily unavailable\n"),
        "{home:?}"
    );
    assert_eq!(String::from_utf8_lossy(&moved.stdout), home_out);
}

#[test]
fn a_link_that_breaks_while_writes_behind_wait_loses_the_process_and_names_the_bytes() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let (path, _reader) = fifo(&lab, "stuck");
    let job = start(&lab, &["stuck", path_str(&path)], Place::Moved);
    // The pipe is full: its shell at home waits to write the 3000 bytes to descriptor 4
    // that the program was told it wrote.
    let syscall = format!("/proc/{}/syscall", job.host_pid());
    wait_until("the shell writing to descriptor 4", || {
        fs::read_to_string(&syscall).is_ok_and(|s| s.starts_with("1 0x4 "))
    });
    lab.node(2).kill();
    let done = finish(job);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.signal(), Some(libc::SIGKILL), "{stderr}");
    assert!(
        stderr.contains("lost: link to node 2 lost")
            && stderr.contains("; 3000 bytes it was told it wrote were never written"),
        "{stderr}"
    );
}
