//! Ed25519 public keys, signatures and signing key pairs.

use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::Signer;

use crate::hex_serde::hex_bytes_type;

/// Errors about key material given as text or bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A hex string did not decode to the expected length.
    #[error("{what} must be {expected_len} bytes of hex: {reason}")]
    BadHex {
        /// What was being parsed ("public key", "hash", ...).
        what: &'static str,
        /// Expected byte length.
        expected_len: usize,
        /// The decoder's complaint.
        reason: String,
    },
    /// The 32 bytes are not the encoding of a curve point.
    #[error("public key {0} is not a valid ed25519 point encoding")]
    NotAPoint(String),
    /// The encoding is valid but not canonical (y ≥ p, or a negative zero x).
    #[error(
        "public key {0} uses a non-canonical point encoding; ordo accepts only canonical keys in genesis"
    )]
    NonCanonical(String),
    /// The point has small order: signatures "by" such a key are trivially forgeable.
    #[error("public key {0} is a small-order point (a weak key anyone can forge signatures for)")]
    SmallOrder(String),
}

/// An ed25519 public key, as its 32-byte encoding.
///
/// Holding a `PublicKey` says nothing about its validity: signature verification judges the
/// bytes by ZIP-215 rules, and [`PublicKey::check_strong`] is the stricter test genesis
/// applies to every validator and client key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct PublicKey(pub [u8; 32]);

hex_bytes_type!(PublicKey, 32, "public key");

impl PublicKey {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Accepts only canonical encodings of points that are not of small order.
    ///
    /// ZIP-215 verification deliberately accepts signatures under small-order keys (so that
    /// every implementation agrees); such keys must therefore never be *permitted* to sign.
    ///
    /// # Errors
    /// [`KeyError::NotAPoint`], [`KeyError::NonCanonical`] or [`KeyError::SmallOrder`].
    pub fn check_strong(&self) -> Result<(), KeyError> {
        let point = CompressedEdwardsY(self.0)
            .decompress()
            .ok_or_else(|| KeyError::NotAPoint(self.to_string()))?;
        if point.compress().0 != self.0 {
            return Err(KeyError::NonCanonical(self.to_string()));
        }
        if point.is_small_order() {
            return Err(KeyError::SmallOrder(self.to_string()));
        }
        Ok(())
    }
}

/// An ed25519 signature, as its 64-byte encoding `R || s`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

hex_bytes_type!(Signature, 64, "signature");

impl Signature {
    /// The signature bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

/// A signing key pair. The secret is zeroized on drop and never printed.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.public())
    }
}

impl Keypair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Keypair {
        Keypair {
            signing: ed25519_dalek::SigningKey::generate(&mut rand::rng()),
        }
    }

    /// The key pair whose 32-byte secret seed is `secret`.
    pub fn from_secret(secret: &[u8; 32]) -> Keypair {
        Keypair {
            signing: ed25519_dalek::SigningKey::from_bytes(secret),
        }
    }

    /// A key pair derived deterministically from a label. For tests, benchmarks and
    /// throw-away chains only: anyone who knows the label knows the secret.
    pub fn from_label(label: &str) -> Keypair {
        Keypair::from_secret(crate::Hash::sha256(&[b"ordo/test-key/", label.as_bytes()]).as_bytes())
    }

    /// The 32-byte secret seed.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `msg` (RFC 8032 Ed25519, deterministic).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.signing.sign(msg).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_strong() {
        for _ in 0..16 {
            assert_eq!(Keypair::generate().public().check_strong(), Ok(()));
        }
    }

    #[test]
    fn identity_is_small_order() {
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(matches!(
            PublicKey(id).check_strong(),
            Err(KeyError::SmallOrder(_))
        ));
    }

    #[test]
    fn non_canonical_identity_is_rejected() {
        // y = p + 1 (2^255 - 18), a non-canonical encoding of y = 1.
        let mut b = [0xffu8; 32];
        b[0] = 0xee;
        b[31] = 0x7f;
        assert!(matches!(
            PublicKey(b).check_strong(),
            Err(KeyError::NonCanonical(_))
        ));
    }

    #[test]
    fn not_a_point_is_rejected() {
        // y = 2 has no matching x on the curve.
        let mut b = [0u8; 32];
        b[0] = 2;
        assert!(matches!(
            PublicKey(b).check_strong(),
            Err(KeyError::NotAPoint(_))
        ));
    }

    #[test]
    fn label_keys_are_deterministic() {
        assert_eq!(
            Keypair::from_label("a").public(),
            Keypair::from_label("a").public()
        );
        assert_ne!(
            Keypair::from_label("a").public(),
            Keypair::from_label("b").public()
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = Keypair::from_label("secret-test");
        let text = format!("{k:?}");
        assert!(!text.contains(&hex::encode(k.secret_bytes())));
    }
}
