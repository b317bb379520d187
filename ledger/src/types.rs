//! The data model: transactions, blocks and their canonical encoding.
//!
//! Every type here that is hashed or signed is encoded with borsh: fixed-width little-endian
//! integers, `u32` length prefixes, fields in declaration order, no trailing bytes. Each value
//! has exactly one valid encoding, and decoding rejects anything else (see `docs/format.md`,
//! whose test vectors `tests/format_vectors.rs` checks).

use borsh::{BorshDeserialize, BorshSerialize};
use ordo_crypto::{Domain, Hash, Hasher, PublicKey, Signature};
use serde::{Deserialize, Serialize};

use crate::LedgerError;

/// A transaction id: the domain-separated hash of the unsigned transaction's bytes.
///
/// The signature is deliberately outside the id: ZIP-215 accepts more than one encoding of
/// the same signature, so an id that covered it could be changed by anyone.
pub type TxId = Hash;

/// What a client asks the chain to order.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Transaction {
    /// The chain this transaction is for; any other chain rejects it.
    pub chain_id: String,
    /// The client that signed it; must be a permitted client in the genesis.
    pub sender: PublicKey,
    /// Chosen by the client (random by default) so that equal payloads get distinct ids.
    pub nonce: u64,
    /// The last block height that may include this transaction. Together with the
    /// genesis's `tx_lifetime_blocks`, this bounds where a transaction can appear, so replay
    /// checks and client retries need only a bounded window (see `docs/format.md`).
    pub expires_at: u64,
    /// Application bytes; ordo orders them and does not interpret them.
    #[serde(with = "hex_bytes")]
    pub payload: Vec<u8>,
}

/// A transaction with its sender's signature over the transaction id.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SignedTransaction {
    /// The transaction.
    pub tx: Transaction,
    /// The sender's ed25519 signature of `tx.id()`'s 32 bytes.
    pub signature: Signature,
}

/// The part of a block that is hashed and signed.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The chain this block belongs to.
    pub chain_id: String,
    /// Height, from 1 (the genesis is height 0).
    pub height: u64,
    /// Hash of the parent block's header, or the genesis hash for block 1.
    pub prev_hash: Hash,
    /// RFC 6962 Merkle root of the transaction ids, in block order.
    pub tx_root: Hash,
    /// Number of transactions in the block.
    pub n_txs: u32,
    /// Proposer's clock, milliseconds since the Unix epoch; never before the parent's.
    pub timestamp_ms: u64,
    /// The validator that built and signed the block.
    pub proposer: PublicKey,
    /// Consensus term in which the block was proposed.
    pub term: u64,
    /// Every block at or below this height is certified, by this block or an earlier one.
    pub certified: u64,
    /// `digest(certificates, borsh(certificates))` of the block's certificates.
    pub certs_root: Hash,
}

/// A block: header, proposer signature over the header hash, certificates of earlier
/// blocks, transactions.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Block {
    /// The signed header.
    pub header: BlockHeader,
    /// The proposer's signature of `header.hash()`'s 32 bytes.
    pub signature: Signature,
    /// Certificates of the earlier blocks this block certifies, by ascending height: those
    /// from the parent's `certified + 1` to this header's `certified`.
    pub certificates: Vec<Certificate>,
    /// The ordered transactions.
    pub txs: Vec<SignedTransaction>,
}

/// A validator's signature vouching that `block_hash` is the chain's block at `height`.
///
/// A validator signs one after it has applied the block, so an honest validator never
/// signs two blocks at one height; two such signatures by one key are evidence against it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Attestation {
    /// The block's height.
    pub height: u64,
    /// The block's hash.
    pub block_hash: Hash,
    /// The validator that signed.
    pub signer: PublicKey,
    /// Its signature of [`Attestation::digest`]'s 32 bytes.
    pub signature: Signature,
}

/// A majority of the validators' attestations of one block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Certificate {
    /// The certified block's height.
    pub height: u64,
    /// The certified block's hash.
    pub block_hash: Hash,
    /// Bit `i` (byte `i / 8`, bit `i % 8`, least significant first) is set when the `i`-th
    /// validator in key order signed; exactly `ceil(n / 8)` bytes, no bit at or past `n`.
    #[serde(with = "hex_bytes")]
    pub signers: Vec<u8>,
    /// The signers' signatures of the attestation digest, in validator order.
    pub signatures: Vec<Signature>,
}

/// Where a chain ends: what the next block must link to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct ChainTip {
    /// Height of the last block (0 for the genesis).
    pub height: u64,
    /// Hash of the last block's header (the genesis hash at height 0).
    pub hash: Hash,
    /// Timestamp of the last block (0 at the genesis).
    pub timestamp_ms: u64,
    /// The last block's `certified` (0 at the genesis).
    pub certified: u64,
}

impl ChainTip {
    /// The tip of a chain that has only its genesis.
    pub fn genesis(genesis_hash: Hash) -> ChainTip {
        ChainTip {
            height: 0,
            hash: genesis_hash,
            timestamp_ms: 0,
            certified: 0,
        }
    }
}

impl Attestation {
    /// What an attestation signs: `digest(attestation, borsh(chain_id, height, block_hash))`.
    pub fn digest(chain_id: &str, height: u64, block_hash: &Hash) -> Hash {
        let mut h = Hasher::new(Domain::Attestation);
        BorshSerialize::serialize(&(chain_id, height, block_hash), &mut h)
            .expect("hashing never fails");
        h.finish()
    }

    /// `key`'s attestation of block `block_hash` at `height` of chain `chain_id`.
    pub fn sign(
        chain_id: &str,
        height: u64,
        block_hash: Hash,
        key: &ordo_crypto::Keypair,
    ) -> Attestation {
        let signature = key.sign(Attestation::digest(chain_id, height, &block_hash).as_bytes());
        Attestation {
            height,
            block_hash,
            signer: key.public(),
            signature,
        }
    }
}

impl Certificate {
    /// Encoded length.
    pub fn encoded_len(&self) -> u64 {
        8 + 32 + var_len(self.signers.len()) + 4 + 64 * self.signatures.len() as u64
    }

    /// Positions (in validator key order) of the signers the bitmap names, ascending.
    pub fn signer_positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.signers.iter().enumerate().flat_map(|(byte, bits)| {
            (0..8)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| byte * 8 + b)
        })
    }

    /// The largest certificate's encoded length for `validators` validators.
    pub fn encoded_len_max(validators: usize) -> u64 {
        8 + 32 + var_len(validators.div_ceil(8)) + 4 + 64 * validators as u64
    }
}

/// The `certs_root` of a block with these certificates.
pub fn certs_root(certificates: &[Certificate]) -> Hash {
    let mut h = Hasher::new(Domain::Certificates);
    BorshSerialize::serialize(certificates, &mut h).expect("hashing never fails");
    h.finish()
}

/// Encoded size of a borsh `String` or `Vec<u8>`: `u32` length + bytes.
fn var_len(n: usize) -> u64 {
    4 + n as u64
}

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> TxId {
        let mut h = Hasher::new(Domain::Transaction);
        // Writing into a hasher cannot fail.
        BorshSerialize::serialize(self, &mut h).expect("hashing never fails");
        h.finish()
    }

    /// Length of the canonical encoding, computed without encoding.
    pub fn encoded_len(&self) -> u64 {
        var_len(self.chain_id.len()) + 32 + 8 + 8 + var_len(self.payload.len())
    }

    /// Signs this transaction with the sender's key.
    ///
    /// # Panics
    /// If `key` is not the sender's key: that is a programming error.
    pub fn sign(self, key: &ordo_crypto::Keypair) -> SignedTransaction {
        assert_eq!(
            key.public(),
            self.sender,
            "transaction signed by a key that is not its sender"
        );
        let signature = key.sign(self.id().as_bytes());
        SignedTransaction {
            tx: self,
            signature,
        }
    }
}

impl SignedTransaction {
    /// The transaction id (see [`TxId`]).
    pub fn id(&self) -> TxId {
        self.tx.id()
    }

    /// Length of the canonical encoding, computed without encoding.
    pub fn encoded_len(&self) -> u64 {
        self.tx.encoded_len() + 64
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.encoded_len()).unwrap_or(0));
        BorshSerialize::serialize(self, &mut out).expect("encoding into a Vec never fails");
        out
    }

    /// Decodes canonical bytes, refusing more than `max_bytes` before decoding.
    ///
    /// # Errors
    /// [`LedgerError::TooLarge`] or [`LedgerError::Decode`].
    pub fn from_bytes(bytes: &[u8], max_bytes: u64) -> Result<SignedTransaction, LedgerError> {
        decode_limited(bytes, max_bytes, "transaction")
    }
}

impl BlockHeader {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        let mut h = Hasher::new(Domain::BlockHeader);
        BorshSerialize::serialize(self, &mut h).expect("hashing never fails");
        h.finish()
    }

    /// Length of the canonical encoding.
    pub fn encoded_len(&self) -> u64 {
        var_len(self.chain_id.len()) + 8 + 32 + 32 + 4 + 8 + 32 + 8 + 8 + 32
    }
}

impl Block {
    /// The block hash (its header's hash).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// The tip this block makes when appended.
    pub fn tip(&self) -> ChainTip {
        ChainTip {
            height: self.header.height,
            hash: self.hash(),
            timestamp_ms: self.header.timestamp_ms,
            certified: self.header.certified,
        }
    }

    /// The transaction ids, in block order.
    pub fn tx_ids(&self) -> Vec<TxId> {
        self.txs.iter().map(SignedTransaction::id).collect()
    }

    /// Length of the canonical encoding, computed without encoding.
    pub fn encoded_len(&self) -> u64 {
        self.header.encoded_len()
            + 64
            + 4
            + self
                .certificates
                .iter()
                .map(Certificate::encoded_len)
                .sum::<u64>()
            + 4
            + self.txs.iter().map(|t| t.encoded_len()).sum::<u64>()
    }

    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.encoded_len()).unwrap_or(0));
        BorshSerialize::serialize(self, &mut out).expect("encoding into a Vec never fails");
        out
    }

    /// Decodes canonical bytes, refusing more than `max_bytes` before decoding.
    ///
    /// # Errors
    /// [`LedgerError::TooLarge`] or [`LedgerError::Decode`].
    pub fn from_bytes(bytes: &[u8], max_bytes: u64) -> Result<Block, LedgerError> {
        decode_limited(bytes, max_bytes, "block")
    }
}

/// Canonical encoding of any ledger type.
pub fn encode<T: BorshSerialize>(value: &T) -> Vec<u8> {
    borsh::to_vec(value).expect("encoding into a Vec never fails")
}

/// Decodes `bytes` as exactly one `T` (trailing bytes are an error).
fn decode_limited<T: BorshDeserialize>(
    bytes: &[u8],
    max_bytes: u64,
    what: &'static str,
) -> Result<T, LedgerError> {
    if bytes.len() as u64 > max_bytes {
        return Err(LedgerError::TooLarge {
            what,
            bytes: bytes.len() as u64,
            max: max_bytes,
        });
    }
    borsh::from_slice(bytes).map_err(|e| LedgerError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// serde adapter: byte vectors as hex strings in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_crypto::Keypair;
    use proptest::prelude::*;

    fn tx(payload: Vec<u8>, nonce: u64) -> SignedTransaction {
        let key = Keypair::from_label("client");
        Transaction {
            chain_id: "test".into(),
            sender: key.public(),
            nonce,
            expires_at: 9,
            payload,
        }
        .sign(&key)
    }

    proptest! {
        #[test]
        fn encoded_len_matches_encoding(payload in prop::collection::vec(any::<u8>(), 0..300), nonce: u64) {
            let t = tx(payload, nonce);
            prop_assert_eq!(t.encoded_len(), t.to_bytes().len() as u64);
            let back = SignedTransaction::from_bytes(&t.to_bytes(), u64::MAX).expect("decodes");
            prop_assert_eq!(back, t);
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = tx(vec![1, 2, 3], 1).to_bytes();
        bytes.push(0);
        assert!(matches!(
            SignedTransaction::from_bytes(&bytes, u64::MAX),
            Err(LedgerError::Decode { .. })
        ));
    }

    #[test]
    fn truncated_and_oversize_are_rejected() {
        let bytes = tx(vec![1, 2, 3], 1).to_bytes();
        assert!(SignedTransaction::from_bytes(&bytes[..bytes.len() - 1], u64::MAX).is_err());
        assert!(matches!(
            SignedTransaction::from_bytes(&bytes, bytes.len() as u64 - 1),
            Err(LedgerError::TooLarge { .. })
        ));
    }

    #[test]
    fn invalid_utf8_chain_id_is_rejected() {
        let mut bytes = tx(vec![], 1).to_bytes();
        bytes[4] = 0xff; // first byte of the chain id "test"
        assert!(SignedTransaction::from_bytes(&bytes, u64::MAX).is_err());
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // chain id length claims 4 GiB with 3 bytes behind it.
        let bytes = [0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c'];
        assert!(SignedTransaction::from_bytes(&bytes, u64::MAX).is_err());
    }

    #[test]
    fn id_excludes_signature() {
        let a = tx(vec![7], 3);
        let mut b = a.clone();
        b.signature.0[0] ^= 1;
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), tx(vec![7], 4).id());
    }
}
