//! The state machine's Raft state on disk (`raft_state`: `applied`, `snapshot`) and a
//! snapshot's content. The Raft log's entries (`EntryOf<TypeConfig>`), the vote and log ids
//! are openraft's types, encoded with [`crate::encode_internal`] as they are.

use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, StoredMembershipOf};
use ordo_ledger::ChainTip;
use serde::{Deserialize, Serialize};

use crate::TypeConfig;

/// What the state machine has applied, persisted under `raft_state/applied`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Applied {
    /// The last log entry applied.
    pub last_applied: Option<LogIdOf<TypeConfig>>,
    /// The membership as of it.
    pub membership: StoredMembershipOf<TypeConfig>,
}

/// The latest snapshot, persisted under `raft_state/snapshot`: what it covers and the
/// ledger tip it stands for.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// What it covers.
    pub meta: SnapshotMetaOf<TypeConfig>,
    /// The ledger's tip at its last applied entry.
    pub tip: ChainTip,
}

/// A snapshot's content as it travels ([`crate::RaftRequest::Snapshot`]): the ledger tip,
/// in its canonical (borsh) bytes. The blocks behind it are fetched separately.
pub fn encode_snapshot_data(tip: &ChainTip) -> Vec<u8> {
    borsh::to_vec(tip).expect("a chain tip encodes")
}

/// The ledger tip a snapshot's content names.
///
/// # Errors
/// [`std::io::ErrorKind::InvalidData`] when `data` is not exactly one encoded tip.
pub fn decode_snapshot_data(data: &[u8]) -> std::io::Result<ChainTip> {
    borsh::from_slice(data).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("snapshot content: {e}"),
        )
    })
}
