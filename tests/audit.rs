//! Offline audit: a clean chain passes; any tampering fails at the first bad height.

mod support;

use std::path::Path;

use ordo_ledger::{
    AuditError, AuditReport, Block, Store, VerifyError, audit, build_block, verify_block,
};
use support::{TestChain, raw_db};

fn audit_dir(dir: &Path, chain: &TestChain) -> AuditReport {
    let store = Store::open_read_only(dir, &chain.genesis.identity()).expect("open");
    audit(&store, &chain.genesis.policy(), |_| {})
}

fn failure_height(dir: &Path, chain: &TestChain) -> (Option<u64>, AuditError) {
    let report = audit_dir(dir, chain);
    let f = report.failure.expect("audit must fail");
    (f.height, f.error)
}

/// Replaces the stored bytes of block `height`.
fn put_block_bytes(dir: &Path, height: u64, bytes: &[u8]) {
    let db = raw_db(dir);
    db.put_cf(
        db.cf_handle("blocks").expect("cf"),
        height.to_be_bytes(),
        bytes,
    )
    .expect("put");
}

fn block_bytes(dir: &Path, chain: &TestChain, height: u64) -> Vec<u8> {
    let store = Store::open_read_only(dir, &chain.genesis.identity()).expect("open");
    store.block_bytes(height).expect("read").expect("present")
}

#[test]
fn hundred_thousand_transactions_in_a_thousand_blocks_audit_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 8);
    let tip = chain.write(dir.path(), 1000, 100, 32).tip();
    let mut last = 0;
    let report = audit_dir(dir.path(), &chain);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.blocks_verified, 1000);
    assert_eq!(report.txs_verified, 100_000);
    assert_eq!(report.verified_tip, tip);

    // Progress is reported for every height, in order.
    let store = Store::open_read_only(dir.path(), &chain.genesis.identity()).expect("open");
    audit(&store, &chain.genesis.policy(), |h| {
        assert_eq!(h, last + 1);
        last = h;
    });
    assert_eq!(last, 1000);
}

#[test]
fn a_flipped_byte_anywhere_in_a_stored_block_fails_at_that_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    drop(chain.write(dir.path(), 12, 5, 40));
    let original = block_bytes(dir.path(), &chain, 7);
    // Positions spread over the header, the proposer signature and the transactions.
    let step = (original.len() / 40).max(1);
    for pos in (0..original.len())
        .step_by(step)
        .chain([original.len() - 1])
    {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x5a;
        put_block_bytes(dir.path(), 7, &bytes);
        let (height, error) = failure_height(dir.path(), &chain);
        assert_eq!(height, Some(7), "byte {pos} of {}: {error}", original.len());
    }
    put_block_bytes(dir.path(), 7, &original);
    assert!(audit_dir(dir.path(), &chain).ok());
}

/// Every single-bit flip at every position of a block's bytes is caught by decoding or by
/// verification against its parent: nothing in a block is left unprotected.
#[test]
fn every_bit_flip_in_a_block_is_caught_by_decode_or_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(2, 2);
    let store = chain.write(dir.path(), 1, 1, 8);
    let parent = store.tip();
    let block = chain.next_block(&store, 3, 16);
    let bytes = block.to_bytes();
    let policy = chain.genesis.policy();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[pos] ^= mask;
            let caught = match Block::from_bytes(&b, u64::MAX) {
                Err(_) => true,
                Ok(decoded) => verify_block(&parent, &decoded, &policy).is_err(),
            };
            assert!(
                caught,
                "flip {mask:#04x} at byte {pos} of {} went unnoticed",
                bytes.len()
            );
        }
    }
}

#[test]
fn reordered_blocks_fail_at_the_first_swapped_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    drop(chain.write(dir.path(), 10, 3, 8));
    let (b5, b6) = (
        block_bytes(dir.path(), &chain, 5),
        block_bytes(dir.path(), &chain, 6),
    );
    put_block_bytes(dir.path(), 5, &b6);
    put_block_bytes(dir.path(), 6, &b5);
    let (height, error) = failure_height(dir.path(), &chain);
    assert_eq!(height, Some(5));
    assert_eq!(error, AuditError::HeightMismatch { header: 6 });
}

#[test]
fn a_dropped_block_fails_at_its_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    drop(chain.write(dir.path(), 10, 3, 8));
    {
        let db = raw_db(dir.path());
        db.delete_cf(db.cf_handle("blocks").expect("cf"), 7u64.to_be_bytes())
            .expect("delete");
    }
    assert_eq!(
        failure_height(dir.path(), &chain),
        (Some(7), AuditError::MissingBlock)
    );
}

#[test]
fn a_dropped_last_block_fails_at_the_recorded_tip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    drop(chain.write(dir.path(), 10, 3, 8));
    {
        let db = raw_db(dir.path());
        db.delete_cf(db.cf_handle("blocks").expect("cf"), 10u64.to_be_bytes())
            .expect("delete");
    }
    assert_eq!(
        failure_height(dir.path(), &chain),
        (Some(10), AuditError::MissingBlock)
    );
}

#[test]
fn swapped_transaction_signatures_fail_at_that_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    drop(chain.write(dir.path(), 10, 4, 8));
    let mut block =
        Block::from_bytes(&block_bytes(dir.path(), &chain, 9), u64::MAX).expect("decode");
    let s0 = block.txs[0].signature;
    block.txs[0].signature = block.txs[1].signature;
    block.txs[1].signature = s0;
    put_block_bytes(dir.path(), 9, &block.to_bytes());
    let (height, error) = failure_height(dir.path(), &chain);
    assert_eq!(height, Some(9));
    assert!(
        matches!(
            error,
            AuditError::Invalid(VerifyError::Tx {
                index: 0,
                error: ordo_ledger::TxError::BadSignature,
                ..
            })
        ),
        "{error}"
    );
}

#[test]
fn a_block_signature_taken_from_another_block_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    drop(chain.write(dir.path(), 10, 2, 8));
    let b8 = Block::from_bytes(&block_bytes(dir.path(), &chain, 8), u64::MAX).expect("decode");
    let mut b9 = Block::from_bytes(&block_bytes(dir.path(), &chain, 9), u64::MAX).expect("decode");
    b9.signature = b8.signature;
    put_block_bytes(dir.path(), 9, &b9.to_bytes());
    assert_eq!(
        failure_height(dir.path(), &chain),
        (
            Some(9),
            AuditError::Invalid(VerifyError::BadProposerSignature)
        )
    );
}

#[test]
fn a_deleted_transaction_index_entry_fails_at_its_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    drop(chain.write(dir.path(), 6, 3, 8));
    let id = Block::from_bytes(&block_bytes(dir.path(), &chain, 4), u64::MAX)
        .expect("decode")
        .txs[2]
        .id();
    {
        let db = raw_db(dir.path());
        db.delete_cf(db.cf_handle("tx_index").expect("cf"), id.as_bytes())
            .expect("delete");
    }
    let (height, error) = failure_height(dir.path(), &chain);
    assert_eq!(height, Some(4));
    assert!(
        matches!(
            error,
            AuditError::TxIndex {
                index: 2,
                found: None,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_block_stored_above_the_tip_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    drop(chain.write(dir.path(), 4, 2, 8));
    let b4 = block_bytes(dir.path(), &chain, 4);
    put_block_bytes(dir.path(), 5, &b4);
    assert_eq!(
        failure_height(dir.path(), &chain),
        (Some(5), AuditError::BeyondTip { recorded_tip: 4 })
    );
}

#[test]
fn a_replayed_transaction_written_behind_the_stores_back_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    let store = chain.write(dir.path(), 3, 2, 8);
    let old = store.block(3).expect("read").expect("present").txs[0].clone();
    let parent = store.tip();
    let mut txs = chain.txs(4, 99, 1, 8);
    txs.push(old);
    let block = build_block(
        &parent,
        support::CHAIN,
        vec![],
        txs,
        &chain.validators[0],
        1_800_000_000_000,
        1,
    );
    verify_block(&parent, &block, &chain.genesis.policy()).expect("valid on its own");
    drop(store);
    {
        // Write it the way the store would, minus the replay check.
        let db = raw_db(dir.path());
        let tip = block.tip();
        db.put_cf(
            db.cf_handle("blocks").expect("cf"),
            4u64.to_be_bytes(),
            block.to_bytes(),
        )
        .expect("put");
        db.put_cf(
            db.cf_handle("block_hashes").expect("cf"),
            tip.hash.as_bytes(),
            4u64.to_be_bytes(),
        )
        .expect("put");
        let mut loc = 4u64.to_be_bytes().to_vec();
        loc.extend_from_slice(&0u32.to_be_bytes());
        db.put_cf(
            db.cf_handle("tx_index").expect("cf"),
            block.txs[0].id().as_bytes(),
            loc,
        )
        .expect("put");
        db.put_cf(
            db.cf_handle("meta").expect("cf"),
            b"tip",
            borsh::to_vec(&tip).expect("encode"),
        )
        .expect("put");
    }
    let (height, error) = failure_height(dir.path(), &chain);
    assert_eq!(height, Some(4));
    assert!(
        matches!(
            error,
            AuditError::Replayed {
                index: 1,
                first_height: 3,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn auditing_against_another_genesis_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    drop(chain.write(dir.path(), 2, 1, 8));
    let other = TestChain::new(2, 1);
    assert!(Store::open_read_only(dir.path(), &other.genesis.identity()).is_err());
}
