//! `mosrun [-h | -N | -jLIST | -b] [-F] [-L | -l] [-c | -i | -n | -s | -f | -d N] [-mMB] [-z]
//! PROGRAM [ARGS...]`: run a program under rmosix. mosrun is the program's home supervisor: it
//! stays on this node, lets the daemon move the program's processes, and exits with the
//! program's status (or dies by its signal). MOSIX's options say where the program starts
//! (see `MosixOptions`).

mod daemon_link;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rmosix_engine::{JobEnd, Placement, supervise};
use rmosix_tools::MosixOptions;
use rmosix_tools::cli::mosrun::Args;
use rmosix_wire::{DaemonSocket, Reply, Request};

/// How long `mosrun -b` waits for the daemon to pick a node: it answers from what it knows.
const BEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let mut args = Args::parse();
    let options = match MosixOptions::take(&mut args.command) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("mosrun: {err}");
            return ExitCode::from(2);
        }
    };
    if let Ok(filter) = std::env::var("MOSRUN_LOG") {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let daemon = DaemonSocket {
        path: args.socket.clone(),
        trusted_user: args.daemon_user,
    };
    // -b: the daemon picks the node now; if that node cannot take the job after all, it
    // runs at home, as -F would have it.
    let (node, fallback) = if options.best {
        let request = Request::Best {
            memory_need_mb: options.advice.memory_need_mb,
        };
        match daemon.ask(&request, Some(BEST_TIMEOUT)) {
            Ok(Reply::Location { node }) => (Some(node), true),
            Ok(Reply::Ok) => (None, false),
            Ok(Reply::Error { message }) => {
                eprintln!("mosrun: -b: {message}");
                return ExitCode::from(1);
            }
            Ok(other) => {
                eprintln!("mosrun: -b: unexpected answer from mosixd: {other:?}");
                return ExitCode::from(1);
            }
            Err(err) => {
                eprintln!("mosrun: -b: {:#}", anyhow::Error::from(err));
                return ExitCode::from(1);
            }
        }
    } else {
        (options.node, options.fallback)
    };
    let mut link = match daemon_link::DaemonLink::connect(daemon, options.advice) {
        Ok(link) => link,
        Err(err) => {
            eprintln!("mosrun: {:#}", anyhow::Error::from(err));
            return ExitCode::from(1);
        }
    };
    let placement = node.map(|node| Placement { node, fallback });
    let path = options.path.as_deref().unwrap_or(&args.command[0]);
    match supervise(path, &args.command, &mut link, placement) {
        Ok(JobEnd::Exited(code)) => ExitCode::from(code as u8),
        Ok(JobEnd::Killed(sig)) => die_by(sig),
        Err(err) => {
            eprintln!("mosrun: cannot run {path}: {err}");
            ExitCode::from(1)
        }
    }
}

/// End the way the program ended: by its signal, without a core of our own.
fn die_by(sig: i32) -> ExitCode {
    // SAFETY: resetting a disposition, clearing the mask and raising a signal on ourselves.
    unsafe {
        let limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &limit);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    ExitCode::from(128 + sig as u8)
}
