//! The README's main job, as a new user runs it: `ordo devnet` brings up three validator
//! processes, `ordo tx submit --wait` returns the commit height, Ctrl-C (SIGTERM) stops
//! everything cleanly, `ordo audit` passes on every data directory, and running the same
//! command again resumes the same chain.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ordo_client::api::{BlockJson, Status};
use support::cluster::wait_for;
use support::{ordo, ordo_bin};

fn api_url(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("validator-0/node.toml")).ok()?;
    let config: toml::Value = toml::from_str(&text).ok()?;
    Some(format!("http://{}", config.get("api")?.as_str()?))
}

fn leader_known(url: &str) -> bool {
    let client = ordo_client::Client::new(url).expect("client");
    support::block_on(client.status()).is_ok_and(|s| s.leader.is_some())
}

/// The first `n` bytes of the binary block stream from `height` (raw, as documented).
fn binary_stream_bytes(url: &str, height: u64, n: usize) -> (String, Vec<u8>) {
    support::block_on(async {
        let mut resp = reqwest::Client::new()
            .get(format!("{url}/v1/blocks/stream?from={height}"))
            .header(reqwest::header::ACCEPT, "application/octet-stream")
            .send()
            .await
            .expect("binary stream");
        let content_type = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_owned();
        let mut bytes = Vec::new();
        while bytes.len() < n {
            let chunk = resp.chunk().await.expect("read").expect("more bytes");
            bytes.extend_from_slice(&chunk);
        }
        (content_type, bytes)
    })
}

fn audit_all(dir: &Path) {
    for i in 0..3 {
        let data = dir.join(format!("validator-{i}/data"));
        let (code, out, err) = ordo(&[
            "audit",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--genesis",
            dir.join("genesis.toml").to_str().expect("utf-8"),
        ]);
        assert_eq!(code, 0, "audit of validator-{i}:\n{out}\n{err}");
    }
}

#[test]
fn devnet_orders_a_submission_stops_cleanly_audits_and_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("net");
    let devnet = Command::new(ordo_bin())
        .args(["devnet", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start devnet");
    let url = wait_for(
        "the devnet's configuration",
        Duration::from_secs(10),
        || api_url(&dir),
    );
    wait_for("a leader", Duration::from_secs(30), || {
        leader_known(&url).then_some(())
    });
    // The three validators share this machine: each checks signatures on its share of
    // the cores.
    let cores = ordo_crypto::cores();
    for i in 0..3 {
        let text = std::fs::read_to_string(dir.join(format!("validator-{i}/node.toml")))
            .expect("node.toml");
        let config: toml::Value = toml::from_str(&text).expect("toml");
        assert_eq!(
            config["verify"]["threads"].as_integer(),
            Some((cores / 3).max(1) as i64),
            "{text}"
        );
    }

    let key = dir.join("keys/client.key");
    let (code, out, err) = ordo(&[
        "tx",
        "submit",
        "--node",
        &url,
        "--key",
        key.to_str().expect("utf-8"),
        "--payload",
        "hello",
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("committed  height"), "{out}");
    let id = out.split_whitespace().next().expect("id").to_owned();

    let (code, out, _) = ordo(&["tx", "status", "--node", &url, "--id", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("committed"), "{out}");
    let height = out
        .lines()
        .find_map(|l| l.strip_prefix("height")?.trim().parse::<u64>().ok())
        .expect("height line");

    // The block, from the API and from the live stream, lists the transaction.
    let (code, out, err) = ordo(&["block", "get", "--node", &url, &height.to_string(), "--txs"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    let from = height.to_string();
    let (code, out, err) = ordo(&[
        "blocks", "follow", "--node", &url, "--from", &from, "--limit", "1", "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let event: BlockJson = serde_json::from_str(out.trim()).expect("one block, as the API's");
    assert_eq!(event.height, height);
    let tx_id: ordo_ledger::TxId = id.parse().expect("an id");
    assert!(event.ids().contains(&tx_id), "{event:?}");
    // The binary stream carries the same block: height, hash, then its ids (the documented
    // layout, read raw).
    let n = event.ids().len();
    let (content_type, bytes) = binary_stream_bytes(&url, height, 44 + 32 * n);
    assert_eq!(content_type, "application/octet-stream");
    assert_eq!(
        u64::from_le_bytes(bytes[..8].try_into().expect("8")),
        height
    );
    assert_eq!(bytes[8..40], event.hash.0);
    assert_eq!(
        u32::from_le_bytes(bytes[40..44].try_into().expect("4")) as usize,
        n
    );
    let ids: Vec<ordo_ledger::TxId> = bytes[44..44 + 32 * n]
        .chunks(32)
        .map(|c| ordo_crypto::Hash(c.try_into().expect("32 bytes")))
        .collect();
    assert_eq!(ids, event.ids());

    let (code, out, _) = ordo(&["status", "--node", &url, "--json"]);
    assert_eq!(code, 0);
    let status: Status = serde_json::from_str(&out).expect("the API's status");
    assert_eq!(status.peers.len(), 2, "{status:?}");

    kill(Pid::from_raw(devnet.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let output = devnet.wait_with_output().expect("devnet exits");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("(new)"), "{stdout}");
    audit_all(&dir);

    // Again on the same directory: the same chain, and the transaction is still there.
    let out = Command::new(ordo_bin())
        .args(["devnet", "--duration", "5", "--dir"])
        .arg(&dir)
        .output()
        .expect("devnet again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(resumed)"), "{stdout}");
    audit_all(&dir);
    let (code, out, err) = ordo(&[
        "tx",
        "show",
        "--data-dir",
        dir.join("validator-1/data").to_str().expect("utf-8"),
        "--genesis",
        dir.join("genesis.toml").to_str().expect("utf-8"),
        "--id",
        &id,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
}
