//! `migrate PID {NODE | home}`: ask the local mosixd to move a process.

use std::process::ExitCode;

use clap::Parser;

use rmosix_tools::{CommonArgs, ask};
use rmosix_wire::{Reply, Request, Target};

/// Move a process that runs under mosrun to another node, or back home.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
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
    let failure = match ask(&args.common.socket, &request) {
        Ok(Reply::Ok) => return ExitCode::SUCCESS,
        Ok(Reply::Failed(failure)) => failure.to_string(),
        Ok(Reply::Error { message }) => message,
        Ok(other) => format!("unexpected reply from mosixd: {other:?}"),
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    };
    eprintln!("migrate: cannot move {} {whither}: {failure}", args.pid);
    ExitCode::FAILURE
}
