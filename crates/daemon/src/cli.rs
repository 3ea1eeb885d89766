//! `mosixd`'s command line, here rather than in the binary so that what documents it (man
//! page, shell completions: `rmosix-package`) reads the same clap definition it parses with.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use rmosix_config::{Map, NodeId};
use rmosix_gauge::CgroupPath;
use rmosix_wire::{DEFAULT_SOCKET, SOCKET_ENV};

use crate::Config;

/// The rmosix daemon: serves the tools on a Unix socket and other nodes on TCP.
#[derive(Parser)]
#[command(version)]
pub struct Args {
    /// The cluster map.
    #[arg(long, value_name = "FILE", default_value = Map::DEFAULT_PATH)]
    pub map: PathBuf,
    /// The cluster key (`mosctl keygen` makes one; it must be mode 0600).
    #[arg(long, value_name = "FILE", default_value = Config::DEFAULT_KEY)]
    pub key: PathBuf,
    /// This node's number, instead of finding it from the machine's addresses.
    #[arg(long, value_name = "N")]
    pub node: Option<NodeId>,
    /// The control socket for the tools.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// TCP port of the daemons.
    #[arg(long, value_name = "P", default_value_t = Config::DEFAULT_PORT)]
    pub port: u16,
    /// Control connections one ordinary user may hold at once (each running mosrun holds
    /// one); root has no such limit.
    #[arg(long, value_name = "N", default_value_t = Config::DEFAULT_MAX_USER_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_user_connections: u32,
    /// Do not move processes by themselves: no balancing loop. `migrate`, `mosctl expel` and
    /// the others still move them when asked.
    #[arg(long)]
    pub no_balance: bool,
    /// The node's cgroup: its processes are the node's work and its limits (CPU quota,
    /// memory) the node's capacity. A path as /proc/PID/cgroup shows it, e.g. /user.slice;
    /// / is the whole machine. Default: the daemon's own cgroup, right when the node's jobs
    /// run in it with the daemon (a container); the systemd unit passes / (docs/gauge.md).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<CgroupPath>,
    /// Serve metrics for Prometheus on this address, e.g. 127.0.0.1:9464 (`GET /metrics`;
    /// see docs/metrics.md). Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Mount MFS here: DIR/N/path is node N's /path (docs/mfs.md).
    #[arg(long, value_name = "DIR", default_value = Config::DEFAULT_MFS)]
    pub mfs: PathBuf,
    /// Neither mount MFS nor serve this node's files to other nodes' MFS.
    #[arg(long)]
    pub no_mfs: bool,
    /// A mount that is the same file system on every node (a shared NFS, CephFS or Lustre
    /// mount; repeat for more): processes away from home open, stat and read files under it
    /// where they run (DFSA; docs/forwarding.md). MFS's numbered directories are such by
    /// themselves.
    #[arg(long, value_name = "DIR")]
    pub dfsa: Vec<PathBuf>,
    /// No DFSA: every file call of a process away from home goes home, MFS's too, and system
    /// files (`--same-files`).
    #[arg(long)]
    pub no_dfsa: bool,
    /// A prefix of system files (repeat for more; given, it replaces the default list): a
    /// process away from home that opens one read-only reads it where it runs when the file
    /// there has the same content as at home, checked by digest, and through home otherwise
    /// (docs/forwarding.md). A prefix that ends with `/` holds what lies under it; another
    /// names one file.
    #[arg(long, value_name = "PREFIX", default_values = rmosix_engine::SYSTEM_PREFIXES)]
    pub same_files: Vec<String>,
    /// No system files opened away: their opens go home.
    #[arg(long)]
    pub no_same_files: bool,
    /// Run other nodes' root's MFS calls here as root. Off by default: they run as nobody
    /// (65534), so that root on one node is not root on every node's files.
    #[arg(long)]
    pub mfs_trust_root: bool,
    /// Log filter, e.g. `info` or `rmosix_daemon=debug` (default: $RUST_LOG, else info).
    #[arg(long, value_name = "L")]
    pub log_level: Option<String>,
    /// A mode other than serving the node (none: serve it).
    #[command(subcommand)]
    pub mode: Option<Mode>,
}

/// What else `mosixd` can be started to do.
#[derive(Subcommand)]
pub enum Mode {
    /// Serve one guest session on fd 3 (started by the daemon itself).
    #[command(hide = true)]
    Guest {
        /// The control socket of the daemon that started it, to report to.
        #[arg(long, value_name = "PATH")]
        report_to: PathBuf,
        /// The node the session came from.
        #[arg(long, value_name = "N")]
        home: u16,
        /// This node's MFS mount, if DFSA may use it.
        #[arg(long, value_name = "DIR")]
        dfsa_mfs: Option<PathBuf>,
        /// This node's mounts that are the same on every node.
        #[arg(long, value_name = "DIR")]
        dfsa: Vec<PathBuf>,
        /// This node's prefixes of system files (see `--same-files`).
        #[arg(long, value_name = "PREFIX")]
        dfsa_system: Vec<String>,
        /// The directory where the guests of this user keep the digests of files they
        /// computed, for the next ones.
        #[arg(long, value_name = "DIR")]
        digests: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn cgroup_of(args: &[&str]) -> Result<Option<CgroupPath>, clap::Error> {
        Args::try_parse_from(["mosixd"].iter().chain(args)).map(|a| a.cgroup)
    }

    #[test]
    fn cgroup_is_the_daemons_own_unless_given() {
        assert_eq!(cgroup_of(&[]).unwrap(), None);
        assert_eq!(
            cgroup_of(&["--cgroup", "/"]).unwrap(),
            Some(CgroupPath::root())
        );
        let slice = cgroup_of(&["--cgroup", "//user.slice/"]).unwrap().unwrap();
        assert_eq!(slice.as_str(), "/user.slice");
    }

    #[test]
    fn cgroup_must_be_an_absolute_path_without_dots() {
        for bad in ["user.slice", "", "/a/../b", "/./a"] {
            let err = cgroup_of(&["--cgroup", bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad:?}: {err}");
            let text = err.to_string();
            assert!(text.contains("--cgroup"), "{bad:?}: {text}");
        }
    }
}
