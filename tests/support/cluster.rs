//! A cluster of real `ordo node run` processes on loopback, for end-to-end scenarios,
//! on `ordo-harness` (processes, directory) and `ordo-client` (every API call).
//!
//! Each validator gets a directory with its config, data and log. Nodes can be killed
//! (SIGKILL), stopped (SIGTERM) and restarted; waits poll observable state (the HTTP API
//! or the data directory) against deadlines. Clusters run one at a time (a process-wide
//! lock), so that elections are not starved of CPU by another test's cluster.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ordo_client::api::{Status, TxResult, TxState};
use ordo_client::{Client, SubmitOptions, TxTemplate, Wire};
use ordo_harness::{Net, NodeProcess, Spec};
use ordo_ledger::{SignedTransaction, Store, TxId};
use serde_json::Value;
use tempfile::TempDir;

use super::{CHAIN, TestChain, block_on, ordo, ordo_bin};

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Beside each validator's data directory: the file that turns on its invalid blocks.
const INVALID_BLOCKS_FILE: &str = "fault-invalid-blocks";
/// Beside each validator's data directory: its fsync delay in milliseconds, when it runs
/// with `libordo_slowdisk.so` preloaded.
const FSYNC_DELAY_FILE: &str = "fsync-delay-ms";

/// Settings for a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub validators: usize,
    pub clients: usize,
    pub snapshot_every_blocks: u64,
    pub keep_blocks: u64,
    pub block_txs_max: u32,
    pub mempool_txs_max: usize,
    /// Run `ordo-faulty` (test-only faults, off until [`Cluster::fault_file`] exists)
    /// instead of `ordo`.
    pub faulty: bool,
    /// Preload `libordo_slowdisk.so` (built beside `ordo`): each validator's fsyncs take
    /// as many milliseconds more as [`Cluster::slow_disk`] last set (none at first).
    pub slow_disk: bool,
    /// Run each validator under libfaketime ([`FAKETIME_LIBRARY`]): its wall clock is off
    /// by as many seconds as [`Cluster::skew_clock`] last set (none at first).
    pub fake_clock: bool,
}

/// Where Debian's `faketime` package puts libfaketime.
pub const FAKETIME_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// The file each validator's libfaketime reads its clock's offset from, beside its data.
const CLOCK_FILE: &str = "clock-offset";

/// Whether libfaketime is here; when it is not, says so, or fails when
/// `ORDO_NEMESIS_REQUIRED` asks for every fault test to run (CI).
pub fn fake_clock_available() -> bool {
    if std::path::Path::new(FAKETIME_LIBRARY).is_file() {
        return true;
    }
    assert!(
        std::env::var_os("ORDO_NEMESIS_REQUIRED").is_none(),
        "{FAKETIME_LIBRARY} is missing (apt-get install faketime; scripts/setup.sh does it as root)"
    );
    eprintln!("skipped: {FAKETIME_LIBRARY} is missing (apt-get install faketime)");
    false
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
            faulty: false,
            slow_disk: false,
            fake_clock: false,
        }
    }
}

pub struct Cluster {
    pub dir: TempDir,
    pub chain: TestChain,
    pub net: Net,
    clients: Vec<Client>,
    http: reqwest::Client,
    nonce: u64,
    /// The validators' binary.
    bin: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    ordo_harness::poll_blocking(timeout, Duration::from_millis(50), check)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

impl Cluster {
    /// Writes keys, genesis and configs, and starts every validator.
    pub fn start(opts: Options) -> Cluster {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = TempDir::new().expect("tempdir");
        let chain = TestChain::new(opts.validators, opts.clients);
        let o = opts.clone();
        let (faulty, slow_disk, fake_clock) = (opts.faulty, opts.slow_disk, opts.fake_clock);
        let spec = Spec {
            chain_id: CHAIN.into(),
            validators: chain.validators.clone(),
            clients: chain.clients.clone(),
            genesis: Box::new(move |g| g.consensus.block_txs_max = o.block_txs_max),
            node: Box::new(move |_, c| {
                c.mempool.txs_max = opts.mempool_txs_max;
                c.mempool.bytes_max = 256 << 20;
                c.raft.snapshot_every_blocks = opts.snapshot_every_blocks;
                c.raft.keep_blocks = opts.keep_blocks;
                c.raft.blocks_in_flight_max = 4;
            }),
            hosts: Vec::new(),
        };
        let mut net = Net::create(dir.path(), &spec).expect("create the cluster");
        let bin = if faulty {
            let bin = ordo_bin().with_file_name("ordo-faulty");
            assert!(
                bin.is_file(),
                "{} is missing: scripts/test.sh builds it first",
                bin.display()
            );
            for node in &mut net.nodes {
                let file = node.data_dir.with_file_name(INVALID_BLOCKS_FILE);
                node.env
                    .push(("ORDO_FAULT_INVALID_BLOCKS".into(), file.into_os_string()));
            }
            bin
        } else {
            ordo_bin()
        };
        if slow_disk {
            let library = ordo_bin().with_file_name("libordo_slowdisk.so");
            assert!(
                library.is_file(),
                "{} is missing: cargo build --release --workspace builds it",
                library.display()
            );
            for node in &mut net.nodes {
                let file = node.data_dir.with_file_name(FSYNC_DELAY_FILE);
                std::fs::write(&file, "0\n").expect("fsync delay file");
                node.env
                    .push(("LD_PRELOAD".into(), library.clone().into_os_string()));
                node.env
                    .push(("ORDO_SLOWDISK_FILE".into(), file.into_os_string()));
            }
        }
        if fake_clock {
            for node in &mut net.nodes {
                let file = node.data_dir.with_file_name(CLOCK_FILE);
                std::fs::write(&file, "+0\n").expect("clock offset file");
                match node.env.iter_mut().find(|(k, _)| k == "LD_PRELOAD") {
                    Some((_, v)) => v.push(format!(" {FAKETIME_LIBRARY}")),
                    None => node
                        .env
                        .push(("LD_PRELOAD".into(), FAKETIME_LIBRARY.into())),
                }
                for (k, v) in [
                    ("FAKETIME_TIMESTAMP_FILE", file.into_os_string()),
                    ("FAKETIME_CACHE_DURATION", "1".into()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
                ] {
                    node.env.push((k.into(), v));
                }
            }
        }
        net.start_all(&bin).expect("start the cluster");
        let clients = net
            .nodes
            .iter()
            .map(|n| Client::new(&n.url()).expect("client"))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(70))
            .build()
            .expect("http client");
        Cluster {
            dir,
            chain,
            net,
            clients,
            http,
            nonce: 0,
            bin,
            _turn: turn,
        }
    }

    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.net.nodes[i]
    }

    pub fn url(&self, i: usize) -> String {
        self.node(i).url()
    }

    /// The typed client of validator `i`.
    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// SIGKILLs validator `i`.
    pub fn kill(&mut self, i: usize) {
        assert!(self.net.nodes[i].is_running(), "{i} is not running");
        self.net.nodes[i].kill();
    }

    /// SIGTERMs validator `i` and waits for a clean exit (status 0).
    pub fn stop(&mut self, i: usize) {
        let node = &mut self.net.nodes[i];
        let name = node.name.clone();
        node.sigterm();
        let status = node
            .wait_exit_blocking(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{name} ignored SIGTERM"));
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM; log:\n{}",
            self.log_tail(i)
        );
    }

    /// Freezes validator `i` (SIGSTOP).
    pub fn pause(&self, i: usize) {
        self.node(i).pause();
    }

    /// Lets validator `i` run again (SIGCONT).
    pub fn resume(&self, i: usize) {
        self.node(i).resume();
    }

    /// Starts validator `i` again on the same data directory.
    pub fn restart(&mut self, i: usize) {
        self.net.nodes[i].start(&self.bin).expect("restart");
    }

    /// The file that, while it exists, makes validator `i` (of a cluster started with
    /// `faulty`) propose blocks that fail verification when it leads.
    pub fn fault_file(&self, i: usize) -> PathBuf {
        self.node(i).data_dir.with_file_name(INVALID_BLOCKS_FILE)
    }

    /// Makes every fsync of validator `i` (of a cluster started with `slow_disk`) take
    /// `ms` milliseconds more, from within 50 ms.
    pub fn slow_disk(&self, i: usize, ms: u64) {
        let file = self.node(i).data_dir.with_file_name(FSYNC_DELAY_FILE);
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{ms}\n")).expect("fsync delay");
        std::fs::rename(&tmp, &file).expect("fsync delay");
    }

    /// Sets validator `i`'s wall clock (of a cluster started with `fake_clock`) `seconds`
    /// off the true time, from within a second.
    pub fn skew_clock(&self, i: usize, seconds: i64) {
        let file = self.node(i).data_dir.with_file_name(CLOCK_FILE);
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{seconds:+}\n")).expect("clock offset");
        std::fs::rename(&tmp, &file).expect("clock offset");
    }

    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.node(i).log).unwrap_or_default();
        // Heartbeats to a killed node repeat ten times a second; they say nothing new.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("HeartbeatWorker"))
            .collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    pub fn status(&self, i: usize) -> Option<Status> {
        block_on(self.client(i).status()).ok()
    }

    pub fn tip(&self, i: usize) -> Option<u64> {
        Some(self.status(i)?.tip.height)
    }

    /// Waits until the running validators agree on one leader; returns its index.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        wait_for("a leader all running validators agree on", timeout, || {
            let mut leaders = HashSet::new();
            let mut leader_at = None;
            for i in (0..self.net.nodes.len()).filter(|i| self.node(*i).is_running()) {
                let st = self.status(i)?;
                leaders.insert(st.leader?.name);
                if st.role == ordo_client::api::Role::Leader {
                    leader_at = Some(i);
                }
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
                (0..self.net.nodes.len())
                    .filter(|i| self.node(*i).is_running())
                    .all(|i| self.tip(i).is_some_and(|t| t >= height))
                    .then_some(())
            },
        );
    }

    /// `n` fresh signed transactions, valid for the next `tx_lifetime_blocks` blocks from
    /// `height`, spread over the clients.
    pub fn txs(&mut self, n: usize, height: u64) -> Vec<SignedTransaction> {
        let template = TxTemplate {
            chain_id: CHAIN.into(),
            expires_at: height + self.net.genesis.consensus.tx_lifetime_blocks,
        };
        (0..n)
            .map(|_| {
                self.nonce += 1;
                let key =
                    &self.chain.clients[(self.nonce % self.chain.clients.len() as u64) as usize];
                template.sign(key, self.nonce, format!("tx {}", self.nonce).into_bytes())
            })
            .collect()
    }

    /// Submits a batch to validator `i` as JSON (the client retries 503s and unreachable
    /// nodes for up to 30 s); returns the per-transaction results.
    pub fn submit(&self, i: usize, txs: &[SignedTransaction], wait: bool) -> Vec<TxResult> {
        let opts = SubmitOptions {
            wait: wait.then_some(Duration::from_secs(20)),
            wire: Wire::Json,
        };
        block_on(self.client(i).submit_batch(txs, &opts))
            .unwrap_or_else(|e| panic!("submission to validator {i}: {e}"))
    }

    /// POSTs raw `body` with `content_type` to `path` on validator `i`: the HTTP status
    /// and JSON answer, for tests of the raw HTTP shape.
    pub fn raw_post(
        &self,
        i: usize,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Option<(u16, Value)> {
        let request = self
            .http
            .post(format!("{}{path}", self.url(i)))
            .header("content-type", content_type)
            .body(body);
        block_on(async {
            let resp = request.send().await.ok()?;
            let status = resp.status().as_u16();
            Some((status, resp.json().await.ok()?))
        })
    }

    /// POSTs a JSON submission body to validator `i` (raw HTTP shape).
    pub fn post(&self, i: usize, body: &Value) -> Option<(u16, Value)> {
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.raw_post(i, "/v1/transactions", "application/json", bytes)
    }

    /// A raw GET of `path` on validator `i`, with `method` (raw HTTP shape).
    pub fn raw_request(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
    ) -> Option<(u16, Value)> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.url(i)))
            .timeout(Duration::from_secs(5));
        block_on(async {
            let resp = request.send().await.ok()?;
            let status = resp.status().as_u16();
            Some((status, resp.json().await.ok()?))
        })
    }

    /// A raw GET of `path` on validator `i` (raw HTTP shape).
    pub fn get(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        self.raw_request(i, reqwest::Method::GET, path)
    }

    /// Stops every running validator cleanly, then checks the chain invariants on disk:
    /// every chain is a prefix of the longest, every id in `committed` is in it exactly
    /// once, and `ordo audit` passes on every data directory. Returns the chain's tx ids.
    pub fn stop_and_check(&mut self, committed: &HashSet<TxId>) -> HashSet<TxId> {
        for i in 0..self.net.nodes.len() {
            if self.node(i).is_running() {
                self.stop(i);
            }
        }
        let identity = self.net.genesis.identity();
        let stores: Vec<Store> = self
            .net
            .nodes
            .iter()
            .map(|n| Store::open_read_only(&n.data_dir, &identity).expect("open store"))
            .collect();
        let longest = stores
            .iter()
            .max_by_key(|s| s.tip().height)
            .expect("at least one node");
        for (store, node) in stores.iter().zip(&self.net.nodes) {
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
        let genesis = self.genesis_path();
        for node in &self.net.nodes {
            let (code, out, err) = ordo(&[
                "audit",
                "--data-dir",
                node.data_dir.to_str().expect("utf-8 path"),
                "--genesis",
                genesis.to_str().expect("utf-8 path"),
            ]);
            assert_eq!(code, 0, "audit of {} failed:\n{out}\n{err}", node.name);
        }
        seen.into_keys().collect()
    }

    pub fn genesis_path(&self) -> PathBuf {
        Net::genesis_path(self.dir.path())
    }

    /// The value of an unlabelled sample on validator `i`'s metrics page.
    pub fn metric(&self, i: usize, name: &str) -> Option<u64> {
        let page = block_on(self.client(i).metrics()).ok()?;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.net.nodes.iter().enumerate() {
                eprintln!(
                    "---- {} log (last lines) ----\n{}",
                    node.name,
                    self.log_tail(i)
                );
                if node.is_running() {
                    eprintln!("---- {} status ----\n{:?}", node.name, self.status(i));
                }
            }
            // Keep the logs and data directories for a closer look.
            self.dir.disable_cleanup(true);
            eprintln!("cluster directory kept: {}", self.dir.path().display());
        }
    }
}

/// Ids of the results that say `committed`.
pub fn committed_ids(results: &[TxResult]) -> HashSet<TxId> {
    results
        .iter()
        .filter(|r| r.status == Some(TxState::Committed))
        .filter_map(|r| r.id)
        .collect()
}

/// A key that is not in any genesis.
pub fn outsider() -> ordo_crypto::Keypair {
    ordo_crypto::Keypair::from_label("outsider")
}
