//! `--etcd`: ordo's closed-loop write workload, sent to an etcd cluster instead, as a
//! baseline for ordo's own figures (`bench/README.md`).
//!
//! `--batch` puts go in one request (one transaction of puts, or one plain put), as
//! `--batch` ordo transactions go in one submission. etcd answers only after a request is
//! committed by Raft and applied, so an answer acknowledges every put in it. Requests are
//! encoded before the clock starts and sent round-robin over the members by
//! `--concurrency` workers; a request's latency is the time until its answer. Two ways in:
//! etcd's native gRPC API ([`grpc`], the default) and its JSON gateway ([`json`]), which
//! costs etcd CPU to translate.

mod grpc;
mod json;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::EtcdApi;
use crate::report::{Latency, steady_rate};
use crate::resources::{Usage, proc_use, usage_since};

/// Pause before re-sending a request that etcd refused for load or that could not connect.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for every member to report healthy before the run starts.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// The workload, from the command line.
pub(crate) struct EtcdLoad {
    /// Client URLs of the members (`http://host:port`).
    pub(crate) urls: Vec<String>,
    /// Which API to send through.
    pub(crate) api: EtcdApi,
    /// Local member processes whose CPU and memory to report.
    pub(crate) pids: Vec<u32>,
    pub(crate) puts: usize,
    pub(crate) payload_bytes: usize,
    /// Puts per request (one put, or a transaction of several).
    pub(crate) batch: usize,
    /// Requests in flight.
    pub(crate) concurrency: usize,
    /// Per-request timeout, how long a refused request is retried, and how long the run
    /// goes on without any acknowledgement.
    pub(crate) timeout: Duration,
}

/// One member's resource use during the run.
#[derive(Debug, Serialize)]
struct MemberUse {
    pid: u32,
    #[serde(flatten)]
    usage: Usage,
}

/// The result, as printed and as JSON; field names follow ordo's bench result.
#[derive(Debug, Serialize)]
pub(crate) struct EtcdResult {
    /// Always "etcd": which system was measured.
    system: &'static str,
    /// "grpc" or "json": which of etcd's APIs the load went through.
    api: EtcdApi,
    mode: &'static str,
    members: usize,
    /// Puts requested.
    txs: usize,
    payload_bytes: usize,
    batch: usize,
    concurrency: usize,
    /// "put" (one per request) or "txn" (`batch` puts per request).
    request: &'static str,
    /// Puts acknowledged (committed by Raft and applied).
    pub(crate) committed: usize,
    /// Puts in requests that failed for good.
    errors: u64,
    /// Requests re-sent after a refusal for load or a failed connection.
    retried: u64,
    elapsed_s: f64,
    committed_tps: f64,
    steady_tps: f64,
    /// Per request: send to answer.
    latency_ms: Latency,
    nodes: Vec<MemberUse>,
}

/// The key and value of put `i`: a short key unique to this run, and a value filled like an
/// ordo benchmark payload.
fn put_pair(run_tag: u64, i: usize, payload_bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let key = format!("b{run_tag:x}/{i}").into_bytes();
    let mut value = vec![0xa5u8; payload_bytes];
    let tag = (i as u64).to_le_bytes();
    let m = tag.len().min(payload_bytes);
    value[..m].copy_from_slice(&tag[..m]);
    (key, value)
}

/// The workload's puts, `batch` to a request.
fn batches(load: &EtcdLoad) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let run_tag = rand::random::<u32>() as u64;
    (0..load.puts)
        .step_by(load.batch)
        .map(|first| {
            (first..(first + load.batch).min(load.puts))
                .map(|i| put_pair(run_tag, i, load.payload_bytes))
                .collect()
        })
        .collect()
}

/// One encoded request: its path on a member, its body, and how many puts it carries.
struct Request {
    path: &'static str,
    body: bytes::Bytes,
    puts: usize,
}

/// The members' URLs, without trailing slashes.
fn member_urls(load: &EtcdLoad) -> Vec<String> {
    load.urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect()
}

/// How a send went.
enum Sent {
    /// Acknowledged: committed and applied.
    Acked,
    /// Refused for load or leadership, or the member could not be reached: try again.
    Retry(String),
    /// Failed for good.
    Failed(String),
}

/// One of etcd's APIs, connected to every member.
enum Driver {
    Grpc(grpc::Driver),
    Json(json::Driver),
}

impl Driver {
    /// Waits until every member is healthy, and connects.
    async fn connect(load: &EtcdLoad) -> anyhow::Result<Driver> {
        Ok(match load.api {
            EtcdApi::Grpc => Driver::Grpc(grpc::Driver::connect(load).await?),
            EtcdApi::Json => Driver::Json(json::Driver::connect(load).await?),
        })
    }

    /// Puts as one request: a plain put for one, a transaction for several.
    fn encode(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Request {
        match self {
            Driver::Grpc(_) => grpc::encode_request(pairs),
            Driver::Json(_) => json::encode_request(pairs),
        }
    }

    /// Sends `req` once to member `member`.
    async fn send(&self, member: usize, req: &Request, timeout: Duration) -> Sent {
        match self {
            Driver::Grpc(d) => d.send(member, req, timeout).await,
            Driver::Json(d) => d.send(member, req, timeout).await,
        }
    }

    fn members(&self) -> usize {
        match self {
            Driver::Grpc(d) => d.members(),
            Driver::Json(d) => d.members(),
        }
    }
}

/// What the workers share.
struct Run {
    driver: Driver,
    requests: Vec<Request>,
    next: AtomicUsize,
    /// For each acknowledged request: when, how many puts, and its latency.
    acked: Mutex<Vec<(Instant, usize, Duration)>>,
    acked_puts: AtomicUsize,
    errors: AtomicU64,
    retried: AtomicU64,
}

/// Runs the workload against the etcd members and prints the result.
pub(crate) async fn run(load: &EtcdLoad) -> anyhow::Result<EtcdResult> {
    for url in &load.urls {
        if !url.starts_with("http://") {
            bail!("--etcd must be an http:// URL, got '{url}'");
        }
    }
    let driver = Driver::connect(load).await?;
    eprintln!("encoding {} puts of {} B…", load.puts, load.payload_bytes);
    let requests: Vec<Request> = batches(load).iter().map(|b| driver.encode(b)).collect();
    let run = Arc::new(Run {
        acked: Mutex::new(Vec::with_capacity(requests.len())),
        driver,
        requests,
        next: AtomicUsize::new(0),
        acked_puts: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        retried: AtomicU64::new(0),
    });
    let cpu_before: Vec<_> = load.pids.iter().map(|&p| proc_use(p)).collect();
    let start = Instant::now();
    let workers: Vec<_> = (0..load.concurrency)
        .map(|_| tokio::spawn(worker(run.clone(), load.timeout)))
        .collect();
    watch_progress(load, &run, &workers).await;
    let elapsed = start.elapsed();
    for w in workers {
        w.abort();
    }
    let nodes = load
        .pids
        .iter()
        .zip(&cpu_before)
        .map(|(&pid, before)| MemberUse {
            pid,
            usage: usage_since(Some(pid), *before, elapsed.as_secs_f64()),
        })
        .collect();
    let result = summarise(load, &run, start, elapsed, nodes);
    print(&result);
    Ok(result)
}

async fn watch_progress(load: &EtcdLoad, run: &Run, workers: &[tokio::task::JoinHandle<()>]) {
    let bar = ProgressBar::new(load.puts as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} acknowledged [{bar:40}] {pos}/{len}  {per_sec}  {msg}",
        )
        .expect("template"),
    );
    let mut last = (0, Instant::now());
    while !workers.iter().all(tokio::task::JoinHandle::is_finished) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = run.acked_puts.load(Ordering::Relaxed);
        bar.set_position(done as u64);
        bar.set_message(format!(
            "errors {}  retried {}",
            run.errors.load(Ordering::Relaxed),
            run.retried.load(Ordering::Relaxed)
        ));
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > load.timeout {
            bar.suspend(|| {
                eprintln!(
                    "no acknowledgements for {} s; stopping",
                    load.timeout.as_secs()
                );
            });
            break;
        }
    }
    bar.finish_and_clear();
}

/// Sends requests until none are left, request `r` to member `r mod members`; each is
/// retried while refused for load, for up to `timeout`.
async fn worker(run: Arc<Run>, timeout: Duration) {
    loop {
        let r = run.next.fetch_add(1, Ordering::Relaxed);
        let Some(req) = run.requests.get(r) else {
            return;
        };
        let puts = req.puts;
        let member = r % run.driver.members();
        let sent = Instant::now();
        let give_up = sent + timeout;
        let failure = loop {
            match run.driver.send(member, req, timeout).await {
                Sent::Acked => break None,
                Sent::Failed(e) => break Some(e),
                Sent::Retry(e) if Instant::now() + RETRY_PAUSE > give_up => {
                    break Some(format!("{e} (still refused after {} s)", timeout.as_secs()));
                }
                Sent::Retry(_) => {
                    run.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        };
        match failure {
            None => {
                let now = Instant::now();
                run.acked
                    .lock()
                    .expect("lock")
                    .push((now, puts, now - sent));
                run.acked_puts.fetch_add(puts, Ordering::Relaxed);
            }
            Some(e) => {
                tracing::warn!(error = %e, "request failed");
                run.errors.fetch_add(puts as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Waits until `healthy` says yes for every member, for at most [`HEALTH_TIMEOUT`].
async fn wait_healthy<F, Fut>(urls: &[String], mut healthy: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = Instant::now() + HEALTH_TIMEOUT;
    for (i, url) in urls.iter().enumerate() {
        while !healthy(i).await {
            if Instant::now() > give_up {
                bail!(
                    "etcd at {url} is not healthy after {} s",
                    HEALTH_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Throughput and latency from the acknowledgements, with the steady-state rule of ordo's
/// run: the middle 80 % of acknowledged puts, when they span at least the minimum window.
fn summarise(
    load: &EtcdLoad,
    run: &Run,
    start: Instant,
    elapsed: Duration,
    nodes: Vec<MemberUse>,
) -> EtcdResult {
    let acked = run.acked.lock().expect("lock");
    let mut lat: Vec<f64> = acked
        .iter()
        .map(|(_, _, l)| l.as_secs_f64() * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let mut times: Vec<f64> = acked
        .iter()
        .flat_map(|(t, n, _)| std::iter::repeat_n(t.duration_since(start).as_secs_f64(), *n))
        .collect();
    times.sort_by(f64::total_cmp);
    let committed = times.len();
    let overall_tps = committed as f64 / elapsed.as_secs_f64();
    EtcdResult {
        system: "etcd",
        api: load.api,
        mode: "closed",
        members: load.urls.len(),
        txs: load.puts,
        payload_bytes: load.payload_bytes,
        batch: load.batch,
        concurrency: load.concurrency,
        request: if load.batch == 1 { "put" } else { "txn" },
        committed,
        errors: run.errors.load(Ordering::Relaxed),
        retried: run.retried.load(Ordering::Relaxed),
        elapsed_s: elapsed.as_secs_f64(),
        committed_tps: overall_tps,
        steady_tps: steady_rate(&times, overall_tps),
        latency_ms: Latency::of_sorted(&lat),
        nodes,
    }
}

fn print(r: &EtcdResult) {
    println!(
        "etcd bench: {} loop over {}, {} members, {} puts of {} B, {}, concurrency {}",
        r.mode,
        match r.api {
            EtcdApi::Grpc => "gRPC",
            EtcdApi::Json => "the JSON gateway",
        },
        r.members,
        r.txs,
        r.payload_bytes,
        if r.batch == 1 {
            "one put per request".to_owned()
        } else {
            format!("txns of {} puts", r.batch)
        },
        r.concurrency
    );
    println!(
        "acknowledged  {} in {:.2} s ({} errors, {} retried requests)",
        r.committed, r.elapsed_s, r.errors, r.retried
    );
    println!(
        "throughput    {:.0} puts/s overall, {:.0} puts/s steady (middle 80 % of acks over ≥ 1 s)",
        r.committed_tps, r.steady_tps
    );
    println!("latency       {} (per request)", r.latency_ms.line());
    for n in &r.nodes {
        println!(
            "{:<13} cpu {:.2} cores  peak rss {:.1} MiB",
            format!("etcd pid {}", n.pid),
            n.usage.cpu_cores,
            n.usage.peak_rss_bytes as f64 / 1048576.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn load(puts: usize, batch: usize) -> EtcdLoad {
        EtcdLoad {
            urls: vec![],
            api: EtcdApi::Grpc,
            pids: vec![],
            puts,
            payload_bytes: 100,
            batch,
            concurrency: 1,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn keys_are_unique_and_values_have_the_payload_size() {
        let b = batches(&load(1001, 100));
        assert_eq!(b.len(), 11);
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 1001);
        assert_eq!(b[10].len(), 1);
        let keys: std::collections::HashSet<_> = b.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 1001);
        assert!(b.iter().flatten().all(|(_, v)| v.len() == 100));
        let (k, v) = put_pair(7, 42, 3);
        assert_eq!(k, b"b7/42");
        assert_eq!(v, [42, 0, 0], "the put's index, little-endian");
    }
}
