//! `ordo-client` and the CLI against a real validator: over https (through a TLS endpoint
//! this test starts in front of the node's API), and with answers read as JavaScript reads
//! JSON (every number a double).

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ordo_client::api::{BlockId, BlockJson, Status, TxState, TxStatus};
use ordo_client::{Client, Signer, SubmitOptions, TxTemplate};
use ordo_harness::Net;
use serde_json::Value;
use support::block_on;
use support::cluster::{Cluster, Options};
use tokio_rustls::rustls;

const ELECTION: Duration = Duration::from_secs(20);

/// A CA and a certificate for `localhost` it signed: (CA PEM, leaf DER, leaf key DER).
fn certificates() -> (String, Vec<u8>, Vec<u8>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ordo test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    (ca.pem(), leaf.der().to_vec(), leaf_key.serialize_der())
}

/// A TLS endpoint on loopback that forwards each connection to `upstream` (the node's
/// plain API); returns its port.
fn tls_endpoint(upstream: std::net::SocketAddr, cert: Vec<u8>, key: Vec<u8>) -> u16 {
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
        )
        .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    support::runtime().spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    port
}

#[test]
fn the_client_and_the_cli_reach_a_node_over_https() {
    let mut c = Cluster::start(Options {
        validators: 1,
        ..Options::default()
    });
    c.wait_leader(ELECTION);
    let (ca_pem, cert, key) = certificates();
    let port = tls_endpoint(c.node(0).api, cert, key);
    let url = format!("https://localhost:{port}");
    let ca_file = c.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("CA file");

    // The library: status, a submission waited for, its checked proof, the block stream.
    let client = Client::builder(&url)
        .ca_certificate_pem(ca_pem.as_bytes())
        .build()
        .expect("client");
    let status = block_on(client.status()).expect("status over https");
    assert_eq!(status.node.name, "validator-0");
    let signer = Signer::new(c.chain.clients[0].clone(), TxTemplate::from_status(&status));
    let tx = signer.sign(b"over tls".to_vec());
    let result = block_on(client.submit(&tx, &SubmitOptions::wait())).expect("submitted");
    let at = result.committed_at().expect("committed");
    let checked = block_on(client.tx_status_checked(&tx.id())).expect("checked");
    assert!(matches!(checked, TxStatus::Committed(ref t) if t.height == at.height));
    let first: BlockJson = block_on(async {
        let mut blocks = std::pin::pin!(client.blocks(Some(at.height), false));
        blocks.next().await.expect("a block").expect("no error")
    });
    assert_eq!(first.height, at.height);
    assert!(first.ids().contains(&tx.id()));

    // The CLI, with the CA given; without it, the node's certificate is refused.
    let ca = ca_file.to_str().expect("utf-8");
    let key_file = Net::client_key_path(c.dir.path(), 0);
    let (code, out, err) = support::ordo(&[
        "tx",
        "submit",
        "--node",
        &url,
        "--ca-cert",
        ca,
        "--key",
        key_file.to_str().expect("utf-8"),
        "--payload",
        "cli over tls",
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("committed  height"), "{out}");
    let (code, out, err) = support::ordo(&["status", "--node", &url, "--ca-cert", ca]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("validator-0"), "{out}");
    let (code, _, err) = support::ordo(&["status", "--node", &url]);
    assert_eq!(code, 1, "an unknown CA is refused: {err}");
    assert!(err.contains("cannot reach"), "{err}");
    c.stop_and_check(&[tx.id()].into());
}

/// Rewrites every number in `v` as JavaScript's `JSON.parse` holds it (a double) and
/// `JSON.stringify` writes it back (an integral double without a fraction).
fn as_doubles(v: Value) -> Value {
    match v {
        Value::Number(n) => {
            let d = n.as_f64().expect("a number");
            match (d.fract() == 0.0, d >= 0.0) {
                (true, true) => Value::from(d as u64),
                (true, false) => Value::from(d as i64),
                (false, _) => Value::from(d),
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(as_doubles).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, as_doubles(v))).collect()),
        other => other,
    }
}

/// The answer at `path`, read as a double-based parser reads it, as `T`.
fn through_doubles<T: serde::de::DeserializeOwned>(c: &Cluster, path: &str) -> T {
    let (status, v) = c.get(0, path).expect("answer");
    assert_eq!(status, 200, "{v}");
    serde_json::from_value(as_doubles(v)).expect("reads back")
}

#[test]
fn nonces_and_node_ids_survive_a_json_parser_that_uses_doubles() {
    let mut c = Cluster::start(Options {
        validators: 1,
        ..Options::default()
    });
    c.wait_leader(ELECTION);
    let status = c.status(0).expect("status");
    // Both far above 2^53, where a double cannot hold every integer.
    let nonce = u64::MAX - 6;
    assert_ne!(nonce as f64 as u64, nonce, "a double loses this nonce");
    let tx = TxTemplate::from_status(&status).sign(&c.chain.clients[0], nonce, b"big".to_vec());
    let results = c.submit(0, std::slice::from_ref(&tx), true);
    assert_eq!(results[0].status, Some(TxState::Committed), "{results:?}");
    let height = results[0].height.expect("height");

    let seen: Status = through_doubles(&c, "/v1/status");
    assert!(
        status.node.node_id > 1 << 53,
        "validator-0's node id is above 2^53"
    );
    assert_eq!(seen.node.node_id, status.node.node_id);
    let block: BlockJson = through_doubles(&c, &format!("/v1/blocks/{height}"));
    let txs = block.transactions.expect("with transactions");
    assert_eq!(txs[0].tx.nonce, nonce);
    assert_eq!(txs[0].tx.id(), tx.id(), "the fields still hash to the id");
    let TxStatus::Committed(t) = through_doubles(&c, &format!("/v1/transactions/{}", tx.id()))
    else {
        panic!("committed");
    };
    assert_eq!(t.transaction.tx.nonce, nonce);
    t.check_inclusion().expect("the proof still checks");
    // The typed client reads the same block.
    let typed = block_on(c.client(0).block(BlockId::Height(height), true)).expect("block");
    assert_eq!(typed.transactions.expect("txs")[0].tx.nonce, nonce);
    c.stop_and_check(&[tx.id()].into());
}

#[test]
fn a_block_stream_resumes_after_its_node_restarts_without_a_gap() {
    let mut c = Cluster::start(Options {
        validators: 1,
        ..Options::default()
    });
    c.wait_leader(ELECTION);
    let first = c.txs(1, 0);
    let at = c.submit(0, &first, true)[0].height.expect("committed");
    // Follow from the first block, binary stream and JSON events both.
    let seen: Arc<std::sync::Mutex<Vec<(u64, u64)>>> = Arc::default();
    let client = c.client(0).clone();
    let (ids, events) = (seen.clone(), seen.clone());
    let binary = client.clone();
    support::runtime().spawn(async move {
        let mut frames = std::pin::pin!(binary.block_ids(Some(at)));
        while let Some(Ok(f)) = frames.next().await {
            ids.lock().expect("lock").push((0, f.height));
        }
    });
    support::runtime().spawn(async move {
        let mut blocks = std::pin::pin!(client.blocks(Some(at), false));
        while let Some(Ok(b)) = blocks.next().await {
            events.lock().expect("lock").push((1, b.height));
        }
    });
    let heights = |kind: u64| -> Vec<u64> {
        let seen = seen.lock().expect("lock");
        seen.iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, h)| *h)
            .collect()
    };
    support::cluster::wait_for(
        "both streams at the first block",
        Duration::from_secs(10),
        || (heights(0).contains(&at) && heights(1).contains(&at)).then_some(()),
    );
    c.stop(0);
    c.restart(0);
    c.wait_leader(ELECTION);
    let second = c.txs(1, at);
    let later = c.submit(0, &second, true)[0].height.expect("committed");
    support::cluster::wait_for(
        "both streams past the restart",
        Duration::from_secs(30),
        || (heights(0).contains(&later) && heights(1).contains(&later)).then_some(()),
    );
    for kind in [0, 1] {
        let h = heights(kind);
        let want: Vec<u64> = (at..=h[h.len() - 1]).collect();
        assert_eq!(h, want, "every block once, in order, across the restart");
    }
    let acked: std::collections::HashSet<_> = [first[0].id(), second[0].id()].into();
    c.stop_and_check(&acked);
}
