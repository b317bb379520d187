//! Signature verification under ZIP-215 rules.
//!
//! ZIP-215 fixes every edge case that RFC 8032 leaves open (non-canonical point encodings,
//! small-order components, cofactored vs. cofactorless equation), and guarantees that batch
//! and single verification agree. That is what makes the verdict a consensus rule: every
//! ordo node, on any platform, accepts exactly the same set of signatures. The rules are
//! written out in `docs/format.md`.

use ed25519_zebra::batch;
use ed25519_zebra::{VerificationKey, VerificationKeyBytes};

use crate::keys::{PublicKey, Signature};

/// A signature failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The single signature checked is invalid.
    #[error("invalid signature")]
    Invalid,
    /// Item `index` (in queue order) of a batch is the first invalid signature.
    #[error("invalid signature at batch position {index}")]
    InvalidAt {
        /// Position in the order the items were queued.
        index: usize,
    },
}

fn zebra_signature(sig: &Signature) -> ed25519_zebra::Signature {
    ed25519_zebra::Signature::from_bytes(sig.as_bytes())
}

/// Verifies one signature under ZIP-215 rules.
///
/// # Errors
/// [`SignatureError::Invalid`] when the key bytes are not a point, `s` is not canonical, or
/// the cofactored verification equation does not hold.
pub fn verify(key: &PublicKey, msg: &[u8], sig: &Signature) -> Result<(), SignatureError> {
    let vk = VerificationKey::try_from(*key.as_bytes()).map_err(|_| SignatureError::Invalid)?;
    vk.verify(&zebra_signature(sig), msg)
        .map_err(|_| SignatureError::Invalid)
}

/// Collects signatures and verifies them together.
///
/// The batch equation is checked first (about twice as fast per signature as one by one);
/// when it fails, each item is checked alone to name the first bad one. Both paths apply
/// ZIP-215, so the verdict is the same as verifying every item with [`verify`].
#[derive(Default)]
pub struct BatchVerifier {
    items: Vec<batch::Item>,
}

impl BatchVerifier {
    /// An empty batch with room for `n` items.
    pub fn with_capacity(n: usize) -> BatchVerifier {
        BatchVerifier {
            items: Vec::with_capacity(n),
        }
    }

    /// Adds a (key, message, signature) triple. The message is hashed now and not retained.
    pub fn queue(&mut self, key: &PublicKey, msg: &[u8], sig: &Signature) {
        let vk = VerificationKeyBytes::from(*key.as_bytes());
        self.items
            .push(batch::Item::from((vk, zebra_signature(sig), msg)));
    }

    /// Number of queued items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Verifies every queued signature.
    ///
    /// # Errors
    /// [`SignatureError::InvalidAt`] naming the first invalid item in queue order.
    pub fn verify(self) -> Result<(), SignatureError> {
        if self.items.is_empty() {
            return Ok(());
        }
        if self.items.len() == 1 {
            // The batch equation costs more than a single check for one item.
            let item = self.items.into_iter().next().expect("one item");
            return item
                .verify_single()
                .map_err(|_| SignatureError::InvalidAt { index: 0 });
        }
        let mut batch = batch::Verifier::new();
        for item in &self.items {
            batch.queue(item.clone());
        }
        if batch.verify(rand::rng()).is_ok() {
            return Ok(());
        }
        // ZIP-215 batch and single verification agree, so a failed batch has a bad item.
        // Should the random batch coefficients ever reject a valid batch (probability
        // ~2^-128), the per-item verdicts below still decide, and they accept.
        for (index, item) in self.items.into_iter().enumerate() {
            if item.verify_single().is_err() {
                return Err(SignatureError::InvalidAt { index });
            }
        }
        Ok(())
    }

    /// Verifies every queued signature and names every invalid one, in queue order (none
    /// when all are valid). One batch check when all are valid; otherwise each is checked
    /// alone, so a batch with many forgeries costs one pass, not one pass per forgery.
    pub fn invalid(self) -> Vec<usize> {
        if self.items.len() > 1 {
            let mut batch = batch::Verifier::new();
            for item in &self.items {
                batch.queue(item.clone());
            }
            if batch.verify(rand::rng()).is_ok() {
                return Vec::new();
            }
        }
        self.items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| item.verify_single().is_err().then_some(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn signed(n: usize) -> Vec<(PublicKey, Vec<u8>, Signature)> {
        (0..n)
            .map(|i| {
                let k = Keypair::from_label(&format!("k{}", i % 7));
                let msg = format!("message {i}").into_bytes();
                let sig = k.sign(&msg);
                (k.public(), msg, sig)
            })
            .collect()
    }

    fn batch_of(items: &[(PublicKey, Vec<u8>, Signature)]) -> BatchVerifier {
        let mut b = BatchVerifier::with_capacity(items.len());
        for (k, m, s) in items {
            b.queue(k, m, s);
        }
        b
    }

    #[test]
    fn valid_batch_passes() {
        let items = signed(64);
        assert_eq!(batch_of(&items).verify(), Ok(()));
        for (k, m, s) in &items {
            assert_eq!(verify(k, m, s), Ok(()));
        }
    }

    #[test]
    fn batch_names_first_bad_signature() {
        let mut items = signed(50);
        items[17].2.0[5] ^= 1;
        items[30].1.push(0);
        assert_eq!(
            batch_of(&items).verify(),
            Err(SignatureError::InvalidAt { index: 17 })
        );
    }

    #[test]
    fn invalid_names_every_bad_signature() {
        let mut items = signed(50);
        assert!(batch_of(&items).invalid().is_empty());
        items[3].2.0[1] ^= 1;
        items[17].2.0[5] ^= 1;
        items[49].1.push(0);
        assert_eq!(batch_of(&items).invalid(), vec![3, 17, 49]);
        assert_eq!(batch_of(&items[3..4]).invalid(), vec![0]);
        assert!(BatchVerifier::default().invalid().is_empty());
    }

    #[test]
    fn wrong_key_fails() {
        let items = signed(1);
        let other = Keypair::from_label("other").public();
        assert_eq!(
            verify(&other, &items[0].1, &items[0].2),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn batch_of_one_agrees_with_single() {
        let mut items = signed(1);
        assert_eq!(batch_of(&items).verify(), Ok(()));
        items[0].2.0[63] ^= 1;
        assert_eq!(
            batch_of(&items).verify(),
            Err(SignatureError::InvalidAt { index: 0 })
        );
        assert_eq!(
            verify(&items[0].0, &items[0].1, &items[0].2),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn empty_batch_is_ok() {
        assert_eq!(BatchVerifier::default().verify(), Ok(()));
    }
}
