//! Pace: how long this node's synced log writes take, and (leading) how long each follower
//! takes to acknowledge an append of blocks. A leader whose own writes are clearly the
//! slowest hands its office to the fastest caught-up follower, and holds back from
//! elections until its disk is fast again ([`step_aside`]; `docs/design/slow-leader.md`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::handover::{FRESH, caught_up_followers, log_of};
use super::{OrdoRaft, Role, status};

/// Weight of the newest sample in a moving average: three slow writes in a row carry a
/// pace most of the way to their time.
const ALPHA: f64 = 0.3;

/// A moving average of durations, with the time of its last sample.
#[derive(Debug, Default)]
struct Average {
    seconds: Option<f64>,
    last: Option<Instant>,
}

impl Average {
    fn observe(&mut self, d: Duration, now: Instant) {
        let x = d.as_secs_f64();
        self.seconds = Some(self.seconds.map_or(x, |v| v + ALPHA * (x - v)));
        self.last = Some(now);
    }
}

/// This node's write pace and, while it leads, its followers' acknowledgement times.
#[derive(Debug)]
pub struct Pace {
    base: Instant,
    own: Mutex<Average>,
    /// When the synced write under way started (nanoseconds after `base`, plus one); 0
    /// when none is.
    writing_since: AtomicU64,
    followers: Mutex<HashMap<u64, Average>>,
    /// The leader's last score (own pace over the fastest caught-up follower's), in
    /// thousandths; 0 when not leading or not known.
    score_milli: AtomicU64,
    /// Times this node handed its office over for slowness.
    pub(crate) step_asides: AtomicU64,
    /// Whether it holds back from elections now, having stepped aside.
    pub(crate) holding_back: AtomicBool,
    /// Leading and about to step aside: the proposer proposes nothing, so that the
    /// follower taking over can hold every entry first.
    draining: AtomicBool,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace {
            base: Instant::now(),
            own: Mutex::default(),
            writing_since: AtomicU64::new(0),
            followers: Mutex::default(),
            score_milli: AtomicU64::new(0),
            step_asides: AtomicU64::new(0),
            holding_back: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }
}

/// A synced write under way; records its time when dropped.
pub(crate) struct Writing<'a>(&'a Pace, Instant);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.writing_since.store(0, Ordering::Relaxed);
        let now = Instant::now();
        self.0
            .own
            .lock()
            .expect("pace lock poisoned")
            .observe(now - self.1, now);
    }
}

impl Pace {
    /// Marks the start of one synced log write (writes are one at a time).
    pub(crate) fn writing(&self) -> Writing<'_> {
        let now = Instant::now();
        let since = u64::try_from((now - self.base).as_nanos()).unwrap_or(u64::MAX - 1) + 1;
        self.writing_since.store(since, Ordering::Relaxed);
        Writing(self, now)
    }

    /// Whether this node, leading, is about to hand its office over: it proposes nothing
    /// more.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts or ends a drain (see [`Pace::draining`]).
    pub(super) fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Leading: `follower` acknowledged an append of blocks `took` after it was sent.
    pub(crate) fn acknowledged(&self, follower: u64, took: Duration) {
        let now = Instant::now();
        self.followers
            .lock()
            .expect("pace lock poisoned")
            .entry(follower)
            .or_default()
            .observe(took, now);
    }

    /// This node's pace: the moving average of its synced log writes, or the age of the
    /// write under way when that is longer (a write that takes a second counts before it
    /// ends).
    pub fn own(&self, now: Instant) -> Option<Duration> {
        let average = self.own.lock().expect("pace lock poisoned").seconds;
        let since = self.writing_since.load(Ordering::Relaxed);
        let under_way = (since != 0)
            .then(|| now.saturating_duration_since(self.base + Duration::from_nanos(since - 1)));
        let average = average.map(Duration::from_secs_f64);
        match (average, under_way) {
            (Some(a), Some(u)) => Some(a.max(u)),
            (a, u) => a.or(u),
        }
    }

    /// The leader's last score: its pace over its fastest caught-up follower's (0 when
    /// not leading or not known).
    pub fn score(&self) -> f64 {
        self.score_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }

    fn set_score(&self, score: Option<f64>) {
        let milli = score.map_or(0, |s| (s * 1000.0).clamp(0.0, 1e15) as u64);
        self.score_milli.store(milli, Ordering::Relaxed);
    }

    /// The follower with the shortest acknowledgement time heard within `fresh`, among
    /// `caught_up`, with that time.
    pub(super) fn fastest(
        &self,
        caught_up: &[u64],
        fresh: Duration,
        now: Instant,
    ) -> Option<(u64, f64)> {
        let followers = self.followers.lock().expect("pace lock poisoned");
        caught_up
            .iter()
            .filter_map(|id| {
                let a = followers.get(id)?;
                let recent = a
                    .last
                    .is_some_and(|t| now.saturating_duration_since(t) < fresh);
                Some((*id, a.seconds.filter(|_| recent)?))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn forget_followers(&self) {
        self.followers.lock().expect("pace lock poisoned").clear();
    }
}

/// When a leader counts as slow, and how long it then stays out of office.
#[derive(Clone, Copy, Debug)]
pub struct StepAside {
    /// The leader's pace must be at least this many times its fastest follower's.
    pub ratio: f64,
    /// ... and at least this long.
    pub floor: Duration,
    /// ... for this long without a break, before it hands its office over.
    pub sustained: Duration,
    /// After stepping aside, its pace must stay under the bound this long before it may
    /// stand for election again.
    pub hold: Duration,
    /// It stands anyway once nothing has committed for this long (no leader, or one that
    /// cannot commit, as while a hand-over fails): a slow leader beats none.
    pub stalled: Duration,
}

impl StepAside {
    /// The defaults for a cluster whose longest election timeout is `election_max`.
    pub fn for_election_max(election_max: Duration) -> StepAside {
        StepAside {
            ratio: 3.0,
            floor: Duration::from_millis(5),
            sustained: Duration::from_secs(1),
            hold: Duration::from_secs(30),
            stalled: 2 * election_max,
        }
    }
}

/// How often the leader compares its pace with its followers'.
const TICK: Duration = Duration::from_millis(100);
/// The longest a leader waits, proposing nothing, for the follower it hands over to to
/// hold its whole log; then it proposes again, and may try later.
const DRAIN_MAX: Duration = Duration::from_secs(3);

/// What the watcher knows between ticks.
#[derive(Default)]
struct Watch {
    /// Leading: since when this node has been clearly the slowest.
    slow_since: Option<Instant>,
    /// Stepped aside: the bound its pace must stay under, and since when it has.
    held: Option<(Duration, Option<Instant>)>,
    /// The last commit index seen, and since when it has not moved.
    committed: (Option<u64>, Option<Instant>),
    /// The term in which this node last led (its followers' times belong to it).
    led_in: Option<u64>,
    /// Proposing nothing until the follower it hands over to holds its whole log: that
    /// follower, since when, and the bound this node's pace was judged by.
    drain: Option<(u64, Instant, Duration)>,
}

/// Compares this node's pace with its followers' while it leads, and hands its office to
/// the fastest caught-up follower when it has been clearly the slowest for
/// [`StepAside::sustained`]; then holds back from elections until its own pace has stayed
/// under the bound for [`StepAside::hold`] (or nothing has committed for
/// [`StepAside::stalled`]). Runs until `stopped` resolves.
///
/// `names` names the validators by node id, for the log.
pub async fn step_aside(
    raft: OrdoRaft,
    pace: std::sync::Arc<Pace>,
    (rule, names): (StepAside, BTreeMap<u64, String>),
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut w = Watch::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stopped => return,
        }
        tick(&raft, &pace, (&rule, &names), &mut w, Instant::now()).await;
    }
}

async fn tick(
    raft: &OrdoRaft,
    pace: &Pace,
    (rule, names): (&StepAside, &BTreeMap<u64, String>),
    w: &mut Watch,
    now: Instant,
) {
    let st = status(raft);
    if w.committed.0 != st.committed || w.committed.1.is_none() {
        w.committed = (st.committed, Some(now));
    }
    if st.role != Role::Leader {
        pace.set_score(None);
        pace.set_draining(false);
        w.drain = None;
        w.slow_since = None;
        if w.led_in.take().is_some() {
            pace.forget_followers();
        }
        hold_back(raft, pace, rule, w, now);
        return;
    }
    if w.led_in != Some(st.term) {
        // Times from an earlier office are not this one's.
        pace.forget_followers();
        w.led_in = Some(st.term);
    }
    if let Some((target, since, bound)) = w.drain {
        hand_over(raft, pace, (target, since, bound), (st.term, names), w, now).await;
        return;
    }
    let Some(own) = pace.own(now) else {
        pace.set_score(None);
        return;
    };
    let caught_up = caught_up_followers(raft);
    let Some((target, fastest)) = pace.fastest(&caught_up, FRESH, now) else {
        pace.set_score(None);
        w.slow_since = None;
        return;
    };
    let score = own.as_secs_f64() / fastest.max(1e-6);
    pace.set_score(Some(score));
    let slow = own >= rule.floor && score >= rule.ratio;
    if !slow {
        w.slow_since = None;
        return;
    }
    let since = *w.slow_since.get_or_insert(now);
    if now.saturating_duration_since(since) < rule.sustained {
        return;
    }
    let bound = Duration::from_secs_f64(rule.floor.as_secs_f64().max(rule.ratio * fastest));
    let to = names
        .get(&target)
        .map_or_else(|| target.to_string(), Clone::clone);
    tracing::warn!(
        pace_ms = own.as_millis() as u64,
        fastest_follower_ms = (fastest * 1000.0) as u64,
        %to,
        term = st.term,
        "this node's disk is the slowest: its synced log writes take {score:.0}× as long as its fastest follower's acknowledgements; handing leadership to {to} once it holds every entry"
    );
    // The follower can only be elected with every entry this node has: propose nothing
    // until it holds them.
    pace.set_draining(true);
    w.slow_since = None;
    w.drain = Some((target, now, bound));
}

/// Draining: hands the office to `target` once its log holds this node's last entry, or
/// gives up after [`DRAIN_MAX`].
async fn hand_over(
    raft: &OrdoRaft,
    pace: &Pace,
    (target, since, bound): (u64, Instant, Duration),
    (term, names): (u64, &BTreeMap<u64, String>),
    w: &mut Watch,
    now: Instant,
) {
    let to = names
        .get(&target)
        .map_or_else(|| target.to_string(), Clone::clone);
    let (last, matched) = log_of(raft, target);
    if matched < last {
        if now.saturating_duration_since(since) >= DRAIN_MAX {
            tracing::warn!(
                %to,
                term,
                "{to} did not catch up with this node's log within {DRAIN_MAX:?}; leading on"
            );
            pace.set_draining(false);
            w.drain = None;
        }
        return;
    }
    tracing::warn!(%to, term, "handing leadership to {to}");
    pace.set_draining(false);
    w.drain = None;
    if let Err(e) = raft.trigger().transfer_leader(target).await {
        tracing::error!(error = %e, "cannot hand leadership over");
        return;
    }
    pace.step_asides.fetch_add(1, Ordering::Relaxed);
    pace.holding_back.store(true, Ordering::Relaxed);
    raft.runtime_config().elect(false);
    w.held = Some((bound, None));
}

/// Stepped aside: stands for election again once its pace has stayed under the bound for
/// the hold, or when nothing has committed for too long.
fn hold_back(raft: &OrdoRaft, pace: &Pace, rule: &StepAside, w: &mut Watch, now: Instant) {
    let Some((bound, fast_since)) = w.held.as_mut() else {
        return;
    };
    let fast = pace.own(now).is_none_or(|p| p < *bound);
    *fast_since = if fast {
        Some(fast_since.unwrap_or(now))
    } else {
        None
    };
    let recovered = fast_since.is_some_and(|t| now.saturating_duration_since(t) >= rule.hold);
    let stalled = w
        .committed
        .1
        .is_some_and(|t| now.saturating_duration_since(t) >= rule.stalled);
    if !(recovered || stalled) {
        return;
    }
    if recovered {
        tracing::info!(
            "this node's disk has been fast for {:?}: it stands for election again",
            rule.hold
        );
    } else {
        tracing::warn!(
            "nothing committed for {:?}: this node stands for election again although its disk is slow",
            rule.stalled
        );
    }
    raft.runtime_config().elect(true);
    pace.holding_back.store(false, Ordering::Relaxed);
    w.held = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_under_way_counts_once_it_outlasts_the_average() {
        let pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(pace.own(t0), None);
        {
            let _w = pace.writing();
            let later = Instant::now() + Duration::from_millis(500);
            assert!(
                pace.own(later)
                    .is_some_and(|p| p >= Duration::from_millis(499))
            );
        }
        let after = pace.own(Instant::now()).expect("one sample");
        assert!(after < Duration::from_millis(100), "{after:?}");
    }

    #[test]
    fn three_slow_writes_carry_the_pace_most_of_the_way() {
        let pace = Pace::default();
        let now = Instant::now();
        for _ in 0..50 {
            pace.own
                .lock()
                .expect("lock")
                .observe(Duration::from_millis(2), now);
        }
        for _ in 0..3 {
            pace.own
                .lock()
                .expect("lock")
                .observe(Duration::from_millis(100), now);
        }
        let p = pace.own(now).expect("samples");
        assert!(
            p > Duration::from_millis(60) && p < Duration::from_millis(100),
            "{p:?}"
        );
    }

    #[test]
    fn the_fastest_follower_is_chosen_among_those_caught_up_and_heard_lately() {
        let pace = Pace::default();
        let now = Instant::now();
        pace.acknowledged(1, Duration::from_millis(30));
        pace.acknowledged(2, Duration::from_millis(5));
        pace.acknowledged(3, Duration::from_millis(1));
        // 3 is not caught up; 4 was never heard.
        let got = pace.fastest(&[1, 2, 4], FRESH, now).expect("a follower");
        assert_eq!(got.0, 2);
        assert!((got.1 - 0.005).abs() < 1e-9);
        // Nothing heard within the window: nobody.
        let later = now + 2 * FRESH;
        assert_eq!(pace.fastest(&[1, 2], FRESH, later), None);
    }
}
