//! `mosctl`: administer the local node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use rmosix_tools::{CommonArgs, ask};
use rmosix_transport::ClusterKey;
use rmosix_wire::{Reply, Request};

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
    /// Show this node's number, its supervised processes and which other nodes answer.
    Status,
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
    let socket = &args.common.socket;
    match &args.command {
        Cmd::Keygen { path } => {
            ClusterKey::generate(path)?;
        }
        Cmd::Where { pid } => match ask(socket, &Request::Where { pid: *pid })? {
            Reply::Location { node } => println!("{node}"),
            other => {
                return unexpected(other).with_context(|| format!("cannot locate process {pid}"));
            }
        },
        Cmd::Status => match ask(socket, &Request::Status)? {
            Reply::Status {
                node,
                processes,
                peers,
            } => {
                println!("node {node}: this node, {processes} supervised processes");
                for peer in peers {
                    println!(
                        "node {}: {}",
                        peer.node,
                        if peer.up { "up" } else { "down" }
                    );
                }
            }
            other => return unexpected(other).context("cannot get the status"),
        },
    }
    Ok(())
}

/// An error reply as the error it is; anything else as a protocol surprise.
fn unexpected(reply: Reply) -> anyhow::Result<()> {
    match reply {
        Reply::Error { message } => bail!("{message}"),
        other => bail!("unexpected reply from mosixd: {other:?}"),
    }
}
