//! The control socket: requests from the tools, and the report streams of the supervisors
//! (here) and of the guests (`guests`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use rmosix_balance::Placing;
use rmosix_config::NodeId;
use rmosix_seal::SessionKeys;
use rmosix_transport::LinkError;
use rmosix_wire::{
    Advice, Command, DecodeError, LineReader, LinkHello, Liveness, MoveError, NodeStatus, Purpose,
    Reply, Report, Request, Target, encode_line, encode_reply,
};

use crate::daemon::Shared;
use crate::limits::{Holder, Refusal as OverLimit, Ticket};
use crate::peer::SESSION_READY;
use crate::table::{MigrateResult, Refusal, SupervisorId};
use crate::{balancer, chain, cluster, guests, modes, processes, procfs, sys};

/// How long opening a session may take before the node counts as down.
const SESSION_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client may take to send its request (the tools send it at once). A connection
/// that says nothing is closed, so idle connections cannot pile up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one message may take to go out to a client, supervisors included. A client that
/// does not read its reply (a status can be megabytes) is dropped instead of holding a task.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 8 * 1024;

/// Who is at the other end of a control connection, as the kernel recorded it when the client
/// connected (SO_PEERCRED and SO_PEERGROUPS). Every decision on the connection uses this,
/// never /proc of the client's PID, which may belong to another process by the time we look.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// For logs, and to find a guest's record (together with the client's pidfd, which says
    /// whether the PID is still the client's; see guests::identify).
    pub pid: Option<i32>,
}

impl Caller {
    /// The client of a freshly accepted control connection.
    pub fn of(stream: &UnixStream) -> std::io::Result<Caller> {
        let cred = stream.peer_cred()?;
        Ok(Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            groups: sys::peer_groups(stream.as_fd())?,
            pid: cred.pid(),
        })
    }

    /// How the connection counts against the limits.
    pub fn holder(&self) -> Holder {
        Holder::local(self.uid)
    }
}

/// A control connection and the line buffer in front of it.
pub(crate) struct Conn {
    pub stream: UnixStream,
    lines: LineReader,
    pub caller: Caller,
}

impl Conn {
    /// The next message; `None` when the client closed between messages.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
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

    /// Send a reply; a reply may be longer than a request (see rmosix_wire::MAX_REPLY). One
    /// that is longer still (a list of tens of thousands of hosted processes) is answered
    /// with an error that says so, rather than with nothing.
    pub async fn reply(&mut self, reply: &Reply) -> std::io::Result<()> {
        let line = match encode_reply(reply) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                encode_reply(&error(format!("cannot answer: {e}")))?
            }
            line => line?,
        };
        self.send_line(&line).await
    }

    async fn send_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(SEND_TIMEOUT, self.stream.write_all(line))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// Returns once the client has closed its end (or broken the protocol, which ends the
    /// conversation as well). What it sends meanwhile is buffered for nothing.
    async fn closed(&mut self) {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if self.lines.feed(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Turn a connection away that the limits do not admit: one error line if the socket takes
/// it at once (it always does on a fresh connection), then close.
pub(crate) fn refuse(stream: UnixStream, why: &OverLimit) {
    if let Ok(line) = encode_reply(&error(why.to_string())) {
        let _ = stream.try_write(&line);
    }
}

/// Serve one client: requests until it closes, or a supervisor's session. `_ticket` holds its
/// place in the limits until the connection ends; `accepted`: when the connection was
/// accepted, for the log of a registration.
pub(crate) async fn serve_client(
    shared: Arc<Shared>,
    stream: UnixStream,
    caller: Caller,
    _ticket: Ticket,
    accepted: Instant,
) {
    let mut conn = Conn {
        stream,
        lines: LineReader::new(),
        caller,
    };
    let (uid, pid) = (conn.caller.uid, conn.caller.pid);
    loop {
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, conn.recv::<Request>()).await {
            Ok(Ok(Some(request))) => request,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                debug!(uid, pid, "client dropped: {}", chain(&e));
                let message = format!("bad request: {}", chain(&e));
                let _ = conn.reply(&Reply::Error { message }).await;
                return;
            }
            Err(_) => {
                debug!(uid, pid, "client dropped: no request");
                let message = format!("no request within {}s", REQUEST_TIMEOUT.as_secs());
                let _ = conn.reply(&Reply::Error { message }).await;
                return;
            }
        };
        debug!(uid, pid, ?request, "request");
        let reply = match request {
            Request::Supervise { advice } => {
                return supervise(&shared, conn, advice, accepted).await;
            }
            Request::OpenSession { node } => return open_session(&shared, conn, node).await,
            Request::Migrate { pid, target } => {
                match migrate(&shared, &mut conn, pid, target).await {
                    Some(reply) => reply,
                    None => return,
                }
            }
            Request::Balance { pid } => match balance(&shared, &mut conn, pid).await {
                Some(reply) => reply,
                None => return,
            },
            Request::Lock { pid, locked } => lock(&shared, uid, pid, locked),
            Request::Best { memory_need_mb } => best_start(&shared, memory_need_mb),
            Request::Processes { uid: whose } => processes::list(&shared, whose).await,
            Request::Where { pid } => locate(&shared, pid),
            Request::Status => status(&shared),
            Request::Figures { node } => figures(&shared, node),
            Request::Guest { home_node } => {
                return guests::serve_guest(&shared, conn, home_node).await;
            }
            Request::Guests => guests::list(&shared).await,
            Request::Whois { query } => modes::whois_reply(&shared, query.as_deref()),
            Request::Isup { node } => isup(&shared, node).await,
            Request::SetMode { mode, on } => modes::refuse_unless_root(uid)
                .unwrap_or_else(|| modes::set_mode(&shared, mode, on, uid)),
            Request::Expel => match modes::refuse_unless_root(uid) {
                Some(refused) => refused,
                None => modes::expel(&shared, uid).await,
            },
            Request::SetSpeed { speed } => modes::refuse_unless_root(uid)
                .unwrap_or_else(|| modes::set_speed(&shared, speed, uid)),
            Request::Bring => match modes::refuse_unless_root(uid) {
                Some(refused) => refused,
                None => modes::bring(&shared, uid).await,
            },
        };
        if conn.reply(&reply).await.is_err() {
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
        Target::Node(n) => match NodeId::new(n).filter(|&id| shared.map().node(id).is_some()) {
            Some(_) => Ok(Some(n)),
            None => Err(error(format!(
                "no node {n} in {}",
                shared.map().path().display()
            ))),
        },
    }
}

/// Carry out a migrate request: `None` when the caller went away before the answer, in
/// which case the order is cancelled (see Table::cancel) and nobody is left to reply to.
///
/// The caller's uid is the one the kernel gave for the connection; the process's owner is
/// read from /proc, as kill(2) checks it against the target's own credentials.
async fn migrate(shared: &Shared, conn: &mut Conn, pid: i32, target: Target) -> Option<Reply> {
    match target_node(shared, target) {
        Ok(target) => move_and_wait(shared, conn, pid, target).await,
        Err(reply) => Some(reply),
    }
}

/// `migrate PID balance`: where the balancer would send the process now, as a migrate to
/// there; [`Reply::Location`] if it is best where it is.
async fn balance(shared: &Shared, conn: &mut Conn, pid: i32) -> Option<Reply> {
    let Some(entry) = shared.table().entry(pid) else {
        return Some(not_supervised(pid));
    };
    let (at, advice) = (entry.node, entry.advice);
    let here = at.and_then(NodeId::new).unwrap_or(shared.own);
    // Its size is known where it runs; at home it is read here, away the target's room is
    // checked against what it said it needs only.
    let memory = match at {
        None => procfs::read_stat(pid).map_or(0, |s| s.rss_kib.saturating_mul(1024)),
        Some(_) => 0,
    };
    match balancer::best_for(shared, pid, here, memory, advice, Placing::Running) {
        None => Some(Reply::Location { node: here.get() }),
        Some(to) => {
            let target = (to != shared.own).then_some(to.get());
            move_and_wait(shared, conn, pid, target).await
        }
    }
}

/// `migrate PID lock|unlock`, for a caller who could kill the process.
fn lock(shared: &Shared, uid: u32, pid: i32, locked: bool) -> Reply {
    if shared.table().location(pid).is_none() {
        return not_supervised(pid);
    }
    if let Err(reply) = may_act_on(uid, pid) {
        return reply;
    }
    if !shared.table().set_locked(pid, locked) {
        return not_supervised(pid);
    }
    info!(pid, locked, by = uid, "lock changed");
    Reply::Ok
}

/// `mosrun -b`: the node a job about to start here should start on.
fn best_start(shared: &Shared, memory_need_mb: u64) -> Reply {
    let advice = Advice {
        memory_need_mb,
        ..Advice::default()
    };
    match balancer::best_for(shared, 0, shared.own, 0, advice, Placing::Starting) {
        Some(node) => {
            info!(node = node.get(), "best node for a new job");
            Reply::Location { node: node.get() }
        }
        None => {
            info!("best node for a new job: this one");
            Reply::Ok
        }
    }
}

/// Whether `uid` may act on `pid` as kill(2) would let it; the reply that refuses if not.
fn may_act_on(uid: u32, pid: i32) -> Result<(), Reply> {
    let creds = procfs::read_creds(pid).map_err(|_| error(format!("no process {pid}")))?;
    if procfs::may_act(uid, &creds) {
        Ok(())
    } else {
        Err(error(format!(
            "permission denied: process {pid} belongs to uid {}",
            creds.real_uid
        )))
    }
}

/// Order `pid` to `target` (`None`: home) and wait for the answer, as a migrate request.
async fn move_and_wait(
    shared: &Shared,
    conn: &mut Conn,
    pid: i32,
    target: Option<u16>,
) -> Option<Reply> {
    let (id, waiter) = match order(shared, pid, target, conn.caller.uid) {
        Ok(started) => started,
        Err(reply) => return Some(reply),
    };
    tokio::select! {
        answer = waiter => Some(match answer {
            Ok(Ok(())) => Reply::Ok,
            Ok(Err(failure)) => Reply::Failed(failure),
            Err(_) => error(format!(
                "the supervisor of process {pid} went away during the move"
            )),
        }),
        () = conn.closed() => {
            shared.table().cancel(id);
            info!(pid, order = id, "migration cancelled: its caller gave up");
            None
        }
    }
}

/// Hand an order to move `pid` to `target` (`None`: home) to its supervisor, on behalf of
/// `by` (a uid; the balancing loop acts as root). The order's id and the waiter of its answer,
/// or the reply that ends the request at once (`Reply::Ok` if it is already there). Both
/// `migrate` requests and the balancing loop (`balancer`) come this way.
pub(crate) fn order(
    shared: &Shared,
    pid: i32,
    target: Option<u16>,
    by: u32,
) -> Result<(u64, oneshot::Receiver<MigrateResult>), Reply> {
    if shared.table().location(pid).is_none() {
        return Err(not_supervised(pid));
    }
    may_act_on(by, pid)?;
    let (id, waiter) = match shared.table().start_migrate(pid, target) {
        Ok(started) => started,
        Err(Refusal::AlreadyThere) => return Err(Reply::Ok),
        Err(Refusal::Busy) => return Err(Reply::Failed(MoveError::Busy)),
        Err(Refusal::NotSupervised) => return Err(not_supervised(pid)),
        Err(Refusal::SupervisorGone) => {
            return Err(error(format!("the supervisor of process {pid} has gone")));
        }
    };
    info!(pid, to = ?target, by, order = id, "migration requested");
    Ok((id, waiter))
}

/// Where a supervised process runs. A PID the table does not know is not ours to place, even
/// if some process has it here.
fn locate(shared: &Shared, pid: i32) -> Reply {
    match shared.table().location(pid) {
        Some(node) => Reply::Location {
            node: node.unwrap_or(shared.own.get()),
        },
        None => not_supervised(pid),
    }
}

/// This node's counts, and every node of the map as the cluster view has it
/// ([`cluster::every_node`]).
fn status(shared: &Shared) -> Reply {
    let processes = shared
        .table()
        .process_count()
        .try_into()
        .unwrap_or(u32::MAX);
    let hosted = shared.hosted().count().try_into().unwrap_or(u32::MAX);
    Reply::Status {
        node: shared.own.get(),
        processes,
        hosted,
        nodes: cluster::every_node(shared),
    }
}

/// `mosctl getload|getspeed|...`: one node's latest figures; this node's if `node` is `None`.
fn figures(shared: &Shared, node: Option<u16>) -> Reply {
    let node = node.unwrap_or(shared.own.get());
    if NodeId::new(node).is_none_or(|id| shared.map().node(id).is_none()) {
        return error(format!(
            "no node {node} in {}",
            shared.map().path().display()
        ));
    }
    let view = shared.cluster.snapshot();
    let Some(seen) = view.iter().find(|v| v.node.get() == node) else {
        return error(format!("node {node} is dead"));
    };
    match cluster::node_status(seen) {
        NodeStatus {
            liveness: Liveness::Dead,
            ..
        } => error(format!("node {node} is dead")),
        NodeStatus { figures: None, .. } => {
            error(format!("node {node} has not published its figures yet"))
        }
        NodeStatus {
            figures: Some(figures),
            ..
        } => Reply::Figures { node, figures },
    }
}

/// How long `isup` waits for the node's answer. A daemon answers within milliseconds; an
/// address with no host behind it would take the whole ARP or SYN timeout.
const ISUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `node`'s daemon answers an authenticated ping within [`ISUP_TIMEOUT`]. This node
/// is up, since it answers.
async fn isup(shared: &Shared, node: u16) -> Reply {
    let Some(id) = NodeId::new(node).filter(|&id| shared.map().node(id).is_some()) else {
        return error(format!(
            "no node {node} in {}",
            shared.map().path().display()
        ));
    };
    if id == shared.own {
        return Reply::Up { up: true };
    }
    let up = match tokio::time::timeout(ISUP_TIMEOUT, ping(shared, id)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(node, "isup: {}", chain(&e));
            false
        }
        Err(_) => false,
    };
    Reply::Up { up }
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

/// A supervisor's connection: reports in, commands out, until it closes. A supervisor may
/// be silent for hours, so no request timeout applies. The log line of its registration says
/// how long after its connection was accepted the daemon took it (`after`): on a crowded
/// node, the time the daemon's threads waited for a CPU.
async fn supervise(shared: &Shared, mut conn: Conn, advice: Advice, accepted: Instant) {
    let (tx, mut commands) = mpsc::unbounded_channel::<Command>();
    let id = shared.table().add_supervisor(tx, advice);
    let pid = conn.caller.pid;
    let after = accepted.elapsed();
    info!(pid, uid = conn.caller.uid, ?after, "supervisor registered");
    if conn.reply(&Reply::Ok).await.is_ok() {
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
                Ok(Some(Report::Execed { pid })) => {
                    // Answered at once: the process waits, stopped, for it.
                    let node = reading_proc(|| {
                        if let Ok(program) = procfs::program_of(pid) {
                            shared.table().execed(id, pid, program, Instant::now());
                        }
                        balancer::place_at_exec(shared, id, pid).map(NodeId::get)
                    });
                    if let Err(e) = send_command(conn, &Command::Place { pid, node }).await {
                        warn!(pid = conn.caller.pid, "supervisor dropped: cannot place its process: {e}");
                        return;
                    }
                }
                Ok(Some(report)) => accept_report(shared, &conn.caller, id, report),
                Ok(None) => return,
                Err(e) => {
                    warn!(pid = conn.caller.pid, "supervisor dropped: {}", chain(&e));
                    return;
                }
            },
            Some(command) = commands.recv() => {
                if let Err(e) = send_command(conn, &command).await {
                    warn!(pid = conn.caller.pid, "supervisor dropped: cannot send it an order: {e}");
                    return;
                }
            }
        }
    }
}

async fn send_command(conn: &mut Conn, command: &Command) -> std::io::Result<()> {
    conn.send_line(&encode_line(command)?).await
}

/// Runs `read`, which reads /proc/PID: that waits while the kernel holds the process (seen
/// in `do_task_stat` while a thousand jobs start), and meanwhile the runtime thread serves
/// no one. `block_in_place` hands this thread's other tasks to another thread for the time;
/// the report itself waits for no other thread (a wake-up of one costs tens of milliseconds
/// on a crowded node, `spawn_blocking` would add one to every report). The daemon's runtime
/// is multi-threaded, as `block_in_place` needs.
fn reading_proc<T>(read: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(read)
}

/// Apply a report, unless it claims a process the supervisor could not be tracing: one its
/// user (from the connection) could not kill(2), judged by the process's own credentials.
fn accept_report(shared: &Shared, caller: &Caller, id: SupervisorId, report: Report) {
    if let Report::Tally(tally) = report {
        if !shared.metrics.add_tally(&tally) {
            debug!(supervisor = caller.pid, "ignoring a tally of another build");
        }
        return;
    }
    if let Report::Started { pid } = report {
        match reading_proc(|| procfs::read_creds(pid)) {
            Ok(creds) if procfs::may_act(caller.uid, &creds) => {}
            // A child that exited at once (its Ended report follows): nothing to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            _ => {
                warn!(
                    supervisor = caller.pid,
                    pid, "ignoring report about a process it may not supervise"
                );
                return;
            }
        }
    }
    if let Report::Ended { pid } = report {
        shared.table().end_run(id, pid, Instant::now());
        balancer::ended(shared, pid);
    }
    // A process of this supervisor that ran here ends: this node's load drops.
    let ended_here = match report {
        Report::Ended { pid } => shared
            .table()
            .entry_of(id, pid)
            .is_some_and(|e| e.node.is_none())
            .then_some(pid),
        _ => None,
    };
    shared.table().report(id, report);
    if let Some(pid) = ended_here {
        balancer::ended_here(shared, pid);
    }
}

/// Connect the client to a guest on `node`, as the client's own user, and hand it the
/// session: the link's socket and fresh session keys. From then on this daemon is out of the
/// data path (see rmosix_seal).
async fn open_session(shared: &Shared, mut conn: Conn, node: u16) {
    let handed = match connect_session(shared, &conn, node).await {
        Ok(link) => hand_over(link).await.map_err(|e| match e {
            HandOverError::Blocked => Reply::Failed(MoveError::Blocked { node }),
            e => Reply::Failed(MoveError::TargetDown {
                node,
                reason: chain(&e),
            }),
        }),
        Err(reply) => Err(reply),
    };
    match handed {
        Ok((socket, keys)) => {
            let consistent = shared.consistent.get().cloned().unwrap_or_default();
            let reply = Reply::Session {
                keys: keys.to_hex(),
                dfsa_mfs: consistent.mfs,
                dfsa_mounts: consistent.mounts,
                dfsa_node: consistent.node,
                dfsa_system: consistent.system,
            };
            let sent = tokio::time::timeout(
                SEND_TIMEOUT,
                send_with_fd(&conn.stream, &reply, socket.as_fd()),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(node, "cannot hand the session over: {e}"),
                Err(_) => warn!(
                    node,
                    "cannot hand the session over: the client does not read"
                ),
            }
        }
        Err(reply) => {
            let _ = conn.reply(&reply).await;
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
        Ok(Ok(Some(ack))) if ack == modes::SESSION_BLOCKED => return Err(HandOverError::Blocked),
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
    #[error("it is blocked")]
    Blocked,
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
    let line = encode_reply(reply)?;
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

/// Open a link to `node` for a guest with the caller's uid, gid and groups, as the kernel
/// recorded them when the caller connected.
async fn connect_session(
    shared: &Shared,
    conn: &Conn,
    node: u16,
) -> Result<rmosix_transport::Link, Reply> {
    let Some(id) = NodeId::new(node).filter(|&id| shared.map().node(id).is_some()) else {
        return Err(error(format!(
            "no node {node} in {}",
            shared.map().path().display()
        )));
    };
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
    let caller = &conn.caller;
    let purpose = Purpose::Session {
        uid: caller.uid,
        gid: caller.gid,
        groups: caller.groups.clone(),
    };
    link.send(&LinkHello::new(shared.own.get(), purpose).encode())
        .await
        .map_err(|e| down(chain(&e)))?;
    info!(node, uid = caller.uid, "session opened");
    Ok(link)
}
