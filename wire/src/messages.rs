//! The messages besides Raft's: forwarded transactions and the leader's verdicts, block
//! fetches, attestations' answers and clock readings.

use ordo_ledger::TxError;
use serde::{Deserialize, Serialize};

/// Most transactions in one forwarded batch (`Kind::Transactions`); a leader refuses a
/// larger one.
pub const FORWARD_TXS_MAX: usize = 4096;

/// Most attestations in one `Kind::Attest` request; a leader refuses more.
pub const ATTESTATIONS_PER_FRAME_MAX: usize = 256;

/// The answer to a `Kind::Attest` request (whose body is a `Vec<ordo_ledger::Attestation>`,
/// each signed by the sender).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestReply {
    /// Heights of the attestations the leader could not take yet (it has not applied
    /// those blocks and holds as many early ones as it keeps): send them again later.
    pub later: Vec<u64>,
}

/// The answer to a `Kind::Clock` request (whose body is empty): the answering validator's
/// wall clock as it answered, in milliseconds since the Unix epoch. The asker estimates
/// the offset between their clocks from it and the round trip's times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub unix_ms: u64,
}

/// A block fetch (`Kind::Blocks` request): up to `max` blocks from height `from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlocksRequest {
    /// The first height wanted.
    pub from: u64,
    /// Most blocks wanted (the server may send fewer).
    pub max: u64,
}

/// What a leader answers for each forwarded transaction.
///
/// On the wire (bincode) a variant is its position in this list: append new variants at
/// the end, never reorder (the crate's tests pin each one's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Admitted, its signature checked by the leader.
    Accepted,
    /// The leader already holds a transaction with this id (maybe under another
    /// signature encoding: the id does not cover the signature).
    AlreadyPending,
    /// Already in the chain at `height`.
    AlreadyCommitted {
        /// Where.
        height: u64,
    },
    /// The leader's mempool is full.
    Busy,
    /// Refused for a reason the follower has no variant for (the message says which).
    Refused(String),
    /// The node asked does not lead.
    NotLeader,
    /// It breaks a chain rule.
    Invalid(TxError),
}

impl Verdict {
    /// Whether the leader is done with the transaction for good: a follower stops
    /// re-sending it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Verdict::AlreadyCommitted { .. } | Verdict::Refused(_) | Verdict::Invalid(_)
        )
    }
}
