//! Consensus storage: openraft's conformance suite against the RocksDB implementation, plus
//! ordo's own rules (blocks applied once, across restarts; snapshot catch-up verifies).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::alias::LogIdOf;
use openraft::{Entry, EntryPayload, LogId, StorageError};
use ordo_crypto::{Domain, Hash, Keypair};
use ordo_ledger::{Block, ChainIdentity, Limits, Policy, Store, Transaction, build_block};
use tempfile::TempDir;

use super::tests_support::time_bound;
use super::*;
use ordo_wire::{decode_internal, encode_internal};

const CHAIN: &str = "consensus-test";

fn policy() -> Policy {
    Policy {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(Domain::Genesis, CHAIN.as_bytes()),
        validators: ordo_ledger::ValidatorSet::from([Keypair::from_label("leader").public()]),
        clients: HashSet::from([Keypair::from_label("client").public()]),
        limits: Limits::default(),
        certify_lag: ordo_ledger::CERTIFY_LAG_DEFAULT,
    }
}

fn identity() -> ChainIdentity {
    let p = policy();
    ChainIdentity {
        chain_id: p.chain_id,
        genesis_hash: p.genesis_hash,
    }
}

/// A chain of `n` valid blocks on top of the genesis.
fn chain(n: u64) -> Vec<Block> {
    let (leader, client) = (Keypair::from_label("leader"), Keypair::from_label("client"));
    let mut chain = ordo_ledger::ChainBuilder::new(&policy(), vec![leader.clone()]);
    (1..=n)
        .map(|h| {
            let tx = Transaction {
                chain_id: CHAIN.into(),
                sender: client.public(),
                nonce: h,
                expires_at: h,
                payload: vec![h as u8],
            }
            .sign(&client);
            chain.build(vec![tx], &leader, 1_000 + h, 1)
        })
        .collect()
}

/// Serves blocks from a list, optionally corrupting the first answer.
struct ListSource {
    blocks: Vec<Block>,
    corrupt_first: Mutex<bool>,
}

impl BlockSource for ListSource {
    fn fetch(&self, from: u64, max: u64) -> BoxFuture<'_, Result<Vec<Block>, FetchError>> {
        let mut out: Vec<Block> = self
            .blocks
            .iter()
            .filter(|b| b.header.height >= from)
            .take(max as usize)
            .cloned()
            .collect();
        let mut corrupt = self.corrupt_first.lock().expect("lock");
        if *corrupt && !out.is_empty() {
            *corrupt = false;
            out[0].txs[0].tx.payload.push(0xff);
        }
        Box::pin(async move { Ok(out) })
    }
}

fn empty_source() -> Arc<dyn BlockSource> {
    Arc::new(ListSource {
        blocks: vec![],
        corrupt_first: Mutex::new(false),
    })
}

fn open(
    dir: &std::path::Path,
    source: Arc<dyn BlockSource>,
) -> (Arc<Store>, LogStore, BlockStateMachine) {
    let store = open_store(dir, &identity(), &Default::default()).expect("open store");
    let (log, sm) =
        open_consensus_storage(store.clone(), Arc::new(policy()), source).expect("open consensus");
    (store, log, sm)
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, BlockStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, BlockStateMachine), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("tempdir");
        let (_, log, sm) = open(dir.path(), empty_source());
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder)
        .await
        .expect("storage suite passes");
}

fn log_id(term: u64, index: u64) -> LogIdOf<TypeConfig> {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
        index,
    )
}

fn block_entry(term: u64, index: u64, block: &Block) -> EntryOf {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(BlockEntry::new(Arc::new(block.clone()))),
    }
}

type EntryOf = openraft::type_config::alias::EntryOf<TypeConfig>;

/// One entry per block, in term 1 from log index 1.
fn entries_for(blocks: &[Block]) -> Vec<EntryOf> {
    blocks
        .iter()
        .enumerate()
        .map(|(i, b)| block_entry(1, i as u64 + 1, b))
        .collect()
}

async fn apply(sm: &mut BlockStateMachine, entries: Vec<EntryOf>) {
    let stream = futures::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply");
}

#[tokio::test]
async fn applied_blocks_reach_the_ledger_once_across_restarts() {
    let dir = TempDir::new().expect("tempdir");
    let blocks = chain(5);
    {
        let (store, _log, mut sm) = open(dir.path(), empty_source());
        let mut entries = vec![Entry {
            log_id: log_id(1, 1),
            payload: EntryPayload::Blank,
        }];
        entries.extend(
            blocks[..3]
                .iter()
                .enumerate()
                .map(|(i, b)| block_entry(1, i as u64 + 2, b)),
        );
        apply(&mut sm, entries).await;
        assert_eq!(store.tip(), blocks[2].tip());
        assert_eq!(
            sm.applied_state().await.expect("state").0,
            Some(log_id(1, 4))
        );
    }
    // Restart: the applied id survived with the blocks; re-delivering old entries is harmless.
    let (store, _log, mut sm) = open(dir.path(), empty_source());
    assert_eq!(
        sm.applied_state().await.expect("state").0,
        Some(log_id(1, 4))
    );
    let stream = futures::stream::iter([Ok((block_entry(1, 4, &blocks[2]), None))]);
    sm.apply(stream).await.expect("re-apply");
    assert_eq!(store.tip(), blocks[2].tip());
    apply(
        &mut sm,
        vec![block_entry(2, 5, &blocks[3]), block_entry(2, 6, &blocks[4])],
    )
    .await;
    assert_eq!(store.tip(), blocks[4].tip());
    // Applied blocks are published with their ids; the re-delivered one was not applied.
    let recent = sm.recent();
    assert!(recent.get(3).is_none());
    for b in &blocks[3..] {
        let got = recent.get(b.header.height).expect("published");
        assert_eq!(got.hash, b.hash());
        assert_eq!(&*got.ids, &b.tx_ids()[..]);
    }
    let report = ordo_ledger::audit(&store, &policy(), |_| {});
    assert!(report.ok(), "{:?}", report.failure);
}

#[tokio::test]
async fn the_log_reads_back_what_it_holds_after_truncation_and_purge() {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    let dir = TempDir::new().expect("tempdir");
    let blocks = chain(6);
    let (_store, mut log, _sm) = open(dir.path(), empty_source());
    let entries = entries_for(&blocks);
    log.blocking_append(entries.clone()).await.expect("append");
    let heights = |es: Vec<EntryOf>| -> Vec<u64> {
        es.iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(b) => b.block.header.height,
                _ => 0,
            })
            .collect()
    };
    let got = log.try_get_log_entries(2..5).await.expect("read");
    assert_eq!(heights(got), vec![2, 3, 4]);
    // Replace the tail from index 4 with a block of another term.
    log.truncate_after(Some(log_id(1, 3)))
        .await
        .expect("truncate");
    assert!(
        log.try_get_log_entries(4..5)
            .await
            .expect("read")
            .is_empty()
    );
    log.blocking_append(vec![block_entry(2, 4, &blocks[3])])
        .await
        .expect("append");
    let got = log.try_get_log_entries(3..5).await.expect("read");
    assert_eq!(got[1].log_id, log_id(2, 4));
    log.purge(log_id(1, 2)).await.expect("purge");
    assert_eq!(
        heights(log.try_get_log_entries(0..5).await.expect("read")),
        vec![3, 4]
    );
    // A fresh handle (nothing in memory) reads the same from disk.
    drop(log);
    drop(_sm);
    drop(_store);
    let (_store, mut log, _sm) = open(dir.path(), empty_source());
    let got = log.try_get_log_entries(0..5).await.expect("read");
    assert_eq!(heights(got.clone()), vec![3, 4]);
    assert_eq!(got[1].log_id, log_id(2, 4));
}

#[tokio::test]
async fn a_block_that_does_not_extend_the_ledger_is_skipped_not_fatal() {
    let dir = TempDir::new().expect("tempdir");
    let blocks = chain(3);
    let (store, _log, mut sm) = open(dir.path(), empty_source());
    // Block 2 without block 1: deterministically skipped, applied id still advances.
    apply(&mut sm, vec![block_entry(1, 1, &blocks[1])]).await;
    assert_eq!(store.tip().height, 0);
    assert_eq!(
        sm.applied_state().await.expect("state").0,
        Some(log_id(1, 1))
    );
}

#[tokio::test]
async fn snapshot_install_fetches_and_verifies_missing_blocks() {
    let blocks = chain(12);
    // The leader's side: apply everything, build a snapshot.
    let leader_dir = TempDir::new().expect("tempdir");
    let (_, _, mut leader_sm) = open(leader_dir.path(), empty_source());
    apply(&mut leader_sm, entries_for(&blocks)).await;
    let mut builder = leader_sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.expect("build");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 12)));

    // A follower with an empty ledger installs it; its source lies once, then serves the truth.
    let follower_dir = TempDir::new().expect("tempdir");
    let source = Arc::new(ListSource {
        blocks: blocks.clone(),
        corrupt_first: Mutex::new(true),
    });
    let (store, mut log, mut sm) = open(follower_dir.path(), source);
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(store.tip(), blocks[11].tip());
    assert_eq!(
        sm.applied_state().await.expect("state").0,
        Some(log_id(1, 12))
    );
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("present");
    assert_eq!(current.meta, snapshot.meta);
    assert!(ordo_ledger::audit(&store, &policy(), |_| {}).ok());
    assert_eq!(log.get_log_state().await.expect("state").last_log_id, None);
}

/// An append from the leader of term 1 (node 1) after `prev`, carrying `blocks`.
fn append_of(prev: u64, blocks: &[&Block]) -> openraft::raft::AppendEntriesRequest<TypeConfig> {
    openraft::raft::AppendEntriesRequest {
        vote: openraft::Vote::new_committed(1, 1),
        prev_log_id: Some(log_id(1, prev)),
        leader_commit: None,
        entries: blocks
            .iter()
            .enumerate()
            .map(|(i, b)| block_entry(1, prev + 1 + i as u64, b))
            .collect(),
    }
}

#[tokio::test]
async fn an_append_is_checked_against_the_parents_its_blocks_link_to() {
    use openraft::storage::RaftLogStorageExt;
    let dir = TempDir::new().expect("tempdir");
    let (leader, client) = (Keypair::from_label("leader"), Keypair::from_label("client"));
    let tx = |nonce: u64| super::tests_support::signed_tx(CHAIN, &client, nonce, 100);
    let block1 = build_block(
        &policy().genesis_tip(),
        CHAIN,
        vec![],
        vec![tx(1)],
        &leader,
        1_001,
        1,
    );
    let block2 = build_block(&block1.tip(), CHAIN, vec![], vec![tx(2)], &leader, 1_002, 1);
    let blocks = [block1, block2];
    let (store, mut log, mut sm) = open(dir.path(), empty_source());
    let policy = Arc::new(policy());
    let (prechecked, _) = crate::precheck::Prechecked::new(policy.limits.tx_bytes_max, &[]);
    let check = AppendCheck::new(
        (log.clone(), store.clone()),
        policy,
        prechecked,
        time_bound(),
    );
    // Blocks 1 and 2 are in the log, not yet applied.
    log.blocking_append(entries_for(&blocks))
        .await
        .expect("append");
    let tip = blocks[1].tip();
    // A block repeating block 2's transaction: it commits, and every node skips it at apply.
    let skipped = build_block(
        &tip,
        CHAIN,
        vec![],
        blocks[1].txs.clone(),
        &leader,
        1_010,
        1,
    );
    // The leader's next block builds on its ledger tip, block 2, at the same height.
    let next = build_block(&tip, CHAIN, vec![], vec![tx(3)], &leader, 1_011, 1);
    // Both in one append: the second block's parent is block 2, not the block before it.
    check
        .verify_append(&mut append_of(2, &[&skipped, &next]))
        .expect("a block after a skipped one is checked against its own parent");
    // A forged block is refused as a failed check, not as a node catching up.
    let mut forged = next.clone();
    forged.txs[0].signature.0[5] ^= 1;
    let err = check
        .verify_append(&mut append_of(2, &[&skipped, &forged]))
        .expect_err("a forged block");
    assert!(
        matches!(&err, Refusal::Invalid(r) if r.contains("block 3")),
        "{err}"
    );
    // A block stamped an hour ahead of the validators' time is a failed check too.
    let now = crate::clock::system_ms();
    let ahead = build_block(
        &tip,
        CHAIN,
        vec![],
        vec![tx(3)],
        &leader,
        now + 3_600_000,
        1,
    );
    let err = check
        .verify_append(&mut append_of(2, &[&skipped, &ahead]))
        .expect_err("a block an hour ahead");
    assert!(
        matches!(&err, Refusal::Invalid(r) if r.contains("ahead of the validators' time")),
        "{err}"
    );
    let close = build_block(&tip, CHAIN, vec![], vec![tx(3)], &leader, now + 5_000, 1);
    check
        .verify_append(&mut append_of(2, &[&skipped, &close]))
        .expect("a block 5 s ahead is within the bound");
    // A block linking to nothing this node holds is still refused.
    let mut elsewhere = tip;
    elsewhere.hash = Hash::digest(Domain::Genesis, b"elsewhere");
    let stray = build_block(&elsewhere, CHAIN, vec![], vec![tx(3)], &leader, 1_011, 1);
    let err = check
        .verify_append(&mut append_of(2, &[&skipped, &stray]))
        .expect_err("a block with an unknown parent");
    assert!(err.to_string().contains("block 3"), "{err}");

    // The same block sent alone after the skipped one: its parent is in the ledger, which
    // has not applied block 2 yet, so it is refused until it has.
    log.blocking_append(vec![block_entry(1, 3, &skipped)])
        .await
        .expect("append");
    let err = check
        .verify_append(&mut append_of(3, &[&next]))
        .expect_err("parent not applied yet");
    assert!(
        matches!(&err, Refusal::Behind(r) if r.contains("unknown")),
        "{err}"
    );
    let mut committed = entries_for(&blocks);
    committed.push(block_entry(1, 3, &skipped));
    apply(&mut sm, committed).await;
    assert_eq!(store.tip(), tip);
    check
        .verify_append(&mut append_of(3, &[&next]))
        .expect("parent applied");
}

#[tokio::test]
async fn the_ledger_of_a_node_still_audits_read_only() {
    let dir = TempDir::new().expect("tempdir");
    let blocks = chain(4);
    let (_store, _log, mut sm) = open(dir.path(), empty_source());
    apply(&mut sm, entries_for(&blocks)).await;
    // An auditor opens only the ledger's column families, beside the running node.
    let reader = Store::open_read_only(dir.path(), &identity()).expect("read-only open");
    let report = ordo_ledger::audit(&reader, &policy(), |_| {});
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.blocks_verified, 4);
}

#[test]
fn block_entries_round_trip_as_canonical_bytes_and_refuse_garbage() {
    let block = chain(1).remove(0);
    let entry = BlockEntry::new(Arc::new(block.clone()));
    let bytes = encode_internal(&entry).expect("encode");
    let back: BlockEntry = decode_internal(&bytes, "entry").expect("decode");
    assert_eq!(back, entry);
    let truncated = &bytes[..bytes.len() - 10];
    assert!(decode_internal::<BlockEntry>(truncated, "entry").is_err());
    let mut trailing = bytes;
    trailing.push(0);
    assert!(decode_internal::<BlockEntry>(&trailing, "entry").is_err());
}

#[test]
fn node_ids_come_from_keys_and_collisions_are_refused() {
    let k = Keypair::from_label("leader").public();
    assert_eq!(
        node_id(&k),
        u64::from_be_bytes(k.0[..8].try_into().expect("8 bytes"))
    );
    let other = Keypair::from_label("other").public();
    let ids = node_ids([k, other]).expect("distinct");
    assert_eq!(ids.get(&node_id(&other)), Some(&other));
    let mut twin = k;
    twin.0[31] ^= 1;
    assert_eq!(
        node_ids([k, twin]).expect_err("collision"),
        ConsensusError::NodeIdCollision {
            first: k,
            second: twin
        }
    );
}
