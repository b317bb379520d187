//! Three validators in one process, each with its own RocksDB and libp2p swarm on loopback:
//! Raft elects a leader, blocks commit to every ledger, and a forged block proposed by the
//! leader is refused by the followers and never stored.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::Config;
use openraft::async_runtime::WatchReceiver;
use ordo_crypto::{Domain, Hash, Keypair, PublicKey};
use ordo_ledger::{Block, Limits, Policy, Store, build_block};
use tempfile::TempDir;

use super::tests_support::{EmptySource, signed_tx, time_bound};
use super::*;
use crate::network::{Network, NetworkConfig};

const CHAIN: &str = "cluster-test";

struct Validator {
    key: Keypair,
    store: Arc<Store>,
    raft: OrdoRaft,
    _dir: TempDir,
}

fn policy(validators: &[Keypair], client: &Keypair) -> Policy {
    Policy {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(Domain::Genesis, CHAIN.as_bytes()),
        validators: validators.iter().map(Keypair::public).collect(),
        clients: HashSet::from([client.public()]),
        limits: Limits {
            block_txs_max: 64,
            ..Limits::default()
        },
        certify_lag: ordo_ledger::CERTIFY_LAG_LIMIT,
    }
}

fn raft_config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 10_000,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// A fresh ledger and consensus storage for `policy`'s chain, in a directory of its own.
fn open_storage(policy: &Arc<Policy>) -> (TempDir, Arc<Store>, LogStore, BlockStateMachine) {
    let dir = TempDir::new().expect("tempdir");
    let store = open_store(
        dir.path(),
        &ordo_ledger::ChainIdentity {
            chain_id: CHAIN.into(),
            genesis_hash: policy.genesis_hash,
        },
        &Default::default(),
    )
    .expect("store");
    let (log, sm) = open_consensus_storage(store.clone(), policy.clone(), Arc::new(EmptySource))
        .expect("storage");
    (dir, store, log, sm)
}

/// Network settings for one node on loopback, dialing `bootstrap`.
fn loopback(bootstrap: Vec<String>) -> NetworkConfig {
    NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        mdns: false,
        request_timeout: Duration::from_secs(5),
    }
}

async fn start(
    key: Keypair,
    keys: &[PublicKey],
    policy: Arc<Policy>,
    bootstrap: Vec<String>,
) -> (Validator, Network) {
    let (dir, store, log, sm) = open_storage(&policy);
    let (network, mut inbound) =
        Network::start(&key, keys, &loopback(bootstrap), std::future::pending()).expect("network");
    let raft = OrdoRaft::new(
        node_id(&key.public()),
        raft_config(),
        RaftNet::new(network.clone(), log.pace()),
        log.clone(),
        sm,
    )
    .await
    .expect("raft");
    let (prechecked, _) = crate::precheck::Prechecked::new(policy.limits.tx_bytes_max, &[]);
    let server = RaftServer::new(
        raft.clone(),
        (log.clone(), store.clone()),
        policy,
        prechecked,
        time_bound(),
        3,
    );
    tokio::spawn(async move {
        while let Some(req) = inbound.recv().await {
            let server = server.clone();
            tokio::spawn(async move { server.serve(req).await });
        }
    });
    (
        Validator {
            key,
            store,
            raft,
            _dir: dir,
        },
        network,
    )
}

async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn next_block(leader: &Validator, client: &Keypair, nonce: u64, term: u64) -> Block {
    let parent = leader.store.tip();
    let tx = signed_tx(CHAIN, client, nonce, parent.height + 5);
    build_block(
        &parent,
        CHAIN,
        vec![],
        vec![tx],
        &leader.key,
        1_700_000_000_000 + nonce,
        term,
    )
}

/// Starts three validators, initializes Raft, and waits for a leader.
async fn start_cluster() -> (Vec<Validator>, usize, Arc<Policy>, Keypair) {
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    let client = Keypair::generate();
    let publics: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
    let policy = Arc::new(policy(&keys, &client));

    let (v0, n0) = start(keys[0].clone(), &publics, policy.clone(), vec![]).await;
    let mut addr0 = Vec::new();
    for _ in 0..100 {
        addr0 = n0.listen_addrs().await.expect("running");
        if !addr0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (v1, _n1) = start(keys[1].clone(), &publics, policy.clone(), addr0.clone()).await;
    let (v2, _n2) = start(keys[2].clone(), &publics, policy.clone(), addr0).await;
    let validators = vec![v0, v1, v2];

    let members: BTreeMap<u64, ValidatorNode> = publics
        .iter()
        .map(|k| (node_id(k), ValidatorNode { public_key: *k }))
        .collect();
    validators[0]
        .raft
        .initialize(members)
        .await
        .expect("initialize");

    let deadline = Instant::now() + Duration::from_secs(20);
    let leader_id = loop {
        if let Some(id) = validators[0].raft.current_leader().await {
            break id;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader = validators
        .iter()
        .position(|v| node_id(&v.key.public()) == leader_id)
        .expect("leader is a validator");
    (validators, leader, policy, client)
}

/// The validator leading now, by its own metrics, and its term.
fn leading(validators: &[Validator]) -> Option<(usize, u64)> {
    validators
        .iter()
        .position(|v| v.raft.metrics().borrow_watched().state == openraft::ServerState::Leader)
        .map(|i| {
            (
                i,
                validators[i].raft.metrics().borrow_watched().current_term,
            )
        })
}

/// Writes the block `make(leader, term)` builds through whichever validator leads, and
/// returns the outcome and the leader's index. On a machine busy with other tests a new
/// leader can lose its lease before its first write; the write is refused (never
/// appended), so it is built again for the validator that leads next.
async fn write_block(
    validators: &[Validator],
    make: impl Fn(&Validator, u64) -> Block,
) -> (ApplyOutcome, usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((i, term)) = leading(validators) {
            let entry = BlockEntry::new(Arc::new(make(&validators[i], term)));
            match validators[i].raft.client_write(entry).await {
                Ok(resp) => return (resp.data, i),
                Err(e) if e.forward_to_leader().is_some() => {}
                Err(e) => panic!("commit: {e:?}"),
            }
        }
        assert!(Instant::now() < deadline, "no leader took the block");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_validators_commit_blocks_and_refuse_a_forged_one() {
    let (validators, _, policy, client) = start_cluster().await;

    let mut leader = 0;
    for nonce in 1..=5 {
        let (outcome, at) =
            write_block(&validators, |v, term| next_block(v, &client, nonce, term)).await;
        assert!(
            matches!(outcome, ApplyOutcome::Appended { height, .. } if height == nonce),
            "{outcome:?}"
        );
        leader = at;
    }
    let leader = &validators[leader];
    let term = leader.raft.metrics().borrow_watched().current_term;
    let tip = leader.store.tip();
    eventually("every ledger at height 5", Duration::from_secs(20), || {
        validators.iter().all(|v| v.store.tip() == tip)
    })
    .await;

    // A forged block: a valid transaction, but the proposer signature is broken.
    let mut forged = next_block(leader, &client, 6, term);
    forged.signature.0[0] ^= 1;
    let write = leader.raft.client_write(BlockEntry::new(Arc::new(forged)));
    // It waits for followers that refuse it (or is refused, should leadership move).
    let outcome = tokio::time::timeout(Duration::from_secs(3), write).await;
    assert!(
        !matches!(outcome, Ok(Ok(_))),
        "a forged block must not commit: {outcome:?}"
    );
    for v in &validators {
        assert_eq!(v.store.tip(), tip, "no ledger stored the forged block");
        let report = ordo_ledger::audit(&v.store, &policy, |_| {});
        assert!(report.ok(), "{:?}", report.failure);
        assert_eq!(report.blocks_verified, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_skipped_block_the_next_one_builds_on_the_ledger_and_commits() {
    let (validators, _, policy, client) = start_cluster().await;
    let mut leader = 0;
    for nonce in 1..=2 {
        let (outcome, at) =
            write_block(&validators, |v, term| next_block(v, &client, nonce, term)).await;
        assert!(
            matches!(outcome, ApplyOutcome::Appended { .. }),
            "{outcome:?}"
        );
        leader = at;
    }
    let leader = &validators[leader];
    let term = leader.raft.metrics().borrow_watched().current_term;
    // A block repeating block 2's transaction commits in Raft but is skipped at apply,
    // on every node.
    let tip = leader.store.tip();
    let repeated = leader.store.block(2).expect("read").expect("block 2").txs;
    let skipped = build_block(
        &tip,
        CHAIN,
        vec![],
        repeated,
        &leader.key,
        1_700_000_000_100,
        term,
    );
    let resp = leader
        .raft
        .client_write(BlockEntry::new(Arc::new(skipped)))
        .await
        .expect("commit");
    assert!(
        matches!(resp.data, ApplyOutcome::Skipped { .. }),
        "{:?}",
        resp.data
    );
    // The next block builds on the ledger tip, below the log's last block: followers
    // take its parent from their ledger, and it commits everywhere.
    let next = next_block(leader, &client, 3, term);
    let write = leader.raft.client_write(BlockEntry::new(Arc::new(next)));
    let resp = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the block after a skipped one commits")
        .expect("commit");
    assert!(
        matches!(resp.data, ApplyOutcome::Appended { height: 3, .. }),
        "{:?}",
        resp.data
    );
    let tip = leader.store.tip();
    eventually("every ledger at height 3", Duration::from_secs(20), || {
        validators.iter().all(|v| v.store.tip() == tip)
    })
    .await;
    for v in &validators {
        let report = ordo_ledger::audit(&v.store, &policy, |_| {});
        assert!(report.ok(), "{:?}", report.failure);
        assert_eq!(report.blocks_verified, 3);
    }
}

/// A follower that refuses an append because its ledger has not reached a block's parent
/// still takes the commit index the append carries: it applies what is committed and
/// accepts the same append when it comes again, whatever the leader knows of its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_still_delivers_the_commit_index() {
    let keys: Vec<Keypair> = (0..2).map(|_| Keypair::generate()).collect();
    let client = Keypair::generate();
    let publics: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
    let policy = Arc::new(policy(&keys, &client));
    let (leader, follower) = (&keys[0], &keys[1]);

    // The follower: its own ledger, log and Raft (which never starts an election), fed
    // by the test as if by the leader of term 1.
    let (_dir, store, log, sm) = open_storage(&policy);
    let (network, _inbound) = Network::start(
        follower,
        &publics,
        &loopback(vec![]),
        std::future::pending(),
    )
    .expect("network");
    let config = Config {
        enable_elect: false,
        ..Default::default()
    };
    let raft = OrdoRaft::new(
        node_id(&follower.public()),
        Arc::new(config.validate().expect("valid raft config")),
        RaftNet::new(network, log.pace()),
        log.clone(),
        sm,
    )
    .await
    .expect("raft");
    let (prechecked, _) = crate::precheck::Prechecked::new(policy.limits.tx_bytes_max, &[]);
    let server = RaftServer::new(
        raft,
        (log, store.clone()),
        policy.clone(),
        prechecked,
        time_bound(),
        3,
    );

    let leader_id = node_id(&leader.public());
    let vote = openraft::Vote::new_committed(1, leader_id);
    let log_id = |index: u64| {
        openraft::LogId::new(
            openraft::impls::leader_id_adv::LeaderId {
                term: 1,
                node_id: leader_id,
            },
            index,
        )
    };
    let entry = |index: u64, block: &Block| EntryOf {
        log_id: log_id(index),
        payload: openraft::EntryPayload::Normal(BlockEntry::new(Arc::new(block.clone()))),
    };
    let tx = |nonce: u64| signed_tx(CHAIN, &client, nonce, 100);
    let at = |n: u64| 1_700_000_000_000 + n;
    let block1 = build_block(
        &policy.genesis_tip(),
        CHAIN,
        vec![],
        vec![tx(1)],
        leader,
        at(1),
        1,
    );
    let block2 = build_block(&block1.tip(), CHAIN, vec![], vec![tx(2)], leader, at(2), 1);
    // Repeats block 2's transaction: committed, and skipped at apply on every node.
    let skipped = build_block(
        &block2.tip(),
        CHAIN,
        vec![],
        block2.txs.clone(),
        leader,
        at(3),
        1,
    );
    // The leader's next block, built on its ledger tip (block 2).
    let next = build_block(&block2.tip(), CHAIN, vec![], vec![tx(3)], leader, at(4), 1);

    let members: BTreeMap<u64, ValidatorNode> = publics
        .iter()
        .map(|k| (node_id(k), ValidatorNode { public_key: *k }))
        .collect();
    let membership = openraft::Membership::new(vec![members.keys().copied().collect()], members)
        .expect("membership");
    let first = AppendEntriesRequestOf {
        vote,
        prev_log_id: None,
        leader_commit: None,
        entries: vec![
            EntryOf {
                log_id: log_id(1),
                payload: openraft::EntryPayload::Membership(membership),
            },
            entry(2, &block1),
            entry(3, &block2),
            entry(4, &skipped),
        ],
    };
    let answer = server.append(first).await.expect("first append");
    assert!(
        matches!(answer, AppendEntriesResponseOf::Success),
        "{answer:?}"
    );
    assert_eq!(store.tip().height, 0, "nothing is committed yet");

    // The next block, with the news that everything up to the skipped block is committed.
    let resend = || AppendEntriesRequestOf {
        vote,
        prev_log_id: Some(log_id(4)),
        leader_commit: Some(log_id(4)),
        entries: vec![entry(5, &next)],
    };
    let refused = server
        .append(resend())
        .await
        .expect_err("parent not applied yet");
    assert!(refused.contains("unknown"), "{refused}");
    eventually(
        "the follower applies what the refused append said is committed",
        Duration::from_secs(10),
        || store.tip() == block2.tip(),
    )
    .await;
    let answer = server
        .append(resend())
        .await
        .expect("the same append again");
    assert!(
        matches!(answer, AppendEntriesResponseOf::Success),
        "{answer:?}"
    );
}

type EntryOf = openraft::type_config::alias::EntryOf<TypeConfig>;
type AppendEntriesRequestOf = openraft::raft::AppendEntriesRequest<TypeConfig>;
type AppendEntriesResponseOf = openraft::raft::AppendEntriesResponse<TypeConfig>;
