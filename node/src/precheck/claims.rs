//! The table of (id, signature) pairs this follower has verified, and of those being
//! verified now by an announcement check or a block check, so that each signature is
//! checked once even when an announcement and its block meet.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ordo_crypto::{BatchVerifier, Signature};
use ordo_ledger::{SignedTransaction, TxId};

use super::{PRECHECKED_MAX, Prechecked};
use crate::id_hash::IdHashBuilder;

/// The pairs a follower has verified, oldest first, and the ones being verified now.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) by_id: HashMap<TxId, Signature, IdHashBuilder>,
    pub(super) order: VecDeque<TxId>,
    /// Pairs an announcement check is verifying now (a block check waits for them).
    pub(super) checking: HashMap<TxId, Signature, IdHashBuilder>,
    /// Ids a block check is verifying itself now, with how many block checks hold each
    /// (an announcement check leaves them out).
    pub(super) in_blocks: HashMap<TxId, u32, IdHashBuilder>,
}

impl Seen {
    /// Remembers pairs this node verified (ahead, or in a block check, so that a late
    /// announcement of them is not checked again), evicting the oldest beyond
    /// [`PRECHECKED_MAX`]. Only the checks in this module call it: nothing from outside
    /// can vouch for a signature.
    pub(super) fn remember(&mut self, pairs: impl IntoIterator<Item = (TxId, Signature)>) {
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

impl Prechecked {
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

    /// Batch-verifies the signatures of `decoded` that no check has verified or is
    /// verifying, and remembers them if the batch passes; returns how many it verified,
    /// `None` when a signature does not verify (the batch is then dropped as a whole,
    /// without checking each signature alone: nothing here is a verdict).
    pub(super) fn check_decoded<'t>(
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
