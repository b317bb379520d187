//! Mempool admission, bounds, cutting rules and requeueing, with time as an argument.

use std::collections::HashSet;
use std::time::Duration;

use ordo_crypto::{Domain, Hash, Keypair};
use ordo_ledger::{Limits, Transaction};

use super::*;

const CHAIN: &str = "mempool-test";

fn policy(block_txs_max: u32, block_bytes_max: u64) -> Arc<Policy> {
    Arc::new(Policy {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(Domain::Genesis, CHAIN.as_bytes()),
        validators: ordo_ledger::ValidatorSet::from([Keypair::from_label("v").public()]),
        clients: HashSet::from([Keypair::from_label("c").public()]),
        limits: Limits {
            block_txs_max,
            block_bytes_max,
            tx_bytes_max: 4096,
            tx_lifetime_blocks: 100,
        },
        certify_lag: ordo_ledger::CERTIFY_LAG_DEFAULT,
    })
}

fn tx_with(nonce: u64, change: impl FnOnce(&mut Transaction)) -> SignedTransaction {
    let key = Keypair::from_label("c");
    let mut tx = Transaction {
        chain_id: CHAIN.into(),
        sender: key.public(),
        nonce,
        expires_at: 50,
        payload: vec![1; 100],
    };
    change(&mut tx);
    let signature = key.sign(tx.id().as_bytes());
    SignedTransaction { tx, signature }
}

fn tx(nonce: u64) -> SignedTransaction {
    tx_with(nonce, |_| {})
}

fn pool(limits: MempoolLimits) -> Mempool {
    Mempool::new(policy(10, 1 << 20), limits)
}

fn nothing_committed(_: &TxId) -> Option<u64> {
    None
}

#[test]
fn admits_valid_transactions_and_names_each_rejection() {
    let mut p = pool(MempoolLimits::default());
    let now = Instant::now();
    let mut forged = tx(5);
    forged.signature.0[3] ^= 1;
    let committed_tx = tx(7);
    let committed_id = committed_tx.id();
    let batch = vec![
        tx(1),
        tx_with(2, |t| t.chain_id = "other".into()),
        tx_with(3, |t| t.sender = Keypair::from_label("stranger").public()),
        tx_with(4, |t| t.expires_at = 9),
        forged,
        tx(1),
        committed_tx,
        tx_with(8, |t| t.payload = vec![0; 5000]),
        tx_with(9, |t| t.expires_at = 200),
        tx(10),
    ];
    let results = p.admit(batch, 10, |id| (*id == committed_id).then_some(3), now);
    let kinds: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(_) => "ok".to_owned(),
            Err(AdmitError::Invalid { error, .. }) => format!("{error:?}")
                .split([' ', '(', '{'])
                .next()
                .unwrap_or("")
                .to_owned(),
            Err(AdmitError::AlreadyPending(_)) => "pending".to_owned(),
            Err(AdmitError::AlreadyCommitted { height, .. }) => format!("committed@{height}"),
            Err(AdmitError::Busy { .. }) => "busy".to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ok",
            "WrongChain",
            "UnknownSender",
            "Expired",
            "BadSignature",
            "pending",
            "committed@3",
            "TooLarge",
            "ExpiryTooFar",
            "ok"
        ]
    );
    assert_eq!(p.len(), 2);
    // Submitting an admitted transaction again is refused while it is pending.
    assert!(matches!(
        p.admit(vec![tx(1)], 10, nothing_committed, now)[0],
        Err(AdmitError::AlreadyPending(_))
    ));
}

#[test]
fn a_full_pool_refuses_with_busy_and_does_not_grow() {
    let now = Instant::now();
    let mut by_count = pool(MempoolLimits {
        txs_max: 3,
        bytes_max: 1 << 20,
    });
    let results = by_count.admit((0..5).map(tx).collect(), 1, nothing_committed, now);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    assert!(
        results[3..]
            .iter()
            .all(|r| matches!(r, Err(AdmitError::Busy { .. })))
    );
    assert_eq!(by_count.len(), 3);
    let more = by_count.admit(vec![tx(9)], 1, nothing_committed, now);
    assert!(matches!(more[0], Err(AdmitError::Busy { .. })));

    let one = tx(0).encoded_len();
    let mut by_bytes = pool(MempoolLimits {
        txs_max: 1000,
        bytes_max: one * 2,
    });
    let results = by_bytes.admit((0..4).map(tx).collect(), 1, nothing_committed, now);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    assert!(by_bytes.bytes() <= one * 2);
}

#[test]
fn cuts_when_full_by_count() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit((0..9).map(tx).collect(), 1, nothing_committed, now);
    assert!(!p.view().full, "9 of 10");
    p.admit(vec![tx(9), tx(10), tx(11)], 1, nothing_committed, now);
    assert!(p.view().full);
    let (block, ids) = p.cut(1, 0);
    assert_eq!(ids, block.iter().map(|t| t.id()).collect::<Vec<_>>());
    assert_eq!(block.len(), 10);
    assert_eq!(block[0], tx(0), "oldest first");
    assert_eq!(p.len(), 2);
}

#[test]
fn cuts_when_full_by_bytes() {
    let now = Instant::now();
    let one = tx(0).encoded_len();
    let mut p = Mempool::new(
        policy(1000, BLOCK_OVERHEAD_BYTES + 3 * one),
        MempoolLimits::default(),
    );
    p.admit((0..2).map(tx).collect(), 1, nothing_committed, now);
    assert!(!p.view().full);
    p.admit((2..5).map(tx).collect(), 1, nothing_committed, now);
    assert!(p.view().full);
    assert_eq!(
        p.cut(1, 0).0.len(),
        3,
        "a block never exceeds block_bytes_max"
    );
}

#[test]
fn the_view_shows_when_the_oldest_pending_transaction_arrived() {
    let t0 = Instant::now();
    let mut p = pool(MempoolLimits::default());
    assert_eq!(p.view(), PoolView::default());
    p.admit(vec![tx(1)], 1, nothing_committed, t0);
    p.admit(
        vec![tx(2)],
        1,
        nothing_committed,
        t0 + Duration::from_millis(15),
    );
    assert_eq!(p.view().oldest, Some(t0));
    p.remove_committed(&[tx(1).id()]);
    assert_eq!(
        p.view().oldest,
        Some(t0 + Duration::from_millis(15)),
        "the oldest live one"
    );
    assert_eq!(p.cut(1, 0).0.len(), 1);
    assert_eq!(p.view(), PoolView::default(), "nothing pending");
}

#[test]
fn cut_drops_transactions_that_expired_meanwhile() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit(
        vec![tx_with(1, |t| t.expires_at = 5), tx(2)],
        1,
        nothing_committed,
        now,
    );
    let (block, _) = p.cut(6, 0);
    assert_eq!(block, vec![tx(2)]);
    assert!(p.is_empty());
    assert_eq!(p.bytes(), 0);
}

#[test]
fn requeue_restores_an_uncommitted_block_ahead_of_newer_transactions() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit((0..3).map(tx).collect(), 1, nothing_committed, now);
    let (lost, _) = p.cut(1, 0);
    p.admit(vec![tx(3)], 1, nothing_committed, now);
    let already = lost[1].id();
    p.requeue(lost, 1, |id| (*id == already).then_some(1), now);
    let (block, _) = p.cut(1, 0);
    assert_eq!(
        block,
        vec![tx(0), tx(2), tx(3)],
        "requeued first, committed one dropped, no duplicates"
    );
}

#[test]
fn committed_blocks_remove_pending_transactions() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit((0..4).map(tx).collect(), 1, nothing_committed, now);
    p.remove_committed(&[tx(1).id(), tx(3).id(), tx(99).id()]);
    assert_eq!(p.len(), 2);
    assert_eq!(p.bytes(), 2 * tx(0).encoded_len());
    assert!(!p.contains(&tx(1).id()));
    p.remove_committed(&[tx(0).id(), tx(2).id()]);
    assert!(p.is_empty());
    assert_eq!(p.view().oldest, None);
}

#[test]
fn stale_returns_each_transaction_once_per_resend_interval() {
    let t0 = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit((0..3).map(tx).collect(), 1, nothing_committed, t0);
    let t1 = t0 + Duration::from_secs(1);
    p.admit(vec![tx(3)], 1, nothing_committed, t1);
    let t2 = t0 + Duration::from_secs(2);
    assert_eq!(p.stale(t1, t2, 2), vec![tx(0), tx(1)], "bounded by max");
    assert_eq!(p.stale(t1, t2, 10), vec![tx(2)], "sent ones are not stale");
    let t3 = t0 + Duration::from_secs(3);
    assert_eq!(p.stale(t3, t3, 10), vec![tx(0), tx(1), tx(2), tx(3)]);
    assert_eq!(p.len(), 4, "resending keeps them pending");
}

#[test]
fn drop_expired_keeps_the_pool_consistent() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit(
        vec![
            tx_with(1, |t| t.expires_at = 5),
            tx(2),
            tx_with(3, |t| t.expires_at = 6),
        ],
        1,
        nothing_committed,
        now,
    );
    assert_eq!(p.drop_expired(6), 1);
    assert_eq!(p.len(), 2);
    assert!(!p.contains(&tx_with(1, |t| t.expires_at = 5).id()));
    assert_eq!(p.bytes(), 2 * tx(2).encoded_len());
    assert_eq!(p.drop_expired(6), 0);
}

#[test]
fn a_transaction_in_an_uncommitted_block_cannot_be_admitted_again() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    p.admit(vec![tx(1), tx(2)], 1, nothing_committed, now);
    let (block, _) = p.cut(1, 0);
    assert_eq!(block.len(), 2);
    assert!(p.is_empty());
    assert_eq!(p.in_flight(), 2);
    let again = p.admit(vec![tx(1)], 1, nothing_committed, now);
    assert_eq!(again, vec![Err(AdmitError::AlreadyPending(tx(1).id()))]);

    // The block fails: its transactions wait again, and are still admitted once.
    p.requeue(block, 1, nothing_committed, now);
    assert_eq!((p.len(), p.in_flight()), (2, 0));
    let (block, _) = p.cut(1, 0);
    // It commits: nothing of it stays pending.
    p.remove_committed(&block.iter().map(SignedTransaction::id).collect::<Vec<_>>());
    assert_eq!((p.len(), p.in_flight()), (0, 0));
    assert!(!p.contains(&tx(1).id()));
}

#[test]
fn unchecked_admissions_are_verified_before_they_enter_a_block() {
    let now = Instant::now();
    let mut p = pool(MempoolLimits::default());
    let mut forged = tx(2);
    forged.signature = tx(3).signature;
    let admitted = p.admit_with(
        vec![tx(1), forged.clone(), tx(4)],
        1,
        nothing_committed,
        now,
        false,
    );
    assert!(
        admitted.iter().all(Result::is_ok),
        "a follower admits without checking"
    );
    // The leader accepted tx(4): it is known good; the others are checked at cut.
    p.mark_verified(&[tx(4).id()]);
    let (block, _) = p.cut(1, 0);
    assert_eq!(
        block,
        vec![tx(1), tx(4)],
        "the forged one never enters a block"
    );
    assert!(!p.contains(&forged.id()));
    assert_eq!(p.in_flight(), 2);
}

#[test]
fn an_admission_that_races_a_commit_looks_again() {
    let mut p = pool(MempoolLimits::default());
    let now = Instant::now();
    p.admit(vec![tx(1)], 1, nothing_committed, now);
    let (_, ids) = p.cut(1, 0);
    // A re-submission looks the id up before its block commits: not committed yet, and
    // pending (in flight) — but the block commits before the admission screens.
    let policy = policy(10, 1 << 20);
    let epoch = p.commit_epoch();
    let mut again = Admission::new(vec![tx(1)], &policy, 2, nothing_committed, epoch);
    p.remove_committed(&ids);
    assert!(!p.contains(&ids[0]));
    p.screen(&mut again);
    let committed_at_1 = |id: &TxId| (*id == ids[0]).then_some(1);
    let results = p.enter(again, now, committed_at_1);
    assert_eq!(
        results[0],
        Err(AdmitError::AlreadyCommitted {
            id: ids[0],
            height: 1
        })
    );
    assert!(
        p.is_empty(),
        "a committed transaction never re-enters the pool"
    );
}
