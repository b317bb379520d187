//! Raft's types: the type configuration (one block per log entry, validators as nodes)
//! and the RPCs validators send each other (`Kind::Raft`).

use std::fmt;
use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotMetaOf, VoteOf};
use ordo_crypto::{Hash, PublicKey};
use ordo_ledger::{BLOCK_BYTES_LIMIT, Block, TxId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// ordo's Raft types: one block per log entry, validators as nodes.
    pub TypeConfig:
        D = BlockEntry,
        R = ApplyOutcome,
        NodeId = u64,
        Node = ValidatorNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// A validator as Raft membership records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorNode {
    /// The validator's key (its libp2p identity).
    pub public_key: PublicKey,
}

impl Default for ValidatorNode {
    fn default() -> ValidatorNode {
        ValidatorNode {
            public_key: PublicKey([0; 32]),
        }
    }
}

/// The payload of a normal log entry: one block.
///
/// It travels and is stored as the block's canonical bytes; decoding refuses anything
/// non-canonical or larger than the protocol's block limit.
#[derive(Debug, Clone)]
pub struct BlockEntry {
    /// The block.
    pub block: Arc<Block>,
    /// Its transaction ids in block order, when this node has computed them already (it
    /// built the block, or verified it before appending). In memory only: an entry decoded
    /// from bytes has none, and [`BlockEntry::ids`] computes them.
    ids: Option<Arc<[TxId]>>,
}

impl BlockEntry {
    /// An entry for `block`.
    pub fn new(block: Arc<Block>) -> BlockEntry {
        BlockEntry { block, ids: None }
    }

    /// An entry for `block` whose transaction ids, in block order, are `ids`.
    pub fn with_ids(block: Arc<Block>, ids: Arc<[TxId]>) -> BlockEntry {
        debug_assert_eq!(ids.len(), block.txs.len(), "one id per transaction");
        BlockEntry {
            block,
            ids: Some(ids),
        }
    }

    /// The block's transaction ids, in block order.
    pub fn ids(&self) -> Arc<[TxId]> {
        match &self.ids {
            Some(ids) => ids.clone(),
            None => self.block.tx_ids().into(),
        }
    }
}

impl PartialEq for BlockEntry {
    fn eq(&self, other: &BlockEntry) -> bool {
        self.block == other.block
    }
}

impl Eq for BlockEntry {}

impl fmt::Display for BlockEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.block.header;
        write!(f, "block {} ({} txs)", h.height, h.n_txs)
    }
}

impl Serialize for BlockEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.block.to_bytes())
    }
}

impl<'de> Deserialize<'de> for BlockEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BlockEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a block's canonical bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BlockEntry, E> {
                Block::from_bytes(v, BLOCK_BYTES_LIMIT)
                    .map(|b| BlockEntry::new(Arc::new(b)))
                    .map_err(E::custom)
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<BlockEntry, E> {
                self.visit_bytes(&v)
            }
        }
        d.deserialize_bytes(Visitor)
    }
}

/// What applying a log entry did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// The entry carried no block (leader no-op or membership change).
    NoBlock,
    /// The block was appended to the ledger.
    Appended {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash,
    },
    /// The ledger already held this block (it arrived earlier through snapshot catch-up).
    AlreadyApplied {
        /// Its height.
        height: u64,
    },
    /// The block does not extend the chain and was not applied. Every node decides this
    /// identically, from the same log.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// A Raft RPC (`Kind::Raft` request). Variants are encoded by position: append new ones
/// at the end (the crate's tests pin each).
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Append entries (or a heartbeat).
    Append(AppendEntriesRequest<TypeConfig>),
    /// A vote request of a candidate.
    Vote(VoteRequest<TypeConfig>),
    /// A pre-vote: would the peer vote for this candidate?
    PreVote(VoteRequest<TypeConfig>),
    /// A whole snapshot.
    Snapshot {
        /// The leader's vote.
        vote: VoteOf<TypeConfig>,
        /// What the snapshot covers.
        meta: SnapshotMetaOf<TypeConfig>,
        /// Its content ([`crate::encode_snapshot_data`]).
        data: Vec<u8>,
    },
    /// A leader hands its office over: it proposes nothing more, every voter stops
    /// honouring its lease, and the node it names stands for election once its log holds
    /// the leader's last entry.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

/// The answer to a [`RaftRequest`]. Variants are encoded by position, as above.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    /// To [`RaftRequest::Append`].
    Append(AppendEntriesResponse<TypeConfig>),
    /// To [`RaftRequest::Vote`] and [`RaftRequest::PreVote`].
    Vote(VoteResponse<TypeConfig>),
    /// To [`RaftRequest::Snapshot`].
    Snapshot(SnapshotResponse<TypeConfig>),
    /// The receiver would not process the request (a block failed verification, or Raft
    /// returned an error). The sender treats the peer as unreachable for this round.
    Refused(String),
    /// To [`RaftRequest::TransferLeader`]: taken, or why the named node will not stand.
    TransferLeader(TransferLeaderResponse<TypeConfig>),
}
