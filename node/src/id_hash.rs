//! Hashing for maps and sets keyed by transaction id: the ids are uniform SHA-256 outputs
//! already, so a few of their bytes, keyed per process, are a good hash.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};

use ordo_ledger::TxId;

/// Hashes transaction ids (already uniform SHA-256 outputs) cheaply: the first eight bytes,
/// mixed with a per-process random key so that clients cannot aim ids at one bucket.
#[derive(Clone)]
pub struct IdHashBuilder(u64);

impl Default for IdHashBuilder {
    fn default() -> IdHashBuilder {
        IdHashBuilder(rand_seed())
    }
}

fn rand_seed() -> u64 {
    use std::sync::OnceLock;
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        // RandomState is seeded from the OS; hashing nothing with it yields its key.
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            | 1
    })
}

/// See [`IdHashBuilder`].
pub struct IdHasher {
    key: u64,
    state: u64,
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            key: self.0,
            state: 0,
        }
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.state = self.state.rotate_left(29) ^ u64::from_le_bytes(word);
    }
    fn finish(&self) -> u64 {
        // splitmix64's finalizer: every output bit depends on every input and key bit, so
        // the bucket (low bits) cannot be aimed at without the key.
        let mut z = self.state ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A set of transaction ids.
pub type IdSet = HashSet<TxId, IdHashBuilder>;
