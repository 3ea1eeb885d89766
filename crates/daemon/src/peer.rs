//! Connections from other nodes' daemons.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use rmosix_config::NodeId;
use rmosix_seal::SessionKeys;
use rmosix_transport::{Link, LinkError};
use rmosix_wire::{LINK_VERSION, LinkHello, Purpose};

use crate::chain;
use crate::daemon::Shared;
use crate::guest::spawn_guest;
use crate::sys::GuestCreds;

/// How long a peer that completed the handshake may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer was turned away after the handshake.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("no hello within {}s", HELLO_TIMEOUT.as_secs())]
    HelloTimeout,
    #[error("closed before its hello")]
    NoHello,
    #[error("cannot read its hello")]
    Link(#[from] LinkError),
    #[error("malformed hello")]
    BadHello(#[source] serde_json::Error),
    #[error("speaks link version {0}, we speak {LINK_VERSION}")]
    Version(u32),
    #[error("claims to be node {0}, which is not in the map")]
    UnknownNode(u16),
}

/// Serve one TCP connection from another node. Nothing the peer sends is acted on before the
/// handshake proves it holds the cluster key; every failure is logged and closes the
/// connection, and none stops the daemon.
pub(crate) async fn serve_peer(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let ip = addr.ip();
    let mut link = match rmosix_transport::accept(stream, &shared.key).await {
        Ok(link) => link,
        Err(e) => {
            warn!("peer {ip} dropped: {}", chain(&e));
            return;
        }
    };
    let hello = match read_hello(&shared, &mut link).await {
        Ok(hello) => hello,
        Err(e) => {
            warn!("peer {ip} dropped: {}", chain(&e));
            return;
        }
    };
    let from = hello.from_node;
    match hello.purpose {
        Purpose::Ping => {
            let answer = LinkHello::new(shared.own.get(), Purpose::Ping);
            if let Err(e) = link.send(&answer.encode()).await {
                warn!("ping from node {from} ({ip}): cannot answer: {}", chain(&e));
            }
        }
        Purpose::Session { uid, gid, groups } => {
            serve_session(link, from, GuestCreds { uid, gid, groups }).await;
        }
    }
}

async fn read_hello(shared: &Shared, link: &mut Link) -> Result<LinkHello, PeerError> {
    let bytes = tokio::time::timeout(HELLO_TIMEOUT, link.recv())
        .await
        .map_err(|_| PeerError::HelloTimeout)??
        .ok_or(PeerError::NoHello)?;
    let hello = LinkHello::decode(&bytes).map_err(PeerError::BadHello)?;
    if hello.version != LINK_VERSION {
        return Err(PeerError::Version(hello.version));
    }
    if NodeId::new(hello.from_node)
        .and_then(|id| shared.map.node(id))
        .is_none()
    {
        return Err(PeerError::UnknownNode(hello.from_node));
    }
    Ok(hello)
}

/// What the peer daemon answers once it holds the session keys and reads the link no more.
pub(crate) const SESSION_READY: &[u8] = b"ready";

/// Take the session keys, give the link up and start a guest on its socket; reap the guest.
/// The home daemon hands its end to the supervisor: the session runs between the two
/// supervisors directly.
async fn serve_session(mut link: Link, from: u16, creds: GuestCreds) {
    let uid = creds.uid;
    let keys = match tokio::time::timeout(HELLO_TIMEOUT, link.recv()).await {
        Ok(Ok(Some(raw))) => match SessionKeys::from_bytes(&raw) {
            Ok(keys) => keys,
            Err(e) => {
                warn!(from, uid, "session dropped: {e}");
                return;
            }
        },
        _ => {
            warn!(from, uid, "session dropped: no session keys");
            return;
        }
    };
    let socket = match link.send(SESSION_READY).await {
        Ok(()) => link.into_socket().await,
        Err(e) => Err(e),
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => {
            warn!(from, uid, "session dropped: {}", chain(&e));
            return;
        }
    };
    let mut child = match spawn_guest(creds, socket.into(), &keys) {
        Ok(child) => child,
        Err(e) => {
            // Dropping the socket tells the home side the session failed.
            warn!(from, uid, "cannot start a guest: {e}");
            return;
        }
    };
    let pid = child.id();
    info!(from, uid, pid, "guest started");
    match child.wait().await {
        Ok(status) => info!(from, uid, pid, "guest exited: {status}"),
        Err(e) => warn!(from, uid, pid, "cannot reap guest: {e}"),
    }
}
