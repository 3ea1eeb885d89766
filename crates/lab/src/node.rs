//! One node: its namespaces, the shell script that is its init, its daemon's log, and the
//! [`Command`]s that run programs inside it.
//!
//! Process tree of node K, as the host sees it:
//!
//! ```text
//! unshare (host PID ns, in netns rmx-…-nK, in the node's cgroup)   <- Node::state.launcher
//!  └─ sh -c INIT        PID 1 of the node's PID ns                   <- Node::init
//!      └─ mosixd --map … --key … --node K
//! ```
//!
//! `unshare --kill-child` gives the init a parent-death signal of SIGKILL, so killing the
//! launcher (our own child, so its PID cannot have been reused) kills the init, and the
//! kernel then kills every process in the PID namespace.
//!
//! The daemon can be stopped and started again while the node lives, as a service manager
//! does for an upgrade ([`Node::stop_daemon`], [`Node::start_daemon`]): the init starts a
//! new one when it gets SIGUSR1 and none runs. Guests the old daemon started stay, as
//! children of the init.
//!
//! A killed node can come back ([`Node::revive`]): a new launcher starts a new init, with the
//! same arguments ([`Boot`]), in the same network namespace and cgroup.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cgroup::Cgroup;
use crate::cmd::describe;
use crate::net;
use crate::proc::{ProcId, args_of, children_of, wait_child_of};
use crate::{LabError, POLL};

/// Where the daemon listens inside a node (the default path; the node's /run is private).
pub(crate) const SOCKET: &str = "/run/mosix/mosixd.sock";
/// Written to the node log by the init when the daemon exits.
const DAEMON_EXITED: &str = "rmosix-lab: daemon exited";
/// Written to the node log by the daemon once it listens.
const DAEMON_READY: &str = "mosixd ready";
/// How long a daemon may take to stop, or to listen again after a start.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `start_daemon` repeats its SIGUSR1: one that lands while the init is between
/// its check and its wait only takes effect at the next.
const START_REPEAT: Duration = Duration::from_millis(200);
/// How long a revived node's init may take to appear and its daemon to listen.
const REVIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a killed node's processes may take to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many log lines an error shows.
const TAIL_LINES: usize = 30;

/// The node's init, run by `sh` as PID 1 of the node's PID namespace. Positional
/// parameters: node id, daemon program, map file, key file, the host paths under /tmp or
/// /run the node must still see (colon-separated: the workspace and its binaries when a
/// checkout lives there, as CI's may), a directory to hold them while the private
/// /tmp and /run are mounted, and the daemon's further options (word-split; empty for none).
///
/// It gives the node its hostname and private /tmp and /run, starts the daemon, and then
/// stays: the node outlives a crashed or stopped daemon, starts a new one on SIGUSR1 (unless
/// one runs), and as PID 1 it reaps the node's orphans (bash reaps every child on SIGCHLD).
/// Orphans of an `nsenter` started by [`Node::command`] are not the node's: the kernel gives
/// them to the reaper of the dead parent's PID namespace, the host's init.
const INIT: &str = r#"set -e
echo "node$1" > /proc/sys/kernel/hostname
IFS=:
i=0; for p in $5; do mkdir -p "$6/$i"; mount --rbind "$p" "$6/$i"; i=$((i+1)); done
mount -t tmpfs -o mode=1777 rmosix-lab-tmp /tmp
mount -t tmpfs -o mode=0755 rmosix-lab-run /run
i=0; for p in $5; do mkdir -p "$p"; mount --move "$6/$i" "$p"; i=$((i+1)); done
unset IFS
mkdir -p /run/mosix
set +e
start=1 daemon=
trap 'start=1' USR1
while :; do
    if [ -n "$start" ] && [ -z "$daemon" ]; then
        "$2" --map "$3" --key "$4" --node "$1" $7 </dev/null &
        daemon=$!
    fi
    start=
    if [ -n "$daemon" ]; then
        wait "$daemon"
        status=$?
        # A trapped signal also ends the wait; only an exit is reported.
        if ! kill -0 "$daemon" 2>/dev/null; then
            echo "rmosix-lab: daemon exited with status $status" >&2
            daemon=
        fi
    else
        sleep 3600 & nap=$!
        wait "$nap"
        kill "$nap" 2>/dev/null
    fi
done
"#;

/// Runs the rest of its arguments in the node. Positional parameters: the node cgroup's
/// `cgroup.procs` files, ':'-separated (the `cpu` one, and in cgroup v1 the `memory` one of a
/// node with a memory limit; empty: none), the host PID of the node's init, then the program
/// and its arguments. Joining the cgroup before entering the namespaces puts `nsenter` and the
/// program both in it. `setpriv --pdeathsig KILL` ties the program's life to `nsenter`,
/// which is the process the caller's `Child` handle controls.
const ENTER: &str = r#"cgroup=$1 init=$2
shift 2
IFS=:; for procs in $cgroup; do echo $$ > "$procs"; done; unset IFS
exec nsenter --target "$init" --net --uts --mount --pid -- setpriv --pdeathsig KILL -- "$@"
"#;

/// The daemon's options after its map, key and node, as one word the init splits (`$7`):
/// none has blanks.
fn daemon_options(balance: bool, metrics: Option<SocketAddr>, more: &[String]) -> String {
    let mut options = more.to_vec();
    if !balance {
        options.push("--no-balance".to_owned());
    }
    if let Some(addr) = metrics {
        options.push(format!("--metrics {addr}"));
    }
    options.join(" ")
}

/// One node of a [`Lab`](crate::Lab).
#[derive(Debug)]
pub struct Node {
    id: u16,
    netns: String,
    hub: String,
    /// Network namespaces of the other nodes.
    peers: Vec<String>,
    cgroup: Option<Cgroup>,
    log_path: PathBuf,
    bin_dir: PathBuf,
    boot: Boot,
    state: Mutex<State>,
}

/// What starts the node's init (see [`INIT`] for its arguments), kept so that
/// [`Node::revive`] starts the same node again.
#[derive(Debug)]
struct Boot {
    id: u16,
    netns: String,
    /// The node cgroup's `cgroup.procs` files, ':'-separated, or empty for none.
    procs: OsString,
    log_path: PathBuf,
    daemon: PathBuf,
    map: PathBuf,
    key: PathBuf,
    kept: String,
    hold: PathBuf,
    options: String,
}

#[derive(Debug)]
struct State {
    /// The `unshare` process; `None` once it has been killed and reaped.
    launcher: Option<Child>,
    /// The node's init, PID 1 of its PID namespace; a new one after [`Node::revive`].
    init: ProcId,
    dead: bool,
}

/// The paths a node must see although they lie under the /tmp or /run it replaces: the
/// target directory above the binaries (tests also build guest programs in its `tmp`) and the
/// current directory (a test's package, whose scripts the tests run), when they are there.
/// Joined with ':' for the init script.
fn kept_paths(bin_dir: &Path) -> String {
    let target = bin_dir.parent().unwrap_or(bin_dir).to_path_buf();
    let mut kept: Vec<PathBuf> = [Some(target), std::env::current_dir().ok()]
        .into_iter()
        .flatten()
        .filter_map(|p| p.canonicalize().ok())
        .filter(|p| p.starts_with("/tmp") || p.starts_with("/run"))
        .collect();
    kept.sort();
    // A path inside another kept path comes along with it.
    kept.dedup_by(|inner, outer| inner.starts_with(outer));
    kept.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// What a node needs to start.
pub(crate) struct NodeSpec<'a> {
    pub(crate) id: u16,
    pub(crate) netns: String,
    pub(crate) hub: String,
    pub(crate) peers: Vec<String>,
    pub(crate) cgroup: Option<Cgroup>,
    pub(crate) lab_dir: &'a Path,
    pub(crate) bin_dir: &'a Path,
    pub(crate) daemon: &'a Path,
    pub(crate) map: &'a Path,
    pub(crate) key: &'a Path,
    /// Whether the daemon balances by itself (see [`LabConfig::balance`](crate::LabConfig)).
    pub(crate) balance: bool,
    /// Where the daemon serves metrics (see [`LabConfig::metrics`](crate::LabConfig)).
    pub(crate) metrics: Option<SocketAddr>,
    /// Its further options (see [`LabConfig::daemon_args`](crate::LabConfig)).
    pub(crate) daemon_args: &'a [String],
}

impl Node {
    /// Starts the node's namespaces and daemon; returns once its init runs (not once the
    /// daemon is ready: see [`Node::wait_ready`]).
    pub(crate) fn start(spec: NodeSpec<'_>, timeout: Duration) -> Result<Node, LabError> {
        let id = spec.id;
        let log_path = spec.lab_dir.join(format!("node{id}.log"));
        let log = File::create(&log_path).map_err(|source| LabError::Io {
            action: "create",
            path: log_path.clone(),
            source,
        })?;
        let boot = Boot {
            id,
            netns: spec.netns.clone(),
            procs: spec
                .cgroup
                .as_ref()
                .map(Cgroup::procs_list)
                .unwrap_or_default(),
            log_path: log_path.clone(),
            daemon: spec.daemon.to_owned(),
            map: spec.map.to_owned(),
            key: spec.key.to_owned(),
            kept: kept_paths(spec.bin_dir),
            hold: spec.lab_dir.join(format!("hold-node{id}")),
            options: daemon_options(spec.balance, spec.metrics, spec.daemon_args),
        };
        let (launcher, init) = boot.launch(log, timeout)?;
        Ok(Node {
            id,
            netns: spec.netns,
            hub: spec.hub,
            peers: spec.peers,
            cgroup: spec.cgroup,
            log_path,
            bin_dir: spec.bin_dir.to_owned(),
            boot,
            state: Mutex::new(State {
                launcher: Some(launcher),
                init,
                dead: false,
            }),
        })
    }

    /// Brings a [killed](Node::kill) node back, as a machine that reboots: its link comes up
    /// again, its peers' `unreachable` routes to it go, and a fresh init (new PID, mount and
    /// UTS namespaces, empty /tmp and /run) starts a fresh daemon with the same id, address,
    /// map and key, in the same cgroup. Returns once the daemon listens; its log goes on at
    /// the end of the node's log. Nothing of what ran on the node before comes back.
    pub fn revive(&self) -> Result<(), LabError> {
        if !self.state.lock().unwrap_or_else(|e| e.into_inner()).dead {
            return Err(LabError::DaemonState {
                node: self.id,
                what: "the node is alive",
            });
        }
        if let Some(e) = net::revive_node(&self.hub, &self.netns, self.id, &self.peers)
            .into_iter()
            .next()
        {
            return Err(e);
        }
        let exited_before = self.log().matches(DAEMON_EXITED).count();
        let log = OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .map_err(|source| LabError::Io {
                action: "open",
                path: self.log_path.clone(),
                source,
            })?;
        let (launcher, init) = self.boot.launch(log, REVIVE_TIMEOUT)?;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.launcher = Some(launcher);
            state.init = init;
            state.dead = false;
        }
        let deadline = Instant::now() + REVIVE_TIMEOUT;
        self.wait_listening(init, exited_before, deadline, REVIVE_TIMEOUT)
    }

    /// Cuts the node off the others without harming it, as a pulled cable or a failed
    /// switch port would: the hub's end of its link goes down, so whatever either side sends
    /// is lost, silently. Everything in the node goes on. [`Node::heal`] plugs it in again.
    pub fn cut(&self) -> Result<(), LabError> {
        net::set_port(&self.hub, self.id, false)
    }

    /// Ends a [`Node::cut`]: the hub's end of its link comes up again.
    pub fn heal(&self) -> Result<(), LabError> {
        net::set_port(&self.hub, self.id, true)
    }

    /// Waits until the daemon's socket exists inside the node; fails early if the daemon or
    /// the node's init exits.
    pub(crate) fn wait_ready(&self, deadline: Instant, timeout: Duration) -> Result<(), LabError> {
        self.wait_listening(self.init(), 0, deadline, timeout)
    }

    /// Waits until the daemon of `init` listens; fails early if its init exits or the log
    /// tells of more daemon exits than `exited_before`.
    fn wait_listening(
        &self,
        init: ProcId,
        exited_before: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), LabError> {
        // The node's mount namespace seen from the host, through its init.
        let socket = PathBuf::from(format!("/proc/{}/root{SOCKET}", init.pid));
        loop {
            if fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
                return Ok(());
            }
            if self.log().matches(DAEMON_EXITED).count() > exited_before {
                return Err(LabError::DaemonExited {
                    node: self.id,
                    tail: self.log_tail(),
                });
            }
            if !init.is_running() {
                return Err(LabError::NodeStart {
                    node: self.id,
                    what: "init exited".to_owned(),
                    tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    node: self.id,
                    socket: SOCKET,
                    timeout,
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The node's init now.
    fn init(&self) -> ProcId {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).init
    }

    /// The node's number in the map (1-based).
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The node's address, 10.231.0.ID.
    pub fn addr(&self) -> Ipv4Addr {
        net::node_addr(self.id)
    }

    /// The node's network namespace (`ip netns` name).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Host PID of the node's init (PID 1 in the node); `nsenter --target` takes it.
    pub fn init_pid(&self) -> u32 {
        self.init().pid
    }

    /// A [`Command`] that runs `program` inside this node: in its network, UTS, mount and
    /// PID namespaces and its cgroup, with the lab's `bin_dir` first on `PATH` (so
    /// `node.command("mosrun")` finds the workspace's build) and `MOSIX_SOCKET` unset (the
    /// node's daemon listens on the default path in the node's own /run).
    ///
    /// Add arguments, stdio and a working directory as with any `Command` (the working
    /// directory should be outside /tmp and /run, e.g. under [`Lab::work_dir`](crate::Lab::work_dir)).
    /// The working directory does not reach the program, though: entering the node's mount
    /// namespace (setns(2)) moves `nsenter` to its root, so the program starts in `/` and
    /// should be given absolute paths (or `cd` first, as a shell script can).
    /// The spawned `Child` is an `nsenter` outside the node; the program is its only child
    /// ([`child_of`](crate::child_of)) and dies with it. Once the node is
    /// [killed](Node::kill), the command fails with exit status 126.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let dead = self.state.lock().unwrap_or_else(|e| e.into_inner()).dead;
        // Only trust the init's PID while that very process runs; after it dies the PID
        // may belong to a host process, whose namespaces nsenter would happily join.
        if dead || !self.init().is_running() {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(r#"echo "rmosix-lab: node $1 is dead, cannot run $2" >&2; exit 126"#)
                .arg("rmosix-lab-dead")
                .arg(self.id.to_string())
                .arg(program.as_ref());
            return cmd;
        }
        let procs = self
            .cgroup
            .as_ref()
            .map(Cgroup::procs_list)
            .unwrap_or_default();
        let mut path = self.bin_dir.clone().into_os_string();
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(ENTER)
            .arg(format!("rmosix-lab-node{}", self.id))
            .arg(procs)
            .arg(self.init().pid.to_string())
            .arg(program.as_ref())
            .env("PATH", path)
            .env_remove("MOSIX_SOCKET");
        cmd
    }

    /// The node dies: SIGKILL to its init, which takes its whole PID namespace with it
    /// (daemon, supervisors, every program run in it), then its link goes down and its
    /// peers get a route that makes it unreachable, so they see connection failures rather
    /// than hangs. Connections its processes had are closed (FIN/RST) before the link goes
    /// down. Idempotent; failures are logged as warnings.
    pub fn kill(&self) {
        if let Err(e) = self.kill_namespace() {
            tracing::warn!(node = self.id, error = %e, "killing node");
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.dead {
            return;
        }
        state.dead = true;
        for e in net::cut_node(&self.hub, &self.netns, self.id, &self.peers) {
            tracing::warn!(node = self.id, error = %e, "cutting dead node's link");
        }
    }

    /// Stops the node's daemon as a service manager would (SIGTERM to it alone) and waits
    /// until it has exited. The node and everything else in it go on: supervisors, guests and
    /// the processes they run. [`Node::start_daemon`] starts a new one.
    pub fn stop_daemon(&self) -> Result<(), LabError> {
        let daemon = self.running_daemon()?;
        crate::cmd::run(Command::new("kill").args(["-TERM", &daemon.pid.to_string()]))?;
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while daemon.is_running() {
            if Instant::now() >= deadline {
                return Err(LabError::DaemonLingers {
                    node: self.id,
                    timeout: DAEMON_TIMEOUT,
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// SIGHUP to the node's daemon, which reads its map again.
    pub fn hangup_daemon(&self) -> Result<(), LabError> {
        let daemon = self.running_daemon()?;
        crate::cmd::run(Command::new("kill").args(["-HUP", &daemon.pid.to_string()]))?;
        Ok(())
    }

    /// A shell loop that keeps one of the node's CPUs busy (in its cgroup) until the
    /// returned [`BusyLoop`] is dropped.
    pub fn busy_loop(&self) -> Result<BusyLoop, LabError> {
        let mut cmd = self.command("sh");
        cmd.args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: describe(&cmd),
            source,
        })?;
        Ok(BusyLoop(child))
    }

    /// Starts the node's daemon again after [`Node::stop_daemon`] (or a crash), with the
    /// same map and key, and returns once it listens.
    pub fn start_daemon(&self) -> Result<(), LabError> {
        if self.daemon_pid().is_some() {
            return Err(LabError::DaemonState {
                node: self.id,
                what: "a daemon runs already",
            });
        }
        let ready_before = self.log().matches(DAEMON_READY).count();
        let exited_before = self.log().matches(DAEMON_EXITED).count();
        let init = self.init().pid.to_string();
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        let mut asked = None;
        loop {
            let log = self.log();
            if log.matches(DAEMON_READY).count() > ready_before {
                return Ok(());
            }
            if log.matches(DAEMON_EXITED).count() > exited_before {
                return Err(LabError::DaemonExited {
                    node: self.id,
                    tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    node: self.id,
                    socket: SOCKET,
                    timeout: DAEMON_TIMEOUT,
                    tail: self.log_tail(),
                });
            }
            if asked.is_none_or(|at: Instant| at.elapsed() >= START_REPEAT) {
                crate::cmd::run(Command::new("kill").args(["-USR1", &init]))?;
                asked = Some(Instant::now());
            }
            std::thread::sleep(POLL);
        }
    }

    /// The daemon, or an error saying none runs.
    fn running_daemon(&self) -> Result<ProcId, LabError> {
        self.daemon_pid().ok_or(LabError::DaemonState {
            node: self.id,
            what: "no daemon runs",
        })
    }

    /// The daemon the init runs: its child `mosixd` with a `--map` argument (guests left by
    /// a stopped daemon are its children too, but run `mosixd guest`).
    fn daemon_pid(&self) -> Option<ProcId> {
        children_of(self.init().pid)
            .into_iter()
            .filter(|&pid| {
                let args = args_of(pid);
                args.get(1).is_some_and(|a| a == "--map")
            })
            .find_map(ProcId::of)
            .filter(ProcId::is_running)
    }

    /// Kills and reaps the launcher, then waits until the node's init (and therefore every
    /// process of its PID namespace) is gone.
    pub(crate) fn kill_namespace(&self) -> Result<(), LabError> {
        let launcher = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .launcher
            .take();
        if let Some(mut launcher) = launcher {
            // Errors mean it already exited; wait() below reaps it either way.
            let _ = launcher.kill();
            let _ = launcher.wait();
        }
        let deadline = Instant::now() + KILL_TIMEOUT;
        while self.init().is_running() {
            if Instant::now() >= deadline {
                return Err(LabError::NodeLingers {
                    node: self.id,
                    timeout: KILL_TIMEOUT,
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// The `cgroup.procs` of the node's batch sub-cgroup, where a crowd of jobs weighs less
    /// than the node's services (see `Cgroup::batch_procs_file`); `None` where the lab has no
    /// cgroups or the hierarchy cannot weigh a sub-cgroup against its parent's processes.
    pub fn batch_procs_file(&self) -> Result<Option<PathBuf>, LabError> {
        match &self.cgroup {
            Some(cgroup) => cgroup.batch_procs_file(),
            None => Ok(None),
        }
    }

    /// The node's cgroup directory (`None` when the machine has no cpu cgroup and the lab
    /// has no quota).
    pub fn cgroup_path(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(Cgroup::path)
    }

    /// The cgroup directory with the node's memory limit and use (`memory.max` and
    /// `memory.current` in v2, `memory.limit_in_bytes` and `memory.usage_in_bytes` in v1):
    /// [`Node::cgroup_path`] in v2, the node's own directory of the `memory` hierarchy in v1.
    /// Meaningful for a node with a memory limit only: in v1 a node without one has no
    /// `memory` cgroup, and this is its `cpu` one. `None` when the lab has no cgroups.
    pub fn memory_cgroup_path(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(Cgroup::memory_path)
    }

    /// The files a process writes its PID to in order to join the node's cgroup, one for each
    /// hierarchy it is in (see [`Node::memory_cgroup_path`]); empty when the lab has none.
    pub fn cgroup_procs_files(&self) -> Vec<PathBuf> {
        self.cgroup
            .as_ref()
            .map(Cgroup::procs_files)
            .unwrap_or_default()
    }

    /// Everything the node's daemon (and the node's init, on errors) wrote so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The path of the node's log, `<lab dir>/nodeK.log`.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Waits until the daemon's log contains `needle`, checking every few milliseconds until
    /// `timeout`; the error shows the end of the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::LogTimeout {
                    node: self.id,
                    needle: needle.to_owned(),
                    timeout,
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn log_tail(&self) -> String {
        tail(&self.log_path)
    }
}

/// A CPU-busy loop in a node, from [`Node::busy_loop`]; killed when dropped.
pub struct BusyLoop(Child);

impl Drop for BusyLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Boot {
    /// Starts the node's init in its network namespace and cgroup, with stdout and stderr to
    /// `log`; returns the launcher and the init once it runs.
    fn launch(&self, log: File, timeout: Duration) -> Result<(Child, ProcId), LabError> {
        let id = self.id;
        let log_err = log.try_clone().map_err(|source| LabError::Io {
            action: "open",
            path: self.log_path.clone(),
            source,
        })?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"IFS=:; for procs in $1; do echo $$ > "$procs"; done; unset IFS; shift; exec "$@""#)
            .arg("rmosix-lab-launch")
            .arg(&self.procs)
            // `nsenter --net`, not `ip netns exec`: the latter also mounts a fresh sysfs on
            // /sys, which hides /sys/fs/cgroup, and a daemon that cannot see its cgroup gauges
            // the whole machine (every node would show the host's load and CPUs, not its own).
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .args(["unshare", "--uts", "--pid", "--kill-child", "--mount-proc"])
            .args(["--propagation", "private", "--", "bash", "-c", INIT])
            .arg(format!("rmosix-lab-node{id}"))
            .arg(id.to_string())
            .arg(&self.daemon)
            .arg(&self.map)
            .arg(&self.key)
            .arg(&self.kept)
            .arg(&self.hold)
            .arg(&self.options)
            .env_remove("MOSIX_SOCKET")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut launcher = cmd.spawn().map_err(|source| LabError::Spawn {
            command: describe(&cmd),
            source,
        })?;
        // The launcher is `sh`, then `nsenter`, then `unshare` (each execs the next); its first
        // child is the node's init.
        let init = match wait_child_of(launcher.id(), timeout) {
            Ok(pid) => ProcId::of(pid),
            Err(_) => None,
        };
        let Some(init) = init else {
            let _ = launcher.kill();
            let status = launcher.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(LabError::NodeStart {
                node: id,
                what: format!("no init process within {timeout:?} (launcher: {status})"),
                tail: tail(&self.log_path),
            });
        };
        Ok((launcher, init))
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}
