//! The fault schedule: which fault, when, for how long — a pure function of the seed, so
//! that a seed printed by a failed run replays the same faults.
//!
//! Targets that depend on the cluster (the leader) are resolved when the fault starts;
//! everything else (which node, which split) comes from the step's own `pick`.

use std::time::Duration;

use serde::Serialize;

/// A small, stable pseudo-random generator (SplitMix64): the schedule of a seed must not
/// change when a dependency does.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A duration in `[lo, hi]`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a random validator; restart it after the hold.
    KillRandom,
    /// SIGKILL the leader; restart it after the hold.
    KillLeader,
    /// SIGSTOP a random validator; SIGCONT after the hold.
    PauseRandom,
    /// SIGSTOP the leader; SIGCONT after the hold.
    PauseLeader,
    /// Cut the leader off from every other validator.
    PartitionLeader,
    /// Cut a random minority of followers off (the leader keeps its quorum).
    PartitionFollowers,
    /// Split the validators at random into a majority and a minority.
    PartitionHalves,
    /// One random validator receives nothing from the others; what it sends arrives.
    PartitionOneWay,
    /// One random validator sees both halves; the halves do not see each other.
    PartitionBridge,
    /// Set a random validator's wall clock off, forwards or backwards, by 1 s to an hour.
    SkewRandom,
    /// Set the leader's wall clock off, forwards or backwards, by 1 s to an hour.
    SkewLeader,
    /// Fill a random validator's disk to the last block and restart it on it; free the
    /// space after the hold (and start the validator again if it stopped).
    DiskFull,
    /// Cut a random validator's power: kill -9 it, lose every write it did not fsync
    /// (`ordo-lazyfs`), start it after the hold.
    PowerCutRandom,
    /// Cut every validator's power at once, as [`FaultKind::PowerCutRandom`] does one's.
    PowerCutAll,
    /// Stop a random validator (SIGKILL or SIGTERM), damage one of its ledger's table
    /// files (bytes flipped, or cut short), start it after the hold.
    CorruptRandom,
    /// Make the leader sign its blocks wrongly (the validators run `ordo-faulty`) until the
    /// hold ends: its followers must refuse the blocks and depose it. Drawn only when
    /// asked for (`--faults`): not in [`FaultKind::ALL`].
    InvalidBlocksLeader,
    /// Delay every fsync of the leader by 10 ms, 100 ms or 1 s (`libordo_slowdisk.so`):
    /// it must hand leadership to a healthy follower. Drawn only when asked for.
    SlowDiskLeader,
    /// Delay every fsync of a random follower by 10 ms, 100 ms or 1 s: the cluster must
    /// not slow down. Drawn only when asked for.
    SlowDiskFollower,
}

impl FaultKind {
    /// The kinds drawn when none are named: every kind but
    /// [`FaultKind::InvalidBlocksLeader`], which needs the test-only `ordo-faulty`.
    pub const ALL: [FaultKind; 15] = [
        FaultKind::KillRandom,
        FaultKind::KillLeader,
        FaultKind::PauseRandom,
        FaultKind::PauseLeader,
        FaultKind::PartitionLeader,
        FaultKind::PartitionFollowers,
        FaultKind::PartitionHalves,
        FaultKind::PartitionOneWay,
        FaultKind::PartitionBridge,
        FaultKind::SkewRandom,
        FaultKind::SkewLeader,
        FaultKind::DiskFull,
        FaultKind::PowerCutRandom,
        FaultKind::PowerCutAll,
        FaultKind::CorruptRandom,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillRandom => "kill-random",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::PauseRandom => "pause-random",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PartitionLeader => "partition-leader",
            FaultKind::PartitionFollowers => "partition-followers",
            FaultKind::PartitionHalves => "partition-halves",
            FaultKind::PartitionOneWay => "partition-one-way",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::SkewRandom => "skew-random",
            FaultKind::SkewLeader => "skew-leader",
            FaultKind::DiskFull => "disk-full",
            FaultKind::PowerCutRandom => "power-cut-random",
            FaultKind::PowerCutAll => "power-cut-all",
            FaultKind::CorruptRandom => "corrupt-random",
            FaultKind::InvalidBlocksLeader => "invalid-blocks-leader",
            FaultKind::SlowDiskLeader => "slow-disk-leader",
            FaultKind::SlowDiskFollower => "slow-disk-follower",
        }
    }

    /// How long the fault lasts: the least and the most.
    fn hold(self) -> (Duration, Duration) {
        let s = Duration::from_secs;
        match self {
            FaultKind::KillRandom | FaultKind::KillLeader => (Duration::from_millis(500), s(8)),
            FaultKind::PauseRandom | FaultKind::PauseLeader => (s(3), s(20)),
            FaultKind::PartitionLeader
            | FaultKind::PartitionFollowers
            | FaultKind::PartitionHalves
            | FaultKind::PartitionOneWay
            | FaultKind::PartitionBridge => (s(3), s(15)),
            FaultKind::SkewRandom | FaultKind::SkewLeader => (s(5), s(20)),
            FaultKind::DiskFull => (s(3), s(15)),
            FaultKind::PowerCutRandom | FaultKind::PowerCutAll => {
                (Duration::from_millis(500), s(5))
            }
            FaultKind::CorruptRandom => (s(1), s(8)),
            FaultKind::InvalidBlocksLeader => (s(3), s(15)),
            // Long enough to see the acknowledgements come back after a hand-over.
            FaultKind::SlowDiskLeader | FaultKind::SlowDiskFollower => (s(8), s(20)),
        }
    }

    /// Whether the fault hits the leader (else a random validator, or a split).
    pub fn targets_leader(self) -> bool {
        matches!(
            self,
            FaultKind::KillLeader
                | FaultKind::PauseLeader
                | FaultKind::SkewLeader
                | FaultKind::InvalidBlocksLeader
                | FaultKind::SlowDiskLeader
        )
    }

    /// Whether the validators' data must be on disks of their own for this kind.
    pub fn needs_own_disks(self) -> bool {
        self == FaultKind::DiskFull
    }

    /// Whether the validators' data must be under `ordo-lazyfs` for this kind.
    pub fn needs_lazy_fs(self) -> bool {
        matches!(self, FaultKind::PowerCutRandom | FaultKind::PowerCutAll)
    }

    /// Whether the validators must run under libfaketime for this kind.
    pub fn needs_fake_clock(self) -> bool {
        matches!(self, FaultKind::SkewRandom | FaultKind::SkewLeader)
    }

    /// Whether the validators must run `ordo-faulty` (test-only faults) for this kind.
    pub fn needs_faulty_binary(self) -> bool {
        self == FaultKind::InvalidBlocksLeader
    }

    /// Whether the validators must run with `libordo_slowdisk.so` preloaded for this kind.
    pub fn needs_slow_disk(self) -> bool {
        matches!(
            self,
            FaultKind::SlowDiskLeader | FaultKind::SlowDiskFollower
        )
    }

    /// Whether the validators' scrub must re-check their ledgers often for this kind.
    pub fn needs_frequent_scrub(self) -> bool {
        self == FaultKind::CorruptRandom
    }
}

/// A clock offset in whole seconds, forwards or backwards, from 1 s to an hour, spread
/// evenly over the orders of magnitude (as many skews under 10 s as over 1,000 s).
pub fn skew_seconds(rng: &mut Rng) -> i64 {
    // 10^(x/1000) for x in 0..=3556 covers 1..=3600 (10^3.556 ≈ 3597).
    let exponent = rng.below(3557) as f64 / 1000.0;
    let magnitude = 10f64.powf(exponent).round().clamp(1.0, 3600.0) as i64;
    if rng.below(2) == 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// The fsync delays a slow-disk fault draws from, in milliseconds.
pub const SLOW_DISK_DELAYS_MS: [u64; 3] = [10, 100, 1000];

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// When it starts, from the start of the run, if every earlier fault ends at once.
    pub at: Duration,
    /// The quiet time before it: after the run starts, or after the previous fault has
    /// ended (ending one — restarting a validator, remounting a disk — takes time of its
    /// own, which the gap never absorbs).
    pub gap: Duration,
    /// What it is.
    pub kind: FaultKind,
    /// How long it lasts.
    pub hold: Duration,
    /// Random bits that choose its targets.
    pub pick: u64,
}

/// Consecutive seeds form cycles of this many (0–19, 20–39, …): the runs of a cycle take
/// their kinds, one after the other, from one sequence of rounds.
const CYCLE: u64 = 20;

/// Mixed into a cycle's number to seed its rounds, so that they are not drawn by the
/// generator of any one seed.
const CYCLE_SALT: u64 = 0x6f72_646f_6379_636c;

/// Quiet time before the first fault.
const WARMUP: Duration = Duration::from_secs(2);
/// Quiet time between two faults: the least and the most.
const GAP: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(4));

/// Kinds in rounds: every kind once, in a random order, before any kind again.
struct Rounds<'a> {
    kinds: &'a [FaultKind],
    rng: Rng,
    /// What is left of the current round.
    bag: Vec<FaultKind>,
    /// A kind taken but not used, given out again first.
    back: Option<FaultKind>,
}

impl<'a> Rounds<'a> {
    fn new(kinds: &'a [FaultKind], rng: Rng) -> Rounds<'a> {
        Rounds {
            kinds,
            rng,
            bag: Vec::new(),
            back: None,
        }
    }

    fn take(&mut self) -> FaultKind {
        if let Some(kind) = self.back.take() {
            return kind;
        }
        if self.bag.is_empty() {
            self.bag.extend_from_slice(self.kinds);
        }
        let i = self.rng.below(self.bag.len() as u64) as usize;
        self.bag.swap_remove(i)
    }

    fn put_back(&mut self, kind: FaultKind) {
        self.back = Some(kind);
    }
}

/// The faults of a run of `length` with `seed`, drawn from `kinds` (not empty), one at a
/// time, each over before `length` ends.
///
/// Kinds come in rounds, every kind once before any again. The runs of a cycle of
/// [`CYCLE`] consecutive seeds share one sequence of rounds, each run going on where the
/// seed before it stopped: a run of two minutes meets 10–13 faults, too few to finish a
/// round, and a series of runs still meets each kind about equally often. Everything else
/// (holds, gaps, targets) is drawn by the seed's own generator. The schedule of a seed is
/// thus a function of the seed, `length` and `kinds` (computing it computes those of the
/// seeds before it in its cycle).
pub fn schedule(seed: u64, length: Duration, kinds: &[FaultKind]) -> Vec<Step> {
    if kinds.is_empty() {
        return Vec::new();
    }
    let mut rounds = Rounds::new(kinds, Rng::new(CYCLE_SALT ^ (seed / CYCLE)));
    for earlier in seed - seed % CYCLE..seed {
        run_schedule(earlier, length, &mut rounds);
    }
    run_schedule(seed, length, &mut rounds)
}

/// The faults of one run, its kinds taken from `rounds`.
fn run_schedule(seed: u64, length: Duration, rounds: &mut Rounds) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    let mut at = WARMUP;
    let mut gap = WARMUP;
    loop {
        let kind = rounds.take();
        let (lo, hi) = kind.hold();
        let hold = rng.between(lo, hi);
        let pick = rng.next_u64();
        if at + hold > length {
            // The next run of the cycle starts with it.
            rounds.put_back(kind);
            return steps;
        }
        steps.push(Step {
            at,
            gap,
            kind,
            hold,
            pick,
        });
        gap = rng.between(GAP.0, GAP.1);
        at += hold + gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_another_seed_another() {
        let len = Duration::from_secs(120);
        let a = schedule(7, len, &FaultKind::ALL);
        assert_eq!(a, schedule(7, len, &FaultKind::ALL));
        assert_ne!(a, schedule(8, len, &FaultKind::ALL));
        assert!(a.len() >= 6, "about one fault every 10 s: {}", a.len());
        assert_eq!(a[0].at, WARMUP);
        for w in a.windows(2) {
            assert_eq!(w[0].at + w[0].hold + w[1].gap, w[1].at);
            assert!((GAP.0..=GAP.1).contains(&w[1].gap), "one fault at a time");
        }
        let last = a.last().expect("faults");
        assert!(last.at + last.hold <= len);
    }

    #[test]
    fn the_runs_of_a_cycle_take_every_kind_once_before_any_again() {
        let len = Duration::from_secs(120);
        let n = FaultKind::ALL.len();
        for cycle in [0, 1, 40] {
            let kinds: Vec<FaultKind> = (cycle * CYCLE..(cycle + 1) * CYCLE)
                .flat_map(|seed| schedule(seed, len, &FaultKind::ALL))
                .map(|s| s.kind)
                .collect();
            assert!(kinds.len() >= 10 * n, "{} faults", kinds.len());
            for round in kinds.chunks_exact(n) {
                let mut round = round.to_vec();
                round.sort_unstable();
                round.dedup();
                assert_eq!(round.len(), n, "each round of {n} faults holds every kind");
            }
            assert_ne!(kinds[..n], kinds[n..2 * n], "rounds are shuffled apart");
        }
        // One long run goes through its rounds too.
        let long = schedule(3, Duration::from_secs(3600), &FaultKind::ALL);
        assert!(long.len() >= 3 * n, "{} faults", long.len());
    }

    #[test]
    fn twenty_runs_of_two_minutes_meet_every_kind_at_least_ten_times() {
        // What `scripts/nemesis.sh --runs 20 --seconds 120` promises, from any first seed.
        let len = Duration::from_secs(120);
        for first in (0..600).chain([1_000_003, 987_654_321]) {
            let mut count = std::collections::BTreeMap::new();
            for seed in first..first + 20 {
                for s in schedule(seed, len, &FaultKind::ALL) {
                    *count.entry(s.kind).or_insert(0u32) += 1;
                }
            }
            for k in FaultKind::ALL {
                let c = count.get(&k).copied().unwrap_or(0);
                assert!(c >= 10, "seeds {first}..: {} drawn {c} times", k.name());
            }
        }
    }

    #[test]
    fn holds_stay_in_their_kinds_ranges_and_only_chosen_kinds_appear() {
        let kinds = [FaultKind::PauseLeader, FaultKind::PartitionBridge];
        let steps = schedule(1, Duration::from_secs(3600), &kinds);
        for s in &steps {
            assert!(kinds.contains(&s.kind));
            let (lo, hi) = s.kind.hold();
            assert!(lo <= s.hold && s.hold <= hi, "{s:?}");
        }
        for k in kinds {
            assert!(steps.iter().any(|s| s.kind == k), "{k:?} drawn");
        }
        assert!(schedule(1, Duration::from_secs(60), &[]).is_empty());
    }

    #[test]
    fn skews_go_both_ways_from_a_second_to_an_hour() {
        let mut rng = Rng::new(5);
        let skews: Vec<i64> = (0..2000).map(|_| skew_seconds(&mut rng)).collect();
        assert!(skews.iter().all(|s| (1..=3600).contains(&s.abs())));
        assert!(skews.iter().any(|s| *s < 0) && skews.iter().any(|s| *s > 0));
        assert!(skews.iter().any(|s| s.abs() < 10), "seconds");
        assert!(skews.iter().any(|s| s.abs() > 1800), "up to an hour");
    }

    #[test]
    fn the_generator_is_pinned() {
        // SplitMix64's published first output for seed 0: a changed generator would
        // silently change every recorded seed's schedule.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let d = r.between(Duration::from_millis(5), Duration::from_millis(9));
            assert!((5..=9).contains(&d.as_millis()));
        }
    }
}
