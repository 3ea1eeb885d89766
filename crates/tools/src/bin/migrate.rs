//! `migrate PID {NODE | home | balance | lock | unlock}`: ask the local mosixd to move a
//! process, or to lock or unlock it against automatic moves.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use rmosix_tools::cli::migrate::{Args, Order};
use rmosix_wire::{AskError, Reply, Request, Target};

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    let pid = args.pid;
    let (request, what) = match args.order {
        Order::Move(target) => {
            let whither = match target {
                Target::Home => "home".to_owned(),
                Target::Node(n) => format!("to node {n}"),
            };
            (
                Request::Migrate { pid, target },
                format!("move {pid} {whither}"),
            )
        }
        Order::Balance => (Request::Balance { pid }, format!("balance {pid}")),
        Order::Lock => (Request::Lock { pid, locked: true }, format!("lock {pid}")),
        Order::Unlock => (
            Request::Lock { pid, locked: false },
            format!("unlock {pid}"),
        ),
    };
    let timeout = (args.timeout > 0).then(|| Duration::from_secs(args.timeout));
    let failure = match args.common.daemon().ask(&request, timeout) {
        // A balance that finds it best where it is has nothing to do, as MOSIX's target is a
        // recommendation.
        Ok(Reply::Ok | Reply::Location { .. }) => return ExitCode::SUCCESS,
        Ok(Reply::Failed(failure)) => failure.to_string(),
        Ok(Reply::Error { message }) => message,
        Ok(other) => format!("unexpected reply from mosixd: {other:?}"),
        Err(e @ AskError::Timeout(_)) => {
            format!("{e}; gave up (the move is not made unless it had started)")
        }
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    };
    eprintln!("migrate: cannot {what}: {failure}");
    ExitCode::FAILURE
}
