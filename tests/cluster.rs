//! End-to-end scenarios on real `ordo node run` processes: real sockets, real disks, real
//! signatures. Each ends with the invariant check (`Cluster::stop_and_check`): every chain a
//! prefix of one another, every transaction acknowledged as committed present exactly once,
//! and `ordo audit` passing on every data directory.

mod support;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo_client::api::metrics as m;
use ordo_client::api::{ErrorCode, TxState, TxStatus};
use ordo_client::{Client, RetryPolicy, SubmitOptions};
use ordo_ledger::{Transaction, TxId};
use serde_json::json;
use support::block_on;
use support::cluster::{Cluster, Options, committed_ids, outsider, wait_for};

const ELECTION: Duration = Duration::from_secs(20);
const CATCH_UP: Duration = Duration::from_secs(60);

/// A client of `url` that does not retry: the test sees every answer.
fn once(url: &str) -> Client {
    Client::builder(url)
        .retry(RetryPolicy::none())
        .build()
        .expect("client")
}

#[test]
fn ten_thousand_transactions_through_every_node_commit_exactly_once() {
    let mut c = Cluster::start(Options::default());
    c.wait_leader(ELECTION);
    let txs = c.txs(10_000, 0);
    let ids: HashSet<TxId> = txs.iter().map(|t| t.id()).collect();
    for (n, batch) in txs.chunks(500).enumerate() {
        let results = c.submit(n % 3, batch, false);
        assert_eq!(results.len(), batch.len());
        for r in &results {
            assert_eq!(r.status, Some(TxState::Pending), "{r:?}");
        }
        // The same batch again through another node, while it is being ordered: accepted
        // as the same pending transactions or refused as duplicates, never ordered twice.
        for r in c.submit((n + 1) % 3, batch, false) {
            let code = r.error.as_ref().map(|e| e.code);
            assert!(
                r.status == Some(TxState::Pending) || code.is_some_and(ErrorCode::is_already_held),
                "{r:?}"
            );
        }
    }
    // Every node's mempool drains and the tips agree.
    wait_for("all transactions committed everywhere", CATCH_UP, || {
        let st: Vec<_> = (0..3).map(|i| c.status(i)).collect::<Option<_>>()?;
        let tips: HashSet<u64> = st.iter().map(|s| s.tip.height).collect();
        let pending: u64 = st.iter().map(|s| s.mempool.txs).sum();
        (tips.len() == 1 && pending == 0).then_some(())
    });
    // A sample of transactions answer with their inclusion proof on every node, and the
    // proof checks out against the block's header.
    for id in ids.iter().take(5) {
        for i in 0..3 {
            let status = block_on(c.client(i).tx_status_checked(id)).expect("committed");
            assert!(
                matches!(status, TxStatus::Committed(ref t) if t.id == *id),
                "{status:?}"
            );
        }
    }
    // Clients waiting for their commit do not hold up other clients' admissions: sixteen
    // at once through one node (four are admitted at a time) are all taken and committed
    // without a single "busy".
    let more = c.txs(16, 0);
    let node0 = once(&c.url(0));
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = more
            .iter()
            .map(|tx| {
                let client = node0.clone();
                s.spawn(move || {
                    block_on(client.submit(tx, &SubmitOptions::wait_for(Duration::from_secs(20))))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for answer in &answers {
        let r = answer.as_ref().expect("taken without a busy");
        assert_eq!(r.status, Some(TxState::Committed), "{r:?}");
    }
    let ids: HashSet<TxId> = ids.into_iter().chain(more.iter().map(|t| t.id())).collect();
    // Every node timed its block writes; the leader timed queueing and commits, and the
    // followers their checks of its blocks.
    let leader = c.wait_leader(ELECTION);
    for i in 0..3 {
        let count = |h: m::Metric| c.metric(i, &format!("{}_count", h.name)).unwrap_or(0);
        assert!(count(m::BLOCK_APPLY_SECONDS) > 0, "node {i} applies");
        assert!(count(m::RAFT_LOG_APPEND_SECONDS) > 0, "node {i} appends");
        if i == leader {
            assert!(count(m::BLOCK_QUEUE_SECONDS) > 0, "leader queues");
            assert!(count(m::BLOCK_COMMIT_SECONDS) > 0, "leader commits");
        } else {
            assert!(count(m::BLOCK_VERIFY_SECONDS) > 0, "node {i} verifies");
            // The leader announced what it admitted, so the follower had checked
            // signatures before their blocks came.
            let metric = |x: m::Metric| c.metric(i, x.name).unwrap_or(0);
            assert!(metric(m::TXS_PRECHECKED) > 0, "node {i} prechecks");
            assert!(
                metric(m::BLOCK_SIGNATURES_PRECHECKED) > 0,
                "node {i} leaves prechecked signatures out of block checks"
            );
        }
    }
    let chain = c.stop_and_check(&ids);
    assert_eq!(chain, ids, "exactly the submitted transactions, each once");
}

#[test]
fn killing_the_leader_under_load_elects_another_and_the_old_one_catches_up() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    // Load: batches with wait, through the followers, recording what is acknowledged as
    // committed. A batch that fails as a whole (no leader, leader unreachable: 503) is
    // retried until it gets through, as a client would; resubmitting is safe.
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let batches: Vec<_> = (0..400).map(|_| c.txs(20, 0)).collect();
    let clients: Vec<Client> = followers.iter().map(|i| once(&c.url(*i))).collect();
    let load = {
        let acked = acked.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let wait = SubmitOptions::wait_for(Duration::from_secs(5));
            let mut n = 0;
            for batch in &batches {
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match block_on(clients[n % clients.len()].submit_batch(batch, &wait)) {
                        Ok(results) => {
                            acked.lock().expect("lock").extend(committed_ids(&results));
                            break;
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            }
        })
    };
    wait_for("some load committed", CATCH_UP, || {
        (acked.lock().expect("lock").len() >= 200).then_some(())
    });
    c.kill(leader);
    let new_leader = c.wait_leader(ELECTION);
    assert_ne!(new_leader, leader);
    let before = acked.lock().expect("lock").len();
    wait_for("load committing under the new leader", CATCH_UP, || {
        (acked.lock().expect("lock").len() >= before + 200).then_some(())
    });
    c.restart(leader);
    let tip = c.tip(new_leader).expect("new leader answers");
    c.wait_tips(tip, CATCH_UP);
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let final_tip = (0..3).filter_map(|i| c.tip(i)).max().expect("tips");
    c.wait_tips(final_tip, CATCH_UP);
    let acked = acked.lock().expect("lock").clone();
    c.stop_and_check(&acked);
}

#[test]
fn a_follower_behind_the_purge_point_catches_up_by_fetching_blocks() {
    let mut c = Cluster::start(Options {
        snapshot_every_blocks: 8,
        keep_blocks: 2,
        ..Options::default()
    });
    let leader = c.wait_leader(ELECTION);
    let behind = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut acked = HashSet::new();
    let txs = c.txs(2, 0);
    acked.extend(committed_ids(&c.submit(leader, &txs, true)));
    c.kill(behind);
    // One waited submission per block: 40 blocks past the follower.
    for n in 0..40 {
        let txs = c.txs(3, 0);
        let results = c.submit(if n % 2 == 0 { leader } else { other }, &txs, true);
        let ids = committed_ids(&results);
        assert_eq!(ids.len(), 3, "{results:?}");
        acked.extend(ids);
    }
    // The leader purges its log shortly after each snapshot, in the background.
    let st = wait_for("the leader to purge its log", CATCH_UP, || {
        let st = c.status(leader)?;
        (st.raft.purged.unwrap_or(0) > 10).then_some(st)
    });
    let tip = st.tip.height;
    c.restart(behind);
    c.wait_tips(tip, CATCH_UP);
    let log = std::fs::read_to_string(&c.node(behind).log).unwrap_or_default();
    let fetched = log
        .lines()
        .find(|l| l.contains("fetched and verified"))
        .unwrap_or_else(|| {
            panic!(
                "the follower caught up through block fetch:\n{}",
                c.log_tail(behind)
            )
        });
    // The state machine runs in openraft's task: its lines still name their validator.
    let name = &c.node(behind).name;
    assert!(
        fetched.contains(&format!("validator{{name={name}}}")),
        "{fetched}"
    );
    c.stop_and_check(&acked);
}

/// A follower catching up from behind the purge point while the only other follower is
/// frozen: the leader needs it for a quorum, so commits wait for its catch-up, which must
/// not wait on the frozen peer.
#[test]
fn a_follower_behind_the_purge_point_catches_up_quickly_while_the_other_is_frozen() {
    let mut c = Cluster::start(Options {
        snapshot_every_blocks: 8,
        keep_blocks: 2,
        ..Options::default()
    });
    let leader = c.wait_leader(ELECTION);
    let (behind, frozen) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut acked = HashSet::new();
    // Frozen rather than killed, so that it keeps its connections to both peers.
    c.pause(behind);
    // More blocks than one fetch carries (256): its catch-up asks both peers in turn.
    for _ in 0..300 {
        let txs = c.txs(1, 0);
        acked.extend(committed_ids(&c.submit(leader, &txs, true)));
    }
    wait_for("the leader to purge its log", CATCH_UP, || {
        (c.status(leader)?.raft.purged.unwrap_or(0) > 280).then_some(())
    });
    // Commits need the follower that comes back from now on.
    c.pause(frozen);
    let paused_at = Instant::now();
    c.resume(behind);
    let client = once(&c.url(leader));
    let wait = SubmitOptions::wait_for(Duration::from_secs(30));
    let mut commits = Vec::new();
    while paused_at.elapsed() < Duration::from_secs(12) {
        let tx = c.txs(1, 0).remove(0);
        if let Ok(r) = block_on(client.submit(&tx, &wait))
            && r.status == Some(TxState::Committed)
        {
            commits.push(Instant::now());
            acked.insert(tx.id());
        }
    }
    c.resume(frozen);
    let first = commits
        .first()
        .expect("commits while one follower is frozen");
    let mut longest = first.duration_since(paused_at);
    for pair in commits.windows(2) {
        longest = longest.max(pair[1].duration_since(pair[0]));
    }
    eprintln!(
        "first commit {:?} after the freeze; longest stretch without a commit {longest:?}; {} commits",
        first.duration_since(paused_at),
        commits.len()
    );
    assert!(
        longest <= Duration::from_secs(3),
        "commits stalled for {longest:?} while the leader and a catching-up follower were up"
    );
    c.stop_and_check(&acked);
}

/// A validator that stops answering (paused, as a partition or a dead host would look) is
/// disconnected within seconds by its peers, not left on a silent connection that TCP's
/// back-off would keep dead well after it answers again; once resumed it is reconnected.
#[test]
fn a_silent_peer_is_disconnected_within_seconds_and_reconnected_when_it_answers() {
    let c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let paused = (leader + 1) % 3;
    let connected = |i: usize| c.metric(i, m::PEERS_CONNECTED.name);
    wait_for("every validator connected to both others", ELECTION, || {
        (0..3).all(|i| connected(i) == Some(2)).then_some(())
    });
    c.pause(paused);
    let at = Instant::now();
    // libp2p's own ping failure would take 12 s (a free first failure, then a new
    // stream's 10 s negotiation timeout).
    wait_for(
        "the leader to drop the paused validator",
        Duration::from_secs(8),
        || (connected(leader) == Some(1)).then_some(()),
    );
    let dropped = at.elapsed();
    assert!(
        c.metric(leader, m::SILENT_CONNECTIONS.name).unwrap_or(0) >= 1,
        "the leader counts the connection it closed for silence"
    );
    c.resume(paused);
    let resumed = Instant::now();
    wait_for(
        "the paused validator to be connected again",
        ELECTION,
        || (0..3).all(|i| connected(i) == Some(2)).then_some(()),
    );
    eprintln!(
        "disconnected {dropped:?} after the pause, reconnected {:?} after the resume",
        resumed.elapsed()
    );
}

#[test]
fn a_full_cluster_restart_keeps_the_chain_and_resumes_ordering() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let txs = c.txs(50, 0);
    let mut acked = committed_ids(&c.submit(leader, &txs, true));
    assert_eq!(acked.len(), 50);
    let before = c.status(leader).expect("status");
    let (tip, term) = (before.tip.height, before.term);
    for i in 0..3 {
        c.stop(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    let leader = c.wait_leader(ELECTION);
    let after = c.status(leader).expect("status");
    assert!(after.tip.height >= tip, "{after:?}");
    assert!(after.term >= term, "{after:?}");
    let txs = c.txs(50, tip);
    let more = committed_ids(&c.submit((leader + 1) % 3, &txs, true));
    assert_eq!(more.len(), 50);
    acked.extend(more);
    c.stop_and_check(&acked);
}

#[test]
fn bad_input_over_http_gets_its_documented_error_and_is_not_stored() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let node = (leader + 1) % 3;
    let mut fresh = c.txs(4, 0);
    let (good, other, missing) = (fresh.remove(0), fresh.remove(0), fresh.remove(0).id());
    let binary = fresh.remove(0);
    let post = |body: serde_json::Value| c.post(node, &body).expect("answer");
    let expect = |(status, v): (u16, serde_json::Value), code: u16, err: &str| {
        assert_eq!(status, code, "{v}");
        assert_eq!(v["error"]["code"], err, "{v}");
    };

    // Malformed: not JSON, unknown field, not hex, not a transaction.
    let raw = |content_type: &str, body: &[u8]| {
        c.raw_post(node, "/v1/transactions", content_type, body.to_vec())
            .expect("answer")
    };
    expect(raw("application/json", b"{not json"), 400, "malformed");
    // Neither JSON nor binary: the documented error, not axum's plain text.
    expect(raw("text/plain", b"{}"), 400, "malformed");
    expect(post(json!({ "transaction": "zz" })), 400, "malformed");
    expect(post(json!({ "transaction": "00ff" })), 400, "malformed");
    expect(post(json!({ "tx": "00" })), 400, "malformed");

    // Binary submissions: length-prefixed canonical transactions.
    let post_binary = |query: &str, body: Vec<u8>| {
        let path = format!("/v1/transactions{query}");
        c.raw_post(node, &path, "application/octet-stream", body)
            .expect("answer")
    };
    let frame = |bytes: &[u8]| {
        let mut f = u32::try_from(bytes.len())
            .expect("small")
            .to_le_bytes()
            .to_vec();
        f.extend_from_slice(bytes);
        f
    };
    expect(post_binary("", Vec::new()), 400, "malformed");
    expect(post_binary("", vec![1, 0]), 400, "malformed");
    expect(post_binary("", vec![9, 0, 0, 0, 1]), 400, "malformed");
    expect(
        post_binary("?nonsense=1", frame(&binary.to_bytes())),
        400,
        "malformed",
    );
    let mut body = frame(&binary.to_bytes());
    body.extend(frame(&[0xff, 0x00]));
    let (status, v) = post_binary("?wait=true", body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
    assert_eq!(v["results"][0]["id"], binary.id().to_string(), "{v}");
    assert_eq!(v["results"][1]["error"]["code"], "malformed", "{v}");

    let client = c.chain.clients[0].clone();
    let sign = |change: &dyn Fn(&mut Transaction)| {
        let mut tx = good.tx.clone();
        tx.sender = client.public();
        change(&mut tx);
        hex::encode(tx.sign(&client).to_bytes())
    };
    // Bad signature: a valid transaction with another transaction's signature.
    let mut forged = good.clone();
    forged.signature = other.signature;
    expect(
        post(json!({ "transaction": hex::encode(forged.to_bytes()) })),
        400,
        "bad_signature",
    );
    expect(
        post(json!({ "transaction": sign(&|t| t.chain_id = "other-chain".into()) })),
        400,
        "wrong_chain",
    );
    let stranger = outsider();
    let mut unknown = good.tx.clone();
    unknown.sender = stranger.public();
    expect(
        post(json!({ "transaction": hex::encode(unknown.sign(&stranger).to_bytes()) })),
        403,
        "unknown_sender",
    );
    expect(
        post(json!({ "transaction": sign(&|t| t.payload = vec![0; 70_000]) })),
        413,
        "too_large",
    );
    // A body over the API's 32 MiB limit is refused from its declared length, unread.
    let mut raw = std::net::TcpStream::connect(c.node(node).api).expect("connect");
    raw.write_all(
        b"POST /v1/transactions HTTP/1.1\r\nHost: ordo\r\nContent-Type: application/json\r\n\
          Content-Length: 40000000\r\n\r\n",
    )
    .expect("send headers");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = vec![0; 4096];
    let n = raw.read(&mut answer).expect("an answer before the body");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"too_large\""), "{answer}");
    expect(
        post(json!({ "transaction": sign(&|t| t.expires_at = 10_000_000) })),
        400,
        "expiry_too_far",
    );

    // The good one commits; replaying it is refused.
    let (status, v) = post(json!({ "transaction": hex::encode(good.to_bytes()), "wait": true }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "committed", "{v}");
    expect(
        post(json!({ "transaction": hex::encode(good.to_bytes()) })),
        409,
        "already_committed",
    );
    expect(
        post(json!({ "transaction": hex::encode(good.to_bytes()) })),
        409,
        "already_committed",
    );

    // Lookups of what does not exist.
    let (status, v) = c
        .get(node, &format!("/v1/transactions/{missing}"))
        .expect("answer");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, v) = c.get(node, "/v1/transactions/xyz").expect("answer");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("malformed"))
    );
    let (status, v) = c.get(node, "/v1/blocks/999999").expect("answer");
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // A known route with the wrong method, and an unknown route: the documented shape.
    for (method, path, code, err) in [
        (
            reqwest::Method::DELETE,
            "/v1/transactions",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::POST,
            "/v1/status",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::PUT,
            "/v1/blocks/1",
            405,
            "method_not_allowed",
        ),
        (reqwest::Method::GET, "/v2/status", 404, "not_found"),
    ] {
        let (status, v) = c.raw_request(node, method.clone(), path).expect("answer");
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (code, Some(err)),
            "{method} {path}: {v}"
        );
        assert!(v["error"]["message"].is_string(), "{v}");
    }

    let stored = HashSet::from([good.id(), binary.id()]);
    let chain = c.stop_and_check(&stored);
    assert_eq!(chain, stored, "nothing else was stored");
}

#[test]
fn a_peer_outside_the_genesis_cannot_connect_or_inject() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let target = c.chain.validators[leader].public();
    let tx = c.txs(1, 0).remove(0);
    let addr = c.net.genesis.validators[leader].addresses[0].clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let refusals = runtime.block_on(async {
        use ordo_node::network::{Frame, Kind, Network, NetworkConfig};
        let key = outsider();
        let config = NetworkConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap: vec![addr],
            mdns: false,
            request_timeout: Duration::from_secs(3),
        };
        // The outsider lists the validator so that its own side would allow the link.
        let (net, _inbound) = Network::start(
            &key,
            &[key.public(), target],
            &config,
            std::future::pending(),
        )
        .expect("outsider network");
        let body = bincode::serde::encode_to_vec(vec![tx.to_bytes()], bincode::config::standard())
            .expect("encode");
        let mut refusals = 0;
        for _ in 0..5 {
            let answer = net
                .request(
                    &target,
                    Frame {
                        kind: Kind::Transactions,
                        body: body.clone(),
                    },
                )
                .await;
            assert!(
                answer.is_err(),
                "a validator answered an outsider: {answer:?}"
            );
            refusals += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        refusals
    });
    assert_eq!(refusals, 5);
    let counted = c
        .metric(leader, m::REFUSED_CONNECTIONS.name)
        .expect("metric");
    assert!(counted > 0, "refused connections are counted");
    let answer = block_on(c.client(leader).tx_status(&tx.id()));
    assert_eq!(
        answer.expect_err("nowhere").code(),
        Some(ErrorCode::NotFound),
        "the outsider's transaction is nowhere"
    );
    let chain = c.stop_and_check(&HashSet::new());
    assert!(chain.is_empty());
}

/// A follower whose leader refused its forward with a full mempool refuses client
/// submissions at the door for a moment (503 busy, nothing forwarded) instead of forwarding
/// batches the leader would refuse too.
#[test]
fn a_follower_refuses_at_the_door_while_its_leader_is_full() {
    let mut c = Cluster::start(Options {
        validators: 5,
        block_txs_max: 5,
        mempool_txs_max: 20,
        ..Options::default()
    });
    let leader = c.wait_leader(ELECTION);
    let followers: Vec<usize> = (0..5).filter(|i| *i != leader).collect();
    let follower = followers[0];
    // Without a quorum nothing commits: the leader fills its blocks in flight, then its
    // mempool.
    for i in &followers[1..] {
        c.stop(*i);
    }
    let txs = c.txs(80, 0);
    let (to_leader, to_follower) = (once(&c.url(leader)), once(&c.url(follower)));
    let submit = |client: &Client, tx| block_on(client.submit(tx, &SubmitOptions::default()));
    let forwarded = || c.metric(follower, m::TXS_FORWARDED.name);
    let mut next = 0;
    wait_for(
        "the leader's mempool to fill",
        Duration::from_secs(20),
        || {
            let answer = submit(&to_leader, &txs[next]);
            next += 1;
            assert!(next < 60, "the leader took {next} transactions: {answer:?}");
            answer
                .err()
                .filter(|e| e.code() == Some(ErrorCode::Busy))
                .map(|_| ())
        },
    );
    // Through the follower: admitted there, forwarded, refused by the leader.
    let before = forwarded().expect("metric");
    let e = submit(&to_follower, &txs[next]).expect_err("busy");
    assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}");
    assert_eq!(forwarded(), Some(before + 1));
    // At once again: refused at the door, nothing forwarded.
    let e = submit(&to_follower, &txs[next + 1]).expect_err("busy");
    assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}");
    assert_eq!(forwarded(), Some(before + 1));
    // After the pause the follower forwards again (and the leader, still full, refuses).
    std::thread::sleep(Duration::from_millis(1200));
    let e = submit(&to_follower, &txs[next + 2]).expect_err("busy");
    assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}");
    assert_eq!(forwarded(), Some(before + 2));
    c.stop_and_check(&HashSet::new());
}
