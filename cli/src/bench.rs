//! `ordo bench`: a load generator for any ordo cluster, or for one it starts itself.
//!
//! Transactions are signed (on every core) and encoded before the clock starts. Batches go
//! to the nodes' API (binary or JSON, `--api`) round-robin, from `--concurrency` workers
//! (closed loop) or on a fixed schedule (`--rate`, open loop: latency counts from the
//! scheduled send time, so a slow cluster cannot hide its queueing). Commits are confirmed from one node's block
//! stream, which gives each transaction's submit→commit latency.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_crypto::{BatchVerifier, Keypair, load_key_file};
use ordo_ledger::{Transaction, TxId};
use ordo_node::api;
use serde::Serialize;
use serde_json::Value;

use crate::bench_etcd;
use crate::bench_stages::{self, Prechecks, Scrape, Stage};
use crate::client::{ApiFailure, Client};
use crate::devnet;
use crate::{CmdResult, Failure};

/// Pause before re-sending a batch when the node gave no Retry-After (it was unreachable).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Pause before re-sending the transactions of an answer that refused them one by one
/// (busy, no leader): an answer that carries accepted transactions too has no Retry-After.
const RESUBMIT_PAUSE: Duration = Duration::from_secs(1);

/// Shortest span of commits from which a steady-state rate is computed, in seconds.
const STEADY_WINDOW_MIN: f64 = 1.0;

#[derive(Args)]
pub struct BenchArgs {
    /// Start a local devnet (separate validator processes on loopback) and measure it.
    #[arg(long, conflicts_with = "node")]
    devnet: bool,
    /// Validators of the devnet.
    #[arg(long, default_value_t = 3, value_name = "N")]
    validators: usize,
    /// Keep the devnet's directory here (default: a temporary directory, removed after).
    #[arg(long, value_name = "DIR", requires = "devnet")]
    dir: Option<PathBuf>,
    /// API URL of a node to load (repeat for several; batches are spread over all).
    #[arg(long, value_name = "URL", required_unless_present_any = ["devnet", "etcd"])]
    node: Vec<String>,
    /// Client key files permitted in the cluster's genesis (repeat for several).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["devnet", "etcd"])]
    key: Vec<PathBuf>,
    /// Client keys to create for the devnet's genesis (signers of the load). Batch
    /// verification is cheaper when many signatures share a key, so fewer keys make
    /// signatures cheaper to check and the verification bound higher.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    clients: usize,
    /// Transactions to submit.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    txs: usize,
    /// Payload bytes per transaction.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    payload_bytes: usize,
    /// Transactions per HTTP request.
    #[arg(long, default_value_t = 500, value_name = "N")]
    batch: usize,
    /// How batches are sent: `binary` (length-prefixed canonical transactions) or `json`
    /// (hex strings in JSON). Both go to `POST /v1/transactions`.
    #[arg(long, value_enum, default_value_t = Api::Binary)]
    api: Api,
    /// Requests in flight at once (closed loop).
    #[arg(long, default_value_t = 8, value_name = "N")]
    concurrency: usize,
    /// Offered load in transactions per second (open loop); without it, closed loop.
    #[arg(long, value_name = "TPS")]
    rate: Option<u64>,
    /// Give up waiting for commits after this many seconds without progress.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    stall_timeout: u64,
    /// Write the result as JSON to this file ('-' for stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Load an etcd cluster instead, at this client URL (repeat for every member): the same
    /// workload as puts, `--batch` puts per transaction (see bench/README.md).
    #[arg(long, value_name = "URL", conflicts_with_all = ["devnet", "node", "key", "rate"])]
    etcd: Vec<String>,
    /// PID of a local etcd member, to report its CPU and peak RSS (repeat for several).
    #[arg(
        long,
        value_name = "PID",
        requires = "etcd",
        conflicts_with_all = ["devnet", "node", "key"]
    )]
    etcd_pid: Vec<u32>,
}

/// How `ordo bench` submits batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `application/octet-stream`: each transaction as a little-endian u32 length and its
    /// canonical bytes.
    Binary,
    /// `application/json`: `{"transactions": ["<hex>", …]}`.
    Json,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Binary => "binary",
            Api::Json => "JSON",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Api::Binary => "application/octet-stream",
            Api::Json => "application/json",
        }
    }

    /// The request body for a batch of encoded transactions.
    fn body<'a>(self, txs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        match self {
            Api::Binary => {
                let mut body = Vec::new();
                for tx in txs {
                    let len = u32::try_from(tx.len()).expect("a transaction is under 4 GiB");
                    body.extend_from_slice(&len.to_le_bytes());
                    body.extend_from_slice(tx);
                }
                body
            }
            Api::Json => {
                let hexes: Vec<String> = txs.into_iter().map(hex::encode).collect();
                serde_json::to_vec(&serde_json::json!({ "transactions": hexes }))
                    .expect("JSON of strings")
            }
        }
    }

    /// The encoded transactions of a body [`Api::body`] made, in order; `None` when it is
    /// not one.
    fn split(self, body: &[u8]) -> Option<Vec<Vec<u8>>> {
        match self {
            Api::Binary => {
                let mut txs = Vec::new();
                let mut rest = body;
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
                    let (tx, tail) = tail.split_at_checked(len)?;
                    txs.push(tx.to_vec());
                    rest = tail;
                }
                rest.is_empty().then_some(txs)
            }
            Api::Json => {
                let v: Value = serde_json::from_slice(body).ok()?;
                v["transactions"]
                    .as_array()?
                    .iter()
                    .map(|h| hex::decode(h.as_str()?).ok())
                    .collect()
            }
        }
    }
}

/// Per-transaction error codes that ask the client to come back later (the node was busy,
/// or had no leader to forward to): `ordo bench` submits those transactions again.
const RETRYABLE: [&str; 3] = ["busy", "no_leader", "unavailable"];

/// Per-transaction error codes that say the cluster already holds the transaction: it
/// will be (or was) committed, so it is not counted as rejected.
const ALREADY_HELD: [&str; 2] = ["already_pending", "already_committed"];

/// Which results of a submission to send again, and how many were rejected for good.
fn triage(answer: &Value) -> (Vec<usize>, u64) {
    let mut again = Vec::new();
    let mut rejected = 0;
    for (i, r) in answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(code) = r
            .get("error")
            .map(|e| e["code"].as_str().unwrap_or_default())
        else {
            continue;
        };
        if RETRYABLE.contains(&code) {
            again.push(i);
        } else if !ALREADY_HELD.contains(&code) {
            rejected += 1;
        }
    }
    (again, rejected)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Latency {
    /// Percentiles of `sorted` (ascending milliseconds); zeros when it is empty.
    pub(crate) fn of_sorted(sorted: &[f64]) -> Latency {
        Latency {
            p50: percentile(sorted, 0.5),
            p95: percentile(sorted, 0.95),
            p99: percentile(sorted, 0.99),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// One node's resource use during the run (devnet only: its processes are local).
#[derive(Debug, Serialize)]
pub struct NodeUse {
    name: String,
    cpu_cores: f64,
    peak_rss_bytes: u64,
    disk_bytes: u64,
}

/// The verification bound: what signature checking allows on this machine.
#[derive(Debug, Serialize)]
pub struct Bound {
    /// Signatures per second per core, every core checking at once: the bound's rate.
    batch_verify_per_core: f64,
    /// Signatures per second of one core checking alone.
    batch_verify_one_core: f64,
    cores: usize,
    validators: usize,
    bound_tps: f64,
    fraction: f64,
}

impl Bound {
    fn new(alone: f64, per_core: f64, validators: usize, reached_tps: f64) -> Bound {
        let cores = ordo_crypto::cores();
        let bound_tps = per_core * cores as f64 / validators.max(1) as f64;
        Bound {
            batch_verify_per_core: per_core,
            batch_verify_one_core: alone,
            cores,
            validators,
            bound_tps,
            fraction: if bound_tps > 0.0 {
                reached_tps / bound_tps
            } else {
                0.0
            },
        }
    }
}

/// Commits and their latency in one second of the run.
#[derive(Debug, Serialize)]
pub struct Second {
    /// Seconds since the start (the commits seen in `[t, t + 1)`).
    t: u64,
    committed: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Groups `(commit time, latency)` pairs by second since `start`.
fn per_second(commits: &[(Instant, Duration)], start: Instant) -> Vec<Second> {
    let mut by: std::collections::BTreeMap<u64, Vec<f64>> = std::collections::BTreeMap::new();
    for (at, latency) in commits {
        by.entry(at.saturating_duration_since(start).as_secs())
            .or_default()
            .push(latency.as_secs_f64() * 1000.0);
    }
    by.into_iter()
        .map(|(t, mut lat)| {
            lat.sort_by(f64::total_cmp);
            Second {
                t,
                committed: lat.len(),
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
                max_ms: lat.last().copied().unwrap_or(0.0),
            }
        })
        .collect()
}

/// The result, as printed and as JSON.
#[derive(Debug, Serialize)]
pub struct BenchResult {
    mode: &'static str,
    validators: usize,
    txs: usize,
    payload_bytes: usize,
    api: Api,
    batch: usize,
    concurrency: usize,
    offered_tps: Option<u64>,
    committed: usize,
    rejected: u64,
    /// Requests refused as a whole with 503 and sent again.
    retried: u64,
    /// Transactions refused one by one as retryable (busy, no leader) and sent again.
    resubmitted: u64,
    elapsed_s: f64,
    committed_tps: f64,
    steady_tps: f64,
    latency_ms: Latency,
    /// How long a node took to answer an accepted submission (admission, and forwarding to
    /// the leader when the node follows): the part of the latency before ordering.
    answer_ms: Latency,
    nodes: Vec<NodeUse>,
    disk_bytes_per_tx: Option<f64>,
    stages: Vec<Stage>,
    /// Signatures the followers checked ahead of their blocks.
    prechecks: Prechecks,
    /// Latency second by second (by commit time): a stall shows as a bad second.
    seconds: Vec<Second>,
    bound: Bound,
}

/// What the run shares between workers and the block follower.
struct Run {
    /// For each batch: when it was (or was scheduled to be) sent.
    sent: Vec<Mutex<Option<Instant>>>,
    /// Which batch each transaction is in.
    batch_of: HashMap<TxId, usize>,
    /// Transactions in each batch.
    sizes: Vec<usize>,
    committed_at: Mutex<Vec<(Instant, Duration)>>,
    /// Milliseconds each answered submission took, from its send.
    answered_ms: Mutex<Vec<f64>>,
    rejected: AtomicU64,
    retried: AtomicU64,
    resubmitted: AtomicU64,
    next: AtomicUsize,
}

fn sign_all(
    keys: &[Keypair],
    chain_id: &str,
    n: usize,
    payload_bytes: usize,
    expires_at: u64,
) -> Vec<(TxId, Vec<u8>)> {
    let cores = ordo_crypto::cores();
    let per = n.div_ceil(cores).max(1);
    let base: u64 = rand::random::<u64>() >> 1;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + per).min(n))
                        .map(|i| {
                            let key = &keys[i % keys.len()];
                            let mut payload = vec![0xa5u8; payload_bytes];
                            let tag = (i as u64).to_le_bytes();
                            let m = tag.len().min(payload_bytes);
                            payload[..m].copy_from_slice(&tag[..m]);
                            let tx = Transaction {
                                chain_id: chain_id.to_owned(),
                                sender: key.public(),
                                nonce: base + i as u64,
                                expires_at,
                                payload,
                            }
                            .sign(key);
                            (tx.id(), tx.to_bytes())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signing thread"))
            .collect()
    })
}

/// Batch-verify rates for signatures from `keys.len()` signers, in signatures per second
/// per core: one core checking alone, and each core while every core checks at once (the
/// machine's real capacity when cores share caches, memory bandwidth or a clock budget).
fn batch_verify_rates(keys: &[Keypair]) -> (f64, f64) {
    let msgs: Vec<[u8; 32]> = (0..1024u32)
        .map(|i| {
            let mut m = [0u8; 32];
            m[..4].copy_from_slice(&i.to_le_bytes());
            m
        })
        .collect();
    let sigs: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (keys[i % keys.len()].public(), keys[i % keys.len()].sign(m)))
        .collect();
    let rate = || batch_verify_rate(&sigs, &msgs);
    let alone = rate();
    let cores = ordo_crypto::cores();
    let together: f64 = std::thread::scope(|s| {
        let all: Vec<_> = (0..cores).map(|_| s.spawn(rate)).collect();
        all.into_iter()
            .map(|t| t.join().expect("a verify thread"))
            .sum()
    });
    (alone, together / cores as f64)
}

/// One thread's batch-verify rate over `sigs`: the median of five half-second rounds of
/// 1,024-signature batches (one round can be disturbed by whatever else the machine is
/// doing).
fn batch_verify_rate(
    sigs: &[(ordo_crypto::PublicKey, ordo_crypto::Signature)],
    msgs: &[[u8; 32]],
) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut checked = 0usize;
            while start.elapsed() < Duration::from_millis(500) {
                let mut b = BatchVerifier::with_capacity(sigs.len());
                for ((pk, sig), m) in sigs.iter().zip(msgs) {
                    b.queue(pk, m, sig);
                }
                b.verify().expect("valid signatures");
                checked += sigs.len();
            }
            checked as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

/// Events per second in the steady state: the middle 80 % of `times` (seconds, sorted),
/// when they span at least [`STEADY_WINDOW_MIN`] (commits arrive a block at a time);
/// otherwise `overall`.
pub(crate) fn steady_rate(times: &[f64], overall: f64) -> f64 {
    match (times.len() >= 10).then(|| (percentile(times, 0.1), percentile(times, 0.9))) {
        Some((t10, t90)) if t90 - t10 >= STEADY_WINDOW_MIN => {
            0.8 * times.len() as f64 / (t90 - t10)
        }
        _ => overall,
    }
}

/// Writes a result as pretty JSON to `path` (`-` for stdout).
pub(crate) fn write_json(path: &std::path::Path, value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encode result")?;
    if path.as_os_str() == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Writes the result to `json` when asked, and fails the command when fewer than
/// `expected` writes were `done` (`what`: "transactions committed", "puts acknowledged").
pub(crate) fn settle(
    json: Option<&std::path::Path>,
    result: &impl Serialize,
    done: usize,
    expected: usize,
    what: &str,
) -> CmdResult {
    if let Some(path) = json {
        write_json(path, result)?;
    }
    if done < expected {
        return Err(Failure::Negative(format!(
            "only {done} of {expected} {what}"
        )));
    }
    Ok(())
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// CPU seconds (user + system) and peak RSS of a local process, from /proc.
pub(crate) fn proc_use(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    // Linux reports CPU time in clock ticks of 1/100 s on every common configuration.
    Some((ticks / 100.0, hwm_kb * 1024))
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn run(a: BenchArgs) -> CmdResult {
    if a.txs == 0 || a.batch == 0 || a.concurrency == 0 {
        return Err(Failure::Usage(anyhow!(
            "--txs, --batch and --concurrency must be at least 1"
        )));
    }
    if !a.etcd.is_empty() {
        return bench_etcd::run(bench_etcd::EtcdLoad {
            urls: a.etcd,
            pids: a.etcd_pid,
            puts: a.txs,
            payload_bytes: a.payload_bytes,
            batch: a.batch,
            concurrency: a.concurrency,
            timeout: Duration::from_secs(a.stall_timeout),
            json: a.json,
        });
    }
    crate::client::block_on(async move {
        let tmp;
        let mut devnet_nodes = Vec::new();
        let (urls, keys) = if a.devnet {
            let dir = match &a.dir {
                Some(d) => d.clone(),
                None => {
                    tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
                    tmp.path().join("devnet")
                }
            };
            let layout = devnet::Layout { dir };
            if !layout.genesis_path().exists() {
                devnet::create(&layout, a.validators, "bench", a.clients)?;
            }
            devnet_nodes = devnet::nodes(&layout)?;
            for n in &mut devnet_nodes {
                devnet::spawn(n)?;
            }
            let keys = (0..a.clients.max(1))
                .map(|i| load_key_file(&layout.client_key_n(i)))
                .collect::<Result<Vec<_>, _>>()?;
            (
                devnet_nodes
                    .iter()
                    .map(|n| format!("http://{}", n.api))
                    .collect::<Vec<_>>(),
                keys,
            )
        } else {
            let keys = a
                .key
                .iter()
                .map(|k| load_key_file(k))
                .collect::<Result<Vec<_>, _>>()?;
            (a.node.clone(), keys)
        };
        let result = measure(&a, &urls, &keys, &mut devnet_nodes).await;
        devnet::stop_all(&mut devnet_nodes).await;
        let mut result = result?;
        // Measured with the cluster stopped (on a shared machine, that is every core).
        let (alone, per_core) = batch_verify_rates(&keys);
        result.bound = Bound::new(
            alone,
            per_core,
            result.validators,
            result.steady_tps.max(result.committed_tps),
        );
        print(&result);
        settle(
            a.json.as_deref(),
            &result,
            result.committed,
            a.txs,
            "transactions committed",
        )
    })
}

async fn measure(
    a: &BenchArgs,
    urls: &[String],
    keys: &[Keypair],
    devnet_nodes: &mut [devnet::Node],
) -> anyhow::Result<BenchResult> {
    let clients: Vec<Client> = urls
        .iter()
        .map(|u| Client::new(u))
        .collect::<Result<_, _>>()?;
    // Wait for a leader (a devnet is just starting).
    let give_up = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(st) = clients[0].status().await
            && st["leader"]["name"].is_string()
        {
            break st;
        }
        if Instant::now() > give_up {
            bail!("no leader after 30 s at {}", urls[0]);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let chain_id = status["chain_id"].as_str().unwrap_or_default().to_owned();
    let tip = status["tip"]["height"].as_u64().unwrap_or(0);
    let lifetime = status["limits"]["tx_lifetime_blocks"].as_u64().unwrap_or(1);
    // Every validator verifies every transaction: count them from the node's peers.
    let peers = status["peers"].as_array().map_or(0, Vec::len);
    let validators = if a.devnet {
        a.validators
    } else {
        (peers + 1).max(urls.len())
    };

    eprintln!(
        "signing {} transactions with {} client keys…",
        a.txs,
        keys.len()
    );
    let signed = sign_all(keys, &chain_id, a.txs, a.payload_bytes, tip + lifetime);
    let mut batch_of = HashMap::with_capacity(signed.len());
    let mut bodies = Vec::new();
    let mut sizes = Vec::new();
    for (b, chunk) in signed.chunks(a.batch).enumerate() {
        sizes.push(chunk.len());
        for (id, _) in chunk {
            batch_of.insert(*id, b);
        }
        bodies.push(a.api.body(chunk.iter().map(|(_, tx)| tx.as_slice())));
    }
    drop(signed);
    let run = Arc::new(Run {
        sent: (0..bodies.len()).map(|_| Mutex::new(None)).collect(),
        batch_of,
        sizes,
        committed_at: Mutex::new(Vec::with_capacity(a.txs)),
        answered_ms: Mutex::new(Vec::with_capacity(a.txs / a.batch + 1)),
        rejected: AtomicU64::new(0),
        retried: AtomicU64::new(0),
        resubmitted: AtomicU64::new(0),
        next: AtomicUsize::new(0),
    });
    let bodies = Arc::new(bodies);

    // Follow commits on the first node.
    let follower = {
        let run = run.clone();
        let url = format!(
            "{}/v1/blocks/stream?from={}",
            urls[0].trim_end_matches('/'),
            tip + 1
        );
        tokio::spawn(async move { follow(url, run).await })
    };
    let cpu_before: Vec<Option<(f64, u64)>> = devnet_nodes
        .iter()
        .map(|n| n.child.as_ref().and_then(|c| c.id()).and_then(proc_use))
        .collect();

    let scrape_before = Scrape::all(&clients).await;
    let bar = ProgressBar::new(a.txs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} committed [{bar:40}] {pos}/{len}  {per_sec}  {msg}",
        )
        .expect("template"),
    );
    let start = Instant::now();
    let workers: Vec<_> = (0..a.concurrency)
        .map(|w| {
            let run = run.clone();
            let bodies = bodies.clone();
            let clients = clients.clone();
            let api = a.api;
            let schedule = a
                .rate
                .map(|r| Duration::from_secs_f64(a.batch as f64 / r as f64));
            tokio::spawn(async move {
                submit_worker(w, run, bodies, clients, api, start, schedule).await
            })
        })
        .collect();

    // Wait until everything accepted is committed, or progress stalls.
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = run.committed_at.lock().expect("lock").len();
        bar.set_position(done as u64);
        bar.set_message(format!(
            "rejected {}  retried {}  resubmitted {}",
            run.rejected.load(Ordering::Relaxed),
            run.retried.load(Ordering::Relaxed),
            run.resubmitted.load(Ordering::Relaxed)
        ));
        let submitted_all = workers.iter().all(tokio::task::JoinHandle::is_finished);
        let expected = a.txs - run.rejected.load(Ordering::Relaxed) as usize;
        if submitted_all && done >= expected {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(a.stall_timeout) {
            eprintln!("no commits for {} s; stopping", a.stall_timeout);
            break;
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    follower.abort();
    for w in workers {
        w.abort();
    }

    let scrape_after = Scrape::all(&clients).await;
    let stages = bench_stages::between(&scrape_before, &scrape_after);
    let prechecks = bench_stages::prechecks_between(&scrape_before, &scrape_after);
    let mut answered = run.answered_ms.lock().expect("lock").clone();
    answered.sort_by(f64::total_cmp);
    let commits = run.committed_at.lock().expect("lock").clone();
    let seconds = per_second(&commits, start);
    let mut lat: Vec<f64> = commits
        .iter()
        .map(|(_, l)| l.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut times: Vec<f64> = commits
        .iter()
        .map(|(t, _)| t.duration_since(start).as_secs_f64())
        .collect();
    times.sort_by(f64::total_cmp);
    // Steady state: the middle 80 % of commits, when they span long enough to mean
    // something (commits arrive a block at a time); otherwise the overall rate.
    let overall_tps = commits.len() as f64 / elapsed.as_secs_f64();
    let steady_tps = steady_rate(&times, overall_tps);
    let nodes: Vec<NodeUse> = devnet_nodes
        .iter()
        .zip(&cpu_before)
        .map(|(n, before)| {
            let now = n.child.as_ref().and_then(|c| c.id()).and_then(proc_use);
            let cpu = match (before, now) {
                (Some((b, _)), Some((e, _))) => (e - b) / elapsed.as_secs_f64(),
                _ => 0.0,
            };
            NodeUse {
                name: n.name.clone(),
                cpu_cores: cpu,
                peak_rss_bytes: now.map_or(0, |(_, rss)| rss),
                disk_bytes: dir_bytes(&n.data_dir),
            }
        })
        .collect();
    let disk_bytes_per_tx = (!nodes.is_empty() && !commits.is_empty()).then(|| {
        nodes.iter().map(|n| n.disk_bytes as f64).sum::<f64>()
            / nodes.len() as f64
            / commits.len() as f64
    });
    let committed_tps = overall_tps;
    Ok(BenchResult {
        mode: if a.rate.is_some() { "open" } else { "closed" },
        validators,
        txs: a.txs,
        payload_bytes: a.payload_bytes,
        api: a.api,
        batch: a.batch,
        concurrency: a.concurrency,
        offered_tps: a.rate,
        committed: commits.len(),
        rejected: run.rejected.load(Ordering::Relaxed),
        retried: run.retried.load(Ordering::Relaxed),
        resubmitted: run.resubmitted.load(Ordering::Relaxed),
        elapsed_s: elapsed.as_secs_f64(),
        committed_tps,
        steady_tps,
        latency_ms: Latency::of_sorted(&lat),
        answer_ms: Latency::of_sorted(&answered),
        nodes,
        disk_bytes_per_tx,
        stages,
        prechecks,
        seconds,
        bound: Bound::new(0.0, 0.0, validators, 0.0),
    })
}

/// Sends batches until none are left. In open loop, batch `b` is due at `start + b ×
/// schedule` and its latency counts from then.
async fn submit_worker(
    w: usize,
    run: Arc<Run>,
    bodies: Arc<Vec<Vec<u8>>>,
    clients: Vec<Client>,
    api: Api,
    start: Instant,
    schedule: Option<Duration>,
) {
    loop {
        let b = run.next.fetch_add(1, Ordering::Relaxed);
        if b >= bodies.len() {
            return;
        }
        let due = schedule.map(|s| start + s * b as u32);
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        *run.sent[b].lock().expect("lock") = Some(due.unwrap_or_else(Instant::now));
        let client = &clients[(b + w) % clients.len()];
        // The whole batch first; then only the transactions refused for a while.
        let mut resend: Option<Vec<u8>> = None;
        loop {
            let sent = Instant::now();
            let body = resend.clone().unwrap_or_else(|| bodies[b].clone());
            let pause = match client
                .post_raw("/v1/transactions", api.content_type(), body)
                .await
            {
                Ok((_, v)) => {
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    run.answered_ms.lock().expect("lock").push(ms);
                    let (again, rejected) = triage(&v);
                    run.rejected.fetch_add(rejected, Ordering::Relaxed);
                    if again.is_empty() {
                        break;
                    }
                    let Some(txs) = api.split(resend.as_ref().unwrap_or(&bodies[b])) else {
                        run.rejected
                            .fetch_add(again.len() as u64, Ordering::Relaxed);
                        break;
                    };
                    run.resubmitted
                        .fetch_add(again.len() as u64, Ordering::Relaxed);
                    resend =
                        Some(api.body(again.iter().filter_map(|&i| txs.get(i)).map(Vec::as_slice)));
                    RESUBMIT_PAUSE
                }
                Err(e @ (ApiFailure::Api { status: 503, .. } | ApiFailure::Transport(_))) => {
                    run.retried.fetch_add(1, Ordering::Relaxed);
                    match e {
                        ApiFailure::Api {
                            retry_after: Some(d),
                            ..
                        } => d,
                        _ => RETRY_PAUSE,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "batch refused");
                    let refused = resend
                        .as_ref()
                        .and_then(|body| api.split(body))
                        .map_or(run.sizes[b], |txs| txs.len());
                    run.rejected.fetch_add(refused as u64, Ordering::Relaxed);
                    break;
                }
            };
            // As the node asks (Retry-After), with jitter so that refused workers do not
            // all come back at once.
            tokio::time::sleep(pause.mul_f64(0.5 + rand::random::<f64>())).await;
        }
    }
}

/// Follows the binary block stream at `url` (`docs/api.md`), recording when each of the
/// run's transactions is seen committed.
async fn follow(url: String, run: Arc<Run>) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .get(&url)
        .header(reqwest::header::ACCEPT, api::BINARY_STREAM)
        .send()
        .await
        .context("block stream")?
        .error_for_status()
        .context("block stream")?;
    let mut body = resp.bytes_stream();
    let mut frames = StreamFrames::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("block stream")?;
        let now = Instant::now();
        let mut done = Vec::new();
        frames.feed(&chunk, |ids| {
            for id in ids.chunks_exact(32) {
                let id = ordo_crypto::Hash(id.try_into().expect("32 bytes"));
                let Some(b) = run.batch_of.get(&id) else {
                    continue;
                };
                if let Some(sent) = *run.sent[*b].lock().expect("lock") {
                    done.push((now, now.saturating_duration_since(sent)));
                }
            }
        })?;
        run.committed_at.lock().expect("lock").extend(done);
    }
    Ok(())
}

/// Splits the binary block stream into frames as its bytes arrive in chunks.
#[derive(Default)]
struct StreamFrames {
    buf: Vec<u8>,
}

impl StreamFrames {
    /// Most transaction ids a frame may claim: far above any block's limit, and a bound
    /// on what a bad stream can make this buffer.
    const IDS_MAX: usize = 1 << 20;

    /// Adds `chunk` and hands each complete frame's ids (32 bytes each) to `ids`.
    fn feed(&mut self, chunk: &[u8], mut ids: impl FnMut(&[u8])) -> anyhow::Result<()> {
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        while let Some(head) = self.buf.get(at..at + api::STREAM_FRAME_HEAD) {
            let n = u32::from_le_bytes(head[40..44].try_into().expect("4 bytes")) as usize;
            if n > Self::IDS_MAX {
                bail!("block stream frame claims {n} transactions");
            }
            let end = at + api::STREAM_FRAME_HEAD + 32 * n;
            let Some(frame) = self.buf.get(at + api::STREAM_FRAME_HEAD..end) else {
                break;
            };
            ids(frame);
            at = end;
        }
        self.buf.drain(..at);
        Ok(())
    }
}

fn print(r: &BenchResult) {
    println!(
        "ordo bench: {} loop, {} validators, {} txs of {} B, {} batches of {}, concurrency {}{}",
        r.mode,
        r.validators,
        r.txs,
        r.payload_bytes,
        r.api.name(),
        r.batch,
        r.concurrency,
        r.offered_tps
            .map_or(String::new(), |t| format!(", offered {t} tx/s"))
    );
    println!(
        "committed     {} in {:.2} s ({} rejected, {} retried requests, {} resubmitted txs)",
        r.committed, r.elapsed_s, r.rejected, r.retried, r.resubmitted
    );
    println!(
        "throughput    {:.0} tx/s overall, {:.0} tx/s steady (middle 80 % of commits over ≥ 1 s)",
        r.committed_tps, r.steady_tps
    );
    println!(
        "latency       p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
    );
    println!(
        "answer        p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms (submission to the node's answer)",
        r.answer_ms.p50, r.answer_ms.p95, r.answer_ms.p99, r.answer_ms.max
    );
    if r.seconds.len() > 1
        && let Some(worst) = r
            .seconds
            .iter()
            .max_by(|a, b| a.max_ms.total_cmp(&b.max_ms))
    {
        let calm = r
            .seconds
            .iter()
            .filter(|s| s.max_ms <= 2.0 * r.latency_ms.p50)
            .count();
        println!(
            "by second     worst at {} s: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; {} of {} seconds with max ≤ 2 × p50",
            worst.t,
            worst.p50_ms,
            worst.p99_ms,
            worst.max_ms,
            calm,
            r.seconds.len()
        );
    }
    for n in &r.nodes {
        println!(
            "{:<13} cpu {:.2} cores  peak rss {:.1} MiB  disk {:.1} MiB",
            n.name,
            n.cpu_cores,
            n.peak_rss_bytes as f64 / 1048576.0,
            n.disk_bytes as f64 / 1048576.0
        );
    }
    if let Some(d) = r.disk_bytes_per_tx {
        println!("disk          {d:.0} bytes per transaction per validator");
    }
    bench_stages::print(&r.stages);
    bench_stages::print_prechecks(
        &r.prechecks,
        r.committed as u64 * r.validators.saturating_sub(1) as u64,
    );
    println!(
        "bound         {:.0} sig/s per core × {} cores ÷ {} validators = {:.0} tx/s; reached {:.0} %",
        r.bound.batch_verify_per_core,
        r.bound.cores,
        r.bound.validators,
        r.bound.bound_tps,
        r.bound.fraction * 100.0
    );
    println!(
        "              (per core with every core checking; one core alone: {:.0} sig/s)",
        r.bound.batch_verify_one_core
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_stream_frames_split_across_chunks() {
        let id = |n: u8| ordo_crypto::Hash([n; 32]);
        let mut bytes = api::stream_frame(7, &id(0), &[id(1), id(2)]);
        bytes.extend(api::stream_frame(8, &id(3), &[]));
        bytes.extend(api::stream_frame(9, &id(4), &[id(5)]));
        // Any split of the bytes into two chunks gives the same frames.
        for cut in 0..=bytes.len() {
            let mut frames = StreamFrames::default();
            let mut seen = Vec::new();
            for chunk in [&bytes[..cut], &bytes[cut..]] {
                frames
                    .feed(chunk, |ids| seen.push(ids.to_vec()))
                    .expect("well-formed");
            }
            let want: Vec<Vec<u8>> = vec![[[1; 32], [2; 32]].concat(), Vec::new(), vec![5; 32]];
            assert_eq!(seen, want, "cut at {cut}");
            assert!(frames.buf.is_empty());
        }
        // A frame that claims more ids than any block holds ends the stream.
        let mut bad = api::stream_frame(1, &id(0), &[]);
        bad[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(StreamFrames::default().feed(&bad, |_| {}).is_err());
    }

    fn txs() -> Vec<Vec<u8>> {
        vec![vec![1, 2, 3], Vec::new(), vec![0xff; 300]]
    }

    #[test]
    fn bodies_split_back_into_their_transactions() {
        for api in [Api::Binary, Api::Json] {
            let body = api.body(txs().iter().map(Vec::as_slice));
            assert_eq!(api.split(&body), Some(txs()), "{api:?}");
            let none = api.body(std::iter::empty());
            assert_eq!(api.split(&none), Some(Vec::new()), "{api:?}");
        }
    }

    #[test]
    fn a_body_that_is_not_one_does_not_split() {
        let mut cut = Api::Binary.body(txs().iter().map(Vec::as_slice));
        cut.pop();
        assert_eq!(Api::Binary.split(&cut), None);
        assert_eq!(Api::Binary.split(&[1, 0]), None);
        assert_eq!(Api::Json.split(br#"{"transactions": ["zz"]}"#), None);
        assert_eq!(Api::Json.split(b"not json"), None);
    }

    #[test]
    fn busy_and_leaderless_refusals_are_sent_again_others_rejected() {
        let answer = serde_json::json!({ "results": [
            { "id": "a", "status": "pending" },
            { "id": "b", "error": { "code": "busy", "message": "" } },
            { "id": "c", "error": { "code": "bad_signature", "message": "" } },
            { "id": "d", "error": { "code": "no_leader", "message": "" } },
            { "id": "e", "error": { "code": "already_pending", "message": "" } },
            { "id": "f", "error": { "code": "unavailable", "message": "" } },
            { "id": "g", "error": { "code": "already_committed", "message": "" } },
            { "id": "h", "error": { "code": "expired", "message": "" } },
        ]});
        assert_eq!(triage(&answer), (vec![1, 3, 5], 2));
        assert_eq!(triage(&serde_json::json!({})), (Vec::new(), 0));
    }
}
