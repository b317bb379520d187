//! The applied-tip follower: as blocks are applied to the ledger, it drops their
//! transactions (and expired ones) from the mempool, answers the clients waiting on them,
//! publishes the new tip to the block streams and wakes the proposer.

use std::sync::Arc;
use std::time::Duration;

use ordo_ledger::ChainTip;
use tokio::sync::watch;

use crate::consensus::StatusWatch;
use crate::shared::Shared;

/// Longest the follower sleeps without a Raft change before it looks at the ledger again.
const POLL: Duration = Duration::from_millis(200);

/// Follows the applied tip until the node stops or Raft does.
pub(crate) async fn follow_applied(shared: Arc<Shared>, tip_tx: watch::Sender<ChainTip>) {
    let mut watch = StatusWatch::new(shared.raft());
    // Start from what the watch shows, so blocks applied before this task ran are
    // published too.
    let mut seen = shared.tip().height;
    let mut leadership = (0, None);
    loop {
        log_leadership(&shared, &mut leadership);
        let tip = shared.store().tip();
        while seen < tip.height {
            if !publish(&shared, &tip_tx, seen + 1) {
                break;
            }
            seen += 1;
        }
        let dropped = shared.pool().drop_expired(seen + 1);
        if dropped > 0 {
            tracing::info!(dropped, "dropped expired pending transactions");
        }
        shared.wake_proposer();
        tokio::select! {
            changed = watch.changed() => if !changed {
                tracing::error!("raft has stopped; no more blocks will be applied");
                return;
            },
            () = tokio::time::sleep(POLL) => {}
            () = shared.stopped() => return,
        }
    }
}

/// Logs the leader when it changes.
fn log_leadership(shared: &Shared, last: &mut (u64, Option<u64>)) {
    let st = shared.raft_status();
    if (st.term, st.leader) == *last {
        return;
    }
    *last = (st.term, st.leader);
    match st.leader.and_then(|id| shared.validator(id)) {
        Some((name, _)) => tracing::info!(term = st.term, leader = %name, "leader known"),
        None => tracing::info!(term = st.term, "no leader known"),
    }
}

/// Settles the block at `height`: its transactions leave the mempool, its waiters hear,
/// its tip is published. False when it cannot be read (yet).
fn publish(shared: &Shared, tip_tx: &watch::Sender<ChainTip>, height: u64) -> bool {
    let applied = match shared.applied_block(height) {
        Ok(Some(b)) => b,
        Ok(None) => return false,
        Err(e) => {
            tracing::error!(height, error = %e, "cannot read an applied block");
            return false;
        }
    };
    shared.pool().remove_committed(&applied.ids);
    shared
        .waiters()
        .block_applied(height, applied.hash, &applied.ids);
    let _ = tip_tx.send(ChainTip {
        height,
        hash: applied.hash,
        timestamp_ms: applied.block.header.timestamp_ms,
        certified: applied.block.header.certified,
    });
    true
}
