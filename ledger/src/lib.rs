//! The ordo chain: what is ordered, how it is verified, where it is kept.
//!
//! * [`types`]: transactions, blocks, attestations and certificates, and their canonical
//!   (borsh) encoding.
//! * [`verify_block`]: every rule a follower checks before appending a block.
//! * [`certificate`], [`verify_certificate`]: a majority of validators vouching for a block.
//! * [`receipt`]: a transaction's proof of being ordered, checkable with the genesis alone.
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
//! use ordo_ledger::{build_block, verify_block, Limits, Policy, Transaction, ValidatorSet};
//!
//! let (validator, client) = (Keypair::from_label("v"), Keypair::from_label("c"));
//! let policy = Policy {
//!     chain_id: "doc".into(),
//!     genesis_hash: Hash::digest(Domain::Genesis, b"doc"),
//!     validators: ValidatorSet::from([validator.public()]),
//!     clients: HashSet::from([client.public()]),
//!     limits: Limits::default(),
//!     certify_lag: 8,
//! };
//! let tx = Transaction { chain_id: "doc".into(), sender: client.public(), nonce: 1,
//!                        expires_at: 10, payload: b"hello".to_vec() }.sign(&client);
//! let parent = policy.genesis_tip();
//! // Block 1 has no earlier block to certify.
//! let block = build_block(&parent, "doc", vec![], vec![tx], &validator, 1_700_000_000_000, 1);
//! assert!(verify_block(&parent, &block, &policy).is_ok());
//! ```

#[cfg(feature = "store")]
mod audit;
mod builder;
mod certify;
mod policy;
pub mod receipt;
#[cfg(feature = "store")]
mod store;
mod tuning;
pub mod types;
mod verify;

#[cfg(feature = "store")]
pub use audit::{
    AuditError, AuditFailure, AuditReport, Evidence, TailBlock, TailStatus, ValidatorRecord, audit,
};
pub use builder::{ChainBuilder, build_block, build_block_with_ids};
pub use certify::{
    CertificateError, certificate, certificate_signers, verify_attestation, verify_certificate,
};
pub use policy::{
    BLOCK_BYTES_LIMIT, BLOCK_TXS_LIMIT, CERTIFY_LAG_DEFAULT, CERTIFY_LAG_LIMIT, CHAIN_ID_BYTES_MAX,
    ChainIdentity, Limits, Policy, TX_BYTES_LIMIT, TX_LIFETIME_BLOCKS_LIMIT, ValidatorSet,
    is_valid_chain_id,
};
pub use receipt::{RECEIPT_BYTES_MAX, RECEIPT_VERSION, Receipt, ReceiptError};
#[cfg(feature = "store")]
pub use store::{
    COLUMN_FAMILIES as LEDGER_COLUMN_FAMILIES, CheckDepth, Checked, Damage, Durability,
    EVIDENCE_RECORDS_MAX, FORMAT_VERSION, LEDGER_DIR, ReceiptLookup, SALVAGE_MARKER, Salvaged,
    Store, StoreError, TxInclusion,
};
pub use tuning::{BACKGROUND_WRITE_BYTES_PER_S_DEFAULT, BACKGROUND_WRITE_REFILL, StoreTuning};
pub use types::{
    Attestation, Block, BlockHeader, Certificate, ChainTip, SignedTransaction, Transaction, TxId,
    certs_root, encode,
};
pub use verify::{
    TxError, VerifyError, check_block_time, check_tx_rules, verify_block, verify_block_with,
    verify_transaction,
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
