//! [`Shared`]: what the node's tasks and HTTP handlers share, behind methods. Each flow
//! keeps its own state in a type of its own module (the admission gate, the waiters) and
//! reaches the rest through these methods; the mempool's lock is held only for its short
//! steps (ARCHITECTURE.md, invariant 21).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ordo_api::Committed;
use ordo_crypto::PublicKey;
use ordo_genesis::Genesis;
use ordo_ledger::{ChainTip, Policy, Store, StoreError, TxId};
use tokio::sync::{Notify, Semaphore, watch};

use crate::certify::Collected;
use crate::clock::Clock;
use crate::consensus::Pace;
use crate::consensus::{self, AppliedBlock, OrdoRaft, RaftStatus, RecentBlocks, Role};
use crate::gate::Gate;
use crate::heal::StorageHealth;
use crate::mempool::{AdmitError, Mempool};
use crate::network::Network;
use crate::precheck::Prechecked;
use crate::timings::Timings;
use crate::waiters::Waiters;

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Transactions admitted through this node's API.
    pub(crate) txs_accepted: AtomicU64,
    /// Transactions refused at this node's API.
    pub(crate) txs_refused: AtomicU64,
    /// Transactions forwarded to the leader (including re-sends).
    pub(crate) txs_forwarded: AtomicU64,
    /// Blocks this node proposed that committed.
    pub(crate) blocks_proposed: AtomicU64,
    /// Blocks this node proposed that did not commit.
    pub(crate) proposals_failed: AtomicU64,
}

/// Who this node is.
#[derive(Clone, Debug)]
pub(crate) struct Me {
    /// Its name in the genesis.
    pub(crate) name: String,
    /// Its key.
    pub(crate) public_key: PublicKey,
    /// Its Raft node id.
    pub(crate) node_id: u64,
}

/// What [`Shared::new`] is made of.
pub(crate) struct Parts {
    pub(crate) me: Me,
    pub(crate) genesis: Genesis,
    pub(crate) policy: Arc<Policy>,
    pub(crate) store: Arc<Store>,
    pub(crate) raft: OrdoRaft,
    pub(crate) network: Network,
    pub(crate) mempool: Mempool,
    pub(crate) pool_limit: usize,
    pub(crate) tip: watch::Receiver<ChainTip>,
    pub(crate) recent: RecentBlocks,
    pub(crate) timings: Arc<Timings>,
    pub(crate) pace: Arc<Pace>,
    pub(crate) clock: Arc<Clock>,
    pub(crate) prechecked: Arc<Prechecked>,
    pub(crate) attestations: Collected,
    pub(crate) stopping: watch::Receiver<bool>,
}

/// State shared by the node's tasks and API handlers.
pub(crate) struct Shared {
    me: Me,
    genesis: Genesis,
    policy: Arc<Policy>,
    store: Arc<Store>,
    raft: OrdoRaft,
    network: Network,
    mempool: Mutex<Mempool>,
    /// The mempool's transaction limit.
    pool_limit: usize,
    /// Validators by node id: name and key.
    validators: BTreeMap<u64, (String, PublicKey)>,
    /// The latest applied tip, as the applied-tip follower has seen it.
    tip: watch::Receiver<ChainTip>,
    recent: RecentBlocks,
    counters: Counters,
    timings: Arc<Timings>,
    pace: Arc<Pace>,
    clock: Arc<Clock>,
    prechecked: Arc<Prechecked>,
    attestations: Collected,
    started: Instant,
    stopping: watch::Receiver<bool>,
    waiters: Waiters,
    gate: Gate,
    /// Turns for checking forwarded submissions (`crate::forward`).
    forward_checks: Arc<Semaphore>,
    wake_proposer: Notify,
    storage: Arc<StorageHealth>,
}

impl Shared {
    /// The shared state of a node made of `parts`; `forward_checks` turns for checking
    /// forwarded submissions at once.
    pub(crate) fn new(parts: Parts, forward_checks: usize) -> Shared {
        let validators = parts
            .genesis
            .validators
            .iter()
            .map(|v| {
                (
                    consensus::node_id(&v.public_key),
                    (v.name.clone(), v.public_key),
                )
            })
            .collect();
        Shared {
            me: parts.me,
            genesis: parts.genesis,
            policy: parts.policy,
            store: parts.store,
            raft: parts.raft,
            network: parts.network,
            mempool: Mutex::new(parts.mempool),
            pool_limit: parts.pool_limit,
            validators,
            tip: parts.tip,
            recent: parts.recent,
            counters: Counters::default(),
            timings: parts.timings,
            pace: parts.pace,
            clock: parts.clock,
            prechecked: parts.prechecked,
            attestations: parts.attestations,
            started: Instant::now(),
            stopping: parts.stopping,
            waiters: Waiters::default(),
            gate: Gate::default(),
            forward_checks: Arc::new(Semaphore::new(forward_checks)),
            wake_proposer: Notify::new(),
            storage: Arc::default(),
        }
    }

    /// What is known to be damaged in the ledger, and what was repaired (`crate::heal`).
    pub(crate) fn storage(&self) -> &Arc<StorageHealth> {
        &self.storage
    }

    /// Who this node is.
    pub(crate) fn me(&self) -> &Me {
        &self.me
    }

    /// The chain's genesis.
    pub(crate) fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The chain's rules.
    pub(crate) fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The ledger (and Raft storage).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Raft (for the flows that drive it: the proposer, the applied-tip follower).
    pub(crate) fn raft(&self) -> &OrdoRaft {
        &self.raft
    }

    /// The validator network.
    pub(crate) fn network(&self) -> &Network {
        &self.network
    }

    /// The pending transactions, locked: hold it only for a short step.
    pub(crate) fn pool(&self) -> MutexGuard<'_, Mempool> {
        self.mempool.lock().expect("mempool lock poisoned")
    }

    /// Pending transactions and their bytes.
    pub(crate) fn pool_size(&self) -> (usize, u64) {
        let pool = self.pool();
        (pool.len(), pool.bytes())
    }

    /// Whether `id` is pending here.
    pub(crate) fn is_pending(&self, id: &TxId) -> bool {
        self.pool().contains(id)
    }

    /// Whether the mempool holds as many transactions as it may.
    pub(crate) fn pool_full(&self) -> bool {
        self.pool().len() >= self.pool_limit
    }

    /// The latest applied tip, as the applied-tip follower has published it.
    pub(crate) fn tip(&self) -> ChainTip {
        *self.tip.borrow()
    }

    /// A watch of [`Shared::tip`].
    pub(crate) fn tip_watch(&self) -> watch::Receiver<ChainTip> {
        self.tip.clone()
    }

    /// The last blocks applied, with their transaction ids.
    pub(crate) fn recent(&self) -> &RecentBlocks {
        &self.recent
    }

    /// The node's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How long each pipeline stage takes.
    pub(crate) fn timings(&self) -> &Timings {
        &self.timings
    }

    /// How fast this node's synced log writes are (and, leading, its followers').
    pub(crate) fn pace(&self) -> &Arc<Pace> {
        &self.pace
    }

    /// The validators' time (`crate::clock`).
    pub(crate) fn clock(&self) -> &Arc<Clock> {
        &self.clock
    }

    /// Signatures checked ahead of their blocks (following), and announcing (leading).
    pub(crate) fn prechecked(&self) -> &Arc<Prechecked> {
        &self.prechecked
    }

    /// The attestations of the uncertified tail (`crate::attest`).
    pub(crate) fn attestations(&self) -> &Collected {
        &self.attestations
    }

    /// How long the node has run.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the node is shutting down.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Completes once the node is shutting down.
    pub(crate) async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// A watch that turns true when the node shuts down.
    pub(crate) fn stopping_watch(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// The clients waiting for commits.
    pub(crate) fn waiters(&self) -> &Waiters {
        &self.waiters
    }

    /// The admission gate.
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Turns for checking forwarded submissions.
    pub(crate) fn forward_checks(&self) -> &Arc<Semaphore> {
        &self.forward_checks
    }

    /// Wakes the proposer (transactions arrived, a block was applied, the node stops).
    pub(crate) fn wake_proposer(&self) {
        self.wake_proposer.notify_one();
    }

    /// What [`Shared::wake_proposer`] signals.
    pub(crate) fn proposer_wakeup(&self) -> &Notify {
        &self.wake_proposer
    }

    /// This node's Raft state now.
    pub(crate) fn raft_status(&self) -> RaftStatus {
        consensus::status(&self.raft)
    }

    /// The current leader's node id, if one is known.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.raft_status().leader
    }

    /// Whether this node is the leader.
    pub(crate) fn is_leader(&self) -> bool {
        let st = self.raft_status();
        st.role == Role::Leader && st.leader == Some(self.me.node_id)
    }

    /// Name and key of a validator by node id.
    pub(crate) fn validator(&self, id: u64) -> Option<&(String, PublicKey)> {
        self.validators.get(&id)
    }

    /// The key of the leader this node knows, if it knows one.
    pub(crate) fn leader_key(&self) -> Option<PublicKey> {
        self.leader()
            .and_then(|id| self.validator(id))
            .map(|(_, key)| *key)
    }

    /// Where a committed transaction is, if it is.
    pub(crate) fn committed(&self, id: &TxId) -> Option<Committed> {
        let (height, index) = self.store.tx_location(id).ok().flatten()?;
        let block_hash = self.store.block(height).ok().flatten()?.hash();
        Some(Committed {
            height,
            index,
            block_hash,
        })
    }

    /// The height a transaction was committed at, if it was.
    pub(crate) fn committed_height(&self, id: &TxId) -> Option<u64> {
        self.store.tx_location(id).ok().flatten().map(|(h, _)| h)
    }

    /// The applied block at `height` with its transaction ids: from the recent blocks,
    /// else from the ledger (`None` if the ledger does not reach `height`).
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub(crate) fn applied_block(&self, height: u64) -> Result<Option<AppliedBlock>, StoreError> {
        if let Some(b) = self.recent.get(height) {
            return Ok(Some(b));
        }
        Ok(self.store.block(height)?.map(|block| AppliedBlock {
            ids: block.tx_ids().into(),
            hash: block.hash(),
            block: Arc::new(block),
        }))
    }

    /// Waits until `id` is committed, for at most `timeout`. `None` on timeout, or when the
    /// node stops first.
    ///
    /// # Errors
    /// [`AdmitError::Busy`] when too many clients are already waiting.
    pub(crate) async fn wait_committed(
        &self,
        id: TxId,
        timeout: Duration,
    ) -> Result<Option<Committed>, AdmitError> {
        let rx = self.waiters.register(id)?;
        // Registered before looking, so a commit between the two is not missed.
        if let Some(c) = self.committed(&id) {
            drop(rx);
            self.waiters.forget(&id);
            return Ok(Some(c));
        }
        let waited = tokio::select! {
            r = tokio::time::timeout(timeout, rx) => r.ok().and_then(Result::ok),
            () = self.stopped() => None,
        };
        match waited {
            Some(c) => Ok(Some(c)),
            None => {
                self.waiters.forget(&id);
                Ok(self.committed(&id))
            }
        }
    }
}
