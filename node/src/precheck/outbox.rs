//! A leader's side: one outbox per follower, filled as the leader admits transactions,
//! and one sender per follower that empties it with a few announcements in flight.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use ordo_crypto::PublicKey;
use tokio::sync::{Notify, Semaphore, watch};

use super::{ANNOUNCE_PENDING_BYTES_MAX, ANNOUNCE_TXS_MAX, ANNOUNCES_IN_FLIGHT_MAX, Prechecked};
use crate::network::{Frame, Kind, Network};
use ordo_wire::{TxBytes, encode_internal};

/// Transactions waiting on a leader to be announced to one follower.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) txs: Vec<Vec<u8>>,
    pub(super) bytes: usize,
}

/// One follower's outbox and the wake-up of its sender.
pub(super) struct Peer {
    pub(super) outbox: Mutex<Outbox>,
    pub(super) wake: Notify,
}

impl Prechecked {
    /// Puts `raw` (canonical bytes of transactions this node has just admitted as leader)
    /// in every follower's outbox, for [`Prechecked::send_announcements`]. What would take
    /// an outbox past [`ANNOUNCE_PENDING_BYTES_MAX`] is dropped, and counted. Never waits.
    pub fn announce(&self, raw: &[Vec<u8>]) {
        let bytes: usize = raw.iter().map(Vec::len).sum();
        if raw.is_empty() {
            return;
        }
        for peer in self.peers.values() {
            let mut outbox = peer.outbox.lock().expect("outbox lock poisoned");
            if outbox.bytes + bytes > ANNOUNCE_PENDING_BYTES_MAX {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            outbox.txs.extend_from_slice(raw);
            outbox.bytes += bytes;
            drop(outbox);
            peer.wake.notify_one();
        }
    }

    /// Sends `follower`'s outbox (at most [`ANNOUNCE_TXS_MAX`] transactions an
    /// announcement, at most [`ANNOUNCES_IN_FLIGHT_MAX`] in flight), until `stopping`.
    pub async fn send_announcements(
        self: Arc<Self>,
        follower: PublicKey,
        network: Network,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(peer) = self.peers.get(&follower) else {
            return;
        };
        let slots = Arc::new(Semaphore::new(ANNOUNCES_IN_FLIGHT_MAX));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stopping.wait_for(|s| *s) => return,
            };
            let txs: Vec<Vec<u8>> = {
                let mut outbox = peer.outbox.lock().expect("outbox lock poisoned");
                let n = outbox.txs.len().min(ANNOUNCE_TXS_MAX);
                let txs: Vec<Vec<u8>> = outbox.txs.drain(..n).collect();
                outbox.bytes -= txs.iter().map(Vec::len).sum::<usize>();
                txs
            };
            if txs.is_empty() {
                tokio::select! {
                    _ = peer.wake.notified() => continue,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
            let txs: Vec<TxBytes> = txs.into_iter().map(TxBytes).collect();
            let body = match encode_internal(&txs) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode an announcement");
                    continue;
                }
            };
            let frame = Frame {
                kind: Kind::Announce,
                body,
            };
            let (this, network, n) = (self.clone(), network.clone(), txs.len() as u64);
            crate::tasks::spawn(async move {
                match network.request(&follower, frame).await {
                    Ok(_) => this.stats.announced.fetch_add(n, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(error = %e, "announcement not delivered");
                        this.stats.dropped.fetch_add(1, Ordering::Relaxed)
                    }
                };
                drop(permit);
            });
        }
    }
}
