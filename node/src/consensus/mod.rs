//! Consensus: ordo's boundary around openraft.
//!
//! Everything openraft-specific lives under this module, so that upgrading the library
//! touches one place. One Raft log entry carries one block ([`BlockEntry`]).
//!
//! Storage lives in the ledger's RocksDB database, in two column families of its own:
//!
//! | column family | key                      | value                                   |
//! |---------------|--------------------------|-----------------------------------------|
//! | `raft_log`    | log index (u64 BE)       | bincode(`Entry`)                        |
//! | `raft_state`  | `vote`, `committed`, `last_purged`, `applied`, `membership`, `snapshot` | bincode of each |
//!
//! Durability rules (openraft's contract): a vote is synced before `save_vote` returns; log
//! entries are synced before the append callback fires; the state machine writes the
//! applied log id in the same `WriteBatch` as the block it applies, so a restart never
//! applies a block twice or skips one. That batch is not synced on its own: the next synced
//! write to the database carries it (see `state_machine`).

mod control;
mod log_store;
mod raft_net;
mod state_machine;
mod types;

pub use control::{
    RaftSettings, RaftStatus, Role, StatusWatch, initialize, propose, start, status,
};
pub use log_store::LogStore;
#[cfg(test)]
use raft_net::{AppendCheck, Refusal};
pub use raft_net::{OrdoRaft, RaftNet, RaftPeer, RaftServer};
pub use state_machine::{
    AppliedBlock, BlockSource, BlockStateMachine, FETCH_BLOCKS_MAX, RecentBlocks, SnapshotBuilder,
};
pub use types::{ApplyOutcome, BlockEntry, TypeConfig, ValidatorNode, node_id, node_ids};

use std::path::Path;
use std::sync::Arc;

use ordo_ledger::{ChainIdentity, Policy, Store, StoreError, StoreTuning};

use crate::timings::Timings;

/// Column family of the Raft log.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family of Raft's persistent state (vote, applied id, membership, snapshot).
pub const CF_RAFT_STATE: &str = "raft_state";

/// Opens the node's database: the ledger plus the consensus column families, with
/// background writes paced by `tuning`.
///
/// # Errors
/// As [`Store::open`].
pub fn open_store(
    data_dir: &Path,
    identity: &ChainIdentity,
    tuning: &StoreTuning,
) -> Result<Arc<Store>, StoreError> {
    Store::open_with_column_families(data_dir, identity, &[CF_RAFT_LOG, CF_RAFT_STATE], tuning)
        .map(Arc::new)
}

/// Opens the Raft log storage and the block state machine over one store. Both record
/// their write times in one set of histograms ([`LogStore::timings`]).
///
/// # Errors
/// An I/O error when the persisted consensus state cannot be read or decoded.
pub fn open_consensus_storage(
    store: Arc<Store>,
    policy: Arc<Policy>,
    source: Arc<dyn BlockSource>,
) -> std::io::Result<(LogStore, BlockStateMachine)> {
    let timings = Arc::new(Timings::default());
    let log = LogStore::with_timings(store.clone(), timings.clone());
    let sm = BlockStateMachine::open(store, policy, source, timings)?;
    Ok((log, sm))
}

/// A consensus column family of `store`'s database.
///
/// # Panics
/// If the store was not opened with [`open_store`] (a programming error).
fn cf<'a>(store: &'a Store, name: &str) -> &'a rocksdb::ColumnFamily {
    store
        .db()
        .cf_handle(name)
        .expect("consensus column families are opened with the store")
}

/// Writes `batch` to `store`'s database, synced to disk when `sync`.
fn write_batch(store: &Store, batch: rocksdb::WriteBatch, sync: bool) -> std::io::Result<()> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(sync);
    store
        .db()
        .write_opt(batch, &opts)
        .map_err(std::io::Error::other)
}

/// Encodes an internal (never hashed) value with bincode.
pub(crate) fn encode_internal<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(std::io::Error::other)
}

/// As [`encode_internal`], into a buffer allocated for about `capacity` bytes (so that
/// encoding a block does not copy it again each time the buffer grows).
pub(crate) fn encode_internal_sized<T: serde::Serialize>(
    value: &T,
    capacity: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(std::io::Error::other)?;
    Ok(out)
}

/// Decodes an internal value written by [`encode_internal`], rejecting trailing bytes and
/// anything claiming more than a network frame's worth of memory.
pub(crate) fn decode_internal<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> std::io::Result<T> {
    let config = bincode::config::standard().with_limit::<{ crate::network::FRAME_BYTES_MAX }>();
    let (value, read) = bincode::serde::decode_from_slice(bytes, config).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    })?;
    if read != bytes.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what}: trailing bytes"),
        ));
    }
    Ok(value)
}

/// One transaction's canonical bytes in an internal message (forwards to the leader, its
/// announcements), as a byte string. serde carries a plain `Vec<u8>` one byte at a time;
/// this is copied in one piece. The encoding is the same bytes either way: a length, then
/// the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxBytes(pub Vec<u8>);

impl serde::Serialize for TxBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TxBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TxBytes, D::Error> {
        d.deserialize_byte_buf(TxBytesVisitor)
    }
}

struct TxBytesVisitor;

impl serde::de::Visitor<'_> for TxBytesVisitor {
    type Value = TxBytes;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a transaction's bytes")
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<TxBytes, E> {
        Ok(TxBytes(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<TxBytes, E> {
        Ok(TxBytes(v.to_vec()))
    }
}

/// Maps a store error to the I/O error openraft expects from storage.
fn io_err(e: StoreError) -> std::io::Error {
    std::io::Error::other(e)
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod tests_support {
    use futures::future::BoxFuture;
    use ordo_crypto::Keypair;
    use ordo_ledger::{Block, SignedTransaction, Transaction};

    /// A block source with nothing to give.
    pub struct EmptySource;

    /// A transaction on `chain` from `client`, its nonce as its payload.
    pub fn signed_tx(
        chain: &str,
        client: &Keypair,
        nonce: u64,
        expires_at: u64,
    ) -> SignedTransaction {
        Transaction {
            chain_id: chain.into(),
            sender: client.public(),
            nonce,
            expires_at,
            payload: nonce.to_le_bytes().to_vec(),
        }
        .sign(client)
    }

    impl super::BlockSource for EmptySource {
        fn fetch(&self, _from: u64, _max: u64) -> BoxFuture<'_, Result<Vec<Block>, String>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
}
