//! `mosctl`: administer the local node.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use rmosix_tools::{CommonArgs, hosted_table, print_out};
use rmosix_transport::ClusterKey;
use rmosix_wire::{Reply, Request};

/// How long mosctl waits for an answer. The daemon answers `where` at once and `status`
/// within a few seconds whatever the map (it stops pinging after 3 s); past this, something
/// is wrong with it, and saying so beats hanging.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Administer rmosix on this node.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// Show this node's number, how many processes it supervises and hosts, and which other
    /// nodes answer.
    Status,
    /// List the processes of other nodes that run here: home node, PID at home, PID here,
    /// user, CPU seconds used here, resident MiB, and how long each has been here.
    Guests,
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let daemon = args.common.daemon();
    let ask = |request| daemon.ask(&request, Some(REPLY_TIMEOUT));
    let text = match &args.command {
        Cmd::Keygen { path } => {
            ClusterKey::generate(path)?;
            return Ok(());
        }
        Cmd::Where { pid } => match ask(Request::Where { pid: *pid })? {
            Reply::Location { node } => format!("{node}\n"),
            other => {
                return unexpected(other).with_context(|| format!("cannot locate process {pid}"));
            }
        },
        Cmd::Status => match ask(Request::Status)? {
            Reply::Status {
                node,
                processes,
                hosted,
                peers,
            } => {
                let mut text = format!(
                    "node {node}: this node, {processes} supervised processes, {hosted} hosted\n"
                );
                for peer in peers {
                    let state = if peer.up { "up" } else { "down" };
                    // Writing to a String cannot fail.
                    let _ = writeln!(text, "node {}: {state}", peer.node);
                }
                text
            }
            other => return unexpected(other).context("cannot get the status"),
        },
        Cmd::Guests => match ask(Request::Guests)? {
            Reply::Guests { processes } => hosted_table(&processes),
            other => return unexpected(other).context("cannot list the hosted processes"),
        },
    };
    print_out(&text).context("cannot write the output")
}

/// An error reply as the error it is; anything else as a protocol surprise.
fn unexpected(reply: Reply) -> anyhow::Result<()> {
    match reply {
        Reply::Error { message } => bail!("{message}"),
        other => bail!("unexpected reply from mosixd: {other:?}"),
    }
}
