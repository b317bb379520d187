//! The attestations a node holds for the uncertified tail (`crate::attest` gathers them),
//! and the certificates a leader makes of them (`docs/design/certificates.md`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ordo_crypto::{PublicKey, Signature};
use ordo_ledger::{
    Attestation, Certificate, Policy, Store, StoreError, certificate, verify_attestation,
};

/// Most attestations of blocks this node has not applied yet that it holds: enough for
/// every validator to run a few pipelines ahead of it. Beyond that the sender is asked to
/// send them again later.
pub(crate) const EARLY_MAX: usize = 4096;

/// What [`Collected::add`] made of a batch of verified attestations.
#[derive(Debug, Default)]
pub(crate) struct Added {
    /// Attestations of this chain's blocks, to keep in the store.
    pub(crate) keep: Vec<Attestation>,
    /// Attestations of other blocks at heights this chain holds: evidence.
    pub(crate) evidence: Vec<Attestation>,
    /// Heights of the attestations not taken (too early): to send again later.
    pub(crate) later: Vec<u64>,
    /// Whether a height reached a majority.
    pub(crate) quorum: bool,
}

/// The attestations of the uncertified tail, by height and signer; only those of the
/// chain's own blocks.
pub(crate) struct Collected {
    policy: Arc<Policy>,
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Signatures of the chain's block at each height above the certified one.
    sigs: BTreeMap<u64, BTreeMap<PublicKey, Signature>>,
    /// Verified attestations of heights this node has not applied yet.
    early: BTreeMap<u64, Vec<Attestation>>,
    early_count: usize,
}

impl Collected {
    /// The attestations the store keeps (each verified again: a damaged record must not
    /// reach a certificate).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn load(policy: Arc<Policy>, store: Arc<Store>) -> Result<Collected, StoreError> {
        let kept = store.attestations()?;
        let this = Collected {
            policy,
            store,
            inner: Mutex::default(),
        };
        let good: Vec<Attestation> = kept
            .into_iter()
            .filter(|a| {
                let ok = this.policy.validators.contains(&a.signer)
                    && verify_attestation(a, &this.policy.chain_id).is_ok();
                if !ok {
                    tracing::warn!(height = a.height, signer = %a.signer, "a kept attestation does not verify; ignored");
                }
                ok
            })
            .collect();
        this.add(good)?;
        Ok(this)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("attestations lock poisoned")
    }

    /// Takes `attestations`, each already verified (signature, signer a validator).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn add(&self, attestations: Vec<Attestation>) -> Result<Added, StoreError> {
        let tip = self.store.tip();
        let quorum = self.policy.validators.quorum();
        let mut out = Added::default();
        // Hashes are read before the lock is taken (they may come from disk).
        let mut judged = Vec::with_capacity(attestations.len());
        for a in attestations {
            if a.height <= tip.certified || a.height == 0 {
                continue;
            }
            let ours = if a.height <= tip.height {
                Some(self.store.hash_at(a.height)? == a.block_hash)
            } else {
                None
            };
            judged.push((a, ours));
        }
        let mut inner = self.inner();
        for (a, ours) in judged {
            match ours {
                Some(true) => {
                    let sigs = inner.sigs.entry(a.height).or_default();
                    let before = sigs.len();
                    sigs.insert(a.signer, a.signature);
                    if before < quorum && sigs.len() >= quorum {
                        out.quorum = true;
                    }
                    out.keep.push(a);
                }
                Some(false) => out.evidence.push(a),
                None if inner.early_count < EARLY_MAX => {
                    inner.early.entry(a.height).or_default().push(a);
                    inner.early_count += 1;
                }
                None => out.later.push(a.height),
            }
        }
        Ok(out)
    }

    /// Moves the early attestations of blocks now applied to where they belong, and
    /// forgets those of certified heights.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn settle(&self) -> Result<Added, StoreError> {
        let tip = self.store.tip();
        let ready: Vec<Attestation> = {
            let mut inner = self.inner();
            let kept = inner.sigs.split_off(&(tip.certified + 1));
            inner.sigs = kept;
            let later = inner.early.split_off(&(tip.height + 1));
            let ready = std::mem::replace(&mut inner.early, later);
            inner.early_count = inner.early.values().map(Vec::len).sum();
            ready.into_values().flatten().collect()
        };
        self.add(ready)
    }

    /// The certificates a block on a parent at `parent_height`, certified up to
    /// `parent_certified`, carries: of every height from `parent_certified + 1` on that
    /// this node has applied and a majority attested, in order, at most `certify_lag`.
    /// `None` when they do not reach `need`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub(crate) fn certificates(
        &self,
        parent_certified: u64,
        parent_height: u64,
        need: u64,
    ) -> Result<Option<Vec<Certificate>>, StoreError> {
        let applied = self.store.tip().height.min(parent_height);
        let quorum = self.policy.validators.quorum();
        let mut wanted = Vec::new();
        {
            let inner = self.inner();
            let mut height = parent_certified + 1;
            while height <= applied && (wanted.len() as u64) < self.policy.certify_lag {
                match inner.sigs.get(&height) {
                    Some(sigs) if sigs.len() >= quorum => wanted.push((height, sigs.clone())),
                    _ => break,
                }
                height += 1;
            }
        }
        if parent_certified + (wanted.len() as u64) < need {
            return Ok(None);
        }
        let mut certs = Vec::with_capacity(wanted.len());
        for (height, sigs) in wanted {
            let hash = self.store.hash_at(height)?;
            certs.push(certificate(&self.policy.validators, height, hash, &sigs));
        }
        Ok(Some(certs))
    }

    /// The validators whose attestation of `height` this node lacks.
    pub(crate) fn missing(&self, height: u64) -> Vec<PublicKey> {
        let inner = self.inner();
        let sigs = inner.sigs.get(&height);
        self.policy
            .validators
            .keys()
            .iter()
            .filter(|k| !sigs.is_some_and(|s| s.contains_key(k)))
            .copied()
            .collect()
    }
}
