//! `GET /v1/status` and `GET /health`.

use ordo_crypto::{Hash, PublicKey};
use ordo_ledger::Limits;
use serde::{Deserialize, Serialize};

/// The status route.
pub const PATH: &str = "/v1/status";
/// The health route.
pub const HEALTH_PATH: &str = "/health";
/// Whether the node is ready for clients.
pub const READY_PATH: &str = "/ready";

/// A node's view of itself and its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The chain.
    pub chain_id: String,
    /// Hash of the chain's genesis.
    pub genesis_hash: Hash,
    /// The node's software version.
    pub version: String,
    /// The version of the validators' wire protocol (also in the libp2p protocol id):
    /// validators of different protocol versions do not talk to each other.
    pub protocol_version: u32,
    /// This node.
    pub node: NodeInfo,
    /// Its Raft role.
    pub role: Role,
    /// Its Raft term.
    pub term: u64,
    /// The leader it knows, if any.
    pub leader: Option<PeerInfo>,
    /// Its last applied block.
    pub tip: TipInfo,
    /// Its Raft log.
    pub raft: RaftInfo,
    /// The validators it is connected to.
    pub peers: Vec<PeerInfo>,
    /// Its pending transactions.
    pub mempool: MempoolInfo,
    /// The chain's limits.
    pub limits: Limits,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// Its wall clock minus the validators' time (the median of their clocks), in
    /// milliseconds; `None` until it has read another validator's clock.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

/// This node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name in the genesis.
    pub name: String,
    /// Its key.
    pub public_key: PublicKey,
    /// Its Raft node id (a decimal string: it may exceed 2^53).
    #[serde(with = "crate::u64_string")]
    pub node_id: u64,
}

/// Another validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its name in the genesis.
    pub name: String,
    /// Its key.
    pub public_key: PublicKey,
}

/// What a node is in Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Orders blocks.
    Leader,
    /// Follows a leader.
    Follower,
    /// Standing for election.
    Candidate,
    /// Not a voter.
    Learner,
    /// Raft has stopped.
    Shutdown,
}

impl Role {
    /// The role's name, as the API writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last applied block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TipInfo {
    /// Its height (0: only the genesis).
    pub height: u64,
    /// Its hash (the genesis hash at height 0).
    pub hash: Hash,
    /// Every block at or below this height is certified by a majority of the validators
    /// (0: none yet); the blocks above it are the uncertified tail.
    #[serde(default)]
    pub certified: u64,
}

/// Positions in a node's Raft log (log indexes, not heights).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftInfo {
    /// The last entry in its log.
    pub last_log_index: Option<u64>,
    /// The last entry it knows committed.
    pub committed: Option<u64>,
    /// The last entry applied to its ledger.
    pub applied: Option<u64>,
    /// The last entry its snapshot covers.
    pub snapshot: Option<u64>,
    /// The last entry purged from its log.
    pub purged: Option<u64>,
}

/// A node's pending transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolInfo {
    /// How many.
    pub txs: u64,
    /// Their encoded bytes.
    pub bytes: u64,
}

/// The answer of a healthy node: `{"status": "ok"}` (an unhealthy one answers an error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

impl Health {
    /// The healthy answer.
    pub fn ok() -> Health {
        Health {
            status: "ok".into(),
        }
    }

    /// The ready answer (`/ready`): `{"status": "ready"}`.
    pub fn ready() -> Health {
        Health {
            status: "ready".into(),
        }
    }
}
