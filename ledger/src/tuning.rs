//! How a writable store paces what it writes in the background: plain values, so that a
//! configuration can name them without the store (`store/tuning.rs` turns them into
//! RocksDB's options).

/// How a writable store paces the writes it makes in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreTuning {
    /// Most bytes per second that memtable flushes and compactions write together; 0 for
    /// no limit. Foreground writes (the write-ahead log that every synced write waits
    /// for) are never limited.
    pub background_write_bytes_per_s: u64,
}

/// Default for [`StoreTuning::background_write_bytes_per_s`]: 128 MiB/s.
pub const BACKGROUND_WRITE_BYTES_PER_S_DEFAULT: u64 = 128 << 20;

/// How often the background-write limit hands out its allowance: it grants at most a
/// rate × this much at a time (0.64 MiB at the default rate).
pub const BACKGROUND_WRITE_REFILL: std::time::Duration = std::time::Duration::from_millis(5);

impl Default for StoreTuning {
    fn default() -> StoreTuning {
        StoreTuning {
            background_write_bytes_per_s: BACKGROUND_WRITE_BYTES_PER_S_DEFAULT,
        }
    }
}
