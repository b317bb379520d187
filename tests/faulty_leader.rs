//! A leader whose blocks fail verification is deposed: its followers refuse the blocks,
//! withdraw from it after a few refusals in a row (its heartbeats no longer renew their
//! lease) and elect another; the chain goes on, and no ledger holds an invalid block.
//!
//! The validators run `ordo-faulty` (the `ordo` command line with test-only faults, built
//! by scripts/test.sh); the fault is off until the test creates the leader's fault file.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ordo_client::api::{ErrorCode, Role, TxState};
use support::cluster::{Cluster, Options, committed_ids, wait_for};

const ELECTION: Duration = Duration::from_secs(20);
/// The longest the honest majority may take to elect another leader.
const DEPOSE_MAX: Duration = Duration::from_secs(10);

#[test]
fn a_leader_proposing_invalid_blocks_is_deposed_and_the_chain_goes_on() {
    let mut c = Cluster::start(Options {
        faulty: true,
        ..Options::default()
    });
    let bad = c.wait_leader(ELECTION);
    let honest: Vec<usize> = (0..3).filter(|i| *i != bad).collect();
    let txs = c.txs(20, 0);
    let mut committed = committed_ids(&c.submit(honest[0], &txs, true));
    assert_eq!(committed.len(), 20);
    let height = c.tip(honest[0]).expect("a tip");

    // From now on the leader signs its blocks wrongly.
    std::fs::write(c.fault_file(bad), b"").expect("fault file");
    let started = Instant::now();
    let txs = c.txs(20, height);
    let pending = c.submit(honest[0], &txs, false);
    assert!(pending.iter().all(|r| r.error.is_none()), "{pending:?}");
    let new_leader = wait_for("another leader", DEPOSE_MAX, || {
        let st = c.status(honest[0])?;
        let leader = st.leader?.name;
        let i = (0..3).find(|i| c.node(*i).name == leader)?;
        (i != bad && c.status(i)?.role == Role::Leader).then_some(i)
    });
    let deposed_in = started.elapsed();
    eprintln!(
        "deposed: {} lost the lead to {} {:.2} s after its blocks began to fail",
        c.node(bad).name,
        c.node(new_leader).name,
        deposed_in.as_secs_f64()
    );
    // The transactions it was given commit under the new leader (resubmitting is safe;
    // those committed already are answered so).
    let results = c.submit(honest[1], &txs, true);
    assert!(
        results.iter().all(|r| r.status == Some(TxState::Committed)
            || r.error
                .as_ref()
                .is_some_and(|e| e.code == ErrorCode::AlreadyCommitted)),
        "every transaction commits: {results:?}"
    );
    committed.extend(txs.iter().map(|t| t.id()));

    // Each side says why.
    let follower_log = c.log_tail(honest[0]) + &c.log_tail(honest[1]);
    assert!(
        follower_log.contains("withdrawing from the leader"),
        "{follower_log}"
    );
    let bad_log = std::fs::read_to_string(&c.node(bad).log).expect("log");
    assert!(
        bad_log.contains("a follower withdrew from this node as leader"),
        "{}",
        c.log_tail(bad)
    );

    // Healed, the deposed node follows again and catches up; the chain goes on.
    std::fs::remove_file(c.fault_file(bad)).expect("remove the fault file");
    let txs = c.txs(20, height);
    committed.extend(committed_ids(&c.submit(honest[0], &txs, true)));
    let top = c.tip(honest[0]).expect("a tip");
    c.wait_tips(top, Duration::from_secs(30));
    // Every ledger is one chain holding every acknowledged transaction once, and audits
    // (no invalid block was stored anywhere).
    let chain: HashSet<_> = c.stop_and_check(&committed);
    assert!(chain.len() >= 60);
}
