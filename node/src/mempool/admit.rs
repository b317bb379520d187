//! A batch of submissions on its way into a pool, checked in steps so that the pool's lock
//! is held only for the short ones (`docs/design/admission.md`).

use ordo_crypto::BatchVerifier;
use ordo_ledger::{Policy, SignedTransaction, TxError, TxId, check_tx_rules};

use super::AdmitError;
#[cfg(doc)]
use super::Mempool;
use crate::id_hash::IdSet;

/// A batch of submissions on its way into a pool, in four steps, so that a node holds its
/// pool's lock only briefly (the expensive steps need no lock):
///
/// 1. [`Admission::new`]: ids, chain rules, and whether each is already committed.
/// 2. [`Mempool::screen`] (pool locked): already pending? room left?
/// 3. [`Admission::verify_signatures`]: batch-verifies the survivors' signatures.
/// 4. [`Mempool::enter`] (pool locked): checks again what may have changed, and enters them.
pub struct Admission {
    /// Every submission's id, in order.
    pub(super) ids: Vec<TxId>,
    pub(super) results: Vec<Result<TxId, AdmitError>>,
    pub(super) candidates: Vec<Candidate>,
    pub(super) verified: bool,
    /// The pool's commit epoch before the committed lookups of step 1.
    pub(super) epoch: u64,
}

pub(super) struct Candidate {
    /// Index of the submission in the batch.
    pub(super) slot: usize,
    pub(super) tx: SignedTransaction,
    pub(super) id: TxId,
}

impl Admission {
    /// Step 1: checks each submission against the chain rules for the block at
    /// `next_height` and against `committed` (where an id is committed, if anywhere).
    /// Duplicates within the batch count as already pending.
    ///
    /// `epoch` is the pool's [`Mempool::commit_epoch`] read before any lookup: if blocks
    /// commit meanwhile, [`Mempool::enter`] looks again.
    pub fn new(
        txs: Vec<SignedTransaction>,
        policy: &Policy,
        next_height: u64,
        committed: impl Fn(&TxId) -> Option<u64>,
        epoch: u64,
    ) -> Admission {
        let mut ids = Vec::with_capacity(txs.len());
        let mut results = Vec::with_capacity(txs.len());
        let mut candidates = Vec::with_capacity(txs.len());
        let mut batch_ids = IdSet::default();
        for tx in txs {
            let id = tx.id();
            ids.push(id);
            let checked = check_tx_rules(&tx, policy, next_height)
                .map_err(|error| AdmitError::Invalid { id, error })
                .and_then(|()| {
                    if batch_ids.contains(&id) {
                        return Err(AdmitError::AlreadyPending(id));
                    }
                    match committed(&id) {
                        Some(height) => Err(AdmitError::AlreadyCommitted { id, height }),
                        None => Ok(()),
                    }
                });
            if checked.is_ok() {
                batch_ids.insert(id);
                candidates.push(Candidate {
                    slot: results.len(),
                    tx,
                    id,
                });
            }
            results.push(checked.map(|()| id));
        }
        Admission {
            ids,
            results,
            candidates,
            verified: false,
            epoch,
        }
    }

    /// Every submission's id, in order.
    pub fn ids(&self) -> &[TxId] {
        &self.ids
    }

    /// Whether any submission is still a candidate.
    pub fn has_candidates(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// Step 3: batch-verifies the candidates' signatures and refuses the bad ones. Without
    /// this step, [`Mempool::enter`] records the entered transactions as unverified.
    pub fn verify_signatures(&mut self) {
        let mut batch = BatchVerifier::with_capacity(self.candidates.len());
        for c in &self.candidates {
            batch.queue(&c.tx.tx.sender, c.id.as_bytes(), &c.tx.signature);
        }
        let bad = batch.invalid();
        if !bad.is_empty() {
            let mut bad = bad.into_iter().peekable();
            let candidates = std::mem::take(&mut self.candidates);
            for (i, c) in candidates.into_iter().enumerate() {
                if bad.next_if_eq(&i).is_some() {
                    self.results[c.slot] = Err(AdmitError::Invalid {
                        id: c.id,
                        error: TxError::BadSignature,
                    });
                } else {
                    self.candidates.push(c);
                }
            }
        }
        self.verified = true;
    }
}
