//! Running a tool inside a node to its end, as root or as an ordinary user, the way a test
//! asks `mosctl status` or `migrate PID 2` and reads what it printed.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::node::Node;
use crate::{LabError, POLL};

/// How a tool ended and what it printed.
#[derive(Debug)]
pub struct ToolRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Node {
    /// `tool ARGS` inside this node as root, to its end, which must come within `timeout`
    /// (else it is killed and this fails). For tools that print a few lines: the output
    /// must fit the pipes until the tool ends.
    pub fn run(&self, tool: &str, args: &[&str], timeout: Duration) -> Result<ToolRun, LabError> {
        let mut cmd = self.command(tool);
        cmd.args(args);
        finish(cmd, timeout)
    }

    /// As [`Node::run`], as user and group `uid` with no supplementary groups.
    pub fn run_as(
        &self,
        uid: u32,
        tool: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<ToolRun, LabError> {
        let mut cmd = self.command("setpriv");
        cmd.args([
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
            "--".to_owned(),
        ])
        .arg(tool)
        .args(args);
        finish(cmd, timeout)
    }
}

fn finish(mut cmd: Command, timeout: Duration) -> Result<ToolRun, LabError> {
    let what = crate::cmd::describe(&cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: what.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|source| LabError::Spawn {
            command: what.clone(),
            source,
        })? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::ToolTimeout {
                command: what,
                timeout,
            });
        }
        std::thread::sleep(POLL);
    };
    let read = |pipe: Option<&mut dyn Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
    Ok(ToolRun {
        status,
        stdout,
        stderr,
    })
}
