//! What a supervisor counted since it last told its daemon: moves by kind and outcome, and
//! histograms of image sizes, freeze times and forwarded-call times ([`Tally`], sent as
//! [`Report::Tally`](crate::Report::Tally)).
//!
//! A tally holds counts since the last one, never totals, so a supervisor that registers
//! again with a restarted daemon adds nothing twice, and the daemon just adds what comes.
//! Histograms travel as bucket counts over bounds fixed here ([`IMAGE_BYTES_BOUNDS`],
//! [`FREEZE_US_BOUNDS`], [`FORWARDED_US_BOUNDS`]), so a tally is a few hundred bytes however
//! many calls it counts: the supervisor sends at most one a second, not one per call.
//!
//! ```text
//! {"tally":{"moves":[{"kind":"out","outcome":"done","count":1}],
//!           "image_bytes":{"counts":[0,1,0,...],"sum":1310720},"freeze_us":{...},...}}
//! ```

use serde::{Deserialize, Serialize};

use crate::MoveError;

/// Upper bounds (inclusive) of the buckets of moved image sizes, bytes: 64 KiB to 16 GiB by
/// fours. A small program's image is a few hundred KiB, a big job's gigabytes.
pub const IMAGE_BYTES_BOUNDS: [u64; 10] = [
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
    256 << 20,
    1 << 30,
    4 << 30,
    16 << 30,
];

/// Upper bounds (inclusive) of the buckets of freeze times, microseconds: 1 ms to 30 s. A
/// pre-copied move freezes for milliseconds, a gigabyte sent frozen for seconds.
pub const FREEZE_US_BOUNDS: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Upper bounds (inclusive) of the buckets of forwarded-call times at home, microseconds:
/// 5 µs (a call home answers from its copy of a descriptor) to 1 s (one that blocks).
pub const FORWARDED_US_BOUNDS: [u64; 13] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 10_000, 50_000, 250_000, 1_000_000,
];

/// Counts of a histogram's buckets, and the sum of what was counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets {
    /// One count per bound, then one for values above every bound; empty when nothing was
    /// counted. A count is of its bucket alone, not cumulative.
    pub counts: Vec<u64>,
    /// The sum of the values counted (saturating).
    pub sum: u64,
}

impl Buckets {
    /// Count `value` in the bucket of `bounds` it falls in.
    pub fn observe(&mut self, bounds: &[u64], value: u64) {
        if self.counts.len() != bounds.len() + 1 {
            self.counts = vec![0; bounds.len() + 1];
        }
        let at = bounds.partition_point(|&bound| bound < value);
        self.counts[at] = self.counts[at].saturating_add(1);
        self.sum = self.sum.saturating_add(value);
    }

    /// Add `other`'s counts, which must be over the same `bounds`; false (and nothing added)
    /// if they are not: it came from a supervisor of another build.
    pub fn add(&mut self, bounds: &[u64], other: &Buckets) -> bool {
        if other.counts.is_empty() {
            return true;
        }
        if other.counts.len() != bounds.len() + 1 {
            return false;
        }
        if self.counts.len() != bounds.len() + 1 {
            self.counts = vec![0; bounds.len() + 1];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum = self.sum.saturating_add(other.sum);
        true
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |n, c| n.saturating_add(*c))
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }
}

/// Which way a move went, as its home sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveKind {
    /// From home to another node.
    Out,
    /// From another node back home.
    Home,
    /// From one other node on to another.
    On,
}

impl MoveKind {
    /// Every kind, in a fixed order.
    pub const ALL: [MoveKind; 3] = [MoveKind::Out, MoveKind::Home, MoveKind::On];

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            MoveKind::Out => "out",
            MoveKind::Home => "home",
            MoveKind::On => "on",
        }
    }
}

/// How a move ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveOutcome {
    /// The process runs where it was sent.
    Done,
    /// It did not start: the process cannot move, is moving already, the order was
    /// cancelled, or the target is down, blocked or said no. Nothing was sent.
    Refused,
    /// It started and failed: the link broke, the restore failed, the process ended or was
    /// lost.
    Failed,
}

impl MoveOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [MoveOutcome; 3] =
        [MoveOutcome::Done, MoveOutcome::Refused, MoveOutcome::Failed];

    /// The outcome of a move that ended with `result`.
    pub fn of(result: &Result<(), MoveError>) -> MoveOutcome {
        match result {
            Ok(()) => MoveOutcome::Done,
            Err(
                MoveError::NotMovable(_)
                | MoveError::Busy
                | MoveError::Cancelled
                | MoveError::TargetDown { .. }
                | MoveError::Blocked { .. }
                | MoveError::Refused { .. },
            ) => MoveOutcome::Refused,
            Err(_) => MoveOutcome::Failed,
        }
    }

    /// Its name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            MoveOutcome::Done => "done",
            MoveOutcome::Refused => "refused",
            MoveOutcome::Failed => "failed",
        }
    }
}

/// How many moves of one kind ended one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveCount {
    /// Which way they went.
    pub kind: MoveKind,
    /// How they ended.
    pub outcome: MoveOutcome,
    /// How many.
    pub count: u64,
}

/// What a supervisor counted since its last tally (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Moves that ended, by kind and outcome; a pair appears at most once.
    #[serde(default)]
    pub moves: Vec<MoveCount>,
    /// Bytes of the pages of the images of the moves out and on that were done (first and
    /// final rounds together), over [`IMAGE_BYTES_BOUNDS`].
    #[serde(default)]
    pub image_bytes: Buckets,
    /// How long the moves done kept their process frozen, microseconds, over
    /// [`FREEZE_US_BOUNDS`].
    #[serde(default)]
    pub freeze_us: Buckets,
    /// How long home took to answer each forwarded call, from its arrival to its answer,
    /// microseconds, over [`FORWARDED_US_BOUNDS`].
    #[serde(default)]
    pub forwarded_us: Buckets,
}

impl Tally {
    /// Count a move of `kind` that ended with `result`.
    pub fn count_move(&mut self, kind: MoveKind, result: &Result<(), MoveError>) {
        let outcome = MoveOutcome::of(result);
        match self
            .moves
            .iter_mut()
            .find(|m| m.kind == kind && m.outcome == outcome)
        {
            Some(m) => m.count = m.count.saturating_add(1),
            None => self.moves.push(MoveCount {
                kind,
                outcome,
                count: 1,
            }),
        }
    }

    /// Count the bytes of the image of a move that was done.
    pub fn count_bytes(&mut self, bytes: u64) {
        self.image_bytes.observe(&IMAGE_BYTES_BOUNDS, bytes);
    }

    /// Count how long a move that was done froze its process, microseconds.
    pub fn count_freeze(&mut self, freeze_us: u64) {
        self.freeze_us.observe(&FREEZE_US_BOUNDS, freeze_us);
    }

    /// Add what `other` counted; false (and nothing added) if its histograms are not over
    /// this build's bounds, or it lists a pair twice: it came from a supervisor of another
    /// build, or from none. The check is short whatever `other` holds.
    pub fn add(&mut self, other: &Tally) -> bool {
        let fits =
            |b: &Buckets, bounds: &[u64]| b.counts.is_empty() || b.counts.len() == bounds.len() + 1;
        let pairs = MoveKind::ALL.len() * MoveOutcome::ALL.len();
        let pairs_once = other.moves.len() <= pairs
            && other.moves.iter().enumerate().all(|(i, m)| {
                other.moves[..i]
                    .iter()
                    .all(|n| (n.kind, n.outcome) != (m.kind, m.outcome))
            });
        if !(pairs_once
            && fits(&other.image_bytes, &IMAGE_BYTES_BOUNDS)
            && fits(&other.freeze_us, &FREEZE_US_BOUNDS)
            && fits(&other.forwarded_us, &FORWARDED_US_BOUNDS))
        {
            return false;
        }
        for m in &other.moves {
            match self
                .moves
                .iter_mut()
                .find(|n| (n.kind, n.outcome) == (m.kind, m.outcome))
            {
                Some(n) => n.count = n.count.saturating_add(m.count),
                None => self.moves.push(*m),
            }
        }
        self.image_bytes
            .add(&IMAGE_BYTES_BOUNDS, &other.image_bytes);
        self.freeze_us.add(&FREEZE_US_BOUNDS, &other.freeze_us);
        self.forwarded_us
            .add(&FORWARDED_US_BOUNDS, &other.forwarded_us);
        true
    }

    /// How many moves of `kind` ended with `outcome`.
    pub fn moves(&self, kind: MoveKind, outcome: MoveOutcome) -> u64 {
        self.moves
            .iter()
            .filter(|m| (m.kind, m.outcome) == (kind, outcome))
            .fold(0, |n, m| n.saturating_add(m.count))
    }

    /// Whether it counts nothing.
    pub fn is_empty(&self) -> bool {
        self.moves.iter().all(|m| m.count == 0)
            && self.image_bytes.is_empty()
            && self.freeze_us.is_empty()
            && self.forwarded_us.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NotMovable;

    #[test]
    fn values_fall_in_the_first_bucket_whose_bound_holds_them() {
        let bounds = [10, 100];
        let mut b = Buckets::default();
        assert!(b.is_empty());
        for v in [0, 10, 11, 100, 101, u64::MAX] {
            b.observe(&bounds, v);
        }
        assert_eq!(b.counts, vec![2, 2, 2]);
        assert_eq!(b.count(), 6);
        assert_eq!(b.sum, u64::MAX, "the sum saturates");
    }

    #[test]
    fn buckets_add_only_over_the_same_bounds() {
        let bounds = [10, 100];
        let mut total = Buckets::default();
        let mut one = Buckets::default();
        one.observe(&bounds, 50);
        assert!(total.add(&bounds, &one));
        assert!(total.add(&bounds, &one));
        assert!(total.add(&bounds, &Buckets::default()));
        assert_eq!((total.counts.clone(), total.sum), (vec![0, 2, 0], 100));
        let other = Buckets {
            counts: vec![1; 7],
            sum: 3,
        };
        assert!(!total.add(&bounds, &other));
        assert_eq!(total.count(), 2);
        let huge = Buckets {
            counts: vec![u64::MAX; 3],
            sum: u64::MAX,
        };
        assert!(total.add(&bounds, &huge));
        assert_eq!(total.counts, vec![u64::MAX; 3]);
    }

    #[test]
    fn outcomes_say_whether_anything_was_sent() {
        assert_eq!(MoveOutcome::of(&Ok(())), MoveOutcome::Done);
        for refused in [
            MoveError::from(NotMovable::Threads(2)),
            MoveError::Busy,
            MoveError::Blocked { node: 2 },
            MoveError::TargetDown {
                node: 2,
                reason: "no route".into(),
            },
        ] {
            assert_eq!(MoveOutcome::of(&Err(refused)), MoveOutcome::Refused);
        }
        for failed in [
            MoveError::Ended,
            MoveError::Lost("node 2 died".into()),
            MoveError::LinkBroken {
                node: 2,
                reason: "reset".into(),
            },
        ] {
            assert_eq!(MoveOutcome::of(&Err(failed)), MoveOutcome::Failed);
        }
    }

    #[test]
    fn a_tally_counts_each_pair_once() {
        let mut tally = Tally::default();
        assert!(tally.is_empty());
        tally.count_move(MoveKind::Out, &Ok(()));
        tally.count_move(MoveKind::Out, &Ok(()));
        tally.count_move(MoveKind::Out, &Err(MoveError::Busy));
        tally.count_bytes(300 << 10);
        tally.count_freeze(4_000);
        assert!(!tally.is_empty());
        assert_eq!(
            tally.moves,
            vec![
                MoveCount {
                    kind: MoveKind::Out,
                    outcome: MoveOutcome::Done,
                    count: 2
                },
                MoveCount {
                    kind: MoveKind::Out,
                    outcome: MoveOutcome::Refused,
                    count: 1
                },
            ]
        );
        assert_eq!(tally.image_bytes.counts[2], 1);
        assert_eq!(tally.freeze_us.counts[2], 1);
    }

    #[test]
    fn tallies_add_up_unless_they_do_not_fit() {
        let mut one = Tally::default();
        one.count_move(MoveKind::Home, &Ok(()));
        one.count_move(MoveKind::On, &Err(MoveError::Ended));
        one.count_freeze(10);
        one.forwarded_us.observe(&FORWARDED_US_BOUNDS, 3);
        let mut total = Tally::default();
        assert!(total.add(&one));
        assert!(total.add(&one));
        assert_eq!(total.moves(MoveKind::Home, MoveOutcome::Done), 2);
        assert_eq!(total.moves(MoveKind::On, MoveOutcome::Failed), 2);
        assert_eq!(total.moves(MoveKind::Out, MoveOutcome::Done), 0);
        assert_eq!(
            (total.freeze_us.count(), total.forwarded_us.count()),
            (2, 2)
        );
        assert!(total.image_bytes.is_empty());

        let mut odd = one.clone();
        odd.freeze_us.counts.push(1);
        assert!(!total.add(&odd));
        let mut twice = one.clone();
        twice.moves.push(twice.moves[0]);
        assert!(!total.add(&twice));
        let mut long = one.clone();
        long.moves = vec![long.moves[0]; 10_000];
        assert!(!total.add(&long));
        assert_eq!(total.moves(MoveKind::Home, MoveOutcome::Done), 2);
        assert_eq!(total.freeze_us.count(), 2);
    }

    #[test]
    fn bounds_rise() {
        for bounds in [
            &IMAGE_BYTES_BOUNDS[..],
            &FREEZE_US_BOUNDS,
            &FORWARDED_US_BOUNDS,
        ] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
