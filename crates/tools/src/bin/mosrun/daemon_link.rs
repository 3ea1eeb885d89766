//! mosrun's connection to its node's daemon: it announces itself as a supervisor, reports its
//! processes, receives migration orders and opens sessions to guests on other nodes.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rmosix_engine::{Daemon, Order, Pid};
use rmosix_wire::{Command, LineReader, Reply, Report, Request, Target, send_line};

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

    fn order_done(&mut self, id: u64, result: Result<(), String>) {
        self.report(&Report::MigrateDone { id, result });
    }

    fn open_session(&mut self, node: u16) -> Result<UnixStream, String> {
        let unreachable = |e: io::Error| format!("cannot reach mosixd: {e}");
        let mut stream = UnixStream::connect(&self.socket).map_err(unreachable)?;
        send_line(&mut stream, &Request::OpenSession { node }).map_err(unreachable)?;
        // Read the answer byte by byte: whatever follows its newline belongs to the session.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            match stream.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                Ok(_) => return Err("mosixd closed the session".into()),
                Err(e) => return Err(unreachable(e)),
            }
        }
        match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Ok) => Ok(stream),
            Ok(Reply::Error { message }) => Err(message),
            other => Err(format!("unexpected answer from mosixd: {other:?}")),
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
