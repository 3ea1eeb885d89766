//! `mosrun`'s command line: MOSIX's options stay in the program's arguments, for
//! `MosixOptions` to read.

use clap::Parser;

use crate::parse_user;

/// Run a program so that its processes may move across the cluster.
///
/// MOSIX's options come before the program: -h runs it at home (the default); -N (a node
/// number, e.g. -3) moves it to node N as it starts, -jLIST to a node drawn from LIST (e.g.
/// -j2-4,7), and -b to the best node as the daemon sees the cluster then; with -F it runs at
/// home if that node cannot take it, else mosrun fails without running it (with -b it always
/// falls back). -L locks its processes against automatic moves, -l unlocks them (the
/// default); -c (CPU-bound), -i (I/O-bound), -n (no decay), -s (slow decay) and -f (fast
/// decay) say how the balancer weighs their history, or -d N (0 to 10000) keeps N/10000 of
/// it each second; -mMB says how much memory each will need, so that it goes only where that
/// much is free. -z PATH ARGV0: run PATH with ARGV0 as its argv[0].
#[derive(Parser, Debug)]
#[command(
    name = "mosrun",
    version,
    trailing_var_arg = true,
    disable_help_flag = true,
    override_usage = "mosrun [--socket PATH] [--daemon-user USER] [-h | -N | -jLIST | -b] [-F] [-L | -l] [-c | -i | -n | -s | -f | -d N] [-mMB] [-z] PROGRAM [ARGS]..."
)]
pub struct Args {
    /// Print help (MOSIX's -h means "run at home").
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Control socket of the local mosixd.
    #[arg(long, env = rmosix_wire::SOCKET_ENV, default_value = rmosix_wire::DEFAULT_SOCKET)]
    pub socket: std::path::PathBuf,
    /// A user (name or uid) whose mosixd to trust besides root and yourself.
    #[arg(long, value_name = "USER", env = rmosix_wire::DAEMON_USER_ENV, value_parser = parse_user)]
    pub daemon_user: Option<u32>,
    /// MOSIX's options, then the program and its arguments.
    #[arg(required = true, allow_hyphen_values = true, num_args = 1..)]
    pub command: Vec<String>,
}
