//! `migrate`'s command line: ask the local mosixd to move a process.

use std::str::FromStr;

use clap::Parser;

use rmosix_wire::{ParseTargetError, Target};

use crate::CommonArgs;

/// How long `migrate` waits unless told otherwise. MOSIX's waits without a bound; a bound
/// keeps a script from hanging on a daemon that never answers. A 1 GiB process moves in a few
/// seconds here, so five minutes leave room for a hundred times that.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;

/// Move a process that runs under mosrun to another node, or back home.
#[derive(Parser)]
#[command(version)]
pub struct Args {
    /// Flags every tool has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Give up after this many seconds (0: wait as long as the move takes). An order that has
    /// not started by then is cancelled; a move under way finishes.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// The process, by its PID at home.
    #[arg(value_parser = clap::value_parser!(i32).range(1..))]
    pub pid: i32,
    /// A node number or `home`; `balance`: wherever it runs best now (perhaps where it is);
    /// `lock` or `unlock`: keep it from moving by automatic balancing, or let it again.
    #[arg(value_name = "NODE|home|balance|lock|unlock")]
    pub order: Order,
}

/// What `migrate` asks for a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Move it there.
    Move(Target),
    /// Move it where the balancer would send it now.
    Balance,
    /// Lock it against automatic moves.
    Lock,
    /// Unlock it.
    Unlock,
}

impl FromStr for Order {
    type Err = ParseTargetError;

    fn from_str(s: &str) -> Result<Order, ParseTargetError> {
        Ok(match s {
            "balance" => Order::Balance,
            "lock" => Order::Lock,
            "unlock" => Order::Unlock,
            _ => Order::Move(s.parse()?),
        })
    }
}
