//! The legs of a move as the home supervisor carries them out: greeting a node, streaming a
//! process out in two rounds, taking an image back into its shell, passing one on from a
//! remote to the next node. Each leg either completes or fails with a [`MoveError`] and
//! leaves the process where it was; which leg comes next is decided in `moves`.

use std::io::{self, PipeReader, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rmosix_image::{
    Area, EndOfImage, FrameHead, FrameReader, KernelFacts, SigInfo, Usage, write_message,
    write_pages,
};
use rmosix_wire::MoveError;
use tracing::info;

use crate::cputime::Carry;
use crate::deputy::{Deputy, freeze};
use crate::dump;
use crate::inject::Injector;
use crate::mem::Memory;
use crate::ptrace::{self, Pid};
use crate::restore;
use crate::session::{Channel, Opening, Session, SessionRead, ToGuest, ToHome};
use crate::throttle::Unthrottled;
use crate::track::Tracker;

/// How long a relay waits on a next node that takes nothing before it counts as failed. The
/// remote that sends goes unread meanwhile, and its link gives up after the transport's
/// TCP_USER_TIMEOUT (15 s, which also bounds a zero window): a dead next node must cost the
/// move, never the process.
const RELAY_STALL: Duration = Duration::from_secs(10);

/// A session to a node that agreed to take a process (it answered `Ready`).
pub struct Onward {
    /// The node.
    pub node: u16,
    /// Its session.
    pub session: Session,
}

/// What pre-copy's first round left for the final one.
pub struct FirstRound {
    /// Catches what the process writes from now on.
    tracker: Tracker,
    /// The areas the first round sent.
    areas: Vec<Area>,
    /// Bytes of page data it sent.
    bytes: u64,
}

/// A process leaving home: its first round streams on a helper thread while the supervisor's
/// loop goes on serving the job, or it is over.
pub enum Departure {
    /// The helper streams the first round and waits for the node's `Prepared`; it ends by
    /// closing `done`.
    Streaming {
        /// When the move began.
        started: Instant,
        /// The helper.
        helper: JoinHandle<Result<(Onward, FirstRound), MoveError>>,
        /// Reads EOF when the helper is done.
        done: PipeReader,
    },
    /// The first round is in place at the node (or was skipped: no write tracking here):
    /// the final round goes next.
    Prepared {
        /// When the move began.
        started: Instant,
        /// The node that takes it.
        onward: Onward,
        /// What the first round left; None: the whole image goes frozen.
        first: Option<FirstRound>,
    },
}

impl Departure {
    /// The first round's helper has ended: the departure as it stands now.
    pub fn joined(self) -> Result<Departure, MoveError> {
        match self {
            Departure::Streaming {
                started, helper, ..
            } => match helper.join() {
                Ok(Ok((onward, first))) => Ok(Departure::Prepared {
                    started,
                    onward,
                    first: Some(first),
                }),
                Ok(Err(why)) => Err(why),
                Err(_) => Err(MoveError::Local(
                    "the first round's thread panicked".to_owned(),
                )),
            },
            prepared => Ok(prepared),
        }
    }
}

/// Whether `pid` can move, with rmosix's own `filters` (see `dump::check_movable`).
pub fn movable(pid: Pid, filters: u32) -> Result<(), MoveError> {
    match dump::check_movable(pid, filters) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(why.into()),
        Err(err) => Err(MoveError::Local(format!(
            "cannot inspect the process: {err}"
        ))),
    }
}

/// Open a session to `node` through `open` and see that it takes process `pid` from us.
pub fn greet(
    channel: Result<Channel, MoveError>,
    node: u16,
    facts: &KernelFacts,
    pid: Pid,
) -> Result<Onward, MoveError> {
    let mut session = Session::new(channel?);
    session
        .send(&Opening::new(facts.clone(), pid))
        .map_err(|e| link_broken(node, e))?;
    match session.recv::<ToHome>() {
        Ok(ToHome::Ready) => Ok(Onward { node, session }),
        Ok(ToHome::Refused { reason }) => Err(MoveError::Refused { node, reason }),
        Ok(other) => Err(link_broken(node, format!("unexpected answer {other:?}"))),
        Err(e) => Err(MoveError::TargetDown {
            node,
            reason: format!("no answer from its guest: {e}"),
        }),
    }
}

/// Pre-copy's first round: give `pid` write tracking, then stream its pages into `onward` on
/// a helper thread while it runs, and wait there until `onward` has placed them. Where the
/// kernel cannot track writes, the departure is prepared at once and the process goes frozen.
pub fn start_first_round(pid: Pid, mut onward: Onward) -> Result<Departure, MoveError> {
    let started = Instant::now();
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
            return Ok(Departure::Prepared {
                started,
                onward,
                first: None,
            });
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
        let out = &mut onward.session.out;
        let bytes = write_message(out, &precopy)
            .and_then(|()| dump::dump_first_round(pid, &areas, &tracker, &mut Unthrottled, out))
            .map_err(|e| link_broken(node, e))?;
        node_answer(&mut onward.session.frames, node, Round::First)?;
        let first = FirstRound {
            tracker,
            areas,
            bytes,
        };
        Ok((onward, first))
    });
    Ok(Departure::Streaming {
        started,
        helper,
        done,
    })
}

/// Freeze `pid` and send the rest of its image into `onward` (all of it without a `first`
/// round); once it runs there, make its shell. `away`: what it used on other nodes before;
/// `filters`: the seccomp filters rmosix gave it (see `dump::check_movable`).
/// Any failure before the node runs it leaves it running at home. Returns the shell's deputy
/// and the session.
pub fn send_out(
    pid: Pid,
    facts: &KernelFacts,
    (away, filters): (Usage, u32),
    onward: Onward,
    first: Option<FirstRound>,
    started: Instant,
) -> Result<(Deputy, Session), MoveError> {
    let cpu = Carry::Home { away };
    let Onward { node, mut session } = onward;
    let signals = freeze(pid).map_err(cannot_freeze)?;
    let frozen = Instant::now();
    let link = |e: io::Error| link_broken(node, e);
    let sent = match &first {
        Some(first) => {
            // It ran during the first round: it may have started a thread, say.
            movable(pid, filters).and_then(|()| {
                let (areas, tracker) = (&first.areas, &first.tracker);
                dump::dump_final_round(pid, facts, &cpu, areas, tracker, &mut session.out)
                    .map_err(link)
            })
        }
        None => write_message(&mut session.out, &ToGuest::Image)
            .and_then(|()| dump::dump(pid, facts, &cpu, &mut session.out))
            .map_err(link),
    }
    .and_then(|(_, bytes)| node_answer(&mut session.frames, node, Round::Last).map(|()| bytes));
    let bytes = match sent {
        Ok(bytes) => bytes,
        Err(why) => {
            thaw(pid, signals);
            return Err(why);
        }
    };
    let running = Instant::now();
    // The process runs there now: from here on, its shell is all that is left at home. A
    // shell that cannot be made ends the session, which kills the remote too: the process is
    // then lost rather than run twice.
    let deputy = match Deputy::take_over(pid) {
        Ok(deputy) => deputy,
        Err(err) => {
            // SAFETY: killing our own tracee, whose remote dies with the session we drop.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(MoveError::Lost(format!("cannot make its shell: {err}")));
        }
    };
    // A link that broke meanwhile shows on the session's next read, which ends the shell
    // with the reason.
    let _ = signals
        .into_iter()
        .try_for_each(|info| crate::deputy::relay(&mut session, info));
    let freeze_ms = running.duration_since(frozen).as_secs_f64() * 1e3;
    let total_ms = ms_since(started);
    let first_bytes = first.map_or(0, |f| f.bytes);
    let bytes = first_bytes + bytes;
    info!(
        pid,
        node, bytes, first_bytes, freeze_ms, total_ms, "migrated"
    );
    Ok((deputy, session))
}

/// What a first round coming home left in the shell for the final round.
pub struct Homecoming {
    /// The injector, pointing into the image's vdso block.
    inj: Injector,
    /// The areas the first round mapped.
    areas: Vec<Area>,
}

/// Coming home, the first round goes into the shell, which stops being a shell until the
/// final round: no forwarded call comes meanwhile (the guest waits for `Prepared`).
pub fn place_first_round(
    pid: Pid,
    areas: Vec<Area>,
    session: &mut Session,
) -> io::Result<Homecoming> {
    let inj = restore::restore_first_round(pid, &areas, &mut session.frames)?;
    Ok(Homecoming { inj, areas })
}

/// Restore the remote's image, whose header comes next on `session`, into frozen shell
/// `pid`: its final round after `homecoming`, or all of it. Returns the signals that were
/// pending at the remote and the CPU it used away (from the header).
pub fn restore_home(
    pid: Pid,
    session: &mut Session,
    homecoming: Option<&Homecoming>,
) -> io::Result<(Vec<SigInfo>, Usage)> {
    let header = restore::read_header(&mut session.frames)?;
    match homecoming {
        Some(first) => {
            let (inj, areas) = (&first.inj, &first.areas);
            restore::restore_final_round(pid, inj, areas, &header, &mut session.frames)?
        }
        None => drop(restore::restore_into(pid, &header, &mut session.frames)?),
    }
    Ok((header.pending_signals(), header.cpu.away))
}

/// Pass a remote's first round of `areas` on to `onward`. Outer error: the remote's session
/// broke; inner: `onward` failed.
pub fn relay_first_round(
    from: &mut Session,
    onward: &mut Onward,
    areas: Vec<Area>,
) -> io::Result<Result<(), MoveError>> {
    let node = onward.node;
    let announced = relaying(&onward.session, true)
        .and_then(|()| write_message(&mut onward.session.out, &ToGuest::Precopy { areas }));
    let relayed = relay_pages(&mut from.frames, &mut onward.session.out, announced);
    let _ = relaying(&onward.session, false);
    Ok(match relayed? {
        Err(err) => Err(link_broken(node, err)),
        Ok(()) => node_answer(&mut onward.session.frames, node, Round::First),
    })
}

/// Pass a remote's image (a whole one, or the final round after a first round that went
/// on already: `prepared`) on to `onward`, and wait until it runs there. Outer error: the
/// remote's session broke; inner: `onward` failed. Returns the signals that were pending
/// at the remote.
pub fn relay_on(
    from: &mut Session,
    onward: &mut Onward,
    prepared: bool,
) -> io::Result<Result<Vec<SigInfo>, MoveError>> {
    let node = onward.node;
    let ready = relaying(&onward.session, true);
    let relayed = relay_image(&mut from.frames, &mut onward.session.out, prepared, ready);
    let _ = relaying(&onward.session, false);
    Ok(match relayed? {
        Relayed::Sent { pending } => {
            node_answer(&mut onward.session.frames, node, Round::Last).map(|()| pending)
        }
        Relayed::Undelivered(err) => Err(link_broken(node, err)),
    })
}

/// Bound (or no longer bound) how long a write to `session` may block, for a relay.
fn relaying(session: &Session, on: bool) -> io::Result<()> {
    let stall = if on { RELAY_STALL } else { Duration::ZERO };
    let timeval = libc::timeval {
        tv_sec: stall.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: setsockopt reads the live timeval; the fd is the session's socket, whose halves
    // share its options.
    let done = unsafe {
        libc::setsockopt(
            session.raw_fd(),
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

/// The link to `node` failed during a move.
pub fn link_broken(node: u16, reason: impl ToString) -> MoveError {
    MoveError::LinkBroken {
        node,
        reason: reason.to_string(),
    }
}

fn cannot_freeze(err: io::Error) -> MoveError {
    MoveError::Local(format!("cannot freeze the process: {err}"))
}
