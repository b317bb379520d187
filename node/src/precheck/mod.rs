//! Signatures a follower checks ahead of the blocks that carry them.
//!
//! The leader sends the transactions it admits to the followers as soon as it has admitted
//! them ([`Kind::Announce`], best effort): one sender per follower, at most a few
//! announcements in flight; when they are all in flight, what is admitted meanwhile goes out
//! together in the next. A follower batch-verifies the signatures
//! off the critical path and remembers each (id, signature) pair that passed. When the
//! block carrying them arrives, [`crate::consensus::RaftServer`] leaves those signatures
//! out of the block's batch ([`ordo_ledger::verify_block_with`]): the follower still checks
//! each signature once, under the same ZIP-215 rules, but before the block arrives instead
//! of between the block's arrival and its acknowledgement, which the commit waits for.
//!
//! Each signature is checked once per node even when an announcement and its block meet:
//! a block check waits for an announcement check already verifying one of its signatures
//! (at most [`ANNOUNCE_WAIT_MAX`] per append) instead of verifying it too, and an announcement check
//! skips the signatures a block check is verifying itself ([`Prechecked::block_check`]).
//!
//! A follower also checks here the submissions it forwards to the leader
//! ([`Prechecked::check_forwarded`]), while the leader checks them at admission: the
//! announcement of those transactions then finds them verified, and the block need not
//! wait for a check that starts only once the leader has admitted them.
//!
//! Everything here is bounded and lossy. A dropped announcement, a batch that fails, or an
//! entry evicted before its block arrives only means that the block check verifies that
//! signature itself. Nothing is trusted from the sender: a follower remembers only what it
//! verified.

//!
//! The parts: [`claims`] is the table of pairs verified and being verified, which the
//! block check and the announcement checks share; [`follower`] queues and checks what the
//! leader announces; [`outbox`] is the leader's side, one outbox and sender per follower.

mod claims;
mod follower;
mod outbox;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ordo_crypto::PublicKey;
use tokio::sync::{Notify, mpsc};

use claims::Seen;
use outbox::{Outbox, Peer};

/// Most (id, signature) pairs a follower remembers; the oldest go first.
pub const PRECHECKED_MAX: usize = 65_536;
/// Most announcements waiting on a follower to be checked; more are dropped.
pub const ANNOUNCE_QUEUE_MAX: usize = 64;
/// Most bytes of announcements waiting on a follower to be checked; more are dropped.
pub const ANNOUNCE_QUEUE_BYTES_MAX: usize = 16 << 20;
/// Most bytes of transactions waiting on a leader to be announced to one follower; more
/// are dropped (a follower that is down or slow costs at most this).
pub const ANNOUNCE_PENDING_BYTES_MAX: usize = 4 << 20;
/// Most announcements a leader has in flight to one follower; what is admitted meanwhile
/// waits in the outbox and goes out together.
pub const ANNOUNCES_IN_FLIGHT_MAX: usize = 4;
/// Most transactions in one announcement (the forwarding limit).
pub const ANNOUNCE_TXS_MAX: usize = 4096;
/// Most bytes of queued announcements a follower checks in one batch (it takes queued
/// announcements until it reaches this, so one more may take it past).
pub const ANNOUNCE_MERGE_BYTES_MAX: usize = 4 << 20;
/// Longest a block check waits for announcement checks that are verifying some of its
/// signatures; then it verifies what is still unsettled itself.
pub const ANNOUNCE_WAIT_MAX: Duration = Duration::from_millis(200);

/// Counters exported as metrics.
#[derive(Debug, Default)]
pub struct PrecheckStats {
    /// Transactions this node (leading) announced, counted once per follower they reached.
    pub announced: AtomicU64,
    /// Transactions whose signatures this node (following) verified ahead of their block.
    pub checked: AtomicU64,
    /// Block signatures left out of a block check because they were checked ahead.
    pub hits: AtomicU64,
    /// Announcements dropped: a full queue on either side, one that did not decode or
    /// verify, or one from a node that does not lead.
    pub dropped: AtomicU64,
}

/// One node's signatures checked ahead of their blocks, the queue of announcements waiting
/// to be checked (as follower), and the outboxes of announcements to send (as leader).
pub struct Prechecked {
    seen: Mutex<Seen>,
    /// Signalled when an announcement check settles the pairs it was verifying.
    settled: Condvar,
    queue: mpsc::Sender<Vec<u8>>,
    queued_bytes: AtomicUsize,
    tx_bytes_max: u64,
    peers: HashMap<PublicKey, Peer>,
    /// Counters.
    pub stats: PrecheckStats,
}

impl Prechecked {
    /// An empty set for transactions of at most `tx_bytes_max` bytes, with an outbox for
    /// each of `followers` (the other validators), and the receiving end of its
    /// announcement queue, for [`Prechecked::run`].
    pub fn new(
        tx_bytes_max: u64,
        followers: &[PublicKey],
    ) -> (Arc<Prechecked>, mpsc::Receiver<Vec<u8>>) {
        let (queue, rx) = mpsc::channel(ANNOUNCE_QUEUE_MAX);
        let peers = followers
            .iter()
            .map(|k| {
                let peer = Peer {
                    outbox: Mutex::new(Outbox::default()),
                    wake: Notify::new(),
                };
                (*k, peer)
            })
            .collect();
        let p = Prechecked {
            seen: Mutex::new(Seen::default()),
            settled: Condvar::new(),
            queue,
            queued_bytes: AtomicUsize::new(0),
            tx_bytes_max,
            peers,
            stats: PrecheckStats::default(),
        };
        (Arc::new(p), rx)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("prechecked lock poisoned")
    }

    #[cfg(test)]
    /// Whether this node has verified `signature` over `id`.
    pub fn contains(&self, id: &ordo_ledger::TxId, signature: &ordo_crypto::Signature) -> bool {
        self.seen().by_id.get(id) == Some(signature)
    }

    #[cfg(test)]
    /// Pairs remembered now.
    pub fn len(&self) -> usize {
        self.seen().by_id.len()
    }

    #[cfg(test)]
    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
