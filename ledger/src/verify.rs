//! The rules a block must pass before any node appends it.
//!
//! [`verify_block`] is a pure function of (parent tip, block, policy): no clock, no disk.
//! Cheap structural checks run first; signatures last, in one ZIP-215 batch that covers the
//! proposer's signature and every transaction's.

use std::collections::HashMap;

use ordo_crypto::{BatchVerifier, Hash, PublicKey, Signature, SignatureError, merkle};

use crate::Policy;
use crate::types::{Block, ChainTip, SignedTransaction, TxId};

/// Why a block or transaction is invalid. Each rule has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The header names another chain.
    #[error("block is for chain '{found}', this chain is '{expected}'")]
    WrongChain {
        /// This chain's id.
        expected: String,
        /// The block's chain id.
        found: String,
    },
    /// The height is not parent height + 1.
    #[error("block height {found} does not follow the parent at height {}", expected - 1)]
    WrongHeight {
        /// Parent height + 1.
        expected: u64,
        /// The block's height.
        found: u64,
    },
    /// `prev_hash` is not the parent's hash.
    #[error("block does not link to its parent: prev_hash {found}, parent hash {expected}")]
    BrokenHashLink {
        /// The parent's hash.
        expected: Hash,
        /// The block's `prev_hash`.
        found: Hash,
    },
    /// The timestamp is before the parent's.
    #[error("block timestamp {found} ms is before its parent's {parent} ms")]
    TimestampBeforeParent {
        /// Parent timestamp.
        parent: u64,
        /// Block timestamp.
        found: u64,
    },
    /// The proposer is not a validator of this chain.
    #[error("proposer {0} is not a validator of this chain")]
    UnknownProposer(PublicKey),
    /// The proposer's signature over the header hash is invalid.
    #[error("proposer signature is invalid")]
    BadProposerSignature,
    /// The block has no transactions.
    #[error("block has no transactions")]
    EmptyBlock,
    /// More transactions than the limit.
    #[error("block has {count} transactions, limit is {max}")]
    TooManyTxs {
        /// Transactions in the block.
        count: u64,
        /// The limit.
        max: u32,
    },
    /// The header's transaction count disagrees with the body.
    #[error("header says {header} transactions, block has {actual}")]
    TxCountMismatch {
        /// Header `n_txs`.
        header: u32,
        /// Transactions present.
        actual: u64,
    },
    /// The encoded block is over the limit.
    #[error("block is {bytes} bytes, limit is {max}")]
    BlockTooLarge {
        /// Encoded size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The Merkle root does not match the transactions.
    #[error("tx_root {header} does not match the transactions (computed {computed})")]
    MerkleRootMismatch {
        /// Header root.
        header: Hash,
        /// Root of the block's transaction ids.
        computed: Hash,
    },
    /// A transaction breaks a rule; `index` is its position in the block.
    #[error("transaction {index} ({id}): {error}")]
    Tx {
        /// Position in the block (0 for a lone transaction).
        index: u32,
        /// Its id.
        id: TxId,
        /// The broken rule.
        error: TxError,
    },
}

/// Why a single transaction is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum TxError {
    /// Encoded size over the limit.
    #[error("{bytes} bytes, limit is {max}")]
    TooLarge {
        /// Encoded size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// For another chain.
    #[error("for chain '{found}', this chain is '{expected}'")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's chain id.
        found: String,
    },
    /// The sender is not a permitted client.
    #[error("sender {0} is not a permitted client of this chain")]
    UnknownSender(PublicKey),
    /// `expires_at` is below the height.
    #[error("expired at height {expires_at}, cannot enter height {height}")]
    Expired {
        /// The transaction's last valid height.
        expires_at: u64,
        /// The height it was offered to.
        height: u64,
    },
    /// `expires_at` is further ahead than the chain's lifetime allows.
    #[error("expires_at {expires_at} is more than {lifetime} blocks after height {height}")]
    ExpiryTooFar {
        /// The transaction's last valid height.
        expires_at: u64,
        /// The height it was offered to.
        height: u64,
        /// The chain's `tx_lifetime_blocks`.
        lifetime: u64,
    },
    /// The same transaction appears earlier in the block.
    #[error("duplicate of transaction {first}")]
    Duplicate {
        /// Position of the first occurrence.
        first: u32,
    },
    /// The signature is invalid.
    #[error("signature is invalid")]
    BadSignature,
}

/// Checks everything about one transaction except its signature, for a block at `height`.
///
/// # Errors
/// The first rule the transaction breaks.
pub fn check_tx_rules(tx: &SignedTransaction, policy: &Policy, height: u64) -> Result<(), TxError> {
    let bytes = tx.encoded_len();
    if bytes > policy.limits.tx_bytes_max {
        return Err(TxError::TooLarge {
            bytes,
            max: policy.limits.tx_bytes_max,
        });
    }
    let t = &tx.tx;
    if t.chain_id != policy.chain_id {
        return Err(TxError::WrongChain {
            expected: policy.chain_id.clone(),
            found: t.chain_id.clone(),
        });
    }
    if !policy.clients.contains(&t.sender) {
        return Err(TxError::UnknownSender(t.sender));
    }
    if t.expires_at < height {
        return Err(TxError::Expired {
            expires_at: t.expires_at,
            height,
        });
    }
    let lifetime = policy.limits.tx_lifetime_blocks;
    if t.expires_at - height > lifetime {
        return Err(TxError::ExpiryTooFar {
            expires_at: t.expires_at,
            height,
            lifetime,
        });
    }
    Ok(())
}

/// Verifies one transaction completely (rules and signature) as a candidate for `height`.
/// Returns its id.
///
/// # Errors
/// [`VerifyError::Tx`] with index 0 and the broken rule.
pub fn verify_transaction(
    tx: &SignedTransaction,
    policy: &Policy,
    height: u64,
) -> Result<TxId, VerifyError> {
    let id = tx.id();
    let fail = |error| VerifyError::Tx {
        index: 0,
        id,
        error,
    };
    check_tx_rules(tx, policy, height).map_err(fail)?;
    ordo_crypto::verify(&tx.tx.sender, id.as_bytes(), &tx.signature)
        .map_err(|_| fail(TxError::BadSignature))?;
    Ok(id)
}

/// Verifies that `block` may be appended on top of `parent` under `policy`.
///
/// Returns the block's transaction ids (callers index them).
///
/// # Errors
/// The first rule broken, in the order: header link checks, sizes, per-transaction rules,
/// Merkle root, then signatures.
pub fn verify_block(
    parent: &ChainTip,
    block: &Block,
    policy: &Policy,
) -> Result<Vec<TxId>, VerifyError> {
    verify_block_with(parent, block, policy, |_, _| false)
}

/// As [`verify_block`], leaving out of the signature batch each transaction for which
/// `checked(id, signature)` is true: the caller has already verified that exact signature
/// over that id (the id covers the sender) under the same ZIP-215 rules, so the verdict
/// is the same. Every other rule, and the proposer's signature, is checked as usual.
///
/// # Errors
/// As [`verify_block`].
pub fn verify_block_with(
    parent: &ChainTip,
    block: &Block,
    policy: &Policy,
    checked: impl Fn(&TxId, &Signature) -> bool,
) -> Result<Vec<TxId>, VerifyError> {
    verify_header(parent, block, policy)?;
    let ids = verify_body_rules(block, policy)?;
    verify_signatures(block, &ids, checked)?;
    Ok(ids)
}

fn verify_header(parent: &ChainTip, block: &Block, policy: &Policy) -> Result<(), VerifyError> {
    let h = &block.header;
    if h.chain_id != policy.chain_id {
        return Err(VerifyError::WrongChain {
            expected: policy.chain_id.clone(),
            found: h.chain_id.clone(),
        });
    }
    let expected = parent.height + 1;
    if h.height != expected {
        return Err(VerifyError::WrongHeight {
            expected,
            found: h.height,
        });
    }
    if h.prev_hash != parent.hash {
        return Err(VerifyError::BrokenHashLink {
            expected: parent.hash,
            found: h.prev_hash,
        });
    }
    if h.timestamp_ms < parent.timestamp_ms {
        return Err(VerifyError::TimestampBeforeParent {
            parent: parent.timestamp_ms,
            found: h.timestamp_ms,
        });
    }
    if !policy.validators.contains(&h.proposer) {
        return Err(VerifyError::UnknownProposer(h.proposer));
    }
    Ok(())
}

fn verify_body_rules(block: &Block, policy: &Policy) -> Result<Vec<TxId>, VerifyError> {
    let (h, limits) = (&block.header, &policy.limits);
    let count = block.txs.len() as u64;
    if count == 0 {
        return Err(VerifyError::EmptyBlock);
    }
    if count > u64::from(limits.block_txs_max) {
        return Err(VerifyError::TooManyTxs {
            count,
            max: limits.block_txs_max,
        });
    }
    if u64::from(h.n_txs) != count {
        return Err(VerifyError::TxCountMismatch {
            header: h.n_txs,
            actual: count,
        });
    }
    let bytes = block.encoded_len();
    if bytes > limits.block_bytes_max {
        return Err(VerifyError::BlockTooLarge {
            bytes,
            max: limits.block_bytes_max,
        });
    }
    let mut ids = Vec::with_capacity(block.txs.len());
    let mut seen: HashMap<TxId, u32> = HashMap::with_capacity(block.txs.len());
    for (i, tx) in block.txs.iter().enumerate() {
        // Bounded by block_txs_max, which is far below u32::MAX.
        let index = i as u32;
        let id = tx.id();
        let fail = |error| VerifyError::Tx { index, id, error };
        check_tx_rules(tx, policy, h.height).map_err(fail)?;
        if let Some(&first) = seen.get(&id) {
            return Err(fail(TxError::Duplicate { first }));
        }
        seen.insert(id, index);
        ids.push(id);
    }
    let computed = merkle::root(&ids);
    if computed != h.tx_root {
        return Err(VerifyError::MerkleRootMismatch {
            header: h.tx_root,
            computed,
        });
    }
    Ok(ids)
}

fn verify_signatures(
    block: &Block,
    ids: &[TxId],
    checked: impl Fn(&TxId, &Signature) -> bool,
) -> Result<(), VerifyError> {
    let mut batch = BatchVerifier::with_capacity(ids.len() + 1);
    let header_hash = block.header.hash();
    batch.queue(
        &block.header.proposer,
        header_hash.as_bytes(),
        &block.signature,
    );
    // Block index of each queued transaction (batch position - 1), in block order, so the
    // first bad signature in the batch is the first in the block.
    let mut queued = Vec::with_capacity(ids.len());
    for (i, (tx, id)) in block.txs.iter().zip(ids).enumerate() {
        if !checked(id, &tx.signature) {
            batch.queue(&tx.tx.sender, id.as_bytes(), &tx.signature);
            queued.push(i);
        }
    }
    match batch.verify() {
        Ok(()) => Ok(()),
        Err(SignatureError::InvalidAt { index: 0 }) | Err(SignatureError::Invalid) => {
            Err(VerifyError::BadProposerSignature)
        }
        Err(SignatureError::InvalidAt { index }) => {
            let i = queued[index - 1];
            Err(VerifyError::Tx {
                // verify_body_rules bounds the count far below u32::MAX.
                index: i as u32,
                id: ids[i],
                error: TxError::BadSignature,
            })
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
