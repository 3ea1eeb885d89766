//! The home supervisor: runs a job under ptrace events only, moves its processes on order,
//! and serves those that run elsewhere through their deputies. One thread, one event loop:
//! ptrace requires that every request come from the thread that attached.
//!
//! This module dispatches. What a process's move state makes of an event is decided in
//! `moves`; the legs of a move are carried out in `legs`; forwarded calls run in `deputy`.
//! A failure that concerns one process (its remote broke, its shell died, a step of its move
//! failed) stays with that process: it is answered, or the process is lost with its reason,
//! and the rest of the job runs on. Only the loop's own poll, signalfd or wait failing ends
//! the job.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rmosix_image::{Area, Frame, KernelFacts, SigInfo, Usage};
use rmosix_wire::{MoveError, MoveKind, Tally};
use tracing::{debug, info, warn};

use crate::deputy::{self, Call, Deputy, ShellNews, freeze};
use crate::dfsa::Consistent;
use crate::event_loop::{SigChld, Turn};
use crate::homepaths::PathWatch;
use crate::inject::Injector;
use crate::legs::{self, Cost, Departure, Due, Homecoming, Onward, ms_since};
use crate::mem::Memory;
use crate::moves::{Action, Event, MoveState, Step};
use crate::ptrace::{self, Pid, Stop};
use crate::seccomp::{self, Listener};
use crate::session::{Asking, Channel, ReadAsk, Session, ToGuest, ToHome};
use crate::signals::Arriving;
use crate::sysfiles::SystemFiles;
use crate::{cputime, facts, maps, spawn};

/// An order from the daemon: move `pid` to `target` (None = home).
#[derive(Debug, Clone, Copy)]
pub struct Order {
    /// Daemon's id for the answer.
    pub id: u64,
    /// Which process.
    pub pid: Pid,
    /// Where to: a node, or None for home.
    pub target: Option<u16>,
}

/// What the supervisor needs from its node's daemon. The tools crate implements it over the
/// control socket; the engine stays free of the wire protocol.
pub trait Daemon {
    /// An fd that becomes readable when orders may be waiting.
    fn order_fd(&self) -> Option<RawFd>;
    /// The next complete order, if any. An error means the daemon went away.
    fn next_order(&mut self) -> io::Result<Option<Order>>;
    /// Answer order `id`.
    fn order_done(&mut self, id: u64, result: Result<(), MoveError>);
    /// A session channel to a guest supervisor on `node`.
    fn open_session(&mut self, node: u16) -> Result<Channel, MoveError>;
    /// This node's file systems that are the same on every node, as the daemon said when it
    /// last opened a session (see `dfsa`). None by default: every file call goes home.
    fn consistent(&self) -> Consistent {
        Consistent::default()
    }
    /// A new supervised process.
    fn started(&mut self, pid: Pid);
    /// A supervised process forked (fork or vfork, not a new thread), told at its own fork
    /// event: the child may be gone by the time the daemon hears of it.
    fn forked(&mut self, pid: Pid);
    /// A process now runs on `node` (None = home).
    fn moved(&mut self, pid: Pid, node: Option<u16>);
    /// A supervised process ended.
    fn ended(&mut self, pid: Pid);
    /// `pid` has just exec'd and waits, stopped before the first instruction of its new
    /// program, for the daemon to say where it should run ([`Daemon::next_placement`]; rule 5
    /// of docs/balancing.md: its image is smallest now). False if no answer will come (no
    /// daemon to ask): it runs on at once.
    fn execed(&mut self, pid: Pid) -> bool;
    /// The daemon's next answer to [`Daemon::execed`], if one waits.
    fn next_placement(&mut self) -> Option<ExecPlacement>;
    /// What the supervisor counted since its last tally, for the daemon's metrics: at most
    /// once a [`TALLY_EVERY`], before the answer of each order, and at the job's end; never
    /// an empty one.
    fn tally(&mut self, tally: Tally);
}

/// How often, at most, the supervisor tells the daemon what it counted while nothing moves
/// (forwarded calls): often enough for a scrape every few seconds, rarely enough to cost
/// nothing.
pub const TALLY_EVERY: Duration = Duration::from_secs(1);

/// Where `mosrun -N` or `-j` asked the main program to run (MOSIX's placement at start):
/// it moves there right after its exec, when its image is smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The node to run on.
    pub node: u16,
    /// `-F`: if it cannot go there, it runs at home. Otherwise, when the node refuses it at
    /// once (unknown, down, unwilling), it is killed before it ran any of its own code, and
    /// `supervise` fails with the reason; a move that fails later leaves it running at home.
    pub fallback: bool,
}

/// The order id of the placement move: it answers the supervisor, not the daemon.
const PLACEMENT_ORDER: u64 = u64::MAX;
/// The order id of a move placing a process at its exec: nobody waits for its answer.
const EXEC_ORDER: u64 = u64::MAX - 1;

/// Where the daemon places a process that has just exec'd (see [`Daemon::execed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecPlacement {
    /// The process, stopped at its exec.
    pub pid: Pid,
    /// The node it should run on; `None`: where it is.
    pub node: Option<u16>,
}

/// How long a process stopped at its exec waits for the daemon's placement before it runs
/// where it is anyway. The daemon answers within a millisecond; one too busy to answer in
/// this time would not place it better than where it is.
const PLACEMENT_WAIT: Duration = Duration::from_millis(200);

/// How the job's main program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// exit status
    Exited(i32),
    /// killed by signal
    Killed(i32),
}

/// Run the program at `path` with `argv` as a supervised job until every process of it has
/// ended, its main program placed first if `placement` says; returns how the main program
/// ended.
pub fn supervise(
    path: &str,
    argv: &[String],
    daemon: &mut dyn Daemon,
    placement: Option<Placement>,
) -> io::Result<JobEnd> {
    let facts = facts::probe()?;
    // Spawn before blocking SIGCHLD and ignoring terminal signals, so that the program
    // inherits the mask and dispositions mosrun was started with.
    let main = spawn::spawn_program(path, argv)?;
    let sigchld = SigChld::new()?;
    // Ctrl-C and Ctrl-\ reach the program itself (it is in the same process group); the
    // supervisor must outlive them to report how the program ended. Terminal stop signals
    // likewise: mosrun stops itself once its program has stopped (follow_group_stop).
    // SAFETY: setting dispositions of our own process.
    unsafe {
        for sig in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    daemon.started(main);
    ptrace::cont(main, 0)?;
    let mut sup = Supervisor {
        daemon,
        facts,
        main,
        main_end: None,
        procs: HashMap::new(),
        farewells: HashMap::new(),
        clocks: Vec::new(),
        sigchld,
        placement,
        placing: None,
        at_exec: HashMap::new(),
        placed_at_exec: HashSet::new(),
        daemon_up: true,
        unplaced: None,
        tally: Tally::default(),
        told: Instant::now(),
        headings: HashMap::new(),
        paths: Rc::default(),
        changes_told: 0,
    };
    sup.procs.insert(main, Proc::home(0));
    let end = sup.run();
    sup.tell(true);
    let end = end?;
    match sup.unplaced {
        Some(why) => Err(io::Error::other(why)),
        None => Ok(end),
    }
}

/// One process of the job: its move state, and what the supervisor holds for it there.
struct Proc {
    moves: MoveState,
    held: Held,
    /// The CPU it used on other nodes, which its kernel here does not count (see `cputime`).
    away: Usage,
    /// The seccomp filters rmosix gave it (home's CPU-time filter, which children inherit).
    filters: u32,
    /// Where it runs: None at home.
    node: Option<u16>,
}

impl Proc {
    /// A process of the job at home; `filters`: those it inherited.
    fn home(filters: u32) -> Proc {
        Proc {
            moves: MoveState::Home,
            held: Held::Nothing,
            away: Usage::default(),
            filters,
            node: None,
        }
    }
}

/// What the supervisor holds for a process in its move state.
enum Held {
    /// At home (or gone): nothing.
    Nothing,
    /// Leaving: its departure.
    Departure(Box<Departure>),
    /// Away or called: its remote.
    Remote(Box<Remote>),
}

/// Home's half of a process that runs elsewhere.
struct Remote {
    node: u16,
    session: Session,
    deputy: Deputy,
    /// While its image is asked for: what the move holds.
    recall: Option<Recall>,
}

/// What a process called away from its remote holds while its image travels.
struct Recall {
    /// When the remote was asked.
    asked: Instant,
    /// The next node's session, greeted already; None: the process comes home.
    onward: Option<Onward>,
    /// The first round is in place at the next node.
    prepared: bool,
    /// The areas of the remote's first round, until it is placed or relayed.
    areas: Option<Vec<Area>>,
    /// A first round that came home, in the frozen shell.
    homecoming: Option<Homecoming>,
    /// The shell is frozen for the image (to take it in, or while it is relayed).
    frozen: bool,
    /// Signals that reached the shell once it was frozen for the image: they go wherever the
    /// process then runs.
    held: Vec<SigInfo>,
}

impl Recall {
    fn new(onward: Option<Onward>) -> Recall {
        Recall {
            asked: Instant::now(),
            onward,
            prepared: false,
            areas: None,
            homecoming: None,
            frozen: false,
            held: Vec::new(),
        }
    }

    /// Freeze the shell `pid` of `deputy` for the image, keeping the signals that arrive
    /// meanwhile; a shell parked after a call goes to its pause first, to be stopped anew.
    fn freeze(&mut self, pid: Pid, deputy: &mut Deputy) -> io::Result<()> {
        if !self.frozen {
            deputy.unpark()?;
            self.held = freeze(pid)?;
            self.frozen = true;
        }
        Ok(())
    }
}

/// Make the loop's `timeout` (None: none yet) `next` if that is sooner.
fn sooner(timeout: &mut Option<Duration>, next: Duration) {
    *timeout = Some(timeout.map_or(next, |t| t.min(next)));
}

/// The sources of the home loop.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Children,
    Daemon,
    /// The session of a process away.
    Remote(Pid),
    /// The session of a process that came home, until its guest's last word.
    Farewell(Pid),
    /// The first round of a process leaving home.
    Departure(Pid),
    /// Home's CPU-time filter number `n`.
    Clock(usize),
    /// Changes to what the answers the processes away keep depend on (see `homepaths`).
    Changes,
}

struct Supervisor<'a> {
    daemon: &'a mut dyn Daemon,
    facts: KernelFacts,
    main: Pid,
    main_end: Option<JobEnd>,
    procs: HashMap<Pid, Proc>,
    /// Sessions of processes that came home, open until their guest's last word.
    farewells: HashMap<Pid, Session>,
    /// The listeners of home's CPU-time filters (see `count_away`); None once every process
    /// that had it ended, until the end of the loop's turn.
    clocks: Vec<Option<Listener>>,
    sigchld: SigChld,
    /// Where the main program goes once it exec'd; taken when the move is ordered.
    placement: Option<Placement>,
    /// The placement move ordered and not yet answered.
    placing: Option<Placement>,
    /// Processes stopped at their exec until the daemon places them, and when they go on
    /// regardless (see [`Daemon::execed`]).
    at_exec: HashMap<Pid, Instant>,
    /// Processes whose move was ordered at their exec, until it starts: they stay stopped
    /// through its rounds (see `legs::Departure`).
    placed_at_exec: HashSet<Pid>,
    /// Whether the daemon's connection still stands.
    daemon_up: bool,
    /// Why the main program could not run where it was placed (it was killed).
    unplaced: Option<String>,
    /// What it counted since it last told the daemon (see [`Daemon::tally`]).
    tally: Tally,
    /// When it last told the daemon.
    told: Instant,
    /// Which way each order under way goes, by order id: counted by outcome once answered.
    headings: HashMap<u64, MoveKind>,
    /// What the answers the processes away keep depend on, and the job's book of them,
    /// shared by their deputies (see `homepaths`).
    paths: Rc<RefCell<PathWatch>>,
    /// The generation of `paths` every remote was told of (see [`Supervisor::on_changes`]).
    changes_told: u64,
}

impl Supervisor<'_> {
    fn run(&mut self) -> io::Result<JobEnd> {
        while !self.procs.is_empty() {
            let mut turn = Turn::new();
            turn.watch(Source::Children, self.sigchld.raw_fd(), false);
            if let Some(fd) = self.daemon.order_fd().filter(|_| self.daemon_up) {
                turn.watch(Source::Daemon, fd, false);
            }
            // The poll wakes at the next switch of a duty cycle slowing a process down, and
            // when a process held at its exec has waited long enough.
            let mut timeout: Option<Duration> = self
                .at_exec
                .values()
                .min()
                .map(|until| until.saturating_duration_since(Instant::now()));
            for (&pid, proc) in &self.procs {
                match &proc.held {
                    Held::Remote(r) => {
                        turn.watch(
                            Source::Remote(pid),
                            r.session.raw_fd(),
                            r.session.buffered(),
                        );
                        if let Some(until) = r.deputy.parked_until() {
                            let next = until.saturating_duration_since(Instant::now());
                            sooner(&mut timeout, next);
                        }
                    }
                    Held::Departure(departure) => {
                        if let Some(fd) = departure.notices_fd() {
                            turn.watch(Source::Departure(pid), fd, false);
                        }
                        if let Some(next) = departure.next_tick() {
                            sooner(&mut timeout, next);
                        }
                    }
                    Held::Nothing => {}
                }
            }
            // Calls of processes away are counted by their deputies: the loop wakes to tell.
            if self
                .procs
                .values()
                .any(|p| matches!(p.held, Held::Remote(_)))
            {
                let next = TALLY_EVERY.saturating_sub(self.told.elapsed());
                sooner(&mut timeout, next);
            }
            if let Some(fd) = self.paths.borrow().fd() {
                turn.watch(Source::Changes, fd, false);
            }
            for (&pid, session) in &self.farewells {
                turn.watch(Source::Farewell(pid), session.raw_fd(), session.buffered());
            }
            for (n, listener) in self.clocks.iter().enumerate() {
                if let Some(listener) = listener {
                    turn.watch(Source::Clock(n), listener.as_raw_fd(), false);
                }
            }
            for source in turn.wait(timeout)? {
                match source {
                    Source::Children => self.on_children()?,
                    Source::Daemon => self.daemon_up = self.on_daemon(),
                    Source::Remote(pid) => {
                        // What already waits decrypted goes in this turn: writes behind that
                        // arrived together then run as one write in the shell.
                        self.on_session(pid);
                        while self.remote(pid).is_some_and(|r| r.session.buffered()) {
                            self.on_session(pid);
                        }
                        // Answers nothing waits for go at the latest now (see `deputy`); a
                        // broken link shows on the session's next read.
                        if let Some(r) = self.remote(pid) {
                            let _ = r.session.out.flush();
                        }
                    }
                    Source::Farewell(pid) => self.on_farewell(pid),
                    Source::Clock(n) => self.on_clock(n),
                    Source::Departure(pid) => self.on_departure(pid),
                    Source::Changes => self.on_changes(),
                }
            }
            // Hung up in this turn: their indices named the sources until now.
            self.clocks.retain(Option::is_some);
            self.step_departures();
            self.release_at_exec();
            self.unpark_shells();
            // A change heard while serving one process (its deputy drains the watch before
            // each answer, and so does a move's telling of the book) leaves nothing for the
            // watch's descriptor to wake the loop with: every other remote is told now, not
            // with its own next answer.
            if self.paths.borrow().generation() != self.changes_told {
                self.on_changes();
            }
            self.tell(false);
        }
        Ok(self.main_end.unwrap_or(JobEnd::Exited(0)))
    }

    /// Shells parked since their last call for long enough go to their pause (see
    /// `deputy::PARK_FOR`).
    fn unpark_shells(&mut self) {
        let now = Instant::now();
        let mut failed = Vec::new();
        for (&pid, proc) in &mut self.procs {
            if let Held::Remote(r) = &mut proc.held
                && let Err(err) = r.deputy.unpark_if_due(now)
            {
                failed.push((pid, err));
            }
        }
        for (pid, err) in failed {
            self.handle(pid, Event::Broken(format!("its shell failed: {err}")));
        }
    }

    /// Tell the daemon what was counted, if anything was and `now` or a [`TALLY_EVERY`] has
    /// passed since it was last told.
    fn tell(&mut self, now: bool) {
        if !now && self.told.elapsed() < TALLY_EVERY {
            return;
        }
        for proc in self.procs.values_mut() {
            if let Held::Remote(r) = &mut proc.held {
                take_call_times(&mut self.tally, &mut r.deputy);
            }
        }
        self.told = Instant::now();
        if !self.tally.is_empty() {
            self.daemon.tally(std::mem::take(&mut self.tally));
        }
    }

    /// Whatever woke the loop, the duty cycles keep time, and a process leaving home that is
    /// where its next leg needs it goes on (see `legs::Departure::due`): its final round goes,
    /// or its move fails and it runs on here.
    fn step_departures(&mut self) {
        if !self
            .procs
            .values()
            .any(|p| matches!(p.held, Held::Departure(_)))
        {
            return;
        }
        let job = self.job();
        let mut due = Vec::new();
        for (&pid, proc) in &mut self.procs {
            if let Held::Departure(departure) = &mut proc.held {
                departure.tick();
                due.extend(departure.due(&job).map(|result| (pid, result)));
            }
        }
        for (pid, due) in due {
            match due {
                Due::Final => self.handle(pid, Event::Done(Step::FirstRoundOut, Ok(()))),
                Due::Failed(why) => {
                    // Dropped, the departure lets the process go.
                    self.take_held(pid);
                    self.handle(pid, Event::Done(Step::FirstRoundOut, Err(why)));
                }
                Due::Again { to, execs } => {
                    info!(
                        pid,
                        "it exec'd during its running rounds: its move begins again"
                    );
                    self.take_held(pid);
                    for event in self.leave(pid, to, execs) {
                        self.handle(pid, event);
                    }
                }
            }
        }
    }

    /// Every ptrace stop and exit waiting to be collected.
    fn on_children(&mut self) -> io::Result<()> {
        self.sigchld.drain();
        loop {
            match ptrace::wait(-1, libc::WNOHANG) {
                Ok(Some((pid, stop))) => self.on_stop(pid, stop),
                Ok(None) => return Ok(()),
                // No traced child is left: whatever the table still lists is gone.
                Err(err) if err.raw_os_error() == Some(libc::ECHILD) => {
                    for pid in self.procs.keys().copied().collect::<Vec<_>>() {
                        self.ended(pid, JobEnd::Killed(libc::SIGKILL));
                    }
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// The first round's helper of a process leaving home said something (a throttle level,
    /// the end of the rounds) or ended: then the process is asked to stop for its final
    /// round (see `step_departures`).
    fn on_departure(&mut self, pid: Pid) {
        if let Some(Proc {
            held: Held::Departure(departure),
            ..
        }) = self.procs.get_mut(&pid)
        {
            departure.read_notices();
        }
    }

    /// Orders from the daemon; false once it is gone (processes stay where they are).
    fn on_daemon(&mut self) -> bool {
        // Orders first: taking them empties the daemon's wake-up fd, so a placement that
        // comes after wakes the loop anew.
        let up = loop {
            match self.daemon.next_order() {
                Ok(Some(order)) => self.on_order(order),
                Ok(None) => break true,
                Err(err) => {
                    warn!(%err, "lost the daemon; processes stay where they are");
                    break false;
                }
            }
        };
        while let Some(placed) = self.daemon.next_placement() {
            self.on_placement(placed);
        }
        up
    }

    /// The daemon placed a process held at its exec: it moves there, or runs here. An answer
    /// that comes after the process went on (see [`PLACEMENT_WAIT`]) is dropped.
    fn on_placement(&mut self, placed: ExecPlacement) {
        let pid = placed.pid;
        if self.at_exec.remove(&pid).is_none() {
            debug!(pid, "a placement came too late: it runs where it is");
            return;
        }
        if let Some(node) = placed.node {
            info!(pid, node, "placing it at its exec");
            self.order_at_exec(pid, EXEC_ORDER, node);
        }
        warn_unless_gone(pid, ptrace::cont(pid, 0));
    }

    /// Order the move of `pid`, stopped at its exec, to `node`: it stays stopped through the
    /// move's rounds (see `legs::Departure`).
    fn order_at_exec(&mut self, pid: Pid, order: u64, node: u16) {
        self.placed_at_exec.insert(pid);
        let to = Some(node);
        self.handle(pid, Event::Order { order, to });
        // Taken by the move's start, unless the order did not start one.
        self.placed_at_exec.remove(&pid);
    }

    /// Processes held at their exec go on where they are once they have waited
    /// [`PLACEMENT_WAIT`], and all of them once the daemon is gone.
    fn release_at_exec(&mut self) {
        let now = Instant::now();
        let daemon_up = self.daemon_up;
        let due: Vec<Pid> = self
            .at_exec
            .iter()
            .filter(|&(_, &until)| !daemon_up || until <= now)
            .map(|(&pid, _)| pid)
            .collect();
        for pid in due {
            self.at_exec.remove(&pid);
            debug!(pid, "no placement in time: it runs where it is");
            warn_unless_gone(pid, ptrace::cont(pid, 0));
        }
    }

    fn on_order(&mut self, order: Order) {
        if !self.procs.contains_key(&order.pid) {
            let why = MoveError::Local(format!("process {} is not supervised here", order.pid));
            self.daemon.order_done(order.id, Err(why));
            return;
        }
        let event = Event::Order {
            order: order.id,
            to: order.target,
        };
        self.handle(order.pid, event);
    }

    /// Feed `event` to `pid`'s move state and carry out what it decides, and what the
    /// outcomes of those steps decide in turn.
    fn handle(&mut self, pid: Pid, event: Event) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let Some(proc) = self.procs.get_mut(&pid) else {
                return;
            };
            if let Event::Order { order, to } = &event {
                self.headings.insert(*order, heading(proc.node, *to));
            }
            let (next, actions) = proc.moves.on(event);
            proc.moves = next;
            for action in actions {
                events.extend(self.apply(pid, action));
            }
        }
    }

    /// Carry out one action for `pid`; a step reports how it ended.
    fn apply(&mut self, pid: Pid, action: Action) -> Vec<Event> {
        let outcome = match action {
            Action::Answer { order, result } => {
                if let Err(why) = &result {
                    warn!(pid, %why, "move failed");
                }
                // A move done was counted as it was made (`Action::Moved`).
                if let (Some(kind), Err(_)) = (self.headings.remove(&order), &result) {
                    self.tally.count_move(kind, &result);
                }
                // The daemon has the figures before the answer, so whoever waits for it finds
                // them counted.
                self.tell(true);
                if order == PLACEMENT_ORDER {
                    self.placed(pid, result);
                } else if order == EXEC_ORDER {
                    // Failed, it runs on here, as if it had not been placed (logged above).
                } else {
                    self.daemon.order_done(order, result);
                }
                None
            }
            Action::Moved(node) => {
                if let Some(proc) = self.procs.get_mut(&pid) {
                    let kind = heading(proc.node, node);
                    proc.node = node;
                    self.tally.count_move(kind, &Ok(()));
                }
                self.daemon.moved(pid, node);
                None
            }
            Action::Leave { to } => return self.leave(pid, to, 0),
            Action::SendFinal { to } => Some(Event::Done(Step::FinalOut, self.send_final(pid, to))),
            Action::Recall { to } => Some(Event::Done(Step::Recall, self.recall(pid, to))),
            Action::PlaceFirstRound => Some(self.place_first_round(pid)),
            Action::RelayFirstRound { .. } => Some(self.relay_first_round(pid)),
            Action::Restore => Some(self.restore(pid)),
            Action::Relay { .. } => Some(self.relay(pid)),
            Action::Stay { why } => self.stay(pid, &why).err().map(|err| {
                Event::Broken(format!(
                    "{why}, and the shell could not take it back: {err}"
                ))
            }),
            Action::Dismiss => {
                if let Some(Held::Remote(mut r)) = self.take_held(pid) {
                    let _ = r.session.send(&ToGuest::Ended);
                }
                None
            }
            Action::Lose { why } => {
                self.lose(pid, &why);
                None
            }
        };
        outcome.into_iter().collect()
    }

    fn take_held(&mut self, pid: Pid) -> Option<Held> {
        let proc = self.procs.get_mut(&pid)?;
        let mut held = std::mem::replace(&mut proc.held, Held::Nothing);
        // Its deputy goes: what it counted stays.
        if let Held::Remote(r) = &mut held {
            take_call_times(&mut self.tally, &mut r.deputy);
        }
        Some(held)
    }

    fn put_held(&mut self, pid: Pid, held: Held) {
        if let Some(proc) = self.procs.get_mut(&pid) {
            proc.held = held;
        }
    }

    /// The remote of `pid`, if it is away.
    fn remote(&mut self, pid: Pid) -> Option<&mut Remote> {
        match &mut self.procs.get_mut(&pid)?.held {
            Held::Remote(r) => Some(r),
            _ => None,
        }
    }

    // ---- Moving out ----

    /// Check that `pid` can move, greet `to` and ask the process to stop, so that its first
    /// round can begin. The loop serves the job meanwhile (see `legs::Departure`). `execs`:
    /// how often the move began again because the process exec'd.
    fn leave(&mut self, pid: Pid, to: u16, execs: u8) -> Vec<Event> {
        let frozen = self.placed_at_exec.remove(&pid);
        let started = (|| {
            let filters = self.procs.get(&pid).map_or(0, |p| p.filters);
            legs::movable(pid, filters)?;
            let channel = self.daemon.open_session(to);
            let mut onward = legs::greet(channel, to, &self.facts, pid, self.daemon.consistent())?;
            let broken = |err| legs::link_broken(to, err);
            let session = &mut onward.session;
            let told = deputy::tell_book_ahead(pid, &self.paths, session).map_err(broken)?;
            if frozen {
                deputy::tell_numbers_ahead(pid, session).map_err(broken)?;
            }
            onward.book = told.map(Box::new);
            Ok(onward)
        })();
        match started {
            Ok(onward) => {
                let departure = legs::Departure::new(pid, onward, execs, frozen);
                self.put_held(pid, Held::Departure(Box::new(departure)));
                vec![Event::Done(Step::Leave, Ok(()))]
            }
            Err(why) => vec![Event::Done(Step::Leave, Err(why))],
        }
    }

    /// The processes of the job.
    fn job(&self) -> Vec<Pid> {
        self.procs.keys().copied().collect()
    }

    /// The first round is over and the process stopped: send the rest of its image.
    fn send_final(&mut self, pid: Pid, to: u16) -> Result<(), MoveError> {
        let Some(Held::Departure(departure)) = self.take_held(pid) else {
            return Err(MoveError::Local("no departure under way".to_owned()));
        };
        let own = self
            .procs
            .get(&pid)
            .map_or((Usage::default(), 0), |p| (p.away, p.filters));
        let job = self.job();
        let system = SystemFiles::listed(&self.daemon.consistent().system);
        let vouch = (system, Rc::clone(&self.paths));
        let (mut deputy, mut session, cost) =
            legs::send_out(pid, &self.facts, own, &job, *departure, vouch)?;
        // A link that breaks here shows on the session's next read, which loses the process.
        if let Err(err) = deputy.tell_known(&mut session) {
            debug!(pid, %err, "cannot tell the remote what the job's lookups found");
        }
        self.count_cost(cost);
        let remote = Remote {
            node: to,
            session,
            deputy,
            recall: None,
        };
        self.put_held(pid, Held::Remote(Box::new(remote)));
        Ok(())
    }

    // ---- Calling a remote away ----

    /// Ask `pid`'s remote for its image, to bring it home or (greeting `to` first, so that a
    /// node that will not take it costs it nothing) to pass it on.
    fn recall(&mut self, pid: Pid, to: Option<u16>) -> Result<(), MoveError> {
        let onward = match to {
            Some(node) => {
                let channel = self.daemon.open_session(node);
                let consistent = self.daemon.consistent();
                Some(legs::greet(channel, node, &self.facts, pid, consistent)?)
            }
            None => None,
        };
        let Some(r) = self.remote(pid) else {
            return Err(MoveError::Local("no remote".to_owned()));
        };
        r.recall = Some(Recall::new(onward));
        // The remote sends a first round while it runs. A broken link shows on the
        // session's next read, which loses the process and answers the order.
        let _ = r.session.send(&ToGuest::SendImage);
        r.deputy
            .recall()
            .map_err(|e| MoveError::Local(format!("cannot interrupt the shell: {e}")))
    }

    /// Coming home, the first round goes into the shell, which stays frozen until the final
    /// round; signals meanwhile stay pending in it, to be delivered where the process then
    /// runs.
    fn place_first_round(&mut self, pid: Pid) -> Event {
        let Some(r) = self.remote(pid) else {
            return Event::Done(
                Step::FirstRoundIn,
                Err(MoveError::Local("no remote".into())),
            );
        };
        let node = r.node;
        let Some(recall) = r.recall.as_mut() else {
            return Event::Broken("a first round with no recall".into());
        };
        let areas = recall.areas.take().unwrap_or_default();
        let placed = recall
            .freeze(pid, &mut r.deputy)
            .and_then(|()| legs::place_first_round(pid, areas, &mut r.session));
        match placed {
            Ok(homecoming) => {
                recall.homecoming = Some(homecoming);
                // A broken link shows on the session's next read.
                let _ = r.session.send(&ToGuest::Prepared);
                Event::Done(Step::FirstRoundIn, Ok(()))
            }
            Err(err) => Event::Done(Step::FirstRoundIn, Err(home_cannot_hold(node, err))),
        }
    }

    /// A remote moving on sends its first round: pass it to the next node and, once that node
    /// has placed it, tell the remote to send the final round.
    fn relay_first_round(&mut self, pid: Pid) -> Event {
        let Some(r) = self.remote(pid) else {
            return Event::Done(
                Step::FirstRoundIn,
                Err(MoveError::Local("no remote".into())),
            );
        };
        let from = r.node;
        let Some(recall) = r.recall.as_mut() else {
            return Event::Broken("a first round with no recall".into());
        };
        let (Some(onward), Some(areas)) = (recall.onward.as_mut(), recall.areas.take()) else {
            return Event::Broken("a first round with no next node".into());
        };
        match legs::relay_first_round(&mut r.session, onward, areas) {
            Err(err) => Event::Broken(format!("link to node {from} lost: {err}")),
            Ok(Err(why)) => Event::Done(Step::FirstRoundIn, Err(why)),
            Ok(Ok(())) => {
                recall.prepared = true;
                // A broken link shows on the session's next read.
                let _ = r.session.send(&ToGuest::Prepared);
                Event::Done(Step::FirstRoundIn, Ok(()))
            }
        }
    }

    /// Restore the remote's image into the shell.
    fn restore(&mut self, pid: Pid) -> Event {
        // The files it opened away are opened again beneath home's own consistent trees.
        let consistent = self.daemon.consistent();
        let Some(r) = self.remote(pid) else {
            return Event::Done(Step::Restore, Err(MoveError::Local("no remote".into())));
        };
        let node = r.node;
        // A process that goes home by itself was not recalled.
        let recall = r.recall.get_or_insert_with(|| Recall::new(None));
        if let Err(err) = recall.freeze(pid, &mut r.deputy) {
            return Event::Broken(format!("its shell cannot be frozen: {err}"));
        }
        let started = Instant::now();
        let (pending, away) = match legs::restore_home(
            pid,
            &mut r.session,
            recall.homecoming.as_ref(),
            &consistent,
        ) {
            Ok(restored) => restored,
            Err(err) => return Event::Done(Step::Restore, Err(home_cannot_hold(node, err))),
        };
        let frozen = started.elapsed();
        let freeze_ms = frozen.as_secs_f64() * 1e3;
        let precopied = recall.homecoming.is_some();
        let total_ms = ms_since(recall.asked);
        info!(pid, node, precopied, freeze_ms, total_ms, "came home");
        self.count_cost(Cost {
            bytes: None,
            frozen,
        });
        let Some(Held::Remote(r)) = self.take_held(pid) else {
            unreachable!("the remote was just used");
        };
        let Remote {
            mut session,
            recall,
            ..
        } = *r;
        self.part_from(pid, session_ended(&mut session).then_some(session));
        self.count_away(pid, away);
        let mut held = recall.map(|r| r.held).unwrap_or_default();
        held.extend(pending);
        legs::thaw(pid, held);
        Event::Done(Step::Restore, Ok(()))
    }

    /// Pass the remote's image on to the next node, which runs it; the old remote is told the
    /// process runs elsewhere.
    fn relay(&mut self, pid: Pid) -> Event {
        // Files of trees the next node does not share come back beneath home's own.
        let home = self.daemon.consistent();
        let Some(r) = self.remote(pid) else {
            return Event::Done(Step::Relay, Err(MoveError::Local("no remote".into())));
        };
        let from = r.node;
        let Some(recall) = r.recall.as_mut() else {
            return Event::Broken("an image with no recall".into());
        };
        if let Err(err) = recall.freeze(pid, &mut r.deputy) {
            return Event::Broken(format!("its shell cannot be frozen: {err}"));
        }
        let Some(onward) = recall.onward.as_mut() else {
            return Event::Broken("an image with no next node".into());
        };
        let started = Instant::now();
        let shell = &mut r.deputy;
        let pending = match legs::relay_on(&mut r.session, onward, recall.prepared, shell, &home) {
            Err(err) => return Event::Broken(format!("link to node {from} lost: {err}")),
            Ok(Err(why)) => return Event::Done(Step::Relay, Err(why)),
            Ok(Ok(pending)) => pending,
        };
        let recall = r.recall.take().expect("checked above");
        let mut onward = recall.onward.expect("checked above");
        let (to, bytes) = (onward.node, onward.relayed);
        std::mem::swap(&mut r.session, &mut onward.session);
        r.node = to;
        let old = onward.session;
        if let Err(err) = r.deputy.idle() {
            return Event::Broken(format!("its shell cannot idle: {err}"));
        }
        let mut held = recall.held;
        held.extend(pending);
        // A broken link shows on the session's next read.
        let _ = held
            .into_iter()
            .try_for_each(|info| deputy::relay(&mut r.session, info));
        let _ = r.deputy.tell_known_to_next(&mut r.session);
        let precopied = recall.prepared;
        let frozen = started.elapsed();
        let (freeze_ms, total_ms) = (frozen.as_secs_f64() * 1e3, ms_since(recall.asked));
        info!(
            pid,
            from,
            node = to,
            precopied,
            bytes,
            freeze_ms,
            total_ms,
            "moved on"
        );
        let mut old = old;
        self.part_from(pid, session_ended(&mut old).then_some(old));
        self.count_cost(Cost {
            bytes: Some(bytes),
            frozen,
        });
        Event::Done(Step::Relay, Ok(()))
    }

    /// The move failed after the remote was asked for its image: the guest still holds the
    /// process, frozen or running. Make the shell a shell again (a restore may have begun in
    /// it), tell the remote it runs on, and pass it the signals held meanwhile.
    fn stay(&mut self, pid: Pid, why: &MoveError) -> io::Result<()> {
        let Some(r) = self.remote(pid) else {
            return Ok(());
        };
        warn!(pid, node = r.node, %why, "the process stays at its remote");
        let recall = r.recall.take();
        if recall.as_ref().is_some_and(|rc| rc.frozen) {
            r.deputy.strip_again()?;
        }
        r.session.send(&ToGuest::Stay {
            reason: why.to_string(),
        })?;
        for info in recall.map(|rc| rc.held).unwrap_or_default() {
            deputy::relay(&mut r.session, info)?;
        }
        Ok(())
    }

    /// Process `pid`, frozen and home again, used `away` on other nodes. Its kernel here
    /// counts none of it: give it home's CPU-time filter (once; its children inherit it), so
    /// that its CPU-time calls come here to have it added (see `cputime`). Without the
    /// filter (a kernel that refuses it) its clocks count only what it used here.
    fn count_away(&mut self, pid: Pid, away: Usage) {
        let Some(proc) = self.procs.get_mut(&pid) else {
            return;
        };
        proc.away = away;
        if proc.filters > 0 || away.cpu_ns() == 0 {
            return;
        }
        let installed = Memory::open(pid)
            .and_then(|mem| Injector::find(&mem, &maps::read(pid)?))
            .and_then(|inj| seccomp::install_filter(pid, &inj, &seccomp::build_clock_filter()));
        match installed {
            Ok(listener) => {
                proc.filters += 1;
                self.clocks.push(Some(listener));
            }
            Err(err) => warn!(pid, %err, "its CPU-time clocks will count only what it used here"),
        }
    }

    /// A CPU-time call of a process that has been away (or of one of its children), handed
    /// over by home's filter: answer it with what the caller used here and away.
    fn on_clock(&mut self, index: usize) {
        let Some(Some(listener)) = self.clocks.get(index) else {
            return;
        };
        let notif = match listener.recv() {
            Ok(notif) => notif,
            // Every process that had the filter ended: the listener would poll ready for
            // ever, and the loop spin (5 CPU-seconds of mosrun in a build whose compiler
            // drivers came home to fork).
            Err(_) if listener.hung_up() => {
                self.clocks[index] = None;
                return;
            }
            // The caller was interrupted before we read it.
            Err(_) => return,
        };
        let caller = notif.pid as Pid;
        let (nr, args) = (i64::from(notif.data.nr), notif.data.args);
        let away = self
            .procs
            .get(&caller)
            .map_or_else(Usage::default, |p| p.away);
        let answered = cputime::used_by(caller).and_then(|own| {
            let usage = own.plus(&away);
            let (ret, writes) = match nr {
                libc::SYS_times => cputime::times_at_home(caller, &args, &usage)?,
                _ => {
                    cputime::answer(nr, &args, &usage).unwrap_or((-i64::from(libc::ENOSYS), vec![]))
                }
            };
            let mem = Memory::open(caller)?;
            for (at, bytes) in writes {
                mem.write(at, &bytes)?;
            }
            Ok(ret)
        });
        let ret = answered.unwrap_or(-i64::from(libc::EFAULT));
        if let Err(err) = listener.respond(notif.id, ret)
            && err.raw_os_error() != Some(libc::ENOENT)
        {
            warn!(caller, %err, "cannot answer a CPU-time call");
        }
    }

    /// Count what a move that was done cost.
    fn count_cost(&mut self, cost: Cost) {
        let us = u64::try_from(cost.frozen.as_micros()).unwrap_or(u64::MAX);
        self.tally.count_freeze(us);
        if let Some(bytes) = cost.bytes {
            self.tally.count_bytes(bytes);
        }
    }

    /// Keep the session of a process that came home until its guest's last word.
    fn part_from(&mut self, pid: Pid, session: Option<Session>) {
        if let Some(session) = session {
            self.farewells.insert(pid, session);
        }
    }

    /// The last word of a guest whose process came home: signals it got after the image was
    /// taken. They are raised again here, where the process now is.
    fn on_farewell(&mut self, pid: Pid) {
        let Some(mut session) = self.farewells.remove(&pid) else {
            return;
        };
        if let Ok(ToHome::Late { signals }) = session.recv::<ToHome>()
            && self.procs.contains_key(&pid)
        {
            // It runs here now: sent from outside, they keep their siginfo where the kernel
            // lets them (see `signals`).
            let mut late = Arriving::default();
            for info in signals.into_iter().filter(SigInfo::is_valid) {
                late.send(pid, info);
            }
        }
    }

    // ---- A process away ----

    /// The remote of `pid` sent something.
    fn on_session(&mut self, pid: Pid) {
        let Some(r) = self.remote(pid) else {
            return;
        };
        let node = r.node;
        let msg: ToHome = match r.session.recv() {
            Ok(msg) => msg,
            Err(err) => {
                let owed = match r.deputy.owed() {
                    0 => String::new(),
                    n => format!("; {n} bytes it was told it wrote were never written"),
                };
                return self.handle(
                    pid,
                    Event::Broken(format!("link to node {node} lost: {err}{owed}")),
                );
            }
        };
        let event = match msg {
            ToHome::Call {
                id,
                nr,
                args,
                sends,
                same,
                vouch,
                numbers,
                lend,
            } => {
                let asking = Asking {
                    same,
                    vouch,
                    numbers,
                    lend,
                };
                match self.serve_call(pid, id, nr, args, sends, asking) {
                    Ok(()) => return,
                    Err(err) => Event::Broken(format!("a forwarded call failed: {err}")),
                }
            }
            ToHome::Read(read) => match self.serve_read(pid, read) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("a forwarded read failed: {err}")),
            },
            ToHome::Consumed { fd, bytes } => {
                r.deputy.consumed(fd, bytes);
                return;
            }
            ToHome::Offset { fd, pos } => match r.deputy.offset(fd, pos) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("a seek of a file held away failed: {err}")),
            },
            // The program has the file already: the shell follows whatever moves are asked.
            ToHome::Opened {
                id,
                fd,
                path,
                flags,
            } => match r.deputy.opened_away(id, fd, path, flags) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("an open made away does not fit: {err}")),
            },
            ToHome::Closed { id, fd } => match r.deputy.closed_away(id, fd, &mut r.session) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("a close made away does not fit: {err}")),
            },
            // The program was told it closed the file: the shell closes it whatever moves
            // are asked for.
            ToHome::CloseBehind { id, fd } => match r.deputy.close_behind(id, fd, &mut r.session) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("a close behind the program failed: {err}")),
            },
            ToHome::Follow => match r.deputy.follow(&mut r.session) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("the shell cannot follow its remote: {err}")),
            },
            ToHome::WriteBehind { fd } => match self.serve_behind(pid, fd) {
                Ok(()) => return,
                Err(err) => Event::Broken(format!("a write behind failed: {err}")),
            },
            ToHome::Going { needs_home, .. } => Event::Going { needs_home },
            ToHome::Precopy { areas } => {
                if let Some(recall) = r.recall.as_mut() {
                    recall.areas = Some(areas);
                }
                Event::FirstRound
            }
            ToHome::Stopped { sig } if valid_signal(sig) => {
                r.deputy.follow_stop(sig);
                return;
            }
            ToHome::Died { sig } if valid_signal(sig) => {
                info!(pid, sig, "remote killed by a signal");
                // The remote is gone: its session's end must not be taken for a lost node.
                let Some(Held::Remote(mut r)) = self.take_held(pid) else {
                    return;
                };
                if let Err(err) = r.deputy.die_by(sig) {
                    warn!(pid, %err, "the shell cannot die by its remote's signal");
                    // SAFETY: killing our own tracee, whose remote is dead.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                Event::Died
            }
            other => Event::Broken(format!("its remote sent {other:?}")),
        };
        self.handle(pid, event);
    }

    /// Run a call the remote of `pid` forwarded, or refuse it if it does not fit the table.
    /// `same`: an open of a system file, whose file home describes (see `sysfiles`).
    fn serve_call(
        &mut self,
        pid: Pid,
        id: u64,
        nr: i64,
        args: [u64; 6],
        sends: u32,
        asking: Asking,
    ) -> io::Result<()> {
        let Some(r) = self.remote(pid) else {
            return Ok(());
        };
        tracing::trace!(id, nr, pid, "call");
        refuse_while_coming_home(r)?;
        match deputy::read_call(&mut r.session.frames, id, nr, args, sends)? {
            Ok(call) => r.deputy.serve(call.asking(asking), &mut r.session),
            Err(refusal) => r.deputy.refuse(&mut r.session, id, refusal),
        }
    }

    /// Something the answers the processes away keep depend on changed: they forget them.
    fn on_changes(&mut self) {
        // Drained here, not only by the deputies of processes away: with none away (all
        // came home), the watch's descriptor would stay readable and wake the loop at once,
        // for as long as the job lives.
        self.paths.borrow_mut().changed();
        self.changes_told = self.paths.borrow().generation();
        for pid in self.job() {
            let Some(r) = self.remote(pid) else {
                continue;
            };
            if let Err(err) = r.deputy.on_changes(&mut r.session) {
                self.handle(
                    pid,
                    Event::Broken(format!("cannot tell the remote of a change: {err}")),
                );
            }
        }
    }

    /// A read the remote of `pid` asks bytes of the file for (see `readahead`).
    fn serve_read(&mut self, pid: Pid, read: ReadAsk) -> io::Result<()> {
        let Some(r) = self.remote(pid) else {
            return Ok(());
        };
        tracing::trace!(id = read.id, fd = read.fd, "read");
        refuse_while_coming_home(r)?;
        r.deputy.serve_read(read, &mut r.session)
    }

    /// Run a write the remote of `pid` wrote behind, after the calls before it.
    fn serve_behind(&mut self, pid: Pid, fd: i32) -> io::Result<()> {
        let Some(r) = self.remote(pid) else {
            return Ok(());
        };
        refuse_while_coming_home(r)?;
        let Frame::Pages { addr, data } =
            r.session.frames.next_frame().map_err(io::Error::other)?
        else {
            return Err(io::Error::other("a write behind without its bytes"));
        };
        let call = Call::behind(fd, addr, data).map_err(io::Error::other)?;
        r.deputy.serve(call, &mut r.session)
    }

    // ---- ptrace stops ----

    fn on_stop(&mut self, pid: Pid, stop: Stop) {
        match stop {
            Stop::Exited(code) => return self.ended(pid, JobEnd::Exited(code)),
            Stop::Killed(sig) => return self.ended(pid, JobEnd::Killed(sig)),
            _ => {}
        }
        let Some(proc) = self.procs.get_mut(&pid) else {
            // A new child may report before its parent's fork event.
            self.procs.insert(pid, Proc::home(0));
            self.daemon.started(pid);
            return warn_unless_gone(pid, ptrace::cont(pid, 0));
        };
        // A process leaving home: the duty cycle slowing it down keeps its own stops; the
        // others (signals, job control, forks) are served below as for any process.
        if let Held::Departure(departure) = &mut proc.held
            && departure.takes(stop)
        {
            return;
        }
        let recalled = matches!(proc.moves, MoveState::Called { .. });
        if let Held::Remote(r) = &mut proc.held {
            match r.deputy.on_stop(stop, recalled, &mut r.session) {
                Ok(ShellNews::Nothing) => {}
                Ok(ShellNews::GroupStop(sig)) => self.follow_group_stop(pid, sig),
                Err(err) => self.handle(pid, Event::Broken(format!("its shell failed: {err}"))),
            }
            return;
        }
        if stop == Stop::Event(libc::PTRACE_EVENT_EXEC) {
            if pid == self.main && self.placement.is_some() {
                // Before it runs a single instruction of the new program: a node that cannot
                // take it refuses now, and it dies without having run.
                self.place_main();
            } else if self.daemon_up && self.daemon.execed(pid) {
                // Held here until the daemon places it (`on_placement`).
                self.at_exec.insert(pid, Instant::now() + PLACEMENT_WAIT);
                return;
            }
        }
        let result = match stop {
            Stop::Event(event)
                if event == libc::PTRACE_EVENT_FORK
                    || event == libc::PTRACE_EVENT_VFORK
                    || event == libc::PTRACE_EVENT_CLONE =>
            {
                match ptrace::event_msg(pid) {
                    Ok(child) => {
                        if event != libc::PTRACE_EVENT_CLONE {
                            self.daemon.forked(pid);
                        }
                        // A child has its parent's seccomp filters, home's CPU-time one too.
                        let inherited = self.procs.get(&pid).map_or(0, |p| p.filters);
                        match self.procs.entry(child as Pid) {
                            Entry::Vacant(entry) => {
                                entry.insert(Proc::home(inherited));
                                self.daemon.started(child as Pid);
                            }
                            Entry::Occupied(mut entry) => entry.get_mut().filters = inherited,
                        }
                        ptrace::cont(pid, 0)
                    }
                    Err(err) => Err(err),
                }
            }
            Stop::Signal(sig) => ptrace::cont(pid, sig),
            Stop::Group(sig) => {
                let listened = ptrace::listen(pid);
                self.follow_group_stop(pid, sig);
                listened
            }
            _ => ptrace::cont(pid, 0),
        };
        warn_unless_gone(pid, result);
    }

    /// The main program stopped at its exec: if it was placed, order its move now, once (a
    /// later exec does not move it again). Greeting the node is part of the order, so a
    /// node that is down, unknown or unwilling answers before the program runs; a move that
    /// fails later, during the rounds, leaves it running here, as `fallback` would.
    fn place_main(&mut self) {
        let Some(placement) = self.placement else {
            return;
        };
        self.placing = self.placement.take();
        self.order_at_exec(self.main, PLACEMENT_ORDER, placement.node);
        // Not refused at once: the program is let go from its exec stop (to be stopped again
        // through its rounds). Should the move fail now, it runs on at home.
        if let Some(placing) = self.placing.as_mut() {
            placing.fallback = true;
        }
    }

    /// The placement move of the main program `pid` ended with `result`.
    fn placed(&mut self, pid: Pid, result: Result<(), MoveError>) {
        let Some(placement) = self.placing.take() else {
            return;
        };
        match result {
            Ok(()) => info!(pid, node = placement.node, "placed"),
            Err(why) if placement.fallback => {
                info!(pid, node = placement.node, %why, "not placed: it runs at home");
            }
            Err(why) => {
                self.unplaced = Some(format!("cannot start it on node {}: {why}", placement.node));
                // SAFETY: killing our own tracee, which has run none of its own code yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// When the main program stops (Ctrl-Z), mosrun stops too, so the shell that started it
    /// sees the job stop; SIGCONT from `fg` wakes both.
    ///
    /// Only terminal stops (SIGTSTP, SIGTTIN, SIGTTOU), which the terminal sends to the whole
    /// job: a SIGSTOP sent to the program alone is usually undone by a SIGCONT to the program
    /// alone, which a stopped mosrun would never see.
    fn follow_group_stop(&self, pid: Pid, sig: i32) {
        if pid == self.main && sig != libc::SIGSTOP {
            // SAFETY: stopping ourselves.
            unsafe { libc::raise(libc::SIGSTOP) };
        }
    }

    fn ended(&mut self, pid: Pid, end: JobEnd) {
        self.farewells.remove(&pid);
        self.at_exec.remove(&pid);
        if self.procs.contains_key(&pid) {
            self.handle(pid, Event::Ended);
            self.procs.remove(&pid);
            self.daemon.ended(pid);
        }
        if pid == self.main && self.main_end.is_none() {
            self.main_end = Some(end);
        }
    }

    /// The process cannot go on: its remote or link is gone, or its shell failed. Its shell
    /// is killed; its death is then reported like any other.
    fn lose(&mut self, pid: Pid, why: &str) {
        tracing::error!(pid, why, "process lost");
        eprintln!("mosrun: process {pid} lost: {why}");
        self.take_held(pid);
        // SAFETY: killing our own tracee.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A remote's call while its image comes home breaks its session: the shell is frozen for
/// the image, and nothing may run in it.
fn refuse_while_coming_home(r: &Remote) -> io::Result<()> {
    if r.recall.as_ref().is_some_and(|rc| rc.homecoming.is_some()) {
        return Err(io::Error::other(
            "a call came while the image was coming home",
        ));
    }
    Ok(())
}

/// Tell the guest that held a process that it runs elsewhere now, so that it drops its husk;
/// whether the session can still carry its answer (see `on_farewell`).
fn session_ended(session: &mut Session) -> bool {
    session.send(&ToGuest::Ended).is_ok()
}

fn home_cannot_hold(node: u16, err: io::Error) -> MoveError {
    MoveError::HomeCannotHold {
        node,
        reason: err.to_string(),
    }
}

/// Which way a move from `from` to `to` goes (None: home).
fn heading(from: Option<u16>, to: Option<u16>) -> MoveKind {
    match (from, to) {
        (None, _) => MoveKind::Out,
        (Some(_), None) => MoveKind::Home,
        (Some(_), Some(_)) => MoveKind::On,
    }
}

/// Add what `deputy` timed since it was last asked to `tally`.
fn take_call_times(tally: &mut Tally, deputy: &mut Deputy) {
    let times = deputy.take_call_times();
    tally
        .forwarded_us
        .add(&rmosix_wire::FORWARDED_US_BOUNDS, &times);
}

/// Whether a peer's signal number is one.
fn valid_signal(sig: i32) -> bool {
    (1..=64).contains(&sig)
}

/// Log a failed ptrace request for a process at home, unless it is gone (its exit follows).
fn warn_unless_gone(pid: Pid, result: io::Result<()>) {
    if let Err(err) = result
        && err.raw_os_error() != Some(libc::ESRCH)
    {
        warn!(pid, %err, "cannot continue a process");
    }
}
