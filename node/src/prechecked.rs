//! Signatures a follower checks ahead of the blocks that carry them.
//!
//! The leader sends each batch of transactions it admits to the followers as soon as it has
//! admitted it ([`Kind::Announce`], best effort). A follower batch-verifies the signatures
//! off the critical path and remembers each (id, signature) pair that passed. When the
//! block carrying them arrives, [`crate::consensus::RaftServer`] leaves those signatures
//! out of the block's batch ([`ordo_ledger::verify_block_with`]): the follower still checks
//! each signature once, under the same ZIP-215 rules, but before the block arrives instead
//! of between the block's arrival and its acknowledgement, which the commit waits for.
//!
//! Everything here is bounded and lossy. A dropped announcement, a batch that fails, or an
//! entry evicted before its block arrives only means that the block check verifies that
//! signature itself. Nothing is trusted from the sender: a follower remembers only what it
//! verified.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ordo_crypto::{BatchVerifier, PublicKey, Signature};
use ordo_ledger::{SignedTransaction, TxId};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::consensus::{decode_internal, encode_internal};
use crate::network::{Frame, Kind, Network};

/// Most (id, signature) pairs a follower remembers; the oldest go first.
pub const PRECHECKED_MAX: usize = 65_536;
/// Most announced batches waiting on a follower to be checked; more are dropped.
pub const ANNOUNCE_QUEUE_MAX: usize = 64;
/// Most announcements a leader has in flight to one follower at once; more are dropped.
pub const ANNOUNCES_IN_FLIGHT_MAX: usize = 64;
/// Most transactions in one announcement (the forwarding limit).
pub const ANNOUNCE_TXS_MAX: usize = 4096;

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct PrecheckStats {
    /// Transactions this node (leading) announced, counted once per follower sent to.
    pub announced: AtomicU64,
    /// Transactions whose signatures this node (following) verified ahead of their block.
    pub checked: AtomicU64,
    /// Block signatures left out of a block check because they were checked ahead.
    pub hits: AtomicU64,
    /// Announcements dropped: a full queue on either side, or one that did not decode or
    /// verify.
    pub dropped: AtomicU64,
}

/// The pairs a follower has verified, oldest first.
#[derive(Default)]
struct Seen {
    by_id: HashMap<TxId, Signature>,
    order: VecDeque<TxId>,
}

/// One node's signatures checked ahead of their blocks, and the queue of announcements
/// waiting to be checked.
pub struct Prechecked {
    seen: Mutex<Seen>,
    queue: mpsc::Sender<Vec<u8>>,
    tx_bytes_max: u64,
    /// Announcements in flight, per follower: a follower that is down holds up only its
    /// own.
    sending: Mutex<HashMap<PublicKey, Arc<Semaphore>>>,
    /// Counters.
    pub stats: PrecheckStats,
}

impl Prechecked {
    /// An empty set for transactions of at most `tx_bytes_max` bytes, and the receiving
    /// end of its announcement queue, for [`Prechecked::run`].
    pub fn new(tx_bytes_max: u64) -> (Arc<Prechecked>, mpsc::Receiver<Vec<u8>>) {
        let (queue, rx) = mpsc::channel(ANNOUNCE_QUEUE_MAX);
        let p = Prechecked {
            seen: Mutex::new(Seen::default()),
            queue,
            tx_bytes_max,
            sending: Mutex::new(HashMap::new()),
            stats: PrecheckStats::default(),
        };
        (Arc::new(p), rx)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("prechecked lock poisoned")
    }

    /// Whether this node has verified `signature` over `id`. Counts a hit when it has.
    pub fn contains(&self, id: &TxId, signature: &Signature) -> bool {
        let hit = self.seen().by_id.get(id) == Some(signature);
        if hit {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.seen().by_id.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers pairs this node verified (ahead, or in a block check, so that a late
    /// announcement of them is not checked again), evicting the oldest beyond
    /// [`PRECHECKED_MAX`].
    pub fn remember(&self, pairs: impl IntoIterator<Item = (TxId, Signature)>) {
        let mut seen = self.seen();
        for (id, signature) in pairs {
            if seen.by_id.insert(id, signature).is_none() {
                seen.order.push_back(id);
            }
            while seen.order.len() > PRECHECKED_MAX {
                if let Some(old) = seen.order.pop_front() {
                    seen.by_id.remove(&old);
                }
            }
        }
    }

    /// Takes an announcement (the frame body) for checking, or drops it if the queue is
    /// full. Never waits.
    pub fn offer(&self, body: Vec<u8>) {
        if self.queue.try_send(body).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Checks one announcement: decodes it, batch-verifies the signatures not already
    /// remembered, and remembers them all if the batch passes. Returns how many it
    /// verified.
    ///
    /// # Errors
    /// Why the announcement was dropped (it did not decode, was too large, or holds a bad
    /// signature).
    pub fn check(&self, body: &[u8]) -> Result<usize, String> {
        let raw: Vec<Vec<u8>> =
            decode_internal(body, "announced transactions").map_err(|e| e.to_string())?;
        if raw.len() > ANNOUNCE_TXS_MAX {
            return Err(format!("more than {ANNOUNCE_TXS_MAX} transactions"));
        }
        let mut decoded = Vec::with_capacity(raw.len());
        for bytes in &raw {
            let tx = SignedTransaction::from_bytes(bytes, self.tx_bytes_max)
                .map_err(|e| e.to_string())?;
            decoded.push((tx.id(), tx));
        }
        let fresh: Vec<(TxId, SignedTransaction)> = {
            let seen = self.seen();
            decoded
                .into_iter()
                .filter(|(id, tx)| seen.by_id.get(id) != Some(&tx.signature))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        let mut batch = BatchVerifier::with_capacity(fresh.len());
        for (id, tx) in &fresh {
            batch.queue(&tx.tx.sender, id.as_bytes(), &tx.signature);
        }
        batch
            .verify()
            .map_err(|e| format!("announced transactions: {e}"))?;
        let n = fresh.len();
        self.remember(fresh.into_iter().map(|(id, tx)| (id, tx.signature)));
        self.stats.checked.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Checks queued announcements, one at a time on a blocking thread, until `stopping`.
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
            let this = self.clone();
            let checked = tokio::task::spawn_blocking(move || this.check(&body))
                .await
                .unwrap_or_else(|e| Err(format!("check task failed: {e}")));
            if let Err(reason) = checked {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, "dropped an announcement");
            }
        }
    }

    /// Sends `raw` (canonical transaction bytes this node admitted as leader) to each of
    /// `followers`, without waiting. Dropped, and counted, when too many announcements are
    /// already in flight.
    pub fn announce(&self, network: &Network, followers: &[PublicKey], raw: &[Vec<u8>]) {
        if raw.is_empty() || followers.is_empty() {
            return;
        }
        for chunk in raw.chunks(ANNOUNCE_TXS_MAX) {
            let body = match encode_internal(&chunk) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an announcement");
                    return;
                }
            };
            for peer in followers {
                let slots = self
                    .sending
                    .lock()
                    .expect("announce lock poisoned")
                    .entry(*peer)
                    .or_insert_with(|| Arc::new(Semaphore::new(ANNOUNCES_IN_FLIGHT_MAX)))
                    .clone();
                let Ok(permit) = slots.try_acquire_owned() else {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                self.stats
                    .announced
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                let (network, peer, body) = (network.clone(), *peer, body.clone());
                tokio::spawn(async move {
                    let frame = Frame {
                        kind: Kind::Announce,
                        body,
                    };
                    if let Err(e) = network.request(&peer, frame).await {
                        tracing::debug!(error = %e, "announcement not delivered");
                    }
                    drop(permit);
                });
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
        let (p, _rx) = Prechecked::new(1 << 10);
        let txs: Vec<_> = (0..5).map(|n| tx(&key, n)).collect();
        assert_eq!(p.check(&body(&txs)), Ok(5));
        for t in &txs {
            assert!(p.contains(&t.id(), &t.signature));
        }
        // The same id under another signature was never verified.
        let other = tx(&key, 99).signature;
        assert!(!p.contains(&txs[0].id(), &other));
        assert_eq!(p.stats.hits.load(Ordering::Relaxed), 5);
        // Already known: nothing to verify again.
        assert_eq!(p.check(&body(&txs)), Ok(0));
    }

    #[test]
    fn a_bad_signature_drops_the_whole_batch() {
        let key = Keypair::from_label("client");
        let (p, _rx) = Prechecked::new(1 << 10);
        let mut txs: Vec<_> = (0..4).map(|n| tx(&key, n)).collect();
        txs[2].signature.0[7] ^= 1;
        assert!(p.check(&body(&txs)).is_err());
        assert!(p.is_empty());
    }

    #[test]
    fn malformed_and_oversize_announcements_are_refused() {
        let (p, _rx) = Prechecked::new(64);
        assert!(p.check(b"\xff\xff\xff").is_err());
        let key = Keypair::from_label("client");
        let big = tx(&key, 1);
        // 64 bytes is less than one transaction.
        assert!(p.check(&body(&[big])).is_err());
        assert!(p.is_empty());
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let (p, _rx) = Prechecked::new(1 << 10);
        let sig = Signature([0; 64]);
        let ids: Vec<TxId> = (0..PRECHECKED_MAX as u64 + 10)
            .map(|n| ordo_crypto::Hash::digest(ordo_crypto::Domain::Transaction, &n.to_le_bytes()))
            .collect();
        p.remember(ids.iter().map(|id| (*id, sig)));
        assert_eq!(p.len(), PRECHECKED_MAX);
        assert!(!p.contains(&ids[0], &sig));
        assert!(p.contains(&ids[PRECHECKED_MAX + 9], &sig));
    }

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (p, _rx) = Prechecked::new(1 << 10);
        for _ in 0..ANNOUNCE_QUEUE_MAX + 3 {
            p.offer(vec![0]);
        }
        assert_eq!(p.stats.dropped.load(Ordering::Relaxed), 3);
    }
}
