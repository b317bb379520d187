//! The workers that send the batches, and the follower that sees them committed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use futures::StreamExt;
use ordo_client::api::{RETRY_AFTER_SECS, TxResult};
use ordo_client::{Client, ClientError, RetryPolicy};

use super::{Run, triage};
use crate::Api;

/// One submitting worker.
pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) run: Arc<Run>,
    pub(super) bodies: Arc<Vec<Bytes>>,
    pub(super) clients: Vec<Client>,
    pub(super) api: Api,
    pub(super) start: Instant,
    /// Open loop: batch `b` is due at `start + b × schedule`, and its latency counts from
    /// then.
    pub(super) schedule: Option<Duration>,
}

impl Worker {
    /// Sends batches until none are left.
    pub(super) async fn run(self) {
        loop {
            let b = self.run.next.fetch_add(1, Ordering::Relaxed);
            if b >= self.bodies.len() {
                return;
            }
            let due = self.schedule.map(|s| self.start + s * b as u32);
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            *self.run.sent[b].lock().expect("lock") = Some(due.unwrap_or_else(Instant::now));
            self.send(b).await;
        }
    }

    /// Sends batch `b`: the whole batch first, then only the transactions refused for a
    /// while, pausing as the client's retry policy says between attempts.
    async fn send(&self, b: usize) {
        let client = &self.clients[(b + self.index) % self.clients.len()];
        // The client's pauses, but a node that cannot be reached is tried again after 50 ms
        // (jittered), not after a growing back-off: how fast load comes back after a node
        // restarts is part of what the run measures.
        let policy = RetryPolicy {
            first: Duration::from_millis(50),
            max: Duration::from_millis(50),
            ..RetryPolicy::default()
        };
        let opts = self.api.options();
        let mut body = self.bodies[b].clone();
        let mut attempt = 0;
        loop {
            let sent = Instant::now();
            let pause = match client.submit_encoded(body.clone(), &opts).await {
                Ok(results) => {
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    self.run.answered_ms.lock().expect("lock").push(ms);
                    let Some(rest) = self.refused_for_now(&body, &results) else {
                        return;
                    };
                    body = rest;
                    attempt = 0;
                    // What the node asks of a 503; a 200 that refused some has no header.
                    policy.pause(0, Some(Duration::from_secs(RETRY_AFTER_SECS)))
                }
                Err(e) if e.is_retryable() => {
                    self.run.retried.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    policy.pause(attempt - 1, e.retry_after())
                }
                Err(e) => {
                    self.refused(&body, b, &e);
                    return;
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Counts what `results` rejected for good; the body of the transactions to send again,
    /// if any.
    fn refused_for_now(&self, body: &[u8], results: &[TxResult]) -> Option<Bytes> {
        let (again, rejected) = triage(results);
        self.run.rejected.fetch_add(rejected, Ordering::Relaxed);
        if again.is_empty() {
            return None;
        }
        let Some(txs) = self.api.split(body) else {
            self.run
                .rejected
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            return None;
        };
        self.run
            .resubmitted
            .fetch_add(again.len() as u64, Ordering::Relaxed);
        let rest = again.iter().filter_map(|&i| txs.get(i)).map(Vec::as_slice);
        Some(Bytes::from(self.api.body(rest)))
    }

    /// A batch refused for good as a whole.
    fn refused(&self, body: &[u8], b: usize, e: &ClientError) {
        tracing::warn!(error = %e, "batch refused");
        let n = self.api.split(body).map_or(self.run.sizes[b], |t| t.len());
        self.run.rejected.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Follows the binary block stream from `from`, recording when each of the run's
/// transactions is seen committed.
pub(super) async fn follow(client: Client, from: u64, run: Arc<Run>) -> anyhow::Result<()> {
    let mut frames = std::pin::pin!(client.block_ids(Some(from)));
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| anyhow!("block stream: {e}"))?;
        let now = Instant::now();
        let done: Vec<(Instant, Duration)> = frame
            .ids
            .iter()
            .filter_map(|id| {
                let b = run.batch_of.get(id)?;
                let sent = (*run.sent[*b].lock().expect("lock"))?;
                Some((now, now.saturating_duration_since(sent)))
            })
            .collect();
        run.committed_at.lock().expect("lock").extend(done);
    }
    Ok(())
}
