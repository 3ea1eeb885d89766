//! `mosmon`: watch the cluster live, one bar per node of the map (see docs/mosmon.md).

use std::process::ExitCode;

use clap::{ArgGroup, Parser};

use rmosix_tools::CommonArgs;
use rmosix_tools::monitor::{Monitor, View, run};

/// Watch the cluster: a bar chart of every node's load, memory, speed or utilisation as the
/// local mosixd sees them, refreshed every second. Keys: l m s u choose the view, t totals,
/// d dead nodes, Left/Right and PageUp/PageDown scroll, h help, q quits.
#[derive(Parser)]
#[command(version, group(ArgGroup::new("view").args(["load", "memory", "speed", "utilisation"])))]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Show the load, 100 = one busy process on a standard CPU (the default; key l).
    #[arg(short, long)]
    load: bool,
    /// Show the memory in MB, used and free (key m).
    #[arg(short, long)]
    memory: bool,
    /// Show the CPU speed, 10000 = a standard CPU, and the CPUs (key s).
    #[arg(short, long)]
    speed: bool,
    /// Show the CPU utilisation in percent (key u).
    #[arg(short, long)]
    utilisation: bool,
    /// Show the totals line: nodes up, CPUs, load and memory (key t).
    #[arg(short, long)]
    totals: bool,
    /// Show dead nodes too, each as DEAD (key d).
    #[arg(short, long)]
    dead: bool,
}

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
