//! The control socket: requests from the tools and the supervisors' report streams.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::UCred;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use rmosix_config::NodeId;
use rmosix_seal::SessionKeys;
use rmosix_transport::LinkError;
use rmosix_wire::{
    Command, DecodeError, LineReader, LinkHello, MoveError, PeerStatus, Purpose, Reply, Report,
    Request, Target, encode_line,
};

use crate::chain;
use crate::daemon::Shared;
use crate::peer::SESSION_READY;
use crate::procfs;
use crate::table::{Refusal, SupervisorId};

/// How long opening a session may take before the node counts as down.
const SESSION_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `status` waits for each peer's ping answer.
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// A control connection and the line buffer in front of it.
struct Conn {
    stream: UnixStream,
    lines: LineReader,
    cred: UCred,
}

impl Conn {
    /// The next message; `None` when the client closed between messages.
    async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            if let Some(msg) = self.lines.next_message()? {
                return Ok(Some(msg));
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(DecodeError::Read)?;
            if n == 0 {
                let rest = self.lines.take_buffered();
                return if rest.is_empty() {
                    Ok(None)
                } else {
                    Err(DecodeError::Truncated { bytes: rest.len() })
                };
            }
            self.lines.feed(&buf[..n])?;
        }
    }

    async fn send<T: serde::Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        self.stream.write_all(&encode_line(msg)?).await
    }
}

/// Serve one client: requests until it closes, or a supervisor's session.
pub(crate) async fn serve_client(shared: Arc<Shared>, stream: UnixStream) {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => {
            warn!("client without credentials dropped: {e}");
            return;
        }
    };
    let mut conn = Conn {
        stream,
        lines: LineReader::new(),
        cred,
    };
    loop {
        let request = match conn.recv::<Request>().await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(e) => {
                debug!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    "client dropped: {}",
                    chain(&e)
                );
                let message = format!("bad request: {}", chain(&e));
                let _ = conn.send(&Reply::Error { message }).await;
                return;
            }
        };
        debug!(uid = cred.uid(), pid = cred.pid(), ?request, "request");
        let reply = match request {
            Request::Supervise => return supervise(&shared, conn).await,
            Request::OpenSession { node } => return open_session(&shared, conn, node).await,
            Request::Migrate { pid, target } => migrate(&shared, cred, pid, target).await,
            Request::Where { pid } => locate(&shared, pid),
            Request::Status => status(&shared).await,
        };
        if conn.send(&reply).await.is_err() {
            return;
        }
    }
}

fn error(message: impl Into<String>) -> Reply {
    Reply::Error {
        message: message.into(),
    }
}

fn not_supervised(pid: i32) -> Reply {
    error(format!("process {pid} is not running under mosrun"))
}

/// Resolve a target node number: our own node means home; others must be in the map.
fn target_node(shared: &Shared, target: Target) -> Result<Option<u16>, Reply> {
    match target {
        Target::Home => Ok(None),
        Target::Node(n) if n == shared.own.get() => Ok(None),
        Target::Node(n) => match NodeId::new(n).and_then(|id| shared.map.node(id)) {
            Some(_) => Ok(Some(n)),
            None => Err(error(format!(
                "no node {n} in {}",
                shared.map.path().display()
            ))),
        },
    }
}

async fn migrate(shared: &Shared, cred: UCred, pid: i32, target: Target) -> Reply {
    let target = match target_node(shared, target) {
        Ok(target) => target,
        Err(reply) => return reply,
    };
    if shared.table().location(pid).is_none() {
        return not_supervised(pid);
    }
    let creds = match procfs::read_creds(pid) {
        Ok(creds) => creds,
        Err(_) => return error(format!("no process {pid}")),
    };
    if !procfs::may_act(cred.uid(), &creds) {
        return error(format!(
            "permission denied: process {pid} belongs to uid {}",
            creds.real_uid
        ));
    }
    let waiter = match shared.table().start_migrate(pid, target) {
        Ok(waiter) => waiter,
        Err(Refusal::AlreadyThere) => return Reply::Ok,
        Err(Refusal::NotSupervised) => return not_supervised(pid),
        Err(Refusal::SupervisorGone) => {
            return error(format!("the supervisor of process {pid} has gone"));
        }
    };
    info!(pid, to = ?target, by = cred.uid(), "migration requested");
    match waiter.await {
        Ok(Ok(())) => Reply::Ok,
        Ok(Err(failure)) => Reply::Failed(failure),
        Err(_) => error(format!(
            "the supervisor of process {pid} went away during the move"
        )),
    }
}

fn locate(shared: &Shared, pid: i32) -> Reply {
    match shared.table().location(pid) {
        Some(node) => Reply::Location {
            node: node.unwrap_or(shared.own.get()),
        },
        None if procfs::exists(pid) => Reply::Location {
            node: shared.own.get(),
        },
        None => error(format!("no process {pid}")),
    }
}

async fn status(shared: &Arc<Shared>) -> Reply {
    let processes = shared
        .table()
        .process_count()
        .try_into()
        .unwrap_or(u32::MAX);
    let mut pings = tokio::task::JoinSet::new();
    for node in shared
        .map
        .nodes()
        .map(|n| n.id)
        .filter(|&id| id != shared.own)
    {
        let shared = shared.clone();
        pings.spawn(async move {
            let up = tokio::time::timeout(PING_TIMEOUT, ping(&shared, node))
                .await
                .is_ok_and(|r| r.is_ok());
            PeerStatus {
                node: node.get(),
                up,
            }
        });
    }
    let mut peers = pings.join_all().await;
    peers.sort_by_key(|p| p.node);
    Reply::Status {
        node: shared.own.get(),
        processes,
        peers,
    }
}

/// Why a ping got no proper answer.
#[derive(Debug, thiserror::Error)]
enum PingError {
    #[error("cannot find its address")]
    Address(#[source] std::io::Error),
    #[error("link failed")]
    Link(#[from] LinkError),
    #[error("no answer")]
    NoAnswer,
}

async fn ping(shared: &Shared, node: NodeId) -> Result<(), PingError> {
    let addr = shared.peer_addr(node).await.map_err(PingError::Address)?;
    let mut link = rmosix_transport::connect(addr, &shared.key).await?;
    link.send(&LinkHello::new(shared.own.get(), Purpose::Ping).encode())
        .await?;
    let answer = link.recv().await?.ok_or(PingError::NoAnswer)?;
    match LinkHello::decode(&answer) {
        Ok(hello) if hello.from_node == node.get() => Ok(()),
        _ => Err(PingError::NoAnswer),
    }
}

/// A supervisor's connection: reports in, commands out, until it closes.
async fn supervise(shared: &Shared, mut conn: Conn) {
    let (tx, mut commands) = mpsc::unbounded_channel::<Command>();
    let id = shared.table().add_supervisor(tx);
    let pid = conn.cred.pid();
    info!(pid, uid = conn.cred.uid(), "supervisor registered");
    if conn.send(&Reply::Ok).await.is_ok() {
        supervise_loop(shared, &mut conn, id, &mut commands).await;
    }
    shared.table().remove_supervisor(id);
    info!(pid, "supervisor gone");
}

async fn supervise_loop(
    shared: &Shared,
    conn: &mut Conn,
    id: SupervisorId,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) {
    loop {
        tokio::select! {
            report = conn.recv::<Report>() => match report {
                Ok(Some(report)) => accept_report(shared, conn.cred, id, report),
                Ok(None) => return,
                Err(e) => {
                    warn!(pid = conn.cred.pid(), "supervisor dropped: {}", chain(&e));
                    return;
                }
            },
            Some(command) = commands.recv() => {
                if conn.send(&command).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Apply a report, unless it claims a process the supervisor could not be tracing.
fn accept_report(shared: &Shared, cred: UCred, id: SupervisorId, report: Report) {
    if let Report::Started { pid } = report {
        let allowed = procfs::read_creds(pid).is_ok_and(|c| procfs::may_act(cred.uid(), &c));
        if !allowed {
            warn!(
                supervisor = cred.pid(),
                pid, "ignoring report about a process it may not supervise"
            );
            return;
        }
    }
    shared.table().report(id, report);
}

/// Connect the client to a guest on `node`, as the client's own user, and hand it the
/// session: the link's socket and fresh session keys. From then on this daemon is out of the
/// data path (see rmosix_seal).
async fn open_session(shared: &Shared, mut conn: Conn, node: u16) {
    let handed = match connect_session(shared, &conn, node).await {
        Ok(link) => hand_over(link).await.map_err(|e| {
            Reply::Failed(MoveError::TargetDown {
                node,
                reason: chain(&e),
            })
        }),
        Err(reply) => Err(reply),
    };
    match handed {
        Ok((socket, keys)) => {
            let reply = Reply::Session {
                keys: keys.to_hex(),
            };
            if let Err(e) = send_with_fd(&conn.stream, &reply, socket.as_fd()).await {
                warn!(node, "cannot hand the session over: {e}");
            }
        }
        Err(reply) => {
            let _ = conn.send(&reply).await;
        }
    }
}

/// Agree on session keys with the peer daemon over the authenticated link and give the link
/// up. The peer answers once it holds the keys and reads the link no more, so no session byte
/// can end up in either daemon's buffers.
async fn hand_over(
    mut link: rmosix_transport::Link,
) -> Result<(std::net::TcpStream, SessionKeys), HandOverError> {
    let keys = SessionKeys::generate().map_err(HandOverError::Keys)?;
    link.send(&keys.to_bytes()).await?;
    match tokio::time::timeout(SESSION_CONNECT_TIMEOUT, link.recv()).await {
        Ok(Ok(Some(ack))) if ack == SESSION_READY => {}
        Ok(Ok(_)) => return Err(HandOverError::Refused),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(HandOverError::Timeout),
    }
    Ok((link.into_socket().await?, keys))
}

/// Why a session could not be handed over.
#[derive(Debug, thiserror::Error)]
enum HandOverError {
    #[error("cannot make session keys")]
    Keys(#[source] std::io::Error),
    #[error("link failed")]
    Link(#[from] rmosix_transport::LinkError),
    #[error("it could not start a guest")]
    Refused,
    #[error("no guest within {}s", SESSION_CONNECT_TIMEOUT.as_secs())]
    Timeout,
}

/// Send one reply line with `fd` attached (SCM_RIGHTS).
async fn send_with_fd(
    stream: &UnixStream,
    reply: &Reply,
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let line = encode_line(reply)?;
    let fds = [fd.as_raw_fd()];
    loop {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            let iov = [std::io::IoSlice::new(&line)];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(
                stream.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(n) if n == line.len() => return Ok(()),
            Ok(_) => return Err(std::io::Error::other("short send of a session reply")),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn connect_session(
    shared: &Shared,
    conn: &Conn,
    node: u16,
) -> Result<rmosix_transport::Link, Reply> {
    let Some(id) = NodeId::new(node).filter(|&id| shared.map.node(id).is_some()) else {
        return Err(error(format!(
            "no node {node} in {}",
            shared.map.path().display()
        )));
    };
    let pid = conn
        .cred
        .pid()
        .ok_or_else(|| error("cannot tell which process is asking"))?;
    let groups = procfs::read_creds(pid)
        .map_err(|e| error(format!("cannot read the groups of process {pid}: {e}")))?
        .groups;
    let down = |reason: String| Reply::Failed(MoveError::TargetDown { node, reason });
    let addr = shared
        .peer_addr(id)
        .await
        .map_err(|e| down(format!("cannot resolve its address: {e}")))?;
    let mut link = tokio::time::timeout(
        SESSION_CONNECT_TIMEOUT,
        rmosix_transport::connect(addr, &shared.key),
    )
    .await
    .map_err(|_| {
        down(format!(
            "no answer within {}s",
            SESSION_CONNECT_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| down(chain(&e)))?;
    let purpose = Purpose::Session {
        uid: conn.cred.uid(),
        gid: conn.cred.gid(),
        groups,
    };
    link.send(&LinkHello::new(shared.own.get(), purpose).encode())
        .await
        .map_err(|e| down(chain(&e)))?;
    info!(node, uid = conn.cred.uid(), "session opened");
    Ok(link)
}
