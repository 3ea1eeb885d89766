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
        loop {
            match self.lines.recv_timeout(STEP) {
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

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_process_moves_out_home_out_and_on_over_socket_pairs() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let go = dir.path().join("go");
    let out = dir.path().join("out");
    let argv = [
        "/usr/bin/python3",
        "-c",
        PROGRAM,
        go.to_str().unwrap(),
        out.to_str().unwrap(),
    ];
    let mut home = Home::start(&argv);
    let started = home.expect("started ");
    let pid = started.trim_start_matches("started ").to_owned();
    // Its stdout is the home end's: the program's lines come among the reports.
    home.expect("ready");
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
