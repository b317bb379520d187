//! What a chain permits: who validates, who may submit, and the size limits.
//!
//! `genesis` builds a [`Policy`] from the genesis file; the ledger only consumes it, which
//! keeps the crate dependencies flowing one way.

use std::collections::HashSet;
use std::sync::Arc;

use ordo_crypto::{Hash, PublicKey};
use serde::{Deserialize, Serialize};

/// Protocol ceiling on a signed transaction's encoded size.
pub const TX_BYTES_LIMIT: u64 = 1 << 20;
/// Protocol ceiling on a block's encoded size.
pub const BLOCK_BYTES_LIMIT: u64 = 32 << 20;
/// Protocol ceiling on transactions per block.
pub const BLOCK_TXS_LIMIT: u32 = 100_000;
/// Protocol ceiling on how far ahead of a block a transaction's `expires_at` may be.
pub const TX_LIFETIME_BLOCKS_LIMIT: u64 = 1_000_000;
/// Longest chain id, in bytes.
pub const CHAIN_ID_BYTES_MAX: usize = 64;
/// Default of the genesis's `certify_lag`: block `h` certifies every block at or below
/// `h - certify_lag` that no earlier block certified.
pub const CERTIFY_LAG_DEFAULT: u64 = 8;
/// Protocol ceiling on `certify_lag` (and so on the certificates one block carries).
pub const CERTIFY_LAG_LIMIT: u64 = 64;

const _: () = assert!(TX_BYTES_LIMIT < BLOCK_BYTES_LIMIT);
const _: () = assert!(BLOCK_BYTES_LIMIT < u32::MAX as u64);

/// Which chain a store belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainIdentity {
    /// The chain id.
    pub chain_id: String,
    /// The genesis hash.
    pub genesis_hash: Hash,
}

/// Size limits every block must respect. Set in the genesis; all nodes must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most transactions in one block.
    pub block_txs_max: u32,
    /// Largest encoded block, in bytes.
    pub block_bytes_max: u64,
    /// Largest encoded signed transaction, in bytes.
    pub tx_bytes_max: u64,
    /// A transaction may appear at height `h` only if `h <= expires_at <= h + this`.
    pub tx_lifetime_blocks: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            block_txs_max: 2_000,
            block_bytes_max: 4 << 20,
            tx_bytes_max: 64 << 10,
            tx_lifetime_blocks: 10_000,
        }
    }
}

/// Whether a string is an acceptable chain id: 1–64 bytes of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= CHAIN_ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The validators, in key order: a certificate's bitmap numbers them in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatorSet {
    keys: Arc<[PublicKey]>,
}

impl ValidatorSet {
    /// The set of `keys` (sorted; a repeated key counts once).
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> ValidatorSet {
        let mut keys: Vec<PublicKey> = keys.into_iter().collect();
        keys.sort_unstable();
        keys.dedup();
        ValidatorSet { keys: keys.into() }
    }

    /// Whether `key` is a validator.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.binary_search(key).is_ok()
    }

    /// `key`'s position in key order, if it is a validator.
    pub fn position(&self, key: &PublicKey) -> Option<usize> {
        self.keys.binary_search(key).ok()
    }

    /// The keys, in order.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signers a certificate needs: more than half of the validators.
    pub fn quorum(&self) -> usize {
        self.keys.len() / 2 + 1
    }

    /// Length of a certificate's signer bitmap.
    pub fn bitmap_len(&self) -> usize {
        self.keys.len().div_ceil(8)
    }
}

impl FromIterator<PublicKey> for ValidatorSet {
    fn from_iter<I: IntoIterator<Item = PublicKey>>(keys: I) -> ValidatorSet {
        ValidatorSet::new(keys)
    }
}

impl<const N: usize> From<[PublicKey; N]> for ValidatorSet {
    fn from(keys: [PublicKey; N]) -> ValidatorSet {
        ValidatorSet::new(keys)
    }
}

/// The rules of one chain, as its genesis defines them.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The chain id every transaction and block must carry.
    pub chain_id: String,
    /// The genesis hash: parent of block 1.
    pub genesis_hash: Hash,
    /// Keys that may propose blocks and attest them.
    pub validators: ValidatorSet,
    /// Keys that may send transactions.
    pub clients: HashSet<PublicKey>,
    /// Size limits.
    pub limits: Limits,
    /// Block `h` certifies every block at or below `h - certify_lag` that no earlier block
    /// certified (1..=[`CERTIFY_LAG_LIMIT`]).
    pub certify_lag: u64,
}

impl Policy {
    /// The tip of this chain before any block.
    pub fn genesis_tip(&self) -> crate::ChainTip {
        crate::ChainTip::genesis(self.genesis_hash)
    }

    /// The lowest `certified` a block at `height` may carry.
    pub fn certified_min(&self, height: u64) -> u64 {
        height.saturating_sub(self.certify_lag)
    }

    /// Room a block's certificates may take at most: `certify_lag` certificates, each
    /// signed by every validator. The proposer keeps it free of transactions.
    pub fn certificates_bytes_max(&self) -> u64 {
        self.certify_lag * crate::Certificate::encoded_len_max(self.validators.len())
    }
}
