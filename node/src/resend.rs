//! The re-sender (followers): transactions still pending well after they were forwarded
//! go to the leader again, since the leader that took them may have lost them with its
//! office (ARCHITECTURE.md, invariant 18).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_ledger::TxId;

use crate::shared::Shared;
use ordo_wire::FORWARD_TXS_MAX;

/// A follower re-sends a pending transaction to the leader after this long.
pub const RESEND_AFTER: Duration = Duration::from_secs(3);

/// Re-sends stale transactions every third of [`RESEND_AFTER`] until the node stops.
pub(crate) async fn resend_stale(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(RESEND_AFTER / 3) => {}
            () = shared.stopped() => return,
        }
        if !shared.is_leader() {
            resend_once(&shared).await;
        }
    }
}

async fn resend_once(shared: &Shared) {
    let Some(leader) = shared.leader_key() else {
        return;
    };
    let now = Instant::now();
    let Some(cutoff) = now.checked_sub(RESEND_AFTER) else {
        return;
    };
    let txs = shared.pool().stale(cutoff, now, FORWARD_TXS_MAX);
    if txs.is_empty() {
        return;
    }
    let verdicts = shared.forward(leader, &txs).await;
    let done: Vec<TxId> = txs
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.as_ref().is_ok_and(|v| v.is_final()))
        .map(|(t, _)| t.id())
        .collect();
    if !done.is_empty() {
        shared.pool().remove_pending(&done);
    }
    tracing::debug!(n = txs.len(), "re-sent pending transactions to the leader");
}
