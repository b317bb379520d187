//! A follower's side: the queue of what the leader announces, checked on a blocking
//! thread in merged batches, and the check of the submissions it forwards itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ordo_ledger::{SignedTransaction, TxId};
use tokio::sync::{mpsc, watch};

use super::{ANNOUNCE_MERGE_BYTES_MAX, ANNOUNCE_QUEUE_BYTES_MAX, ANNOUNCE_TXS_MAX, Prechecked};
use ordo_wire::{TxBytes, decode_internal};

impl Prechecked {
    /// Takes an announcement (the frame body) for checking, or drops it if the queue is
    /// full (in count or bytes). Never waits.
    pub fn offer(&self, body: Vec<u8>) {
        let len = body.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if queued + len > ANNOUNCE_QUEUE_BYTES_MAX || self.queue.try_send(body).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    /// Checks one announcement: decodes it, batch-verifies the signatures that no check
    /// has verified or is verifying, and remembers those if the batch passes. Returns how
    /// many it verified.
    ///
    /// # Errors
    /// Why the announcement was dropped (it did not decode, was too large, or holds a bad
    /// signature).
    pub fn check(&self, body: &[u8]) -> Result<usize, String> {
        let (verified, mut dropped) = self.check_all(&[body]);
        dropped.pop().map_or(Ok(verified), Err)
    }

    /// Checks several announcements in one batch (the multiscalar multiplication costs
    /// less per signature in a larger batch): each is decoded on its own, and one that
    /// does not decode is dropped alone; the signatures of the rest that no check has
    /// verified or is verifying are verified together, and remembered if the batch
    /// passes. Returns how many signatures it verified, and why each dropped announcement
    /// was dropped (all of them when the batch fails: a leader that announces a bad
    /// signature gets nothing checked ahead).
    pub(super) fn check_all(&self, bodies: &[&[u8]]) -> (usize, Vec<String>) {
        let mut dropped = Vec::new();
        let mut decoded = Vec::new();
        let mut decoded_bodies = 0;
        for body in bodies {
            match self.decode(body) {
                Ok(txs) => {
                    decoded.extend(txs);
                    decoded_bodies += 1;
                }
                Err(reason) => dropped.push(reason),
            }
        }
        match self.check_decoded(decoded.iter().map(|(id, tx)| (*id, tx))) {
            Some(n) => (n, dropped),
            None => {
                let reason = "announced transactions: a signature does not verify";
                dropped.extend(std::iter::repeat_n(reason.to_owned(), decoded_bodies));
                (0, dropped)
            }
        }
    }

    /// Checks the signatures of transactions a client submitted to this node (following),
    /// which it forwards to the leader: the leader checks them at admission meanwhile, so
    /// this node's own check is done by the time their block arrives, instead of starting
    /// when the leader announces them. What passes is remembered as an announcement check
    /// would remember it. Returns how many signatures it verified (0 when a signature in
    /// the batch is bad: the leader refuses that one, and the block check decides the
    /// rest). `ids` are the transactions' ids, in order. Run it on a blocking thread.
    pub fn check_forwarded(&self, ids: &[TxId], txs: &[SignedTransaction]) -> usize {
        self.check_decoded(ids.iter().copied().zip(txs))
            .unwrap_or(0)
    }

    /// One announcement's transactions with their ids.
    fn decode(&self, body: &[u8]) -> Result<Vec<(TxId, SignedTransaction)>, String> {
        let raw: Vec<TxBytes> =
            decode_internal(body, "announced transactions").map_err(|e| e.to_string())?;
        if raw.len() > ANNOUNCE_TXS_MAX {
            return Err(format!("more than {ANNOUNCE_TXS_MAX} transactions"));
        }
        raw.iter()
            .map(|TxBytes(bytes)| {
                SignedTransaction::from_bytes(bytes, self.tx_bytes_max)
                    .map(|tx| (tx.id(), tx))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Checks queued announcements on a blocking thread until `stopping`: all those
    /// waiting when a check starts go into one batch (at most
    /// [`ANNOUNCE_MERGE_BYTES_MAX`] bytes of them), so a follower that falls behind
    /// verifies larger, cheaper batches instead of falling further behind.
    pub async fn run(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<Vec<u8>>,
        mut stopping: watch::Receiver<bool>,
    ) {
        loop {
            let body = tokio::select! {
                body = rx.recv() => match body { Some(b) => b, None => return },
                _ = stopping.wait_for(|s| *s) => return,
            };
            let mut bytes = body.len();
            let mut bodies = vec![body];
            while bytes < ANNOUNCE_MERGE_BYTES_MAX
                && let Ok(body) = rx.try_recv()
            {
                bytes += body.len();
                bodies.push(body);
            }
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            let this = self.clone();
            let count = bodies.len();
            let dropped = crate::tasks::spawn_blocking(move || {
                let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
                this.check_all(&refs).1
            })
            .await
            .unwrap_or_else(|e| vec![format!("check task failed: {e}"); count]);
            for reason in dropped {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, "dropped an announcement");
            }
        }
    }
}
