//! The validators' time: each validator's clock offset from the others, estimated from
//! clock readings, and the median of them (`docs/design/chain-time.md`).
//!
//! Every [`PROBE_EVERY`] a validator asks each other validator for its wall clock
//! (`Kind::Clock`) and times the round trip: the peer read its clock about half-way, so
//! its offset is `reading − (sent + trip / 2)`, right within half the trip. Of a peer's
//! last [`SAMPLES`] readings (none older than [`STALE`]), the one with the shortest trip
//! counts: queueing only lengthens a trip, and skews its estimate by up to half of it.
//!
//! The validators' time is this node's clock plus the median of the offsets of every
//! validator it has a fresh reading of, itself counted at 0; with an even count, the
//! middle value nearer this node's own clock. So one clock wrong by any amount among
//! three moves nobody's validators' time. Leaders stamp blocks with it; followers refuse a
//! block stamped more than the genesis's `block_time_ahead_max_ms` ahead of it
//! (`consensus::raft_net`). This node's own offset from it is a metric
//! (`ordo_clock_offset_seconds`), and `/ready` fails and a warning repeats while it is
//! over [`OFFSET_MAX`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ordo_crypto::PublicKey;
use ordo_ledger::{Block, VerifyError, check_block_time};
use ordo_wire::{ClockReading, decode_internal, encode_internal};

use crate::network::{Frame, InboundRequest, Kind, Network};

/// How often a validator reads each other validator's clock.
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A reading whose answer takes longer than this is dropped.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Readings kept per peer.
const SAMPLES: usize = 8;
/// A reading older than this no longer counts.
const STALE: Duration = Duration::from_secs(30);
/// A node whose clock is further than this from the validators' time is not ready, and
/// says so every [`WARN_EVERY`]: hosts kept by NTP are within milliseconds of each other.
pub const OFFSET_MAX: Duration = Duration::from_secs(1);
/// How often the warning about this node's clock repeats.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One reading of a peer's clock.
#[derive(Clone, Copy, Debug)]
struct Reading {
    /// When its answer came (this node's monotonic clock).
    at: Instant,
    /// The peer's wall clock minus this node's monotonic milliseconds since
    /// [`Clock::base`], at the trip's midpoint: a value that a jump of this node's own wall
    /// clock leaves alone.
    value_ms: i64,
    /// The round trip.
    trip: Duration,
}

/// A reading that disagrees with the peer's newest by more than the two trips allow (and
/// this much more) is from before a jump of the peer's clock, and no longer counts.
const CONSISTENT_MS: i64 = 5;

/// The clock readings of the other validators, and what follows from them.
#[derive(Debug)]
pub struct Clock {
    /// Readings are kept against this node's monotonic clock from here.
    base: Instant,
    peers: Mutex<HashMap<PublicKey, VecDeque<Reading>>>,
    /// This node's clock minus the validators' time, in milliseconds, as last computed.
    offset_ms: AtomicI64,
    /// Whether `offset_ms` rests on at least one peer's reading.
    known: AtomicBool,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            base: Instant::now(),
            peers: Mutex::default(),
            offset_ms: AtomicI64::new(0),
            known: AtomicBool::new(false),
        }
    }
}

impl Clock {
    /// A clock with no readings yet: the validators' time is this node's own.
    pub fn new() -> Clock {
        Clock::default()
    }

    fn mono_ms(&self, at: Instant) -> i64 {
        i64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(i64::MAX)
    }

    /// Records that `peer`'s clock read `unix_ms` during a round trip from `sent` to
    /// `received`.
    pub(crate) fn record(&self, peer: PublicKey, unix_ms: u64, sent: Instant, received: Instant) {
        let trip = received.saturating_duration_since(sent);
        let midway = self.mono_ms(sent + trip / 2);
        let value_ms = i64::try_from(unix_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(midway);
        self.record_value(peer, value_ms, trip, received);
    }

    fn record_value(&self, peer: PublicKey, value_ms: i64, trip: Duration, at: Instant) {
        let mut peers = self.peers.lock().expect("clock lock poisoned");
        let readings = peers.entry(peer).or_default();
        if readings.len() == SAMPLES {
            readings.pop_front();
        }
        readings.push_back(Reading { at, value_ms, trip });
    }

    /// Each peer's clock (as a [`Reading::value_ms`]) from its fresh readings: of those
    /// that agree with its newest, the one with the shortest trip.
    fn peer_values(&self, now: Instant) -> Vec<i64> {
        let peers = self.peers.lock().expect("clock lock poisoned");
        peers
            .values()
            .filter_map(|readings| {
                let fresh = || {
                    readings
                        .iter()
                        .filter(|r| now.saturating_duration_since(r.at) < STALE)
                };
                let newest = fresh().max_by_key(|r| r.at)?;
                fresh()
                    .filter(|r| {
                        let allowed = (r.trip + newest.trip).as_millis() as i64 / 2 + CONSISTENT_MS;
                        (r.value_ms - newest.value_ms).abs() <= allowed
                    })
                    .min_by_key(|r| r.trip)
                    .map(|r| r.value_ms)
            })
            .collect()
    }

    /// The validators' time at `now` (milliseconds since the Unix epoch), given this
    /// node's wall clock `own_unix_ms` then; records this node's offset from it.
    fn at(&self, now: Instant, own_unix_ms: u64) -> u64 {
        let mono = self.mono_ms(now);
        let own = i64::try_from(own_unix_ms).unwrap_or(i64::MAX) - mono;
        let mut values = self.peer_values(now);
        let known = !values.is_empty();
        values.push(own);
        let median = median_nearest(&mut values, own);
        self.offset_ms.store(own - median, Ordering::Relaxed);
        self.known.store(known, Ordering::Relaxed);
        u64::try_from(mono.saturating_add(median)).unwrap_or(0)
    }

    /// The validators' time now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.at(Instant::now(), system_ms())
    }

    /// This node's clock minus the validators' time, in milliseconds; `None` until a peer's
    /// clock has been read.
    pub fn offset_ms(&self) -> Option<i64> {
        self.now_ms();
        self.known
            .load(Ordering::Relaxed)
            .then(|| self.offset_ms.load(Ordering::Relaxed))
    }

    /// Why this node's clock is not to be trusted, if it is not: further than
    /// [`OFFSET_MAX`] from the validators' time.
    pub fn problem(&self) -> Option<String> {
        let offset = self.offset_ms()?;
        (offset.unsigned_abs() > OFFSET_MAX.as_millis() as u64).then(|| {
            format!(
                "this node's clock is {:+.3} s off the validators' median clock (more than {} s): set its time right (NTP)",
                offset as f64 / 1000.0,
                OFFSET_MAX.as_secs()
            )
        })
    }
}

/// The bound on block time a follower checks before appending (`docs/format.md` §4).
#[derive(Clone, Debug)]
pub struct TimeBound {
    clock: Arc<Clock>,
    ahead_max_ms: u64,
}

impl TimeBound {
    /// Blocks at most `ahead_max_ms` ahead of `clock`'s validators' time.
    pub fn new(clock: Arc<Clock>, ahead_max_ms: u64) -> TimeBound {
        TimeBound {
            clock,
            ahead_max_ms,
        }
    }

    /// Whether `block` is stamped within the bound.
    ///
    /// # Errors
    /// [`VerifyError::TimestampAhead`].
    pub fn check(&self, block: &Block) -> Result<(), VerifyError> {
        check_block_time(block, self.clock.now_ms(), self.ahead_max_ms)
    }
}

/// The median of `values` (not empty); with an even count, the middle value nearer
/// `pivot` (this node's own clock: no majority stands against it).
fn median_nearest(values: &mut [i64], pivot: i64) -> i64 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        return values[n / 2];
    }
    let (low, high) = (values[n / 2 - 1], values[n / 2]);
    if (pivot - low).abs() <= (high - pivot).abs() {
        low
    } else {
        high
    }
}

/// This host's wall clock, in milliseconds since the Unix epoch.
pub(crate) fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Answers a clock reading (`Kind::Clock`): this node's wall clock now.
pub(crate) fn serve(req: InboundRequest) {
    if !req.frame.body.is_empty() {
        return req.respond(Frame {
            kind: Kind::Error,
            body: b"a clock request has an empty body".to_vec(),
        });
    }
    let reading = ClockReading {
        unix_ms: system_ms(),
    };
    match encode_internal(&reading) {
        Ok(body) => req.respond(Frame {
            kind: Kind::Clock,
            body,
        }),
        Err(e) => tracing::error!(error = %e, "cannot encode a clock reading"),
    }
}

/// Reads every validator in `others`' clock every [`PROBE_EVERY`] into `clock`, and warns
/// every [`WARN_EVERY`] while this node's clock is off, until `stopped` resolves.
pub(crate) async fn probe(
    network: Network,
    others: Vec<PublicKey>,
    clock: Arc<Clock>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(PROBE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned: Option<Instant> = None;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = &mut stopped => return,
        }
        let reads = others.iter().map(|peer| read(&network, *peer));
        for (peer, reading) in others.iter().zip(futures::future::join_all(reads).await) {
            match reading {
                Ok((unix_ms, sent, received)) => clock.record(*peer, unix_ms, sent, received),
                Err(e) => tracing::trace!(%peer, error = %e, "no clock reading"),
            }
        }
        match clock.problem() {
            Some(problem) if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) => {
                tracing::warn!("{problem}");
                warned = Some(Instant::now());
            }
            Some(_) => {}
            None => warned = None,
        }
    }
}

/// Reads `peer`'s clock: what it read, and when the request went and the answer came.
async fn read(network: &Network, peer: PublicKey) -> Result<(u64, Instant, Instant), String> {
    let frame = Frame {
        kind: Kind::Clock,
        body: Vec::new(),
    };
    let sent = Instant::now();
    let answer = tokio::time::timeout(PROBE_TIMEOUT, network.request(&peer, frame))
        .await
        .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let received = Instant::now();
    if answer.kind != Kind::Clock {
        return Err(String::from_utf8_lossy(&answer.body).into_owned());
    }
    let reading: ClockReading =
        decode_internal(&answer.body, "clock reading").map_err(|e| e.to_string())?;
    Ok((reading.unix_ms, sent, received))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn the_median_is_nearer_this_nodes_clock_when_the_count_is_even() {
        assert_eq!(median_nearest(&mut [0], 0), 0);
        assert_eq!(median_nearest(&mut [0, HOUR, 5], 0), 5);
        assert_eq!(median_nearest(&mut [0, -HOUR, -7], 0), -7);
        assert_eq!(median_nearest(&mut [0, HOUR], 0), 0);
        assert_eq!(median_nearest(&mut [HOUR, 0], HOUR), HOUR);
        assert_eq!(median_nearest(&mut [-HOUR, -HOUR + 10, 3, 0], 3), 0);
    }

    /// A clock whose node's wall clock reads `own_unix_ms` at `now`, with readings of two
    /// peers `a` and `b` ahead of it by the given milliseconds.
    fn clock_with(now: Instant, own_unix_ms: u64, a: i64, b: i64) -> Clock {
        let c = Clock::new();
        let own = own_unix_ms as i64 - c.mono_ms(now);
        let ms = Duration::from_millis;
        c.record_value(PublicKey([1; 32]), own + a, ms(4), now);
        c.record_value(PublicKey([2; 32]), own + b, ms(2), now);
        c
    }

    #[test]
    fn one_wrong_clock_among_three_moves_nobody() {
        let now = Instant::now();
        let real = 1_700_000_000_000u64;
        // This node's clock is an hour fast: both peers read an hour behind it.
        let fast = clock_with(now, real + HOUR as u64, -HOUR, -HOUR - 10);
        assert_eq!(fast.at(now, real + HOUR as u64), real);
        assert_eq!(fast.offset_ms.load(Ordering::Relaxed), HOUR);
        // A good node with one peer an hour fast: it keeps its own time.
        let good = clock_with(now, real, HOUR, 3);
        assert_eq!(good.at(now, real), real + 3);
        // When this node's own clock jumps, the validators' time does not.
        assert_eq!(good.at(now, real - HOUR as u64), real + 3);
        assert_eq!(good.offset_ms.load(Ordering::Relaxed), -HOUR - 3);
    }

    #[test]
    fn a_problem_is_named_with_the_offset() {
        let now = Instant::now();
        let c = clock_with(now, system_ms(), -HOUR, -HOUR);
        let problem = c.problem().expect("a problem");
        assert!(problem.contains("+3600.0"), "{problem}");
        assert!(Clock::new().problem().is_none());
        assert_eq!(Clock::new().offset_ms(), None);
    }

    #[test]
    fn the_shortest_trip_counts_stale_readings_do_not_nor_those_before_a_jump() {
        let a = PublicKey([1; 32]);
        let now = Instant::now();
        let ms = Duration::from_millis;
        let c = Clock::new();
        c.record_value(a, 400, ms(800), now);
        c.record_value(a, 10, ms(2), now);
        c.record_value(a, 90, ms(150), now + ms(1));
        assert_eq!(c.peer_values(now + ms(1)), vec![10]);
        assert_eq!(c.peer_values(now + STALE + ms(1)), Vec::<i64>::new());
        // The peer's clock jumps an hour: its earlier readings stop counting at once.
        c.record_value(a, HOUR, ms(30), now + ms(2));
        assert_eq!(c.peer_values(now + ms(2)), vec![HOUR]);
        for _ in 0..SAMPLES {
            c.record_value(a, 50, ms(20), now + ms(3));
        }
        assert_eq!(c.peer_values(now + ms(3)), vec![50]);
    }
}
