//! `mosixd`: the rmosix daemon. Runs in the foreground and logs to stderr.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use rmosix_daemon::cli::{Args, Mode};
use rmosix_daemon::{Config, Daemon};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_level.as_deref());
    if let Some(Mode::Guest {
        report_to,
        home,
        dfsa_mfs,
        dfsa,
        dfsa_system,
        digests,
    }) = &args.mode
    {
        let consistent =
            rmosix_engine::Consistent::new(dfsa_mfs.as_deref(), dfsa).with_system(dfsa_system);
        if let Some(dir) = digests
            && let Err(e) = rmosix_engine::keep_digests_in(dir)
        {
            // Only slower: every file this guest needs a digest of is read again.
            tracing::warn!("{}: cannot keep digests there: {e}", dir.display());
        }
        return match rmosix_daemon::run_guest(report_to, *home, &consistent) {
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
        metrics: args.metrics,
        cgroup: args.cgroup,
        mfs: (!args.no_mfs).then_some(args.mfs),
        mfs_trust_root: args.mfs_trust_root,
        dfsa: args.dfsa,
        dfsa_on: !args.no_dfsa,
        same_files: match args.no_same_files {
            true => Vec::new(),
            false => args.same_files,
        },
    };
    // Before the runtime starts its threads, which inherit it.
    if let Err(e) = rmosix_daemon::raise_priority() {
        tracing::warn!("runs at normal priority: cannot raise it: {e}");
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosixd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runtime threads at least: a node whose cgroup allows one CPU would get one, and a
/// request that reads the kernel for a while would hold up the accept loops meanwhile.
const MIN_WORKERS: usize = 2;

fn run(config: Config) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(MIN_WORKERS, usize::from)
        .max(MIN_WORKERS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
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
