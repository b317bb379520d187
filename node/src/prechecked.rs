//! Signatures a follower checks ahead of the blocks that carry them.
//!
//! The leader sends the transactions it admits to the followers as soon as it has admitted
//! them ([`Kind::Announce`], best effort): one sender per follower, at most a few
//! announcements in flight; when they are all in flight, what is admitted meanwhile goes out
//! together in the next. A follower batch-verifies the signatures
//! off the critical path and remembers each (id, signature) pair that passed. When the
//! block carrying them arrives, [`crate::consensus::RaftServer`] leaves those signatures
//! out of the block's batch ([`ordo_ledger::verify_block_with`]): the follower still checks
//! each signature once, under the same ZIP-215 rules, but before the block arrives instead
//! of between the block's arrival and its acknowledgement, which the commit waits for.
//!
//! Each signature is checked once per node even when an announcement and its block meet:
//! a block check waits for an announcement check already verifying one of its signatures
//! (at most [`ANNOUNCE_WAIT_MAX`] per append) instead of verifying it too, and an announcement check
//! skips the signatures a block check is verifying itself ([`Prechecked::block_check`]).
//!
//! A follower also checks here the submissions it forwards to the leader
//! ([`Prechecked::check_forwarded`]), while the leader checks them at admission: the
//! announcement of those transactions then finds them verified, and the block need not
//! wait for a check that starts only once the leader has admitted them.
//!
//! Everything here is bounded and lossy. A dropped announcement, a batch that fails, or an
//! entry evicted before its block arrives only means that the block check verifies that
//! signature itself. Nothing is trusted from the sender: a follower remembers only what it
//! verified.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ordo_crypto::{BatchVerifier, PublicKey, Signature};
use ordo_ledger::{SignedTransaction, TxId};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::consensus::{TxBytes, decode_internal, encode_internal};
use crate::mempool::IdHashBuilder;
use crate::network::{Frame, Kind, Network};

/// Most (id, signature) pairs a follower remembers; the oldest go first.
pub const PRECHECKED_MAX: usize = 65_536;
/// Most announcements waiting on a follower to be checked; more are dropped.
pub const ANNOUNCE_QUEUE_MAX: usize = 64;
/// Most bytes of announcements waiting on a follower to be checked; more are dropped.
pub const ANNOUNCE_QUEUE_BYTES_MAX: usize = 16 << 20;
/// Most bytes of transactions waiting on a leader to be announced to one follower; more
/// are dropped (a follower that is down or slow costs at most this).
pub const ANNOUNCE_PENDING_BYTES_MAX: usize = 4 << 20;
/// Most announcements a leader has in flight to one follower; what is admitted meanwhile
/// waits in the outbox and goes out together.
pub const ANNOUNCES_IN_FLIGHT_MAX: usize = 4;
/// Most transactions in one announcement (the forwarding limit).
pub const ANNOUNCE_TXS_MAX: usize = 4096;
/// Most bytes of queued announcements a follower checks in one batch (it takes queued
/// announcements until it reaches this, so one more may take it past).
pub const ANNOUNCE_MERGE_BYTES_MAX: usize = 4 << 20;
/// Longest a block check waits for announcement checks that are verifying some of its
/// signatures; then it verifies what is still unsettled itself.
pub const ANNOUNCE_WAIT_MAX: Duration = Duration::from_millis(200);

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct PrecheckStats {
    /// Transactions this node (leading) announced, counted once per follower they reached.
    pub announced: AtomicU64,
    /// Transactions whose signatures this node (following) verified ahead of their block.
    pub checked: AtomicU64,
    /// Block signatures left out of a block check because they were checked ahead.
    pub hits: AtomicU64,
    /// Announcements dropped: a full queue on either side, one that did not decode or
    /// verify, or one from a node that does not lead.
    pub dropped: AtomicU64,
}

/// The pairs a follower has verified, oldest first, and the ones being verified now.
#[derive(Default)]
struct Seen {
    by_id: HashMap<TxId, Signature, IdHashBuilder>,
    order: VecDeque<TxId>,
    /// Pairs an announcement check is verifying now (a block check waits for them).
    checking: HashMap<TxId, Signature, IdHashBuilder>,
    /// Ids a block check is verifying itself now, with how many block checks hold each
    /// (an announcement check leaves them out).
    in_blocks: HashMap<TxId, u32, IdHashBuilder>,
}

impl Seen {
    /// Remembers pairs this node verified (ahead, or in a block check, so that a late
    /// announcement of them is not checked again), evicting the oldest beyond
    /// [`PRECHECKED_MAX`]. Only the checks in this module call it: nothing from outside
    /// can vouch for a signature.
    fn remember(&mut self, pairs: impl IntoIterator<Item = (TxId, Signature)>) {
        for (id, signature) in pairs {
            if self.by_id.insert(id, signature).is_none() {
                self.order.push_back(id);
            }
            while self.order.len() > PRECHECKED_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.by_id.remove(&old);
                }
            }
        }
    }
}

/// Transactions waiting on a leader to be announced to one follower.
#[derive(Default)]
struct Outbox {
    txs: Vec<Vec<u8>>,
    bytes: usize,
}

/// One follower's outbox and the wake-up of its sender.
struct Peer {
    outbox: Mutex<Outbox>,
    wake: Notify,
}

/// One node's signatures checked ahead of their blocks, the queue of announcements waiting
/// to be checked (as follower), and the outboxes of announcements to send (as leader).
pub struct Prechecked {
    seen: Mutex<Seen>,
    /// Signalled when an announcement check settles the pairs it was verifying.
    settled: Condvar,
    queue: mpsc::Sender<Vec<u8>>,
    queued_bytes: AtomicUsize,
    tx_bytes_max: u64,
    peers: HashMap<PublicKey, Peer>,
    /// Counters.
    pub stats: PrecheckStats,
}

impl Prechecked {
    /// An empty set for transactions of at most `tx_bytes_max` bytes, with an outbox for
    /// each of `followers` (the other validators), and the receiving end of its
    /// announcement queue, for [`Prechecked::run`].
    pub fn new(
        tx_bytes_max: u64,
        followers: &[PublicKey],
    ) -> (Arc<Prechecked>, mpsc::Receiver<Vec<u8>>) {
        let (queue, rx) = mpsc::channel(ANNOUNCE_QUEUE_MAX);
        let peers = followers
            .iter()
            .map(|k| {
                let peer = Peer {
                    outbox: Mutex::new(Outbox::default()),
                    wake: Notify::new(),
                };
                (*k, peer)
            })
            .collect();
        let p = Prechecked {
            seen: Mutex::new(Seen::default()),
            settled: Condvar::new(),
            queue,
            queued_bytes: AtomicUsize::new(0),
            tx_bytes_max,
            peers,
            stats: PrecheckStats::default(),
        };
        (Arc::new(p), rx)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("prechecked lock poisoned")
    }

    /// Whether this node has verified `signature` over `id`.
    pub fn contains(&self, id: &TxId, signature: &Signature) -> bool {
        self.seen().by_id.get(id) == Some(signature)
    }

    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.seen().by_id.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts checking one block's signatures: [`BlockCheck::checked`] says which of them
    /// this node has verified already, and claims the rest for the block check, so that
    /// an announcement check does not verify them too. It waits for announcement checks
    /// until `wait_until` at the latest: give every block of one append the same
    /// deadline (at most [`ANNOUNCE_WAIT_MAX`] away), so an append of many blocks does not
    /// wait longer than one. Run it on a blocking thread.
    pub fn block_check(&self, wait_until: Instant) -> BlockCheck<'_> {
        BlockCheck {
            prechecked: self,
            wait_until,
            claimed: std::cell::RefCell::new(Vec::new()),
            hits: std::cell::Cell::new(0),
        }
    }

    /// Takes an announcement (the frame body) for checking, or drops it if the queue is
    /// full (in count or bytes). Never waits.
    pub fn offer(&self, body: Vec<u8>) {
        let len = body.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if queued + len > ANNOUNCE_QUEUE_BYTES_MAX || self.queue.try_send(body).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Checks one announcement: decodes it, batch-verifies the signatures that no check
    /// has verified or is verifying, and remembers those if the batch passes. Returns how
    /// many it verified.
    ///
    /// # Errors
    /// Why the announcement was dropped (it did not decode, was too large, or holds a bad
    /// signature).
    pub fn check(&self, body: &[u8]) -> Result<usize, String> {
        let (verified, mut dropped) = self.check_all(&[body]);
        dropped.pop().map_or(Ok(verified), Err)
    }

    /// Checks several announcements in one batch (the multiscalar multiplication costs
    /// less per signature in a larger batch): each is decoded on its own, and one that
    /// does not decode is dropped alone; the signatures of the rest that no check has
    /// verified or is verifying are verified together, and remembered if the batch
    /// passes. Returns how many signatures it verified, and why each dropped announcement
    /// was dropped (all of them when the batch fails: a leader that announces a bad
    /// signature gets nothing checked ahead).
    fn check_all(&self, bodies: &[&[u8]]) -> (usize, Vec<String>) {
        let mut dropped = Vec::new();
        let mut decoded = Vec::new();
        let mut decoded_bodies = 0;
        for body in bodies {
            match self.decode(body) {
                Ok(txs) => {
                    decoded.extend(txs);
                    decoded_bodies += 1;
                }
                Err(reason) => dropped.push(reason),
            }
        }
        match self.check_decoded(decoded.iter().map(|(id, tx)| (*id, tx))) {
            Some(n) => (n, dropped),
            None => {
                let reason = "announced transactions: a signature does not verify";
                dropped.extend(std::iter::repeat_n(reason.to_owned(), decoded_bodies));
                (0, dropped)
            }
        }
    }

    /// Checks the signatures of transactions a client submitted to this node (following),
    /// which it forwards to the leader: the leader checks them at admission meanwhile, so
    /// this node's own check is done by the time their block arrives, instead of starting
    /// when the leader announces them. What passes is remembered as an announcement check
    /// would remember it. Returns how many signatures it verified (0 when a signature in
    /// the batch is bad: the leader refuses that one, and the block check decides the
    /// rest). `ids` are the transactions' ids, in order. Run it on a blocking thread.
    pub fn check_forwarded(&self, ids: &[TxId], txs: &[SignedTransaction]) -> usize {
        self.check_decoded(ids.iter().copied().zip(txs))
            .unwrap_or(0)
    }

    /// Batch-verifies the signatures of `decoded` that no check has verified or is
    /// verifying, and remembers them if the batch passes; returns how many it verified,
    /// `None` when a signature does not verify (the batch is then dropped as a whole,
    /// without checking each signature alone: nothing here is a verdict).
    fn check_decoded<'t>(
        &self,
        decoded: impl ExactSizeIterator<Item = (TxId, &'t SignedTransaction)>,
    ) -> Option<usize> {
        // Leave out what is verified, being verified by another announcement check, or
        // being verified by a block check; claim the rest while verifying it.
        let fresh: Vec<(TxId, &SignedTransaction)> = {
            let mut seen = self.seen();
            let mut fresh = Vec::with_capacity(decoded.len());
            for (id, tx) in decoded {
                if seen.by_id.get(&id) != Some(&tx.signature)
                    && !seen.checking.contains_key(&id)
                    && !seen.in_blocks.contains_key(&id)
                {
                    // Claimed here, so a transaction announced twice in one merged check
                    // is verified once.
                    seen.checking.insert(id, tx.signature);
                    fresh.push((id, tx));
                }
            }
            fresh
        };
        if fresh.is_empty() {
            return Some(0);
        }
        // Settles the claims however this ends (a panic included): block checks waiting
        // for them must not wait for nothing.
        let mut settle = Settle {
            prechecked: self,
            fresh: &fresh,
            passed: false,
        };
        let mut batch = BatchVerifier::with_capacity(fresh.len());
        for (id, tx) in &fresh {
            batch.queue(&tx.tx.sender, id.as_bytes(), &tx.signature);
        }
        settle.passed = batch.holds();
        let passed = settle.passed;
        drop(settle);
        if !passed {
            return None;
        }
        let n = fresh.len();
        self.stats.checked.fetch_add(n as u64, Ordering::Relaxed);
        Some(n)
    }

    /// One announcement's transactions with their ids.
    fn decode(&self, body: &[u8]) -> Result<Vec<(TxId, SignedTransaction)>, String> {
        let raw: Vec<TxBytes> =
            decode_internal(body, "announced transactions").map_err(|e| e.to_string())?;
        if raw.len() > ANNOUNCE_TXS_MAX {
            return Err(format!("more than {ANNOUNCE_TXS_MAX} transactions"));
        }
        raw.iter()
            .map(|TxBytes(bytes)| {
                SignedTransaction::from_bytes(bytes, self.tx_bytes_max)
                    .map(|tx| (tx.id(), tx))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Checks queued announcements on a blocking thread until `stopping`: all those
    /// waiting when a check starts go into one batch (at most
    /// [`ANNOUNCE_MERGE_BYTES_MAX`] bytes of them), so a follower that falls behind
    /// verifies larger, cheaper batches instead of falling further behind.
    pub async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Vec<u8>>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            let body = tokio::select! {
                body = rx.recv() => match body { Some(b) => b, None => return },
                _ = stopping.wait_for(|s| *s) => return,
            };
            let mut bytes = body.len();
            let mut bodies = vec![body];
            while bytes < ANNOUNCE_MERGE_BYTES_MAX
                && let Ok(body) = rx.try_recv()
            {
                bytes += body.len();
                bodies.push(body);
            }
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            let this = self.clone();
            let count = bodies.len();
            let dropped = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                this.check_all(&refs).1
            })
            .await
            .unwrap_or_else(|e| vec![format!("check task failed: {e}"); count]);
            for reason in dropped {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, "dropped an announcement");
            }
        }
    }

    /// Puts `raw` (canonical bytes of transactions this node has just admitted as leader)
    /// in every follower's outbox, for [`Prechecked::send_announcements`]. What would take
    /// an outbox past [`ANNOUNCE_PENDING_BYTES_MAX`] is dropped, and counted. Never waits.
    pub fn announce(&self, raw: &[Vec<u8>]) {
        let bytes: usize = raw.iter().map(Vec::len).sum();
        if raw.is_empty() {
            return;
        }
        for peer in self.peers.values() {
            let mut outbox = peer.outbox.lock().expect("outbox lock poisoned");
            if outbox.bytes + bytes > ANNOUNCE_PENDING_BYTES_MAX {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            outbox.txs.extend_from_slice(raw);
            outbox.bytes += bytes;
            drop(outbox);
            peer.wake.notify_one();
        }
    }

    /// Sends `follower`'s outbox (at most [`ANNOUNCE_TXS_MAX`] transactions an
    /// announcement, at most [`ANNOUNCES_IN_FLIGHT_MAX`] in flight), until `stopping`.
    pub async fn send_announcements(
        self: Arc<Self>,
        follower: PublicKey,
        network: Network,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(peer) = self.peers.get(&follower) else {
            return;
        };
        let slots = Arc::new(Semaphore::new(ANNOUNCES_IN_FLIGHT_MAX));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stopping.wait_for(|s| *s) => return,
            };
            let txs: Vec<Vec<u8>> = {
                let mut outbox = peer.outbox.lock().expect("outbox lock poisoned");
                let n = outbox.txs.len().min(ANNOUNCE_TXS_MAX);
                let txs: Vec<Vec<u8>> = outbox.txs.drain(..n).collect();
                outbox.bytes -= txs.iter().map(Vec::len).sum::<usize>();
                txs
            };
            if txs.is_empty() {
                tokio::select! {
                    _ = peer.wake.notified() => continue,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
            let txs: Vec<TxBytes> = txs.into_iter().map(TxBytes).collect();
            let body = match encode_internal(&txs) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an announcement");
                    continue;
                }
            };
            let frame = Frame {
                kind: Kind::Announce,
                body,
            };
            let (this, network, n) = (self.clone(), network.clone(), txs.len() as u64);
            tokio::spawn(async move {
                match network.request(&follower, frame).await {
                    Ok(_) => this.stats.announced.fetch_add(n, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "announcement not delivered");
                        this.stats.dropped.fetch_add(1, Ordering::Relaxed)
                    }
                };
                drop(permit);
            });
        }
    }
}

/// The claims of one announcement check: released when dropped, with the pairs
/// remembered if they passed, and the block checks waiting for them woken.
struct Settle<'a> {
    prechecked: &'a Prechecked,
    fresh: &'a [(TxId, &'a SignedTransaction)],
    passed: bool,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let p = self.prechecked;
        let mut seen = p
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (id, _) in self.fresh {
            seen.checking.remove(id);
        }
        if self.passed {
            seen.remember(self.fresh.iter().map(|(id, tx)| (*id, tx.signature)));
        }
        drop(seen);
        p.settled.notify_all();
    }
}

/// One block's signature check on a follower ([`Prechecked::block_check`]). Dropping it
/// releases its claims; [`BlockCheck::passed`] also remembers the block's pairs.
pub struct BlockCheck<'a> {
    prechecked: &'a Prechecked,
    /// When it stops waiting for announcement checks.
    wait_until: Instant,
    /// Ids this check claimed (it verifies them itself).
    claimed: std::cell::RefCell<Vec<TxId>>,
    hits: std::cell::Cell<u64>,
}

impl BlockCheck<'_> {
    /// Whether this node has verified `signature` over `id` already, so the block check
    /// can leave it out. When an announcement check is verifying that pair now, waits for
    /// its verdict (until the check's deadline, see [`Prechecked::block_check`]).
    /// Otherwise claims `id` for this block check and returns false.
    pub fn checked(&self, id: &TxId, signature: &Signature) -> bool {
        let p = self.prechecked;
        let mut seen = p.seen();
        loop {
            if seen.by_id.get(id) == Some(signature) {
                self.hits.set(self.hits.get() + 1);
                return true;
            }
            let left = self.wait_until.saturating_duration_since(Instant::now());
            if seen.checking.get(id) != Some(signature) || left.is_zero() {
                break;
            }
            seen = p
                .settled
                .wait_timeout(seen, left)
                .expect("prechecked lock poisoned")
                .0;
        }
        *seen.in_blocks.entry(*id).or_default() += 1;
        drop(seen);
        self.claimed.borrow_mut().push(*id);
        false
    }

    /// The block's signatures all passed: remembers its pairs (so a late announcement of
    /// them is not checked again) and counts the ones left out of its batch.
    pub fn passed(self, pairs: impl IntoIterator<Item = (TxId, Signature)>) {
        let p = self.prechecked;
        p.stats.hits.fetch_add(self.hits.get(), Ordering::Relaxed);
        p.seen().remember(pairs);
    }
}

impl Drop for BlockCheck<'_> {
    fn drop(&mut self) {
        let claimed = self.claimed.take();
        if claimed.is_empty() {
            return;
        }
        let mut seen = self.prechecked.seen();
        for id in claimed {
            if let Some(n) = seen.in_blocks.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    seen.in_blocks.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ordo_crypto::Keypair;
    use ordo_ledger::Transaction;

    use super::*;

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
}
