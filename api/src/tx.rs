//! `GET /v1/transactions/{id}`, and how a transaction reads in JSON.

use ordo_crypto::merkle::Proof;
use ordo_crypto::{Hash, PublicKey, Signature};
use ordo_ledger::{SignedTransaction, Transaction, TxId};
use serde::{Deserialize, Serialize};

/// A transaction's fields (`docs/format.md` §2), with the nonce as a decimal string and
/// the payload as hex. Its id is [`TxJson::id`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxJson {
    /// The chain it is for.
    pub chain_id: String,
    /// The client that signed it.
    pub sender: PublicKey,
    /// The client's nonce (a decimal string: it may exceed 2^53).
    #[serde(with = "crate::u64_string")]
    pub nonce: u64,
    /// The last height that may include it.
    pub expires_at: u64,
    /// Application bytes, hex.
    #[serde(with = "hex")]
    pub payload: Vec<u8>,
}

impl TxJson {
    /// The transaction id these fields hash to.
    pub fn id(&self) -> TxId {
        Transaction::from(self.clone()).id()
    }
}

impl From<&Transaction> for TxJson {
    fn from(tx: &Transaction) -> TxJson {
        TxJson {
            chain_id: tx.chain_id.clone(),
            sender: tx.sender,
            nonce: tx.nonce,
            expires_at: tx.expires_at,
            payload: tx.payload.clone(),
        }
    }
}

impl From<TxJson> for Transaction {
    fn from(tx: TxJson) -> Transaction {
        Transaction {
            chain_id: tx.chain_id,
            sender: tx.sender,
            nonce: tx.nonce,
            expires_at: tx.expires_at,
            payload: tx.payload,
        }
    }
}

/// A transaction and its sender's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTxJson {
    /// The transaction.
    pub tx: TxJson,
    /// The sender's signature of the transaction id.
    pub signature: Signature,
}

impl From<&SignedTransaction> for SignedTxJson {
    fn from(t: &SignedTransaction) -> SignedTxJson {
        SignedTxJson {
            tx: TxJson::from(&t.tx),
            signature: t.signature,
        }
    }
}

impl From<SignedTxJson> for SignedTransaction {
    fn from(t: SignedTxJson) -> SignedTransaction {
        SignedTransaction {
            tx: t.tx.into(),
            signature: t.signature,
        }
    }
}

/// A transaction's status on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TxStatus {
    /// In a block applied to this node's ledger, with its inclusion proof.
    Committed(Box<CommittedTx>),
    /// Waiting in this node's mempool.
    Pending {
        /// The transaction id.
        id: TxId,
    },
}

/// A committed transaction, where it is, and the proof that its block holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedTx {
    /// The transaction id.
    pub id: TxId,
    /// Height of its block.
    pub height: u64,
    /// Its position in the block.
    pub index: u32,
    /// Hash of its block's header.
    pub block_hash: Hash,
    /// The block's transaction root.
    pub tx_root: Hash,
    /// RFC 6962 audit path of `id` under `tx_root`.
    pub proof: Proof,
    /// The transaction itself.
    pub transaction: SignedTxJson,
}

/// Why an answer does not prove what it claims.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InclusionError {
    /// The transaction's fields do not hash to the id.
    #[error("the transaction's fields hash to {actual}, not to the id {claimed}")]
    WrongId {
        /// The id the answer names.
        claimed: TxId,
        /// The id of the fields it carries.
        actual: TxId,
    },
    /// The sender's signature does not verify.
    #[error("the signature of transaction {0} does not verify")]
    BadSignature(TxId),
    /// The proof is for another position than the answer's `index`.
    #[error("the proof is for position {proof} of the block, the answer says {index}")]
    WrongIndex {
        /// The proof's leaf index.
        proof: u64,
        /// The answer's index.
        index: u32,
    },
    /// The audit path does not lead from the id to the transaction root.
    #[error("the inclusion proof does not lead from {id} to the root {tx_root}")]
    BadProof {
        /// The id.
        id: TxId,
        /// The root.
        tx_root: Hash,
    },
    /// The block's header does not have this transaction root or hash.
    #[error("block {height}'s header does not match the answer ({what})")]
    WrongBlock {
        /// The height.
        height: u64,
        /// What differs.
        what: &'static str,
    },
}

impl CommittedTx {
    /// Checks the answer on its own: the transaction hashes to `id`, its sender's
    /// signature verifies (ZIP-215), and the proof leads from `id`, at `index`, to
    /// `tx_root`.
    ///
    /// It proves that a block whose transaction root is `tx_root` holds the transaction;
    /// [`CommittedTx::check_block`] ties that root to the block's hash.
    ///
    /// # Errors
    /// The first claim that does not hold.
    pub fn check_inclusion(&self) -> Result<(), InclusionError> {
        let actual = self.transaction.tx.id();
        if actual != self.id {
            return Err(InclusionError::WrongId {
                claimed: self.id,
                actual,
            });
        }
        if ordo_crypto::verify(
            &self.transaction.tx.sender,
            self.id.as_bytes(),
            &self.transaction.signature,
        )
        .is_err()
        {
            return Err(InclusionError::BadSignature(self.id));
        }
        if self.proof.leaf_index != u64::from(self.index) {
            return Err(InclusionError::WrongIndex {
                proof: self.proof.leaf_index,
                index: self.index,
            });
        }
        if !self.proof.verify(&self.id, &self.tx_root) {
            return Err(InclusionError::BadProof {
                id: self.id,
                tx_root: self.tx_root,
            });
        }
        Ok(())
    }

    /// Checks that `block` (for example from `GET /v1/blocks/{block_hash}`) is the block this
    /// answer names: its header hashes to `block_hash` and carries `tx_root` at `height`.
    ///
    /// # Errors
    /// What differs.
    pub fn check_block(&self, block: &crate::BlockJson) -> Result<(), InclusionError> {
        let wrong = |what| InclusionError::WrongBlock {
            height: self.height,
            what,
        };
        if block.height != self.height {
            return Err(wrong("height"));
        }
        if block.tx_root != self.tx_root {
            return Err(wrong("transaction root"));
        }
        if block.header().hash() != self.block_hash {
            return Err(wrong("header hash"));
        }
        Ok(())
    }
}

/// The path of a transaction's receipt (`{id}`: its 64-digit hex id).
pub const RECEIPT_PATH: &str = "/v1/transactions/{id}/receipt";

/// `GET /v1/transactions/{id}/receipt`: the receipt of a committed transaction
/// (`docs/format.md` §11), or where its block is while no block certifies it yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// Its block is certified: the receipt.
    Certified {
        /// The transaction id.
        id: TxId,
        /// Its block's height.
        height: u64,
        /// The receipt's canonical bytes, hex (`ordo_ledger::Receipt::from_bytes`).
        #[serde(with = "hex")]
        receipt: Vec<u8>,
    },
    /// Committed, in a block of the uncertified tail: ask again after a few blocks.
    Uncertified {
        /// The transaction id.
        id: TxId,
        /// Its block's height.
        height: u64,
        /// Every block at or below this height is certified.
        certified: u64,
    },
}
