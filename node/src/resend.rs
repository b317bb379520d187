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

/// How often the re-sender looks.
const TICK: Duration = Duration::from_millis(250);
/// At most this many batches go at once to a new leader from a node that just lost office.
const HANDOVER_BATCHES_MAX: usize = 16;

/// Re-sends stale transactions every third of [`RESEND_AFTER`] until the node stops; and,
/// once this node has stopped leading (it stepped aside, or lost an election), everything
/// pending at once, as soon as a leader is known: the transactions it took but had not
/// proposed would otherwise wait [`RESEND_AFTER`] for the new leader.
pub(crate) async fn resend_stale(shared: Arc<Shared>) {
    let mut led = false;
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = shared.stopped() => return,
        }
        if shared.is_leader() {
            led = true;
            continue;
        }
        if led && shared.leader_key().is_some() {
            led = false;
            send_all_pending(&shared).await;
        }
        if last.elapsed() >= RESEND_AFTER / 3 {
            last = Instant::now();
            if let Some(cutoff) = last.checked_sub(RESEND_AFTER) {
                resend_once(&shared, cutoff).await;
            }
        }
    }
}

/// Sends everything pending to the leader at once, each transaction once (at most
/// [`HANDOVER_BATCHES_MAX`] batches): what a node that stopped leading took but had not
/// proposed.
pub(crate) async fn send_all_pending(shared: &Shared) {
    let cutoff = Instant::now();
    let mut sent = 0;
    for _ in 0..HANDOVER_BATCHES_MAX {
        match resend_once(shared, cutoff).await {
            0 => break,
            n => sent += n,
        }
    }
    if sent > 0 {
        tracing::info!(sent, "sent what this node took as leader to the new leader");
    }
}

/// Sends the leader one batch of the transactions last sent before `cutoff`; how many.
async fn resend_once(shared: &Shared, cutoff: Instant) -> usize {
    let Some(leader) = shared.leader_key() else {
        return 0;
    };
    let now = Instant::now();
    let txs = shared.pool().stale(cutoff, now, FORWARD_TXS_MAX);
    if txs.is_empty() {
        return 0;
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
    txs.len()
}
