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
use crate::network::Network;

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

impl Role {
    /// The role's name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
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
    pub failure: Option<String>,
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
/// Invalid settings, or storage that cannot be read.
pub async fn start(
    node_id: u64,
    cluster: &str,
    settings: RaftSettings,
    network: Network,
    log: LogStore,
    sm: BlockStateMachine,
) -> Result<OrdoRaft, String> {
    let config = Config {
        cluster_name: cluster.to_owned(),
        heartbeat_interval: settings.heartbeat_ms,
        election_timeout_min: settings.election_min_ms,
        election_timeout_max: settings.election_max_ms,
        // A snapshot install fetches blocks from peers; give it time.
        install_snapshot_timeout: 30_000,
        enable_pre_vote: Some(true),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
        max_in_snapshot_log_to_keep: settings.keep,
        max_payload_entries: 64,
        ..Default::default()
    };
    let config = Arc::new(
        config
            .validate()
            .map_err(|e| format!("raft settings: {e}"))?,
    );
    OrdoRaft::new(node_id, config, RaftNet::new(network), log, sm)
        .await
        .map_err(|e| e.to_string())
}

/// Forms the cluster from the genesis validators on a pristine node. Every node does this
/// with the same membership, which openraft allows; an initialized node skips it.
///
/// # Errors
/// When Raft has stopped or refuses the membership.
pub async fn initialize(raft: &OrdoRaft, ids: &BTreeMap<u64, PublicKey>) -> Result<(), String> {
    if raft.is_initialized().await.map_err(|e| e.to_string())? {
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
        Err(e) => Err(format!("initialize: {e}")),
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
) -> Result<impl Future<Output = Result<ApplyOutcome, String>> + Send + 'static, String> {
    let (responder, rx) = ProgressResponder::<TypeConfig, _>::complete_only();
    raft.client_write_ff(BlockEntry::with_ids(block, ids), Some(responder))
        .await
        .map_err(|e| e.to_string())?;
    Ok(async move {
        match rx.await {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("raft dropped the proposal".into()),
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
        failure: m.running_state.as_ref().err().map(ToString::to_string),
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
