//! A certified chain: audit needs a majority's certificate of every block below the tail.
//! One validator key cannot make a chain that audits; a removed, forged or foreign
//! attestation fails at its height, naming the signer; the tail is reported; an
//! attestation of another block at a height the chain holds is evidence.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use ordo_crypto::{Keypair, PublicKey, Signature};
use ordo_ledger::{
    Attestation, AuditError, AuditReport, Block, CertificateError, ChainBuilder, Store, TailStatus,
    VerifyError, audit, build_block, certificate, certs_root,
};
use support::{CHAIN, TestChain};

fn audit_dir(dir: &Path, chain: &TestChain) -> AuditReport {
    let store = Store::open_read_only(dir, &chain.genesis.identity()).expect("open");
    audit(&store, &chain.genesis.policy(), |_| {})
}

/// Writes `n` blocks made by `builder` (proposed by `proposer`) into a new store.
fn write(dir: &Path, chain: &TestChain, builder: &mut ChainBuilder, proposer: &Keypair, n: u64) {
    let store = Store::open(dir, &chain.genesis.identity()).expect("open");
    for h in 1..=n {
        let txs = chain.txs(h, h * 1_000, 2, 8);
        let block = builder.build(txs, proposer, 1_700_000_000_000 + h, 1);
        store
            .append(&block)
            .expect("the store takes it (it checks links, not quorums)");
    }
    store
        .put_attestations(&builder.tail_attestations())
        .expect("keep the tail's attestations");
}

/// The certificate-level error of a failed audit.
fn cert_error(report: &AuditReport) -> (u64, u64, CertificateError) {
    let f = report.failure.as_ref().expect("audit must fail");
    match &f.error {
        AuditError::Invalid(VerifyError::Certificate { height, error }) => {
            (f.height.expect("a height"), *height, error.clone())
        }
        other => panic!("expected a certificate failure, got {other}"),
    }
}

#[test]
fn a_chain_certified_by_every_validator_audits_with_its_tail_attested() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    let mut builder = ChainBuilder::new(&chain.genesis.policy(), chain.validators.clone());
    write(dir.path(), &chain, &mut builder, &chain.validators[0], 20);
    let report = audit_dir(dir.path(), &chain);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.certified, 19);
    assert_eq!(report.tail.len(), 1);
    assert_eq!(report.tail[0].status, TailStatus::Attested);
    assert_eq!(report.tail[0].attested_by.len(), 3);
    for v in &report.validators {
        assert_eq!(v.certificates_signed, 19);
        assert_eq!(v.tail_attested, 1);
    }
}

#[test]
fn no_single_validator_key_can_make_a_chain_that_audits() {
    let chain = TestChain::new(3, 2);
    let rogue = &chain.validators[1];
    let policy = chain.genesis.policy();
    let others: Vec<PublicKey> = policy
        .validators
        .keys()
        .iter()
        .copied()
        .filter(|k| *k != rogue.public())
        .collect();

    // With certificates its own key alone signs: the first fails, naming who is missing.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alone = ChainBuilder::new(&policy, vec![rogue.clone()]);
    write(dir.path(), &chain, &mut alone, rogue, 12);
    let report = audit_dir(dir.path(), &chain);
    assert!(!report.ok());
    match cert_error(&report) {
        (2, 1, CertificateError::NoQuorum { missing, .. }) => assert_eq!(missing, others),
        other => panic!("{other:?}"),
    }

    // Without certificates: the first block that must certify fails.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    for h in 1..=12 {
        let block = build_block(
            &store.tip(),
            CHAIN,
            vec![],
            chain.txs(h, h * 1_000, 1, 8),
            rogue,
            1_700_000_000_000 + h,
            1,
        );
        store.append(&block).expect("append");
    }
    drop(store);
    let report = audit_dir(dir.path(), &chain);
    let f = report.failure.expect("audit must fail");
    assert_eq!(f.height, Some(9));
    assert_eq!(
        f.error,
        AuditError::Invalid(VerifyError::Uncertified {
            uncertified: 1,
            required: 1
        })
    );

    // Through the CLI as an auditor runs it: a non-zero exit naming the height.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alone = ChainBuilder::new(&policy, vec![rogue.clone()]);
    write(dir.path(), &chain, &mut alone, rogue, 3);
    let genesis = dir.path().join("genesis.toml");
    chain.genesis.save(&genesis).expect("genesis");
    let out = std::process::Command::new(support::ordo_bin())
        .args(["audit", "--quiet", "--genesis"])
        .arg(&genesis)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run ordo audit");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("FAILED at height 2"), "{stdout}");
    assert!(
        stdout.contains("validator-"),
        "names the missing signers: {stdout}"
    );
}

/// A chain of 12 blocks by every validator, then a block whose certificate `tamper`
/// changes, signed again by its proposer (a rogue leader): audit fails at height 13.
fn tampered(tamper: impl FnOnce(&mut ordo_ledger::Certificate)) -> AuditReport {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    let proposer = &chain.validators[0];
    let mut builder = ChainBuilder::new(&chain.genesis.policy(), chain.validators.clone());
    write(dir.path(), &chain, &mut builder, proposer, 12);
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    let mut block = builder.build(chain.txs(13, 13_000, 1, 8), proposer, 1_800_000_000_000, 1);
    tamper(&mut block.certificates[0]);
    block.header.certs_root = certs_root(&block.certificates);
    block.signature = proposer.sign(block.header.hash().as_bytes());
    store.append(&block).expect("append");
    drop(store);
    audit_dir(dir.path(), &chain)
}

#[test]
fn removing_one_attestation_from_a_certificate_fails_naming_its_signer() {
    let chain = TestChain::new(3, 2);
    let keys = chain.genesis.policy().validators.keys().to_vec();
    // Two of three remain: still a majority, and it audits.
    let report = tampered(|c| {
        c.signers[0] &= !1;
        c.signatures.remove(0);
    });
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(report.validators[0].certificates_signed, 11);
    // One of three: no majority.
    let report = tampered(|c| {
        c.signers[0] = 0b100;
        c.signatures.drain(..2);
    });
    match cert_error(&report) {
        (13, 12, CertificateError::NoQuorum { missing, .. }) => {
            assert_eq!(missing, keys[..2].to_vec())
        }
        other => panic!("{other:?}"),
    }
    // Removed from a stored block without re-signing: the header no longer matches.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut builder = ChainBuilder::new(&chain.genesis.policy(), chain.validators.clone());
    write(dir.path(), &chain, &mut builder, &chain.validators[0], 5);
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    let mut block = store.block(4).expect("read").expect("block 4");
    drop(store);
    block.certificates[0].signers[0] &= !1;
    block.certificates[0].signatures.remove(0);
    let db = support::raw_db(dir.path());
    db.put_cf(
        db.cf_handle("blocks").expect("cf"),
        4u64.to_be_bytes(),
        block.to_bytes(),
    )
    .expect("put");
    drop(db);
    let f = audit_dir(dir.path(), &chain).failure.expect("fails");
    assert_eq!(f.height, Some(4));
}

#[test]
fn a_forged_attestation_fails_naming_its_signer() {
    let chain = TestChain::new(3, 2);
    let keys = chain.genesis.policy().validators.keys().to_vec();
    let report = tampered(|c| c.signatures[1].0[10] ^= 1);
    assert_eq!(
        cert_error(&report),
        (13, 12, CertificateError::BadSignature(keys[1]))
    );
}

#[test]
fn a_certificate_naming_a_non_member_fails() {
    let chain = TestChain::new(3, 2);
    let outsider = Keypair::from_label("not-a-validator");
    let keys = chain.genesis.policy().validators.keys().to_vec();
    // A bit past the last validator.
    let report = tampered(|c| {
        c.signers[0] |= 1 << 5;
        c.signatures.push(c.signatures[0]);
    });
    assert_eq!(
        cert_error(&report),
        (13, 12, CertificateError::NoSuchSigner(5))
    );
    // An outsider's signature in a member's place.
    let report = tampered(|c| {
        let a = Attestation::sign(CHAIN, c.height, c.block_hash, &outsider);
        c.signatures[2] = a.signature;
    });
    assert_eq!(
        cert_error(&report),
        (13, 12, CertificateError::BadSignature(keys[2]))
    );
}

#[test]
fn a_certificate_of_another_block_at_that_height_fails() {
    let chain = TestChain::new(3, 2);
    let validators = chain.genesis.policy().validators.clone();
    let other = ordo_crypto::Hash([9; 32]);
    // Every validator signed the other block (a majority lying together is beyond any
    // audit; what is caught is a certificate that does not name the chain's block).
    let sigs: BTreeMap<PublicKey, Signature> = chain
        .validators
        .iter()
        .map(|k| {
            let a = Attestation::sign(CHAIN, 12, other, k);
            (a.signer, a.signature)
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let proposer = &chain.validators[0];
    let mut builder = ChainBuilder::new(&chain.genesis.policy(), chain.validators.clone());
    write(dir.path(), &chain, &mut builder, proposer, 12);
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    let block = build_block(
        &store.tip(),
        CHAIN,
        vec![certificate(&validators, 12, other, &sigs)],
        chain.txs(13, 13_000, 1, 8),
        proposer,
        1_800_000_000_000,
        1,
    );
    let refused = store
        .append(&block)
        .expect_err("the store checks the certified hash");
    assert!(refused.to_string().contains("certifies block"), "{refused}");
}

#[test]
fn two_attestations_by_one_key_at_one_height_are_reported_as_equivocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    let mut builder = ChainBuilder::new(&chain.genesis.policy(), chain.validators.clone());
    write(dir.path(), &chain, &mut builder, &chain.validators[0], 10);
    let liar = &chain.validators[2];
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    let chain_hash = store.hash_at(5).expect("hash");
    let other = Attestation::sign(CHAIN, 5, ordo_crypto::Hash([7; 32]), liar);
    assert!(store.put_evidence(&other).expect("kept"));
    drop(store);
    let report = audit_dir(dir.path(), &chain);
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert!(!report.ok(), "evidence fails the audit");
    assert_eq!(report.evidence.len(), 1);
    let e = &report.evidence[0];
    assert_eq!(
        (e.signer, e.height, e.signed, e.chain, e.equivocation),
        (liar.public(), 5, other.block_hash, chain_hash, true)
    );
    let record = report
        .validators
        .iter()
        .find(|v| v.key == liar.public())
        .expect("its record");
    assert_eq!(record.conflicting, 1);
}

#[test]
fn the_tail_is_reported_and_a_forged_tail_attestation_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = TestChain::new(3, 2);
    let policy = chain.genesis.policy();
    // Attested by one validator only.
    let mut builder = ChainBuilder::new(&policy, vec![chain.validators[0].clone()]);
    let store = Store::open(dir.path(), &chain.genesis.identity()).expect("open");
    let block: Block = builder.build(chain.txs(1, 1, 1, 8), &chain.validators[0], 1, 1);
    store.append(&block).expect("append");
    let report = audit(&store, &policy, |_| {});
    assert!(report.ok());
    assert_eq!(report.tail[0].status, TailStatus::Unattested);
    store
        .put_attestations(&builder.tail_attestations())
        .expect("keep");
    let report = audit(&store, &policy, |_| {});
    assert_eq!(report.tail[0].status, TailStatus::PartlyAttested);
    let mut forged = Attestation::sign(CHAIN, 1, block.hash(), &chain.validators[1]);
    forged.signature.0[3] ^= 1;
    store.put_attestations(&[forged]).expect("keep");
    let report = audit(&store, &policy, |_| {});
    let f = report.failure.expect("a forged kept attestation fails");
    assert!(
        matches!(f.error, AuditError::BadAttestation { signer, .. } if signer == chain.validators[1].public()),
        "{f}"
    );
}
