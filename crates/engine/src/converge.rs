//! When pre-copy's running rounds stop and the process is frozen for the last one, and how
//! hard it is slowed down until then: a pure function of what each round sent, how long it
//! took and how much the process wrote meanwhile. Time is an input, so it is tested without
//! a kernel. The reasoning and its sources are in docs/engine.md (Pre-copy).
//!
//! After each running round the sender scans what the process wrote since the round began
//! (that is exactly what the next round would send) and asks [`Converge::after`]:
//!
//! - **freeze** when sending that frozen would fit the pause budget at the rate the rounds
//!   measured; when the rounds stopped shrinking and the process cannot be slowed further;
//!   or when the round or time bound is reached;
//! - else **another round**, at a throttle level chosen so that the process writes at most a
//!   fifth of what the next round sends while that round goes. The level only rises during a
//!   move, as with QEMU's auto-converge.

use std::time::Duration;

use crate::throttle::Level;

/// Bounds and targets of the rounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The final round should take at most this long at the measured send rate: under a
    /// third of the pause we aim for (100 ms). The rest goes to the answers that cross the
    /// link while the process waits for its final round, to reading the header and to the
    /// receiver's restore of the task.
    pub pause: Duration,
    /// At most this many running rounds, the first included.
    pub rounds: u32,
    /// The running rounds may take at most this many times as long as the first one ...
    pub time_factor: u32,
    /// ... plus this long, whatever the first took.
    pub time_floor: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pause: Duration::from_millis(30),
            rounds: 20,
            time_factor: 4,
            time_floor: Duration::from_secs(1),
        }
    }
}

/// What one running round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Page bytes it sent.
    pub sent: u64,
    /// From its start to the scan that closed it.
    pub took: Duration,
    /// Page bytes the process wrote meanwhile, as that scan found them: what the next round
    /// sends, or the frozen one.
    pub written: u64,
}

/// What to do after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send another round while the process runs, slowed down to this level.
    Another(Level),
    /// Freeze the process and send the rest in the final round.
    Freeze(Why),
}

/// Why the rounds end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// What is left fits the pause target.
    Fits,
    /// The rounds no longer shrink, and the process cannot be slowed down further.
    Stuck,
    /// The bound on the number of rounds.
    Rounds,
    /// The bound on the time the rounds may take.
    Time,
}

/// A round counts as shrinking if it leaves at most this share of the previous one's writes.
const SHRINK: f64 = 0.9;
/// The share of a round's bytes the process may write again while the round goes: each round
/// is then at most a fifth of the one before. QEMU's auto-converge throttles when a period's
/// writes exceed half of what it sent (`throttle-trigger-threshold`, 50); we aim lower,
/// because the pause target is tighter than QEMU's 300 ms default downtime.
const REWRITE: f64 = 0.2;
/// Rounds smaller than this measure the send rate badly (fixed costs dominate): the rate of
/// an earlier round stands.
const RATE_SAMPLE: u64 = 4 << 20;

/// The policy's state across the rounds of one move.
#[derive(Debug, Clone)]
pub struct Converge {
    limits: Limits,
    can_slow: bool,
    rounds: u32,
    /// Send rate, bytes per second, of the last round big enough to tell.
    rate: Option<f64>,
    /// How long the first round took: the time bound scales with it.
    first: Option<Duration>,
    /// Time spent in the rounds so far.
    elapsed: Duration,
    /// What the previous round left to send.
    last_written: Option<u64>,
    level: Level,
}

impl Converge {
    /// A policy for one move. `can_slow`: whether the caller can throttle the process.
    pub fn new(limits: Limits, can_slow: bool) -> Converge {
        Converge {
            limits,
            can_slow,
            rounds: 0,
            rate: None,
            first: None,
            elapsed: Duration::ZERO,
            last_written: None,
            level: Level::NONE,
        }
    }

    /// The throttle level in force.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Running rounds so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// The send rate measured so far, bytes per second.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Decide after a running round.
    pub fn after(&mut self, round: Round) -> Decision {
        self.rounds += 1;
        self.elapsed += round.took;
        let first = *self.first.get_or_insert(round.took);
        let secs = round.took.as_secs_f64();
        if (round.sent >= RATE_SAMPLE || self.rate.is_none()) && secs > 0.0 {
            self.rate = Some(round.sent as f64 / secs);
        }
        // The first round has nothing to shrink from: measure it against what it sent.
        let before = self.last_written.unwrap_or(round.sent);
        self.last_written = Some(round.written);
        let shrinking = (round.written as f64) < before as f64 * SHRINK;

        let rate = self.rate.unwrap_or(0.0);
        let final_secs = if rate > 0.0 {
            round.written as f64 / rate
        } else {
            f64::INFINITY
        };
        if round.written == 0 || final_secs <= self.limits.pause.as_secs_f64() {
            return Decision::Freeze(Why::Fits);
        }
        if self.rounds >= self.limits.rounds {
            return Decision::Freeze(Why::Rounds);
        }
        let bound = first * self.limits.time_factor + self.limits.time_floor;
        if self.elapsed >= bound {
            return Decision::Freeze(Why::Time);
        }
        if !shrinking && (!self.can_slow || self.level == Level::MAX) {
            return Decision::Freeze(Why::Stuck);
        }
        if self.can_slow {
            self.level = self.level.max(self.next_level(round, rate, shrinking));
        }
        Decision::Another(self.level)
    }

    /// The level at which the process would write at most REWRITE of the next round's bytes
    /// while that round goes, from the rate it wrote at in `round`.
    fn next_level(&self, round: Round, rate: f64, shrinking: bool) -> Level {
        let running = self.level.running_share();
        let secs = round.took.as_secs_f64().max(1e-3);
        // Bytes per second at full speed. A round that did not shrink may have seen the same
        // pages written twice or more: then this is only a lower bound, and the running
        // share is cut to an eighth as well, which four rounds take to the maximum.
        let write_rate = round.written as f64 / (secs * running);
        let mut share = (REWRITE * rate / write_rate).min(1.0);
        if !shrinking {
            share = share.min(running / 8.0);
        }
        let stopped = ((1.0 - share) * 100.0).ceil().clamp(0.0, 99.0) as u8;
        Level::percent(stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn round(sent: u64, took: Duration, written: u64) -> Round {
        Round {
            sent,
            took,
            written,
        }
    }

    fn policy(can_slow: bool) -> Converge {
        Converge::new(Limits::default(), can_slow)
    }

    #[test]
    fn a_process_that_writes_little_is_frozen_after_the_first_round() {
        // 1 GiB at 0.5 GB/s; it rewrote 12 MiB meanwhile: 25 ms at that rate.
        let mut p = policy(true);
        let d = p.after(round(1024 * MIB, ms(2147), 12 * MIB));
        assert_eq!(d, Decision::Freeze(Why::Fits));
        assert_eq!(p.level(), Level::NONE);
        // Nothing written at all: nothing to wait for.
        assert_eq!(
            policy(false).after(round(64 * MIB, ms(100), 0)),
            Decision::Freeze(Why::Fits)
        );
    }

    #[test]
    fn rounds_go_on_unthrottled_while_they_shrink_fast_enough() {
        let mut p = policy(true);
        // 200 MiB written during a 2 s round of 1 GiB: 0.1 GB/s against 0.5 GB/s sent, so
        // the next round (0.4 s) sees about 40 MiB written: a fifth. No need to slow it.
        assert_eq!(
            p.after(round(1024 * MIB, ms(2000), 200 * MIB)),
            Decision::Another(Level::NONE)
        );
        assert_eq!(
            p.after(round(200 * MIB, ms(400), 40 * MIB)),
            Decision::Another(Level::NONE)
        );
        assert_eq!(
            p.after(round(40 * MIB, ms(80), 8 * MIB)),
            Decision::Freeze(Why::Fits)
        );
        assert_eq!(p.rounds(), 3);
    }

    #[test]
    fn a_process_that_rewrites_everything_is_slowed_step_by_step_until_it_fits() {
        let mut p = policy(true);
        // All of it rewritten during the first round: the rate is a lower bound, and the
        // running share is cut to an eighth at least.
        let Decision::Another(first) = p.after(round(1024 * MIB, ms(2000), 1024 * MIB)) else {
            panic!("a second round");
        };
        assert!(first >= Level::percent(88), "{first:?}");
        // Still everything at 88 %: it writes 4 GB/s at full speed; a fifth of 0.5 GB/s
        // means running 2.5 % of the time.
        let Decision::Another(second) = p.after(round(1024 * MIB, ms(2000), 1024 * MIB)) else {
            panic!("a third round");
        };
        assert!(second > first && second >= Level::percent(97), "{second:?}");
        // Now it shrinks by a fifth each round, at that level, until it fits.
        let mut written = 200 * MIB;
        let mut sent = 1024 * MIB;
        let decision = loop {
            let took = Duration::from_secs_f64(sent as f64 / 0.5e9);
            match p.after(round(sent, took, written)) {
                Decision::Another(level) => assert_eq!(level, p.level()),
                other => break other,
            }
            sent = written;
            written /= 5;
        };
        assert_eq!(decision, Decision::Freeze(Why::Fits));
        assert!(p.level() >= second, "the level never falls");
    }

    #[test]
    fn without_a_throttle_the_rounds_end_when_they_stop_shrinking() {
        let mut p = policy(false);
        assert_eq!(
            p.after(round(1024 * MIB, ms(2000), 600 * MIB)),
            Decision::Another(Level::NONE)
        );
        assert_eq!(
            p.after(round(600 * MIB, ms(1200), 590 * MIB)),
            Decision::Freeze(Why::Stuck)
        );
    }

    #[test]
    fn at_the_highest_level_rounds_that_no_longer_shrink_end() {
        let mut p = policy(true);
        let mut decisions = Vec::new();
        for _ in 0..8 {
            let d = p.after(round(512 * MIB, ms(1000), 512 * MIB));
            decisions.push(d);
            if let Decision::Freeze(_) = d {
                break;
            }
        }
        assert_eq!(decisions.last(), Some(&Decision::Freeze(Why::Stuck)));
        assert_eq!(p.level(), Level::MAX);
        assert!(decisions.len() <= 6, "{decisions:?}");
    }

    #[test]
    fn rounds_and_time_are_bounded() {
        let limits = Limits {
            rounds: 3,
            ..Limits::default()
        };
        let mut p = Converge::new(limits, true);
        // Shrinking, but never enough to fit.
        p.after(round(1000 * MIB, ms(1000), 800 * MIB));
        p.after(round(800 * MIB, ms(800), 700 * MIB));
        assert_eq!(
            p.after(round(700 * MIB, ms(700), 600 * MIB)),
            Decision::Freeze(Why::Rounds)
        );

        // First round 1 s: the rounds may take 4 s + 1 s in all.
        let mut p = policy(true);
        p.after(round(1000 * MIB, ms(1000), 900 * MIB));
        p.after(round(900 * MIB, ms(3000), 700 * MIB));
        assert_eq!(
            p.after(round(700 * MIB, ms(1000), 500 * MIB)),
            Decision::Freeze(Why::Time)
        );
    }

    #[test]
    fn a_tiny_round_does_not_replace_the_measured_rate() {
        let mut p = policy(true);
        p.after(round(1000 * MIB, ms(2000), 100 * MIB));
        let rate = p.rate().unwrap();
        // 1 MiB that took 40 ms (mostly the scan): not a measure of the link.
        p.after(round(MIB, ms(40), 60 * MIB));
        assert_eq!(p.rate(), Some(rate));
    }
}
