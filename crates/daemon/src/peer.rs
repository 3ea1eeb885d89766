//! Connections from other nodes' daemons.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tracing::{info, warn};

use rmosix_config::NodeId;
use rmosix_seal::SessionKeys;
use rmosix_transport::{Link, LinkError};
use rmosix_wire::{HostedHere, LINK_VERSION, LinkHello, Purpose};

use crate::daemon::Shared;
use crate::guest::spawn_guest;
use crate::limits::{Refusal, Ticket};
use crate::sys::GuestCreds;
use crate::throttle::Verdict;
use crate::{chain, guests, modes};

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
/// connection, and none stops the daemon. Anyone can fail the handshake in a loop, so those
/// failures are logged at most once per address and window (see `throttle`). `ticket` holds
/// the connection's place in the limits until the link is answered or handed to a guest.
pub(crate) async fn serve_peer(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    ticket: Ticket,
) {
    let ip = addr.ip();
    let mut link = match rmosix_transport::accept(stream, &shared.key).await {
        Ok(link) => link,
        Err(e) => {
            if let Verdict::Log { held } = shared.throttle_peer(ip, Instant::now()) {
                warn!("peer {ip} dropped: {}{}", chain(&e), held_note(held));
            }
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
            // Counted as arriving before the check: see `Hosted::session_accepted`.
            let arriving = Arriving::new(&shared);
            if shared.is_blocked() {
                drop(arriving);
                refuse_blocked(link, from, uid).await;
            } else {
                let creds = GuestCreds { uid, gid, groups };
                serve_session(&shared, link, from, creds, ticket, arriving).await;
            }
        }
        Purpose::Recall {
            pid,
            to,
            forwarded_per_mille,
        } => {
            // The move may take a while; the connection is a peer's like any, and holds its
            // place in the limits meanwhile.
            let answer = modes::answer_recall(&shared, from, pid, to, forwarded_per_mille).await;
            if let Err(e) = link.send(&answer.encode()).await {
                warn!(from, pid, "cannot answer a recall: {}", chain(&e));
            }
            drop(ticket);
        }
        Purpose::Files => {
            // The link holds its place in the limits for as long as it lasts.
            crate::files::serve_link(&shared, link, from).await;
            drop(ticket);
        }
        Purpose::Hosted => {
            let answer = HostedHere {
                processes: guests::hosted_from(&shared, from).await,
            };
            if let Err(e) = link.send(&answer.encode()).await {
                warn!(from, "cannot answer which guests run here: {}", chain(&e));
            }
        }
    }
}

/// A connection the limits turned away before it was read (its socket is closed already).
pub(crate) fn refused(shared: &Shared, ip: IpAddr, why: &Refusal) {
    if let Verdict::Log { held } = shared.throttle_peer(ip, Instant::now()) {
        warn!("peer {ip} refused: {why}{}", held_note(held));
    }
}

/// The end of a log line that follows a window in which lines were held back.
pub(crate) fn held_note(held: u64) -> String {
    match held {
        0 => String::new(),
        n => format!(" ({n} more before this were not logged)"),
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
        .filter(|&id| shared.map().node(id).is_some())
        .is_none()
    {
        return Err(PeerError::UnknownNode(hello.from_node));
    }
    Ok(hello)
}

/// Turn a session away from a blocked node: take its keys, as the protocol has them come
/// first, and answer [`modes::SESSION_BLOCKED`] instead of [`SESSION_READY`].
async fn refuse_blocked(mut link: Link, from: u16, uid: u32) {
    info!(from, uid, "session refused: this node is blocked");
    let refused = async {
        link.recv().await?;
        link.send(modes::SESSION_BLOCKED).await
    };
    if !matches!(
        tokio::time::timeout(HELLO_TIMEOUT, refused).await,
        Ok(Ok(()))
    ) {
        warn!(from, uid, "cannot tell a session this node is blocked");
    }
}

/// What the peer daemon answers once it holds the session keys and reads the link no more.
pub(crate) const SESSION_READY: &[u8] = b"ready";

/// Take the session keys, give the link up and start a guest on its socket; reap the guest
/// and remove its record.
/// The home daemon hands its end to the supervisor: the session runs between the two
/// supervisors directly. Every wait before the hand-over is bounded: a home that opens a
/// session and stalls costs a connection for [`HELLO_TIMEOUT`] at most.
async fn serve_session(
    shared: &Shared,
    mut link: Link,
    from: u16,
    creds: GuestCreds,
    ticket: Ticket,
    arriving: Arriving<'_>,
) {
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
    let handed = async {
        link.send(SESSION_READY).await?;
        link.into_socket().await
    };
    let socket = match tokio::time::timeout(HELLO_TIMEOUT, handed).await {
        Ok(socket) => socket,
        Err(_) => {
            warn!(from, uid, "session dropped: the home side does not read");
            return;
        }
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => {
            warn!(from, uid, "session dropped: {}", chain(&e));
            return;
        }
    };
    let (mut child, record) = match spawn_guest(shared, from, creds, socket.into(), &keys) {
        Ok(started) => started,
        Err(e) => {
            // Dropping the socket tells the home side the session failed.
            warn!(from, uid, "cannot start a guest: {e}");
            return;
        }
    };
    // The socket is the guest's now; this daemon holds nothing of the session.
    drop(ticket);
    arriving.started(record.pid);
    let pid = child.id();
    info!(from, uid, pid, "guest started");
    match child.wait().await {
        Ok(status) => info!(from, uid, pid, "guest exited: {status}"),
        Err(e) => warn!(from, uid, pid, "cannot reap guest: {e}"),
    }
    shared.hosted().guest_exited(record.pid);
    shared.records.remove(&record);
}

/// An accepted session on its way to starting a guest; dropped before, it was not.
struct Arriving<'a>(Option<&'a Shared>);

impl<'a> Arriving<'a> {
    fn new(shared: &'a Shared) -> Arriving<'a> {
        shared.hosted().session_accepted();
        Arriving(Some(shared))
    }

    fn started(mut self, guest: i32) {
        if let Some(shared) = self.0.take() {
            shared.hosted().guest_started(guest);
        }
    }
}

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.hosted().session_dropped();
        }
    }
}
