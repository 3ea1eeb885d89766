//! `mosctl`'s command line: administer the local node.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::CommonArgs;

/// Administer rmosix on this node.
#[derive(Parser)]
#[command(version)]
pub struct Args {
    /// Flags every tool has.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// mosctl's subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Write a new cluster key to PATH (mode 0600; refuses to overwrite). Copy the same file to
    /// every node.
    Keygen {
        /// Where to write the key, e.g. /etc/mosix/key.
        path: PathBuf,
    },
    /// Print the number of the node where process PID runs.
    Where {
        /// The process, by its PID at home.
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
    },
    /// Show this node's number and how many processes it supervises and hosts, then every node
    /// of the map as the cluster view has it: up, suspect or dead, and for a live node its
    /// load, speed, CPUs, free and total memory, utilisation and modes.
    Status,
    /// Print a node's load (100 = one CPU-busy process on a standard CPU); this node's
    /// without NODE.
    Getload {
        /// The node, by number.
        #[arg(value_name = "NODE", value_parser = clap::value_parser!(u16).range(1..))]
        node: Option<u16>,
    },
    /// Print a node's CPU speed (10000 = a standard CPU).
    Getspeed {
        /// The node, by number.
        #[arg(value_name = "NODE", value_parser = clap::value_parser!(u16).range(1..))]
        node: Option<u16>,
    },
    /// Print a node's free memory in bytes: what its processes may still use (within its
    /// cgroup's limit).
    Getmem {
        /// The node, by number.
        #[arg(value_name = "NODE", value_parser = clap::value_parser!(u16).range(1..))]
        node: Option<u16>,
    },
    /// Print a node's free memory in bytes (the figure getmem prints: nodes gossip one).
    Getfree {
        /// The node, by number.
        #[arg(value_name = "NODE", value_parser = clap::value_parser!(u16).range(1..))]
        node: Option<u16>,
    },
    /// Print a node's CPU utilisation, percent.
    Getutil {
        /// The node, by number.
        #[arg(value_name = "NODE", value_parser = clap::value_parser!(u16).range(1..))]
        node: Option<u16>,
    },
    /// Set this node's CPU speed (10000 = a standard CPU) until the daemon restarts (root
    /// only).
    Setspeed {
        /// The new speed.
        #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        speed: u32,
    },
    /// List the processes of other nodes that run here: home node, PID at home, PID here,
    /// user, CPU seconds used here, resident MiB, and how long each has been here.
    Guests,
    /// Keep every process here, this node's own and guests, from leaving by automatic
    /// balancing (root only).
    Stay,
    /// Let processes leave this node by automatic balancing again (root only).
    Nostay,
    /// Keep this node's own processes from leaving by automatic balancing; guests may still
    /// leave (root only).
    Lstay,
    /// Let this node's own processes leave by automatic balancing again (root only).
    Nolstay,
    /// Refuse new guest processes from other nodes; those already here stay (root only).
    Block,
    /// Accept guest processes again (root only).
    Noblock,
    /// Take no part in automatic balancing: decide nothing, and tell the other nodes to send
    /// nothing here (root only).
    Quiet,
    /// Take part in automatic balancing again (root only).
    Noquiet,
    /// Close this node's files to other nodes' MFS: their requests for /mfs/N fail with
    /// EACCES (root only).
    Nomfs,
    /// Open this node's files to other nodes' MFS again (root only).
    Mfs,
    /// Block this node and send every guest process home; returns once all have gone or
    /// failed to (root only).
    Expel,
    /// Bring home every process of this node that runs elsewhere; returns once all have come
    /// or failed to (root only).
    Bring,
    /// Map a node number to its address, or an address or host name to its node number;
    /// without an argument, this node.
    Whois {
        /// A node number, an IP address or a host name of the map.
        #[arg(value_name = "NODE|ADDRESS")]
        query: Option<String>,
    },
    /// Say "yes" (exit 0) if node NODE's daemon answers within a few seconds, else "no"
    /// (exit 1).
    Isup {
        /// The node, by number.
        #[arg(value_name = "NODE", value_parser = clap::value_parser!(u16).range(1..))]
        node: u16,
    },
}

impl Cmd {
    /// The subcommand's name, as errors name it.
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Keygen { .. } => "keygen",
            Cmd::Where { .. } => "where",
            Cmd::Status => "status",
            Cmd::Guests => "guests",
            Cmd::Stay => "stay",
            Cmd::Nostay => "nostay",
            Cmd::Lstay => "lstay",
            Cmd::Nolstay => "nolstay",
            Cmd::Block => "block",
            Cmd::Noblock => "noblock",
            Cmd::Quiet => "quiet",
            Cmd::Noquiet => "noquiet",
            Cmd::Nomfs => "nomfs",
            Cmd::Mfs => "mfs",
            Cmd::Expel => "expel",
            Cmd::Bring => "bring",
            Cmd::Whois { .. } => "whois",
            Cmd::Isup { .. } => "isup",
            Cmd::Getload { .. } => "getload",
            Cmd::Getspeed { .. } => "getspeed",
            Cmd::Getmem { .. } => "getmem",
            Cmd::Getfree { .. } => "getfree",
            Cmd::Getutil { .. } => "getutil",
            Cmd::Setspeed { .. } => "setspeed",
        }
    }
}
