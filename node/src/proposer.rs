//! The leader's proposer: cut a block from the mempool, build and sign it on the chain's
//! last block, propose it through Raft, and put its transactions back if it does not commit.
//!
//! "The chain's last block" is the last block in this node's Raft log when that is ahead
//! of the ledger (a new leader's log may end in blocks of the previous term that are not
//! applied yet; Raft will commit them), otherwise the ledger tip. Followers verify against
//! the same parent, so every block in the log extends the one before it.
//!
//! One block is in flight at a time; the call returns once the block is committed and
//! applied on this node (or has failed). Transactions come from the mempool, which verified
//! them on admission, and the block is built by the ledger's builder, so the leader's block
//! satisfies `verify_block` by construction.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::async_runtime::WatchReceiver;
use ordo_crypto::Keypair;
use ordo_ledger::{ChainTip, Policy, Store, build_block};

use crate::consensus::{ApplyOutcome, BlockEntry, LogStore, OrdoRaft, node_id};
use crate::mempool::Mempool;

/// What one proposal step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposed {
    /// This node is not the leader.
    NotLeader,
    /// Nothing to cut yet.
    Nothing,
    /// A block committed.
    Committed {
        /// Its height.
        height: u64,
        /// Its transactions.
        n_txs: usize,
    },
    /// The block did not commit; its transactions went back to the mempool.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Proposes blocks while this node leads.
pub struct Proposer {
    raft: OrdoRaft,
    log: LogStore,
    store: Arc<Store>,
    policy: Arc<Policy>,
    key: Keypair,
}

impl Proposer {
    /// A proposer signing with `key` (this validator's key), reading `log` and `store`.
    pub fn new(
        raft: OrdoRaft,
        log: LogStore,
        store: Arc<Store>,
        policy: Arc<Policy>,
        key: Keypair,
    ) -> Proposer {
        Proposer {
            raft,
            log,
            store,
            policy,
            key,
        }
    }

    /// The block the next proposal extends: the log's last block when it is ahead of the
    /// ledger, else the ledger tip.
    fn parent(&self) -> Result<ChainTip, String> {
        let ledger = self.store.tip();
        match self
            .log
            .last_block_through(u64::MAX)
            .map_err(|e| e.to_string())?
        {
            Some(block) if block.header.height > ledger.height => Ok(block.tip()),
            _ => Ok(ledger),
        }
    }

    /// One step: if this node leads and the mempool should cut at `now`, propose a block
    /// stamped `now_ms` and wait for it to commit.
    pub async fn step(&self, pool: &Mutex<Mempool>, now: Instant, now_ms: u64) -> Proposed {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(node_id(&self.key.public())) {
            return Proposed::NotLeader;
        }
        let parent = match self.parent() {
            Ok(parent) => parent,
            Err(reason) => return Proposed::Failed { reason },
        };
        let txs = {
            let mut pool = pool.lock().expect("mempool lock poisoned");
            if !pool.should_cut(now) {
                return Proposed::Nothing;
            }
            pool.cut(parent.height + 1)
        };
        if txs.is_empty() {
            return Proposed::Nothing;
        }
        let n_txs = txs.len();
        let block = build_block(
            &parent,
            &self.policy.chain_id,
            txs,
            &self.key,
            now_ms,
            metrics.current_term,
        );
        let reason = match self
            .raft
            .client_write(BlockEntry(Arc::new(block.clone())))
            .await
        {
            Ok(resp) => match resp.data {
                ApplyOutcome::Appended { height, .. } => {
                    return Proposed::Committed { height, n_txs };
                }
                other => format!("{other:?}"),
            },
            Err(e) => e.to_string(),
        };
        let next = self.store.tip().height + 1;
        let committed =
            |id: &ordo_ledger::TxId| self.store.tx_location(id).ok().flatten().map(|(h, _)| h);
        pool.lock()
            .expect("mempool lock poisoned")
            .requeue(block.txs, next, committed, now);
        tracing::warn!(%reason, "proposed block did not commit; transactions requeued");
        Proposed::Failed { reason }
    }
}
