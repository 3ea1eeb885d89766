//! `migrate PID {NODE | home}`: ask the local mosixd to move a process.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use rmosix_tools::CommonArgs;
use rmosix_wire::{AskError, Reply, Request, Target};

/// How long `migrate` waits unless told otherwise. MOSIX's waits without a bound; a bound
/// keeps a script from hanging on a daemon that never answers. A 1 GiB process moves in a few
/// seconds here, so five minutes leave room for a hundred times that.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// Move a process that runs under mosrun to another node, or back home.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Give up after this many seconds (0: wait as long as the move takes). An order that has
    /// not started by then is cancelled; a move under way finishes.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
    /// The process, by its PID at home.
    #[arg(value_parser = clap::value_parser!(i32).range(1..))]
    pid: i32,
    /// A node number, or `home`.
    #[arg(value_name = "NODE|home")]
    target: Target,
}

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
