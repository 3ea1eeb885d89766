//! `mosrun PROGRAM [ARGS...]`: run a program under rmosix. mosrun is the program's home
//! supervisor: it stays on this node, lets the daemon move the program's processes, and exits
//! with the program's status (or dies by its signal).

mod daemon_link;

use std::process::ExitCode;

use clap::Parser;
use rmosix_engine::{JobEnd, supervise};
use rmosix_tools::parse_user;
use rmosix_wire::DaemonSocket;

/// Run a program so that its processes may move across the cluster.
#[derive(Parser, Debug)]
#[command(name = "mosrun", version, trailing_var_arg = true)]
struct Args {
    /// Control socket of the local mosixd.
    #[arg(long, env = rmosix_wire::SOCKET_ENV, default_value = rmosix_wire::DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
    /// A user (name or uid) whose mosixd to trust besides root and yourself.
    #[arg(long, value_name = "USER", env = rmosix_wire::DAEMON_USER_ENV, value_parser = parse_user)]
    daemon_user: Option<u32>,
    /// The program and its arguments.
    #[arg(required = true, allow_hyphen_values = true, num_args = 1..)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    match supervise(&args.command, &mut link) {
        Ok(JobEnd::Exited(code)) => ExitCode::from(code as u8),
        Ok(JobEnd::Killed(sig)) => die_by(sig),
        Err(err) => {
            eprintln!("mosrun: cannot run {}: {err}", args.command[0]);
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
