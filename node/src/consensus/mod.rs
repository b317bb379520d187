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
mod depose;
mod handover;
mod log_store;
mod pace;
mod raft_net;
mod state_machine;
mod types;

pub use control::{
    ConsensusError, ProposalError, RaftSettings, RaftStatus, Role, StatusWatch, initialize,
    propose, start, status,
};
pub use handover::{NoHandOver, hand_over_to_stop};
pub use log_store::LogStore;
pub use pace::{Pace, StepAside, step_aside};
#[cfg(test)]
use raft_net::{AppendCheck, Refusal};
pub use raft_net::{OrdoRaft, RaftNet, RaftServer};
pub use state_machine::{
    AppliedBlock, BlockSource, BlockStateMachine, FETCH_BLOCKS_MAX, FetchError, RecentBlocks,
};
pub use types::{ApplyOutcome, BlockEntry, TypeConfig, ValidatorNode, node_id, node_ids};

use std::path::Path;
use std::sync::Arc;

use ordo_ledger::{ChainIdentity, Policy, Salvaged, Store, StoreError, StoreTuning};

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
#[cfg(test)]
pub(crate) fn open_store(
    data_dir: &Path,
    identity: &ChainIdentity,
    tuning: &StoreTuning,
) -> Result<Arc<Store>, StoreError> {
    Store::open_with_column_families(data_dir, identity, &[CF_RAFT_LOG, CF_RAFT_STATE], tuning)
        .map(Arc::new)
}

/// As [`open_store`], salvaging the ledger first when a damaged table file keeps it from
/// opening or a salvage was requested; the consensus column families must come out of it
/// whole (`ordo_ledger::Store::open_salvaging`).
///
/// # Errors
/// As [`Store::open_salvaging`].
pub fn open_store_salvaging(
    data_dir: &Path,
    identity: &ChainIdentity,
    tuning: &StoreTuning,
) -> Result<(Arc<Store>, Option<Salvaged>), StoreError> {
    Store::open_salvaging(data_dir, identity, &[CF_RAFT_LOG, CF_RAFT_STATE], tuning)
        .map(|(s, salvaged)| (Arc::new(s), salvaged))
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

    /// The default bound on block time (10 s), over a clock that has read no peer's.
    pub fn time_bound() -> crate::clock::TimeBound {
        crate::clock::TimeBound::new(std::sync::Arc::new(crate::clock::Clock::new()), 10_000)
    }

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
        fn fetch(
            &self,
            _from: u64,
            _max: u64,
        ) -> BoxFuture<'_, Result<Vec<Block>, super::FetchError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
}
