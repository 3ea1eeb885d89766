//! `mosrun [-h | -N | -jLIST] [-F] [-L | -l] [-z] PROGRAM [ARGS...]`: run a program under
//! rmosix. mosrun is the program's home supervisor: it stays on this node, lets the daemon
//! move the program's processes, and exits with the program's status (or dies by its
//! signal). MOSIX's options say where the program starts (see `MosixOptions`).

mod daemon_link;

use std::process::ExitCode;

use clap::Parser;
use rmosix_engine::{JobEnd, Placement, supervise};
use rmosix_tools::{MosixOptions, parse_user};
use rmosix_wire::DaemonSocket;

/// Run a program so that its processes may move across the cluster.
///
/// MOSIX's options come before the program: -h runs it at home (the default); -N (a node
/// number, e.g. -3) moves it to node N as it starts, and -jLIST to a node drawn from LIST
/// (e.g. -j2-4,7); with -F it runs at home if that node cannot take it, else mosrun fails
/// without running it. -L and -l lock and unlock it against automatic moves (this version
/// moves processes only when `migrate` says). -z PATH ARGV0: run PATH with ARGV0 as its
/// argv[0].
#[derive(Parser, Debug)]
#[command(
    name = "mosrun",
    version,
    trailing_var_arg = true,
    disable_help_flag = true,
    override_usage = "mosrun [--socket PATH] [--daemon-user USER] [-h | -N | -jLIST] [-F] [-L | -l] [-z] PROGRAM [ARGS]..."
)]
struct Args {
    /// Print help (MOSIX's -h means "run at home").
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Control socket of the local mosixd.
    #[arg(long, env = rmosix_wire::SOCKET_ENV, default_value = rmosix_wire::DEFAULT_SOCKET)]
    socket: std::path::PathBuf,
    /// A user (name or uid) whose mosixd to trust besides root and yourself.
    #[arg(long, value_name = "USER", env = rmosix_wire::DAEMON_USER_ENV, value_parser = parse_user)]
    daemon_user: Option<u32>,
    /// MOSIX's options, then the program and its arguments.
    #[arg(required = true, allow_hyphen_values = true, num_args = 1..)]
    command: Vec<String>,
}

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
