//! Offline audit: re-verify a stored chain from the genesis, block by block.
//!
//! The audit trusts nothing in the store. For every height from 1 to the recorded tip it
//! decodes the stored bytes, re-runs [`verify_block`] against the previous block (hash link,
//! Merkle root, proposer, every signature), and checks that the hash and transaction indexes
//! point exactly at that block — which also catches a transaction committed twice. It
//! streams: memory is bounded by one chunk of blocks, whatever the chain's length.
//! Signature checks for a chunk run on all cores.

use serde::Serialize;

use crate::Policy;
use crate::store::{Store, StoreError};
use crate::types::{Block, ChainTip, TxId};
use crate::verify::{VerifyError, verify_block};
use ordo_crypto::Hash;

/// Most blocks held in memory at once.
const CHUNK_BLOCKS_MAX: usize = 256;
/// Most block bytes held in memory at once.
const CHUNK_BYTES_MAX: usize = 64 << 20;

/// What the audit found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The store was made for another genesis.
    #[error("store belongs to genesis {found}, the genesis given hashes to {expected}")]
    WrongGenesis {
        /// Policy's genesis hash.
        expected: Hash,
        /// Store's genesis hash.
        found: Hash,
    },
    /// No block is stored at this height, though the recorded tip is above it.
    #[error("block is missing")]
    MissingBlock,
    /// A block is stored above the recorded tip.
    #[error("block is stored above the recorded tip (height {recorded_tip})")]
    BeyondTip {
        /// Recorded tip height.
        recorded_tip: u64,
    },
    /// The stored bytes are not a canonical block.
    #[error("stored block does not decode: {0}")]
    Undecodable(String),
    /// The stored block's header has another height.
    #[error("block stored under this height says it is height {header}")]
    HeightMismatch {
        /// Header height.
        header: u64,
    },
    /// The block breaks a verification rule.
    #[error("{0}")]
    Invalid(VerifyError),
    /// The hash index does not point at this block.
    #[error("hash index for block {hash} points to {found:?}")]
    HashIndex {
        /// The block hash.
        hash: Hash,
        /// Height the index gives, if any.
        found: Option<u64>,
    },
    /// The transaction was committed at an earlier height too.
    #[error("transaction {index} ({id}) was already committed at height {first_height}")]
    Replayed {
        /// Position in this block.
        index: u32,
        /// Transaction id.
        id: TxId,
        /// Where the index says it first appeared.
        first_height: u64,
    },
    /// The transaction index does not point at this transaction.
    #[error("transaction index for transaction {index} ({id}) points to {found:?}")]
    TxIndex {
        /// Position in this block.
        index: u32,
        /// Transaction id.
        id: TxId,
        /// (height, index) the index gives, if any.
        found: Option<(u64, u32)>,
    },
    /// The recorded tip is not the last verified block.
    #[error("recorded tip {recorded:?} is not the last block {verified:?}")]
    TipMismatch {
        /// Tip in the metadata.
        recorded: ChainTip,
        /// Tip of the verified chain.
        verified: ChainTip,
    },
    /// An index has entries for no block.
    #[error("{index} has {entries} entries for {expected} chain items")]
    IndexCount {
        /// Which index.
        index: &'static str,
        /// Entries found.
        entries: u64,
        /// Entries the chain accounts for.
        expected: u64,
    },
    /// Reading the store failed.
    #[error("reading the store failed: {0}")]
    Read(String),
}

/// The first problem found, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditFailure {
    /// The first bad height, when the problem belongs to one.
    pub height: Option<u64>,
    /// What is wrong.
    #[serde(serialize_with = "serialize_display")]
    pub error: AuditError,
}

fn serialize_display<S: serde::Serializer>(e: &AuditError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

impl std::fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.height {
            Some(h) => write!(f, "height {h}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// The outcome of an audit.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// Chain id audited.
    pub chain_id: String,
    /// Genesis hash audited against.
    pub genesis_hash: Hash,
    /// The tip recorded in the store.
    pub recorded_tip: ChainTip,
    /// The last block that verified.
    pub verified_tip: ChainTip,
    /// Blocks that verified.
    pub blocks_verified: u64,
    /// Transactions in the blocks that verified.
    pub txs_verified: u64,
    /// The first problem, or `None` when the whole chain verifies.
    pub failure: Option<AuditFailure>,
}

impl AuditReport {
    /// True when the whole chain verified.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

/// Re-verifies the chain in `store` under `policy`. `progress` is called with each verified
/// height.
///
/// A bad chain is not an error: it is a report whose `failure` names the first bad height.
pub fn audit(store: &Store, policy: &Policy, mut progress: impl FnMut(u64)) -> AuditReport {
    let recorded_tip = store.tip();
    let mut report = AuditReport {
        chain_id: policy.chain_id.clone(),
        genesis_hash: policy.genesis_hash,
        recorded_tip,
        verified_tip: policy.genesis_tip(),
        blocks_verified: 0,
        txs_verified: 0,
        failure: None,
    };
    if store.identity().genesis_hash != policy.genesis_hash {
        let error = AuditError::WrongGenesis {
            expected: policy.genesis_hash,
            found: store.identity().genesis_hash,
        };
        report.failure = Some(AuditFailure {
            height: None,
            error,
        });
        return report;
    }
    report.failure = audit_blocks(store, policy, &mut report, &mut progress)
        .err()
        .or_else(|| audit_end(store, &report).err());
    report
}

fn fail(height: u64, error: AuditError) -> AuditFailure {
    AuditFailure {
        height: Some(height),
        error,
    }
}

fn read_err(height: u64, e: StoreError) -> AuditFailure {
    fail(height, AuditError::Read(e.to_string()))
}

fn audit_blocks(
    store: &Store,
    policy: &Policy,
    report: &mut AuditReport,
    progress: &mut impl FnMut(u64),
) -> Result<(), AuditFailure> {
    let recorded = report.recorded_tip.height;
    let mut raw = store.raw_blocks_from(0).peekable();
    while raw.peek().is_some() {
        let next = report.verified_tip.height + 1;
        let chunk = read_chunk(&mut raw, next, recorded)?;
        let decoded = decode_chunk(&chunk)?;
        let results = verify_chunk(&report.verified_tip, &decoded, policy);
        for (block, result) in decoded.iter().zip(results) {
            let height = block.header.height;
            let ids = result.map_err(|e| fail(height, AuditError::Invalid(e)))?;
            check_indexes(store, block, &ids)?;
            report.verified_tip = block.tip();
            report.blocks_verified += 1;
            report.txs_verified += ids.len() as u64;
            progress(height);
        }
    }
    Ok(())
}

/// Reads the next run of consecutive blocks, starting at height `next`.
fn read_chunk(
    raw: &mut impl Iterator<Item = Result<(u64, Vec<u8>), StoreError>>,
    mut next: u64,
    recorded: u64,
) -> Result<Vec<(u64, Vec<u8>)>, AuditFailure> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    while chunk.len() < CHUNK_BLOCKS_MAX && bytes < CHUNK_BYTES_MAX {
        let Some(item) = raw.next() else { break };
        let (height, data) = item.map_err(|e| read_err(next, e))?;
        if height > recorded {
            return Err(fail(
                height.max(next),
                AuditError::BeyondTip {
                    recorded_tip: recorded,
                },
            ));
        }
        if height != next {
            return Err(fail(next, AuditError::MissingBlock));
        }
        bytes += data.len();
        chunk.push((height, data));
        next += 1;
    }
    Ok(chunk)
}

fn decode_chunk(chunk: &[(u64, Vec<u8>)]) -> Result<Vec<Block>, AuditFailure> {
    chunk
        .iter()
        .map(|(height, data)| {
            let block = Block::from_bytes(data, crate::policy::BLOCK_BYTES_LIMIT)
                .map_err(|e| fail(*height, AuditError::Undecodable(e.to_string())))?;
            if block.header.height != *height {
                return Err(fail(
                    *height,
                    AuditError::HeightMismatch {
                        header: block.header.height,
                    },
                ));
            }
            Ok(block)
        })
        .collect()
}

/// Verifies each block of the chunk against its predecessor, on all cores.
fn verify_chunk(
    parent: &ChainTip,
    blocks: &[Block],
    policy: &Policy,
) -> Vec<Result<Vec<TxId>, VerifyError>> {
    let mut parents = Vec::with_capacity(blocks.len());
    let mut p = *parent;
    for b in blocks {
        parents.push(p);
        p = b.tip();
    }
    let workers = ordo_crypto::cores().min(blocks.len().max(1));
    let mut results: Vec<Option<Result<Vec<TxId>, VerifyError>>> = vec![None; blocks.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (parents, blocks) = (&parents, blocks);
                s.spawn(move || {
                    (w..blocks.len())
                        .step_by(workers)
                        .map(|i| (i, verify_block(&parents[i], &blocks[i], policy)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("audit worker panicked") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every block verified"))
        .collect()
}

fn check_indexes(store: &Store, block: &Block, ids: &[TxId]) -> Result<(), AuditFailure> {
    let height = block.header.height;
    let hash = block.hash();
    let found = store.height_of(&hash).map_err(|e| read_err(height, e))?;
    if found != Some(height) {
        return Err(fail(height, AuditError::HashIndex { hash, found }));
    }
    for (i, id) in ids.iter().enumerate() {
        let index = i as u32;
        let found = store.tx_location(id).map_err(|e| read_err(height, e))?;
        match found {
            Some((h, _)) if h < height => {
                return Err(fail(
                    height,
                    AuditError::Replayed {
                        index,
                        id: *id,
                        first_height: h,
                    },
                ));
            }
            Some(loc) if loc == (height, index) => {}
            other => {
                return Err(fail(
                    height,
                    AuditError::TxIndex {
                        index,
                        id: *id,
                        found: other,
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Checks after the last block: the recorded tip and the index sizes.
fn audit_end(store: &Store, report: &AuditReport) -> Result<(), AuditFailure> {
    let (recorded, verified) = (report.recorded_tip, report.verified_tip);
    if verified.height < recorded.height {
        return Err(fail(verified.height + 1, AuditError::MissingBlock));
    }
    if recorded != verified {
        return Err(AuditFailure {
            height: Some(recorded.height),
            error: AuditError::TipMismatch { recorded, verified },
        });
    }
    let no_height = |error| AuditFailure {
        height: None,
        error,
    };
    let read = |e: StoreError| no_height(AuditError::Read(e.to_string()));
    let entries = store.count_hash_index().map_err(read)?;
    if entries != report.blocks_verified {
        return Err(no_height(AuditError::IndexCount {
            index: "block hash index",
            entries,
            expected: report.blocks_verified,
        }));
    }
    let entries = store.count_tx_index().map_err(read)?;
    if entries != report.txs_verified {
        return Err(no_height(AuditError::IndexCount {
            index: "transaction index",
            entries,
            expected: report.txs_verified,
        }));
    }
    Ok(())
}
