//! The checker: judges a run from its history and the chains left on disk.
//!
//! Each check is a property a user relies on — nothing acknowledged is lost or moved, no
//! fork, no duplicate, a read never goes back — plus the liveness figures: the longest
//! stretch without a commit while a majority was up and connected, and how long the first
//! commit took after the heal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use ordo_crypto::{Hash, PublicKey};
use ordo_ledger::TxId;
use serde::Serialize;

use crate::chains::BlockSummary;
use crate::history::{Answer, Event, Place, secs};

/// One check's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// The first violations, or a count of what was checked.
    pub detail: String,
}

/// The figures of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// Faults started, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Distinct transactions submitted.
    pub submitted: u64,
    /// Distinct transactions a validator acknowledged as committed.
    pub acknowledged: u64,
    /// Acknowledged transactions missing from the final chain.
    pub lost: u64,
    /// Acknowledged transactions found elsewhere than where they were acknowledged.
    pub moved: u64,
    /// Transactions that appear more than once in the final chain.
    pub duplicated: u64,
    /// Blocks in the final chain.
    pub blocks: u64,
    /// Transactions in the final chain.
    pub chain_txs: u64,
    /// Status and block reads made.
    pub reads: u64,
    /// Longest stretch without a commit while a majority was up and connected, seconds.
    pub longest_stall_s: f64,
    /// When that stretch began, seconds into the run.
    pub longest_stall_at_s: f64,
    /// From the heal to the probe's commit, seconds (`None`: it never committed).
    pub heal_to_commit_s: Option<f64>,
    /// Validators restarted after the load because their ledger asked for a salvage.
    pub salvage_restarts: u64,
    /// Most a block's timestamp was ahead of the moment a client heard its transaction
    /// committed, seconds (0 when never ahead).
    pub block_time_ahead_s: f64,
    /// Most a block's timestamp was behind the moment its transaction was first sent,
    /// seconds (0 when never behind).
    pub block_time_behind_s: f64,
    /// Each slow-disk fault's acknowledgement rates.
    pub slow_disks: Vec<SlowDisk>,
}

/// One slow-disk fault: the acknowledgement rate (commits acknowledged to clients that
/// waited for them) before and while it held.
#[derive(Clone, Debug, Serialize)]
pub struct SlowDisk {
    /// When it began, seconds into the run.
    pub at_s: f64,
    /// The slowed validator.
    pub node: usize,
    /// Whether it led.
    pub leader: bool,
    /// The delay of each of its fsyncs, milliseconds.
    pub delay_ms: u64,
    /// Acknowledgements per second through the other validators while no fault was in
    /// force (the run's quiet time).
    pub quiet_per_s: f64,
    /// Acknowledgements per second through the other validators while this fault held.
    pub during_per_s: f64,
    /// Acknowledgements per second through every validator, in the quiet time.
    pub all_quiet_per_s: f64,
    /// Acknowledgements per second through every validator, while this fault held.
    pub all_during_per_s: f64,
    /// Seconds from its start to the end of the first second-long window in which
    /// acknowledgements through the other validators were back to [`RECOVERED`] of their
    /// quiet rate (1.0: they never fell below it).
    pub recovered_s: Option<f64>,
    /// Leader faults: seconds from its start until another validator said it led.
    pub moved_s: Option<f64>,
}

/// The share of the quiet acknowledgement rate that counts as recovered.
const RECOVERED: f64 = 0.8;

/// What the checker is given.
pub struct Run<'a> {
    /// Every event, in any order.
    pub events: &'a [Event],
    /// Each validator's chain, or why it could not be read.
    pub chains: &'a [Result<Vec<BlockSummary>, String>],
    /// Each validator's `ordo audit` verdict.
    pub audits: &'a [Result<(), String>],
    /// The genesis hash (block 1's parent).
    pub genesis_hash: Hash,
    /// The wall clock when the run began (events' times count from it), in milliseconds
    /// since the Unix epoch.
    pub start_unix_ms: u64,
    /// The genesis's `block_time_ahead_max_ms`.
    pub time_ahead_max: Duration,
    /// From the heal to the probe's commit.
    pub heal_to_commit: Option<Duration>,
    /// When the workload stopped.
    pub end: Duration,
    /// The longest acceptable stretch without a commit while a majority is up.
    pub stall_max: Duration,
    /// The longest acceptable time from the heal to the probe's commit.
    pub heal_max: Duration,
    /// How soon after a leader's slowdown (100 ms or more per fsync) it must have been
    /// replaced and the acknowledgements back to [`RECOVERED`] of the quiet rate.
    pub slow_leader_max: Duration,
}

/// At most this many violations are named per check.
const NAMED: usize = 5;

/// Collects violations: the first few named, all counted.
#[derive(Default)]
struct Violations {
    count: usize,
    named: Vec<String>,
}

impl Violations {
    fn add(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.named.len() < NAMED {
            self.named.push(what());
        }
    }

    fn check(self, name: &'static str, checked: impl FnOnce() -> String) -> Check {
        if self.count == 0 {
            return Check {
                name,
                ok: true,
                detail: checked(),
            };
        }
        let more = self.count - self.named.len();
        let mut detail = self.named.join("; ");
        if more > 0 {
            detail.push_str(&format!("; and {more} more"));
        }
        Check {
            name,
            ok: false,
            detail,
        }
    }
}

/// Judges `run`: every check, and the figures.
pub fn check(run: &Run<'_>) -> (Vec<Check>, Figures) {
    let mut checks = Vec::new();
    let mut fig = Figures::default();
    let mut events = run.events.to_vec();
    events.sort_by_key(event_time);

    checks.push(crashes(&events));
    checks.push(full_disk_stops(&events));
    checks.push(audits(run.audits));
    let chain = reference_chain(run.chains, &mut checks);
    checks.push(links(chain, run.genesis_hash));
    checks.push(terms(chain));
    let (place_of, dup) = placements(chain);
    fig.duplicated = dup.count as u64;
    checks.push(dup.check("no transaction twice in the chain", || {
        format!("{} transactions, each once", place_of.len())
    }));
    checks.push(acknowledged(&events, chain, &place_of, &mut fig));
    checks.push(reads(&events, chain, &place_of, &mut fig));
    checks.push(block_times(
        &events,
        chain,
        &place_of,
        (run.start_unix_ms, run.time_ahead_max),
        &mut fig,
    ));
    checks.push(invalid_answers(&events));
    checks.push(converged(&events));
    checks.push(healed(&events, &mut fig));
    fig.slow_disks = slow_disks(&events);
    if !fig.slow_disks.is_empty() {
        checks.push(slow_leaders_replaced(&fig.slow_disks, run.slow_leader_max));
        checks.push(slow_followers_cost_nothing(&fig.slow_disks));
    }

    let (stall, at) = longest_stall(&events, run.end);
    fig.longest_stall_s = secs(stall);
    fig.longest_stall_at_s = secs(at);
    checks.push(Check {
        name: "no long stall while a majority is up and connected",
        ok: stall <= run.stall_max,
        detail: format!(
            "longest {:.2} s, from {:.2} s into the run (at most {:.1} s)",
            stall.as_secs_f64(),
            at.as_secs_f64(),
            run.stall_max.as_secs_f64()
        ),
    });
    fig.heal_to_commit_s = run.heal_to_commit.map(secs);
    checks.push(Check {
        name: "a probe commits soon after the heal",
        ok: run.heal_to_commit.is_some_and(|d| d <= run.heal_max),
        detail: match run.heal_to_commit {
            Some(d) => format!(
                "{:.2} s (at most {:.0} s)",
                d.as_secs_f64(),
                run.heal_max.as_secs_f64()
            ),
            None => "the probe never committed".into(),
        },
    });

    for e in &events {
        if let Event::FaultStart { kind, .. } = e {
            *fig.faults.entry(kind).or_default() += 1;
        }
    }
    fig.blocks = chain.len() as u64;
    fig.chain_txs = chain.iter().map(|b| b.ids.len() as u64).sum();
    (checks, fig)
}

fn event_time(e: &Event) -> Duration {
    match e {
        Event::Submit { answered, .. } => *answered,
        Event::Read { at, .. }
        | Event::BlockRead { at, .. }
        | Event::Tip { at, .. }
        | Event::FaultStart { at, .. }
        | Event::DiskSlowed { at, .. }
        | Event::FaultEnd { at, .. }
        | Event::Crashed { at, .. }
        | Event::StoppedOnFullDisk { at, .. }
        | Event::Majority { at, .. }
        | Event::Healed { at }
        | Event::Diverged { at, .. }
        | Event::SalvageRestart { at, .. }
        | Event::Unhealed { at, .. } => *at,
    }
}

/// When clients that waited were told their transactions committed, through any
/// validator but `except`.
fn acknowledgements(events: &[Event], except: Option<usize>) -> Vec<Duration> {
    let mut at: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            Event::Submit {
                answered,
                wait: true,
                txs,
                node,
                ..
            } if Some(*node) != except => Some((*answered, txs)),
            _ => None,
        })
        .flat_map(|(answered, txs)| {
            txs.iter()
                .filter(|(_, a)| matches!(a, Answer::Committed(_)))
                .map(move |_| answered)
        })
        .collect();
    at.sort_unstable();
    at
}

/// How many of the sorted `times` fall in `[from, to)`.
fn count_in(times: &[Duration], from: Duration, to: Duration) -> usize {
    times.partition_point(|t| *t < to) - times.partition_point(|t| *t < from)
}

/// `n` over `d`, per second, to a tenth.
fn rate(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        return 0.0;
    }
    (n as f64 / d.as_secs_f64() * 10.0).round() / 10.0
}

/// The stretches between the first acknowledgement and `end` when no fault was in force
/// (nor in the second after one ended: a restarted node catching up).
fn quiet_time(events: &[Event], first: Duration, end: Duration) -> Vec<(Duration, Duration)> {
    let mut busy: Vec<(Duration, Duration)> = Vec::new();
    let mut open: Option<Duration> = None;
    for e in events {
        match e {
            Event::FaultStart { at, .. } => open = Some(*at),
            Event::FaultEnd { at, .. } => {
                if let Some(start) = open.take() {
                    busy.push((start, *at + Duration::from_secs(1)));
                }
            }
            _ => {}
        }
    }
    let mut quiet = Vec::new();
    let mut from = first;
    for &(start, stop) in busy.iter().chain([&(end, end)]) {
        let to = start.min(end);
        if to > from {
            quiet.push((from, to));
        }
        from = from.max(stop);
    }
    quiet
}

/// Each slow-disk fault's figures (`events` sorted by time). The rates it is judged by
/// leave out the clients of the slowed validator: a validator acknowledges a commit once
/// it has applied it, so those clients wait for its disk whoever leads.
fn slow_disks(events: &[Event]) -> Vec<SlowDisk> {
    let all = acknowledgements(events, None);
    let (Some(&first), Some(end)) = (
        all.first(),
        events.iter().find_map(|e| match e {
            Event::Healed { at } => Some(*at),
            _ => None,
        }),
    ) else {
        return Vec::new();
    };
    let quiet = quiet_time(events, first, end);
    let quiet_len: Duration = quiet.iter().map(|(a, b)| *b - *a).sum();
    let mut out = Vec::new();
    for (k, e) in events.iter().enumerate() {
        let Event::DiskSlowed {
            at,
            node,
            leader,
            delay_ms,
        } = e
        else {
            continue;
        };
        let acks = acknowledgements(events, Some(*node));
        let quiet_acks: usize = quiet.iter().map(|(a, b)| count_in(&acks, *a, *b)).sum();
        let quiet_per_s = rate(quiet_acks, quiet_len);
        let stop = events[k..]
            .iter()
            .find_map(|e| match e {
                Event::FaultEnd { at, .. } => Some(*at),
                _ => None,
            })
            .unwrap_or(end);
        let held = stop.saturating_sub(*at);
        let second = Duration::from_secs(1);
        let step = Duration::from_millis(100);
        let mut t = *at;
        let mut recovered_s = None;
        while t + second <= stop {
            if count_in(&acks, t, t + second) as f64 >= RECOVERED * quiet_per_s {
                recovered_s = Some(secs(t + second - *at));
                break;
            }
            t += step;
        }
        let moved_s = events[k..].iter().find_map(|e| match e {
            Event::Tip {
                at: seen,
                node: other,
                leader: true,
                ..
            } if *leader && other != node && seen <= &stop => Some(secs(*seen - *at)),
            _ => None,
        });
        out.push(SlowDisk {
            at_s: secs(*at),
            node: *node,
            leader: *leader,
            delay_ms: *delay_ms,
            quiet_per_s,
            during_per_s: rate(count_in(&acks, *at, stop), held),
            all_quiet_per_s: rate(
                quiet.iter().map(|(a, b)| count_in(&all, *a, *b)).sum(),
                quiet_len,
            ),
            all_during_per_s: rate(count_in(&all, *at, stop), held),
            recovered_s,
            moved_s,
        });
    }
    out
}

/// A leader whose fsyncs take 100 ms or more longer hands leadership over, and the
/// acknowledgements come back, within `max_after`.
fn slow_leaders_replaced(slow: &[SlowDisk], max_after: Duration) -> Check {
    let mut v = Violations::default();
    let mut n = 0;
    for s in slow.iter().filter(|s| s.leader && s.delay_ms >= 100) {
        n += 1;
        let max = max_after.as_secs_f64();
        let ok = s.moved_s.is_some() && s.recovered_s.is_some_and(|r| r <= max);
        if !ok {
            v.add(|| {
                format!(
                    "validator-{} slowed by {} ms at {:.1} s: leadership moved {}, acknowledgements back to {:.0} % of {:.1}/s {}",
                    s.node,
                    s.delay_ms,
                    s.at_s,
                    s.moved_s.map_or("never".into(), |m| format!("after {m:.2} s")),
                    RECOVERED * 100.0,
                    s.quiet_per_s,
                    s.recovered_s.map_or("never".into(), |r| format!("after {r:.2} s")),
                )
            });
        }
    }
    v.check(
        "a leader with a slow disk hands over and acknowledgements through the others recover within 5 s",
        || format!("{n} slowed leaders (100 ms or more), each replaced in time"),
    )
}

/// A follower with a slow disk does not slow the cluster down.
fn slow_followers_cost_nothing(slow: &[SlowDisk]) -> Check {
    let mut v = Violations::default();
    let mut n = 0;
    for s in slow.iter().filter(|s| !s.leader) {
        n += 1;
        if s.during_per_s < RECOVERED * s.quiet_per_s {
            v.add(|| {
                format!(
                    "validator-{} slowed by {} ms at {:.1} s: {:.1} acknowledgements/s, quiet {:.1}/s",
                    s.node, s.delay_ms, s.at_s, s.during_per_s, s.quiet_per_s
                )
            });
        }
    }
    v.check(
        "a follower with a slow disk does not slow the others",
        || format!("{n} slowed followers, acknowledgements through the others at 80 % or more of their quiet rate"),
    )
}

fn crashes(events: &[Event]) -> Check {
    let mut v = Violations::default();
    for e in events {
        if let Event::Crashed { at, node, detail } = e {
            v.add(|| {
                format!(
                    "validator-{node} exited at {:.2} s: {detail}",
                    at.as_secs_f64()
                )
            });
        }
    }
    v.check("no validator exits on its own", || "none did".into())
}

/// A validator may stop when its disk is full (it cannot persist, so it must not go on),
/// but it must say why: its last log lines name the lack of space.
fn full_disk_stops(events: &[Event]) -> Check {
    let mut v = Violations::default();
    let mut stops = 0;
    for e in events {
        if let Event::StoppedOnFullDisk { at, node, detail } = e {
            stops += 1;
            let lower = detail.to_lowercase();
            if !lower.contains("no space left") && !lower.contains("disk is full") {
                v.add(|| {
                    format!(
                        "validator-{node} stopped at {:.2} s without naming the full disk: {detail}",
                        at.as_secs_f64()
                    )
                });
            }
        }
    }
    v.check("a validator stopped by a full disk says so", || {
        format!("{stops} stopped on a full disk, each saying so")
    })
}

/// Once the load stops, every validator reaches the same tip (a validator that falls
/// behind for good would otherwise go unseen while the others have a majority).
fn converged(events: &[Event]) -> Check {
    let mut v = Violations::default();
    for e in events {
        if let Event::Diverged { detail, .. } = e {
            v.add(|| detail.clone());
        }
    }
    v.check(
        "every validator reaches the same tip after the load",
        || "all did".into(),
    )
}

/// Every validator whose ledger the nemesis damaged re-checked its chain and was healthy
/// by the end, and none still asked for a salvage.
fn healed(events: &[Event], fig: &mut Figures) -> Check {
    let mut v = Violations::default();
    for e in events {
        match e {
            Event::SalvageRestart { .. } => fig.salvage_restarts += 1,
            Event::Unhealed { node, detail, .. } => v.add(|| format!("validator-{node}: {detail}")),
            _ => {}
        }
    }
    let restarts = fig.salvage_restarts;
    v.check("damaged validators heal before the end", || {
        format!("all did; {restarts} restarted for a salvage")
    })
}

fn audits(audits: &[Result<(), String>]) -> Check {
    let mut v = Violations::default();
    for (i, a) in audits.iter().enumerate() {
        if let Err(e) = a {
            v.add(|| format!("validator-{i}: {e}"));
        }
    }
    v.check("ordo audit passes on every data directory", || {
        format!("{} audited", audits.len())
    })
}

/// The chain every validator holds, or the longest one read when they differ (the checks
/// on it still run; a failed check here says they differ).
fn reference_chain<'a>(
    chains: &'a [Result<Vec<BlockSummary>, String>],
    checks: &mut Vec<Check>,
) -> &'a [BlockSummary] {
    let mut v = Violations::default();
    let read: Vec<(usize, &Vec<BlockSummary>)> = chains
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            Ok(c) => Some((i, c)),
            Err(e) => {
                v.add(|| format!("validator-{i}'s chain does not read: {e}"));
                None
            }
        })
        .collect();
    let longest = read
        .iter()
        .max_by_key(|(_, c)| c.len())
        .map(|(_, c)| c.as_slice());
    let reference = longest.unwrap_or(&[]);
    for (i, c) in &read {
        let differs = c
            .iter()
            .zip(reference)
            .find(|(a, b)| a.hash != b.hash)
            .map(|(a, _)| a.height);
        if let Some(h) = differs {
            v.add(|| format!("validator-{i} forks at height {h}"));
        } else if c.len() != reference.len() {
            v.add(|| {
                format!(
                    "validator-{i} ends at height {} of {}",
                    c.len(),
                    reference.len()
                )
            });
        }
    }
    checks.push(v.check("every validator holds the same chain", || {
        format!("{} validators at height {}", read.len(), reference.len())
    }));
    reference
}

fn links(chain: &[BlockSummary], genesis_hash: Hash) -> Check {
    let mut v = Violations::default();
    let mut parent = genesis_hash;
    for (i, b) in chain.iter().enumerate() {
        if b.height != i as u64 + 1 {
            v.add(|| format!("block {} stored at height {}", b.height, i + 1));
        }
        if b.prev_hash != parent {
            v.add(|| format!("block {} does not link to its parent", b.height));
        }
        parent = b.hash;
    }
    v.check(
        "heights without gaps, each block linked to its parent",
        || format!("{} blocks", chain.len()),
    )
}

fn terms(chain: &[BlockSummary]) -> Check {
    let mut v = Violations::default();
    let mut proposers: HashMap<u64, PublicKey> = HashMap::new();
    for w in chain.windows(2) {
        if w[1].term < w[0].term {
            v.add(|| {
                format!(
                    "term falls from {} to {} at height {}",
                    w[0].term, w[1].term, w[1].height
                )
            });
        }
    }
    for b in chain {
        let first = *proposers.entry(b.term).or_insert(b.proposer);
        if first != b.proposer {
            v.add(|| format!("term {} has two proposers (height {})", b.term, b.height));
        }
    }
    v.check("terms never decrease, one proposer per term", || {
        format!("{} terms", proposers.len())
    })
}

/// Where each transaction of the chain is, and the duplicates.
fn placements(chain: &[BlockSummary]) -> (HashMap<TxId, Place>, Violations) {
    let mut at = HashMap::new();
    let mut dup = Violations::default();
    for b in chain {
        for (index, id) in b.ids.iter().enumerate() {
            let place = Place {
                height: b.height,
                index: index as u32,
                block_hash: b.hash,
            };
            if let Some(first) = at.insert(*id, place) {
                dup.add(|| format!("{id} at heights {} and {}", first.height, b.height));
                at.insert(*id, first);
            }
        }
    }
    (at, dup)
}

fn acknowledged(
    events: &[Event],
    chain: &[BlockSummary],
    place_of: &HashMap<TxId, Place>,
    fig: &mut Figures,
) -> Check {
    let mut submitted = HashSet::new();
    let mut acked: HashMap<TxId, (usize, Place)> = HashMap::new();
    let mut v = Violations::default();
    for e in events {
        let Event::Submit { node, txs, .. } = e else {
            continue;
        };
        for (id, answer) in txs {
            submitted.insert(*id);
            if let Answer::Committed(p) = answer
                && let Some((first_node, first)) = acked.insert(*id, (*node, *p))
                && first != *p
            {
                v.add(|| format!("{id} acknowledged at {} by validator-{first_node} and at {} by validator-{node}", show(&first), show(p)));
            }
        }
    }
    for (id, (node, p)) in &acked {
        match place_of.get(id) {
            None => {
                fig.lost += 1;
                v.add(|| {
                    format!(
                        "{id}, acknowledged by validator-{node} at {}, is not in the chain",
                        show(p)
                    )
                });
            }
            Some(found) if found != p || !in_chain(chain, p, id) => {
                fig.moved += 1;
                v.add(|| {
                    format!(
                        "{id}, acknowledged by validator-{node} at {}, is at {}",
                        show(p),
                        show(found)
                    )
                });
            }
            Some(_) => {}
        }
    }
    fig.submitted = submitted.len() as u64;
    fig.acknowledged = acked.len() as u64;
    v.check(
        "every acknowledged commit is in the chain, once, where acknowledged",
        || {
            format!(
                "{} acknowledged of {} submitted",
                acked.len(),
                submitted.len()
            )
        },
    )
}

/// Block time stays within the bound of real time: a block holding a transaction first
/// sent at `s` and acknowledged at `a` (this host's clock, which no fault skews) was made
/// between the two, so its timestamp is in `[s − bound, a + bound]`.
fn block_times(
    events: &[Event],
    chain: &[BlockSummary],
    place_of: &HashMap<TxId, Place>,
    (start_unix_ms, bound): (u64, Duration),
    fig: &mut Figures,
) -> Check {
    let mut sent: HashMap<TxId, Duration> = HashMap::new();
    let mut acked: HashMap<TxId, Duration> = HashMap::new();
    for e in events {
        let Event::Submit {
            sent: s,
            answered,
            txs,
            ..
        } = e
        else {
            continue;
        };
        for (id, answer) in txs {
            let first = sent.entry(*id).or_insert(*s);
            *first = (*first).min(*s);
            if matches!(answer, Answer::Committed(_)) {
                let first = acked.entry(*id).or_insert(*answered);
                *first = (*first).min(*answered);
            }
        }
    }
    let wall = |d: Duration| i128::from(start_unix_ms) + d.as_millis() as i128;
    let bound_ms = bound.as_millis() as i128;
    let (mut ahead_max, mut behind_max) = (0i128, 0i128);
    let mut v = Violations::default();
    let mut checked = 0;
    for (id, first_sent) in &sent {
        let Some(block) = place_of
            .get(id)
            .and_then(|p| chain.get(usize::try_from(p.height).ok()?.checked_sub(1)?))
        else {
            continue;
        };
        checked += 1;
        let ts = i128::from(block.timestamp_ms);
        let behind = wall(*first_sent) - ts;
        behind_max = behind_max.max(behind);
        if behind > bound_ms {
            v.add(|| {
                format!(
                    "block {} is stamped {:.3} s before {id} was first sent",
                    block.height,
                    behind as f64 / 1000.0
                )
            });
        }
        if let Some(a) = acked.get(id) {
            let ahead = ts - wall(*a);
            ahead_max = ahead_max.max(ahead);
            if ahead > bound_ms {
                v.add(|| {
                    format!(
                        "block {} is stamped {:.3} s after {id} was acknowledged",
                        block.height,
                        ahead as f64 / 1000.0
                    )
                });
            }
        }
    }
    let (ahead_s, behind_s) = (
        ahead_max.max(0) as f64 / 1000.0,
        behind_max.max(0) as f64 / 1000.0,
    );
    (fig.block_time_ahead_s, fig.block_time_behind_s) = (ahead_s, behind_s);
    v.check("block time stays within the bound of real time", || {
        format!(
            "{checked} transactions' blocks: at most {ahead_s:.3} s ahead of their acknowledgement, {behind_s:.3} s behind their sending (bound {:.0} s)",
            bound.as_secs_f64()
        )
    })
}

fn in_chain(chain: &[BlockSummary], p: &Place, id: &TxId) -> bool {
    let Some(b) = usize::try_from(p.height)
        .ok()
        .and_then(|h| chain.get(h.checked_sub(1)?))
    else {
        return false;
    };
    b.hash == p.block_hash && b.ids.get(p.index as usize) == Some(id)
}

/// A committed read agrees with the chain; a validator that said committed keeps saying
/// so; a block read agrees with the chain.
fn reads(
    events: &[Event],
    chain: &[BlockSummary],
    place_of: &HashMap<TxId, Place>,
    fig: &mut Figures,
) -> Check {
    let mut v = Violations::default();
    let mut seen: HashMap<(usize, TxId), Duration> = HashMap::new();
    let mut count = 0u64;
    for e in events {
        match e {
            Event::Submit {
                node,
                answered,
                txs,
                ..
            } => {
                for (id, a) in txs {
                    if matches!(a, Answer::Committed(_)) {
                        seen.entry((*node, *id)).or_insert(*answered);
                    }
                }
            }
            Event::Read {
                at,
                node,
                id,
                answer,
            } => {
                count += 1;
                match answer {
                    Answer::Committed(p) => {
                        if place_of.get(id) != Some(p) {
                            v.add(|| {
                                format!(
                                    "validator-{node} read {id} at {}, not where the chain has it",
                                    show(p)
                                )
                            });
                        }
                        seen.entry((*node, *id)).or_insert(*at);
                    }
                    Answer::Pending | Answer::Unknown => {
                        if let Some(first) = seen.get(&(*node, *id)) {
                            v.add(|| format!(
                                "validator-{node} said {id} committed at {:.2} s, then {answer:?} at {:.2} s",
                                first.as_secs_f64(),
                                at.as_secs_f64()
                            ));
                        }
                    }
                    _ => {}
                }
            }
            Event::BlockRead {
                at,
                node,
                height,
                hash,
            } => {
                count += 1;
                let stored = usize::try_from(*height)
                    .ok()
                    .and_then(|h| chain.get(h.checked_sub(1)?));
                if stored.map(|b| b.hash) != Some(*hash) {
                    v.add(|| {
                        format!(
                            "validator-{node} served another block {height} at {:.2} s",
                            at.as_secs_f64()
                        )
                    });
                }
            }
            _ => {}
        }
    }
    fig.reads = count;
    v.check("reads agree with the chain and never go back", || {
        format!("{count} reads")
    })
}

fn invalid_answers(events: &[Event]) -> Check {
    let mut v = Violations::default();
    for e in events {
        let answers: Vec<(usize, &Answer)> = match e {
            Event::Submit { node, txs, .. } => txs.iter().map(|(_, a)| (*node, a)).collect(),
            Event::Read { node, answer, .. } => vec![(*node, answer)],
            _ => Vec::new(),
        };
        for (node, a) in answers {
            if let Answer::Invalid { why } = a {
                v.add(|| format!("validator-{node}: {why}"));
            }
        }
    }
    v.check("every answer keeps to the API (proofs hold)", || {
        "all did".into()
    })
}

/// The longest stretch, after the first commit and before `end`, in which a majority was
/// up and connected and nothing committed; and when it began.
fn longest_stall(events: &[Event], end: Duration) -> (Duration, Duration) {
    let mut commits = Vec::new();
    let mut tip = 0;
    let mut available: Vec<(Duration, bool)> = Vec::new();
    for e in events {
        match e {
            Event::Tip { at, height, .. } if *height > tip => {
                tip = *height;
                commits.push(*at);
            }
            Event::Submit { answered, txs, .. }
                if txs.iter().any(|(_, a)| matches!(a, Answer::Committed(_))) =>
            {
                commits.push(*answered);
            }
            Event::Majority { at, available: a } => available.push((*at, *a)),
            _ => {}
        }
    }
    commits.sort();
    let Some(&first) = commits.first() else {
        return (end, Duration::ZERO);
    };
    // The intervals with a majority, clipped to [first commit, end].
    let mut intervals = Vec::new();
    let mut since = None;
    for (at, a) in available.iter().copied().chain([(end, false)]) {
        match (since, a) {
            (None, true) => since = Some(at),
            (Some(s), false) => {
                let (s, e) = (s.max(first), at.min(end));
                if s < e {
                    intervals.push((s, e));
                }
                since = None;
            }
            _ => {}
        }
    }
    let mut longest = (Duration::ZERO, Duration::ZERO);
    for (s, e) in intervals {
        let mut prev = s;
        for &c in commits.iter().filter(|&&c| s <= c && c <= e) {
            if c - prev > longest.0 {
                longest = (c - prev, prev);
            }
            prev = c;
        }
        if e - prev > longest.0 {
            longest = (e - prev, prev);
        }
    }
    longest
}

fn show(p: &Place) -> String {
    format!("height {} index {}", p.height, p.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TxId {
        Hash([n; 32])
    }

    fn chain(blocks: &[&[u8]], genesis: Hash) -> Vec<BlockSummary> {
        let key = ordo_crypto::Keypair::from_secret(&[1; 32]).public();
        let mut parent = genesis;
        blocks
            .iter()
            .enumerate()
            .map(|(i, txs)| {
                let hash = Hash([200 + i as u8; 32]);
                let b = BlockSummary {
                    height: i as u64 + 1,
                    hash,
                    prev_hash: parent,
                    term: 1,
                    proposer: key,
                    timestamp_ms: 1000 * i as u64,
                    ids: txs.iter().map(|&n| id(n)).collect(),
                };
                parent = hash;
                b
            })
            .collect()
    }

    fn place(c: &[BlockSummary], height: u64, index: u32) -> Place {
        Place {
            height,
            index,
            block_hash: c[height as usize - 1].hash,
        }
    }

    fn ack(at: u64, node: usize, tx: u8, p: Place) -> Event {
        Event::Submit {
            sent: Duration::from_millis(at),
            answered: Duration::from_millis(at),
            node,
            wait: true,
            txs: vec![(id(tx), Answer::Committed(p))],
        }
    }

    fn judge(events: &[Event], chains: &[Vec<BlockSummary>]) -> (Vec<Check>, Figures) {
        let chains: Vec<_> = chains.iter().cloned().map(Ok).collect();
        let audits = vec![Ok(()); chains.len()];
        check(&Run {
            events,
            chains: &chains,
            audits: &audits,
            genesis_hash: Hash([9; 32]),
            start_unix_ms: 0,
            time_ahead_max: Duration::from_secs(10),
            heal_to_commit: Some(Duration::from_secs(1)),
            end: Duration::from_secs(10),
            stall_max: Duration::from_secs(3),
            heal_max: Duration::from_secs(10),
            slow_leader_max: Duration::from_secs(5),
        })
    }

    #[test]
    fn a_block_stamped_beyond_the_bound_of_real_time_fails() {
        let g = Hash([9; 32]);
        let mut c = chain(&[&[1], &[2], &[3]], g);
        let p = |c: &[BlockSummary], h: u64| place(c, h, 0);
        let events = |c: &[BlockSummary], third: u64| {
            let mut e = steady();
            e.extend([
                ack(500, 0, 1, p(c, 1)),
                ack(1500, 1, 2, p(c, 2)),
                ack(third, 2, 3, p(c, 3)),
            ]);
            e
        };
        // Blocks at 0, 1 and 2 s: within a second of their transactions.
        let (checks, fig) = judge(&events(&c, 2500), &[c.clone()]);
        assert!(failed(&checks).is_empty(), "{checks:?}");
        assert!(fig.block_time_behind_s <= 0.5, "{fig:?}");
        // An hour ahead, then 15 s behind (a time that stood still).
        c[1].timestamp_ms = 3_600_000;
        c[2].timestamp_ms = 1_000;
        let (checks, fig) = judge(&events(&c, 16_000), &[c.clone()]);
        let bad = checks
            .iter()
            .find(|k| k.name == "block time stays within the bound of real time")
            .expect("the check");
        assert!(!bad.ok);
        assert!(
            bad.detail.contains("block 2 is stamped 3598.500 s after"),
            "{}",
            bad.detail
        );
        assert!(
            bad.detail.contains("block 3 is stamped 15.000 s before"),
            "{}",
            bad.detail
        );
        assert_eq!(fig.block_time_ahead_s, 3598.5);
    }

    fn failed(checks: &[Check]) -> Vec<&'static str> {
        checks.iter().filter(|c| !c.ok).map(|c| c.name).collect()
    }

    fn tip(at_ms: u64, height: u64) -> Event {
        Event::Tip {
            at: Duration::from_millis(at_ms),
            node: 0,
            height,
            term: 1,
            leader: true,
        }
    }

    /// Commits every second from 0 to 10 s, a majority throughout.
    fn steady() -> Vec<Event> {
        let mut e = vec![Event::Majority {
            at: Duration::ZERO,
            available: true,
        }];
        e.extend((0..=10).map(|s| tip(s * 1000, s + 1)));
        e
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let g = Hash([9; 32]);
        let c = chain(&[&[1, 2], &[3]], g);
        let mut events = steady();
        events.push(ack(100, 0, 1, place(&c, 1, 0)));
        events.push(ack(200, 1, 3, place(&c, 2, 0)));
        let (checks, fig) = judge(&events, &[c.clone(), c.clone(), c]);
        assert!(failed(&checks).is_empty(), "{checks:?}");
        assert_eq!((fig.acknowledged, fig.lost, fig.duplicated), (2, 0, 0));
        assert_eq!((fig.blocks, fig.chain_txs), (2, 3));
    }

    #[test]
    fn a_lost_or_moved_acknowledgement_fails() {
        let g = Hash([9; 32]);
        let c = chain(&[&[1, 2], &[3]], g);
        let mut events = steady();
        events.push(ack(100, 0, 7, place(&c, 1, 0)));
        events.push(ack(100, 0, 2, place(&c, 1, 0)));
        let (checks, fig) = judge(&events, &[c.clone(), c]);
        assert_eq!(
            failed(&checks),
            ["every acknowledged commit is in the chain, once, where acknowledged"]
        );
        assert_eq!((fig.lost, fig.moved), (1, 1));
    }

    #[test]
    fn forks_duplicates_gaps_and_term_faults_fail() {
        let g = Hash([9; 32]);
        let a = chain(&[&[1], &[2]], g);
        let mut b = a.clone();
        b[1].hash = Hash([77; 32]);
        let (checks, _) = judge(&steady(), &[a.clone(), b]);
        assert_eq!(failed(&checks), ["every validator holds the same chain"]);

        let short = a[..1].to_vec();
        let (checks, _) = judge(&steady(), &[a.clone(), short]);
        assert_eq!(failed(&checks), ["every validator holds the same chain"]);

        let dup = chain(&[&[1], &[1]], g);
        let (checks, fig) = judge(&steady(), &[dup]);
        assert_eq!(failed(&checks), ["no transaction twice in the chain"]);
        assert_eq!(fig.duplicated, 1);

        let mut gap = a.clone();
        gap[1].prev_hash = Hash([5; 32]);
        let (checks, _) = judge(&steady(), &[gap]);
        assert_eq!(
            failed(&checks),
            ["heights without gaps, each block linked to its parent"]
        );

        let mut terms = a.clone();
        terms[0].term = 3;
        let (checks, _) = judge(&steady(), &[terms.clone()]);
        assert_eq!(
            failed(&checks),
            ["terms never decrease, one proposer per term"]
        );
        terms[0].term = 1;
        terms[1].proposer = ordo_crypto::Keypair::from_secret(&[2; 32]).public();
        let (checks, _) = judge(&steady(), &[terms]);
        assert_eq!(
            failed(&checks),
            ["terms never decrease, one proposer per term"]
        );
    }

    #[test]
    fn a_read_that_goes_back_or_disagrees_fails() {
        let g = Hash([9; 32]);
        let c = chain(&[&[1, 2]], g);
        let read = |at: u64, node: usize, answer: Answer| Event::Read {
            at: Duration::from_millis(at),
            node,
            id: id(1),
            answer,
        };
        let good = place(&c, 1, 0);
        let mut events = steady();
        events.push(read(100, 1, Answer::Unknown));
        events.push(read(200, 1, Answer::Committed(good)));
        events.push(read(300, 2, Answer::Pending));
        let (checks, _) = judge(&events, std::slice::from_ref(&c));
        assert!(
            failed(&checks).is_empty(),
            "a lagging node may not know it yet"
        );

        events.push(read(400, 1, Answer::Pending));
        let (checks, _) = judge(&events, std::slice::from_ref(&c));
        assert_eq!(
            failed(&checks),
            ["reads agree with the chain and never go back"]
        );

        let mut events = steady();
        events.push(read(100, 0, Answer::Committed(place(&c, 1, 1))));
        let (checks, _) = judge(&events, std::slice::from_ref(&c));
        assert_eq!(
            failed(&checks),
            ["reads agree with the chain and never go back"]
        );

        let mut events = steady();
        events.push(Event::BlockRead {
            at: Duration::from_millis(5),
            node: 2,
            height: 1,
            hash: Hash([1; 32]),
        });
        let (checks, _) = judge(&events, &[c]);
        assert_eq!(
            failed(&checks),
            ["reads agree with the chain and never go back"]
        );
    }

    #[test]
    fn a_stall_counts_only_while_a_majority_is_up() {
        let at = Duration::from_millis;
        let majority = |ms: u64, available: bool| Event::Majority {
            at: at(ms),
            available,
        };
        // Commits at 1 s and 9 s; no majority from 2 s to 7 s: the stall is 7 → 9 s.
        let events = vec![
            majority(0, true),
            tip(1000, 1),
            majority(2000, false),
            majority(7000, true),
            tip(9000, 2),
        ];
        assert_eq!(longest_stall(&events, at(9500)), (at(2000), at(7000)));
        // With a majority throughout, it is 1 → 9 s.
        let events = [majority(0, true), tip(1000, 1), tip(9000, 2)];
        assert_eq!(longest_stall(&events, at(9500)), (at(8000), at(1000)));
        // Before the first commit nothing counts; after the last, until the end.
        let events = [majority(0, true), tip(5000, 1), tip(5500, 2)];
        assert_eq!(longest_stall(&events, at(9500)), (at(4000), at(5500)));

        let mut slow = steady();
        slow.retain(|e| !matches!(e, Event::Tip { at, .. } if (3000..=7000).contains(&(at.as_millis() as u64))));
        let (checks, fig) = judge(&slow, &[chain(&[&[1]], Hash([9; 32]))]);
        assert_eq!(
            failed(&checks),
            ["no long stall while a majority is up and connected"]
        );
        assert_eq!(fig.longest_stall_s, 6.0);
    }

    #[test]
    fn a_validator_left_behind_or_unhealed_fails_and_salvage_restarts_are_counted() {
        let c = chain(&[&[1]], Hash([9; 32]));
        let mut events = steady();
        events.push(Event::SalvageRestart {
            at: Duration::from_secs(11),
            node: 1,
        });
        let (checks, fig) = judge(&events, std::slice::from_ref(&c));
        assert!(failed(&checks).is_empty(), "{checks:?}");
        assert_eq!(fig.salvage_restarts, 1);

        events.push(Event::Unhealed {
            at: Duration::from_secs(12),
            node: 1,
            detail: "health: storage_damaged".into(),
        });
        let (checks, _) = judge(&events, std::slice::from_ref(&c));
        assert_eq!(failed(&checks), ["damaged validators heal before the end"]);

        events.push(Event::Diverged {
            at: Duration::from_secs(13),
            detail: "validator-0 at 7, validator-1 at 9".into(),
        });
        let (checks, _) = judge(&events, &[c]);
        assert_eq!(
            failed(&checks),
            [
                "every validator reaches the same tip after the load",
                "damaged validators heal before the end"
            ]
        );
    }

    #[test]
    fn crashes_failed_audits_bad_proofs_and_a_missing_probe_fail() {
        let g = Hash([9; 32]);
        let c = chain(&[&[1]], g);
        let mut events = steady();
        events.push(Event::Crashed {
            at: Duration::from_secs(1),
            node: 1,
            detail: "exit status: 101".into(),
        });
        events.push(Event::StoppedOnFullDisk {
            at: Duration::from_secs(1),
            node: 2,
            detail: "exit status: 1; log: consensus stopped".into(),
        });
        events.push(Event::StoppedOnFullDisk {
            at: Duration::from_secs(1),
            node: 0,
            detail: "exit status: 1; log: IO error: No space left on device".into(),
        });
        events.push(Event::Read {
            at: Duration::from_secs(2),
            node: 0,
            id: id(1),
            answer: Answer::Invalid {
                why: "proof".into(),
            },
        });
        let chains = vec![Ok(c.clone()), Err("no ledger".to_owned())];
        let audits = vec![Ok(()), Err("FAILED at 3".to_owned())];
        let (checks, _) = check(&Run {
            events: &events,
            chains: &chains,
            audits: &audits,
            genesis_hash: g,
            start_unix_ms: 0,
            time_ahead_max: Duration::from_secs(10),
            heal_to_commit: None,
            end: Duration::from_secs(10),
            stall_max: Duration::from_secs(3),
            heal_max: Duration::from_secs(10),
            slow_leader_max: Duration::from_secs(5),
        });
        assert_eq!(
            failed(&checks),
            [
                "no validator exits on its own",
                "a validator stopped by a full disk says so",
                "ordo audit passes on every data directory",
                "every validator holds the same chain",
                "every answer keeps to the API (proofs hold)",
                "a probe commits soon after the heal",
            ]
        );
    }
}
