//! `ordo devnet`: a local multi-validator chain, each validator its own process.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ordo_crypto::{Keypair, load_key_file, write_key_file};
use ordo_genesis::{Client as GenesisClient, Genesis, Validator};
use ordo_ledger::{SignedTransaction, Transaction};
use ordo_node::config::NodeConfig;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::client::Client;
use crate::{CmdResult, Failure};

/// How long a validator gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Args)]
pub struct DevnetArgs {
    /// Directory for the devnet's keys, genesis, configurations, data and logs. Re-running
    /// on the same directory resumes the same chain.
    #[arg(long, default_value = "ordo-devnet", value_name = "DIR")]
    dir: PathBuf,
    /// Number of validators, when creating the devnet (default 3).
    #[arg(long, value_name = "N")]
    validators: Option<usize>,
    /// Chain id, when creating the devnet (default "devnet").
    #[arg(long)]
    chain_id: Option<String>,
    /// Submit this many demo transactions per second, so the chain moves.
    #[arg(long, default_value_t = 0, value_name = "TPS")]
    load: u32,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
}

/// A devnet's layout on disk.
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
}

impl Layout {
    fn genesis(&self) -> PathBuf {
        self.dir.join("genesis.toml")
    }
    pub(crate) fn genesis_path(&self) -> PathBuf {
        self.genesis()
    }
    /// Key file of client `i` (the first is `keys/client.key`).
    pub(crate) fn client_key_n(&self, i: usize) -> PathBuf {
        if i == 0 {
            self.client_key()
        } else {
            self.dir.join("keys").join(format!("client-{i}.key"))
        }
    }
    fn client_key(&self) -> PathBuf {
        self.dir.join("keys").join("client.key")
    }
    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("validator-{i}"))
    }
    fn node_config(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("node.toml")
    }
}

/// Reserves `n` distinct free loopback ports.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("cannot find free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Creates keys, genesis and node configurations for `n` validators on free ports, with
/// `clients` permitted client keys.
pub(crate) fn create(
    layout: &Layout,
    n: usize,
    chain_id: &str,
    clients: usize,
) -> anyhow::Result<()> {
    if !(1..=16).contains(&n) {
        bail!("--validators must be between 1 and 16");
    }
    let keys_dir = layout.dir.join("keys");
    std::fs::create_dir_all(&keys_dir)
        .with_context(|| format!("cannot create {}", keys_dir.display()))?;
    let ports = free_ports(2 * n)?;
    let mut genesis = Genesis::new(chain_id);
    for i in 0..n {
        let key = Keypair::generate();
        let key_file = keys_dir.join(format!("validator-{i}.key"));
        // No genesis names keys left by an interrupted creation: replacing them is safe.
        write_key_file(&key_file, &key, true)?;
        let p2p = ports[2 * i];
        let addr = format!("/ip4/127.0.0.1/tcp/{p2p}");
        genesis.validators.push(Validator {
            name: format!("validator-{i}"),
            public_key: key.public(),
            addresses: vec![addr.clone()],
        });
        let node_dir = layout.node_dir(i);
        std::fs::create_dir_all(&node_dir)
            .with_context(|| format!("cannot create {}", node_dir.display()))?;
        let mut config = NodeConfig::new(
            PathBuf::from("../genesis.toml"),
            PathBuf::from(format!("../keys/validator-{i}.key")),
            PathBuf::from("data"),
        );
        config.listen = vec![addr];
        config.mdns = false;
        config.api = SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1]));
        // The validators share this machine and check the same signatures: each spreads
        // a batch over its share of the cores, not over all of them.
        config.verify.threads = (ordo_crypto::cores() / n).max(1);
        std::fs::write(layout.node_config(i), config.to_toml())
            .with_context(|| format!("cannot write {}", layout.node_config(i).display()))?;
    }
    for i in 0..clients.max(1) {
        let client = Keypair::generate();
        write_key_file(&layout.client_key_n(i), &client, true)?;
        genesis.clients.push(GenesisClient {
            name: if i == 0 {
                "devnet-client".into()
            } else {
                format!("devnet-client-{i}")
            },
            public_key: client.public(),
        });
    }
    genesis.validate()?;
    // Written last: its presence marks a complete devnet.
    genesis.save(&layout.genesis())?;
    Ok(())
}

/// The node configurations of an existing devnet.
fn configs(layout: &Layout) -> anyhow::Result<Vec<NodeConfig>> {
    let mut out = Vec::new();
    for i in 0.. {
        let path = layout.node_config(i);
        if !path.exists() {
            break;
        }
        out.push(NodeConfig::load(&path)?);
    }
    if out.is_empty() {
        bail!(
            "{} has a genesis but no validator-*/node.toml; is it a devnet directory?",
            layout.dir.display()
        );
    }
    Ok(out)
}

/// One validator process of a devnet.
pub(crate) struct Node {
    pub(crate) name: String,
    config: PathBuf,
    pub(crate) api: SocketAddr,
    pub(crate) data_dir: PathBuf,
    pub(crate) child: Option<Child>,
    log: PathBuf,
}

/// The validators of an existing devnet, not started; refuses when an API port is taken.
pub(crate) fn nodes(layout: &Layout) -> anyhow::Result<Vec<Node>> {
    let nodes: Vec<Node> = configs(layout)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| Node {
            name: format!("validator-{i}"),
            config: layout.node_config(i),
            api: c.api,
            data_dir: c.data_dir,
            child: None,
            log: layout.node_dir(i).join("node.log"),
        })
        .collect();
    for n in &nodes {
        if TcpListener::bind(n.api).is_err() {
            bail!(
                "{}'s API address {} is in use: is this devnet already running?",
                n.name,
                n.api
            );
        }
    }
    Ok(nodes)
}

pub(crate) fn spawn(node: &mut Node) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("cannot open {}", node.log.display()))?;
    let exe = std::env::current_exe().context("cannot find the ordo executable")?;
    let child = Command::new(exe)
        .args(["node", "run", "--config"])
        .arg(&node.config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,libp2p=warn,openraft=error".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", node.name))?;
    node.child = Some(child);
    Ok(())
}

/// Sends SIGTERM to every running validator and waits for them all; kills those that do
/// not stop within [`STOP_GRACE`], or all of them at a second Ctrl-C.
pub(crate) async fn stop_all(nodes: &mut [Node]) {
    let mut children: Vec<(String, Child)> = nodes
        .iter_mut()
        .filter_map(|n| Some((n.name.clone(), n.child.take()?)))
        .collect();
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let again = crate::node::wait_for_signal();
    let all = futures::future::join_all(children.iter_mut().map(|(_, c)| c.wait()));
    let forced = tokio::select! {
        _ = all => false,
        _ = tokio::time::sleep(STOP_GRACE) => true,
        _ = async { match again { Ok(f) => { let _ = f.await; } Err(_) => std::future::pending().await } } => true,
    };
    if forced {
        for (name, child) in &mut children {
            if let Ok(None) = child.try_wait() {
                eprintln!("{name} did not stop; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

fn line(name: &str, status: Option<&Value>) -> String {
    match status {
        None => format!("{name:<13} starting…"),
        Some(v) => format!(
            "{name:<13} {:<9} term {:<4} tip {:<8} mempool {:<7} peers {}",
            v["role"].as_str().unwrap_or("?"),
            v["term"],
            v["tip"]["height"],
            v["mempool"]["txs"],
            v["peers"].as_array().map_or(0, Vec::len),
        ),
    }
}

pub fn run(a: DevnetArgs) -> CmdResult {
    let layout = Layout { dir: a.dir.clone() };
    let created = !layout.genesis().exists();
    if created {
        let chain_id = a.chain_id.as_deref().unwrap_or("devnet");
        create(&layout, a.validators.unwrap_or(3), chain_id, 1).map_err(Failure::Usage)?;
    } else if a.validators.is_some() || a.chain_id.is_some() {
        eprintln!(
            "note: {} already holds a devnet; --validators and --chain-id apply only when creating one",
            layout.dir.display()
        );
    }
    let genesis = Genesis::load(&layout.genesis())?;
    let mut nodes = nodes(&layout).map_err(Failure::Usage)?;
    crate::client::block_on(async move {
        // Handlers first, so a Ctrl-C at any moment stops the validators it started.
        let signal = crate::node::wait_for_signal()?;
        for n in &mut nodes {
            spawn(n)?;
        }
        let dir = layout.dir.display();
        let api0 = format!("http://{}", nodes[0].api);
        println!(
            "ordo devnet: {} validators of chain '{}' in {dir} ({})",
            nodes.len(),
            genesis.chain_id,
            if created { "new" } else { "resumed" }
        );
        println!(
            "  submit  ordo tx submit --node {api0} --key {} --payload hello --wait",
            layout.client_key().display()
        );
        println!("  follow  ordo blocks follow --node {api0}");
        println!(
            "  audit   ordo audit --data-dir {dir}/validator-0/data --genesis {dir}/genesis.toml"
        );
        println!("  logs    {dir}/validator-*/node.log");
        println!("Ctrl-C stops the validators; run the same command again to resume the chain.");
        let result = watch(&mut nodes, &layout, &a, signal).await;
        stop_all(&mut nodes).await;
        println!("devnet stopped; its chain is in {dir}");
        result
    })
}

/// Shows each validator's role and tip until Ctrl-C / SIGTERM / `--duration`; submits demo
/// load if asked.
async fn watch(
    nodes: &mut [Node],
    layout: &Layout,
    a: &DevnetArgs,
    signal: impl std::future::Future<Output = anyhow::Result<()>>,
) -> CmdResult {
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::new(&format!("http://{}", n.api)))
        .collect::<Result<_, _>>()?;
    let multi = MultiProgress::new();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if !tty {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{spinner} {msg}").expect("valid template");
    let bars: Vec<ProgressBar> = nodes
        .iter()
        .map(|n| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_message(line(&n.name, None));
            bar
        })
        .collect();
    let load = if a.load > 0 {
        let key = load_key_file(&layout.client_key())?;
        Some(tokio::spawn(demo_load(clients.clone(), key, a.load)))
    } else {
        None
    };
    let deadline = a
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    tokio::pin!(signal);
    let mut last_summary = String::new();
    let outcome = loop {
        let mut statuses = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let st = tokio::time::timeout(Duration::from_millis(500), c.status())
                .await
                .ok()
                .and_then(Result::ok);
            bars[i].set_message(line(&nodes[i].name, st.as_ref()));
            bars[i].tick();
            statuses.push(st);
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if let Some(status) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                n.child = None;
                let msg = format!("{} exited ({status}); see {}", n.name, n.log.display());
                bars[i].set_message(msg.clone());
                if !tty {
                    println!("{msg}");
                }
            }
        }
        if nodes.iter().all(|n| n.child.is_none()) {
            break Err(Failure::Negative("every validator has exited".into()));
        }
        let summary = summary(nodes, &statuses);
        if !tty && summary != last_summary {
            println!("{summary}");
            last_summary = summary;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break Ok(());
        }
        tokio::select! {
            r = &mut signal => { r?; break Ok(()); }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    if let Some(load) = load {
        load.abort();
    }
    for bar in bars {
        bar.finish();
    }
    outcome
}

fn summary(nodes: &[Node], statuses: &[Option<Value>]) -> String {
    let up = statuses.iter().filter(|s| s.is_some()).count();
    let leader = statuses
        .iter()
        .flatten()
        .find_map(|s| s["leader"]["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(electing)".into());
    let tip = statuses
        .iter()
        .flatten()
        .filter_map(|s| s["tip"]["height"].as_u64())
        .max()
        .unwrap_or(0);
    format!("{up}/{} up  leader {leader}  tip {tip}", nodes.len())
}

/// Submits `tps` demo transactions per second, spread over the nodes, without waiting.
async fn demo_load(clients: Vec<Client>, key: Keypair, tps: u32) {
    let per_tick = tps.div_ceil(10).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let c = &clients[(n as usize / per_tick) % clients.len()];
        let Ok(status) = c.status().await else {
            continue;
        };
        let tip = status["tip"]["height"].as_u64().unwrap_or(0);
        let lifetime = status["limits"]["tx_lifetime_blocks"].as_u64().unwrap_or(1);
        let chain = status["chain_id"].as_str().unwrap_or_default().to_owned();
        let txs: Vec<SignedTransaction> = (0..per_tick)
            .map(|_| {
                n += 1;
                Transaction {
                    chain_id: chain.clone(),
                    sender: key.public(),
                    nonce: rand::random(),
                    expires_at: tip + lifetime,
                    payload: format!("devnet demo {n}").into_bytes(),
                }
                .sign(&key)
            })
            .collect();
        let body = json!({
            "transactions": txs.iter().map(|t| hex::encode(t.to_bytes())).collect::<Vec<_>>(),
        });
        if let Err(e) = c
            .post("/v1/transactions", &body, Duration::from_secs(5))
            .await
        {
            tracing::debug!(error = %e, "demo load submission failed");
        }
    }
}
