//! The block builder: what a leader runs to turn transactions into a signed block.

use std::collections::BTreeMap;

use ordo_crypto::{Hash, Keypair, PublicKey, Signature, merkle};

use crate::certify::certificate;
use crate::policy::{Policy, ValidatorSet};
use crate::types::{
    Attestation, Block, BlockHeader, Certificate, ChainTip, SignedTransaction, TxId, certs_root,
};

/// Builds and signs the block that follows `parent`, carrying `certificates` (those of the
/// blocks from `parent.certified + 1` upwards, in order; the caller gathers them).
///
/// A pure function: time comes in as `timestamp_ms`, and is raised to the parent's
/// timestamp if the proposer's clock is behind, so the result always satisfies the
/// timestamp rule. The caller chooses valid transactions and certificates; this function
/// does not filter.
///
/// # Panics
/// If there are more than `u32::MAX` transactions (no valid block is that large).
pub fn build_block(
    parent: &ChainTip,
    chain_id: &str,
    certificates: Vec<Certificate>,
    txs: Vec<SignedTransaction>,
    proposer: &Keypair,
    timestamp_ms: u64,
    term: u64,
) -> Block {
    let ids: Vec<_> = txs.iter().map(SignedTransaction::id).collect();
    build_block_with_ids(
        parent,
        chain_id,
        certificates,
        txs,
        &ids,
        proposer,
        timestamp_ms,
        term,
    )
}

/// As [`build_block`], for a caller that already holds the transactions' ids (`ids[i]` is
/// `txs[i].id()`), so they are not hashed again.
///
/// # Panics
/// As [`build_block`]; in debug builds, also if `ids` does not match `txs`.
#[allow(clippy::too_many_arguments)]
pub fn build_block_with_ids(
    parent: &ChainTip,
    chain_id: &str,
    certificates: Vec<Certificate>,
    txs: Vec<SignedTransaction>,
    ids: &[TxId],
    proposer: &Keypair,
    timestamp_ms: u64,
    term: u64,
) -> Block {
    assert_eq!(ids.len(), txs.len(), "one id per transaction");
    debug_assert!(txs.iter().zip(ids).all(|(t, id)| t.id() == *id));
    let header = BlockHeader {
        chain_id: chain_id.to_owned(),
        height: parent.height + 1,
        prev_hash: parent.hash,
        tx_root: merkle::root(ids),
        n_txs: u32::try_from(txs.len()).expect("transaction count fits in u32"),
        timestamp_ms: timestamp_ms.max(parent.timestamp_ms),
        proposer: proposer.public(),
        term,
        certified: parent.certified + certificates.len() as u64,
        certs_root: certs_root(&certificates),
    };
    let signature = proposer.sign(header.hash().as_bytes());
    Block {
        header,
        signature,
        certificates,
        txs,
    }
}

/// Builds a chain of blocks each of which certifies every block before it, with the
/// attestations of `attesters` (validator keys: all of them, or a majority for a chain
/// that still verifies). For tools and tests that make chains without validators running
/// (`ordo testchain`); validators build blocks through their proposer.
pub struct ChainBuilder {
    chain_id: String,
    validators: ValidatorSet,
    attesters: Vec<Keypair>,
    tip: ChainTip,
    /// Hashes of the blocks above `tip.certified`.
    uncertified: BTreeMap<u64, Hash>,
}

impl ChainBuilder {
    /// A builder on `policy`'s genesis.
    pub fn new(policy: &Policy, attesters: Vec<Keypair>) -> ChainBuilder {
        ChainBuilder {
            chain_id: policy.chain_id.clone(),
            validators: policy.validators.clone(),
            attesters,
            tip: policy.genesis_tip(),
            uncertified: BTreeMap::new(),
        }
    }

    /// The tip of the chain built so far.
    pub fn tip(&self) -> ChainTip {
        self.tip
    }

    /// The attestations of the blocks no block certifies yet (the last one), by every
    /// attester.
    pub fn tail_attestations(&self) -> Vec<Attestation> {
        self.uncertified
            .iter()
            .flat_map(|(h, hash)| {
                self.attesters
                    .iter()
                    .map(|k| Attestation::sign(&self.chain_id, *h, *hash, k))
            })
            .collect()
    }

    /// The certificates the next block carries.
    pub fn certificates(&self) -> Vec<Certificate> {
        self.uncertified
            .iter()
            .map(|(h, hash)| {
                let sigs: BTreeMap<PublicKey, Signature> = self
                    .attesters
                    .iter()
                    .map(|k| {
                        let a = Attestation::sign(&self.chain_id, *h, *hash, k);
                        (a.signer, a.signature)
                    })
                    .collect();
                certificate(&self.validators, *h, *hash, &sigs)
            })
            .collect()
    }

    /// Builds, signs and takes the next block.
    pub fn build(
        &mut self,
        txs: Vec<SignedTransaction>,
        proposer: &Keypair,
        timestamp_ms: u64,
        term: u64,
    ) -> Block {
        let block = build_block(
            &self.tip,
            &self.chain_id,
            self.certificates(),
            txs,
            proposer,
            timestamp_ms,
            term,
        );
        self.take(&block);
        block
    }

    /// Takes `block` (built on this builder's tip) as the next block.
    pub fn take(&mut self, block: &Block) {
        self.tip = block.tip();
        self.uncertified = self.uncertified.split_off(&(self.tip.certified + 1));
        self.uncertified.insert(self.tip.height, self.tip.hash);
    }
}
