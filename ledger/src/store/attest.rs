//! What the store keeps of certification: the certificate of each certified block (an
//! index into the blocks that carry them), the attestations of the uncertified tail, and
//! evidence against validators that attested blocks not in this chain.

use ordo_crypto::{Hash, PublicKey, Signature};
use rocksdb::{IteratorMode, WriteBatch};

use super::{
    CF_ATTESTATIONS, CF_CERTIFICATES, CF_EVIDENCE, RECENT_HASHES_MAX, Result, Store, StoreError,
    height_key,
};
use crate::receipt::{RECEIPT_VERSION, Receipt};
use crate::types::{Attestation, Block, Certificate, TxId};

/// What [`Store::receipt`] found for a committed transaction.
#[derive(Clone, Debug)]
pub enum ReceiptLookup {
    /// Its block is certified: the receipt.
    Certified(Box<Receipt>),
    /// Its block is in the uncertified tail: no receipt yet.
    Uncertified {
        /// The block's height.
        height: u64,
        /// Every block at or below this is certified.
        certified: u64,
    },
}

/// Most evidence records kept; later ones are dropped (and logged by the caller).
pub const EVIDENCE_RECORDS_MAX: u64 = 4096;

/// Length of an attestation key: height, signer, block hash.
const ATTESTATION_KEY_BYTES: usize = 8 + 32 + 32;

fn attestation_key(a: &Attestation) -> [u8; ATTESTATION_KEY_BYTES] {
    let mut k = [0u8; ATTESTATION_KEY_BYTES];
    k[..8].copy_from_slice(&height_key(a.height));
    k[8..40].copy_from_slice(a.signer.as_bytes());
    k[40..].copy_from_slice(a.block_hash.as_bytes());
    k
}

fn decode_attestation(key: &[u8], value: &[u8]) -> Option<Attestation> {
    let key: &[u8; ATTESTATION_KEY_BYTES] = key.try_into().ok()?;
    let signature: [u8; 64] = value.try_into().ok()?;
    Some(Attestation {
        height: u64::from_be_bytes(key[..8].try_into().ok()?),
        signer: PublicKey(key[8..40].try_into().ok()?),
        block_hash: Hash(key[40..].try_into().ok()?),
        signature: Signature(signature),
    })
}

impl Store {
    /// The hash of this chain's block at `height` (1..=tip).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when no block is stored there, or a read error.
    pub fn hash_at(&self, height: u64) -> Result<Hash> {
        if let Some(h) = self
            .recent_hashes
            .lock()
            .expect("hash cache lock poisoned")
            .get(&height)
        {
            return Ok(*h);
        }
        let block = self
            .block(height)?
            .ok_or_else(|| self.corrupt(format!("no block at height {height}")))?;
        let hash = block.hash();
        self.remember_hash(height, hash);
        Ok(hash)
    }

    pub(super) fn remember_hash(&self, height: u64, hash: Hash) {
        let mut recent = self.recent_hashes.lock().expect("hash cache lock poisoned");
        recent.insert(height, hash);
        while recent.len() > RECENT_HASHES_MAX {
            recent.pop_first();
        }
    }

    /// Checks that every certificate in `block` names this chain's block at its height.
    pub(super) fn check_certified_blocks(&self, block: &Block) -> Result<()> {
        for cert in &block.certificates {
            let chain_hash = self.hash_at(cert.height)?;
            if chain_hash != cert.block_hash {
                return Err(StoreError::CertifiesAnother {
                    height: block.header.height,
                    certified: cert.height,
                    certified_hash: cert.block_hash,
                    chain_hash,
                });
            }
        }
        Ok(())
    }

    /// Adds the certificates `block` carries to the index.
    pub(super) fn put_certificates(&self, batch: &mut WriteBatch, block: &Block) {
        let cf = self.cf(CF_CERTIFICATES);
        for cert in &block.certificates {
            batch.put_cf(cf, height_key(cert.height), crate::encode(cert));
        }
    }

    /// Removes the attestations of heights `from + 1 ..= to`, now certified in a block.
    pub(super) fn drop_attestations(
        &self,
        batch: &mut WriteBatch,
        from: u64,
        to: u64,
    ) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        let cf = self.cf(CF_ATTESTATIONS);
        let start = height_key(from + 1);
        let mode = IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf, mode) {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            match k
                .get(..8)
                .map(|h| u64::from_be_bytes(h.try_into().expect("8 bytes")))
            {
                Some(h) if h <= to => batch.delete_cf(cf, &k),
                _ => break,
            }
        }
        Ok(())
    }

    /// The certificate of the block at `height`, once a later block has certified it.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the record does not decode, or a read error.
    pub fn certificate(&self, height: u64) -> Result<Option<Certificate>> {
        let Some(bytes) = self.get(CF_CERTIFICATES, &height_key(height))? else {
            return Ok(None);
        };
        let cert: Certificate = borsh::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("certificate of height {height}: {e}")))?;
        if cert.height != height {
            return Err(self.corrupt(format!(
                "certificate stored under height {height} is for height {}",
                cert.height
            )));
        }
        Ok(Some(cert))
    }

    /// The receipt of transaction `id`, if it is committed: the transaction, its proof,
    /// its block's header and that block's certificate; or, while the block is not
    /// certified yet, where it is.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the indexes and the blocks disagree, or a read error.
    pub fn receipt(&self, id: &TxId) -> Result<Option<ReceiptLookup>> {
        let Some(inclusion) = self.tx_with_proof(id)? else {
            return Ok(None);
        };
        let height = inclusion.height;
        let Some(certificate) = self.certificate(height)? else {
            return Ok(Some(ReceiptLookup::Uncertified {
                height,
                certified: self.tip().certified,
            }));
        };
        let header = self
            .block(height)?
            .ok_or_else(|| self.corrupt(format!("no block at height {height}")))?
            .header;
        if certificate.block_hash != inclusion.block_hash {
            return Err(self.corrupt(format!(
                "the certificate of height {height} names another block"
            )));
        }
        Ok(Some(ReceiptLookup::Certified(Box::new(Receipt {
            version: RECEIPT_VERSION,
            tx: inclusion.tx,
            proof: inclusion.proof,
            header,
            certificate,
        }))))
    }

    /// Keeps attestations of the uncertified tail (the caller has verified them). Those
    /// of heights already certified are left out. Written without a sync: a lost
    /// attestation is signed or sent again.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] or a write error.
    pub fn put_attestations(&self, attestations: &[Attestation]) -> Result<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let certified = self.tip().certified;
        let cf = self.cf(CF_ATTESTATIONS);
        let mut batch = WriteBatch::default();
        for a in attestations.iter().filter(|a| a.height > certified) {
            batch.put_cf(cf, attestation_key(a), a.signature.0);
        }
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// The attestations kept for the uncertified tail, by height, signer and hash.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a record that is not an attestation, or a read error.
    pub fn attestations(&self) -> Result<Vec<Attestation>> {
        self.read_attestations(CF_ATTESTATIONS)
    }

    /// Keeps `a`, a verified attestation of a block that is not this chain's at its
    /// height: evidence against its signer. Returns false when the evidence store is full
    /// ([`EVIDENCE_RECORDS_MAX`]) and `a` was not kept.
    ///
    /// # Errors
    /// [`StoreError::ReadOnly`] or a read or write error.
    pub fn put_evidence(&self, a: &Attestation) -> Result<bool> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let mut count = self
            .evidence_records
            .lock()
            .expect("evidence lock poisoned");
        let n = match *count {
            Some(n) => n,
            None => self.read_attestations(CF_EVIDENCE)?.len() as u64,
        };
        if n >= EVIDENCE_RECORDS_MAX {
            *count = Some(n);
            return Ok(false);
        }
        let key = attestation_key(a);
        let known = self.get(CF_EVIDENCE, &key)?.is_some();
        if !known {
            let mut opts = rocksdb::WriteOptions::default();
            opts.set_sync(true);
            self.db
                .put_cf_opt(self.cf(CF_EVIDENCE), key, a.signature.0, &opts)
                .map_err(|e| self.db_err(e))?;
        }
        *count = Some(n + u64::from(!known));
        Ok(true)
    }

    /// The evidence kept ([`Store::put_evidence`]).
    ///
    /// # Errors
    /// As [`Store::attestations`].
    pub fn evidence(&self) -> Result<Vec<Attestation>> {
        self.read_attestations(CF_EVIDENCE)
    }

    fn read_attestations(&self, cf: &str) -> Result<Vec<Attestation>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let a = decode_attestation(&k, &v)
                .ok_or_else(|| self.corrupt(format!("a record in '{cf}' is not an attestation")))?;
            out.push(a);
        }
        Ok(out)
    }
}
