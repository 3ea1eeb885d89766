//! MOSIX's load smoothing, as pure arithmetic over (interval, runnable, busy) samples.
//!
//! MOSIX adds the run-queue length at every tick and, once a second, turns the sum into the
//! period's average `new` (reference §5.2, Kerrighed's `mosix_probe.c`). The **exported**
//! load (what gossip carries; others decide to send work here by it) follows it, rising at
//! once and falling slowly: `upper = new` if `new > upper`, else `upper = (7·upper + new)/8`.
//! It errs on the side of "this node is busy", so a burst draws no work in.
//!
//! MOSIX also keeps a local load that rises slowly and falls at once, for the node's own
//! decisions to send work away. rmosix's balancer decides on the last period's value instead
//! ([`Smoother::last_period`]; docs/make.md records a smoothed one tried), so it is not kept.
//!
//! When samples arrive more than a period apart, the update is applied once per whole period
//! elapsed, so the time constant stays in seconds whatever the sampling rate: the exported
//! load decays by 7/8 a second (time constant 1/ln(8/7) = 7.5 s, half-life 5.2 s).

use std::time::Duration;

/// MOSIX's measuring period: the run queue's average is taken once a second (Kerrighed's
/// `CF = HZ` ticks).
pub const PERIOD: Duration = Duration::from_secs(1);

/// Weight kept by the exported load per period when it falls (7/8, §5.2).
const UPPER_KEEP: f64 = 7.0 / 8.0;

/// The smoothed run-queue length of a node, in processes (not yet in MOSIX units).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Smoother {
    /// Length, process-seconds runnable and CPU-seconds busy of the open period.
    open: Duration,
    open_runnable: f64,
    open_busy: f64,
    upper: f64,
    /// The averages of the last closed period.
    last_runnable: f64,
    last_busy: f64,
}

impl Smoother {
    /// An idle node: every value 0.
    pub fn new() -> Smoother {
        Smoother::default()
    }

    /// Adds an interval of length `dt` during which, on average, `runnable` processes were
    /// runnable (running or waiting for a CPU) and `busy` CPUs were busy. Closes the period once
    /// it spans [`PERIOD`]; returns true when it did.
    pub fn push(&mut self, dt: Duration, runnable: f64, busy: f64) -> bool {
        let secs = dt.as_secs_f64();
        self.open += dt;
        self.open_runnable += runnable.max(0.0) * secs;
        self.open_busy += busy.max(0.0) * secs;
        if self.open < PERIOD {
            return false;
        }
        let open_secs = self.open.as_secs_f64();
        let busy = self.open_busy / open_secs;
        // A busy CPU runs a runnable task, so `busy` is a floor for `runnable`; it catches the
        // time of tasks that ended within the period, which per-task counters lose.
        let new = (self.open_runnable / open_secs).max(busy);
        // Whole periods elapsed; a sample that comes late does not slow the decay.
        let k = i32::try_from(self.open.as_nanos() / PERIOD.as_nanos()).unwrap_or(i32::MAX);
        self.upper = if new > self.upper {
            new
        } else {
            new + (self.upper - new) * UPPER_KEEP.powi(k)
        };
        (self.last_runnable, self.last_busy) = (new, busy);
        (self.open, self.open_runnable, self.open_busy) = (Duration::ZERO, 0.0, 0.0);
        true
    }

    /// Processes that wanted `processes` CPUs in all left the node for good (they ended, or
    /// moved away), as its daemon knows: the exported load drops by them at once instead of
    /// over seconds. Its slow fall is for lulls, which may end at any moment (a short lull
    /// draws no work in); a process that has gone will not come back, and a node it freed
    /// should get the work waiting elsewhere as soon as the others can see it. The open
    /// period is counted as if they had not been in it.
    pub fn departed(&mut self, processes: f64) {
        let gone = processes.max(0.0);
        let secs = self.open.as_secs_f64();
        self.upper = (self.upper - gone).max(0.0);
        self.open_runnable = (self.open_runnable - gone * secs).max(0.0);
        self.open_busy = (self.open_busy - gone * secs).max(0.0);
    }

    /// The exported load: rises at once, decays by 7/8 a period.
    pub fn upper(&self) -> f64 {
        self.upper
    }

    /// The last closed period's average run-queue length and busy CPUs, unsmoothed.
    pub fn last_period(&self) -> (f64, f64) {
        (self.last_runnable, self.last_busy)
    }
}

/// The MOSIX standard speed: a node of this speed with one CPU shows load 100 per busy
/// process (`MOSIX_STD_SPEED`, reference §2.3).
pub const STANDARD_SPEED: u32 = 10_000;

/// A run-queue length in MOSIX load units: `100 × runnable / cpus × STANDARD_SPEED / speed`.
///
/// 100 is one CPU-busy process on one standard CPU; two CPUs or a CPU twice as fast halve it
/// (gossimon's `load = loadavg·100/ncpus / (speed/10000)`, reference §5.2).
pub fn mosix_units(runnable: f64, cpus: f64, speed: u32) -> u32 {
    let cpus = cpus.max(0.001);
    let speed = f64::from(speed.max(1));
    let units = 100.0 * runnable / cpus * f64::from(STANDARD_SPEED) / speed;
    units.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    /// Feeds `secs` seconds of 100 ms samples with `runnable` processes, all busy.
    fn feed(s: &mut Smoother, secs: u32, runnable: f64) {
        for _ in 0..secs * 10 {
            s.push(TICK, runnable, runnable);
        }
    }

    #[test]
    fn a_step_up_is_seen_at_once() {
        let mut s = Smoother::new();
        feed(&mut s, 5, 0.0);
        assert_eq!(s.upper(), 0.0);
        feed(&mut s, 1, 2.0);
        // One period after the step the exported load shows both processes.
        assert!((s.upper() - 2.0).abs() < 0.01, "upper {}", s.upper());
        assert_eq!(mosix_units(s.upper(), 1.0, STANDARD_SPEED), 200);
    }

    #[test]
    fn a_step_down_is_seen_at_once_in_the_period_and_slowly_in_the_load() {
        let mut s = Smoother::new();
        feed(&mut s, 10, 2.0);
        feed(&mut s, 1, 0.0);
        assert_eq!(s.last_period(), (0.0, 0.0));
        assert!((s.upper() - 1.75).abs() < 0.01, "upper {}", s.upper());
        // After the 7.5 s time constant (8 periods in all) the exported load is near 2/e.
        feed(&mut s, 7, 0.0);
        let expected = 2.0 * UPPER_KEEP.powi(8);
        assert!((s.upper() - expected).abs() < 0.01, "upper {}", s.upper());
        assert!((0.6..0.8).contains(&s.upper()));
        feed(&mut s, 60, 0.0);
        assert_eq!(mosix_units(s.upper(), 1.0, STANDARD_SPEED), 0);
    }

    #[test]
    fn a_departure_is_seen_by_others_at_once_and_only_for_what_left() {
        let mut s = Smoother::new();
        feed(&mut s, 10, 2.0);
        // Half a period more with both, then one of them ends.
        for _ in 0..5 {
            s.push(TICK, 2.0, 2.0);
        }
        s.departed(1.0);
        assert!((s.upper() - 1.0).abs() < 0.01, "upper {}", s.upper());
        // The period it left in closes as if it had not been there: no rise back.
        for _ in 0..5 {
            s.push(TICK, 1.0, 1.0);
        }
        assert!((s.upper() - 1.0).abs() < 0.01, "upper {}", s.upper());
        let (runnable, busy) = s.last_period();
        assert!((runnable - 1.0).abs() < 0.01 && (busy - 1.0).abs() < 0.01);
        // More than there was leaves nothing below zero.
        s.departed(5.0);
        assert_eq!(s.upper(), 0.0);
    }

    #[test]
    fn a_late_sample_decays_as_many_periods_as_passed() {
        let (mut a, mut b) = (Smoother::new(), Smoother::new());
        feed(&mut a, 3, 1.0);
        feed(&mut b, 3, 1.0);
        feed(&mut a, 4, 0.0);
        assert!(b.push(Duration::from_secs(4), 0.0, 0.0));
        assert!(
            (a.upper() - b.upper()).abs() < 1e-9,
            "{} vs {}",
            a.upper(),
            b.upper()
        );
    }

    #[test]
    fn busy_cpus_are_a_floor_for_the_queue() {
        let mut s = Smoother::new();
        // Per-task counters saw 0.5 (a task ended), the cgroup's usage saw 1 CPU busy.
        assert!(s.push(PERIOD, 0.5, 1.0));
        assert_eq!(s.last_period(), (1.0, 1.0));
    }

    #[test]
    fn units_follow_cpus_and_speed() {
        assert_eq!(mosix_units(1.0, 1.0, STANDARD_SPEED), 100);
        assert_eq!(mosix_units(2.0, 1.5, STANDARD_SPEED), 133);
        assert_eq!(mosix_units(1.0, 1.0, 2 * STANDARD_SPEED), 50);
        assert_eq!(mosix_units(1.0, 0.5, STANDARD_SPEED), 200);
        assert_eq!(mosix_units(0.0, 0.0, 0), 0);
    }
}
