//! Block sync: serving committed blocks to peers, and fetching them from peers for a node
//! that fell behind the Raft log's purge point (the state machine's [`BlockSource`]).
//!
//! Fetched blocks are not trusted here: the state machine verifies each against its parent
//! before appending it. A fetch does not wait on one peer that does not answer: it asks the
//! next as well after a short while (`docs/design/replication.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use ordo_crypto::PublicKey;
use ordo_ledger::{Block, Store};

use crate::consensus::{BlockEntry, BlockSource, FETCH_BLOCKS_MAX, FetchError};
use crate::network::{FRAME_BYTES_MAX, Frame, InboundRequest, Kind, Network};
use ordo_wire::{BlocksRequest, decode_internal, encode_internal};

/// Most block bytes in one answer, leaving room for framing.
const ANSWER_BYTES_MAX: u64 = (FRAME_BYTES_MAX / 2) as u64;

/// How long a fetch waits for one peer's answer before it asks the next one too: a peer
/// that is frozen or far away costs this much, not the network's request timeout.
const HEDGE_AFTER: Duration = Duration::from_millis(500);

/// Fetches blocks from the other validators: first from the peer that answered last (in
/// practice the leader, which holds every committed block), else in turn; when a peer has
/// not answered within [`HEDGE_AFTER`], or answers with an error or nothing, the next one
/// is asked as well, and the first answer with blocks wins.
pub struct PeerBlockSource {
    network: Network,
    peers: Vec<PublicKey>,
    next: AtomicUsize,
    /// The peer whose answer was used last.
    last_good: Mutex<Option<PublicKey>>,
}

impl PeerBlockSource {
    /// A source asking `peers` (the other validators) through `network`.
    pub fn new(network: Network, peers: Vec<PublicKey>) -> PeerBlockSource {
        PeerBlockSource {
            network,
            peers,
            next: AtomicUsize::new(0),
            last_good: Mutex::new(None),
        }
    }

    /// The peers, in the order to ask them (the last good one first).
    pub(crate) fn peers(&self) -> Vec<PublicKey> {
        self.order()
    }

    /// Asks `peer` alone for up to `max` blocks from `from` (unverified).
    pub(crate) async fn ask_one(
        &self,
        peer: PublicKey,
        from: u64,
        max: u64,
    ) -> Result<Vec<Block>, FetchError> {
        self.ask(peer, from, max).await.1
    }

    /// The peers in the order to ask them: the last good one, then the others in turn.
    fn order(&self) -> Vec<PublicKey> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let good = *self.last_good.lock().expect("last-good lock poisoned");
        let turn = (0..self.peers.len()).map(|i| self.peers[(start + i) % self.peers.len()]);
        good.into_iter()
            .chain(turn.filter(|p| Some(*p) != good))
            .collect()
    }

    /// Asks `peer` for up to `max` blocks from `from`.
    async fn ask(
        &self,
        peer: PublicKey,
        from: u64,
        max: u64,
    ) -> (PublicKey, Result<Vec<Block>, FetchError>) {
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
        let answer = match self.network.request(&peer, frame).await {
            Ok(answer) => answer,
            Err(e) => return (peer, Err(e.into())),
        };
        if answer.kind != Kind::Blocks {
            let what = format!(
                "{:?}: {}",
                answer.kind,
                String::from_utf8_lossy(&answer.body)
            );
            return (peer, Err(bad(what)));
        }
        let blocks = match decode_internal::<Vec<BlockEntry>>(&answer.body, "blocks") {
            Ok(blocks) => blocks,
            Err(e) => return (peer, Err(bad(e.to_string()))),
        };
        if blocks.len() as u64 > max {
            return (
                peer,
                Err(bad(format!(
                    "{} blocks, {max} were asked for",
                    blocks.len()
                ))),
            );
        }
        let blocks = blocks
            .into_iter()
            .map(|b| Arc::unwrap_or_clone(b.block))
            .collect();
        (peer, Ok(blocks))
    }
}

impl BlockSource for PeerBlockSource {
    fn fetch(&self, from: u64, max: u64) -> BoxFuture<'_, Result<Vec<Block>, FetchError>> {
        Box::pin(async move {
            if self.peers.is_empty() {
                return Err(FetchError::NoPeers);
            }
            let mut waiting = self.order().into_iter().peekable();
            let mut asking = FuturesUnordered::new();
            let mut last_error = None;
            loop {
                if asking.is_empty() {
                    match waiting.next() {
                        Some(peer) => asking.push(self.ask(peer, from, max)),
                        // Everyone answered: nothing to give (or only errors).
                        None => return last_error.map_or(Ok(Vec::new()), Err),
                    }
                }
                let more = waiting.peek().is_some();
                tokio::select! {
                    Some((peer, answer)) = asking.next() => match answer {
                        Ok(blocks) if !blocks.is_empty() => {
                            *self.last_good.lock().expect("last-good lock poisoned") = Some(peer);
                            return Ok(blocks);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "a peer did not give blocks");
                            last_error = Some(e);
                        }
                    },
                    () = tokio::time::sleep(HEDGE_AFTER), if more => {}
                }
                // No blocks yet: ask the next peer too (at once after an answer without
                // blocks, after HEDGE_AFTER while one is still out).
                if let Some(peer) = waiting.next() {
                    asking.push(self.ask(peer, from, max));
                }
            }
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
