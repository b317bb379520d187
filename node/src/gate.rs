//! The door a client submission passes before its body is read: a few turns to be
//! admitted at once, a short queue for them, and a follower's pause after its leader
//! answered "full" (`docs/design/admission.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most client submissions being admitted at once on one node; more wait in a queue.
pub const ADMISSIONS_MAX: usize = 4;
/// Most client submissions waiting for a turn to be admitted; more get 503 busy.
pub const ADMISSION_QUEUE_MAX: usize = 256;
/// Longest a client submission waits for a turn before it gets 503 busy.
pub const ADMISSION_WAIT_MAX: Duration = Duration::from_secs(2);
/// After the leader refuses forwarded transactions because its mempool is full, a follower
/// refuses client submissions at the door for this long (what a client told 503 waits
/// anyway), instead of forwarding batches the leader would refuse too.
pub const LEADER_BUSY_PAUSE: Duration = Duration::from_secs(1);

/// The door: turns to admit, the queue for them, and the follower's pause after its
/// leader answered "full".
pub(crate) struct Gate {
    /// Admissions in progress (each holds the mempool for its checks): bounded, so that a
    /// flood of submissions is refused at the door instead of queueing on the mempool.
    turns: Arc<Semaphore>,
    /// Client submissions waiting for a turn.
    queued: AtomicUsize,
    /// Which leader answered a forward with a full mempool, and until when this follower
    /// refuses client submissions at the door while that node leads.
    leader_busy_until: Mutex<Option<(u64, Instant)>>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            turns: Arc::new(Semaphore::new(ADMISSIONS_MAX)),
            queued: AtomicUsize::new(0),
            leader_busy_until: Mutex::new(None),
        }
    }
}

impl Gate {
    /// Records that `leader` refused a forward with a full mempool just now.
    pub(crate) fn leader_is_busy(&self, leader: u64) {
        *self.leader_busy_until.lock().expect("busy lock poisoned") =
            Some((leader, Instant::now() + LEADER_BUSY_PAUSE));
    }

    /// The leader that refused a forward with a full mempool less than
    /// [`LEADER_BUSY_PAUSE`] ago, if one did.
    pub(crate) fn busy_leader(&self) -> Option<u64> {
        let busy = *self.leader_busy_until.lock().expect("busy lock poisoned");
        busy.filter(|(_, until)| Instant::now() < *until)
            .map(|(leader, _)| leader)
    }

    /// A turn, waiting for one in the queue if none is free (bounded in length and time).
    pub(crate) async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(turn) = self.turns.clone().try_acquire_owned() {
            return Some(turn);
        }
        // Counted out again however the wait ends, the client's going away included.
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _queued = Queued(&self.queued);
        if self.queued.fetch_add(1, Ordering::Relaxed) >= ADMISSION_QUEUE_MAX {
            return None;
        }
        tokio::time::timeout(ADMISSION_WAIT_MAX, self.turns.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// A turn for transactions a follower forwarded (they wait as long as it takes: the
    /// follower's own client is waiting on the answer, and its request times out).
    pub(crate) async fn forwarded_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.turns.clone().acquire_owned().await.ok()
    }
}
