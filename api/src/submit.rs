//! `POST /v1/transactions`: one transaction or a batch, as JSON or binary, and the answers.

use ordo_crypto::Hash;
use ordo_ledger::TxId;
use serde::{Deserialize, Serialize};

use crate::error::ErrorBody;

/// The route.
pub const PATH: &str = "/v1/transactions";
/// Most transactions in one submission.
pub const SUBMIT_TXS_MAX: usize = 10_000;
/// How long a submission with `wait` waits for its commit unless it says otherwise.
pub const WAIT_DEFAULT_MS: u64 = 10_000;
/// Longest a submission may wait for its commit; a longer `timeout_ms` is clamped to it.
pub const WAIT_MAX_MS: u64 = 60_000;

/// A JSON submission: exactly one of `transaction` and `transactions`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// One transaction: the answer's HTTP status is this transaction's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// A batch of 1 to [`SUBMIT_TXS_MAX`]: the answer lists one result per transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<Vec<String>>,
    /// How the transactions' canonical bytes are written.
    #[serde(default)]
    pub encoding: Encoding,
    /// Wait until each accepted transaction is committed.
    #[serde(default)]
    pub wait: bool,
    /// How long to wait, in milliseconds ([`WAIT_DEFAULT_MS`]; at most [`WAIT_MAX_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How transactions are written in a JSON submission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase or uppercase hex.
    #[default]
    Hex,
    /// Standard base64, with padding.
    Base64,
}

/// The query string of a binary submission (a JSON one carries these in its body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryQuery {
    /// Wait until each accepted transaction is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// How long to wait, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Where a transaction stands after its submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TxState {
    /// Accepted and waiting for a block (promises nothing yet).
    Pending,
    /// In a block applied to this node's ledger.
    Committed,
}

/// Where a committed transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// Height of its block.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
    /// Hash of its block.
    pub block_hash: Hash,
}

/// One transaction's result: `{"id", "status"}`, with `height`, `index` and `block_hash`
/// once committed, or `{"id", "error"}` (no `id` when its bytes did not decode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxResult {
    /// The transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<TxId>,
    /// Where it stands, when it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TxState>,
    /// Height of its block, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Its position in the block, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Hash of its block, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_hash: Option<Hash>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl TxResult {
    /// Accepted and pending.
    pub fn pending(id: TxId) -> TxResult {
        TxResult {
            id: Some(id),
            status: Some(TxState::Pending),
            ..TxResult::default()
        }
    }

    /// Committed where `at` says.
    pub fn committed(id: TxId, at: Committed) -> TxResult {
        TxResult {
            id: Some(id),
            status: Some(TxState::Committed),
            height: Some(at.height),
            index: Some(at.index),
            block_hash: Some(at.block_hash),
            error: None,
        }
    }

    /// Refused (`id` is `None` when the bytes did not decode).
    pub fn refused(id: Option<TxId>, error: ErrorBody) -> TxResult {
        TxResult {
            id,
            error: Some(error),
            ..TxResult::default()
        }
    }

    /// Where it was committed, if the answer says so.
    pub fn committed_at(&self) -> Option<Committed> {
        match (self.status, self.height, self.index, self.block_hash) {
            (Some(TxState::Committed), Some(height), Some(index), Some(block_hash)) => {
                Some(Committed {
                    height,
                    index,
                    block_hash,
                })
            }
            _ => None,
        }
    }
}

/// A batch submission's answer: one result per transaction, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResults {
    /// The results.
    pub results: Vec<TxResult>,
}

/// Appends one transaction's frame to a binary submission body: its length as a
/// little-endian `u32`, then its canonical bytes.
///
/// # Panics
/// If `tx` is 4 GiB or longer (no transaction comes near: `ordo_ledger::TX_BYTES_LIMIT`).
pub fn push_binary_frame(body: &mut Vec<u8>, tx: &[u8]) {
    let len = u32::try_from(tx.len()).expect("a transaction is under 4 GiB");
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(tx);
}

/// A binary submission body holding `txs` (canonical bytes each).
pub fn binary_body<'a>(txs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = Vec::new();
    for tx in txs {
        push_binary_frame(&mut body, tx);
    }
    body
}

/// Why a binary submission body does not split into frames.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The body ends inside a length prefix.
    #[error("binary submission ends inside a length prefix")]
    TruncatedLength,
    /// A frame declares more bytes than remain.
    #[error("binary submission frame {frame} declares {declared} bytes, {remaining} remain")]
    Overrun {
        /// Which frame, from 0.
        frame: usize,
        /// The length it declares.
        declared: usize,
        /// The bytes left in the body.
        remaining: usize,
    },
}

/// The frames of a binary submission body, in order: each transaction's bytes, or why the
/// body does not split (after which the iterator ends).
///
/// ```
/// use ordo_api::submit::{binary_body, BinaryFrames};
///
/// let body = binary_body([&b"one"[..], b"two"]);
/// let frames: Vec<&[u8]> = BinaryFrames::new(&body).collect::<Result<_, _>>().unwrap();
/// assert_eq!(frames, [&b"one"[..], b"two"]);
/// ```
pub struct BinaryFrames<'a> {
    rest: &'a [u8],
    frame: usize,
}

impl<'a> BinaryFrames<'a> {
    /// The frames of `body`.
    pub fn new(body: &'a [u8]) -> BinaryFrames<'a> {
        BinaryFrames {
            rest: body,
            frame: 0,
        }
    }
}

impl<'a> Iterator for BinaryFrames<'a> {
    type Item = Result<&'a [u8], FramingError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, tail)) = self.rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return Some(Err(FramingError::TruncatedLength));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((frame, tail)) = tail.split_at_checked(len) else {
            let remaining = tail.len();
            self.rest = &[];
            return Some(Err(FramingError::Overrun {
                frame: self.frame,
                declared: len,
                remaining,
            }));
        };
        self.rest = tail;
        self.frame += 1;
        Some(Ok(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn results_read_back_with_and_without_their_commit() {
        let id = Hash([7; 32]);
        let at = Committed {
            height: 9,
            index: 2,
            block_hash: Hash([1; 32]),
        };
        for r in [
            TxResult::pending(id),
            TxResult::committed(id, at),
            TxResult::refused(None, ErrorBody::new(ErrorCode::Malformed, "not hex")),
        ] {
            let text = serde_json::to_string(&r).expect("encodes");
            assert_eq!(serde_json::from_str::<TxResult>(&text).expect("decodes"), r);
        }
        assert_eq!(TxResult::committed(id, at).committed_at(), Some(at));
        assert_eq!(TxResult::pending(id).committed_at(), None);
        let text = serde_json::to_string(&TxResult::committed(id, at)).expect("encodes");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["status"], "committed");
        assert_eq!(v["height"], 9);
        assert!(v.get("error").is_none(), "{v}");
    }

    #[test]
    fn binary_bodies_split_back_and_broken_ones_say_why() {
        let txs: [&[u8]; 3] = [&[1, 2, 3], &[], &[0xff; 300]];
        let body = binary_body(txs);
        let back: Vec<&[u8]> = BinaryFrames::new(&body)
            .collect::<Result<_, _>>()
            .expect("splits");
        assert_eq!(back, txs);
        assert_eq!(BinaryFrames::new(&[]).count(), 0);
        let mut cut = body.clone();
        cut.pop();
        let last = BinaryFrames::new(&cut).last().expect("frames");
        assert_eq!(
            last,
            Err(FramingError::Overrun {
                frame: 2,
                declared: 300,
                remaining: 299
            })
        );
        assert_eq!(
            BinaryFrames::new(&[1, 0]).collect::<Vec<_>>(),
            [Err(FramingError::TruncatedLength)]
        );
    }
}
