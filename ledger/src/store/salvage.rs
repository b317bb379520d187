//! Salvage: opening a ledger whose table files are damaged.
//!
//! A damaged table file (bits flipped, truncated) either keeps RocksDB from opening the
//! database or fails every read of the keys it holds, and a compaction that reads it
//! fails. It must leave the database. RocksDB's repair does that (it sets aside every
//! table file that does not read back whole, in `lost/`), but it cannot be told which
//! column families may lose data: a co-located component's (the Raft state) may not,
//! since a validator that forgets what it voted or acknowledged breaks Raft's guarantees.
//!
//! So a salvage first flushes the write-ahead log into table files (the repair would drop
//! log records of column families it cannot name), then repairs a copy made of hard links
//! (table files are immutable), sees which
//! files the repair set aside, and keeps the copy only when each of them belongs to the
//! ledger's own column families. Then it puts the ledger back in order: the meta records
//! (format, chain, tip), and the index entries of every stored block if an index lost a
//! file. Blocks in a file set aside are missing now; [`Salvaged::lost_blocks`] names them
//! for the caller to fetch from peers (they were committed, so others hold them). The copy
//! replaces the ledger directory by two renames; an interrupted salvage is finished or
//! started again at the next open.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;

use super::tuning::{cf_options, db_options};
use super::{
    CF_BLOCK_HASHES, CF_BLOCKS, CF_CERTIFICATES, CF_META, CF_TX_INDEX, COLUMN_FAMILIES,
    ChainIdentity, FORMAT_VERSION, LEDGER_DIR, META_CHAIN_ID, META_FORMAT_VERSION,
    META_GENESIS_HASH, META_TIP, Result, Store, StoreError, StoreTuning, height_key,
    tx_location_value,
};
use crate::policy::BLOCK_BYTES_LIMIT;
use crate::types::{Block, ChainTip};

/// A file in the ledger directory that asks the next open to salvage it, holding why.
pub const SALVAGE_MARKER: &str = "SALVAGE";
/// The copy a salvage works on, beside the ledger directory.
const WORK_DIR: &str = "ledger.salvage";
/// The damaged ledger directory while the copy takes its place.
const OLD_DIR: &str = "ledger.damaged";
/// Written into the copy once it is complete.
const DONE_MARKER: &str = "SALVAGED";
/// Blocks rewritten per batch when indexes are rebuilt.
const REINDEX_BATCH_BLOCKS: usize = 256;

/// What a salvage did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Salvaged {
    /// Why it ran: the error that kept the ledger from opening, or the request's reason.
    pub reason: String,
    /// The table files set aside (now in `ledger/lost/`), each with its column family.
    pub files: Vec<(String, String)>,
    /// Heights whose blocks were in those files and are missing now, as inclusive
    /// ranges: to fetch from peers.
    pub lost_blocks: Vec<(u64, u64)>,
    /// Blocks whose index entries were written again.
    pub reindexed_blocks: u64,
    /// Whether the meta records were written again.
    pub meta_rewritten: bool,
}

impl Store {
    /// Asks the next [`Store::open_salvaging`] to salvage this ledger, for `reason` (a
    /// damaged table file found while running).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the request cannot be written.
    pub fn request_salvage(&self, reason: &str) -> Result<()> {
        self.salvage
            .lock()
            .expect("salvage lock poisoned")
            .get_or_insert_with(|| reason.to_owned());
        let marker = self.path.join(SALVAGE_MARKER);
        write_synced_file(&marker, reason.as_bytes()).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("cannot write {}: {e}", marker.display()),
        })
    }

    /// As [`Store::open_with_column_families`], salvaging the ledger first when damage
    /// keeps it from opening or a salvage was requested ([`Store::request_salvage`]).
    /// The column families in `extra` must come out of a salvage whole; if one of their
    /// files is damaged, the ledger is left as it was and the open fails.
    ///
    /// # Errors
    /// As [`Store::open_with_column_families`]; [`StoreError::Unsalvageable`] when the
    /// damage cannot be salvaged.
    pub fn open_salvaging(
        data_dir: &Path,
        identity: &ChainIdentity,
        extra: &[&str],
        tuning: &StoreTuning,
    ) -> Result<(Store, Option<Salvaged>)> {
        finish_swap(data_dir)?;
        let path = data_dir.join(LEDGER_DIR);
        let requested = std::fs::read_to_string(path.join(SALVAGE_MARKER)).ok();
        let reason = match requested {
            Some(reason) => format!("requested: {}", reason.trim()),
            None => match Store::open_with_column_families(data_dir, identity, extra, tuning) {
                Ok(store) => return Ok((store, None)),
                Err(e) if e.is_damage() => e.to_string(),
                Err(e) => return Err(e),
            },
        };
        let salvaged = salvage(data_dir, identity, extra, tuning, reason)?;
        let store = Store::open_with_column_families(data_dir, identity, extra, tuning)?;
        Ok((store, Some(salvaged)))
    }
}

fn unsalvageable(path: &Path, what: String) -> StoreError {
    StoreError::Unsalvageable {
        path: path.to_owned(),
        what,
    }
}

fn io(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("{what}: {e}"),
    }
}

fn write_synced_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Completes a salvage interrupted between its two renames, and removes what an
/// interrupted one left.
fn finish_swap(data_dir: &Path) -> Result<()> {
    let (ledger, work, old) = (
        data_dir.join(LEDGER_DIR),
        data_dir.join(WORK_DIR),
        data_dir.join(OLD_DIR),
    );
    let err = |what, e| io(&ledger, what, e);
    if !ledger.exists() && work.join(DONE_MARKER).is_file() {
        std::fs::rename(&work, &ledger).map_err(|e| err("cannot finish a salvage", e))?;
        sync_dir(data_dir).map_err(|e| err("cannot sync the data directory", e))?;
        let _ = std::fs::remove_file(ledger.join(DONE_MARKER));
    }
    if ledger.exists() {
        for dir in [&work, &old] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .map_err(|e| err("cannot remove an earlier salvage's copy", e))?;
            }
        }
    }
    Ok(())
}

/// One table file as the database's manifest lists it.
struct TableFile {
    cf: String,
    start: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
}

/// The table files of the database at `path`, by file name, from a read-only open that
/// tolerates damaged files.
fn table_files(path: &Path, cfs: &[&str]) -> Result<HashMap<String, TableFile>> {
    let mut opts = Options::default();
    opts.set_paranoid_checks(false);
    let descriptors = cfs
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n)));
    let db =
        DB::open_cf_descriptors_read_only(&opts, path, descriptors, false).map_err(|source| {
            StoreError::Db {
                path: path.to_owned(),
                source,
            }
        })?;
    let files = db.live_files().map_err(|source| StoreError::Db {
        path: path.to_owned(),
        source,
    })?;
    Ok(files
        .into_iter()
        .map(|f| {
            let name = f.name.trim_start_matches('/').to_owned();
            let file = TableFile {
                cf: f.column_family_name,
                start: f.start_key,
                end: f.end_key,
            };
            (name, file)
        })
        .collect())
}

/// Moves what the write-ahead log holds into table files. RocksDB's repair learns the
/// column families from the table files (it sets the manifest aside), and drops log
/// records of any it does not know: the Raft state written since the last flush among
/// them. Opened tolerating damaged files, without compactions (which could read one).
fn flush_write_ahead_log(path: &Path, cfs: &[&str]) -> Result<()> {
    let mut opts = db_options(&StoreTuning::default());
    opts.create_if_missing(false);
    opts.set_paranoid_checks(false);
    opts.set_disable_auto_compactions(true);
    let descriptors = cfs.iter().map(|n| {
        let mut o = cf_options(n);
        o.set_disable_auto_compactions(true);
        ColumnFamilyDescriptor::new(*n, o)
    });
    let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|e| {
        unsalvageable(
            path,
            format!("it cannot be opened even to flush its write-ahead log first: {e}"),
        )
    })?;
    let handles: Vec<_> = cfs.iter().filter_map(|n| db.cf_handle(n)).collect();
    db.flush_cfs_opt(&handles, &rocksdb::FlushOptions::default())
        .map_err(|source| StoreError::Db {
            path: path.to_owned(),
            source,
        })
}

/// Hard-links every file of `from` into a new directory `to`.
fn link_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != SALVAGE_MARKER {
            std::fs::hard_link(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn height_of_key(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn salvage(
    data_dir: &Path,
    identity: &ChainIdentity,
    extra: &[&str],
    tuning: &StoreTuning,
    reason: String,
) -> Result<Salvaged> {
    let (ledger, work) = (data_dir.join(LEDGER_DIR), data_dir.join(WORK_DIR));
    let cfs: Vec<&str> = COLUMN_FAMILIES
        .iter()
        .copied()
        .chain(extra.iter().copied())
        .collect();
    flush_write_ahead_log(&ledger, &cfs)?;
    let listed = table_files(&ledger, &cfs)?;
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| io(&work, "cannot remove", e))?;
    }
    link_copy(&ledger, &work).map_err(|e| io(&work, "cannot make the salvage copy", e))?;
    let mut repair = Options::default();
    repair.create_if_missing(false);
    DB::repair(&repair, &work).map_err(|source| StoreError::Db {
        path: work.clone(),
        source,
    })?;
    let mut out = Salvaged {
        reason,
        ..Salvaged::default()
    };
    let lost_dir = work.join("lost");
    let mut lost_cfs = BTreeSet::new();
    for entry in std::fs::read_dir(&lost_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(file) = listed.get(&name) else {
            continue;
        };
        if extra.contains(&file.cf.as_str()) {
            let _ = std::fs::remove_dir_all(&work);
            return Err(unsalvageable(
                &ledger,
                format!(
                    "table file {name} of column family '{}' is damaged; that state cannot be \
                     rebuilt from the chain",
                    file.cf
                ),
            ));
        }
        if file.cf == CF_BLOCKS
            && let (Some(a), Some(b)) = (
                file.start.as_deref().and_then(height_of_key),
                file.end.as_deref().and_then(height_of_key),
            )
        {
            out.lost_blocks.push((a, b));
        }
        lost_cfs.insert(file.cf.clone());
        out.files.push((file.cf.clone(), name));
    }
    out.lost_blocks.sort_unstable();
    {
        let descriptors = cfs
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n)));
        let db =
            DB::open_cf_descriptors(&db_options(tuning), &work, descriptors).map_err(|source| {
                StoreError::Db {
                    path: work.clone(),
                    source,
                }
            })?;
        let fix = Fixer {
            db: &db,
            path: &ledger,
        };
        if lost_cfs.contains(CF_META) {
            fix.meta(identity, &out.lost_blocks)?;
            out.meta_rewritten = true;
        }
        if lost_cfs.contains(CF_TX_INDEX)
            || lost_cfs.contains(CF_BLOCK_HASHES)
            || lost_cfs.contains(CF_CERTIFICATES)
        {
            out.reindexed_blocks = fix.reindex()?;
        }
        db.flush_wal(true).map_err(|source| StoreError::Db {
            path: work.clone(),
            source,
        })?;
    }
    // The swap: the damaged directory aside, the copy in its place (finish_swap completes
    // it after a crash in between), the damaged one removed.
    write_synced_file(&work.join(DONE_MARKER), b"").map_err(|e| io(&work, "cannot write", e))?;
    let old = data_dir.join(OLD_DIR);
    std::fs::rename(&ledger, &old).map_err(|e| io(&ledger, "cannot move aside", e))?;
    std::fs::rename(&work, &ledger).map_err(|e| io(&work, "cannot move into place", e))?;
    sync_dir(data_dir).map_err(|e| io(data_dir, "cannot sync", e))?;
    let _ = std::fs::remove_file(ledger.join(DONE_MARKER));
    std::fs::remove_dir_all(&old).map_err(|e| io(&old, "cannot remove", e))?;
    Ok(out)
}

/// Puts a repaired copy's ledger records back in order.
struct Fixer<'a> {
    db: &'a DB,
    path: &'a Path,
}

impl Fixer<'_> {
    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family opened with the database")
    }

    fn err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::Db {
            path: self.path.to_owned(),
            source,
        }
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(|e| self.err(e))
    }

    fn block(&self, height: u64) -> Result<Option<Block>> {
        let Some(bytes) = self.get(CF_BLOCKS, &height_key(height))? else {
            return Ok(None);
        };
        Block::from_bytes(&bytes, BLOCK_BYTES_LIMIT)
            .map(Some)
            .map_err(|e| unsalvageable(self.path, format!("block at height {height}: {e}")))
    }

    fn highest_stored(&self) -> Result<Option<u64>> {
        match self
            .db
            .iterator_cf(self.cf(CF_BLOCKS), IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (k, _) = item.map_err(|e| self.err(e))?;
                Ok(height_of_key(&k))
            }
            None => Ok(None),
        }
    }

    /// Writes the meta records again: the chain's identity (checked against a stored
    /// block's header), the format version, and the tip — the highest block ever
    /// stored, stored or lost.
    fn meta(&self, identity: &ChainIdentity, lost: &[(u64, u64)]) -> Result<()> {
        let stored = self.highest_stored()?;
        if let Some(h) = stored
            && let Some(block) = self.block(h)?
            && block.header.chain_id != identity.chain_id
        {
            return Err(unsalvageable(
                self.path,
                format!(
                    "its blocks belong to chain '{}', not '{}'",
                    block.header.chain_id, identity.chain_id
                ),
            ));
        }
        let highest = stored
            .into_iter()
            .chain(lost.iter().map(|(_, b)| *b))
            .max()
            .unwrap_or(0);
        let recorded: Option<ChainTip> = self
            .get(CF_META, META_TIP)?
            .and_then(|b| borsh::from_slice(&b).ok());
        let tip = match recorded {
            // Only one block is ever appended at a height: a record at the highest one
            // is that block's.
            Some(tip) if tip.height == highest => tip,
            _ if highest == 0 => ChainTip::genesis(identity.genesis_hash),
            _ => match self.block(highest)? {
                Some(block) => block.tip(),
                None => {
                    return Err(unsalvageable(
                        self.path,
                        format!(
                            "the tip record and the tip block (height {highest}) are both lost"
                        ),
                    ));
                }
            },
        };
        let cf = self.cf(CF_META);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, META_FORMAT_VERSION, FORMAT_VERSION.to_le_bytes());
        batch.put_cf(cf, META_CHAIN_ID, identity.chain_id.as_bytes());
        batch.put_cf(cf, META_GENESIS_HASH, identity.genesis_hash.as_bytes());
        batch.put_cf(cf, META_TIP, borsh::to_vec(&tip).expect("encodes"));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(|e| self.err(e))
    }

    /// Writes the hash, transaction and certificate index entries of every stored block
    /// again.
    fn reindex(&self) -> Result<u64> {
        let (hashes, txs) = (self.cf(CF_BLOCK_HASHES), self.cf(CF_TX_INDEX));
        let certs = self.cf(CF_CERTIFICATES);
        let mut batch = WriteBatch::default();
        let (mut in_batch, mut total) = (0, 0);
        for item in self.db.iterator_cf(self.cf(CF_BLOCKS), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let Some(height) = height_of_key(&k) else {
                continue;
            };
            let block = Block::from_bytes(&v, BLOCK_BYTES_LIMIT)
                .map_err(|e| unsalvageable(self.path, format!("block at height {height}: {e}")))?;
            batch.put_cf(hashes, block.hash().as_bytes(), height_key(height));
            for (i, id) in block.tx_ids().iter().enumerate() {
                batch.put_cf(txs, id.as_bytes(), tx_location_value(height, i as u32));
            }
            for cert in &block.certificates {
                batch.put_cf(certs, height_key(cert.height), crate::encode(cert));
            }
            in_batch += 1;
            total += 1;
            if in_batch == REINDEX_BATCH_BLOCKS {
                self.db
                    .write(std::mem::take(&mut batch))
                    .map_err(|e| self.err(e))?;
                in_batch = 0;
            }
        }
        self.db.write(batch).map_err(|e| self.err(e))?;
        Ok(total)
    }
}
