//! Receipts: a transaction's proof of being ordered, checkable by anyone holding only the
//! genesis.
//!
//! A receipt carries the signed transaction, its Merkle inclusion proof, the header of the
//! block that holds it and that block's certificate (a majority of the validators'
//! signatures over the header's hash). Checking it needs no node and no data directory:
//! the transaction's signature and the chain's rules, the proof up to the header's
//! `tx_root`, the header's hash in the certificate, and the certificate's majority.

use borsh::{BorshDeserialize, BorshSerialize};
use ordo_crypto::{Hash, PublicKey, merkle};
use serde::{Deserialize, Serialize};

use crate::certify::{CertificateError, verify_certificate};
use crate::policy::{BLOCK_BYTES_LIMIT, Policy};
use crate::types::{BlockHeader, Certificate, SignedTransaction, TxId};
use crate::verify::{TxError, verify_transaction};

/// The receipt format this version writes and reads.
pub const RECEIPT_VERSION: u32 = 1;
/// Largest encoded receipt read (a block's limit bounds everything it holds).
pub const RECEIPT_BYTES_MAX: u64 = BLOCK_BYTES_LIMIT;

/// A transaction's proof of being ordered in a certified block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Receipt {
    /// [`RECEIPT_VERSION`].
    pub version: u32,
    /// The transaction, with its sender's signature.
    pub tx: SignedTransaction,
    /// Its id's inclusion proof under the header's `tx_root`.
    pub proof: merkle::Proof,
    /// The header of the block that holds it.
    pub header: BlockHeader,
    /// That block's certificate.
    pub certificate: Certificate,
}

/// What a verified receipt proves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The transaction's id.
    pub id: TxId,
    /// The height of its block.
    pub height: u64,
    /// Its position in the block.
    pub index: u64,
    /// The block's hash.
    pub block_hash: Hash,
    /// The validators whose signatures certify the block.
    pub signers: Vec<PublicKey>,
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The bytes are not a receipt.
    #[error("not a receipt: {0}")]
    Decode(String),
    /// Another receipt format.
    #[error("receipt format {0}; this ordo reads format {RECEIPT_VERSION}")]
    Version(u32),
    /// The block is of another chain.
    #[error("the block is of chain '{found}', the genesis is of '{expected}'")]
    WrongChain {
        /// The genesis's chain.
        expected: String,
        /// The header's chain.
        found: String,
    },
    /// The transaction breaks a rule of the chain for that block.
    #[error("the transaction: {0}")]
    Transaction(TxError),
    /// The proof does not lead from the transaction to the header's `tx_root`.
    #[error("the inclusion proof does not lead from the transaction to the block's tx_root")]
    NotInBlock,
    /// The certificate is of another block.
    #[error(
        "the certificate is of block {cert_hash} at height {cert_height}, not of this block {block_hash} at height {height}"
    )]
    OtherBlock {
        /// The header's height.
        height: u64,
        /// The header's hash.
        block_hash: Hash,
        /// The certificate's height.
        cert_height: u64,
        /// The certificate's block hash.
        cert_hash: Hash,
    },
    /// The certificate does not certify.
    #[error("the certificate: {0}")]
    Certificate(CertificateError),
}

impl Receipt {
    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::encode(self)
    }

    /// Decodes canonical bytes (at most [`RECEIPT_BYTES_MAX`]).
    ///
    /// # Errors
    /// [`ReceiptError::Decode`], or [`ReceiptError::Version`] for another format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        if bytes.len() as u64 > RECEIPT_BYTES_MAX {
            return Err(ReceiptError::Decode(format!(
                "{} bytes, limit is {RECEIPT_BYTES_MAX}",
                bytes.len()
            )));
        }
        let version = bytes
            .get(..4)
            .map(|v| u32::from_le_bytes(v.try_into().expect("4 bytes")));
        match version {
            Some(RECEIPT_VERSION) => {}
            Some(v) => return Err(ReceiptError::Version(v)),
            None => return Err(ReceiptError::Decode("shorter than its version".into())),
        }
        borsh::from_slice(bytes).map_err(|e| ReceiptError::Decode(e.to_string()))
    }

    /// Checks the receipt against the chain `policy` describes (its genesis): the
    /// transaction (signature and rules, at the block's height), its inclusion proof under
    /// the header's `tx_root` with the header's transaction count, and the certificate of
    /// the header's hash by a majority of the validators.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn verify(&self, policy: &Policy) -> Result<Verified, ReceiptError> {
        if self.version != RECEIPT_VERSION {
            return Err(ReceiptError::Version(self.version));
        }
        let h = &self.header;
        if h.chain_id != policy.chain_id {
            return Err(ReceiptError::WrongChain {
                expected: policy.chain_id.clone(),
                found: h.chain_id.clone(),
            });
        }
        let id = verify_transaction(&self.tx, policy, h.height).map_err(|e| match e {
            crate::VerifyError::Tx { error, .. } => ReceiptError::Transaction(error),
            other => ReceiptError::Decode(other.to_string()),
        })?;
        if self.proof.tree_size != u64::from(h.n_txs) || !self.proof.verify(&id, &h.tx_root) {
            return Err(ReceiptError::NotInBlock);
        }
        let block_hash = h.hash();
        let c = &self.certificate;
        if c.height != h.height || c.block_hash != block_hash {
            return Err(ReceiptError::OtherBlock {
                height: h.height,
                block_hash,
                cert_height: c.height,
                cert_hash: c.block_hash,
            });
        }
        verify_certificate(c, &policy.chain_id, &policy.validators)
            .map_err(ReceiptError::Certificate)?;
        let signers = c
            .signer_positions()
            .map(|p| policy.validators.keys()[p])
            .collect();
        Ok(Verified {
            id,
            height: h.height,
            index: self.proof.leaf_index,
            block_hash,
            signers,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use ordo_crypto::{Keypair, Signature};

    use super::*;
    use crate::{Attestation, ChainBuilder, Limits, Transaction, ValidatorSet, certificate};

    fn setup() -> (Policy, Vec<Keypair>, Keypair) {
        let validators: Vec<Keypair> = (0..3)
            .map(|i| Keypair::from_label(&format!("rv{i}")))
            .collect();
        let client = Keypair::from_label("rc");
        let policy = Policy {
            chain_id: "receipts".into(),
            genesis_hash: Hash([1; 32]),
            validators: validators
                .iter()
                .map(Keypair::public)
                .collect::<ValidatorSet>(),
            clients: HashSet::from([client.public()]),
            limits: Limits::default(),
            certify_lag: 8,
        };
        (policy, validators, client)
    }

    fn receipt() -> (Policy, Receipt) {
        let (policy, validators, client) = setup();
        let mut chain = ChainBuilder::new(&policy, validators.clone());
        let txs: Vec<SignedTransaction> = (0..5)
            .map(|n| {
                Transaction {
                    chain_id: "receipts".into(),
                    sender: client.public(),
                    nonce: n,
                    expires_at: 5,
                    payload: vec![n as u8; 3],
                }
                .sign(&client)
            })
            .collect();
        let block = chain.build(txs, &validators[0], 1_000, 1);
        let ids = block.tx_ids();
        let sigs: BTreeMap<PublicKey, Signature> = validators[..2]
            .iter()
            .map(|k| {
                let a = Attestation::sign("receipts", 1, block.hash(), k);
                (a.signer, a.signature)
            })
            .collect();
        let receipt = Receipt {
            version: RECEIPT_VERSION,
            tx: block.txs[3].clone(),
            proof: merkle::prove(&ids, 3).expect("in range"),
            header: block.header.clone(),
            certificate: certificate(&policy.validators, 1, block.hash(), &sigs),
        };
        (policy, receipt)
    }

    #[test]
    fn a_receipt_verifies_with_the_genesis_alone() {
        let (policy, r) = receipt();
        let back = Receipt::from_bytes(&r.to_bytes()).expect("decodes");
        let v = back.verify(&policy).expect("verifies");
        assert_eq!((v.height, v.index, v.signers.len()), (1, 3, 2));
        assert_eq!(v.id, r.tx.id());
    }

    #[test]
    fn every_flipped_byte_fails() {
        let (policy, r) = receipt();
        let bytes = r.to_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let verdict = Receipt::from_bytes(&b).and_then(|r| r.verify(&policy));
                assert!(
                    verdict.is_err(),
                    "byte {i} bit {bit:#x} flipped still verifies"
                );
            }
        }
    }

    #[test]
    fn a_receipt_against_another_genesis_fails() {
        let (mut policy, r) = receipt();
        policy.validators = ValidatorSet::from([Keypair::from_label("other").public()]);
        assert!(r.verify(&policy).is_err());
    }
}
