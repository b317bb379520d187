//! Clients waiting for their transactions to commit: registered by id, answered by the
//! applied-tip follower when the block holding them is applied (`crate::applied`);
//! `Shared::wait_committed` is the wait.

use std::collections::HashMap;
use std::sync::Mutex;

use ordo_api::Committed;
use ordo_crypto::Hash;
use ordo_ledger::TxId;
use tokio::sync::oneshot;

use crate::mempool::AdmitError;

/// Most transactions that clients wait on at once.
pub const WAITERS_MAX: usize = 100_000;
/// Most clients waiting on the same transaction.
pub const WAITERS_PER_TX_MAX: usize = 64;

/// Who waits for which transaction.
#[derive(Default)]
pub(crate) struct Waiters {
    by_id: Mutex<HashMap<TxId, Vec<oneshot::Sender<Committed>>>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TxId, Vec<oneshot::Sender<Committed>>>> {
        self.by_id.lock().expect("waiters lock poisoned")
    }

    /// Registers a wait for `id`.
    pub(crate) fn register(&self, id: TxId) -> Result<oneshot::Receiver<Committed>, AdmitError> {
        let mut by_id = self.lock();
        let same = by_id.get(&id).map_or(0, Vec::len);
        if by_id.len() >= WAITERS_MAX || same >= WAITERS_PER_TX_MAX {
            return Err(AdmitError::Busy {
                pending_txs: by_id.len(),
                pending_bytes: 0,
            });
        }
        let (tx, rx) = oneshot::channel();
        by_id.entry(id).or_default().push(tx);
        Ok(rx)
    }

    /// Drops the closed waits of `id` (callers drop their receiver first).
    pub(crate) fn forget(&self, id: &TxId) {
        let mut by_id = self.lock();
        if let Some(list) = by_id.get_mut(id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                by_id.remove(id);
            }
        }
    }

    /// Answers everyone waiting on a transaction of the block at `height` (hash `hash`,
    /// transaction ids `ids` in block order).
    pub(crate) fn block_applied(&self, height: u64, hash: Hash, ids: &[TxId]) {
        let mut by_id = self.lock();
        if by_id.is_empty() {
            return;
        }
        for (index, id) in ids.iter().enumerate() {
            for w in by_id.remove(id).unwrap_or_default() {
                let _ = w.send(Committed {
                    height,
                    index: index as u32,
                    block_hash: hash,
                });
            }
        }
    }

    /// Transactions waited on now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
