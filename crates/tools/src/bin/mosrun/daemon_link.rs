//! mosrun's connection to its node's daemon: it announces itself as a supervisor, reports its
//! processes, receives migration orders and opens sessions to guests on other nodes.
//!
//! The daemon may go away while the job runs (a restart, a package upgrade) and the job must
//! not notice. So a thread of its own owns the control connection: it reads the daemon's
//! commands and, when the connection ends, connects again with backoff and registers anew,
//! reporting every process the job has and where it runs (it sees every report the engine
//! makes, so it keeps that record). Orders wait in a queue whose readiness the engine polls
//! (`order_fd`, one end of a socket pair), so `next_order` never fails: between daemons there
//! are simply no orders.
//!
//! Orders get ids of our own. An order taken from one daemon and answered after that daemon
//! has gone is not answered to the next one, which may have given the same id to another
//! order. An order whose caller gave up (the daemon sends `Cancel`) is dropped if the engine
//! has not taken it yet.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use rmosix_engine::{Channel, Consistent, Daemon, ExecPlacement, Order, Pid};
use rmosix_seal::{End, SessionKeys};
use rmosix_wire::{
    Advice, AskError, Backoff, Command, DaemonSocket, DecodeError, LineReader, MoveError, Reply,
    Report, Request, Tally, Target, exchange, send_line, spawn_unsignalled,
};
use tracing::{debug, info, warn};

/// How long the daemon may take to accept a registration: as long as mosctl waits for an
/// answer. A daemon busy with a thousand jobs' registrations at once answers late, and a
/// job that gave up would be lost; one that does not run at all refuses the connection.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a report may wait for room in the socket. A daemon that reads nothing for this
/// long is hung: the link drops the connection and registers again with the next one.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may take to open a session: it gives the other node 3 s to connect and
/// 3 s to start a guest.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);

pub struct DaemonLink {
    daemon: DaemonSocket,
    shared: Arc<Shared>,
    /// Readable while orders may be waiting.
    ready: UnixStream,
    thread: Option<JoinHandle<()>>,
    /// The file systems the daemon said are the same everywhere, at the last session.
    consistent: Consistent,
}

struct Shared {
    /// The job's advice, sent with every registration.
    advice: Advice,
    state: Mutex<State>,
    /// Signalled when the link stops.
    stopping: Condvar,
}

struct State {
    /// Every process of the job and where it runs (`None`: home): what a registration reports.
    procs: BTreeMap<Pid, Option<u16>>,
    /// The connection reports go out on, while there is one.
    conn: Option<UnixStream>,
    /// Counts registrations: orders belong to the one they came on.
    generation: u64,
    /// Orders the engine has not taken yet.
    queue: VecDeque<Queued>,
    /// Orders the engine took, by our id.
    taken: HashMap<u64, Taken>,
    /// Placements of processes held at their exec the engine has not taken yet.
    placements: VecDeque<ExecPlacement>,
    last_id: u64,
    stopping: bool,
    /// The write end of `DaemonLink::ready`.
    wake: UnixStream,
    /// What the engine counted that no daemon has been told yet (there was none, or the
    /// report failed): the next registration tells it.
    untold: Tally,
}

struct Queued {
    generation: u64,
    daemon_id: u64,
    pid: Pid,
    target: Option<u16>,
}

struct Taken {
    generation: u64,
    daemon_id: u64,
}

impl DaemonLink {
    /// Connect and register as a supervisor of a job with `advice`, then keep the
    /// registration up on a thread of its own. Fails if the daemon cannot be reached now: a
    /// job started without one would never be movable without the user knowing.
    pub fn connect(daemon: DaemonSocket, advice: Advice) -> Result<DaemonLink, AskError> {
        let (ready, wake) = UnixStream::pair().map_err(AskError::Send)?;
        ready.set_nonblocking(true).map_err(AskError::Send)?;
        wake.set_nonblocking(true).map_err(AskError::Send)?;
        let shared = Arc::new(Shared {
            advice,
            state: Mutex::new(State {
                procs: BTreeMap::new(),
                conn: None,
                generation: 0,
                queue: VecDeque::new(),
                taken: HashMap::new(),
                placements: VecDeque::new(),
                last_id: 0,
                stopping: false,
                wake,
                untold: Tally::default(),
            }),
            stopping: Condvar::new(),
        });
        let first = register(&shared, &daemon)?;
        let thread = spawn_unsignalled("daemon-link", {
            let (shared, daemon) = (shared.clone(), daemon.clone());
            move || keep_registered(&shared, &daemon, first)
        })
        .map_err(AskError::Send)?;
        Ok(DaemonLink {
            daemon,
            shared,
            ready,
            thread: Some(thread),
            consistent: Consistent::default(),
        })
    }

    /// Note what a process did, and tell the daemon if one is there.
    fn report(&self, report: Report) {
        let mut state = self.shared.lock();
        match report {
            Report::Started { pid } => {
                state.procs.insert(pid, None);
            }
            Report::Moved { pid, node } => {
                state.procs.insert(pid, node);
            }
            Report::Ended { pid } => {
                state.procs.remove(&pid);
            }
            Report::Forked { .. }
            | Report::MigrateDone { .. }
            | Report::Tally(_)
            | Report::Execed { .. } => {}
        }
        state.send(&report);
    }
}

impl Drop for DaemonLink {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.drop_conn();
        }
        self.shared.stopping.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// The state. Every update is complete under the lock, so a poisoned lock still holds a
    /// consistent record.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait `pause`, or less if the link stops meanwhile; true if it stops.
    fn pause(&self, pause: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .stopping
            .wait_timeout_while(state, pause, |s| !s.stopping)
            .unwrap_or_else(|e| e.into_inner());
        state.stopping
    }
}

impl State {
    /// Send a report on the current connection. One that cannot be sent in time ends the
    /// connection; the next registration reports the record anyway.
    fn send(&mut self, report: &Report) {
        if let Some(conn) = &mut self.conn
            && let Err(e) = send_line(conn, report)
        {
            warn!(%e, "cannot report to mosixd; registering again");
            self.drop_conn();
        }
    }

    /// Tell the daemon what was counted and not told yet, if one is there.
    fn tell(&mut self) {
        if self.conn.is_none() || self.untold.is_empty() {
            return;
        }
        let tally = std::mem::take(&mut self.untold);
        self.send(&Report::Tally(tally.clone()));
        if self.conn.is_none() {
            // Not sent: the next daemon gets it.
            self.untold.add(&tally);
        }
    }

    /// Close the connection both ways, which also ends the thread's read on it.
    fn drop_conn(&mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A registered connection, for the thread to read commands from.
struct Registered {
    stream: UnixStream,
    lines: LineReader,
    generation: u64,
}

/// Connect, register as a supervisor, and report every process the job has.
fn register(shared: &Shared, daemon: &DaemonSocket) -> Result<Registered, AskError> {
    let mut stream = daemon.connect()?;
    stream
        .set_write_timeout(Some(REPORT_TIMEOUT))
        .map_err(AskError::Send)?;
    let mut lines = LineReader::for_replies();
    let request = Request::Supervise {
        advice: shared.advice,
    };
    match exchange(&mut stream, &mut lines, &request, Some(REGISTER_TIMEOUT))? {
        Reply::Ok => {}
        Reply::Error { message } => return Err(AskError::Refused(message)),
        other => return Err(AskError::Refused(format!("unexpected answer {other:?}"))),
    }
    stream.set_read_timeout(None).map_err(AskError::Send)?;
    let writer = stream.try_clone().map_err(AskError::Send)?;
    let mut state = shared.lock();
    if state.stopping {
        return Err(AskError::NoReply);
    }
    state.generation += 1;
    state.conn = Some(writer);
    // Under the lock: a report the engine makes meanwhile comes after these, as it should.
    let record: Vec<(Pid, Option<u16>)> = state.procs.iter().map(|(p, n)| (*p, *n)).collect();
    for (pid, node) in record {
        state.send(&Report::Started { pid });
        if node.is_some() {
            state.send(&Report::Moved { pid, node });
        }
    }
    state.tell();
    Ok(Registered {
        stream,
        lines,
        generation: state.generation,
    })
}

/// The thread: serve the connection; when it ends, register again until the link stops.
fn keep_registered(shared: &Shared, daemon: &DaemonSocket, first: Registered) {
    let mut current = Some(first);
    let mut backoff = Backoff::new();
    loop {
        if let Some(registered) = current.take() {
            serve(shared, registered);
            backoff.reset();
            if !shared.lock().stopping {
                warn!("lost mosixd; the job goes on, and registers again once it is back");
            }
        }
        if shared.pause(backoff.next_wait()) {
            return;
        }
        match register(shared, daemon) {
            Ok(registered) => {
                info!("registered again with mosixd");
                current = Some(registered);
            }
            Err(e) => debug!(error = %e, "mosixd not back yet"),
        }
    }
}

/// Read commands until the connection ends, then forget its orders that were not taken:
/// their callers learnt from the daemon that the supervisor went away.
fn serve(shared: &Shared, registered: Registered) {
    let Registered {
        mut stream,
        mut lines,
        generation,
    } = registered;
    loop {
        match lines.recv::<Command>(&mut stream) {
            Ok(Some(command)) => take_command(shared, generation, command),
            Ok(None) => break,
            Err(DecodeError::Malformed(e)) => warn!(%e, "ignoring a malformed command"),
            Err(e) => {
                debug!(error = %e, "connection to mosixd ended");
                break;
            }
        }
    }
    let mut state = shared.lock();
    if state.generation == generation {
        state.drop_conn();
    }
    state.queue.retain(|order| order.generation != generation);
}

fn take_command(shared: &Shared, generation: u64, command: Command) {
    let mut state = shared.lock();
    match command {
        Command::Migrate { id, pid, target } => {
            let target = match target {
                Target::Home => None,
                Target::Node(n) => Some(n),
            };
            state.queue.push_back(Queued {
                generation,
                daemon_id: id,
                pid,
                target,
            });
            // A full socket already says there is something to read.
            let _ = (&state.wake).write(&[1]);
        }
        Command::Place { pid, node } => {
            state.placements.push_back(ExecPlacement { pid, node });
            let _ = (&state.wake).write(&[1]);
        }
        Command::Cancel { id } => {
            let queued = state
                .queue
                .iter()
                .position(|o| o.generation == generation && o.daemon_id == id);
            if let Some(order) = queued.and_then(|at| state.queue.remove(at)) {
                info!(
                    order = id,
                    pid = order.pid,
                    "dropped an order whose caller gave up"
                );
                state.send(&Report::MigrateDone {
                    id,
                    result: Err(MoveError::Cancelled),
                });
            }
        }
    }
}

impl Daemon for DaemonLink {
    fn order_fd(&self) -> Option<RawFd> {
        Some(self.ready.as_raw_fd())
    }

    fn next_order(&mut self) -> io::Result<Option<Order>> {
        let mut drain = [0u8; 64];
        while matches!((&self.ready).read(&mut drain), Ok(n) if n > 0) {}
        let mut state = self.shared.lock();
        let Some(queued) = state.queue.pop_front() else {
            return Ok(None);
        };
        state.last_id += 1;
        let id = state.last_id;
        state.taken.insert(
            id,
            Taken {
                generation: queued.generation,
                daemon_id: queued.daemon_id,
            },
        );
        Ok(Some(Order {
            id,
            pid: queued.pid,
            target: queued.target,
        }))
    }

    fn order_done(&mut self, id: u64, result: Result<(), MoveError>) {
        let mut state = self.shared.lock();
        let Some(taken) = state.taken.remove(&id) else {
            return;
        };
        if taken.generation == state.generation {
            let id = taken.daemon_id;
            state.send(&Report::MigrateDone { id, result });
        } else {
            debug!(id, "an order of a daemon that has gone is done");
        }
    }

    fn open_session(&mut self, node: u16) -> Result<Channel, MoveError> {
        let local = |what: &str| MoveError::Local(what.to_owned());
        let unreachable = |e: &dyn std::fmt::Display| local(&format!("cannot reach mosixd: {e}"));
        let mut stream = self.daemon.connect().map_err(|e| {
            let e = anyhow::Error::from(e);
            unreachable(&format!("{e:#}"))
        })?;
        // A daemon that turns the connection away answers and closes without reading: its
        // answer is read even if the request could not be sent.
        let sent = send_line(&mut stream, &Request::OpenSession { node });
        stream
            .set_read_timeout(Some(SESSION_TIMEOUT))
            .map_err(|e| unreachable(&e))?;
        let (line, socket) = match (recv_with_fd(&stream), sent) {
            (Ok(received), _) => received,
            (Err(_), Err(e)) => return Err(unreachable(&e)),
            (Err(e), Ok(())) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(local(&format!(
                    "mosixd did not open the session within {SESSION_TIMEOUT:?}"
                )));
            }
            (Err(e), Ok(())) => return Err(unreachable(&e)),
        };
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Session {
                keys,
                dfsa_mfs,
                dfsa_mounts,
                dfsa_node,
                dfsa_system,
            }) => {
                let socket =
                    socket.ok_or_else(|| local("mosixd sent a session without its socket"))?;
                let consistent = Consistent::new(dfsa_mfs.as_deref().map(Path::new), &dfsa_mounts)
                    .with_system(&dfsa_system);
                self.consistent = match dfsa_node {
                    Some(node) => consistent.at_node(node),
                    None => consistent,
                };
                let keys = SessionKeys::from_hex(&keys).map_err(|e| local(&e.to_string()))?;
                Channel::sealed(TcpStream::from(socket), &keys, End::Home)
                    .map_err(|e| local(&format!("cannot open the session: {e}")))
            }
            Ok(Reply::Failed(failure)) => Err(failure),
            Ok(Reply::Error { message }) => Err(local(&message)),
            other => Err(local(&format!("unexpected answer from mosixd: {other:?}"))),
        }
    }

    fn consistent(&self) -> Consistent {
        self.consistent.clone()
    }

    fn started(&mut self, pid: Pid) {
        self.report(Report::Started { pid });
    }

    fn forked(&mut self, pid: Pid) {
        self.report(Report::Forked { pid });
    }

    fn moved(&mut self, pid: Pid, node: Option<u16>) {
        self.report(Report::Moved { pid, node });
    }

    fn ended(&mut self, pid: Pid) {
        self.report(Report::Ended { pid });
    }

    fn execed(&mut self, pid: Pid) -> bool {
        let mut state = self.shared.lock();
        state.send(&Report::Execed { pid });
        state.conn.is_some()
    }

    fn next_placement(&mut self) -> Option<ExecPlacement> {
        self.shared.lock().placements.pop_front()
    }

    fn tally(&mut self, tally: Tally) {
        let mut state = self.shared.lock();
        state.untold.add(&tally);
        state.tell();
    }
}

/// Receive one reply line and the fd that may come with it (SCM_RIGHTS). The daemon sends the
/// line in one message and nothing after it, so one recvmsg reads it whole.
fn recv_with_fd(stream: &UnixStream) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut line = vec![0u8; rmosix_wire::MAX_LINE];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(&mut line)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fd = None;
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this fd in our table for us alone.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    let len = msg.bytes;
    line.truncate(len);
    if line.last() != Some(&b'\n') {
        return Err(io::Error::other("mosixd closed the connection"));
    }
    line.pop();
    Ok((line, fd))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A fake daemon's side of a supervisor's connection.
    struct Fake {
        stream: UnixStream,
        lines: LineReader,
    }

    impl Fake {
        /// Accept a supervisor and take its registration.
        fn accept(listener: &UnixListener) -> Fake {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut fake = Fake {
                stream,
                lines: LineReader::new(),
            };
            let request: Request = fake.lines.recv(&mut fake.stream).unwrap().unwrap();
            assert_eq!(
                request,
                Request::Supervise {
                    advice: Advice::default()
                }
            );
            send_line(&mut fake.stream, &Reply::Ok).unwrap();
            fake
        }

        fn report(&mut self) -> Report {
            self.lines.recv(&mut self.stream).unwrap().unwrap()
        }

        fn command(&mut self, command: Command) {
            send_line(&mut self.stream, &command).unwrap();
        }
    }

    /// The next order, once `order_fd` says there is one.
    fn wait_order(link: &mut DaemonLink) -> Order {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(order) = link.next_order().unwrap() {
                return order;
            }
            assert!(Instant::now() < end, "no order");
            let mut fds = [nix::poll::PollFd::new(
                std::os::fd::AsFd::as_fd(&link.ready),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)).unwrap();
        }
    }

    #[test]
    fn a_restarted_daemon_learns_the_job_again_and_no_answer_meant_for_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mosixd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let daemon = DaemonSocket {
            path,
            trusted_user: None,
        };
        let connecting =
            std::thread::spawn(move || DaemonLink::connect(daemon, Advice::default()).unwrap());
        let mut old = Fake::accept(&listener);
        let mut link = connecting.join().unwrap();
        link.started(10);
        link.started(11);
        link.moved(11, Some(3));
        old.command(Command::Migrate {
            id: 7,
            pid: 10,
            target: Target::Node(2),
        });
        let taken = wait_order(&mut link);
        assert_eq!((taken.pid, taken.target), (10, Some(2)));
        for expected in [
            Report::Started { pid: 10 },
            Report::Started { pid: 11 },
            Report::Moved {
                pid: 11,
                node: Some(3),
            },
        ] {
            assert_eq!(old.report(), expected);
        }

        // The daemon restarts: the link registers with the new one by itself.
        drop(old);
        let mut new = Fake::accept(&listener);
        assert_eq!(new.report(), Report::Started { pid: 10 });
        assert_eq!(new.report(), Report::Started { pid: 11 });
        assert_eq!(
            new.report(),
            Report::Moved {
                pid: 11,
                node: Some(3)
            }
        );
        // What the engine counts goes to the daemon there is.
        let mut tally = Tally::default();
        tally.count_freeze(1_500);
        link.tally(tally.clone());
        assert_eq!(new.report(), Report::Tally(tally));
        // The old daemon's order is done: the new daemon, which never gave it, hears nothing.
        link.order_done(taken.id, Ok(()));
        link.ended(10);
        assert_eq!(new.report(), Report::Ended { pid: 10 });

        // An order cancelled before the engine takes it is answered and never taken.
        new.command(Command::Migrate {
            id: 1,
            pid: 11,
            target: Target::Home,
        });
        new.command(Command::Cancel { id: 1 });
        assert_eq!(
            new.report(),
            Report::MigrateDone {
                id: 1,
                result: Err(MoveError::Cancelled)
            }
        );
        assert!(link.next_order().unwrap().is_none());
        // A later one is taken and answered under the new daemon's id.
        new.command(Command::Migrate {
            id: 9,
            pid: 11,
            target: Target::Home,
        });
        let taken = wait_order(&mut link);
        assert_ne!(taken.id, 9, "the link's ids are its own");
        link.order_done(taken.id, Err(MoveError::Busy));
        assert_eq!(
            new.report(),
            Report::MigrateDone {
                id: 9,
                result: Err(MoveError::Busy)
            }
        );
        drop(link);
        // Stopped, the link closes its connection.
        let mut rest = Vec::new();
        assert_eq!(new.stream.read_to_end(&mut rest).unwrap(), 0);
    }
}
