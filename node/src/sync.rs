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

use crate::consensus::{
    BlockEntry, BlockSource, FETCH_BLOCKS_MAX, decode_internal, encode_internal,
};
use crate::network::{FRAME_BYTES_MAX, Frame, InboundRequest, Kind, Network};

/// Most block bytes in one answer, leaving room for framing.
const ANSWER_BYTES_MAX: u64 = (FRAME_BYTES_MAX / 2) as u64;

#[derive(Serialize, Deserialize)]
struct BlocksRequest {
    from: u64,
    max: u64,
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
    fn fetch(&self, from: u64, max: u64) -> BoxFuture<'_, Result<Vec<Block>, String>> {
        Box::pin(async move {
            if self.peers.is_empty() {
                return Err("no peers to fetch blocks from".into());
            }
            let peer = self.peers[self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len()];
            let body = encode(&BlocksRequest {
                from,
                max: max.min(FETCH_BLOCKS_MAX),
            })?;
            let answer = self
                .network
                .request(
                    &peer,
                    Frame {
                        kind: Kind::Blocks,
                        body,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            if answer.kind != Kind::Blocks {
                return Err(format!(
                    "peer {peer} answered a block request with {:?}",
                    answer.kind
                ));
            }
            let blocks: Vec<BlockEntry> = decode(&answer.body)?;
            if blocks.len() as u64 > max {
                return Err(format!(
                    "peer {peer} sent {} blocks, {max} were asked for",
                    blocks.len()
                ));
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
    let answer =
        decode::<BlocksRequest>(&req.frame.body).and_then(|r| read_blocks(store, r.from, r.max));
    let frame = match answer.and_then(|blocks| encode(&blocks)) {
        Ok(body) => Frame {
            kind: Kind::Blocks,
            body,
        },
        Err(e) => Frame {
            kind: Kind::Error,
            body: e.into_bytes(),
        },
    };
    req.respond(frame);
}

fn read_blocks(store: &Store, from: u64, max: u64) -> Result<Vec<BlockEntry>, String> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for height in from..from.saturating_add(max.min(FETCH_BLOCKS_MAX)) {
        let Some(block) = store.block(height).map_err(|e| e.to_string())? else {
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

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    encode_internal(value).map_err(|e| e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    decode_internal(bytes, "block sync message").map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
