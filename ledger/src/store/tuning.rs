//! RocksDB's settings for the ledger: memtables of random sizes (so column families and
//! co-located validators do not flush at once), background writes paced in small slices
//! (so synced writes do not queue behind a flush), and a hashed memtable with bloom
//! filters for the transaction index (`docs/design/storage.md`).

use rocksdb::Options;

use super::CF_TX_INDEX;
use crate::tuning::{BACKGROUND_WRITE_REFILL, StoreTuning};

pub(super) fn db_options(tuning: &StoreTuning) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_open_files(512);
    // The transaction index's hash memtable takes one writer at a time; ordo's writes
    // are few and large (one batch per block), so this costs nothing.
    opts.set_allow_concurrent_memtable_write(false);
    opts.set_keep_log_file_num(4);
    // The MANIFEST records each closed write-ahead log's synced size: at open, a closed
    // log that is missing or shorter than that is corruption, not a shorter history to
    // replay silently (what it held may be Raft votes and entries already acknowledged).
    // The live log's synced size is not recorded (docs/design/storage.md).
    opts.set_track_and_verify_wals_in_manifest(true);
    // Write files back to disk as they grow, so that a synced write never has to wait for
    // a burst of dirty pages from a memtable flush or a compaction.
    opts.set_bytes_per_sync(1 << 20);
    opts.set_wal_bytes_per_sync(1 << 20);
    // Without a limit, a memtable flush hands the disk tens of megabytes at once, and the
    // synced write-ahead-log writes that every commit waits for queue behind them (stalls
    // of 100-200 ms on a shared disk). Granted in small slices, the same flush goes out
    // at a steady rate between them.
    if let Some((rate, refill_us)) = background_write_limit(tuning) {
        opts.set_ratelimiter(rate, refill_us, 10);
    }
    opts
}

/// RocksDB's rate limiter settings for `tuning`: bytes per second and refill period in
/// microseconds, or none for no limit.
fn background_write_limit(tuning: &StoreTuning) -> Option<(i64, i64)> {
    let rate = tuning.background_write_bytes_per_s;
    (rate > 0).then(|| {
        let refill_us = i64::try_from(BACKGROUND_WRITE_REFILL.as_micros()).unwrap_or(i64::MAX);
        (i64::try_from(rate).unwrap_or(i64::MAX), refill_us)
    })
}

/// Smallest memtable of a column family; each one gets this plus a random part below
/// [`MEMTABLE_SPREAD_BYTES`].
const MEMTABLE_MIN_BYTES: usize = 48 << 20;
/// Range of the random part of a memtable's size.
const MEMTABLE_SPREAD_BYTES: usize = 32 << 20;

/// The memtable size for one column family, from a random `seed`: between
/// [`MEMTABLE_MIN_BYTES`] and that plus [`MEMTABLE_SPREAD_BYTES`].
///
/// Column families that grow at the same rate (the Raft log and the blocks take every
/// block) and validators that share a disk and cores (a devnet, or several on one host)
/// would otherwise fill their memtables at the same moment and flush together: a burst of
/// hundreds of megabytes that stalls every commit for most of a second. Sizes drawn
/// apart spread the flushes out. Memtable sizes change nothing about what is stored.
fn memtable_bytes(seed: u64) -> usize {
    MEMTABLE_MIN_BYTES + (seed % MEMTABLE_SPREAD_BYTES as u64) as usize
}

/// Bytes of a transaction id that pick its hash bucket in the index's memtable.
const TX_INDEX_BUCKET_PREFIX: usize = 8;
/// Hash buckets of the index's memtable: one or two ids each in a full memtable (48–80
/// MiB held 600,000–800,000 ids when flushed in 1,000,000-transaction runs), and 4 MiB of
/// bucket pointers taken from the memtable.
///
/// The ids are sorted once, at the flush, into a skip list built for the table file
/// (0.65–2.4 s of one core per flush in those runs). Measured against it (`docs/perf-log/`,
/// rounds 08 and 09): the default skip list at this size costs less CPU in closed-loop runs
/// but more at half the peak, and a small (8 MiB) memtable stalls synced writes with its
/// compactions, since every L0 file of random ids overlaps all of L1.
const TX_INDEX_BUCKETS: usize = 1 << 19;

/// Options of one column family: a memtable of its own random size ([`memtable_bytes`]).
/// The transaction index is read once per admitted transaction and once per committed
/// one, and nearly every lookup misses (the id is new): bloom filters, in the memtable and
/// in the table files, answer those misses without a search.
pub(super) fn cf_options(name: &str) -> Options {
    use std::hash::BuildHasher;
    let mut opts = Options::default();
    let seed = std::collections::hash_map::RandomState::new().hash_one(name);
    opts.set_write_buffer_size(memtable_bytes(seed));
    if name == CF_TX_INDEX {
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        opts.set_block_based_table_factory(&table);
        opts.set_memtable_prefix_bloom_ratio(0.1);
        opts.set_memtable_whole_key_filtering(true);
        // Ids are uniform hashes: bucketed by their first bytes into a hash table of short
        // sorted lists, each insert and lookup touches a bucket and an entry or two
        // instead of searching a skip list (one skip list of a million ids was the largest
        // cost outside signature checks; a hash of small skip lists still cost a few
        // searches each). Only point lookups read this column family while it is live; a
        // full scan sets `total_order_seek`.
        opts.set_prefix_extractor(rocksdb::SliceTransform::create_fixed_prefix(
            TX_INDEX_BUCKET_PREFIX,
        ));
        opts.set_memtable_factory(rocksdb::MemtableFactory::HashLinkList {
            bucket_count: TX_INDEX_BUCKETS,
        });
    }
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_writes_are_limited_in_small_slices_unless_turned_off() {
        let (rate, refill_us) =
            background_write_limit(&StoreTuning::default()).expect("limited by default");
        assert_eq!(rate, 128 << 20);
        assert_eq!(refill_us, 5_000);
        // One slice: 0.64 MiB, a few milliseconds of a disk's time, not a whole flush.
        assert_eq!(rate * refill_us / 1_000_000, 671_088);
        let off = StoreTuning {
            background_write_bytes_per_s: 0,
        };
        assert_eq!(background_write_limit(&off), None);
        let huge = StoreTuning {
            background_write_bytes_per_s: u64::MAX,
        };
        assert_eq!(background_write_limit(&huge).map(|l| l.0), Some(i64::MAX));
    }

    #[test]
    fn memtable_sizes_stay_in_their_range_and_differ() {
        use std::hash::BuildHasher;
        let sizes: Vec<usize> = (0..64)
            .map(|_| memtable_bytes(std::collections::hash_map::RandomState::new().hash_one(1u8)))
            .collect();
        for s in &sizes {
            assert!((MEMTABLE_MIN_BYTES..MEMTABLE_MIN_BYTES + MEMTABLE_SPREAD_BYTES).contains(s));
        }
        assert_eq!(memtable_bytes(0), MEMTABLE_MIN_BYTES);
        assert!(memtable_bytes(u64::MAX) < MEMTABLE_MIN_BYTES + MEMTABLE_SPREAD_BYTES);
        // Drawn apart: 64 draws over 32 MiB are not all within 1 MiB of each other.
        let (lo, hi) = (
            sizes.iter().min().expect("64"),
            sizes.iter().max().expect("64"),
        );
        assert!(hi - lo > 1 << 20, "{lo}..{hi}");
    }
}
