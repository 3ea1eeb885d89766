//! Slowing a process down while pre-copy's running rounds catch up with it (see `converge`
//! for when and how much). The round loop only says which level it wants; the caller, who
//! owns the process's ptrace, carries it out, because every ptrace request must come from the
//! thread that attached:
//!
//! - at home, the rounds stream on a helper thread while the supervisor's thread serves the
//!   job; the supervisor implements [`Throttle`] by passing the level to its own loop, which
//!   runs the duty cycle there;
//! - at a remote, the guest's one thread traces, and [`Duty`] runs the duty cycle there while
//!   the rounds stream on a helper thread (`dump_first_round` makes it).
//!
//! A throttled process is kept stopped (PTRACE_INTERRUPT) for `level` per cent of every
//! [`PERIOD`] and runs (PTRACE_CONT) for the rest. A short period keeps every stop short: the
//! longest pause the process sees while throttled is the stopped share of one period, well
//! below the pause the final round costs. QEMU's auto-converge works the same way for a
//! guest's vCPUs, with a 10 ms timeslice (migration/cpu-throttle.c), though it sleeps
//! `p / (1 - p)` timeslices per timeslice run, which at 99 % is a second-long stop.

use std::io;
use std::time::{Duration, Instant};

use crate::ptrace::{self, Pid, Stop};
use crate::seccomp;
use crate::signals::{Arriving, SigInfo};

/// One duty cycle: the process runs for `100 - level` per cent of it.
pub const PERIOD: Duration = Duration::from_millis(10);

/// How hard a process is slowed down: the per cent of each [`PERIOD`] it is kept stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(u8);

impl Level {
    /// Not slowed down.
    pub const NONE: Level = Level(0);
    /// The most the round loop asks for (QEMU's `max-cpu-throttle` default): the process
    /// still runs 0.1 ms of every 10, so it never stops making progress altogether.
    pub const MAX: Level = Level(99);

    /// `percent` of each period stopped, at most [`Level::MAX`].
    pub fn percent(percent: u8) -> Level {
        Level(percent.min(Level::MAX.0))
    }

    /// The per cent of each period the process is kept stopped.
    pub fn stopped_percent(self) -> u8 {
        self.0
    }

    /// The share of time the process runs (1 for NONE).
    pub fn running_share(self) -> f64 {
        f64::from(100 - self.0) / 100.0
    }
}

/// What slows the process down while the rounds go. The rounds stream on a thread of their
/// own; the thread that called `dump_first_round` serves the throttle meanwhile: it calls
/// `set` with each level the policy asks for, and `tick` whenever `next_tick` said, so a
/// throttle that runs its duty cycle there (the tracer's thread) keeps time even while the
/// rounds wait on the link. The level last set stays in force when the rounds end, however
/// they end: the caller keeps the process slow until it freezes it, and lifts the throttle
/// after (or when the move fails).
pub trait Throttle {
    /// Whether this throttle can slow the process at all; if not, the rounds end as soon as
    /// they stop shrinking, since only a slower process would let them catch up.
    fn can_slow(&self) -> bool {
        true
    }
    /// Slow the process down to `level` from now on ([`Level::NONE`]: let it run).
    fn set(&mut self, level: Level) -> io::Result<()>;
    /// Drive the duty cycle, if this throttle runs it itself.
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// How long until it wants its next tick; None while it wants none.
    fn next_tick(&self) -> Option<Duration> {
        None
    }
}

/// No throttle: for frozen rounds, and for callers that cannot slow the process.
pub struct Unthrottled;

impl Throttle for Unthrottled {
    fn can_slow(&self) -> bool {
        false
    }
    fn set(&mut self, _level: Level) -> io::Result<()> {
        Ok(())
    }
}

/// A duty cycle run from the thread that called `dump_first_round`, which must be the
/// process's tracer and the only one waiting on it meanwhile. Call [`Duty::release`] once the rounds are over and
/// before the process is frozen, or when the move fails: it lets the process run freely
/// again.
pub struct Duty<'a> {
    pid: Pid,
    /// Signals on their way into the process, whose delivery stops this duty may meet.
    arriving: &'a mut Arriving,
    level: Level,
    /// When the current period began.
    period_start: Instant,
    /// We hold the process in a PTRACE_EVENT_STOP.
    stopped: bool,
    /// It entered a group stop (SIGSTOP and friends) meanwhile: job control holds it, and it
    /// must be let go with PTRACE_LISTEN, never PTRACE_CONT.
    job_stopped: bool,
}

impl<'a> Duty<'a> {
    /// A throttle for running tracee `pid`, at level NONE; signals sent to it meanwhile go
    /// through `arriving`.
    pub fn new(pid: Pid, arriving: &'a mut Arriving) -> Duty<'a> {
        Duty {
            pid,
            arriving,
            level: Level::NONE,
            period_start: Instant::now(),
            stopped: false,
            job_stopped: false,
        }
    }

    /// Once the rounds are over, a process they had to slow down is kept stopped until the
    /// caller freezes it: while the receiver answers, it would write at full speed, and the
    /// final round grow with it. One they left at full speed runs on. The caller must
    /// [`Duty::release`] it before it freezes it (a stop it did not ask for never comes).
    pub fn hold_if_slowed(&mut self) -> io::Result<()> {
        if self.level == Level::NONE {
            return self.resume();
        }
        if !self.stopped && !self.job_stopped {
            self.stop()?;
        }
        Ok(())
    }

    /// Lift the throttle: the process runs again (or stays job-stopped, if it was).
    pub fn release(&mut self) -> io::Result<()> {
        self.level = Level::NONE;
        self.resume()
    }

    /// Send a signal into the process (it takes it when it runs).
    pub fn send(&mut self, info: SigInfo) {
        self.arriving.send(self.pid, info);
    }

    /// Stop the process in a PTRACE_EVENT_STOP. Signals that arrive meanwhile are delivered
    /// as the guest's own loop delivers them, a call from the injection instruction is
    /// refused as it refuses it (see `seccomp`), and the wait goes on.
    fn stop(&mut self) -> io::Result<()> {
        ptrace::interrupt(self.pid)?;
        loop {
            match ptrace::wait(self.pid, 0)? {
                Some((_, Stop::Interrupted)) => break,
                Some((_, Stop::Group(_))) => {
                    self.job_stopped = true;
                    break;
                }
                Some((_, Stop::Signal(sig))) => {
                    self.arriving.at_delivery(self.pid, sig);
                    ptrace::cont(self.pid, sig)?
                }
                Some((_, Stop::Event(libc::PTRACE_EVENT_SECCOMP))) => {
                    seccomp::refuse_gate_call(self.pid)?;
                    ptrace::cont(self.pid, 0)?
                }
                Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                    return Err(io::Error::other("the process ended while it was slowed"));
                }
                Some(_) => ptrace::cont(self.pid, 0)?,
                None => {}
            }
        }
        self.stopped = true;
        Ok(())
    }

    fn resume(&mut self) -> io::Result<()> {
        if !self.stopped {
            return Ok(());
        }
        self.stopped = false;
        if self.job_stopped {
            ptrace::listen(self.pid)
        } else {
            ptrace::cont(self.pid, 0)
        }
    }
}

/// Whether a process throttled at `level` should be stopped `into` its current period.
pub fn stopped_at(level: Level, into: Duration) -> bool {
    let phase = into.as_nanos() % PERIOD.as_nanos();
    phase < PERIOD.as_nanos() * u128::from(level.stopped_percent()) / 100
}

/// How long after `into` a process throttled at `level` switches between stopped and
/// running (at least a microsecond, so that a caller waiting for it makes progress).
pub fn until_switch(level: Level, into: Duration) -> Duration {
    let period = PERIOD.as_nanos();
    let phase = into.as_nanos() % period;
    let stop_end = period * u128::from(level.stopped_percent()) / 100;
    let next = if phase < stop_end { stop_end } else { period };
    Duration::from_nanos((next - phase) as u64).max(Duration::from_micros(1))
}

impl Throttle for Duty<'_> {
    fn set(&mut self, level: Level) -> io::Result<()> {
        self.level = level;
        self.period_start = Instant::now();
        self.tick()
    }

    fn next_tick(&self) -> Option<Duration> {
        if self.level == Level::NONE && !self.stopped {
            return None;
        }
        Some(until_switch(self.level, self.period_start.elapsed()))
    }

    fn tick(&mut self) -> io::Result<()> {
        // A job-stopped process makes no writes; job control decides when it runs.
        if self.job_stopped && !self.stopped {
            return Ok(());
        }
        let want_stopped = stopped_at(self.level, self.period_start.elapsed());
        match (want_stopped, self.stopped) {
            (true, false) => self.stop(),
            (false, true) => self.resume(),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Husk;

    #[test]
    fn a_level_stops_the_process_for_its_share_of_each_period() {
        let ms = Duration::from_millis;
        assert!(!stopped_at(Level::NONE, ms(0)));
        let most = Level::percent(90);
        assert!(stopped_at(most, ms(0)) && stopped_at(most, ms(8)));
        assert!(!stopped_at(most, ms(9)) && !stopped_at(most, ms(9) + ms(999) / 1000));
        // The next period starts stopped again.
        assert!(stopped_at(most, ms(10)) && stopped_at(most, ms(28)));
        assert_eq!(until_switch(most, ms(0)), ms(9));
        assert_eq!(until_switch(most, ms(9)), ms(1));
        assert_eq!(until_switch(most, ms(23)), ms(6));
        assert_eq!(Level::percent(250), Level::MAX);
        assert!((Level::percent(75).running_share() - 0.25).abs() < 1e-9);
    }

    /// State of a process, from /proc/PID/stat: 't' while a tracer holds it stopped.
    fn state(pid: Pid) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = stat.rsplit_once(')').unwrap().1;
        rest.trim_start().chars().next().unwrap()
    }

    #[test]
    fn a_duty_cycle_stops_and_resumes_the_process_and_release_lets_it_run() {
        let husk = Husk::new(1);
        let mut arriving = Arriving::default();
        let mut duty = Duty::new(husk.pid, &mut arriving);
        // The husk's own loop keeps it stopped by its spawner: start it running first.
        ptrace::cont(husk.pid, 0).unwrap();
        duty.set(Level::MAX).unwrap();
        assert_eq!(state(husk.pid), 't', "stopped at the start of a period");
        // Wait for the running slot of some period: tick until the process runs.
        while state(husk.pid) == 't' {
            duty.tick().unwrap();
        }
        duty.set(Level::NONE).unwrap();
        assert_ne!(state(husk.pid), 't');
        duty.set(Level::MAX).unwrap();
        duty.release().unwrap();
        assert_ne!(state(husk.pid), 't', "released, it runs again");
        // Held after the rounds: stopped if it was slowed, running if not.
        duty.set(Level::percent(1)).unwrap();
        duty.hold_if_slowed().unwrap();
        assert_eq!(state(husk.pid), 't');
        duty.release().unwrap();
        duty.set(Level::NONE).unwrap();
        duty.hold_if_slowed().unwrap();
        assert_ne!(state(husk.pid), 't');
    }
}
