//! `rmosix-lab`: a virtual rmosix cluster on this machine.
//!
//! `rmosix-lab demo [--nodes 4]` shows CPU-bound jobs started on node 1 spreading over the
//! nodes by themselves;
//! `rmosix-lab shell [--nodes N]` starts a lab to explore by hand until Ctrl-C;
//! `rmosix-lab bench [--quick] [all|io|spread|unequal|alone|idle]` measures migration,
//! forwarding and supervision costs and the balancing, or (`io`) only the I/O of a moved
//! process, or (`spread`) only the balancing: jobs started on one node spreading by
//! themselves over equal and unequal nodes, one job alone on an idle cluster, a freed node
//! getting a waiting job, and idle daemons; `unequal`, `alone` and `idle` take one of these
//! (the last two parts together).
//! Exit codes: 0 done, 1 failed, 2 usage, 130 interrupted.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use rmosix_lab::{BenchError, LabError, Scope};

#[derive(Parser)]
#[command(
    name = "rmosix-lab",
    about = "A virtual rmosix cluster on this machine (needs root)"
)]
struct Cli {
    /// Log filter, as in RUST_LOG (e.g. `info`, `rmosix_lab=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start two CPU-bound jobs per node on node 1 of a lab (half a CPU per node) and watch
    /// the daemons spread them.
    Demo {
        /// Nodes in the lab.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=20))]
        nodes: u16,
    },
    /// Start a lab, print how to enter each node, and keep it until Ctrl-C.
    Shell {
        /// Nodes in the lab.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=20))]
        nodes: u16,
        /// CPUs each node may use (its cgroup's quota), e.g. 0.5; unlimited by default.
        #[arg(long, value_parser = positive_cpus)]
        cpus: Option<f64>,
        /// Memory each node's processes may use together, in MiB (its cgroup's memory
        /// limit), e.g. 512; unlimited by default.
        #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(64..))]
        memory: Option<u64>,
        /// The daemons move processes by themselves (off by default: processes stay where
        /// `migrate` puts them).
        #[arg(long)]
        balance: bool,
    },
    /// Measure migration throughput and freeze time, forwarded-call round trips and the
    /// overhead of mosrun, against baselines taken in the same run; print a report.
    Bench {
        /// Fewer repetitions of each measurement.
        #[arg(long)]
        quick: bool,
        /// Which measurements: all; or only the I/O of a moved process (sqlite3, mawk, a
        /// pipe writer) with the forwarded round trip and raw TCP; or only the balancing
        /// (spread): 8 jobs started on node 1 of a 4-node lab spreading by themselves, the
        /// same on unequal nodes (unequal), one job alone (alone), a freed node getting a
        /// waiting job and idle daemons' CPU (idle); or what DFSA gains a moved process, a
        /// 1 GiB read and system headers (files, not part of all); or `mosrun make -j8` of
        /// zstd and Lua on a 4-node lab against node 1 alone and distcc (make, not part of
        /// all); each against baselines.
        #[arg(value_enum, default_value_t = Part::All)]
        part: Part,
    },
}

/// Which measurements `bench` takes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Part {
    All,
    Io,
    Samefile,
    Spread,
    Unequal,
    Alone,
    Idle,
    Files,
    Make,
}

/// Why a subcommand failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Bench(#[from] BenchError),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Lab(LabError::Interrupted)) => interrupted(),
        Err(Failure::Bench(e)) if e.is_interrupted() => interrupted(),
        Err(e) => {
            eprintln!("rmosix-lab: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

fn interrupted() -> ExitCode {
    eprintln!("rmosix-lab: interrupted; lab torn down");
    ExitCode::from(130)
}
fn run(cmd: Cmd) -> Result<(), Failure> {
    // Ctrl-C and SIGTERM must not skip teardown: they only raise this flag.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
        tracing::warn!(error = %e, "cannot catch Ctrl-C; interrupting will leave the lab behind");
    }
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .unwrap_or_default();
    match cmd {
        Cmd::Demo { nodes } => Ok(rmosix_lab::demo(nodes.into(), &bin_dir, &stop)?),
        Cmd::Shell {
            nodes,
            cpus,
            memory,
            balance,
        } => {
            let mut cfg = rmosix_lab::LabConfig::new(nodes.into(), &bin_dir);
            cfg.cpu_quota = cpus;
            cfg.memory_mib = memory;
            cfg.balance = balance;
            Ok(rmosix_lab::shell(cfg, &stop)?)
        }
        Cmd::Bench { quick, part } => {
            let scope = match part {
                Part::All => Scope::All,
                Part::Io => Scope::Io,
                Part::Samefile => Scope::Samefile,
                Part::Spread => Scope::Spread,
                Part::Unequal => Scope::Unequal,
                Part::Alone => Scope::Alone,
                Part::Idle => Scope::Idle,
                Part::Files => Scope::Files,
                Part::Make => Scope::Make,
            };
            Ok(rmosix_lab::bench(&bin_dir, quick, scope, &stop)?)
        }
    }
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// A number of CPUs: a positive number, fractions allowed.
fn positive_cpus(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cpus) if cpus > 0.0 && cpus.is_finite() => Ok(cpus),
        _ => Err(format!(
            "`{text}` is not a positive number of CPUs (e.g. 0.5)"
        )),
    }
}
