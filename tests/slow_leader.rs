//! A slow or frozen node never holds the cluster back, and a client is never told a false
//! "unavailable":
//! - a leader whose disk is slow (`libordo_slowdisk.so` delays its fsyncs) hands
//!   leadership to a follower and does not take it back while its disk stays slow; a
//!   follower's slow disk moves nothing;
//! - a submission to a follower right after the leader froze is answered within the
//!   client's `timeout_ms` (+ 1 s), and with `202 pending` or `200 committed`, never `503`,
//!   and the transaction commits;
//! - a leader stopped with SIGTERM under load hands leadership over first: clients of the
//!   other validators, giving each submission less time than an election takes, hear
//!   `200 committed` every time.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ordo_client::api::Role;
use serde_json::json;
use support::cluster::{Cluster, Options, committed_ids, wait_for};

const ELECTION: Duration = Duration::from_secs(20);
/// The longest a slow leader may take to hand over, under load.
const STEP_ASIDE_MAX: Duration = Duration::from_secs(10);

/// The validator `i` says leads, by index.
fn leader_seen_by(c: &Cluster, i: usize) -> Option<usize> {
    let name = c.status(i)?.leader?.name;
    (0..3).find(|j| c.node(*j).name == name)
}

/// Submits `tx` to validator `i`, waiting for its commit at most `timeout_ms`: the HTTP
/// status, the answer, and how long it took.
fn submit_waiting(
    c: &Cluster,
    i: usize,
    tx: &ordo_ledger::SignedTransaction,
    timeout_ms: u64,
) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let (status, body) = c
        .post(
            i,
            &json!({
                "transaction": hex::encode(tx.to_bytes()),
                "wait": true,
                "timeout_ms": timeout_ms,
            }),
        )
        .expect("an answer");
    (status, body, started.elapsed())
}

#[test]
fn a_leader_with_a_slow_disk_hands_over_and_a_slow_follower_moves_nothing() {
    let mut c = Cluster::start(Options {
        slow_disk: true,
        ..Options::default()
    });
    let leader = c.wait_leader(ELECTION);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut committed = HashSet::new();

    // A follower's fsyncs take 200 ms more: the leader stays, and keeps committing with
    // the other follower.
    c.slow_disk(followers[1], 200);
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let txs = c.txs(10, 0);
        committed.extend(committed_ids(&c.submit(followers[0], &txs, true)));
    }
    assert_eq!(
        c.wait_leader(ELECTION),
        leader,
        "a slow follower moved leadership"
    );
    assert_eq!(c.metric(leader, "ordo_leader_step_asides_total"), Some(0));
    c.slow_disk(followers[1], 0);

    // The leader's fsyncs take 500 ms more: under load, it hands over to a follower.
    c.slow_disk(leader, 500);
    let started = Instant::now();
    let new_leader = loop {
        let txs = c.txs(10, 0);
        committed.extend(committed_ids(&c.submit(followers[0], &txs, true)));
        if let Some(l) = leader_seen_by(&c, followers[0]).filter(|l| *l != leader)
            && c.status(l).is_some_and(|s| s.role == Role::Leader)
        {
            break l;
        }
        assert!(
            started.elapsed() < STEP_ASIDE_MAX,
            "the slow leader still leads after {STEP_ASIDE_MAX:?}"
        );
    };
    eprintln!(
        "{} handed leadership to {} {:.2} s after its disk slowed",
        c.node(leader).name,
        c.node(new_leader).name,
        started.elapsed().as_secs_f64()
    );
    let log = std::fs::read_to_string(&c.node(leader).log).expect("log");
    assert!(
        log.contains("this node's disk is the slowest"),
        "{}",
        c.log_tail(leader)
    );
    assert_eq!(c.metric(leader, "ordo_leader_step_asides_total"), Some(1));
    assert_eq!(c.metric(leader, "ordo_election_held_back"), Some(1));

    // It follows once its (slow) Raft core has taken the new term; while its disk stays
    // slow it does not lead again, and the chain goes on.
    wait_for("the slow node to follow", ELECTION, || {
        (c.status(leader)?.role != Role::Leader).then_some(())
    });
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let txs = c.txs(10, 0);
        committed.extend(committed_ids(&c.submit(followers[0], &txs, true)));
        assert_ne!(
            c.status(leader).map(|s| s.role),
            Some(Role::Leader),
            "the slow node took leadership back"
        );
    }
    c.slow_disk(leader, 0);
    let txs = c.txs(10, 0);
    committed.extend(committed_ids(&c.submit(leader, &txs, true)));
    let top = c.tip(new_leader).expect("a tip");
    c.wait_tips(top, Duration::from_secs(30));
    let chain = c.stop_and_check(&committed);
    assert!(chain.len() >= 30);
}

#[test]
fn a_follower_answers_within_the_clients_time_when_the_leader_freezes() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let txs = c.txs(10, 0);
    let mut committed = committed_ids(&c.submit(follower, &txs, true));
    assert_eq!(committed.len(), 10);

    c.pause(leader);
    std::thread::sleep(Duration::from_millis(200));
    // A client with less time than an election takes: the follower cannot know whether
    // the frozen leader took it, and says so (202), in time.
    let early = c.txs(1, 0).remove(0);
    let (status, body, took) = submit_waiting(&c, follower, &early, 300);
    eprintln!(
        "frozen leader, 300 ms: answered {status} {body} after {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took <= Duration::from_millis(1300),
        "answered after {took:?}"
    );
    assert_eq!(
        (status, &body["status"]),
        (202, &json!("pending")),
        "{body}"
    );

    let tx = c.txs(1, 0).remove(0);
    let id = tx.id();
    let timeout = Duration::from_millis(2000);
    let (status, body, took) = submit_waiting(&c, follower, &tx, 2000);
    eprintln!(
        "frozen leader: answered {status} {body} after {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        took <= timeout + Duration::from_secs(1),
        "answered after {took:?}, beyond timeout_ms + 1 s"
    );
    match status {
        202 => assert_eq!(body["status"], "pending", "{body}"),
        200 => assert_eq!(body["status"], "committed", "{body}"),
        _ => panic!("answered {status} {body}: neither pending nor committed"),
    }

    // It commits under another leader while the old one stays frozen.
    wait_for("the transaction to commit", Duration::from_secs(20), || {
        let (code, v) = c.get(follower, &format!("/v1/transactions/{id}"))?;
        (code == 200 && v["status"] == "committed").then_some(())
    });
    committed.insert(id);
    wait_for(
        "the early transaction to commit",
        Duration::from_secs(20),
        || {
            let (code, v) = c.get(follower, &format!("/v1/transactions/{}", early.id()))?;
            (code == 200 && v["status"] == "committed").then_some(())
        },
    );
    committed.insert(early.id());
    wait_for("another leader", ELECTION, || {
        leader_seen_by(&c, follower).filter(|l| *l != leader)
    });

    // A submission once the new leader is known commits at once.
    let txs = c.txs(5, 0);
    committed.extend(committed_ids(&c.submit(follower, &txs, true)));
    assert!(txs.iter().all(|t| committed.contains(&t.id())));

    c.resume(leader);
    let top = c.tip(follower).expect("a tip");
    c.wait_tips(top, Duration::from_secs(30));
    c.stop_and_check(&committed);
}

#[test]
fn a_leader_stopped_with_sigterm_hands_over_and_no_client_hears_503() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(ELECTION);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let txs = c.txs(600, 0);
    // Clients give each submission one second, less than an election takes: without a
    // hand-over, one sent while the cluster has no leader hears 202 pending (or, before
    // forwards failed over to a new leader, 503).
    let mut answers: Vec<(u16, serde_json::Value, ordo_ledger::TxId)> = Vec::new();
    let started = Instant::now();
    let mut stopped_at = None;
    for (n, tx) in txs.iter().enumerate() {
        let at = started.elapsed();
        if at >= Duration::from_secs(4) {
            break;
        }
        if stopped_at.is_none() && at >= Duration::from_secs(1) {
            c.node(leader).sigterm();
            stopped_at = Some(n);
        }
        let (status, body, _) = submit_waiting(&c, followers[n % 2], tx, 1000);
        answers.push((status, body, tx.id()));
    }
    let stopped_at = stopped_at.expect("the leader was stopped");
    let after = &answers[stopped_at..];
    let pending = answers.iter().filter(|(s, _, _)| *s == 202).count();
    eprintln!(
        "{} answers, {} after the SIGTERM, {pending} of them 202 pending",
        answers.len(),
        after.len()
    );
    assert!(after.len() >= 20, "too few submissions after the stop");
    // None heard 503, and none had to settle for 202 pending: each committed in its second.
    for (status, body, _) in &answers {
        assert_eq!(*status, 200, "a client heard {status} {body}");
        assert_eq!(body["status"], "committed", "{body}");
    }
    c.stop(leader);
    let log = std::fs::read_to_string(&c.node(leader).log).expect("log");
    assert!(
        log.contains("handed leadership to"),
        "{}",
        c.log_tail(leader)
    );
    let new_leader = c.wait_leader(ELECTION);
    assert!(followers.contains(&new_leader));
    let committed: HashSet<_> = answers.iter().map(|(_, _, id)| *id).collect();
    c.stop_and_check(&committed);
}
