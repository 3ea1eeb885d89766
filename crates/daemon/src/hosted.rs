//! The processes this node hosts: processes of other nodes, each run here by a guest that
//! registered with the daemon and reported it running.
//!
//! Pure bookkeeping behind one lock, like `table`: the guests' connections update it. A
//! listing takes the entries under the lock and reads each process's figures from the kernel
//! after it, through a function it is given ([`figures`]), so tests feed it made-up ones. Nothing is pushed: CPU time, memory and the time since the
//! process arrived are read when someone asks, from the process itself. Its start time
//! says when it arrived (the husk is made for the move) and its CPU time counts only what
//! it used here; both survive a restart of the daemon, which a time taken at registration
//! would not.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rmosix_wire::HostedProcess;

use crate::procfs::{Stat, Units};

/// One registration of a guest: its handle on its entry. An entry belongs to the guest
/// process; `conn` tells its registrations apart, so that the end of an old connection does
/// not remove what a newer one reported.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Registration {
    guest: i32,
    conn: u64,
}

#[derive(Debug)]
struct Guest {
    conn: u64,
    uid: u32,
    home_node: u16,
    process: Option<Process>,
    /// How long its process has waited here for calls forwarded home, as last told.
    waited: Duration,
}

/// A hosted process as the balancing loop sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Balanced {
    /// Its PID here.
    pub pid: i32,
    pub home_node: u16,
    /// Its PID at home.
    pub home_pid: i32,
    /// How long it has waited here for calls forwarded home, in all.
    pub waited: Duration,
}

/// A hosted process as its guest reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Process {
    /// Its PID here.
    pub pid: i32,
    /// Its PID at home.
    pub home_pid: i32,
}

/// A hosted process and its guest, as [`Hosted::entries`] gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    guest: i32,
    uid: u32,
    home_node: u16,
    process: Process,
}

/// The hosted processes of `entries` with their figures, by home node and home PID. `stat`
/// reads a process's stat; `uptime` is the clock its start time counts on. A process whose
/// parent is no longer its guest is leaving (its guest reaped it and is about to say so, and
/// its PID may be another's already) and is not listed.
pub(crate) fn figures(
    entries: &[Entry],
    mut stat: impl FnMut(i32) -> Option<Stat>,
    uptime: Duration,
    units: Units,
) -> Vec<HostedProcess> {
    let mut list: Vec<HostedProcess> = entries
        .iter()
        .filter_map(|e| {
            let stat = stat(e.process.pid).filter(|s| s.ppid == e.guest)?;
            let arrived = units.duration(stat.start_ticks);
            Some(HostedProcess {
                home_node: e.home_node,
                home_pid: e.process.home_pid,
                pid: e.process.pid,
                uid: e.uid,
                cpu_ms: units.duration(stat.cpu_ticks).as_millis() as u64,
                rss_kib: stat.rss_kib,
                seconds_here: uptime.saturating_sub(arrived).as_secs(),
            })
        })
        .collect();
    list.sort_by_key(|p| (p.home_node, p.home_pid, p.pid));
    list
}

/// The guests registered with this daemon, by guest PID, and the process each hosts.
#[derive(Debug, Default)]
pub(crate) struct Hosted {
    next_conn: u64,
    guests: HashMap<i32, Guest>,
    /// Sessions accepted whose guest is not started yet.
    sessions_arriving: usize,
    /// Guests started that have not registered yet.
    unregistered: HashSet<i32>,
}

impl Hosted {
    /// A guest (already identified as one this node started) registered. A guest that
    /// registers again, on a new connection before its old one was seen to end, starts over:
    /// it reports again what it hosts.
    pub fn register(&mut self, guest: i32, uid: u32, home_node: u16) -> Registration {
        self.unregistered.remove(&guest);
        self.next_conn += 1;
        let conn = self.next_conn;
        self.guests.insert(
            guest,
            Guest {
                conn,
                uid,
                home_node,
                process: None,
                waited: Duration::ZERO,
            },
        );
        Registration { guest, conn }
    }

    /// A session from another node was accepted: a process may arrive. Counted before the
    /// session checks that the node is not blocked, so that an `expel` that blocks the node
    /// after that check waits for the process and sends it on (see [`Hosted::any_between`]).
    pub fn session_accepted(&mut self) {
        self.sessions_arriving += 1;
    }

    /// An accepted session ended without starting a guest.
    pub fn session_dropped(&mut self) {
        self.sessions_arriving = self.sessions_arriving.saturating_sub(1);
    }

    /// An accepted session started guest `guest`, which is to register (and may have
    /// already: it registers as soon as it has its keys).
    pub fn guest_started(&mut self, guest: i32) {
        self.session_dropped();
        if !self.guests.contains_key(&guest) {
            self.unregistered.insert(guest);
        }
    }

    /// Guest `guest` exited: one that never registered is not awaited any more.
    pub fn guest_exited(&mut self, guest: i32) {
        self.unregistered.remove(&guest);
    }

    /// The home node of the process guest `guest` hosts, if it is one of this node's guests.
    pub fn home_of(&self, guest: i32) -> Option<u16> {
        self.guests.get(&guest).map(|g| g.home_node)
    }

    /// The guest of `reg` runs `process`. False if the registration was replaced by a newer
    /// one, which the guest then reports to.
    pub fn running(&mut self, reg: &Registration, process: Process) -> bool {
        match self.current(reg) {
            Some(guest) => {
                guest.process = Some(process);
                true
            }
            None => false,
        }
    }

    /// The process of `reg`'s guest has waited `total` for calls forwarded home.
    pub fn waited(&mut self, reg: &Registration, total: Duration) {
        if let Some(guest) = self.current(reg) {
            guest.waited = total;
        }
    }

    /// The process of `reg`'s guest left this node: the one it was, if any.
    pub fn left(&mut self, reg: &Registration) -> Option<Process> {
        self.current(reg)?.process.take()
    }

    /// `reg`'s connection ended: forget its guest, unless the guest registered again since.
    pub fn unregister(&mut self, reg: &Registration) {
        if self.current(reg).is_some() {
            self.guests.remove(&reg.guest);
        }
    }

    /// How many processes this node hosts.
    pub fn count(&self) -> usize {
        self.guests.values().filter(|g| g.process.is_some()).count()
    }

    /// Whether a process may be on its way: a session accepted or a guest started that has
    /// not registered yet, or a registered guest that runs no process (its process not
    /// restored yet, or gone and the guest about to exit).
    pub fn any_between(&self) -> bool {
        self.sessions_arriving > 0
            || !self.unregistered.is_empty()
            || self.guests.values().any(|g| g.process.is_none())
    }

    /// Each hosted process by its home node and PID there.
    pub fn homes(&self) -> Vec<(u16, i32)> {
        self.guests
            .values()
            .filter_map(|g| Some((g.home_node, g.process?.home_pid)))
            .collect()
    }

    /// Each hosted process.
    pub fn processes(&self) -> Vec<Balanced> {
        self.guests
            .values()
            .filter_map(|g| {
                let p = g.process?;
                Some(Balanced {
                    pid: p.pid,
                    home_node: g.home_node,
                    home_pid: p.home_pid,
                    waited: g.waited,
                })
            })
            .collect()
    }

    /// What each hosted process is, for a listing: read under the lock, while the figures are
    /// read from the kernel after it (see [`figures`]).
    pub fn entries(&self) -> Vec<Entry> {
        self.guests
            .iter()
            .filter_map(|(&guest, g)| {
                Some(Entry {
                    guest,
                    uid: g.uid,
                    home_node: g.home_node,
                    process: g.process?,
                })
            })
            .collect()
    }

    fn current(&mut self, reg: &Registration) -> Option<&mut Guest> {
        self.guests
            .get_mut(&reg.guest)
            .filter(|g| g.conn == reg.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: Units = Units {
        ticks_per_second: 100,
    };

    /// Stat of a process that arrived at second 10 of uptime, used 2.5 s of CPU and holds
    /// 1 MiB, under parent `ppid`.
    fn stat(ppid: i32) -> Stat {
        Stat {
            ppid,
            cpu_ticks: 250,
            start_ticks: 1000,
            rss_kib: 1024,
        }
    }

    fn process(pid: i32, home_pid: i32) -> Process {
        Process { pid, home_pid }
    }

    #[test]
    fn a_process_is_listed_from_running_until_it_leaves() {
        let mut hosted = Hosted::default();
        let reg = hosted.register(100, 1000, 1);
        assert_eq!(hosted.count(), 0, "registered, not yet running");
        assert!(hosted.running(&reg, process(101, 4711)));
        assert_eq!(hosted.count(), 1);
        let list = figures(
            &hosted.entries(),
            |_| Some(stat(100)),
            Duration::from_secs(70),
            UNITS,
        );
        assert_eq!(
            list,
            [HostedProcess {
                home_node: 1,
                home_pid: 4711,
                pid: 101,
                uid: 1000,
                cpu_ms: 2500,
                rss_kib: 1024,
                seconds_here: 60,
            }]
        );
        assert_eq!(hosted.left(&reg), Some(process(101, 4711)));
        assert_eq!(hosted.left(&reg), None);
        assert_eq!(hosted.count(), 0);
        assert!(
            figures(
                &hosted.entries(),
                |_| Some(stat(100)),
                Duration::ZERO,
                UNITS
            )
            .is_empty()
        );
        hosted.unregister(&reg);
        assert!(!hosted.running(&reg, process(101, 4711)));
    }

    #[test]
    fn a_process_is_awaited_from_its_session_until_its_guest_runs_it_or_ends() {
        let mut hosted = Hosted::default();
        assert!(!hosted.any_between());
        hosted.session_accepted();
        assert!(hosted.any_between(), "a session accepted");
        hosted.session_dropped();
        assert!(
            !hosted.any_between(),
            "the session dropped before its guest started"
        );

        hosted.session_accepted();
        hosted.guest_started(100);
        assert!(hosted.any_between(), "a guest started, not registered");
        let reg = hosted.register(100, 1000, 1);
        assert!(hosted.any_between(), "registered, its process not restored");
        hosted.running(&reg, process(101, 4711));
        assert!(!hosted.any_between(), "running");

        hosted.session_accepted();
        hosted.guest_started(200);
        hosted.guest_exited(200);
        assert!(
            !hosted.any_between(),
            "a guest that ended before it registered"
        );

        hosted.session_accepted();
        let early = hosted.register(300, 1000, 1);
        hosted.guest_started(300);
        hosted.running(&early, process(301, 9));
        assert!(
            !hosted.any_between(),
            "a guest that registered before its start was noted"
        );
    }

    #[test]
    fn a_guest_gone_takes_its_process_off_the_list() {
        let mut hosted = Hosted::default();
        let reg = hosted.register(100, 1000, 1);
        hosted.running(&reg, process(101, 4711));
        hosted.unregister(&reg);
        assert_eq!(hosted.count(), 0);
        assert!(
            figures(
                &hosted.entries(),
                |_| Some(stat(100)),
                Duration::ZERO,
                UNITS
            )
            .is_empty()
        );
    }

    #[test]
    fn the_end_of_an_old_connection_leaves_the_new_registration() {
        let mut hosted = Hosted::default();
        let old = hosted.register(100, 1000, 1);
        hosted.running(&old, process(101, 4711));
        // The guest lost its connection and registered again before the daemon saw the old
        // one end: the old one neither reports nor removes anything any more.
        let new = hosted.register(100, 1000, 1);
        assert_eq!(hosted.count(), 0, "the new registration reports afresh");
        assert!(!hosted.running(&old, process(101, 4711)));
        assert!(hosted.running(&new, process(101, 4711)));
        assert_eq!(hosted.left(&old), None);
        hosted.unregister(&old);
        assert_eq!(hosted.count(), 1);
        hosted.unregister(&new);
        assert_eq!(hosted.count(), 0);
    }

    #[test]
    fn a_process_no_longer_under_its_guest_or_gone_is_not_listed() {
        let mut hosted = Hosted::default();
        let a = hosted.register(100, 1000, 2);
        hosted.running(&a, process(101, 7));
        let b = hosted.register(200, 0, 1);
        hosted.running(&b, process(201, 9));
        let c = hosted.register(300, 0, 1);
        hosted.running(&c, process(301, 3));
        let list = figures(
            &hosted.entries(),
            |pid| match pid {
                101 => Some(stat(100)),
                // Reaped by its guest, its PID taken by a process of someone else.
                201 => Some(stat(1)),
                _ => Some(stat(300)),
            },
            Duration::from_secs(10),
            UNITS,
        );
        let listed: Vec<(u16, i32)> = list.iter().map(|p| (p.home_node, p.home_pid)).collect();
        assert_eq!(listed, [(1, 3), (2, 7)], "sorted by home node and PID");
        assert_eq!(hosted.count(), 3, "the count is what the guests reported");
        let none = figures(&hosted.entries(), |_| None, Duration::ZERO, UNITS);
        assert!(none.is_empty());
    }
}
