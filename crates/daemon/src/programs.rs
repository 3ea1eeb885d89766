//! What this daemon learned of each program from the runs of it that it saw end: how long a
//! run lasted after its exec, and whether it forked. Placement at exec
//! (`balancer::place_at_exec`) asks it before it moves a process that has just exec'd.
//!
//! A moved process comes home to fork (fork, clone and execve run at home), so placing a
//! program that forks (a shell, make, a compiler driver) moves it out to bring it back at
//! once; and a run that ends within [`SHORTEST_PLACED`] gains less than its move costs. `mosrun make
//! -j8` execs `sh`, `gcc`, `cc1` and `as` by the hundred: only `cc1` should go. A program's
//! first runs are placed as any process is (nothing is known yet); from then on, one whose
//! runs fork in half the cases or more, or last less than [`SHORTEST_PLACED`] on average,
//! runs where it was exec'd, and the balancing loop still moves it if it turns out to run
//! long. MOSIX has no such memory (its processes are never placed before they run); this is
//! ours, see docs/balancing.md, rule 5.
//!
//! A program is its executable file (device and inode of `/proc/PID/exe`): every script of
//! one interpreter counts as one program.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A program: its executable's device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProgramId {
    pub dev: u64,
    pub ino: u64,
}

/// The shortest average run (from its exec to its end) of a program that is placed at exec:
/// a few times what the placement costs (a freshly exec'd `cc1` moves in 45 ms, `migrate`
/// answers in 90: `./dev bench samefile`). It was 1 s: in `mosrun make -j8` of zstd the small
/// files' compilers brought cc1's average under it, and the large files' then stayed at node
/// 1 with seven others on its half CPU (1.47x node 1 alone, 1.95x with 200 ms; one run each,
/// `./dev bench --quick make`).
pub(crate) const SHORTEST_PLACED: Duration = Duration::from_millis(200);
/// How many programs are remembered; the one seen longest ago goes first.
const REMEMBERED: usize = 4096;
/// The weight of the newest run in a program's average length.
const NEWEST_WEIGHT: f64 = 0.25;

/// What is known of one program.
#[derive(Clone, Copy, Debug)]
struct Known {
    runs: u32,
    forked: u32,
    /// Average run length, in seconds: the first run's, then weighted towards the newest.
    seconds: f64,
    last_seen: Instant,
}

/// The programs learned so far.
#[derive(Debug, Default)]
pub(crate) struct Programs {
    known: HashMap<ProgramId, Known>,
}

impl Programs {
    /// One run of `program` ended (or exec'd another program) after `lasted`; `forked`:
    /// whether it forked meanwhile.
    pub fn learn(&mut self, program: ProgramId, lasted: Duration, forked: bool, now: Instant) {
        if !self.known.contains_key(&program) && self.known.len() >= REMEMBERED {
            let oldest = self.known.iter().min_by_key(|(_, k)| k.last_seen);
            if let Some((&oldest, _)) = oldest {
                self.known.remove(&oldest);
            }
        }
        let seconds = lasted.as_secs_f64();
        let known = self.known.entry(program).or_insert(Known {
            runs: 0,
            forked: 0,
            seconds,
            last_seen: now,
        });
        if known.runs > 0 {
            known.seconds += NEWEST_WEIGHT * (seconds - known.seconds);
        }
        known.runs = known.runs.saturating_add(1);
        known.forked = known.forked.saturating_add(u32::from(forked));
        known.last_seen = now;
    }

    /// Whether a process that has just exec'd `program` may be placed elsewhere: yes for a
    /// program not seen yet; no for one whose runs fork in half the cases or more, or last
    /// less than [`SHORTEST_PLACED`] on average.
    pub fn worth_placing(&self, program: ProgramId) -> bool {
        self.known.get(&program).is_none_or(|k| {
            k.forked.saturating_mul(2) < k.runs && k.seconds >= SHORTEST_PLACED.as_secs_f64()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELL: ProgramId = ProgramId { dev: 1, ino: 10 };
    const COMPILER: ProgramId = ProgramId { dev: 1, ino: 20 };
    const ASSEMBLER: ProgramId = ProgramId { dev: 1, ino: 30 };

    #[test]
    fn programs_that_fork_or_end_soon_are_not_placed_once_known() {
        let now = Instant::now();
        let mut programs = Programs::default();
        for p in [SHELL, COMPILER, ASSEMBLER] {
            assert!(programs.worth_placing(p), "unknown: placed as any process");
        }
        programs.learn(SHELL, Duration::from_secs(30), true, now);
        programs.learn(COMPILER, Duration::from_secs(3), false, now);
        programs.learn(ASSEMBLER, Duration::from_millis(50), false, now);
        assert!(!programs.worth_placing(SHELL), "forks");
        assert!(programs.worth_placing(COMPILER));
        assert!(!programs.worth_placing(ASSEMBLER), "ends soon");
    }

    #[test]
    fn a_program_is_judged_on_most_of_its_runs_with_the_newest_weighing_most() {
        let now = Instant::now();
        let mut programs = Programs::default();
        // Forks in one run of three: still placed.
        programs.learn(SHELL, Duration::from_secs(5), true, now);
        programs.learn(SHELL, Duration::from_secs(5), false, now);
        assert!(!programs.worth_placing(SHELL), "one of two forked");
        programs.learn(SHELL, Duration::from_secs(5), false, now);
        assert!(programs.worth_placing(SHELL), "one of three forked");
        // Long runs, then short ones: the average follows the newest.
        for _ in 0..3 {
            programs.learn(COMPILER, Duration::from_secs(4), false, now);
        }
        assert!(programs.worth_placing(COMPILER));
        for _ in 0..16 {
            programs.learn(COMPILER, Duration::from_millis(20), false, now);
        }
        assert!(!programs.worth_placing(COMPILER));
    }

    #[test]
    fn the_program_seen_longest_ago_is_forgotten_first() {
        let start = Instant::now();
        let mut programs = Programs::default();
        for ino in 0..REMEMBERED as u64 {
            let at = start + Duration::from_millis(ino);
            programs.learn(ProgramId { dev: 2, ino }, Duration::ZERO, false, at);
        }
        let later = start + Duration::from_secs(10);
        programs.learn(ProgramId { dev: 2, ino: 0 }, Duration::ZERO, false, later);
        programs.learn(SHELL, Duration::ZERO, true, later);
        assert_eq!(programs.known.len(), REMEMBERED);
        assert!(
            !programs.worth_placing(ProgramId { dev: 2, ino: 0 }),
            "seen again"
        );
        assert!(
            programs.worth_placing(ProgramId { dev: 2, ino: 1 }),
            "forgotten"
        );
        assert!(!programs.worth_placing(SHELL));
    }
}
