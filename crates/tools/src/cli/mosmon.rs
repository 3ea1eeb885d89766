//! `mosmon`'s command line: watch the cluster live.

use clap::{ArgGroup, Parser};

use crate::CommonArgs;

/// Watch the cluster: a bar chart of every node's load, memory, speed or utilisation as the
/// local mosixd sees them, refreshed every second. Keys: l m s u choose the view, t totals,
/// d dead nodes, Left/Right and PageUp/PageDown scroll, h help, q quits.
#[derive(Parser)]
#[command(name = "mosmon", version, group(ArgGroup::new("view").args(["load", "memory", "speed", "utilisation"])))]
pub struct Args {
    /// Flags every tool has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Show the load, 100 = one busy process on a standard CPU (the default; key l).
    #[arg(short, long)]
    pub load: bool,
    /// Show the memory in MB, used and free (key m).
    #[arg(short, long)]
    pub memory: bool,
    /// Show the CPU speed, 10000 = a standard CPU, and the CPUs (key s).
    #[arg(short, long)]
    pub speed: bool,
    /// Show the CPU utilisation in percent (key u).
    #[arg(short, long)]
    pub utilisation: bool,
    /// Show the totals line: nodes up, CPUs, load and memory (key t).
    #[arg(short, long)]
    pub totals: bool,
    /// Show dead nodes too, each as DEAD (key d).
    #[arg(short, long)]
    pub dead: bool,
}
