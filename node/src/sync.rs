//! Block sync: serving committed blocks to peers, and fetching them from peers for a node
//! that fell behind the Raft log's purge point (the state machine's [`BlockSource`]).
//!
//! Fetched blocks are not trusted here: the state machine verifies each against its parent
//! before appending it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use ordo_crypto::PublicKey;
use ordo_ledger::{Block, Store};
use serde::{Deserialize, Serialize};

use crate::consensus::{BlockEntry, BlockSource, FETCH_BLOCKS_MAX, FetchError};
use crate::network::{FRAME_BYTES_MAX, Frame, InboundRequest, Kind, Network};
use crate::wire::{decode_internal, encode_internal};

/// Most block bytes in one answer, leaving room for framing.
const ANSWER_BYTES_MAX: u64 = (FRAME_BYTES_MAX / 2) as u64;

/// A block fetch (`Kind::Blocks` request): up to `max` blocks from height `from`.
#[derive(Serialize, Deserialize)]
pub(crate) struct BlocksRequest {
    pub(crate) from: u64,
    pub(crate) max: u64,
}

/// Fetches blocks from the other validators, one peer per attempt, in turn.
pub struct PeerBlockSource {
    network: Network,
    peers: Vec<PublicKey>,
    next: AtomicUsize,
}

impl PeerBlockSource {
    /// A source asking `peers` (the other validators) through `network`.
    pub fn new(network: Network, peers: Vec<PublicKey>) -> PeerBlockSource {
        PeerBlockSource {
            network,
            peers,
            next: AtomicUsize::new(0),
        }
    }
}

impl BlockSource for PeerBlockSource {
    fn fetch(&self, from: u64, max: u64) -> BoxFuture<'_, Result<Vec<Block>, FetchError>> {
        Box::pin(async move {
            if self.peers.is_empty() {
                return Err(FetchError::NoPeers);
            }
            let peer = self.peers[self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len()];
            let bad = |what: String| FetchError::BadAnswer { peer, what };
            let request = BlocksRequest {
                from,
                max: max.min(FETCH_BLOCKS_MAX),
            };
            // A two-integer message always encodes.
            let body = encode_internal(&request).expect("a block request encodes");
            let frame = Frame {
                kind: Kind::Blocks,
                body,
            };
            let answer = self.network.request(&peer, frame).await?;
            if answer.kind != Kind::Blocks {
                return Err(bad(format!(
                    "{:?}: {}",
                    answer.kind,
                    String::from_utf8_lossy(&answer.body)
                )));
            }
            let blocks: Vec<BlockEntry> =
                decode_internal(&answer.body, "blocks").map_err(|e| bad(e.to_string()))?;
            if blocks.len() as u64 > max {
                return Err(bad(format!(
                    "{} blocks, {max} were asked for",
                    blocks.len()
                )));
            }
            Ok(blocks
                .into_iter()
                .map(|b| Arc::unwrap_or_clone(b.block))
                .collect())
        })
    }
}

/// Answers one block request from `store`: consecutive committed blocks from the asked
/// height, bounded by count and bytes.
pub fn serve_blocks(store: &Store, req: InboundRequest) {
    let answer = decode_internal::<BlocksRequest>(&req.frame.body, "block request")
        .map_err(ServeError::Decode)
        .and_then(|r| read_blocks(store, r.from, r.max))
        .and_then(|blocks| encode_internal(&blocks).map_err(ServeError::Decode));
    let frame = match answer {
        Ok(body) => Frame {
            kind: Kind::Blocks,
            body,
        },
        Err(e) => Frame {
            kind: Kind::Error,
            body: e.to_string().into_bytes(),
        },
    };
    req.respond(frame);
}

/// Why a block request could not be answered.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    /// The request did not decode (or the answer did not encode).
    #[error(transparent)]
    Decode(std::io::Error),
    /// The ledger could not be read.
    #[error(transparent)]
    Store(#[from] ordo_ledger::StoreError),
}

fn read_blocks(store: &Store, from: u64, max: u64) -> Result<Vec<BlockEntry>, ServeError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for height in from..from.saturating_add(max.min(FETCH_BLOCKS_MAX)) {
        let Some(block) = store.block(height)? else {
            break;
        };
        bytes += block.encoded_len();
        if bytes > ANSWER_BYTES_MAX && !out.is_empty() {
            break;
        }
        out.push(BlockEntry::new(Arc::new(block)));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
