//! A network's directory: what [`Net::create`] writes and [`Net::open`] reads back.
//!
//! ```text
//! DIR/genesis.toml                 the chain (written last: its presence marks a whole net)
//! DIR/keys/validator-<i>.key       validator keys
//! DIR/keys/client.key              the first client's key; client-<i>.key the others
//! DIR/validator-<i>/node.toml      each validator's configuration (free loopback ports)
//! DIR/validator-<i>/data/          its ledger and Raft state
//! DIR/validator-<i>/node.log       its log
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ordo_config::NodeConfig;
use ordo_crypto::{Keypair, write_key_file};
use ordo_genesis::{Client, Genesis, Validator};

use crate::{HarnessError, NodeProcess, free_ports};

/// Changes a node's configuration before it is written (validator index, configuration).
pub type NodeTweak = Box<dyn Fn(usize, &mut NodeConfig)>;

/// What network to create.
pub struct Spec {
    /// The chain id.
    pub chain_id: String,
    /// The validators' keys.
    pub validators: Vec<Keypair>,
    /// The permitted clients' keys.
    pub clients: Vec<Keypair>,
    /// Changes to the genesis (limits, timing) before it is validated and written.
    pub genesis: Box<dyn Fn(&mut Genesis)>,
    /// Changes to each node's configuration before it is written.
    pub node: NodeTweak,
    /// Each validator's own address (its network namespace's), where it listens on
    /// [`HOST_P2P_PORT`] and [`HOST_API_PORT`]; empty: every validator on free loopback
    /// ports.
    pub hosts: Vec<std::net::IpAddr>,
}

/// The libp2p port of a validator on a host of its own ([`Spec::hosts`]).
pub const HOST_P2P_PORT: u16 = 7000;
/// The API port of a validator on a host of its own ([`Spec::hosts`]).
pub const HOST_API_PORT: u16 = 8080;

impl Spec {
    /// `validators` validators and `clients` clients with fresh random keys, default
    /// settings.
    pub fn new(chain_id: &str, validators: usize, clients: usize) -> Spec {
        Spec {
            chain_id: chain_id.to_owned(),
            validators: (0..validators).map(|_| Keypair::generate()).collect(),
            clients: (0..clients.max(1)).map(|_| Keypair::generate()).collect(),
            genesis: Box::new(|_| {}),
            node: Box::new(|_, _| {}),
            hosts: Vec::new(),
        }
    }
}

/// A network of validators described by a directory.
pub struct Net {
    /// The directory.
    pub dir: PathBuf,
    /// Its genesis.
    pub genesis: Genesis,
    /// Its validators (not started by [`Net::create`] or [`Net::open`]).
    pub nodes: Vec<NodeProcess>,
}

/// Most validators a net holds (the port and core budget of one host).
pub const VALIDATORS_MAX: usize = 16;

impl Net {
    /// The genesis file of a net in `dir`.
    pub fn genesis_path(dir: &Path) -> PathBuf {
        dir.join("genesis.toml")
    }

    /// Key file of client `i` of a net in `dir` (the first is `keys/client.key`).
    pub fn client_key_path(dir: &Path, i: usize) -> PathBuf {
        let name = if i == 0 {
            "client.key".to_owned()
        } else {
            format!("client-{i}.key")
        };
        dir.join("keys").join(name)
    }

    /// Validator `i`'s directory in the net directory `dir` (its node.toml, log, data).
    pub fn node_dir(dir: &Path, i: usize) -> PathBuf {
        dir.join(format!("validator-{i}"))
    }

    /// Whether `dir` holds a whole net.
    pub fn exists(dir: &Path) -> bool {
        Net::genesis_path(dir).exists()
    }

    /// Writes keys, genesis and node configurations for `spec` into `dir`, each validator
    /// on two free loopback ports (libp2p, API), mDNS off, signature checks spread over its
    /// share of this host's cores.
    ///
    /// # Errors
    /// Files that cannot be written, a spec that makes an invalid genesis.
    pub fn create(dir: &Path, spec: &Spec) -> Result<Net, HarnessError> {
        let n = spec.validators.len();
        if !(1..=VALIDATORS_MAX).contains(&n) {
            return Err(HarnessError::Invalid(format!(
                "a net has 1 to {VALIDATORS_MAX} validators, not {n}"
            )));
        }
        let keys_dir = dir.join("keys");
        std::fs::create_dir_all(&keys_dir).map_err(HarnessError::io(format!(
            "cannot create {}",
            keys_dir.display()
        )))?;
        if !spec.hosts.is_empty() && spec.hosts.len() != n {
            return Err(HarnessError::Invalid(format!(
                "{} hosts for {n} validators",
                spec.hosts.len()
            )));
        }
        let ports = if spec.hosts.is_empty() {
            free_ports(2 * n)?
        } else {
            Vec::new()
        };
        let mut genesis = Genesis::new(&spec.chain_id);
        for (i, key) in spec.validators.iter().enumerate() {
            // No genesis names keys left by an interrupted creation: replacing them is safe.
            write_key_file(&keys_dir.join(format!("validator-{i}.key")), key, true)?;
            let (addr, api) = match spec.hosts.get(i) {
                Some(ip) => (
                    format!("/ip4/{ip}/tcp/{HOST_P2P_PORT}"),
                    SocketAddr::new(*ip, HOST_API_PORT),
                ),
                None => (
                    format!("/ip4/127.0.0.1/tcp/{}", ports[2 * i]),
                    SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1])),
                ),
            };
            genesis.validators.push(Validator {
                name: format!("validator-{i}"),
                public_key: key.public(),
                addresses: vec![addr.clone()],
            });
            write_node_config(dir, i, n, addr, api, &spec.node)?;
        }
        for (i, key) in spec.clients.iter().enumerate() {
            write_key_file(&Net::client_key_path(dir, i), key, true)?;
            genesis.clients.push(Client {
                name: if i == 0 {
                    "devnet-client".into()
                } else {
                    format!("devnet-client-{i}")
                },
                public_key: key.public(),
            });
        }
        (spec.genesis)(&mut genesis);
        genesis.validate()?;
        genesis.save(&Net::genesis_path(dir))?;
        Net::open(dir)
    }

    /// The net in `dir`, as [`Net::create`] left it.
    ///
    /// # Errors
    /// When `dir` holds no whole net, or a file in it does not read.
    pub fn open(dir: &Path) -> Result<Net, HarnessError> {
        if !Net::exists(dir) {
            return Err(HarnessError::Invalid(format!(
                "{} holds no genesis.toml: not a net",
                dir.display()
            )));
        }
        let genesis = Genesis::load(&Net::genesis_path(dir))?;
        let mut nodes = Vec::new();
        for i in 0..VALIDATORS_MAX {
            let node_dir = Net::node_dir(dir, i);
            let config = node_dir.join("node.toml");
            if !config.exists() {
                break;
            }
            let c = NodeConfig::load(&config)?;
            nodes.push(NodeProcess::new(
                format!("validator-{i}"),
                config,
                c.api,
                c.data_dir,
                node_dir.join("node.log"),
            ));
        }
        if nodes.is_empty() {
            return Err(HarnessError::Invalid(format!(
                "{} has a genesis but no validator-*/node.toml; is it a net directory?",
                dir.display()
            )));
        }
        Ok(Net {
            dir: dir.to_owned(),
            genesis,
            nodes,
        })
    }

    /// Starts every validator that is not running, with `bin` (see [`crate::ordo_bin`]).
    ///
    /// # Errors
    /// When a process cannot be started.
    pub fn start_all(&mut self, bin: &Path) -> Result<(), HarnessError> {
        for node in self.nodes.iter_mut().filter(|n| !n.is_running()) {
            node.start(bin)?;
        }
        Ok(())
    }

    /// Refuses when another process holds one of the validators' API addresses (the net
    /// is already running, say).
    ///
    /// # Errors
    /// [`HarnessError::Invalid`] naming the address.
    pub fn check_ports_free(&self) -> Result<(), HarnessError> {
        for n in &self.nodes {
            if std::net::TcpListener::bind(n.api).is_err() {
                return Err(HarnessError::Invalid(format!(
                    "{}'s API address {} is in use: is this net already running?",
                    n.name, n.api
                )));
            }
        }
        Ok(())
    }
}

/// Writes validator `i`'s configuration (of `n`), paths relative to its directory.
fn write_node_config(
    dir: &Path,
    i: usize,
    n: usize,
    listen: String,
    api: SocketAddr,
    tweak: &NodeTweak,
) -> Result<(), HarnessError> {
    let node_dir = Net::node_dir(dir, i);
    std::fs::create_dir_all(&node_dir).map_err(HarnessError::io(format!(
        "cannot create {}",
        node_dir.display()
    )))?;
    let mut config = NodeConfig::new(
        PathBuf::from("../genesis.toml"),
        PathBuf::from(format!("../keys/validator-{i}.key")),
        PathBuf::from("data"),
    );
    config.listen = vec![listen];
    config.mdns = false;
    config.api = api;
    // The validators share this host and check the same signatures: each spreads a batch
    // over its share of the cores, not over all of them.
    config.verify.threads = (ordo_crypto::cores() / n).max(1);
    tweak(i, &mut config);
    let path = node_dir.join("node.toml");
    std::fs::write(&path, config.to_toml())
        .map_err(HarnessError::io(format!("cannot write {}", path.display())))
}
