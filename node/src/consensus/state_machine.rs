//! The Raft state machine: committed blocks go into the ledger.
//!
//! Applying a block appends it to the ledger [`Store`] with the applied log id and
//! membership written in the same `WriteBatch`, so after a crash the ledger and the
//! applied state agree and no block is applied twice. That write is not synced on its own
//! ([`Durability::WithNextSync`]): the block is already in the synced Raft log of the same
//! database, so a crash can only take back the latest applies, which Raft makes again from
//! its log on restart. RocksDB's one write-ahead log keeps writes in order, and the next
//! synced write (a log append, a vote) carries every earlier one to disk. Raft purges its
//! log only up to a snapshot, and the snapshot is saved synced (`save_snapshot`), so the
//! applies a purge depends on are on disk before it: keep that write synced.
//!
//! Blocks were fully verified before they entered the log (the leader before proposing,
//! followers before appending); applying only checks that a block extends the ledger,
//! which every node decides identically.
//!
//! A snapshot is small: the applied log id, the membership and the ledger tip. A node that
//! installs one while its ledger is behind fetches the missing blocks from a
//! [`BlockSource`], verifies each against its parent, and appends it, before the snapshot
//! counts as installed.

use std::collections::VecDeque;
use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::future::BoxFuture;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{
    EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf,
};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use ordo_crypto::Hash;
use ordo_ledger::{Block, ChainTip, Durability, Policy, Store, StoreError, TxId, verify_block};
use rocksdb::WriteBatch;
use tracing::Instrument;

use super::types::{ApplyOutcome, BlockEntry, TypeConfig};
use super::{CF_RAFT_STATE, cf, io_err, write_batch};
use crate::timings::Timings;
use ordo_wire::{
    Applied, StoredSnapshot, decode_internal, decode_snapshot_data, encode_internal,
    encode_snapshot_data,
};

const KEY_APPLIED: &[u8] = b"applied";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Most applied blocks [`RecentBlocks`] keeps.
const RECENT_BLOCKS_MAX: usize = 64;

/// Most blocks asked of a [`BlockSource`] at once during snapshot catch-up.
pub const FETCH_BLOCKS_MAX: u64 = 256;
/// Longest pause between attempts to fetch missing blocks.
const FETCH_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why a [`BlockSource`] gave no blocks.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// There is no one to ask (a one-validator chain).
    #[error("no peers to fetch blocks from")]
    NoPeers,
    /// The request did not reach the peer or got no answer.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// The peer's answer is not one (a wrong kind, bytes that do not decode, too many
    /// blocks, or its own error).
    #[error("peer {peer} answered a block request with {what}")]
    BadAnswer {
        /// The peer.
        peer: ordo_crypto::PublicKey,
        /// What was wrong.
        what: String,
    },
}

/// Why fetched blocks were not appended.
#[derive(Debug, thiserror::Error)]
enum AppendFetchedError {
    /// A block does not extend the ledger's tip under the chain's rules.
    #[error(transparent)]
    Verify(#[from] ordo_ledger::VerifyError),
    /// The ledger refused or failed the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a node that fell behind gets committed blocks it does not have (its peers).
pub trait BlockSource: Send + Sync + 'static {
    /// Up to `max` consecutive blocks starting at height `from`. May return fewer (or none,
    /// when the source has not reached `from` yet); the caller verifies everything.
    fn fetch(&self, from: u64, max: u64) -> BoxFuture<'_, Result<Vec<Block>, FetchError>>;
}

/// A block the state machine appended to the ledger, with its transaction ids.
#[derive(Clone, Debug)]
pub struct AppliedBlock {
    /// The block.
    pub block: Arc<Block>,
    /// Its transaction ids, in block order.
    pub ids: Arc<[TxId]>,
    /// Its hash.
    pub hash: Hash,
}

/// The last blocks the state machine appended, in height order: the node's readers of
/// new blocks (mempool cleanup, waiting clients, block streams) take them from here rather
/// than read and hash them again. Bounded; a reader that falls behind reads the ledger.
#[derive(Clone, Default)]
pub struct RecentBlocks(Arc<Mutex<VecDeque<AppliedBlock>>>);

impl RecentBlocks {
    fn push(&self, applied: AppliedBlock) {
        let mut q = self.0.lock().expect("recent-blocks lock poisoned");
        // A snapshot catch-up appends blocks this does not see: keep heights consecutive.
        if q.back()
            .is_some_and(|b| b.block.header.height + 1 != applied.block.header.height)
        {
            q.clear();
        }
        if q.len() >= RECENT_BLOCKS_MAX {
            q.pop_front();
        }
        q.push_back(applied);
    }

    /// The applied block at `height`, if it is still here.
    pub fn get(&self, height: u64) -> Option<AppliedBlock> {
        let q = self.0.lock().expect("recent-blocks lock poisoned");
        let first = q.front()?.block.header.height;
        let i = usize::try_from(height.checked_sub(first)?).ok()?;
        q.get(i).cloned()
    }
}

struct Inner {
    store: Arc<Store>,
    policy: Arc<Policy>,
    source: Arc<dyn BlockSource>,
    /// Held while a block is appended, so a snapshot sees a tip and an applied id that agree.
    applied: Mutex<Applied>,
    recent: RecentBlocks,
    timings: Arc<Timings>,
    /// The span of the validator that opened it: openraft runs the state machine in a task
    /// of its own, whose span its log filter may disable, so what is logged here would not
    /// say which validator wrote it.
    span: tracing::Span,
}

/// The state machine. Cheap to clone handles share one state.
pub struct BlockStateMachine {
    inner: Arc<Inner>,
}

/// Builds snapshots concurrently with `apply`.
pub struct SnapshotBuilder {
    inner: Arc<Inner>,
}

/// The snapshot's content.
type SnapshotData = Cursor<Vec<u8>>;

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().expect("applied-state lock poisoned")
    }

    fn state_cf(&self) -> &rocksdb::ColumnFamily {
        cf(&self.store, CF_RAFT_STATE)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> io::Result<()> {
        write_batch(&self.store, batch, sync)
    }

    /// Persists `applied` alone. Entries without a block are idempotent to re-apply, so
    /// this need not be synced.
    fn save_applied(&self, applied: &Applied, sync: bool) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.state_cf(), KEY_APPLIED, encode_internal(applied)?);
        self.write(batch, sync)
    }

    fn apply_entry(&self, entry: EntryOf<TypeConfig>) -> io::Result<ApplyOutcome> {
        let mut applied = self.lock();
        let mut next = applied.clone();
        next.last_applied = Some(entry.log_id);
        let outcome = match entry.payload {
            EntryPayload::Blank => {
                self.save_applied(&next, false)?;
                ApplyOutcome::NoBlock
            }
            EntryPayload::Membership(m) => {
                next.membership = StoredMembership::new(Some(entry.log_id), m);
                self.save_applied(&next, false)?;
                ApplyOutcome::NoBlock
            }
            EntryPayload::Normal(entry) => self.apply_block(&entry, &next)?,
        };
        *applied = next;
        Ok(outcome)
    }

    fn apply_block(&self, entry: &BlockEntry, next: &Applied) -> io::Result<ApplyOutcome> {
        let block = &entry.block;
        let tip = self.store.tip();
        let (height, hash) = (block.header.height, block.hash());
        if height <= tip.height
            && self
                .store
                .block(height)
                .map_err(io_err)?
                .is_some_and(|b| b.hash() == hash)
        {
            self.save_applied(next, false)?;
            return Ok(ApplyOutcome::AlreadyApplied { height });
        }
        let applied_bytes = encode_internal(next)?;
        let ids = entry.ids();
        let started = Instant::now();
        let result = self
            .store
            .append_with(block, &ids, Durability::WithNextSync, |batch, db| {
                let cf = db
                    .cf_handle(CF_RAFT_STATE)
                    .expect("consensus column families are opened with the store");
                batch.put_cf(cf, KEY_APPLIED, &applied_bytes);
            });
        self.timings.apply.observe(started.elapsed());
        match result {
            Ok(_) => {
                self.recent.push(AppliedBlock {
                    block: block.clone(),
                    ids,
                    hash,
                });
                Ok(ApplyOutcome::Appended { height, hash })
            }
            Err(e @ (StoreError::NotNext { .. } | StoreError::AlreadyCommitted { .. })) => {
                tracing::warn!(height, %hash, error = %e, "committed block does not extend the ledger; skipped");
                self.save_applied(next, false)?;
                Ok(ApplyOutcome::Skipped {
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn snapshot_view(&self) -> (Applied, ChainTip) {
        let applied = self.lock();
        (applied.clone(), self.store.tip())
    }

    fn save_snapshot(&self, stored: &StoredSnapshot, applied: Option<&Applied>) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.state_cf(), KEY_SNAPSHOT, encode_internal(stored)?);
        if let Some(applied) = applied {
            batch.put_cf(self.state_cf(), KEY_APPLIED, encode_internal(applied)?);
        }
        self.write(batch, true)
    }

    fn load_snapshot(&self) -> io::Result<Option<StoredSnapshot>> {
        match self
            .store
            .db()
            .get_cf(self.state_cf(), KEY_SNAPSHOT)
            .map_err(io::Error::other)?
        {
            Some(bytes) => decode_internal(&bytes, "stored snapshot").map(Some),
            None => Ok(None),
        }
    }

    /// Fetches, verifies and appends blocks until the ledger reaches `target`.
    async fn catch_up(&self, target: &ChainTip) -> io::Result<()> {
        let mut delay = Duration::from_millis(50);
        while self.store.tip().height < target.height {
            let tip = self.store.tip();
            let want = (target.height - tip.height).min(FETCH_BLOCKS_MAX);
            match self.source.fetch(tip.height + 1, want).await {
                Ok(blocks) if !blocks.is_empty() => {
                    if let Err(e) = self.append_fetched(&blocks) {
                        tracing::warn!(from = tip.height + 1, error = %e, "fetched blocks rejected; retrying");
                    } else {
                        tracing::info!(
                            from = tip.height + 1,
                            to = tip.height + blocks.len() as u64,
                            "fetched and verified blocks from a peer"
                        );
                        delay = Duration::from_millis(50);
                        continue;
                    }
                }
                Ok(_) => tracing::debug!(from = tip.height + 1, "no blocks available yet"),
                Err(e) => {
                    tracing::warn!(from = tip.height + 1, error = %e, "block fetch failed; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(FETCH_RETRY_MAX);
        }
        let ours = self
            .store
            .block(target.height)
            .map_err(io_err)?
            .map(|b| b.tip());
        if target.height > 0 && ours.as_ref() != Some(target) {
            return Err(io::Error::other(format!(
                "ledger block at height {} differs from the snapshot's tip {}: the chain diverged",
                target.height, target.hash
            )));
        }
        Ok(())
    }

    /// Verifies each fetched block against its parent and appends it; stops at the first
    /// bad one. One sync per batch, not per block: the appends reach the disk in order, so
    /// a crash keeps a prefix of them, which the next catch-up extends; the snapshot
    /// counts as installed only once its own synced write is done (`install_snapshot`).
    fn append_fetched(&self, blocks: &[Block]) -> Result<(), AppendFetchedError> {
        let mut unsynced = false;
        let result = blocks.iter().try_for_each(|block| {
            let parent = self.store.tip();
            let ids = verify_block(&parent, block, &self.policy)?;
            self.store
                .append_with(block, &ids, Durability::WithNextSync, |_, _| {})?;
            unsynced = true;
            Ok(())
        });
        if unsynced {
            self.store.sync()?;
        }
        result
    }
}

impl BlockStateMachine {
    /// The blocks this state machine applies, as it applies them.
    pub fn recent(&self) -> RecentBlocks {
        self.inner.recent.clone()
    }

    /// The state machine over `store`, resuming from the persisted applied state.
    ///
    /// # Errors
    /// When the persisted state cannot be read or decoded.
    pub fn open(
        store: Arc<Store>,
        policy: Arc<Policy>,
        source: Arc<dyn BlockSource>,
        timings: Arc<Timings>,
    ) -> io::Result<BlockStateMachine> {
        let applied = match store
            .db()
            .get_cf(cf(&store, CF_RAFT_STATE), KEY_APPLIED)
            .map_err(io::Error::other)?
        {
            Some(bytes) => decode_internal(&bytes, "applied state")?,
            None => Applied::default(),
        };
        let inner = Inner {
            store,
            policy,
            source,
            applied: Mutex::new(applied),
            recent: RecentBlocks::default(),
            timings,
            span: tracing::Span::current(),
        };
        Ok(BlockStateMachine {
            inner: Arc::new(inner),
        })
    }
}

fn snapshot_of(stored: StoredSnapshot) -> io::Result<SnapshotOf<TypeConfig, SnapshotData>> {
    Ok(openraft::storage::Snapshot {
        meta: stored.meta,
        snapshot: Cursor::new(encode_snapshot_data(&stored.tip)),
    })
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, SnapshotData>, io::Error> {
        let (applied, tip) = self.inner.snapshot_view();
        let meta = openraft::storage::SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership,
        };
        let stored = StoredSnapshot { meta, tip };
        self.inner.save_snapshot(&stored, None)?;
        snapshot_of(stored)
    }
}

impl RaftStateMachine<TypeConfig> for BlockStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>), io::Error> {
        let applied = self.inner.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let span = self.inner.span.clone();
        async move {
            while let Some((entry, responder)) = entries.try_next().await? {
                // A block's write (which may wait on RocksDB) runs on a blocking thread.
                let outcome = if matches!(entry.payload, EntryPayload::Normal(_)) {
                    let inner = self.inner.clone();
                    crate::tasks::spawn_blocking(move || inner.apply_entry(entry))
                        .await
                        .unwrap_or_else(|e| {
                            Err(io::Error::other(format!("apply task failed: {e}")))
                        })?
                } else {
                    self.inner.apply_entry(entry)?
                };
                if let Some(responder) = responder {
                    responder.send(outcome);
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            inner: self.inner.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let tip = decode_snapshot_data(snapshot.get_ref())?;
        let span = self.inner.span.clone();
        self.inner.catch_up(&tip).instrument(span).await?;
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            tip,
        };
        self.inner.save_snapshot(&stored, Some(&applied))?;
        *self.inner.lock() = applied;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, SnapshotData>>, io::Error> {
        match self.inner.load_snapshot()? {
            Some(stored) => snapshot_of(stored).map(Some),
            None => Ok(None),
        }
    }
}
