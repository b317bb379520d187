//! Running Raft: starting it from ordo's settings, forming the cluster, proposing blocks and
//! reading its state, without openraft types outside this module.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::responder::ProgressResponder;
use openraft::{Config, ServerState, SnapshotPolicy};
use ordo_crypto::PublicKey;
use ordo_ledger::{Block, TxId};

use super::{
    ApplyOutcome, BlockEntry, BlockStateMachine, LogStore, OrdoRaft, RaftNet, TypeConfig,
    ValidatorNode,
};
use crate::error::Fatal;
use crate::network::Network;

/// Why consensus could not start or be driven.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// The Raft settings are not valid (the genesis's timing, the node's compaction).
    #[error("raft settings: {0}")]
    Settings(String),
    /// Raft could not start on its storage.
    #[error("raft cannot start: {0}")]
    Start(String),
    /// Two validators' keys map to the same Raft node id.
    #[error("validators {first} and {second} map to the same Raft node id")]
    NodeIdCollision {
        /// The first key.
        first: PublicKey,
        /// The second.
        second: PublicKey,
    },
    /// Raft refused the genesis membership.
    #[error("cannot form the cluster: {0}")]
    Initialize(String),
    /// Raft has stopped.
    #[error(transparent)]
    Stopped(#[from] Fatal),
}

/// Why a proposed block did not commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// This node lost leadership before the block was appended to its log, or the entry
    /// was replaced by another leader's log (the block may still commit through it, so its
    /// transactions are requeued, and the mempool skips those that commit).
    #[error("not committed here: {0}")]
    NotLeader(String),
    /// Raft stopped.
    #[error(transparent)]
    Stopped(#[from] Fatal),
    /// Raft dropped the proposal without an answer (it is shutting down).
    #[error("raft dropped the proposal")]
    Dropped,
}

/// ordo's view of openraft's fatal error.
pub(crate) fn fatal(e: &openraft::error::Fatal<TypeConfig>) -> Fatal {
    match e {
        openraft::error::Fatal::StorageError(e) => Fatal::Storage(e.to_string()),
        openraft::error::Fatal::Panicked => Fatal::Panicked,
        openraft::error::Fatal::Stopped => Fatal::Stopped,
    }
}

/// What a node is in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Orders blocks.
    Leader,
    /// Follows a leader.
    Follower,
    /// Standing for election.
    Candidate,
    /// Not a voter.
    Learner,
    /// Stopped.
    Shutdown,
}

/// A snapshot of a node's Raft state. Log positions are log indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node's role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// The leader this node knows, by node id.
    pub leader: Option<u64>,
    /// Last entry in the local log.
    pub last_log_index: Option<u64>,
    /// Last entry known committed.
    pub committed: Option<u64>,
    /// Last entry applied to the ledger.
    pub applied: Option<u64>,
    /// Last entry covered by a snapshot.
    pub snapshot: Option<u64>,
    /// Last entry purged from the log.
    pub purged: Option<u64>,
    /// Why Raft stopped, if it stopped on its own.
    pub failure: Option<Fatal>,
}

/// Settings for [`start`]: timing (from the genesis, equal on every validator) and log
/// compaction (per node).
#[derive(Clone, Copy, Debug)]
pub struct RaftSettings {
    /// Leader heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// Shortest election timeout, in milliseconds.
    pub election_min_ms: u64,
    /// Longest election timeout (also the leader lease), in milliseconds.
    pub election_max_ms: u64,
    /// Snapshot after this many entries, then purge the log behind it.
    pub snapshot_every: u64,
    /// Entries kept behind the last snapshot.
    pub keep: u64,
}

/// Starts Raft for validator `node_id` over `network`, with pre-vote on.
///
/// # Errors
/// [`ConsensusError::Settings`] or [`ConsensusError::Start`]: invalid settings, or storage
/// that cannot be read.
pub async fn start(
    node_id: u64,
    cluster: &str,
    settings: RaftSettings,
    network: Network,
    log: LogStore,
    sm: BlockStateMachine,
) -> Result<OrdoRaft, ConsensusError> {
    let config = Config {
        cluster_name: cluster.to_owned(),
        heartbeat_interval: settings.heartbeat_ms,
        election_timeout_min: settings.election_min_ms,
        election_timeout_max: settings.election_max_ms,
        // A snapshot install fetches blocks from peers; give it time.
        install_snapshot_timeout: 30_000,
        enable_pre_vote: Some(true),
        // A leader that has heard no quorum for a lease goes quiet for one more lease and an
        // election timeout, so followers that still receive its heartbeats (a one-way cut:
        // it hears nothing, they hear it) elect a leader that can commit instead of waiting
        // for the connection to die. The shortest interval openraft allows.
        quorum_loss_probe_interval: Some(2 * settings.election_max_ms),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
        max_in_snapshot_log_to_keep: settings.keep,
        max_payload_entries: 64,
        ..Default::default()
    };
    let config = Arc::new(
        config
            .validate()
            .map_err(|e| ConsensusError::Settings(e.to_string()))?,
    );
    let pace = log.pace();
    OrdoRaft::new(node_id, config, RaftNet::new(network, pace), log, sm)
        .await
        .map_err(|e| ConsensusError::Start(e.to_string()))
}

/// Forms the cluster from the genesis validators on a pristine node. Every node does this
/// with the same membership, which openraft allows; an initialized node skips it.
///
/// # Errors
/// When Raft has stopped or refuses the membership.
pub async fn initialize(
    raft: &OrdoRaft,
    ids: &BTreeMap<u64, PublicKey>,
) -> Result<(), ConsensusError> {
    if raft.is_initialized().await.map_err(|e| fatal(&e))? {
        return Ok(());
    }
    let members: BTreeMap<u64, ValidatorNode> = ids
        .iter()
        .map(|(id, key)| (*id, ValidatorNode { public_key: *key }))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(openraft::error::RaftError::Fatal(e)) => Err(fatal(&e).into()),
        Err(e) => Err(ConsensusError::Initialize(e.to_string())),
    }
}

/// Hands `block`, whose transaction ids in block order are `ids`, to Raft (in call order)
/// and returns, once it is queued, a future of what applying it did, or why it did not
/// commit.
///
/// # Errors
/// When Raft has stopped.
pub async fn propose(
    raft: &OrdoRaft,
    block: Arc<Block>,
    ids: Arc<[TxId]>,
) -> Result<impl Future<Output = Result<ApplyOutcome, ProposalError>> + Send + 'static, ProposalError>
{
    let (responder, rx) = ProgressResponder::<TypeConfig, _>::complete_only();
    raft.client_write_ff(BlockEntry::with_ids(block, ids), Some(responder))
        .await
        .map_err(|e| ProposalError::Stopped(fatal(&e)))?;
    Ok(async move {
        match rx.await {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(ProposalError::NotLeader(e.to_string())),
            Err(_) => Err(ProposalError::Dropped),
        }
    })
}

/// This node's Raft state now.
pub fn status(raft: &OrdoRaft) -> RaftStatus {
    let m = raft.metrics().borrow_watched().clone();
    let index = |l: Option<openraft::LogId<_>>| l.map(|l| l.index);
    RaftStatus {
        role: match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        },
        term: m.current_term,
        leader: m.current_leader,
        last_log_index: m.last_log_index,
        committed: index(m.local_committed),
        applied: index(m.last_applied),
        snapshot: index(m.snapshot),
        purged: index(m.purged),
        failure: m.running_state.as_ref().err().map(fatal),
    }
}

/// Notices changes of a node's Raft state.
pub struct StatusWatch(
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>,
);

impl StatusWatch {
    /// Watches `raft`.
    pub fn new(raft: &OrdoRaft) -> StatusWatch {
        StatusWatch(raft.metrics())
    }

    /// Waits for the next change; false once Raft has stopped.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}
