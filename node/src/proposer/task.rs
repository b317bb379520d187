//! The proposer's task: gathers the [`Inputs`], asks the [`Core`], and carries out its
//! [`Action`]: cut from the mempool, build and sign the block, hand it to Raft, and settle
//! it when it comes back (a block that does not commit gives its transactions back).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use ordo_crypto::Keypair;
use ordo_ledger::{Certificate, ChainTip, SignedTransaction, build_block_with_ids};
use tokio::sync::Notify;

use super::core::{Action, Core, Inputs};
use crate::consensus::{self, ApplyOutcome, ProposalError, Role};
use crate::shared::Shared;

/// A block in flight: what applying it did (or why it did not commit), and its
/// transactions, to give back if it did not.
type InFlight = BoxFuture<'static, (Result<ApplyOutcome, ProposalError>, Vec<SignedTransaction>)>;

/// What ended a wait.
#[derive(Debug)]
pub(crate) enum Woken<T> {
    /// A block in flight came back.
    Finished(T),
    /// Something was notified (transactions arrived, a block was applied).
    Notified,
    /// The deadline passed.
    Deadline,
    /// The node stops.
    Stopping,
}

/// Waits for the first of: a block in `in_flight` coming back, `wake`, `until`, `stopping`.
pub(crate) async fn next_event<T>(
    in_flight: &mut FuturesOrdered<BoxFuture<'static, T>>,
    wake: &Notify,
    until: Instant,
    stopping: impl std::future::Future<Output = ()>,
) -> Woken<T> {
    tokio::select! {
        Some(done) = in_flight.next(), if !in_flight.is_empty() => Woken::Finished(done),
        () = wake.notified() => Woken::Notified,
        () = tokio::time::sleep_until(until.into()) => Woken::Deadline,
        () = stopping => Woken::Stopping,
    }
}

/// How long the proposer waits for the attestations its next block needs before it says so.
const UNCERTIFIED_WARN_AFTER: Duration = Duration::from_secs(2);
/// How often the proposer says the validators' time is behind its chain's.
const BEHIND_WARN_EVERY: Duration = Duration::from_secs(10);

/// The proposer of one node.
pub(crate) struct Proposer {
    shared: Arc<Shared>,
    key: Keypair,
    core: Core,
    /// Since when the next block has lacked the certificates it must carry, and when that
    /// was last logged.
    uncertified: std::sync::Mutex<Option<(Instant, Instant)>>,
    /// When it last said the validators' time is behind the chain's.
    behind_warned: std::sync::Mutex<Option<Instant>>,
}

impl Proposer {
    /// A proposer signing with `key`, at most `in_flight_max` blocks in flight, cutting
    /// after `idle_wait` when none is in flight (else the genesis batch timeout).
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: Keypair,
        in_flight_max: usize,
        idle_wait: Duration,
    ) -> Proposer {
        let batch_timeout = Duration::from_millis(shared.genesis().consensus.batch_timeout_ms);
        Proposer {
            shared,
            key,
            core: Core::new(in_flight_max, batch_timeout, idle_wait),
            uncertified: std::sync::Mutex::new(None),
            behind_warned: std::sync::Mutex::new(None),
        }
    }

    /// Proposes while this node leads, until the node stops.
    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        loop {
            if shared.is_stopping() {
                return;
            }
            let inputs = self.inputs();
            let pool = || self.shared.pool().view();
            let until = match self.core.decide(&inputs, pool) {
                Action::Propose { parent, term } => match self.propose(parent, term).await {
                    Some((block, tip)) => {
                        in_flight.push_back(block);
                        self.core.proposed(term, tip);
                        continue;
                    }
                    // Nothing left to cut, or Raft refused: look again shortly.
                    None => Instant::now() + super::core::POLL,
                },
                Action::Wait { until } => until,
            };
            let stopped = shared.stopped();
            match next_event(&mut in_flight, shared.proposer_wakeup(), until, stopped).await {
                Woken::Finished((outcome, txs)) => {
                    let appended = self.finish(outcome, txs);
                    self.core.finished(appended);
                }
                Woken::Notified | Woken::Deadline => {}
                Woken::Stopping => return,
            }
        }
    }

    fn inputs(&self) -> Inputs {
        let st = self.shared.raft_status();
        Inputs {
            // About to hand the office over for a slow disk: propose nothing more.
            leading: st.role == Role::Leader
                && st.leader == Some(self.shared.me().node_id)
                && !self.shared.pace().draining(),
            term: st.term,
            last_log_index: st.last_log_index.unwrap_or(0),
            applied_index: st.applied.unwrap_or(0),
            ledger_tip: self.shared.store().tip(),
            cleaned_height: self.shared.tip().height,
            now: Instant::now(),
        }
    }

    /// The validators' time, to stamp the next block on `parent` with. When it is behind
    /// the parent's timestamp (the block then carries the parent's: time never goes back
    /// in a chain), says so every [`BEHIND_WARN_EVERY`]: the chain's time stands still
    /// until the validators' catches up.
    fn now_ms(&self, parent: &ChainTip) -> u64 {
        let now = self.shared.clock().now_ms();
        if now < parent.timestamp_ms {
            let mut warned = self.behind_warned.lock().expect("proposer lock poisoned");
            if warned.is_none_or(|t| t.elapsed() >= BEHIND_WARN_EVERY) {
                *warned = Some(Instant::now());
                tracing::warn!(
                    behind_ms = parent.timestamp_ms - now,
                    height = parent.height,
                    "the validators' time is {:.3} s behind block {}'s timestamp: new blocks carry that timestamp until it catches up (was a clock set back, or one far ahead?)",
                    (parent.timestamp_ms - now) as f64 / 1000.0,
                    parent.height
                );
            }
        }
        now
    }

    /// Cuts a block on `parent` and hands it to Raft in `term`. Returns the future of its
    /// outcome and its tip; `None` when the cut is empty or Raft has stopped.
    async fn propose(&self, parent: ChainTip, term: u64) -> Option<(InFlight, ChainTip)> {
        let shared = &self.shared;
        let certificates = self.certificates(&parent)?;
        let reserve = certificates.iter().map(Certificate::encoded_len).sum();
        let (txs, ids) = {
            let mut pool = shared.pool();
            if let Some(oldest) = pool.view().oldest {
                shared.timings().queue.observe(oldest.elapsed());
            }
            pool.cut(parent.height + 1, reserve)
        };
        if txs.is_empty() {
            return None;
        }
        #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
        let mut block = build_block_with_ids(
            &parent,
            &shared.policy().chain_id,
            certificates,
            txs,
            &ids,
            &self.key,
            self.now_ms(&parent),
            term,
        );
        #[cfg(feature = "fault-injection")]
        crate::faults::spoil(&mut block);
        let tip = block.tip();
        let block = Arc::new(block);
        let outcome = match consensus::propose(shared.raft(), block.clone(), ids.into()).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // Raft has stopped; nothing more will commit here.
                self.finish(Err(e), Arc::unwrap_or_clone(block).txs);
                return None;
            }
        };
        tracing::debug!(height = tip.height, n_txs = block.txs.len(), "proposed");
        let shared = shared.clone();
        let proposed = Instant::now();
        let fut: InFlight = Box::pin(async move {
            let outcome = outcome.await;
            shared.timings().commit.observe(proposed.elapsed());
            (outcome, Arc::unwrap_or_clone(block).txs)
        });
        Some((fut, tip))
    }

    /// The certificates a block on `parent` carries; `None` while a majority's
    /// attestations of a block it must certify are missing (the proposer is woken when
    /// they arrive), logged when that lasts.
    fn certificates(&self, parent: &ChainTip) -> Option<Vec<Certificate>> {
        let shared = &self.shared;
        let need = shared.policy().certified_min(parent.height + 1);
        let found = shared
            .attestations()
            .certificates(parent.certified, parent.height, need);
        let mut since = self.uncertified.lock().expect("proposer lock poisoned");
        match found {
            Ok(Some(certs)) => {
                *since = None;
                Some(certs)
            }
            Ok(None) => {
                let now = Instant::now();
                let (first, logged) = since.get_or_insert((now, now));
                if now.duration_since(*first) >= UNCERTIFIED_WARN_AFTER
                    && now.duration_since(*logged) >= UNCERTIFIED_WARN_AFTER
                {
                    *logged = now;
                    let missing: Vec<String> = shared
                        .attestations()
                        .missing(parent.certified + 1)
                        .iter()
                        .map(|k| {
                            shared
                                .genesis()
                                .validator(k)
                                .map_or_else(|| k.to_string(), |v| v.name.clone())
                        })
                        .collect();
                    tracing::warn!(
                        height = parent.certified + 1,
                        waited_ms = now.duration_since(*first).as_millis() as u64,
                        missing = ?missing,
                        "no block can be proposed: a majority's attestations of an earlier block are missing"
                    );
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot gather certificates");
                None
            }
        }
    }

    /// Settles a proposed block; true when it was appended. (Its transactions leave the
    /// mempool's in-flight set when the applied-tip follower sees the block.)
    fn finish(
        &self,
        outcome: Result<ApplyOutcome, ProposalError>,
        txs: Vec<SignedTransaction>,
    ) -> bool {
        let shared = &self.shared;
        let reason = match outcome {
            Ok(ApplyOutcome::Appended { height, .. }) => {
                shared
                    .counters()
                    .blocks_proposed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(height, n_txs = txs.len(), "committed");
                return true;
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        shared
            .counters()
            .proposals_failed
            .fetch_add(1, Ordering::Relaxed);
        let next = shared.store().tip().height + 1;
        let n = txs.len();
        shared
            .pool()
            .requeue(txs, next, |id| shared.committed_height(id), Instant::now());
        tracing::warn!(%reason, n_txs = n, "proposed block did not commit; transactions requeued");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Done = BoxFuture<'static, u32>;

    fn after(d: Duration, v: u32) -> Done {
        Box::pin(async move {
            tokio::time::sleep(d).await;
            v
        })
    }

    /// The task's wait, in paused time: it ends at the first of a returning block, a
    /// wake-up and the deadline, exactly when that happens, and at once when the node stops.
    #[tokio::test(start_paused = true)]
    async fn the_wait_ends_at_the_first_event_exactly_when_it_happens() {
        let wake = Arc::new(Notify::new());
        let never = std::future::pending::<()>;
        // The core works in std time; in paused time, read it off tokio's clock.
        let now = || tokio::time::Instant::now().into_std();
        let t0 = tokio::time::Instant::now();
        let ms = Duration::from_millis;

        // Nothing in flight: the deadline.
        let mut in_flight: FuturesOrdered<Done> = FuturesOrdered::new();
        let until = now() + ms(5);
        let woken = next_event(&mut in_flight, &wake, until, never()).await;
        assert!(matches!(woken, Woken::Deadline), "{woken:?}");
        assert_eq!(t0.elapsed(), ms(5));

        // A block that comes back before the deadline; blocks come back in order.
        let t1 = tokio::time::Instant::now();
        in_flight.push_back(after(ms(3), 1));
        in_flight.push_back(after(ms(1), 2));
        let until = now() + ms(50);
        let woken = next_event(&mut in_flight, &wake, until, never()).await;
        assert!(matches!(woken, Woken::Finished(1)), "{woken:?}");
        assert_eq!(t1.elapsed(), ms(3));
        let woken = next_event(&mut in_flight, &wake, until, never()).await;
        assert!(matches!(woken, Woken::Finished(2)), "{woken:?}");
        assert_eq!(t1.elapsed(), ms(3), "already done");

        // A wake-up (transactions arrived) before anything else.
        let t2 = tokio::time::Instant::now();
        in_flight.push_back(after(ms(20), 3));
        let waker = wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(2)).await;
            waker.notify_one();
        });
        let woken = next_event(&mut in_flight, &wake, now() + ms(50), never()).await;
        assert!(matches!(woken, Woken::Notified), "{woken:?}");
        assert_eq!(t2.elapsed(), ms(2));

        // Stopping wins over a block still in flight.
        let woken = next_event(&mut in_flight, &wake, now() + ms(50), async {}).await;
        assert!(matches!(woken, Woken::Stopping), "{woken:?}");
        assert_eq!(t2.elapsed(), ms(2));
    }
}
