//! Which moves a run made: by the job's count of moves (its first, second, third, later), by
//! when they were ordered, by who ordered them, and where they landed. The burst's moves a job
//! are the other target; this says which moves are the extra ones
//! (docs/balancing.md, "Simulation").

/// The spread of a burst: moves ordered in the first this many seconds.
pub(crate) const SPREAD: u64 = 20;

/// When a move was ordered.
#[derive(Clone, Copy)]
pub(crate) enum Phase {
    /// In the first [`SPREAD`] seconds.
    Spread,
    /// Later, before the drain.
    Middle,
    /// In the drain (fewer jobs left than CPUs).
    Drain,
}

/// Counts of moves, each row by the job's count of moves with it: its first, second, third,
/// fourth or later.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub(crate) struct Moves {
    /// Ordered in the spread, the middle, the drain.
    pub when: [[u64; 3]; 4],
    /// Ordered by a guest's host (on to a third node, or home) rather than by its home.
    pub by_host: [u64; 4],
    /// Ordered by a node whose jobs did not outnumber its CPUs: the speed rule, or the felt
    /// load of a slow node.
    pub from_uncrowded: [u64; 4],
    /// Landed where, with it, jobs outnumbered CPUs.
    pub landed_crowded: [u64; 4],
}

fn row(nth: u32) -> usize {
    (nth.max(1) as usize - 1).min(3)
}

impl Moves {
    /// A job's `nth` move ordered now.
    pub(crate) fn ordered(&mut self, nth: u32, phase: Phase, by_host: bool, crowded_source: bool) {
        let r = row(nth);
        self.when[r][phase as usize] += 1;
        self.by_host[r] += u64::from(by_host);
        self.from_uncrowded[r] += u64::from(!crowded_source);
    }

    /// A job's `nth` move landed, where jobs now outnumber CPUs or not.
    pub(crate) fn landed(&mut self, nth: u32, crowded: bool) {
        self.landed_crowded[row(nth)] += u64::from(crowded);
    }

    /// One line per row, for the scale run's output.
    pub(crate) fn lines(&self) -> Vec<String> {
        ["1st", "2nd", "3rd", "4th+"]
            .iter()
            .enumerate()
            .map(|(r, name)| {
                let [spread, middle, drain] = self.when[r];
                format!(
                    "{name:>4} moves {:>6}: spread {spread:>6} middle {middle:>6} drain \
                     {drain:>6}; by a guest's host {:>6}, from an uncrowded node {:>6}, landed \
                     crowded {:>6}",
                    spread + middle + drain,
                    self.by_host[r],
                    self.from_uncrowded[r],
                    self.landed_crowded[r],
                )
            })
            .collect()
    }
}
