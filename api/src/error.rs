//! The error answer: `{"error": {"code": "...", "message": "..."}}`, with a stable code.

use serde::{Deserialize, Serialize};

/// Seconds a node asks a client to wait (`Retry-After`) before retrying after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The stable error codes (`docs/api.md`). The HTTP status of each is fixed
/// ([`ErrorCode::status`]); the message that comes with it is for people.
///
/// Serialized in `snake_case`. A code this version does not know (from a newer node) reads
/// as [`ErrorCode::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: not JSON, an unknown field, an empty batch, not hex or base64, not a
    /// transaction, a bad id, an unsupported `Content-Type`.
    Malformed,
    /// 400: the sender's signature does not verify (ZIP-215).
    BadSignature,
    /// 400: the transaction names another chain.
    WrongChain,
    /// 400: `expires_at` is below the next block's height.
    Expired,
    /// 400: `expires_at` is beyond the chain's `tx_lifetime_blocks` window.
    ExpiryTooFar,
    /// 400: the leader refused the transaction (the message says why).
    Refused,
    /// 403: the sender is not a client in the genesis.
    UnknownSender,
    /// 404: no such transaction, block or route on this node.
    NotFound,
    /// 405: the route exists, but not with this method.
    MethodNotAllowed,
    /// 409: the same transaction is already waiting for a block.
    AlreadyPending,
    /// 409: the same transaction is already in the chain (a replay).
    AlreadyCommitted,
    /// 413: the body, the batch or a transaction is over its limit.
    TooLarge,
    /// 503: no leader is known (an election is under way).
    NoLeader,
    /// 503: the leader could not be reached.
    Unavailable,
    /// 503: the node, its mempool, its waiter or stream table, or its leader is full.
    Busy,
    /// 503: the node is stopping.
    ShuttingDown,
    /// 503 (`/health`): the node's consensus has stopped on a fatal error.
    ConsensusStopped,
    /// 503: this node's copy of what was asked for is damaged and being repaired from its
    /// peers (`/health` answers it while any damage is outstanding); ask another node.
    StorageDamaged,
    /// 503 (`/ready`): the node is alive but should not be sent clients yet (no leader
    /// known, its ledger behind what is committed, or its clock off); the message says why.
    NotReady,
    /// 500: the node could not read its own database.
    Internal,
    /// A code this version of the API does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a node sends, in the order `docs/api.md` lists them.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::Malformed,
        ErrorCode::BadSignature,
        ErrorCode::WrongChain,
        ErrorCode::Expired,
        ErrorCode::ExpiryTooFar,
        ErrorCode::Refused,
        ErrorCode::UnknownSender,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::AlreadyPending,
        ErrorCode::AlreadyCommitted,
        ErrorCode::TooLarge,
        ErrorCode::NoLeader,
        ErrorCode::Unavailable,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::ConsensusStopped,
        ErrorCode::StorageDamaged,
        ErrorCode::NotReady,
        ErrorCode::Internal,
    ];

    /// The HTTP status a node answers with this code.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::Malformed
            | ErrorCode::BadSignature
            | ErrorCode::WrongChain
            | ErrorCode::Expired
            | ErrorCode::ExpiryTooFar
            | ErrorCode::Refused => 400,
            ErrorCode::UnknownSender => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::AlreadyPending | ErrorCode::AlreadyCommitted => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::NoLeader
            | ErrorCode::Unavailable
            | ErrorCode::Busy
            | ErrorCode::ShuttingDown
            | ErrorCode::ConsensusStopped
            | ErrorCode::StorageDamaged
            | ErrorCode::NotReady => 503,
            ErrorCode::Internal | ErrorCode::Unknown => 500,
        }
    }

    /// Whether the same request may succeed later unchanged (every 503): the node or its
    /// cluster was busy, electing, unreachable or restarting. Resubmitting a signed
    /// transaction is always safe: it is pending or committed at most once.
    pub const fn is_retryable(self) -> bool {
        self.status() == 503
    }

    /// Whether the cluster already holds the transaction this answers for: it is pending
    /// or committed, so resubmitting it changes nothing.
    pub const fn is_already_held(self) -> bool {
        matches!(
            self,
            ErrorCode::AlreadyPending | ErrorCode::AlreadyCommitted
        )
    }

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::WrongChain => "wrong_chain",
            ErrorCode::Expired => "expired",
            ErrorCode::ExpiryTooFar => "expiry_too_far",
            ErrorCode::Refused => "refused",
            ErrorCode::UnknownSender => "unknown_sender",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::AlreadyPending => "already_pending",
            ErrorCode::AlreadyCommitted => "already_committed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::ConsensusStopped => "consensus_stopped",
            ErrorCode::StorageDamaged => "storage_damaged",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong: a stable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, and what to do about it.
    pub message: String,
}

impl ErrorBody {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// The error.
    pub error: ErrorBody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_unknown_codes_as_unknown() {
        for code in ErrorCode::ALL {
            let text = serde_json::to_string(&code).expect("encodes");
            assert_eq!(text, format!("\"{}\"", code.as_str()));
            assert_eq!(
                serde_json::from_str::<ErrorCode>(&text).expect("decodes"),
                code
            );
        }
        let later: ErrorCode = serde_json::from_str("\"rate_limited\"").expect("decodes");
        assert_eq!(later, ErrorCode::Unknown);
    }

    #[test]
    fn retryable_codes_are_the_503s() {
        let retryable: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_retryable())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            retryable,
            [
                "no_leader",
                "unavailable",
                "busy",
                "shutting_down",
                "consensus_stopped",
                "storage_damaged",
                "not_ready"
            ]
        );
    }
}
