//! The table of supervised processes, their supervisors and migrations in flight.
//!
//! Pure bookkeeping behind one lock: no I/O, and no `await` while it is held. Commands to a
//! supervisor go into that supervisor's channel; its connection task writes them out.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use rmosix_wire::{Advice, Command, MoveError, Report, Target};

use crate::programs::{ProgramId, Programs};

/// A supervisor, by registration number (unique per daemon run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SupervisorId(u64);

/// The outcome of a migration as the supervisor reported it.
pub(crate) type MigrateResult = Result<(), MoveError>;

#[derive(Debug)]
struct Process {
    supervisor: SupervisorId,
    /// `None` while at home.
    node: Option<u16>,
    /// The order being carried out for it, until its supervisor answers it. One at a time:
    /// a second order could only race the first.
    moving: Option<u64>,
    /// Its job's advice, with its own lock (`migrate PID lock|unlock`).
    advice: Advice,
    /// How many times it has changed node.
    moves: u32,
    /// Why its last order failed, until one succeeds.
    cant_move: Option<String>,
    /// The program it runs since its last exec, if one was reported.
    run: Option<Run>,
}

/// A run of a program, from its exec: what [`Programs`] learns when it ends.
#[derive(Debug)]
struct Run {
    program: ProgramId,
    since: Instant,
    forked: bool,
}

/// A supervised process as the balancing loop and `mosps` see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub pid: i32,
    /// `None` while at home.
    pub node: Option<u16>,
    /// Whether an order for it is under way.
    pub moving: bool,
    pub advice: Advice,
    pub moves: u32,
    pub cant_move: Option<String>,
}

/// A supervisor: where its commands go, and the advice its job's processes start with.
#[derive(Debug)]
struct Supervisor {
    commands: mpsc::UnboundedSender<Command>,
    advice: Advice,
}

#[derive(Debug)]
struct Pending {
    supervisor: SupervisorId,
    pid: i32,
    /// Where the answer goes; `None` once the caller gave up (the order is then answered to
    /// no one, but still holds the process until it is).
    done: Option<oneshot::Sender<MigrateResult>>,
}

/// Why a migration could not be handed to a supervisor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No supervisor reported the process.
    NotSupervised,
    /// The process is already where it should go.
    AlreadyThere,
    /// Another order for the process has not been answered yet.
    Busy,
    /// Its supervisor's connection is gone.
    SupervisorGone,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    next_supervisor: u64,
    next_command: u64,
    supervisors: HashMap<SupervisorId, Supervisor>,
    processes: HashMap<i32, Process>,
    pending: HashMap<u64, Pending>,
    programs: Programs,
}

impl Table {
    /// Register a supervisor whose commands go to `commands`, and whose processes start with
    /// `advice`.
    pub fn add_supervisor(
        &mut self,
        commands: mpsc::UnboundedSender<Command>,
        advice: Advice,
    ) -> SupervisorId {
        self.next_supervisor += 1;
        let id = SupervisorId(self.next_supervisor);
        self.supervisors.insert(id, Supervisor { commands, advice });
        id
    }

    /// Forget a supervisor, its processes, and its migrations in flight (whose waiters then
    /// see their channel closed).
    pub fn remove_supervisor(&mut self, id: SupervisorId) {
        self.supervisors.remove(&id);
        self.processes.retain(|_, p| p.supervisor != id);
        self.pending.retain(|_, p| p.supervisor != id);
    }

    /// Apply a supervisor's report. Reports about processes of other supervisors are ignored.
    pub fn report(&mut self, from: SupervisorId, report: Report) {
        match report {
            Report::Started { pid } => {
                let Some(supervisor) = self.supervisors.get(&from) else {
                    return;
                };
                self.processes.insert(
                    pid,
                    Process {
                        supervisor: from,
                        node: None,
                        moving: None,
                        advice: supervisor.advice,
                        moves: 0,
                        cant_move: None,
                        run: None,
                    },
                );
            }
            Report::Forked { pid } => self.forked(from, pid),
            Report::Moved { pid, node } => {
                if let Some(p) = self
                    .processes
                    .get_mut(&pid)
                    .filter(|p| p.supervisor == from && p.node != node)
                {
                    p.node = node;
                    p.moves = p.moves.saturating_add(1);
                }
            }
            Report::Ended { pid } => {
                if self
                    .processes
                    .get(&pid)
                    .is_some_and(|p| p.supervisor == from)
                {
                    self.processes.remove(&pid);
                }
            }
            Report::MigrateDone { id, result } => {
                if self.pending.get(&id).is_some_and(|p| p.supervisor == from)
                    && let Some(pending) = self.pending.remove(&id)
                {
                    if let Some(process) = self.processes.get_mut(&pending.pid)
                        && process.moving == Some(id)
                    {
                        process.moving = None;
                        process.cant_move = match &result {
                            Ok(()) => None,
                            Err(failure) => Some(failure.to_string()),
                        };
                    }
                    // The waiter may have gone; then nobody needs the answer.
                    if let Some(done) = pending.done {
                        let _ = done.send(result);
                    }
                }
            }
            // The metrics count tallies (control::accept_report); the balancer answers execs
            // (control::supervise_loop).
            Report::Tally(_) | Report::Execed { .. } => {}
        }
    }

    /// Where a supervised process runs: `Some(None)` at home, `None` if not supervised.
    pub fn location(&self, pid: i32) -> Option<Option<u16>> {
        self.processes.get(&pid).map(|p| p.node)
    }

    /// The supervised processes that run on other nodes, with the node, lowest PID first.
    pub fn away(&self) -> Vec<(i32, u16)> {
        let mut away: Vec<(i32, u16)> = self
            .processes
            .iter()
            .filter_map(|(&pid, p)| Some((pid, p.node?)))
            .collect();
        away.sort_unstable();
        away
    }

    /// Every supervised process, lowest PID first.
    pub fn processes(&self) -> Vec<Entry> {
        let mut entries: Vec<Entry> = self
            .processes
            .keys()
            .filter_map(|&pid| self.entry(pid))
            .collect();
        entries.sort_unstable_by_key(|e| e.pid);
        entries
    }

    /// One process of supervisor `from`; `None` if that supervisor did not report it.
    pub fn entry_of(&self, from: SupervisorId, pid: i32) -> Option<Entry> {
        self.processes
            .get(&pid)
            .filter(|p| p.supervisor == from)
            .and_then(|_| self.entry(pid))
    }

    /// One supervised process; `None` if it is not supervised.
    pub fn entry(&self, pid: i32) -> Option<Entry> {
        self.processes.get(&pid).map(|p| Entry {
            pid,
            node: p.node,
            moving: p.moving.is_some(),
            advice: p.advice,
            moves: p.moves,
            cant_move: p.cant_move.clone(),
        })
    }

    /// `from`'s process `pid` has just exec'd `program`: the run of the program it ran
    /// before, if any, ends here.
    pub fn execed(&mut self, from: SupervisorId, pid: i32, program: ProgramId, now: Instant) {
        self.end_run(from, pid, now);
        if let Some(p) = self.own_process(from, pid) {
            p.run = Some(Run {
                program,
                since: now,
                forked: false,
            });
        }
    }

    /// `from`'s process `parent` forked. Only a process `from` reported started, which was
    /// checked then, can be marked.
    fn forked(&mut self, from: SupervisorId, parent: i32) {
        if let Some(run) = self.own_process(from, parent).and_then(|p| p.run.as_mut()) {
            run.forked = true;
        }
    }

    /// The run of `from`'s process `pid` ends (it exited, or exec'd another program): its
    /// program learns how long it lasted and whether it forked.
    pub fn end_run(&mut self, from: SupervisorId, pid: i32, now: Instant) {
        if let Some(run) = self.own_process(from, pid).and_then(|p| p.run.take()) {
            let lasted = now.saturating_duration_since(run.since);
            self.programs.learn(run.program, lasted, run.forked, now);
        }
    }

    /// Whether `pid`, which has just exec'd, runs a program worth placing elsewhere (see
    /// [`Programs::worth_placing`]); true when its program is not known.
    pub fn worth_placing(&self, pid: i32) -> bool {
        let program = self.processes.get(&pid).and_then(|p| p.run.as_ref());
        program.is_none_or(|run| self.programs.worth_placing(run.program))
    }

    fn own_process(&mut self, from: SupervisorId, pid: i32) -> Option<&mut Process> {
        self.processes
            .get_mut(&pid)
            .filter(|p| p.supervisor == from)
    }

    /// Locks `pid` against automatic moves, or unlocks it; false if it is not supervised.
    pub fn set_locked(&mut self, pid: i32, locked: bool) -> bool {
        match self.processes.get_mut(&pid) {
            Some(p) => {
                p.advice.locked = locked;
                true
            }
            None => false,
        }
    }

    /// Whether an order for `pid` is under way.
    pub fn is_moving(&self, pid: i32) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.moving.is_some())
    }

    /// Number of supervised processes.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Ask the supervisor of `pid` to move it to `target` (`None` = home). Returns the
    /// order's id and a receiver that gets the supervisor's answer, or is closed if the
    /// supervisor goes away first.
    pub fn start_migrate(
        &mut self,
        pid: i32,
        target: Option<u16>,
    ) -> Result<(u64, oneshot::Receiver<MigrateResult>), Refusal> {
        let process = self.processes.get(&pid).ok_or(Refusal::NotSupervised)?;
        if process.moving.is_some() {
            return Err(Refusal::Busy);
        }
        if process.node == target {
            return Err(Refusal::AlreadyThere);
        }
        let supervisor = process.supervisor;
        let commands = &self
            .supervisors
            .get(&supervisor)
            .ok_or(Refusal::SupervisorGone)?
            .commands;
        self.next_command += 1;
        let id = self.next_command;
        let target = target.map_or(Target::Home, Target::Node);
        commands
            .send(Command::Migrate { id, pid, target })
            .map_err(|_| Refusal::SupervisorGone)?;
        let (done, waiter) = oneshot::channel();
        self.pending.insert(
            id,
            Pending {
                supervisor,
                pid,
                done: Some(done),
            },
        );
        if let Some(process) = self.processes.get_mut(&pid) {
            process.moving = Some(id);
        }
        Ok((id, waiter))
    }

    /// The caller of order `id` gave up: tell its supervisor to drop the order if no move has
    /// started for it. The process stays busy until the supervisor answers, so no second
    /// order can race a move that did start.
    pub fn cancel(&mut self, id: u64) {
        if let Some(pending) = self.pending.get_mut(&id) {
            pending.done = None;
            if let Some(supervisor) = self.supervisors.get(&pending.supervisor) {
                // A supervisor that is gone has dropped the order with its connection.
                let _ = supervisor.commands.send(Command::Cancel { id });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmosix_wire::Decay;

    fn supervised() -> (Table, SupervisorId, mpsc::UnboundedReceiver<Command>) {
        let mut table = Table::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let sup = table.add_supervisor(tx, Advice::default());
        table.report(sup, Report::Started { pid: 10 });
        (table, sup, rx)
    }

    #[test]
    fn a_program_whose_runs_fork_is_not_placed_again() {
        let (mut table, sup, _rx) = supervised();
        let shell = ProgramId { dev: 1, ino: 7 };
        let start = Instant::now();
        table.execed(sup, 10, shell, start);
        assert!(table.worth_placing(10), "not known yet");
        // Its child, and a process of another supervisor, which says nothing of it.
        table.report(sup, Report::Started { pid: 11 });
        table.report(sup, Report::Forked { pid: 10 });
        table.end_run(sup, 10, start + std::time::Duration::from_secs(5));
        table.report(sup, Report::Ended { pid: 10 });
        table.execed(sup, 11, shell, start + std::time::Duration::from_secs(6));
        assert!(!table.worth_placing(11), "its one run forked");
    }

    #[test]
    fn a_run_ends_at_the_next_exec_and_others_learn_nothing() {
        let (mut table, sup, _rx) = supervised();
        let (other, _rx2) = mpsc::unbounded_channel();
        let stranger = table.add_supervisor(other, Advice::default());
        let short = ProgramId { dev: 1, ino: 8 };
        let long = ProgramId { dev: 1, ino: 9 };
        let start = Instant::now();
        table.execed(sup, 10, short, start);
        table.report(stranger, Report::Forked { pid: 10 });
        table.end_run(stranger, 10, start);
        // Exec'd again after 0.1 s: the short program's run is over.
        table.execed(sup, 10, long, start + std::time::Duration::from_millis(100));
        table.report(sup, Report::Started { pid: 12 });
        table.execed(sup, 12, short, start + std::time::Duration::from_secs(1));
        assert!(!table.worth_placing(12), "its one run lasted 0.1 s");
        assert!(table.worth_placing(10), "the long one has not ended yet");
    }

    #[test]
    fn away_lists_the_processes_on_other_nodes() {
        let (mut table, sup, _rx) = supervised();
        assert_eq!(table.away(), vec![]);
        for pid in [12, 11] {
            table.report(sup, Report::Started { pid });
        }
        table.report(
            sup,
            Report::Moved {
                pid: 12,
                node: Some(3),
            },
        );
        table.report(
            sup,
            Report::Moved {
                pid: 11,
                node: Some(2),
            },
        );
        assert_eq!(table.away(), vec![(11, 2), (12, 3)]);
        table.report(
            sup,
            Report::Moved {
                pid: 12,
                node: None,
            },
        );
        assert_eq!(table.away(), vec![(11, 2)]);
        assert!(!table.is_moving(11));
        let (id, _waiter) = table.start_migrate(11, None).unwrap();
        assert!(table.is_moving(11));
        table.report(sup, Report::MigrateDone { id, result: Ok(()) });
        assert!(!table.is_moving(11));
        assert!(!table.is_moving(99));
    }

    #[test]
    fn processes_start_with_their_jobs_advice_and_count_moves_and_failures() {
        let mut table = Table::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        let advice = Advice {
            locked: true,
            decay: Decay::CpuBound,
            memory_need_mb: 64,
        };
        let sup = table.add_supervisor(tx, advice);
        table.report(sup, Report::Started { pid: 7 });
        let entry = |table: &Table| table.processes().into_iter().next().unwrap();
        assert_eq!(entry(&table).advice, advice);
        assert!(table.set_locked(7, false));
        assert!(!entry(&table).advice.locked);
        assert!(!table.set_locked(8, true));
        for node in [Some(2), Some(2), Some(3), None] {
            table.report(sup, Report::Moved { pid: 7, node });
        }
        // A report of where it already was is no move.
        assert_eq!(entry(&table).moves, 3);
        let (id, _waiter) = table.start_migrate(7, Some(2)).unwrap();
        assert!(entry(&table).moving);
        let failure = MoveError::Busy;
        table.report(
            sup,
            Report::MigrateDone {
                id,
                result: Err(failure.clone()),
            },
        );
        assert_eq!(entry(&table).cant_move, Some(failure.to_string()));
        let (id, _waiter) = table.start_migrate(7, Some(2)).unwrap();
        table.report(sup, Report::MigrateDone { id, result: Ok(()) });
        assert_eq!(entry(&table).cant_move, None);
    }

    #[test]
    fn reports_track_where_processes_run() {
        let (mut table, sup, _rx) = supervised();
        assert_eq!(table.location(10), Some(None));
        table.report(
            sup,
            Report::Moved {
                pid: 10,
                node: Some(3),
            },
        );
        assert_eq!(table.location(10), Some(Some(3)));
        assert_eq!(table.process_count(), 1);
        table.report(sup, Report::Ended { pid: 10 });
        assert_eq!(table.location(10), None);
        assert_eq!(table.process_count(), 0);
    }

    #[test]
    fn a_supervisor_cannot_touch_anothers_processes() {
        let (mut table, _sup, _rx) = supervised();
        let (tx, _rx2) = mpsc::unbounded_channel();
        let other = table.add_supervisor(tx, Advice::default());
        table.report(
            other,
            Report::Moved {
                pid: 10,
                node: Some(3),
            },
        );
        table.report(other, Report::Ended { pid: 10 });
        assert_eq!(table.location(10), Some(None));
    }

    #[test]
    fn migration_goes_to_the_supervisor_and_back() {
        let (mut table, sup, mut rx) = supervised();
        let (_, mut waiter) = table.start_migrate(10, Some(3)).unwrap();
        let Ok(Command::Migrate {
            id,
            pid: 10,
            target: Target::Node(3),
        }) = rx.try_recv()
        else {
            panic!("no command sent");
        };
        // An answer from someone else, or for another id, changes nothing.
        let (tx, _rx2) = mpsc::unbounded_channel();
        let other = table.add_supervisor(tx, Advice::default());
        table.report(other, Report::MigrateDone { id, result: Ok(()) });
        table.report(
            sup,
            Report::MigrateDone {
                id: id + 1,
                result: Ok(()),
            },
        );
        assert!(waiter.try_recv().is_err());
        table.report(
            sup,
            Report::MigrateDone {
                id,
                result: Err(MoveError::Busy),
            },
        );
        assert_eq!(waiter.try_recv().unwrap(), Err(MoveError::Busy));
    }

    #[test]
    fn refusals() {
        let (mut table, sup, rx) = supervised();
        assert_eq!(
            table.start_migrate(11, None).unwrap_err(),
            Refusal::NotSupervised
        );
        assert_eq!(
            table.start_migrate(10, None).unwrap_err(),
            Refusal::AlreadyThere
        );
        drop(rx);
        assert_eq!(
            table.start_migrate(10, Some(2)).unwrap_err(),
            Refusal::SupervisorGone
        );
        table.remove_supervisor(sup);
        assert_eq!(
            table.start_migrate(10, Some(2)).unwrap_err(),
            Refusal::NotSupervised
        );
    }

    #[test]
    fn a_second_order_is_refused_until_the_first_is_answered() {
        let (mut table, sup, _rx) = supervised();
        let (id, mut waiter) = table.start_migrate(10, Some(2)).unwrap();
        assert_eq!(table.start_migrate(10, Some(3)).unwrap_err(), Refusal::Busy);
        assert_eq!(table.start_migrate(10, None).unwrap_err(), Refusal::Busy);
        table.report(
            sup,
            Report::Moved {
                pid: 10,
                node: Some(2),
            },
        );
        table.report(sup, Report::MigrateDone { id, result: Ok(()) });
        assert_eq!(waiter.try_recv().unwrap(), Ok(()));
        assert_eq!(
            table.start_migrate(10, Some(2)).unwrap_err(),
            Refusal::AlreadyThere
        );
        assert!(table.start_migrate(10, None).is_ok());
    }

    #[test]
    fn a_cancelled_order_is_sent_on_and_holds_the_process_until_answered() {
        let (mut table, sup, mut rx) = supervised();
        let (id, waiter) = table.start_migrate(10, Some(2)).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Command::Migrate { .. })));
        drop(waiter);
        table.cancel(id);
        assert_eq!(rx.try_recv().unwrap(), Command::Cancel { id });
        assert_eq!(table.start_migrate(10, Some(3)).unwrap_err(), Refusal::Busy);
        table.report(
            sup,
            Report::MigrateDone {
                id,
                result: Err(MoveError::Cancelled),
            },
        );
        assert!(table.start_migrate(10, Some(3)).is_ok());
        // An order already answered cannot be cancelled any more.
        table.cancel(id);
        assert!(matches!(rx.try_recv(), Ok(Command::Migrate { .. })));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_vanished_supervisor_fails_its_migrations() {
        let (mut table, sup, _rx) = supervised();
        let (_, mut waiter) = table.start_migrate(10, Some(2)).unwrap();
        table.remove_supervisor(sup);
        assert!(matches!(
            waiter.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(table.location(10), None);
    }
}
