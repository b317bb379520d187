//! openraft type configuration: what a log entry carries and what applying it returns.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ordo_crypto::{Hash, PublicKey};
use ordo_ledger::{BLOCK_BYTES_LIMIT, Block, TxId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ConsensusError;

openraft::declare_raft_types!(
    /// ordo's Raft types: one block per log entry, validators as nodes.
    pub TypeConfig:
        D = BlockEntry,
        R = ApplyOutcome,
        NodeId = u64,
        Node = ValidatorNode,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// The Raft node id of a validator: the first 8 bytes of its public key, big-endian.
/// Keys are uniformly random points, so ids of distinct validators differ in practice;
/// [`node_ids`] checks a validator set for collisions.
pub fn node_id(key: &PublicKey) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// The node id of every validator.
///
/// # Errors
/// [`ConsensusError::NodeIdCollision`] naming the two keys when two validators would share
/// a node id.
pub fn node_ids(
    keys: impl IntoIterator<Item = PublicKey>,
) -> Result<BTreeMap<u64, PublicKey>, ConsensusError> {
    let mut ids = BTreeMap::new();
    for key in keys {
        if let Some(first) = ids.insert(node_id(&key), key) {
            return Err(ConsensusError::NodeIdCollision { first, second: key });
        }
    }
    Ok(ids)
}

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
