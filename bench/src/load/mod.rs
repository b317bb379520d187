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

use anyhow::Context;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use ordo_client::api::{SubmitRequest, TxResult};
use ordo_client::{Client, RetryPolicy, SubmitOptions, TxTemplate, Wire};
use ordo_crypto::Keypair;
use ordo_ledger::TxId;

mod result;
mod worker;

use result::{BenchResult, NodeUse, print, summarise};
use worker::{Worker, follow};

use crate::bound::Bound;
use crate::devnet::Devnet;
use crate::report::settle;
use crate::resources::{dir_bytes, proc_use, usage_since};
use crate::stages::Scrape;
use crate::{Api, Args, Failure};

/// How long the cluster gets to elect a leader before the run starts.
const LEADER_WAIT: Duration = Duration::from_secs(30);

impl Api {
    pub(super) fn name(self) -> &'static str {
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

    pub(super) fn options(self) -> SubmitOptions {
        SubmitOptions {
            wait: None,
            wire: self.wire(),
        }
    }

    /// The request body of a batch of encoded transactions.
    pub(super) fn body<'a>(self, txs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        Client::batch_body(txs, &self.options())
    }

    /// The encoded transactions of a body [`Api::body`] made, in order; `None` when it is
    /// not one.
    pub(super) fn split(self, body: &[u8]) -> Option<Vec<Vec<u8>>> {
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
pub(super) fn triage(results: &[TxResult]) -> (Vec<usize>, u64) {
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

/// What the run shares between workers and the block follower.
pub(crate) struct Run {
    /// For each batch: when it was (or was scheduled to be) sent.
    pub(super) sent: Vec<Mutex<Option<Instant>>>,
    /// Which batch each transaction is in.
    pub(super) batch_of: HashMap<TxId, usize>,
    /// Transactions in each batch.
    pub(super) sizes: Vec<usize>,
    pub(super) committed_at: Mutex<Vec<(Instant, Duration)>>,
    /// Milliseconds each answered submission took, from its send.
    pub(super) answered_ms: Mutex<Vec<f64>>,
    pub(super) rejected: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) resubmitted: AtomicU64,
    pub(super) next: AtomicUsize,
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
