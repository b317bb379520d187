//! Real libp2p swarms on loopback: validators connect and exchange frames; a peer with a
//! valid key that is not in the genesis is refused.

use std::time::{Duration, Instant};

use futures::io::Cursor;

use super::*;

fn config(bootstrap: Vec<String>) -> NetworkConfig {
    NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap,
        mdns: false,
        request_timeout: Duration::from_secs(5),
    }
}

/// Polls `check` until it holds or 15 s pass.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn first_addr(net: &Network) -> String {
    let mut addrs = Vec::new();
    eventually("a listen address", || {
        let net = net.clone();
        async move { !net.listen_addrs().await.expect("running").is_empty() }
    })
    .await;
    addrs.extend(net.listen_addrs().await.expect("running"));
    addrs.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_talk_and_outsiders_are_refused() {
    let (k1, k2, outsider) = (
        Keypair::generate(),
        Keypair::generate(),
        Keypair::generate(),
    );
    let validators = [k1.public(), k2.public()];
    let (n1, mut in1) = Network::start(&k1, &validators, &config(vec![]), std::future::pending())
        .expect("start v1");
    let addr1 = first_addr(&n1).await;
    let (n2, _in2) = Network::start(
        &k2,
        &validators,
        &config(vec![addr1.clone()]),
        std::future::pending(),
    )
    .expect("start v2");
    eventually("v2 connected to v1", || {
        let n1 = n1.clone();
        let key = k2.public();
        async move { n1.connected().expect("running").contains(&key) }
    })
    .await;

    // A request and its answer.
    let server = tokio::spawn(async move {
        let req = in1.recv().await.expect("a request");
        assert_eq!(
            req.frame,
            Frame {
                kind: Kind::Raft,
                body: b"ping".to_vec()
            }
        );
        let from = req.from;
        req.respond(Frame {
            kind: Kind::Raft,
            body: b"pong".to_vec(),
        });
        (from, in1)
    });
    let answer = n2
        .request(
            &k1.public(),
            Frame {
                kind: Kind::Raft,
                body: b"ping".to_vec(),
            },
        )
        .await
        .expect("answer");
    assert_eq!(answer.body, b"pong");
    let (from, mut in1) = server.await.expect("server");
    assert_eq!(from, k2.public());

    // An outsider with a valid key, who believes itself a validator, is refused.
    let believed = [k1.public(), k2.public(), outsider.public()];
    let (n3, _in3) = Network::start(
        &outsider,
        &believed,
        &config(vec![addr1]),
        std::future::pending(),
    )
    .expect("start outsider");
    eventually("v1 to refuse the outsider", || {
        let n1 = n1.clone();
        async move { n1.stats().refused_connections.load(Ordering::Relaxed) >= 1 }
    })
    .await;
    let injected = n3
        .request(
            &k1.public(),
            Frame {
                kind: Kind::Transactions,
                body: b"inject".to_vec(),
            },
        )
        .await;
    assert!(injected.is_err(), "an outsider's request must fail");
    assert!(
        !n1.connected()
            .expect("running")
            .contains(&outsider.public())
    );
    assert!(
        in1.try_recv().is_err(),
        "nothing from the outsider reached the node"
    );

    // Requests to keys outside the genesis are refused locally.
    assert!(matches!(
        n2.request(
            &outsider.public(),
            Frame {
                kind: Kind::Raft,
                body: vec![]
            }
        )
        .await,
        Err(NetworkError::UnknownPeer(_))
    ));
}

#[tokio::test]
async fn oversize_frames_are_refused_before_allocation() {
    use libp2p::request_response::Codec;
    let mut head = vec![Kind::Raft as u8];
    head.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = FrameCodec
        .read_request(&PROTOCOL, &mut Cursor::new(head))
        .await
        .expect_err("too large");
    assert!(err.to_string().contains("exceeds"), "{err}");
    let unknown = vec![9u8, 0, 0, 0, 0];
    assert!(
        FrameCodec
            .read_request(&PROTOCOL, &mut Cursor::new(unknown))
            .await
            .is_err()
    );
    let mut buf = Cursor::new(Vec::new());
    let big = Frame {
        kind: Kind::Blocks,
        body: vec![0; FRAME_BYTES_MAX + 1],
    };
    assert!(
        FrameCodec
            .write_request(&PROTOCOL, &mut buf, big)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bad_addresses_are_reported() {
    let k = Keypair::generate();
    let mut cfg = config(vec!["not-an-address".into()]);
    let err = Network::start(&k, &[k.public()], &cfg, std::future::pending())
        .err()
        .expect("bad bootstrap");
    assert!(err.to_string().contains("not a valid multiaddr"), "{err}");
    cfg.bootstrap.clear();
    cfg.listen = vec!["/ip4/127.0.0.1/udp/0".into()];
    assert!(Network::start(&k, &[k.public()], &cfg, std::future::pending()).is_err());
}

#[test]
fn the_protocol_id_carries_the_protocol_version() {
    assert_eq!(
        PROTOCOL.as_ref(),
        format!("/ordo/{}", ordo_wire::PROTOCOL_VERSION)
    );
}
