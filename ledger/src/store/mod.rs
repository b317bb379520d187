//! The ledger store: the chain on disk, in RocksDB.
//!
//! Layout (one RocksDB database at `<data-dir>/ledger`):
//!
//! | column family  | key                  | value                               |
//! |----------------|----------------------|-------------------------------------|
//! | `blocks`       | height (u64 BE)      | canonical block bytes               |
//! | `block_hashes` | block hash (32 B)    | height (u64 BE)                     |
//! | `tx_index`     | transaction id (32 B)| height (u64 BE) ‖ index (u32 BE)    |
//! | `certificates` | height (u64 BE)      | the certificate of that block, from the block that carries it |
//! | `attestations` | height ‖ signer (32 B) ‖ block hash (32 B) | signature (64 B): the uncertified tail's |
//! | `evidence`     | height ‖ signer ‖ block hash | signature: attestations of blocks not in this chain |
//! | `meta`         | name                 | format version, chain id, genesis hash, tip |
//!
//! Appending a block is one `WriteBatch` (block, hash, every transaction id, the
//! certificates it carries, the attestations they make redundant removed, new tip),
//! written with `sync` (or, for the Raft state machine, synced by the next synced write:
//! [`Durability`]): after a crash at any instant the store holds either the old tip or a
//! newer one, never part of a block. The store checks the block links to its tip but does
//! not re-verify signatures: callers append only blocks that passed
//! [`verify_block`](crate::verify_block), and [`audit`](crate::audit) re-checks everything.
//!
//! How RocksDB is tuned for this (memtables, pacing of background writes, the index's
//! hashed memtable) is in [`tuning`].

mod attest;
mod check;
mod error;
mod salvage;
mod tuning;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ordo_crypto::{Hash, merkle};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;

use crate::policy::BLOCK_BYTES_LIMIT;
use crate::policy::ChainIdentity;
use crate::tuning::StoreTuning;
use crate::types::{Block, ChainTip, SignedTransaction, TxId};
pub use attest::{EVIDENCE_RECORDS_MAX, ReceiptLookup};
pub use check::{CheckDepth, Checked, Damage};
pub use error::{Result, StoreError};
pub use salvage::{SALVAGE_MARKER, Salvaged};
use tuning::{cf_options, db_options};

const CF_BLOCKS: &str = "blocks";
const CF_BLOCK_HASHES: &str = "block_hashes";
pub(crate) const CF_TX_INDEX: &str = "tx_index";
const CF_META: &str = "meta";
const CF_CERTIFICATES: &str = "certificates";
const CF_ATTESTATIONS: &str = "attestations";
const CF_EVIDENCE: &str = "evidence";
/// The ledger's own column families (`docs/format.md` §9); a validator's database holds
/// its consensus state's besides.
pub const COLUMN_FAMILIES: [&str; 7] = [
    CF_BLOCKS,
    CF_BLOCK_HASHES,
    CF_TX_INDEX,
    CF_META,
    CF_CERTIFICATES,
    CF_ATTESTATIONS,
    CF_EVIDENCE,
];
/// Most recent block hashes kept in memory, for checking certificates as blocks append.
const RECENT_HASHES_MAX: usize = 2 * crate::policy::CERTIFY_LAG_LIMIT as usize;

const META_FORMAT_VERSION: &[u8] = b"format_version";
const META_CHAIN_ID: &[u8] = b"chain_id";
const META_GENESIS_HASH: &[u8] = b"genesis_hash";
const META_TIP: &[u8] = b"tip";

/// Version of this on-disk layout (2: blocks carry certificates; attestations are kept).
pub const FORMAT_VERSION: u32 = 2;

/// Subdirectory of a node's data directory that holds the ledger database.
pub const LEDGER_DIR: &str = "ledger";

/// How an append reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the append returns.
    Synced,
    /// Written to the database's write-ahead log and synced by the next synced write to the
    /// same database, in order: after a crash the store holds a prefix of its appends, each
    /// whole. For a caller that can append again what a crash takes back, because a synced
    /// record it keeps in this database (the Raft log) holds the block.
    WithNextSync,
}

/// A transaction found in the chain, with the proof that its block commits to it.
#[derive(Clone, Debug, Serialize)]
pub struct TxInclusion {
    /// The transaction.
    pub tx: SignedTransaction,
    /// Its id.
    pub id: TxId,
    /// Height of its block.
    pub height: u64,
    /// Position in the block.
    pub index: u32,
    /// Hash of its block.
    pub block_hash: Hash,
    /// The block header's Merkle root.
    pub tx_root: Hash,
    /// Merkle inclusion proof of `id` under `tx_root`.
    pub proof: merkle::Proof,
}

/// The chain on disk.
pub struct Store {
    db: DB,
    path: PathBuf,
    identity: ChainIdentity,
    read_only: bool,
    /// Cached tip; the lock also serialises appends.
    tip: Mutex<ChainTip>,
    /// Hashes of the latest blocks by height (at most [`RECENT_HASHES_MAX`]).
    recent_hashes: Mutex<BTreeMap<u64, Hash>>,
    /// Records in the evidence column family, once counted.
    evidence_records: Mutex<Option<u64>>,
    /// Why the ledger wants a salvage, once a read or write met a damaged table file or
    /// one was requested ([`Store::salvage_wanted`]).
    salvage: Mutex<Option<String>>,
}

fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

fn tx_location_value(height: u64, index: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&height.to_be_bytes());
    v[8..].copy_from_slice(&index.to_be_bytes());
    v
}

impl Store {
    /// Opens the ledger in `data_dir`, creating it for `identity` if there is none.
    ///
    /// # Errors
    /// [`StoreError::ChainMismatch`] when the ledger belongs to another chain,
    /// [`StoreError::FormatVersion`], [`StoreError::Corrupt`] or [`StoreError::Db`].
    pub fn open(data_dir: &Path, identity: &ChainIdentity) -> Result<Store> {
        Store::open_with_column_families(data_dir, identity, &[], &StoreTuning::default())
    }

    /// As [`Store::open`], also opening (creating if needed) `extra` column families that a
    /// co-located component keeps in the same database, so that it can write to them in the
    /// same atomic batch as a block (see [`Store::append_with`]), and pacing background
    /// writes by `tuning`.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_column_families(
        data_dir: &Path,
        identity: &ChainIdentity,
        extra: &[&str],
        tuning: &StoreTuning,
    ) -> Result<Store> {
        let path = data_dir.join(LEDGER_DIR);
        std::fs::create_dir_all(&path).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            what: format!("cannot create directory: {e}"),
        })?;
        let cfs = COLUMN_FAMILIES
            .iter()
            .chain(extra)
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n)));
        let db = DB::open_cf_descriptors(&db_options(tuning), &path, cfs).map_err(|source| {
            StoreError::Db {
                path: path.clone(),
                source,
            }
        })?;
        Store::init(db, path, identity, false)
    }

    /// Opens an existing ledger without writing to it (for audits and queries; works while a
    /// node has the ledger open, and ignores column families other components keep there).
    ///
    /// # Errors
    /// As [`Store::open`], plus [`StoreError::NotFound`] when there is no ledger.
    pub fn open_read_only(data_dir: &Path, identity: &ChainIdentity) -> Result<Store> {
        let path = data_dir.join(LEDGER_DIR);
        if !path.join("CURRENT").is_file() {
            return Err(StoreError::NotFound(path));
        }
        let cfs = COLUMN_FAMILIES
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n)));
        let unlimited = StoreTuning {
            background_write_bytes_per_s: 0,
        };
        let db = DB::open_cf_descriptors_read_only(&db_options(&unlimited), &path, cfs, false)
            .map_err(|source| StoreError::Db {
                path: path.clone(),
                source,
            })?;
        Store::init(db, path, identity, true)
    }

    fn init(db: DB, path: PathBuf, identity: &ChainIdentity, read_only: bool) -> Result<Store> {
        let mut store = Store {
            db,
            path,
            identity: identity.clone(),
            read_only,
            tip: Mutex::new(ChainTip::genesis(identity.genesis_hash)),
            recent_hashes: Mutex::default(),
            evidence_records: Mutex::new(None),
            salvage: Mutex::new(None),
        };
        match store.get(CF_META, META_FORMAT_VERSION)? {
            None if read_only => return Err(StoreError::NotFound(store.path.clone())),
            None => store.write_meta()?,
            Some(v) => store.check_meta(&v)?,
        }
        let tip = match store.get(CF_META, META_TIP)? {
            Some(bytes) => {
                borsh::from_slice(&bytes).map_err(|e| store.corrupt(format!("tip record: {e}")))?
            }
            None => ChainTip::genesis(identity.genesis_hash),
        };
        store.tip = Mutex::new(tip);
        Ok(store)
    }

    fn write_meta(&self) -> Result<()> {
        let cf = self.cf(CF_META);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, META_FORMAT_VERSION, FORMAT_VERSION.to_le_bytes());
        batch.put_cf(cf, META_CHAIN_ID, self.identity.chain_id.as_bytes());
        batch.put_cf(cf, META_GENESIS_HASH, self.identity.genesis_hash.as_bytes());
        self.write_synced(batch)
    }

    fn check_meta(&self, version: &[u8]) -> Result<()> {
        let found = <[u8; 4]>::try_from(version)
            .map(u32::from_le_bytes)
            .map_err(|_| self.corrupt("format version record".into()))?;
        if found != FORMAT_VERSION {
            return Err(StoreError::FormatVersion {
                path: self.path.clone(),
                found,
            });
        }
        let chain = self
            .get(CF_META, META_CHAIN_ID)?
            .ok_or_else(|| self.corrupt("no chain id".into()))?;
        let genesis = self
            .get(CF_META, META_GENESIS_HASH)?
            .ok_or_else(|| self.corrupt("no genesis hash".into()))?;
        let found_chain = String::from_utf8_lossy(&chain).into_owned();
        let found_genesis = <[u8; 32]>::try_from(genesis.as_slice())
            .map(Hash)
            .map_err(|_| self.corrupt("genesis hash record".into()))?;
        if found_chain != self.identity.chain_id || found_genesis != self.identity.genesis_hash {
            return Err(StoreError::ChainMismatch {
                path: self.path.clone(),
                found: Box::new(ChainIdentity {
                    chain_id: found_chain,
                    genesis_hash: found_genesis,
                }),
                expected: Box::new(self.identity.clone()),
            });
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // Every column family in COLUMN_FAMILIES is opened with the database.
        self.db
            .cf_handle(name)
            .expect("column family opened with the database")
    }

    fn db_err(&self, source: rocksdb::Error) -> StoreError {
        if source.kind() == rocksdb::ErrorKind::Corruption && !self.read_only {
            let mut salvage = self.salvage.lock().expect("salvage lock poisoned");
            salvage.get_or_insert_with(|| format!("a damaged table file: {source}"));
        }
        StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(|e| self.db_err(e))
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(|e| self.db_err(e))
    }

    /// The chain this store belongs to.
    pub fn identity(&self) -> &ChainIdentity {
        &self.identity
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying database, for a co-located component's own column families (opened
    /// with [`Store::open_with_column_families`]). The ledger's column families are the
    /// ledger's alone: write them only through this type.
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Why this (writable) store wants a salvage, if it does: a read or write met a
    /// damaged table file, which every later read that touches it meets again (and a
    /// compaction that reads it fails), or [`Store::request_salvage`] asked for one. Only
    /// reopening sets the file aside (`Store::open_salvaging`).
    pub fn salvage_wanted(&self) -> Option<String> {
        self.salvage.lock().expect("salvage lock poisoned").clone()
    }

    /// The current tip (the genesis tip when the chain is empty).
    pub fn tip(&self) -> ChainTip {
        *self.tip.lock().expect("tip lock poisoned")
    }

    /// Appends `block` on top of the tip, durably (synced) and atomically.
    ///
    /// The block must already have passed [`verify_block`](crate::verify_block) against the
    /// tip; this checks only that it links to the tip and that none of its transactions is
    /// already committed.
    ///
    /// # Errors
    /// [`StoreError::NotNext`], [`StoreError::AlreadyCommitted`], [`StoreError::ReadOnly`] or
    /// [`StoreError::Db`]. On error nothing is written.
    pub fn append(&self, block: &Block) -> Result<ChainTip> {
        self.append_with_ids(block, &block.tx_ids())
    }

    /// As [`Store::append`], reusing the transaction ids the caller computed while verifying.
    ///
    /// # Errors
    /// As [`Store::append`].
    ///
    /// # Panics
    /// If `ids` does not have one id per transaction.
    pub fn append_with_ids(&self, block: &Block, ids: &[TxId]) -> Result<ChainTip> {
        self.append_with(block, ids, Durability::Synced, |_, _| {})
    }

    /// As [`Store::append_with_ids`], adding `extra` writes to the same atomic batch (for
    /// example the consensus state that records which log entry the block came from), and
    /// reaching the disk as `durability` says. `extra` receives the batch and the database,
    /// to look up its column families.
    ///
    /// # Errors
    /// As [`Store::append`].
    ///
    /// # Panics
    /// If `ids` does not have one id per transaction.
    pub fn append_with(
        &self,
        block: &Block,
        ids: &[TxId],
        durability: Durability,
        extra: impl FnOnce(&mut WriteBatch, &DB),
    ) -> Result<ChainTip> {
        assert_eq!(ids.len(), block.txs.len(), "one id per transaction");
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut tip = self.tip.lock().expect("tip lock poisoned");
        let h = &block.header;
        if h.height != tip.height + 1
            || h.prev_hash != tip.hash
            || h.chain_id != self.identity.chain_id
        {
            return Err(StoreError::NotNext {
                height: h.height,
                prev_hash: h.prev_hash,
                tip: *tip,
            });
        }
        self.check_not_committed(ids)?;
        self.check_certified_blocks(block)?;
        let new_tip = block.tip();
        let bytes = block.to_bytes();
        // Sized once for everything below (each record adds a tag, column family and
        // lengths), so a large block is not copied again each time the batch grows.
        let mut batch = WriteBatch::with_capacity_bytes(bytes.len() + ids.len() * 56 + 512);
        batch.put_cf(self.cf(CF_BLOCKS), height_key(h.height), &bytes);
        batch.put_cf(
            self.cf(CF_BLOCK_HASHES),
            new_tip.hash.as_bytes(),
            height_key(h.height),
        );
        let tx_cf = self.cf(CF_TX_INDEX);
        // In key order: each memtable insert then starts its search from the previous
        // one's position instead of from the top of the skip list (ids are random).
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_unstable_by_key(|i| ids[*i as usize]);
        for i in order {
            // verify_block bounds the count far below u32::MAX.
            batch.put_cf(
                tx_cf,
                ids[i as usize].as_bytes(),
                tx_location_value(h.height, i),
            );
        }
        self.put_certificates(&mut batch, block);
        self.drop_attestations(&mut batch, tip.certified, new_tip.certified)?;
        batch.put_cf(
            self.cf(CF_META),
            META_TIP,
            borsh::to_vec(&new_tip).expect("encodes"),
        );
        extra(&mut batch, &self.db);
        match durability {
            Durability::Synced => self.write_synced(batch)?,
            Durability::WithNextSync => self.db.write(batch).map_err(|e| self.db_err(e))?,
        }
        *tip = new_tip;
        self.remember_hash(new_tip.height, new_tip.hash);
        Ok(new_tip)
    }

    /// Flushes every column family's memtable to table files (a tidy exit; nothing
    /// acknowledged depends on it).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn flush_all(&self) -> Result<()> {
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &self.path)
            .map_err(|e| self.db_err(e))?;
        let cfs: Vec<_> = names.iter().filter_map(|n| self.db.cf_handle(n)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(|e| self.db_err(e))
    }

    /// Syncs every earlier write ([`Durability::WithNextSync`] appends among them) to disk.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn sync(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| self.db_err(e))
    }

    fn check_not_committed(&self, ids: &[TxId]) -> Result<()> {
        let cf = self.cf(CF_TX_INDEX);
        let found = self
            .db
            .multi_get_cf(ids.iter().map(|id| (cf, id.as_bytes())));
        for (id, res) in ids.iter().zip(found) {
            if let Some(v) = res.map_err(|e| self.db_err(e))? {
                let (height, _) = self.decode_location(&v)?;
                return Err(StoreError::AlreadyCommitted { id: *id, height });
            }
        }
        Ok(())
    }

    fn decode_location(&self, v: &[u8]) -> Result<(u64, u32)> {
        if v.len() != 12 {
            return Err(self.corrupt(format!("tx index entry of {} bytes", v.len())));
        }
        let height = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
        let index = u32::from_be_bytes(v[8..].try_into().expect("4 bytes"));
        Ok((height, index))
    }

    /// The canonical bytes of the block at `height`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>> {
        self.get(CF_BLOCKS, &height_key(height))
    }

    /// The block at `height`, if stored. The decoded header must say the same height, and
    /// the hash index must give this height for its hash (a record that is whole but not
    /// the block appended there is never returned).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the stored bytes do not decode to that block, or
    /// [`StoreError::Db`] (a failed checksum among others).
    pub fn block(&self, height: u64) -> Result<Option<Block>> {
        let Some(bytes) = self.block_bytes(height)? else {
            return Ok(None);
        };
        let block = Block::from_bytes(&bytes, BLOCK_BYTES_LIMIT)
            .map_err(|e| self.corrupt(format!("block at height {height}: {e}")))?;
        if block.header.height != height {
            return Err(self.corrupt(format!(
                "block stored at height {height} has header height {}",
                block.header.height
            )));
        }
        let hash = block.hash();
        if self.height_of(&hash)? != Some(height) {
            return Err(self.corrupt(format!(
                "block stored at height {height} hashes to {hash}, which the hash index \
                 does not give that height"
            )));
        }
        Ok(Some(block))
    }

    /// The height of the block with hash `hash`, if stored.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] or [`StoreError::Db`].
    pub fn height_of(&self, hash: &Hash) -> Result<Option<u64>> {
        let Some(v) = self.get(CF_BLOCK_HASHES, hash.as_bytes())? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| self.corrupt(format!("hash index entry for {hash}")))?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// The block with hash `hash`, if stored.
    ///
    /// # Errors
    /// As [`Store::block`].
    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Block>> {
        let Some(height) = self.height_of(hash)? else {
            return Ok(None);
        };
        let block = self
            .block(height)?
            .ok_or_else(|| self.corrupt(format!("hash {hash} indexes missing height {height}")))?;
        if block.hash() != *hash {
            return Err(self.corrupt(format!(
                "hash {hash} indexes height {height}, whose hash differs"
            )));
        }
        Ok(Some(block))
    }

    /// Where transaction `id` is committed: (height, index in block).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] or [`StoreError::Db`].
    pub fn tx_location(&self, id: &TxId) -> Result<Option<(u64, u32)>> {
        match self.get(CF_TX_INDEX, id.as_bytes())? {
            Some(v) => self.decode_location(&v).map(Some),
            None => Ok(None),
        }
    }

    /// Transaction `id` with its Merkle inclusion proof, if committed.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the index and the block disagree, or [`StoreError::Db`].
    pub fn tx_with_proof(&self, id: &TxId) -> Result<Option<TxInclusion>> {
        let Some((height, index)) = self.tx_location(id)? else {
            return Ok(None);
        };
        let block = self
            .block(height)?
            .ok_or_else(|| self.corrupt(format!("tx {id} indexes missing height {height}")))?;
        let ids = block.tx_ids();
        let i = index as usize;
        if ids.get(i) != Some(id) {
            return Err(self.corrupt(format!(
                "tx {id} indexes height {height} position {index}, which holds another"
            )));
        }
        let proof = merkle::prove(&ids, i).expect("index checked above");
        Ok(Some(TxInclusion {
            id: *id,
            height,
            index,
            block_hash: block.hash(),
            tx_root: block.header.tx_root,
            tx: block.txs.into_iter().nth(i).expect("index checked above"),
            proof,
        }))
    }

    /// Stored blocks from `from` upwards as (height key, raw bytes), in height order,
    /// streaming from disk.
    pub fn raw_blocks_from(&self, from: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        let start = height_key(from);
        self.db
            .iterator_cf(
                self.cf(CF_BLOCKS),
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            )
            .map(move |item| {
                let (k, v) = item.map_err(|e| self.db_err(e))?;
                let key: [u8; 8] = (*k)
                    .try_into()
                    .map_err(|_| self.corrupt(format!("block key of {} bytes", k.len())))?;
                Ok((u64::from_be_bytes(key), v.into_vec()))
            })
    }

    /// Number of entries in the transaction index (a full scan).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn count_tx_index(&self) -> Result<u64> {
        self.count_entries(CF_TX_INDEX)
    }

    /// Number of entries in the block hash index (a full scan).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn count_hash_index(&self) -> Result<u64> {
        self.count_entries(CF_BLOCK_HASHES)
    }

    /// Number of entries in the certificate index (a full scan).
    ///
    /// # Errors
    /// [`StoreError::Db`].
    pub fn count_certificate_index(&self) -> Result<u64> {
        self.count_entries(CF_CERTIFICATES)
    }

    fn count_entries(&self, cf: &str) -> Result<u64> {
        let mut n = 0;
        // Every entry in key order, whatever the column family's memtable (see cf_options).
        let mut read = rocksdb::ReadOptions::default();
        read.set_total_order_seek(true);
        for item in self
            .db
            .iterator_cf_opt(self.cf(cf), read, IteratorMode::Start)
        {
            item.map_err(|e| self.db_err(e))?;
            n += 1;
        }
        Ok(n)
    }
}
