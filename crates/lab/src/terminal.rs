//! A program run in a node on a pseudo-terminal, as a user at a terminal would run it: the
//! program leads a new session whose controlling terminal is the pty, and stdin, stdout and
//! stderr are its other end. The test types into the master side ([`Terminal::send`]: text,
//! Ctrl-C as `\x03`, Ctrl-Z as `\x1a`) and reads what the terminal shows
//! ([`Terminal::expect`], [`Terminal::transcript`]). Run an interactive shell
//! (`bash --norc -i`) there to get job control; its `mosrun` jobs are found with
//! [`Terminal::program`].
//!
//! ```text
//! nsenter (our Child, outside the node)
//!  └─ setsid -c PROGRAM ARGS   (a session leader whose terminal is the pty, through env
//!      │                        --default-signal: SIGINT and SIGQUIT at their defaults)
//!      └─ ...                  e.g. bash -> mosrun -> python3
//! ```
//!
//! Every wait has a deadline; errors carry the transcript so far. Dropping a terminal kills
//! every process of its session.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::pty::{Winsize, openpty};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::job::{Stream, collect, location, migrate, tail};
use crate::{JobError, LabError, Node, POLL, child_of, pid_in_node, processes_in, wait_child_of};

/// How long the session leader and a `mosrun` job's program may take to appear.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The terminal's size, which `TIOCGWINSZ` reports.
const SIZE: Winsize = Winsize {
    ws_row: 24,
    ws_col: 80,
    ws_xpixel: 0,
    ws_ypixel: 0,
};

/// The program a terminal's `mosrun` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// Its PID in its home node, which `migrate` and `mosctl` take.
    pub pid: u32,
    /// Its PID as the host sees it: the process at home (the program itself, or its shell
    /// while it runs elsewhere, which runs the calls it forwards).
    pub host_pid: u32,
}

/// A program running in a node with a pseudo-terminal as its controlling terminal.
#[derive(Debug)]
pub struct Terminal<'lab> {
    node: &'lab Node,
    command: String,
    child: Child,
    master: File,
    screen: Arc<Stream>,
    /// How much of the screen [`Terminal::expect`] has gone past.
    seen: Mutex<usize>,
    /// The session leader, as the host sees it: its PID is the session's id.
    leader: u32,
}

impl<'lab> Terminal<'lab> {
    /// Starts `argv` in `node` as the leader of a new session on a fresh 80x24 pty, with
    /// `env` added to the environment, and returns once it runs.
    pub fn start(
        node: &'lab Node,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Terminal<'lab>, JobError> {
        let command = argv.join(" ");
        let spawn_error = |source: io::Error| JobError::Spawn {
            command: command.clone(),
            source,
        };
        let pty = openpty(Some(&SIZE), None).map_err(|e| spawn_error(e.into()))?;
        // The session's processes must not hold the master: closing ours hangs them up.
        fcntl(&pty.master, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| spawn_error(e.into()))?;
        let master = File::from(pty.master);
        // Its copies (F_DUPFD_CLOEXEC) do not leak into the session either.
        let screen_side = master.try_clone().map_err(spawn_error)?;
        let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        let (stdin, stdout) = (slave(&pty.slave), slave(&pty.slave));
        // The session starts with the keyboard's signals at their defaults, as a login's
        // does, whatever the test runner inherited: one started in the background by a
        // non-interactive shell ignores SIGINT and SIGQUIT, every program of the session
        // would inherit that, and Ctrl-C would do nothing (Python installs no handler for a
        // signal ignored at its start).
        let mut cmd = node.command("env");
        cmd.args(["--default-signal=INT,QUIT", "setsid", "--ctty"])
            .args(argv)
            .envs(env.iter().copied())
            .stdin(stdin.map_err(spawn_error)?)
            .stdout(stdout.map_err(spawn_error)?)
            .stderr(Stdio::from(pty.slave));
        let mut child = cmd.spawn().map_err(spawn_error)?;
        // The slave's copies in `cmd` close with it: the master then reads EIO once the
        // session's last process has closed the slave, which ends the reader thread (it is
        // not joined).
        drop(cmd);
        let screen = Arc::new(Stream::default());
        collect(screen_side, screen.clone());
        let leader = match wait_child_of(child.id(), SPAWN_TIMEOUT) {
            Ok(leader) => leader,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(JobError::NoProgram { command, source });
            }
        };
        Ok(Terminal {
            node,
            command,
            child,
            master,
            screen,
            seen: Mutex::new(0),
            leader,
        })
    }

    /// Types `bytes` at the terminal.
    pub fn send(&self, bytes: &[u8]) -> Result<(), JobError> {
        (&self.master)
            .write_all(bytes)
            .map_err(|source| JobError::Stdin {
                command: self.command.clone(),
                source,
            })
    }

    /// Waits until the terminal shows `needle` after what earlier calls found, and goes
    /// past it; fails after `timeout`, or as soon as the session has closed the terminal.
    pub fn expect(&self, needle: &str, timeout: Duration) -> Result<(), JobError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let from = *seen;
        let needle = needle.as_bytes();
        let mut found = None;
        self.screen
            .wait_until(timeout, |screen| {
                found = screen
                    .get(from..)
                    .and_then(|s| s.windows(needle.len().max(1)).position(|w| w == needle))
                    .map(|at| from + at + needle.len());
                found.is_some()
            })
            .map_err(|ended| JobError::OutputTimeout {
                command: self.command.clone(),
                what: format!("{:?} on the terminal", String::from_utf8_lossy(needle)),
                timeout,
                ended,
                stdout: self.shown(),
                stderr: String::new(),
            })?;
        *seen = found.unwrap_or(from);
        Ok(())
    }

    /// Everything the terminal showed so far, as text with the line ends a terminal writes
    /// (`\r\n`) made plain.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().bytes).replace("\r\n", "\n")
    }

    /// The end of the transcript, for a message.
    fn shown(&self) -> String {
        tail(self.transcript().as_bytes())
    }

    /// The session leader's PID as the host sees it.
    pub fn leader_host_pid(&self) -> u32 {
        self.leader
    }

    /// The program that the session's `mosrun` runs: the session leader's if it is
    /// `mosrun`, else its first child's (a shell's job). Waits for it to appear.
    pub fn program(&self) -> Result<Program, JobError> {
        let no_program = |source| JobError::NoProgram {
            command: self.command.clone(),
            source,
        };
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        let mosrun = loop {
            if comm(self.leader).as_deref() == Some("mosrun") {
                break self.leader;
            }
            if let Some(child) = child_of(self.leader)
                && comm(child).as_deref() == Some("mosrun")
            {
                break child;
            }
            if Instant::now() >= deadline {
                return Err(no_program(LabError::NoChild {
                    pid: self.leader,
                    timeout: SPAWN_TIMEOUT,
                }));
            }
            thread::sleep(POLL);
        };
        let host_pid = wait_child_of(mosrun, SPAWN_TIMEOUT).map_err(no_program)?;
        let pid = pid_in_node(host_pid).ok_or(no_program(LabError::NotInNode { pid: host_pid }))?;
        Ok(Program { pid, host_pid })
    }

    /// Runs `migrate PID TARGET` in the terminal's node for program `pid` (see
    /// [`Terminal::program`]) and returns once it has moved.
    pub fn migrate(&self, pid: u32, target: &str) -> Result<(), JobError> {
        migrate(self.node, pid, target)
    }

    /// Where program `pid` runs now (`mosctl where PID` in the terminal's node).
    pub fn location(&self, pid: u32) -> Result<u16, JobError> {
        location(self.node, pid)
    }

    /// Waits up to `timeout` for the session leader to end and returns how it ended with
    /// the whole transcript. After the deadline the session is killed and the error shows
    /// the transcript.
    pub fn finish(mut self, timeout: Duration) -> Result<(ExitStatus, String), JobError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok((status, self.transcript())),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
                Ok(None) => {
                    return Err(JobError::NotFinished {
                        command: self.command.clone(),
                        timeout,
                        stdout: self.shown(),
                        stderr: String::new(),
                    });
                }
                Err(source) => {
                    return Err(JobError::Wait {
                        command: self.command.clone(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for Terminal<'_> {
    fn drop(&mut self) {
        // The leader's death would hang up only the foreground job: a stopped one lives on.
        for process in processes_in(self.node) {
            if session_of(process.host_pid) == Some(self.leader) {
                let _ = kill(Pid::from_raw(process.host_pid as i32), Signal::SIGKILL);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command name of the host process `pid`.
fn comm(pid: u32) -> Option<String> {
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(name.trim_end().to_owned())
}

/// The session id of the host process `pid`, as the host numbers it: field 6 of
/// `/proc/PID/stat`, counted after the command name (which may hold spaces).
fn session_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(3)?.parse().ok()
}
