//! Receipts from a running cluster: a committed transaction's receipt, once its block is
//! certified, verifies offline with the genesis alone (`ordo-client` and `ordo receipt
//! verify`); any flipped byte fails; the chain's blocks carry certificates by a majority.

mod support;

use std::time::Duration;

use ordo_client::api::ReceiptStatus;
use ordo_client::verify_receipt;
use support::block_on;
use support::cluster::{Cluster, Options, wait_for};

const ELECTION: Duration = Duration::from_secs(20);

#[test]
fn a_committed_transaction_gets_a_receipt_that_verifies_offline() {
    let mut c = Cluster::start(Options::default());
    c.wait_leader(ELECTION);
    let txs = c.txs(1, 0);
    let id = txs[0].id();
    let results = c.submit(1, &txs, true);
    let height = results[0].committed_at().expect("committed").height;
    // Before a later block certifies it, the answer says where the block is (asked of the
    // node that answered the commit: it has applied the block).
    match block_on(c.client(1).receipt(&id)).expect("an answer") {
        ReceiptStatus::Uncertified {
            height: h,
            certified,
            ..
        } => {
            assert_eq!(h, height);
            assert!(certified < height);
        }
        ReceiptStatus::Certified { .. } => {}
    }
    // Later blocks certify it.
    let receipt = wait_for("the receipt", Duration::from_secs(30), || {
        let more = c.txs(3, height);
        c.submit(2, &more, true);
        // Any node serves it once it has applied the certifying block.
        match block_on(c.client(0).receipt(&id)) {
            Ok(ReceiptStatus::Certified { receipt, .. }) => Some(receipt),
            _ => None,
        }
    });
    let policy = c.net.genesis.policy();
    let verified = verify_receipt(&receipt, &policy).expect("the receipt verifies");
    assert_eq!((verified.id, verified.height), (id, height));
    assert!(verified.signers.len() >= 2, "a majority of three");
    for i in 0..receipt.len() {
        let mut flipped = receipt.clone();
        flipped[i] ^= 0x04;
        assert!(
            verify_receipt(&flipped, &policy).is_err(),
            "byte {i} flipped still verifies"
        );
    }

    // The CLI, as a third party would: fetch into a file, then verify with the genesis.
    let file = c.dir.path().join("receipt.bin");
    let fetched = std::process::Command::new(support::ordo_bin())
        .args([
            "tx",
            "receipt",
            "--node",
            &c.url(1),
            "--id",
            &id.to_string(),
            "--out",
        ])
        .arg(&file)
        .output()
        .expect("ordo tx receipt");
    assert!(fetched.status.success(), "{fetched:?}");
    let checked = std::process::Command::new(support::ordo_bin())
        .args(["receipt", "verify", "--genesis"])
        .arg(c.genesis_path())
        .arg(&file)
        .output()
        .expect("ordo receipt verify");
    let out = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{out}");
    assert!(out.contains("result      OK"), "{out}");
    let mut bytes = std::fs::read(&file).expect("receipt file");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).expect("write");
    let refused = std::process::Command::new(support::ordo_bin())
        .args(["receipt", "verify", "--genesis"])
        .arg(c.genesis_path())
        .arg(&file)
        .output()
        .expect("ordo receipt verify");
    assert_eq!(refused.status.code(), Some(1));

    // Every node's chain is certified by a majority, and audits.
    let mut committed = std::collections::HashSet::new();
    committed.insert(id);
    c.stop_and_check(&committed);
}
