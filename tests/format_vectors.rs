//! Checks every test vector written in `docs/format.md` against the code, so the document
//! and the bytes on the wire and on disk cannot drift apart.
//!
//! Vectors are fenced blocks tagged `vector`, one `key = value` per line. Inputs are
//! recomputed into outputs and compared. To print what the code computes (when the format is
//! changed on purpose), run with `ORDO_PRINT_VECTORS=1`.

mod support;

use std::collections::BTreeMap;

use ordo_crypto::{Domain, Hash, Keypair, PublicKey, Signature, merkle};
use ordo_genesis::{Client, Genesis, Validator};
use ordo_ledger::{ChainTip, SignedTransaction, Transaction, build_block, encode};

type Vector = BTreeMap<String, String>;

fn vectors() -> Vec<Vector> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/format.md"))
        .expect("read format.md");
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```vector") => current = Some(Vector::new()),
            (Some(_), "```") => out.push(current.take().expect("open block")),
            (Some(v), l) if !l.is_empty() => {
                let (k, val) = l
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad vector line: {l}"));
                v.insert(k.trim().to_owned(), val.trim().trim_matches('"').to_owned());
            }
            _ => {}
        }
    }
    out
}

fn printing() -> bool {
    std::env::var_os("ORDO_PRINT_VECTORS").is_some()
}

/// Compares (or, when printing, shows) one computed output.
fn check(v: &Vector, key: &str, computed: &str) {
    if printing() {
        println!("{} / {key} = {computed}", v["name"]);
        return;
    }
    let expected = v
        .get(key)
        .unwrap_or_else(|| panic!("vector {} lacks {key}", v["name"]));
    assert_eq!(computed, expected, "vector {} field {key}", v["name"]);
}

fn seed_key(v: &Vector, field: &str) -> Keypair {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(&v[field], &mut seed).expect("seed hex");
    Keypair::from_secret(&seed)
}

fn vector_transaction(v: &Vector) -> SignedTransaction {
    let key = seed_key(v, "sender_seed");
    Transaction {
        chain_id: v["chain_id"].clone(),
        sender: key.public(),
        nonce: v["nonce"].parse().expect("nonce"),
        expires_at: v["expires_at"].parse().expect("expires_at"),
        payload: hex::decode(&v["payload"]).expect("payload hex"),
    }
    .sign(&key)
}

fn check_hash(v: &Vector) {
    let domain = match v["domain"].as_str() {
        "transaction" => Domain::Transaction,
        "block-header" => Domain::BlockHeader,
        "genesis" => Domain::Genesis,
        other => panic!("unknown domain {other}"),
    };
    let input = hex::decode(&v["input"]).expect("input hex");
    check(v, "digest", &Hash::digest(domain, &input).to_string());
}

fn check_transaction(v: &Vector) {
    let tx = vector_transaction(v);
    check(v, "sender", &tx.tx.sender.to_string());
    check(v, "unsigned", &hex::encode(encode(&tx.tx)));
    check(v, "id", &tx.id().to_string());
    check(v, "signature", &tx.signature.to_string());
    check(v, "signed", &hex::encode(tx.to_bytes()));
    let back = SignedTransaction::from_bytes(&tx.to_bytes(), u64::MAX).expect("decodes");
    assert_eq!(back, tx);
}

fn check_block(v: &Vector, txs: &[SignedTransaction]) {
    let proposer = seed_key(v, "proposer_seed");
    let parent = ChainTip {
        height: v["parent_height"].parse().expect("height"),
        hash: v["parent_hash"].parse().expect("hash"),
        timestamp_ms: v["parent_timestamp_ms"].parse().expect("ts"),
    };
    let ts = v["timestamp_ms"].parse().expect("ts");
    let term = v["term"].parse().expect("term");
    let block = build_block(&parent, &v["chain_id"], txs.to_vec(), &proposer, ts, term);
    check(v, "proposer", &block.header.proposer.to_string());
    check(v, "tx_root", &block.header.tx_root.to_string());
    check(v, "header", &hex::encode(encode(&block.header)));
    check(v, "hash", &block.hash().to_string());
    check(v, "block", &hex::encode(block.to_bytes()));
}

fn check_merkle(v: &Vector) {
    let n: u64 = v["leaves"].parse().expect("leaves");
    let leaves: Vec<Hash> = (0..n)
        .map(|i| Hash::digest(Domain::Transaction, &i.to_le_bytes()))
        .collect();
    check(v, "root", &merkle::root(&leaves).to_string());
    if let Some(i) = v.get("proof_index") {
        let i: usize = i.parse().expect("index");
        let proof = merkle::prove(&leaves, i).expect("in range");
        let path: Vec<String> = proof.path.iter().map(ToString::to_string).collect();
        check(v, "proof", &path.join(","));
        assert!(proof.verify(&leaves[i], &merkle::root(&leaves)));
    }
}

fn check_genesis(v: &Vector) {
    let validator = seed_key(v, "validator_seed");
    let client = seed_key(v, "client_seed");
    let mut g = Genesis::new(&v["chain_id"]);
    g.validators.push(Validator {
        name: "v1".into(),
        public_key: validator.public(),
        addresses: vec![],
    });
    g.clients.push(Client {
        name: "alice".into(),
        public_key: client.public(),
    });
    g.validate().expect("vector genesis valid");
    check(v, "hash", &g.hash().to_string());
}

fn check_signature(v: &Vector) {
    let key: PublicKey = v["public_key"].parse().expect("key hex");
    let sig: Signature = v["signature"].parse().expect("sig hex");
    let msg = hex::decode(&v["message"]).expect("message hex");
    let verdict = if ordo_crypto::verify(&key, &msg, &sig).is_ok() {
        "accept"
    } else {
        "reject"
    };
    check(v, "verdict", verdict);
    // The batch path must reach the same verdict as the single path.
    let mut batch = ordo_crypto::BatchVerifier::default();
    batch.queue(&key, &msg, &sig);
    batch.queue(
        &Keypair::from_label("x").public(),
        b"m",
        &Keypair::from_label("x").sign(b"m"),
    );
    let batch_verdict = if batch.verify().is_ok() {
        "accept"
    } else {
        "reject"
    };
    assert_eq!(batch_verdict, verdict, "batch verdict for {}", v["name"]);
    if let Some(strong) = v.get("genesis_key") {
        let computed = match key.check_strong() {
            Ok(()) => "accepted",
            Err(_) => "refused",
        };
        assert_eq!(computed, strong, "genesis key check for {}", v["name"]);
    }
}

#[test]
fn format_md_vectors_match_the_code() {
    let all = vectors();
    assert!(
        all.len() >= 10,
        "docs/format.md should hold the vectors ({} found)",
        all.len()
    );
    let mut txs = Vec::new();
    let mut counts = BTreeMap::new();
    for v in &all {
        let kind = v
            .get("kind")
            .unwrap_or_else(|| panic!("vector without kind: {v:?}"))
            .clone();
        *counts.entry(kind.clone()).or_insert(0) += 1;
        match kind.as_str() {
            "hash" => check_hash(v),
            "transaction" => {
                check_transaction(v);
                txs.push(vector_transaction(v));
            }
            "block" => check_block(v, &txs),
            "merkle" => check_merkle(v),
            "genesis" => check_genesis(v),
            "signature" => check_signature(v),
            other => panic!("unknown vector kind {other}"),
        }
    }
    for kind in [
        "hash",
        "transaction",
        "block",
        "merkle",
        "genesis",
        "signature",
    ] {
        assert!(
            counts.contains_key(kind),
            "no {kind} vector in docs/format.md"
        );
    }
}
