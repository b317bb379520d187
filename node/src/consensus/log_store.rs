//! The Raft log and vote, on RocksDB.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use openraft::EntryPayload;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use ordo_ledger::{Block, Store};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};

use crate::timings::Timings;

use super::pace::Pace;
use super::{BlockEntry, CF_RAFT_LOG, CF_RAFT_STATE, TypeConfig, write_batch};
use ordo_wire::{decode_internal, encode_internal, encode_internal_sized};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Most recent entries kept in memory.
const RECENT_ENTRIES_MAX: usize = 64;
/// Most block bytes held by the recent entries.
const RECENT_BYTES_MAX: u64 = 32 << 20;

/// Raft log storage. Cloning gives another handle (a log reader) on the same database.
///
/// The latest appended entries are also kept in memory, as appended: replication to each
/// follower and the state machine read them back soon after, and would otherwise each
/// read and decode the same blocks from RocksDB. The memory holds exactly what is on
/// disk: an entry enters it after its write is synced, and leaves it before a truncation
/// or purge is written.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    recent: Arc<Mutex<Recent>>,
    timings: Arc<Timings>,
    pace: Arc<Pace>,
}

/// Entries by index, and the block bytes they hold.
#[derive(Default)]
struct Recent {
    entries: BTreeMap<u64, EntryOf<TypeConfig>>,
    bytes: u64,
}

fn entry_bytes(entry: &EntryOf<TypeConfig>) -> u64 {
    match &entry.payload {
        EntryPayload::Normal(b) => b.block.encoded_len(),
        _ => 0,
    }
}

impl Recent {
    fn insert(&mut self, entry: EntryOf<TypeConfig>) {
        self.bytes += entry_bytes(&entry);
        if let Some(old) = self.entries.insert(entry.log_id.index, entry) {
            self.bytes -= entry_bytes(&old);
        }
        while self.entries.len() > RECENT_ENTRIES_MAX || self.bytes > RECENT_BYTES_MAX {
            let Some((_, old)) = self.entries.pop_first() else {
                break;
            };
            self.bytes -= entry_bytes(&old);
        }
    }

    /// Forgets the entries with indexes in `[from, to)`.
    fn remove(&mut self, from: u64, to: u64) {
        let doomed: Vec<u64> = self.entries.range(from..to).map(|(i, _)| *i).collect();
        for i in doomed {
            if let Some(old) = self.entries.remove(&i) {
                self.bytes -= entry_bytes(&old);
            }
        }
    }

    /// Every entry in `[start, end)`, if all are here.
    fn range(&self, start: u64, end: u64) -> Option<Vec<EntryOf<TypeConfig>>> {
        if start >= end || end == u64::MAX {
            return None;
        }
        let out: Vec<_> = self
            .entries
            .range(start..end)
            .map(|(_, e)| e.clone())
            .collect();
        (out.len() as u64 == end - start).then_some(out)
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// `[start, end)` of a range of log indexes.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl LogStore {
    /// Log storage in `store`'s database (opened with the consensus column families).
    pub fn new(store: Arc<Store>) -> LogStore {
        LogStore {
            store,
            recent: Arc::default(),
            timings: Arc::default(),
            pace: Arc::default(),
        }
    }

    /// As [`LogStore::new`], recording write times in `timings`.
    pub fn with_timings(store: Arc<Store>, timings: Arc<Timings>) -> LogStore {
        LogStore {
            timings,
            ..LogStore::new(store)
        }
    }

    /// The histograms this log records into.
    pub fn timings(&self) -> Arc<Timings> {
        self.timings.clone()
    }

    /// The pace of this log's synced writes (and, leading, of the followers').
    pub fn pace(&self) -> Arc<Pace> {
        self.pace.clone()
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().expect("recent-entries lock poisoned")
    }

    fn cached(&self, index: u64) -> Option<EntryOf<TypeConfig>> {
        self.recent().entries.get(&index).cloned()
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        super::cf(&self.store, name)
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self
            .store
            .db()
            .get_cf(self.cf(CF_RAFT_STATE), key)
            .map_err(io::Error::other)?
        {
            Some(bytes) => decode_internal(&bytes, "raft state").map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> io::Result<()> {
        write_batch(&self.store, batch, sync)
    }

    /// Whether this log holds `log_id` (an entry with that id, or a purged prefix reaching
    /// it). `None` (the empty prefix) is always held.
    pub fn holds(&self, log_id: Option<&LogIdOf<TypeConfig>>) -> io::Result<bool> {
        let Some(id) = log_id else { return Ok(true) };
        let purged: Option<LogIdOf<TypeConfig>> = self.get_state(KEY_LAST_PURGED)?;
        if purged.is_some_and(|p| p.index >= id.index) {
            return Ok(true);
        }
        if let Some(entry) = self.cached(id.index) {
            return Ok(entry.log_id == *id);
        }
        match self
            .store
            .db()
            .get_cf(self.cf(CF_RAFT_LOG), index_key(id.index))
            .map_err(io::Error::other)?
        {
            Some(bytes) => {
                Ok(decode_internal::<EntryOf<TypeConfig>>(&bytes, "raft log entry")?.log_id == *id)
            }
            None => Ok(false),
        }
    }

    /// The block of the last entry at or before `index` that carries one.
    pub fn last_block_through(&self, index: u64) -> io::Result<Option<Arc<Block>>> {
        let mut index = index;
        while let Some(entry) = self.cached(index) {
            if let EntryPayload::Normal(b) = entry.payload {
                return Ok(Some(b.block));
            }
            match index.checked_sub(1) {
                Some(i) => index = i,
                None => return Ok(None),
            }
        }
        let mode = IteratorMode::From(&index_key(index), Direction::Reverse);
        for item in self.store.db().iterator_cf(self.cf(CF_RAFT_LOG), mode) {
            let (_, v) = item.map_err(io::Error::other)?;
            let entry: EntryOf<TypeConfig> = decode_internal(&v, "raft log entry")?;
            if let EntryPayload::Normal(BlockEntry { block, .. }) = entry.payload {
                return Ok(Some(block));
            }
        }
        Ok(None)
    }

    /// The highest block height among the log's entries at or before `index` (`None`:
    /// none carries a block). Reads the whole log through `index`: for the rare append
    /// whose block's parent is nowhere to be found.
    pub fn max_height_through(&self, index: u64) -> io::Result<Option<u64>> {
        let mut max = None;
        let mode = IteratorMode::From(&index_key(index), Direction::Reverse);
        for item in self.store.db().iterator_cf(self.cf(CF_RAFT_LOG), mode) {
            let (_, v) = item.map_err(io::Error::other)?;
            let entry: EntryOf<TypeConfig> = decode_internal(&v, "raft log entry")?;
            if let EntryPayload::Normal(b) = entry.payload {
                max = max.max(Some(b.block.header.height));
            }
        }
        Ok(max)
    }

    /// Writes `entries` in one synced batch, then keeps them in memory.
    fn write_entries(&self, entries: Vec<EntryOf<TypeConfig>>) -> io::Result<()> {
        // Sized once, so a batch of large blocks is not copied again as it grows.
        let mut batch = WriteBatch::with_capacity_bytes(
            entries
                .iter()
                .map(|e| entry_bytes(e) as usize + 160)
                .sum::<usize>()
                + 64,
        );
        let cf = self.cf(CF_RAFT_LOG);
        for entry in &entries {
            let bytes = encode_internal_sized(entry, entry_bytes(entry) as usize + 128)?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        // Synced before the callback: an acknowledged entry is on disk.
        let started = Instant::now();
        {
            let _writing = self.pace.writing();
            self.write(batch, true)?;
        }
        self.timings.log_append.observe(started.elapsed());
        let mut recent = self.recent();
        for entry in entries {
            recent.insert(entry);
        }
        Ok(())
    }

    fn last_entry(&self) -> io::Result<Option<EntryOf<TypeConfig>>> {
        let mut it = self
            .store
            .db()
            .iterator_cf(self.cf(CF_RAFT_LOG), IteratorMode::End);
        match it.next() {
            Some(item) => {
                let (_, v) = item.map_err(io::Error::other)?;
                decode_internal(&v, "raft log entry").map(Some)
            }
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<TypeConfig>>, io::Error> {
        let (start, end) = index_range(&range);
        if let Some(entries) = self.recent().range(start, end) {
            return Ok(entries);
        }
        let mut out = Vec::new();
        let mode = IteratorMode::From(&index_key(start), Direction::Forward);
        for item in self.store.db().iterator_cf(self.cf(CF_RAFT_LOG), mode) {
            let (k, v) = item.map_err(io::Error::other)?;
            let key: [u8; 8] = (*k)
                .try_into()
                .map_err(|_| io::Error::other("raft log key is not 8 bytes"))?;
            if u64::from_be_bytes(key) >= end {
                break;
            }
            out.push(decode_internal(&v, "raft log entry")?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<TypeConfig>>, io::Error> {
        self.get_state(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogIdOf<TypeConfig>> = self.get_state(KEY_LAST_PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<TypeConfig>) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT_STATE), KEY_VOTE, encode_internal(vote)?);
        self.write(batch, true)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_RAFT_STATE),
            KEY_COMMITTED,
            encode_internal(&committed)?,
        );
        // Losing this on power failure only delays recovery of the commit point.
        self.write(batch, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<TypeConfig>>, io::Error> {
        Ok(self
            .get_state::<Option<LogIdOf<TypeConfig>>>(KEY_COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<EntryOf<TypeConfig>> = entries.into_iter().collect();
        // Encoding and the synced write take milliseconds (more when the disk is busy):
        // they run on a blocking thread, so the node's async threads keep serving.
        let this = self.clone();
        let result = crate::tasks::spawn_blocking(move || this.write_entries(entries))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("log append task failed: {e}"))));
        let report = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(report);
        result
    }

    async fn truncate_after(
        &mut self,
        last_log_id: Option<LogIdOf<TypeConfig>>,
    ) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.recent().remove(from, u64::MAX);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), index_key(from), index_key(u64::MAX));
        batch.delete_cf(self.cf(CF_RAFT_LOG), index_key(u64::MAX));
        self.write(batch, true)
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
        self.recent().remove(0, log_id.index + 1);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(CF_RAFT_STATE),
            KEY_LAST_PURGED,
            encode_internal(&log_id)?,
        );
        batch.delete_range_cf(
            self.cf(CF_RAFT_LOG),
            index_key(0),
            index_key(log_id.index + 1),
        );
        self.write(batch, true)
    }
}
