//! Cryptographic primitives for ordo.
//!
//! Everything in this crate is a consensus rule: two validators given the same bytes must
//! reach the same verdict. In particular:
//!
//! * [`Hash`] is SHA-256 with a domain tag per kind of object ([`Domain`]), so the hash of a
//!   transaction can never equal the hash of a block header.
//! * Signature validity follows ZIP-215 ([`verify`], [`BatchVerifier`]). Batch and single
//!   verification agree by specification, so a node's verdict never depends on randomness.
//!   ed25519-dalek is used only to create keys and signatures, never to judge them.
//! * [`merkle`] builds RFC 6962 trees over transaction ids, with inclusion proofs.
//!
//! ```
//! use ordo_crypto::{verify, Domain, Hash, Keypair};
//!
//! let key = Keypair::generate();
//! let id = Hash::digest(Domain::Transaction, b"canonical transaction bytes");
//! let sig = key.sign(id.as_bytes());
//! assert!(verify(&key.public(), id.as_bytes(), &sig).is_ok());
//! ```

mod hash;
mod hex_serde;
mod keyfile;
mod keys;
pub mod merkle;
mod verify;

pub use hash::{Domain, Hash, Hasher};
pub use keyfile::{KeyFileError, load_key_file, parse_key_file, write_key_file};
pub use keys::{KeyError, Keypair, PublicKey, Signature};
pub use verify::{
    BatchVerifier, SPREAD_PART_MIN, SignatureError, batch_threads, cores, set_batch_threads, verify,
};
