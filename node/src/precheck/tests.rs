//! The precheck's bounds, and its rule that each signature is checked once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ordo_crypto::{Keypair, Signature};
use ordo_ledger::{SignedTransaction, Transaction, TxId};

use super::*;
use ordo_wire::encode_internal;

fn tx(key: &Keypair, nonce: u64) -> SignedTransaction {
    let tx = Transaction {
        chain_id: "prechecked-test".into(),
        sender: key.public(),
        nonce,
        expires_at: 10,
        payload: vec![1, 2, 3],
    };
    let signature = key.sign(tx.id().as_bytes());
    SignedTransaction { tx, signature }
}

fn body(txs: &[SignedTransaction]) -> Vec<u8> {
    let raw: Vec<Vec<u8>> = txs.iter().map(SignedTransaction::to_bytes).collect();
    encode_internal(&raw).expect("encodes")
}

#[test]
fn remembers_exactly_what_it_verified() {
    let key = Keypair::from_label("client");
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let txs: Vec<_> = (0..5).map(|n| tx(&key, n)).collect();
    assert_eq!(p.check(&body(&txs)), Ok(5));
    for t in &txs {
        assert!(p.contains(&t.id(), &t.signature));
    }
    // The same id under another signature was never verified.
    let other = tx(&key, 99).signature;
    assert!(!p.contains(&txs[0].id(), &other));
    // Already known: nothing to verify again.
    assert_eq!(p.check(&body(&txs)), Ok(0));
}

#[test]
fn forwarded_submissions_checked_here_are_not_checked_again() {
    let key = Keypair::from_label("client");
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let txs: Vec<_> = (0..6).map(|n| tx(&key, n)).collect();
    let ids = |txs: &[SignedTransaction]| -> Vec<TxId> { txs.iter().map(|t| t.id()).collect() };
    assert_eq!(p.check_forwarded(&ids(&txs[..4]), &txs[..4]), 4);
    for t in &txs[..4] {
        assert!(p.contains(&t.id(), &t.signature));
    }
    // The leader's announcement of all six: only the two not checked yet are verified.
    assert_eq!(p.check(&body(&txs)), Ok(2));
    // A batch with a bad signature is remembered not at all.
    let mut bad: Vec<_> = (10..13).map(|n| tx(&key, n)).collect();
    bad[1].signature.0[3] ^= 1;
    assert_eq!(p.check_forwarded(&ids(&bad), &bad), 0);
    assert!(bad.iter().all(|t| !p.contains(&t.id(), &t.signature)));
    assert_eq!(p.len(), 6);
}

#[test]
fn a_bad_signature_drops_the_whole_batch() {
    let key = Keypair::from_label("client");
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let mut txs: Vec<_> = (0..4).map(|n| tx(&key, n)).collect();
    txs[2].signature.0[7] ^= 1;
    assert!(p.check(&body(&txs)).is_err());
    assert!(p.is_empty());
}

#[test]
fn queued_announcements_are_checked_in_one_batch() {
    let key = Keypair::from_label("client");
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let txs: Vec<_> = (0..6).map(|n| tx(&key, n)).collect();
    // Two announcements overlapping in one transaction, and one that does not decode:
    // the overlap is verified once, and only the garbage is dropped.
    let (a, b) = (body(&txs[..4]), body(&txs[3..]));
    let (verified, dropped) = p.check_all(&[&a, b"\xff\xff", &b]);
    assert_eq!(verified, 6);
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(txs.iter().all(|t| p.contains(&t.id(), &t.signature)));
    assert!(p.seen().checking.is_empty(), "claims released");

    // A bad signature in one announcement fails the merged batch: both are dropped,
    // and nothing of either is remembered.
    let mut more: Vec<_> = (10..14).map(|n| tx(&key, n)).collect();
    more[3].signature.0[9] ^= 1;
    let (c, d) = (body(&more[..2]), body(&more[2..]));
    let (verified, dropped) = p.check_all(&[&c, &d]);
    assert_eq!((verified, dropped.len()), (0, 2));
    assert!(more.iter().all(|t| !p.contains(&t.id(), &t.signature)));
    assert!(p.seen().checking.is_empty(), "claims released");
}

#[test]
fn malformed_and_oversize_announcements_are_refused() {
    let (p, _rx) = Prechecked::new(64, &[]);
    assert!(p.check(b"\xff\xff\xff").is_err());
    let key = Keypair::from_label("client");
    let big = tx(&key, 1);
    // 64 bytes is less than one transaction.
    assert!(p.check(&body(&[big])).is_err());
    assert!(p.is_empty());
}

#[test]
fn an_announcement_leaves_out_what_a_block_check_verifies_itself() {
    let key = Keypair::from_label("client");
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let txs: Vec<_> = (0..4).map(|n| tx(&key, n)).collect();
    let check = p.block_check(Instant::now() + ANNOUNCE_WAIT_MAX);
    // The block holds the first two; nothing was checked ahead, so it claims them.
    for t in &txs[..2] {
        assert!(!check.checked(&t.id(), &t.signature));
    }
    // An announcement of all four arriving meanwhile verifies only the other two.
    assert_eq!(p.check(&body(&txs)), Ok(2));
    check.passed(txs[..2].iter().map(|t| (t.id(), t.signature)));
    assert!(txs.iter().all(|t| p.contains(&t.id(), &t.signature)));
    assert!(p.seen().in_blocks.is_empty(), "claims released");

    // A block check that fails releases its claims and remembers nothing.
    let later: Vec<_> = (10..12).map(|n| tx(&key, n)).collect();
    {
        let check = p.block_check(Instant::now() + ANNOUNCE_WAIT_MAX);
        assert!(!check.checked(&later[0].id(), &later[0].signature));
    }
    assert!(p.seen().in_blocks.is_empty());
    assert!(!p.contains(&later[0].id(), &later[0].signature));
    assert_eq!(p.check(&body(&later)), Ok(2), "no longer claimed");
}

#[test]
fn a_block_check_waits_for_an_announcement_check_of_its_signatures() {
    let key = Keypair::from_label("client");
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let t = tx(&key, 1);
    let (id, sig) = (t.id(), t.signature);
    // An announcement check is verifying the pair (as `check` marks it).
    p.seen().checking.insert(id, sig);
    let check = p.block_check(Instant::now() + ANNOUNCE_WAIT_MAX);
    let hit = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            let mut seen = p.seen();
            seen.checking.remove(&id);
            seen.remember([(id, sig)]);
            drop(seen);
            p.settled.notify_all();
        });
        check.checked(&id, &sig)
    });
    assert!(
        hit,
        "the announcement's verdict is used, not verified again"
    );
    check.passed([(id, sig)]);
    assert_eq!(p.stats.hits.load(Ordering::Relaxed), 1);

    // An announcement check that never settles is waited for at most ANNOUNCE_WAIT_MAX.
    let u = tx(&key, 2);
    p.seen().checking.insert(u.id(), u.signature);
    let started = Instant::now();
    let deadline = started + ANNOUNCE_WAIT_MAX;
    let check = p.block_check(deadline);
    assert!(!check.checked(&u.id(), &u.signature));
    assert!(started.elapsed() >= ANNOUNCE_WAIT_MAX);
    assert!(started.elapsed() < ANNOUNCE_WAIT_MAX * 5);
    // Once the wait is spent, other pairs of the block, and the next block of the same
    // append (which shares the deadline), do not wait again.
    let v = tx(&key, 3);
    let w = tx(&key, 4);
    p.seen().checking.insert(v.id(), v.signature);
    p.seen().checking.insert(w.id(), w.signature);
    let again = Instant::now();
    assert!(!check.checked(&v.id(), &v.signature));
    let next_block = p.block_check(deadline);
    assert!(!next_block.checked(&w.id(), &w.signature));
    assert!(again.elapsed() < ANNOUNCE_WAIT_MAX);
}

#[test]
fn memory_is_bounded_oldest_first() {
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    let sig = Signature([0; 64]);
    let ids: Vec<TxId> = (0..PRECHECKED_MAX as u64 + 10)
        .map(|n| ordo_crypto::Hash::digest(ordo_crypto::Domain::Transaction, &n.to_le_bytes()))
        .collect();
    p.seen().remember(ids.iter().map(|id| (*id, sig)));
    assert_eq!(p.len(), PRECHECKED_MAX);
    assert!(!p.contains(&ids[0], &sig));
    assert!(p.contains(&ids[PRECHECKED_MAX + 9], &sig));
}

#[test]
fn outboxes_are_bounded_in_bytes() {
    let followers = [
        Keypair::from_label("f1").public(),
        Keypair::from_label("f2").public(),
    ];
    let (p, _rx) = Prechecked::new(1 << 10, &followers);
    let tx = vec![0u8; 1 << 10];
    let per_follower = ANNOUNCE_PENDING_BYTES_MAX / tx.len();
    for _ in 0..per_follower + 5 {
        p.announce(std::slice::from_ref(&tx));
    }
    for f in &followers {
        let outbox = p.peers[f].outbox.lock().expect("lock");
        assert_eq!(outbox.txs.len(), per_follower);
        assert!(outbox.bytes <= ANNOUNCE_PENDING_BYTES_MAX);
    }
    assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 10);
}

#[test]
fn the_check_queue_is_bounded_in_bytes() {
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    p.offer(vec![0; ANNOUNCE_QUEUE_BYTES_MAX - 10]);
    p.offer(vec![0; 11]);
    assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 1);
    p.offer(vec![0; 10]);
    assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn a_full_queue_drops_instead_of_waiting() {
    let (p, _rx) = Prechecked::new(1 << 10, &[]);
    for _ in 0..ANNOUNCE_QUEUE_MAX + 3 {
        p.offer(vec![0]);
    }
    assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 3);
}
