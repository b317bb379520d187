//! Admission: a client submission passes the door (`crate::gate`: bounded turns, a short
//! queue, a pause while the leader is full) before anything is decoded, then goes into
//! this node's mempool; on a follower, on to the leader (`crate::forward`), and on the
//! leader, out to the followers as an announcement (`crate::precheck`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ordo_ledger::{SignedTransaction, TxId};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::SubmitError;
use crate::mempool::{Admission, AdmitError};
use crate::shared::Shared;

/// A leader announces what it admits only while at most this many transactions are pending
/// (a few blocks' worth, far below what followers remember, `PRECHECKED_MAX`).
const ANNOUNCE_BACKLOG_MAX: usize = 8_192;
const _: () = assert!(4 * ANNOUNCE_BACKLOG_MAX <= crate::precheck::PRECHECKED_MAX);

/// A transaction this node took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Its id.
    pub(crate) id: TxId,
    /// False when it was forwarded to a leader that did not answer in time: it may have
    /// been taken there, and this node sends it again (`crate::resend`). The client is
    /// answered `202` to poll or resubmit, never told it was not taken.
    pub(crate) confirmed: bool,
}

impl Taken {
    /// Taken for sure.
    pub(crate) fn confirmed(id: TxId) -> Taken {
        Taken {
            id,
            confirmed: true,
        }
    }

    /// Sent to a leader that never answered.
    pub(crate) fn unconfirmed(id: TxId) -> Taken {
        Taken {
            id,
            confirmed: false,
        }
    }
}

impl Shared {
    /// A turn to admit a client submission (`crate::gate`: it may wait a little in a
    /// bounded queue, so that a burst is absorbed rather than refused). `None` (the client
    /// should retry later) when the mempool is full, the queue is full, the wait ran out,
    /// or (following) the leader refused a forward with a full mempool a moment ago.
    pub(crate) async fn admission_turn(&self) -> Option<OwnedSemaphorePermit> {
        if self.pool_full() || self.leader_busy() {
            return None;
        }
        self.gate().turn().await
    }

    /// Whether this node follows a leader that refused a forward with a full mempool
    /// lately (a new leader is not held to it).
    fn leader_busy(&self) -> bool {
        // Raft's status is read only while a pause is on (it is cloned out of a watch).
        self.gate().busy_leader().is_some_and(|busy| {
            let st = self.raft_status();
            st.leader == Some(busy) && busy != self.me().node_id
        })
    }

    /// Admits `txs` on this node (all checks, signatures batch-verified off the async
    /// threads), then, unless this node leads, forwards the admitted ones to the leader
    /// (to a newly elected one if it does not answer), giving up at `deadline`. Returns
    /// the transactions' ids and one result per transaction, in order.
    pub(crate) async fn submit(
        self: &Arc<Self>,
        txs: Vec<SignedTransaction>,
        deadline: Instant,
    ) -> (Vec<TxId>, Vec<Result<Taken, SubmitError>>) {
        // Each node checks each signature once: the leader at admission, a follower before
        // it appends the block. So a follower does not check here; the leader's verdict on
        // the forwarded transaction comes back to the client.
        let leading = self.is_leader();
        // The pool takes the originals: a follower keeps copies to forward, a leader with
        // a short backlog keeps their bytes to announce to its followers.
        let copies = (!leading).then(|| txs.clone());
        let (ids, admitted, announced) = self.clone().admit_blocking(txs, leading).await;
        let mut results: Vec<Result<Taken, SubmitError>> = admitted
            .into_iter()
            .map(|r| r.map(Taken::confirmed).map_err(SubmitError::Admit))
            .collect();
        let fresh: Vec<usize> = (0..results.len()).filter(|i| results[*i].is_ok()).collect();
        // Leadership may have changed during admission: what counts is who leads now.
        if !fresh.is_empty() {
            if self.is_leader() {
                self.admitted_as_leader(&fresh, announced);
            } else {
                self.forward_admitted(copies, &fresh, &mut results, deadline)
                    .await;
            }
        }
        self.count(&results);
        (ids, results)
    }

    /// [`Shared::admit`] on a blocking thread; with `leading`, signatures are verified and
    /// the bytes of the transactions are kept for announcing them (if the backlog is short).
    async fn admit_blocking(
        self: Arc<Self>,
        txs: Vec<SignedTransaction>,
        leading: bool,
    ) -> (
        Vec<TxId>,
        Vec<Result<TxId, AdmitError>>,
        Option<Vec<Vec<u8>>>,
    ) {
        crate::tasks::spawn_blocking(move || {
            let raw: Option<Vec<Vec<u8>>> = (leading && self.announcing())
                .then(|| txs.iter().map(SignedTransaction::to_bytes).collect());
            let (ids, admitted) = self.admit(txs, leading);
            (ids, admitted, raw)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// The leader admitted the transactions at `fresh`: the proposer may cut, and the
    /// followers hear of them (`raw`: every submitted transaction's bytes, if announcing).
    fn admitted_as_leader(&self, fresh: &[usize], raw: Option<Vec<Vec<u8>>>) {
        self.wake_proposer();
        if let Some(mut raw) = raw {
            let admitted: Vec<Vec<u8>> =
                fresh.iter().map(|i| std::mem::take(&mut raw[*i])).collect();
            self.prechecked().announce(&admitted);
        }
    }

    fn count(&self, results: &[Result<Taken, SubmitError>]) {
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        let c = self.counters();
        c.txs_accepted.fetch_add(ok, Ordering::Relaxed);
        c.txs_refused
            .fetch_add(results.len() as u64 - ok, Ordering::Relaxed);
    }

    /// Admits into this node's mempool; signatures are checked when `verify` (the leader
    /// checks; a follower leaves it to the leader it forwards to). The pool is locked only
    /// to screen and to enter: ids, rules, index lookups and signatures need no lock, so
    /// the proposer and other admissions are not held up by them.
    pub(crate) fn admit(
        &self,
        txs: Vec<SignedTransaction>,
        verify: bool,
    ) -> (Vec<TxId>, Vec<Result<TxId, AdmitError>>) {
        // Read before the committed lookups: `enter` looks again if blocks commit meanwhile.
        let epoch = self.pool().commit_epoch();
        let next = self.store().tip().height + 1;
        let committed = |id: &TxId| self.committed_height(id);
        let mut admission = Admission::new(txs, self.policy(), next, committed, epoch);
        self.pool().screen(&mut admission);
        if verify && admission.has_candidates() {
            admission.verify_signatures();
        }
        let ids = admission.ids().to_vec();
        (ids, self.pool().enter(admission, Instant::now(), committed))
    }

    /// Whether a leader announces what it admits now: not while a backlog waits, since
    /// the block would come long after and the followers could have forgotten the check
    /// by then.
    pub(crate) fn announcing(&self) -> bool {
        self.pool().len() <= ANNOUNCE_BACKLOG_MAX
    }
}
