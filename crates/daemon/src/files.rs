//! MFS in the daemon: this node's files served to other nodes, and `/mfs` mounted here.
//!
//! One `Purpose::Files` link per pair of nodes carries the calls of every process of the
//! requesting node, each with its caller's ids (rmosix-mfs's protocol numbers them, so many
//! are under way at once on one link). The serving daemon trusts the ids a peer states as it
//! trusts a session's: only a daemon holding the cluster key can open the link. This node's
//! own `/mfs/K` goes to the same server without a link.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use rmosix_config::NodeId;
use rmosix_mfs::fs::{Cluster, Mounted, Places};
use rmosix_mfs::protocol::{self, Answer, Call, Caller, Reply, Request};
use rmosix_mfs::serve::{Server, Session};
use rmosix_transport::{Link, LinkWriter};
use rmosix_view::Liveness;
use rmosix_wire::{LinkHello, Purpose};

use crate::chain;
use crate::daemon::Shared;

/// How long connecting to a peer's daemon may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may wait for its answer before it fails with EIO. Generous for a disk
/// (a 1 MiB write or an fsync), short enough that a node that died silently is noticed by
/// a reader within seconds, before the cluster view declares it dead.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Worker threads of the server: calls of different callers run side by side.
pub(crate) const WORKERS: usize = 4;
/// How many calls of one peer's link may be under way or have answers not yet sent: the
/// link is read no further until one is done, so a peer that sends calls without end, or
/// reads no answers, holds at most this many here, each with at most `protocol::MAX_IO`
/// bytes of data.
const IN_FLIGHT: usize = 64;

/// The answer of a call that could not be made.
fn failed(errno: i32) -> (Answer, Vec<u8>) {
    (Answer::Error(errno), Vec::new())
}

/// Mount `/mfs` for this node's processes.
pub(crate) fn mount(
    shared: &Arc<Shared>,
    dir: &Path,
    server: &Arc<Server>,
) -> std::io::Result<Mounted> {
    let nodes = Arc::new(Nodes {
        shared: shared.clone(),
        local: Arc::new(server.session()),
        links: Arc::default(),
    });
    rmosix_mfs::fs::mount(dir, nodes, tokio::runtime::Handle::current())
}

/// Serve a peer's `Purpose::Files` link until it closes.
pub(crate) async fn serve_link(shared: &Shared, link: Link, from: u16) {
    let Some(server) = &shared.mfs else {
        info!(
            from,
            "MFS link refused: this node serves no files (--no-mfs)"
        );
        return;
    };
    let session = Arc::new(server.session());
    let (mut reader, mut writer) = link.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(IN_FLIGHT);
    let room = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let send = async move {
        while let Some(frame) = rx.recv().await {
            if writer.send(&frame).await.is_err() {
                return;
            }
        }
    };
    let receive = async {
        loop {
            // A call's place is held until its answer is queued for the writer.
            let Ok(place) = room.clone().acquire_owned().await else {
                return;
            };
            let frame = match reader.recv().await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    warn!(from, "MFS link ended: {}", chain(&e));
                    return;
                }
            };
            let (call, data): (Call, _) = match protocol::decode(frame) {
                Ok(decoded) => decoded,
                Err(e) => {
                    warn!(from, "MFS link dropped: {e}");
                    return;
                }
            };
            // No kernel writes more in one call: with IN_FLIGHT, what a peer can make this
            // node hold is bounded.
            if data.len() > protocol::MAX_IO as usize {
                warn!(
                    from,
                    bytes = data.len(),
                    "MFS link dropped: a call carries more than one write may"
                );
                return;
            }
            let (tx, session) = (tx.clone(), session.clone());
            let closed = shared.mfs_closed();
            tokio::spawn(async move {
                let (answer, data) = if closed {
                    // `mosctl nomfs`: this node's files are closed to others.
                    failed(libc::EACCES)
                } else {
                    session.call(call.caller, call.request, data).await
                };
                let reply = Reply {
                    id: call.id,
                    answer,
                };
                let _ = tx.send(protocol::encode(&reply, data)).await;
                drop(place);
            });
        }
    };
    tokio::select! {
        () = send => {}
        () = receive => {}
    }
}

/// A peer's link, locked while it is opened.
type LinkSlot = Arc<tokio::sync::Mutex<Slot>>;

/// A peer's link, or when the last attempt to open one failed.
#[derive(Default)]
struct Slot {
    link: Option<Arc<PeerLink>>,
    failed_at: Option<Instant>,
}

/// An answer and the bytes that came with it.
type Answered = (Answer, Vec<u8>);

/// The [`Cluster`] the mount asks; cloned into each call's future.
#[derive(Clone)]
struct Nodes {
    shared: Arc<Shared>,
    local: Arc<Session>,
    /// One slot per peer, locked while its link is opened: callers for one node wait for
    /// one connection attempt, callers for others do not wait at all.
    links: Arc<Mutex<HashMap<u16, LinkSlot>>>,
}

/// This node's end of a `Purpose::Files` link.
struct PeerLink {
    writer: tokio::sync::Mutex<LinkWriter>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answered>>>,
    next: AtomicU64,
    closed: AtomicBool,
}

impl PeerLink {
    async fn call(&self, caller: Caller, request: Request, data: Vec<u8>) -> (Answer, Vec<u8>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let frame = protocol::encode(
            &Call {
                id,
                caller,
                request,
            },
            data,
        );
        if self.writer.lock().await.send(&frame).await.is_err() {
            self.closed.store(true, Ordering::SeqCst);
            lock(&self.pending).remove(&id);
            return failed(libc::EIO);
        }
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(answer)) => answer,
            // The link ended (its reader dropped every waiting call) or the node is silent.
            Ok(Err(_)) | Err(_) => {
                lock(&self.pending).remove(&id);
                failed(libc::EIO)
            }
        }
    }
}

impl Nodes {
    /// The link to `node`, opened if there is none or the last one ended.
    async fn link(&self, node: u16) -> Result<Arc<PeerLink>, i32> {
        let slot = lock(&self.links).entry(node).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(link) = slot
            .link
            .as_ref()
            .filter(|l| !l.closed.load(Ordering::SeqCst))
        {
            return Ok(link.clone());
        }
        // The callers that queued behind a failed attempt fail with it, rather than each
        // waiting for an attempt of its own.
        if slot
            .failed_at
            .is_some_and(|at| at.elapsed() < CONNECT_TIMEOUT)
        {
            return Err(libc::EIO);
        }
        match self.connect(node).await {
            Ok(link) => {
                *slot = Slot {
                    link: Some(link.clone()),
                    failed_at: None,
                };
                Ok(link)
            }
            Err(e) => {
                warn!(node, "MFS: cannot reach node: {e}");
                slot.failed_at = Some(Instant::now());
                Err(libc::EIO)
            }
        }
    }

    async fn connect(&self, node: u16) -> Result<Arc<PeerLink>, String> {
        let id = NodeId::new(node).ok_or("no such node")?;
        let addr = self.shared.peer_addr(id).await.map_err(|e| e.to_string())?;
        let opened = async {
            let mut link = rmosix_transport::connect(addr, &self.shared.key).await?;
            link.send(&LinkHello::new(self.shared.own.get(), Purpose::Files).encode())
                .await?;
            Ok::<_, rmosix_transport::LinkError>(link)
        };
        let link = tokio::time::timeout(CONNECT_TIMEOUT, opened)
            .await
            .map_err(|_| format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| chain(&e))?;
        let (mut reader, writer) = link.split();
        let peer = Arc::new(PeerLink {
            writer: tokio::sync::Mutex::new(writer),
            pending: Mutex::default(),
            next: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&peer);
        tokio::spawn(async move {
            while let Ok(Some(frame)) = reader.recv().await {
                let Some(peer) = weak.upgrade() else { return };
                let Ok((reply, data)) = protocol::decode::<Reply>(frame) else {
                    break;
                };
                if let Some(waiting) = lock(&peer.pending).remove(&reply.id) {
                    let _ = waiting.send((reply.answer, data));
                }
            }
            if let Some(peer) = weak.upgrade() {
                peer.closed.store(true, Ordering::SeqCst);
                // Dropping the senders fails every call still waiting on this link.
                lock(&peer.pending).clear();
            }
        });
        Ok(peer)
    }

    /// Whether the cluster view has declared `node` dead (after having heard of it: a node
    /// not heard of yet is tried).
    fn is_dead(&self, node: u16) -> bool {
        self.shared
            .cluster
            .snapshot()
            .iter()
            .any(|v| v.node.get() == node && v.state.is_some() && v.liveness == Liveness::Dead)
    }
}

impl Cluster for Nodes {
    fn nodes(&self) -> Vec<u16> {
        self.shared.map().nodes().map(|n| n.id.get()).collect()
    }

    fn call(
        &self,
        node: u16,
        caller: Caller,
        request: Request,
        data: Vec<u8>,
    ) -> rmosix_mfs::fs::Answered {
        if node == self.shared.own.get() {
            let local = self.local.clone();
            return Box::pin(async move { local.call(caller, request, data).await });
        }
        if self.is_dead(node) {
            return Box::pin(async { failed(libc::EIO) });
        }
        let this = self.clone();
        Box::pin(async move {
            match this.link(node).await {
                Ok(link) => link.call(caller, request, data).await,
                Err(errno) => failed(errno),
            }
        })
    }

    fn places(&self, pid: i32) -> Places {
        let own = self.shared.own.get();
        if let Some(home) = self.shared.hosted().home_of(pid) {
            return Places { here: own, home };
        }
        // A process of this node that runs elsewhere: its forwarded calls come from its husk
        // here, under its home PID.
        let here = self.shared.table().location(pid).flatten().unwrap_or(own);
        Places { here, home: own }
    }

    fn transferred(&self, pid: i32, node: u16, bytes: u64) {
        self.shared.file_traffic(pid, node, bytes);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
