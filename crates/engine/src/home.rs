//! The home supervisor (the deputy): runs a job under ptrace events only, moves its processes
//! out on order, and while one is remote executes its forwarded calls inside its frozen shell,
//! relays signals to it and brings it back. One thread, one poll loop: ptrace requires that
//! every request come from the thread that attached.

use std::collections::HashMap;
use std::io::{self, PipeReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmosix_image::{
    Area, EndOfImage, Frame, FrameHead, FrameReader, KernelFacts, write_message, write_pages,
};
use rmosix_wire::MoveError;
use tracing::{info, warn};

use crate::dump;
use crate::files::ShellFiles;
use crate::guest::SigChld;
use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::ptrace::{self, Pid, Regs, Stop};
use crate::session::{Backs, BufSpec, Channel, SessionRead, ToGuest, ToHome};
use crate::throttle::Unthrottled;
use crate::track::Tracker;
use crate::{facts, maps, msg, restore, spawn, sys};

/// Size of the area mapped in a shell for the buffers of forwarded calls.
const SCRATCH_LEN: u64 = 16 << 20;

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
    /// A new supervised process.
    fn started(&mut self, pid: Pid);
    /// A process now runs on `node` (None = home).
    fn moved(&mut self, pid: Pid, node: Option<u16>);
    /// A supervised process ended.
    fn ended(&mut self, pid: Pid);
}

/// How the job's main program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    /// exit status
    Exited(i32),
    /// killed by signal
    Killed(i32),
}

/// Run `argv` as a supervised job until every process of it has ended; returns how the main
/// program ended.
pub fn supervise(argv: &[String], daemon: &mut dyn Daemon) -> io::Result<JobEnd> {
    let facts = facts::probe()?;
    // Spawn before blocking SIGCHLD and ignoring terminal signals, so that the program
    // inherits the mask and dispositions mosrun was started with.
    let main = spawn::spawn_program(argv)?;
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
        departures: HashMap::new(),
        sigchld,
    };
    sup.procs.insert(main, Proc::Home);
    sup.run()
}

enum Proc {
    Home,
    Remote(Box<Remote>),
}

struct Remote {
    node: u16,
    frames: FrameReader<Box<dyn SessionRead>>,
    out: Box<dyn Write + Send>,
    inj: Injector,
    scratch: u64,
    base: Regs,
    shell: Shell,
    /// The order that called the remote away, waiting for its image.
    coming: Option<Coming>,
    /// A pre-copy first round is in the shell, which stays frozen until the final round.
    homecoming: Option<Homecoming>,
    /// The remote stopped by this signal, and the SIGSTOP we sent the shell to follow it is
    /// on its way.
    following_stop: Option<i32>,
    /// The shell's regular files, on which forwarded calls run here.
    files: ShellFiles,
    /// Signals relayed while still pending in the shell; their stop is not relayed again.
    relayed_early: u64,
    /// The shell's memory, for the buffers of calls run there.
    mem: Memory,
}

enum Shell {
    /// Running `pause`: signals sent to it stop it and are relayed.
    Idle,
    /// Interrupted so that this call can run once it stops.
    Interrupting(Call),
    /// Single-stepping over the call's `syscall` instruction.
    Calling(Call),
    /// In group stop, relayed to the remote.
    Stopped,
}

impl Shell {
    fn name(&self) -> &'static str {
        match self {
            Shell::Idle => "idle",
            Shell::Interrupting(_) => "interrupting",
            Shell::Calling(_) => "calling",
            Shell::Stopped => "stopped",
        }
    }
}

/// An order to move a remote, home or on to another node.
struct Coming {
    /// The daemon's id of the order.
    order: u64,
    /// The next node's session, greeted already; None: the process comes home.
    onward: Option<Onward>,
    /// When the remote was asked for its image.
    asked: Instant,
}

/// What pre-copy's first round left for the final one.
struct FirstRound {
    /// Catches what the process writes from now on.
    tracker: Tracker,
    /// The areas the first round sent.
    areas: Vec<Area>,
    /// Bytes of page data it sent.
    bytes: u64,
}

/// A process of the job on its way out: its first round streams on a helper thread, while the
/// supervisor's loop goes on serving the job.
struct Departure {
    /// The daemon's id of the order.
    order: u64,
    node: u16,
    /// When the move began.
    started: Instant,
    /// Streams the first round and waits for the node's `Prepared`.
    helper: JoinHandle<Result<(Onward, FirstRound), MoveError>>,
    /// Ends (reads EOF) when the helper is done.
    done: PipeReader,
}

/// How a move out began.
enum Start {
    /// The first round streams.
    Streaming {
        helper: JoinHandle<Result<(Onward, FirstRound), MoveError>>,
        done: PipeReader,
    },
    /// No write tracking here: the process goes frozen.
    Untracked(Onward),
}

/// What a first round coming home left in the shell for the final round.
struct Homecoming {
    /// The injector, pointing into the image's vdso block.
    inj: Injector,
    /// The areas the first round mapped.
    areas: Vec<Area>,
    /// Signals that reached the shell as it was frozen for the first round.
    signals: Vec<i32>,
}

/// A session to a node that agreed to take a process (it answered `Ready`).
struct Onward {
    node: u16,
    frames: FrameReader<Box<dyn SessionRead>>,
    out: Box<dyn Write + Send>,
    /// A pre-copy first round is in place there: what follows is the final round.
    prepared: bool,
}

/// How long a relay waits on a next node that takes nothing before it counts as failed. The
/// remote that sends goes unread meanwhile, and its link gives up after the transport's
/// TCP_USER_TIMEOUT (15 s, which also bounds a zero window): a dead next node must cost the
/// move, never the process.
const RELAY_STALL: Duration = Duration::from_secs(10);

impl Onward {
    /// Bound (or no longer bound) how long a write to the node may block, for a relay.
    fn relaying(&self, on: bool) -> io::Result<()> {
        let stall = if on { RELAY_STALL } else { Duration::ZERO };
        let timeval = libc::timeval {
            tv_sec: stall.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        let fd = self.frames.get_ref().raw_fd();
        // SAFETY: setsockopt reads the live timeval; `fd` is the session's socket, whose halves
        // share its options.
        let done = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&timeval as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

struct Call {
    id: u64,
    args: [u64; 6],
    nr: i64,
    bufs: Vec<(BufSpec, u64)>,
    data: Vec<Vec<u8>>,
}

struct Supervisor<'a> {
    daemon: &'a mut dyn Daemon,
    facts: KernelFacts,
    main: Pid,
    main_end: Option<JobEnd>,
    procs: HashMap<Pid, Proc>,
    /// Sessions of processes that came home, open until their guest's last word.
    farewells: HashMap<Pid, FrameReader<Box<dyn SessionRead>>>,
    /// Processes whose first round streams out.
    departures: HashMap<Pid, Departure>,
    sigchld: SigChld,
}

impl Supervisor<'_> {
    fn run(&mut self) -> io::Result<JobEnd> {
        let mut daemon_up = true;
        while !self.procs.is_empty() {
            let mut fds = vec![poll_in(self.sigchld.raw_fd())];
            let order_fd = if daemon_up {
                self.daemon.order_fd()
            } else {
                None
            };
            fds.push(poll_in(order_fd.unwrap_or(-1)));
            let remotes: Vec<Pid> = self
                .procs
                .iter()
                .filter_map(|(pid, p)| matches!(p, Proc::Remote(_)).then_some(*pid))
                .collect();
            let leaving: Vec<Pid> = self.farewells.keys().copied().collect();
            let mut buffered = Vec::new();
            for pid in &remotes {
                if let Some(Proc::Remote(r)) = self.procs.get(pid) {
                    fds.push(poll_in(r.frames.get_ref().raw_fd()));
                    buffered.push(r.frames.get_ref().buffered());
                }
            }
            for pid in &leaving {
                let session = self.farewells[pid].get_ref();
                fds.push(poll_in(session.raw_fd()));
                buffered.push(session.buffered());
            }
            let departing: Vec<Pid> = self.departures.keys().copied().collect();
            for pid in &departing {
                fds.push(poll_in(self.departures[pid].done.as_raw_fd()));
                buffered.push(false);
            }
            let timeout = if buffered.contains(&true) { 0 } else { -1 };
            // SAFETY: fds is a live vector of pollfd.
            if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) } < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if fds[0].revents != 0 {
                self.sigchld.drain();
                loop {
                    match ptrace::wait(-1, libc::WNOHANG) {
                        Ok(Some((pid, stop))) => self.on_stop(pid, stop)?,
                        Ok(None) => break,
                        // No traced child is left: whatever the table still lists is gone.
                        Err(err) if err.raw_os_error() == Some(libc::ECHILD) => {
                            for pid in self.procs.keys().copied().collect::<Vec<_>>() {
                                self.ended(pid, JobEnd::Killed(libc::SIGKILL));
                            }
                            break;
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
            if fds[1].revents != 0 {
                loop {
                    match self.daemon.next_order() {
                        Ok(Some(order)) => self.on_order(order)?,
                        Ok(None) => break,
                        Err(err) => {
                            warn!(%err, "lost the daemon; processes stay where they are");
                            daemon_up = false;
                            break;
                        }
                    }
                }
            }
            for (i, pid) in remotes.iter().enumerate() {
                if buffered[i] || fds[2 + i].revents != 0 {
                    self.on_session(*pid)?;
                }
            }
            for (i, pid) in leaving.iter().enumerate() {
                let at = remotes.len() + i;
                if buffered[at] || fds[2 + at].revents != 0 {
                    self.on_farewell(*pid);
                }
            }
            for (i, pid) in departing.iter().enumerate() {
                if fds[2 + remotes.len() + leaving.len() + i].revents != 0 {
                    self.on_departure(*pid);
                }
            }
        }
        Ok(self.main_end.unwrap_or(JobEnd::Exited(0)))
    }

    fn ended(&mut self, pid: Pid, end: JobEnd) {
        self.farewells.remove(&pid);
        // A move under way when it ended: `migrate` waits for an answer. A first round's
        // thread ends by itself, as the pages it reads are gone.
        let mut moving = self.departures.remove(&pid).map(|d| d.order);
        if let Some(Proc::Remote(mut r)) = self.procs.remove(&pid) {
            let _ = write_message(&mut r.out, &ToGuest::Ended).and_then(|()| r.out.flush());
            moving = moving.or(r.coming.map(|c| c.order));
        }
        if let Some(order) = moving {
            self.daemon.order_done(order, Err(MoveError::Ended));
        }
        self.daemon.ended(pid);
        if pid == self.main && self.main_end.is_none() {
            self.main_end = Some(end);
        }
    }

    fn on_stop(&mut self, pid: Pid, stop: Stop) -> io::Result<()> {
        match stop {
            Stop::Exited(code) => {
                self.ended(pid, JobEnd::Exited(code));
                return Ok(());
            }
            Stop::Killed(sig) => {
                self.ended(pid, JobEnd::Killed(sig));
                return Ok(());
            }
            _ => {}
        }
        let Some(proc) = self.procs.get_mut(&pid) else {
            // A new child may report before its parent's fork event.
            self.procs.insert(pid, Proc::Home);
            self.daemon.started(pid);
            return ignore_gone(ptrace::cont(pid, 0));
        };
        match proc {
            Proc::Home => self.on_home_stop(pid, stop),
            Proc::Remote(_) => self.on_shell_stop(pid, stop),
        }
    }

    fn on_home_stop(&mut self, pid: Pid, stop: Stop) -> io::Result<()> {
        let result = match stop {
            Stop::Event(event)
                if event == libc::PTRACE_EVENT_FORK
                    || event == libc::PTRACE_EVENT_VFORK
                    || event == libc::PTRACE_EVENT_CLONE =>
            {
                let child = ptrace::event_msg(pid)? as Pid;
                if self.procs.insert(child, Proc::Home).is_none() {
                    self.daemon.started(child);
                }
                ptrace::cont(pid, 0)
            }
            Stop::Signal(sig) => ptrace::cont(pid, sig),
            Stop::Group(sig) => {
                let r = ptrace::listen(pid);
                self.follow_group_stop(pid, sig);
                r
            }
            _ => ptrace::cont(pid, 0),
        };
        ignore_gone(result)
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

    fn on_shell_stop(&mut self, pid: Pid, stop: Stop) -> io::Result<()> {
        let Some(Proc::Remote(r)) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        let state = std::mem::replace(&mut r.shell, Shell::Idle);
        tracing::trace!(pid, ?stop, state = state.name(), "shell stop");
        if let Stop::Signal(sig) = stop
            && r.relayed_early & (1 << (sig - 1)) != 0
        {
            // Relayed already (see the Calling arm): nothing happened but the stop itself.
            r.relayed_early &= !(1 << (sig - 1));
            return resume_unchanged(pid, r, state);
        }
        match (state, stop) {
            // Called home meanwhile: the call runs at home after the move, not here.
            (Shell::Interrupting(call), Stop::Interrupted) if r.coming.is_some() => {
                finish_call(pid, r, call, sys::ERESTARTNOINTR)?
            }
            (Shell::Interrupting(call), Stop::Interrupted) => start_call(pid, r, call)?,
            (Shell::Interrupting(call), Stop::Signal(sig)) => {
                relay(r, sig)?;
                if r.coming.is_some() {
                    finish_call(pid, r, call, sys::ERESTARTNOINTR)?
                } else {
                    start_call(pid, r, call)?;
                }
            }
            (Shell::Calling(call), Stop::Trap | Stop::Interrupted | Stop::Signal(_)) => {
                let regs = ptrace::get_regs(pid)?;
                let ret = if regs.rip == r.inj.syscall_ip {
                    // Stopped before the call ran: let the remote issue it again.
                    if matches!(stop, Stop::Interrupted) && r.coming.is_none() {
                        r.shell = Shell::Calling(call);
                        return ptrace::step(pid);
                    }
                    // The kernel restarts a call answered so, whatever the dispositions.
                    sys::ERESTARTNOINTR
                } else if regs.rax as i64 == sys::ERESTART_RESTARTBLOCK {
                    -i64::from(libc::EINTR)
                } else {
                    regs.rax as i64
                };
                // The order of answer and signal is what makes a call run exactly once. A
                // call that completed is answered first, so the remote has its result before
                // the signal interrupts anything. A call the signal interrupted (or that never
                // ran) gets the signal first: the restart code it is answered with only works
                // while a signal is pending at the remote, and the remote's kernel then restarts
                // it or fails it with EINTR, as Linux would.
                match stop {
                    Stop::Signal(sig) if sys::is_restart(ret) => {
                        relay(r, sig)?;
                        finish_call(pid, r, call, ret)?;
                    }
                    Stop::Signal(sig) => {
                        finish_call(pid, r, call, ret)?;
                        relay(r, sig)?;
                    }
                    // The single-step trap is reported before the signal that interrupted the
                    // call: relay what is pending now, and skip it when its stop comes.
                    _ if sys::is_restart(ret) && r.coming.is_none() => {
                        let pending = dump::pending_signals(pid)?;
                        for sig in signal_numbers(pending) {
                            relay(r, sig)?;
                        }
                        r.relayed_early |= pending;
                        // Without a pending signal the restart code would reach the program.
                        let ret = if pending == 0 {
                            -i64::from(libc::EINTR)
                        } else {
                            ret
                        };
                        finish_call(pid, r, call, ret)?;
                    }
                    _ => finish_call(pid, r, call, ret)?,
                }
            }
            (Shell::Calling(call), other) => {
                r.shell = Shell::Calling(call);
                warn!(pid, ?other, "unexpected stop of a calling shell");
                ptrace::cont(pid, 0)?;
            }
            (state, Stop::Signal(libc::SIGSTOP)) if r.following_stop.is_some() => {
                r.shell = state;
                ptrace::cont(pid, libc::SIGSTOP)?;
            }
            (state, Stop::Signal(sig)) => {
                relay(r, sig)?;
                // A signal stop means the shell runs again: a group stop has ended (SIGCONT).
                r.shell = match state {
                    Shell::Stopped => Shell::Idle,
                    other => other,
                };
                ptrace::cont(pid, 0)?;
            }
            (_, Stop::Group(sig)) => {
                // Stopped to follow its remote: the remote's signal says whether mosrun follows.
                let sig = r.following_stop.take().unwrap_or(sig);
                relay(r, sig)?;
                r.shell = Shell::Stopped;
                ptrace::listen(pid)?;
                self.follow_group_stop(pid, sig);
            }
            (state, _) => {
                r.shell = state;
                ptrace::cont(pid, 0)?;
            }
        }
        Ok(())
    }

    fn on_order(&mut self, order: Order) -> io::Result<()> {
        let (id, pid) = (order.id, order.pid);
        let result = match (self.procs.get(&pid), order.target) {
            (None, _) => Err(MoveError::Local(format!(
                "process {pid} is not supervised here"
            ))),
            _ if self.departures.contains_key(&pid) => Err(MoveError::Busy),
            (Some(Proc::Home), None) => Ok(()),
            (Some(Proc::Home), Some(node)) => return self.migrate_out(id, pid, node),
            (Some(Proc::Remote(r)), target) if target == Some(r.node) => Ok(()),
            (Some(Proc::Remote(_)), None) => return self.call_away(pid, id, None),
            // The next node is greeted before the remote stops: a node that will not take the
            // process costs it nothing.
            (Some(Proc::Remote(_)), Some(node)) => match self.greet(node) {
                Ok(onward) => return self.call_away(pid, id, Some(onward)),
                Err(reason) => Err(reason),
            },
        };
        self.daemon.order_done(id, result);
        Ok(())
    }

    /// Ask remote `pid` for its image: it comes home, or moves on through us to `onward`.
    fn call_away(&mut self, pid: Pid, order: u64, onward: Option<Onward>) -> io::Result<()> {
        let Some(Proc::Remote(r)) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        r.coming = Some(Coming {
            order,
            onward,
            asked: Instant::now(),
        });
        // The remote sends a first round while it runs (see on_first_round). A broken link
        // shows on the session's next read, which loses the process and answers the order.
        let _ = write_message(&mut r.out, &ToGuest::SendImage).and_then(|()| r.out.flush());
        // A call blocked in the shell (a read from a terminal, say) must not hold the move
        // up: interrupt it; the remote restarts it wherever it goes on.
        if matches!(r.shell, Shell::Calling(_) | Shell::Interrupting(_)) {
            ptrace::interrupt(pid)?;
        }
        Ok(())
    }

    /// Move a process that runs at home to `node`. On any failure it keeps running at home.
    fn migrate_out(&mut self, id: u64, pid: Pid, node: u16) -> io::Result<()> {
        match dump::check_movable(pid) {
            Ok(Ok(())) => match self.greet(node) {
                Ok(onward) => self.move_out(id, pid, onward),
                Err(reason) => self.report_move_out(id, pid, node, Err(reason)),
            },
            Ok(Err(why)) => self.report_move_out(id, pid, node, Err(why.into())),
            Err(err) => {
                let reason = MoveError::Local(format!("cannot inspect the process: {err}"));
                self.report_move_out(id, pid, node, Err(reason));
            }
        }
        Ok(())
    }

    /// Move `pid` into `onward`, which took it already (order `id`). With write tracking, the
    /// first round goes on a helper thread while this loop serves the job (see
    /// `on_departure`); without, the process goes frozen now.
    fn move_out(&mut self, id: u64, pid: Pid, onward: Onward) {
        let node = onward.node;
        let started = Instant::now();
        match self.start_first_round(pid, onward) {
            Ok(Start::Streaming { helper, done }) => {
                let departure = Departure {
                    order: id,
                    node,
                    started,
                    helper,
                    done,
                };
                self.departures.insert(pid, departure);
            }
            Ok(Start::Untracked(onward)) => {
                let result = self.send_out(pid, onward, None, started);
                self.report_move_out(id, pid, node, result);
            }
            Err(reason) => self.report_move_out(id, pid, node, Err(reason)),
        }
    }

    /// A departing process's first round is over: on success, send the final round.
    fn on_departure(&mut self, pid: Pid) {
        let Some(departure) = self.departures.remove(&pid) else {
            return;
        };
        let Departure {
            order,
            node,
            started,
            helper,
            ..
        } = departure;
        let result = match helper.join() {
            Ok(Ok((onward, first))) => self.send_out(pid, onward, Some(first), started),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(MoveError::Local(
                "the first round's thread panicked".to_owned(),
            )),
        };
        self.report_move_out(order, pid, node, result);
    }

    fn report_move_out(&mut self, id: u64, pid: Pid, node: u16, result: Result<(), MoveError>) {
        if let Err(reason) = &result {
            warn!(pid, node, %reason, "migration failed; the process stays home");
        }
        self.daemon.order_done(id, result);
    }

    /// Open a session to `node` and see that it takes a process from us.
    fn greet(&mut self, node: u16) -> Result<Onward, MoveError> {
        let link = |e: io::Error| link_broken(node, e);
        let channel = self.daemon.open_session(node)?;
        let mut frames = FrameReader::new(channel.reader);
        let mut out = channel.writer;
        let hello = ToGuest::Hello {
            facts: self.facts.clone(),
        };
        write_message(&mut out, &hello).map_err(link)?;
        out.flush().map_err(link)?;
        match frames.message::<ToHome>() {
            Ok(ToHome::Ready) => Ok(Onward {
                node,
                frames,
                out,
                prepared: false,
            }),
            Ok(ToHome::Refused { reason }) => Err(MoveError::Refused { node, reason }),
            Ok(other) => Err(link_broken(node, format!("unexpected answer {other:?}"))),
            Err(e) => Err(MoveError::TargetDown {
                node,
                reason: format!("no answer from its guest: {e}"),
            }),
        }
    }

    /// Freeze `pid` and send the rest of its image into `onward` (all of it without a `first`
    /// round); once it runs there, make its shell. Any failure leaves it running at home.
    fn send_out(
        &mut self,
        pid: Pid,
        onward: Onward,
        first: Option<FirstRound>,
        started: Instant,
    ) -> Result<(), MoveError> {
        let node = onward.node;
        let signals = freeze(pid).map_err(cannot_freeze)?;
        let frozen = Instant::now();
        match self.image_out(pid, onward, first.as_ref()) {
            Ok((mut remote, bytes, running)) => {
                // The process runs there now. A link that broke meanwhile shows on the
                // session's next read, which ends the shell with the reason.
                let _ = signals
                    .into_iter()
                    .try_for_each(|sig| relay(&mut remote, sig));
                let freeze_ms = running.duration_since(frozen).as_secs_f64() * 1e3;
                let total_ms = ms_since(started);
                let first_bytes = first.map_or(0, |f| f.bytes);
                let bytes = first_bytes + bytes;
                info!(
                    pid,
                    node, bytes, first_bytes, freeze_ms, total_ms, "migrated"
                );
                self.procs.insert(pid, Proc::Remote(Box::new(remote)));
                self.daemon.moved(pid, Some(node));
                Ok(())
            }
            Err(reason) => {
                thaw(pid, signals);
                Err(reason)
            }
        }
    }

    /// Pre-copy's first round: give `pid` write tracking, then stream its pages into `onward`
    /// on a helper thread while it runs, and wait there until `onward` has placed them.
    /// `Untracked` where the kernel cannot track writes: the process then goes frozen.
    fn start_first_round(&mut self, pid: Pid, mut onward: Onward) -> Result<Start, MoveError> {
        let signals = freeze(pid).map_err(cannot_freeze)?;
        let opened = dump::image_areas(pid).and_then(|areas| {
            let inj = Injector::find(&Memory::open(pid)?, &areas)?;
            Ok((Tracker::open(pid, &inj)?, areas))
        });
        thaw(pid, signals);
        let (tracker, areas) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                info!(pid, %err, "no pre-copy: the process stays frozen for its whole image");
                return Ok(Start::Untracked(onward));
            }
        };
        tracker.protect(&areas);
        let (done, finished) =
            io::pipe().map_err(|e| MoveError::Local(format!("cannot make a pipe: {e}")))?;
        let helper = std::thread::spawn(move || {
            // Dropped when the round ends, however it ends: the loop then sees `done` close.
            let _finished = finished;
            let node = onward.node;
            let precopy = ToGuest::Precopy {
                areas: areas.clone(),
            };
            let out = &mut onward.out;
            let bytes = write_message(out, &precopy)
                .and_then(|()| dump::dump_first_round(pid, &areas, &tracker, &mut Unthrottled, out))
                .map_err(|e| link_broken(node, e))?;
            node_answer(&mut onward.frames, node, Round::First)?;
            let first = FirstRound {
                tracker,
                areas,
                bytes,
            };
            Ok((onward, first))
        });
        Ok(Start::Streaming { helper, done })
    }

    /// Send the image of frozen `pid`: the final round after `first`, or all of it. Returns
    /// its shell's state, the bytes of page data sent and when `onward` reported it running.
    fn image_out(
        &mut self,
        pid: Pid,
        onward: Onward,
        first: Option<&FirstRound>,
    ) -> Result<(Remote, u64, Instant), MoveError> {
        let Onward {
            node,
            mut frames,
            mut out,
            ..
        } = onward;
        let link = |e: io::Error| link_broken(node, e);
        let (_, bytes) = match first {
            Some(first) => {
                // It ran during the first round: it may have started a thread, say.
                match dump::check_movable(pid) {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => return Err(why.into()),
                    Err(err) => {
                        return Err(MoveError::Local(format!(
                            "cannot inspect the process: {err}"
                        )));
                    }
                }
                dump::dump_final_round(pid, &self.facts, &first.areas, &first.tracker, &mut out)
            }
            None => write_message(&mut out, &ToGuest::Image)
                .and_then(|()| dump::dump(pid, &self.facts, &mut out)),
        }
        .map_err(link)?;
        node_answer(&mut frames, node, Round::Last)?;
        let running = Instant::now();
        // The remote runs: the shell keeps only its identity (pid, fds, credentials). Its
        // memory is released; a scratch area receives the buffers of forwarded calls.
        let shell = strip_shell(pid).map_err(|e| shell_failed("prepare", e))?;
        let (inj, scratch, base) = shell;
        let mut remote = Remote {
            node,
            frames,
            out,
            inj,
            scratch,
            base,
            shell: Shell::Idle,
            coming: None,
            homecoming: None,
            following_stop: None,
            relayed_early: 0,
            files: ShellFiles::open(pid).map_err(|e| shell_failed("open", e))?,
            mem: Memory::open(pid).map_err(|e| shell_failed("open", e))?,
        };
        idle(pid, &mut remote).map_err(|e| shell_failed("idle", e))?;
        Ok((remote, bytes, running))
    }

    fn on_session(&mut self, pid: Pid) -> io::Result<()> {
        let Some(Proc::Remote(r)) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        let msg: ToHome = match r.frames.message() {
            Ok(msg) => msg,
            Err(err) => {
                let reason = format!("link to node {} lost: {err}", r.node);
                return self.lose(pid, &reason);
            }
        };
        match msg {
            ToHome::Call { id, nr, args, bufs } => {
                tracing::trace!(id, nr, "call");
                let mut data = Vec::new();
                for _ in bufs.iter().filter(|b| b.send) {
                    match r.frames.next_frame() {
                        Ok(Frame::Pages { data: bytes, .. }) => data.push(bytes),
                        _ => return self.lose(pid, "malformed call from the remote"),
                    }
                }
                if let Some((ret, backs)) = r.files.try_run(nr, &args, &bufs, &data) {
                    return send_reply(r, id, ret, &backs);
                }
                let bufs = bufs.into_iter().map(|b| (b, 0)).collect();
                let call = Call {
                    id,
                    args,
                    nr,
                    bufs,
                    data,
                };
                if let Shell::Stopped = r.shell {
                    // Job-stopped: run it once continued, as the remote's call would wait too.
                    r.shell = Shell::Interrupting(call);
                } else {
                    r.shell = Shell::Interrupting(call);
                    ptrace::interrupt(pid)?;
                }
            }
            ToHome::Going { reason, needs_home } => return self.on_going(pid, &reason, needs_home),
            ToHome::Precopy { areas } => return self.on_first_round(pid, areas),
            ToHome::Stopped { sig } => {
                r.following_stop = Some(sig);
                // SAFETY: stopping our own tracee, as its remote half stopped.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
            }
            ToHome::Died { sig } => {
                info!(pid, sig, "remote killed by a signal");
                die_by(pid, r, sig)?;
                // The remote is gone: its session's end must not be taken for a lost node.
                self.procs.insert(pid, Proc::Home);
            }
            other => {
                return self.lose(
                    pid,
                    &format!("unexpected message from the remote: {other:?}"),
                );
            }
        }
        Ok(())
    }

    /// A remote sends a pre-copy first round: place it in the shell, or relay it to the next
    /// node the order named.
    fn on_first_round(&mut self, pid: Pid, areas: Vec<Area>) -> io::Result<()> {
        let Some(Proc::Remote(r)) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        match r.coming.as_ref().map(|c| c.onward.is_some()) {
            Some(true) => self.relay_first_round(pid, areas),
            Some(false) => self.first_round_home(pid, areas),
            None => self.lose(pid, "a first round came with no move ordered"),
        }
    }

    /// Coming home, the first round goes into the shell, which stops being a shell until the
    /// final round: no forwarded call comes meanwhile (the guest waits for `Prepared`), and
    /// signals stay pending in the frozen shell, to be delivered where the process then runs.
    /// If home cannot place it, the shell is stripped again and the remote runs on.
    fn first_round_home(&mut self, pid: Pid, areas: Vec<Area>) -> io::Result<()> {
        let Some(Proc::Remote(mut r)) = self.procs.remove(&pid) else {
            return Ok(());
        };
        let signals = freeze(pid)?;
        match restore::restore_first_round(pid, &areas, &mut r.frames) {
            Ok(inj) => {
                r.homecoming = Some(Homecoming {
                    inj,
                    areas,
                    signals,
                });
                // A broken link shows on the session's next read.
                let _ = write_message(&mut r.out, &ToGuest::Prepared).and_then(|()| r.out.flush());
                self.procs.insert(pid, Proc::Remote(r));
                Ok(())
            }
            Err(err) => {
                let why = home_cannot_hold(r.node, err);
                self.stay_remote(pid, r, why, signals)
            }
        }
    }

    /// A remote moving on sends its first round: relay it to the next node and, once that
    /// node has placed it, tell the remote to send the final round. If the next node fails,
    /// the remote runs on where it is.
    fn relay_first_round(&mut self, pid: Pid, areas: Vec<Area>) -> io::Result<()> {
        let Some(Proc::Remote(r)) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        let Some(onward) = r.coming.as_mut().and_then(|c| c.onward.as_mut()) else {
            return Ok(());
        };
        let node = onward.node;
        let announced = onward
            .relaying(true)
            .and_then(|()| write_message(&mut onward.out, &ToGuest::Precopy { areas }));
        let relayed = relay_pages(&mut r.frames, &mut onward.out, announced);
        let _ = onward.relaying(false);
        let failed = match relayed {
            Err(err) => {
                let reason = format!("link to node {} lost: {err}", r.node);
                return self.lose(pid, &reason);
            }
            Ok(Err(err)) => Some(link_broken(node, err)),
            Ok(Ok(())) => node_answer(&mut onward.frames, node, Round::First).err(),
        };
        match failed {
            None => {
                onward.prepared = true;
                // A broken link shows on the session's next read.
                let _ = write_message(&mut r.out, &ToGuest::Prepared).and_then(|()| r.out.flush());
            }
            Some(why) => {
                warn!(pid, %why, node = r.node, "the move on failed; it runs on where it is");
                let stay = ToGuest::Stay {
                    reason: why.to_string(),
                };
                let _ = write_message(&mut r.out, &stay).and_then(|()| r.out.flush());
                if let Some(coming) = r.coming.take() {
                    self.daemon.order_done(coming.order, Err(why));
                }
            }
        }
        Ok(())
    }

    /// The remote sends its image: restore it here, or relay it on to the node an order
    /// named. A process that goes home for a call only home can run comes home whatever the
    /// order, and moves on from here.
    fn on_going(&mut self, pid: Pid, reason: &str, needs_home: bool) -> io::Result<()> {
        let Some(Proc::Remote(mut r)) = self.procs.remove(&pid) else {
            return Ok(());
        };
        // After a first round home, the shell is frozen already.
        let signals = match &mut r.homecoming {
            Some(homecoming) => std::mem::take(&mut homecoming.signals),
            None => freeze(pid)?,
        };
        match r.coming.as_mut().and_then(|c| c.onward.take()) {
            Some(onward) if !needs_home => self.move_on(pid, r, onward, signals),
            onward => self.come_home(pid, r, reason, signals, onward),
        }
    }

    /// Restore the remote's image into the shell; then, if the order said so, send the
    /// process on to the node greeted for it.
    fn come_home(
        &mut self,
        pid: Pid,
        mut r: Box<Remote>,
        reason: &str,
        mut signals: Vec<i32>,
        onward: Option<Onward>,
    ) -> io::Result<()> {
        self.procs.insert(pid, Proc::Home);
        let started = Instant::now();
        let mut pending = 0;
        let homecoming = r.homecoming.take();
        let restored = restore::read_header(&mut r.frames).and_then(|header| {
            pending = header.pending_signals();
            match &homecoming {
                Some(first) => {
                    let (inj, areas) = (&first.inj, &first.areas);
                    restore::restore_final_round(pid, inj, areas, &header, &mut r.frames)
                }
                None => restore::restore_into(pid, &header, &mut r.frames).map(drop),
            }
        });
        if let Err(err) = restored {
            let why = home_cannot_hold(r.node, err);
            return self.stay_remote(pid, r, why, signals);
        }
        let freeze_ms = ms_since(started);
        let precopied = homecoming.is_some();
        let total_ms = r.coming.as_ref().map_or(freeze_ms, |c| ms_since(c.asked));
        let node = r.node;
        info!(
            pid,
            node, reason, precopied, freeze_ms, total_ms, "came home"
        );
        self.part_from(pid, r.frames, &mut r.out);
        self.daemon.moved(pid, None);
        ptrace::cont(pid, 0)?;
        signals.extend(signal_numbers(pending));
        for sig in signals {
            // SAFETY: re-sending to our own tracee the signals that were pending at the remote
            // or arrived while it moved.
            unsafe { libc::kill(pid, sig) };
        }
        match (r.coming, onward) {
            (Some(coming), Some(onward)) => {
                self.move_out(coming.order, pid, onward);
            }
            (Some(coming), None) => self.daemon.order_done(coming.order, Ok(())),
            (None, _) => {}
        }
        Ok(())
    }

    /// Relay remote `pid`'s image on to `onward` without restoring it here. The old remote
    /// holds the process frozen until the new one runs it; should the new one fail, the
    /// process runs on where it was.
    fn move_on(
        &mut self,
        pid: Pid,
        mut r: Box<Remote>,
        mut onward: Onward,
        mut signals: Vec<i32>,
    ) -> io::Result<()> {
        let (from, node, precopied) = (r.node, onward.node, onward.prepared);
        let started = Instant::now();
        let relaying = onward.relaying(true);
        let relayed = relay_image(&mut r.frames, &mut onward.out, onward.prepared, relaying);
        let _ = onward.relaying(false);
        let relayed = match relayed {
            Ok(relayed) => relayed,
            Err(err) => {
                self.procs.insert(pid, Proc::Remote(r));
                return self.lose(pid, &format!("link to node {from} lost: {err}"));
            }
        };
        let taken = match relayed {
            Relayed::Sent { pending } => {
                node_answer(&mut onward.frames, node, Round::Last).map(|()| pending)
            }
            Relayed::Undelivered(err) => Err(link_broken(node, err)),
        };
        let pending = match taken {
            Ok(pending) => pending,
            Err(why) => return self.stay_remote(pid, r, why, signals),
        };
        let old = std::mem::replace(&mut r.frames, onward.frames);
        let mut old_out = std::mem::replace(&mut r.out, onward.out);
        self.part_from(pid, old, &mut old_out);
        r.node = node;
        idle(pid, &mut r)?;
        signals.extend(signal_numbers(pending));
        // A broken link shows on the session's next read.
        let _ = signals.into_iter().try_for_each(|sig| relay(&mut r, sig));
        let freeze_ms = ms_since(started);
        let total_ms = r.coming.as_ref().map_or(freeze_ms, |c| ms_since(c.asked));
        info!(pid, from, node, precopied, freeze_ms, total_ms, "moved on");
        let order = r.coming.take().map(|c| c.order);
        self.procs.insert(pid, Proc::Remote(r));
        self.daemon.moved(pid, Some(node));
        if let Some(order) = order {
            self.daemon.order_done(order, Ok(()));
        }
        Ok(())
    }

    /// Tell the guest that held the process that it runs elsewhere now. The guest drops its
    /// husk on this word; its answer may name signals that reached it after the image was
    /// taken (see on_farewell).
    fn part_from(
        &mut self,
        pid: Pid,
        frames: FrameReader<Box<dyn SessionRead>>,
        out: &mut Box<dyn Write + Send>,
    ) {
        if write_message(out, &ToGuest::Ended)
            .and_then(|()| out.flush())
            .is_ok()
        {
            self.farewells.insert(pid, frames);
        }
    }

    /// The image the remote sent could not be restored (home is short of memory, say), or
    /// the node it was to move on to failed. The guest still holds the process, frozen:
    /// strip the shell again (a restore may have begun in it) and let the process run on
    /// where it was. Only a broken link loses it.
    fn stay_remote(
        &mut self,
        pid: Pid,
        mut r: Box<Remote>,
        why: MoveError,
        signals: Vec<i32>,
    ) -> io::Result<()> {
        let node = r.node;
        warn!(pid, node, %why, "the process stays at its remote");
        let order = r.coming.take().map(|c| c.order);
        let kept = strip_shell(pid).and_then(|(inj, scratch, base)| {
            (r.inj, r.scratch, r.base) = (inj, scratch, base);
            idle(pid, &mut r)?;
            let stay = ToGuest::Stay {
                reason: why.to_string(),
            };
            write_message(&mut r.out, &stay)?;
            r.out.flush()?;
            signals.into_iter().try_for_each(|sig| relay(&mut r, sig))
        });
        self.procs.insert(pid, Proc::Remote(r));
        match kept {
            Ok(()) => {
                if let Some(order) = order {
                    self.daemon.order_done(order, Err(why));
                }
                Ok(())
            }
            Err(again) => {
                let lost = format!("{why}, and the shell could not take it back: {again}");
                if let Some(order) = order {
                    self.daemon
                        .order_done(order, Err(MoveError::Lost(lost.clone())));
                }
                self.lose(pid, &lost)
            }
        }
    }

    /// The last word of a guest whose process came home: signals it got after the image was
    /// taken. They are raised again here, where the process now is.
    fn on_farewell(&mut self, pid: Pid) {
        let Some(mut frames) = self.farewells.remove(&pid) else {
            return;
        };
        if let Ok(ToHome::Late { signals }) = frames.message::<ToHome>()
            && self.procs.contains_key(&pid)
        {
            for sig in signals {
                // SAFETY: re-sending to our own tracee a signal its remote did not take.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }

    /// The remote is gone with its node or link: the shell cannot go on.
    fn lose(&mut self, pid: Pid, reason: &str) -> io::Result<()> {
        tracing::error!(pid, reason, "process lost");
        eprintln!("mosrun: process {pid} lost: {reason}");
        if let Some(Proc::Remote(r)) = self.procs.get_mut(&pid)
            && let Some(coming) = r.coming.take()
        {
            self.daemon
                .order_done(coming.order, Err(MoveError::Lost(reason.to_string())));
        }
        // Keep it listed as home so its death is reported like any other.
        self.procs.insert(pid, Proc::Home);
        // SAFETY: killing our own tracee.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        Ok(())
    }
}

/// The link to `node` failed during a move.
fn link_broken(node: u16, reason: impl ToString) -> MoveError {
    MoveError::LinkBroken {
        node,
        reason: reason.to_string(),
    }
}

fn cannot_freeze(err: io::Error) -> MoveError {
    MoveError::Local(format!("cannot freeze the process: {err}"))
}

fn shell_failed(step: &str, err: io::Error) -> MoveError {
    MoveError::Local(format!("cannot {step} the shell: {err}"))
}

fn home_cannot_hold(node: u16, err: io::Error) -> MoveError {
    MoveError::HomeCannotHold {
        node,
        reason: err.to_string(),
    }
}

/// The signal numbers in a pending-signal mask (bit n-1 is signal n).
fn signal_numbers(mask: u64) -> impl Iterator<Item = i32> {
    (1..=64).filter(move |sig| mask & (1 << (sig - 1)) != 0)
}

/// Stop `pid` in a PTRACE_EVENT_STOP; returns signals that arrived meanwhile (suppressed
/// here, to be delivered wherever the process then runs).
fn freeze(pid: Pid) -> io::Result<Vec<i32>> {
    ptrace::interrupt(pid)?;
    let mut signals = Vec::new();
    loop {
        match ptrace::wait(pid, 0)? {
            Some((_, Stop::Interrupted | Stop::Group(_))) => return Ok(signals),
            Some((_, Stop::Signal(sig))) => {
                signals.push(sig);
                ptrace::cont(pid, 0)?;
            }
            Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                return Err(io::Error::other("process exited"));
            }
            Some(_) => ptrace::cont(pid, 0)?,
            None => {}
        }
    }
}

/// Milliseconds since `then`, for the log.
fn ms_since(then: Instant) -> f64 {
    then.elapsed().as_secs_f64() * 1e3
}

/// Let a process frozen by [`freeze`] run again, with the signals held meanwhile.
fn thaw(pid: Pid, signals: Vec<i32>) {
    let _ = ptrace::cont(pid, 0);
    for sig in signals {
        // SAFETY: re-sending to our own tracee the signals held during the freeze.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Release the shell's memory (rseq first, see restore.rs) and map a scratch area.
fn strip_shell(pid: Pid) -> io::Result<(Injector, u64, Regs)> {
    let mem = Memory::open(pid)?;
    let areas = maps::read(pid)?;
    let inj = Injector::find(&mem, &areas)?;
    restore::release_memory(pid, &inj, &areas)?;
    let scratch = Scratch::map(&inj, pid, SCRATCH_LEN)?.addr;
    // The CPU-time timers went with the image; the shell's copies must not fire as well.
    // The fresh scratch area holds zeros: a disarmed itimerval.
    for which in dump::CPU_TIMERS {
        let args = [which as u64, scratch, 0, 0, 0, 0];
        inj.call_ok(pid, libc::SYS_setitimer, args, "disarm a CPU-time timer")?;
    }
    // Every signal must reach us while the shell idles, whatever the program blocked.
    ptrace::set_sigmask(pid, 0)?;
    Ok((inj, scratch, ptrace::get_regs(pid)?))
}

/// Let the shell wait in pause(2). A signal stops it (we relay and suppress it) and the kernel
/// restarts the pause by itself, since no handler ran (ERESTARTNOHAND).
fn idle(pid: Pid, r: &mut Remote) -> io::Result<()> {
    ptrace::set_regs(pid, &r.inj.call_regs(&r.base, libc::SYS_pause, [0; 6]))?;
    r.shell = Shell::Idle;
    ptrace::cont(pid, 0)
}

fn start_call(pid: Pid, r: &mut Remote, mut call: Call) -> io::Result<()> {
    r.files.forget(call.nr, &call.args);
    let message = msg::is_message(call.nr);
    let malformed = if message {
        !msg::well_formed(call.bufs.iter().map(|(spec, _)| spec))
    } else {
        call.bufs.iter().any(|(spec, _)| spec.arg >= 6)
    };
    if malformed {
        return finish_call(pid, r, call, -i64::from(libc::EINVAL));
    }
    let mut at = r.scratch;
    let mut data = call.data.iter();
    let mut args = call.args;
    for (spec, place) in &mut call.bufs {
        *place = at;
        if spec.send
            && let Some(bytes) = data.next()
        {
            r.mem.write(at, bytes)?;
        }
        if spec.arg != msg::NESTED {
            args[spec.arg as usize] = at;
        }
        at += spec.len.next_multiple_of(16);
    }
    let iovec_at = at;
    if message {
        at += 16;
    }
    if at > r.scratch + SCRATCH_LEN {
        return finish_call(pid, r, call, -i64::from(libc::ENOMEM));
    }
    if message {
        point_message(r, &call, iovec_at)?;
    }
    ptrace::set_regs(pid, &r.inj.call_regs(&r.base, call.nr, args))?;
    r.shell = Shell::Calling(call);
    ptrace::step(pid)
}

/// Point the shell's copy of a msghdr at the copies of its buffers, the data through a
/// one-element iovec at `iovec_at` (see `msg`).
fn point_message(r: &Remote, call: &Call, iovec_at: u64) -> io::Result<()> {
    let (hdr_at, name, data, control) = match call.bufs.as_slice() {
        [(_, hdr_at), name, data, control] => (*hdr_at, name, data, control),
        _ => unreachable!("checked by msg::well_formed"),
    };
    // An empty buffer is a NULL pointer: the kernel then neither reads nor fills it.
    let pointer = |(spec, at): &(BufSpec, u64)| if spec.len == 0 { 0 } else { *at };
    let hdr = msg::MsgHdr {
        name: pointer(name),
        namelen: name.0.len as u32,
        iov: iovec_at,
        iovlen: 1,
        control: pointer(control),
        controllen: control.0.len,
        flags: 0,
    };
    r.mem.write(hdr_at, &hdr.to_bytes())?;
    let mut iovec = [0u8; 16];
    iovec[..8].copy_from_slice(&pointer(data).to_le_bytes());
    iovec[8..].copy_from_slice(&data.0.len.to_le_bytes());
    r.mem.write(iovec_at, &iovec)
}

fn finish_call(pid: Pid, r: &mut Remote, call: Call, ret: i64) -> io::Result<()> {
    let backs = if msg::is_message(call.nr) {
        message_backs(r, &call, ret)?
    } else {
        let mut backs = Vec::new();
        for (spec, place) in &call.bufs {
            if let Some(back) = spec.back {
                let n = back.bytes(spec.len, ret);
                if n > 0 {
                    backs.push((
                        call.args[spec.arg as usize],
                        r.mem.read_vec(*place, n as usize)?,
                    ));
                }
            }
        }
        backs
    };
    send_reply(r, call.id, ret, &backs)?;
    idle(pid, r)
}

/// What a recvmsg filled in, addressed where the remote's own msghdr points: the msghdr
/// with its lengths and flags updated, the address, the data (to the iovec array, for the
/// guest to scatter) and the ancillary data.
fn message_backs(r: &Remote, call: &Call, ret: i64) -> io::Result<Backs> {
    if call.nr != libc::SYS_recvmsg || ret < 0 {
        return Ok(Vec::new());
    }
    // The msghdr as the remote sent it, with the remote's pointers.
    let Some(remote) = call.data.first().and_then(|raw| msg::MsgHdr::parse(raw)) else {
        return Ok(Vec::new());
    };
    let raw = r.mem.read_vec(call.bufs[0].1, msg::HDR_LEN as usize)?;
    let filled = msg::MsgHdr::parse(&raw).expect("HDR_LEN bytes");
    let hdr = msg::MsgHdr {
        namelen: filled.namelen,
        controllen: filled.controllen,
        flags: filled.flags,
        ..remote
    };
    let mut backs = vec![(call.args[1], hdr.to_bytes().to_vec())];
    let parts = [
        (remote.name, 1, u64::from(filled.namelen)),
        (remote.iov, 2, ret as u64),
        (remote.control, 3, filled.controllen),
    ];
    for (to, buf, filled_len) in parts {
        let (spec, at) = &call.bufs[buf];
        let n = filled_len.min(spec.len);
        if to != 0 && n > 0 {
            backs.push((to, r.mem.read_vec(*at, n as usize)?));
        }
    }
    Ok(backs)
}

/// Answer call `id` with `ret` and its out-buffers, addressed in remote memory.
fn send_reply(r: &mut Remote, id: u64, ret: i64, backs: &Backs) -> io::Result<()> {
    tracing::trace!(id, ret, "reply");
    let reply = ToGuest::Reply {
        id,
        ret,
        backs: backs.len() as u32,
    };
    write_message(&mut r.out, &reply)?;
    for (addr, bytes) in backs {
        write_pages(&mut r.out, *addr, bytes)?;
    }
    r.out.flush()
}

/// Go on after a stop that changed nothing for the process: the state stays; a call that the
/// stop kept from running, or that it interrupted before it did anything (a restart code),
/// runs again.
fn resume_unchanged(pid: Pid, r: &mut Remote, state: Shell) -> io::Result<()> {
    match state {
        Shell::Calling(call) => {
            let mut regs = ptrace::get_regs(pid)?;
            if regs.rip != r.inj.syscall_ip {
                if !sys::is_restart(regs.rax as i64) {
                    // It ran to completion: answer as for the single-step trap.
                    let ret = regs.rax as i64;
                    return finish_call(pid, r, call, ret);
                }
                // The kernel records the call number in orig_rax on entry.
                regs.rip = r.inj.syscall_ip;
                regs.rax = regs.orig_rax;
                regs.orig_rax = u64::MAX;
                ptrace::set_regs(pid, &regs)?;
            }
            r.shell = Shell::Calling(call);
            ptrace::step(pid)
        }
        Shell::Stopped => {
            r.shell = Shell::Idle;
            ptrace::cont(pid, 0)
        }
        other => {
            r.shell = other;
            ptrace::cont(pid, 0)
        }
    }
}

fn relay(r: &mut Remote, sig: i32) -> io::Result<()> {
    tracing::trace!(sig, "relay");
    write_message(&mut r.out, &ToGuest::Signal { sig })?;
    r.out.flush()
}

/// The remote died of `sig`: the shell dies the same way, so the parent sees the same status.
fn die_by(pid: Pid, r: &mut Remote, sig: i32) -> io::Result<()> {
    freeze(pid)?;
    r.mem.write(r.scratch, &[0u8; 32])?;
    r.inj.call(
        pid,
        libc::SYS_rt_sigaction,
        [sig as u64, r.scratch, 0, 8, 0, 0],
    )?;
    ptrace::set_sigmask(pid, 0)?;
    ptrace::cont(pid, sig)
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
    Sent { pending: u64 },
    /// The onward link failed. The rest of the image was read and dropped.
    Undelivered(io::Error),
}

/// Copy one image, header to end marker, from `from` to `to`: a whole one, or the final round
/// after a first round (`prepared`). `to` failed already if `ready` is an error. An error is
/// the source's.
fn relay_image(
    from: &mut FrameReader<Box<dyn SessionRead>>,
    to: &mut impl Write,
    prepared: bool,
    ready: io::Result<()>,
) -> io::Result<Relayed> {
    let header = restore::read_header(from)?;
    let announced = ready.and_then(|()| {
        if prepared {
            Ok(())
        } else {
            write_message(to, &ToGuest::Image)
        }
    });
    let onward = announced.and_then(|()| write_message(to, &header));
    let pending = header.pending_signals();
    Ok(match relay_pages(from, to, onward)? {
        Ok(()) => Relayed::Sent { pending },
        Err(err) => Relayed::Undelivered(err),
    })
}

/// Copy page frames up to the end marker from `from` to `to`, while `onward` (the state of
/// `to`) holds; then only read them. The outer error is the source's, the inner one `to`'s.
fn relay_pages(
    from: &mut FrameReader<Box<dyn SessionRead>>,
    to: &mut impl Write,
    mut onward: io::Result<()>,
) -> io::Result<io::Result<()>> {
    let mut data = Vec::new();
    loop {
        let head = from.next_frame_into(&mut data).map_err(io::Error::other)?;
        // Pre-copy's running rounds each end with a marker: the last one says so.
        let last = matches!(head, FrameHead::Message)
            && !serde_json::from_slice::<EndOfImage>(&data).is_ok_and(|end| end.more_rounds);
        if onward.is_ok() {
            onward = match head {
                FrameHead::Pages { addr } => write_pages(to, addr, &data),
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

fn ignore_gone(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

fn poll_in(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
