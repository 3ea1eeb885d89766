//! Flags every tool shares, logging set-up, the daemon's socket and one request to it.

use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};
use tracing_subscriber::EnvFilter;

use rmosix_wire::{
    DAEMON_USER_ENV, DEFAULT_SOCKET, DecodeError, LineReader, Reply, Request, SOCKET_ENV, send_line,
};

/// Flags of every tool; flatten into the tool's own clap struct.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Control socket of the local mosixd.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// A user (name or uid) whose mosixd to trust besides root and yourself.
    #[arg(long, value_name = "USER", env = DAEMON_USER_ENV, value_parser = parse_user, global = true)]
    pub daemon_user: Option<u32>,
    /// Log filter for stderr, e.g. `debug` (default: $RUST_LOG, else warnings only).
    #[arg(long, value_name = "L", global = true)]
    pub log_level: Option<String>,
}

impl CommonArgs {
    /// Send tracing output to stderr as `--log-level` (else `RUST_LOG`, else `warn`) says.
    /// Call once, first thing in `main`.
    pub fn init_logging(&self) {
        let filter = match &self.log_level {
            Some(level) => EnvFilter::new(level),
            None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        };
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal())
            .init();
    }

    /// The daemon these flags point at.
    pub fn daemon(&self) -> DaemonSocket {
        DaemonSocket {
            path: self.socket.clone(),
            trusted_user: self.daemon_user,
        }
    }
}

/// A user named by `--daemon-user` or [`DAEMON_USER_ENV`]: a uid, or a name in the user
/// database.
pub fn parse_user(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user {text:?}")),
        Err(e) => Err(format!("cannot look up user {text:?}: {e}")),
    }
}

/// Why the daemon gave no answer. (An answer that is [`Reply::Error`] is not an `AskError`.)
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The socket could not be reached: no daemon, or no permission.
    #[error("cannot reach mosixd at {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel would not say who listens at the socket.
    #[error("cannot tell who serves {}", path.display())]
    Credentials {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Whoever listens at the socket is neither root, nor the caller, nor the user the caller
    /// said to trust: nothing was sent to it.
    #[error(
        "{} is served by uid {uid}, not by root or you; refusing to talk to it \
         (set {DAEMON_USER_ENV} to trust that user's mosixd)",
        path.display()
    )]
    Untrusted {
        /// The socket.
        path: PathBuf,
        /// The uid of the process that listens there.
        uid: u32,
    },
    /// The request could not be sent.
    #[error("cannot send the request to mosixd")]
    Send(#[source] io::Error),
    /// The reply could not be read.
    #[error("cannot read mosixd's reply")]
    Receive(#[source] DecodeError),
    /// The daemon answered a registration with an error (a limit, say).
    #[error("mosixd refused: {0}")]
    Refused(String),
    /// The daemon closed the connection without a reply.
    #[error("mosixd closed the connection without replying")]
    NoReply,
    /// The daemon did not answer in time.
    #[error("no answer from mosixd within {0:?}")]
    Timeout(Duration),
}

/// Where the daemon listens, and which user besides root and the caller may be the one
/// listening there. The tools check that before they send anything: a request may carry
/// what the caller wants kept (which process to move where), and a reply is believed.
#[derive(Clone, Debug)]
pub struct DaemonSocket {
    /// The socket.
    pub path: PathBuf,
    /// A uid to trust besides root and the caller's own.
    pub trusted_user: Option<u32>,
}

impl DaemonSocket {
    /// Connect, and check that root, the caller or the trusted user listens at the other end
    /// (SO_PEERCRED: the credentials of the process that created the listening socket).
    pub fn connect(&self) -> Result<UnixStream, AskError> {
        let stream = UnixStream::connect(&self.path).map_err(|source| AskError::Connect {
            path: self.path.clone(),
            source,
        })?;
        let uid = getsockopt(&stream, sockopt::PeerCredentials)
            .map_err(|e| AskError::Credentials {
                path: self.path.clone(),
                source: e.into(),
            })?
            .uid();
        if !is_trusted(uid, nix::unistd::geteuid().as_raw(), self.trusted_user) {
            return Err(AskError::Untrusted {
                path: self.path.clone(),
                uid,
            });
        }
        Ok(stream)
    }

    /// Send `request` and wait for the reply, at most `timeout` if one is given (a
    /// `migrate` waits for the whole move).
    pub fn ask(&self, request: &Request, timeout: Option<Duration>) -> Result<Reply, AskError> {
        let mut stream = self.connect()?;
        exchange(
            &mut stream,
            &mut LineReader::for_replies(),
            request,
            timeout,
        )
    }
}

/// Send `request` on `stream` and read the reply through `lines` (whatever follows the reply
/// stays buffered there), waiting at most `timeout` if one is given.
///
/// A daemon that turns a connection away (a limit) answers why and closes it before reading
/// anything, so the request may fail to go out (EPIPE) with the answer already waiting: it
/// is read all the same.
pub fn exchange(
    stream: &mut UnixStream,
    lines: &mut LineReader,
    request: &Request,
    timeout: Option<Duration>,
) -> Result<Reply, AskError> {
    let sent = send_line(stream, request);
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut reader = Deadline { stream, deadline };
    let reply = lines.recv(&mut reader);
    match (reply, sent) {
        (Ok(Some(reply)), _) => Ok(reply),
        (_, Err(e)) => Err(AskError::Send(e)),
        (Ok(None), Ok(())) => Err(AskError::NoReply),
        (Err(DecodeError::Read(e)), Ok(())) if e.kind() == io::ErrorKind::TimedOut => {
            Err(AskError::Timeout(timeout.unwrap_or_default()))
        }
        (Err(e), Ok(())) => Err(AskError::Receive(e)),
    }
}

/// Whether a daemon running as `daemon` may be talked to by a tool running as `me`: root's
/// daemon serves everyone; a daemon of one's own cannot do more to one than one can oneself.
fn is_trusted(daemon: u32, me: u32, trusted: Option<u32>) -> bool {
    daemon == 0 || daemon == me || Some(daemon) == trusted
}

/// Reads from a socket until a deadline: each read waits at most for the time left, and the
/// end of it reads as `TimedOut`.
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: Option<Instant>,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        match self.stream.read(buf) {
            // SO_RCVTIMEO expiring reads as EAGAIN.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            other => other,
        }
    }
}

/// Write `text` to stdout. A reader that has gone (`mosctl status | head -1`) ends the output
/// quietly: the tool has nothing more to say to anyone, so a broken pipe is no error.
pub fn print_out(text: &str) -> io::Result<()> {
    write_quietly(&mut io::stdout().lock(), text.as_bytes())
}

fn write_quietly(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn root_the_caller_and_the_named_user_are_trusted() {
        assert!(is_trusted(0, 1000, None));
        assert!(is_trusted(1000, 1000, None));
        assert!(!is_trusted(1001, 1000, None));
        assert!(is_trusted(1001, 1000, Some(1001)));
        assert!(!is_trusted(1002, 1000, Some(1001)));
        assert!(is_trusted(0, 0, Some(5)));
    }

    #[test]
    fn users_are_named_by_uid_or_name() {
        assert_eq!(parse_user("4242"), Ok(4242));
        assert_eq!(parse_user("root"), Ok(0));
        assert!(parse_user("no-such-user-rmosix").is_err());
    }

    #[test]
    fn a_broken_pipe_ends_the_output_quietly() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        drop(reader);
        // Rust programs ignore SIGPIPE, so the write fails with EPIPE instead of killing us.
        let big = vec![b'x'; 1 << 20];
        write_quietly(&mut writer, &big).unwrap();
        let mut full: &mut [u8] = &mut [0u8; 4];
        let err = write_quietly(&mut full, &big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn the_answer_of_a_daemon_that_closed_before_reading_is_read() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        send_line(
            &mut theirs,
            &Reply::Error {
                message: "too many".into(),
            },
        )
        .unwrap();
        drop(theirs);
        // Its peer gone, the request cannot be sent (EPIPE); the answer is there all the same.
        let request = Request::Migrate {
            pid: 1,
            target: rmosix_wire::Target::Home,
        };
        let reply = exchange(&mut ours, &mut LineReader::for_replies(), &request, None);
        assert_eq!(
            reply.unwrap(),
            Reply::Error {
                message: "too many".into()
            }
        );
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let err = exchange(&mut ours, &mut LineReader::for_replies(), &request, None).unwrap_err();
        assert!(matches!(err, AskError::Send(_)), "{err}");
    }

    #[test]
    fn a_daemon_that_does_not_answer_in_time_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let daemon = DaemonSocket {
            path: path.clone(),
            trusted_user: None,
        };
        let err = daemon
            .ask(&Request::Status, Some(Duration::from_millis(50)))
            .unwrap_err();
        assert!(matches!(err, AskError::Timeout(_)), "{err}");
        assert_eq!(err.to_string(), "no answer from mosixd within 50ms");
        // The listener, our own, is trusted; what it received is the request.
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        assert_eq!(got, "\"status\"\n");
    }
}
