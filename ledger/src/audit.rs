//! Offline audit: re-verify a stored chain from the genesis, block by block.
//!
//! The audit trusts nothing in the store. For every height from 1 to the recorded tip it
//! decodes the stored bytes, re-runs [`verify_block`] against the previous block (hash link,
//! Merkle root, proposer, certificates, every signature), checks that each certificate
//! names the chain's block at its height, and that the hash, transaction and certificate
//! indexes point exactly at that block — which also catches a transaction committed twice.
//! It streams: memory is bounded by one chunk of blocks, whatever the chain's length.
//! Signature checks for a chunk run on all cores.
//!
//! Then the uncertified tail (the last blocks, which no block certifies yet): each of its
//! blocks is reported as attested by a majority, partly or not at all, from the
//! attestations the store keeps, each of which must verify. Attestations of other blocks
//! at heights this chain holds (the store's evidence, or the tail's) are reported as
//! evidence against their signers, as equivocation when the same key also signed this
//! chain's block there.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::Policy;
use crate::certify::verify_attestation;
use crate::store::{Store, StoreError};
use crate::types::{Attestation, Block, ChainTip, TxId};
use crate::verify::{VerifyError, verify_block};
use ordo_crypto::{Hash, PublicKey};

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
        recorded: Box<ChainTip>,
        /// Tip of the verified chain.
        verified: Box<ChainTip>,
    },
    /// A certificate names another block than the chain's at its height.
    #[error(
        "certificate of height {certified} names block {named}; the chain's block there is {chain}"
    )]
    CertifiesAnother {
        /// The certified height.
        certified: u64,
        /// The hash the certificate names.
        named: Hash,
        /// The chain's block at that height.
        chain: Hash,
    },
    /// The certificate index does not hold the certificate the chain carries.
    #[error(
        "certificate index for height {certified} does not hold the certificate this block carries"
    )]
    CertificateIndex {
        /// The certified height.
        certified: u64,
    },
    /// A kept attestation does not verify, or is not by a validator.
    #[error("kept attestation by {signer} of block {block_hash} at height {height}: {reason}")]
    BadAttestation {
        /// Its height.
        height: u64,
        /// Its signer.
        signer: PublicKey,
        /// The block it names.
        block_hash: Hash,
        /// What is wrong.
        reason: String,
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
    /// Every block at or below this height is certified by a majority (in the chain).
    pub certified: u64,
    /// The blocks above `certified`, with their attestations.
    pub tail: Vec<TailBlock>,
    /// Each validator's record, in key order.
    pub validators: Vec<ValidatorRecord>,
    /// Attestations of blocks that are not this chain's.
    pub evidence: Vec<Evidence>,
    /// The first problem, or `None` when the whole chain verifies.
    pub failure: Option<AuditFailure>,
}

/// A block of the uncertified tail.
#[derive(Debug, Clone, Serialize)]
pub struct TailBlock {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash,
    /// The validators whose attestation of it the store keeps (each verified).
    pub attested_by: Vec<PublicKey>,
    /// What they amount to.
    pub status: TailStatus,
}

/// How far a tail block is attested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TailStatus {
    /// By a majority: the next block may certify it.
    Attested,
    /// By some validators, fewer than a majority (in this store).
    PartlyAttested,
    /// By none (in this store).
    Unattested,
}

/// What one validator signed.
#[derive(Debug, Clone, Serialize)]
pub struct ValidatorRecord {
    /// Its key.
    pub key: PublicKey,
    /// Certificates in the chain it signed.
    pub certificates_signed: u64,
    /// Tail blocks whose attestation by it the store keeps.
    pub tail_attested: u64,
    /// Blocks that are not this chain's it attested (see [`AuditReport::evidence`]).
    pub conflicting: u64,
}

/// An attestation of a block that is not this chain's block at that height.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The validator that signed it.
    pub signer: PublicKey,
    /// The height.
    pub height: u64,
    /// The block it signed.
    pub signed: Hash,
    /// This chain's block at that height.
    pub chain: Hash,
    /// Whether the same key also signed this chain's block there (two blocks at one
    /// height: equivocation).
    pub equivocation: bool,
}

impl AuditReport {
    /// True when the whole chain verified and no validator attested a block that is not
    /// this chain's.
    pub fn ok(&self) -> bool {
        self.failure.is_none() && self.evidence.is_empty()
    }
}

/// What the block scan gathers besides verifying.
struct Gathered {
    /// Hashes of the last blocks verified, by height.
    recent: BTreeMap<u64, Hash>,
    /// Certificates signed, by validator position.
    signed: Vec<u64>,
    /// Attestations kept outside the chain (evidence and tail), by (height, signer): the
    /// hashes they name.
    outside: HashMap<(u64, PublicKey), Vec<Attestation>>,
    /// Heights this chain holds, of `outside`'s attestations, with the chain's hash and
    /// whether the signer signed it in a certificate.
    seen: HashMap<(u64, PublicKey), (Hash, bool)>,
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
        certified: 0,
        tail: Vec::new(),
        validators: Vec::new(),
        evidence: Vec::new(),
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
    let mut gathered = Gathered {
        recent: BTreeMap::new(),
        signed: vec![0; policy.validators.len()],
        outside: HashMap::new(),
        seen: HashMap::new(),
    };
    report.failure = load_outside(store, policy, &mut gathered)
        .err()
        .or_else(|| audit_blocks(store, policy, &mut report, &mut gathered, &mut progress).err())
        .or_else(|| audit_end(store, &report).err())
        .or_else(|| audit_tail(store, policy, &mut report, &gathered).err());
    report
}

/// Reads and verifies the attestations kept outside the chain (tail and evidence).
fn load_outside(store: &Store, policy: &Policy, g: &mut Gathered) -> Result<(), AuditFailure> {
    let no_height = |error| AuditFailure {
        height: None,
        error,
    };
    let read = |e: StoreError| no_height(AuditError::Read(e.to_string()));
    let mut all = store.attestations().map_err(read)?;
    all.extend(store.evidence().map_err(read)?);
    for a in all {
        let bad = |reason: &str| {
            fail(
                a.height,
                AuditError::BadAttestation {
                    height: a.height,
                    signer: a.signer,
                    block_hash: a.block_hash,
                    reason: reason.to_owned(),
                },
            )
        };
        if !policy.validators.contains(&a.signer) {
            return Err(bad("not a validator of this chain"));
        }
        if verify_attestation(&a, &policy.chain_id).is_err() {
            return Err(bad("the signature is invalid"));
        }
        g.outside.entry((a.height, a.signer)).or_default().push(a);
    }
    Ok(())
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
    g: &mut Gathered,
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
            check_certificates(store, block, policy, g)?;
            check_indexes(store, block, &ids)?;
            g.recent.insert(height, block.hash());
            while g.recent.len() > crate::policy::CERTIFY_LAG_LIMIT as usize + 1 {
                g.recent.pop_first();
            }
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

/// Checks that each certificate of `block` (verified) names the chain's block at its
/// height and is the one the certificate index holds; counts its signers.
fn check_certificates(
    store: &Store,
    block: &Block,
    policy: &Policy,
    g: &mut Gathered,
) -> Result<(), AuditFailure> {
    let height = block.header.height;
    for cert in &block.certificates {
        // A verified block certifies only heights its last `certify_lag` ancestors hold.
        let chain = g.recent.get(&cert.height).copied().ok_or_else(|| {
            fail(
                height,
                AuditError::Read(format!("no hash kept for height {}", cert.height)),
            )
        })?;
        if chain != cert.block_hash {
            return Err(fail(
                height,
                AuditError::CertifiesAnother {
                    certified: cert.height,
                    named: cert.block_hash,
                    chain,
                },
            ));
        }
        let indexed = store
            .certificate(cert.height)
            .map_err(|e| read_err(height, e))?;
        if indexed.as_ref() != Some(cert) {
            return Err(fail(
                height,
                AuditError::CertificateIndex {
                    certified: cert.height,
                },
            ));
        }
        for p in cert.signer_positions() {
            g.signed[p] += 1;
            let key = policy.validators.keys()[p];
            if g.outside.contains_key(&(cert.height, key)) {
                g.seen.insert((cert.height, key), (chain, true));
            }
        }
    }
    Ok(())
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

/// Reports the uncertified tail, each validator's record and the evidence.
fn audit_tail(
    store: &Store,
    policy: &Policy,
    report: &mut AuditReport,
    g: &Gathered,
) -> Result<(), AuditFailure> {
    let tip = report.verified_tip;
    report.certified = tip.certified;
    let mut tail_attested = vec![0u64; policy.validators.len()];
    let mut conflicting = vec![0u64; policy.validators.len()];
    for height in tip.certified + 1..=tip.height {
        let hash = match g.recent.get(&height) {
            Some(h) => *h,
            None => store.hash_at(height).map_err(|e| read_err(height, e))?,
        };
        let attested_by: Vec<PublicKey> = policy
            .validators
            .keys()
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                g.outside
                    .get(&(height, **k))
                    .is_some_and(|v| v.iter().any(|a| a.block_hash == hash))
            })
            .map(|(i, k)| {
                tail_attested[i] += 1;
                *k
            })
            .collect();
        let status = match attested_by.len() {
            0 => TailStatus::Unattested,
            n if n >= policy.validators.quorum() => TailStatus::Attested,
            _ => TailStatus::PartlyAttested,
        };
        report.tail.push(TailBlock {
            height,
            hash,
            attested_by,
            status,
        });
    }
    // Attestations of other blocks at heights this chain holds.
    let mut evidence = Vec::new();
    for ((height, signer), atts) in &g.outside {
        if *height == 0 || *height > tip.height {
            continue;
        }
        let chain = match g.recent.get(height) {
            Some(h) => *h,
            None => store.hash_at(*height).map_err(|e| read_err(*height, e))?,
        };
        let signed_chain = g.seen.get(&(*height, *signer)).is_some_and(|s| s.1)
            || atts.iter().any(|a| a.block_hash == chain);
        for a in atts.iter().filter(|a| a.block_hash != chain) {
            if let Some(p) = policy.validators.position(signer) {
                conflicting[p] += 1;
            }
            evidence.push(Evidence {
                signer: *signer,
                height: *height,
                signed: a.block_hash,
                chain,
                equivocation: signed_chain,
            });
        }
    }
    evidence.sort_by_key(|e| (e.height, e.signer));
    report.evidence = evidence;
    report.validators = policy
        .validators
        .keys()
        .iter()
        .enumerate()
        .map(|(i, key)| ValidatorRecord {
            key: *key,
            certificates_signed: g.signed[i],
            tail_attested: tail_attested[i],
            conflicting: conflicting[i],
        })
        .collect();
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
            error: AuditError::TipMismatch {
                recorded: Box::new(recorded),
                verified: Box::new(verified),
            },
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
    let entries = store.count_certificate_index().map_err(read)?;
    if entries != verified.certified {
        return Err(no_height(AuditError::IndexCount {
            index: "certificate index",
            entries,
            expected: verified.certified,
        }));
    }
    Ok(())
}
