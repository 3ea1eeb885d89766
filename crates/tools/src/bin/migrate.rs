//! `migrate PID {NODE | home}`: ask the local mosixd to move a process.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use rmosix_tools::cli::migrate::Args;
use rmosix_wire::{AskError, Reply, Request, Target};

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    let whither = match args.target {
        Target::Home => "home".to_owned(),
        Target::Node(n) => format!("to node {n}"),
    };
    let request = Request::Migrate {
        pid: args.pid,
        target: args.target,
    };
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let failure = match args.common.daemon().ask(&request, timeout) {
        Ok(Reply::Ok) => return ExitCode::SUCCESS,
        Ok(Reply::Failed(failure)) => failure.to_string(),
        Ok(Reply::Error { message }) => message,
        Ok(other) => format!("unexpected reply from mosixd: {other:?}"),
        Err(e @ AskError::Timeout(_)) => {
            format!("{e}; gave up (the move is not made unless it had started)")
        }
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    };
    eprintln!("migrate: cannot move {} {whither}: {failure}", args.pid);
    ExitCode::FAILURE
}
