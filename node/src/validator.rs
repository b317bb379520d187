//! The running validator: storage, network, Raft, mempool, proposer and the client API,
//! wired together.
//!
//! Tasks, all stopped by [`Validator::shutdown`]:
//! * **inbound** dispatches peer requests by kind: Raft RPCs to the [`RaftServer`] (which
//!   verifies blocks before they reach the log), block fetches to [`serve_blocks`],
//!   forwarded transactions to the leader's mempool, announced ones to the precheck queue.
//! * **proposer** (acts while this node leads): cuts blocks by the mempool's rules (full,
//!   or the first pending transaction has waited the batch timeout, or only
//!   `idle_batch_wait_ms` when no block is in flight), builds and signs them on the last
//!   proposed block, and hands them to Raft, at most `blocks_in_flight_max` at a time. A
//!   block that does not commit gives its transactions back to the mempool.
//! * **applied** follows the ledger tip: drops committed and expired transactions from the
//!   mempool, answers clients waiting for a commit, and publishes the tip to block streams.
//! * **precheck** (on followers): verifies the signatures of transactions the leader
//!   announces as it admits them, so that blocks carrying them are checked faster
//!   ([`crate::prechecked`]).
//! * **resend** (on followers): transactions still pending a few seconds after they were
//!   forwarded go to the leader again, so a leader change does not strand them.
//! * **api**: the HTTP server ([`crate::api`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use ordo_crypto::{Keypair, PublicKey};
use ordo_genesis::Genesis;
use ordo_ledger::{
    ChainTip, Policy, SignedTransaction, Store, StoreError, TxError, TxId, build_block_with_ids,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::NodeConfig;
use crate::consensus::{
    self, AppliedBlock, ApplyOutcome, OrdoRaft, RaftServer, RaftSettings, RecentBlocks, Role,
    StatusWatch, TxBytes, decode_internal, encode_internal, node_id, node_ids,
    open_consensus_storage, open_store,
};
use crate::mempool::{Admission, AdmitError, Mempool};
use crate::network::{Frame, InboundRequest, Kind, Network, NetworkConfig};
use crate::prechecked::Prechecked;
use crate::sync::{PeerBlockSource, serve_blocks};
use crate::timings::Timings;

/// Most transactions that clients wait on at once.
pub const WAITERS_MAX: usize = 100_000;
/// Most clients waiting on the same transaction.
pub const WAITERS_PER_TX_MAX: usize = 64;
/// Most client submissions being admitted at once on one node; more wait in a queue.
pub const ADMISSIONS_MAX: usize = 4;
/// Most client submissions waiting for a turn to be admitted; more get 503 busy.
pub const ADMISSION_QUEUE_MAX: usize = 256;
/// Longest a client submission waits for a turn before it gets 503 busy.
pub const ADMISSION_WAIT_MAX: Duration = Duration::from_secs(2);
/// A leader announces what it admits only while at most this many transactions are pending
/// (a few blocks' worth, far below what followers remember, `PRECHECKED_MAX`).
const ANNOUNCE_BACKLOG_MAX: usize = 8_192;
const _: () = assert!(4 * ANNOUNCE_BACKLOG_MAX <= crate::prechecked::PRECHECKED_MAX);
/// Most transactions in one forwarded batch.
const FORWARD_TXS_MAX: usize = 4096;
/// After the leader refuses forwarded transactions because its mempool is full, a follower
/// refuses client submissions at the door for this long (what a client told 503 waits
/// anyway), instead of forwarding batches the leader would refuse too.
const LEADER_BUSY_PAUSE: Duration = Duration::from_secs(1);
/// Most checks of forwarded submissions a follower runs at once (see
/// [`Prechecked::check_forwarded`]); a submission that finds them all busy is left to the
/// announcement or block check.
const FORWARD_CHECKS_MAX: usize = 2;
/// A follower re-sends a pending transaction to the leader after this long.
const RESEND_AFTER: Duration = Duration::from_secs(3);
/// How long shutdown waits for tasks to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the validator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The genesis file is missing or invalid.
    #[error(transparent)]
    Genesis(#[from] ordo_genesis::GenesisError),
    /// The key file cannot be used.
    #[error(transparent)]
    Key(#[from] ordo_crypto::KeyFileError),
    /// The key is not a validator of this chain.
    #[error("key {0} (from the key file) is not a validator in the genesis")]
    NotValidator(PublicKey),
    /// The data directory cannot be opened.
    #[error(transparent)]
    Store(#[from] ordo_ledger::StoreError),
    /// Networking could not start.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The API address cannot be bound.
    #[error("cannot listen for the HTTP API on {addr}: {source}")]
    Api {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Consensus could not start.
    #[error("cannot start consensus: {0}")]
    Consensus(String),
}

/// Why a submission was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Refused by admission (invalid, duplicate, or the pool is full).
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// The leader refused it for a reason this node did not see.
    #[error("refused by the leader: {0}")]
    Refused(String),
    /// No leader is known: an election is under way or a majority is unreachable.
    #[error("no leader is known; retry later")]
    NoLeader,
    /// The leader's mempool is full.
    #[error("the leader's mempool is full; retry later")]
    LeaderBusy,
    /// The leader could not be reached.
    #[error("the leader is unreachable: {0}")]
    Unavailable(String),
}

/// Where a committed transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Committed {
    /// Height of its block.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// Hash of its block.
    pub block_hash: ordo_crypto::Hash,
}

/// What a leader answers for each forwarded transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Verdict {
    Accepted,
    AlreadyPending,
    AlreadyCommitted {
        height: u64,
    },
    Busy,
    Refused(String),
    NotLeader,
    /// Added after the others: variants are encoded by position.
    Invalid(TxError),
}

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Transactions admitted through this node's API.
    pub txs_accepted: AtomicU64,
    /// Transactions refused at this node's API.
    pub txs_refused: AtomicU64,
    /// Transactions forwarded to the leader (including re-sends).
    pub txs_forwarded: AtomicU64,
    /// Blocks this node proposed that committed.
    pub blocks_proposed: AtomicU64,
    /// Blocks this node proposed that did not commit.
    pub proposals_failed: AtomicU64,
}

/// State shared by the node's tasks and API handlers.
pub struct Shared {
    /// This validator's name in the genesis.
    pub name: String,
    /// This validator's key.
    pub public_key: PublicKey,
    /// Its Raft node id.
    pub node_id: u64,
    /// The chain's genesis.
    pub genesis: Genesis,
    /// Rules derived from the genesis.
    pub policy: Arc<Policy>,
    /// The ledger (and Raft storage).
    pub store: Arc<Store>,
    /// Raft.
    pub raft: OrdoRaft,
    /// The validator network.
    pub network: Network,
    /// Pending transactions.
    pub mempool: Mutex<Mempool>,
    /// Validators by node id: name and key.
    pub validators: BTreeMap<u64, (String, PublicKey)>,
    /// The latest applied tip, as seen by the applied task.
    pub tip: watch::Receiver<ChainTip>,
    /// The last blocks applied, with their transaction ids.
    pub recent: RecentBlocks,
    /// Counters.
    pub counters: Counters,
    /// How long each pipeline stage takes (exported as histograms).
    pub timings: Arc<Timings>,
    /// Signatures checked ahead of their blocks (as follower), and announcing (as leader).
    pub prechecked: Arc<Prechecked>,
    /// When the node started.
    pub started: Instant,
    /// Flips to true when the node is shutting down.
    pub stopping: watch::Receiver<bool>,
    waiters: Mutex<HashMap<TxId, Vec<oneshot::Sender<Committed>>>>,
    /// The mempool's transaction limit.
    pool_limit: usize,
    wake_proposer: Notify,
    /// Admissions in progress (each holds the mempool for its checks): bounded, so that a
    /// flood of submissions is refused at the door instead of queueing on the mempool.
    admissions: Arc<tokio::sync::Semaphore>,
    /// Client submissions waiting for an admission turn.
    admission_queue: AtomicUsize,
    /// Which leader answered a forward with a full mempool, and until when this follower
    /// refuses client submissions at the door while that node leads ([`LEADER_BUSY_PAUSE`]).
    leader_busy_until: Mutex<Option<(u64, Instant)>>,
    /// Turns for checking forwarded submissions ([`FORWARD_CHECKS_MAX`]).
    forward_checks: Arc<tokio::sync::Semaphore>,
}

/// A running validator.
pub struct Validator {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Validator {
    /// Starts a validator from `config`: opens the data directory, joins the network,
    /// starts Raft (initializing it on first start with the genesis validators) and serves
    /// the HTTP API.
    ///
    /// # Errors
    /// [`StartError`] naming what cannot be used.
    pub async fn start(config: &NodeConfig) -> Result<Validator, StartError> {
        let genesis = Genesis::load(&config.genesis)?;
        let key = ordo_crypto::load_key_file(&config.key_file)?;
        let me = genesis
            .validator(&key.public())
            .ok_or(StartError::NotValidator(key.public()))?
            .clone();
        let api_listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| StartError::Api {
                addr: config.api,
                source,
            })?;
        let api_addr = api_listener
            .local_addr()
            .map_err(|source| StartError::Api {
                addr: config.api,
                source,
            })?;
        let policy = Arc::new(genesis.policy());
        // Process-wide: validators started in one process (tests) share the last setting.
        ordo_crypto::set_batch_threads(config.verify.threads());
        let store = open_store(
            &config.data_dir,
            &genesis.identity(),
            &config.storage.tuning(),
        )?;
        let (stop, stopping) = watch::channel(false);

        let keys: Vec<PublicKey> = genesis.validators.iter().map(|v| v.public_key).collect();
        let others: Vec<PublicKey> = keys
            .iter()
            .copied()
            .filter(|k| *k != key.public())
            .collect();
        let mut bootstrap = config.bootstrap.clone();
        for v in genesis
            .validators
            .iter()
            .filter(|v| v.public_key != key.public())
        {
            bootstrap.extend(v.addresses.iter().cloned());
        }
        let net_config = NetworkConfig {
            listen: config.listen.clone(),
            bootstrap,
            mdns: config.mdns,
            request_timeout: Duration::from_secs(10),
        };
        let (network, inbound) =
            Network::start(&key, &keys, &net_config, stopped(stopping.clone()))?;

        let source = Arc::new(PeerBlockSource::new(network.clone(), others.clone()));
        let (log, sm) = open_consensus_storage(store.clone(), policy.clone(), source)
            .map_err(|e| StartError::Consensus(e.to_string()))?;
        let recent = sm.recent();
        let timings = log.timings();
        let c = &genesis.consensus;
        let settings = RaftSettings {
            heartbeat_ms: c.heartbeat_interval_ms,
            election_min_ms: c.election_timeout_min_ms,
            election_max_ms: c.election_timeout_max_ms,
            snapshot_every: config.raft.snapshot_every_blocks,
            keep: config.raft.keep_blocks,
        };
        let raft = consensus::start(
            node_id(&key.public()),
            &genesis.chain_id,
            settings,
            network.clone(),
            log.clone(),
            sm,
        )
        .await
        .map_err(StartError::Consensus)?;
        let ids = node_ids(keys.iter().copied()).map_err(StartError::Consensus)?;
        consensus::initialize(&raft, &ids)
            .await
            .map_err(StartError::Consensus)?;

        let validators = genesis
            .validators
            .iter()
            .map(|v| (node_id(&v.public_key), (v.name.clone(), v.public_key)))
            .collect();
        let (tip_tx, tip) = watch::channel(store.tip());
        let (prechecked, announced) = Prechecked::new(policy.limits.tx_bytes_max, &others);
        let shared = Arc::new(Shared {
            name: me.name.clone(),
            public_key: key.public(),
            node_id: node_id(&key.public()),
            mempool: Mutex::new(Mempool::new(
                policy.clone(),
                config.mempool.limits(),
                Duration::from_millis(genesis.consensus.batch_timeout_ms),
            )),
            genesis,
            policy: policy.clone(),
            store: store.clone(),
            raft: raft.clone(),
            network,
            validators,
            tip,
            recent,
            counters: Counters::default(),
            timings,
            prechecked: prechecked.clone(),
            started: Instant::now(),
            stopping: stopping.clone(),
            waiters: Mutex::new(HashMap::new()),
            pool_limit: config.mempool.txs_max,
            wake_proposer: Notify::new(),
            admissions: Arc::new(tokio::sync::Semaphore::new(ADMISSIONS_MAX)),
            admission_queue: AtomicUsize::new(0),
            leader_busy_until: Mutex::new(None),
            forward_checks: Arc::new(tokio::sync::Semaphore::new(FORWARD_CHECKS_MAX)),
        });

        let server = RaftServer::new(raft.clone(), log, store, policy, prechecked.clone());
        let proposer = Proposer {
            shared: shared.clone(),
            key,
            in_flight_max: config.raft.blocks_in_flight_max,
            idle_wait: Duration::from_millis(config.raft.idle_batch_wait_ms),
        };
        let mut tasks = vec![
            tokio::spawn(serve_inbound(shared.clone(), server, inbound)),
            tokio::spawn(proposer.run()),
            tokio::spawn(follow_applied(shared.clone(), tip_tx)),
            tokio::spawn(resend_stale(shared.clone())),
            tokio::spawn(prechecked.clone().run(announced, stopping.clone())),
            tokio::spawn(crate::api::serve(shared.clone(), api_listener)),
        ];
        for follower in others {
            tasks.push(tokio::spawn(prechecked.clone().send_announcements(
                follower,
                shared.network.clone(),
                stopping.clone(),
            )));
        }
        tracing::info!(
            name = %shared.name,
            key = %shared.public_key,
            api = %api_addr,
            chain = %shared.policy.chain_id,
            tip = shared.store.tip().height,
            verify_threads = ordo_crypto::batch_threads(),
            "validator started"
        );
        Ok(Validator {
            shared,
            api_addr,
            stop,
            tasks,
        })
    }

    /// The bound address of the HTTP API.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The node's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops the node: the API stops accepting and answers the requests in progress
    /// (clients waiting for a commit hear where their transaction stands), the proposer and
    /// the other tasks stop, then Raft and the network, and the database is flushed. Every
    /// acknowledged commit is already durable; this only makes the exit tidy.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        let _ = self.stop.send(true);
        self.shared.wake_proposer.notify_one();
        let mut tasks = self.tasks;
        let finished =
            tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(tasks.iter_mut())).await;
        if finished.is_err() {
            tracing::warn!("tasks did not stop within {SHUTDOWN_GRACE:?}; aborting them");
            for task in &tasks {
                task.abort();
            }
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.shared.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "raft did not shut down cleanly"),
            Err(_) => tracing::warn!("raft did not shut down within {SHUTDOWN_GRACE:?}"),
        }
        if let Err(e) = self.shared.store.db().flush() {
            tracing::warn!(error = %e, "cannot flush the database");
        }
        tracing::info!("stopped");
    }

    /// Completes if Raft stops on its own (a fatal storage error): the node can no longer
    /// order anything and should exit.
    pub async fn failed(&self) -> String {
        let mut watch = StatusWatch::new(&self.shared.raft);
        loop {
            if let Some(e) = consensus::status(&self.shared.raft).failure {
                return e;
            }
            if !watch.changed().await {
                return "raft stopped".into();
            }
        }
    }
}

/// Completes once `stopping` turns true (or its sender is gone).
fn stopped(mut stopping: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let _ = stopping.wait_for(|s| *s).await;
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    /// A turn to admit a client submission. When [`ADMISSIONS_MAX`] are being admitted,
    /// it waits in a queue of at most [`ADMISSION_QUEUE_MAX`] for at most
    /// [`ADMISSION_WAIT_MAX`], so that a burst is absorbed rather than refused. `None`
    /// (the client should retry later) when the mempool is full, the queue is full, the
    /// wait ran out, or (following) the leader refused a forward with a full mempool less
    /// than [`LEADER_BUSY_PAUSE`] ago.
    pub async fn admission_turn(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let full = {
            let pool = self.pool();
            pool.len() >= self.pool_limit
        };
        if full || self.leader_busy() {
            return None;
        }
        if let Ok(turn) = self.admissions.clone().try_acquire_owned() {
            return Some(turn);
        }
        // Counted out again however the wait ends, the client's going away included.
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _queued = Queued(&self.admission_queue);
        if self.admission_queue.fetch_add(1, Ordering::Relaxed) >= ADMISSION_QUEUE_MAX {
            return None;
        }
        tokio::time::timeout(ADMISSION_WAIT_MAX, self.admissions.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// The current leader's node id, if one is known.
    pub fn leader(&self) -> Option<u64> {
        consensus::status(&self.raft).leader
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        let st = consensus::status(&self.raft);
        st.role == Role::Leader && st.leader == Some(self.node_id)
    }

    /// Name and key of a validator by node id.
    pub fn validator(&self, id: u64) -> Option<&(String, PublicKey)> {
        self.validators.get(&id)
    }

    /// Where a committed transaction is, if it is.
    pub fn committed(&self, id: &TxId) -> Option<Committed> {
        let (height, index) = self.store.tx_location(id).ok().flatten()?;
        let block_hash = self.store.block(height).ok().flatten()?.hash();
        Some(Committed {
            height,
            index,
            block_hash,
        })
    }

    /// The applied block at `height` with its transaction ids: from the recent blocks,
    /// else from the ledger (`None` if the ledger does not reach `height`).
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub fn applied_block(&self, height: u64) -> Result<Option<AppliedBlock>, StoreError> {
        if let Some(b) = self.recent.get(height) {
            return Ok(Some(b));
        }
        Ok(self.store.block(height)?.map(|block| AppliedBlock {
            ids: block.tx_ids().into(),
            hash: block.hash(),
            block: Arc::new(block),
        }))
    }

    fn committed_height(&self, id: &TxId) -> Option<u64> {
        self.store.tx_location(id).ok().flatten().map(|(h, _)| h)
    }

    /// Whether this node follows a leader that refused a forward with a full mempool less
    /// than [`LEADER_BUSY_PAUSE`] ago (a new leader is not held to it).
    fn leader_busy(&self) -> bool {
        let busy = *self.leader_busy_until.lock().expect("busy lock poisoned");
        busy.is_some_and(|(leader, until)| {
            Instant::now() < until && self.leader() == Some(leader) && !self.is_leader()
        })
    }

    /// Admits `txs` on this node (all checks, signatures batch-verified off the async
    /// threads), then, unless this node leads, forwards the admitted ones to the leader.
    /// Returns the transactions' ids and one result per transaction, in order.
    pub async fn submit(
        self: &Arc<Self>,
        txs: Vec<SignedTransaction>,
    ) -> (Vec<TxId>, Vec<Result<TxId, SubmitError>>) {
        let this = self.clone();
        // Each node checks each signature once: the leader at admission, a follower before
        // it appends the block. So a follower does not check here; the leader's verdict on
        // the forwarded transaction comes back to the client.
        let verify = self.is_leader();
        // The pool takes the originals: a follower keeps copies to forward, a leader with
        // a short backlog keeps their bytes to announce to its followers.
        let copies = (!verify).then(|| txs.clone());
        let (ids, admitted, announced) = tokio::task::spawn_blocking(move || {
            let raw: Option<Vec<Vec<u8>>> = (verify && this.announcing())
                .then(|| txs.iter().map(SignedTransaction::to_bytes).collect());
            let (ids, admitted) = this.admit(txs, verify);
            (ids, admitted, raw)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let mut results: Vec<Result<TxId, SubmitError>> = admitted
            .into_iter()
            .map(|r| r.map_err(SubmitError::Admit))
            .collect();
        let fresh: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
        if fresh.is_empty() {
            return (ids, self.count(results));
        }
        if self.is_leader() {
            self.wake_proposer.notify_one();
            if let Some(mut raw) = announced {
                let admitted: Vec<Vec<u8>> =
                    fresh.iter().map(|i| std::mem::take(&mut raw[*i])).collect();
                self.prechecked.announce(&admitted);
            }
            return (ids, self.count(results));
        }
        let leader_id = self.leader();
        let verdicts = match (copies, leader_id.and_then(|id| self.validator(id))) {
            (Some(copies), Some((_, leader))) => {
                let mut wanted = fresh.iter().peekable();
                let batch: Arc<Vec<SignedTransaction>> = Arc::new(
                    copies
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| wanted.next_if_eq(&i).is_some())
                        .map(|(_, tx)| tx)
                        .collect(),
                );
                self.check_while_forwarding(&batch, fresh.iter().map(|&i| ids[i]));
                self.forward(leader, &batch).await
            }
            // No leader known, or this node led when it admitted them and has lost office
            // since: the client retries (503), and meets the next leader.
            _ => vec![Err(SubmitError::NoLeader); fresh.len()],
        };
        let mut gone = Vec::new();
        let mut checked = Vec::new();
        for (verdict, slot) in verdicts.into_iter().zip(fresh) {
            let Ok(id) = results[slot] else { continue };
            let outcome = match verdict {
                Err(e) => Err(e),
                // Only `Accepted` means the leader checked this copy's signature: the id
                // does not cover the signature, so an `AlreadyPending` copy may differ.
                Ok(Verdict::Accepted) => {
                    checked.push(id);
                    Ok(id)
                }
                Ok(Verdict::AlreadyPending) => Ok(id),
                Ok(Verdict::Invalid(error)) => {
                    Err(SubmitError::Admit(AdmitError::Invalid { id, error }))
                }
                Ok(Verdict::AlreadyCommitted { height }) => {
                    Err(SubmitError::Admit(AdmitError::AlreadyCommitted {
                        id,
                        height,
                    }))
                }
                Ok(Verdict::Busy) => {
                    if let Some(leader) = leader_id {
                        *self.leader_busy_until.lock().expect("busy lock poisoned") =
                            Some((leader, Instant::now() + LEADER_BUSY_PAUSE));
                    }
                    Err(SubmitError::LeaderBusy)
                }
                Ok(Verdict::Refused(reason)) => Err(SubmitError::Refused(reason)),
                Ok(Verdict::NotLeader) => Err(SubmitError::NoLeader),
            };
            if outcome.is_err() {
                gone.push(id);
            }
            results[slot] = outcome;
        }
        let mut pool = self.pool();
        pool.mark_verified(&checked);
        if !gone.is_empty() {
            pool.remove_pending(&gone);
        }
        drop(pool);
        (ids, self.count(results))
    }

    /// Following, checks the signatures of `batch` (with the ids in `ids`) on a blocking
    /// thread while the leader checks them at admission: this node verifies them before
    /// their block comes either way, and checked now, its acknowledgement of the block
    /// need not wait for the check of the leader's announcement, which only starts once
    /// the leader has admitted them. Only while the backlog is short (as for
    /// announcements: under overload most forwards are refused) and a turn is free.
    fn check_while_forwarding(
        &self,
        batch: &Arc<Vec<SignedTransaction>>,
        ids: impl Iterator<Item = TxId>,
    ) {
        if !self.announcing() {
            return;
        }
        let Ok(turn) = self.forward_checks.clone().try_acquire_owned() else {
            return;
        };
        let ids: Vec<TxId> = ids.collect();
        let (batch, prechecked) = (batch.clone(), self.prechecked.clone());
        tokio::task::spawn_blocking(move || {
            prechecked.check_forwarded(&ids, &batch);
            drop(turn);
        });
    }

    fn count(&self, results: Vec<Result<TxId, SubmitError>>) -> Vec<Result<TxId, SubmitError>> {
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.counters.txs_accepted.fetch_add(ok, Ordering::Relaxed);
        self.counters
            .txs_refused
            .fetch_add(results.len() as u64 - ok, Ordering::Relaxed);
        results
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Mempool> {
        self.mempool.lock().expect("mempool lock poisoned")
    }

    /// Admits into this node's mempool; signatures are checked when `verify` (the leader
    /// checks; a follower leaves it to the leader it forwards to). The pool is locked only
    /// to screen and to enter: ids, rules, index lookups and signatures need no lock, so
    /// the proposer and other admissions are not held up by them.
    fn admit(
        &self,
        txs: Vec<SignedTransaction>,
        verify: bool,
    ) -> (Vec<TxId>, Vec<Result<TxId, AdmitError>>) {
        // Read before the committed lookups: `enter` looks again if blocks commit meanwhile.
        let epoch = self.pool().commit_epoch();
        let next = self.store.tip().height + 1;
        let committed = |id: &TxId| self.committed_height(id);
        let mut admission = Admission::new(txs, &self.policy, next, committed, epoch);
        self.pool().screen(&mut admission);
        if verify && admission.has_candidates() {
            admission.verify_signatures();
        }
        let ids = admission.ids().to_vec();
        (ids, self.pool().enter(admission, Instant::now(), committed))
    }

    /// Sends `txs` to the leader, in chunks, and returns its verdict on each (or why the
    /// chunk holding it could not be delivered).
    async fn forward(
        &self,
        leader: &PublicKey,
        txs: &[SignedTransaction],
    ) -> Vec<Result<Verdict, SubmitError>> {
        let mut verdicts = Vec::with_capacity(txs.len());
        for chunk in txs.chunks(FORWARD_TXS_MAX) {
            match self.forward_chunk(leader, chunk).await {
                Ok(got) => verdicts.extend(got.into_iter().map(Ok)),
                Err(e) => verdicts.extend(std::iter::repeat_n(Err(e), chunk.len())),
            }
        }
        verdicts
    }

    async fn forward_chunk(
        &self,
        leader: &PublicKey,
        chunk: &[SignedTransaction],
    ) -> Result<Vec<Verdict>, SubmitError> {
        let raw: Vec<TxBytes> = chunk.iter().map(|t| TxBytes(t.to_bytes())).collect();
        let body = encode_internal(&raw).map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        self.counters
            .txs_forwarded
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let answer = self
            .network
            .request(
                leader,
                Frame {
                    kind: Kind::Transactions,
                    body,
                },
            )
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        if answer.kind != Kind::Transactions {
            return Err(SubmitError::Unavailable(format!(
                "the leader answered with {}",
                String::from_utf8_lossy(&answer.body)
            )));
        }
        let got: Vec<Verdict> = decode_internal(&answer.body, "forward verdicts")
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        if got.len() != chunk.len() {
            return Err(SubmitError::Unavailable(format!(
                "the leader answered {} verdicts for {} transactions",
                got.len(),
                chunk.len()
            )));
        }
        Ok(got)
    }

    /// Answers transactions forwarded by a follower: admitted here if this node leads.
    async fn serve_forwarded(self: Arc<Self>, req: InboundRequest) {
        let frame = match decode_internal::<Vec<TxBytes>>(&req.frame.body, "forwarded transactions")
        {
            Err(e) => Frame {
                kind: Kind::Error,
                body: e.to_string().into_bytes(),
            },
            Ok(raw) if raw.len() > FORWARD_TXS_MAX => Frame {
                kind: Kind::Error,
                body: format!("more than {FORWARD_TXS_MAX} transactions").into_bytes(),
            },
            Ok(raw) => {
                let raw = raw.into_iter().map(|TxBytes(t)| t).collect();
                let verdicts = self.admit_forwarded(raw).await;
                match encode_internal(&verdicts) {
                    Ok(body) => Frame {
                        kind: Kind::Transactions,
                        body,
                    },
                    Err(e) => Frame {
                        kind: Kind::Error,
                        body: e.to_string().into_bytes(),
                    },
                }
            }
        };
        req.respond(frame);
    }

    async fn admit_forwarded(self: &Arc<Self>, raw: Vec<Vec<u8>>) -> Vec<Verdict> {
        if !self.is_leader() {
            return vec![Verdict::NotLeader; raw.len()];
        }
        let max = self.policy.limits.tx_bytes_max;
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(raw.len());
        let mut txs = Vec::new();
        for bytes in &raw {
            match SignedTransaction::from_bytes(bytes, max) {
                Ok(tx) => {
                    txs.push(tx);
                    verdicts.push(None);
                }
                Err(e) => verdicts.push(Some(Verdict::Refused(format!("malformed: {e}")))),
            }
        }
        let Ok(_turn) = self.admissions.clone().acquire_owned().await else {
            return vec![Verdict::Busy; raw.len()];
        };
        let this = self.clone();
        // The backlog is read before admission, as in `submit`.
        let (announce, (_, admitted)) =
            tokio::task::spawn_blocking(move || (this.announcing(), this.admit(txs, true)))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.wake_proposer.notify_one();
        let mut admitted = admitted.into_iter();
        let verdicts: Vec<Verdict> = verdicts
            .into_iter()
            .map(|v| {
                v.unwrap_or_else(|| match admitted.next() {
                    Some(Ok(_)) => Verdict::Accepted,
                    Some(Err(AdmitError::AlreadyPending(_))) => Verdict::AlreadyPending,
                    Some(Err(AdmitError::AlreadyCommitted { height, .. })) => {
                        Verdict::AlreadyCommitted { height }
                    }
                    Some(Err(AdmitError::Busy { .. })) => Verdict::Busy,
                    Some(Err(AdmitError::Invalid { error, .. })) => Verdict::Invalid(error),
                    None => Verdict::Refused("internal: missing admission result".into()),
                })
            })
            .collect();
        if announce {
            let accepted: Vec<Vec<u8>> = raw
                .into_iter()
                .zip(&verdicts)
                .filter(|(_, v)| **v == Verdict::Accepted)
                .map(|(bytes, _)| bytes)
                .collect();
            self.prechecked.announce(&accepted);
        }
        verdicts
    }

    /// Whether a leader announces what it admits now: not while a backlog waits, since
    /// the block would come long after and the followers could have forgotten the check
    /// by then.
    fn announcing(&self) -> bool {
        self.pool().len() <= ANNOUNCE_BACKLOG_MAX
    }

    /// Takes transactions a leader announced (see [`crate::prechecked`]): acknowledged at
    /// once, since checking them is best effort, and queued for checking only when they
    /// come from the leader this node follows.
    fn serve_announcement(&self, mut req: InboundRequest) {
        let body = std::mem::take(&mut req.frame.body);
        let from = req.from;
        req.respond(Frame {
            kind: Kind::Announce,
            body: Vec::new(),
        });
        let from_leader = self
            .leader()
            .and_then(|id| self.validator(id))
            .is_some_and(|(_, key)| *key == from);
        if from_leader && !self.is_leader() {
            self.prechecked.offer(body);
        } else {
            self.prechecked
                .stats
                .dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until `id` is committed, for at most `timeout`. `None` on timeout.
    ///
    /// # Errors
    /// [`AdmitError::Busy`] when too many clients are already waiting.
    pub async fn wait_committed(
        &self,
        id: TxId,
        timeout: Duration,
    ) -> Result<Option<Committed>, AdmitError> {
        let rx = {
            let mut waiters = self.waiters.lock().expect("waiters lock poisoned");
            let same = waiters.get(&id).map_or(0, Vec::len);
            if waiters.len() >= WAITERS_MAX || same >= WAITERS_PER_TX_MAX {
                return Err(AdmitError::Busy {
                    pending_txs: waiters.len(),
                    pending_bytes: 0,
                });
            }
            let (tx, rx) = oneshot::channel();
            waiters.entry(id).or_default().push(tx);
            rx
        };
        // Registered before looking, so a commit between the two is not missed.
        if let Some(c) = self.committed(&id) {
            drop(rx);
            self.forget_waiter(&id);
            return Ok(Some(c));
        }
        let mut stopping = self.stopping.clone();
        let waited = tokio::select! {
            r = tokio::time::timeout(timeout, rx) => r.ok().and_then(Result::ok),
            _ = stopping.wait_for(|s| *s) => None,
        };
        match waited {
            Some(c) => Ok(Some(c)),
            None => {
                self.forget_waiter(&id);
                Ok(self.committed(&id))
            }
        }
    }

    /// Drops the closed waiters of `id` (callers drop their receiver first).
    fn forget_waiter(&self, id: &TxId) {
        let mut waiters = self.waiters.lock().expect("waiters lock poisoned");
        if let Some(list) = waiters.get_mut(id) {
            list.retain(|s| !s.is_closed());
            if list.is_empty() {
                waiters.remove(id);
            }
        }
    }

    /// Clients currently waiting for commits.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().expect("waiters lock poisoned").len()
    }
}

/// Dispatches peer requests by kind.
async fn serve_inbound(
    shared: Arc<Shared>,
    server: RaftServer,
    mut inbound: tokio::sync::mpsc::Receiver<InboundRequest>,
) {
    let mut stopping = shared.stopping.clone();
    loop {
        let req = tokio::select! {
            req = inbound.recv() => match req { Some(r) => r, None => return },
            _ = stopping.wait_for(|s| *s) => return,
        };
        match req.frame.kind {
            Kind::Raft => {
                let server = server.clone();
                tokio::spawn(async move { server.serve(req).await });
            }
            Kind::Blocks => {
                let store = shared.store.clone();
                tokio::task::spawn_blocking(move || serve_blocks(&store, req));
            }
            Kind::Transactions => {
                tokio::spawn(shared.clone().serve_forwarded(req));
            }
            Kind::Announce => shared.serve_announcement(req),
            Kind::Error => req.respond(Frame {
                kind: Kind::Error,
                body: b"an error frame is not a request".to_vec(),
            }),
        }
    }
}

/// Follows the applied tip: cleans the mempool, wakes waiting clients, publishes the tip.
async fn follow_applied(shared: Arc<Shared>, tip_tx: watch::Sender<ChainTip>) {
    let mut watch = StatusWatch::new(&shared.raft);
    let mut stopping = shared.stopping.clone();
    // Start from what the watch shows, so blocks applied before this task ran are
    // published too.
    let mut seen = shared.tip.borrow().height;
    let mut leadership = (0, None);
    loop {
        let (term, leader) = {
            let st = consensus::status(&shared.raft);
            (st.term, st.leader)
        };
        if (term, leader) != leadership {
            leadership = (term, leader);
            match leader.and_then(|id| shared.validator(id)) {
                Some((name, _)) => tracing::info!(term, leader = %name, "leader known"),
                None => tracing::info!(term, "no leader known"),
            }
        }
        let tip = shared.store.tip();
        while seen < tip.height {
            let height = seen + 1;
            let applied = match shared.applied_block(height) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(height, error = %e, "cannot read an applied block");
                    break;
                }
            };
            shared.pool().remove_committed(&applied.ids);
            let mut waiters = shared.waiters.lock().expect("waiters lock poisoned");
            if !waiters.is_empty() {
                for (index, id) in applied.ids.iter().enumerate() {
                    for w in waiters.remove(id).unwrap_or_default() {
                        let _ = w.send(Committed {
                            height,
                            index: index as u32,
                            block_hash: applied.hash,
                        });
                    }
                }
            }
            drop(waiters);
            seen = height;
            let _ = tip_tx.send(ChainTip {
                height,
                hash: applied.hash,
                timestamp_ms: applied.block.header.timestamp_ms,
            });
        }
        let dropped = shared.pool().drop_expired(seen + 1);
        if dropped > 0 {
            tracing::info!(dropped, "dropped expired pending transactions");
        }
        shared.wake_proposer.notify_one();
        tokio::select! {
            changed = watch.changed() => if !changed {
                tracing::error!("raft has stopped; no more blocks will be applied");
                return;
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// On followers, re-sends transactions that are still pending well after they were
/// forwarded: the leader that took them may have lost them with its office.
async fn resend_stale(shared: Arc<Shared>) {
    let mut stopping = shared.stopping.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RESEND_AFTER / 3) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if shared.is_leader() {
            continue;
        }
        let Some((_, leader)) = shared.leader().and_then(|id| shared.validator(id)).cloned() else {
            continue;
        };
        let now = Instant::now();
        let Some(cutoff) = now.checked_sub(RESEND_AFTER) else {
            continue;
        };
        let txs = shared.pool().stale(cutoff, now, FORWARD_TXS_MAX);
        if txs.is_empty() {
            continue;
        }
        let verdicts = shared.forward(&leader, &txs).await;
        let done: Vec<TxId> = txs
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| {
                matches!(
                    v,
                    Ok(Verdict::AlreadyCommitted { .. }
                        | Verdict::Refused(_)
                        | Verdict::Invalid(_))
                )
            })
            .map(|(t, _)| t.id())
            .collect();
        if !done.is_empty() {
            shared.pool().remove_pending(&done);
        }
        tracing::debug!(n = txs.len(), "re-sent pending transactions to the leader");
    }
}

type InFlight = BoxFuture<'static, (Result<ApplyOutcome, String>, Vec<SignedTransaction>)>;

/// The leader's proposer: cut, build, sign, propose; pipelined.
struct Proposer {
    shared: Arc<Shared>,
    key: Keypair,
    in_flight_max: usize,
    /// How long a block waits for more transactions when none is in flight
    /// ([`Mempool::batch_wait`]).
    idle_wait: Duration,
}

impl Proposer {
    async fn run(self) {
        let shared = self.shared.clone();
        let mut stopping = shared.stopping.clone();
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        // The last block handed to Raft while blocks are in flight, with its term.
        let mut last: Option<(u64, ChainTip)> = None;
        // After a block fails, the ones built on it fail too: propose nothing more until
        // they have all come back, then start again from the ledger tip.
        let mut draining = false;
        // Term in which this node leads, the log index that must be applied before it
        // proposes (everything from earlier terms), and whether that has happened.
        let mut lead: Option<(u64, u64, bool)> = None;
        loop {
            if *stopping.borrow() {
                return;
            }
            let st = consensus::status(&shared.raft);
            let leading = st.role == Role::Leader && st.leader == Some(shared.node_id);
            if !leading {
                lead = None;
            } else if lead.is_none_or(|(term, _, _)| term != st.term) {
                lead = Some((st.term, st.last_log_index.unwrap_or(0), false));
                last = None;
                tracing::info!(term = st.term, "leading; proposing blocks");
            }
            // Settled once earlier terms' blocks are applied and the mempool has dropped
            // their transactions (the applied-tip follower has seen the ledger tip).
            if let Some((term, from, false)) = lead {
                let applied = st.applied.unwrap_or(0);
                if applied >= from && shared.tip.borrow().height == shared.store.tip().height {
                    lead = Some((term, from, true));
                }
            }
            let ready = lead.is_some_and(|(_, _, settled)| settled);
            if in_flight.is_empty() {
                draining = false;
                last = None;
            }
            let room = ready && !draining && in_flight.len() < self.in_flight_max;
            let now = Instant::now();
            if room {
                let term = st.term;
                if last.is_some_and(|(t, _)| t != term) {
                    last = None;
                }
                let parent = last.map(|(_, tip)| tip);
                if let Some((fut, tip)) = self.propose(term, parent, in_flight.len(), now).await {
                    in_flight.push_back(fut);
                    last = Some((term, tip));
                    continue;
                }
            }
            // With no room, only a finished block (or a wake-up) changes anything.
            let deadline = if room {
                let pool = shared.pool();
                pool.cut_deadline(pool.batch_wait(in_flight.len(), self.idle_wait))
            } else {
                None
            };
            let sleep_until = deadline
                .unwrap_or(now + Duration::from_millis(50))
                .min(now + Duration::from_millis(50));
            tokio::select! {
                Some((outcome, txs)) = in_flight.next(), if !in_flight.is_empty() => {
                    if !self.finish(outcome, txs) {
                        draining = true;
                    }
                }
                _ = shared.wake_proposer.notified() => {}
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    /// The parent of the next block: the last block in flight, else the ledger tip (with
    /// nothing in flight, every block this leader proposed has been applied, and so has
    /// everything from earlier terms: see `settled` in [`Proposer::run`]).
    fn parent(&self, last: Option<ChainTip>) -> ChainTip {
        last.unwrap_or_else(|| self.shared.store.tip())
    }

    /// Cuts and proposes one block if the mempool says so, with `in_flight` blocks already
    /// proposed and not yet settled. Returns the future of its outcome and its tip.
    async fn propose(
        &self,
        term: u64,
        last: Option<ChainTip>,
        in_flight: usize,
        now: Instant,
    ) -> Option<(InFlight, ChainTip)> {
        let parent = self.parent(last);
        let (txs, ids) = {
            let mut pool = self.shared.pool();
            let wait = pool.batch_wait(in_flight, self.idle_wait);
            if !pool.should_cut(now, wait) {
                return None;
            }
            if let Some(deadline) = pool.cut_deadline(wait) {
                let waited = (now + wait).saturating_duration_since(deadline);
                self.shared.timings.queue.observe(waited);
            }
            pool.cut(parent.height + 1)
        };
        if txs.is_empty() {
            return None;
        }
        let block = build_block_with_ids(
            &parent,
            &self.shared.policy.chain_id,
            txs,
            &ids,
            &self.key,
            now_ms(),
            term,
        );
        let tip = block.tip();
        let block = Arc::new(block);
        let outcome = match consensus::propose(&self.shared.raft, block.clone(), ids.into()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // Raft has stopped; nothing more will commit here.
                let _ = self.finish(Err(e), Arc::unwrap_or_clone(block).txs);
                return None;
            }
        };
        tracing::debug!(height = tip.height, n_txs = block.txs.len(), "proposed");
        let shared = self.shared.clone();
        let proposed = Instant::now();
        let fut: InFlight = Box::pin(async move {
            let outcome = outcome.await;
            shared.timings.commit.observe(proposed.elapsed());
            (outcome, Arc::unwrap_or_clone(block).txs)
        });
        Some((fut, tip))
    }

    /// Settles a proposed block; true when it was appended. (Its transactions leave the
    /// mempool's in-flight set when the applied-tip follower sees the block.)
    fn finish(&self, outcome: Result<ApplyOutcome, String>, txs: Vec<SignedTransaction>) -> bool {
        let shared = &self.shared;
        let reason = match outcome {
            Ok(ApplyOutcome::Appended { height, .. }) => {
                shared
                    .counters
                    .blocks_proposed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(height, n_txs = txs.len(), "committed");
                return true;
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => e,
        };
        shared
            .counters
            .proposals_failed
            .fetch_add(1, Ordering::Relaxed);
        let next = shared.store.tip().height + 1;
        let n = txs.len();
        shared
            .pool()
            .requeue(txs, next, |id| shared.committed_height(id), Instant::now());
        tracing::warn!(%reason, n_txs = n, "proposed block did not commit; transactions requeued");
        false
    }
}
