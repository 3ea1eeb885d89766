//! A command whose stdout and stderr are collected while it runs, for tests that start a
//! program inside a node (a tool, a daemon, an attacker's client), watch what it prints, and
//! check how it ended. Unlike [`Node::run`](crate::Node::run), its output may outgrow the
//! pipes. Its methods panic with the program's outputs when what they wait for does not come:
//! they are for tests.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::POLL;
use crate::job::{Stream, collect};
use crate::tool::ToolRun;

/// A started command with its outputs collected by two threads. Dropping it kills it (for a
/// command of [`Node::command`](crate::Node::command), the `nsenter` outside the node, whose
/// death kills the program inside).
pub struct Captured {
    what: String,
    child: Child,
    stdout: Arc<Stream>,
    stderr: Arc<Stream>,
    readers: Vec<JoinHandle<()>>,
}

impl Captured {
    /// Starts `cmd` with no stdin; `what` names it in messages. Panics if it cannot start.
    pub fn spawn(mut cmd: Command, what: impl Into<String>) -> Captured {
        let what = what.into();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = Arc::new(Stream::default());
        let stderr = Arc::new(Stream::default());
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), stdout.clone()),
            collect(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        Captured {
            what,
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().bytes).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().bytes).into_owned()
    }

    /// Both outputs so far, named, for a failure's message.
    pub fn outputs(&self) -> String {
        format!(
            "{} stdout:\n{}\n{} stderr:\n{}",
            self.what,
            self.stdout(),
            self.what,
            self.stderr()
        )
    }

    /// Whether the process has ended.
    pub fn ended(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_some()
    }

    /// Waits until stdout holds `needle`; panics after `timeout`, or as soon as stdout ends
    /// without it.
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) {
        let found = self.stdout.wait_until(timeout, |bytes| {
            String::from_utf8_lossy(bytes).contains(needle)
        });
        if let Err(ended) = found {
            let how = if ended {
                "before its stdout ended"
            } else {
                "within the time"
            };
            panic!(
                "{needle:?} from {}: not {how} ({timeout:?})\n{}",
                self.what,
                self.outputs()
            );
        }
    }

    /// Waits for the end: how it ended and everything it printed. Kills it and panics after
    /// `timeout`.
    pub fn finish(mut self, timeout: Duration) -> ToolRun {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not end within {timeout:?}\n{}",
                    self.what,
                    self.outputs()
                );
            }
            thread::sleep(POLL);
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        ToolRun {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        // A test that panics must not leave its processes behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `cond` holds, looking every few milliseconds, and returns how long that took;
/// panics after `timeout` with `what` and `context()` (say, a log that tells why).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= timeout {
            panic!("{what}: not within {timeout:?}\n{}", context());
        }
        thread::sleep(POLL);
    }
    start.elapsed()
}
