//! Write-behind: a remote's consecutive writes to a pipe or stream socket at home go home
//! without waiting for their answers (docs/forwarding.md, "Fewer round trips: writes").
//!
//! Home grants a descriptor `room` after a forwarded write to it fully succeeded, when it is
//! a blocking pipe, FIFO or stream socket without a send timeout: what a write could add
//! right then without blocking. The guest then answers the program's writes to it at once
//! with their full length, as long as the bytes not yet acknowledged fit in that room, and
//! sends them as `ToHome::WriteBehind` in the session stream, after everything the program
//! did before and before anything it does after: home runs the stream in order. Home runs
//! consecutive ones as one write and acknowledges them (`ToGuest::Room`) with the room
//! measured again.
//!
//! Guest side: [`Behind`]. Home side: [`room`] measures, [`Waiting`] keeps the calls that
//! came while the shell ran another.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rmosix_image::{write_message, write_pages};

use crate::deputy::Call;
use crate::forward::Forwarder;
use crate::pidfd::PidFd;
use crate::session::{Session, ToHome};
use crate::table::MAX_BUF;

/// Longest time bytes written behind wait in the guest's session buffer before it is sent:
/// a reader at home sees them within this bound even when the program goes on computing.
pub const FLUSH_AFTER: Duration = Duration::from_millis(1);
/// Bytes written behind that are sent at once rather than left for the timer.
const FLUSH_AT: u64 = 32 << 10;
/// Most room home grants, whatever a socket's buffer would take: bounds what a program may
/// be told was written before home has run it.
const ROOM_CAP: u64 = 1 << 20;
/// Most bytes of writes behind home keeps waiting: far above what its grants allow a guest
/// (a few descriptors' room), so that only a peer that ignores them meets it.
const MAX_OWED: u64 = 64 << 20;

/// What the guest did with a trapped call.
pub enum Taken {
    /// Written behind: answer the program with this length now.
    Written(i64),
    /// A write to a granted descriptor that does not fit the room left: it waits for home's
    /// next acknowledgement.
    Wait,
    /// Not for write-behind: forward it as usual.
    No,
}

/// One descriptor home granted.
#[derive(Default)]
struct Grant {
    /// Bytes home last said could be written without blocking.
    room: u64,
    /// Bytes written behind and not yet acknowledged.
    unacked: u64,
    /// Revoked by a call home or a relayed signal: only the `Room`s that come with an
    /// answer grant again, not acknowledgements measured before that call ran.
    revoked: bool,
}

/// The guest's side: grants, bytes not yet acknowledged, and whether the session holds
/// unsent ones.
#[derive(Default)]
pub struct Behind {
    grants: HashMap<i32, Grant>,
    /// Since when bytes written behind wait in the session's buffer, unflushed.
    unflushed_since: Option<Instant>,
    unflushed: u64,
}

impl Behind {
    /// Trapped call `nr`: write it behind if it is a write to a granted descriptor that
    /// fits; the bytes go into the session's buffer.
    pub fn take(
        &mut self,
        fwd: &Forwarder,
        nr: i64,
        args: &[u64; 6],
        session: &mut Session,
    ) -> io::Result<Taken> {
        let fd = args[0] as i32;
        if self.grants.get(&fd).is_none_or(|g| g.revoked) {
            return Ok(Taken::No);
        }
        let Some(bytes) = fwd.written_bytes(nr, args) else {
            return Ok(Taken::No);
        };
        let len = bytes.len() as u64;
        match self.admit(fd, len) {
            Taken::Written(_) => {}
            Taken::Wait => {
                self.flush(session)?;
                return Ok(Taken::Wait);
            }
            Taken::No => return Ok(Taken::No),
        }
        write_message(&mut session.out, &ToHome::WriteBehind { fd })?;
        write_pages(&mut session.out, args[1], &bytes)?;
        self.unflushed += len;
        self.unflushed_since.get_or_insert_with(Instant::now);
        if self.unflushed >= FLUSH_AT {
            self.flush(session)?;
        }
        Ok(Taken::Written(len as i64))
    }

    /// Whether `len` bytes may be written behind to `fd` now; if so, they count as unacked.
    fn admit(&mut self, fd: i32, len: u64) -> Taken {
        let Some(grant) = self.grants.get_mut(&fd).filter(|g| !g.revoked && len > 0) else {
            return Taken::No;
        };
        if grant.unacked + len <= grant.room {
            grant.unacked += len;
            Taken::Written(len as i64)
        } else if grant.unacked > 0 {
            // Home's answer to what went already may bring room.
            Taken::Wait
        } else {
            // Alone it does not fit: it goes as a plain call, whose answer measures again.
            Taken::No
        }
    }

    /// A call went home as itself, or home relayed a signal: either may carry news of a
    /// descriptor (its reader closed, its flags changed), so that a later write to it must
    /// end as it ends at home now. Every grant is revoked; the `Room`s that come before the
    /// call's answer, measured after it ran, grant afresh.
    pub fn revoke_all(&mut self) {
        for grant in self.grants.values_mut() {
            grant.revoked = true;
        }
        self.grants.retain(|_, g| g.unacked > 0);
    }

    /// Home's `ToGuest::Room`: it wrote `written` bytes written behind to `fd` (0: a grant
    /// that comes with the answer to a forwarded call), and `room` more would fit now.
    pub fn on_room(&mut self, fd: i32, written: u64, room: u64) {
        if written == 0 {
            let grant = self.grants.entry(fd).or_default();
            grant.revoked = room == 0;
            grant.room = room.min(ROOM_CAP);
        } else if let Some(grant) = self.grants.get_mut(&fd) {
            grant.unacked = grant.unacked.saturating_sub(written);
            if room == 0 {
                grant.revoked = true;
            } else if !grant.revoked {
                grant.room = room.min(ROOM_CAP);
            }
        }
        self.grants.retain(|_, g| !g.revoked || g.unacked > 0);
    }

    /// Bytes the program was told were written that home has not acknowledged.
    pub fn unacked(&self) -> u64 {
        self.grants.values().map(|g| g.unacked).sum()
    }

    /// How long until the bytes waiting in the session's buffer must go (None: none wait).
    pub fn flush_due(&self) -> Option<Duration> {
        self.unflushed_since
            .map(|since| FLUSH_AFTER.saturating_sub(since.elapsed()))
    }

    /// Send what waits in the session's buffer.
    pub fn flush(&mut self, session: &mut Session) -> io::Result<()> {
        if self.unflushed_since.take().is_some() {
            self.unflushed = 0;
            session.out.flush()?;
        }
        Ok(())
    }
}

/// Whether a forwarded call that returned `ret` is a write home may grant room after: it
/// wrote all it was asked to (writev comes home as write; a send only without flags and
/// address, as the guest writes behind).
pub fn grants_after(call: &Call, ret: i64) -> bool {
    let asked = call.args[2] as i64;
    let plain = match call.nr {
        libc::SYS_write => true,
        libc::SYS_sendto => call.args[3] == 0 && call.args[4] == 0,
        _ => false,
    };
    plain && asked > 0 && ret == asked
}

/// How many bytes may be written behind to descriptor `fd` of the shell behind `pidfd` now:
/// 0 unless it is a blocking pipe or FIFO, or a blocking stream socket without a send
/// timeout; else what a write could add right now without blocking (pipe capacity less the
/// unread bytes; send buffer less the queued bytes), at most [`ROOM_CAP`].
pub fn room(pidfd: &PidFd, fd: i32) -> u64 {
    let Ok(copy) = pidfd.get_fd(fd) else {
        return 0;
    };
    // SAFETY: F_GETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 || flags & libc::O_NONBLOCK != 0 {
        return 0;
    }
    // SAFETY: fstat fills a live, zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we own.
    if unsafe { libc::fstat(copy.as_raw_fd(), &mut st) } != 0 {
        return 0;
    }
    if !writable(&copy) {
        return 0;
    }
    let free = match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => pipe_room(&copy),
        libc::S_IFSOCK => socket_room(&copy),
        _ => None,
    };
    free.unwrap_or(0).min(ROOM_CAP)
}

/// Poll says writable and nothing else: no error, no hangup (a pipe whose readers are gone
/// says POLLERR; a socket with an error pending, POLLERR; a reset one, POLLHUP).
fn writable(fd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one live pollfd; a zero timeout never waits.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready == 1 && poll.revents == libc::POLLOUT
}

/// A pipe's capacity less its unread bytes.
fn pipe_room(pipe: &OwnedFd) -> Option<u64> {
    // SAFETY: F_GETPIPE_SZ on a pipe we own.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    let unread = ioctl_count(pipe, libc::FIONREAD)?;
    u64::try_from(size).ok()?.checked_sub(unread)
}

/// A blocking stream socket's send buffer less what waits in it; None for other sockets
/// and for one with a send timeout (a write to it may end short).
fn socket_room(socket: &OwnedFd) -> Option<u64> {
    let kind: libc::c_int = sockopt(socket, libc::SO_TYPE)?;
    let timeout: libc::timeval = sockopt(socket, libc::SO_SNDTIMEO)?;
    if kind != libc::SOCK_STREAM || timeout.tv_sec != 0 || timeout.tv_usec != 0 {
        return None;
    }
    let buffer: libc::c_int = sockopt(socket, libc::SO_SNDBUF)?;
    // SIOCOUTQ: bytes queued in the send buffer (socket(7)); same value as TIOCOUTQ.
    let queued = ioctl_count(socket, libc::TIOCOUTQ)?;
    u64::try_from(buffer).ok()?.checked_sub(queued)
}

/// An ioctl that returns a count through an int.
fn ioctl_count(fd: &OwnedFd, request: libc::Ioctl) -> Option<u64> {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD and TIOCOUTQ write one int through the pointer, which is live.
    let done = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut count) };
    (done == 0).then(|| u64::try_from(count).ok()).flatten()
}

/// A SOL_SOCKET option of plain-data type `T`.
fn sockopt<T: Copy>(socket: &OwnedFd, name: libc::c_int) -> Option<T> {
    // SAFETY: T is a plain C type (int, timeval): zeroed is a valid value.
    let mut value: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which is live.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    (done == 0 && len as usize == size_of::<T>()).then_some(value)
}

/// Home's side: calls that came while the shell ran another, in the order they came.
#[derive(Default)]
pub struct Waiting {
    calls: VecDeque<Call>,
    /// Bytes of the writes behind among them.
    owed: u64,
}

/// Bytes `call` writes behind (0 for any other call).
fn behind_bytes(call: &Call) -> u64 {
    if call.behind { call.args[2] } else { 0 }
}

impl Waiting {
    /// Keep `call` until the calls before it ran. A remote that sends more than its grants
    /// allow breaks its session.
    pub fn push(&mut self, call: Call) -> io::Result<()> {
        if self.owed + behind_bytes(&call) > MAX_OWED {
            return Err(io::Error::other(
                "its remote wrote behind far more than home granted",
            ));
        }
        self.owed += behind_bytes(&call);
        self.calls.push_back(call);
        Ok(())
    }

    /// Whether every call kept is a write behind.
    pub fn all_behind(&self) -> bool {
        self.calls.iter().all(|call| call.behind)
    }

    /// Put back the part of a write behind that did not run yet: it runs next.
    pub fn push_front(&mut self, call: Call) {
        self.owed += behind_bytes(&call);
        self.calls.push_front(call);
    }

    /// No call waits.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The next call to run. Writes behind to one descriptor that follow each other run
    /// as one write, up to [`MAX_BUF`].
    pub fn next(&mut self) -> Option<Call> {
        let mut first = self.calls.pop_front()?;
        self.owed -= behind_bytes(&first);
        if !first.behind {
            return Some(first);
        }
        while let Some(next) = self.calls.front()
            && next.behind
            && next.args[0] == first.args[0]
            && first.args[2] + next.args[2] <= MAX_BUF
        {
            if let Some(next) = self.calls.pop_front() {
                self.owed -= behind_bytes(&next);
                first.extend_behind(next.sent.first().map_or(&[][..], Vec::as_slice));
            }
        }
        Some(first)
    }

    /// A write behind to `fd` failed because the other end went: the writes behind to `fd`
    /// that wait are dropped. Returns their bytes.
    pub fn drop_behind(&mut self, fd: i32) -> u64 {
        let mut dropped = 0;
        self.calls.retain(|call| {
            let drop = call.behind && call.args[0] == fd as u64;
            if drop {
                dropped += call.args[2];
            }
            !drop
        });
        self.owed -= dropped;
        dropped
    }

    /// Bytes of the writes behind that wait.
    pub fn owed(&self) -> u64 {
        self.owed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(behind: &mut Behind, fd: i32, len: u64) -> &'static str {
        match behind.admit(fd, len) {
            Taken::Written(_) => "written",
            Taken::Wait => "wait",
            Taken::No => "no",
        }
    }

    #[test]
    fn writes_go_behind_only_within_the_room_home_granted() {
        let mut behind = Behind::default();
        assert_eq!(admitted(&mut behind, 1, 10), "no", "no grant yet");
        behind.on_room(1, 0, 100);
        assert_eq!(admitted(&mut behind, 1, 60), "written");
        assert_eq!(admitted(&mut behind, 1, 40), "written");
        assert_eq!(admitted(&mut behind, 1, 1), "wait", "the room is used up");
        assert_eq!(admitted(&mut behind, 2, 1), "no", "another descriptor");
        assert_eq!(behind.unacked(), 100);
        behind.on_room(1, 60, 100);
        assert_eq!(behind.unacked(), 40);
        assert_eq!(admitted(&mut behind, 1, 61), "wait");
        assert_eq!(admitted(&mut behind, 1, 60), "written");
        behind.on_room(1, 100, 100);
        assert_eq!(behind.unacked(), 0);
        assert_eq!(
            admitted(&mut behind, 1, 101),
            "no",
            "too big alone: a plain call"
        );
        assert_eq!(admitted(&mut behind, 1, 0), "no");
    }

    #[test]
    fn any_call_home_revokes_until_the_rooms_that_come_with_its_answer() {
        let mut behind = Behind::default();
        behind.on_room(1, 0, 100);
        behind.on_room(3, 0, 100);
        assert_eq!(admitted(&mut behind, 1, 10), "written");
        behind.revoke_all();
        assert_eq!(admitted(&mut behind, 1, 10), "no");
        assert_eq!(admitted(&mut behind, 3, 10), "no");
        // An acknowledgement measured before the call ran grants nothing.
        behind.on_room(1, 10, 100);
        assert_eq!(admitted(&mut behind, 1, 10), "no");
        assert_eq!(behind.unacked(), 0);
        // The rooms that come with the call's answer do.
        behind.on_room(1, 0, 100);
        assert_eq!(admitted(&mut behind, 1, 10), "written");
        assert_eq!(admitted(&mut behind, 3, 10), "no");
    }

    #[test]
    fn an_acknowledgement_alone_grants_nothing() {
        let mut behind = Behind::default();
        behind.on_room(4, 10, 100);
        assert_eq!(admitted(&mut behind, 4, 10), "no");
        assert_eq!(behind.unacked(), 0);
    }

    #[test]
    fn room_zero_revokes() {
        let mut behind = Behind::default();
        behind.on_room(2, 0, 100);
        assert_eq!(admitted(&mut behind, 2, 10), "written");
        // The reader of 2 went: home drops the rest and revokes.
        behind.on_room(2, 10, 0);
        assert_eq!(behind.unacked(), 0);
        assert_eq!(admitted(&mut behind, 2, 10), "no");
        behind.on_room(2, 0, 0);
        assert_eq!(admitted(&mut behind, 2, 10), "no");
    }

    impl Waiting {
        fn push_ok(&mut self, call: Call) {
            self.push(call).unwrap();
        }
    }

    #[test]
    fn home_keeps_no_more_than_a_guest_may_write_behind() {
        let mut waiting = Waiting::default();
        let big = || Call::behind(1, 0x1000, vec![0; MAX_BUF as usize]).unwrap();
        for _ in 0..MAX_OWED / MAX_BUF {
            waiting.push_ok(big());
        }
        assert!(waiting.push(big()).is_err());
        // A plain call is no bytes written behind.
        waiting.push_ok(plain(libc::SYS_read));
    }

    fn plain(nr: i64) -> Call {
        let mut call = Call::behind(9, 0x1000, vec![1]).unwrap();
        call.behind = false;
        call.nr = nr;
        call
    }

    #[test]
    fn waiting_writes_behind_to_one_descriptor_run_as_one_in_order() {
        let mut waiting = Waiting::default();
        waiting.push_ok(Call::behind(1, 0x1000, b"ab".to_vec()).unwrap());
        waiting.push_ok(Call::behind(1, 0x2000, b"cd".to_vec()).unwrap());
        waiting.push_ok(Call::behind(2, 0x3000, b"ef".to_vec()).unwrap());
        waiting.push_ok(Call::behind(1, 0x4000, b"gh".to_vec()).unwrap());
        waiting.push_ok(plain(libc::SYS_read));
        waiting.push_ok(Call::behind(1, 0x5000, b"ij".to_vec()).unwrap());
        assert_eq!(waiting.owed(), 10);
        let first = waiting.next().unwrap();
        assert_eq!((first.args[0], first.args[2]), (1, 4));
        assert_eq!(first.sent, vec![b"abcd".to_vec()]);
        assert_eq!(first.shape.bufs[0].len, 4);
        assert_eq!(waiting.next().unwrap().sent, vec![b"ef".to_vec()]);
        assert_eq!(waiting.next().unwrap().sent, vec![b"gh".to_vec()]);
        assert_eq!(waiting.next().unwrap().nr, libc::SYS_read);
        assert_eq!(waiting.next().unwrap().sent, vec![b"ij".to_vec()]);
        assert!(waiting.next().is_none());
    }

    #[test]
    fn a_reader_that_goes_drops_the_writes_behind_that_wait_for_it_only() {
        let mut waiting = Waiting::default();
        waiting.push_ok(Call::behind(1, 0x1000, b"ab".to_vec()).unwrap());
        waiting.push_ok(plain(libc::SYS_read));
        waiting.push_ok(Call::behind(2, 0x1000, b"cde".to_vec()).unwrap());
        waiting.push_ok(Call::behind(1, 0x1000, b"fgh".to_vec()).unwrap());
        assert_eq!(waiting.drop_behind(1), 5);
        assert_eq!(waiting.owed(), 3);
        assert_eq!(waiting.next().unwrap().nr, libc::SYS_read);
        assert_eq!(waiting.next().unwrap().args[0], 2);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_write_behind_is_checked_as_any_write() {
        assert!(Call::behind(1, 0x1000, vec![0; MAX_BUF as usize + 1]).is_err());
        let call = Call::behind(1, 0x1000, vec![7; 3]).unwrap();
        assert_eq!(call.args, [1, 0x1000, 3, 0, 0, 0]);
    }
}
