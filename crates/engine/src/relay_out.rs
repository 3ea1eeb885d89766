//! The next node's end of a relay, whose writes are bounded in time frame by frame.
//!
//! Home relays a moving process's image from its remote to the next node on one thread: while
//! a frame goes out, the remote is not read. The remote's link gives up on a peer that keeps
//! its window shut for the transport's TCP_USER_TIMEOUT (15 s): a relay that waited that long
//! on a next node that died without a reset, or one that takes a trickle, would cost the
//! process its home link. So each frame read from the remote must be written on within
//! [`FRAME_STALL`]; a next node that takes it slower fails the move, and the process runs on
//! at its remote.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::session::Session;

/// How long one frame may take to go on to the next node. A write the kernel blocks is woken
/// at the deadline, so a frame holds the remote unread for at most this, or twice this when
/// the next node dies in the middle of a write that had made progress (that write returns
/// short at the deadline, the next one finds the time spent). Either stays well below the
/// remote link's 15 s.
pub const FRAME_STALL: Duration = Duration::from_secs(5);

/// Writes to the next node's session, each frame within [`FRAME_STALL`] of
/// [`RelayOut::next_frame`]. Dropping it lifts the bound: the session may become the
/// process's own.
pub struct RelayOut<'a> {
    out: &'a mut (dyn Write + Send),
    fd: RawFd,
    deadline: Instant,
}

impl<'a> RelayOut<'a> {
    /// Relay into `session`; the first frame's time starts now.
    pub fn new(session: &'a mut Session) -> RelayOut<'a> {
        RelayOut {
            fd: session.raw_fd(),
            out: &mut *session.out,
            deadline: Instant::now() + FRAME_STALL,
        }
    }

    /// A frame was read from the remote: its time to go on starts now.
    pub fn next_frame(&mut self) {
        self.deadline = Instant::now() + FRAME_STALL;
    }

    /// Bound the next system call on the session by what is left of the frame's time.
    fn bound(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(stalled());
        }
        // Zero would mean no bound at all.
        set_timeout(
            self.fd,
            libc::SO_SNDTIMEO,
            left.max(Duration::from_millis(1)),
        )
    }
}

impl Write for RelayOut<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.bound()?;
        self.out.write(data).map_err(timed_out_as_stalled)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.bound()?;
        self.out.flush().map_err(timed_out_as_stalled)
    }
}

impl Drop for RelayOut<'_> {
    fn drop(&mut self) {
        // A session that keeps the bound fails a later write that merely waits; one whose
        // option cannot be set is broken, which its next use reports.
        let _ = set_timeout(self.fd, libc::SO_SNDTIMEO, Duration::ZERO);
    }
}

/// Bounds the reads of the next node's session by [`FRAME_STALL`] while home waits for its
/// answer to a first round's areas (`Held`), on the thread that relays: the remote waits for
/// that answer too, and a next node that stopped reading stops answering. Dropping it lifts
/// the bound.
pub struct AnswerBound {
    fd: RawFd,
    started: Instant,
}

impl AnswerBound {
    /// Bound the reads of `session` from now on.
    pub fn new(session: &Session) -> io::Result<AnswerBound> {
        let fd = session.raw_fd();
        set_timeout(fd, libc::SO_RCVTIMEO, FRAME_STALL)?;
        Ok(AnswerBound {
            fd,
            started: Instant::now(),
        })
    }

    /// Why a read failed: the frame's time ran out, or `err`.
    pub fn explain(&self, err: String) -> String {
        match self.started.elapsed() >= FRAME_STALL {
            true => stalled().to_string(),
            false => err,
        }
    }
}

impl Drop for AnswerBound {
    fn drop(&mut self) {
        // As for RelayOut: a session whose option cannot be set is broken.
        let _ = set_timeout(self.fd, libc::SO_RCVTIMEO, Duration::ZERO);
    }
}

/// The next node did not take a frame in time.
fn stalled() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "it took more than {} s for a frame of the image, longer than the remote can wait",
            FRAME_STALL.as_secs()
        ),
    )
}

/// A send that reached SO_SNDTIMEO fails with EAGAIN; say what it means.
fn timed_out_as_stalled(err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::WouldBlock {
        stalled()
    } else {
        err
    }
}

/// Bound how long a send (`SO_SNDTIMEO`) or a receive (`SO_RCVTIMEO`) on socket `fd` may
/// block (zero: no bound).
fn set_timeout(fd: RawFd, which: libc::c_int, timeout: Duration) -> io::Result<()> {
    let timeval = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt reads the live timeval; `fd` is the session's socket, whose halves
    // share its options.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            which,
            (&timeval as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
