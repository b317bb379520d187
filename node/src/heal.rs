//! Storage that heals: damage found in this node's ledger is repaired from its peers, and
//! reported and fenced until it is (`docs/design/storage.md`).
//!
//! * **At start**, before Raft: the last [`START_CHECK_BLOCKS`] blocks are checked in full
//!   (signatures too) and what is damaged among them is repaired before the node takes
//!   part, since the append check and the proposer build on the tip; a node that cannot
//!   repair them within [`START_REPAIR_WAIT`] does not start, and says why.
//! * **While running**, a scrub re-checks every stored block at a bounded rate
//!   (`[storage] scrub_kib_per_s`; hashes, links and index entries), and a read that meets
//!   damage reports it.
//! * **A repair** fetches the damaged range from a peer, verifies it as a chain from the
//!   block below it to the hash the block above it links to (the tip record above the
//!   tip) — from the top down, a chunk at a time, when the block below is damaged too —
//!   and rewrites each block with its index entries. Index entries of an intact block
//!   are rewritten from the block itself.
//! * **Until then**: `/health` answers 503 `storage_damaged` naming the heights, a read of
//!   a damaged block answers the same, `ordo_storage_damaged_blocks` counts them, and a log
//!   line names each when it is found and when it is repaired.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordo_ledger::{
    Block, ChainTip, CheckDepth, Checked, Damage, Policy, Salvaged, Store, StoreError, verify_block,
};
use tokio::sync::Notify;

use crate::consensus::FETCH_BLOCKS_MAX;
use crate::sync::PeerBlockSource;

/// Blocks checked in full at start, below and at the tip.
pub const START_CHECK_BLOCKS: u64 = 64;
/// How long a start waits for peers to repair damage among the last blocks.
pub const START_REPAIR_WAIT: Duration = Duration::from_secs(60);
/// Most damaged blocks remembered at once; more are found again by the next scrub pass.
const DAMAGE_MAX: usize = 100_000;
/// Blocks the scrub checks in one step.
const SCRUB_STEP_BLOCKS: u64 = 16;
/// Pause between repair attempts that failed: the least and the most.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// What is known to be damaged in this node's ledger, and what was repaired.
#[derive(Default)]
pub(crate) struct StorageHealth {
    damaged: Mutex<BTreeMap<u64, Damage>>,
    repaired: AtomicU64,
    scrubbed: AtomicU64,
    found: Notify,
}

impl StorageHealth {
    /// Records `damage` (logged once per height) and wakes the repairer.
    pub(crate) fn report(&self, damage: impl IntoIterator<Item = Damage>) {
        let mut damaged = self.damaged.lock().expect("damage lock poisoned");
        let mut new = false;
        for d in damage {
            if damaged.len() >= DAMAGE_MAX && !damaged.contains_key(&d.height()) {
                break;
            }
            if !damaged.contains_key(&d.height()) {
                tracing::error!(height = d.height(), damage = %d, "ledger damage found; repairing from peers");
                new = true;
            }
            damaged.insert(d.height(), d);
        }
        drop(damaged);
        if new {
            self.found.notify_one();
        }
    }

    /// Why the node is unhealthy, if damage is outstanding: the first damaged heights.
    pub(crate) fn problem(&self) -> Option<String> {
        let damaged = self.damaged.lock().expect("damage lock poisoned");
        let first = damaged.values().next()?;
        let more = match damaged.len() {
            1 => String::new(),
            n => format!(" and {} more damaged block(s)", n - 1),
        };
        Some(format!(
            "ledger damaged ({first}){more}; repairing from peers"
        ))
    }

    /// Damaged blocks known now.
    pub(crate) fn damaged_blocks(&self) -> u64 {
        self.damaged.lock().expect("damage lock poisoned").len() as u64
    }

    /// Blocks repaired since start.
    pub(crate) fn repaired_blocks(&self) -> u64 {
        self.repaired.load(Ordering::Relaxed)
    }

    /// Blocks the scrub checked since start.
    pub(crate) fn scrubbed_blocks(&self) -> u64 {
        self.scrubbed.load(Ordering::Relaxed)
    }

    /// The damage outstanding, as contiguous ranges of heights (lowest first).
    fn ranges(&self) -> Vec<(u64, u64, bool)> {
        let damaged = self.damaged.lock().expect("damage lock poisoned");
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        for (h, d) in damaged.iter() {
            let block = matches!(d, Damage::Block { .. });
            match out.last_mut() {
                Some((_, to, b)) if *to + 1 == *h && *b == block => *to = *h,
                _ => out.push((*h, *h, block)),
            }
        }
        out
    }

    fn repaired_range(&self, from: u64, to: u64) {
        let mut damaged = self.damaged.lock().expect("damage lock poisoned");
        let before = damaged.len();
        damaged.retain(|h, _| !(from..=to).contains(h));
        self.repaired
            .fetch_add((before - damaged.len()) as u64, Ordering::Relaxed);
    }
}

/// Why a repair did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The ledger could not be read or written around the damage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No peer gave blocks that verify as the chain's.
    #[error("no peer gave blocks {from}..={to} that verify: {why}")]
    NoGoodCopy {
        /// First height.
        from: u64,
        /// Last height.
        to: u64,
        /// The last peer's failure.
        why: String,
    },
    /// The repaired range still fails its check.
    #[error("still damaged after the repair: {0}")]
    StillDamaged(Damage),
}

/// Runs `f` on a blocking thread (ledger reads and checks).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    crate::tasks::spawn_blocking(f)
        .await
        .expect("a ledger check does not panic")
}

/// Repairs the blocks `from..=to`: fetched from a peer when `blocks` (verified against the
/// blocks around them), else their index entries rewritten from the stored blocks; then
/// checked again in full.
pub(crate) async fn repair_range(
    store: &Arc<Store>,
    policy: &Arc<Policy>,
    peers: &PeerBlockSource,
    (from, to): (u64, u64),
    blocks: bool,
) -> Result<(), RepairError> {
    if blocks {
        fetch_and_rewrite(store, policy, peers, from, to).await?;
    } else {
        let s = store.clone();
        blocking(move || reindex(&s, from, to)).await?;
    }
    let (s, p) = (store.clone(), policy.clone());
    let checked = blocking(move || s.check_range(from, to, &p, CheckDepth::Full)).await;
    match checked.damage.into_iter().next() {
        Some(d) => Err(RepairError::StillDamaged(d)),
        None => Ok(()),
    }
}

/// Rewrites the index entries of the intact blocks `from..=to`.
fn reindex(store: &Store, from: u64, to: u64) -> Result<(), RepairError> {
    for height in from..=to {
        let bytes = store
            .block_bytes(height)?
            .ok_or_else(|| missing(store, height))?;
        let block = Block::from_bytes(&bytes, ordo_ledger::BLOCK_BYTES_LIMIT).map_err(|e| {
            StoreError::Corrupt {
                path: store.path().to_owned(),
                what: format!("block at height {height}: {e}"),
            }
        })?;
        let ids = block.tx_ids();
        store.repair_block(&block, &ids)?;
    }
    Ok(())
}

/// A block missing below the tip: damage too.
fn missing(store: &Store, height: u64) -> StoreError {
    StoreError::Corrupt {
        path: store.path().to_owned(),
        what: format!("block at height {height} is missing below the tip"),
    }
}

/// The tip below `from` — none when that block is missing or damaged too (a salvage
/// that lost a whole file loses the blocks below the latest ones as well) — and the hash
/// the chain above `to` links to.
fn neighbours(
    store: &Store,
    policy: &Policy,
    from: u64,
    to: u64,
) -> Result<(Option<ChainTip>, ordo_crypto::Hash), StoreError> {
    let parent = match from {
        0 | 1 => Some(policy.genesis_tip()),
        _ => match store.block(from - 1) {
            Ok(block) => block.map(|b| b.tip()),
            Err(e) if e.is_damage() => None,
            Err(e) => return Err(e),
        },
    };
    let tip = store.tip();
    let above = if to >= tip.height {
        tip.hash
    } else {
        store
            .block(to + 1)?
            .ok_or_else(|| missing(store, to + 1))?
            .header
            .prev_hash
    };
    Ok((parent, above))
}

/// Fetches `from..=to` and rewrites it. Anchored on the block below `from`, chunk by chunk
/// upwards; when that block is missing or damaged too, from the top down instead, one
/// chunk at a time, each verified against the block above it before it is written.
async fn fetch_and_rewrite(
    store: &Arc<Store>,
    policy: &Arc<Policy>,
    peers: &PeerBlockSource,
    from: u64,
    to: u64,
) -> Result<(), RepairError> {
    let mut top = to;
    loop {
        let (s, p) = (store.clone(), policy.clone());
        let (parent, above) = blocking(move || neighbours(&s, &p, from, top)).await?;
        if parent.is_some() || top - from < FETCH_BLOCKS_MAX {
            if parent.is_none() {
                tracing::info!(
                    from,
                    to = top,
                    "the block below damaged blocks is damaged too: they are checked against the block above, and their link below when that block is repaired"
                );
            }
            return fetch_span(store, policy, peers, (from, top), parent, above).await;
        }
        let low = top + 1 - FETCH_BLOCKS_MAX;
        fetch_span(store, policy, peers, (low, top), None, above).await?;
        top = low - 1;
    }
}

/// Fetches `from..=to` chunk by chunk, each from the first peer whose blocks verify
/// against the chain below (`parent`; see [`verify_chunk`] without one) and, for the last
/// chunk, the hash `above` links to, and rewrites them.
async fn fetch_span(
    store: &Arc<Store>,
    policy: &Arc<Policy>,
    peers: &PeerBlockSource,
    (from, to): (u64, u64),
    mut parent: Option<ChainTip>,
    above: ordo_crypto::Hash,
) -> Result<(), RepairError> {
    let mut at = from;
    while at <= to {
        let want = (to - at + 1).min(FETCH_BLOCKS_MAX);
        let last = at + want - 1 == to;
        let mut why = String::from("no peers");
        let mut done = None;
        for peer in peers.peers() {
            let blocks = match peers.ask_one(peer, at, want).await {
                Ok(b) => b,
                Err(e) => {
                    why = e.to_string();
                    continue;
                }
            };
            let (p, par) = (policy.clone(), parent);
            let check = move || verify_chunk(&p, (at, par), blocks, want, last.then_some(above));
            match blocking(check).await {
                Ok(chunk) => {
                    done = Some((peer, chunk));
                    break;
                }
                Err(e) => why = format!("peer {peer}: {e}"),
            }
        }
        let Some((peer, chunk)) = done else {
            return Err(RepairError::NoGoodCopy { from, to, why });
        };
        let s = store.clone();
        let next_parent = chunk.last().map(|(b, _)| b.tip()).or(parent);
        blocking(move || {
            chunk
                .iter()
                .try_for_each(|(block, ids)| s.repair_block(block, ids))
        })
        .await?;
        tracing::info!(from = at, to = at + want - 1, %peer, "rewrote damaged blocks with a peer's verified copies");
        parent = next_parent;
        at += want;
    }
    Ok(())
}

/// A peer's blocks, verified in full as the `want` blocks from height `at` above
/// `parent`, the last one hashing to `above` when given. Without a parent (the block below
/// is damaged here too; then `above` must be given) the first block is taken to link to
/// the hash it names: every rule but that link is checked here, and the link itself when
/// the block below is repaired, against this one.
fn verify_chunk(
    policy: &Policy,
    (at, parent): (u64, Option<ChainTip>),
    blocks: Vec<Block>,
    want: u64,
    above: Option<ordo_crypto::Hash>,
) -> Result<Vec<(Block, Vec<ordo_ledger::TxId>)>, String> {
    if blocks.len() as u64 != want {
        return Err(format!("{} blocks, {want} were asked for", blocks.len()));
    }
    let mut parent = match (parent, blocks.first()) {
        (Some(parent), _) => parent,
        (None, Some(first)) if above.is_some() => ChainTip {
            height: at.saturating_sub(1),
            hash: first.header.prev_hash,
            timestamp_ms: 0,
            // What the block's certificates start from (the certification rule).
            certified: first
                .header
                .certified
                .saturating_sub(first.certificates.len() as u64),
        },
        _ => return Err("neither the block below nor the one above is known".into()),
    };
    let mut out = Vec::with_capacity(blocks.len());
    for block in blocks {
        let ids = verify_block(&parent, &block, policy)
            .map_err(|e| format!("block {}: {e}", block.header.height))?;
        parent = block.tip();
        out.push((block, ids));
    }
    if let Some(above) = above
        && parent.hash != above
    {
        return Err(format!(
            "block {} hashes to {}, the chain above links to {above}",
            parent.height, parent.hash
        ));
    }
    Ok(out)
}

/// The last [`START_CHECK_BLOCKS`] blocks checked in full.
pub(crate) async fn check_recent(store: &Arc<Store>, policy: &Arc<Policy>) -> Checked {
    let (s, p) = (store.clone(), policy.clone());
    blocking(move || s.check_recent(START_CHECK_BLOCKS, &p)).await
}

/// The start-up check: damage `checked` found among the last blocks (by [`check_recent`])
/// is repaired from peers before the node takes part, within [`START_REPAIR_WAIT`]. Blocks a salvage lost below them are returned, to
/// be repaired while the node runs.
pub(crate) async fn check_at_start(
    store: &Arc<Store>,
    policy: &Arc<Policy>,
    peers: &PeerBlockSource,
    (checked, salvaged): (Checked, Option<&Salvaged>),
) -> Result<Vec<Damage>, RepairError> {
    let recent = store.tip().height.saturating_sub(START_CHECK_BLOCKS);
    let lost = salvaged
        .map(|s| s.lost_blocks.clone())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(a, b)| a.max(1)..=b.min(recent))
        .map(|height| Damage::Block {
            height,
            what: "lost with a damaged table file".into(),
        });
    // More than the repairer remembers at once are found again by the scrub.
    let later: Vec<Damage> = lost.take(DAMAGE_MAX).collect();
    if checked.damage.is_empty() {
        return Ok(later);
    }
    let health = StorageHealth::default();
    health.report(checked.damage);
    let deadline = tokio::time::Instant::now() + START_REPAIR_WAIT;
    let mut pause = RETRY.0;
    loop {
        match repair_all(store, policy, peers, &health).await {
            Ok(()) => return Ok(later),
            Err(e) if tokio::time::Instant::now() + pause >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot repair the ledger yet; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY.1);
            }
        }
    }
}

/// Repairs every range `health` knows of, lowest first; stops at the first failure.
async fn repair_all(
    store: &Arc<Store>,
    policy: &Arc<Policy>,
    peers: &PeerBlockSource,
    health: &StorageHealth,
) -> Result<(), RepairError> {
    for (from, to, blocks) in health.ranges() {
        repair_range(store, policy, peers, (from, to), blocks).await?;
        health.repaired_range(from, to);
        tracing::info!(from, to, "ledger damage repaired");
    }
    Ok(())
}

/// Repairs what is reported to `health` until `stopped` completes.
pub(crate) async fn repair_reported(
    store: Arc<Store>,
    policy: Arc<Policy>,
    peers: Arc<PeerBlockSource>,
    health: Arc<StorageHealth>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut pause = RETRY.0;
    let work = async {
        loop {
            if health.damaged_blocks() == 0 {
                health.found.notified().await;
            }
            match repair_all(&store, &policy, &peers, &health).await {
                Ok(()) => pause = RETRY.0,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot repair the ledger yet; asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY.1);
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = stopped => {}
    }
}

/// Re-checks every stored block, `kib_per_s` at most, a pass every `every` (each up to
/// the tip when it began), reporting what it finds to `health`, until `stopped` completes.
/// Off when `kib_per_s` is 0.
pub(crate) async fn scrub(
    store: Arc<Store>,
    policy: Arc<Policy>,
    health: Arc<StorageHealth>,
    (kib_per_s, every): (u64, Duration),
    stopped: impl std::future::Future<Output = ()>,
) {
    if kib_per_s == 0 {
        return;
    }
    let bytes_per_s = kib_per_s.saturating_mul(1024) as f64;
    let work = async {
        loop {
            let pass = tokio::time::Instant::now();
            // What was stored when the pass began: newer blocks were checked as they were
            // appended, and a pass that chased the tip of a busy chain would never end.
            let end = store.tip().height;
            let mut height = 1;
            while height <= end {
                let to = (height + SCRUB_STEP_BLOCKS - 1).min(end);
                let (s, p) = (store.clone(), policy.clone());
                let step = tokio::time::Instant::now();
                let checked =
                    blocking(move || s.check_range(height, to, &p, CheckDepth::Hashes)).await;
                health
                    .scrubbed
                    .fetch_add(to + 1 - height, Ordering::Relaxed);
                if checked.table_damage {
                    let why = checked
                        .damage
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    tracing::error!(damage = %why, "a table file of the ledger is damaged: the node restarts to set it aside, and its records come from peers");
                    if let Err(e) = store.request_salvage(&why) {
                        tracing::error!(error = %e, "cannot ask for a salvage at the next start");
                    }
                }
                if !checked.damage.is_empty() {
                    health.report(checked.damage);
                }
                let budget = Duration::from_secs_f64(checked.bytes as f64 / bytes_per_s);
                tokio::time::sleep_until(step + budget).await;
                height = to + 1;
            }
            tracing::debug!(blocks = end, "scrub pass done");
            tokio::time::sleep_until(pass + every).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stopped => {}
    }
}
