//! A guest's reports to its node's daemon: the process it hosts runs here, and how it left.
//! Run in `mosixd guest`, which has no async runtime.
//!
//! The guest's supervisor is a ptrace event loop and must never wait for the daemon, which may
//! be slow, restarting or gone. So [`DaemonReports`] only notes what happened and wakes a
//! thread of its own, which owns the connection: it registers, says what the daemon has not
//! heard yet, and watches the connection. When the daemon goes away it connects again with
//! backoff and registers anew, and the new daemon hears what the guest hosts. What it says is
//! state, not a queue of events: a daemon that missed a `running` because it restarted hears
//! it from the next registration, and one that missed both `running` and `left` need hear
//! neither.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::{debug, info, warn};

use rmosix_engine::{Left, Pid, Reports};
use rmosix_wire::{
    AskError, Backoff, DaemonSocket, Departure, GuestReport, LineReader, Reply, Request, exchange,
    send_line, spawn_unsignalled,
};

/// How long the daemon may take to accept a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a report may wait for room in the socket. A daemon that reads nothing for this
/// long is hung: the thread drops the connection and registers again with the next one.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the guest has to say: the latest of each report.
#[derive(Debug, Default)]
struct Said {
    /// The process runs here: its PID here and at home.
    running: Option<(Pid, i32)>,
    left: Option<Departure>,
    /// How long the process has waited for calls forwarded home, in all.
    waited: Duration,
    /// The guest is ending: say what is left to say if connected, then stop.
    stopping: bool,
}

/// The guest's side of its reports: [`Reports`] for the engine, which never blocks.
pub(crate) struct DaemonReports {
    said: Arc<Mutex<Said>>,
    /// Written to wake the thread (non-blocking); the thread reads the other end.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl DaemonReports {
    /// Start the thread that registers with `daemon` as a guest for a session from
    /// `home_node` and keeps it registered.
    pub fn start(daemon: DaemonSocket, home_node: u16) -> io::Result<DaemonReports> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let said = Arc::new(Mutex::new(Said::default()));
        let thread = spawn_unsignalled("daemon-reports", {
            let said = said.clone();
            move || keep_reporting(&daemon, home_node, &said, &woken)
        })?;
        Ok(DaemonReports {
            said,
            wake,
            thread: Some(thread),
        })
    }

    /// Tell the daemon what is left to tell, if one is there, and stop. Waits at most for
    /// one registration or one report to go out, each bounded by its timeout.
    pub fn stop(mut self) {
        self.note(|said| said.stopping = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    fn note(&self, change: impl FnOnce(&mut Said)) {
        change(&mut lock(&self.said));
        // A full socket already says there is news.
        let _ = (&self.wake).write(&[1]);
    }
}

impl Reports for DaemonReports {
    fn running(&mut self, husk: Pid, home_pid: i32) {
        self.note(|said| said.running = Some((husk, home_pid)));
    }

    fn left(&mut self, how: Left) {
        let how = match how {
            Left::Ended => Departure::Ended,
            Left::Moved => Departure::Moved,
            Left::Lost => Departure::Lost,
        };
        self.note(|said| said.left = Some(how));
    }

    fn waited(&mut self, total: Duration) {
        self.note(|said| said.waited = total);
    }
}

/// Every update is complete under the lock, so a poisoned one still holds a consistent state.
fn lock(said: &Mutex<Said>) -> MutexGuard<'_, Said> {
    said.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a registered connection ended.
#[derive(Debug)]
enum End {
    /// Everything was said, or the guest is ending.
    Done,
    /// The daemon went away, or stopped reading.
    Lost(io::Error),
}

/// The thread: register, report, and register again whenever the daemon goes away, until
/// the guest stops.
fn keep_reporting(daemon: &DaemonSocket, home_node: u16, said: &Mutex<Said>, woken: &UnixStream) {
    let mut backoff = Backoff::new();
    let mut registered_before = false;
    let mut refused = false;
    loop {
        // Not connected: a guest that is ending has no one to tell.
        if lock(said).stopping {
            return;
        }
        match register(daemon, home_node) {
            Ok(conn) => {
                if registered_before {
                    info!("registered again with mosixd");
                }
                registered_before = true;
                refused = false;
                backoff.reset();
                match report(conn, said, woken) {
                    End::Done => return,
                    End::Lost(e) => {
                        warn!(
                            "lost mosixd ({e}); the process goes on, reported again once it is back"
                        );
                    }
                }
            }
            // A refusal says something is wrong (a limit, or a record missing); say it once
            // until a registration succeeds.
            Err(AskError::Refused(message)) => {
                if !refused {
                    warn!("mosixd refused the guest's registration: {message}");
                }
                refused = true;
            }
            Err(e) => debug!(error = %e, "mosixd not there"),
        }
        if !pause(woken, backoff.next_wait(), said) {
            return;
        }
    }
}

/// Connect and register as a guest for a session from `home_node`.
fn register(daemon: &DaemonSocket, home_node: u16) -> Result<UnixStream, AskError> {
    let mut conn = daemon.connect()?;
    conn.set_write_timeout(Some(REPORT_TIMEOUT))
        .map_err(AskError::Send)?;
    let request = Request::Guest { home_node };
    let mut lines = LineReader::for_replies();
    match exchange(&mut conn, &mut lines, &request, Some(REGISTER_TIMEOUT))? {
        Reply::Ok => Ok(conn),
        Reply::Error { message } => Err(AskError::Refused(message)),
        other => Err(AskError::Refused(format!("unexpected answer {other:?}"))),
    }
}

/// Tell the daemon on `conn` what it has not heard yet whenever there is news, until all is
/// said, the guest stops, or the daemon goes away.
fn report(mut conn: UnixStream, said: &Mutex<Said>, woken: &UnixStream) -> End {
    let mut told_running = None;
    let mut told_waited = Duration::ZERO;
    loop {
        let (running, waited, left, stopping) = {
            let said = lock(said);
            (said.running, said.waited, said.left, said.stopping)
        };
        if running.is_some() && running != told_running {
            if let Some((pid, home_pid)) = running
                && let Err(e) = send_line(&mut conn, &GuestReport::Running { pid, home_pid })
            {
                return End::Lost(e);
            }
            told_running = running;
        }
        // After `running`: the daemon counts it for the process that runs.
        if told_running.is_some() && waited != told_waited {
            let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
            if let Err(e) = send_line(&mut conn, &GuestReport::Waited { ms }) {
                return End::Lost(e);
            }
            told_waited = waited;
        }
        if let Some(how) = left {
            return match send_line(&mut conn, &GuestReport::Left { how }) {
                Ok(()) => End::Done,
                Err(e) => End::Lost(e),
            };
        }
        if stopping {
            return End::Done;
        }
        if let Err(e) = wait_for_news(&mut conn, woken) {
            return End::Lost(e);
        }
    }
}

/// Wait until there is news, or fail once the daemon has closed the connection. The daemon
/// sends nothing after its `Ok`, so anything readable on `conn` is its end (or a protocol
/// break, which ends the connection just the same).
fn wait_for_news(conn: &mut UnixStream, woken: &UnixStream) -> io::Result<()> {
    loop {
        let (daemon, news) = {
            let mut fds = [
                PollFd::new(conn.as_fd(), PollFlags::POLLIN),
                PollFd::new(woken.as_fd(), PollFlags::POLLIN),
            ];
            // The thread blocks every signal, so the wait is never interrupted.
            poll(&mut fds, PollTimeout::NONE)?;
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if daemon {
            let mut byte = [0u8; 1];
            return match conn.read(&mut byte) {
                Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => Err(io::Error::other("mosixd sent what a guest does not expect")),
                Err(e) => Err(e),
            };
        }
        if news {
            drain(woken);
            return Ok(());
        }
    }
}

/// Wait `wait` before the next attempt, or less if there is news; false if the guest stops.
fn pause(woken: &UnixStream, wait: Duration, said: &Mutex<Said>) -> bool {
    let mut fds = [PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
        drain(woken);
    }
    !lock(said).stopping
}

fn drain(woken: &UnixStream) {
    let mut buf = [0u8; 64];
    while matches!((&*woken).read(&mut buf), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A fake daemon's side of a guest's connection.
    struct Fake {
        stream: UnixStream,
        lines: LineReader,
    }

    impl Fake {
        /// Accept a guest and take its registration.
        fn accept(listener: &UnixListener) -> Fake {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut fake = Fake {
                stream,
                lines: LineReader::new(),
            };
            let request: Request = fake.lines.recv(&mut fake.stream).unwrap().unwrap();
            assert_eq!(request, Request::Guest { home_node: 3 });
            send_line(&mut fake.stream, &Reply::Ok).unwrap();
            fake
        }

        fn report(&mut self) -> GuestReport {
            self.lines.recv(&mut self.stream).unwrap().unwrap()
        }

        /// The guest closed the connection without another word.
        fn ended(mut self) {
            let mut rest = Vec::new();
            assert_eq!(self.stream.read_to_end(&mut rest).unwrap(), 0);
            assert!(self.lines.take_buffered().is_empty());
        }
    }

    fn daemon_at(dir: &tempfile::TempDir) -> (UnixListener, DaemonSocket) {
        let path = dir.path().join("mosixd.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let daemon = DaemonSocket {
            path,
            trusted_user: None,
        };
        (listener, daemon)
    }

    #[test]
    fn a_restarted_daemon_hears_what_the_guest_hosts_and_then_that_it_left() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, daemon) = daemon_at(&dir);
        let mut reports = DaemonReports::start(daemon, 3).unwrap();
        let mut old = Fake::accept(&listener);
        reports.running(120, 4711);
        assert_eq!(
            old.report(),
            GuestReport::Running {
                pid: 120,
                home_pid: 4711
            }
        );

        // The daemon restarts: the guest registers with the new one by itself and says again
        // what it hosts, and no more.
        drop(old);
        let mut new = Fake::accept(&listener);
        assert_eq!(
            new.report(),
            GuestReport::Running {
                pid: 120,
                home_pid: 4711
            }
        );
        reports.left(Left::Moved);
        assert_eq!(
            new.report(),
            GuestReport::Left {
                how: Departure::Moved
            }
        );
        reports.stop();
        new.ended();
    }

    #[test]
    fn reports_made_before_the_daemon_answers_wait_for_nothing_and_arrive_as_the_latest_state() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, daemon) = daemon_at(&dir);
        let mut reports = DaemonReports::start(daemon, 3).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut lines = LineReader::new();
        let request: Request = lines.recv(&mut stream).unwrap().unwrap();
        assert_eq!(request, Request::Guest { home_node: 3 });
        // The engine reports while the registration waits for its answer, which comes only
        // after these calls: none of them can have waited for the daemon.
        for pid in 1..=1000 {
            reports.running(pid, pid + 1);
        }
        reports.left(Left::Ended);
        send_line(&mut stream, &Reply::Ok).unwrap();
        let mut fake = Fake { stream, lines };
        assert_eq!(
            fake.report(),
            GuestReport::Running {
                pid: 1000,
                home_pid: 1001
            }
        );
        assert_eq!(
            fake.report(),
            GuestReport::Left {
                how: Departure::Ended
            }
        );
        reports.stop();
        fake.ended();
    }

    #[test]
    fn a_refused_registration_is_tried_again_and_the_news_goes_to_the_daemon_that_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, daemon) = daemon_at(&dir);
        let mut reports = DaemonReports::start(daemon, 3).unwrap();
        reports.running(7, 8);
        let (mut refused, _) = listener.accept().unwrap();
        refused.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut lines = LineReader::new();
        let request: Request = lines.recv(&mut refused).unwrap().unwrap();
        assert_eq!(request, Request::Guest { home_node: 3 });
        let message = "too many".to_owned();
        send_line(&mut refused, &Reply::Error { message }).unwrap();
        let mut taken = Fake::accept(&listener);
        assert_eq!(
            taken.report(),
            GuestReport::Running {
                pid: 7,
                home_pid: 8
            }
        );
        reports.stop();
        taken.ended();
    }
}
