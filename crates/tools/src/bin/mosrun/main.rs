//! `mosrun [-h | -N | -jLIST] [-F] [-L | -l] [-z] PROGRAM [ARGS...]`: run a program under
//! rmosix. mosrun is the program's home supervisor: it stays on this node, lets the daemon
//! move the program's processes, and exits with the program's status (or dies by its
//! signal). MOSIX's options say where the program starts (see `MosixOptions`).

mod daemon_link;

use std::process::ExitCode;

use clap::Parser;
use rmosix_engine::{JobEnd, Placement, supervise};
use rmosix_tools::MosixOptions;
use rmosix_tools::cli::mosrun::Args;
use rmosix_wire::DaemonSocket;

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
            .init();
    }
    let daemon = DaemonSocket {
        path: args.socket.clone(),
        trusted_user: args.daemon_user,
    };
    let mut link = match daemon_link::DaemonLink::connect(daemon) {
        Ok(link) => link,
        Err(err) => {
            eprintln!("mosrun: {:#}", anyhow::Error::from(err));
            return ExitCode::from(1);
        }
    };
    let placement = options.node.map(|node| Placement {
        node,
        fallback: options.fallback,
    });
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
