//! Forwarding, both directions: a follower sends what it admitted to the leader and maps
//! the leader's verdicts back onto its client's results; the leader admits forwarded
//! transactions and answers one [`Verdict`] per transaction.
//!
//! While its backlog is short, a follower also checks the signatures of what it forwards
//! (on a blocking thread, at most [`FORWARD_CHECKS_MAX`] at once) while the leader checks
//! them at admission, so that its own check is done when their block arrives
//! (`crate::precheck`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ordo_crypto::PublicKey;
use ordo_ledger::{SignedTransaction, TxId};

use crate::admission::Taken;
use crate::consensus::Role;
use crate::error::SubmitError;
use crate::mempool::AdmitError;
use crate::network::{Frame, InboundRequest, Kind};
use crate::shared::Shared;
use ordo_wire::{FORWARD_TXS_MAX, TxBytes, Verdict, decode_internal, encode_internal};

/// Most checks of forwarded submissions a follower runs at once (see
/// [`crate::precheck::Prechecked::check_forwarded`]); a submission that finds them all
/// busy is left to the announcement or block check.
pub(crate) const FORWARD_CHECKS_MAX: usize = 2;

/// The leader's verdict on one admission result.
fn verdict_of(admitted: Result<TxId, AdmitError>) -> Verdict {
    match admitted {
        Ok(_) => Verdict::Accepted,
        Err(AdmitError::AlreadyPending(_)) => Verdict::AlreadyPending,
        Err(AdmitError::AlreadyCommitted { height, .. }) => Verdict::AlreadyCommitted { height },
        Err(AdmitError::Busy { .. }) => Verdict::Busy,
        Err(AdmitError::Invalid { error, .. }) => Verdict::Invalid(error),
    }
}

/// What the follower's client hears for transaction `id`, given the leader's verdict.
fn verdict_result(verdict: Verdict, id: TxId) -> Result<TxId, SubmitError> {
    match verdict {
        Verdict::Accepted | Verdict::AlreadyPending => Ok(id),
        Verdict::Invalid(error) => Err(SubmitError::Admit(AdmitError::Invalid { id, error })),
        Verdict::AlreadyCommitted { height } => {
            Err(SubmitError::Admit(AdmitError::AlreadyCommitted {
                id,
                height,
            }))
        }
        Verdict::Busy => Err(SubmitError::LeaderBusy),
        Verdict::Refused(reason) => Err(SubmitError::Refused(reason)),
        Verdict::NotLeader => Err(SubmitError::NoLeader),
    }
}

/// How a forwarded transaction fared.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Forwarded {
    /// A leader's verdict.
    Verdict(Verdict),
    /// This node leads now: the transaction is in its own pool.
    Ours,
    /// Sent to a leader that did not answer in time (or whose connection broke): it may
    /// have taken it. It stays in this node's pool, which sends it again
    /// (`crate::resend`).
    Unknown,
    /// No leader was asked in time.
    NotSent,
}

/// How often a follower looks for a new leader while a forward waits.
const LEADER_POLL: Duration = Duration::from_millis(20);

impl Shared {
    /// Following: forwards the transactions at `fresh` (admitted here; `copies` holds every
    /// submitted transaction) to the leader and writes its verdicts into `results`, by
    /// `deadline`. A leader that does not answer is given up for a newly elected one; a
    /// transaction sent to a leader that never answered is [`Taken::unconfirmed`]. Those
    /// no leader took leave this node's mempool again.
    pub(crate) async fn forward_admitted(
        &self,
        copies: Option<Vec<SignedTransaction>>,
        fresh: &[usize],
        results: &mut [Result<Taken, SubmitError>],
        deadline: Instant,
    ) {
        let outcomes = match copies {
            Some(copies) => {
                let mut wanted = fresh.iter().peekable();
                let batch: Vec<SignedTransaction> = copies
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| wanted.next_if_eq(&i).is_some())
                    .map(|(_, tx)| tx)
                    .collect();
                self.forward_until(batch, fresh, results, deadline).await
            }
            // This node led when it admitted them and has lost office since: the client
            // retries (503), and meets the next leader.
            None => vec![(Forwarded::NotSent, false); fresh.len()],
        };
        let leader_id = self.leader();
        let mut gone = Vec::new();
        let mut checked = Vec::new();
        for ((outcome, resent), &slot) in outcomes.into_iter().zip(fresh) {
            let Ok(taken) = results[slot] else { continue };
            let id = taken.id;
            let outcome = match outcome {
                Forwarded::Ours => Ok(taken),
                Forwarded::Unknown => Ok(Taken::unconfirmed(id)),
                Forwarded::NotSent => Err(SubmitError::NoLeader),
                // Sent again after an earlier leader did not answer: that leader took it.
                Forwarded::Verdict(Verdict::AlreadyCommitted { .. }) if resent => Ok(taken),
                Forwarded::Verdict(verdict) => {
                    // Only `Accepted` means the leader checked this copy's signature: the
                    // id does not cover the signature, so an `AlreadyPending` copy may
                    // differ.
                    if verdict == Verdict::Accepted {
                        checked.push(id);
                    }
                    if verdict == Verdict::Busy
                        && let Some(leader) = leader_id
                    {
                        self.gate().leader_is_busy(leader);
                    }
                    verdict_result(verdict, id).map(|_| taken)
                }
            };
            if outcome.is_err() {
                gone.push(id);
            }
            results[slot] = outcome;
        }
        let mut pool = self.pool();
        pool.mark_verified(&checked);
        if !gone.is_empty() {
            pool.remove_pending(&gone);
        }
    }

    /// Sends `batch` (the transactions at `fresh` of the submission) to the leader, and
    /// to each leader elected after it, until each has a verdict or `deadline` passes.
    /// One outcome per transaction, with whether it was sent more than once.
    async fn forward_until(
        &self,
        batch: Vec<SignedTransaction>,
        fresh: &[usize],
        results: &[Result<Taken, SubmitError>],
        deadline: Instant,
    ) -> Vec<(Forwarded, bool)> {
        let mut out: Vec<Option<Forwarded>> = vec![None; batch.len()];
        let mut sends = vec![0u32; batch.len()];
        // Sent to a leader that did not answer: it may have taken it.
        let mut maybe_taken = vec![false; batch.len()];
        // The leader (and its term) that last failed to answer, or answered "not leader".
        let mut given_up: Option<(u64, u64)> = None;
        let mut first = true;
        loop {
            let left: Vec<usize> = (0..batch.len()).filter(|&i| out[i].is_none()).collect();
            if left.is_empty() {
                break;
            }
            let Some((leader, term)) = self.leader_other_than(given_up, deadline).await else {
                break;
            };
            if leader == self.me().node_id {
                for &i in &left {
                    out[i] = Some(Forwarded::Ours);
                }
                self.wake_proposer();
                break;
            }
            let Some(&(_, key)) = self.validator(leader) else {
                break;
            };
            let chunk: Arc<Vec<SignedTransaction>> =
                Arc::new(left.iter().map(|&i| batch[i].clone()).collect());
            if first {
                let ids = fresh
                    .iter()
                    .filter_map(|&i| results[i].as_ref().ok().map(|t| t.id));
                self.check_while_forwarding(&chunk, ids);
                first = false;
            }
            for &i in &left {
                sends[i] += 1;
            }
            let answer = tokio::select! {
                verdicts = self.forward(key, &chunk) => Some(verdicts),
                () = self.leader_moved_from(leader) => None,
                () = tokio::time::sleep_until(deadline.into()) => None,
            };
            given_up = Some((leader, term));
            let Some(verdicts) = answer else {
                // No answer: the leader may have taken them, or not.
                for &i in &left {
                    maybe_taken[i] = true;
                }
                continue;
            };
            for (verdict, &i) in verdicts.into_iter().zip(&left) {
                match verdict {
                    Ok(Verdict::NotLeader) => {}
                    Ok(v) => out[i] = Some(Forwarded::Verdict(v)),
                    Err(e) => {
                        tracing::debug!(error = %e, leader, "a forward to the leader failed");
                        maybe_taken[i] = true;
                    }
                }
            }
        }
        out.into_iter()
            .zip(maybe_taken)
            .zip(sends)
            .map(|((o, maybe), n)| {
                let o = o.unwrap_or(if maybe {
                    Forwarded::Unknown
                } else {
                    Forwarded::NotSent
                });
                (o, n > 1)
            })
            .collect()
    }

    /// The leader this node knows (and its term), this node itself if it leads, unless it
    /// is `given_up` in the same term; waits for another until `deadline`.
    async fn leader_other_than(
        &self,
        given_up: Option<(u64, u64)>,
        deadline: Instant,
    ) -> Option<(u64, u64)> {
        loop {
            let st = self.raft_status();
            let me = self.me().node_id;
            let known = if st.role == Role::Leader {
                Some(me)
            } else {
                st.leader
            };
            if let Some(leader) = known
                && given_up.is_none_or(|(id, term)| leader != id || st.term > term)
            {
                return Some((leader, st.term));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            tokio::time::sleep(LEADER_POLL.min(deadline - now)).await;
        }
    }

    /// Completes once a node other than `leader` leads, as far as this node knows.
    async fn leader_moved_from(&self, leader: u64) {
        loop {
            let st = self.raft_status();
            let moved = if st.role == Role::Leader {
                leader != self.me().node_id
            } else {
                st.leader.is_some_and(|l| l != leader)
            };
            if moved {
                return;
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    }

    /// Following, checks the signatures of `batch` (with the ids in `ids`) on a blocking
    /// thread while the leader checks them at admission: this node verifies them before
    /// their block comes either way, and checked now, its acknowledgement of the block
    /// need not wait for the check of the leader's announcement, which only starts once
    /// the leader has admitted them. Only while the backlog is short (as for
    /// announcements: under overload most forwards are refused) and a turn is free.
    fn check_while_forwarding(
        &self,
        batch: &Arc<Vec<SignedTransaction>>,
        ids: impl Iterator<Item = TxId>,
    ) {
        if !self.announcing() {
            return;
        }
        let Ok(turn) = self.forward_checks().clone().try_acquire_owned() else {
            return;
        };
        let ids: Vec<TxId> = ids.collect();
        let (batch, prechecked) = (batch.clone(), self.prechecked().clone());
        crate::tasks::spawn_blocking(move || {
            prechecked.check_forwarded(&ids, &batch);
            drop(turn);
        });
    }

    /// Sends `txs` to the leader, in chunks, and returns its verdict on each (or why the
    /// chunk holding it could not be delivered).
    pub(crate) async fn forward(
        &self,
        leader: PublicKey,
        txs: &[SignedTransaction],
    ) -> Vec<Result<Verdict, SubmitError>> {
        let mut verdicts = Vec::with_capacity(txs.len());
        for chunk in txs.chunks(FORWARD_TXS_MAX) {
            match self.forward_chunk(&leader, chunk).await {
                Ok(got) => verdicts.extend(got.into_iter().map(Ok)),
                Err(e) => verdicts.extend(std::iter::repeat_n(Err(e), chunk.len())),
            }
        }
        verdicts
    }

    async fn forward_chunk(
        &self,
        leader: &PublicKey,
        chunk: &[SignedTransaction],
    ) -> Result<Vec<Verdict>, SubmitError> {
        let unavailable = |e: &dyn std::fmt::Display| SubmitError::Unavailable(e.to_string());
        let raw: Vec<TxBytes> = chunk.iter().map(|t| TxBytes(t.to_bytes())).collect();
        let body = encode_internal(&raw).map_err(|e| unavailable(&e))?;
        self.counters()
            .txs_forwarded
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        let frame = Frame {
            kind: Kind::Transactions,
            body,
        };
        let answer = self
            .network()
            .request(leader, frame)
            .await
            .map_err(|e| unavailable(&e))?;
        if answer.kind != Kind::Transactions {
            return Err(SubmitError::Unavailable(format!(
                "the leader answered with {}",
                String::from_utf8_lossy(&answer.body)
            )));
        }
        let got: Vec<Verdict> =
            decode_internal(&answer.body, "forward verdicts").map_err(|e| unavailable(&e))?;
        if got.len() != chunk.len() {
            return Err(SubmitError::Unavailable(format!(
                "the leader answered {} verdicts for {} transactions",
                got.len(),
                chunk.len()
            )));
        }
        Ok(got)
    }

    /// Answers transactions forwarded by a follower: admitted here if this node leads.
    pub(crate) async fn serve_forwarded(self: Arc<Self>, req: InboundRequest) {
        let error = |message: String| Frame {
            kind: Kind::Error,
            body: message.into_bytes(),
        };
        let frame = match decode_internal::<Vec<TxBytes>>(&req.frame.body, "forwarded transactions")
        {
            Err(e) => error(e.to_string()),
            Ok(raw) if raw.len() > FORWARD_TXS_MAX => {
                error(format!("more than {FORWARD_TXS_MAX} transactions"))
            }
            Ok(raw) => {
                let raw = raw.into_iter().map(|TxBytes(t)| t).collect();
                let verdicts = self.admit_forwarded(raw).await;
                match encode_internal(&verdicts) {
                    Ok(body) => Frame {
                        kind: Kind::Transactions,
                        body,
                    },
                    Err(e) => error(e.to_string()),
                }
            }
        };
        req.respond(frame);
    }

    async fn admit_forwarded(self: &Arc<Self>, raw: Vec<Vec<u8>>) -> Vec<Verdict> {
        if !self.is_leader() {
            return vec![Verdict::NotLeader; raw.len()];
        }
        let max = self.policy().limits.tx_bytes_max;
        let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(raw.len());
        let mut txs = Vec::new();
        for bytes in &raw {
            match SignedTransaction::from_bytes(bytes, max) {
                Ok(tx) => {
                    txs.push(tx);
                    verdicts.push(None);
                }
                Err(e) => verdicts.push(Some(Verdict::Refused(format!("malformed: {e}")))),
            }
        }
        let Some(_turn) = self.gate().forwarded_turn().await else {
            return vec![Verdict::Busy; raw.len()];
        };
        let this = self.clone();
        // The backlog is read before admission, as in `submit`.
        let (announce, (_, admitted)) =
            crate::tasks::spawn_blocking(move || (this.announcing(), this.admit(txs, true)))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.wake_proposer();
        let mut admitted = admitted.into_iter().map(verdict_of);
        let verdicts: Vec<Verdict> = verdicts
            .into_iter()
            .map(|v| {
                v.or_else(|| admitted.next()).unwrap_or_else(|| {
                    Verdict::Refused("internal: missing admission result".into())
                })
            })
            .collect();
        if announce {
            let accepted: Vec<Vec<u8>> = raw
                .into_iter()
                .zip(&verdicts)
                .filter(|(_, v)| **v == Verdict::Accepted)
                .map(|(bytes, _)| bytes)
                .collect();
            self.prechecked().announce(&accepted);
        }
        verdicts
    }
}
