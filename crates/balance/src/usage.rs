//! Per-process statistics and their decay: [`DecayClass`], [`Sample`], [`Usage`].
//!
//! MOSIX keeps, for each process, statistics that fade: "every given number of seconds, only
//! a given portion of the statistics is kept" (openMosix `mosctl getdecay`, reference 5.3),
//! 975/1000 for slow-decaying processes (the default) and 926/1000 for fast-decaying ones. We
//! take one second as the decay interval (the balancer's round) and apply the portion per
//! second of sample, so samples of any length decay alike.

use std::time::Duration;

/// Portion (per mille) of the statistics kept per second for slow decay: openMosix's
/// `slowdecay` default, a half-life of about 27 s.
pub const SLOW_KEEP_PER_MILLE: u16 = 975;

/// Portion (per mille) kept per second for fast decay: openMosix's `fastdecay` default, a
/// half-life of about 9 s.
pub const FAST_KEEP_PER_MILLE: u16 = 926;

/// How many seconds of history the advice of `mosrun -c` or `-i` is worth at the start: the
/// class's assumption fades as real samples come in, at the class's own rate.
pub const PRIOR_SECONDS: f64 = 10.0;

/// How a process's statistics decay, from `mosrun -c/-i/-n/-s/-f` (reference 1.1) or `-d`
/// (reference 1.2).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum DecayClass {
    /// No advice: slow decay, MOSIX's default.
    #[default]
    Normal,
    /// `mosrun -c` (`cpujob`): declared CPU-bound. Slow decay, and it starts as a process
    /// that wants a whole CPU ([`PRIOR_SECONDS`] of it), so it may move before it has shown it.
    CpuBound,
    /// `mosrun -i` (`iojob`): declared I/O-bound. Fast decay, so a burst of computation does
    /// not make it look CPU-bound for long, and it starts as a process that wants no CPU.
    IoBound,
    /// `mosrun -n` (`nodecay`): nothing fades; the statistics are the lifetime average.
    NoDecay,
    /// `mosrun -s` (`slowdecay`): [`SLOW_KEEP_PER_MILLE`].
    Slow,
    /// `mosrun -f` (`fastdecay`): [`FAST_KEEP_PER_MILLE`].
    Fast,
    /// `mosrun -d N`: N/10000 of the statistics kept per second (N above 10000 counts as
    /// 10000). MOSIX2's exact meaning of `-d` was not found (reference 1.2); this is ours.
    Keep(u16),
}

impl DecayClass {
    /// The portion of the statistics kept per second, 0 to 1.
    pub fn keep_per_second(self) -> f64 {
        match self {
            DecayClass::Normal | DecayClass::CpuBound | DecayClass::Slow => {
                f64::from(SLOW_KEEP_PER_MILLE) / 1000.0
            }
            DecayClass::IoBound | DecayClass::Fast => f64::from(FAST_KEEP_PER_MILLE) / 1000.0,
            DecayClass::NoDecay => 1.0,
            DecayClass::Keep(n) => f64::from(n.min(10_000)) / 10_000.0,
        }
    }

    /// The demand a process of this class is assumed to have before any sample, and how many
    /// seconds that assumption weighs.
    fn prior(self) -> (f64, f64) {
        match self {
            DecayClass::CpuBound => (1.0, PRIOR_SECONDS),
            DecayClass::IoBound => (0.0, PRIOR_SECONDS),
            _ => (0.0, 0.0),
        }
    }
}

/// One raw measurement of a process over `interval`, read by the daemon (e.g. from
/// `/proc/PID/schedstat`, whose first two fields are time run and time waited on a run queue).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sample {
    /// The wall time the sample covers.
    pub interval: Duration,
    /// CPU time the process ran.
    pub ran: Duration,
    /// Time it was runnable but waited for a CPU. Ran plus waited is what it wanted: a
    /// CPU-bound process sharing one CPU with another runs half the time but wants all of it.
    pub waited: Duration,
    /// Time it waited for calls forwarded home, measured by the guest supervisor. `None` at
    /// home, where calls are not forwarded: the estimate from its last stay away is kept, so
    /// that a process sent home for its calls is not sent out again at once.
    pub forwarded: Option<Duration>,
}

/// A process's decayed statistics. Update it with [`Usage::update`] for every sample; tell it
/// of a move with [`Usage::moved`].
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Usage {
    /// Decayed fraction of one CPU the process wants (ran + waited, per wall second).
    demand: f64,
    /// Decayed fraction of wall time it ran.
    cpu: f64,
    /// Decayed fraction of wall time it waited for forwarded calls, while away.
    forwarded: f64,
    /// Decayed seconds of history behind `demand` and `cpu`.
    weight: f64,
    /// Decayed seconds of history behind `forwarded`.
    forwarded_weight: f64,
    /// CPU time used since the last move (or the start).
    cpu_since_move: Duration,
    /// Time it wanted a CPU (ran or waited for one) since the last move: what pays for the
    /// next move.
    wanted_since_move: Duration,
}

impl Usage {
    /// The statistics of a process that has not been sampled yet.
    pub fn new(class: DecayClass) -> Usage {
        let (demand, weight) = class.prior();
        Usage {
            demand,
            cpu: demand,
            forwarded: 0.0,
            weight,
            forwarded_weight: 0.0,
            cpu_since_move: Duration::ZERO,
            wanted_since_move: Duration::ZERO,
        }
    }

    /// Statistics given outright, for a process whose figures come from elsewhere (its home,
    /// a test). Fractions are clamped to 0-1 (demand to 0 and up). Its time wanted since the
    /// move is taken as its CPU time (it has not waited).
    pub fn from_figures(demand: f64, cpu: f64, forwarded: f64, cpu_since_move: Duration) -> Usage {
        Usage {
            demand: demand.max(0.0),
            cpu: cpu.clamp(0.0, 1.0),
            forwarded: forwarded.clamp(0.0, 1.0),
            weight: PRIOR_SECONDS,
            forwarded_weight: PRIOR_SECONDS,
            cpu_since_move,
            wanted_since_move: cpu_since_move,
        }
    }

    /// Folds a sample in: what was there is kept at the class's rate per second of the sample,
    /// and the sample weighs its length. Early samples therefore count fully (no warm-up from
    /// zero), and with [`DecayClass::NoDecay`] the result is the lifetime average.
    pub fn update(&mut self, class: DecayClass, sample: &Sample) {
        let seconds = sample.interval.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let keep = class.keep_per_second().powf(seconds);
        let fold = |average: f64, weight: f64, value: f64| {
            let kept = weight * keep;
            (
                (average * kept + value * seconds) / (kept + seconds),
                kept + seconds,
            )
        };
        let demand = (sample.ran + sample.waited).as_secs_f64() / seconds;
        let cpu = (sample.ran.as_secs_f64() / seconds).min(1.0);
        (self.demand, _) = fold(self.demand, self.weight, demand);
        (self.cpu, self.weight) = fold(self.cpu, self.weight, cpu);
        if let Some(forwarded) = sample.forwarded {
            let share = (forwarded.as_secs_f64() / seconds).min(1.0);
            (self.forwarded, self.forwarded_weight) =
                fold(self.forwarded, self.forwarded_weight, share);
        }
        self.cpu_since_move += sample.ran;
        self.wanted_since_move += sample.ran + sample.waited;
    }

    /// The process has moved: the time that paid for this move cannot pay for the next.
    pub fn moved(&mut self) {
        self.cpu_since_move = Duration::ZERO;
        self.wanted_since_move = Duration::ZERO;
    }

    /// Fraction of one CPU it wants; above 1 when it waited for a CPU while it could run.
    pub fn demand(&self) -> f64 {
        self.demand
    }

    /// Fraction of wall time it ran.
    pub fn cpu(&self) -> f64 {
        self.cpu
    }

    /// Fraction of wall time it waited for forwarded calls (the last estimate from away).
    pub fn forwarded(&self) -> f64 {
        self.forwarded
    }

    /// CPU time used since its last move.
    pub fn cpu_since_move(&self) -> Duration {
        self.cpu_since_move
    }

    /// Time it wanted a CPU (ran or waited for one) since its last move: on a crowded node
    /// much more than its CPU time.
    pub fn wanted_since_move(&self) -> Duration {
        self.wanted_since_move
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(seconds: u64, forwarded: Option<u64>) -> Sample {
        Sample {
            interval: Duration::from_secs(seconds),
            ran: Duration::from_secs(seconds),
            waited: Duration::ZERO,
            forwarded: forwarded.map(Duration::from_secs),
        }
    }

    fn idle(seconds: u64) -> Sample {
        Sample {
            interval: Duration::from_secs(seconds),
            ran: Duration::ZERO,
            waited: Duration::ZERO,
            forwarded: Some(Duration::ZERO),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn first_sample_counts_fully() {
        let mut usage = Usage::new(DecayClass::Normal);
        usage.update(DecayClass::Normal, &busy(1, None));
        assert!(close(usage.demand(), 1.0));
        assert!(close(usage.cpu(), 1.0));
        assert_eq!(usage.cpu_since_move(), Duration::from_secs(1));
    }

    #[test]
    fn slow_decay_keeps_975_per_mille_per_second() {
        // A long busy history, then one idle second: the busy part keeps weight W*0.975.
        let mut usage = Usage::new(DecayClass::Slow);
        for _ in 0..1000 {
            usage.update(DecayClass::Slow, &busy(1, Some(0)));
        }
        usage.update(DecayClass::Slow, &idle(1));
        // W after 1000 one-second samples is about 1/(1-0.975) = 40 s; the idle second weighs 1.
        let kept = 40.0 * 0.975;
        assert!((usage.demand() - kept / (kept + 1.0)).abs() < 1e-3);
    }

    #[test]
    fn fast_decay_forgets_sooner_than_slow() {
        let mut slow = Usage::new(DecayClass::Slow);
        let mut fast = Usage::new(DecayClass::Fast);
        for _ in 0..100 {
            slow.update(DecayClass::Slow, &busy(1, None));
            fast.update(DecayClass::Fast, &busy(1, None));
        }
        for _ in 0..10 {
            slow.update(DecayClass::Slow, &idle(1));
            fast.update(DecayClass::Fast, &idle(1));
        }
        assert!(fast.demand() < slow.demand());
        // 10 s is about one fast half-life and a third of a slow one.
        assert!(
            fast.demand() < 0.55 && fast.demand() > 0.35,
            "{}",
            fast.demand()
        );
        assert!(slow.demand() > 0.7, "{}", slow.demand());
    }

    #[test]
    fn no_decay_is_the_lifetime_average() {
        let mut usage = Usage::new(DecayClass::NoDecay);
        usage.update(DecayClass::NoDecay, &busy(30, None));
        usage.update(DecayClass::NoDecay, &idle(10));
        assert!(close(usage.cpu(), 0.75));
        let mut custom = Usage::new(DecayClass::Keep(10_000));
        custom.update(DecayClass::Keep(10_000), &busy(30, None));
        custom.update(DecayClass::Keep(10_000), &idle(10));
        assert!(close(custom.cpu(), 0.75));
    }

    #[test]
    fn keep_zero_remembers_only_the_last_sample() {
        let mut usage = Usage::new(DecayClass::Keep(0));
        usage.update(DecayClass::Keep(0), &busy(5, None));
        usage.update(DecayClass::Keep(0), &idle(1));
        assert!(close(usage.demand(), 0.0));
    }

    #[test]
    fn declared_classes_start_from_their_advice() {
        assert!(close(Usage::new(DecayClass::CpuBound).demand(), 1.0));
        assert!(close(Usage::new(DecayClass::IoBound).demand(), 0.0));
        // The advice fades: a cpujob that idles for a minute no longer looks CPU-bound.
        let mut usage = Usage::new(DecayClass::CpuBound);
        for _ in 0..60 {
            usage.update(DecayClass::CpuBound, &idle(1));
        }
        assert!(usage.demand() < 0.3, "{}", usage.demand());
    }

    #[test]
    fn waiting_for_a_cpu_counts_as_demand() {
        let mut usage = Usage::new(DecayClass::Normal);
        usage.update(
            DecayClass::Normal,
            &Sample {
                interval: Duration::from_secs(1),
                ran: Duration::from_millis(500),
                waited: Duration::from_millis(500),
                forwarded: None,
            },
        );
        assert!(close(usage.demand(), 1.0));
        assert!(close(usage.cpu(), 0.5));
        assert_eq!(usage.cpu_since_move(), Duration::from_millis(500));
        assert_eq!(usage.wanted_since_move(), Duration::from_secs(1));
        usage.moved();
        assert_eq!(usage.cpu_since_move(), Duration::ZERO);
        assert_eq!(usage.wanted_since_move(), Duration::ZERO);
    }

    #[test]
    fn forwarded_estimate_is_kept_at_home() {
        let mut usage = Usage::new(DecayClass::Normal);
        usage.update(
            DecayClass::Normal,
            &Sample {
                interval: Duration::from_secs(2),
                ran: Duration::from_millis(500),
                waited: Duration::ZERO,
                forwarded: Some(Duration::from_millis(1500)),
            },
        );
        assert!(close(usage.forwarded(), 0.75));
        for _ in 0..30 {
            usage.update(DecayClass::Normal, &busy(1, None));
        }
        assert!(close(usage.forwarded(), 0.75));
        usage.update(DecayClass::Normal, &busy(1, Some(0)));
        assert!(usage.forwarded() < 0.75);
    }

    #[test]
    fn empty_interval_changes_nothing() {
        let mut usage = Usage::new(DecayClass::Normal);
        usage.update(DecayClass::Normal, &busy(1, None));
        let before = usage;
        usage.update(
            DecayClass::Normal,
            &Sample {
                interval: Duration::ZERO,
                ran: Duration::from_secs(3),
                waited: Duration::ZERO,
                forwarded: None,
            },
        );
        assert_eq!(usage, before);
    }
}
