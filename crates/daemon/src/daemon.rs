//! Start-up and the two accept loops.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

use rmosix_config::{Host, Map, MapError, NodeId};
use rmosix_transport::{ClusterKey, KeyError};

use crate::table::Table;
use crate::{control, own, peer};

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
}

impl Config {
    /// The port MOSIX daemons listen on unless told otherwise.
    pub const DEFAULT_PORT: u16 = 4660;
    /// Where the cluster key lives unless told otherwise.
    pub const DEFAULT_KEY: &str = "/etc/mosix/key";
}

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
    /// The handler for SIGTERM could not be installed.
    #[error("cannot handle SIGTERM")]
    Signals(#[source] io::Error),
}

/// What every connection handler shares.
pub(crate) struct Shared {
    pub own: NodeId,
    pub map: Map,
    pub key: ClusterKey,
    pub port: u16,
    pub table: Mutex<Table>,
}

impl Shared {
    /// The table. A panic while holding the lock cannot leave it half-updated in a way that
    /// matters more than stopping would, so a poisoned lock is used as is.
    pub fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where node `node`'s daemon listens. Host names are resolved now, not at start, so a
    /// renumbered peer is found without restarting.
    pub async fn peer_addr(&self, node: NodeId) -> io::Result<SocketAddr> {
        let entry = self.map.node(node).ok_or(io::ErrorKind::NotFound)?;
        match &entry.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), self.port))
                .await?
                .next()
                .ok_or_else(|| io::Error::other(format!("{name} has no address"))),
        }
    }
}

/// A started daemon: configuration checked, both listeners bound.
pub struct Daemon {
    shared: Arc<Shared>,
    tcp: TcpListener,
    unix: UnixListener,
    socket: PathBuf,
}

impl Daemon {
    /// Load the map and key, find our node and bind both listeners. Must be called inside a
    /// tokio runtime.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let map = Map::load(&config.map)?;
        let key = ClusterKey::load(&config.key)?;
        let own = own::own_node(&map, config.node)?;
        let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, config.port))
            .await
            .map_err(|source| DaemonError::ListenTcp {
                port: config.port,
                source,
            })?;
        let unix = bind_control(&config.socket).await?;
        info!(node = own.get(), port = config.port, socket = %config.socket.display(), "mosixd ready");
        let shared = Arc::new(Shared {
            own,
            map,
            key,
            port: config.port,
            table: Mutex::new(Table::default()),
        });
        Ok(Daemon {
            shared,
            tcp,
            unix,
            socket: config.socket,
        })
    }

    /// This daemon's node.
    pub fn node(&self) -> NodeId {
        self.shared.own
    }

    /// Serve peers and clients until SIGINT or SIGTERM; then remove the control socket.
    pub async fn serve(self) -> Result<(), DaemonError> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(DaemonError::Signals)?;
        tokio::select! {
            () = accept_peers(&self.shared, &self.tcp) => {}
            () = accept_clients(&self.shared, &self.unix) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("mosixd stopping");
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }
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

async fn accept_peers(shared: &Arc<Shared>, listener: &TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                tokio::spawn(peer::serve_peer(shared.clone(), stream, addr));
            }
            Err(e) => {
                warn!("cannot accept a peer: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn accept_clients(shared: &Arc<Shared>, listener: &UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(control::serve_client(shared.clone(), stream));
            }
            Err(e) => {
                warn!("cannot accept a client: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
