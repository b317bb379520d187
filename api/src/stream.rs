//! `GET /v1/blocks/stream`: committed blocks as they are applied, as server-sent events of
//! [`crate::BlockJson`], or (with `Accept: application/octet-stream`) as binary frames of
//! each block's transaction ids.
//!
//! A binary frame is the block's height (`u64`, little-endian), its 32-byte hash, the
//! number of transactions (`u32`, little-endian), then each transaction id (32 bytes), in
//! block order.

use ordo_crypto::Hash;
use ordo_ledger::TxId;
use serde::{Deserialize, Serialize};

/// The route.
pub const PATH: &str = "/v1/blocks/stream";

/// Most block streams a node serves at once.
pub const STREAMS_MAX: usize = 256;

/// Bytes of a binary frame before its ids: height, hash, number of ids.
pub const STREAM_FRAME_HEAD: usize = 8 + 32 + 4;

/// Most transaction ids a decoded frame may claim: far above any block's limit
/// (`ordo_ledger::BLOCK_TXS_LIMIT`), and a bound on what a bad stream can make a decoder
/// buffer.
pub const FRAME_IDS_MAX: usize = 1 << 20;
const _: () = assert!(ordo_ledger::BLOCK_TXS_LIMIT as usize <= FRAME_IDS_MAX);

/// The query string of a stream request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamQuery {
    /// The first height to send (default: the next block).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Whole transactions in each event instead of only their ids (JSON only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txs: Option<bool>,
}

/// One block of the binary stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFrame {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash,
    /// Its transaction ids, in block order.
    pub ids: Vec<TxId>,
}

/// The binary frame of one block.
pub fn encode_frame(height: u64, hash: &Hash, ids: &[TxId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STREAM_FRAME_HEAD + 32 * ids.len());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(hash.as_bytes());
    // A block holds far fewer than u32::MAX transactions (FRAME_IDS_MAX).
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// Why a binary stream cannot be read on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A frame claims more ids than any block holds.
    #[error("a block stream frame claims {0} transactions")]
    TooManyIds(usize),
}

/// Splits the binary stream into frames as its bytes arrive, in chunks of any size.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
}

impl StreamDecoder {
    /// Takes the next bytes of the stream; returns every frame they complete.
    ///
    /// # Errors
    /// When a frame claims more than [`FRAME_IDS_MAX`] ids: the stream is not ordo's.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<StreamFrame>, StreamError> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut at = 0;
        while let Some(head) = self.buf.get(at..at + STREAM_FRAME_HEAD) {
            let n = u32::from_le_bytes(head[40..44].try_into().expect("4 bytes")) as usize;
            if n > FRAME_IDS_MAX {
                return Err(StreamError::TooManyIds(n));
            }
            let end = at + STREAM_FRAME_HEAD + 32 * n;
            let Some(body) = self.buf.get(at + STREAM_FRAME_HEAD..end) else {
                break;
            };
            frames.push(StreamFrame {
                height: u64::from_le_bytes(head[..8].try_into().expect("8 bytes")),
                hash: Hash(head[8..40].try_into().expect("32 bytes")),
                ids: body
                    .chunks_exact(32)
                    .map(|id| Hash(id.try_into().expect("32 bytes")))
                    .collect(),
            });
            at = end;
        }
        self.buf.drain(..at);
        Ok(frames)
    }

    /// Bytes of an incomplete frame held back.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_laid_out_as_documented() {
        let frame = encode_frame(0x0102, &Hash([9; 32]), &[Hash([1; 32]), Hash([2; 32])]);
        assert_eq!(frame.len(), STREAM_FRAME_HEAD + 64);
        assert_eq!(frame[..8], [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame[8..40], [9; 32]);
        assert_eq!(frame[40..44], [2, 0, 0, 0]);
        assert_eq!(frame[44..76], [1; 32]);
        assert_eq!(frame[76..], [2; 32]);
    }

    #[test]
    fn frames_split_across_chunks_decode_the_same() {
        let id = |n: u8| Hash([n; 32]);
        let mut bytes = encode_frame(7, &id(0), &[id(1), id(2)]);
        bytes.extend(encode_frame(8, &id(3), &[]));
        bytes.extend(encode_frame(9, &id(4), &[id(5)]));
        let want = vec![
            StreamFrame {
                height: 7,
                hash: id(0),
                ids: vec![id(1), id(2)],
            },
            StreamFrame {
                height: 8,
                hash: id(3),
                ids: vec![],
            },
            StreamFrame {
                height: 9,
                hash: id(4),
                ids: vec![id(5)],
            },
        ];
        for cut in 0..=bytes.len() {
            let mut decoder = StreamDecoder::default();
            let mut seen = decoder.feed(&bytes[..cut]).expect("well-formed");
            seen.extend(decoder.feed(&bytes[cut..]).expect("well-formed"));
            assert_eq!(seen, want, "cut at {cut}");
            assert_eq!(decoder.buffered(), 0);
        }
        let mut bad = encode_frame(1, &id(0), &[]);
        bad[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(StreamDecoder::default().feed(&bad).is_err());
    }
}
