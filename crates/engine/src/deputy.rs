//! The deputy: home's half of a process that runs elsewhere. Its shell (the original process,
//! stripped of its memory) keeps the PID, descriptors, cwd and credentials; the deputy runs
//! the remote's forwarded calls in it and relays the signals it receives.
//!
//! A call comes as `ToHome::Call` and the buffers it reads. [`read_call`] takes every length
//! from the table (`table::Shape::at_home`) and checks what came against it before anything
//! is touched; a call that does not fit is answered with its errno and never runs. A call on
//! a regular file or directory may run here in the supervisor on a copy of the descriptor
//! (see `files`); any other is run in the shell by injection: the buffers are written into a
//! scratch area of the shell, the pointer arguments pointed there, and the shell is
//! single-stepped over a `syscall` instruction. Signals that arrive meanwhile are relayed so
//! that the call runs exactly once (docs/forwarding.md).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rmosix_image::{Frame, FrameReader, LocalFile, SigInfo};
use rmosix_wire::{Buckets, FORWARDED_US_BOUNDS};
use tracing::{debug, warn};

use crate::cmdline::ArgsAndEnv;
use crate::dfsa::{self, Consistent};
use crate::dump;
use crate::files::ShellFiles;
use crate::homefill::{Lender, OpenedAway};
use crate::homepaths::{Asker, Known, PathWatch, Stamp};
use crate::inject::{Injector, Scratch};
use crate::maps;
use crate::mem::Memory;
use crate::msg;
use crate::numbers;
use crate::pathcache::{self, Answer, Key, Listing};
use crate::pidfd::PidFd;
use crate::ptrace::{self, Pid, Regs, Stop};
use crate::readahead::{self, Loan};
use crate::restore;
use crate::session::{Asking, ReadAsk, Session, ToGuest};
use crate::signals;
use crate::sys;
use crate::sysfiles;
use crate::sysfiles::{SameAs, SystemFiles};
use crate::table::{self, Buf, MAX_BUF, Refusal, Shape, Slot};
use crate::writebehind::{self, Waiting};

/// Size of the area mapped in a shell for the buffers of forwarded calls.
pub const SCRATCH_LEN: u64 = 16 << 20;
/// Most buffers a call sends: six arguments, or a msghdr and its three buffers. A call that
/// announces more is not read (its session is broken).
const MAX_SENDS: u32 = 6;
/// Most opens made away that home keeps before its shell follows them (see `numbers`):
/// more than the numbers home tells between two calls that run in the shell.
const MAX_DEFERRED: usize = 4 * numbers::TOLD;

/// How long a shell stays parked after a call (see `ShellState::Parked`): well past a
/// round trip and what a compiler computes between two of its lookups.
pub const PARK_FOR: Duration = Duration::from_millis(20);

/// A forwarded call, checked against the table.
pub struct Call {
    /// The notification it answers.
    pub id: u64,
    /// Syscall number.
    pub nr: i64,
    /// Arguments as the remote passed them.
    pub args: [u64; 6],
    /// Its buffers, with the lengths the table gives them.
    pub shape: Shape,
    /// The contents of the buffers that were sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// Where each buffer of `shape` lies in the shell's scratch area, once laid out.
    places: Vec<u64>,
    /// Written behind: the program was told it succeeded, and home answers it with
    /// `ToGuest::Room` (see `writebehind`).
    pub behind: bool,
    /// An open whose file the remote asks about: home says what it opened (`ToGuest::Same`,
    /// see `sysfiles`).
    same: bool,
    /// A lookup of a system path whose answer the remote would keep: home vouches for it if
    /// it can watch what it depends on (see `pathcache`, `homepaths`).
    vouch: bool,
    /// Home watches what its answer depends on (see [`Watched`]).
    armed: Option<Watched>,
    /// The remote asked for the shell's free numbers with the answer, and the call may
    /// change them (see `numbers`).
    numbers: bool,
    /// An open whose file home lends ahead, if it may (`ToGuest::Lent`, see `readahead`).
    lend: bool,
    /// Not the process's call but the shell following what it did away: no answer goes,
    /// and it runs whatever moves are asked for.
    mirror: Option<Mirror>,
    /// When it came, to time its answer.
    arrived: Instant,
}

/// What home watches a lookup's answer by: since which generation of the job's watch, the
/// absolute path it watches, and for a path relative to the working directory, the
/// directory's path it walked it from.
struct Watched {
    since: u64,
    path: Vec<u8>,
    cwd: Option<String>,
}

/// A lookup home watched what its answer depends on for (see [`Watched`]): what the remote
/// and the job's book may keep of it.
struct Vouch {
    armed: Watched,
    /// Its answer tells of a directory's entries too: a status, or a listing.
    entries: bool,
    /// The directory a name was missing in, listed.
    listing: Option<Listing>,
    /// The lookup's key and the answer the book keeps, if it keeps one.
    kept: Option<(Key, Answer)>,
}

/// What a call that follows the process's doings away is for (see `numbers`).
#[derive(Debug, Clone, Copy)]
enum Mirror {
    /// The shell opens what the remote opened under number `fd`, or, `placeholder`, a
    /// placeholder for it because that could not be opened: either must hold `fd`.
    Open {
        fd: i32,
        cloexec: bool,
        placeholder: bool,
    },
    /// A step to put such a file under its number, or to seek it to where its reads away
    /// reached; the last step of an open answers that open (`ack`: its id).
    Step { ack: Option<u64> },
}

impl Call {
    /// A write of `bytes` to `fd` that the remote wrote behind (`addr`: where the bytes
    /// came from in its memory), checked against the table as any write.
    pub fn behind(fd: i32, addr: u64, bytes: Vec<u8>) -> Result<Call, Refusal> {
        let args = [fd as u64, addr, bytes.len() as u64, 0, 0, 0];
        let sent = vec![bytes];
        Ok(Call {
            id: 0,
            nr: libc::SYS_write,
            shape: Shape::at_home(libc::SYS_write, &args, &sent)?,
            args,
            sent,
            places: Vec::new(),
            behind: true,
            same: false,
            vouch: false,
            armed: None,
            numbers: false,
            lend: false,
            mirror: None,
            arrived: Instant::now(),
        })
    }

    /// The shell's half of the remote's open `id` under number `fd` (`ToHome::Opened`):
    /// `path` (with its NUL) opened with `flags`, checked against the table as any open.
    fn mirror_open(
        id: u64,
        fd: i32,
        path: Vec<u8>,
        flags: u64,
        placeholder: bool,
    ) -> Result<Call, Refusal> {
        // The address stands for a buffer of the remote's; nothing comes back to it.
        let args = [libc::AT_FDCWD as u64, 1, flags, 0, 0, 0];
        let mirror = Mirror::Open {
            fd,
            cloexec: flags & libc::O_CLOEXEC as u64 != 0,
            placeholder,
        };
        Call::checked(id, libc::SYS_openat, args, vec![path]).map(|call| call.mirroring(mirror))
    }

    /// Whether it is the shell's half of an open made away under number `fd`.
    fn mirrors_open_of(&self, fd: i32) -> bool {
        matches!(self.mirror, Some(Mirror::Open { fd: of, .. }) if of == fd)
    }

    /// A placeholder under number `fd` (`/` as a path handle), for a file opened away whose
    /// copy the shell cannot open.
    fn placeholder(id: u64, fd: i32) -> Result<Call, Refusal> {
        let flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
        Call::mirror_open(id, fd, b"/\0".to_vec(), flags, true)
    }

    /// A step of a mirror (see `Mirror::Step`): call `nr` with `args`, which take no buffer;
    /// the last step of an open made away answers it (`ack`).
    fn step(nr: i64, args: [u64; 6], ack: Option<u64>) -> Result<Call, Refusal> {
        let step = Mirror::Step { ack };
        Call::checked(0, nr, args, Vec::new()).map(|call| call.mirroring(step))
    }

    fn mirroring(self, mirror: Mirror) -> Call {
        Call {
            mirror: Some(mirror),
            ..self
        }
    }

    /// It runs whatever moves are asked for: the program was told it ran, or did it away.
    fn must_run(&self) -> bool {
        self.behind || self.mirror.is_some()
    }

    /// The same call, asking what it opens if it is an open, and a vouch for its answer if
    /// it is a lookup, as the remote asked.
    pub fn asking(self, asking: Asking) -> Call {
        let open = matches!(self.nr, libc::SYS_open | libc::SYS_openat);
        Call {
            same: asking.same && open,
            vouch: asking.vouch && pathcache::vouchable(self.nr),
            numbers: asking.numbers && !numbers::leaves_numbers(self.nr),
            lend: asking.lend && open,
            ..self
        }
    }

    /// The path a lookup looks up: its first buffer sent, without its NUL.
    fn looked_up(&self) -> Option<&[u8]> {
        let path = self.sent.first()?;
        Some(path.strip_suffix(b"\0").unwrap_or(path))
    }

    /// Append `more` to a write behind: the two run as one write.
    pub fn extend_behind(&mut self, more: &[u8]) {
        self.edit_behind(|bytes| bytes.extend_from_slice(more));
    }

    /// A write behind without its first `n` bytes, which ran.
    fn rest_behind(mut self, n: usize) -> Call {
        self.edit_behind(|bytes| drop(bytes.drain(..n.min(bytes.len()))));
        self.places.clear();
        self
    }

    /// Change the bytes of a write behind; its length follows them.
    fn edit_behind(&mut self, edit: impl FnOnce(&mut Vec<u8>)) {
        if let (Some(bytes), Some(buf)) = (self.sent.first_mut(), self.shape.bufs.first_mut()) {
            edit(bytes);
            self.args[2] = bytes.len() as u64;
            buf.len = self.args[2];
        }
    }
}

/// Read the `sends` buffers of call `id` and check the call against the table. Outer error:
/// the session is broken (a frame that is not a buffer, too many, or the stream failed);
/// inner error: the call does not fit and is refused.
pub fn read_call<R: io::Read>(
    frames: &mut FrameReader<R>,
    id: u64,
    nr: i64,
    args: [u64; 6],
    sends: u32,
) -> io::Result<Result<Call, Refusal>> {
    if sends > MAX_SENDS {
        return Err(io::Error::other(format!("a call with {sends} buffers")));
    }
    let mut sent = Vec::new();
    for _ in 0..sends {
        match frames.next_frame().map_err(io::Error::other)? {
            Frame::Pages { data, .. } => sent.push(data),
            Frame::Message(_) => return Err(io::Error::other("a call is missing its buffers")),
        }
    }
    Ok(Call::checked(id, nr, args, sent))
}

impl Call {
    /// Call `id` with the buffers that were `sent`, if it fits the table.
    fn checked(id: u64, nr: i64, args: [u64; 6], sent: Vec<Vec<u8>>) -> Result<Call, Refusal> {
        Shape::at_home(nr, &args, &sent).map(|shape| Call {
            id,
            nr,
            args,
            places: Vec::new(),
            shape,
            sent,
            behind: false,
            same: false,
            vouch: false,
            armed: None,
            numbers: false,
            lend: false,
            mirror: None,
            arrived: Instant::now(),
        })
    }
}

/// What the shell is doing.
enum ShellState {
    /// Running `pause`: signals sent to it stop it and are relayed.
    Idle,
    /// Still stopped in the trap after the call it ran last, since then: the next call
    /// starts at once, with no interrupt to stop it first and no `pause` to set up before
    /// (half the ptrace calls and wake-ups of a call). A process away calls in bursts (a
    /// compiler's lookups); a shell that got none for [`PARK_FOR`] goes to `pause`, where
    /// the signals sent to it at home stop it, as they do before anything else needs it
    /// running (`Deputy::unpark`). So a signal sent to the shell of a process away reaches
    /// it up to that much later. Never while the process is called away (a move).
    Parked(Instant),
    /// Interrupted so that this call can run once it stops.
    Interrupting(Call),
    /// Single-stepping over the call's `syscall` instruction.
    Calling(Call),
    /// In group stop, relayed to the remote.
    Stopped,
}

/// What a stop of the shell means for the supervisor.
pub enum ShellNews {
    /// Nothing it must act on.
    Nothing,
    /// The shell entered a group stop for `sig` (the job's stop is followed at home).
    GroupStop(i32),
}

/// How far a remote was told the job's book: when, by the job's watch, as which asker, up
/// to which entry (see `homepaths::PathWatch::known_since`).
pub type BookTold = (Stamp, Asker, usize);

/// Tell the node a process is about to go to, ahead of its image, what the job's book holds
/// for the process's asker. A program placed at its exec makes its first lookups (its
/// dynamic loader's) as soon as it runs there, before anything home sends once it runs can
/// arrive: told after, the book came too late for them. Returns how far it told, for the
/// process's deputy ([`Deputy::vouch_under`]); None if who the process asks as cannot be
/// read (nothing is told then).
pub fn tell_book_ahead(
    pid: Pid,
    paths: &RefCell<PathWatch>,
    session: &mut Session,
) -> io::Result<Option<BookTold>> {
    let Ok(asker) = Asker::of(pid) else {
        return Ok(None);
    };
    let mut watch = paths.borrow_mut();
    // What a change heard by now made stale is not told.
    watch.changed();
    let stamp = watch.stamp();
    let upto = send_known(session, pid, watch.known_since(&asker, 0, None))?;
    Ok(Some((stamp, asker, upto)))
}

/// Send `known` to the remote of `pid` (`ToGuest::Known`), unless it holds nothing: how many
/// entries of the book the remote now knows of.
fn send_known(session: &mut Session, pid: Pid, known: Known) -> io::Result<usize> {
    let Known {
        answers,
        listings,
        upto,
    } = known;
    if !answers.is_empty() || !listings.is_empty() {
        debug!(
            pid,
            answers = answers.len(),
            listings = listings.len(),
            "telling the remote what the job's lookups found"
        );
        rmosix_image::write_message(&mut session.out, &ToGuest::Known { answers, listings })?;
    }
    Ok(upto)
}

/// Tell the node a process stopped since its exec is about to go to, ahead of its image,
/// the lowest free numbers of its descriptor table (`ToGuest::NumbersAhead`): the first open
/// its dynamic loader makes there (`/etc/ld.so.cache`) may then be of the node's copy, from
/// the job's book, with no round trip. A process that could still run before it leaves
/// must not be told: its table may change meanwhile.
pub fn tell_numbers_ahead(pid: Pid, session: &mut Session) -> io::Result<()> {
    // A table that cannot be read is not told: the first open asks home, as before.
    match numbers::lowest_free(pid, numbers::TOLD) {
        Ok(free) => rmosix_image::write_message(&mut session.out, &ToGuest::NumbersAhead { free }),
        Err(_) => Ok(()),
    }
}

/// Home's half of one remote process: its shell and the call it runs.
pub struct Deputy {
    pid: Pid,
    inj: Injector,
    scratch: u64,
    base: Regs,
    mem: Memory,
    files: ShellFiles,
    /// What the remote holds of the shell's files (see `homefill`).
    lender: Lender,
    /// The shell's descriptors opened for the process away and in no other process.
    opened_away: OpenedAway,
    /// What the answers the job's remotes keep depend on, and the job's book of them,
    /// shared by its deputies (see `homepaths`).
    paths: Rc<RefCell<PathWatch>>,
    /// How far the remote was told what `paths` heard: once the watch has heard a change
    /// past it, the remote forgets what the change took.
    told: Stamp,
    /// How far the remote was told the job's book (see [`BookTold`]).
    book_told: Option<BookTold>,
    /// Who the shell asks as (see `homepaths::Asker`), once read; read again after a call
    /// that may change it.
    asker: Option<Asker>,
    /// The system prefixes under which home vouches for lookups (see `pathcache`).
    system: SystemFiles,
    state: ShellState,
    /// The remote stopped by this signal, and the SIGSTOP we sent the shell to follow it is
    /// on its way.
    following_stop: Option<i32>,
    /// Signals relayed while still pending in the shell; their stop is not relayed again.
    relayed_early: u64,
    /// The process's command line and environment, kept readable in the shell.
    args_and_env: ArgsAndEnv,
    /// Calls that came while the shell ran another: writes behind and what followed them.
    waiting: Waiting,
    /// The shell's halves of opens made away that it has not run yet: they run before any
    /// other call the shell runs, or once the remote leaves; a file closed away first is
    /// never opened (see `numbers`).
    deferred: Vec<Call>,
    /// The shell, to measure the room of a descriptor written behind.
    pidfd: PidFd,
    /// Home asked for the image (as of the shell's last stop): calls not yet run wait for
    /// the move, writes behind do not.
    recalled: bool,
    /// The remote stopped by this signal while writes behind waited: the shell follows once
    /// they ran.
    stop_when_idle: Option<i32>,
    /// Descriptors granted room to write behind: every answer brings their room anew.
    granted: BTreeSet<i32>,
    /// How long the calls answered since the supervisor last took them took, from their
    /// arrival to their answer, microseconds (see [`Deputy::take_call_times`]).
    call_times: Buckets,
}

impl Deputy {
    /// Make frozen `pid`, whose process now runs elsewhere, its shell: release its memory,
    /// map a scratch area, and let it idle. `went`: the signals pending in it that its image
    /// took along, which it no longer holds.
    pub fn take_over(pid: Pid, went: &[SigInfo]) -> io::Result<Deputy> {
        let mem = Memory::open(pid)?;
        let args_and_env = ArgsAndEnv::read(pid, &mem)?;
        let (inj, scratch, base) = strip_shell(pid, &args_and_env, went)?;
        let mut deputy = Deputy {
            pid,
            inj,
            scratch,
            base,
            mem,
            files: ShellFiles::open(pid)?,
            lender: Lender::default(),
            opened_away: OpenedAway::default(),
            paths: Rc::default(),
            told: Stamp::default(),
            book_told: None,
            asker: None,
            system: SystemFiles::default(),
            state: ShellState::Idle,
            following_stop: None,
            relayed_early: 0,
            args_and_env,
            waiting: Waiting::default(),
            deferred: Vec::new(),
            pidfd: PidFd::open(pid)?,
            recalled: false,
            stop_when_idle: None,
            granted: BTreeSet::new(),
            call_times: Buckets::default(),
        };
        deputy.idle()?;
        Ok(deputy)
    }

    /// The frozen shell took (part of) an image that could not be restored: make it a shell
    /// again and let it idle.
    pub fn strip_again(&mut self) -> io::Result<()> {
        (self.inj, self.scratch, self.base) = strip_shell(self.pid, &self.args_and_env, &[])?;
        self.idle()
    }

    /// Run `call` for the remote: here on a copy of its descriptor if it can, else in the
    /// shell once it is interrupted (or once continued, if it is job-stopped).
    pub fn serve(&mut self, mut call: Call, session: &mut Session) -> io::Result<()> {
        // Home vouches only for what it would have asked, whatever the remote asks; a
        // relative path once it knows where it leads (`arm_lookup`).
        call.vouch = call.vouch
            && (call.looked_up())
                .and_then(|path| std::str::from_utf8(path).ok())
                .is_some_and(|path| {
                    !path.starts_with('/') || pathcache::covered(call.nr, path, &self.system)
                });
        if !self.busy()
            && !call.must_run()
            && let Some((ret, backs)) = self.files.try_run(&call)
        {
            self.time(&call);
            return self.answer(session, call.id, ret, &backs, None, false);
        }
        // Opens made away come before any call the shell runs after them that may see them.
        if !numbers::sees_its_descriptor_only(call.nr) {
            self.undefer()?;
        }
        if self.busy() {
            if let ShellState::Interrupting(next) = &mut self.state
                && self.waiting.is_empty()
                && next.behind
                && call.behind
                && next.args[0] == call.args[0]
                && next.args[2] + call.args[2] <= MAX_BUF
            {
                // The shell has not begun it yet: the two run as one write, as they would
                // had this one come while the shell ran another (see `Waiting::next`).
                next.extend_behind(call.sent.first().map_or(&[][..], Vec::as_slice));
                return Ok(());
            }
            return self.waiting.push(call);
        }
        if let ShellState::Parked(_) = self.state {
            return self.start_call(call, session);
        }
        self.run(call)
    }

    /// Let a parked shell go to `pause` (see `ShellState::Parked`): before anything but a
    /// call needs it running or stopped anew.
    pub fn unpark(&mut self) -> io::Result<()> {
        match self.state {
            ShellState::Parked(_) => self.idle(),
            _ => Ok(()),
        }
    }

    /// When the parked shell goes to `pause`, if it is parked.
    pub fn parked_until(&self) -> Option<Instant> {
        match self.state {
            ShellState::Parked(since) => Some(since + PARK_FOR),
            _ => None,
        }
    }

    /// Let the shell go to `pause` if it has been parked for [`PARK_FOR`].
    pub fn unpark_if_due(&mut self, now: Instant) -> io::Result<()> {
        match self.parked_until() {
            Some(until) if until <= now => self.idle(),
            _ => Ok(()),
        }
    }

    /// Run `call` in the idle shell once it is interrupted (or once continued, if it is
    /// job-stopped).
    fn run(&mut self, call: Call) -> io::Result<()> {
        self.unpark()?;
        let stopped = matches!(self.state, ShellState::Stopped);
        self.state = ShellState::Interrupting(call);
        if !stopped {
            ptrace::interrupt(self.pid)?;
        }
        Ok(())
    }

    /// The opens made away that the shell has not followed yet go to run, before whatever
    /// comes after them.
    fn undefer(&mut self) -> io::Result<()> {
        let mut deferred = std::mem::take(&mut self.deferred).into_iter();
        if !self.busy()
            && let Some(first) = deferred.next()
        {
            self.run(first)?;
        }
        deferred.try_for_each(|call| self.waiting.push(call))
    }

    /// The remote's call `id` closed file `fd`, opened away (`ToHome::Closed`): the shell
    /// closes its copy or placeholder after the opens and closes before, when it follows
    /// them. If the shell has not followed the file's open yet, neither runs: both are
    /// answered as done (see `numbers`), with what home sends next, at the latest at the
    /// end of the home loop's turn.
    pub fn closed_away(&mut self, id: u64, fd: i32, session: &mut Session) -> io::Result<()> {
        match (self.deferred.iter()).rposition(|call| call.mirrors_open_of(fd)) {
            Some(at) => {
                let open = self.deferred.remove(at).id;
                for (id, ret) in [(open, i64::from(fd)), (id, 0)] {
                    session.send_later(&ToGuest::Reply { id, ret, backs: 0 })?;
                }
            }
            None => {
                let args = [fd as u64, 0, 0, 0, 0, 0];
                let close = Call::step(libc::SYS_close, args, Some(id));
                self.deferred.push(close.map_err(io::Error::other)?);
            }
        }
        if self.deferred.len() > MAX_DEFERRED {
            self.undefer()?;
        }
        Ok(())
    }

    /// The program's call `id` closed `fd`, a file home lent ahead at its open, and was told
    /// it succeeded (`ToHome::CloseBehind`): the shell closes it in its turn, after the calls
    /// before it, whatever moves are asked for (a step of its own, as the opens made away
    /// are followed: a close answered with a restart code would never be issued again), and
    /// answers it once it ran.
    pub fn close_behind(&mut self, id: u64, fd: i32, session: &mut Session) -> io::Result<()> {
        let args = [fd as u64, 0, 0, 0, 0, 0];
        match Call::step(libc::SYS_close, args, Some(id)) {
            Ok(close) => self.serve(close, session),
            Err(refusal) => self.refuse(session, id, refusal),
        }
    }

    /// The remote leaves: the shell follows every open it made away now, each answered
    /// once it ran (see `numbers`); answers written before go now.
    pub fn follow(&mut self, session: &mut Session) -> io::Result<()> {
        self.undefer()?;
        session.out.flush()
    }

    /// Answer call `id` with `ret` and its out-buffers, after telling the remote of the files
    /// that changed (see `homefill`) and the room of each descriptor granted to write behind,
    /// measured now that the call ran (see `writebehind`).
    /// `vouch`: home watched what the answer depends on since before the call ran, from
    /// that generation of its watch; unless a change was heard since (told now or before),
    /// the remote may keep it (`ToGuest::Vouched`), with the listing if a name was missing,
    /// and the job's book keeps it too, for the job's next remotes.
    /// `numbers`: the shell's free numbers go too (`ToGuest::Numbers`).
    fn answer(
        &mut self,
        session: &mut Session,
        id: u64,
        ret: i64,
        backs: &[(u64, Vec<u8>)],
        vouch: Option<Vouch>,
        numbers: bool,
    ) -> io::Result<()> {
        self.tell_changes(session)?;
        if let Some(vouch) = vouch {
            let Watched { since, path, cwd } = vouch.armed;
            if (self.paths.borrow()).holds(&path, since, vouch.entries) {
                if vouch.entries {
                    (self.paths.borrow_mut()).told_entries(&path);
                }
                if let (Some((key, answer)), Some(asker)) = (vouch.kept, self.asker()) {
                    let listing = vouch.listing.clone();
                    (self.paths.borrow_mut()).record(&asker, self.pid, key, answer, listing);
                }
                let listing = vouch.listing;
                let vouched = ToGuest::Vouched { id, listing, cwd };
                rmosix_image::write_message(&mut session.out, &vouched)?;
            }
            // Only before the answer to a lookup, which the remote waits for: it has not
            // forgotten its answers since (as it does when it sends a call that changes its
            // credentials), so what it is told holds for it.
            self.tell_book(session, Some(self.pid))?;
        }
        if numbers {
            match numbers::lowest_free(self.pid, numbers::TOLD) {
                Ok(mut free) => {
                    // Numbers given away whose opens the shell has not run are not free.
                    free.numbers
                        .retain(|&fd| !self.deferred.iter().any(|c| c.mirrors_open_of(fd)));
                    rmosix_image::write_message(&mut session.out, &ToGuest::Numbers { id, free })?
                }
                Err(err) => debug!(pid = self.pid, %err, "cannot list the shell's free numbers"),
            }
        }
        let pidfd = &self.pidfd;
        let rooms: Vec<(i32, u64)> = self
            .granted
            .iter()
            .map(|&fd| (fd, writebehind::room(pidfd, fd)))
            .collect();
        for (fd, room) in rooms {
            if room == 0 {
                self.granted.remove(&fd);
            } else {
                let grant = ToGuest::Room {
                    fd,
                    written: 0,
                    room,
                };
                rmosix_image::write_message(&mut session.out, &grant)?;
            }
        }
        send_reply(session, id, ret, backs)
    }

    /// Count how long `call` took, as it is answered.
    fn time(&mut self, call: &Call) {
        let us = u64::try_from(call.arrived.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.call_times.observe(&FORWARDED_US_BOUNDS, us);
    }

    /// How long the calls answered since the last take took (see `Tally::forwarded_us`).
    pub fn take_call_times(&mut self) -> Buckets {
        std::mem::take(&mut self.call_times)
    }

    /// The shell runs a call, or calls wait for it.
    fn busy(&self) -> bool {
        matches!(
            self.state,
            ShellState::Interrupting(_) | ShellState::Calling(_)
        ) || !self.waiting.is_empty()
    }

    /// Whether the shell runs or has queued a call that was not written behind.
    fn calls_ahead(&self) -> bool {
        let running = match &self.state {
            ShellState::Interrupting(call) | ShellState::Calling(call) => !call.behind,
            _ => false,
        };
        running || !self.waiting.all_behind()
    }

    /// Bytes the program was told were written behind that home has not written yet.
    pub fn owed(&self) -> u64 {
        let running = match &self.state {
            ShellState::Interrupting(call) | ShellState::Calling(call) if call.behind => {
                call.args[2]
            }
            _ => 0,
        };
        running + self.waiting.owed()
    }

    /// Answer call `id` with the errno of `refusal`: it does not fit the table and never runs.
    pub fn refuse(&mut self, session: &mut Session, id: u64, refusal: Refusal) -> io::Result<()> {
        tracing::debug!(pid = self.pid, id, %refusal, "refused a forwarded call");
        self.answer(session, id, -i64::from(refusal.errno()), &[], None, false)
    }

    /// A read the remote asks bytes of the file for (`ToHome::Read`): lend them if the
    /// descriptor qualifies (see `homefill`), else run the read as any other call.
    pub fn serve_read(&mut self, read: ReadAsk, session: &mut Session) -> io::Result<()> {
        let ReadAsk {
            id, fd, buf, count, ..
        } = read;
        // A read is lent from our copy of the descriptor, at once: but not past a call of
        // the process's that the shell runs or has queued (a close sent behind the program),
        // which must come first. Then the read waits its turn as a call.
        let loan = if self.calls_ahead() {
            None
        } else {
            self.files.file(fd).and_then(|copy| {
                let opened_away = self.opened_away.contains(fd);
                self.lender.lend(self.pid, copy, &read, opened_away)
            })
        };
        if let Some(loan) = loan {
            let filled = ToGuest::Filled {
                id,
                start: loan.start,
                eof: loan.eof,
                keep: loan.keep,
            };
            self.send_loan(session, &filled, &loan)?;
            return session.out.flush();
        }
        let (nr, args) = match read.at {
            None => (libc::SYS_read, [fd as u64, buf, count, 0, 0, 0]),
            Some(at) => (libc::SYS_pread64, [fd as u64, buf, count, at, 0, 0]),
        };
        match Call::checked(id, nr, args, Vec::new()) {
            Ok(call) => self.serve(call, session),
            Err(refusal) => self.refuse(session, id, refusal),
        }
    }

    /// The remote's open `id`, asked with `lend`, opened `fd`: if the file qualifies (see
    /// `homefill`), its status and first bytes go ahead (`ToGuest::Lent`), before the open's
    /// `Reply`, so that the program's `fstat` and first `read` of it need no round trip.
    fn lend_at_open(&mut self, session: &mut Session, id: u64, fd: i32) -> io::Result<()> {
        let opened_away = self.opened_away.contains(fd);
        let ahead = readahead::FIRST_READ_FILL;
        let lent = self.files.file(fd).and_then(|copy| {
            (self.lender).lend_at_open(self.pid, copy, (id, fd), ahead, opened_away)
        });
        let Some((loan, status)) = lent else {
            return Ok(());
        };
        let lent = ToGuest::Lent {
            id,
            fd,
            status,
            start: loan.start,
            eof: loan.eof,
            keep: loan.keep,
        };
        self.send_loan(session, &lent, &loan)
    }

    /// Send `message`, which lends `loan`, and its bytes. Only the changes the loan's own
    /// look at the watch saw go before it: a change after that may have torn the bytes, and
    /// its Stale must follow them (see `homefill`).
    fn send_loan(
        &mut self,
        session: &mut Session,
        message: &ToGuest,
        loan: &Loan,
    ) -> io::Result<()> {
        let seen = self.lender.seen_changed();
        tell_stale(session, seen)?;
        rmosix_image::write_message(&mut session.out, message)?;
        rmosix_image::write_pages(&mut session.out, loan.start, &loan.bytes)
    }

    /// The remote's reads of `fd` consumed `bytes` home's offset does not count yet.
    pub fn consumed(&mut self, fd: i32, bytes: u64) {
        if !self.files.advance(fd, bytes) {
            debug!(
                pid = self.pid,
                fd, bytes, "cannot advance the offset of a descriptor"
            );
        }
    }

    /// The process moves on to a node that does not share the trees of `files`, which it
    /// holds where it runs now: the frozen shell opens them over their placeholders, beneath
    /// home's trees `home` (see `dfsa::take_back`), and serves their calls from then on.
    pub fn take_back(
        &mut self,
        files: &[LocalFile],
        home: &Consistent,
    ) -> io::Result<dfsa::TakenBack> {
        if files.is_empty() {
            return Ok(dfsa::TakenBack::default());
        }
        self.forget_copies(files.iter().map(|file| file.fd));
        dfsa::take_back(self.pid, &self.inj, files, home)
    }

    /// The move that took `back` back failed: the frozen shell holds placeholders again.
    pub fn give_back(&mut self, back: dfsa::TakenBack) {
        self.forget_copies(back.fds().iter().copied());
        if let Err(err) = back.undo(self.pid, &self.inj) {
            // The process holds the files where it runs still, and a close there closes
            // the shell's too: a file in place of a placeholder changes nothing it sees.
            warn!(pid = self.pid, %err, "files taken back stay in the shell");
        }
    }

    /// Another file goes under the numbers `fds`: copies of what they held are stale.
    fn forget_copies(&mut self, fds: impl Iterator<Item = i32>) {
        for fd in fds {
            self.files.forget_fd(fd);
        }
    }

    /// The remote's reads of system file `fd` reached `pos` (see `sysfiles`): the shell's
    /// descriptor of it takes that offset, once the calls before have run (the open of
    /// its copy may be among them, see `numbers`).
    pub fn offset(&mut self, fd: i32, pos: u64) -> io::Result<()> {
        if self.busy() {
            let args = [fd as u64, pos, libc::SEEK_SET as u64, 0, 0, 0];
            let seek = Call::step(libc::SYS_lseek, args, None);
            return match seek {
                Ok(seek) => self.waiting.push(seek),
                Err(refusal) => {
                    debug!(pid = self.pid, fd, pos, %refusal, "cannot seek a descriptor");
                    Ok(())
                }
            };
        }
        if !self.files.seek(fd, pos) {
            debug!(
                pid = self.pid,
                fd, pos, "cannot set the offset of a descriptor"
            );
        }
        Ok(())
    }

    /// The remote's open `id` put a file under number `fd`, one home told free
    /// (`ToHome::Opened`): the shell opens `path` with `flags` under it too, before any
    /// call it runs after it, or never if the file is closed away first (see `numbers`).
    pub fn opened_away(&mut self, id: u64, fd: i32, path: String, flags: u64) -> io::Result<()> {
        let mut path = path.into_bytes();
        path.push(0);
        let call = Call::mirror_open(id, fd, path, flags, false).or_else(|refusal| {
            // Nothing the shell could open: a placeholder holds the number.
            warn!(pid = self.pid, fd, %refusal, "the remote told of an open that does not fit");
            Call::placeholder(id, fd)
        });
        self.deferred.push(call.map_err(io::Error::other)?);
        // A remote that tells of more opens and closes than home ever told numbers is not
        // kept waiting in memory: its shell follows them now.
        if self.deferred.len() > MAX_DEFERRED {
            self.undefer()?;
        }
        Ok(())
    }

    /// Relay a signal, after telling the remote of the files that changed.
    fn relay(&mut self, session: &mut Session, info: SigInfo) -> io::Result<()> {
        self.tell_changes(session)?;
        relay(session, info)
    }

    /// Tell the remote of the files it holds bytes of that changed (`ToGuest::Stale`), and to
    /// forget the answers it keeps whose paths changed (`ToGuest::ForgetPart`, or `Forget`
    /// when the watch started anew or the remote is too far behind), ahead of the reply or
    /// signal this precedes: whatever that tells the remote happened after the change (see
    /// `homefill`, `homepaths`). Whether it had to forget.
    fn tell_changes(&mut self, session: &mut Session) -> io::Result<bool> {
        let changed = self.lender.changed();
        tell_stale(session, changed)?;
        let (stamp, part) = {
            let mut paths = self.paths.borrow_mut();
            paths.changed();
            let stamp = paths.stamp();
            let part = (stamp.epoch == self.told.epoch)
                .then(|| paths.forgotten_since(self.told.generation))
                .flatten();
            (stamp, part)
        };
        if stamp == self.told {
            return Ok(false);
        }
        self.told = stamp;
        match part {
            Some(part) if part.is_empty() => return Ok(false),
            Some(part) => {
                debug!(
                    pid = self.pid,
                    paths = part.paths.len(),
                    "what some vouched answers depend on changed"
                );
                rmosix_image::write_message(&mut session.out, &ToGuest::ForgetPart(part))?;
            }
            None => {
                debug!(pid = self.pid, "what vouched answers depend on changed");
                // It holds nothing of the book any more: told it from the start next.
                self.book_told = None;
                rmosix_image::write_message(&mut session.out, &ToGuest::Forget)?;
            }
        }
        Ok(true)
    }

    /// Home vouches for lookups under `system`'s prefixes (see `pathcache`), watching what
    /// they depend on with the job's `paths`, whose book it adds to. `ahead`: how far the
    /// remote was told the book ahead of its image ([`tell_book_ahead`]); what it was told
    /// holds in the generation it was told in.
    pub fn vouch_under(
        &mut self,
        system: SystemFiles,
        paths: Rc<RefCell<PathWatch>>,
        ahead: Option<BookTold>,
    ) {
        self.system = system;
        self.told = match &ahead {
            Some((stamp, ..)) => *stamp,
            None => paths.borrow().stamp(),
        };
        // Read once already, for the telling.
        if let Some((_, asker, _)) = &ahead {
            self.asker = Some(asker.clone());
        }
        self.book_told = ahead;
        self.paths = paths;
    }

    /// Tell the remote, as it starts, the answers home vouched for to the job's other
    /// remotes that this one would get and was not told ahead (`ToGuest::Known`): it keeps
    /// them as its own. After a change since it was told ahead, it forgets and is told the
    /// book anew.
    pub fn tell_known(&mut self, session: &mut Session) -> io::Result<()> {
        self.tell_changes(session)?;
        self.tell_book(session, None)?;
        session.out.flush()
    }

    /// The process moved on to another node (relayed through home), whose guest holds none
    /// of the answers the last one kept: tell it the job's book from the start.
    pub fn tell_known_to_next(&mut self, session: &mut Session) -> io::Result<()> {
        self.book_told = None;
        self.tell_known(session)
    }

    /// Tell the remote what the job's book holds for its asker that it was not told yet,
    /// but what the lookups of process `except` found (`ToGuest::Known`): a remote keeps the
    /// answers to its own lookups, but a new one has none.
    fn tell_book(&mut self, session: &mut Session, except: Option<Pid>) -> io::Result<()> {
        let Some(asker) = self.asker() else {
            return Ok(());
        };
        let stamp = self.paths.borrow().stamp();
        // The book is emptied only when the watch starts anew; entries forgotten in part
        // were told forgotten (`tell_changes` comes first).
        let since = match &self.book_told {
            Some((told, to, upto)) if told.epoch == stamp.epoch && *to == asker => *upto,
            _ => 0,
        };
        let known = self.paths.borrow().known_since(&asker, since, except);
        let upto = send_known(session, self.pid, known)?;
        self.book_told = Some((stamp, asker, upto));
        Ok(())
    }

    /// Who the shell asks as, read once until a call may change it; None if it cannot be
    /// read (nothing goes into the book then).
    fn asker(&mut self) -> Option<Asker> {
        if self.asker.is_none() {
            self.asker = Asker::of(self.pid)
                .inspect_err(
                    |err| debug!(pid = self.pid, %err, "cannot read who the shell asks as"),
                )
                .ok();
        }
        self.asker.clone()
    }

    /// Something a kept answer depends on may have changed: tell the remote at once, not
    /// only with the next reply, which may be long in coming.
    pub fn on_changes(&mut self, session: &mut Session) -> io::Result<()> {
        if self.tell_changes(session)? {
            session.out.flush()?;
        }
        Ok(())
    }

    /// Home asked for the image: a call blocked in the shell (a read from a terminal, say)
    /// must not hold the move up. Interrupt it; the remote restarts it wherever it goes on.
    pub fn recall(&mut self) -> io::Result<()> {
        self.unpark()?;
        if matches!(
            self.state,
            ShellState::Calling(_) | ShellState::Interrupting(_)
        ) {
            ptrace::interrupt(self.pid)?;
        }
        Ok(())
    }

    /// The remote entered a group stop for `sig`: stop the shell too, so that job control at
    /// home sees it; the remote's signal decides whether mosrun follows.
    pub fn follow_stop(&mut self, sig: i32) {
        if self.busy() {
            // Writes behind come before the stop: they run first (see `next_or_idle`).
            self.stop_when_idle = Some(sig);
            return;
        }
        if let Err(err) = self.unpark() {
            warn!(pid = self.pid, %err, "cannot let the shell go to its pause");
        }
        self.following_stop = Some(sig);
        // SAFETY: stopping our own tracee, as its remote half stopped.
        unsafe { libc::kill(self.pid, libc::SIGSTOP) };
    }

    /// The remote died of `sig`: the shell dies the same way, so the parent sees the same
    /// status.
    pub fn die_by(&mut self, sig: i32) -> io::Result<()> {
        self.unpark()?;
        freeze(self.pid)?;
        self.mem.write(self.scratch, &[0u8; 32])?;
        self.inj.call(
            self.pid,
            libc::SYS_rt_sigaction,
            [sig as u64, self.scratch, 0, 8, 0, 0],
        )?;
        ptrace::set_sigmask(self.pid, 0)?;
        ptrace::cont(self.pid, sig)
    }

    /// The shell stopped. `recalled`: home asked for the image, so a call not yet run is
    /// answered with a restart code instead of being run (it runs wherever the process goes).
    pub fn on_stop(
        &mut self,
        stop: Stop,
        recalled: bool,
        session: &mut Session,
    ) -> io::Result<ShellNews> {
        let state = match std::mem::replace(&mut self.state, ShellState::Idle) {
            // Nothing of ours resumes a parked shell: it stopped anew after something else
            // did. Its registers are still its last call's: back to the pause's first.
            ShellState::Parked(_) => {
                warn!(pid = self.pid, ?stop, "a parked shell stopped");
                let regs = self.inj.call_regs(&self.base, libc::SYS_pause, [0; 6]);
                ptrace::set_regs(self.pid, &regs)?;
                ShellState::Idle
            }
            state => state,
        };
        self.recalled = recalled;
        if let Stop::Signal(libc::SIGCONT) = stop {
            // Continued before the stop it waited to follow was taken: it is over.
            self.stop_when_idle = None;
        }
        // A write behind runs whatever moves are asked for: the program was told it ran.
        let recalled = recalled
            && !matches!(&state, ShellState::Interrupting(c) | ShellState::Calling(c) if c.must_run());
        if let Stop::Signal(sig) = stop
            && self.relayed_early & bit(sig) != 0
        {
            // Relayed already (see the Calling arm): nothing happened but the stop itself.
            self.relayed_early &= !bit(sig);
            self.resume_unchanged(state, session)?;
            return Ok(ShellNews::Nothing);
        }
        match (state, stop) {
            // Called home meanwhile: the call runs after the move, not here.
            (ShellState::Interrupting(call), Stop::Interrupted) if recalled => {
                self.finish_call(call, sys::ERESTARTNOINTR, session)?
            }
            (ShellState::Interrupting(call), Stop::Interrupted) => {
                self.start_call(call, session)?
            }
            (ShellState::Interrupting(call), Stop::Signal(sig)) => {
                self.relay(session, signals::at_stop(self.pid, sig))?;
                if recalled {
                    self.finish_call(call, sys::ERESTARTNOINTR, session)?
                } else {
                    self.start_call(call, session)?;
                }
            }
            (ShellState::Calling(call), Stop::Trap | Stop::Interrupted | Stop::Signal(_)) => {
                self.on_call_stop(call, stop, recalled, session)?
            }
            (ShellState::Calling(call), other) => {
                self.state = ShellState::Calling(call);
                warn!(pid = self.pid, ?other, "unexpected stop of a calling shell");
                ptrace::cont(self.pid, 0)?;
            }
            (state, Stop::Signal(libc::SIGSTOP)) if self.following_stop.is_some() => {
                self.state = state;
                ptrace::cont(self.pid, libc::SIGSTOP)?;
            }
            (state, Stop::Signal(sig)) => {
                self.relay(session, signals::at_stop(self.pid, sig))?;
                // A signal stop means the shell runs again: a group stop has ended (SIGCONT).
                self.state = match state {
                    ShellState::Stopped => ShellState::Idle,
                    other => other,
                };
                ptrace::cont(self.pid, 0)?;
            }
            (_, Stop::Group(sig)) => {
                // Stopped to follow its remote: the remote's signal says whether mosrun follows.
                let sig = self.following_stop.take().unwrap_or(sig);
                self.relay(session, SigInfo::bare(sig))?;
                self.state = ShellState::Stopped;
                ptrace::listen(self.pid)?;
                return Ok(ShellNews::GroupStop(sig));
            }
            (state, _) => {
                self.state = state;
                ptrace::cont(self.pid, 0)?;
            }
        }
        Ok(ShellNews::Nothing)
    }

    /// The shell stopped while it ran `call`.
    fn on_call_stop(
        &mut self,
        call: Call,
        stop: Stop,
        recalled: bool,
        session: &mut Session,
    ) -> io::Result<()> {
        let regs = ptrace::get_regs(self.pid)?;
        let ret = if regs.rip == self.inj.syscall_ip {
            // Stopped before the call ran: let the remote issue it again.
            if matches!(stop, Stop::Interrupted) && !recalled {
                self.state = ShellState::Calling(call);
                return ptrace::step(self.pid);
            }
            // The kernel restarts a call answered so, whatever the dispositions.
            sys::ERESTARTNOINTR
        } else if regs.rax as i64 == sys::ERESTART_RESTARTBLOCK {
            -i64::from(libc::EINTR)
        } else {
            regs.rax as i64
        };
        // Signals go before the answer. One pending at the remote when the call is answered
        // is delivered as the call returns, as Linux delivers a signal that came during a
        // call: a restart code only works while one is pending (the remote's kernel then
        // restarts the call or fails it with EINTR), and a signal the call sent the process
        // itself (raise) runs its handler before the call returns, as at home. The husk's
        // wait for the answer is killable only (WAIT_KILLABLE_RECV): a relayed signal never
        // makes it give the call up and issue it again.
        match stop {
            Stop::Signal(sig) => {
                self.relay(session, signals::at_stop(self.pid, sig))?;
                self.finish_call(call, ret, session)
            }
            // The single-step trap is reported before the signals the call sent or that
            // interrupted it: relay what is pending now, and skip it when its stop comes.
            _ if !recalled => {
                // Those the shell blocks, as the program does, stay pending here (a signalfd
                // reads them) until the program lets them in. A wait's own mask counts while
                // it is in force, which only /proc shows.
                let arrived = signals::pending(self.pid)?;
                // Read only when a signal waits: /proc/PID/status costs more than the call.
                let blocked = match arrived.is_empty() {
                    true => 0,
                    false => signals::status_masks(self.pid)?.blocked,
                };
                let mut pending = 0;
                for info in arrived {
                    if blocked & bit(info.signo()) != 0 {
                        continue;
                    }
                    pending |= bit(info.signo());
                    self.relay(session, info)?;
                }
                self.relayed_early |= pending;
                // Without a pending signal a restart code would reach the program.
                let ret = if pending == 0 && sys::is_restart(ret) {
                    -i64::from(libc::EINTR)
                } else {
                    ret
                };
                self.finish_call(call, ret, session)
            }
            _ => self.finish_call(call, ret, session),
        }
    }

    /// Let the shell wait in pause(2). A signal stops it (we relay and suppress it) and the
    /// kernel restarts the pause by itself, since no handler ran (ERESTARTNOHAND).
    pub fn idle(&mut self) -> io::Result<()> {
        let regs = self.inj.call_regs(&self.base, libc::SYS_pause, [0; 6]);
        ptrace::set_regs(self.pid, &regs)?;
        self.state = ShellState::Idle;
        ptrace::cont(self.pid, 0)
    }

    /// Watch what the answer to lookup `call` depends on, before it runs (see `homepaths`).
    /// A path relative to the working directory is watched as the directory's path (read
    /// from `/proc`, not when deleted) joined with it, and that path itself as a lookup: the
    /// remote keys the process's relative lookups under it, and must hear when it no longer
    /// names the directory. Read again after: a rename in between would have watched
    /// another directory's names.
    fn arm_lookup(&self, call: &Call) -> Option<Watched> {
        let path = call.looked_up()?;
        let mut paths = self.paths.borrow_mut();
        if path.starts_with(b"/") {
            let since = paths.arm(path, &self.system)?;
            return Some(Watched {
                since,
                path: path.to_vec(),
                cwd: None,
            });
        }
        if !pathcache::relative_to_cwd(call.nr, &call.args) {
            return None;
        }
        let cwd_now = || {
            let cwd = std::fs::read_link(format!("/proc/{}/cwd", self.pid)).ok()?;
            let cwd = cwd.into_os_string().into_string().ok()?;
            (cwd.starts_with('/') && !cwd.ends_with(" (deleted)")).then_some(cwd)
        };
        let cwd = cwd_now()?;
        let full = pathcache::under(&cwd, std::str::from_utf8(path).ok()?);
        if !pathcache::covered(call.nr, &full, &self.system) {
            return None;
        }
        paths.arm(cwd.as_bytes(), &self.system)?;
        let since = paths.arm(full.as_bytes(), &self.system)?;
        (cwd_now()? == cwd).then_some(Watched {
            since,
            path: full.into_bytes(),
            cwd: Some(cwd),
        })
    }

    /// Lay `call`'s buffers out in the scratch area, point its arguments at them and step the
    /// shell over the `syscall` instruction.
    fn start_call(&mut self, mut call: Call, session: &mut Session) -> io::Result<()> {
        self.files.forget(call.nr, &call.args);
        self.opened_away.before(call.nr, &call.args);
        // The watch goes first: a change after it is heard of, one before it is in the answer.
        if call.vouch {
            call.armed = self
                .asker()
                .filter(Asker::walks_as_here)
                .and_then(|_| self.arm_lookup(&call));
        }
        if pathcache::changes_lookups(call.nr) {
            self.asker = None;
        }
        if call.shape.scratch_len() + 16 > SCRATCH_LEN {
            return self.finish_call(call, -i64::from(libc::ENOMEM), session);
        }
        let mut at = self.scratch;
        let mut sent = call.sent.iter();
        let mut args = call.args;
        call.places.clear();
        for buf in &call.shape.bufs {
            call.places.push(at);
            if buf.sent
                && let Some(bytes) = sent.next()
            {
                self.mem.write(at, bytes)?;
            }
            match buf.slot {
                Slot::Arg(i) => args[i] = at,
                // The pair follows the mask it points to (NULL for no mask, as the remote's).
                Slot::Pair(i) => {
                    let pair_at = at + buf.len.next_multiple_of(16);
                    let mask = if buf.len == 0 { 0 } else { at };
                    let mut pair = [0u8; 16];
                    pair[..8].copy_from_slice(&mask.to_le_bytes());
                    pair[8..].copy_from_slice(&table::SIGSET.to_le_bytes());
                    self.mem.write(pair_at, &pair)?;
                    args[i] = pair_at;
                    at = pair_at + 16 - buf.len.next_multiple_of(16);
                }
                Slot::Nested(_) => {}
            }
            at += buf.len.next_multiple_of(16);
        }
        if msg::is_message(call.nr) {
            self.point_message(&call, at)?;
        }
        ptrace::set_regs(self.pid, &self.inj.call_regs(&self.base, call.nr, args))?;
        self.state = ShellState::Calling(call);
        ptrace::step(self.pid)
    }

    /// Point the shell's copy of a msghdr at the copies of its buffers, the data through a
    /// one-element iovec at `iovec_at` (see `msg`).
    fn point_message(&self, call: &Call, iovec_at: u64) -> io::Result<()> {
        let place = |slot: Slot| {
            let i = call.shape.bufs.iter().position(|b| b.slot == slot)?;
            Some((call.shape.bufs[i], call.places[i]))
        };
        let (Some((_, hdr_at)), Some(name), Some(data), Some(control)) = (
            place(Slot::Arg(1)),
            place(Slot::Nested(msg::NAME)),
            place(Slot::Nested(msg::DATA)),
            place(Slot::Nested(msg::CONTROL)),
        ) else {
            return Err(io::Error::other("a message call without its buffers"));
        };
        // An empty buffer is a NULL pointer: the kernel then neither reads nor fills it.
        let pointer = |(buf, at): (Buf, u64)| if buf.len == 0 { 0 } else { at };
        let hdr = msg::MsgHdr {
            name: pointer(name),
            namelen: name.0.len as u32,
            iov: iovec_at,
            iovlen: 1,
            control: pointer(control),
            controllen: control.0.len,
            flags: 0,
        };
        self.mem.write(hdr_at, &hdr.to_bytes())?;
        let mut iovec = [0u8; 16];
        iovec[..8].copy_from_slice(&pointer(data).to_le_bytes());
        iovec[8..].copy_from_slice(&data.0.len.to_le_bytes());
        self.mem.write(iovec_at, &iovec)
    }

    /// Answer `call` with `ret` and its out-buffers, then run the next call or idle.
    fn finish_call(&mut self, mut call: Call, ret: i64, session: &mut Session) -> io::Result<()> {
        if call.behind {
            self.finish_behind(call, ret, session)?;
            return self.next_or_idle(session);
        }
        if let Some(mirror) = call.mirror {
            self.finish_mirror(call, mirror, ret, session)?;
            return self.next_or_idle(session);
        }
        if writebehind::grants_after(&call, ret) {
            self.granted.insert(call.args[0] as i32);
        }
        self.opened_away.after(call.nr, ret);
        let backs = if call.places.is_empty() {
            // Never laid out (answered before it ran): nothing to send back.
            Vec::new()
        } else if msg::is_message(call.nr) {
            self.message_backs(&call, ret)?
        } else {
            let mut backs = Vec::new();
            for (buf, &at) in call.shape.bufs.iter().zip(&call.places) {
                let n = buf.back.map_or(0, |valid| valid.bytes(buf.len, ret));
                if let (Slot::Arg(i), true) = (buf.slot, n > 0) {
                    backs.push((call.args[i], self.mem.read_vec(at, n as usize)?));
                }
            }
            backs
        };
        self.time(&call);
        if call.lend && ret >= 0 {
            self.lend_at_open(session, call.id, ret as i32)?;
        }
        let same = if call.same && ret >= 0 {
            self.tell_same(session, call.id, ret as i32)?
        } else {
            None
        };
        // The directory is listed after the call, under the watch: a name made meanwhile
        // is in the listing or an event that keeps the answer from being vouched for.
        let vouch = call.armed.take().map(|armed| {
            let path = &armed.path;
            let missing = ret == -i64::from(libc::ENOENT);
            let listing = Some(path)
                .filter(|_| missing)
                .and_then(|path| self.paths.borrow().listing(path));
            let key = String::from_utf8(path.clone())
                .ok()
                .and_then(|path| Key::of(call.nr, &call.args, path));
            // A status of a directory changes with its entries; a name missing, only with
            // its own (but its listing with all).
            let entries =
                listing.is_some() || (!missing && key.as_ref().is_some_and(Key::is_status));
            let kept = key.and_then(|key| {
                let answer = key.kept_answer(ret, &call.args, &backs, same.as_ref())?;
                Some((key, answer))
            });
            Vouch {
                armed,
                entries,
                listing,
                kept,
            }
        });
        self.answer(session, call.id, ret, &backs, vouch, call.numbers)?;
        self.next_or_idle(session)
    }

    /// A call that follows the process's doings away ended with `ret`. The shell's copy of a
    /// file opened away must hold the number the program got: if it got another (which only
    /// a close of that number that a signal kept from running leaves: the program no longer
    /// holds what was there), it is moved there; if it could not be opened (removed or made
    /// unreadable at home since home vouched for it), a placeholder holds the number. A
    /// process that comes home then fails to reopen that file and stays where it is. The
    /// open is answered once its number is held (`ToGuest::Reply` with its id).
    fn finish_mirror(
        &mut self,
        call: Call,
        mirror: Mirror,
        ret: i64,
        session: &mut Session,
    ) -> io::Result<()> {
        if sys::is_restart(ret) || ret == -i64::from(libc::EINTR) {
            // A signal kept it from running: it runs next.
            self.waiting.push_front(call);
            return Ok(());
        }
        let (fd, cloexec, placeholder) = match mirror {
            Mirror::Open {
                fd,
                cloexec,
                placeholder,
            } => (fd, cloexec, placeholder),
            Mirror::Step { ack } => {
                if ret < 0 {
                    let (pid, nr, errno) = (self.pid, call.nr, -ret);
                    warn!(pid, nr, errno, "a step of the shell failed");
                }
                return match ack {
                    Some(id) => send_reply(session, id, ret, &[]),
                    None => Ok(()),
                };
            }
        };
        let steps = if ret == i64::from(fd) {
            return send_reply(session, call.id, ret, &[]);
        } else if ret >= 0 {
            debug!(
                pid = self.pid,
                fd,
                got = ret,
                "a copy is moved to its number"
            );
            let flags = if cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            vec![
                Call::step(
                    libc::SYS_dup3,
                    [ret as u64, fd as u64, flags, 0, 0, 0],
                    None,
                ),
                Call::step(libc::SYS_close, [ret as u64, 0, 0, 0, 0, 0], Some(call.id)),
            ]
        } else if !placeholder {
            let (pid, errno) = (self.pid, -ret);
            warn!(
                pid,
                fd, errno, "no copy of a file opened away: a placeholder holds its number"
            );
            vec![Call::placeholder(call.id, fd)]
        } else {
            warn!(
                pid = self.pid,
                fd,
                errno = -ret,
                "nothing holds a number given away"
            );
            return send_reply(session, call.id, ret, &[]);
        };
        let steps: Result<Vec<Call>, Refusal> = steps.into_iter().collect();
        for step in steps.map_err(io::Error::other)?.into_iter().rev() {
            self.waiting.push_front(step);
        }
        Ok(())
    }

    /// Tell the remote what descriptor `fd`, which call `id` opened, is: a regular file opened
    /// read-only, its digest and path (see `sysfiles`). Nothing for anything else: the
    /// remote then serves the file through home. What it told, for the job's book.
    fn tell_same(&mut self, session: &mut Session, id: u64, fd: i32) -> io::Result<Option<SameAs>> {
        let Some(copy) = self.files.file(fd) else {
            return Ok(None);
        };
        // SAFETY: `files` holds the copy open until a call on `fd` makes it forget it.
        let copy = unsafe { std::os::fd::BorrowedFd::borrow_raw(copy) };
        let Some(same) = sysfiles::same_at_home(self.pid, fd, copy) else {
            return Ok(None);
        };
        let told = ToGuest::Same {
            id,
            same: same.clone(),
        };
        rmosix_image::write_message(&mut session.out, &told)?;
        Ok(Some(same))
    }

    /// A write behind ended with `ret`. All of it written: acknowledged with the room
    /// measured again. Cut short by a signal or a move: the rest runs next. The other end
    /// gone (EPIPE, ECONNRESET): the writes behind to that descriptor that wait are dropped
    /// with it, as a reader that closes drops what it did not read, and the grant is
    /// revoked, so that the program's next write to it runs here and fails as it would; the
    /// signal the shell got is relayed as any. Anything else cannot be told to the program:
    /// the error loses the process, with the bytes.
    fn finish_behind(&mut self, call: Call, ret: i64, session: &mut Session) -> io::Result<()> {
        let fd = call.args[0] as i32;
        let len = call.args[2];
        let (written, room) = match ret {
            _ if ret == len as i64 => (len, writebehind::room(&self.pidfd, fd)),
            _ if sys::is_restart(ret) || ret == -i64::from(libc::EINTR) => {
                self.waiting.push_front(call.rest_behind(0));
                return Ok(());
            }
            0.. => {
                self.waiting.push_front(call.rest_behind(ret as usize));
                (ret as u64, writebehind::room(&self.pidfd, fd))
            }
            _ if ret == -i64::from(libc::EPIPE) || ret == -i64::from(libc::ECONNRESET) => {
                let dropped = len + self.waiting.drop_behind(fd);
                warn!(
                    pid = self.pid,
                    fd,
                    dropped,
                    errno = -ret,
                    "the other end of a descriptor written behind went"
                );
                (dropped, 0)
            }
            _ => {
                let owed = len + self.waiting.owed();
                return Err(io::Error::other(format!(
                    "{owed} bytes it was told it wrote to descriptor {fd} cannot be written: {}",
                    io::Error::from_raw_os_error(-ret as i32)
                )));
            }
        };
        session.send(&ToGuest::Room { fd, written, room })
    }

    /// The shell is stopped and done with its call: run the next that waits, or idle (and
    /// follow a stop of the remote that waited for the writes behind).
    fn next_or_idle(&mut self, session: &mut Session) -> io::Result<()> {
        while let Some(call) = self.waiting.next() {
            if !call.must_run() && self.recalled {
                // As for a call that finds the shell recalled: it runs after the move.
                self.answer(session, call.id, sys::ERESTARTNOINTR, &[], None, false)?;
                continue;
            }
            if !call.must_run()
                && let Some((ret, backs)) = self.files.try_run(&call)
            {
                self.time(&call);
                self.answer(session, call.id, ret, &backs, None, false)?;
                continue;
            }
            return self.start_call(call, session);
        }
        if self.recalled || self.stop_when_idle.is_some() {
            self.idle()?;
        } else {
            self.state = ShellState::Parked(Instant::now());
        }
        if let Some(sig) = self.stop_when_idle.take() {
            self.follow_stop(sig);
        }
        Ok(())
    }

    /// What a recvmsg filled in, addressed where the remote's own msghdr points: the msghdr
    /// with its lengths and flags updated, the address, the data (to the iovec array, for
    /// the guest to scatter) and the ancillary data.
    fn message_backs(&self, call: &Call, ret: i64) -> io::Result<Backs> {
        if call.nr != libc::SYS_recvmsg || ret < 0 {
            return Ok(Vec::new());
        }
        // The msghdr as the remote sent it, with the remote's pointers (checked to parse).
        let Some(remote) = call.sent.first().and_then(|raw| msg::MsgHdr::parse(raw)) else {
            return Ok(Vec::new());
        };
        let raw = self.mem.read_vec(call.places[0], msg::HDR_LEN as usize)?;
        let filled = msg::MsgHdr::parse(&raw).ok_or_else(|| io::Error::other("short msghdr"))?;
        let hdr = msg::MsgHdr {
            namelen: filled.namelen,
            controllen: filled.controllen,
            flags: filled.flags,
            ..remote
        };
        let mut backs = vec![(call.args[1], hdr.to_bytes().to_vec())];
        let parts = [
            (remote.name, msg::NAME, u64::from(filled.namelen)),
            (remote.iov, msg::DATA, ret as u64),
            (remote.control, msg::CONTROL, filled.controllen),
        ];
        // A message's buffers are laid out in this order: msghdr, then NAME, DATA, CONTROL.
        for (to, i, filled_len) in parts {
            let (buf, at) = (call.shape.bufs[i], call.places[i]);
            let n = filled_len.min(buf.len);
            if to != 0 && n > 0 {
                backs.push((to, self.mem.read_vec(at, n as usize)?));
            }
        }
        Ok(backs)
    }

    /// Go on after a stop that changed nothing for the process: the state stays; a call that
    /// the stop kept from running, or that it interrupted before it did anything (a restart
    /// code), runs again.
    fn resume_unchanged(&mut self, state: ShellState, session: &mut Session) -> io::Result<()> {
        match state {
            ShellState::Calling(call) => {
                let mut regs = ptrace::get_regs(self.pid)?;
                if regs.rip != self.inj.syscall_ip {
                    if !sys::is_restart(regs.rax as i64) {
                        // It ran to completion: answer as for the single-step trap.
                        let ret = regs.rax as i64;
                        return self.finish_call(call, ret, session);
                    }
                    // The kernel records the call number in orig_rax on entry.
                    regs.rip = self.inj.syscall_ip;
                    regs.rax = regs.orig_rax;
                    regs.orig_rax = u64::MAX;
                    ptrace::set_regs(self.pid, &regs)?;
                }
                self.state = ShellState::Calling(call);
                ptrace::step(self.pid)
            }
            ShellState::Stopped => {
                self.state = ShellState::Idle;
                ptrace::cont(self.pid, 0)
            }
            other => {
                self.state = other;
                ptrace::cont(self.pid, 0)
            }
        }
    }
}

/// Out-buffers of a call, each with the remote address it goes to.
pub type Backs = Vec<(u64, Vec<u8>)>;

/// Answer call `id` with `ret` and its out-buffers, addressed in remote memory.
pub fn send_reply(
    session: &mut Session,
    id: u64,
    ret: i64,
    backs: &[(u64, Vec<u8>)],
) -> io::Result<()> {
    tracing::trace!(id, ret, "reply");
    let reply = ToGuest::Reply {
        id,
        ret,
        backs: backs.len() as u32,
    };
    rmosix_image::write_message(&mut session.out, &reply)?;
    for (addr, bytes) in backs {
        rmosix_image::write_pages(&mut session.out, *addr, bytes)?;
    }
    session.out.flush()
}

/// Tell the remote to drop the bytes it holds of `fds` (sent with what follows it).
fn tell_stale(session: &mut Session, fds: Vec<i32>) -> io::Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    rmosix_image::write_message(&mut session.out, &ToGuest::Stale { fds })
}

/// Relay a signal to the remote, as it came.
pub fn relay(session: &mut Session, info: SigInfo) -> io::Result<()> {
    tracing::trace!(?info, "relay");
    session.send(&ToGuest::Signal { info })
}

/// Release the shell's memory (rseq first, see restore.rs), keep a copy of the process's
/// command line and environment there, and map a scratch area.
fn strip_shell(
    pid: Pid,
    args_and_env: &ArgsAndEnv,
    went: &[SigInfo],
) -> io::Result<(Injector, u64, Regs)> {
    let mem = Memory::open(pid)?;
    let areas = maps::read(pid)?;
    let inj = Injector::find(&mem, &areas)?;
    restore::release_memory(pid, &inj, &areas)?;
    args_and_env.keep_in(pid, &inj, &mem)?;
    let scratch = Scratch::map(&inj, pid, SCRATCH_LEN)?.addr;
    // The CPU-time timers went with the image; the shell's copies must not fire as well.
    // The fresh scratch area holds zeros: a disarmed itimerval.
    for which in dump::CPU_TIMERS {
        let args = [which as u64, scratch, 0, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_setitimer, args, "disarm a CPU-time timer")?;
    }
    // The shell keeps the program's signal mask: a signal it lets in stops the shell and is
    // relayed, one it blocks stays pending here, as at home, until the program lets it in or
    // takes it (a signalfd, sigtimedwait).
    drop_pending(pid, &inj, &mem, scratch, went)?;
    Ok((inj, scratch, ptrace::get_regs(pid)?))
}

/// Take the signals `went` out of stopped `pid`'s queues (one instance of each, oldest
/// first, as they were queued), by injected `rt_sigtimedwait` calls that do not wait, with
/// `scratch` for their arguments. Signals that came after them stay.
fn drop_pending(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    scratch: u64,
    went: &[SigInfo],
) -> io::Result<()> {
    for info in went {
        // The set of that one signal, and a zero timeout.
        let mut args = [0u8; 24];
        args[..8].copy_from_slice(&bit(info.signo()).to_le_bytes());
        mem.write(scratch, &args)?;
        let call = [scratch, 0, scratch + 8, table::SIGSET, 0, 0];
        inj.call(pid, libc::SYS_rt_sigtimedwait, call)?;
    }
    Ok(())
}

/// Stop `pid` in a PTRACE_EVENT_STOP; returns signals that arrived meanwhile (suppressed
/// here, to be delivered wherever the process then runs, with their siginfo).
pub fn freeze(pid: Pid) -> io::Result<Vec<SigInfo>> {
    ptrace::interrupt(pid)?;
    frozen(pid)
}

/// Wait for the stop that answers a PTRACE_INTERRUPT already asked of `pid` (see [`freeze`]).
/// Any ptrace stop answers a pending interrupt (kernel/signal.c, ptrace_stop: "any trap
/// clears pending STOP trap"), so one is asked again in each stop met on the way: asked
/// while the process is stopped, it is one trap after that stop, however often it was asked.
/// A process that ends meanwhile is left unreaped, for the supervisor to report its end.
pub fn frozen(pid: Pid) -> io::Result<Vec<SigInfo>> {
    let mut signals = Vec::new();
    loop {
        match ptrace::wait_stop(pid)? {
            Stop::Interrupted | Stop::Group(_) => return Ok(signals),
            Stop::Signal(sig) => {
                signals.push(signals::at_stop(pid, sig));
                ptrace::interrupt(pid)?;
                ptrace::cont(pid, 0)?;
            }
            _ => {
                ptrace::interrupt(pid)?;
                ptrace::cont(pid, 0)?
            }
        }
    }
}

/// The bit of signal `sig` in a signal mask (bit n-1 is signal n).
fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use rmosix_image::{write_message, write_pages};

    use super::*;
    use crate::session::ToHome;
    use crate::table;

    /// A session stream as a peer could send it: calls with any number, arguments and
    /// buffers, lengths often near the ones the table would give, and other messages.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let arg = prop_oneof![
            0u64..64,
            Just(0u64),
            Just(1u64 << 20),
            Just(MAX_BUF),
            Just(MAX_BUF + 1),
            any::<u64>(),
        ];
        let call = (
            prop_oneof![0i64..460, any::<i64>()],
            proptest::array::uniform6(arg),
            proptest::collection::vec(
                prop_oneof![0usize..80, Just(4usize), Just(56), Just(144), Just(4096)],
                0..8,
            ),
            0u32..10,
        );
        proptest::collection::vec(call, 1..6).prop_map(|calls| {
            let mut out = Vec::new();
            for (id, (nr, args, lens, announced)) in calls.into_iter().enumerate() {
                let msg = ToHome::Call {
                    id: id as u64,
                    nr,
                    args,
                    sends: announced.min(lens.len() as u32 + 1),
                    same: id % 2 == 0,
                    vouch: id % 3 == 0,
                    numbers: id % 5 == 0,
                    lend: id % 7 == 0,
                };
                write_message(&mut out, &msg).unwrap();
                for (i, len) in lens.iter().enumerate() {
                    let mut data = vec![b'a' + i as u8; *len];
                    if let Some(last) = data.last_mut() {
                        *last = 0;
                    }
                    write_pages(&mut out, 0x1000 * i as u64, &data).unwrap();
                }
            }
            out
        })
    }

    /// A stream of calls shaped as a guest ships them (buffers as the table gives them for
    /// the arguments), some of them then bent: a length off by one, a buffer missing or
    /// added, a path without its NUL.
    fn shipped_calls() -> impl Strategy<Value = Vec<u8>> {
        let call = (
            0i64..460,
            proptest::array::uniform6(prop_oneof![1u64..64, Just(0u64), Just(0x7000u64)]),
            0u32..16,
            0usize..8,
        );
        proptest::collection::vec(call, 1..6).prop_map(|calls| {
            let mut out = Vec::new();
            for (id, (nr, mut args, socklen, bend)) in calls.into_iter().enumerate() {
                let table::Route::Forward(row) = table::route(nr, &args) else {
                    continue;
                };
                let mut sent: Vec<Vec<u8>> = Vec::new();
                for buf in row.buffers(&args.clone()) {
                    if !buf.sent() {
                        continue;
                    }
                    let len = match buf.kind {
                        table::Arg::Path => {
                            sent.push(b"/tmp/x\0".to_vec());
                            continue;
                        }
                        table::Arg::In(len) | table::Arg::InOut(len) => len,
                        _ => continue,
                    };
                    let n = match len {
                        table::Len::Arg(i) => args[i],
                        table::Len::ArgTimes(i, size) => {
                            args[i] %= 8;
                            args[i] * size
                        }
                        table::Len::Fixed(4) => {
                            sent.push(socklen.to_le_bytes().to_vec());
                            continue;
                        }
                        table::Len::Fixed(n) => n,
                        table::Len::FdSet => table::fd_set_len(args[0]).unwrap_or(0),
                        table::Len::DerefU32(_) => u64::from(socklen),
                        table::Len::DerefU32Times(_, size) => u64::from(socklen) * size,
                    };
                    sent.push(vec![7; n.min(1 << 16) as usize]);
                }
                match bend {
                    0 => drop(sent.pop()),
                    1 => sent.push(vec![1; 3]),
                    2 => {
                        if let Some(last) = sent.last_mut() {
                            last.push(9);
                        }
                    }
                    3 => {
                        if let Some(first) = sent.first_mut() {
                            first.retain(|&b| b != 0);
                        }
                    }
                    _ => {}
                }
                let msg = ToHome::Call {
                    id: id as u64,
                    nr,
                    args,
                    sends: sent.len() as u32,
                    same: false,
                    vouch: false,
                    numbers: false,
                    lend: false,
                };
                write_message(&mut out, &msg).unwrap();
                for data in &sent {
                    write_pages(&mut out, 0x1000, data).unwrap();
                }
            }
            out
        })
    }

    /// Read `bytes` as home reads a remote's session: every call accepted has exactly the
    /// buffers the table gives it, within the limits; nothing panics. Returns how many calls
    /// were accepted and how many refused.
    fn read_all(bytes: &[u8]) -> (u64, u64) {
        let (mut accepted, mut refused) = (0, 0);
        let mut frames = FrameReader::new(bytes);
        while let Ok(msg) = frames.message::<ToHome>() {
            let ToHome::Call {
                id,
                nr,
                args,
                sends,
                ..
            } = msg
            else {
                continue;
            };
            let Ok(read) = read_call(&mut frames, id, nr, args, sends) else {
                break;
            };
            let Ok(call) = read else {
                refused += 1;
                continue;
            };
            accepted += 1;
            crate::table::tests::check_home_shape(call.nr, &call.args, &call.sent);
            assert!(call.shape.scratch_len() <= 6 * (MAX_BUF + 16));
        }
        (accepted, refused)
    }

    proptest! {
        #[test]
        fn any_stream_of_calls_is_read_safely(bytes in stream()) {
            read_all(&bytes);
        }

        #[test]
        fn calls_shaped_by_the_table_and_bent_are_read_safely(bytes in shipped_calls()) {
            read_all(&bytes);
        }

        #[test]
        fn any_bytes_are_read_safely(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            read_all(&bytes);
        }
    }

    /// The fuzzing run of `./dev fuzz`: the two properties above, for RMOSIX_FUZZ_SECONDS
    /// (default 60), then how many cases ran.
    #[test]
    #[ignore = "long: run by ./dev fuzz"]
    fn fuzz_home_request_decoding() {
        let seconds = std::env::var("RMOSIX_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let batch = 2000;
        let mut cases = 0u64;
        let accepted = std::cell::Cell::new(0u64);
        let refused = std::cell::Cell::new(0u64);
        while Instant::now() < deadline {
            let config = Config {
                cases: batch,
                failure_persistence: None,
                ..Config::default()
            };
            for strategy in [stream().boxed(), shipped_calls().boxed()] {
                TestRunner::new(config.clone())
                    .run(&strategy, |bytes| {
                        let (yes, no) = read_all(&bytes);
                        accepted.set(accepted.get() + yes);
                        refused.set(refused.get() + no);
                        Ok(())
                    })
                    .unwrap();
            }
            let mut runner = TestRunner::new(config);
            runner
                .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
                    read_all(&bytes);
                    Ok(())
                })
                .unwrap();
            cases += 3 * u64::from(batch);
        }
        println!(
            "fuzz: {cases} session streams read by home's request decoding in {seconds} s, \
             no failure; {} calls accepted, {} refused",
            accepted.get(),
            refused.get()
        );
    }

    #[test]
    fn a_process_that_ends_while_it_is_being_frozen_is_left_for_its_reaper() {
        let husk = crate::testing::Husk::new(1);
        // SAFETY: killing our own traced child.
        unsafe { libc::kill(husk.pid, libc::SIGKILL) };
        let err = frozen(husk.pid).expect_err("a killed process cannot be frozen");
        assert!(ptrace::is_end(&err), "{err}");
        // Its end is still there for the loop that reaps the job's children.
        let reaped = ptrace::wait(husk.pid, libc::WNOHANG).unwrap();
        assert!(
            matches!(reaped, Some((_, Stop::Killed(libc::SIGKILL)))),
            "{reaped:?}"
        );
    }
}
