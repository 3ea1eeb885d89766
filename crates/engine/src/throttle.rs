//! Slowing a process down while pre-copy's running rounds catch up with it (see `converge`
//! for when and how much). The round loop only says which level it wants; the caller, who
//! owns the process's ptrace, carries it out, because every ptrace request must come from the
//! thread that attached:
//!
//! - at home, the rounds stream on a helper thread while the supervisor's thread serves the
//!   job; the helper's [`Throttle`] passes each level to the supervisor's loop, which runs the
//!   duty cycle among its other work (`legs::Slowdown`);
//! - at a remote, the guest's one thread traces, and [`Duty`] runs the duty cycle there while
//!   the rounds stream on a helper thread (`dump_first_round` makes it).
//!
//! Both run one duty cycle, [`Cycle`]: a pure core that says which ptrace request each tick
//! calls for and which of the process's stops are its own, driven by a tracer that can block
//! in a wait for the stop it asked for (`Duty`) or by one that hears of it among the job's
//! other stops (the home loop).
//!
//! A throttled process is kept stopped (PTRACE_INTERRUPT) for `level` per cent of every
//! [`PERIOD`] and runs (PTRACE_CONT) for the rest. A short period keeps every stop short: the
//! longest pause the process sees while throttled is the stopped share of one period, well
//! below the pause the final round costs. QEMU's auto-converge works the same way for a
//! guest's vCPUs, with a 10 ms timeslice (migration/cpu-throttle.c), though it sleeps
//! `p / (1 - p)` timeslices per timeslice run, which at 99 % is a second-long stop.

use std::io;
use std::time::{Duration, Instant};

use rmosix_image::SigInfo;

use crate::ptrace::{self, Pid, Stop};
use crate::seccomp;
use crate::signals::Arriving;

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

/// Where a throttled process stands, as its duty cycle knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// It runs, or sits in a stop that is not the cycle's (its tracer serves those).
    Running,
    /// The cycle asked PTRACE_INTERRUPT and waits for the stop that answers it.
    Stopping,
    /// Held in the PTRACE_EVENT_STOP that answered.
    Stopped,
    /// Job control stopped it (a group stop). It writes nothing, and job control, not the
    /// cycle, decides when it runs again: the cycle leaves it alone until a SIGCONT's notice.
    JobStopped,
}

/// A ptrace request the duty cycle asks of the tracer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// PTRACE_INTERRUPT: the cycle then waits for the stop that answers.
    Interrupt,
    /// PTRACE_CONT from the stop the cycle held.
    Cont,
}

/// Whose a stop of the throttled process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The duty cycle's own: the tracer keeps the process in it.
    Ours,
    /// Any other stop: the tracer serves it as it serves any (delivers the signal, lets job
    /// control have its group stop, continues an event). With `ask_again` it first asks
    /// PTRACE_INTERRUPT again, while the process is still in that stop: any ptrace stop
    /// answers a pending interrupt ("any trap clears pending STOP trap", kernel/signal.c,
    /// ptrace_stop), so an event stop may have taken the one the cycle waits for. Asked
    /// during a stop, the interrupt is one trap after it, however often it was asked.
    Theirs {
        /// Ask PTRACE_INTERRUPT again before letting the process go on.
        ask_again: bool,
    },
}

/// The duty cycle without its I/O: which ptrace request each tick calls for, and which stops
/// of the process are its own. Time is an input. Two tracers drive it: [`Duty`], on a
/// remote's guest thread, which may block in a wait on the process; and the home supervisor's
/// loop, which serves the rest of the job meanwhile, so that it asks for a stop, goes back to
/// its poll and hears of the stop among the job's others (`legs::Slowdown`).
#[derive(Debug, Clone)]
pub struct Cycle {
    level: Level,
    /// When the current period began.
    period_start: Instant,
    phase: Phase,
    /// The rounds are over and had slowed the process down: keep it stopped until released.
    held: bool,
}

impl Cycle {
    /// A cycle at level NONE for a process that runs.
    pub fn new(now: Instant) -> Cycle {
        Cycle {
            level: Level::NONE,
            period_start: now,
            phase: Phase::Running,
            held: false,
        }
    }

    /// The level in force.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Where the process stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// From `now`, slow the process down to `level` (a new period starts).
    pub fn set(&mut self, level: Level, now: Instant) -> Option<Ask> {
        self.level = level;
        self.period_start = now;
        self.tick(now)
    }

    /// What the period asks for at `now`: a stop when its stopped share begins, a
    /// continue when it ends. Nothing while a stop is awaited, held, or job control's.
    pub fn tick(&mut self, now: Instant) -> Option<Ask> {
        if self.held {
            return None;
        }
        let want_stopped = stopped_at(self.level, now - self.period_start);
        match (want_stopped, self.phase) {
            (true, Phase::Running) => {
                self.phase = Phase::Stopping;
                Some(Ask::Interrupt)
            }
            (false, Phase::Stopped) => {
                self.phase = Phase::Running;
                Some(Ask::Cont)
            }
            _ => None,
        }
    }

    /// How long after `now` the cycle wants its next tick; None while it wants none (not
    /// slowed, held, or waiting for a stop, which comes by itself).
    pub fn next_tick(&self, now: Instant) -> Option<Duration> {
        let waits = match self.phase {
            Phase::Running => self.level != Level::NONE,
            Phase::Stopped => true,
            Phase::Stopping | Phase::JobStopped => false,
        };
        (waits && !self.held).then(|| until_switch(self.level, now - self.period_start))
    }

    /// The tracer saw `stop`: whose it is.
    pub fn on_stop(&mut self, stop: Stop) -> Verdict {
        let theirs = Verdict::Theirs { ask_again: false };
        match (stop, self.phase) {
            (Stop::Interrupted, Phase::Stopping) => {
                self.phase = Phase::Stopped;
                Verdict::Ours
            }
            // A job-stopped tracee reports SIGCONT as a PTRACE_EVENT_STOP once it has been
            // let listen (ptrace(2), PTRACE_LISTEN): it runs again.
            (Stop::Interrupted, Phase::JobStopped) => {
                self.phase = Phase::Running;
                theirs
            }
            (Stop::Exited(_) | Stop::Killed(_), _) => theirs,
            // Its group stop also answers an interrupt the cycle asked for.
            (Stop::Group(_), _) => {
                self.phase = Phase::JobStopped;
                theirs
            }
            (_, phase) => Verdict::Theirs {
                ask_again: phase == Phase::Stopping,
            },
        }
    }

    /// The rounds are over. A process they slowed down is kept stopped until it is frozen
    /// or released: while the receiver answers the last round, it would write at full speed,
    /// and the final round grow with it. One they left at full speed runs on.
    pub fn hold_if_slowed(&mut self) -> Option<Ask> {
        if self.level == Level::NONE {
            return self.release();
        }
        self.held = true;
        match self.phase {
            Phase::Running => {
                self.phase = Phase::Stopping;
                Some(Ask::Interrupt)
            }
            _ => None,
        }
    }

    /// Lift the throttle: let the process go from the stop the cycle holds (a job-stopped
    /// one stays job control's). A stop still awaited is no longer the cycle's: when it
    /// comes, its tracer continues it as any stop nobody asked for.
    pub fn release(&mut self) -> Option<Ask> {
        self.level = Level::NONE;
        self.held = false;
        match std::mem::replace(&mut self.phase, Phase::Running) {
            Phase::Stopped => Some(Ask::Cont),
            Phase::JobStopped => {
                self.phase = Phase::JobStopped;
                None
            }
            Phase::Running | Phase::Stopping => None,
        }
    }

    /// The tracer takes the process over as it stands (to freeze it): the cycle lets go of
    /// it without a request, and says where it stood.
    pub fn hand_over(&mut self) -> Phase {
        let stood = self.phase;
        *self = Cycle::new(self.period_start);
        stood
    }
}

/// A duty cycle run from the thread that called `dump_first_round`, which must be the
/// process's tracer and the only one waiting on it meanwhile: it blocks in a wait for each
/// stop it asks for. Call [`Duty::release`] once the rounds are over and before the process
/// is frozen, or when the move fails: it lets the process run freely again.
pub struct Duty<'a> {
    pid: Pid,
    /// Signals on their way into the process, whose delivery stops this duty may meet.
    arriving: &'a mut Arriving,
    cycle: Cycle,
}

impl<'a> Duty<'a> {
    /// A throttle for running tracee `pid`, at level NONE; signals sent to it meanwhile go
    /// through `arriving`.
    pub fn new(pid: Pid, arriving: &'a mut Arriving) -> Duty<'a> {
        Duty {
            pid,
            arriving,
            cycle: Cycle::new(Instant::now()),
        }
    }

    /// Once the rounds are over, keep a process they slowed down stopped (see
    /// [`Cycle::hold_if_slowed`]). The caller must [`Duty::release`] it before it freezes it
    /// (a stop it did not ask for never comes).
    pub fn hold_if_slowed(&mut self) -> io::Result<()> {
        let ask = self.cycle.hold_if_slowed();
        self.carry_out(ask)
    }

    /// Lift the throttle: the process runs again (or stays job-stopped, if it was).
    pub fn release(&mut self) -> io::Result<()> {
        let ask = self.cycle.release();
        self.carry_out(ask)
    }

    /// Send a signal into the process (it takes it when it runs).
    pub fn send(&mut self, info: SigInfo) {
        self.arriving.send(self.pid, info);
    }

    fn carry_out(&mut self, ask: Option<Ask>) -> io::Result<()> {
        match ask {
            None => Ok(()),
            Some(Ask::Cont) => ptrace::cont(self.pid, 0),
            Some(Ask::Interrupt) => self.stop(),
        }
    }

    /// Stop the process in a PTRACE_EVENT_STOP, and wait there until it comes. Signals that
    /// arrive meanwhile are delivered as the guest's own loop delivers them, a call from the
    /// injection instruction is refused as it refuses it (see `seccomp`), a group stop is
    /// left to job control, and the wait goes on.
    fn stop(&mut self) -> io::Result<()> {
        ptrace::interrupt(self.pid)?;
        while self.cycle.phase() == Phase::Stopping {
            let stop = ptrace::wait_stop(self.pid)?;
            let Verdict::Theirs { ask_again } = self.cycle.on_stop(stop) else {
                continue;
            };
            if ask_again {
                ptrace::interrupt(self.pid)?;
            }
            match stop {
                Stop::Group(_) => ptrace::listen(self.pid)?,
                Stop::Signal(sig) => {
                    self.arriving.at_delivery(self.pid, sig);
                    ptrace::cont(self.pid, sig)?
                }
                Stop::Event(libc::PTRACE_EVENT_SECCOMP) => {
                    seccomp::refuse_gate_call(self.pid)?;
                    ptrace::cont(self.pid, 0)?
                }
                _ => ptrace::cont(self.pid, 0)?,
            }
        }
        Ok(())
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
        let ask = self.cycle.set(level, Instant::now());
        self.carry_out(ask)
    }

    fn next_tick(&self) -> Option<Duration> {
        self.cycle.next_tick(Instant::now())
    }

    fn tick(&mut self) -> io::Result<()> {
        let ask = self.cycle.tick(Instant::now());
        self.carry_out(ask)
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

    /// A cycle set to `level` at `t0`, with the stop that starts its first period taken.
    fn stopped_cycle(level: Level, t0: Instant) -> Cycle {
        let mut cycle = Cycle::new(t0);
        assert_eq!(cycle.set(level, t0), Some(Ask::Interrupt));
        assert_eq!(cycle.on_stop(Stop::Interrupted), Verdict::Ours);
        cycle
    }

    #[test]
    fn a_cycle_stops_the_process_at_each_period_start_and_lets_it_go_at_its_end() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut cycle = Cycle::new(t0);
        assert_eq!(cycle.next_tick(t0), None, "not slowed: no ticks");
        assert_eq!(cycle.set(Level::percent(90), t0), Some(Ask::Interrupt));
        // The stop is on its way: nothing to do until it comes, and it wakes the tracer.
        assert_eq!(cycle.phase(), Phase::Stopping);
        assert_eq!(cycle.tick(at(1)), None);
        assert_eq!(cycle.next_tick(at(1)), None);
        assert_eq!(cycle.on_stop(Stop::Interrupted), Verdict::Ours);
        assert_eq!(cycle.next_tick(at(1)), Some(Duration::from_millis(8)));
        assert_eq!(cycle.tick(at(8)), None);
        assert_eq!(cycle.tick(at(9)), Some(Ask::Cont));
        assert_eq!(cycle.phase(), Phase::Running);
        assert_eq!(cycle.next_tick(at(9)), Some(Duration::from_millis(1)));
        assert_eq!(cycle.tick(at(10)), Some(Ask::Interrupt));
        // A stop that comes late still counts; the period goes on meanwhile.
        assert_eq!(cycle.on_stop(Stop::Interrupted), Verdict::Ours);
        assert_eq!(cycle.tick(at(19)), Some(Ask::Cont));
        // Back at full speed, the process is let go at once and no ticks follow.
        let mut cycle = stopped_cycle(Level::MAX, t0);
        assert_eq!(cycle.set(Level::NONE, at(3)), Some(Ask::Cont));
        assert_eq!(cycle.next_tick(at(3)), None);
    }

    #[test]
    fn other_stops_on_the_way_to_the_cycles_own_are_the_tracers_to_serve() {
        let mut cycle = Cycle::new(Instant::now());
        // Not waiting for a stop: a signal, an event, an interrupt nobody asked for.
        let served = Verdict::Theirs { ask_again: false };
        assert_eq!(cycle.on_stop(Stop::Signal(libc::SIGUSR1)), served);
        assert_eq!(cycle.on_stop(Stop::Interrupted), served);
        assert_eq!(cycle.phase(), Phase::Running);
        // Waiting for one: each other stop may have taken the interrupt, asked again.
        assert_eq!(
            cycle.set(Level::percent(50), Instant::now()),
            Some(Ask::Interrupt)
        );
        let again = Verdict::Theirs { ask_again: true };
        assert_eq!(cycle.on_stop(Stop::Signal(libc::SIGUSR1)), again);
        assert_eq!(cycle.on_stop(Stop::Event(libc::PTRACE_EVENT_FORK)), again);
        assert_eq!(cycle.phase(), Phase::Stopping);
        assert_eq!(cycle.on_stop(Stop::Killed(libc::SIGKILL)), served);
        assert_eq!(cycle.on_stop(Stop::Interrupted), Verdict::Ours);
        assert_eq!(cycle.phase(), Phase::Stopped);
    }

    #[test]
    fn a_group_stop_is_job_controls_until_sigcont() {
        let t0 = Instant::now();
        let mut cycle = Cycle::new(t0);
        assert_eq!(cycle.set(Level::percent(90), t0), Some(Ask::Interrupt));
        // SIGSTOP came first: the group stop answers the interrupt, and the tracer lets
        // job control have it.
        let served = Verdict::Theirs { ask_again: false };
        assert_eq!(cycle.on_stop(Stop::Group(libc::SIGSTOP)), served);
        assert_eq!(cycle.phase(), Phase::JobStopped);
        // The cycle neither resumes it nor stops it again, released or held.
        let later = t0 + Duration::from_millis(9);
        assert_eq!(cycle.next_tick(later), None);
        assert_eq!(cycle.tick(later), None);
        assert_eq!(cycle.tick(later + Duration::from_millis(1)), None);
        assert_eq!(cycle.hold_if_slowed(), None);
        // SIGCONT: the listening tracee reports a PTRACE_EVENT_STOP, continued as usual, and
        // the cycle takes up its periods again.
        assert_eq!(cycle.on_stop(Stop::Interrupted), served);
        assert_eq!(cycle.phase(), Phase::Running);
        let mut cycle = Cycle::new(t0);
        cycle.set(Level::percent(90), t0);
        cycle.on_stop(Stop::Group(libc::SIGTSTP));
        assert_eq!(cycle.release(), None);
        assert_eq!(cycle.phase(), Phase::JobStopped);
        assert_eq!(cycle.on_stop(Stop::Interrupted), served);
        assert_eq!(cycle.tick(later), None, "released: it runs freely");
    }

    #[test]
    fn a_process_the_rounds_slowed_down_is_held_from_their_end_until_released() {
        let t0 = Instant::now();
        let running = t0 + Duration::from_millis(6);
        // Never slowed: it runs on.
        let mut cycle = Cycle::new(t0);
        assert_eq!(cycle.hold_if_slowed(), None);
        assert_eq!(cycle.phase(), Phase::Running);
        // Slowed, and in the running share of a period: stopped now, and kept stopped.
        let mut cycle = stopped_cycle(Level::percent(50), t0);
        assert_eq!(cycle.tick(running), Some(Ask::Cont));
        assert_eq!(cycle.hold_if_slowed(), Some(Ask::Interrupt));
        assert_eq!(cycle.on_stop(Stop::Interrupted), Verdict::Ours);
        assert_eq!(cycle.next_tick(running), None);
        assert_eq!(cycle.tick(running + PERIOD / 2), None);
        assert_eq!(cycle.release(), Some(Ask::Cont));
        assert_eq!(cycle.next_tick(running), None);
        // Stopped already: it stays so. Released before its stop came, that stop is no
        // longer the cycle's, and nobody is to let it go but the tracer's usual serving.
        let mut cycle = stopped_cycle(Level::percent(50), t0);
        assert_eq!(cycle.hold_if_slowed(), None);
        assert_eq!(cycle.phase(), Phase::Stopped);
        let mut cycle = Cycle::new(t0);
        cycle.set(Level::percent(50), t0);
        assert_eq!(cycle.release(), None);
        assert_eq!(
            cycle.on_stop(Stop::Interrupted),
            Verdict::Theirs { ask_again: false }
        );
    }

    #[test]
    fn a_tracer_that_freezes_takes_the_process_over_as_the_cycle_left_it() {
        let t0 = Instant::now();
        let mut cycle = stopped_cycle(Level::percent(50), t0);
        assert_eq!(cycle.hold_if_slowed(), None);
        assert_eq!(cycle.hand_over(), Phase::Stopped);
        // The stop is the tracer's now: the cycle asks nothing more of it.
        assert_eq!(cycle.release(), None);
        assert_eq!(cycle.next_tick(t0), None);
        let mut cycle = Cycle::new(t0);
        cycle.set(Level::percent(50), t0);
        assert_eq!(cycle.hand_over(), Phase::Stopping);
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
