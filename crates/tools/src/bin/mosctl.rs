//! `mosctl`: administer the local node.

use std::fmt::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use rmosix_tools::cli::mosctl::{Args, Cmd};
use rmosix_tools::{hosted_table, print_out};
use rmosix_transport::ClusterKey;
use rmosix_wire::{NodeMode, NodeStatus, Reply, Request};

/// How long mosctl waits for an answer. The daemon answers `where` at once and `status`
/// within a few seconds whatever the map (it stops pinging after 3 s); past this, something
/// is wrong with it, and saying so beats hanging.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

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
        Cmd::Stay
        | Cmd::Nostay
        | Cmd::Lstay
        | Cmd::Nolstay
        | Cmd::Block
        | Cmd::Noblock
        | Cmd::Quiet
        | Cmd::Noquiet
        | Cmd::Nomfs
        | Cmd::Mfs => {
            let (mode, on) = match args.command {
                Cmd::Stay => (NodeMode::Stay, true),
                Cmd::Nostay => (NodeMode::Stay, false),
                Cmd::Lstay => (NodeMode::Lstay, true),
                Cmd::Nolstay => (NodeMode::Lstay, false),
                Cmd::Block => (NodeMode::Block, true),
                Cmd::Noblock => (NodeMode::Block, false),
                Cmd::Quiet => (NodeMode::Quiet, true),
                Cmd::Noquiet => (NodeMode::Quiet, false),
                Cmd::Nomfs => (NodeMode::Nomfs, true),
                _ => (NodeMode::Nomfs, false),
            };
            match ask(Request::SetMode { mode, on }).context(name)? {
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
        Cmd::Setspeed { speed } => match ask(Request::SetSpeed { speed: *speed }).context(name)? {
            Reply::Ok => return Ok(ExitCode::SUCCESS),
            other => return unexpected(other).context(name),
        },
        Cmd::Getload { node }
        | Cmd::Getspeed { node }
        | Cmd::Getmem { node }
        | Cmd::Getfree { node }
        | Cmd::Getutil { node } => match ask(Request::Figures { node: *node }).context(name)? {
            Reply::Figures { figures, .. } => {
                let value = match args.command {
                    Cmd::Getload { .. } => u64::from(figures.load),
                    Cmd::Getspeed { .. } => u64::from(figures.speed),
                    Cmd::Getutil { .. } => u64::from(figures.utilisation_pct),
                    _ => figures.mem_free,
                };
                format!("{value}\n")
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
                nodes,
            } => {
                let mut text = format!(
                    "node {node}: this node, {processes} supervised processes, {hosted} hosted\n"
                );
                for node in &nodes {
                    text.push_str(&status_line(node));
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

/// One node's line of `status`: `node 2: up, load 37, speed 10000, 2 CPUs, memory 1534 of
/// 2048 MiB free, utilisation 5%`, then its modes (`, block`), if any.
fn status_line(node: &NodeStatus) -> String {
    let mut line = format!("node {}: {}", node.node, node.liveness);
    if let Some(f) = &node.figures {
        const MIB: u64 = 1 << 20;
        // Writing to a String cannot fail.
        let _ = write!(
            line,
            ", load {}, speed {}, {} CPUs, memory {} of {} MiB free, utilisation {}%",
            f.load,
            f.speed,
            cpus(f.milli_cpus),
            f.mem_free / MIB,
            f.mem_total / MIB,
            f.utilisation_pct
        );
        let m = f.modes;
        for (on, mode) in [
            (m.stay, "stay"),
            (m.lstay, "lstay"),
            (m.block, "block"),
            (m.quiet, "quiet"),
            (m.expel, "expel"),
        ] {
            if on {
                line.push_str(", ");
                line.push_str(mode);
            }
        }
    }
    line.push('\n');
    line
}

/// Thousandths of CPUs as a person writes them: `2`, `1.5`, `0.25`.
fn cpus(milli: u32) -> String {
    let text = format!("{}.{:03}", milli / 1000, milli % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
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

#[cfg(test)]
mod tests {
    use rmosix_wire::{Liveness, NodeFigures, NodeModes};

    use super::*;

    #[test]
    fn cpus_are_written_as_a_person_writes_them() {
        assert_eq!(cpus(2000), "2");
        assert_eq!(cpus(1500), "1.5");
        assert_eq!(cpus(250), "0.25");
        assert_eq!(cpus(1), "0.001");
        assert_eq!(cpus(0), "0");
    }

    #[test]
    fn status_lines_show_liveness_figures_and_modes() {
        let dead = NodeStatus {
            node: 3,
            liveness: Liveness::Dead,
            figures: None,
        };
        assert_eq!(status_line(&dead), "node 3: dead\n");
        let up = NodeStatus {
            node: 2,
            liveness: Liveness::Suspect,
            figures: Some(NodeFigures {
                load: 37,
                speed: 10000,
                milli_cpus: 1500,
                mem_total: 2048 << 20,
                mem_free: 1534 << 20,
                utilisation_pct: 5,
                modes: NodeModes {
                    block: true,
                    expel: true,
                    ..NodeModes::default()
                },
            }),
        };
        assert_eq!(
            status_line(&up),
            "node 2: suspect, load 37, speed 10000, 1.5 CPUs, memory 1534 of 2048 MiB free, \
             utilisation 5%, block, expel\n"
        );
    }
}
