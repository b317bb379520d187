//! The Raft log and vote, on RocksDB.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::EntryPayload;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use ordo_ledger::{Block, Store};
use rocksdb::{ColumnFamily, Direction, IteratorMode, WriteBatch};

use super::{
    BlockEntry, CF_RAFT_LOG, CF_RAFT_STATE, TypeConfig, decode_internal, encode_internal,
    write_batch,
};

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Raft log storage. Cloning gives another handle (a log reader) on the same database.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
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
        LogStore { store }
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
        let mode = IteratorMode::From(&index_key(index), Direction::Reverse);
        for item in self.store.db().iterator_cf(self.cf(CF_RAFT_LOG), mode) {
            let (_, v) = item.map_err(io::Error::other)?;
            let entry: EntryOf<TypeConfig> = decode_internal(&v, "raft log entry")?;
            if let EntryPayload::Normal(BlockEntry(block)) = entry.payload {
                return Ok(Some(block));
            }
        }
        Ok(None)
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
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_RAFT_LOG);
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), encode_internal(&entry)?);
        }
        // Synced before the callback: an acknowledged entry is on disk.
        let result = self.write(batch, true);
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
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_RAFT_LOG), index_key(from), index_key(u64::MAX));
        batch.delete_cf(self.cf(CF_RAFT_LOG), index_key(u64::MAX));
        self.write(batch, true)
    }

    async fn purge(&mut self, log_id: LogIdOf<TypeConfig>) -> Result<(), io::Error> {
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
