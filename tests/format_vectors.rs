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
use ordo_ledger::{
    Attestation, Certificate, ChainTip, Receipt, SignedTransaction, Transaction, ValidatorSet,
    build_block, certificate, certs_root, encode, verify_certificate,
};

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
        "attestation" => Domain::Attestation,
        "certificates" => Domain::Certificates,
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

fn check_attestation(v: &Vector) {
    let key = seed_key(v, "signer_seed");
    let height = v["height"].parse().expect("height");
    let block_hash = v["block_hash"].parse().expect("hash");
    let a = Attestation::sign(&v["chain_id"], height, block_hash, &key);
    check(v, "signer", &a.signer.to_string());
    check(
        v,
        "digest",
        &Attestation::digest(&v["chain_id"], height, &block_hash).to_string(),
    );
    check(v, "signature", &a.signature.to_string());
}

/// The validator set of a certificate vector (seeds, comma-separated).
fn vector_validators(v: &Vector) -> Vec<Keypair> {
    v["validator_seeds"]
        .split(',')
        .map(|s| {
            let mut seed = [0u8; 32];
            hex::decode_to_slice(s.trim(), &mut seed).expect("seed hex");
            Keypair::from_secret(&seed)
        })
        .collect()
}

/// The certificate a vector describes: `validator_seeds`, and `signers` (positions in key
/// order) attesting block `block_hash` at `height` of `chain_id`.
fn signed_certificate(v: &Vector, chain_id: &str, height: u64, block_hash: Hash) -> Certificate {
    let keys = vector_validators(v);
    let set: ValidatorSet = keys.iter().map(Keypair::public).collect();
    let sigs: BTreeMap<PublicKey, Signature> = v["signers"]
        .split(',')
        .map(|p| {
            let p: usize = p.trim().parse().expect("position");
            let key = keys
                .iter()
                .find(|k| k.public() == set.keys()[p])
                .expect("a validator");
            let a = Attestation::sign(chain_id, height, block_hash, key);
            (a.signer, a.signature)
        })
        .collect();
    certificate(&set, height, block_hash, &sigs)
}

fn vector_certificate(v: &Vector) -> Certificate {
    let set: ValidatorSet = vector_validators(v).iter().map(Keypair::public).collect();
    let height = v["height"].parse().expect("height");
    let block_hash = v["block_hash"].parse().expect("hash");
    let cert = signed_certificate(v, &v["chain_id"], height, block_hash);
    verify_certificate(&cert, &v["chain_id"], &set).expect("the vector certificate verifies");
    cert
}

fn check_certificate(v: &Vector) {
    let keys = vector_validators(v);
    let set: ValidatorSet = keys.iter().map(Keypair::public).collect();
    let order: Vec<String> = set.keys().iter().map(ToString::to_string).collect();
    check(v, "validators", &order.join(","));
    let cert = vector_certificate(v);
    check(v, "bitmap", &hex::encode(&cert.signers));
    check(v, "certificate", &hex::encode(encode(&cert)));
    check(
        v,
        "certs_root",
        &certs_root(std::slice::from_ref(&cert)).to_string(),
    );
}

/// The receipt vector: a transaction of the first block vector, certified by the
/// validators of the certificate vector.
fn check_receipt(v: &Vector, blocks: &BTreeMap<String, ordo_ledger::Block>) {
    let set: ValidatorSet = vector_validators(v).iter().map(Keypair::public).collect();
    let block = &blocks[&v["block"]];
    let index: usize = v["tx_index"].parse().expect("index");
    let receipt = Receipt {
        version: ordo_ledger::RECEIPT_VERSION,
        tx: block.txs[index].clone(),
        proof: merkle::prove(&block.tx_ids(), index).expect("in range"),
        header: block.header.clone(),
        certificate: signed_certificate(
            v,
            &block.header.chain_id,
            block.header.height,
            block.hash(),
        ),
    };
    let bytes = receipt.to_bytes();
    check(v, "receipt", &hex::encode(&bytes));
    check(v, "id", &receipt.tx.id().to_string());
    if printing() {
        return;
    }
    // What a verifier in any language does: decode the vector's bytes, check them with
    // the chain's rules (here: chain id, these validators, the vector's client).
    let client = seed_key(v, "client_seed");
    let policy = ordo_ledger::Policy {
        chain_id: block.header.chain_id.clone(),
        genesis_hash: Hash([0; 32]),
        validators: set,
        clients: [client.public()].into_iter().collect(),
        limits: ordo_ledger::Limits::default(),
        certify_lag: ordo_ledger::CERTIFY_LAG_DEFAULT,
    };
    let given = hex::decode(&v["receipt"]).expect("receipt hex");
    let verified = Receipt::from_bytes(&given)
        .and_then(|r| r.verify(&policy))
        .expect("the vector receipt verifies");
    assert_eq!(verified.id, receipt.tx.id());
    for i in 0..given.len() {
        let mut flipped = given.clone();
        flipped[i] ^= 0x10;
        assert!(
            Receipt::from_bytes(&flipped)
                .and_then(|r| r.verify(&policy))
                .is_err(),
            "the receipt vector with byte {i} flipped still verifies"
        );
    }
}

fn check_block(v: &Vector, txs: &[SignedTransaction], certs: &[Certificate]) -> ordo_ledger::Block {
    let proposer = seed_key(v, "proposer_seed");
    let parent = ChainTip {
        height: v["parent_height"].parse().expect("height"),
        hash: v["parent_hash"].parse().expect("hash"),
        timestamp_ms: v["parent_timestamp_ms"].parse().expect("ts"),
        certified: v["parent_certified"].parse().expect("certified"),
    };
    let ts = v["timestamp_ms"].parse().expect("ts");
    let term = v["term"].parse().expect("term");
    let certs = match v["certificates"].as_str() {
        "none" => vec![],
        "above" => certs.to_vec(),
        other => panic!("certificates = {other}: none or above"),
    };
    let block = build_block(
        &parent,
        &v["chain_id"],
        certs,
        txs.to_vec(),
        &proposer,
        ts,
        term,
    );
    check(v, "proposer", &block.header.proposer.to_string());
    check(v, "tx_root", &block.header.tx_root.to_string());
    check(v, "header", &hex::encode(encode(&block.header)));
    check(v, "hash", &block.hash().to_string());
    check(v, "block", &hex::encode(block.to_bytes()));
    block
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
    let mut certs = Vec::new();
    let mut blocks = BTreeMap::new();
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
            "attestation" => check_attestation(v),
            "certificate" => {
                check_certificate(v);
                certs.push(vector_certificate(v));
            }
            "block" => {
                blocks.insert(v["name"].clone(), check_block(v, &txs, &certs));
            }
            "receipt" => check_receipt(v, &blocks),
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
        "attestation",
        "certificate",
        "receipt",
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
