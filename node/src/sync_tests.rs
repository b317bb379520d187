//! Block sync between two real validators over libp2p.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use ordo_crypto::{Domain, Hash, Keypair};
use ordo_ledger::{ChainIdentity, Limits, Policy, Transaction, build_block};
use tempfile::TempDir;

use super::*;
use crate::consensus::{open_consensus_storage, open_store};
use crate::network::NetworkConfig;

const CHAIN: &str = "sync-test";

fn policy(validators: &[PublicKey], client: &Keypair) -> Arc<Policy> {
    Arc::new(Policy {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(Domain::Genesis, CHAIN.as_bytes()),
        validators: validators.iter().copied().collect(),
        clients: HashSet::from([client.public()]),
        limits: Limits::default(),
        certify_lag: ordo_ledger::CERTIFY_LAG_LIMIT,
    })
}

fn identity(policy: &Policy) -> ChainIdentity {
    ChainIdentity {
        chain_id: CHAIN.into(),
        genesis_hash: policy.genesis_hash,
    }
}

fn net_config(bootstrap: Vec<String>) -> NetworkConfig {
    NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        mdns: false,
        request_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_fetches_verifies_and_stores_blocks_from_a_peer() {
    let (ka, kb, client) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let keys = [ka.public(), kb.public()];
    let policy = policy(&keys, &client);

    // Peer A holds 12 committed blocks and serves them.
    let dir_a = TempDir::new().expect("tempdir");
    let store_a = open_store(dir_a.path(), &identity(&policy), &Default::default()).expect("store");
    for h in 1..=12u64 {
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender: client.public(),
            nonce: h,
            expires_at: h,
            payload: vec![h as u8; 64],
        }
        .sign(&client);
        let block = build_block(&store_a.tip(), CHAIN, vec![], vec![tx], &ka, h, 1);
        store_a.append(&block).expect("append");
    }
    let (net_a, mut inbound_a) =
        Network::start(&ka, &keys, &net_config(vec![]), std::future::pending()).expect("net a");
    let serving = store_a.clone();
    tokio::spawn(async move {
        while let Some(req) = inbound_a.recv().await {
            serve_blocks(&serving, req);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr_a = loop {
        if let Some(a) = net_a.listen_addrs().await.expect("running").first() {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no listen address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Peer B asks for ranges.
    let (net_b, _inbound_b) = Network::start(
        &kb,
        &keys,
        &net_config(vec![addr_a]),
        std::future::pending(),
    )
    .expect("net b");
    let source = PeerBlockSource::new(net_b, vec![ka.public()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        match source.fetch(1, 5).await {
            Ok(blocks) => break blocks,
            Err(e) => assert!(Instant::now() < deadline, "fetch kept failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        first.iter().map(|b| b.header.height).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(first[2], store_a.block(3).expect("read").expect("present"));
    assert_eq!(source.fetch(10, 100).await.expect("tail").len(), 3);
    assert!(
        source
            .fetch(13, 5)
            .await
            .expect("beyond the tip")
            .is_empty()
    );

    // End to end: B installs A's snapshot and catches up through the network.
    let dir_b = TempDir::new().expect("tempdir");
    let store_b = open_store(dir_b.path(), &identity(&policy), &Default::default()).expect("store");
    let (_log_b, mut sm_b) =
        open_consensus_storage(store_b.clone(), policy.clone(), Arc::new(source)).expect("storage");
    let (_log_a, mut sm_a) = open_consensus_storage(
        store_a.clone(),
        policy.clone(),
        Arc::new(crate::consensus::tests_support::EmptySource),
    )
    .expect("storage");
    let snapshot = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    sm_b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(store_b.tip(), store_a.tip());
    assert!(ordo_ledger::audit(&store_b, &policy, |_| {}).ok());
}

/// Starts a network for `key` among `keys`, dialling `bootstrap`; returns it, its inbound
/// requests and its first listen address.
async fn started(
    key: &Keypair,
    keys: &[PublicKey],
    bootstrap: Vec<String>,
) -> (Network, tokio::sync::mpsc::Receiver<InboundRequest>, String) {
    let (net, inbound) =
        Network::start(key, keys, &net_config(bootstrap), std::future::pending()).expect("net");
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = loop {
        if let Some(a) = net.listen_addrs().await.expect("running").first() {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no listen address");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    (net, inbound, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_does_not_wait_on_a_peer_that_never_answers() {
    let (ka, kf, kb, client) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let keys = [ka.public(), kf.public(), kb.public()];
    let policy = policy(&keys, &client);
    // A holds blocks and answers; F takes every request and never answers (a frozen node).
    let dir_a = TempDir::new().expect("tempdir");
    let store_a = open_store(dir_a.path(), &identity(&policy), &Default::default()).expect("store");
    for h in 1..=3u64 {
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender: client.public(),
            nonce: h,
            expires_at: h,
            payload: vec![h as u8],
        }
        .sign(&client);
        let block = build_block(&store_a.tip(), CHAIN, vec![], vec![tx], &ka, h, 1);
        store_a.append(&block).expect("append");
    }
    let (_net_a, mut inbound_a, addr_a) = started(&ka, &keys, vec![]).await;
    let serving = store_a.clone();
    tokio::spawn(async move {
        while let Some(req) = inbound_a.recv().await {
            serve_blocks(&serving, req);
        }
    });
    let (_net_f, mut inbound_f, addr_f) = started(&kf, &keys, vec![]).await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(req) = inbound_f.recv().await {
            held.push(req);
        }
    });
    let (net_b, _inbound_b, _) = started(&kb, &keys, vec![addr_a, addr_f]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while net_b.connected().map_or(0, |c| c.len()) < 2 {
        assert!(Instant::now() < deadline, "B did not connect to both");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The frozen peer comes first in turn; the request timeout is 5 s.
    let source = PeerBlockSource::new(net_b, vec![kf.public(), ka.public()]);
    let started_at = Instant::now();
    let blocks = source.fetch(1, 3).await.expect("blocks from A");
    assert_eq!(blocks.len(), 3);
    let first = started_at.elapsed();
    assert!(
        first >= HEDGE_AFTER && first < Duration::from_secs(2),
        "waited {first:?} for the frozen peer"
    );
    // A answered: it is asked first next time, without waiting on F.
    let again = Instant::now();
    assert_eq!(source.fetch(2, 2).await.expect("blocks from A").len(), 2);
    assert!(again.elapsed() < HEDGE_AFTER, "{:?}", again.elapsed());
}
