//! Validators as Raft nodes: their ids. The type configuration is `ordo_wire`'s.

use std::collections::BTreeMap;

use ordo_crypto::PublicKey;
pub use ordo_wire::{ApplyOutcome, BlockEntry, TypeConfig, ValidatorNode};

use super::ConsensusError;

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
