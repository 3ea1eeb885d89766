//! `mosmon`: watch the cluster live, one bar per node of the map (see docs/mosmon.md).

use std::process::ExitCode;

use clap::Parser;

use rmosix_tools::cli::mosmon::Args;
use rmosix_tools::monitor::{Monitor, View, run};

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    let view = if args.memory {
        View::Memory
    } else if args.speed {
        View::Speed
    } else if args.utilisation {
        View::Utilisation
    } else {
        View::Load
    };
    match run(
        args.common.daemon(),
        Monitor::new(view, args.totals, args.dead),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosmon: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
