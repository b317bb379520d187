//! One test per verification rule: each builds a valid block, breaks exactly one rule, and
//! checks that `verify_block` names that rule.

use std::collections::HashSet;

use ordo_crypto::{Domain, Hash, Keypair, PublicKey, Signature};

use super::*;
use crate::{Limits, Transaction, build_block};

const CHAIN: &str = "verify-test";

struct Fixture {
    policy: Policy,
    validator: Keypair,
    client: Keypair,
    parent: ChainTip,
}

fn fixture() -> Fixture {
    let validator = Keypair::from_label("validator");
    let client = Keypair::from_label("client");
    let policy = Policy {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::digest(Domain::Genesis, CHAIN.as_bytes()),
        validators: crate::ValidatorSet::from([
            validator.public(),
            Keypair::from_label("validator-2").public(),
        ]),
        clients: HashSet::from([client.public()]),
        limits: Limits {
            block_txs_max: 8,
            block_bytes_max: 8 << 10,
            tx_bytes_max: 1 << 10,
            tx_lifetime_blocks: 100,
        },
        certify_lag: crate::CERTIFY_LAG_DEFAULT,
    };
    let parent = ChainTip {
        height: 41,
        hash: Hash::digest(Domain::BlockHeader, b"parent"),
        timestamp_ms: 5_000,
        // Block 42 must certify everything up to 42 - 8 = 34: already done.
        certified: 34,
    };
    Fixture {
        policy,
        validator,
        client,
        parent,
    }
}

impl Fixture {
    fn tx(&self, nonce: u64) -> SignedTransaction {
        self.tx_with(nonce, |_| {})
    }

    fn tx_with(&self, nonce: u64, change: impl FnOnce(&mut Transaction)) -> SignedTransaction {
        let mut tx = Transaction {
            chain_id: CHAIN.into(),
            sender: self.client.public(),
            nonce,
            expires_at: self.parent.height + 10,
            payload: format!("payload {nonce}").into_bytes(),
        };
        change(&mut tx);
        let key = if tx.sender == self.client.public() {
            self.client.clone()
        } else {
            Keypair::from_label("stranger")
        };
        let signature = key.sign(tx.id().as_bytes());
        SignedTransaction { tx, signature }
    }

    fn block(&self, txs: Vec<SignedTransaction>) -> Block {
        build_block(&self.parent, CHAIN, vec![], txs, &self.validator, 6_000, 3)
    }

    fn valid_block(&self) -> Block {
        self.block((0..4).map(|n| self.tx(n)).collect())
    }

    fn verify(&self, block: &Block) -> Result<Vec<TxId>, VerifyError> {
        verify_block(&self.parent, block, &self.policy)
    }

    /// Changes the header and re-signs it, so only the changed rule can fail.
    fn resigned(&self, mut block: Block, change: impl FnOnce(&mut crate::BlockHeader)) -> Block {
        change(&mut block.header);
        block.signature = self.validator.sign(block.header.hash().as_bytes());
        block
    }

    fn tx_error(&self, block: &Block) -> (u32, TxError) {
        match self.verify(block) {
            Err(VerifyError::Tx { index, error, .. }) => (index, error),
            other => panic!("expected a transaction error, got {other:?}"),
        }
    }
}

#[test]
fn valid_block_verifies_and_returns_ids() {
    let f = fixture();
    let b = f.valid_block();
    assert_eq!(f.verify(&b), Ok(b.tx_ids()));
}

#[test]
fn wrong_chain() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.chain_id = "other".into());
    assert!(matches!(f.verify(&b), Err(VerifyError::WrongChain { .. })));
}

#[test]
fn wrong_height() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.height += 1);
    assert_eq!(
        f.verify(&b),
        Err(VerifyError::WrongHeight {
            expected: 42,
            found: 43
        })
    );
}

#[test]
fn broken_hash_link() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.prev_hash.0[0] ^= 1);
    assert!(matches!(
        f.verify(&b),
        Err(VerifyError::BrokenHashLink { .. })
    ));
}

#[test]
fn timestamp_before_parent() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.timestamp_ms = 4_999);
    assert_eq!(
        f.verify(&b),
        Err(VerifyError::TimestampBeforeParent {
            parent: 5_000,
            found: 4_999
        })
    );
}

#[test]
fn a_block_too_far_ahead_of_the_checking_nodes_time_is_refused() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.timestamp_ms = 20_000);
    assert!(f.verify(&b).is_ok(), "the chain's rules have no clock");
    assert_eq!(check_block_time(&b, 10_000, 10_000), Ok(()));
    assert_eq!(
        check_block_time(&b, 9_999, 10_000),
        Err(VerifyError::TimestampAhead {
            now: 9_999,
            found: 20_000,
            bound: 10_000
        })
    );
    let e = check_block_time(&b, 9_000, 10_000).expect_err("ahead");
    assert!(e.to_string().contains("11000 ms ahead"), "{e}");
    assert_eq!(check_block_time(&b, u64::MAX, u64::MAX), Ok(()));
}

#[test]
fn builder_never_goes_back_in_time() {
    let f = fixture();
    let b = build_block(&f.parent, CHAIN, vec![], vec![f.tx(1)], &f.validator, 0, 1);
    assert_eq!(b.header.timestamp_ms, f.parent.timestamp_ms);
    assert!(f.verify(&b).is_ok());
}

#[test]
fn unknown_proposer() {
    let f = fixture();
    let outsider = Keypair::from_label("outsider");
    let b = build_block(&f.parent, CHAIN, vec![], vec![f.tx(1)], &outsider, 6_000, 1);
    assert_eq!(
        f.verify(&b),
        Err(VerifyError::UnknownProposer(outsider.public()))
    );
}

#[test]
fn bad_proposer_signature() {
    let f = fixture();
    let mut b = f.valid_block();
    b.signature.0[10] ^= 1;
    assert_eq!(f.verify(&b), Err(VerifyError::BadProposerSignature));
}

#[test]
fn signature_by_another_validator_is_rejected() {
    let f = fixture();
    let mut b = f.valid_block();
    b.signature = Keypair::from_label("validator-2").sign(b.header.hash().as_bytes());
    assert_eq!(f.verify(&b), Err(VerifyError::BadProposerSignature));
}

#[test]
fn empty_block() {
    let f = fixture();
    let b = f.block(vec![]);
    assert_eq!(f.verify(&b), Err(VerifyError::EmptyBlock));
}

#[test]
fn too_many_txs() {
    let f = fixture();
    let b = f.block((0..9).map(|n| f.tx(n)).collect());
    assert_eq!(
        f.verify(&b),
        Err(VerifyError::TooManyTxs { count: 9, max: 8 })
    );
}

#[test]
fn tx_count_mismatch() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.n_txs = 3);
    assert_eq!(
        f.verify(&b),
        Err(VerifyError::TxCountMismatch {
            header: 3,
            actual: 4
        })
    );
}

#[test]
fn block_too_large() {
    let f = fixture();
    let txs = (0..8)
        .map(|n| f.tx_with(n, |t| t.payload = vec![7; 900]))
        .collect();
    let b = f.block(txs);
    assert!(matches!(
        f.verify(&b),
        Err(VerifyError::BlockTooLarge { max: 8192, .. })
    ));
}

#[test]
fn merkle_root_mismatch() {
    let f = fixture();
    let b = f.resigned(f.valid_block(), |h| h.tx_root.0[31] ^= 1);
    assert!(matches!(
        f.verify(&b),
        Err(VerifyError::MerkleRootMismatch { .. })
    ));
}

#[test]
fn reordered_transactions_break_the_root() {
    let f = fixture();
    let mut b = f.valid_block();
    b.txs.swap(0, 1);
    assert!(matches!(
        f.verify(&b),
        Err(VerifyError::MerkleRootMismatch { .. })
    ));
}

#[test]
fn tx_too_large() {
    let f = fixture();
    let b = f.block(vec![f.tx(0), f.tx_with(1, |t| t.payload = vec![0; 1024])]);
    assert!(matches!(
        f.tx_error(&b),
        (1, TxError::TooLarge { max: 1024, .. })
    ));
}

#[test]
fn tx_wrong_chain() {
    let f = fixture();
    let b = f.block(vec![f.tx_with(0, |t| t.chain_id = "elsewhere".into())]);
    assert!(matches!(f.tx_error(&b), (0, TxError::WrongChain { .. })));
}

#[test]
fn tx_unknown_sender() {
    let f = fixture();
    let stranger = Keypair::from_label("stranger").public();
    let b = f.block(vec![
        f.tx(0),
        f.tx(1),
        f.tx_with(2, |t| t.sender = stranger),
    ]);
    assert_eq!(f.tx_error(&b), (2, TxError::UnknownSender(stranger)));
}

#[test]
fn tx_expired() {
    let f = fixture();
    let b = f.block(vec![f.tx_with(0, |t| t.expires_at = 41)]);
    assert_eq!(
        f.tx_error(&b),
        (
            0,
            TxError::Expired {
                expires_at: 41,
                height: 42
            }
        )
    );
}

#[test]
fn tx_expiring_at_this_height_is_valid() {
    let f = fixture();
    let b = f.block(vec![
        f.tx_with(0, |t| t.expires_at = 42),
        f.tx_with(1, |t| t.expires_at = 142),
    ]);
    assert!(f.verify(&b).is_ok());
}

#[test]
fn tx_expiry_too_far() {
    let f = fixture();
    let b = f.block(vec![f.tx_with(0, |t| t.expires_at = 143)]);
    assert_eq!(
        f.tx_error(&b),
        (
            0,
            TxError::ExpiryTooFar {
                expires_at: 143,
                height: 42,
                lifetime: 100
            }
        )
    );
}

#[test]
fn duplicate_tx() {
    let f = fixture();
    let b = f.block(vec![f.tx(0), f.tx(1), f.tx(0)]);
    assert_eq!(f.tx_error(&b), (2, TxError::Duplicate { first: 0 }));
}

#[test]
fn tx_bad_signature_is_named() {
    let f = fixture();
    let mut txs: Vec<_> = (0..6).map(|n| f.tx(n)).collect();
    txs[4].signature.0[40] ^= 1;
    let b = f.block(txs);
    assert_eq!(f.tx_error(&b), (4, TxError::BadSignature));
}

#[test]
fn checked_signatures_are_left_out_and_others_still_judged() {
    let f = fixture();
    let mut txs: Vec<_> = (0..6).map(|n| f.tx(n)).collect();
    let good = txs[1].clone();
    txs[4].signature.0[40] ^= 1;
    let bad = txs[4].clone();
    let b = f.block(txs);
    // Only exactly the (id, signature) pairs the caller vouches for are left out: the bad
    // signature at 4 is still found and named by its block index while 1..=3 are skipped.
    let skip_some = |id: &TxId, sig: &Signature| {
        b.txs[1..4]
            .iter()
            .any(|t| t.id() == *id && t.signature == *sig)
    };
    assert!(matches!(
        verify_block_with(&f.parent, &b, &f.policy, skip_some),
        Err(VerifyError::Tx {
            index: 4,
            error: TxError::BadSignature,
            ..
        })
    ));
    // Vouching for an id under another signature does not hide a bad signature.
    let wrong_sig = |id: &TxId, sig: &Signature| *id == bad.id() && *sig == good.signature;
    assert!(matches!(
        verify_block_with(&f.parent, &b, &f.policy, wrong_sig),
        Err(VerifyError::Tx { index: 4, .. })
    ));
    // A valid block passes with every transaction vouched for; the proposer's signature
    // is still checked.
    let v = f.valid_block();
    let all = |_: &TxId, _: &Signature| true;
    assert!(verify_block_with(&f.parent, &v, &f.policy, all).is_ok());
    let mut forged = v.clone();
    forged.signature.0[3] ^= 1;
    assert_eq!(
        verify_block_with(&f.parent, &forged, &f.policy, all),
        Err(VerifyError::BadProposerSignature)
    );
}

#[test]
fn tampered_payload_fails() {
    let f = fixture();
    let mut b = f.valid_block();
    b.txs[2].tx.payload[0] ^= 1;
    // The id changes, so the Merkle root no longer matches.
    assert!(matches!(
        f.verify(&b),
        Err(VerifyError::MerkleRootMismatch { .. })
    ));
}

#[test]
fn verify_transaction_checks_rules_and_signature() {
    let f = fixture();
    let good = f.tx(1);
    assert_eq!(verify_transaction(&good, &f.policy, 42), Ok(good.id()));
    let mut bad = f.tx(2);
    bad.signature.0[0] ^= 1;
    assert!(matches!(
        verify_transaction(&bad, &f.policy, 42),
        Err(VerifyError::Tx {
            error: TxError::BadSignature,
            ..
        })
    ));
    let forged = f.tx_with(3, |t| t.sender = PublicKey([9; 32]));
    assert!(matches!(
        verify_transaction(&forged, &f.policy, 42),
        Err(VerifyError::Tx {
            error: TxError::UnknownSender(_),
            ..
        })
    ));
}

/// A parent at height 41 certified up to 33: the next block must certify block 34.
fn certifying_fixture() -> (Fixture, Hash) {
    let mut f = fixture();
    f.parent.certified = 33;
    (f, Hash::digest(Domain::BlockHeader, b"block 34"))
}

fn attest(key: &Keypair, height: u64, hash: Hash) -> (PublicKey, Signature) {
    let a = crate::Attestation::sign(CHAIN, height, hash, key);
    (a.signer, a.signature)
}

fn validators() -> [Keypair; 2] {
    [
        Keypair::from_label("validator"),
        Keypair::from_label("validator-2"),
    ]
}

fn cert_by(f: &Fixture, keys: &[&Keypair], height: u64, hash: Hash) -> crate::Certificate {
    let sigs: std::collections::BTreeMap<PublicKey, Signature> =
        keys.iter().map(|k| attest(k, height, hash)).collect();
    crate::certificate(&f.policy.validators, height, hash, &sigs)
}

fn block_with(f: &Fixture, certs: Vec<crate::Certificate>) -> Block {
    build_block(
        &f.parent,
        CHAIN,
        certs,
        vec![f.tx(1)],
        &f.validator,
        6_000,
        3,
    )
}

#[test]
fn a_block_must_certify_what_falls_behind_the_lag_with_a_majority() {
    let (f, hash) = certifying_fixture();
    let [a, b] = validators();
    assert_eq!(
        f.verify(&block_with(&f, vec![])),
        Err(VerifyError::Uncertified {
            uncertified: 34,
            required: 34
        })
    );
    let good = block_with(&f, vec![cert_by(&f, &[&a, &b], 34, hash)]);
    f.verify(&good).expect("both validators certify block 34");
    assert_eq!(good.tip().certified, 34);
    // It may also certify more recent blocks, in order.
    let two = block_with(
        &f,
        vec![
            cert_by(&f, &[&a, &b], 34, hash),
            cert_by(&f, &[&a, &b], 35, hash),
        ],
    );
    f.verify(&two).expect("certifies 34 and 35");
    let skipping = block_with(&f, vec![cert_by(&f, &[&a, &b], 35, hash)]);
    assert!(matches!(
        f.verify(&skipping),
        Err(VerifyError::CertificateOutOfOrder {
            expected: 34,
            found: 35,
            ..
        })
    ));
}

#[test]
fn one_key_alone_cannot_certify_and_the_missing_signer_is_named() {
    let (f, hash) = certifying_fixture();
    let [a, b] = validators();
    let block = block_with(&f, vec![cert_by(&f, &[&a], 34, hash)]);
    match f.verify(&block) {
        Err(VerifyError::Certificate {
            height: 34,
            error: crate::CertificateError::NoQuorum { missing, .. },
        }) => assert_eq!(missing, vec![b.public()]),
        other => panic!("expected no quorum, got {other:?}"),
    }
}

#[test]
fn a_forged_or_foreign_certificate_signature_fails_naming_its_signer() {
    let (f, hash) = certifying_fixture();
    let [a, b] = validators();
    let mut cert = cert_by(&f, &[&a, &b], 34, hash);
    cert.signatures[1].0[0] ^= 1;
    let signer = f.policy.validators.keys()[1];
    assert_eq!(
        f.verify(&block_with(&f, vec![cert])),
        Err(VerifyError::Certificate {
            height: 34,
            error: crate::CertificateError::BadSignature(signer),
        })
    );
    // Signatures over another block's hash do not certify this one.
    let mut moved = cert_by(
        &f,
        &[&a, &b],
        34,
        Hash::digest(Domain::BlockHeader, b"other"),
    );
    moved.block_hash = hash;
    assert!(matches!(
        f.verify(&block_with(&f, vec![moved])),
        Err(VerifyError::Certificate { height: 34, .. })
    ));
    // A bit naming a non-member.
    let mut outsider = cert_by(&f, &[&a, &b], 34, hash);
    outsider.signers[0] |= 1 << 2;
    assert_eq!(
        f.verify(&block_with(&f, vec![outsider])),
        Err(VerifyError::Certificate {
            height: 34,
            error: crate::CertificateError::NoSuchSigner(2),
        })
    );
}

#[test]
fn the_header_commits_to_the_certificates() {
    let (f, hash) = certifying_fixture();
    let [a, b] = validators();
    let mut block = block_with(&f, vec![cert_by(&f, &[&a, &b], 34, hash)]);
    // Removing a signer from a signed block (still a majority would need both).
    block.certificates[0].signatures.pop();
    block.certificates[0].signers[0] &= !(1 << 1);
    assert!(matches!(
        f.verify(&block),
        Err(VerifyError::CertsRootMismatch { .. })
    ));
    let block = f.resigned(
        block_with(&f, vec![cert_by(&f, &[&a, &b], 34, hash)]),
        |h| h.certified = 35,
    );
    assert_eq!(
        f.verify(&block),
        Err(VerifyError::CertifiedMismatch {
            header: 35,
            certificates: 34
        })
    );
}
