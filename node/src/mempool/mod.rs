//! The mempool: admitted transactions waiting for a block, and the leader's block cutter.
//!
//! Admission checks, cheapest first: encoded size, chain id, permitted sender, expiry
//! window (for the next height), not already pending, not already committed, room left
//! (by count and by bytes: a full pool answers [`AdmitError::Busy`], it never grows), and
//! last the signature, batch-verified under ZIP-215 for a batch of submissions.
//!
//! The leader cuts blocks from it ([`Mempool::cut`]) when the proposer's rules say so
//! (`crate::proposer::core`, from [`Mempool::view`]). Time is an argument: the pool never
//! reads a clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ordo_config::MempoolLimits;
use ordo_ledger::{Policy, SignedTransaction, TxError, TxId};

use crate::id_hash::{IdHashBuilder, IdSet};
pub use admit::Admission;

mod admit;

/// Room a block header and framing take, kept free when filling a block by bytes.
const BLOCK_OVERHEAD_BYTES: u64 = 512;

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// The transaction breaks a chain rule or its signature is invalid.
    #[error("transaction {id} is invalid: {error}")]
    Invalid {
        /// Its id.
        id: TxId,
        /// The rule it breaks.
        error: TxError,
    },
    /// The same transaction is already waiting.
    #[error("transaction {0} is already pending")]
    AlreadyPending(TxId),
    /// The transaction is already in the chain.
    #[error("transaction {id} is already committed at height {height}")]
    AlreadyCommitted {
        /// Its id.
        id: TxId,
        /// Its block.
        height: u64,
    },
    /// The pool is full; retry later.
    #[error("mempool is full ({pending_txs} transactions, {pending_bytes} bytes); retry later")]
    Busy {
        /// Pending transactions.
        pending_txs: usize,
        /// Pending bytes.
        pending_bytes: u64,
    },
}

struct Pending {
    tx: SignedTransaction,
    id: TxId,
    /// Which admission of `id` this is: entries whose sequence is not the one in
    /// `Mempool::ids` were removed (lazily) and are skipped.
    seq: u64,
    bytes: u64,
    arrived: Instant,
    /// When a follower last sent it to the leader (see [`Mempool::stale`]).
    touched: Instant,
}

/// What the proposer needs to know of the pool to decide when to cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolView {
    /// A block's worth (by count or bytes) is pending.
    pub full: bool,
    /// When the oldest pending transaction arrived (`None`: nothing pending).
    pub oldest: Option<Instant>,
}

/// Pending transactions in arrival order.
pub struct Mempool {
    policy: Arc<Policy>,
    limits: MempoolLimits,
    /// Arrival order. Removal is lazy: an entry is live only while `ids` maps its id to
    /// its `seq`; dead entries are skipped and dropped when they reach the front (or in a
    /// compaction once they outnumber the live ones).
    queue: VecDeque<Pending>,
    /// The live pending transactions: id → (sequence, encoded bytes).
    ids: HashMap<TxId, (u64, u64), IdHashBuilder>,
    next_seq: u64,
    bytes: u64,
    /// No live transaction expires before this height (a lower bound).
    min_expiry: u64,
    /// Ids cut into blocks that have not committed yet: still "pending" to admission, so
    /// a re-submission cannot put the same transaction into a second block.
    in_flight: IdSet,
    /// Live transactions admitted without checking their signature (a follower leaves that
    /// to the leader). Cutting verifies any of these before they enter a block.
    unverified: IdSet,
    /// How many times committed blocks have been removed (see [`Mempool::commit_epoch`]).
    commit_epoch: u64,
}

impl Mempool {
    /// An empty pool for `policy`'s chain.
    pub fn new(policy: Arc<Policy>, limits: MempoolLimits) -> Mempool {
        Mempool {
            policy,
            limits,
            queue: VecDeque::new(),
            ids: HashMap::default(),
            next_seq: 0,
            bytes: 0,
            min_expiry: u64::MAX,
            in_flight: IdSet::default(),
            unverified: IdSet::default(),
            commit_epoch: 0,
        }
    }

    /// Pending transactions.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    #[cfg(test)]
    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn live(&self, p: &Pending) -> bool {
        self.ids.get(&p.id).is_some_and(|(seq, _)| *seq == p.seq)
    }

    /// Drops dead entries from the front, and compacts the queue when dead entries
    /// outnumber live ones.
    fn tidy(&mut self) {
        while let Some(front) = self.queue.front() {
            if self.live(front) {
                break;
            }
            self.queue.pop_front();
        }
        if self.queue.len() > 2 * self.ids.len() + 1024 {
            let ids = &self.ids;
            self.queue
                .retain(|p| ids.get(&p.id).is_some_and(|(seq, _)| *seq == p.seq));
        }
    }

    /// Makes `id` live, at the back (or the front for a requeue).
    fn insert(
        &mut self,
        tx: SignedTransaction,
        id: TxId,
        bytes: u64,
        arrived: Instant,
        touched: Instant,
        front: bool,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids.insert(id, (seq, bytes));
        self.bytes += bytes;
        self.min_expiry = self.min_expiry.min(tx.tx.expires_at);
        let p = Pending {
            tx,
            id,
            seq,
            bytes,
            arrived,
            touched,
        };
        if front {
            self.queue.push_front(p);
        } else {
            self.queue.push_back(p);
        }
    }

    /// Makes `id` dead; true if it was live.
    fn forget(&mut self, id: &TxId) -> bool {
        if !self.unverified.is_empty() {
            self.unverified.remove(id);
        }
        match self.ids.remove(id) {
            Some((_, bytes)) => {
                self.bytes -= bytes;
                true
            }
            None => false,
        }
    }

    /// Pending bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether `id` is pending (waiting, or in a block that has not committed yet).
    pub fn contains(&self, id: &TxId) -> bool {
        self.ids.contains_key(id) || self.in_flight.contains(id)
    }

    #[cfg(test)]
    /// Transactions cut into blocks that have not committed yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    #[cfg(test)]
    /// Admits a batch of submissions for a chain whose next block is `next_height`.
    /// `committed` answers where an id is already committed, if anywhere. Returns one result
    /// per submission, in order. Signatures of the candidates are verified as one batch.
    pub fn admit(
        &mut self,
        txs: Vec<SignedTransaction>,
        next_height: u64,
        committed: impl Fn(&TxId) -> Option<u64>,
        now: Instant,
    ) -> Vec<Result<TxId, AdmitError>> {
        self.admit_with(txs, next_height, committed, now, true)
    }

    #[cfg(test)]
    /// As [`Mempool::admit`], but with `verify` false the signatures are not checked
    /// here: a follower admits what it will forward, and the leader checks (see
    /// [`Mempool::mark_verified`]). Unchecked transactions never enter a block unchecked.
    ///
    /// This runs the steps of an [`Admission`] with the pool held throughout; a node runs
    /// them with the pool locked only for [`Mempool::screen`] and [`Mempool::enter`].
    pub fn admit_with(
        &mut self,
        txs: Vec<SignedTransaction>,
        next_height: u64,
        committed: impl Fn(&TxId) -> Option<u64>,
        now: Instant,
        verify: bool,
    ) -> Vec<Result<TxId, AdmitError>> {
        let mut admission = Admission::new(
            txs,
            &self.policy,
            next_height,
            &committed,
            self.commit_epoch,
        );
        self.screen(&mut admission);
        if verify {
            admission.verify_signatures();
        }
        self.enter(admission, now, committed)
    }

    /// Counts removals of committed blocks. A transaction leaves the in-flight set when its
    /// block commits, and only then does the committed index answer for it; an admission
    /// that looked it up before then must look again (see [`Mempool::enter`]).
    pub fn commit_epoch(&self) -> u64 {
        self.commit_epoch
    }

    /// Step 2 of an [`Admission`]: refuses candidates that are already pending, or for
    /// which there is no room.
    pub fn screen(&self, admission: &mut Admission) {
        let mut kept = 0;
        let candidates = std::mem::take(&mut admission.candidates);
        for c in candidates {
            let checked = if self.contains(&c.id) {
                Err(AdmitError::AlreadyPending(c.id))
            } else {
                self.check_room(c.tx.encoded_len(), kept)
            };
            match checked {
                Ok(()) => {
                    kept += 1;
                    admission.candidates.push(c);
                }
                Err(e) => admission.results[c.slot] = Err(e),
            }
        }
    }

    /// Step 4 of an [`Admission`]: enters the surviving candidates (checking again what
    /// may have changed since [`Mempool::screen`]: pending, room, and, if blocks committed
    /// since step 1, `committed`) and returns one result per submission.
    pub fn enter(
        &mut self,
        admission: Admission,
        now: Instant,
        committed: impl Fn(&TxId) -> Option<u64>,
    ) -> Vec<Result<TxId, AdmitError>> {
        let Admission {
            mut results,
            candidates,
            verified,
            epoch,
            ..
        } = admission;
        let look_again = epoch != self.commit_epoch;
        for c in candidates {
            results[c.slot] = if self.contains(&c.id) {
                Err(AdmitError::AlreadyPending(c.id))
            } else if let Some(height) = look_again.then(|| committed(&c.id)).flatten() {
                Err(AdmitError::AlreadyCommitted { id: c.id, height })
            } else {
                self.push(c.tx, c.id, now).map(|()| c.id)
            };
            if !verified && results[c.slot].is_ok() {
                self.unverified.insert(c.id);
            }
        }
        results
    }

    /// Records that the leader checked these transactions (it accepted them).
    pub fn mark_verified(&mut self, ids: &[TxId]) {
        if !self.unverified.is_empty() {
            for id in ids {
                self.unverified.remove(id);
            }
        }
    }

    fn check_room(&self, bytes: u64, extra_txs: usize) -> Result<(), AdmitError> {
        if self.ids.len() + extra_txs >= self.limits.txs_max
            || self.bytes + bytes > self.limits.bytes_max
        {
            return Err(AdmitError::Busy {
                pending_txs: self.ids.len(),
                pending_bytes: self.bytes,
            });
        }
        Ok(())
    }

    fn push(&mut self, tx: SignedTransaction, id: TxId, now: Instant) -> Result<(), AdmitError> {
        let bytes = tx.encoded_len();
        self.check_room(bytes, 0)?;
        self.insert(tx, id, bytes, now, now, false);
        Ok(())
    }

    /// What the proposer's cut rules read (`crate::proposer::core`): whether a block's
    /// worth is pending, and when the oldest pending transaction arrived.
    pub fn view(&self) -> PoolView {
        let limits = &self.policy.limits;
        // The front is live: every operation that kills entries tidies the front.
        let oldest = self.queue.iter().find(|p| self.live(p)).map(|p| p.arrived);
        PoolView {
            full: !self.ids.is_empty()
                && (self.ids.len() >= limits.block_txs_max as usize
                    || self.bytes + BLOCK_OVERHEAD_BYTES >= limits.block_bytes_max),
            oldest,
        }
    }

    /// Takes the transactions for the block at `height`, oldest first, within the block
    /// limits less `reserve` bytes (its certificates), with their ids. Transactions that
    /// expired before `height` are dropped. The rest stay pending. The ones taken count as
    /// pending until [`Mempool::remove_committed`] or [`Mempool::requeue`] settles their
    /// block.
    pub fn cut(&mut self, height: u64, reserve: u64) -> (Vec<SignedTransaction>, Vec<TxId>) {
        let limits = self.policy.limits;
        let mut out: Vec<(TxId, SignedTransaction, bool)> = Vec::new();
        let mut block_bytes = BLOCK_OVERHEAD_BYTES + reserve;
        self.tidy();
        while let Some(front) = self.queue.front() {
            if !self.live(front) {
                self.queue.pop_front();
                continue;
            }
            if out.len() >= limits.block_txs_max as usize
                || block_bytes + front.bytes > limits.block_bytes_max
            {
                break;
            }
            let p = self.queue.pop_front().expect("front exists");
            let checked = !self.unverified.contains(&p.id);
            self.forget(&p.id);
            if p.tx.tx.expires_at < height {
                continue;
            }
            block_bytes += p.bytes;
            out.push((p.id, p.tx, checked));
        }
        self.tidy();
        // Anything admitted unchecked (this node was a follower then) is checked now.
        let unchecked: Vec<usize> = (0..out.len()).filter(|i| !out[*i].2).collect();
        // Checked one by one: this path is rare, and a forged entry must not make the
        // others be checked again.
        let bad: HashSet<usize> = unchecked
            .into_iter()
            .filter(|i| {
                let (id, tx, _) = &out[*i];
                ordo_crypto::verify(&tx.tx.sender, id.as_bytes(), &tx.signature).is_err()
            })
            .collect();
        let mut block = Vec::with_capacity(out.len());
        let mut ids = Vec::with_capacity(out.len());
        for (i, (id, tx, _)) in out.into_iter().enumerate() {
            if bad.contains(&i) {
                continue;
            }
            self.in_flight.insert(id);
            block.push(tx);
            ids.push(id);
        }
        (block, ids)
    }

    /// Puts back the transactions of a block that will never commit (its leader lost
    /// office), ahead of newer ones, skipping any that are pending, committed or expired.
    /// They were verified when first admitted.
    pub fn requeue(
        &mut self,
        txs: Vec<SignedTransaction>,
        next_height: u64,
        committed: impl Fn(&TxId) -> Option<u64>,
        now: Instant,
    ) {
        for tx in txs.into_iter().rev() {
            let id = tx.id();
            let bytes = tx.encoded_len();
            self.in_flight.remove(&id);
            if self.contains(&id) || committed(&id).is_some() || tx.tx.expires_at < next_height {
                continue;
            }
            // Requeued transactions were admitted once: they may exceed the pool's limits
            // by the blocks in flight, which the limits leave room for.
            // Keep the batch deadline of what was already waiting.
            self.tidy();
            let arrived = self.queue.front().map_or(now, |p| p.arrived.min(now));
            self.insert(tx, id, bytes, arrived, now, true);
        }
    }

    /// Up to `max` pending transactions last sent before `cutoff`, oldest first, marked as
    /// sent at `now`. A follower re-sends these to the leader: the leader it first sent them
    /// to may have lost them with its office.
    pub fn stale(&mut self, cutoff: Instant, now: Instant, max: usize) -> Vec<SignedTransaction> {
        let mut out = Vec::new();
        let ids = &self.ids;
        for p in self.queue.iter_mut() {
            if out.len() >= max {
                break;
            }
            let live = ids.get(&p.id).is_some_and(|(seq, _)| *seq == p.seq);
            if live && p.touched < cutoff {
                p.touched = now;
                out.push(p.tx.clone());
            }
        }
        out
    }

    /// Drops pending transactions that can no longer enter the block at `next_height`.
    /// Returns how many were dropped.
    pub fn drop_expired(&mut self, next_height: u64) -> usize {
        if next_height <= self.min_expiry {
            return 0;
        }
        let expired: Vec<TxId> = self
            .queue
            .iter()
            .filter(|p| self.live(p) && p.tx.tx.expires_at < next_height)
            .map(|p| p.id)
            .collect();
        for id in &expired {
            self.forget(id);
        }
        self.min_expiry = self
            .queue
            .iter()
            .filter(|p| self.live(p))
            .map(|p| p.tx.tx.expires_at)
            .min()
            .unwrap_or(u64::MAX);
        self.tidy();
        expired.len()
    }

    /// Drops waiting transactions (not those in a block in flight): they were refused
    /// further on.
    pub fn remove_pending(&mut self, ids: &[TxId]) {
        let mut removed = false;
        for id in ids {
            removed |= self.forget(id);
        }
        if removed {
            self.tidy();
        }
    }

    /// Drops pending transactions that a committed block contains (waiting, or in a
    /// block in flight).
    pub fn remove_committed(&mut self, ids: &[TxId]) {
        self.commit_epoch += 1;
        if !self.in_flight.is_empty() {
            for id in ids {
                self.in_flight.remove(id);
            }
        }
        self.remove_pending(ids);
    }
}

#[cfg(test)]
mod tests;
