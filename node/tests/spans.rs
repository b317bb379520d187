//! Three validators in one process: every line the node and Raft log while they start,
//! order a transaction and stop says which validator wrote it (its `validator` span).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordo_client::{Client, Signer, SubmitOptions, TxTemplate};
use ordo_config::NodeConfig;
use ordo_crypto::{Keypair, write_key_file};
use ordo_genesis::{Client as GenesisClient, Genesis, Validator as GenesisValidator};
use ordo_node::validator::Validator;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The validator name of a `validator` span.
struct Name(String);

#[derive(Default)]
struct NameVisitor(Option<String>);

impl Visit for NameVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "name" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "name" {
            self.0 = Some(value.to_owned());
        }
    }
}

/// One event: its target, its message, and the name of the validator span it was in.
type Line = (String, String, Option<String>);

/// Every event seen.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Line>>>);

/// openraft's debug lines from the one helper task it spawns outside its caller's span
/// (it forwards I/O completions to Raft's core, and says so when it exits at shutdown).
fn from_openraft_forwarder(target: &str, message: &str) -> bool {
    target == "openraft::raft" && message.ends_with("forwarder exiting")
}

struct Capture(Seen);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() == "validator" {
            let mut v = NameVisitor::default();
            attrs.record(&mut v);
            if let (Some(name), Some(span)) = (v.0, ctx.span(id)) {
                span.extensions_mut().insert(Name(name));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let validator = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|s| s.extensions().get::<Name>().map(|n| n.0.clone()))
        });
        let mut message = NameVisitor::default();
        struct Message<'a>(&'a mut NameVisitor);
        impl Visit for Message<'_> {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0.0 = Some(format!("{value:?}"));
                }
            }
        }
        event.record(&mut Message(&mut message));
        let target = event.metadata().target().to_owned();
        let line = message.0.unwrap_or_default();
        self.0
            .0
            .lock()
            .expect("lock")
            .push((target, line, validator));
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr")
}

/// Keys, genesis and configurations for three validators in `dir`.
fn configs(dir: &std::path::Path, client: &Keypair) -> Vec<NodeConfig> {
    let keys: Vec<Keypair> = (0..3)
        .map(|i| Keypair::from_label(&format!("spans-{i}")))
        .collect();
    let p2p: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut genesis = Genesis::new("spans");
    for (i, k) in keys.iter().enumerate() {
        genesis.validators.push(GenesisValidator {
            name: format!("validator-{i}"),
            public_key: k.public(),
            addresses: vec![format!("/ip4/127.0.0.1/tcp/{}", p2p[i].port())],
        });
    }
    genesis.clients.push(GenesisClient {
        name: "client".into(),
        public_key: client.public(),
    });
    genesis.validate().expect("genesis");
    genesis.save(&dir.join("genesis.toml")).expect("save");
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let key_file = dir.join(format!("v{i}.key"));
            write_key_file(&key_file, k, false).expect("key");
            let mut c = NodeConfig::new(
                dir.join("genesis.toml"),
                key_file,
                dir.join(format!("data-{i}")),
            );
            c.listen = vec![format!("/ip4/127.0.0.1/tcp/{}", p2p[i].port())];
            c.mdns = false;
            c.api = free_addr();
            c
        })
        .collect()
}

#[test]
fn every_line_of_three_validators_in_one_process_names_its_validator() {
    let seen = Seen::default();
    // As `ordo node run` filters openraft (its spans off), with everything of ordo's on.
    let subscriber = tracing_subscriber::registry()
        .with(Capture(seen.clone()))
        .with(tracing_subscriber::EnvFilter::new(
            "debug,libp2p=warn,openraft=error",
        ));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let dir = tempfile::tempdir().expect("tempdir");
    let client_key = Keypair::from_label("spans-client");
    let configs = configs(dir.path(), &client_key);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut validators = Vec::new();
        for c in &configs {
            validators.push(Validator::start(c).await.expect("starts"));
        }
        let client = Client::new(&format!("http://{}", validators[1].api_addr())).expect("client");
        let status = client
            .wait_for_leader(Duration::from_secs(20))
            .await
            .expect("a leader");
        let signer = Signer::new(client_key.clone(), TxTemplate::from_status(&status));
        let result = client
            .submit(&signer.sign(b"who speaks".to_vec()), &SubmitOptions::wait())
            .await
            .expect("submitted");
        assert!(result.committed_at().is_some(), "{result:?}");
        for v in validators {
            v.shutdown().await;
        }
    });

    let events = seen.0.lock().expect("lock").clone();
    let ours: Vec<_> = events
        .iter()
        .filter(|(target, message, _)| {
            (target.starts_with("ordo_node") || target.starts_with("openraft"))
                && !from_openraft_forwarder(target, message)
        })
        .collect();
    let unnamed: Vec<_> = ours.iter().filter(|(_, _, v)| v.is_none()).collect();
    assert!(
        unnamed.is_empty(),
        "{} of {} lines name no validator, for example {:?}",
        unnamed.len(),
        ours.len(),
        &unnamed[..unnamed.len().min(5)]
    );
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, v) in &ours {
        *by.entry(v.as_deref().expect("named")).or_default() += 1;
    }
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        ["validator-0", "validator-1", "validator-2"],
        "{by:?}"
    );
    // Each validator logged its start and its stop in its own name.
    for name in ["validator-0", "validator-1", "validator-2"] {
        for line in ["validator started", "stopped"] {
            assert!(
                ours.iter()
                    .any(|(_, m, v)| v.as_deref() == Some(name) && m == line),
                "{name} did not log {line:?}"
            );
        }
    }
}
