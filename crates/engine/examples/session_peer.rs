//! Both ends of a migration session without daemons or a network: the engine's own test of
//! the home/guest protocol (tests/session.rs) runs this.
//!
//! `session_peer home PROGRAM ARGS...` supervises PROGRAM as `mosrun` would. Its "daemon" is
//! this process's stdin and stdout: each stdin line `PID NODE` (or `PID home`) is an order,
//! and every report goes to stdout as one line (`started PID`, `moved PID NODE|home`,
//! `done ID ok` or `done ID err WHY`, `ended PID`, and last `end exited N` or `end killed
//! SIG`). A session to a node is a Unix socket pair, the other end given to a new
//! `session_peer guest` as its stdin.
//!
//! `session_peer guest` serves one session on its stdin.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use rmosix_engine::{
    Channel, Daemon, ExecPlacement, JobEnd, Left, Order, Pid, Reports, serve_guest, supervise,
};
use rmosix_wire::{MoveError, Tally};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("home") if args.len() > 1 => home(&args[1..]),
        Some("guest") => guest(),
        _ => {
            eprintln!("usage: session_peer home PROGRAM ARGS... | session_peer guest");
            std::process::exit(2);
        }
    }
}

fn home(argv: &[String]) {
    // Read raw, not through std's buffer, so that a poll of the fd never misses a line
    // buffered above it; and without blocking, as the supervisor asks until there is none.
    let stdin = io::stdin().as_fd().try_clone_to_owned().expect("stdin");
    // SAFETY: setting a status flag of a descriptor we own.
    unsafe { libc::fcntl(stdin.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut daemon = LineDaemon {
        stdin: File::from(stdin),
        buffered: Vec::new(),
        next_id: 0,
    };
    let end = supervise(&argv[0], argv, &mut daemon, None).expect("supervise");
    match end {
        JobEnd::Exited(code) => say(format!("end exited {code}")),
        JobEnd::Killed(sig) => say(format!("end killed {sig}")),
    }
}

fn guest() {
    // SAFETY: fd 0 is the session socket our parent passed as stdin, owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(0) };
    let channel = Channel::unix(UnixStream::from(socket)).expect("session channel");
    serve_guest(channel, &rmosix_engine::Consistent::default(), &mut Quiet)
        .expect("serve the session");
}

/// Reports go nowhere: the home end reports what the test checks.
struct Quiet;

impl Reports for Quiet {
    fn running(&mut self, _husk: Pid, _home_pid: i32) {}
    fn left(&mut self, _how: Left) {}
    fn waited(&mut self, _total: Duration) {}
}

fn say(line: String) {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// The supervisor's daemon, over stdin (orders) and stdout (reports).
struct LineDaemon {
    stdin: File,
    /// Bytes of stdin not yet made into an order.
    buffered: Vec<u8>,
    next_id: u64,
}

impl Daemon for LineDaemon {
    fn order_fd(&self) -> Option<RawFd> {
        Some(self.stdin.as_raw_fd())
    }

    fn next_order(&mut self) -> io::Result<Option<Order>> {
        if !self.buffered.contains(&b'\n') {
            let mut chunk = [0u8; 256];
            match self.stdin.read(&mut chunk) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stdin closed")),
                Ok(n) => self.buffered.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let Some(end) = self.buffered.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line: Vec<u8> = self.buffered.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line);
        let mut words = line.split_whitespace();
        let (Some(pid), Some(target)) = (words.next(), words.next()) else {
            return Err(io::Error::other(format!("bad order {line:?}")));
        };
        self.next_id += 1;
        Ok(Some(Order {
            id: self.next_id,
            pid: pid.parse().map_err(io::Error::other)?,
            target: match target {
                "home" => None,
                node => Some(node.parse().map_err(io::Error::other)?),
            },
        }))
    }

    fn order_done(&mut self, id: u64, result: Result<(), MoveError>) {
        match result {
            Ok(()) => say(format!("done {id} ok")),
            Err(why) => say(format!("done {id} err {why}")),
        }
    }

    fn open_session(&mut self, node: u16) -> Result<Channel, MoveError> {
        let down = |e: io::Error| MoveError::TargetDown {
            node,
            reason: e.to_string(),
        };
        let (ours, theirs) = UnixStream::pair().map_err(down)?;
        let exe = std::env::current_exe().map_err(down)?;
        Command::new(exe)
            .arg("guest")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .map_err(down)?;
        Channel::unix(ours).map_err(down)
    }

    fn tally(&mut self, tally: Tally) {
        let json = serde_json::to_string(&tally).expect("a tally is JSON");
        say(format!("tally {json}"));
    }

    fn started(&mut self, pid: Pid) {
        say(format!("started {pid}"));
    }

    fn forked(&mut self, pid: Pid) {
        say(format!("forked {pid}"));
    }

    fn moved(&mut self, pid: Pid, node: Option<u16>) {
        match node {
            Some(node) => say(format!("moved {pid} {node}")),
            None => say(format!("moved {pid} home")),
        }
    }

    fn ended(&mut self, pid: Pid) {
        say(format!("ended {pid}"));
    }

    /// This daemon does not place: a process runs on where it exec'd.
    fn execed(&mut self, _pid: Pid) -> bool {
        false
    }

    fn next_placement(&mut self) -> Option<ExecPlacement> {
        None
    }
}
