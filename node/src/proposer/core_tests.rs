//! Every rule of the proposer (ARCHITECTURE.md, invariant 16), one test each, with time
//! and state as arguments.

use ordo_crypto::Hash;

use super::*;

const TIMEOUT: Duration = Duration::from_millis(20);
const IDLE: Duration = Duration::from_millis(5);

fn tip(height: u64) -> ChainTip {
    ChainTip {
        height,
        hash: Hash([height as u8; 32]),
        timestamp_ms: height,
        certified: height.saturating_sub(1),
    }
}

/// A settled leader in term 2 at ledger height 10, with `pool` pending.
fn inputs(now: Instant, pool: PoolView) -> (Inputs, PoolView) {
    let inputs = Inputs {
        leading: true,
        term: 2,
        last_log_index: 12,
        applied_index: 12,
        ledger_tip: tip(10),
        cleaned_height: 10,
        now,
    };
    (inputs, pool)
}

impl Core {
    /// [`Core::decide`] with the view given.
    fn decide_on(&mut self, (inputs, pool): &(Inputs, PoolView)) -> Action {
        self.decide(inputs, || *pool)
    }
}

fn full() -> PoolView {
    PoolView {
        full: true,
        oldest: Some(Instant::now()),
    }
}

fn core(in_flight_max: usize) -> Core {
    Core::new(in_flight_max, TIMEOUT, IDLE)
}

fn proposes_on(action: Action) -> ChainTip {
    match action {
        Action::Propose { parent, .. } => parent,
        Action::Wait { .. } => panic!("expected a proposal, got {action:?}"),
    }
}

fn waits(action: Action) -> Instant {
    match action {
        Action::Wait { until } => until,
        Action::Propose { .. } => panic!("expected a wait, got {action:?}"),
    }
}

#[test]
fn a_node_that_does_not_lead_proposes_nothing() {
    let mut c = core(4);
    let now = Instant::now();
    let mut i = inputs(now, full());
    i.0.leading = false;
    assert_eq!(waits(c.decide_on(&i)), now + POLL);
    i.0.leading = true;
    assert_eq!(proposes_on(c.decide_on(&i)), tip(10));
}

#[test]
fn a_new_leader_waits_until_earlier_terms_are_applied_and_cleaned() {
    let mut c = core(4);
    let now = Instant::now();
    let mut i = inputs(now, full());
    // Its log ends at 12 when it starts leading; only 11 are applied.
    i.0.applied_index = 11;
    waits(c.decide_on(&i));
    // Applied, but the applied-tip follower has not cleaned the last block yet.
    i.0.applied_index = 12;
    i.0.cleaned_height = 9;
    waits(c.decide_on(&i));
    i.0.cleaned_height = 10;
    assert_eq!(proposes_on(c.decide_on(&i)), tip(10));
    // Settled stays settled within the term, while its own blocks apply.
    i.0.last_log_index = 20;
    c.proposed(2, tip(11));
    assert_eq!(proposes_on(c.decide_on(&i)), tip(11));
    // A new term starts over: the log's end then must be applied first.
    c.finished(true);
    i.0.term = 3;
    i.0.last_log_index = 21;
    i.0.applied_index = 20;
    waits(c.decide_on(&i));
    i.0.applied_index = 21;
    assert_eq!(proposes_on(c.decide_on(&i)), tip(10));
}

#[test]
fn each_block_builds_on_the_last_in_flight_else_on_the_ledger_tip() {
    let mut c = core(4);
    let i = inputs(Instant::now(), full());
    assert_eq!(proposes_on(c.decide_on(&i)), tip(10));
    c.proposed(2, tip(11));
    assert_eq!(proposes_on(c.decide_on(&i)), tip(11));
    c.proposed(2, tip(12));
    assert_eq!(proposes_on(c.decide_on(&i)), tip(12));
    c.finished(true);
    c.finished(true);
    // Nothing in flight: the ledger's tip (which the applied blocks have moved).
    let mut later = i;
    later.0.ledger_tip = tip(12);
    later.0.cleaned_height = 12;
    assert_eq!(proposes_on(c.decide_on(&later)), tip(12));
}

#[test]
fn a_block_of_an_earlier_term_is_not_a_parent() {
    let mut c = core(4);
    let mut i = inputs(Instant::now(), full());
    assert_eq!(proposes_on(c.decide_on(&i)), tip(10));
    c.proposed(2, tip(11));
    // The term moved on (re-elected) while the block was in flight.
    i.0.term = 3;
    i.0.last_log_index = 13;
    i.0.applied_index = 13;
    assert_eq!(proposes_on(c.decide_on(&i)), tip(10));
}

#[test]
fn at_most_in_flight_max_blocks_are_in_flight() {
    let mut c = core(2);
    let now = Instant::now();
    let i = inputs(now, full());
    proposes_on(c.decide_on(&i));
    c.proposed(2, tip(11));
    proposes_on(c.decide_on(&i));
    c.proposed(2, tip(12));
    assert_eq!(c.in_flight(), 2);
    assert_eq!(
        waits(c.decide_on(&i)),
        now + POLL,
        "full: only a returning block helps"
    );
    c.finished(true);
    assert_eq!(proposes_on(c.decide_on(&i)), tip(12));
}

#[test]
fn after_a_failed_block_the_proposer_drains_then_starts_from_the_ledger_tip() {
    let mut c = core(4);
    let i = inputs(Instant::now(), full());
    for h in 11..=13 {
        proposes_on(c.decide_on(&i));
        c.proposed(2, tip(h));
    }
    // Block 11 did not commit: 12 and 13, built on it, will not either.
    c.finished(false);
    waits(c.decide_on(&i));
    c.finished(false);
    waits(c.decide_on(&i));
    c.finished(false);
    assert_eq!(
        proposes_on(c.decide_on(&i)),
        tip(10),
        "again from the ledger tip"
    );
}

#[test]
fn a_full_pool_is_cut_at_once() {
    let mut c = core(4);
    let now = Instant::now();
    let pool = PoolView {
        full: true,
        oldest: Some(now),
    };
    proposes_on(c.decide_on(&inputs(now, pool)));
}

#[test]
fn with_nothing_in_flight_the_oldest_transaction_waits_only_the_idle_wait() {
    let mut c = core(4);
    let t0 = Instant::now();
    let pool = PoolView {
        full: false,
        oldest: Some(t0),
    };
    assert_eq!(waits(c.decide_on(&inputs(t0, pool))), t0 + IDLE);
    assert_eq!(
        waits(c.decide_on(&inputs(t0 + Duration::from_millis(4), pool))),
        t0 + IDLE
    );
    proposes_on(c.decide_on(&inputs(t0 + IDLE, pool)));
    // The idle wait is never longer than the batch timeout.
    let mut slow = Core::new(4, TIMEOUT, Duration::from_secs(1));
    assert_eq!(slow.batch_wait(), TIMEOUT);
    proposes_on(slow.decide_on(&inputs(t0 + TIMEOUT, pool)));
}

#[test]
fn with_blocks_in_flight_the_oldest_transaction_waits_the_batch_timeout() {
    let mut c = core(4);
    let t0 = Instant::now();
    proposes_on(c.decide_on(&inputs(t0, full())));
    c.proposed(2, tip(11));
    let pool = PoolView {
        full: false,
        oldest: Some(t0),
    };
    assert_eq!(c.batch_wait(), TIMEOUT);
    // Not due at the idle wait; the wait is capped by the poll interval.
    assert_eq!(
        waits(c.decide_on(&inputs(t0 + IDLE, pool))),
        (t0 + TIMEOUT).min(t0 + IDLE + POLL)
    );
    assert_eq!(
        proposes_on(c.decide_on(&inputs(t0 + TIMEOUT, pool))),
        tip(11)
    );
}

#[test]
fn an_empty_pool_is_never_cut() {
    let mut c = core(4);
    let now = Instant::now();
    assert_eq!(
        waits(c.decide_on(&inputs(now, PoolView::default()))),
        now + POLL
    );
}

#[test]
fn the_pool_is_read_only_when_a_block_could_be_proposed() {
    let unread = || -> PoolView { panic!("the pool was read without room for a block") };
    let (mut i, _) = inputs(Instant::now(), full());
    let mut c = core(2);
    // Not leading.
    i.leading = false;
    waits(c.decide(&i, unread));
    // At the in-flight bound.
    i.leading = true;
    proposes_on(c.decide(&i, full));
    c.proposed(2, tip(11));
    proposes_on(c.decide(&i, full));
    c.proposed(2, tip(12));
    waits(c.decide(&i, unread));
    // Draining after a failed block.
    c.finished(false);
    waits(c.decide(&i, unread));
}
