//! The legs of a move as the home supervisor carries them out: greeting a node, streaming a
//! process out in two rounds, taking an image back into its shell, passing one on from a
//! remote to the next node. Each leg either completes or fails with a [`MoveError`] and
//! leaves the process where it was; which leg comes next is decided in `moves`.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmosix_image::{
    Area, EndOfImage, FrameHead, FrameReader, Header, KernelFacts, SigInfo, Usage, write_message,
    write_pages,
};
use rmosix_wire::{MoveError, NotMovable};
use tracing::{info, warn};

use crate::cputime::Carry;
use crate::deputy::{BookTold, Deputy};
use crate::dfsa::{self, Consistent, Resume, Terms};
use crate::dump;
use crate::halt::{HALT_BOUND, Halt};
use crate::homepaths::PathWatch;
use crate::inject::Injector;
use crate::mapfile;
use crate::mem::Memory;
use crate::ptrace::{self, Pid, Stop};
use crate::relay_out::{AnswerBound, RelayOut};
use crate::restore;
use crate::samefile::Held;
use crate::session::{Channel, Opening, Session, SessionRead, ToGuest, ToHome};
use crate::sharing;
use crate::sysfiles::SystemFiles;
use crate::throttle::{Ask, Cycle, Level, Phase, Throttle, Verdict};
use crate::track::Tracker;

/// How often a move out begins again because its process exec'd during the running rounds
/// (see [`Due::Again`]) before it gives up.
const MOST_EXECS: u8 = 3;

/// A session to a node that agreed to take a process (it answered `Ready`).
pub struct Onward {
    /// The node.
    pub node: u16,
    /// Its session.
    pub session: Session,
    /// The trees that are the same everywhere it shares with home (from its `Ready`).
    pub shares: Consistent,
    /// Bytes of page data relayed to it so far, when a process moves on through home.
    pub relayed: u64,
    /// How far it was told the job's book ahead of the image (see
    /// `deputy::tell_book_ahead`).
    pub book: Option<Box<BookTold>>,
}

/// What pre-copy's first round left for the final one.
pub struct FirstRound {
    /// Catches what the process writes from now on.
    tracker: Tracker,
    /// The areas the first round sent.
    areas: Vec<Area>,
    /// The files the node holds: no round sends their file pages.
    held: Held,
    /// Bytes of page data it sent.
    bytes: u64,
}

/// A process leaving home. The supervisor's loop serves the job all along: while it waits for
/// the process to stop, so that write tracking can be armed; while the running rounds stream
/// on a helper thread and the duty cycle slows the process down as they ask; and while it
/// waits for the stop in which the final round goes (see `halt`).
pub struct Departure {
    /// When the move began.
    started: Instant,
    /// Where to.
    node: u16,
    /// How often the move began again because the process exec'd (see [`Due::Again`]).
    execs: u8,
    /// The process stays stopped through its rounds: it was placed at its exec, when its
    /// image is smallest, and would only grow it by running meanwhile (a compiler writes
    /// megabytes in the half second the rounds take, all of which the final round would
    /// carry, frozen). The rounds still let the node keep its own copies of the files.
    frozen: bool,
    /// The pagemap of the address space write tracking was armed on: it reads nothing once
    /// that address space is gone (the process exec'd, see [`Due::Again`]).
    armed_on: Option<File>,
    /// The duty cycle, which the loop drives.
    slowdown: Slowdown,
    rounds: Rounds,
}

enum Rounds {
    /// A stop is asked, in which write tracking is armed and the helper started.
    Arming { onward: Onward },
    /// The helper streams the running rounds and waits for the node's `Prepared`. It tells
    /// the loop each level the policy sets, and that the rounds are over, on `notices`
    /// ([`Notice`]), which reads EOF once the helper has ended.
    Streaming {
        helper: JoinHandle<Result<(Onward, FirstRound), MoveError>>,
        notices: PipeReader,
    },
    /// The rounds are in place at the node, or there were none (no write tracking here): the
    /// final round goes once the process is stopped.
    Over {
        onward: Onward,
        /// What the rounds left; None: the whole image goes frozen.
        first: Option<Box<FirstRound>>,
    },
    /// The move failed; the process runs on at home once the departure is dropped.
    Failed(MoveError),
}

impl Departure {
    /// Leave for `onward`, which agreed to take process `pid`: ask the process to stop, so
    /// that write tracking can be armed. `execs`: how often this move began again already;
    /// `frozen`: it stays stopped through the rounds.
    pub fn new(pid: Pid, onward: Onward, execs: u8, frozen: bool) -> Departure {
        // While it runs, not in the stop.
        mapfile::learn_digests(pid);
        let mut slowdown = Slowdown::new(pid);
        slowdown.halt();
        Departure {
            started: Instant::now(),
            node: onward.node,
            execs,
            frozen,
            armed_on: None,
            slowdown,
            rounds: Rounds::Arming { onward },
        }
    }

    /// The fd the loop watches for the helper's notices while the rounds stream.
    pub fn notices_fd(&self) -> Option<RawFd> {
        match &self.rounds {
            Rounds::Streaming { notices, .. } => Some(notices.as_raw_fd()),
            _ => None,
        }
    }

    /// Read and carry out what the helper says (it said something, or ended). Once it has
    /// ended, the process is asked to stop for its final round, or the move fails with the
    /// helper's reason.
    pub fn read_notices(&mut self) {
        let Rounds::Streaming { notices, .. } = &mut self.rounds else {
            return;
        };
        let mut bytes = [0u8; 64];
        match notices.read(&mut bytes) {
            Ok(0) => self.rounds_ended(),
            Ok(n) => {
                for &byte in &bytes[..n] {
                    match Notice::from_byte(byte) {
                        Notice::Level(level) => self.slowdown.set(level),
                        Notice::RoundsOver => self.slowdown.hold_if_slowed(),
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // A broken pipe means a helper gone: its join says how it ended.
            Err(_) => self.rounds_ended(),
        }
    }

    /// The helper has ended: how the rounds went. After an error the departure only waits
    /// to be dropped, which lets the process go.
    fn rounds_ended(&mut self) {
        let Rounds::Streaming { helper, .. } = self.take_rounds() else {
            return;
        };
        self.rounds = match helper.join() {
            Ok(Ok((onward, first))) => {
                self.slowdown.halt();
                Rounds::Over {
                    onward,
                    first: Some(Box::new(first)),
                }
            }
            Ok(Err(why)) => Rounds::Failed(why),
            Err(_) => Rounds::Failed(MoveError::Local(
                "the first round's thread panicked".to_owned(),
            )),
        };
    }

    /// The rounds, leaving a failure in their place until they are put back.
    fn take_rounds(&mut self) -> Rounds {
        let gap = Rounds::Failed(MoveError::Local("a departure between legs".to_owned()));
        std::mem::replace(&mut self.rounds, gap)
    }

    /// How long until the loop must look at this departure again (the duty cycle's next
    /// switch, or the bound on a stop asked); None while it wants no tick.
    pub fn next_tick(&self) -> Option<Duration> {
        self.slowdown.next_tick()
    }

    /// Switch the duty cycle if its time has come.
    pub fn tick(&mut self) {
        self.slowdown.tick()
    }

    /// Whether `stop` of the leaving process is the departure's own (the duty cycle's, or
    /// the stop it asked for a leg), which it keeps. Any other stop is the loop's to serve
    /// as it serves any process's.
    pub fn takes(&mut self, stop: Stop) -> bool {
        self.slowdown.takes(stop)
    }

    /// Take the next leg if the process is where it must be: once it has stopped for that,
    /// check that it shares its memory with none of its `job` and arm write tracking and start
    /// the rounds. Then say what comes next; None: nothing yet.
    pub fn due(&mut self, job: &[Pid]) -> Option<Due> {
        if matches!(self.rounds, Rounds::Arming { .. }) && self.slowdown.halted() {
            match alone(self.slowdown.pid, job) {
                Ok(()) => self.arm(),
                Err(why) => self.rounds = Rounds::Failed(why),
            }
        }
        if matches!(self.rounds, Rounds::Streaming { .. }) {
            // The helper's end says how the rounds went, a failed duty cycle included.
            return None;
        }
        if self.exec_since_armed() {
            // The rounds failed on the address space that went (its pagemap reads nothing),
            // or sent one that is no more.
            return Some(if self.execs < MOST_EXECS {
                Due::Again {
                    to: self.node,
                    execs: self.execs + 1,
                }
            } else {
                Due::Failed(MoveError::Local(format!(
                    "it exec'd during each of {} tries",
                    self.execs + 1
                )))
            });
        }
        if let Rounds::Failed(why) = &self.rounds {
            return Some(Due::Failed(why.clone()));
        }
        if let Some(err) = &self.slowdown.failed {
            return Some(Due::Failed(MoveError::Local(format!(
                "cannot stop or slow the process down: {err}"
            ))));
        }
        if self.slowdown.overdue() {
            return Some(Due::Failed(NotMovable::NoStop(HALT_BOUND.as_secs()).into()));
        }
        self.slowdown.halted().then_some(Due::Final)
    }

    /// Whether the process exec'd since write tracking was armed: the address space the
    /// rounds read is gone, and a pagemap opened on it reads nothing.
    fn exec_since_armed(&self) -> bool {
        let mut entry = [0u8; 8];
        let gone = |pagemap: &File| matches!(pagemap.read_at(&mut entry, 0), Ok(0));
        self.armed_on.as_ref().is_some_and(gone)
    }

    /// In the stop asked for it: give the process write tracking and start the helper that
    /// streams the running rounds. Where tracking cannot be armed, the process stays stopped
    /// and its whole image goes frozen.
    fn arm(&mut self) {
        let Rounds::Arming { onward } = self.take_rounds() else {
            return;
        };
        let pid = self.slowdown.pid;
        let opened = dump::image_areas(pid).and_then(|areas| {
            let inj = Injector::find(&Memory::open(pid)?, &areas)?;
            let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
            let tracker = Tracker::open(pid, &inj)?;
            tracker.register(&areas);
            dump::protect_file_mappings(pid, &areas, &tracker)?;
            Ok((tracker, areas, pagemap))
        });
        self.rounds = match opened {
            Ok((tracker, areas, pagemap)) => {
                self.armed_on = Some(pagemap);
                if !self.frozen {
                    self.slowdown.resume();
                }
                tracker.protect(&areas);
                stream_rounds(pid, onward, tracker, areas).unwrap_or_else(Rounds::Failed)
            }
            Err(err) => {
                info!(pid, %err, "no pre-copy: the process stays frozen for its whole image");
                Rounds::Over {
                    onward,
                    first: None,
                }
            }
        };
    }

    /// The process is stopped for its final round: what the rounds left. A departure in any
    /// other state fails the move (dropping it lets the process go).
    /// Whether it stayed stopped since its exec goes with them.
    fn into_final(
        self,
    ) -> Result<(Instant, Slowdown, Onward, Option<FirstRound>, bool), MoveError> {
        let Departure {
            started,
            slowdown,
            rounds,
            frozen,
            ..
        } = self;
        match rounds {
            Rounds::Over { onward, first } if slowdown.halted() => {
                Ok((started, slowdown, onward, first.map(|first| *first), frozen))
            }
            Rounds::Failed(why) => Err(why),
            _ => Err(MoveError::Local(
                "the process is not stopped for its final round".to_owned(),
            )),
        }
    }
}

/// What comes next for a process leaving home (see [`Departure::due`]).
#[derive(Debug)]
pub enum Due {
    /// It is stopped for its final round.
    Final,
    /// The move failed; dropping the departure lets the process run on at home.
    Failed(MoveError),
    /// It exec'd during its running rounds, which sent an address space that is no more: the
    /// move begins again, with a new session to node `to` (the old one's end tells the node
    /// to drop what it received). `execs`: how often it began again so far.
    Again { to: u16, execs: u8 },
}

/// What the first round's helper tells the supervisor's loop, one byte each on a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    /// The policy sets this level (its per cent, 0 to 99).
    Level(Level),
    /// The running rounds are over; the helper waits for the node's `Prepared`.
    RoundsOver,
}

impl Notice {
    /// Levels stop at 99, so the highest byte is free for the end of the rounds.
    const ROUNDS_OVER: u8 = u8::MAX;

    fn byte(self) -> u8 {
        match self {
            Notice::Level(level) => level.stopped_percent(),
            Notice::RoundsOver => Notice::ROUNDS_OVER,
        }
    }

    fn from_byte(byte: u8) -> Notice {
        match byte {
            Notice::ROUNDS_OVER => Notice::RoundsOver,
            percent => Notice::Level(Level::percent(percent)),
        }
    }
}

/// The helper's throttle: each level the policy sets goes to the supervisor's loop, which
/// runs the duty cycle (only the tracer's thread may stop the process).
struct Forward(PipeWriter);

impl Throttle for Forward {
    fn set(&mut self, level: Level) -> io::Result<()> {
        self.0.write_all(&[Notice::Level(level).byte()])
    }
}

/// The duty cycle of a process leaving home, driven by the supervisor's loop: a tick at each
/// switch the cycle asks for (the loop's poll times out then), and the process's stops as
/// the loop collects them among the job's others. The loop must go on serving the job, so it
/// asks for a stop and returns to its poll rather than wait for it. The same goes for the
/// stops a leg needs (see `halt`): the duty cycle is idle while one is asked or held.
/// Dropping a slowdown lets the process go from a stop it holds: a move that fails leaves
/// the process running.
struct Slowdown {
    pid: Pid,
    cycle: Cycle,
    /// A stop asked for a leg of the move, or held for it.
    halt: Option<Halt>,
    /// A ptrace request failed: the cycle let the process go, and the move fails when its
    /// rounds end.
    failed: Option<io::Error>,
}

impl Slowdown {
    fn new(pid: Pid) -> Slowdown {
        Slowdown {
            pid,
            cycle: Cycle::new(Instant::now()),
            halt: None,
            failed: None,
        }
    }

    /// Stop the process for a leg of the move: the duty cycle hands it over, in the stop it
    /// holds or the one it asked for, or a stop is asked now.
    fn halt(&mut self) {
        if self.halt.is_some() {
            return;
        }
        let now = Instant::now();
        self.halt = Some(match self.cycle.hand_over() {
            Phase::Stopped => Halt::held(),
            Phase::Stopping => Halt::asked(now),
            Phase::Running | Phase::JobStopped => {
                self.carry_out(Some(Ask::Interrupt));
                Halt::asked(now)
            }
        });
    }

    /// Whether the process is held in the stop a leg asked for.
    fn halted(&self) -> bool {
        self.halt.is_some_and(|halt| halt.stopped())
    }

    /// Whether the stop a leg asked for has not come within its bound.
    fn overdue(&self) -> bool {
        self.halt.is_some_and(|halt| halt.overdue(Instant::now()))
    }

    /// Let the process go from the stop a leg held; the duty cycle takes over again.
    fn resume(&mut self) {
        if self.halt.take().is_some_and(|halt| halt.stopped()) {
            self.carry_out(Some(Ask::Cont));
        }
    }

    /// The final round's stop is the caller's from now on: dropping this lets nothing go.
    fn hand_over(mut self) {
        self.halt = None;
    }

    fn set(&mut self, level: Level) {
        if self.failed.is_some() {
            return;
        }
        if level != self.cycle.level() {
            info!(
                pid = self.pid,
                throttle = level.stopped_percent(),
                "slowing the process down"
            );
        }
        let ask = self.cycle.set(level, Instant::now());
        self.carry_out(ask);
    }

    fn tick(&mut self) {
        let ask = self.cycle.tick(Instant::now());
        self.carry_out(ask);
    }

    fn next_tick(&self) -> Option<Duration> {
        let now = Instant::now();
        match self.halt {
            Some(halt) => halt.next_tick(now),
            None => self.cycle.next_tick(now),
        }
    }

    fn hold_if_slowed(&mut self) {
        let ask = self.cycle.hold_if_slowed();
        self.carry_out(ask);
    }

    fn takes(&mut self, stop: Stop) -> bool {
        let verdict = match &mut self.halt {
            Some(halt) => halt.on_stop(stop),
            None => self.cycle.on_stop(stop),
        };
        match verdict {
            Verdict::Ours => true,
            Verdict::Theirs { ask_again } => {
                if ask_again {
                    self.carry_out(Some(Ask::Interrupt));
                }
                false
            }
        }
    }

    fn carry_out(&mut self, ask: Option<Ask>) {
        let done = match ask {
            None => return,
            Some(Ask::Interrupt) => ptrace::interrupt(self.pid),
            Some(Ask::Cont) => ptrace::cont(self.pid, 0),
        };
        match done {
            // It is gone: its end reaches the loop as any process's does.
            Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
            Err(err) => {
                warn!(pid = self.pid, %err, "cannot slow the process down");
                if self.cycle.release() == Some(Ask::Cont) {
                    let _ = ptrace::cont(self.pid, 0);
                }
                self.failed.get_or_insert(err);
            }
            Ok(()) => {}
        }
    }
}

impl Drop for Slowdown {
    fn drop(&mut self) {
        if self.halted() || self.cycle.release() == Some(Ask::Cont) {
            // A process that is gone has nothing left to let go.
            let _ = ptrace::cont(self.pid, 0);
        }
    }
}

/// Whether `pid` can move, with rmosix's own `filters` (see `dump::check_movable`).
pub fn movable(pid: Pid, filters: u32) -> Result<(), MoveError> {
    inspected(dump::check_movable(pid, filters))
}

/// Whether stopped `pid` has its memory to itself among the processes of its `job` (see
/// `sharing`). Checked in a stop: a parent in vfork shares its memory with its child until
/// the child execs or exits, and cannot stop before then.
fn alone(pid: Pid, job: &[Pid]) -> Result<(), MoveError> {
    let sharer = sharing::sharer(pid, job.iter().copied());
    inspected(sharer.map(|sharer| sharer.map_or(Ok(()), |of| Err(NotMovable::SharesMemory(of)))))
}

/// What an inspection of the process found, as a move's outcome.
fn inspected(found: io::Result<Result<(), NotMovable>>) -> Result<(), MoveError> {
    match found {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(why.into()),
        Err(err) => Err(MoveError::Local(format!(
            "cannot inspect the process: {err}"
        ))),
    }
}

/// Open a session to `node` through `open` and see that it takes process `pid` from us.
/// `consistent`: home's file systems that are the same everywhere, which the remote may open
/// itself with the process's present rights (see `dfsa`).
pub fn greet(
    channel: Result<Channel, MoveError>,
    node: u16,
    facts: &KernelFacts,
    pid: Pid,
    consistent: Consistent,
) -> Result<Onward, MoveError> {
    let mut session = Session::new(channel?);
    // Without the process's ids nothing is opened away: every file call goes home.
    let terms = Terms::of(pid, consistent).ok();
    session
        .send(&Opening::new(facts.clone(), pid, terms))
        .map_err(|e| link_broken(node, e))?;
    match session.recv::<ToHome>() {
        Ok(ToHome::Ready { shares }) => Ok(Onward {
            node,
            session,
            shares,
            relayed: 0,
            book: None,
        }),
        Ok(ToHome::Refused { reason }) => Err(MoveError::Refused { node, reason }),
        Ok(other) => Err(link_broken(node, format!("unexpected answer {other:?}"))),
        Err(e) => Err(MoveError::TargetDown {
            node,
            reason: format!("no answer from its guest: {e}"),
        }),
    }
}

/// Pre-copy's running rounds of `pid`, whose writes `tracker` follows in `areas`: announce
/// the areas to `onward`, learn which of their files it holds, stream the pages (but those
/// files' own) on a helper thread while it runs, and wait there until `onward` has placed
/// them.
fn stream_rounds(
    pid: Pid,
    mut onward: Onward,
    tracker: Tracker,
    areas: Vec<Area>,
) -> Result<Rounds, MoveError> {
    let (notices, notify) =
        io::pipe().map_err(|e| MoveError::Local(format!("cannot make a pipe: {e}")))?;
    let helper = std::thread::spawn(move || {
        // Dropped when the helper ends, however it ends: the loop then reads EOF.
        let mut forward = Forward(notify);
        let node = onward.node;
        let precopy = ToGuest::Precopy {
            areas: areas.clone(),
        };
        let session = &mut onward.session;
        write_message(&mut session.out, &precopy)
            .and_then(|()| session.out.flush())
            .map_err(|e| sending_failed(node, e))?;
        let held = held_answer(&mut session.frames, node)?.unless_switched_off();
        let out = &mut session.out;
        let bytes = dump::dump_first_round(pid, &areas, &held, &tracker, &mut forward, out)
            .map_err(|e| sending_failed(node, e))?;
        // The loop holds a process the rounds slowed down from here to its final round. A
        // loop that no longer reads has let go of the process (it ended).
        let _ = forward.0.write_all(&[Notice::RoundsOver.byte()]);
        node_answer(&mut onward.session.frames, node, Round::First)?;
        let first = FirstRound {
            tracker,
            areas,
            held,
            bytes,
        };
        Ok((onward, first))
    });
    Ok(Rounds::Streaming { helper, notices })
}

/// Send the rest of the image of the process of `departure`, stopped for its final round (all
/// of it without running rounds); once it runs at the node, make its shell. `away`: what it
/// used on other nodes before; `filters`: the seccomp filters rmosix gave it (see
/// `dump::check_movable`); `job`: the processes of its job; `(system, paths)`: where and with
/// which watch the shell's deputy vouches for lookups ([`Deputy::vouch_under`]). Any failure
/// before the node runs it leaves it running at home. Returns the shell's deputy, the
/// session, and what the move cost.
pub fn send_out(
    pid: Pid,
    facts: &KernelFacts,
    (away, filters): (Usage, u32),
    job: &[Pid],
    departure: Departure,
    (system, paths): (SystemFiles, Rc<RefCell<PathWatch>>),
) -> Result<(Deputy, Session, Cost), MoveError> {
    let cpu = Carry::Home { away };
    let (started, slowdown, onward, first, at_exec) = departure.into_final()?;
    let Onward {
        node,
        mut session,
        book,
        ..
    } = onward;
    let frozen = Instant::now();
    let link = |e: io::Error| sending_failed(node, e);
    let sent = match &first {
        Some(first) => {
            // It ran during the first round: it may have started a thread, say.
            movable(pid, filters)
                .and_then(|()| alone(pid, job))
                .and_then(|()| {
                    let (sent, tracker) = ((&first.areas[..], &first.held), &first.tracker);
                    let out = (&mut session.out, at_exec);
                    dump::dump_final_round(pid, facts, &cpu, sent, tracker, out).map_err(link)
                })
        }
        None => write_message(&mut session.out, &ToGuest::Image)
            .and_then(|()| dump::dump(pid, facts, &cpu, &mut session.out, at_exec))
            .map_err(link),
    }
    .and_then(|(header, bytes)| {
        node_answer(&mut session.frames, node, Round::Last).map(|()| (header, bytes))
    });
    // A failure drops the slowdown, which lets the process run on at home.
    let (header, bytes) = sent?;
    slowdown.hand_over();
    let running = Instant::now();
    // The process runs there now: from here on, its shell is all that is left at home. A
    // shell that cannot be made ends the session, which kills the remote too: the process is
    // then lost rather than run twice.
    let mut deputy = match Deputy::take_over(pid, &header.pending_signals()) {
        Ok(deputy) => deputy,
        Err(err) => {
            // SAFETY: killing our own tracee, whose remote dies with the session we drop.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(MoveError::Lost(format!("cannot make its shell: {err}")));
        }
    };
    deputy.vouch_under(system, paths, book.map(|told| *told));
    let frozen = running.duration_since(frozen);
    let freeze_ms = frozen.as_secs_f64() * 1e3;
    let total_ms = ms_since(started);
    let first_bytes = first.as_ref().map_or(0, |f| f.bytes);
    let held_files = first.map_or(0, |f| f.held.len());
    let bytes = first_bytes + bytes;
    info!(
        pid,
        node, bytes, first_bytes, held_files, freeze_ms, total_ms, "migrated"
    );
    let cost = Cost {
        bytes: Some(bytes),
        frozen,
    };
    Ok((deputy, session, cost))
}

/// What a move that was done cost, for the daemon's metrics.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    /// Bytes of the pages of its image, first and final rounds together; `None` where the
    /// supervisor does not count them (an image coming home is read into the shell here).
    pub bytes: Option<u64>,
    /// How long its process stood still.
    pub frozen: Duration,
}

/// What a first round coming home left in the shell for the final round.
pub struct Homecoming {
    /// The injector, pointing into the image's vdso block.
    inj: Injector,
    /// The areas the first round mapped.
    areas: Vec<Area>,
    /// The files home said it holds, whose file pages do not come.
    held: Held,
}

/// Coming home, the first round goes into the shell, which stops being a shell until the
/// final round: no forwarded call comes meanwhile (the guest waits for `Prepared`). First
/// the remote learns which files of `areas` home holds: it found each itself, by digest.
pub fn place_first_round(
    pid: Pid,
    areas: Vec<Area>,
    session: &mut Session,
) -> io::Result<Homecoming> {
    let held = Held::here(&areas);
    session.send(&ToGuest::Held(held.clone()))?;
    let inj = restore::restore_first_round(pid, &areas, &held, &mut session.frames)?;
    Ok(Homecoming { inj, areas, held })
}

/// Restore the remote's image, whose header comes next on `session`, into frozen shell
/// `pid`: its final round after `homecoming`, or all of it. Returns the signals that were
/// pending at the remote and the CPU it used away (from the header).
pub fn restore_home(
    pid: Pid,
    session: &mut Session,
    homecoming: Option<&Homecoming>,
    consistent: &Consistent,
) -> io::Result<(Vec<SigInfo>, Usage)> {
    let header = restore::read_header(&mut session.frames)?;
    let fresh;
    let inj = match homecoming {
        Some(first) => {
            let (inj, areas, held) = (&first.inj, &first.areas, &first.held);
            restore::restore_final_round(pid, inj, areas, held, &header, &mut session.frames)?;
            inj
        }
        None => {
            fresh = restore::restore_into(pid, &header, &mut session.frames)?;
            &fresh
        }
    };
    // The files the process opened away replace home's placeholders for them.
    dfsa::reopen(pid, inj, &header.local_files, Resume::Home(consistent))?;
    Ok((header.pending_signals(), header.cpu.away))
}

/// Pass a remote's first round of `areas` on to `onward`: the areas, `onward`'s answer of
/// the files it holds back to the remote (home passes it on as it came: the remote trusts the
/// node that restores, which checks each file itself), then the pages. Outer error: the
/// remote's session broke; inner: `onward` failed.
pub fn relay_first_round(
    from: &mut Session,
    onward: &mut Onward,
    areas: Vec<Area>,
) -> io::Result<Result<(), MoveError>> {
    let node = onward.node;
    let announced = {
        let mut to = RelayOut::new(&mut onward.session);
        write_message(&mut to, &ToGuest::Precopy { areas }).and_then(|()| to.flush())
    };
    let held = match announced.and_then(|()| AnswerBound::new(&onward.session)) {
        Ok(bound) => held_answer(&mut onward.session.frames, node).map_err(|why| match why {
            MoveError::LinkBroken { node, reason } => link_broken(node, bound.explain(reason)),
            other => other,
        }),
        Err(err) => Err(link_broken(node, err)),
    };
    // A node that failed meanwhile holds nothing: the remote sends its round all the same,
    // and it is read and dropped here, so that the remote stays in step.
    from.send(&ToGuest::Held(held.clone().unwrap_or_default()))?;
    let relayed = {
        let mut to = RelayOut::new(&mut onward.session);
        let onward_ok = held
            .as_ref()
            .map(drop)
            .map_err(|e| io::Error::other(e.to_string()));
        relay_pages(&mut from.frames, &mut to, onward_ok, &mut onward.relayed)
    };
    Ok(match (held, relayed?) {
        (Err(why), _) => Err(why),
        (Ok(_), Err(err)) => Err(link_broken(node, err)),
        (Ok(_), Ok(())) => node_answer(&mut onward.session.frames, node, Round::First),
    })
}

/// `node`'s answer to the areas of a first round: the files it holds.
fn held_answer(
    frames: &mut FrameReader<Box<dyn SessionRead>>,
    node: u16,
) -> Result<Held, MoveError> {
    match frames.message::<ToHome>() {
        Ok(ToHome::Held(held)) => Ok(held),
        Ok(ToHome::Failed { reason }) => Err(MoveError::RestoreFailed { node, reason }),
        Ok(other) => Err(link_broken(node, format!("unexpected answer {other:?}"))),
        Err(e) => Err(link_broken(node, format!("before the first round: {e}"))),
    }
}

/// Pass a remote's image (a whole one, or the final round after a first round that went
/// on already: `prepared`) on to `onward`, and wait until it runs there. The files it holds
/// of trees `onward` does not share go back to home's shell `shell` first, opened beneath
/// home's trees `home` (see `dfsa::take_back`), and leave the image; a move that fails
/// after puts the shell's placeholders back. Outer error: the remote's session broke;
/// inner: `onward` failed, or home could not take a file back. Returns the signals that
/// were pending at the remote.
pub fn relay_on(
    from: &mut Session,
    onward: &mut Onward,
    prepared: bool,
    shell: &mut Deputy,
    home: &Consistent,
) -> io::Result<Result<Vec<SigInfo>, MoveError>> {
    let node = onward.node;
    let mut header = restore::read_header(&mut from.frames)?;
    let unshared = dfsa::take_unshared(&mut header.local_files, &onward.shares);
    let back = match shell.take_back(&unshared, home) {
        Ok(back) => back,
        Err(err) => {
            // Nothing went on: the rest of the image is read and dropped, so that the
            // remote stays in step and runs on.
            let not_sent = Err(io::Error::other("home could not take a file back"));
            let to = &mut RelayOut::new(&mut onward.session);
            // Its own outcome is `not_sent` again.
            let _ = relay_pages(&mut from.frames, to, not_sent, &mut onward.relayed)?;
            return Ok(Err(MoveError::Local(format!(
                "home cannot take back a file node {node} does not share: {err}"
            ))));
        }
    };
    let relayed = relay_image(
        &mut from.frames,
        &mut RelayOut::new(&mut onward.session),
        header,
        prepared,
        &mut onward.relayed,
    );
    let outcome = relayed.map(|relayed| match relayed {
        Relayed::Sent { pending } => {
            node_answer(&mut onward.session.frames, node, Round::Last).map(|()| pending)
        }
        Relayed::Undelivered(err) => Err(link_broken(node, err)),
    });
    if !matches!(outcome, Ok(Ok(_))) {
        shell.give_back(back);
    }
    outcome
}

/// A round of an image, for the answer that closes it.
#[derive(Clone, Copy)]
enum Round {
    /// A pre-copy's first round: the node answers `Prepared`.
    First,
    /// The whole image or a final round: the node answers `Running`.
    Last,
}

/// `node`'s answer to a round: Ok, or why the node does not run the process.
fn node_answer(
    frames: &mut FrameReader<Box<dyn SessionRead>>,
    node: u16,
    round: Round,
) -> Result<(), MoveError> {
    match (round, frames.message::<ToHome>()) {
        (Round::First, Ok(ToHome::Prepared)) | (Round::Last, Ok(ToHome::Running)) => Ok(()),
        (_, Ok(ToHome::Failed { reason })) => Err(MoveError::RestoreFailed { node, reason }),
        (_, Ok(other)) => Err(link_broken(node, format!("unexpected answer {other:?}"))),
        (Round::First, Err(e)) => Err(link_broken(node, format!("during the first round: {e}"))),
        (Round::Last, Err(e)) => Err(link_broken(node, format!("during the restore: {e}"))),
    }
}

/// What became of an image relayed from one session to another.
enum Relayed {
    /// All of it went on. The signals it holds pending, from its header.
    Sent { pending: Vec<SigInfo> },
    /// The onward link failed. The rest of the image was read and dropped.
    Undelivered(io::Error),
}

/// Copy one image, `header` (read already) to end marker, from `from` to `to`: a whole one,
/// or the final round after a first round (`prepared`). An error is the source's.
fn relay_image(
    from: &mut FrameReader<Box<dyn SessionRead>>,
    to: &mut RelayOut,
    header: Header,
    prepared: bool,
    relayed: &mut u64,
) -> io::Result<Relayed> {
    to.next_frame();
    let announced = if prepared {
        Ok(())
    } else {
        write_message(to, &ToGuest::Image)
    };
    let onward = announced.and_then(|()| write_message(to, &header));
    let pending = header.pending_signals();
    Ok(match relay_pages(from, to, onward, relayed)? {
        Ok(()) => Relayed::Sent { pending },
        Err(err) => Relayed::Undelivered(err),
    })
}

/// Copy page frames up to the end marker from `from` to `to`, while `onward` (the state of
/// `to`) holds; then only read them, so that the source stays in step. The outer error is
/// the source's, the inner one `to`'s. `relayed` counts the bytes of the pages passed on.
fn relay_pages(
    from: &mut FrameReader<Box<dyn SessionRead>>,
    to: &mut RelayOut,
    mut onward: io::Result<()>,
    relayed: &mut u64,
) -> io::Result<io::Result<()>> {
    let mut data = Vec::new();
    loop {
        let head = from.next_frame_into(&mut data).map_err(io::Error::other)?;
        to.next_frame();
        // Pre-copy's running rounds each end with a marker: the last one says so.
        let last = matches!(head, FrameHead::Message)
            && !serde_json::from_slice::<EndOfImage>(&data).is_ok_and(|end| end.more_rounds);
        if onward.is_ok() {
            onward = match head {
                FrameHead::Pages { addr } => {
                    *relayed += data.len() as u64;
                    write_pages(to, addr, &data)
                }
                FrameHead::Message => serde_json::from_slice::<EndOfImage>(&data)
                    .map_err(io::Error::other)
                    .and_then(|end| write_message(to, &end))
                    .and_then(|()| to.flush()),
            };
        }
        if last {
            return Ok(onward);
        }
    }
}

/// Let a process frozen by [`freeze`] run again, with the signals held meanwhile queued in
/// it as they came.
pub fn thaw(pid: Pid, signals: Vec<SigInfo>) {
    if let Err(err) = crate::signals::queue_in(pid, &signals) {
        tracing::warn!(pid, %err, "cannot queue the signals held during a freeze");
    }
    let _ = ptrace::cont(pid, 0);
}

/// Milliseconds since `then`, for the log.
pub fn ms_since(then: Instant) -> f64 {
    then.elapsed().as_secs_f64() * 1e3
}

/// A failed send of an image to `node`: a read of the process's memory that failed is this
/// node's failure (the link is fine), anything else the link's.
fn sending_failed(node: u16, err: io::Error) -> MoveError {
    match dump::unread(&err) {
        Some(unread) => MoveError::Local(unread.to_string()),
        None => link_broken(node, err),
    }
}

/// The link to `node` failed during a move.
pub fn link_broken(node: u16, reason: impl ToString) -> MoveError {
    MoveError::LinkBroken {
        node,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rmosix_image::MAX_FRAME;
    use rmosix_seal::{End, SessionKeys};

    use super::*;

    /// A next node that takes a trickle (or nothing, or died without a reset) must not keep
    /// the remote unread past its link's timeout: the relay gives up on it after one frame's
    /// time, reads the rest of the image so that the remote's session stays in step, and says
    /// why. The next node's session is a sealed TCP one, as in a cluster: TCP bounds a whole
    /// send by its timeout, where a Unix socket bounds each piece.
    #[test]
    fn a_relay_gives_up_on_a_next_node_that_takes_a_trickle_and_reads_the_image_to_its_end() {
        const FRAMES: usize = 8;
        let (remote, from) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || {
            let mut out = io::BufWriter::new(remote);
            let data = vec![7u8; MAX_FRAME - 8];
            for i in 0..FRAMES {
                write_pages(&mut out, (i * data.len()) as u64, &data)?;
            }
            write_message(&mut out, &EndOfImage::default())?;
            out.flush()
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut next, _) = listener.accept().unwrap();
        let relayed_all = Arc::new(AtomicBool::new(false));
        let trickle = std::thread::spawn({
            let relayed_all = relayed_all.clone();
            move || {
                // 16 KiB every 100 ms: once the socket buffers are full, a frame takes
                // almost a minute.
                let mut buf = vec![0; 16 << 10];
                while !relayed_all.load(Ordering::Relaxed) && next.read(&mut buf).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        let keys = SessionKeys::generate().unwrap();
        let mut onward = Session::new(Channel::sealed(ours, &keys, End::Home).unwrap());
        let mut from = FrameReader::new(Box::new(from) as Box<dyn SessionRead>);
        let relayed = relay_pages(&mut from, &mut RelayOut::new(&mut onward), Ok(()), &mut 0);
        relayed_all.store(true, Ordering::Relaxed);

        let err = relayed.expect("the remote's session is fine").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        sender
            .join()
            .unwrap()
            .expect("the remote sent its whole image");
        trickle.join().unwrap();
    }

    #[test]
    fn a_notice_is_one_byte_each_way() {
        for percent in 0..=99 {
            let level = Notice::Level(Level::percent(percent));
            assert_eq!(Notice::from_byte(level.byte()), level);
        }
        let over = Notice::RoundsOver;
        assert_eq!(Notice::from_byte(over.byte()), over);
    }
}
