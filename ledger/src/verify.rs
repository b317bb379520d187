//! The rules a block must pass before any node appends it.
//!
//! [`verify_block`] is a pure function of (parent tip, block, policy): no clock, no disk.
//! Cheap structural checks run first; signatures last, in one ZIP-215 batch that covers the
//! proposer's signature, every certificate's and every transaction's.
//!
//! A certificate names the hash of the block it certifies; that this is the hash of the
//! chain's block at that height is checked where the chain is at hand (the store, before
//! it appends; the audit). A majority of honest validators signs only blocks they applied,
//! so a certificate that verifies here can only name the chain's block.

use std::collections::HashMap;

use ordo_crypto::{BatchVerifier, Hash, PublicKey, Signature, SignatureError, merkle};

use crate::Policy;
use crate::certify::{CertificateError, certificate_signers};
use crate::types::{Attestation, Block, ChainTip, SignedTransaction, TxId, certs_root};

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
    /// The timestamp is too far ahead of the checking node's time ([`check_block_time`]).
    #[error(
        "block timestamp {found} ms is {} ms ahead of the validators' time {now} ms; at most {bound} ms is allowed",
        found - now
    )]
    TimestampAhead {
        /// The validators' time as the checking node knows it.
        now: u64,
        /// Block timestamp.
        found: u64,
        /// The genesis's `block_time_ahead_max_ms`.
        bound: u64,
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
    /// More certificates than a block can need.
    #[error("block carries {count} certificates, at most {max} allowed")]
    TooManyCertificates {
        /// Certificates present.
        count: u64,
        /// The chain's `certify_lag`.
        max: u64,
    },
    /// `certs_root` does not match the certificates.
    #[error("certs_root {header} does not match the certificates (computed {computed})")]
    CertsRootMismatch {
        /// Header root.
        header: Hash,
        /// Root of the block's certificates.
        computed: Hash,
    },
    /// A certificate is not for the next uncertified height.
    #[error("certificate {index} is for height {found}; height {expected} is next to certify")]
    CertificateOutOfOrder {
        /// Position among the block's certificates.
        index: u32,
        /// The next height to certify.
        expected: u64,
        /// The certificate's height.
        found: u64,
    },
    /// The header's `certified` disagrees with the certificates.
    #[error("header says certified up to {header}, its certificates reach {certificates}")]
    CertifiedMismatch {
        /// Header `certified`.
        header: u64,
        /// The parent's `certified` plus the number of certificates.
        certificates: u64,
    },
    /// The block certifies itself or a height above it.
    #[error("block certifies up to {certified}, not below its own height")]
    CertifiedAhead {
        /// Header `certified`.
        certified: u64,
    },
    /// The block leaves a block uncertified that it must certify.
    #[error(
        "block {uncertified} is left uncertified: this block must certify every block at or \
         below {required}"
    )]
    Uncertified {
        /// The first block left uncertified.
        uncertified: u64,
        /// Every block at or below this must be certified by now.
        required: u64,
    },
    /// A certificate breaks a rule.
    #[error("certificate of block {height}: {error}")]
    Certificate {
        /// The certified height.
        height: u64,
        /// The broken rule.
        error: CertificateError,
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
    verify_certificate_rules(parent, block, policy)?;
    let ids = verify_body_rules(block, policy)?;
    verify_signatures(block, &ids, policy, checked)?;
    Ok(ids)
}

/// The certificate rules, signatures aside: how many, which heights, the header's summary
/// of them, and each one's signer set.
fn verify_certificate_rules(
    parent: &ChainTip,
    block: &Block,
    policy: &Policy,
) -> Result<(), VerifyError> {
    let (h, certs) = (&block.header, &block.certificates);
    let count = certs.len() as u64;
    if count > policy.certify_lag {
        return Err(VerifyError::TooManyCertificates {
            count,
            max: policy.certify_lag,
        });
    }
    let computed = certs_root(certs);
    if computed != h.certs_root {
        return Err(VerifyError::CertsRootMismatch {
            header: h.certs_root,
            computed,
        });
    }
    for (i, cert) in certs.iter().enumerate() {
        let expected = parent.certified + 1 + i as u64;
        if cert.height != expected {
            return Err(VerifyError::CertificateOutOfOrder {
                // Bounded by certify_lag above.
                index: i as u32,
                expected,
                found: cert.height,
            });
        }
    }
    let reached = parent.certified + count;
    if h.certified != reached {
        return Err(VerifyError::CertifiedMismatch {
            header: h.certified,
            certificates: reached,
        });
    }
    if h.certified >= h.height {
        return Err(VerifyError::CertifiedAhead {
            certified: h.certified,
        });
    }
    let required = policy.certified_min(h.height);
    if h.certified < required {
        return Err(VerifyError::Uncertified {
            uncertified: h.certified + 1,
            required,
        });
    }
    for cert in certs {
        certificate_signers(cert, &policy.validators).map_err(|error| {
            VerifyError::Certificate {
                height: cert.height,
                error,
            }
        })?;
    }
    Ok(())
}

/// Checks that `block` is stamped at most `ahead_max_ms` after `now_ms`, the validators'
/// time as the checking node knows it: a rule of appending, which a follower checks
/// besides [`verify_block`] before it appends, not of the chain (the audit has no clock).
///
/// # Errors
/// [`VerifyError::TimestampAhead`].
pub fn check_block_time(block: &Block, now_ms: u64, ahead_max_ms: u64) -> Result<(), VerifyError> {
    let found = block.header.timestamp_ms;
    if found > now_ms.saturating_add(ahead_max_ms) {
        return Err(VerifyError::TimestampAhead {
            now: now_ms,
            found,
            bound: ahead_max_ms,
        });
    }
    Ok(())
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
    policy: &Policy,
    checked: impl Fn(&TxId, &Signature) -> bool,
) -> Result<(), VerifyError> {
    let mut batch = BatchVerifier::with_capacity(ids.len() + 1);
    let header_hash = block.header.hash();
    batch.queue(
        &block.header.proposer,
        header_hash.as_bytes(),
        &block.signature,
    );
    // The certificates' signatures (their shapes were checked), each with its height and
    // signer, in batch order after the proposer's.
    let mut signers: Vec<(u64, PublicKey)> = Vec::new();
    for cert in &block.certificates {
        let keys = certificate_signers(cert, &policy.validators).map_err(|error| {
            VerifyError::Certificate {
                height: cert.height,
                error,
            }
        })?;
        let digest = Attestation::digest(&block.header.chain_id, cert.height, &cert.block_hash);
        for (key, sig) in keys.into_iter().zip(&cert.signatures) {
            batch.queue(key, digest.as_bytes(), sig);
            signers.push((cert.height, *key));
        }
    }
    let first_tx = 1 + signers.len();
    // Block index of each queued transaction (batch position - first_tx), in block order,
    // so the first bad signature in the batch is the first in the block.
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
        Err(SignatureError::InvalidAt { index }) if index < first_tx => {
            let (height, signer) = signers[index - 1];
            Err(VerifyError::Certificate {
                height,
                error: CertificateError::BadSignature(signer),
            })
        }
        Err(SignatureError::InvalidAt { index }) => {
            let i = queued[index - first_tx];
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
