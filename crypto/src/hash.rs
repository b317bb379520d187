//! SHA-256 hashes with domain separation.

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

use crate::hex_serde::hex_bytes_type;

/// A SHA-256 digest.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Hash(pub [u8; 32]);

hex_bytes_type!(Hash, 32, "hash");

/// What a hash is of. Each domain prefixes the hashed bytes with its own tag; the tags are
/// prefix-free and none starts with the Merkle tree's `0x00`/`0x01` prefixes, so hashes of
/// different kinds of object can never collide by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A transaction's canonical bytes; the digest is the transaction id.
    Transaction,
    /// A block header's canonical bytes; the digest is the block hash.
    BlockHeader,
    /// The canonical form of a genesis file; the digest is the parent of block 1.
    Genesis,
    /// What a validator signs to vouch for a block: `(chain_id, height, block_hash)`.
    Attestation,
    /// A block's certificates; the digest is the header's `certs_root`.
    Certificates,
}

impl Domain {
    /// The exact tag bytes hashed before the object's bytes (see `docs/format.md`).
    pub const fn tag(self) -> &'static [u8] {
        match self {
            Domain::Transaction => b"ordo/transaction/v1\n",
            Domain::BlockHeader => b"ordo/block-header/v2\n",
            Domain::Genesis => b"ordo/genesis/v1\n",
            Domain::Attestation => b"ordo/attestation/v1\n",
            Domain::Certificates => b"ordo/certificates/v1\n",
        }
    }
}

impl Hash {
    /// The all-zero hash (never the hash of anything; used as "none").
    pub const ZERO: Hash = Hash([0; 32]);

    /// `SHA-256(domain.tag() || bytes)`.
    pub fn digest(domain: Domain, bytes: &[u8]) -> Hash {
        Hash(
            Sha256::new()
                .chain_update(domain.tag())
                .chain_update(bytes)
                .finalize()
                .into(),
        )
    }

    /// Plain `SHA-256(parts[0] || parts[1] || …)`, for building other constructions (Merkle).
    pub fn sha256(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Incremental form of [`Hash::digest`]: feed the object's bytes through [`std::io::Write`]
/// (for example with `borsh::to_writer`) without building them in memory first.
pub struct Hasher(Sha256);

impl Hasher {
    /// Starts a hash in `domain`.
    pub fn new(domain: Domain) -> Hasher {
        Hasher(Sha256::new().chain_update(domain.tag()))
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Hash {
        Hash(self.0.finalize().into())
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate_equal_bytes() {
        let a = Hash::digest(Domain::Transaction, b"x");
        let b = Hash::digest(Domain::BlockHeader, b"x");
        let c = Hash::digest(Domain::Genesis, b"x");
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert_ne!(a, c);
    }

    #[test]
    fn tags_are_prefix_free_and_not_merkle_prefixes() {
        let tags = [
            Domain::Transaction,
            Domain::BlockHeader,
            Domain::Genesis,
            Domain::Attestation,
            Domain::Certificates,
        ]
        .map(Domain::tag);
        for (i, a) in tags.iter().enumerate() {
            assert!(a[0] > 1, "tag must not start with a Merkle prefix byte");
            for (j, b) in tags.iter().enumerate() {
                if i != j {
                    assert!(!a.starts_with(b), "tag {i} starts with tag {j}");
                }
            }
        }
    }

    #[test]
    fn hasher_equals_digest() {
        let mut h = Hasher::new(Domain::Transaction);
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(h.finish(), Hash::digest(Domain::Transaction, b"abc"));
    }

    #[test]
    fn sha256_of_empty_is_standard() {
        assert_eq!(
            Hash::sha256(&[]).to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hex_round_trip_and_bad_hex() {
        let h = Hash::digest(Domain::Genesis, b"g");
        assert_eq!(h.to_string().parse::<Hash>().ok(), Some(h));
        assert!("abcd".parse::<Hash>().is_err());
        assert!("zz".repeat(32).parse::<Hash>().is_err());
    }
}
