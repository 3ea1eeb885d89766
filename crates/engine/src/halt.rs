//! Bringing a process at home to a stop for a step of its move (arming write tracking, taking
//! its final round) without blocking the supervisor's loop.
//!
//! A process cannot stop at every moment. A parent in vfork waits in the kernel, deaf to
//! PTRACE_INTERRUPT, until its child execs or exits; and that child may itself sit in a ptrace
//! stop (its first one, or its exec's event) that only the supervisor's loop lets go. A step
//! that waited for the parent's stop inside the loop would never see it: the loop would wait
//! for the parent, the parent for its child, and the child for the loop. So the loop asks for
//! the stop and goes back to its poll, serving the job (the child included) until the stop
//! comes among the others, as the duty cycle does (`throttle`). A stop that does not come
//! within [`HALT_BOUND`] fails the move with the reason; the process runs on.
//!
//! Pure, like the duty cycle: time is an input, and the tracer carries out the requests.

use std::time::{Duration, Instant};

use crate::ptrace::Stop;
use crate::throttle::Verdict;

/// How long a move waits for its process to come to a stop. A vfork child that execs or
/// exits at once (as `posix_spawn` and Python's `subprocess` do) lets its parent go within
/// milliseconds; one that runs for longer keeps its parent out of reach.
pub const HALT_BOUND: Duration = Duration::from_secs(5);

/// A stop asked of a process (PTRACE_INTERRUPT), until it comes or the bound passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt {
    /// When the stop is overdue.
    deadline: Instant,
    /// The process is held in the stop.
    stopped: bool,
}

impl Halt {
    /// A stop asked at `now` (the tracer asks PTRACE_INTERRUPT, unless one is pending).
    pub fn asked(now: Instant) -> Halt {
        Halt {
            deadline: now + HALT_BOUND,
            stopped: false,
        }
    }

    /// A process the tracer holds in a stop already.
    pub fn held() -> Halt {
        Halt {
            deadline: Instant::now(),
            stopped: true,
        }
    }

    /// Whether the process is held in its stop.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The tracer saw `stop`: whose it is. The answer to the interrupt is ours, and so is a
    /// group stop, which holds the process as well. Any other stop (a signal's delivery, a
    /// fork's or an exec's event) is the tracer's to serve as any, after it asks for the
    /// interrupt again: that stop may have taken the one asked ("any trap clears pending
    /// STOP trap", kernel/signal.c).
    pub fn on_stop(&mut self, stop: Stop) -> Verdict {
        match stop {
            _ if self.stopped => Verdict::Theirs { ask_again: false },
            Stop::Interrupted | Stop::Group(_) => {
                self.stopped = true;
                Verdict::Ours
            }
            Stop::Exited(_) | Stop::Killed(_) => Verdict::Theirs { ask_again: false },
            _ => Verdict::Theirs { ask_again: true },
        }
    }

    /// Whether the stop has not come by `now`, and will not be waited for any longer.
    pub fn overdue(&self, now: Instant) -> bool {
        !self.stopped && now >= self.deadline
    }

    /// How long after `now` the tracer must look again (when the stop is overdue); None once
    /// the process is stopped.
    pub fn next_tick(&self, now: Instant) -> Option<Duration> {
        (!self.stopped).then(|| self.deadline.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_to_the_interrupt_or_a_group_stop_holds_the_process() {
        let t0 = Instant::now();
        for stop in [Stop::Interrupted, Stop::Group(libc::SIGTSTP)] {
            let mut halt = Halt::asked(t0);
            assert!(!halt.stopped());
            assert_eq!(halt.on_stop(stop), Verdict::Ours);
            assert!(halt.stopped());
            assert_eq!(halt.next_tick(t0), None);
            assert!(!halt.overdue(t0 + HALT_BOUND * 2));
        }
    }

    #[test]
    fn other_stops_are_served_and_the_interrupt_asked_again() {
        let t0 = Instant::now();
        let mut halt = Halt::asked(t0);
        for stop in [
            Stop::Event(libc::PTRACE_EVENT_VFORK),
            Stop::Event(libc::PTRACE_EVENT_EXEC),
            Stop::Signal(libc::SIGCHLD),
        ] {
            assert_eq!(halt.on_stop(stop), Verdict::Theirs { ask_again: true });
        }
        assert_eq!(
            halt.on_stop(Stop::Exited(0)),
            Verdict::Theirs { ask_again: false }
        );
        assert!(!halt.stopped());
    }

    #[test]
    fn a_stop_that_does_not_come_within_the_bound_is_overdue() {
        let t0 = Instant::now();
        let halt = Halt::asked(t0);
        assert_eq!(halt.next_tick(t0), Some(HALT_BOUND));
        assert!(!halt.overdue(t0 + HALT_BOUND / 2));
        assert_eq!(halt.next_tick(t0 + HALT_BOUND * 2), Some(Duration::ZERO));
        assert!(halt.overdue(t0 + HALT_BOUND));
        assert!(!Halt::held().overdue(t0 + HALT_BOUND * 2));
    }
}
