//! `mosps`'s command line: list the processes that run under mosrun on this node.

use clap::Parser;

use crate::{CommonArgs, parse_user};

/// List the processes started under mosrun on this node (their home), wherever they run:
/// PID, user, the node each runs on (NODE), whether it is locked against automatic moves
/// (LOCK), how many times it has moved (NMIGS), the CPU time and resident memory it uses
/// where it runs (TIME, RSS in KiB; "-" when its node did not answer), why its last move
/// failed (CANTMOVE), and its command line. Without options, your own processes.
#[derive(Parser)]
#[command(name = "mosps", version)]
pub struct Args {
    /// Flags every tool has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Every user's processes.
    #[arg(short = 'a', long, conflicts_with = "user")]
    pub all: bool,
    /// This user's processes (a name or a uid).
    #[arg(short = 'u', long, value_name = "USER", value_parser = parse_user)]
    pub user: Option<u32>,
    /// Show CANTMOVE's reasons whole, not cut to the column.
    #[arg(short = 'w', long)]
    pub wide: bool,
}
