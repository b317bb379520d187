//! The node's errors, in two kinds: [`Fatal`], which ends the node (its consensus can order
//! nothing more: an operator must look), and [`SubmitError`], which refuses one request and
//! leaves the node as it was.

use crate::mempool::AdmitError;

/// Why the node can no longer order anything. `/health` answers `consensus_stopped` with
/// it, `ordo node run` logs it, shuts down and exits with status 1 (for
/// [`Fatal::Salvage`], starts itself afresh instead), and a supervisor should restart the
/// node once the cause is fixed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fatal {
    /// Raft stopped on a storage error: a full disk, a failing device, state it cannot
    /// read. Nothing acknowledged is lost; fix the disk and restart.
    #[error("consensus stopped on a storage error: {0}")]
    Storage(String),
    /// Raft's core panicked: a broken invariant (a bug; the log says where).
    #[error("consensus stopped: its core panicked (see the log)")]
    Panicked,
    /// Raft stopped while the node still ran, without saying why.
    #[error("consensus stopped")]
    Stopped,
    /// A table file of the ledger is damaged: every read that touches it fails, and a
    /// compaction that reads it would stop the database. Only reopening sets it aside (a
    /// salvage, requested on disk); `ordo node run` restarts itself for it, and the blocks
    /// the file held come from the peers.
    #[error("a table file of the ledger is damaged ({0}); restarting to set it aside")]
    Salvage(String),
}

/// Why a submission was not accepted. Each maps to one API error code
/// (`crate::http::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Refused by admission (invalid, duplicate, or the pool is full).
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// The leader refused it for a reason this node did not see.
    #[error("refused by the leader: {0}")]
    Refused(String),
    /// No leader is known: an election is under way or a majority is unreachable.
    #[error("no leader is known; retry later")]
    NoLeader,
    /// The leader's mempool is full.
    #[error("the leader's mempool is full; retry later")]
    LeaderBusy,
    /// The leader could not be reached.
    #[error("the leader is unreachable: {0}")]
    Unavailable(String),
}
