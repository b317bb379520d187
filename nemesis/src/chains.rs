//! The chains the validators hold once the run is over, read from their stopped data
//! directories, and `ordo audit`'s verdict on each.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use ordo_crypto::{Hash, PublicKey};
use ordo_genesis::Genesis;
use ordo_ledger::{Store, TxId};

/// What the checker needs of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSummary {
    /// Its height.
    pub height: u64,
    /// Its header hash.
    pub hash: Hash,
    /// Its parent's hash.
    pub prev_hash: Hash,
    /// The Raft term it was proposed in.
    pub term: u64,
    /// Who proposed it.
    pub proposer: PublicKey,
    /// Its timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its transactions, in order.
    pub ids: Vec<TxId>,
}

/// Every block of the ledger in `data_dir`, from height 1, opened read-only.
///
/// # Errors
/// When the ledger does not open or a block below its tip is missing or does not read.
pub fn read_chain(data_dir: &Path, genesis: &Genesis) -> anyhow::Result<Vec<BlockSummary>> {
    let store = Store::open_read_only(data_dir, &genesis.identity())
        .with_context(|| format!("cannot open the ledger in {}", data_dir.display()))?;
    let tip = store.tip().height;
    let mut blocks = Vec::with_capacity(usize::try_from(tip).unwrap_or(0));
    for height in 1..=tip {
        let block = store
            .block(height)
            .with_context(|| format!("block {height} does not read"))?
            .with_context(|| format!("block {height} is missing below the tip {tip}"))?;
        blocks.push(BlockSummary {
            height: block.header.height,
            hash: block.header.hash(),
            prev_hash: block.header.prev_hash,
            term: block.header.term,
            proposer: block.header.proposer,
            timestamp_ms: block.header.timestamp_ms,
            ids: block.txs.iter().map(|t| t.id()).collect(),
        });
    }
    Ok(blocks)
}

/// Runs `ordo audit` on `data_dir`: `Ok` when the whole chain verifies, else what it said.
///
/// # Errors
/// The audit's own words when it fails, or why it could not run.
pub fn audit(bin: &Path, data_dir: &Path, genesis: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .args(["audit", "--quiet", "--data-dir"])
        .arg(data_dir)
        .arg("--genesis")
        .arg(genesis)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}
