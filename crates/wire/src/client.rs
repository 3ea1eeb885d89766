//! The blocking client side of the control socket, shared by the tools and by `mosixd guest`:
//! connecting only to a daemon run by someone the caller trusts, one request and its reply
//! within a deadline, and what a long-lived registration (`mosrun`'s supervisor link, a
//! guest's reports) needs to survive a daemon restart: a backoff between attempts and a
//! thread that leaves the engine's signals alone.
//!
//! Blocking on purpose: its users are synchronous programs (the engine's supervisors run one
//! poll loop on one thread and link no async runtime).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::sys::socket::{getsockopt, sockopt};

use crate::{DAEMON_USER_ENV, DecodeError, LineReader, Reply, Request, send_line};

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

/// The waits between attempts to reach a daemon that went away: 50 ms first, doubling up to
/// 1 s. A restart takes well under a second; a daemon that stays away costs one connect a
/// second.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first wait.
    pub const FIRST: Duration = Duration::from_millis(50);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(1);

    /// A backoff whose next wait is [`Backoff::FIRST`].
    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt; the one after is twice as long, up to
    /// [`Backoff::MAX`].
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(Self::MAX);
        wait
    }

    /// Start again from [`Backoff::FIRST`] (after a connection that worked).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// Start a thread named `name` with every signal blocked, for a process whose engine
/// supervisor takes SIGCHLD through a signalfd: a signalfd only sees signals that no thread
/// would take, and a thread with SIGCHLD unblocked would take it and drop it (its default
/// action is to ignore it), so the supervisor would miss its tracees' stops.
pub fn spawn_unsignalled(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    // The new thread inherits the mask in force when it is created.
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    spawned
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
            target: crate::Target::Home,
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

    #[test]
    fn the_backoff_doubles_up_to_its_bound_and_starts_over() {
        let mut backoff = Backoff::new();
        let waits: Vec<u64> = (0..7)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Backoff::FIRST);
    }

    #[test]
    fn an_unsignalled_thread_blocks_every_signal_and_leaves_ours_alone() {
        let before = SigSet::thread_get_mask().unwrap();
        let thread = spawn_unsignalled("test", || {
            let mask = SigSet::thread_get_mask().unwrap();
            assert!(mask.contains(nix::sys::signal::SIGCHLD));
            assert!(mask.contains(nix::sys::signal::SIGTERM));
        })
        .unwrap();
        thread.join().unwrap();
        assert_eq!(SigSet::thread_get_mask().unwrap(), before);
    }
}
