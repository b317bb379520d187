//! The block builder: what a leader runs to turn transactions into a signed block.

use ordo_crypto::{Keypair, merkle};

use crate::types::{Block, BlockHeader, ChainTip, SignedTransaction, TxId};

/// Builds and signs the block that follows `parent`.
///
/// A pure function: time comes in as `timestamp_ms`, and is raised to the parent's
/// timestamp if the proposer's clock is behind, so the result always satisfies the
/// timestamp rule. The caller chooses valid transactions; this function does not filter.
///
/// # Panics
/// If there are more than `u32::MAX` transactions (no valid block is that large).
pub fn build_block(
    parent: &ChainTip,
    chain_id: &str,
    txs: Vec<SignedTransaction>,
    proposer: &Keypair,
    timestamp_ms: u64,
    term: u64,
) -> Block {
    let ids: Vec<_> = txs.iter().map(SignedTransaction::id).collect();
    build_block_with_ids(parent, chain_id, txs, &ids, proposer, timestamp_ms, term)
}

/// As [`build_block`], for a caller that already holds the transactions' ids (`ids[i]` is
/// `txs[i].id()`), so they are not hashed again.
///
/// # Panics
/// As [`build_block`]; in debug builds, also if `ids` does not match `txs`.
pub fn build_block_with_ids(
    parent: &ChainTip,
    chain_id: &str,
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
    };
    let signature = proposer.sign(header.hash().as_bytes());
    Block {
        header,
        signature,
        txs,
    }
}
