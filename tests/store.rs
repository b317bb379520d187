//! The RocksDB store through its public API: appends, reads, proofs, and refusals.

mod support;

use ordo_ledger::{Store, StoreError};
use support::TestChain;

#[test]
fn appended_blocks_read_back_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    let tip = {
        let store = chain.write(dir.path(), 5, 10, 32);
        store.tip()
    };
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("reopen");
    assert_eq!(store.tip(), tip);
    assert_eq!(tip.height, 5);
    let b3 = store.block(3).expect("read").expect("present");
    assert_eq!(b3.header.height, 3);
    assert_eq!(
        store.block_by_hash(&b3.hash()).expect("read"),
        Some(b3.clone())
    );
    assert_eq!(store.block(6).expect("read"), None);
    assert_eq!(store.block(0).expect("read"), None);
}

#[test]
fn transaction_lookup_returns_a_verifying_proof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 3);
    let store = chain.write(dir.path(), 3, 7, 16);
    let block = store.block(2).expect("read").expect("present");
    for (i, tx) in block.txs.iter().enumerate() {
        let found = store
            .tx_with_proof(&tx.id())
            .expect("read")
            .expect("present");
        assert_eq!((found.height, found.index as usize), (2, i));
        assert_eq!(&found.tx, tx);
        assert!(found.proof.verify(&tx.id(), &block.header.tx_root));
    }
    let absent = ordo_crypto::Hash([7; 32]);
    assert!(store.tx_with_proof(&absent).expect("read").is_none());
}

#[test]
fn a_store_refuses_another_chains_genesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    drop(chain.write(dir.path(), 1, 1, 8));
    let other = TestChain::new(2, 1);
    let err = Store::open(dir.path(), &other.genesis.identity())
        .err()
        .expect("mismatch refused");
    assert!(matches!(err, StoreError::ChainMismatch { .. }));
    assert!(
        err.to_string().contains("use the matching genesis file"),
        "{err}"
    );
    let err = Store::open_read_only(dir.path(), &other.genesis.identity())
        .err()
        .expect("mismatch refused");
    assert!(matches!(err, StoreError::ChainMismatch { .. }));
}

#[test]
fn append_refuses_blocks_that_do_not_extend_the_tip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    let store = chain.write(dir.path(), 2, 2, 8);
    let next = chain.next_block(&store, 2, 8);
    store.append(&next).expect("append next");
    // The same block again no longer extends the tip.
    assert!(matches!(
        store.append(&next),
        Err(StoreError::NotNext { .. })
    ));
    assert_eq!(store.tip().height, 3);
}

#[test]
fn append_refuses_an_already_committed_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    let store = chain.write(dir.path(), 1, 3, 8);
    let old_tx = store.block(1).expect("read").expect("present").txs[1].clone();
    let parent = store.tip();
    let replay = ordo_ledger::build_block(
        &parent,
        support::CHAIN,
        vec![],
        vec![old_tx.clone()],
        &chain.validators[0],
        1,
        1,
    );
    let err = store.append(&replay).expect_err("replay refused");
    assert!(
        matches!(err, StoreError::AlreadyCommitted { height: 1, .. }),
        "{err}"
    );
    assert_eq!(store.tip(), parent, "nothing written");
}

#[test]
fn read_only_open_works_beside_a_writer_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    let writer = chain.write(dir.path(), 2, 2, 8);
    let reader =
        Store::open_read_only(dir.path(), &chain.genesis.identity()).expect("read-only open");
    assert_eq!(reader.tip(), writer.tip());
    let next = chain.next_block(&writer, 1, 8);
    assert!(matches!(reader.append(&next), Err(StoreError::ReadOnly)));
}

#[test]
fn read_only_open_of_a_missing_ledger_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    let err = Store::open_read_only(dir.path(), &chain.genesis.identity())
        .err()
        .expect("missing");
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

#[test]
fn garbage_in_the_ledger_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger");
    std::fs::create_dir_all(&ledger).expect("mkdir");
    std::fs::write(ledger.join("CURRENT"), b"MANIFEST-999999\n").expect("write");
    let chain = TestChain::new(1, 1);
    let err = Store::open(dir.path(), &chain.genesis.identity())
        .err()
        .expect("corrupt dir refused");
    assert!(matches!(err, StoreError::Db { .. }), "{err}");
}

#[test]
fn a_corrupt_stored_block_is_reported_not_panicked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 1);
    drop(chain.write(dir.path(), 2, 2, 8));
    {
        let db = support::raw_db(dir.path());
        let cf = db.cf_handle("blocks").expect("cf");
        db.put_cf(cf, 2u64.to_be_bytes(), b"not a block")
            .expect("tamper");
    }
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    assert!(matches!(store.block(2), Err(StoreError::Corrupt { .. })));
}

#[test]
fn a_check_finds_a_whole_but_wrong_block_and_its_repair_puts_the_chain_back() {
    use ordo_ledger::CheckDepth;
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    let store = chain.write(dir.path(), 6, 4, 16);
    let policy = chain.genesis.policy();
    assert!(
        store
            .check_range(1, 6, &policy, CheckDepth::Full)
            .damage
            .is_empty()
    );
    let good = store.block(3).expect("read").expect("stored");
    // Block 4's bytes stored at height 3: whole (checksums pass, it decodes), but not the
    // chain's block there.
    let wrong = store.block_bytes(4).expect("read").expect("stored");
    let blocks = store.db().cf_handle("blocks").expect("column family");
    store
        .db()
        .put_cf(blocks, 3u64.to_be_bytes(), &wrong)
        .expect("write");
    let err = store.block(3).expect_err("a wrong block is never returned");
    assert!(err.is_damage(), "{err}");
    for depth in [CheckDepth::Hashes, CheckDepth::Full] {
        let checked = store.check_range(1, 6, &policy, depth);
        let heights: Vec<u64> = checked.damage.iter().map(|d| d.height()).collect();
        assert_eq!(heights, [3], "{:?}", checked.damage);
        assert!(!checked.table_damage);
    }
    store
        .repair_block(&good, &good.tx_ids())
        .expect("rewrite the block");
    assert!(store.check_recent(6, &policy).damage.is_empty());
    assert_eq!(store.block(3).expect("read"), Some(good));
}

#[test]
fn a_requested_salvage_of_a_whole_ledger_loses_nothing_and_clears_the_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    let identity = chain.genesis.identity();
    let tip = {
        let store = chain.write(dir.path(), 5, 3, 16);
        store.request_salvage("a test asked").expect("request");
        store.tip()
    };
    let ledger = dir.path().join(ordo_ledger::LEDGER_DIR);
    assert!(ledger.join(ordo_ledger::SALVAGE_MARKER).is_file());
    let (store, salvaged) =
        Store::open_salvaging(dir.path(), &identity, &[], &Default::default()).expect("open");
    let salvaged = salvaged.expect("a salvage ran");
    assert!(salvaged.reason.contains("a test asked"), "{salvaged:?}");
    assert!(
        salvaged.files.is_empty() && salvaged.lost_blocks.is_empty(),
        "{salvaged:?}"
    );
    assert_eq!(store.tip(), tip);
    assert!(
        store
            .check_recent(5, &chain.genesis.policy())
            .damage
            .is_empty()
    );
    assert!(!ledger.join(ordo_ledger::SALVAGE_MARKER).exists());
    drop(store);
    let (_, again) =
        Store::open_salvaging(dir.path(), &identity, &[], &Default::default()).expect("open");
    assert!(again.is_none(), "the request is cleared once done");
}

#[test]
fn a_salvage_interrupted_between_its_renames_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    let identity = chain.genesis.identity();
    let tip = chain.write(dir.path(), 4, 2, 16).tip();
    // As a crash leaves it after the first rename: the complete copy beside no ledger.
    let (ledger, work) = (
        dir.path().join(ordo_ledger::LEDGER_DIR),
        dir.path().join("ledger.salvage"),
    );
    std::fs::rename(&ledger, &work).expect("rename");
    std::fs::write(work.join("SALVAGED"), b"").expect("mark");
    let (store, salvaged) =
        Store::open_salvaging(dir.path(), &identity, &[], &Default::default()).expect("open");
    assert!(salvaged.is_none());
    assert_eq!(store.tip(), tip);
    assert!(!work.exists() && !ledger.join("SALVAGED").exists());
}

/// The `*.log` files of the ledger database in `data_dir` that hold bytes, oldest first.
fn write_ahead_logs(data_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let ledger = data_dir.join(ordo_ledger::LEDGER_DIR);
    let mut logs: Vec<_> = std::fs::read_dir(&ledger)
        .expect("ledger dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    logs.sort();
    logs
}

/// A closed write-ahead log still holds records other column families have not flushed;
/// cut short (a disk that lost what it had synced), it would replay a shorter history
/// without a word. The store refuses to open instead, and so does a salvage.
#[test]
fn a_closed_write_ahead_log_cut_short_keeps_the_store_from_opening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(1, 2);
    let identity = chain.genesis.identity();
    {
        let store = chain.write(dir.path(), 3, 2, 64);
        // Flushing one column family closes the log the others still need.
        let meta = store.db().cf_handle("meta").expect("meta");
        store.db().flush_cf(meta).expect("flush meta");
        for _ in 0..2 {
            let block = chain.next_block(&store, 2, 64);
            store.append(&block).expect("append");
        }
    }
    let logs = write_ahead_logs(dir.path());
    assert!(logs.len() >= 2, "a closed log and the live one: {logs:?}");
    let closed = &logs[0];
    let len = std::fs::metadata(closed).expect("stat").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(closed)
        .expect("open log")
        .set_len(len / 2)
        .expect("truncate");
    let Err(err) = Store::open(dir.path(), &identity) else {
        panic!("a store with a damaged log opened");
    };
    assert!(err.is_damage(), "{err}");
    assert!(err.to_string().contains("WAL"), "{err}");
    let Err(err) = Store::open_salvaging(dir.path(), &identity, &[], &Default::default()) else {
        panic!("a salvage of a store with a damaged log went through");
    };
    assert!(
        matches!(err, StoreError::Unsalvageable { .. }) && err.to_string().contains("WAL"),
        "{err}"
    );
}
