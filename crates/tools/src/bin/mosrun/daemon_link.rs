//! mosrun's connection to its node's daemon: it announces itself as a supervisor, reports its
//! processes, receives migration orders and opens sessions to guests on other nodes.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use rmosix_engine::{Channel, Daemon, Order, Pid};
use rmosix_seal::{End, SessionKeys};
use rmosix_wire::{Command, LineReader, MoveError, Reply, Report, Request, Target, send_line};

pub struct DaemonLink {
    socket: PathBuf,
    stream: UnixStream,
    reader: LineReader,
}

impl DaemonLink {
    /// Connect and register as a supervisor.
    pub fn connect(socket: &Path) -> io::Result<DaemonLink> {
        let mut stream = UnixStream::connect(socket)?;
        send_line(&mut stream, &Request::Supervise)?;
        let mut reader = LineReader::new();
        match reader
            .recv::<Reply>(&mut stream)
            .map_err(io::Error::other)?
        {
            Some(Reply::Ok) => {}
            Some(Reply::Error { message }) => return Err(io::Error::other(message)),
            other => return Err(io::Error::other(format!("unexpected answer {other:?}"))),
        }
        stream.set_nonblocking(true)?;
        Ok(DaemonLink {
            socket: socket.to_path_buf(),
            stream,
            reader,
        })
    }

    fn report(&mut self, report: &Report) {
        // The stream is non-blocking for reads; reports are tiny and go out whole.
        self.stream.set_nonblocking(false).ok();
        let _ = send_line(&mut self.stream, report);
        self.stream.set_nonblocking(true).ok();
    }
}

impl Daemon for DaemonLink {
    fn order_fd(&self) -> Option<RawFd> {
        Some(self.stream.as_raw_fd())
    }

    fn next_order(&mut self) -> io::Result<Option<Order>> {
        loop {
            if let Some(Command::Migrate { id, pid, target }) =
                self.reader.next_message().map_err(io::Error::other)?
            {
                let target = match target {
                    Target::Home => None,
                    Target::Node(n) => Some(n),
                };
                return Ok(Some(Order { id, pid, target }));
            }
            match self.reader.read_from(&mut self.stream) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "daemon closed the connection",
                    ));
                }
                Ok(_) => {}
                Err(err) if err.is_would_block() => return Ok(None),
                Err(err) => return Err(io::Error::other(err)),
            }
        }
    }

    fn order_done(&mut self, id: u64, result: Result<(), MoveError>) {
        self.report(&Report::MigrateDone { id, result });
    }

    fn open_session(&mut self, node: u16) -> Result<Channel, MoveError> {
        let local = |what: &str| MoveError::Local(what.to_owned());
        let unreachable = |e: io::Error| local(&format!("cannot reach mosixd: {e}"));
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        send_line(&mut stream, &Request::OpenSession { node }).map_err(unreachable)?;
        let (line, socket) = recv_with_fd(&stream).map_err(unreachable)?;
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Session { keys }) => {
                let socket =
                    socket.ok_or_else(|| local("mosixd sent a session without its socket"))?;
                let keys = SessionKeys::from_hex(&keys).map_err(|e| local(&e.to_string()))?;
                Channel::sealed(TcpStream::from(socket), &keys, End::Home)
                    .map_err(|e| local(&format!("cannot open the session: {e}")))
            }
            Ok(Reply::Failed(failure)) => Err(failure),
            Ok(Reply::Error { message }) => Err(local(&message)),
            other => Err(local(&format!("unexpected answer from mosixd: {other:?}"))),
        }
    }

    fn started(&mut self, pid: Pid) {
        self.report(&Report::Started { pid });
    }

    fn moved(&mut self, pid: Pid, node: Option<u16>) {
        self.report(&Report::Moved { pid, node });
    }

    fn ended(&mut self, pid: Pid) {
        self.report(&Report::Ended { pid });
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
