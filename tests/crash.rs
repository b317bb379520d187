//! Crash safety: kill -9 a process in the middle of appending; the ledger reopens at a
//! whole block, audits clean, and the chain continues.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordo_crypto::load_key_file;
use ordo_genesis::Genesis;
use ordo_ledger::{Store, Transaction, audit, build_block, verify_block};

/// Starts `ordo testchain` writing a long chain into `dir`.
fn start_writer(dir: &Path) -> Child {
    Command::new(support::ordo_bin())
        .args([
            "testchain",
            "--blocks",
            "1000000",
            "--txs-per-block",
            "20",
            "--payload-bytes",
            "64",
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ordo testchain")
}

/// Waits until the ledger in `dir` has at least `height` blocks, watching it read-only.
fn wait_for_height(dir: &Path, height: u64, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "writer did not reach height {height} in time"
        );
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "writer exited early"
        );
        if let Ok(genesis) = Genesis::load(&dir.join("genesis.toml"))
            && let Ok(store) = Store::open_read_only(&dir.join("data"), &genesis.identity())
            && store.tip().height >= height
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After a crash: open for writing as a restarted node would, audit, and append a block.
fn recover_and_continue(dir: &Path, min_height: u64) {
    let genesis = Genesis::load(&dir.join("genesis.toml")).expect("genesis");
    let store = Store::open(&dir.join("data"), &genesis.identity()).expect("reopen after kill -9");
    let tip = store.tip();
    assert!(
        tip.height >= min_height,
        "tip {} went below {min_height}",
        tip.height
    );
    let report = audit(&store, &genesis.policy(), |_| {});
    assert!(report.ok(), "audit after crash: {:?}", report.failure);
    assert_eq!(report.verified_tip, tip);

    let proposer = load_key_file(&dir.join("keys/validator-0.key")).expect("validator key");
    let client = load_key_file(&dir.join("keys/client-0.key")).expect("client key");
    let tx = Transaction {
        chain_id: genesis.chain_id.clone(),
        sender: client.public(),
        nonce: u64::MAX,
        expires_at: tip.height + 1,
        payload: b"after the crash".to_vec(),
    }
    .sign(&client);
    let block = build_block(
        &tip,
        &genesis.chain_id,
        vec![],
        vec![tx],
        &proposer,
        tip.timestamp_ms + 1,
        2,
    );
    let ids = verify_block(&tip, &block, &genesis.policy()).expect("next block verifies");
    store
        .append_with_ids(&block, &ids)
        .expect("chain continues after the crash");
}

#[test]
fn kill_nine_mid_append_leaves_a_whole_chain() {
    // Different kill points: after a few blocks, and at staggered offsets into an append.
    for (round, (height, extra_ms)) in [(1u64, 0u64), (3, 3), (8, 7), (15, 1), (25, 11)]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = start_writer(dir.path());
        wait_for_height(dir.path(), height, &mut child);
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        recover_and_continue(dir.path(), height);
        eprintln!("round {round}: killed past height {height}, recovered");
    }
}
