//! The home/guest session protocol end to end, without daemons or a network: the home end
//! supervises a program and sends it to "nodes" that are guest processes on Unix socket
//! pairs (examples/session_peer.rs). It moves out, comes home, goes out again and on to
//! another node, and finishes as an unmoved run would; what it tells its daemon's metrics
//! adds up.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use rmosix_wire::{MoveKind, MoveOutcome, Tally};

/// Deadline of every step.
const STEP: Duration = Duration::from_secs(60);

/// The program moved: it says it is ready, then works (stat of a file that is not there yet,
/// at the remote a forwarded call) until its go file exists, then writes its PID and a sum
/// to its output file and exits 7.
const PROGRAM: &str = "import os, sys, time
go, out = sys.argv[1], sys.argv[2]
print('ready', flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
with open(out, 'w') as f:
    f.write(f'pid {os.getpid()} sum {sum(range(100000))}\\n')
sys.exit(7)
";

/// The example binary, built by `cargo test` beside the tests.
fn session_peer() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    profile.join("examples").join("session_peer")
}

/// The home end, its orders and its report lines.
struct Home {
    child: Child,
    orders: ChildStdin,
    lines: Receiver<String>,
    /// Every tally the home end told so far, added up.
    tallied: Tally,
}

impl Home {
    fn start(argv: &[&str]) -> Home {
        let mut child = Command::new(session_peer())
            .arg("home")
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start session_peer (built by cargo test)");
        let orders = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Home {
            child,
            orders,
            lines,
            tallied: Tally::default(),
        }
    }

    /// The next report line that starts with `prefix` (others are skipped).
    fn expect(&mut self, prefix: &str) -> String {
        let mut skipped = Vec::new();
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) if line.starts_with("tally ") => {
                    let tally: Tally = serde_json::from_str(&line["tally ".len()..])
                        .unwrap_or_else(|e| panic!("{line}: {e}"));
                    assert!(!tally.is_empty(), "an empty tally");
                    assert!(self.tallied.add(&tally), "{line} does not fit");
                }
                Ok(line) => skipped.push(line),
                Err(e) => panic!("no line starting {prefix:?} ({e}); skipped {skipped:?}"),
            }
        }
    }

    /// Order `pid` to `target` and wait for its answer, which must be a success, after the
    /// report of the move. The move's tally comes before its answer.
    fn migrate(&mut self, pid: &str, target: &str) {
        writeln!(self.orders, "{pid} {target}").expect("send an order");
        assert_eq!(self.expect("moved "), format!("moved {pid} {target}"));
        let before = self.tallied.freeze_us.count();
        let done = self.expect("done ");
        assert!(done.ends_with(" ok"), "migrate {pid} {target}: {done}");
        assert_eq!(self.tallied.freeze_us.count(), before + 1, "{target}");
    }
}

/// The home end of Python `program` with `files` as its arguments, once the program said
/// "ready" (its stdout is the home end's: its lines come among the reports); and its PID.
fn start_ready(program: &str, files: &[&std::path::Path]) -> (Home, String) {
    let mut argv = vec!["/usr/bin/python3", "-c", program];
    argv.extend(files.iter().map(|f| f.to_str().unwrap()));
    let mut home = Home::start(&argv);
    let started = home.expect("started ");
    let pid = started.trim_start_matches("started ").to_owned();
    home.expect("ready");
    (home, pid)
}

impl Drop for Home {
    /// Kills the home end and its guests with their remotes: a test that failed leaves
    /// nothing running (nothing holding the test's output open either).
    fn drop(&mut self) {
        let mut all = vec![self.child.id()];
        let mut i = 0;
        while i < all.len() {
            all.extend(children(all[i]));
            i += 1;
        }
        for &pid in &all[1..] {
            // SAFETY: killing descendants of our own child, found just before; the home end
            // is alive until below, so none of them has been reaped and its PID reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_process_moves_out_home_out_and_on_over_socket_pairs() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let go = dir.path().join("go");
    let out = dir.path().join("out");
    let (mut home, pid) = start_ready(PROGRAM, &[&go, &out]);
    home.migrate(&pid, "2");
    home.migrate(&pid, "home");
    home.migrate(&pid, "2");
    home.migrate(&pid, "3");
    // An order to where it is is done at once.
    writeln!(home.orders, "{pid} 3").unwrap();
    assert!(home.expect("done ").ends_with(" ok"));
    std::fs::write(&go, "").unwrap();
    assert_eq!(home.expect("ended "), format!("ended {pid}"));
    assert_eq!(home.expect("end "), "end exited 7");
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(written, format!("pid {pid} sum 4999950000\n"));
    let tallied = &home.tallied;
    for (kind, done) in [(MoveKind::Out, 2), (MoveKind::Home, 1), (MoveKind::On, 1)] {
        assert_eq!(tallied.moves(kind, MoveOutcome::Done), done, "{kind:?}");
        for outcome in [MoveOutcome::Refused, MoveOutcome::Failed] {
            assert_eq!(tallied.moves(kind, outcome), 0, "{kind:?} {outcome:?}");
        }
    }
    // Images are counted as they leave home or pass through it.
    assert_eq!(tallied.image_bytes.count(), 3);
    assert!(tallied.image_bytes.sum > 0);
    // Its stats at the remotes were forwarded home.
    assert!(tallied.forwarded_us.count() > 0);
}

/// Ends by itself at a time it reads from its go file, computing meanwhile without a system
/// call (the clock is the vDSO's), so that its exit_group is the next call home hears of.
/// It writes its spinning file (at a remote, forwarded calls) before it spins.
const EXITS_AT_ITS_TIME: &str = "import os, sys, time
go, spinning = sys.argv[1], sys.argv[2]
print('ready', flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
with open(go) as f:
    deadline = float(f.read())
open(spinning, 'w').close()
while time.time() < deadline:
    pass
os._exit(7)
";

/// How long after the go file the program exits: the test must stop the home end before.
const EXIT_AFTER: Duration = Duration::from_secs(3);

/// The PIDs of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The remote of the home end `home`'s process: a child of one of its guests.
fn remote_of(home: u32) -> u32 {
    let guests = children(home).into_iter().filter(|&p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.ends_with(b"guest\0"))
    });
    let remotes: Vec<u32> = guests.flat_map(children).collect();
    assert_eq!(remotes.len(), 1, "remotes of the home end: {remotes:?}");
    remotes[0]
}

/// The fields of `/proc/PID/stat` from the third (state) on, after the command's closing
/// parenthesis.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(str::to_owned)
        .collect()
}

/// The CPU time `pid` has used, in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let fields = stat_fields(pid);
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Wait until `remote` has computed for `ticks` clock ticks after now. A process waiting for
/// a forwarded call's answer uses no CPU, and between two calls it runs for microseconds:
/// a program that spins without calls after its last forwarded one is in its spin once it
/// has used this much.
fn wait_for_spin(remote: u32, ticks: u64) {
    let from = cpu_ticks(remote);
    let started = std::time::Instant::now();
    while cpu_ticks(remote) < from + ticks {
        assert!(started.elapsed() < STEP, "the remote never spun");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until `remote` waits in exit_group for home's answer.
fn wait_for_exit_call(remote: u32) {
    let started = std::time::Instant::now();
    loop {
        let call = std::fs::read_to_string(format!("/proc/{remote}/syscall")).unwrap_or_default();
        if call.split_whitespace().next() == Some(&libc::SYS_exit_group.to_string()) {
            return;
        }
        assert!(
            started.elapsed() < STEP,
            "the remote never called exit_group"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The order to bring a process home reaches its home end together with the process's
/// exit_group: home asks for the image first, and then answers the exit with a restart code,
/// as any call that finds it waiting for the image. The remote must then move, and exit
/// where it lands, with its own status (it waited for home to run the exit, and home for
/// its image, for ever). The home end is stopped while both arrive, so that its next turn
/// sees them together: orders go first in a turn.
#[test]
fn an_exit_that_meets_an_order_home_ends_the_process_after_its_move() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let go = dir.path().join("go");
    let spinning = dir.path().join("spinning");
    let (mut home, pid) = start_ready(EXITS_AT_ITS_TIME, &[&go, &spinning]);
    home.migrate(&pid, "2");
    let remote = remote_of(home.child.id());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let exit_at = now + EXIT_AFTER;
    std::fs::write(&go, format!("{}", exit_at.as_secs_f64())).unwrap();
    let started = std::time::Instant::now();
    while !spinning.exists() {
        assert!(
            started.elapsed() < STEP,
            "the program never read its go file"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The spinning file exists once home has run its open; the close goes home after it.
    // Home must answer both before it is stopped, or the remote waits in them, not in its exit.
    wait_for_spin(remote, 5);
    let home_pid = libc::pid_t::try_from(home.child.id()).unwrap();
    // SAFETY: stopping and continuing our own child.
    assert_eq!(unsafe { libc::kill(home_pid, libc::SIGSTOP) }, 0);
    let stopped_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(
        stopped_at < exit_at,
        "the home end was stopped only after the program's exit: too slow to test the race"
    );
    wait_for_exit_call(remote);
    writeln!(home.orders, "{pid} home").unwrap();
    home.orders.flush().unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(home_pid, libc::SIGCONT) }, 0);

    assert_eq!(home.expect("moved "), format!("moved {pid} home"));
    assert!(home.expect("done ").ends_with(" ok"));
    assert_eq!(home.expect("ended "), format!("ended {pid}"));
    assert_eq!(home.expect("end "), "end exited 7");
}

/// Takes SCHED_IDLE and nice 5 at home, says it is ready; once its go file exists adds 2 to
/// its nice value (at a remote, a call home and one here) and writes its niced file; exits
/// 7 once its done file exists.
const NICED: &str = "import os, sys, time
go, niced, done = sys.argv[1], sys.argv[2], sys.argv[3]
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
os.nice(5)
print('ready', flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
os.nice(2)
open(niced, 'w').close()
while not os.path.exists(done):
    time.sleep(0.005)
sys.exit(7)
";

/// `pid`'s scheduling policy and nice value, from `/proc/PID/stat`.
fn sched_of(pid: u32) -> (u32, i32) {
    let fields = stat_fields(pid);
    (fields[38].parse().unwrap(), fields[16].parse().unwrap())
}

/// Waits until `path` exists.
fn wait_for_file(path: &std::path::Path) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(started.elapsed() < STEP, "{} never came", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A process under SCHED_IDLE at nice 5 keeps both away from home (else a batch started
/// under `nice` competes at full weight with the target's daemons); the nice value it sets
/// away is set at home too, and it comes home with it.
#[test]
fn a_process_keeps_its_scheduling_when_it_moves() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let [go, niced, done] = ["go", "niced", "done"].map(|f| dir.path().join(f));
    let (mut home, pid) = start_ready(NICED, &[&go, &niced, &done]);
    let shell: u32 = pid.parse().unwrap();
    assert_eq!(sched_of(shell), (libc::SCHED_IDLE as u32, 5), "at home");
    home.migrate(&pid, "2");
    let remote = remote_of(home.child.id());
    assert_eq!(sched_of(remote), (libc::SCHED_IDLE as u32, 5), "away");

    std::fs::write(&go, "").unwrap();
    wait_for_file(&niced);
    assert_eq!(sched_of(remote), (libc::SCHED_IDLE as u32, 7), "niced away");
    assert_eq!(sched_of(shell), (libc::SCHED_IDLE as u32, 7), "the shell");
    home.migrate(&pid, "home");
    assert_eq!(sched_of(shell), (libc::SCHED_IDLE as u32, 7), "back home");
    std::fs::write(&done, "").unwrap();
    assert_eq!(home.expect("ended "), format!("ended {pid}"));
    assert_eq!(home.expect("end "), "end exited 7");
}
