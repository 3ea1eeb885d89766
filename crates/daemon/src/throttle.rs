//! Rate limits for log lines that anyone can cause at will: a host without the key that
//! connects in a loop, a user who keeps opening connections past their limit. Each source gets
//! at most one line per window; what was held back is counted and reported once the window
//! has ended, so the log says how much happened without growing with it.
//!
//! Pure: the caller passes the time, so tests drive it with made-up instants.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `held` events from the same source were held back in the window before.
    Log { held: u64 },
    /// Count it, do not log it.
    Hold,
}

/// Events held back during a window that has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held<K> {
    /// Their source; `None` for sources beyond the ones tracked (see [`Throttle::new`]).
    pub source: Option<K>,
    /// How many.
    pub count: u64,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    held: u64,
}

/// One line per source per window.
#[derive(Debug)]
pub(crate) struct Throttle<K> {
    window: Duration,
    max_sources: usize,
    windows: HashMap<K, Window>,
    /// Events of sources that found the table full.
    untracked: u64,
}

impl<K: Copy + Eq + Hash> Throttle<K> {
    /// At most one line per `window` from each source. At most `max_sources` sources are
    /// tracked at once (their windows are forgotten by [`Throttle::sweep`] when they end);
    /// events of further sources are held back and counted together.
    pub fn new(window: Duration, max_sources: usize) -> Self {
        Throttle {
            window,
            max_sources,
            windows: HashMap::new(),
            untracked: 0,
        }
    }

    /// An event from `source` at `now`.
    pub fn event(&mut self, source: K, now: Instant) -> Verdict {
        if let Some(window) = self.windows.get_mut(&source) {
            if now.saturating_duration_since(window.opened) < self.window {
                window.held += 1;
                return Verdict::Hold;
            }
            // Its window ended and no sweep has reported it yet: this line does.
            let held = window.held;
            *window = Window {
                opened: now,
                held: 0,
            };
            return Verdict::Log { held };
        }
        if self.windows.len() >= self.max_sources {
            self.untracked += 1;
            return Verdict::Hold;
        }
        self.windows.insert(
            source,
            Window {
                opened: now,
                held: 0,
            },
        );
        Verdict::Log { held: 0 }
    }

    /// Forget the windows that have ended by `now`, and say what they held back. Call it
    /// about once a window.
    pub fn sweep(&mut self, now: Instant) -> Vec<Held<K>> {
        let mut report = Vec::new();
        let window = self.window;
        self.windows.retain(|source, w| {
            let open = now.saturating_duration_since(w.opened) < window;
            if !open && w.held > 0 {
                report.push(Held {
                    source: Some(*source),
                    count: w.held,
                });
            }
            open
        });
        if self.untracked > 0 {
            report.push(Held {
                source: None,
                count: std::mem::take(&mut self.untracked),
            });
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn secs(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    #[test]
    fn one_line_per_source_per_window_and_the_rest_is_counted() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(WINDOW, 100);
        assert_eq!(throttle.event('a', t0), Verdict::Log { held: 0 });
        for s in 0..10 {
            assert_eq!(throttle.event('a', secs(t0, s)), Verdict::Hold);
        }
        // Another source has its own window.
        assert_eq!(throttle.event('b', secs(t0, 5)), Verdict::Log { held: 0 });
        assert!(throttle.sweep(secs(t0, 9)).is_empty());
        assert_eq!(
            throttle.sweep(secs(t0, 10)),
            vec![Held {
                source: Some('a'),
                count: 10
            }]
        );
        // A new window after the sweep.
        assert_eq!(throttle.event('a', secs(t0, 11)), Verdict::Log { held: 0 });
        // b's window ended without anything held: nothing to say.
        assert!(throttle.sweep(secs(t0, 16)).is_empty());
    }

    #[test]
    fn an_event_after_an_unswept_window_reports_what_it_held() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(WINDOW, 100);
        throttle.event(1, t0);
        throttle.event(1, secs(t0, 1));
        throttle.event(1, secs(t0, 2));
        assert_eq!(throttle.event(1, secs(t0, 30)), Verdict::Log { held: 2 });
        assert_eq!(throttle.event(1, secs(t0, 31)), Verdict::Hold);
    }

    #[test]
    fn sources_beyond_the_table_are_held_together() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(WINDOW, 2);
        assert_eq!(throttle.event(1, t0), Verdict::Log { held: 0 });
        assert_eq!(throttle.event(2, t0), Verdict::Log { held: 0 });
        for source in 3..10 {
            assert_eq!(throttle.event(source, t0), Verdict::Hold);
        }
        assert_eq!(
            throttle.sweep(secs(t0, 1)),
            vec![Held {
                source: None,
                count: 7
            }]
        );
        // Once the windows end, new sources are tracked again.
        assert!(throttle.sweep(secs(t0, 10)).is_empty());
        assert_eq!(throttle.event(3, secs(t0, 10)), Verdict::Log { held: 0 });
    }

    #[test]
    fn time_going_backwards_keeps_the_window_closed() {
        let t0 = Instant::now() + Duration::from_secs(100);
        let mut throttle = Throttle::new(WINDOW, 10);
        throttle.event(1, t0);
        assert_eq!(
            throttle.event(1, t0 - Duration::from_secs(50)),
            Verdict::Hold
        );
    }
}
