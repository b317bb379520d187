//! The ordo chain: what is ordered, how it is verified, where it is kept.
//!
//! * [`types`]: transactions and blocks, and their canonical (borsh) encoding.
//! * [`verify_block`]: every rule a follower checks before appending a block.
//! * [`build_block`]: what a leader runs to make the next block.
//! * [`Store`]: the chain in RocksDB, appended one atomic, synced batch per block.
//! * [`audit`]: re-verifies a stored chain from the genesis, streaming.
//!
//! The ledger never touches the network and never reads a clock: time is an argument.
//!
//! [`Store`] and [`audit`] need RocksDB; they come with the `store` feature (on by default).
//! Without it the crate is the data model and its rules alone, for clients that build and
//! check transactions and blocks but keep no chain.
//!
//! ```
//! use std::collections::HashSet;
//! use ordo_crypto::{Hash, Domain, Keypair};
//! use ordo_ledger::{build_block, verify_block, Limits, Policy, Transaction};
//!
//! let (validator, client) = (Keypair::from_label("v"), Keypair::from_label("c"));
//! let policy = Policy {
//!     chain_id: "doc".into(),
//!     genesis_hash: Hash::digest(Domain::Genesis, b"doc"),
//!     validators: HashSet::from([validator.public()]),
//!     clients: HashSet::from([client.public()]),
//!     limits: Limits::default(),
//! };
//! let tx = Transaction { chain_id: "doc".into(), sender: client.public(), nonce: 1,
//!                        expires_at: 10, payload: b"hello".to_vec() }.sign(&client);
//! let parent = policy.genesis_tip();
//! let block = build_block(&parent, "doc", vec![tx], &validator, 1_700_000_000_000, 1);
//! assert!(verify_block(&parent, &block, &policy).is_ok());
//! ```

#[cfg(feature = "store")]
mod audit;
mod builder;
mod policy;
#[cfg(feature = "store")]
mod store;
mod tuning;
pub mod types;
mod verify;

#[cfg(feature = "store")]
pub use audit::{AuditError, AuditFailure, AuditReport, audit};
pub use builder::{build_block, build_block_with_ids};
pub use policy::{
    BLOCK_BYTES_LIMIT, BLOCK_TXS_LIMIT, CHAIN_ID_BYTES_MAX, ChainIdentity, Limits, Policy,
    TX_BYTES_LIMIT, TX_LIFETIME_BLOCKS_LIMIT, is_valid_chain_id,
};
#[cfg(feature = "store")]
pub use store::{
    CheckDepth, Checked, Damage, Durability, FORMAT_VERSION, LEDGER_DIR, SALVAGE_MARKER, Salvaged,
    Store, StoreError, TxInclusion,
};
pub use tuning::{BACKGROUND_WRITE_BYTES_PER_S_DEFAULT, BACKGROUND_WRITE_REFILL, StoreTuning};
pub use types::{Block, BlockHeader, ChainTip, SignedTransaction, Transaction, TxId, encode};
pub use verify::{
    TxError, VerifyError, check_tx_rules, verify_block, verify_block_with, verify_transaction,
};

/// Errors decoding ledger types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Input longer than allowed; refused before decoding.
    #[error("{what} is {bytes} bytes, limit is {max}")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Input length.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Input is not the canonical encoding of the type.
    #[error("{what} is not canonically encoded: {reason}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}
