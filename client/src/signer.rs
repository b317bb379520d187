//! Building and signing transactions for the chain a node serves.

use std::path::Path;

use ordo_api::Status;
use ordo_crypto::Keypair;
use ordo_ledger::{SignedTransaction, Transaction};

use crate::{Client, Result};

/// What every transaction for one chain shares, read once from a node: the chain id and
/// the last height the transactions may be committed at (the node's tip plus the chain's
/// `tx_lifetime_blocks`, the furthest the chain accepts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxTemplate {
    /// The chain.
    pub chain_id: String,
    /// The `expires_at` of every transaction signed from this template.
    pub expires_at: u64,
}

impl TxTemplate {
    /// The template for the chain `status` describes, expiring as late as it allows.
    pub fn from_status(status: &Status) -> TxTemplate {
        TxTemplate {
            chain_id: status.chain_id.clone(),
            expires_at: status
                .tip
                .height
                .saturating_add(status.limits.tx_lifetime_blocks),
        }
    }

    /// Reads the template from `client`'s node.
    ///
    /// # Errors
    /// When the node's status cannot be read.
    pub async fn fetch(client: &Client) -> Result<TxTemplate> {
        Ok(TxTemplate::from_status(&client.status().await?))
    }

    /// A transaction from `key` with `nonce` and `payload`, signed.
    pub fn sign(&self, key: &Keypair, nonce: u64, payload: Vec<u8>) -> SignedTransaction {
        Transaction {
            chain_id: self.chain_id.clone(),
            sender: key.public(),
            nonce,
            expires_at: self.expires_at,
            payload,
        }
        .sign(key)
    }
}

/// A client key and the template of its chain: signs transactions with random nonces.
#[derive(Clone, Debug)]
pub struct Signer {
    key: Keypair,
    template: TxTemplate,
}

impl Signer {
    /// Signs as `key` from `template`.
    pub fn new(key: Keypair, template: TxTemplate) -> Signer {
        Signer { key, template }
    }

    /// Signs as `key` for the chain `client`'s node serves.
    ///
    /// # Errors
    /// When the node's status cannot be read.
    pub async fn connect(key: Keypair, client: &Client) -> Result<Signer> {
        Ok(Signer::new(key, TxTemplate::fetch(client).await?))
    }

    /// Signs as the key in `path` (mode 0600) for the chain `client`'s node serves.
    ///
    /// # Errors
    /// When the key file cannot be used or the node's status cannot be read.
    pub async fn from_key_file(path: &Path, client: &Client) -> Result<Signer> {
        let key = ordo_crypto::load_key_file(path)?;
        Signer::connect(key, client).await
    }

    /// A transaction carrying `payload`, with a random nonce, signed.
    pub fn sign(&self, payload: Vec<u8>) -> SignedTransaction {
        self.template.sign(&self.key, rand::random(), payload)
    }

    /// The key.
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// The template.
    pub fn template(&self) -> &TxTemplate {
        &self.template
    }
}
