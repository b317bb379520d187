//! Certificates: a majority of the validators vouching for one block.
//!
//! After a validator applies a block it signs an [`Attestation`] of it. A leader gathers
//! them and puts, into each block it builds, a [`Certificate`] for every earlier block a
//! majority attested that no earlier block certified. The rule every block must keep
//! (`verify_block`): block `h` certifies, in height order, every block at or below
//! `h - certify_lag` that its ancestors left uncertified, and may certify more recent ones.
//! So one stolen validator key cannot make a chain that verifies: each block below the last
//! `certify_lag` needs a majority's signatures.

use std::collections::BTreeMap;

use ordo_crypto::{BatchVerifier, Hash, PublicKey, Signature};

use crate::policy::ValidatorSet;
use crate::types::{Attestation, Certificate};

/// Why a certificate's shape is wrong (before any signature is checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The signer bitmap has the wrong length.
    #[error("signer bitmap is {found} bytes, {expected} expected for {validators} validators")]
    BitmapLength {
        /// Bytes found.
        found: usize,
        /// Bytes expected.
        expected: usize,
        /// Validators in the set.
        validators: usize,
    },
    /// A bit past the last validator is set.
    #[error("signer bitmap names position {0}, past the last validator")]
    NoSuchSigner(usize),
    /// Fewer signers than a majority.
    #[error("{signers} of {validators} validators signed, {quorum} needed; missing {}", keys(.missing))]
    NoQuorum {
        /// Signers named.
        signers: usize,
        /// Signers needed.
        quorum: usize,
        /// Validators in the set.
        validators: usize,
        /// The validators that did not sign.
        missing: Vec<PublicKey>,
    },
    /// The number of signatures is not the number of signers.
    #[error("{signatures} signatures for {signers} signers")]
    SignatureCount {
        /// Signatures present.
        signatures: usize,
        /// Signers named.
        signers: usize,
    },
    /// A signature is invalid.
    #[error("the signature of validator {0} is invalid")]
    BadSignature(PublicKey),
}

fn keys(keys: &[PublicKey]) -> String {
    let list: Vec<String> = keys.iter().map(ToString::to_string).collect();
    list.join(", ")
}

/// The certificate of block `block_hash` at `height` from `signatures` (by validator key).
/// Signatures of keys outside `validators` are left out; the caller has checked the rest.
pub fn certificate(
    validators: &ValidatorSet,
    height: u64,
    block_hash: Hash,
    signatures: &BTreeMap<PublicKey, Signature>,
) -> Certificate {
    let mut signers = vec![0u8; validators.bitmap_len()];
    let mut sigs = Vec::with_capacity(signatures.len());
    // BTreeMap order is key order, which is validator order.
    for (key, sig) in signatures {
        if let Some(i) = validators.position(key) {
            signers[i / 8] |= 1 << (i % 8);
            sigs.push(*sig);
        }
    }
    Certificate {
        height,
        block_hash,
        signers,
        signatures: sigs,
    }
}

/// The signers a well-formed certificate names, with a majority; every rule but the
/// signatures.
///
/// # Errors
/// The first shape rule broken.
pub fn certificate_signers<'a>(
    cert: &Certificate,
    validators: &'a ValidatorSet,
) -> Result<Vec<&'a PublicKey>, CertificateError> {
    let n = validators.len();
    if cert.signers.len() != validators.bitmap_len() {
        return Err(CertificateError::BitmapLength {
            found: cert.signers.len(),
            expected: validators.bitmap_len(),
            validators: n,
        });
    }
    let positions: Vec<usize> = cert.signer_positions().collect();
    if let Some(&p) = positions.iter().find(|&&p| p >= n) {
        return Err(CertificateError::NoSuchSigner(p));
    }
    if positions.len() < validators.quorum() {
        let missing = (0..n)
            .filter(|i| !positions.contains(i))
            .map(|i| validators.keys()[i])
            .collect();
        return Err(CertificateError::NoQuorum {
            signers: positions.len(),
            quorum: validators.quorum(),
            validators: n,
            missing,
        });
    }
    if cert.signatures.len() != positions.len() {
        return Err(CertificateError::SignatureCount {
            signatures: cert.signatures.len(),
            signers: positions.len(),
        });
    }
    Ok(positions.iter().map(|&i| &validators.keys()[i]).collect())
}

/// Checks `cert` completely, on its own: shape, majority and every signature.
///
/// # Errors
/// The first rule broken.
pub fn verify_certificate(
    cert: &Certificate,
    chain_id: &str,
    validators: &ValidatorSet,
) -> Result<(), CertificateError> {
    let signers = certificate_signers(cert, validators)?;
    let digest = Attestation::digest(chain_id, cert.height, &cert.block_hash);
    let mut batch = BatchVerifier::with_capacity(signers.len());
    for (key, sig) in signers.iter().zip(&cert.signatures) {
        batch.queue(key, digest.as_bytes(), sig);
    }
    batch.verify().map_err(|e| match e {
        ordo_crypto::SignatureError::InvalidAt { index } => {
            CertificateError::BadSignature(*signers[index])
        }
        ordo_crypto::SignatureError::Invalid => CertificateError::BadSignature(*signers[0]),
    })
}

/// Verifies one attestation's signature under `chain_id`.
///
/// # Errors
/// When the signature is invalid.
pub fn verify_attestation(
    att: &Attestation,
    chain_id: &str,
) -> Result<(), ordo_crypto::SignatureError> {
    let digest = Attestation::digest(chain_id, att.height, &att.block_hash);
    ordo_crypto::verify(&att.signer, digest.as_bytes(), &att.signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_crypto::Keypair;

    fn set(n: usize) -> (Vec<Keypair>, ValidatorSet) {
        let keys: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_label(&format!("v{i}")))
            .collect();
        let set = keys.iter().map(Keypair::public).collect();
        (keys, set)
    }

    fn signed(
        keys: &[Keypair],
        who: &[usize],
        height: u64,
        hash: Hash,
    ) -> BTreeMap<PublicKey, Signature> {
        who.iter()
            .map(|&i| {
                let a = Attestation::sign("c", height, hash, &keys[i]);
                (a.signer, a.signature)
            })
            .collect()
    }

    #[test]
    fn a_majority_certifies_and_less_does_not() {
        let (keys, set) = set(5);
        let hash = Hash([7; 32]);
        let cert = certificate(&set, 3, hash, &signed(&keys, &[0, 2, 4], 3, hash));
        assert_eq!(cert.signer_positions().count(), 3);
        verify_certificate(&cert, "c", &set).expect("three of five certify");
        assert_eq!(cert.encoded_len(), crate::encode(&cert).len() as u64);

        let two = certificate(&set, 3, hash, &signed(&keys, &[1, 3], 3, hash));
        match verify_certificate(&two, "c", &set) {
            Err(CertificateError::NoQuorum { missing, .. }) => assert_eq!(missing.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_signature_over_another_block_or_chain_fails_naming_its_signer() {
        let (keys, set) = set(3);
        let hash = Hash([7; 32]);
        let mut sigs = signed(&keys, &[0, 1], 3, hash);
        let other = Attestation::sign("c", 3, Hash([8; 32]), &keys[1]);
        sigs.insert(other.signer, other.signature);
        let cert = certificate(&set, 3, hash, &sigs);
        assert_eq!(
            verify_certificate(&cert, "c", &set),
            Err(CertificateError::BadSignature(keys[1].public()))
        );
        let good = certificate(&set, 3, hash, &signed(&keys, &[0, 1], 3, hash));
        assert!(verify_certificate(&good, "other-chain", &set).is_err());
    }

    #[test]
    fn malformed_bitmaps_are_refused() {
        let (keys, set) = set(3);
        let hash = Hash([7; 32]);
        let good = certificate(&set, 1, hash, &signed(&keys, &[0, 1, 2], 1, hash));
        let mut long = good.clone();
        long.signers.push(0);
        assert!(matches!(
            certificate_signers(&long, &set),
            Err(CertificateError::BitmapLength { .. })
        ));
        let mut past = good.clone();
        past.signers[0] |= 1 << 3;
        assert_eq!(
            certificate_signers(&past, &set),
            Err(CertificateError::NoSuchSigner(3))
        );
        let mut short = good;
        short.signatures.pop();
        assert!(matches!(
            certificate_signers(&short, &set),
            Err(CertificateError::SignatureCount { .. })
        ));
    }
}
