//! Running the helper programs (`ip`, `kill`) and turning their failures into [`LabError`]s.

use std::process::{Command, Stdio};

use crate::LabError;

/// Runs `cmd` to completion and returns its stdout; a non-zero exit becomes
/// [`LabError::CommandFailed`] with the command line and its stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String, LabError> {
    let command = describe(cmd);
    tracing::trace!(%command, "run");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::CommandFailed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS...`
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

/// The command line of `cmd`, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}
