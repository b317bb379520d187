//! Chain time that one bad clock cannot ruin: with one validator's wall clock an hour fast
//! or an hour slow (libfaketime), as leader and as follower, every block is stamped within
//! the genesis's bound (10 s) of real time, the chain keeps committing, the node with the
//! bad clock says so (`/ready` 503, its offset in `/v1/status`), and every audit passes.

mod support;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ordo_client::api::BlockId;
use support::cluster::{Cluster, Options, committed_ids, fake_clock_available, wait_for};

const ELECTION: Duration = Duration::from_secs(20);
const HOUR: i64 = 3600;
/// The genesis's default `block_time_ahead_max_ms`.
const BOUND_MS: u64 = 10_000;

fn real_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Commits a few transactions through validator `via`, then checks that every block
/// they are in was stamped within the bound of the real time around the commit.
fn commit_and_check_times(c: &mut Cluster, via: usize, committed: &mut HashSet<ordo_ledger::TxId>) {
    for _ in 0..5 {
        let before = real_ms();
        let txs = c.txs(10, 0);
        let results = c.submit(via, &txs, true);
        let after = real_ms();
        let ids = committed_ids(&results);
        assert_eq!(ids.len(), txs.len(), "not all committed: {results:?}");
        committed.extend(ids);
        let heights: HashSet<u64> = results.iter().filter_map(|r| r.height).collect();
        for h in heights {
            let block =
                support::block_on(c.client(via).block(BlockId::Height(h), false)).expect("block");
            let ts = block.timestamp_ms;
            assert!(
                ts + BOUND_MS >= before && ts <= after + BOUND_MS,
                "block {h} is stamped {ts}, real time was {before}..{after}"
            );
        }
    }
}

/// Waits until validator `i`'s status reports a clock offset near `seconds`.
fn wait_offset(c: &Cluster, i: usize, seconds: i64) {
    wait_for(
        &format!("validator {i}'s clock offset to read {seconds} s"),
        Duration::from_secs(15),
        || {
            let ms = c.status(i)?.clock_offset_ms?;
            ((ms - seconds * 1000).abs() < 1000).then_some(())
        },
    );
}

/// `/ready` of validator `i`: the HTTP status and the message.
fn ready(c: &Cluster, i: usize) -> (u16, String) {
    let (code, body) = c.get(i, "/ready").expect("an answer");
    (code, body.to_string())
}

#[test]
fn one_clock_an_hour_off_skews_no_block_and_its_node_says_so() {
    if !fake_clock_available() {
        return;
    }
    let mut c = Cluster::start(Options {
        fake_clock: true,
        ..Options::default()
    });
    let leader = c.wait_leader(ELECTION);
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut committed = HashSet::new();
    for i in 0..3 {
        wait_offset(&c, i, 0);
        wait_for("every validator to be ready", ELECTION, || {
            (ready(&c, i).0 == 200).then_some(())
        });
    }
    commit_and_check_times(&mut c, followers[0], &mut committed);

    // The leader an hour fast, then an hour slow; then a follower an hour fast and slow.
    for (node, seconds) in [
        (leader, HOUR),
        (leader, -HOUR),
        (followers[1], HOUR),
        (followers[1], -HOUR),
    ] {
        c.skew_clock(node, seconds);
        wait_offset(&c, node, seconds);
        let (code, body) = ready(&c, node);
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("not_ready") && body.contains("clock"),
            "{body}"
        );
        for other in (0..3).filter(|i| *i != node) {
            wait_offset(&c, other, 0);
            assert_eq!(ready(&c, other).0, 200, "validator {other}");
        }
        commit_and_check_times(&mut c, followers[0], &mut committed);
        commit_and_check_times(&mut c, node, &mut committed);
        c.skew_clock(node, 0);
        wait_offset(&c, node, 0);
    }
    let log = std::fs::read_to_string(&c.node(leader).log).expect("log");
    assert!(
        log.contains("off the validators' median clock"),
        "{}",
        c.log_tail(leader)
    );
    let top = c.tip(followers[0]).expect("a tip");
    c.wait_tips(top, Duration::from_secs(30));
    c.stop_and_check(&committed);
}
