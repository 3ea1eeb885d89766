//! The guest supervisor: runs on the target node, restores an image into a husk, and serves the
//! remote: forwards its environment calls home (`forward`), delivers the signals home sends,
//! sends it home when it makes a call that must run there or when home asks for it.
//!
//! One thread turns one event loop over three sources: the husk's ptrace stops (SIGCHLD),
//! home's session, and the seccomp listener's notifications.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rmosix_image::{CpuUse, Frame};
use tracing::{debug, info, warn};

use crate::cputime::Carry;
use crate::dfsa::{self, Consistent, LocalFiles, Resume};
use crate::dump;
use crate::event_loop::{SigChld, Turn};
use crate::forward::{Forwarder, Pending, Replied, Trapped, respond};
use crate::inject::Injector;
use crate::limits;
use crate::mem::Memory;
use crate::numbers::Free;
use crate::pathcache::{Answer, Key, Listing};
use crate::ptrace::{self, Pid, Stop};
use crate::readahead::Loan;
use crate::samefile::Held;
use crate::seccomp::{self, Listener};
use crate::session::{Channel, Session, ToGuest, ToHome};
use crate::signals::{self, Arriving, StatusMasks};
use crate::throttle::Duty;
use crate::track::Tracker;
use crate::writebehind::{Behind, Taken};
use crate::{facts, restore, spawn, sys};

/// How long home may leave the session silent before the process runs here: a session opened
/// and never greeted, or an image that stops coming, costs nothing but this guest, and it
/// gives up. Once the process runs here the session has no such bound: home may take its
/// time, and only a dead link (the transport's timeouts) ends it.
const GREETING_TIMEOUT: Duration = Duration::from_secs(60);

/// What a guest tells its own node's daemon about the process it hosts.
pub trait Reports {
    /// The process runs here, as local process `husk`; at home it is `home_pid`.
    fn running(&mut self, husk: Pid, home_pid: i32);
    /// It left this node.
    fn left(&mut self, how: Left);
    /// How long, in all, it has waited here for calls forwarded home (the balancer's
    /// forwarding share): told at most once a second, and only when it grew.
    fn waited(&mut self, total: Duration);
}

/// How often, at most, a guest tells how long its process waited for home.
const WAITED_EVERY: Duration = Duration::from_secs(1);

/// How a process left a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// It ended (exited, or was killed by a signal).
    Ended,
    /// It went home or on to another node.
    Moved,
    /// Its session with home ended under it; it was killed.
    Lost,
}

/// Serve one guest session on `channel` until the remote leaves, telling `reports` about it.
/// `ours`: this node's file systems that are the same on every node (see `dfsa`).
pub fn serve_guest(
    channel: Channel,
    ours: &Consistent,
    reports: &mut dyn Reports,
) -> io::Result<()> {
    let facts = facts::probe()?;
    let fd = channel.reader.raw_fd();
    set_read_timeout(fd, Some(GREETING_TIMEOUT))?;
    let mut session = Session::new(channel);
    let opening = match session.read_opening() {
        Ok(opening) => opening,
        Err(err) => {
            let reason = err.to_string();
            // A peer that never spoke gets no answer; one that spoke another version does.
            let _ = session.send(&ToHome::Refused {
                reason: reason.clone(),
            });
            info!(%reason, "refused a session");
            return Ok(());
        }
    };
    if let Some(reason) = opening.facts.incompatibility(&facts) {
        session.send(&ToHome::Refused {
            reason: reason.clone(),
        })?;
        info!(%reason, "refused a process");
        return Ok(());
    }
    let mut local = LocalFiles::new(opening.dfsa.as_ref(), ours);
    let shares = local.consistent().clone();
    session.send(&ToHome::Ready { shares })?;
    let husk = spawn::spawn_husk(false)?;
    let restored = receive(husk, &mut session, &mut local).and_then(|(inj, cpu, book)| {
        let listener = seccomp::install(husk, &inj)?;
        let mut fwd = Forwarder::open(husk, cpu, local)?;
        // Kept before the process runs: its first calls may be lookups in it, and opens.
        fwd.home_knew(book.answers, book.listings);
        if let Some(free) = book.free {
            fwd.numbers_ahead(free);
        }
        fwd.limits_as_home(book.limits_as_home);
        Ok((inj, cpu, listener, fwd))
    });
    let (inj, arrived, listener, fwd) = match restored {
        Ok(done) => done,
        Err(err) => {
            kill(husk);
            session.send(&ToHome::Failed {
                reason: err.to_string(),
            })?;
            return Err(err);
        }
    };
    set_read_timeout(fd, None)?;
    let sigchld = SigChld::new()?;
    ptrace::cont(husk, 0)?;
    // Noted before home hears it, so that the daemon here lists the process about when home's
    // `migrate` answers (the note goes out on a thread of its own, and is never waited for).
    reports.running(husk, opening.pid);
    session.send(&ToHome::Running)?;
    info!(pid = husk, home_pid = opening.pid, "remote running");
    let mut guest = Guest {
        husk,
        inj,
        fwd,
        arrived,
        mem: Memory::open(husk)?,
        listener,
        session,
        pending: None,
        leaving: false,
        arriving: Arriving::default(),
        behind: Behind::default(),
        waiting: None,
        home_wait: HomeWait::default(),
    };
    let left = guest.serve(&sigchld, reports);
    kill(husk);
    reports.left(*left.as_ref().unwrap_or(&Left::Lost));
    left.map(drop)
}

/// Bound how long a read of the session may wait (None: no bound).
fn set_read_timeout(fd: i32, timeout: Option<Duration>) -> io::Result<()> {
    let timeout = timeout.unwrap_or(Duration::ZERO);
    let timeval = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads the live timeval; `fd` is the session's socket.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeval as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a process arrives with besides its image: what home told ahead of it, the job's
/// book and, for a process stopped since its exec, the numbers free in its table (see
/// `deputy::tell_book_ahead`, `deputy::tell_numbers_ahead`); and whether it runs here with
/// the limits it had (see `limits`).
#[derive(Default)]
struct Arrival {
    answers: Vec<(Key, Answer)>,
    listings: Vec<Listing>,
    told: bool,
    free: Option<Free>,
    limits_as_home: bool,
}

/// Restore the image that follows `Ready` into `husk`: whole, or in the two rounds of a
/// pre-copy, and give it its limits. Returns the injector, the process's CPU use so far,
/// and what else it arrived with.
/// The files it holds here are opened again and join `local`.
fn receive(
    husk: Pid,
    session: &mut Session,
    local: &mut LocalFiles,
) -> io::Result<(Injector, CpuUse, Arrival)> {
    let mut book = Arrival::default();
    let image = loop {
        match session.recv::<ToGuest>().map_err(io::Error::other)? {
            // One of each at most: home tells each once.
            ToGuest::Known { answers, listings } if !book.told => {
                (book.answers, book.listings, book.told) = (answers, listings, true);
            }
            ToGuest::NumbersAhead { free } if book.free.is_none() => book.free = Some(free),
            image => break image,
        }
    };
    let (inj, header) = match image {
        ToGuest::Image => {
            let header = restore::read_header(&mut session.frames)?;
            let inj = restore::restore_into(husk, &header, &mut session.frames)?;
            (inj, header)
        }
        ToGuest::Precopy { areas } => {
            let held = Held::here(&areas);
            session.send(&ToHome::Held(held.clone()))?;
            let inj = restore::restore_first_round(husk, &areas, &held, &mut session.frames)?;
            session.send(&ToHome::Prepared)?;
            let header = restore::read_header(&mut session.frames)?;
            let frames = &mut session.frames;
            restore::restore_final_round(husk, &inj, &areas, &held, &header, frames)?;
            (inj, header)
        }
        other => {
            return Err(io::Error::other(format!(
                "expected an image, got {other:?}"
            )));
        }
    };
    let at = Resume::Remote(local.consistent(), local.system());
    let kept = dfsa::reopen(husk, &inj, &header.local_files, at)?;
    local.adopt(&kept);
    limits::restore(husk, &header.limits)?;
    book.limits_as_home = limits::as_home(husk, &header.limits);
    Ok((inj, header.cpu, book))
}

fn kill(pid: Pid) {
    // SAFETY: plain kill of our own tracee; it may already be gone.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = ptrace::wait(pid, 0);
}

struct Guest {
    husk: Pid,
    inj: Injector,
    fwd: Forwarder,
    mem: Memory,
    listener: Listener,
    session: Session,
    pending: Option<Pending>,
    /// Home asked us to send the process away while a call was in flight: go once its answer
    /// is in, so that the call is neither lost nor run twice.
    leaving: bool,
    /// Signals home relayed, on their way into the husk.
    arriving: Arriving,
    /// The process's CPU use when it came (see `cputime`).
    arrived: CpuUse,
    /// Writes written behind: grants and bytes not yet acknowledged (see `writebehind`).
    behind: Behind,
    /// A trapped write that waits for home to acknowledge writes behind: id, nr, args.
    waiting: Option<(u64, i64, [u64; 6])>,
    /// How long the process has waited for home.
    home_wait: HomeWait,
}

/// The time a process spends blocked on a call shipped home (or on a write waiting for
/// home's room): what its remote run loses to forwarding.
#[derive(Default)]
struct HomeWait {
    /// Closed waits.
    total: Duration,
    /// Since when it waits now.
    since: Option<Instant>,
    /// What was told last, and when.
    told: Option<(Duration, Instant)>,
}

impl HomeWait {
    /// Notes whether the process waits for home at `now`.
    fn note(&mut self, waits: bool, now: Instant) {
        match (waits, self.since) {
            (true, None) => self.since = Some(now),
            (false, Some(since)) => {
                self.total += now.saturating_duration_since(since);
                self.since = None;
            }
            _ => {}
        }
    }

    /// All it waited by `now`, the wait under way included.
    fn by(&self, now: Instant) -> Duration {
        self.total
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// What to tell at `now`, if a [`WAITED_EVERY`] has passed and it grew.
    fn news(&mut self, now: Instant) -> Option<Duration> {
        let total = self.by(now);
        match self.told {
            Some((told, at)) if told == total || now.duration_since(at) < WAITED_EVERY => None,
            None if total.is_zero() => None,
            _ => {
                self.told = Some((total, now));
                Some(total)
            }
        }
    }

    /// When the loop should wake to tell: while it waits, a [`WAITED_EVERY`] after the last.
    fn next_due(&self, now: Instant) -> Option<Duration> {
        self.since?;
        let last = self.told.map_or(now, |(_, at)| at);
        Some((last + WAITED_EVERY).saturating_duration_since(now))
    }
}

/// The sources of the guest's loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Husk,
    Home,
    Calls,
}

impl Guest {
    fn serve(&mut self, sigchld: &SigChld, reports: &mut dyn Reports) -> io::Result<Left> {
        loop {
            let now = Instant::now();
            self.home_wait
                .note(self.pending.is_some() || self.waiting.is_some(), now);
            if let Some(total) = self.home_wait.news(now) {
                reports.waited(total);
            }
            let mut turn = Turn::new();
            turn.watch(Source::Husk, sigchld.raw_fd(), false);
            turn.watch(Source::Home, self.session.raw_fd(), self.session.buffered());
            turn.watch(Source::Calls, self.listener.as_raw_fd(), false);
            let timeout = match (self.behind.flush_due(), self.home_wait.next_due(now)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // One source per turn, in this order: a husk event first, as it may end it all.
            let ready = turn.wait(timeout)?;
            if self.behind.flush_due().is_some_and(|left| left.is_zero()) {
                self.behind.flush(&mut self.session)?;
            }
            let left = match ready.first() {
                Some(Source::Husk) => {
                    sigchld.drain();
                    self.on_husk_event()
                }
                Some(Source::Home) => self.on_home_message(),
                Some(Source::Calls) => self.on_notification(),
                None => Ok(None),
            };
            let left = match left {
                // The process ended while a step waited for it to stop: report its end.
                Err(err) if ptrace::is_end(&err) => self.on_husk_event()?,
                left => left?,
            };
            if let Some(left) = left {
                return Ok(left);
            }
        }
    }

    fn on_husk_event(&mut self) -> io::Result<Option<Left>> {
        while let Some((_, stop)) = ptrace::wait(self.husk, libc::WNOHANG)? {
            match stop {
                Stop::Signal(sig) => {
                    // What it wrote behind goes before the signal's effects.
                    self.behind.flush(&mut self.session)?;
                    self.arriving.at_delivery(self.husk, sig);
                    ptrace::cont(self.husk, sig)?
                }
                Stop::Group(sig) => {
                    ptrace::listen(self.husk)?;
                    self.session.send(&ToHome::Stopped { sig })?;
                }
                Stop::Killed(sig) => {
                    // What it was told it wrote is written before its shell dies.
                    if let Some(left) = self.settle()? {
                        return Ok(Some(left));
                    }
                    self.session.send(&ToHome::Died { sig })?;
                    return Ok(Some(Left::Ended));
                }
                Stop::Exited(code) => {
                    warn!(code, "remote exited without forwarding its exit");
                    return Ok(Some(Left::Ended));
                }
                Stop::Event(libc::PTRACE_EVENT_SECCOMP) => {
                    seccomp::refuse_gate_call(self.husk)?;
                    ptrace::cont(self.husk, 0)?;
                }
                Stop::Interrupted | Stop::Trap | Stop::Event(_) => ptrace::cont(self.husk, 0)?,
            }
        }
        Ok(None)
    }

    fn on_home_message(&mut self) -> io::Result<Option<Left>> {
        let msg: ToGuest = match self.session.recv() {
            Ok(msg) => msg,
            Err(err) => {
                let unwritten = self.behind.unacked();
                warn!(%err, unwritten, "home link lost; dropping the remote");
                return Ok(Some(Left::Lost));
            }
        };
        match msg {
            ToGuest::Reply { id, ret, backs } => {
                let backs = read_backs(&mut self.session, backs)?;
                let Some(pending) = self.pending.take_if(|p| p.id() == id) else {
                    // An answer to a call a signal interrupted (the remote has moved on), or
                    // to one nothing waits for.
                    self.fwd.on_stray_reply(id, ret);
                    return Ok(None);
                };
                // Leaving, and home did not run the call: do not answer it (a restart code
                // would reach the program, as no signal is pending); going home rewinds it.
                if self.leaving && sys::is_restart(ret) {
                    return self.first_round(Some(id));
                }
                if sys::is_restart(ret) && !self.takes_a_signal(&pending)? {
                    let job_stopped = self.stop_husk(Some(id))?;
                    self.resume_husk(job_stopped)?;
                    return Ok(None);
                }
                let leaving = self.leaving;
                let replied = self.fwd.on_reply(
                    pending,
                    ret,
                    backs,
                    leaving,
                    &mut self.session,
                    &self.listener,
                )?;
                match replied {
                    Replied::Done => {}
                    Replied::Interrupted { id, ret, mask } => self.interrupt_wait(id, ret, mask)?,
                    Replied::Again(next) => self.pending = Some(next),
                    Replied::Map {
                        id,
                        addr,
                        len,
                        prot,
                        flags,
                        bytes,
                    } => {
                        self.stop_husk(Some(id))?;
                        let result = self.map_copy(addr, len, prot, flags, &bytes)?;
                        self.finish_interrupted_call(result)?;
                    }
                }
                if self.leaving && self.pending.is_none() {
                    return self.first_round(None);
                }
            }
            ToGuest::Filled {
                id,
                start,
                eof,
                keep,
            } => {
                let loan = loan_follows(&mut self.session, start, eof, keep)?;
                // A read a signal interrupted is dropped, as a reply is.
                if let Some(pending) = self.pending.take_if(|p| p.id() == id) {
                    self.fwd.on_filled(pending, loan, &self.listener)?;
                }
                if self.leaving && self.pending.is_none() {
                    return self.first_round(None);
                }
            }
            ToGuest::Lent {
                id,
                fd,
                status,
                start,
                eof,
                keep,
            } => {
                let loan = loan_follows(&mut self.session, start, eof, keep)?;
                self.fwd.home_lent(id, fd, status, loan);
            }
            ToGuest::Stale { fds } => self.fwd.stale(&fds),
            ToGuest::Same { id, same } => self.fwd.home_said(id, same),
            ToGuest::Vouched { id, listing, cwd } => self.fwd.home_vouched(id, listing, cwd),
            ToGuest::Numbers { id, free } => self.fwd.home_numbered(id, free),
            ToGuest::Forget => self.fwd.forget_lookups(),
            ToGuest::ForgetPart(part) => self.fwd.forget_part_of_lookups(&part),
            ToGuest::Known { answers, listings } => self.fwd.home_knew(answers, listings),
            ToGuest::Signal { info } if info.is_valid() => {
                self.behind.revoke_all();
                self.arriving.send(self.husk, info);
            }
            ToGuest::Room { fd, written, room } => {
                self.behind.on_room(fd, written, room);
                if let Some((id, nr, args)) = self.waiting.take() {
                    return self.on_call(id, nr, args);
                }
            }
            ToGuest::SendImage => match self.pending {
                // A write waiting for room runs again wherever the process goes.
                None => {
                    let restart = self.waiting.take().map(|(id, ..)| id);
                    return self.first_round(restart);
                }
                // Home answers a call that finds it waiting for the image, exit_group too,
                // with a restart code: the call runs again wherever the process goes. (Were
                // the exit left to home, each side would wait for the other for ever.)
                Some(_) => self.leaving = true,
            },
            ToGuest::Ended => return Ok(Some(Left::Ended)),
            other => return Err(io::Error::other(format!("unexpected {other:?}"))),
        }
        Ok(None)
    }

    fn on_notification(&mut self) -> io::Result<Option<Left>> {
        let notif = match self.listener.recv() {
            Ok(n) => n,
            // The call was interrupted before we read it (ENOENT): nothing to do.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(err) => return Err(err),
        };
        self.on_call(notif.id, i64::from(notif.data.nr), notif.data.args)
    }

    /// Trapped call `id`: written behind, left to wait for room, shipped home, answered
    /// here, or the process goes home for it.
    fn on_call(&mut self, id: u64, nr: i64, args: [u64; 6]) -> io::Result<Option<Left>> {
        let (session, listener) = (&mut self.session, &self.listener);
        let nothing_behind = self.behind.unacked() == 0;
        let trapped =
            match (self.fwd).trap_local(id, nr, args, nothing_behind, session, listener)? {
                Some(trapped) => trapped,
                None => {
                    match self.behind.take(&self.fwd, nr, &args, &mut self.session)? {
                        Taken::Written(len) => {
                            respond(&self.listener, id, len);
                            return Ok(None);
                        }
                        Taken::Wait => {
                            self.waiting = Some((id, nr, args));
                            return Ok(None);
                        }
                        Taken::No => {}
                    }
                    (self.fwd).trap(
                        id,
                        nr,
                        args,
                        nothing_behind,
                        &mut self.session,
                        &self.listener,
                    )?
                }
            };
        match trapped {
            Trapped::Shipped(pending) => {
                self.behind.revoke_all();
                self.pending = Some(pending);
            }
            Trapped::Answered => {}
            Trapped::GoHome { what } => return self.go_home(Homeward::Call { id, what }, None),
        }
        Ok(None)
    }

    /// Whether a signal pending in the husk will be taken as `pending`'s call returns. A
    /// restart code means a signal interrupted the call in the shell, where every signal is
    /// let in. Only while the process takes one does its kernel restart the call or fail it
    /// with EINTR (a handler's SA_RESTART decides); a signal it blocks or ignores would not
    /// have interrupted the call at home, and the code would reach the program. Then the call
    /// is made again (`stop_husk` answers ERESTARTNOINTR), as if it had gone on waiting.
    fn takes_a_signal(&self, pending: &Pending) -> io::Result<bool> {
        let StatusMasks {
            pending: signals,
            mut blocked,
            ..
        } = signals::status_masks(self.husk)?;
        // A wait with a mask of its own also takes what that mask lets in.
        if let Pending::Masked { mask, .. } = pending {
            blocked &= mask;
        }
        Ok(signals & !blocked != 0)
    }

    /// A wait with a mask of its own (`mask`) was interrupted at home by a signal, which is
    /// pending here by now. Linux would run that signal's handler with `mask` in force, then
    /// give the process its own mask back when the handler returns, and the call would fail
    /// with EINTR. The husk is stopped at the call's exit, its mask set to `mask`, and
    /// stepped: the kernel delivers the signal and stops at the handler's first instruction,
    /// where the mask the handler's frame restores on return is made the process's own.
    /// Where `mask` lets no pending signal in, the call is answered `ret`, a restart code,
    /// and the kernel restarts it, as it would.
    fn interrupt_wait(&mut self, id: u64, ret: i64, mask: u64) -> io::Result<()> {
        let StatusMasks {
            pending, caught, ..
        } = signals::status_masks(self.husk)?;
        if pending & !mask == 0 {
            respond(&self.listener, id, ret);
            return Ok(());
        }
        if self.stop_husk(Some(id))? {
            // Job-stopped meanwhile: the call restarts once continued.
            return self.resume_husk(true);
        }
        let own = ptrace::get_sigmask(self.husk)?;
        let mut regs = ptrace::get_regs(self.husk)?;
        regs.rax = (-libc::EINTR) as u64;
        regs.orig_rax = u64::MAX;
        ptrace::set_regs(self.husk, &regs)?;
        ptrace::set_sigmask(self.husk, mask)?;
        ptrace::step_with(self.husk, 0)?;
        loop {
            match ptrace::wait_stop(self.husk)? {
                Stop::Signal(sig) => {
                    self.arriving.at_delivery(self.husk, sig);
                    if caught & 1 << (sig - 1) == 0 {
                        // No handler: its default action (or none) happens with the
                        // process's own mask back.
                        ptrace::set_sigmask(self.husk, own)?;
                        return ptrace::cont(self.husk, sig);
                    }
                    ptrace::step_with(self.husk, sig)?;
                }
                Stop::Trap => break,
                Stop::Event(libc::PTRACE_EVENT_SECCOMP) => {
                    seccomp::refuse_gate_call(self.husk)?;
                    ptrace::step_with(self.husk, 0)?;
                }
                _ => {
                    ptrace::set_sigmask(self.husk, own)?;
                    return ptrace::cont(self.husk, 0);
                }
            }
        }
        // At the handler's first instruction rsp points at its rt_sigframe: pretcode, then
        // the ucontext (flags, link, stack_t, sigcontext), whose uc_sigmask is what
        // rt_sigreturn restores. Before any handler ran (the step found none to deliver),
        // the mask is simply put back.
        let regs = ptrace::get_regs(self.husk)?;
        let uc_sigmask = regs.rsp + UC_SIGMASK_IN_FRAME;
        let in_frame = self.mem.read_words(uc_sigmask, 1).ok().map(|w| w[0]);
        if in_frame == Some(mask) {
            self.mem.write(uc_sigmask, &own.to_le_bytes())?;
        } else {
            ptrace::set_sigmask(self.husk, own)?;
        }
        ptrace::cont(self.husk, 0)
    }

    /// Emulate mmap of a home file in the stopped husk: anonymous memory filled with its
    /// contents.
    fn map_copy(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        bytes: &[u8],
    ) -> io::Result<i64> {
        let keep = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) as u64;
        let anon = keep | (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let got = self.inj.call(
            self.husk,
            libc::SYS_mmap,
            [addr, len, rw, anon, u64::MAX, 0],
        )?;
        if got < 0 {
            return Ok(got);
        }
        self.mem
            .write(got as u64, &bytes[..bytes.len().min(len as usize)])?;
        self.inj.call(
            self.husk,
            libc::SYS_mprotect,
            [got as u64, len, prot, 0, 0, 0],
        )?;
        Ok(got)
    }

    /// Interrupt the husk and wait for it to stop. If it waits on notification `notif` (which
    /// a signal cannot interrupt once received, see WAIT_KILLABLE_RECV), the call is answered
    /// with ERESTARTNOINTR after the interrupt is queued, so the husk stops with the call
    /// still to be restarted (dump rewinds it; an emulation overwrites the result).
    ///
    /// Returns whether the husk is in a group stop (job control), where it must stay when it
    /// goes on (see `resume_husk`).
    fn stop_husk(&mut self, notif: Option<u64>) -> io::Result<bool> {
        ptrace::interrupt(self.husk)?;
        if let Some(id) = notif {
            respond(&self.listener, id, sys::ERESTARTNOINTR);
        }
        loop {
            match ptrace::wait_stop(self.husk)? {
                Stop::Interrupted => return Ok(false),
                Stop::Group(_) => return Ok(true),
                Stop::Signal(sig) => {
                    self.arriving.at_delivery(self.husk, sig);
                    ptrace::cont(self.husk, sig)?
                }
                Stop::Event(libc::PTRACE_EVENT_SECCOMP) => {
                    seccomp::refuse_gate_call(self.husk)?;
                    ptrace::cont(self.husk, 0)?;
                }
                _ => ptrace::cont(self.husk, 0)?,
            }
        }
    }

    /// Let the husk go on after `stop_husk`: running, or still job-stopped if it was.
    fn resume_husk(&self, job_stopped: bool) -> io::Result<()> {
        if job_stopped {
            ptrace::listen(self.husk)
        } else {
            ptrace::cont(self.husk, 0)
        }
    }

    /// The husk was stopped inside a trapped call: make that call return `result` and go on.
    fn finish_interrupted_call(&mut self, result: i64) -> io::Result<()> {
        let mut regs = ptrace::get_regs(self.husk)?;
        regs.rax = result as u64;
        regs.orig_rax = u64::MAX;
        ptrace::set_regs(self.husk, &regs)?;
        ptrace::cont(self.husk, 0)
    }

    /// Home asked for the image: pre-copy's first round. Arm write tracking on the husk, send
    /// its pages while it runs, and wait for home's word. `Prepared`: freeze and send the final
    /// round (see `go_home`). `Stay`: home or the next node failed; the process runs on here.
    /// Where tracking cannot be armed, the whole image goes frozen. `restart` is a forwarded
    /// call that home did not run: the process makes it again, wherever it goes on.
    fn first_round(&mut self, restart: Option<u64>) -> io::Result<Option<Left>> {
        if let Some(left) = self.settle()? {
            return Ok(Some(left));
        }
        let job_stopped = self.stop_husk(restart)?;
        self.pending = None;
        self.leaving = false;
        self.fwd.leave(&mut self.session)?;
        let opened = dump::image_areas(self.husk).and_then(|areas| {
            let tracker = Tracker::open(self.husk, &self.inj)?;
            tracker.register(&areas);
            dump::protect_file_mappings(self.husk, &areas, &tracker)?;
            Ok((tracker, areas))
        });
        self.resume_husk(job_stopped)?;
        let (tracker, areas) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                info!(%err, "no pre-copy: the process goes frozen");
                return self.go_home(Homeward::Asked { restart: None }, None);
            }
        };
        tracker.protect(&areas);
        self.session.send(&ToHome::Precopy {
            areas: areas.clone(),
        })?;
        // This thread traces the husk: it runs the throttle's duty cycle while the rounds
        // stream, and holds a husk it slowed down until the final round (see Duty).
        let mut duty = Duty::new(self.husk, &mut self.arriving);
        let word = word_in_first_round(&mut self.session, &mut self.behind, &mut duty)?;
        let held = match word {
            FirstRoundWord::Held(held) => held.unless_switched_off(),
            FirstRoundWord::Over(left) => return Ok(left),
            FirstRoundWord::Prepared => return Err(io::Error::other("Prepared before Held")),
        };
        let out = &mut self.session.out;
        let sent = dump::dump_first_round(self.husk, &areas, &held, &tracker, &mut duty, out)
            .and_then(|_| duty.hold_if_slowed());
        if let Err(err) = sent {
            duty.release()?;
            return Err(err);
        }
        match word_in_first_round(&mut self.session, &mut self.behind, &mut duty)? {
            FirstRoundWord::Prepared => {
                duty.release()?;
                let first = FirstRound {
                    tracker,
                    areas,
                    held,
                };
                self.go_home(Homeward::Asked { restart: None }, Some(first))
            }
            FirstRoundWord::Over(left) => Ok(left),
            FirstRoundWord::Held(_) => Err(io::Error::other("a second Held")),
        }
    }

    /// Stop the remote, dump it home, and wait for home's word. A pending call is rewound so
    /// that it runs again wherever the process goes on (see dump::read_header). Home takes the
    /// process: leave. Home cannot restore it: the remote runs on here, so that nothing is
    /// lost, and a call that only home can run fails with ENOMEM, as a fork or an exec does
    /// when memory is short.
    fn go_home(&mut self, trip: Homeward, first: Option<FirstRound>) -> io::Result<Option<Left>> {
        let (reason, notif) = match &trip {
            Homeward::Asked { restart } => ("asked by home".to_owned(), *restart),
            Homeward::Call { id, what } => (what.clone(), Some(*id)),
        };
        debug!(reason, "sending the image");
        if let Some(left) = self.settle()? {
            return Ok(Some(left));
        }
        let job_stopped = self.stop_husk(notif)?;
        self.pending = None;
        self.leaving = false;
        self.fwd.tell_offsets(&mut self.session)?;
        self.fwd.leave(&mut self.session)?;
        let needs_home = matches!(trip, Homeward::Call { .. });
        self.session.send(&ToHome::Going { reason, needs_home })?;
        let facts = facts::probe()?;
        let cpu = Carry::Remote {
            arrived: self.arrived,
            system_files: self.fwd.system_digests(),
        };
        let out = &mut self.session.out;
        match &first {
            Some(first) => {
                let (sent, tracker) = ((&first.areas[..], &first.held), &first.tracker);
                dump::dump_final_round(self.husk, &facts, &cpu, sent, tracker, (out, false))?
            }
            None => dump::dump(self.husk, &facts, &cpu, out, false)?,
        };
        // Tracking ends with the final round.
        drop(first);
        // Signals home relayed before it saw `Going`: the image does not hold them.
        let mut late = Vec::new();
        loop {
            let Some(msg) = word_during_move(&mut self.session) else {
                return Ok(Some(Left::Lost));
            };
            match msg {
                ToGuest::Ended => {
                    if !late.is_empty() {
                        self.session.send(&ToHome::Late { signals: late })?;
                    }
                    return Ok(Some(Left::Moved));
                }
                ToGuest::Stay { reason } => {
                    warn!(%reason, "home cannot take the process back; it runs on here");
                    for info in late {
                        self.arriving.send(self.husk, info);
                    }
                    match trip {
                        Homeward::Call { .. } => {
                            self.finish_interrupted_call(-i64::from(libc::ENOMEM))?
                        }
                        // The rewound call restarts and is forwarded again.
                        Homeward::Asked { .. } => self.resume_husk(job_stopped)?,
                    }
                    return Ok(None);
                }
                ToGuest::Signal { info } if info.is_valid() => late.push(info),
                // The answer to a call a signal interrupted before the move.
                ToGuest::Reply { backs, .. } => drop(read_backs(&mut self.session, backs)?),
                ToGuest::Filled { .. } | ToGuest::Lent { .. } => {
                    drop(read_backs(&mut self.session, 1)?)
                }
                ToGuest::Room { fd, written, room } => self.behind.on_room(fd, written, room),
                ToGuest::SendImage
                | ToGuest::Stale { .. }
                | ToGuest::Same { .. }
                | ToGuest::Vouched { .. }
                | ToGuest::Numbers { .. }
                | ToGuest::Known { .. }
                | ToGuest::Forget
                | ToGuest::ForgetPart(_) => {}
                other => return Err(io::Error::other(format!("unexpected {other:?}"))),
            }
        }
    }
}

impl Guest {
    /// Wait until home has written everything the program was told it wrote behind, and its
    /// shell holds the files opened here: an image or an end must not overtake them.
    /// Signals that come meanwhile go to the husk.
    fn settle(&mut self) -> io::Result<Option<Left>> {
        self.behind.flush(&mut self.session)?;
        self.fwd.ask_follow(&mut self.session)?;
        while self.behind.unacked() > 0 || self.fwd.follows_owed() {
            let unwritten = self.behind.unacked();
            let Some(msg) = word_during_move(&mut self.session) else {
                warn!(
                    unwritten,
                    "home link lost while writes behind or opens waited"
                );
                return Ok(Some(Left::Lost));
            };
            match msg {
                ToGuest::Room { fd, written, room } => self.behind.on_room(fd, written, room),
                ToGuest::Signal { info } if info.is_valid() => self.arriving.send(self.husk, info),
                ToGuest::Reply { id, ret, backs } => {
                    drop(read_backs(&mut self.session, backs)?);
                    self.fwd.on_stray_reply(id, ret);
                }
                // What home lent for a call a signal interrupted.
                ToGuest::Filled { .. } | ToGuest::Lent { .. } => {
                    drop(read_backs(&mut self.session, 1)?)
                }
                // Going already.
                ToGuest::SendImage
                | ToGuest::Same { .. }
                | ToGuest::Vouched { .. }
                | ToGuest::Numbers { .. }
                | ToGuest::Known { .. }
                | ToGuest::Forget
                | ToGuest::ForgetPart(_) => {}
                ToGuest::Ended => return Ok(Some(Left::Ended)),
                other => return Err(io::Error::other(format!("unexpected {other:?}"))),
            }
        }
        Ok(None)
    }
}

/// The bytes a loan (`ToGuest::Filled`, `ToGuest::Lent`) announced, in the frame that
/// follows it.
fn loan_follows(session: &mut Session, start: u64, eof: bool, keep: bool) -> io::Result<Loan> {
    let (_, bytes) = read_backs(session, 1)?.pop().unwrap_or_default();
    Ok(Loan {
        start,
        bytes,
        eof,
        keep,
    })
}

/// The buffers that follow a reply, as (remote address, bytes).
fn read_backs(session: &mut Session, backs: u32) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut data = Vec::new();
    for _ in 0..backs {
        match session.frames.next_frame().map_err(io::Error::other)? {
            Frame::Pages { addr, data: bytes } => data.push((addr, bytes)),
            Frame::Message(_) => return Err(io::Error::other("reply is missing its buffers")),
        }
    }
    Ok(data)
}

/// Home's next word while the process moves; None (logged) when the link is gone, and the
/// process with it.
/// What home said while a first round went, once it said something about the move.
enum FirstRoundWord {
    /// Which of the process's files the receiver holds (see `samefile`).
    Held(Held),
    /// The receiver placed the first round: the final round may go.
    Prepared,
    /// The move is over: the process runs on here (None), or the guest is done.
    Over(Option<Left>),
}

/// Wait for home's word on the move under way, serving what else comes meanwhile: signals
/// go to the husk through `duty` (it runs, or takes them when let go), answers to calls a
/// move overtook are dropped, and nothing lent is held.
fn word_in_first_round(
    session: &mut Session,
    behind: &mut Behind,
    duty: &mut Duty,
) -> io::Result<FirstRoundWord> {
    loop {
        let Some(msg) = word_during_move(session) else {
            return Ok(FirstRoundWord::Over(Some(Left::Lost)));
        };
        match msg {
            ToGuest::Held(held) => return Ok(FirstRoundWord::Held(held)),
            ToGuest::Prepared => return Ok(FirstRoundWord::Prepared),
            ToGuest::Stay { reason } => {
                duty.release()?;
                warn!(%reason, "the move failed; the process runs on here");
                return Ok(FirstRoundWord::Over(None));
            }
            ToGuest::Signal { info } if info.is_valid() => duty.send(info),
            ToGuest::Reply { backs, .. } => drop(read_backs(session, backs)?),
            ToGuest::Filled { .. } => drop(read_backs(session, 1)?),
            ToGuest::Room { fd, written, room } => behind.on_room(fd, written, room),
            ToGuest::SendImage
            | ToGuest::Stale { .. }
            | ToGuest::Same { .. }
            | ToGuest::Vouched { .. }
            | ToGuest::Numbers { .. }
            | ToGuest::Known { .. }
            | ToGuest::Forget
            | ToGuest::ForgetPart(_) => {}
            ToGuest::Ended => return Ok(FirstRoundWord::Over(Some(Left::Ended))),
            other => return Err(io::Error::other(format!("unexpected {other:?}"))),
        }
    }
}

fn word_during_move(session: &mut Session) -> Option<ToGuest> {
    match session.recv::<ToGuest>() {
        Ok(msg) => Some(msg),
        Err(err) => {
            warn!(%err, "home link lost during a move; dropping the process");
            None
        }
    }
}

/// Offset of `uc_sigmask` in an x86-64 `struct rt_sigframe` (arch/x86/include/asm/
/// sigframe.h): pretcode 8, uc_flags 8, uc_link 8, uc_stack 24, uc_mcontext 256.
const UC_SIGMASK_IN_FRAME: u64 = 8 + 8 + 8 + 24 + 256;

/// What pre-copy's first round left for the final one.
struct FirstRound {
    tracker: Tracker,
    areas: Vec<rmosix_image::Area>,
    /// The files the next node holds: their file pages stay here.
    held: Held,
}

/// Why a remote goes home.
enum Homeward {
    /// Home asked for it. `restart` is a forwarded call that home did not run: the process
    /// makes it again wherever it goes on.
    Asked { restart: Option<u64> },
    /// The process made call `id`, which only home can run (`what` names it).
    Call { id: u64, what: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn home_wait_counts_the_closed_waits_and_the_one_under_way() {
        let t0 = Instant::now();
        let mut wait = HomeWait::default();
        wait.note(false, t0);
        wait.note(true, t0 + MS);
        wait.note(true, t0 + 2 * MS);
        wait.note(false, t0 + 4 * MS);
        assert_eq!(wait.by(t0 + 10 * MS), 3 * MS);
        wait.note(true, t0 + 10 * MS);
        assert_eq!(wait.by(t0 + 15 * MS), 8 * MS);
        assert_eq!(wait.next_due(t0 + 15 * MS), Some(WAITED_EVERY));
    }

    #[test]
    fn home_wait_is_told_when_it_grew_at_most_once_a_period() {
        let t0 = Instant::now();
        let mut wait = HomeWait::default();
        assert_eq!(wait.news(t0), None, "nothing waited, nothing to tell");
        assert_eq!(wait.next_due(t0), None, "not waiting: no need to wake");
        wait.note(true, t0);
        wait.note(false, t0 + 2 * MS);
        assert_eq!(wait.news(t0 + 2 * MS), Some(2 * MS));
        wait.note(true, t0 + 3 * MS);
        assert_eq!(wait.news(t0 + 5 * MS), None, "told less than a period ago");
        let later = t0 + 2 * MS + WAITED_EVERY;
        assert_eq!(wait.news(later), Some(later - (t0 + MS)));
        wait.note(false, later);
        assert_eq!(wait.news(later + WAITED_EVERY), None, "it did not grow");
    }
}
