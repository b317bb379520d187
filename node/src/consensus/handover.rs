//! Handing the leader's office to a follower: what a leader that steps aside for slowness
//! (`pace`) and a leader that is stopping share, and the stop itself.
//!
//! A follower can only be elected with every entry the leader has, so the leader first
//! proposes nothing (`Pace::draining`) until a caught-up follower holds its last entry,
//! then asks openraft to transfer the office (`transfer_leader`, sent over ordo's Raft
//! network): every voter stops honouring the old lease, and the named node stands for
//! election at once.

use std::time::{Duration, Instant};

use super::{OrdoRaft, Pace, Role, status};

/// The longest a stopping leader waits for a follower to hold its whole log.
const STOP_DRAIN_MAX: Duration = Duration::from_secs(2);
/// How often a stopping leader looks at its followers' logs and for the new leader.
const POLL: Duration = Duration::from_millis(10);
/// A follower's acknowledgement time counts when it was heard this recently.
pub(super) const FRESH: Duration = Duration::from_secs(3);

/// Why a stopping node did not hand its office over.
#[derive(Debug, thiserror::Error)]
pub enum NoHandOver {
    /// It was not leading.
    #[error("this node was not leading")]
    NotLeading,
    /// It has no followers (a cluster of one).
    #[error("this node has no followers")]
    Alone,
    /// No follower held its whole log in time.
    #[error("no follower held this node's whole log within {STOP_DRAIN_MAX:?}")]
    NoneCaughtUp,
    /// openraft refused the transfer.
    #[error("the transfer failed: {0}")]
    Refused(String),
    /// The follower it named went away (it stops too, perhaps).
    #[error("node {0} is no longer connected")]
    Gone(u64),
    /// The follower it named was not elected in time.
    #[error("node {0} was not elected within {1:?}")]
    NotElected(u64, Duration),
}

/// Leading and about to stop: proposes nothing more, waits (at most [`STOP_DRAIN_MAX`])
/// until a caught-up follower it is `connected` to holds this node's last entry — the
/// fastest to acknowledge when several do — and hands it the office, then waits up to
/// `elected_within` for it to lead (while it stays connected). This node stands for no
/// election meanwhile. Returns the new leader's node id.
///
/// # Errors
/// [`NoHandOver`]: the stop then goes on without one, and the cluster elects a leader
/// once the election timeout runs out, as after a crash.
pub async fn hand_over_to_stop(
    raft: &OrdoRaft,
    pace: &Pace,
    elected_within: Duration,
    connected: impl Fn(u64) -> bool,
) -> Result<u64, NoHandOver> {
    if status(raft).role != Role::Leader {
        return Err(NoHandOver::NotLeading);
    }
    if !has_followers(raft) {
        return Err(NoHandOver::Alone);
    }
    raft.runtime_config().elect(false);
    pace.set_draining(true);
    let start = Instant::now();
    let target = loop {
        if status(raft).role != Role::Leader {
            return Err(NoHandOver::NotLeading);
        }
        let mut ready = holding_whole_log(raft);
        ready.retain(|id| connected(*id));
        let fastest = pace
            .fastest(&ready, FRESH, Instant::now())
            .map(|(id, _)| id);
        if let Some(id) = fastest.or_else(|| ready.first().copied()) {
            break id;
        }
        if start.elapsed() >= STOP_DRAIN_MAX {
            return Err(NoHandOver::NoneCaughtUp);
        }
        tokio::time::sleep(POLL).await;
    };
    raft.trigger()
        .transfer_leader(target)
        .await
        .map_err(|e| NoHandOver::Refused(e.to_string()))?;
    let asked = Instant::now();
    while asked.elapsed() < elected_within {
        if status(raft).leader == Some(target) {
            return Ok(target);
        }
        if !connected(target) {
            return Err(NoHandOver::Gone(target));
        }
        tokio::time::sleep(POLL).await;
    }
    Err(NoHandOver::NotElected(target, elected_within))
}

/// Leading: the index of this node's last log entry, and of the last one `follower`
/// holds.
pub(super) fn log_of(raft: &OrdoRaft, follower: u64) -> (Option<u64>, Option<u64>) {
    use openraft::async_runtime::WatchReceiver;
    let m = raft.metrics().borrow_watched().clone();
    let matched = m
        .replication
        .and_then(|r| r.get(&follower).cloned().flatten())
        .map(|l| l.index);
    (m.last_log_index, matched)
}

/// Leading: the followers whose logs hold every committed entry.
pub(super) fn caught_up_followers(raft: &OrdoRaft) -> Vec<u64> {
    followers_holding(raft, |m| m.local_committed.map(|l| l.index))
}

/// Leading: the followers whose logs hold this node's last entry.
fn holding_whole_log(raft: &OrdoRaft) -> Vec<u64> {
    followers_holding(raft, |m| m.last_log_index)
}

/// Leading: whether the cluster has other voters or learners.
fn has_followers(raft: &OrdoRaft) -> bool {
    use openraft::async_runtime::WatchReceiver;
    let m = raft.metrics().borrow_watched().clone();
    m.replication
        .is_some_and(|r| r.keys().any(|id| *id != m.id))
}

fn followers_holding(
    raft: &OrdoRaft,
    through: impl Fn(&openraft::metrics::RaftMetrics<super::TypeConfig>) -> Option<u64>,
) -> Vec<u64> {
    use openraft::async_runtime::WatchReceiver;
    let m = raft.metrics().borrow_watched().clone();
    let Some(index) = through(&m) else {
        return Vec::new();
    };
    let Some(replication) = m.replication else {
        return Vec::new();
    };
    replication
        .into_iter()
        .filter(|(id, matched)| *id != m.id && matched.as_ref().is_some_and(|l| l.index >= index))
        .map(|(id, _)| id)
        .collect()
}
