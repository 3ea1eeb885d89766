//! The balancing loop (docs/balancing.md, "The daemon's loop"): once a second, sample the
//! processes of this node that run at home, build the balance room's view of the cluster
//! from the gossip view, ask [`rmosix_balance::decide`], and order each move from the
//! process's supervisor the way a `migrate` request does (`control::order`).
//!
//! Decided on here: this node's own processes at home, and its guests (processes of other
//! nodes that run here). A guest sent home goes by the recall `mosctl expel` uses (its home's
//! daemon orders it home); a guest that should move on to a third node stays, for now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use rmosix_balance::{
    ClusterView, DecayClass, Decision, LinkSpeeds, Modes, NodeInfo, Policy, Process, ProcessId,
    Round, Sample, Usage, decide,
};
use rmosix_view::{Liveness, NodeView, Status};
use rmosix_wire::Reply;

use rmosix_config::NodeId;

use crate::daemon::Shared;
use crate::procfs;
use crate::{control, modes};

/// How often the loop decides.
const EVERY: Duration = Duration::from_secs(1);

/// The link speed every move's cost is computed with, bytes per second: a fixed 100 MB/s
/// (about a gigabit link), not measured.
const LINK_SPEED: u64 = 100_000_000;

/// The balance room's clock starts this far after the loop's start, so that a node heard
/// before the loop started still gets a time of hearing (see [`NodeInfo::heard`]).
const CLOCK_BASE: Duration = Duration::from_secs(3600);

/// What the loop keeps about one supervised process.
struct Tracked {
    usage: Usage,
    /// Where it ran last round (`None`: home).
    node: Option<u16>,
    /// Its last schedstat reading (run and wait time) and when it was read; `None` while it
    /// is away or after it came back.
    last: Option<(Duration, Duration, Instant)>,
    /// Its last move, or when the loop first saw it.
    since: Instant,
    moves: u32,
}

/// Runs the loop for as long as the daemon serves.
pub(crate) async fn run(shared: Arc<Shared>) {
    let start = Instant::now();
    let policy = Policy::default();
    let links = LinkSpeeds::uniform(LINK_SPEED);
    let mut tracked: HashMap<i32, Tracked> = HashMap::new();
    let mut guests: HashMap<ProcessId, Guest> = HashMap::new();
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!("balancing every {}s", EVERY.as_secs());
    loop {
        ticks.tick().await;
        let now = Instant::now();
        let mut processes = sample(&shared, &mut tracked, now);
        processes.extend(sample_guests(&shared, &mut guests, now));
        if processes.is_empty() {
            continue;
        }
        let clock = now.duration_since(start) + CLOCK_BASE;
        let view = cluster_view(
            &shared.cluster.snapshot(),
            clock,
            shared.own,
            shared.modes(),
            shared.cluster.compat(),
        );
        let round = Round {
            here: shared.own,
            now: clock,
            number: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        for decision in decide(&policy, &round, &view, &links, &processes) {
            if decision.process().home == shared.own {
                carry_out(&shared, &mut tracked, decision);
            } else {
                send_guest(&shared, &mut guests, decision);
            }
        }
    }
}

/// Updates `tracked` from the table and /proc; the processes to decide on: supervised here,
/// at home, no order under way, and sampled at least twice.
fn sample(shared: &Shared, tracked: &mut HashMap<i32, Tracked>, now: Instant) -> Vec<Process> {
    let table = shared.table().processes();
    tracked.retain(|pid, _| table.iter().any(|(p, _, _)| p == pid));
    let mut processes = Vec::new();
    for (pid, node, moving) in table {
        let t = tracked.entry(pid).or_insert_with(|| Tracked {
            usage: Usage::new(DecayClass::Normal),
            node,
            last: None,
            since: now,
            moves: 0,
        });
        if t.node != node {
            // Moved, by this loop, a `migrate` or an expel.
            t.node = node;
            t.moves += 1;
            t.since = now;
            t.last = None;
            t.usage.moved();
        }
        if node.is_some() {
            continue;
        }
        let Some(memory) = measure(t, pid, now) else {
            continue;
        };
        if moving {
            continue;
        }
        processes.push(Process {
            id: ProcessId {
                home: shared.own,
                pid: pid as u32,
            },
            class: DecayClass::Normal,
            usage: t.usage,
            memory,
            memory_need: 0,
            locked: false,
            since_move: now.duration_since(t.since),
            moves: t.moves,
            just_execed: false,
        });
    }
    processes
}

/// Samples `pid` into `t`: the bytes a move of it sends, once it has two samples.
fn measure(t: &mut Tracked, pid: i32, now: Instant) -> Option<u64> {
    let Ok((ran, waited)) = read_schedstat(pid) else {
        t.last = None;
        return None;
    };
    let (last_ran, last_waited, at) = t.last.replace((ran, waited, now))?;
    t.usage.update(
        DecayClass::Normal,
        &Sample {
            interval: now.duration_since(at),
            ran: ran.saturating_sub(last_ran),
            waited: waited.saturating_sub(last_waited),
            forwarded: None,
        },
    );
    let stat = procfs::read_stat(pid).ok()?;
    Some(stat.rss_kib.saturating_mul(1024))
}

/// What the loop keeps about one guest, by its home identity.
struct Guest {
    /// Its PID here.
    pid: i32,
    tracked: Tracked,
    /// When the loop last asked its home to take it back: it is left alone for
    /// [`RECALL_QUIET`] after, while that recall runs.
    recalled: Option<Instant>,
    /// Whether a move on to a third node was logged (once per guest).
    move_logged: bool,
}

/// How long a guest sent home gets no new decision: its recall is under way, or was refused
/// (and logged).
const RECALL_QUIET: Duration = Duration::from_secs(10);

/// Updates `guests` from the hosted processes and /proc; the guests to decide on, each by its
/// home identity. Its moves before it came here are not known: it counts one (it came here),
/// and its time since its last move is its time here.
fn sample_guests(
    shared: &Shared,
    guests: &mut HashMap<ProcessId, Guest>,
    now: Instant,
) -> Vec<Process> {
    let hosted: Vec<(i32, ProcessId)> = shared
        .hosted()
        .processes()
        .into_iter()
        .filter_map(|(pid, home, home_pid)| {
            let id = ProcessId {
                home: NodeId::new(home)?,
                pid: u32::try_from(home_pid).ok()?,
            };
            Some((pid, id))
        })
        .collect();
    guests.retain(|id, g| hosted.contains(&(g.pid, *id)));
    let mut processes = Vec::new();
    for (pid, id) in hosted {
        let g = guests.entry(id).or_insert_with(|| Guest {
            pid,
            tracked: Tracked {
                usage: Usage::new(DecayClass::Normal),
                node: None,
                last: None,
                since: now,
                moves: 1,
            },
            recalled: None,
            move_logged: false,
        });
        let Some(memory) = measure(&mut g.tracked, pid, now) else {
            continue;
        };
        if g.recalled
            .is_some_and(|at| now.duration_since(at) < RECALL_QUIET)
        {
            continue;
        }
        processes.push(Process {
            id,
            class: DecayClass::Normal,
            usage: g.tracked.usage,
            memory,
            memory_need: 0,
            locked: false,
            since_move: now.duration_since(g.tracked.since),
            moves: g.tracked.moves,
            just_execed: false,
        });
    }
    processes
}

/// A decision about a guest: home by a recall, on to a third node not yet (logged).
fn send_guest(shared: &Arc<Shared>, guests: &mut HashMap<ProcessId, Guest>, decision: Decision) {
    let process = decision.process();
    let (home, Ok(pid)) = (process.home.get(), i32::try_from(process.pid)) else {
        return;
    };
    match decision {
        Decision::Move { to, reason, .. } => {
            let Some(g) = guests.get_mut(&process).filter(|g| !g.move_logged) else {
                return;
            };
            g.move_logged = true;
            info!(
                home,
                pid,
                to = to.get(),
                ?reason,
                "balancing: a guest would move on; not done yet (logged once)"
            );
        }
        Decision::GoHome { why, .. } => {
            info!(home, pid, ?why, "balancing: sending a guest home");
            if let Some(g) = guests.get_mut(&process) {
                g.recalled = Some(Instant::now());
            }
            let shared = shared.clone();
            tokio::spawn(async move { modes::send_home(&shared, home, pid).await });
        }
    }
}

/// The first two fields of `/proc/PID/schedstat`: time run and time waited on a run queue,
/// in nanoseconds.
fn read_schedstat(pid: i32) -> std::io::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    parse_schedstat(&text).ok_or_else(|| std::io::Error::other("unexpected schedstat format"))
}

fn parse_schedstat(text: &str) -> Option<(Duration, Duration)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let ran = fields.next()?.ok()?;
    let waited = fields.next()?.ok()?;
    Some((Duration::from_nanos(ran), Duration::from_nanos(waited)))
}

/// The balance room's view of the gossip view at `clock`: nodes that have published, alive
/// when the failure detector says so, heard `age` ago. This node (`own`) has the modes it
/// has now (`modes`), not those it last published, so that `mosctl stay` holds from the next
/// round. A node whose compatibility key differs from this node's (`compat`: another kernel,
/// see `KernelFacts`) could not take a process from here, and is left out.
fn cluster_view(
    snapshot: &[NodeView],
    clock: Duration,
    own: NodeId,
    modes: Status,
    compat: &[u8],
) -> ClusterView {
    let mut view = ClusterView::new();
    for node in snapshot {
        let (Some(state), Some(age)) = (&node.state, node.age) else {
            continue;
        };
        if state.compat != compat {
            continue;
        }
        let s = if node.node == own {
            modes
        } else {
            state.status
        };
        view.insert(
            node.node,
            NodeInfo {
                alive: node.liveness == Liveness::Alive,
                modes: Modes {
                    stay: s.stay,
                    lstay: s.lstay,
                    block: s.block,
                    quiet: s.quiet,
                    expel: s.expel,
                },
                load: state.load,
                speed: state.speed,
                cpus: f64::from(state.milli_cpus) / 1000.0,
                free_memory: state.mem_free,
                total_memory: state.mem_total,
                heard: clock.saturating_sub(age),
            },
        );
    }
    view
}

/// Orders one decision from the process's supervisor, and logs the answer when it comes.
fn carry_out(shared: &Arc<Shared>, tracked: &mut HashMap<i32, Tracked>, decision: Decision) {
    let process = decision.process();
    let Ok(pid) = i32::try_from(process.pid) else {
        return;
    };
    let target = match decision {
        Decision::Move { to, .. } => Some(to.get()),
        Decision::GoHome { .. } => None,
    };
    let reason = decision.reason();
    info!(pid, to = ?target, ?reason, "balancing: moving a process");
    match control::order(shared, pid, target, 0) {
        Ok((id, waiter)) => {
            if let Some(t) = tracked.get_mut(&pid) {
                // Its next sample starts after the move.
                t.last = None;
            }
            tokio::spawn(async move {
                match waiter.await {
                    Ok(Ok(())) => info!(pid, order = id, to = ?target, "balancing: moved"),
                    Ok(Err(failure)) => {
                        warn!(pid, order = id, to = ?target, "balancing: move refused: {failure}");
                    }
                    Err(_) => warn!(
                        pid,
                        order = id,
                        "balancing: the supervisor went away during the move"
                    ),
                }
            });
        }
        Err(Reply::Ok) => {}
        Err(Reply::Failed(failure)) => {
            warn!(pid, to = ?target, "balancing: move refused: {failure}");
        }
        Err(Reply::Error { message }) => warn!(pid, to = ?target, "balancing: {message}"),
        Err(other) => warn!(pid, to = ?target, "balancing: unexpected answer {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_run_and_wait_time() {
        assert_eq!(
            parse_schedstat("1500000000 250000000 42\n"),
            Some((Duration::from_millis(1500), Duration::from_millis(250)))
        );
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn own_schedstat_reads() {
        let (ran, _) = read_schedstat(std::process::id() as i32).unwrap();
        assert!(ran > Duration::ZERO);
    }
}
