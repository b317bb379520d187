//! The types of ordo's HTTP API (`docs/api.md`), in one place: the validator's HTTP layer
//! serializes them and every client deserializes them, so the two cannot drift.
//!
//! * [`submit`]: `POST /v1/transactions`, JSON or binary, and its answers.
//! * [`tx`]: `GET /v1/transactions/{id}`: a transaction's status, with its inclusion proof.
//! * [`block`]: `GET /v1/blocks/{height | hash | latest}`.
//! * [`stream`]: `GET /v1/blocks/stream`, and the binary block stream's frames.
//! * [`status`]: `GET /v1/status` and `GET /health`.
//! * [`error`]: the error answer and its stable [`ErrorCode`]s.
//! * [`metrics`]: the names of the metrics on `GET /metrics`.
//!
//! Integers that can exceed 2^53 (nonces, node ids) travel as decimal strings, so that a
//! JavaScript client keeps them exact; every other integer is a JSON number.
//!
//! This crate holds data and codecs only: no HTTP stack, no I/O. `ordo-client` is the
//! client over it.
//!
//! ```
//! use ordo_api::{ErrorAnswer, ErrorCode};
//!
//! let answer: ErrorAnswer =
//!     serde_json::from_str(r#"{"error": {"code": "no_leader", "message": "retry"}}"#).unwrap();
//! assert_eq!(answer.error.code, ErrorCode::NoLeader);
//! assert_eq!(answer.error.code.status(), 503);
//! assert!(answer.error.code.is_retryable());
//! ```

pub mod block;
pub mod error;
pub mod metrics;
pub mod status;
pub mod stream;
pub mod submit;
pub mod tx;
pub mod u64_string;

pub use block::{BlockId, BlockJson, BlockQuery, BlockTx};
pub use error::{ErrorAnswer, ErrorBody, ErrorCode, RETRY_AFTER_SECS};
pub use status::{Health, MempoolInfo, NodeInfo, PeerInfo, RaftInfo, Role, Status, TipInfo};
pub use stream::{STREAM_FRAME_HEAD, StreamDecoder, StreamError, StreamFrame, StreamQuery};
pub use submit::{
    BinaryFrames, BinaryQuery, Committed, Encoding, FramingError, SubmitRequest, SubmitResults,
    TxResult, TxState,
};
pub use tx::{CommittedTx, InclusionError, ReceiptStatus, SignedTxJson, TxJson, TxStatus};

/// The API's version prefix: every route but `/health` and `/metrics` is under it.
pub const API_PREFIX: &str = "/v1";

/// Media type of JSON requests and answers.
pub const JSON: &str = "application/json";

/// Media type of binary submissions and of the binary block stream.
pub const BINARY: &str = "application/octet-stream";

/// Largest request body a node reads.
pub const BODY_BYTES_MAX: usize = 32 << 20;
