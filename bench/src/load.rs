//! The ordo load: transactions signed (on every core) and encoded before the clock
//! starts; batches sent to the nodes' API (binary or JSON) round-robin, from
//! `--concurrency` workers (closed loop) or on a fixed schedule (`--rate`, open loop:
//! latency counts from the scheduled send time, so a slow cluster cannot hide its
//! queueing); commits confirmed from the first node's binary block stream, which gives
//! each transaction's submit→commit latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_client::api::{RETRY_AFTER_SECS, SubmitRequest, TxResult};
use ordo_client::{Client, ClientError, RetryPolicy, SubmitOptions, TxTemplate, Wire};
use ordo_crypto::Keypair;
use ordo_ledger::TxId;
use serde::Serialize;

use crate::bound::Bound;
use crate::devnet::Devnet;
use crate::report::{Latency, Second, per_second, settle, steady_rate};
use crate::resources::{Usage, dir_bytes, proc_use, usage_since};
use crate::stages::{self, Prechecks, Scrape, Stage};
use crate::{Api, Args, Failure};

/// How long the cluster gets to elect a leader before the run starts.
const LEADER_WAIT: Duration = Duration::from_secs(30);

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Binary => "binary",
            Api::Json => "JSON",
        }
    }

    fn wire(self) -> Wire {
        match self {
            Api::Binary => Wire::Binary,
            Api::Json => Wire::Json,
        }
    }

    fn options(self) -> SubmitOptions {
        SubmitOptions {
            wait: None,
            wire: self.wire(),
        }
    }

    /// The request body of a batch of encoded transactions.
    fn body<'a>(self, txs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        Client::batch_body(txs, &self.options())
    }

    /// The encoded transactions of a body [`Api::body`] made, in order; `None` when it is
    /// not one.
    fn split(self, body: &[u8]) -> Option<Vec<Vec<u8>>> {
        match self {
            Api::Binary => ordo_client::api::BinaryFrames::new(body)
                .map(|f| f.ok().map(<[u8]>::to_vec))
                .collect(),
            Api::Json => {
                let request: SubmitRequest = serde_json::from_slice(body).ok()?;
                request
                    .transactions?
                    .iter()
                    .map(|h| hex::decode(h).ok())
                    .collect()
            }
        }
    }
}

/// Which results of a submission to send again (refused for now: busy, no leader,
/// unavailable), and how many were refused for good (a transaction the cluster already
/// holds is neither: it is, or will be, committed).
fn triage(results: &[TxResult]) -> (Vec<usize>, u64) {
    let mut again = Vec::new();
    let mut rejected = 0;
    for (i, r) in results.iter().enumerate() {
        let Some(code) = r.error.as_ref().map(|e| e.code) else {
            continue;
        };
        if code.is_retryable() {
            again.push(i);
        } else if !code.is_already_held() {
            rejected += 1;
        }
    }
    (again, rejected)
}

/// One node's resource use during the run (devnet only: its processes are local).
#[derive(Debug, Serialize)]
struct NodeUse {
    name: String,
    #[serde(flatten)]
    usage: Usage,
    disk_bytes: u64,
}

/// The result, as printed and as JSON.
#[derive(Debug, Serialize)]
struct BenchResult {
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
    /// Requests refused as a whole with 503 (or unreachable) and sent again.
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

/// `n` transactions of `payload_bytes` from `keys` in turn, signed on every core, with
/// their ids and canonical bytes.
fn sign_all(
    keys: &[Keypair],
    template: &TxTemplate,
    n: usize,
    payload_bytes: usize,
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
                            let mut payload = vec![0xa5u8; payload_bytes];
                            let tag = (i as u64).to_le_bytes();
                            let m = tag.len().min(payload_bytes);
                            payload[..m].copy_from_slice(&tag[..m]);
                            let tx = template.sign(&keys[i % keys.len()], base + i as u64, payload);
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

/// Runs the ordo load on `args`' cluster and reports it.
pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let mut devnet = None;
    let (urls, keys) = if args.devnet {
        let d = Devnet::start(args.dir.clone(), args.validators, args.clients)?;
        let urls = d.net.nodes.iter().map(|n| n.url()).collect::<Vec<_>>();
        let keys = d.keys.clone();
        devnet = Some(d);
        (urls, keys)
    } else {
        let keys = args
            .key
            .iter()
            .map(|k| ordo_crypto::load_key_file(k))
            .collect::<Result<Vec<_>, _>>()
            .context("--key")?;
        (args.node.clone(), keys)
    };
    let result = measure(&args, &urls, &keys, devnet.as_ref()).await;
    if let Some(d) = devnet.as_mut() {
        d.stop().await;
    }
    let mut result = result?;
    // Measured with the cluster stopped (on a shared machine, that is every core).
    let reached = result.steady_tps.max(result.committed_tps);
    result.bound = Bound::measure(&keys, result.validators, reached);
    print(&result);
    settle(
        args.json.as_deref(),
        &result,
        result.committed,
        args.txs,
        "transactions committed",
    )
}

/// The signed load, in batches, and what the follower needs to match commits to them.
struct Load {
    run: Arc<Run>,
    bodies: Arc<Vec<Bytes>>,
    /// The tip when the load was signed: commits are followed from the next block.
    tip: u64,
    validators: usize,
}

async fn prepare(a: &Args, clients: &[Client], keys: &[Keypair]) -> anyhow::Result<Load> {
    // Wait for a leader (a devnet is just starting).
    let status = clients[0]
        .wait_for_leader(LEADER_WAIT)
        .await
        .with_context(|| format!("no leader at {}", clients[0].url()))?;
    // Every validator verifies every transaction: count them from the node's peers.
    let validators = if a.devnet {
        a.validators
    } else {
        (status.peers.len() + 1).max(clients.len())
    };
    eprintln!(
        "signing {} transactions with {} client keys…",
        a.txs,
        keys.len()
    );
    let template = TxTemplate::from_status(&status);
    let signed = sign_all(keys, &template, a.txs, a.payload_bytes);
    let mut batch_of = HashMap::with_capacity(signed.len());
    let mut bodies = Vec::new();
    let mut sizes = Vec::new();
    for (b, chunk) in signed.chunks(a.batch).enumerate() {
        sizes.push(chunk.len());
        for (id, _) in chunk {
            batch_of.insert(*id, b);
        }
        bodies.push(Bytes::from(
            a.api.body(chunk.iter().map(|(_, tx)| tx.as_slice())),
        ));
    }
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
    Ok(Load {
        run,
        bodies: Arc::new(bodies),
        tip: status.tip.height,
        validators,
    })
}

async fn measure(
    a: &Args,
    urls: &[String],
    keys: &[Keypair],
    devnet: Option<&Devnet>,
) -> anyhow::Result<BenchResult> {
    let clients: Vec<Client> = urls
        .iter()
        .map(|u| Client::builder(u).retry(RetryPolicy::none()).build())
        .collect::<Result<_, _>>()?;
    let load = prepare(a, &clients, keys).await?;
    let run = load.run.clone();
    let follower = tokio::spawn(follow(clients[0].clone(), load.tip + 1, run.clone()));
    let pids: Vec<Option<u32>> =
        devnet.map_or_else(Vec::new, |d| d.net.nodes.iter().map(|n| n.pid()).collect());
    let cpu_before: Vec<Option<(f64, u64)>> = pids.iter().map(|p| p.and_then(proc_use)).collect();
    let scrape_before = Scrape::all(&clients).await;
    let start = Instant::now();
    let schedule = a
        .rate
        .map(|r| Duration::from_secs_f64(a.batch as f64 / r as f64));
    let workers: Vec<_> = (0..a.concurrency)
        .map(|w| {
            let worker = Worker {
                index: w,
                run: run.clone(),
                bodies: load.bodies.clone(),
                clients: clients.clone(),
                api: a.api,
                start,
                schedule,
            };
            tokio::spawn(worker.run())
        })
        .collect();
    watch_progress(a, &run, &workers).await;
    let elapsed = start.elapsed();
    follower.abort();
    for w in workers {
        w.abort();
    }
    let scrape_after = Scrape::all(&clients).await;
    let nodes = devnet.map_or_else(Vec::new, |d| {
        d.net
            .nodes
            .iter()
            .zip(pids.iter().zip(&cpu_before))
            .map(|(n, (pid, before))| NodeUse {
                name: n.name.clone(),
                usage: usage_since(*pid, *before, elapsed.as_secs_f64()),
                disk_bytes: dir_bytes(&n.data_dir),
            })
            .collect()
    });
    Ok(summarise(
        a,
        &run,
        load.validators,
        start,
        elapsed,
        nodes,
        &scrape_before,
        &scrape_after,
    ))
}

/// Shows progress until everything not rejected is committed, or commits stall for
/// `--stall-timeout`.
async fn watch_progress(a: &Args, run: &Run, workers: &[tokio::task::JoinHandle<()>]) {
    let bar = ProgressBar::new(a.txs as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} committed [{bar:40}] {pos}/{len}  {per_sec}  {msg}",
        )
        .expect("template"),
    );
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
    bar.finish_and_clear();
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces of one run's result
fn summarise(
    a: &Args,
    run: &Run,
    validators: usize,
    start: Instant,
    elapsed: Duration,
    nodes: Vec<NodeUse>,
    before: &[Option<Scrape>],
    after: &[Option<Scrape>],
) -> BenchResult {
    let mut answered = run.answered_ms.lock().expect("lock").clone();
    answered.sort_by(f64::total_cmp);
    let commits = run.committed_at.lock().expect("lock").clone();
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
    let committed_tps = commits.len() as f64 / elapsed.as_secs_f64();
    let disk_bytes_per_tx = (!nodes.is_empty() && !commits.is_empty()).then(|| {
        nodes.iter().map(|n| n.disk_bytes as f64).sum::<f64>()
            / nodes.len() as f64
            / commits.len() as f64
    });
    BenchResult {
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
        steady_tps: steady_rate(&times, committed_tps),
        latency_ms: Latency::of_sorted(&lat),
        answer_ms: Latency::of_sorted(&answered),
        nodes,
        disk_bytes_per_tx,
        stages: stages::between(before, after),
        prechecks: stages::prechecks_between(before, after),
        seconds: per_second(&commits, start),
        bound: Bound::default(),
    }
}

/// One submitting worker.
struct Worker {
    index: usize,
    run: Arc<Run>,
    bodies: Arc<Vec<Bytes>>,
    clients: Vec<Client>,
    api: Api,
    start: Instant,
    /// Open loop: batch `b` is due at `start + b × schedule`, and its latency counts from
    /// then.
    schedule: Option<Duration>,
}

impl Worker {
    /// Sends batches until none are left.
    async fn run(self) {
        loop {
            let b = self.run.next.fetch_add(1, Ordering::Relaxed);
            if b >= self.bodies.len() {
                return;
            }
            let due = self.schedule.map(|s| self.start + s * b as u32);
            if let Some(due) = due {
                tokio::time::sleep_until(due.into()).await;
            }
            *self.run.sent[b].lock().expect("lock") = Some(due.unwrap_or_else(Instant::now));
            self.send(b).await;
        }
    }

    /// Sends batch `b`: the whole batch first, then only the transactions refused for a
    /// while, pausing as the client's retry policy says between attempts.
    async fn send(&self, b: usize) {
        let client = &self.clients[(b + self.index) % self.clients.len()];
        let policy = RetryPolicy::default();
        let opts = self.api.options();
        let mut body = self.bodies[b].clone();
        let mut attempt = 0;
        loop {
            let sent = Instant::now();
            let pause = match client.submit_encoded(body.clone(), &opts).await {
                Ok(results) => {
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    self.run.answered_ms.lock().expect("lock").push(ms);
                    let Some(rest) = self.refused_for_now(&body, &results) else {
                        return;
                    };
                    body = rest;
                    attempt = 0;
                    // What the node asks of a 503; a 200 that refused some has no header.
                    policy.pause(0, Some(Duration::from_secs(RETRY_AFTER_SECS)))
                }
                Err(e) if e.is_retryable() => {
                    self.run.retried.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    policy.pause(attempt - 1, e.retry_after())
                }
                Err(e) => {
                    self.refused(&body, b, &e);
                    return;
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Counts what `results` rejected for good; the body of the transactions to send again,
    /// if any.
    fn refused_for_now(&self, body: &[u8], results: &[TxResult]) -> Option<Bytes> {
        let (again, rejected) = triage(results);
        self.run.rejected.fetch_add(rejected, Ordering::Relaxed);
        if again.is_empty() {
            return None;
        }
        let Some(txs) = self.api.split(body) else {
            self.run
                .rejected
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            return None;
        };
        self.run
            .resubmitted
            .fetch_add(again.len() as u64, Ordering::Relaxed);
        let rest = again.iter().filter_map(|&i| txs.get(i)).map(Vec::as_slice);
        Some(Bytes::from(self.api.body(rest)))
    }

    /// A batch refused for good as a whole.
    fn refused(&self, body: &[u8], b: usize, e: &ClientError) {
        tracing::warn!(error = %e, "batch refused");
        let n = self.api.split(body).map_or(self.run.sizes[b], |t| t.len());
        self.run.rejected.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Follows the binary block stream from `from`, recording when each of the run's
/// transactions is seen committed.
async fn follow(client: Client, from: u64, run: Arc<Run>) -> anyhow::Result<()> {
    let mut frames = std::pin::pin!(client.block_ids(Some(from)));
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| anyhow!("block stream: {e}"))?;
        let now = Instant::now();
        let done: Vec<(Instant, Duration)> = frame
            .ids
            .iter()
            .filter_map(|id| {
                let b = run.batch_of.get(id)?;
                let sent = (*run.sent[*b].lock().expect("lock"))?;
                Some((now, now.saturating_duration_since(sent)))
            })
            .collect();
        run.committed_at.lock().expect("lock").extend(done);
    }
    Ok(())
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
    println!("latency       {}", r.latency_ms.line());
    println!(
        "answer        {} (submission to the node's answer)",
        r.answer_ms.line()
    );
    print_seconds(r);
    for n in &r.nodes {
        println!(
            "{:<13} cpu {:.2} cores  peak rss {:.1} MiB  disk {:.1} MiB",
            n.name,
            n.usage.cpu_cores,
            n.usage.peak_rss_bytes as f64 / 1048576.0,
            n.disk_bytes as f64 / 1048576.0
        );
    }
    if let Some(d) = r.disk_bytes_per_tx {
        println!("disk          {d:.0} bytes per transaction per validator");
    }
    stages::print(&r.stages);
    stages::print_prechecks(
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

/// The worst second, and how many seconds stayed calm.
fn print_seconds(r: &BenchResult) {
    if r.seconds.len() < 2 {
        return;
    }
    let Some(worst) = r
        .seconds
        .iter()
        .max_by(|a, b| a.max_ms.total_cmp(&b.max_ms))
    else {
        return;
    };
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

#[cfg(test)]
mod tests {
    use ordo_client::api::{ErrorBody, ErrorCode};
    use ordo_crypto::Hash;

    use super::*;

    fn txs() -> Vec<Vec<u8>> {
        vec![vec![1, 2, 3], Vec::new(), vec![0xff; 300]]
    }

    #[test]
    fn bodies_split_back_into_their_transactions() {
        for api in [Api::Binary, Api::Json] {
            let body = api.body(txs().iter().map(Vec::as_slice));
            assert_eq!(api.split(&body), Some(txs()), "{api:?}");
        }
        assert_eq!(Api::Binary.split(&[]), Some(Vec::new()));
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
        let id = Hash([1; 32]);
        let refused = |code| TxResult::refused(Some(id), ErrorBody::new(code, ""));
        let results = [
            TxResult::pending(id),
            refused(ErrorCode::Busy),
            refused(ErrorCode::BadSignature),
            refused(ErrorCode::NoLeader),
            refused(ErrorCode::AlreadyPending),
            refused(ErrorCode::Unavailable),
            refused(ErrorCode::AlreadyCommitted),
            refused(ErrorCode::Expired),
        ];
        assert_eq!(triage(&results), (vec![1, 3, 5], 2));
        assert_eq!(triage(&[]), (Vec::new(), 0));
    }
}
