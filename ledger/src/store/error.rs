//! What the store reports when it cannot do what was asked.

use std::path::PathBuf;

use ordo_crypto::Hash;

use super::FORMAT_VERSION;
use crate::policy::ChainIdentity;
use crate::types::{ChainTip, TxId};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error (I/O, corruption, lock held by another process, ...).
    #[error("ledger database {path}: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// There is no ledger where one was expected.
    #[error("no ordo ledger at {0} (check --data-dir)")]
    NotFound(PathBuf),
    /// The store belongs to another chain.
    #[error(
        "ledger at {path} belongs to chain '{}' (genesis {}), not '{}' (genesis {}); use the matching genesis file or another data directory",
        found.chain_id, found.genesis_hash, expected.chain_id, expected.genesis_hash
    )]
    ChainMismatch {
        /// The database directory.
        path: PathBuf,
        /// The chain recorded in the store.
        found: Box<ChainIdentity>,
        /// The chain of the genesis given.
        expected: Box<ChainIdentity>,
    },
    /// Written by an incompatible version of ordo.
    #[error(
        "ledger at {path} has format version {found}; this ordo reads version {FORMAT_VERSION}"
    )]
    FormatVersion {
        /// The database directory.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// Stored data is not what this store writes.
    #[error("ledger at {path} is corrupt: {what}")]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The block does not extend the current tip.
    #[error("block at height {height} (prev {prev_hash}) does not extend the tip at height {} ({})", tip.height, tip.hash)]
    NotNext {
        /// The block's height.
        height: u64,
        /// The block's parent hash.
        prev_hash: Hash,
        /// The store's tip.
        tip: ChainTip,
    },
    /// A transaction in the block is already in the chain.
    #[error("transaction {id} is already committed at height {height}")]
    AlreadyCommitted {
        /// The transaction id.
        id: TxId,
        /// Where it is.
        height: u64,
    },
    /// A certificate in the block names a block this chain does not hold at that height.
    #[error(
        "block {height} certifies block {certified_hash} at height {certified}, but this chain's block there is {chain_hash}"
    )]
    CertifiesAnother {
        /// The block's height.
        height: u64,
        /// The certified height.
        certified: u64,
        /// The hash the certificate names.
        certified_hash: Hash,
        /// The hash of this chain's block at that height.
        chain_hash: Hash,
    },
    /// Damage a salvage cannot repair (the ledger is left as it was).
    #[error("ledger at {path} is damaged beyond salvage: {what}")]
    Unsalvageable {
        /// The database directory.
        path: PathBuf,
        /// What is damaged.
        what: String,
    },
    /// A write on a store opened read-only.
    #[error("ledger was opened read-only")]
    ReadOnly,
}

impl StoreError {
    /// Whether this is damage to stored data — a failed checksum, a record that is not what
    /// the store writes — rather than a refusal or a database that cannot be used.
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } => true,
            StoreError::Db { source, .. } => source.kind() == rocksdb::ErrorKind::Corruption,
            _ => false,
        }
    }
}

/// Result type of the store.
pub type Result<T> = std::result::Result<T, StoreError>;
