//! The `ordo` binary as a user drives it: keys, genesis, signing, testchain, audit, reads,
//! and clear errors with the documented exit codes.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::ordo;

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn keys_and_genesis_walkthrough() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, genesis) = (dir.path().join("v1.key"), dir.path().join("genesis.toml"));
    let (code, stdout, _) = ordo(&["keygen", "--out", p(&key)]);
    assert_eq!(code, 0);
    let public = stdout.trim().to_owned();
    assert_eq!(public.len(), 64);
    assert_eq!(
        std::fs::metadata(&key).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(ordo(&["key", "show", "--key", p(&key)]).1.trim(), public);
    // A second keygen must not overwrite the key.
    let (code, _, stderr) = ordo(&["keygen", "--out", p(&key)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");

    assert_eq!(
        ordo(&["genesis", "new", "--chain-id", "walk", "--out", p(&genesis)]).0,
        0
    );
    // Without validators the genesis is not yet usable.
    let (code, _, stderr) = ordo(&["genesis", "show", "--genesis", p(&genesis)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no validators"), "{stderr}");
    let (code, _, stderr) = ordo(&[
        "genesis",
        "add-validator",
        "--genesis",
        p(&genesis),
        "--name",
        "v1",
        "--key-file",
        p(&key),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let client = dir.path().join("c.key");
    assert_eq!(ordo(&["keygen", "--out", p(&client)]).0, 0);
    let args = [
        "genesis",
        "add-client",
        "--genesis",
        p(&genesis),
        "--name",
        "alice",
        "--key-file",
        p(&client),
    ];
    assert_eq!(ordo(&args).0, 0);
    // Adding the same client again is refused and leaves the file unchanged.
    let before = std::fs::read_to_string(&genesis).expect("read");
    let (code, _, stderr) = ordo(&args);
    assert_eq!(code, 2);
    assert!(stderr.contains("appears more than once"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&genesis).expect("read"), before);

    let (code, stdout, _) = ordo(&["genesis", "show", "--genesis", p(&genesis), "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["genesis"]["validators"][0]["public_key"], public.as_str());

    // Signing: a hex line on stdout, the id on stderr.
    let (code, stdout, stderr) = ordo(&[
        "tx",
        "sign",
        "--key",
        p(&client),
        "--genesis",
        p(&genesis),
        "--expires-at",
        "100",
        "--payload",
        "hi",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let bytes = hex::decode(stdout.trim()).expect("hex");
    let tx = ordo_ledger::SignedTransaction::from_bytes(&bytes, u64::MAX).expect("canonical");
    assert_eq!(tx.tx.payload, b"hi");
    assert!(stderr.contains(&tx.id().to_string()));
    let g = ordo_genesis::Genesis::load(&genesis).expect("genesis");
    assert_eq!(
        ordo_ledger::verify_transaction(&tx, &g.policy(), 1),
        Ok(tx.id())
    );
    // Signing with a key that is not a permitted client still signs (the chain refuses it later),
    // but a world-readable key is refused outright.
    std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, _, stderr) = ordo(&[
        "tx",
        "sign",
        "--key",
        p(&client),
        "--chain-id",
        "walk",
        "--expires-at",
        "1",
        "--payload",
        "x",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn testchain_audit_and_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    let (code, _, stderr) = ordo(&[
        "testchain",
        "--dir",
        p(&chain),
        "--blocks",
        "30",
        "--txs-per-block",
        "10",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (genesis, data) = (chain.join("genesis.toml"), chain.join("data"));

    let (code, stdout, stderr) = ordo(&[
        "audit",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["ok"], true);
    assert_eq!(report["txs_verified"], 300);
    assert_eq!(report["failure"], serde_json::Value::Null);

    let (code, stdout, _) = ordo(&[
        "block",
        "show",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--json",
    ]);
    assert_eq!(code, 0);
    let tip: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(tip["block"]["header"]["height"], 30);
    let hash = tip["hash"].as_str().expect("hash").to_owned();
    let (code, stdout, _) = ordo(&[
        "block",
        "show",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--hash",
        &hash,
        "--txs",
    ]);
    assert_eq!(code, 0);
    assert!(stdout.contains("block        30 of 30"), "{stdout}");

    let store_tx = {
        let g = ordo_genesis::Genesis::load(&genesis).expect("genesis");
        let store = ordo_ledger::Store::open_read_only(&data, &g.identity()).expect("open");
        store.block(12).expect("read").expect("present").txs[3].id()
    };
    let (code, stdout, _) = ordo(&[
        "tx",
        "show",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--id",
        &store_tx.to_string(),
        "--json",
    ]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(shown["proof_verifies"], true);
    assert_eq!(shown["inclusion"]["height"], 12);
    assert_eq!(shown["inclusion"]["index"], 3);

    let (code, _, stderr) = ordo(&[
        "tx",
        "show",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--id",
        &"00".repeat(32),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not in this chain"), "{stderr}");

    // Tamper with block 17 behind the store's back: audit exits 1 naming height 17.
    {
        let db = support::raw_db(&data);
        let cf = db.cf_handle("blocks").expect("cf");
        let mut bytes = db
            .get_cf(cf, 17u64.to_be_bytes())
            .expect("read")
            .expect("present");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        db.put_cf(cf, 17u64.to_be_bytes(), bytes).expect("write");
    }
    let (code, stdout, _) = ordo(&[
        "audit",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--quiet",
    ]);
    assert_eq!(code, 1);
    assert!(stdout.contains("FAILED at height 17"), "{stdout}");
    let (code, stdout, _) = ordo(&[
        "audit",
        "--data-dir",
        p(&data),
        "--genesis",
        p(&genesis),
        "--json",
    ]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["failure"]["height"], 17);
    assert_eq!(report["ok"], false);
}

#[test]
fn wrong_inputs_get_clear_errors_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    assert_eq!(
        ordo(&[
            "testchain",
            "--dir",
            p(&chain),
            "--blocks",
            "2",
            "--txs-per-block",
            "1"
        ])
        .0,
        0
    );
    let data = chain.join("data");

    // A genesis for another chain.
    let other = dir.path().join("other.toml");
    let key = dir.path().join("k.key");
    assert_eq!(ordo(&["keygen", "--out", p(&key)]).0, 0);
    assert_eq!(
        ordo(&["genesis", "new", "--chain-id", "other", "--out", p(&other)]).0,
        0
    );
    assert_eq!(
        ordo(&[
            "genesis",
            "add-validator",
            "--genesis",
            p(&other),
            "--name",
            "v",
            "--key-file",
            p(&key)
        ])
        .0,
        0
    );
    let (code, _, stderr) = ordo(&["audit", "--data-dir", p(&data), "--genesis", p(&other)]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("belongs to chain 'ordo-testchain'"),
        "{stderr}"
    );

    // A data directory with no ledger.
    let (code, _, stderr) = ordo(&[
        "audit",
        "--data-dir",
        p(dir.path()),
        "--genesis",
        p(&chain.join("genesis.toml")),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no ordo ledger"), "{stderr}");

    // A genesis that is not TOML.
    let junk = dir.path().join("junk.toml");
    std::fs::write(&junk, "chain_id = \n").expect("write");
    let (code, _, stderr) = ordo(&["audit", "--data-dir", p(&data), "--genesis", p(&junk)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not valid TOML"), "{stderr}");

    // testchain refuses to overwrite a chain.
    let (code, _, stderr) = ordo(&["testchain", "--dir", p(&chain)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("already holds a chain"), "{stderr}");
}

#[test]
fn node_run_documents_its_configuration_and_refuses_a_bad_one_with_exit_2() {
    let (code, help, _) = ordo(&["node", "run", "--help"]);
    assert_eq!(code, 0);
    for field in [
        "genesis",
        "key_file",
        "data_dir",
        "listen",
        "bootstrap",
        "mdns",
        "api",
        "txs_max",
        "snapshot_every_blocks",
        "keep_blocks",
        "blocks_in_flight_max",
        "idle_batch_wait_ms",
        "depose_after_failed_appends",
        "step_aside_when_slow",
        "background_write_mib_per_s",
        "[verify]",
        "threads",
    ] {
        assert!(help.contains(field), "--help does not document {field}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    assert_eq!(
        ordo(&[
            "testchain",
            "--dir",
            p(&chain),
            "--blocks",
            "1",
            "--txs-per-block",
            "1"
        ])
        .0,
        0
    );
    let config = dir.path().join("node.toml");
    let run = |text: &str| {
        std::fs::write(&config, text).expect("write config");
        ordo(&["node", "run", "--config", p(&config)])
    };

    let (code, _, stderr) =
        run("genesis = \"chain/genesis.toml\"\nkey_file = \"k\"\ndata_dir = \"d\"\nport = 1\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("port"), "{stderr}");

    let (code, _, stderr) = run(
        "genesis = \"chain/genesis.toml\"\nkey_file = \"k\"\ndata_dir = \"d\"\n\
         listen = [\"localhost:7000\"]\n[raft]\nsnapshot_every_blocks = 0\nkeep_blocks = 1\n\
         blocks_in_flight_max = 4\n",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("'localhost:7000' is not a multiaddr"),
        "{stderr}"
    );
    assert!(stderr.contains("snapshot_every_blocks"), "{stderr}");

    let (code, _, stderr) = run("genesis = \"missing.toml\"\nkey_file = \"k\"\ndata_dir = \"d\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("missing.toml"), "{stderr}");

    // A client's key is not a validator's.
    let (code, _, stderr) = run(
        "genesis = \"chain/genesis.toml\"\nkey_file = \"chain/keys/client-0.key\"\n\
         data_dir = \"d\"\napi = \"127.0.0.1:0\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("is not a validator in the genesis"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("d").exists(),
        "nothing was created for a refused key"
    );

    // A pipeline as deep as the genesis's certification lag (8) is refused.
    let (code, _, stderr) = run(
        "genesis = \"chain/genesis.toml\"\nkey_file = \"chain/keys/validator-0.key\"\n\
         data_dir = \"d\"\napi = \"127.0.0.1:0\"\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\
         [raft]\nsnapshot_every_blocks = 128\nkeep_blocks = 128\nblocks_in_flight_max = 8\n",
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("certify_lag"), "{stderr}");
    assert!(
        !dir.path().join("d").exists(),
        "nothing was created for a refused pipeline"
    );
}
