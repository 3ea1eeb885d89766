//! The nodes MFS remembers for each process: the one it selected for `/mfs/selected`, and
//! the one it last created a file on through `/mfs/magic` (one [`Remembered`] each).
//!
//! A process selects node N by writing `N` to `/mfs/select` (MOSIX had `/proc/self/selected`,
//! which a user-space daemon cannot add); `magic` remembers the node of a creating open as
//! the kernel resolves it (`magic.rs`). Children forked after a node was remembered inherit
//! it, as MOSIX's children inherited both (fields of the process, copied at fork); children
//! forked before do not. Nothing is copied at fork: a process's node is found by walking up
//! its ancestors to the nearest one with a node remembered, and it counts only if the
//! ancestor's child on that walk started after the node was remembered. Processes are known
//! by PID and start time, so a reused PID does not inherit a dead process's node.

use std::collections::HashMap;

/// The node remembered for one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    node: u16,
    /// The process's start time (clock ticks since boot, /proc/PID/stat).
    started: u64,
    /// When the node was remembered, in the same unit.
    at: u64,
}

/// The fewest entries at which [`Remembered`] looks for processes that have gone.
const PRUNE_FLOOR: usize = 64;

/// One node per process, inherited by the children it forks afterwards.
#[derive(Default)]
pub struct Remembered {
    by_pid: HashMap<i32, Entry>,
    /// How many entries make the next [`Remembered::remember`] drop those of processes that
    /// have gone: twice what was left at the last such pass, so that a process creating file
    /// after file through `magic` costs a few reads of /proc a call, not one per process known.
    prune_at: usize,
}

/// What the walk needs to know of a process.
pub trait Processes {
    /// Its start time, in clock ticks since boot; `None` once it has gone.
    fn started(&self, pid: i32) -> Option<u64>;
    /// Its parent.
    fn parent(&self, pid: i32) -> Option<i32>;
    /// Now, in clock ticks since boot.
    fn now(&self) -> u64;
}

impl Remembered {
    /// Remember `node` for process `pid`, in place of its earlier one. The nodes of
    /// processes that have gone are dropped now and then (a gone process's entry never
    /// matches a process that reuses its PID: their start times differ).
    pub fn remember(&mut self, procs: &impl Processes, pid: i32, node: u16) {
        if self.by_pid.len() >= self.prune_at.max(PRUNE_FLOOR) {
            self.by_pid
                .retain(|&p, s| procs.started(p) == Some(s.started));
            self.prune_at = 2 * self.by_pid.len();
        }
        let Some(started) = procs.started(pid) else {
            return;
        };
        // The same node again: the children forked since its first time inherit it still.
        let same = |e: &Entry| e.node == node && e.started == started;
        if !self.by_pid.get(&pid).is_some_and(same) {
            let at = procs.now();
            self.by_pid.insert(pid, Entry { node, started, at });
        }
    }

    /// The node remembered for `pid`, or that it inherited.
    pub fn of(&self, procs: &impl Processes, pid: i32) -> Option<u16> {
        let mut pid = pid;
        // The start of the walk's previous process: a child of `pid` on the way up.
        let mut child_started: Option<u64> = None;
        // PID 1 and 0 end the walk; the bound stops a loop in a /proc read mid-change.
        for _ in 0..4096 {
            let started = procs.started(pid)?;
            if let Some(s) = self.by_pid.get(&pid)
                && s.started == started
                && child_started.is_none_or(|c| c >= s.at)
            {
                return Some(s.node);
            }
            child_started = Some(started);
            pid = procs.parent(pid).filter(|&p| p > 1)?;
        }
        None
    }
}

/// The processes of the daemon's PID namespace, from /proc.
pub struct Proc;

impl Processes for Proc {
    fn started(&self, pid: i32) -> Option<u64> {
        stat_field(pid, 22)?.parse().ok()
    }

    fn parent(&self, pid: i32) -> Option<i32> {
        stat_field(pid, 4)?.parse().ok()
    }

    fn now(&self) -> u64 {
        // SAFETY: an all-zero timespec is valid for the kernel to overwrite.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid timespec; CLOCK_BOOTTIME is the clock of /proc's start times.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        // SAFETY: sysconf has no failure mode for _SC_CLK_TCK on Linux.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        ts.tv_sec as u64 * hz + ts.tv_nsec as u64 * hz / 1_000_000_000
    }
}

/// Field `n` (1-based, as proc(5) numbers them) of /proc/PID/stat. The command name (field 2)
/// may hold spaces and parentheses, so the fields are counted after its last `)`.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process tree: pid -> (parent, start time), and a clock.
    struct Tree(HashMap<i32, (i32, u64)>, u64);

    impl Processes for Tree {
        fn started(&self, pid: i32) -> Option<u64> {
            self.0.get(&pid).map(|p| p.1)
        }
        fn parent(&self, pid: i32) -> Option<i32> {
            self.0.get(&pid).map(|p| p.0)
        }
        fn now(&self) -> u64 {
            self.1
        }
    }

    #[test]
    fn children_forked_after_a_node_is_remembered_inherit_it_and_earlier_ones_do_not() {
        // 10 started at 5; 11 (its child) before the node is remembered at 20, 12 after; 13 is
        // 12's child.
        let mut tree = Tree(
            HashMap::from([(10, (1, 5)), (11, (10, 8)), (12, (10, 25)), (13, (12, 30))]),
            20,
        );
        let mut sel = Remembered::default();
        assert_eq!(sel.of(&tree, 13), None);
        sel.remember(&tree, 10, 3);
        assert_eq!(sel.of(&tree, 10), Some(3));
        assert_eq!(sel.of(&tree, 11), None);
        assert_eq!(sel.of(&tree, 12), Some(3));
        assert_eq!(sel.of(&tree, 13), Some(3));
        // The same node again (a magic file after another at the same node): 12, forked in
        // between, still inherits it. Another node: 12 does not inherit that.
        tree.1 = 35;
        sel.remember(&tree, 10, 3);
        assert_eq!(sel.of(&tree, 12), Some(3));
        sel.remember(&tree, 10, 4);
        assert_eq!(sel.of(&tree, 10), Some(4));
        assert_eq!(sel.of(&tree, 12), None);
        // The nearest node remembered wins.
        tree.1 = 40;
        sel.remember(&tree, 12, 2);
        assert_eq!(sel.of(&tree, 12), Some(2));
        assert_eq!(sel.of(&tree, 10), Some(4));
        // 10 ends and its PID comes back for another process: no node for it.
        tree.0.insert(10, (1, 50));
        assert_eq!(sel.of(&tree, 10), None);
        // Enough processes remember a node that the gone ones are looked for: 10 is dropped.
        for pid in 100..100 + PRUNE_FLOOR as i32 {
            tree.0.insert(pid, (1, 60));
            sel.remember(&tree, pid, 1);
        }
        assert!(
            !sel.by_pid.contains_key(&10),
            "the dead process's node was dropped"
        );
        assert_eq!(
            sel.by_pid.len(),
            PRUNE_FLOOR + 1,
            "12 and the new ones are kept"
        );
    }
}
