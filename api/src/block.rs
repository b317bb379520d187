//! `GET /v1/blocks/{height | hash | latest}`, and how a block reads in JSON (also in the
//! event stream).

use ordo_crypto::{Hash, PublicKey, Signature};
use ordo_ledger::{Block, BlockHeader, Certificate, TxId};
use serde::{Deserialize, Serialize};

use crate::tx::TxJson;

/// Which block to get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockId {
    /// By height.
    Height(u64),
    /// By the hash of its header.
    Hash(Hash),
    /// The node's latest applied block.
    Latest,
}

impl std::fmt::Display for BlockId {
    /// The path segment: a height, 64 hex digits, or `latest`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockId::Height(h) => write!(f, "{h}"),
            BlockId::Hash(h) => write!(f, "{h}"),
            BlockId::Latest => f.write_str("latest"),
        }
    }
}

impl std::str::FromStr for BlockId {
    type Err = String;

    /// A height, a 64-digit hex hash, or `latest`.
    fn from_str(s: &str) -> Result<BlockId, String> {
        let s = s.trim();
        if s == "latest" {
            return Ok(BlockId::Latest);
        }
        if let Ok(h) = s.parse::<u64>() {
            return Ok(BlockId::Height(h));
        }
        s.parse::<Hash>()
            .map(BlockId::Hash)
            .map_err(|_| format!("'{s}' is not a height, a 64-digit hex hash or `latest`"))
    }
}

/// The query string of a block request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockQuery {
    /// Include whole transactions (the default) or only their ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txs: Option<bool>,
}

/// A block: its header's fields, hash, proposer signature and encoded size, and either its
/// transactions or only their ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockJson {
    /// Height, from 1.
    pub height: u64,
    /// Hash of the header.
    pub hash: Hash,
    /// Hash of the parent's header (the genesis hash for block 1).
    pub prev_hash: Hash,
    /// The chain.
    pub chain_id: String,
    /// Merkle root of the transaction ids.
    pub tx_root: Hash,
    /// Number of transactions.
    pub n_txs: u32,
    /// The proposer's clock, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The validator that built and signed it.
    pub proposer: PublicKey,
    /// The Raft term it was proposed in.
    pub term: u64,
    /// Every block at or below this height is certified (by this block or an earlier one).
    pub certified: u64,
    /// The hash the header commits to the certificates by.
    pub certs_root: Hash,
    /// The proposer's signature of the header hash.
    pub signature: Signature,
    /// The certificates of earlier blocks it carries, by height.
    pub certificates: Vec<Certificate>,
    /// Bytes of its canonical encoding.
    pub bytes: u64,
    /// Its transactions in block order, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<Vec<BlockTx>>,
    /// Its transaction ids in block order, when the transactions were not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_ids: Option<Vec<TxId>>,
}

/// One transaction of a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockTx {
    /// Its id.
    pub id: TxId,
    /// Its fields.
    pub tx: TxJson,
    /// The sender's signature.
    pub signature: Signature,
}

impl BlockJson {
    /// `block` as JSON, given its hash and transaction ids (in block order), with whole
    /// transactions or only their ids.
    pub fn new(block: &Block, hash: &Hash, ids: &[TxId], with_txs: bool) -> BlockJson {
        let h = &block.header;
        let (transactions, tx_ids) = if with_txs {
            let txs = block
                .txs
                .iter()
                .zip(ids)
                .map(|(t, id)| BlockTx {
                    id: *id,
                    tx: TxJson::from(&t.tx),
                    signature: t.signature,
                })
                .collect();
            (Some(txs), None)
        } else {
            (None, Some(ids.to_vec()))
        };
        BlockJson {
            height: h.height,
            hash: *hash,
            prev_hash: h.prev_hash,
            chain_id: h.chain_id.clone(),
            tx_root: h.tx_root,
            n_txs: h.n_txs,
            timestamp_ms: h.timestamp_ms,
            proposer: h.proposer,
            term: h.term,
            certified: h.certified,
            certs_root: h.certs_root,
            signature: block.signature,
            certificates: block.certificates.clone(),
            bytes: block.encoded_len(),
            transactions,
            tx_ids,
        }
    }

    /// The header these fields describe; its [`BlockHeader::hash`] should be `hash`.
    pub fn header(&self) -> BlockHeader {
        BlockHeader {
            chain_id: self.chain_id.clone(),
            height: self.height,
            prev_hash: self.prev_hash,
            tx_root: self.tx_root,
            n_txs: self.n_txs,
            timestamp_ms: self.timestamp_ms,
            proposer: self.proposer,
            term: self.term,
            certified: self.certified,
            certs_root: self.certs_root,
        }
    }

    /// The transaction ids, whichever form the block came in.
    pub fn ids(&self) -> Vec<TxId> {
        match (&self.transactions, &self.tx_ids) {
            (Some(txs), _) => txs.iter().map(|t| t.id).collect(),
            (None, Some(ids)) => ids.clone(),
            (None, None) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ordo_crypto::Keypair;
    use ordo_ledger::{ChainTip, Transaction, build_block};

    use super::*;

    fn block() -> Block {
        let (v, c) = (Keypair::from_label("v"), Keypair::from_label("c"));
        let tx = Transaction {
            chain_id: "api".into(),
            sender: c.public(),
            nonce: u64::MAX - 1,
            expires_at: 5,
            payload: b"hi".to_vec(),
        }
        .sign(&c);
        build_block(
            &ChainTip::genesis(Hash([3; 32])),
            "api",
            vec![],
            vec![tx],
            &v,
            1_000,
            2,
        )
    }

    #[test]
    fn a_block_reads_back_and_its_header_hashes_to_its_hash() {
        let b = block();
        for with_txs in [true, false] {
            let json = BlockJson::new(&b, &b.hash(), &b.tx_ids(), with_txs);
            let text = serde_json::to_string(&json).expect("encodes");
            let back: BlockJson = serde_json::from_str(&text).expect("decodes");
            assert_eq!(back, json);
            assert_eq!(back.header().hash(), b.hash());
            assert_eq!(back.ids(), b.tx_ids());
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(v.get("transactions").is_some(), with_txs, "{v}");
            assert_eq!(v.get("tx_ids").is_some(), !with_txs, "{v}");
            if with_txs {
                assert_eq!(v["transactions"][0]["tx"]["nonce"], "18446744073709551614");
            }
        }
    }

    #[test]
    fn block_ids_parse_and_print_as_path_segments() {
        for text in ["latest", "42", &Hash([0xab; 32]).to_string()] {
            let id: BlockId = text.parse().expect("parses");
            assert_eq!(id.to_string(), text);
        }
        assert!("forty".parse::<BlockId>().is_err());
    }
}
