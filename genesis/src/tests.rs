//! Genesis parsing, validation and hashing.

use super::*;
use ordo_crypto::Keypair;

fn sample() -> Genesis {
    let mut g = Genesis::new("test-chain");
    for i in 0..3 {
        g.validators.push(Validator {
            name: format!("v{i}"),
            public_key: Keypair::from_label(&format!("v{i}")).public(),
            addresses: vec![format!("/ip4/127.0.0.1/tcp/{}", 7000 + i)],
        });
    }
    g.clients.push(Client {
        name: "alice".into(),
        public_key: Keypair::from_label("alice").public(),
    });
    g
}

fn rules(g: &Genesis) -> Vec<String> {
    g.problems().iter().map(ToString::to_string).collect()
}

#[test]
fn sample_is_valid_and_round_trips_through_toml() {
    let g = sample();
    g.validate().expect("valid");
    let back = Genesis::parse(&g.to_toml()).expect("parses");
    assert_eq!(back, g);
    assert_eq!(back.hash(), g.hash());
}

#[test]
fn hash_ignores_order_and_addresses_but_not_content() {
    let g = sample();
    let mut reordered = g.clone();
    reordered.validators.reverse();
    reordered.validators[0].addresses.clear();
    assert_eq!(reordered.hash(), g.hash());

    let mut other = g.clone();
    other.consensus.block_txs_max += 1;
    assert_ne!(other.hash(), g.hash());
    let mut renamed = g.clone();
    renamed.clients[0].name = "bob".into();
    assert_ne!(renamed.hash(), g.hash());
    let mut chain = g.clone();
    chain.chain_id = "other".into();
    assert_ne!(chain.hash(), g.hash());
}

#[test]
fn empty_validator_set_is_rejected() {
    let mut g = sample();
    g.validators.clear();
    assert_eq!(g.problems(), vec![Problem::NoValidators]);
    assert!(g.validate().is_err());
}

#[test]
fn duplicates_are_rejected_precisely() {
    let mut g = sample();
    g.validators[1].public_key = g.validators[0].public_key;
    g.clients.push(g.clients[0].clone());
    let r = rules(&g);
    assert!(
        r.iter()
            .any(|p| p == "validator 'v1' has the same public key as validator 'v0'"),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|p| p == "client name 'alice' appears more than once"),
        "{r:?}"
    );
}

#[test]
fn weak_keys_are_rejected() {
    let mut g = sample();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    g.clients[0].public_key = PublicKey(identity);
    let r = rules(&g);
    assert!(
        r.iter()
            .any(|p| p.contains("client 'alice'") && p.contains("small-order")),
        "{r:?}"
    );
}

#[test]
fn absurd_limits_are_rejected() {
    let mut g = sample();
    g.consensus.block_txs_max = 0;
    g.consensus.tx_bytes_max = 10 << 30;
    g.consensus.election_timeout_max_ms = g.consensus.election_timeout_min_ms;
    let r = rules(&g);
    assert!(
        r.iter()
            .any(|p| p.starts_with("consensus.block_txs_max = 0 is out of range")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|p| p.starts_with("consensus.tx_bytes_max")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|p| p.contains("must be greater than election_timeout_min_ms")),
        "{r:?}"
    );
}

#[test]
fn bad_chain_id_and_names_are_rejected() {
    let mut g = sample();
    g.chain_id = "has space".into();
    g.validators[0].name = String::new();
    g.validators[1].addresses = vec!["127.0.0.1:7000".into()];
    let r = rules(&g);
    assert!(
        r.iter().any(|p| p.starts_with("chain_id 'has space'")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|p| p.starts_with("validator name ''")),
        "{r:?}"
    );
    assert!(r.iter().any(|p| p.contains("is not a multiaddr")), "{r:?}");
}

#[test]
fn unknown_fields_and_bad_keys_fail_to_parse_with_location() {
    let err = Genesis::parse("chain_id = \"x\"\nbogus = 1\n").expect_err("unknown field");
    assert!(err.to_string().contains("bogus"), "{err}");
    let err =
        Genesis::parse("chain_id = \"x\"\n[[validators]]\nname = \"a\"\npublic_key = \"12\"\n")
            .expect_err("short key");
    assert!(
        err.to_string().contains("public key must be 32 bytes"),
        "{err}"
    );
    assert!(err.to_string().contains("line 4"), "{err}");
}

#[test]
fn policy_reflects_genesis() {
    let g = sample();
    let p = g.policy();
    assert_eq!(p.genesis_hash, g.hash());
    assert_eq!(p.validators.len(), 3);
    assert!(p.clients.contains(&Keypair::from_label("alice").public()));
    assert_eq!(p.limits, g.consensus.limits());
}

#[test]
fn oversize_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("genesis.toml");
    let f = std::fs::File::create(&path).expect("create");
    f.set_len(GENESIS_FILE_BYTES_MAX + 1).expect("grow");
    assert!(matches!(
        Genesis::read(&path),
        Err(GenesisError::TooLarge { .. })
    ));
}
