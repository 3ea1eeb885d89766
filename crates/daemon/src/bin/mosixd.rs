//! `mosixd`: the rmosix daemon. Runs in the foreground and logs to stderr.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use rmosix_config::{Map, NodeId};
use rmosix_daemon::{Config, Daemon};
use rmosix_wire::{DEFAULT_SOCKET, SOCKET_ENV};

/// The rmosix daemon: serves the tools on a Unix socket and other nodes on TCP.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The cluster map.
    #[arg(long, value_name = "FILE", default_value = Map::DEFAULT_PATH)]
    map: PathBuf,
    /// The cluster key (`mosctl keygen` makes one; it must be mode 0600).
    #[arg(long, value_name = "FILE", default_value = Config::DEFAULT_KEY)]
    key: PathBuf,
    /// This node's number, instead of finding it from the machine's addresses.
    #[arg(long, value_name = "N")]
    node: Option<NodeId>,
    /// The control socket for the tools.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// TCP port of the daemons.
    #[arg(long, value_name = "P", default_value_t = Config::DEFAULT_PORT)]
    port: u16,
    /// Control connections one ordinary user may hold at once (each running mosrun holds
    /// one); root has no such limit.
    #[arg(long, value_name = "N", default_value_t = Config::DEFAULT_MAX_USER_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_user_connections: u32,
    /// Do not move processes by themselves: no balancing loop. `migrate`, `mosctl expel` and
    /// the others still move them when asked.
    #[arg(long)]
    no_balance: bool,
    /// Log filter, e.g. `info` or `rmosix_daemon=debug` (default: $RUST_LOG, else info).
    #[arg(long, value_name = "L")]
    log_level: Option<String>,
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand)]
enum Mode {
    /// Serve one guest session on fd 3 (started by the daemon itself).
    #[command(hide = true)]
    Guest {
        /// The control socket of the daemon that started it, to report to.
        #[arg(long, value_name = "PATH")]
        report_to: PathBuf,
        /// The node the session came from.
        #[arg(long, value_name = "N")]
        home: u16,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_level.as_deref());
    if let Some(Mode::Guest { report_to, home }) = &args.mode {
        return match rmosix_daemon::run_guest(report_to, *home) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mosixd guest: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = Config {
        map: args.map,
        key: args.key,
        node: args.node,
        socket: args.socket,
        port: args.port,
        max_user_connections: args.max_user_connections,
        balance: !args.no_balance,
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosixd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let daemon = Daemon::start(config).await?;
        daemon.serve().await?;
        Ok(())
    })
}

/// Log to stderr, filtered by `--log-level`, else `RUST_LOG`, else `info`.
fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
