//! Start-up and the two accept loops.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use rmosix_config::{Host, Map, MapError, NodeId};
use rmosix_gauge::CgroupPath;
use rmosix_transport::{ClusterKey, KeyError};
use rmosix_view::Status;
use rmosix_wire::NodeMode;

use crate::cluster::Cluster;
use crate::control::Caller;
use crate::hosted::Hosted;
use crate::limits::{Holder, Limits};
use crate::metrics::Metrics;
use crate::procfs::Units;
use crate::records::{Records, RecordsError};
use crate::sys::FdLimit;
use crate::table::Table;
use crate::throttle::{Throttle, Verdict};
use crate::{balancer, cluster, control, files, guests, metrics, own, peer, sys};

/// Bytes each process (by PID here) moved to and from each node's files through MFS.
pub(crate) type FileTraffic = HashMap<i32, HashMap<u16, u64>>;

/// What `mosixd` needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cluster map.
    pub map: PathBuf,
    /// The cluster key file.
    pub key: PathBuf,
    /// This node's number, if not to be found from the machine's addresses.
    pub node: Option<NodeId>,
    /// The control socket for the tools.
    pub socket: PathBuf,
    /// TCP port of every node's daemon.
    pub port: u16,
    /// How many control connections one ordinary user may hold at once (see `limits`).
    pub max_user_connections: u32,
    /// Whether the balancing loop moves this node's processes by itself (`balancer`).
    pub balance: bool,
    /// Where to serve the metrics (`metrics`); `None`: nowhere.
    pub metrics: Option<SocketAddr>,
    /// The node's cgroup, whose processes and limits the gauge measures; `None`: the
    /// daemon's own.
    pub cgroup: Option<CgroupPath>,
    /// Where to mount MFS (`files`, docs/mfs.md); `None`: neither mount it nor serve this
    /// node's files to others.
    pub mfs: Option<PathBuf>,
    /// Run other nodes' root's MFS calls as root here, instead of as `nobody`.
    pub mfs_trust_root: bool,
    /// Mounts that are the same file system on every node (DFSA).
    pub dfsa: Vec<PathBuf>,
    /// Whether processes away from home may open files of MFS and of `dfsa` where they run.
    pub dfsa_on: bool,
    /// Prefixes of system files, opened where a process runs when they are the same there
    /// as at home (with `dfsa_on` only); empty: none.
    pub same_files: Vec<String>,
}

impl Config {
    /// The port MOSIX daemons listen on unless told otherwise.
    pub const DEFAULT_PORT: u16 = 4660;
    /// Where the cluster key lives unless told otherwise.
    pub const DEFAULT_KEY: &str = "/etc/mosix/key";
    /// Control connections per ordinary user unless told otherwise. Each `mosrun` holds one
    /// for as long as its job runs, and a tool one while it waits; 1024 lets a user run a
    /// thousand jobs from one node, and is far below the descriptors of a daemon (see
    /// docs/security.md).
    pub const DEFAULT_MAX_USER_CONNECTIONS: u32 = 1024;
    /// Where MFS is mounted unless told otherwise.
    pub const DEFAULT_MFS: &str = "/mfs";
}

/// How long a source of failures stays quiet in the log after a line (see `throttle`).
const LOG_WINDOW: Duration = Duration::from_secs(10);
/// How many sources of failures the log throttles track at once.
const LOG_SOURCES: usize = 1024;

/// Why the daemon could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The map is unusable, or does not name this machine.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The cluster key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The machine's addresses could not be listed.
    #[error("cannot list this machine's network addresses")]
    Interfaces(#[source] io::Error),
    /// The TCP port for other nodes could not be opened.
    #[error("cannot listen on TCP port {port}")]
    ListenTcp {
        /// The port.
        port: u16,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The metrics listener could not be opened.
    #[error("cannot serve metrics on {addr}")]
    ListenMetrics {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The control socket could not be created.
    #[error("{}: cannot create the control socket", path.display())]
    ListenUnix {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Another daemon answers on the control socket.
    #[error("{}: another mosixd is already running", path.display())]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// The handler for SIGTERM or SIGHUP could not be installed.
    #[error("cannot handle SIGTERM and SIGHUP")]
    Signals(#[source] io::Error),
    /// The descriptor limit could not be read or raised.
    #[error("cannot raise the limit on open files (RLIMIT_NOFILE)")]
    FdLimit(#[source] io::Error),
    /// The record of the guests this node started is unusable.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// The units of /proc's figures could not be read.
    #[error("cannot read the clock tick and page size (sysconf)")]
    Units(#[source] io::Error),
    /// This node's kernel could not be probed for its compatibility key.
    #[error("cannot probe this node's kernel facts")]
    Probe(#[source] io::Error),
    /// This node's load and capacity could not be measured.
    #[error("cannot measure this node's load")]
    Gauge(#[source] rmosix_gauge::GaugeError),
    /// The cgroup given with `--cgroup` does not exist here.
    #[error("--cgroup")]
    NodeCgroup(#[source] rmosix_gauge::GaugeError),
    /// This node's map entry is a host name that does not resolve.
    #[error("cannot resolve this node's address {name}")]
    OwnAddress {
        /// The name in the map.
        name: String,
    },
    /// The cluster view could not start (its UDP socket could not be bound).
    #[error("cannot gossip on UDP {addr}")]
    Gossip {
        /// The address it was to listen on.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What every connection handler shares.
pub(crate) struct Shared {
    pub own: NodeId,
    /// The map, replaced as a whole on SIGHUP (see [`Shared::map`]).
    map: RwLock<Arc<Map>>,
    pub key: ClusterKey,
    pub port: u16,
    pub table: Mutex<Table>,
    /// The processes of other nodes that run here.
    pub hosted: Mutex<Hosted>,
    /// Woken whenever a hosted process leaves or its guest's registration ends (see
    /// [`Shared::until_gone`]).
    pub hosted_left: tokio::sync::Notify,
    /// The guests this node's daemons started, which alone may register as guests.
    pub records: Records,
    /// The control socket, which the guests report to.
    pub socket: PathBuf,
    /// The units of /proc's figures.
    pub units: Units,
    pub limits: Arc<Limits>,
    /// The descriptor limit the daemon was started with, which its guests get back.
    pub guest_fd_limit: FdLimit,
    /// `mosctl stay|lstay|block|quiet` (see `modes`). In memory only.
    switches: Switches,
    /// How many `mosctl expel`s are under way.
    expelling: AtomicUsize,
    /// The gauge and the cluster view.
    pub cluster: Cluster,
    /// Log lines about peers, per address.
    peer_log: Mutex<Throttle<IpAddr>>,
    /// Log lines about local clients turned away, per uid.
    user_log: Mutex<Throttle<u32>>,
    /// What the scrapes of the metrics need counted as it happens.
    pub metrics: Metrics,
    /// The moves this node's balancing ordered lately, while it balances (`None` with
    /// `--no-balance`): the balancing loop and placements at exec both count them.
    pub balancing: Option<Mutex<balancer::Recent>>,
    /// Bytes each process (by PID here) moved to and from each node's files through MFS since
    /// the balancing loop last took them (kept only while this node balances).
    traffic: Mutex<FileTraffic>,
    /// The server of this node's files to MFS (`None` with `--no-mfs`).
    pub mfs: Option<Arc<rmosix_mfs::serve::Server>>,
    /// This node's file systems that are the same on every node, once MFS is mounted (or
    /// could not be): what processes away from home may open where they run (DFSA).
    pub consistent: std::sync::OnceLock<rmosix_engine::Consistent>,
}

impl Shared {
    /// The map as it is now. A caller keeps the one it got for the whole of its task, so one
    /// request sees one map even if SIGHUP brings another meanwhile.
    pub fn map(&self) -> Arc<Map> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// SIGHUP: read the map again. A map that does not parse, or that lacks this node, is
    /// logged (file and line) and the old one kept; otherwise peer links, the tools' answers
    /// and the cluster view use the new one from now on. This node's own address is the one
    /// it started with: a changed address needs a restart.
    fn reload_map(&self) {
        let path = self.map().path().to_owned();
        let map = match Map::load(&path).and_then(|map| map.check_own(self.own).map(|_| map)) {
            Ok(map) => map,
            Err(e) => {
                warn!(
                    "map not reloaded, keeping the old one: {}",
                    crate::chain(&e)
                );
                return;
            }
        };
        let nodes = map.nodes().count();
        self.cluster.reload_map(map.clone());
        *self
            .map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(map);
        info!(map = %path.display(), nodes, "map reloaded");
    }

    /// The table. A panic while holding the lock cannot leave it half-updated in a way that
    /// matters more than stopping would, so a poisoned lock is used as is.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// The hosted processes; poisoning is handled as for the table.
    pub fn hosted(&self) -> MutexGuard<'_, Hosted> {
        lock(&self.hosted)
    }

    /// Waits until no hosted process is `home_pid` of `home_node`, at most `bound`; whether it
    /// is gone. Home has a recalled process back before its guest here has said it left.
    pub async fn until_gone(&self, home_node: u16, home_pid: i32, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            // Registered before the check, so a departure between the two is not missed.
            let left = self.hosted_left.notified();
            if !self.hosted().homes().contains(&(home_node, home_pid)) {
                return true;
            }
            if tokio::time::timeout_at(deadline, left).await.is_err() {
                return false;
            }
        }
    }

    /// Process `pid` (here) moved `bytes` of node `node`'s files through MFS. Counted only
    /// while this node balances: its loop takes the counts every round.
    pub fn file_traffic(&self, pid: i32, node: u16, bytes: u64) {
        if self.balancing.is_some() {
            *lock(&self.traffic)
                .entry(pid)
                .or_default()
                .entry(node)
                .or_default() += bytes;
        }
    }

    /// The file traffic counted since the last call, by process and node.
    pub fn take_file_traffic(&self) -> FileTraffic {
        std::mem::take(&mut *lock(&self.traffic))
    }

    /// `mosctl nomfs`: other nodes' MFS calls are refused.
    pub fn mfs_closed(&self) -> bool {
        self.switches.is_on(NodeMode::Nomfs)
    }

    /// Whether new guests are refused.
    pub fn is_blocked(&self) -> bool {
        self.switches.is_on(NodeMode::Block)
    }

    /// Turns `mode` on or off; returns whether it was on before.
    pub fn set_mode(&self, mode: NodeMode, on: bool) -> bool {
        self.switches.set(mode, on)
    }

    /// Marks an `expel` under way until the guard is dropped (gossiped as the expel mode).
    pub fn expelling(&self) -> Expelling<'_> {
        self.expelling.fetch_add(1, Ordering::SeqCst);
        Expelling(&self.expelling)
    }

    /// The modes this node gossips.
    pub fn modes(&self) -> Status {
        Status {
            stay: self.switches.is_on(NodeMode::Stay),
            lstay: self.switches.is_on(NodeMode::Lstay),
            block: self.is_blocked(),
            quiet: self.switches.is_on(NodeMode::Quiet),
            expel: self.expelling.load(Ordering::SeqCst) > 0,
        }
    }

    /// Whether a line about a client of `uid` turned away may be logged now.
    pub fn throttle_user(&self, uid: u32, now: Instant) -> Verdict {
        lock(&self.user_log).event(uid, now)
    }

    /// Whether a line about a failed or refused peer at `ip` may be logged now.
    pub fn throttle_peer(&self, ip: IpAddr, now: Instant) -> Verdict {
        lock(&self.peer_log).event(ip, now)
    }

    /// Log what the throttles held back in the windows that ended by `now`.
    fn report_held(&self, now: Instant) {
        for held in lock(&self.peer_log).sweep(now) {
            match held.source {
                Some(ip) => warn!(
                    "peer {ip}: {} more connections failed or were refused in the last {}s",
                    held.count,
                    LOG_WINDOW.as_secs()
                ),
                None => warn!(
                    "{} more peer connections from other addresses failed or were refused",
                    held.count
                ),
            }
        }
        for held in lock(&self.user_log).sweep(now) {
            match held.source {
                Some(uid) => warn!(
                    "uid {uid}: {} more connections refused in the last {}s",
                    held.count,
                    LOG_WINDOW.as_secs()
                ),
                None => warn!("{} more connections of other users refused", held.count),
            }
        }
    }

    /// Where node `node`'s daemon listens. Host names are resolved now, not at start, so a
    /// renumbered peer is found without restarting.
    pub async fn peer_addr(&self, node: NodeId) -> io::Result<SocketAddr> {
        let map = self.map();
        let entry = map.node(node).ok_or(io::ErrorKind::NotFound)?;
        match &entry.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), self.port))
                .await?
                .next()
                .ok_or_else(|| io::Error::other(format!("{name} has no address"))),
        }
    }
}

/// The modes an operator sets, one flag each.
#[derive(Default)]
struct Switches {
    stay: AtomicBool,
    lstay: AtomicBool,
    block: AtomicBool,
    quiet: AtomicBool,
    nomfs: AtomicBool,
}

impl Switches {
    fn flag(&self, mode: NodeMode) -> &AtomicBool {
        match mode {
            NodeMode::Stay => &self.stay,
            NodeMode::Lstay => &self.lstay,
            NodeMode::Block => &self.block,
            NodeMode::Quiet => &self.quiet,
            NodeMode::Nomfs => &self.nomfs,
        }
    }

    fn is_on(&self, mode: NodeMode) -> bool {
        self.flag(mode).load(Ordering::SeqCst)
    }

    fn set(&self, mode: NodeMode, on: bool) -> bool {
        self.flag(mode).swap(on, Ordering::SeqCst)
    }
}

/// An `expel` under way; see [`Shared::expelling`].
pub(crate) struct Expelling<'a>(&'a AtomicUsize);

impl Drop for Expelling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A started daemon: configuration checked, both listeners bound.
pub struct Daemon {
    shared: Arc<Shared>,
    tcp: TcpListener,
    unix: UnixListener,
    socket: PathBuf,
    /// SIGTERM and SIGHUP, caught from before the control socket exists: whoever can reach
    /// the socket may send them (a unit's reload), and their default action would end us.
    term: Signal,
    hangup: Signal,
    /// The metrics listener, if asked for.
    metrics: Option<TcpListener>,
    /// MFS, unmounted when the daemon stops.
    mounted: Option<rmosix_mfs::fs::Mounted>,
}

impl Daemon {
    /// Load the map and key, find our node, raise the descriptor limit and bind both
    /// listeners. Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
        let map = Map::load(&config.map)?;
        let key = ClusterKey::load(&config.key)?;
        let own = own::own_node(&map, config.node)?;
        let fd_limit = sys::raise_fd_limit().map_err(DaemonError::FdLimit)?;
        let limits = Arc::new(Limits::new(
            fd_limit.hard,
            config.max_user_connections as usize,
        ));
        let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, config.port))
            .await
            .map_err(|source| DaemonError::ListenTcp {
                port: config.port,
                source,
            })?;
        // The view's UDP port has the TCP port's number (the one the kernel chose for port 0).
        let port = tcp
            .local_addr()
            .map_err(|source| DaemonError::ListenTcp {
                port: config.port,
                source,
            })?
            .port();
        let metrics = match config.metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::ListenMetrics { addr, source })?,
            ),
            None => None,
        };
        let unix = bind_control(&config.socket).await?;
        let records = Records::open(&guest_records(&config.socket))?;
        // Guests that ended while no daemon ran, or whose daemon stopped before reaping them.
        match records.sweep(|guest| !guests::is_alive(guest)) {
            Ok(0) => {}
            Ok(n) => info!(records = n, "forgot guests that have ended"),
            Err(e) => warn!("cannot sweep the guests' records: {e}"),
        }
        let units = Units::probe().map_err(DaemonError::Units)?;
        let policy = rmosix_mfs::serve::Policy {
            trust_root: config.mfs_trust_root,
        };
        let mfs = match &config.mfs {
            Some(_) => {
                match rmosix_mfs::serve::Server::start(Path::new("/"), policy, files::WORKERS) {
                    Ok(server) => Some(server),
                    Err(e) => {
                        warn!("cannot serve this node's files to MFS: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let cluster = Cluster::start(own, &map, &key, port, config.cgroup.clone()).await?;
        info!(
            node = own.get(),
            port = config.port,
            socket = %config.socket.display(),
            connections = limits.capacity(),
            per_user = config.max_user_connections,
            metrics = ?config.metrics,
            "mosixd ready"
        );
        let shared = Arc::new(Shared {
            own,
            map: RwLock::new(Arc::new(map)),
            key,
            port: config.port,
            table: Mutex::new(Table::default()),
            hosted: Mutex::new(Hosted::default()),
            hosted_left: tokio::sync::Notify::new(),
            traffic: Mutex::default(),
            records,
            socket: config.socket.clone(),
            units,
            limits,
            guest_fd_limit: fd_limit,
            switches: Switches::default(),
            expelling: AtomicUsize::new(0),
            cluster,
            peer_log: Mutex::new(Throttle::new(LOG_WINDOW, LOG_SOURCES)),
            user_log: Mutex::new(Throttle::new(LOG_WINDOW, LOG_SOURCES)),
            metrics: Metrics::default(),
            balancing: config.balance.then(Mutex::default),
            mfs,
            consistent: std::sync::OnceLock::new(),
        });
        // A node whose MFS cannot be mounted still runs and moves processes.
        let mounted = match (&config.mfs, &shared.mfs) {
            (Some(dir), Some(server)) => match files::mount(&shared, dir, server) {
                Ok(mounted) => {
                    info!(dir = %dir.display(), "MFS mounted");
                    Some(mounted)
                }
                Err(e) => {
                    warn!("cannot mount MFS at {}: {e}", dir.display());
                    None
                }
            },
            _ => None,
        };
        let consistent = match config.dfsa_on {
            true => rmosix_engine::Consistent::new(
                mounted.as_ref().and(config.mfs.as_deref()),
                &config.dfsa,
            )
            .with_system(&config.same_files)
            .at_node(shared.own.get()),
            false => rmosix_engine::Consistent::default(),
        };
        let _ = shared.consistent.set(consistent);
        Ok(Daemon {
            shared,
            tcp,
            unix,
            socket: config.socket,
            term,
            hangup,
            metrics,
            mounted,
        })
    }

    /// This daemon's node.
    pub fn node(&self) -> NodeId {
        self.shared.own
    }

    /// Serve peers and clients until SIGINT or SIGTERM; then remove the control socket. The
    /// guests it started keep running (see guest::spawn_guest); the supervisors of this
    /// node reconnect to the next daemon.
    pub async fn serve(self) -> Result<(), DaemonError> {
        let (mut term, hangup) = (self.term, self.hangup);
        // The accept loops are tasks of their own, which any runtime thread runs: a
        // connection accepted on a thread is served there next (tokio runs what a task spawns
        // right after it), with no other thread to wake, and a thread that gets the CPU
        // accepts every connection waiting. The future of `block_on` runs on the main thread
        // alone, and on a crowded node each wake-up of a thread waits its turn for a CPU.
        let mut peers = tokio::spawn(accept_peers(self.shared.clone(), self.tcp));
        let mut clients = tokio::spawn(accept_clients(self.shared.clone(), self.unix));
        let scrapes = async {
            match self.metrics {
                Some(listener) => metrics::serve(self.shared.clone(), listener).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = &mut peers => warn!("stopped accepting peers: {ended:?}"),
            ended = &mut clients => warn!("stopped accepting clients: {ended:?}"),
            () = report_held_lines(&self.shared) => {}
            () = cluster::publish(&self.shared) => {}
            () = balancer::run(self.shared.clone()), if self.shared.balancing.is_some() => {}
            () = reload_on_hangup(&self.shared, hangup) => {}
            () = scrapes => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("mosixd stopping");
        peers.abort();
        clients.abort();
        // The others mark this node dead at once rather than after the suspicion timeout.
        self.shared.cluster.leave().await;
        let _ = std::fs::remove_file(&self.socket);
        drop(self.mounted);
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// On each SIGHUP, read the map again (see [`Shared::reload_map`]).
async fn reload_on_hangup(shared: &Shared, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        shared.reload_map();
    }
    std::future::pending::<()>().await;
}

/// Once a window, log what the throttles held back.
async fn report_held_lines(shared: &Shared) {
    let mut ticks = tokio::time::interval(LOG_WINDOW);
    loop {
        ticks.tick().await;
        shared.report_held(Instant::now());
    }
}

/// Where the record of the guests lives: beside the control socket, so that every daemon of
/// that socket (a restarted one too) finds it, and under /run, which a reboot empties with the
/// guests gone.
fn guest_records(socket: &Path) -> PathBuf {
    socket.with_extension("guests")
}

/// Create the socket's directory, replace a stale socket, bind, and let every user connect
/// (the daemon checks each caller's credentials itself).
async fn bind_control(path: &Path) -> Result<UnixListener, DaemonError> {
    let err = |source| DaemonError::ListenUnix {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

/// After a failed accept (out of fds, most likely), wait this long before the next, rather
/// than spinning; connections already open go on being served.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Admission happens here, in accept order, before anything is read: a connection over the
/// limits is closed at once.
async fn accept_peers(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => match shared.limits.admit(Holder::Peer(addr.ip())) {
                Ok(ticket) => {
                    tokio::spawn(peer::serve_peer(shared.clone(), stream, addr, ticket));
                }
                Err(why) => {
                    drop(stream);
                    peer::refused(&shared, addr.ip(), &why);
                }
            },
            Err(e) => {
                warn!("cannot accept a peer: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The client's identity is taken from the socket once, here; admission follows it.
async fn accept_clients(shared: Arc<Shared>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let caller = match Caller::of(&stream) {
                    Ok(caller) => caller,
                    Err(e) => {
                        warn!("client without credentials dropped: {e}");
                        continue;
                    }
                };
                match shared.limits.admit(caller.holder()) {
                    Ok(ticket) => {
                        tokio::spawn(control::serve_client(
                            shared.clone(),
                            stream,
                            caller,
                            ticket,
                            Instant::now(),
                        ));
                    }
                    Err(why) => {
                        control::refuse(stream, &why);
                        if let Verdict::Log { held } =
                            shared.throttle_user(caller.uid, Instant::now())
                        {
                            warn!(
                                uid = caller.uid,
                                "client refused: {why}{}",
                                peer::held_note(held)
                            );
                        }
                    }
                }
            }
            Err(e) => {
                warn!("cannot accept a client: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
