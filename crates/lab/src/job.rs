//! Driving a job in a lab from a test: [`Job`] is a `mosrun PROG ARGS` started inside a node,
//! with its stdin, stdout and stderr piped to the test, and the tools (`migrate`, `mosctl
//! where`, `kill`) run against its program in the same node. [`processes_in`] and
//! [`leftovers_in`] list what runs in a node, to check that a job left nothing behind.
//!
//! Process tree of a job, as the host sees it:
//!
//! ```text
//! nsenter (our Child, outside the node)
//!  └─ mosrun PROG ARGS   (setpriv exec'd it; dies with nsenter)
//!      └─ PROG           Job::pid() is its PID inside the node
//! ```
//!
//! Every wait has a deadline. Errors that come from the job carry what it printed so far,
//! so a failed test shows why.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cmd::describe;
use crate::{LabError, Node, POLL, pid_in_node, wait_child_of};

/// How long the job's processes (mosrun, then its program) may take to appear.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one tool run (`migrate` waits until the move is done: a GiB of memory over
/// the lab's encrypted links takes seconds, not minutes).
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// The most bytes of a job's output an error message shows (its end).
const SHOWN_BYTES: usize = 4096;

/// What went wrong while driving a [`Job`]: one variant per step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job's command could not be started.
    #[error("cannot start `{command}`")]
    Spawn {
        /// The command line run in the node.
        command: String,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// mosrun or its program did not appear, or left the node at once.
    #[error("`{command}`: its program did not appear")]
    NoProgram {
        /// The job's command line.
        command: String,
        /// What the lab saw.
        #[source]
        source: LabError,
    },
    /// The job's output did not show what a test waited for in time.
    #[error(
        "`{command}`: no {what} after {timeout:?}{}\nstdout so far:\n{stdout}\nstderr so far:\n{stderr}",
        if *.ended { " (its output ended)" } else { "" }
    )]
    OutputTimeout {
        /// The job's command line.
        command: String,
        /// What was awaited, e.g. `"ready\n"`.
        what: String,
        /// How long the test waited.
        timeout: Duration,
        /// Whether stdout was closed (the awaited text can never come).
        ended: bool,
        /// The end of stdout so far.
        stdout: String,
        /// The end of stderr so far.
        stderr: String,
    },
    /// The job's stdin could not be written (closed, or the program is gone).
    #[error("`{command}`: cannot write its stdin")]
    Stdin {
        /// The job's command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tool (`migrate`, `mosctl`, `kill`) run in the job's node could not be started.
    #[error("cannot run `{command}` in node {node}")]
    ToolSpawn {
        /// The tool's command line.
        command: String,
        /// The node it ran in.
        node: u16,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// A tool ran and failed; its stderr says why.
    #[error("`{command}` in node {node} failed ({status}): {stderr}")]
    ToolFailed {
        /// The tool's command line.
        command: String,
        /// The node it ran in.
        node: u16,
        /// How it ended.
        status: ExitStatus,
        /// What it wrote to stderr, trimmed.
        stderr: String,
    },
    /// A tool did not end in time and was killed.
    #[error("`{command}` in node {node} did not end within {timeout:?}; stderr: {stderr}")]
    ToolTimeout {
        /// The tool's command line.
        command: String,
        /// The node it ran in.
        node: u16,
        /// How long it was given.
        timeout: Duration,
        /// What it wrote to stderr so far, trimmed.
        stderr: String,
    },
    /// `mosctl where` printed something that is not a node number.
    #[error("`{command}` printed {output:?}, not a node number")]
    BadLocation {
        /// The tool's command line.
        command: String,
        /// What it printed.
        output: String,
    },
    /// The job did not end in time; it was killed.
    #[error(
        "`{command}` did not end within {timeout:?}\nstdout so far:\n{stdout}\nstderr so far:\n{stderr}"
    )]
    NotFinished {
        /// The job's command line.
        command: String,
        /// How long the test waited.
        timeout: Duration,
        /// The end of stdout.
        stdout: String,
        /// The end of stderr.
        stderr: String,
    },
    /// Waiting for the job's end failed.
    #[error("cannot wait for `{command}`")]
    Wait {
        /// The job's command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A `mosrun PROG ARGS` running inside a node, driven by a test.
///
/// Its stdout and stderr are read by two threads into buffers that [`Job::wait_output`]
/// and [`Job::wait_stdout`] watch; stdin is whatever [`Job::start`] was given (with
/// [`Stdio::piped`], [`Job::send`] writes it). Dropping a job that has not
/// [finished](Job::finish) kills it.
#[derive(Debug)]
pub struct Job<'lab> {
    node: &'lab Node,
    command: String,
    child: Child,
    stdin: Mutex<Option<ChildStdin>>,
    stdout: Arc<Stream>,
    stderr: Arc<Stream>,
    readers: Vec<JoinHandle<()>>,
    mosrun_host: u32,
    program_host: u32,
    pid: u32,
}

impl<'lab> Job<'lab> {
    /// Starts `mosrun ARGV...` in `node` with `stdin` as its stdin (e.g. [`Stdio::piped`],
    /// [`Stdio::null`], a file) and returns once its program runs. The working directory is
    /// the test's own; use [`Job::spawn`] to choose it or to set environment variables.
    pub fn start(
        node: &'lab Node,
        argv: &[&str],
        stdin: impl Into<Stdio>,
    ) -> Result<Job<'lab>, JobError> {
        let mut cmd = node.command("mosrun");
        cmd.args(argv).stdin(stdin);
        Job::spawn(node, cmd)
    }

    /// Starts `cmd`, which must be `node.command("mosrun")` with arguments and perhaps a
    /// working directory, environment and stdin (null unless set). Stdout and stderr are
    /// piped here. Returns once mosrun's program runs.
    pub fn spawn(node: &'lab Node, mut cmd: Command) -> Result<Job<'lab>, JobError> {
        let command = shown_command(&cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| JobError::Spawn {
                command: command.clone(),
                source,
            })?;
        let stdout = Arc::new(Stream::default());
        let stderr = Arc::new(Stream::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, stderr.clone()));
        }
        let stdin = child.stdin.take();
        let found = find_program(child.id());
        let (mosrun_host, program_host, pid) = match found {
            Ok(found) => found,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(JobError::NoProgram { command, source });
            }
        };
        tracing::debug!(%command, node = node.id(), pid, "job started");
        Ok(Job {
            node,
            command,
            child,
            stdin: Mutex::new(stdin),
            stdout,
            stderr,
            readers,
            mosrun_host,
            program_host,
            pid,
        })
    }

    /// The program's PID inside its node (the child of mosrun): what `migrate` and `mosctl`
    /// take.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program's PID as the host sees it.
    pub fn host_pid(&self) -> u32 {
        self.program_host
    }

    /// mosrun's PID as the host sees it.
    pub fn mosrun_host_pid(&self) -> u32 {
        self.mosrun_host
    }

    /// The node the job was started in, its home.
    pub fn home(&self) -> &'lab Node {
        self.node
    }

    /// Everything the job wrote to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().bytes.clone()
    }

    /// Everything the job wrote to stderr so far (mosrun's log lines, with `MOSRUN_LOG`).
    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.lock().bytes.clone()
    }

    /// Both outputs so far, labelled, for a failing test's message.
    pub fn outputs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.stdout()),
            String::from_utf8_lossy(&self.stderr())
        )
    }

    /// Waits until stdout contains `needle`; fails after `timeout`, or as soon as stdout
    /// ends without it. The error shows the output so far.
    pub fn wait_output(&self, needle: &str, timeout: Duration) -> Result<(), JobError> {
        let needle_bytes = needle.as_bytes();
        self.wait_stdout(&format!("{needle:?} on stdout"), timeout, |out| {
            out.windows(needle_bytes.len().max(1))
                .any(|w| w == needle_bytes)
        })
    }

    /// Waits until `ready(stdout so far)` holds; fails after `timeout`, or as soon as stdout
    /// ends without it. `what` names the awaited state in the error.
    pub fn wait_stdout(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), JobError> {
        self.stdout
            .wait_until(timeout, ready)
            .map_err(|ended| JobError::OutputTimeout {
                command: self.command.clone(),
                what: what.to_owned(),
                timeout,
                ended,
                stdout: tail(&self.stdout()),
                stderr: tail(&self.stderr()),
            })
    }

    /// Writes `bytes` to the job's stdin (started with [`Stdio::piped`]).
    pub fn send(&self, bytes: &[u8]) -> Result<(), JobError> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let result = match stdin.as_mut() {
            Some(pipe) => pipe.write_all(bytes).and_then(|()| pipe.flush()),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "stdin is not a pipe or was closed",
            )),
        };
        result.map_err(|source| JobError::Stdin {
            command: self.command.clone(),
            source,
        })
    }

    /// Closes the job's stdin pipe: the program reads end of file.
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Takes the job's stdin pipe, e.g. for a thread that feeds it; `None` if it was not
    /// piped or already taken or closed.
    pub fn take_stdin(&self) -> Option<ChildStdin> {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Runs `migrate PID TARGET` in the home node and returns once the program has moved
    /// (`TARGET` is a node number or `home`). The error carries `migrate`'s stderr.
    pub fn migrate(&self, target: &str) -> Result<(), JobError> {
        migrate(self.node, self.pid, target)
    }

    /// Where the program runs now: `mosctl where PID` in the home node.
    pub fn location(&self) -> Result<u16, JobError> {
        location(self.node, self.pid)
    }

    /// Sends `signal` (a name as `kill` takes it: `INT`, `STOP`, …) to the program, from
    /// its home node.
    pub fn signal(&self, signal: &str) -> Result<(), JobError> {
        let pid = self.pid.to_string();
        self.tool("kill", &[&format!("-{signal}"), &pid]).map(drop)
    }

    /// Runs `program ARGS` in the home node with a deadline and returns its stdout.
    pub fn tool(&self, program: &str, args: &[&str]) -> Result<String, JobError> {
        run_in(self.node, program, args, TOOL_TIMEOUT)
    }

    /// Closes stdin, waits up to `timeout` for the job to end (mosrun and whatever holds its
    /// output pipes) and returns how mosrun ended with everything the job printed. After the
    /// deadline the job is killed and the error shows its output.
    pub fn finish(mut self, timeout: Duration) -> Result<Output, JobError> {
        self.close_stdin();
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(source) => {
                    return Err(JobError::Wait {
                        command: self.command.clone(),
                        source,
                    });
                }
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(JobError::NotFinished {
                    command: self.command.clone(),
                    timeout,
                    stdout: tail(&self.stdout()),
                    stderr: tail(&self.stderr()),
                });
            }
            thread::sleep(POLL);
        };
        // The pipes close when the last process holding them ends; a descendant the program
        // left running keeps them open, so the readers get the same deadline, and output
        // that may be incomplete is an error.
        for reader in std::mem::take(&mut self.readers) {
            while !reader.is_finished() {
                if Instant::now() >= deadline {
                    return Err(JobError::NotFinished {
                        command: format!("{} (its output pipes, after it ended)", self.command),
                        timeout,
                        stdout: tail(&self.stdout()),
                        stderr: tail(&self.stderr()),
                    });
                }
                thread::sleep(POLL);
            }
            let _ = reader.join();
        }
        Ok(Output {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        })
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        // mosrun has a parent-death signal of SIGKILL (see `Node::command`), so killing the
        // nsenter ends the job; a test that panics leaves nothing running.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process seen in a node's PID namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProcess {
    /// Its PID inside the node.
    pub pid: u32,
    /// Its PID as the host sees it.
    pub host_pid: u32,
    /// Its parent's PID as the host sees it.
    pub host_ppid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub name: String,
    /// Its state letter (`R`, `S`, `t`, `Z`, …).
    pub state: char,
}

/// The value of field `name` in a log line (`name=value`, up to the next space).
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    crate::batch::field_text(line, name)
}

/// The system calls, by number and in order, that mosrun served for its process `pid` (as
/// the job sees it), from mosrun's log at `rmosix_engine::home=trace` (`MOSRUN_LOG`): a
/// `call` line each.
pub fn calls_served_for(log: &str, pid: &str) -> Vec<i64> {
    (log.lines())
        .filter(|line| line.contains("rmosix_engine::home: call "))
        .filter(|line| log_field(line, "pid") == Some(pid))
        .filter_map(|line| log_field(line, "nr")?.parse().ok())
        .collect()
}

/// Every process in `node`'s PID namespace now, read from the host's /proc. A process
/// that goes away while it is read is left out.
pub fn processes_in(node: &Node) -> Vec<NodeProcess> {
    let Ok(ns) = fs::read_link(format!("/proc/{}/ns/pid", node.init_pid())) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<NodeProcess> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns))
        .filter_map(read_process)
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// The processes in `node` other than its init and its daemon (the `mosixd` the init
/// started): after a job ended, a node it visited should have none.
pub fn leftovers_in(node: &Node) -> Vec<NodeProcess> {
    let init = node.init_pid();
    processes_in(node)
        .into_iter()
        .filter(|p| p.host_pid != init && !(p.host_ppid == init && p.name == "mosixd"))
        .collect()
}

/// Reads one process's identity from the host's /proc.
fn read_process(host_pid: u32) -> Option<NodeProcess> {
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    Some(NodeProcess {
        pid: field("NSpid:")?.split_whitespace().last()?.parse().ok()?,
        host_pid,
        host_ppid: field("PPid:")?.parse().ok()?,
        name: field("Name:")?.to_owned(),
        state: field("State:")?.chars().next()?,
    })
}

/// Runs `program ARGS` inside `node`, killing it after `timeout`; returns its stdout, or an
/// error with its stderr.
fn run_in(
    node: &Node,
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, JobError> {
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = node.command(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| JobError::ToolSpawn {
        command: command.clone(),
        node: node.id(),
        source,
    })?;
    let out = Arc::new(Stream::default());
    let err = Arc::new(Stream::default());
    let mut readers = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        readers.push(collect(pipe, out.clone()));
    }
    if let Some(pipe) = child.stderr.take() {
        readers.push(collect(pipe, err.clone()));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(JobError::ToolTimeout {
                command,
                node: node.id(),
                timeout,
                stderr: text(&err.lock().bytes).trim().to_owned(),
            });
        }
        thread::sleep(POLL);
    };
    // The tools start no processes of their own, so their pipes close with them.
    for reader in readers {
        let _ = reader.join();
    }
    let stdout = text(&out.lock().bytes);
    if !status.success() {
        return Err(JobError::ToolFailed {
            command,
            node: node.id(),
            status,
            stderr: text(&err.lock().bytes).trim().to_owned(),
        });
    }
    Ok(stdout)
}

/// Runs `migrate PID TARGET` in `home`, the node of program `pid`, and returns once the
/// program has moved.
pub(crate) fn migrate(home: &Node, pid: u32, target: &str) -> Result<(), JobError> {
    run_in(home, "migrate", &[&pid.to_string(), target], TOOL_TIMEOUT).map(drop)
}

/// Where program `pid` of node `home` runs now: `mosctl where PID` in `home`.
pub(crate) fn location(home: &Node, pid: u32) -> Result<u16, JobError> {
    let pid = pid.to_string();
    let out = run_in(home, "mosctl", &["where", &pid], TOOL_TIMEOUT)?;
    out.trim().parse().map_err(|_| JobError::BadLocation {
        command: format!("mosctl where {pid}"),
        output: out,
    })
}

/// nsenter -> mosrun -> program: host PIDs of mosrun and the program, and the program's
/// PID in the node.
fn find_program(nsenter: u32) -> Result<(u32, u32, u32), LabError> {
    let mosrun = wait_child_of(nsenter, SPAWN_TIMEOUT)?;
    let program = wait_child_of(mosrun, SPAWN_TIMEOUT)?;
    let pid = pid_in_node(program).ok_or(LabError::NotInNode { pid: program })?;
    Ok((mosrun, program, pid))
}

/// The job's command line without the lab's wrapper (`sh -c ENTER … nsenter … setpriv`).
fn shown_command(cmd: &Command) -> String {
    let args: Vec<&OsStr> = cmd.get_args().collect();
    // `Node::command` runs `sh -c ENTER sh CGROUP INIT PROGRAM ARGS...`.
    match args.iter().position(|a| *a == "mosrun") {
        Some(i) => args[i..]
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        None => describe(cmd),
    }
}

/// Bytes that a reader thread appends to, and that waiters watch.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    state: Mutex<StreamState>,
    grew: Condvar,
}

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub(crate) bytes: Vec<u8>,
    /// The pipe reached end of file (or failed).
    ended: bool,
}

impl Stream {
    pub(crate) fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `ready(bytes so far)` holds; after `timeout`, or as soon as the stream
    /// ends without it, fails with whether it ended.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), bool> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if ready(&state.bytes) {
                return Ok(());
            }
            let now = Instant::now();
            if state.ended || now >= deadline {
                return Err(state.ended);
            }
            state = self
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A thread that copies `pipe` into `stream` until end of file.
pub(crate) fn collect(mut pipe: impl Read + Send + 'static, stream: Arc<Stream>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    stream.lock().bytes.extend_from_slice(&buf[..n]);
                    stream.grew.notify_all();
                }
            }
        }
        stream.lock().ended = true;
        stream.grew.notify_all();
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The end of `bytes` for an error message.
pub(crate) fn tail(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_BYTES {
        return text(bytes);
    }
    format!(
        "[{} bytes before]…{}",
        bytes.len() - SHOWN_BYTES,
        text(&bytes[bytes.len() - SHOWN_BYTES..])
    )
}
