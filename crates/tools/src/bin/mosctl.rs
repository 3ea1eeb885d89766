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
    /// Refuse new guest processes from other nodes; those already here stay (root only).
    Block,
    /// Accept guest processes again (root only).
    Noblock,
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
    fn name(&self) -> &'static str {
        match self {
            Cmd::Keygen { .. } => "keygen",
            Cmd::Where { .. } => "where",
            Cmd::Status => "status",
            Cmd::Guests => "guests",
            Cmd::Block => "block",
            Cmd::Noblock => "noblock",
            Cmd::Expel => "expel",
            Cmd::Bring => "bring",
            Cmd::Whois { .. } => "whois",
            Cmd::Isup { .. } => "isup",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mosctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let daemon = args.common.daemon();
    let ask = |request| daemon.ask(&request, Some(REPLY_TIMEOUT));
    let name = args.command.name();
    let text = match &args.command {
        Cmd::Keygen { path } => {
            ClusterKey::generate(path)?;
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Block | Cmd::Noblock => {
            let blocked = matches!(args.command, Cmd::Block);
            match ask(Request::Block { blocked }).context(name)? {
                Reply::Ok => return Ok(ExitCode::SUCCESS),
                other => return unexpected(other).context(name),
            }
        }
        Cmd::Expel | Cmd::Bring => {
            let request = match args.command {
                Cmd::Expel => Request::Expel,
                _ => Request::Bring,
            };
            // As in MOSIX, it blocks until done, however long the moves take (^C gives up
            // waiting; the moves under way go on).
            return match daemon.ask(&request, None).context(name)? {
                Reply::Sent { failures, .. } if failures.is_empty() => Ok(ExitCode::SUCCESS),
                Reply::Sent { failures, .. } => {
                    for failure in failures {
                        eprintln!("mosctl: {name}: {failure}");
                    }
                    Ok(ExitCode::FAILURE)
                }
                other => unexpected(other).context(name),
            };
        }
        Cmd::Whois { query } => {
            let asked = query.clone();
            match ask(Request::Whois {
                query: query.clone(),
            })
            .context(name)?
            {
                Reply::Whois { node, host } => whois_line(asked.as_deref(), node, &host),
                other => return unexpected(other).context(name),
            }
        }
        Cmd::Isup { node } => match ask(Request::Isup { node: *node }).context(name)? {
            Reply::Up { up } => {
                print_out(if up { "yes\n" } else { "no\n" }).context("cannot write the output")?;
                return Ok(if up {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            other => return unexpected(other).context(name),
        },
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
    print_out(&text).context("cannot write the output")?;
    Ok(ExitCode::SUCCESS)
}

/// What `whois` prints: the address asked for a node number, the node number asked for an
/// address or name, both for this node.
fn whois_line(asked: Option<&str>, node: u16, host: &str) -> String {
    match asked {
        None => format!("this is node {node} ({host})\n"),
        Some(query) if query.trim().parse::<u16>().is_ok() => format!("{host}\n"),
        Some(_) => format!("{node}\n"),
    }
}

/// An error reply as the error it is; anything else as a protocol surprise.
fn unexpected<T>(reply: Reply) -> anyhow::Result<T> {
    match reply {
        Reply::Error { message } => bail!("{message}"),
        other => bail!("unexpected reply from mosixd: {other:?}"),
    }
}
