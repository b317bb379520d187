//! A cluster of real `ordo node run` processes on loopback, for end-to-end scenarios.
//!
//! Each validator gets a temp directory with its key, config, data and log. Nodes can be
//! killed (SIGKILL), stopped (SIGTERM) and restarted; waits poll observable state (the HTTP
//! API or the data directory) against deadlines. Clusters run one at a time (a process-wide
//! lock), so that elections are not starved of CPU by another test's cluster.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ordo_crypto::{Keypair, write_key_file};
use ordo_ledger::{SignedTransaction, Store, Transaction, TxId};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::{CHAIN, TestChain, ordo, ordo_bin};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Settings for a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub validators: usize,
    pub clients: usize,
    pub snapshot_every_blocks: u64,
    pub keep_blocks: u64,
    pub block_txs_max: u32,
    pub mempool_txs_max: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            validators: 3,
            clients: 4,
            snapshot_every_blocks: 128,
            keep_blocks: 128,
            block_txs_max: 1000,
            mempool_txs_max: 100_000,
        }
    }
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api: SocketAddr,
    pub p2p: String,
    child: Option<Child>,
}

impl Node {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    pub dir: TempDir,
    pub chain: TestChain,
    pub nodes: Vec<Node>,
    pub http: reqwest::blocking::Client,
    nonce: u64,
    _turn: MutexGuard<'static, ()>,
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// Writes keys, genesis and configs, and starts every validator.
    pub fn start(opts: Options) -> Cluster {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = TempDir::new().expect("tempdir");
        let mut chain = TestChain::new(opts.validators, opts.clients);
        chain.genesis.consensus.block_txs_max = opts.block_txs_max;
        let ports = free_ports(2 * opts.validators);
        let mut nodes = Vec::new();
        for i in 0..opts.validators {
            let p2p = format!("/ip4/127.0.0.1/tcp/{}", ports[2 * i]);
            chain.genesis.validators[i].addresses = vec![p2p.clone()];
            let node_dir = dir.path().join(format!("validator-{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            write_key_file(&node_dir.join("validator.key"), &chain.validators[i], false)
                .expect("key file");
            let api = SocketAddr::from(([127, 0, 0, 1], ports[2 * i + 1]));
            let config = format!(
                "genesis = \"../genesis.toml\"\nkey_file = \"validator.key\"\ndata_dir = \"data\"\n\
                 listen = [\"{p2p}\"]\nmdns = false\napi = \"{api}\"\n\
                 [mempool]\ntxs_max = {}\nbytes_max = 268435456\n\
                 [raft]\nsnapshot_every_blocks = {}\nkeep_blocks = {}\nblocks_in_flight_max = 4\n",
                opts.mempool_txs_max, opts.snapshot_every_blocks, opts.keep_blocks
            );
            std::fs::write(node_dir.join("node.toml"), config).expect("config");
            nodes.push(Node {
                name: format!("validator-{i}"),
                config: node_dir.join("node.toml"),
                dir: node_dir,
                api,
                p2p,
                child: None,
            });
        }
        chain.genesis.validate().expect("valid genesis");
        chain
            .genesis
            .save(&dir.path().join("genesis.toml"))
            .expect("genesis");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(70))
            .build()
            .expect("http client");
        let mut cluster = Cluster {
            dir,
            chain,
            nodes,
            http,
            nonce: 0,
            _turn: turn,
        };
        for i in 0..opts.validators {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is already running", node.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .expect("log file");
        let child = Command::new(ordo_bin())
            .args(["node", "run", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "info,libp2p=warn,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start ordo node");
        node.child = Some(child);
    }

    /// SIGKILLs validator `i`.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// SIGTERMs validator `i` and waits for a clean exit (status 0).
    pub fn stop(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("running");
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(
                    status.success(),
                    "{} exited with {status} after SIGTERM; log:\n{}",
                    self.nodes[i].name,
                    self.log_tail(i)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} ignored SIGTERM",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts validator `i` again on the same data directory.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].log()).unwrap_or_default();
        // Heartbeats to a killed node repeat ten times a second; they say nothing new.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("HeartbeatWorker"))
            .collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    pub fn get(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.nodes[i].url()))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().ok()?))
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        match self.get(i, "/v1/status")? {
            (200, v) => Some(v),
            _ => None,
        }
    }

    pub fn tip(&self, i: usize) -> Option<u64> {
        self.status(i)?["tip"]["height"].as_u64()
    }

    /// Waits until the running validators agree on one leader; returns its index.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for("a leader all running validators agree on", timeout, || {
            let mut leaders = HashSet::new();
            let mut leader_at = None;
            for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.running()) {
                let st = self.status(i)?;
                leaders.insert(st["leader"]["name"].as_str()?.to_owned());
                if st["role"] == "leader" {
                    leader_at = Some(i);
                }
                let _ = n;
            }
            (leaders.len() == 1).then_some(leader_at).flatten()
        })
    }

    /// Waits until every running validator's tip is at least `height`.
    pub fn wait_tips(&self, height: u64, timeout: Duration) {
        wait_for(
            &format!("every running validator at height {height}"),
            timeout,
            || {
                self.nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.running())
                    .all(|(i, _)| self.tip(i).is_some_and(|t| t >= height))
                    .then_some(())
            },
        );
    }

    /// `n` fresh signed transactions, valid for the next `tx_lifetime_blocks` blocks from
    /// `height`, spread over the clients.
    pub fn txs(&mut self, n: usize, height: u64) -> Vec<SignedTransaction> {
        let lifetime = self.chain.genesis.consensus.tx_lifetime_blocks;
        (0..n)
            .map(|_| {
                self.nonce += 1;
                let key =
                    &self.chain.clients[(self.nonce % self.chain.clients.len() as u64) as usize];
                Transaction {
                    chain_id: CHAIN.into(),
                    sender: key.public(),
                    nonce: self.nonce,
                    expires_at: height + lifetime,
                    payload: format!("tx {}", self.nonce).into_bytes(),
                }
                .sign(key)
            })
            .collect()
    }

    /// POSTs a submission body to validator `i`; returns the HTTP status and JSON answer.
    pub fn post(&self, i: usize, body: &Value) -> Option<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}/v1/transactions", self.nodes[i].url()))
            .json(body)
            .send()
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().ok()?))
    }

    /// Submits a batch to validator `i` (retrying 503s and unreachable nodes for up to
    /// 30 s); returns the per-transaction results.
    pub fn submit(&self, i: usize, txs: &[SignedTransaction], wait: bool) -> Vec<Value> {
        let body = json!({
            "transactions": txs.iter().map(|t| hex::encode(t.to_bytes())).collect::<Vec<_>>(),
            "wait": wait,
            "timeout_ms": 20_000,
        });
        wait_for(
            "the cluster to take a submission",
            Duration::from_secs(30),
            || match self.post(i, &body) {
                Some((200, v)) => Some(v["results"].as_array().cloned().unwrap_or_default()),
                Some((503, _)) | None => None,
                Some((code, v)) => panic!("submission answered {code}: {v}"),
            },
        )
    }

    /// Stops every running validator cleanly, then checks the chain invariants on disk:
    /// every chain is a prefix of the longest, every id in `committed` is in it exactly
    /// once, and `ordo audit` passes on every data directory. Returns the chain's tx ids.
    pub fn stop_and_check(&mut self, committed: &HashSet<TxId>) -> HashSet<TxId> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].running() {
                self.stop(i);
            }
        }
        let stores: Vec<Store> = self
            .nodes
            .iter()
            .map(|n| {
                Store::open_read_only(&n.data_dir(), &self.chain.genesis.identity())
                    .expect("open store")
            })
            .collect();
        let longest = stores
            .iter()
            .max_by_key(|s| s.tip().height)
            .expect("at least one node");
        for (store, node) in stores.iter().zip(&self.nodes) {
            for h in 1..=store.tip().height {
                assert_eq!(
                    store.block(h).expect("read"),
                    longest.block(h).expect("read"),
                    "{}'s chain diverges at height {h}",
                    node.name
                );
            }
        }
        let mut seen: HashMap<TxId, u64> = HashMap::new();
        for h in 1..=longest.tip().height {
            let block = longest
                .block(h)
                .expect("read")
                .expect("block below the tip");
            for id in block.tx_ids() {
                assert!(
                    seen.insert(id, h).is_none(),
                    "transaction {id} is in the chain twice"
                );
            }
        }
        for id in committed {
            assert!(
                seen.contains_key(id),
                "acknowledged transaction {id} is missing"
            );
        }
        drop(stores);
        let genesis = self.dir.path().join("genesis.toml");
        for node in &self.nodes {
            let (code, out, err) = ordo(&[
                "audit",
                "--data-dir",
                node.data_dir().to_str().expect("utf-8 path"),
                "--genesis",
                genesis.to_str().expect("utf-8 path"),
            ]);
            assert_eq!(code, 0, "audit of {} failed:\n{out}\n{err}", node.name);
        }
        seen.into_keys().collect()
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.dir.path().join("genesis.toml")
    }

    pub fn metric(&self, i: usize, name: &str) -> Option<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.nodes[i].url()))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                eprintln!(
                    "---- {} log (last lines) ----\n{}",
                    node.name,
                    self.log_tail(i)
                );
                if node.running() {
                    eprintln!("---- {} status ----\n{:?}", node.name, self.status(i));
                }
            }
            // Keep the logs and data directories for a closer look.
            self.dir.disable_cleanup(true);
            eprintln!("cluster directory kept: {}", self.dir.path().display());
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Ids of the results that say `committed`.
pub fn committed_ids(results: &[Value]) -> HashSet<TxId> {
    results
        .iter()
        .filter(|r| r["status"] == "committed")
        .map(|r| r["id"].as_str().expect("id").parse().expect("hex id"))
        .collect()
}

/// Whether `path` exists (for readability in tests).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A key that is not in any genesis.
pub fn outsider() -> Keypair {
    Keypair::from_label("outsider")
}
