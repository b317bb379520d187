//! `ordo bench --etcd`: ordo's closed-loop write workload, sent to an etcd cluster instead,
//! as a baseline for ordo's own figures (`bench/README.md`).
//!
//! etcd v3's JSON gateway takes one put per `POST /v3/kv/put`, or many puts in one
//! transaction (`POST /v3/kv/txn`): `--batch` puts go in one request, as `--batch` ordo
//! transactions go in one submission. etcd answers 200 only after the request is committed
//! by Raft and applied, so a 200 acknowledges every put in it. Requests are encoded before
//! the clock starts and sent round-robin over the members by `--concurrency` workers; a
//! request's latency is the time until its answer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde::Serialize;

use crate::bench::{Latency, proc_use, settle, steady_rate};
use crate::{CmdResult, Failure};

/// Pause before re-sending a request that etcd refused for load or that could not connect.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for every member to report healthy before the run starts.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Characters of an etcd error answer kept for the warning.
const ERROR_TEXT_MAX: usize = 300;

/// The workload, from `ordo bench`'s flags.
pub(crate) struct EtcdLoad {
    /// Client URLs of the members (`http://host:port`).
    pub(crate) urls: Vec<String>,
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
    pub(crate) json: Option<PathBuf>,
}

/// One member's resource use during the run.
#[derive(Debug, Serialize)]
struct MemberUse {
    pid: u32,
    cpu_cores: f64,
    peak_rss_bytes: u64,
}

/// The result, as printed and as JSON; field names follow ordo's bench result.
#[derive(Debug, Serialize)]
struct EtcdResult {
    /// Always "etcd": which system was measured.
    system: &'static str,
    mode: &'static str,
    members: usize,
    /// Puts requested.
    txs: usize,
    payload_bytes: usize,
    batch: usize,
    concurrency: usize,
    /// "put" (one per request) or "txn" (`batch` puts per request).
    request: &'static str,
    /// Puts acknowledged with 200 (committed by Raft and applied).
    committed: usize,
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

/// One encoded request to the gateway.
struct Request {
    path: &'static str,
    body: Vec<u8>,
    puts: usize,
}

/// What the workers share.
struct Run {
    requests: Vec<Request>,
    next: AtomicUsize,
    /// For each acknowledged request: when, how many puts, and its latency.
    acked: Mutex<Vec<(Instant, usize, Duration)>>,
    acked_puts: AtomicUsize,
    errors: AtomicU64,
    retried: AtomicU64,
}

#[derive(Serialize)]
struct Put {
    key: String,
    value: String,
}

#[derive(Serialize)]
struct TxnOp {
    request_put: Put,
}

#[derive(Serialize)]
struct Txn {
    success: Vec<TxnOp>,
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

/// Encodes puts as one gateway request: a plain put for one, a transaction for several
/// (all in `success`, with no compare, so it always applies). Keys and values are base64,
/// as the gateway's JSON mapping of protobuf bytes requires.
fn encode_request(pairs: &[(Vec<u8>, Vec<u8>)]) -> Request {
    let put = |(k, v): &(Vec<u8>, Vec<u8>)| Put {
        key: BASE64.encode(k),
        value: BASE64.encode(v),
    };
    let (path, body) = match pairs {
        [one] => ("/v3/kv/put", serde_json::to_vec(&put(one))),
        _ => (
            "/v3/kv/txn",
            serde_json::to_vec(&Txn {
                success: pairs
                    .iter()
                    .map(|p| TxnOp {
                        request_put: put(p),
                    })
                    .collect(),
            }),
        ),
    };
    Request {
        path,
        body: body.expect("JSON of plain strings"),
        puts: pairs.len(),
    }
}

fn encode_all(load: &EtcdLoad) -> Vec<Request> {
    let run_tag = rand::random::<u32>() as u64;
    (0..load.puts)
        .step_by(load.batch)
        .map(|first| {
            let pairs: Vec<_> = (first..(first + load.batch).min(load.puts))
                .map(|i| put_pair(run_tag, i, load.payload_bytes))
                .collect();
            encode_request(&pairs)
        })
        .collect()
}

/// Runs the workload against the etcd members and reports it.
pub(crate) fn run(load: EtcdLoad) -> CmdResult {
    for url in &load.urls {
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(Failure::Usage(anyhow!(
                "--etcd must be an http:// URL, got '{url}'"
            )));
        }
    }
    crate::client::block_on(async move {
        let result = measure(&load).await?;
        print(&result);
        settle(
            load.json.as_deref(),
            &result,
            result.committed,
            load.puts,
            "puts acknowledged",
        )
    })
}

/// Waits until every member answers `/health` with `"health": "true"`.
async fn wait_healthy(http: &reqwest::Client, urls: &[String]) -> anyhow::Result<()> {
    let give_up = Instant::now() + HEALTH_TIMEOUT;
    for url in urls {
        loop {
            let health = async {
                let v: serde_json::Value = http
                    .get(format!("{url}/health"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::Ok(v["health"] == "true")
            };
            if matches!(health.await, Ok(true)) {
                break;
            }
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

async fn measure(load: &EtcdLoad) -> anyhow::Result<EtcdResult> {
    let urls: Arc<Vec<String>> = Arc::new(
        load.urls
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect(),
    );
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(load.concurrency)
        .build()
        .context("cannot create an HTTP client")?;
    wait_healthy(&http, &urls).await?;
    eprintln!("encoding {} puts of {} B…", load.puts, load.payload_bytes);
    let requests = encode_all(load);
    let run = Arc::new(Run {
        acked: Mutex::new(Vec::with_capacity(requests.len())),
        requests,
        next: AtomicUsize::new(0),
        acked_puts: AtomicUsize::new(0),
        errors: AtomicU64::new(0),
        retried: AtomicU64::new(0),
    });
    let cpu_before: Vec<_> = load.pids.iter().map(|&p| proc_use(p)).collect();

    let bar = ProgressBar::new(load.puts as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} acknowledged [{bar:40}] {pos}/{len}  {per_sec}  {msg}",
        )
        .expect("template"),
    );
    let start = Instant::now();
    let workers: Vec<_> = (0..load.concurrency)
        .map(|_| {
            let (http, urls, run) = (http.clone(), urls.clone(), run.clone());
            let timeout = load.timeout;
            tokio::spawn(async move { worker(http, urls, run, timeout).await })
        })
        .collect();
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
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    for w in workers {
        w.abort();
    }

    let nodes = load
        .pids
        .iter()
        .zip(&cpu_before)
        .map(|(&pid, before)| {
            let now = proc_use(pid);
            MemberUse {
                pid,
                cpu_cores: match (before, now) {
                    (Some((b, _)), Some((e, _))) => (e - b) / elapsed.as_secs_f64(),
                    _ => 0.0,
                },
                peak_rss_bytes: now.map_or(0, |(_, rss)| rss),
            }
        })
        .collect();
    Ok(summarise(load, &run, start, elapsed, nodes))
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
    let steady_tps = steady_rate(&times, overall_tps);
    EtcdResult {
        system: "etcd",
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
        steady_tps,
        latency_ms: Latency::of_sorted(&lat),
        nodes,
    }
}

/// Sends requests until none are left; request `r` goes to member `r mod members`.
async fn worker(http: reqwest::Client, urls: Arc<Vec<String>>, run: Arc<Run>, timeout: Duration) {
    loop {
        let r = run.next.fetch_add(1, Ordering::Relaxed);
        let Some(req) = run.requests.get(r) else {
            return;
        };
        let url = &urls[r % urls.len()];
        let sent = Instant::now();
        match send(&http, url, req, timeout, &run.retried).await {
            Ok(()) => {
                let now = Instant::now();
                run.acked
                    .lock()
                    .expect("lock")
                    .push((now, req.puts, now - sent));
                run.acked_puts.fetch_add(req.puts, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "request failed");
                run.errors.fetch_add(req.puts as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Sends one request until etcd acknowledges it. Refusals for load (429, 503: too many
/// requests, no leader, leader changed) and failed connections are retried for up to
/// `timeout`; any other answer, or a request that times out, fails.
async fn send(
    http: &reqwest::Client,
    url: &str,
    req: &Request,
    timeout: Duration,
    retried: &AtomicU64,
) -> anyhow::Result<()> {
    let give_up = Instant::now() + timeout;
    loop {
        let answer = http
            .post(format!("{url}{}", req.path))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(req.body.clone())
            .send()
            .await;
        let retry = match answer {
            Ok(resp) if resp.status() == StatusCode::OK => {
                // Acknowledged by the status; the body is read only so that the connection
                // can be reused.
                let _ = resp.bytes().await;
                return Ok(());
            }
            Ok(resp) => {
                let status = resp.status();
                let text: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(ERROR_TEXT_MAX)
                    .collect();
                let refused_for_load = matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                );
                if !refused_for_load {
                    bail!("{url}{}: {status}: {text}", req.path);
                }
                anyhow!("{url}{}: {status}: {text}", req.path)
            }
            Err(e) if e.is_connect() => anyhow!("{url}: {e}"),
            Err(e) => bail!("{url}{}: {e}", req.path),
        };
        if Instant::now() + RETRY_PAUSE > give_up {
            return Err(retry.context(format!("still refused after {} s", timeout.as_secs())));
        }
        retried.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

fn print(r: &EtcdResult) {
    println!(
        "etcd bench: {} loop, {} members, {} puts of {} B, {}, concurrency {}",
        r.mode,
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
    println!(
        "latency       p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms (per request)",
        r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
    );
    for n in &r.nodes {
        println!(
            "{:<13} cpu {:.2} cores  peak rss {:.1} MiB",
            format!("etcd pid {}", n.pid),
            n.cpu_cores,
            n.peak_rss_bytes as f64 / 1048576.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &serde_json::Value) -> Vec<u8> {
        BASE64
            .decode(s.as_str().expect("a string"))
            .expect("base64")
    }

    #[test]
    fn several_puts_are_one_txn_with_every_put_in_success() {
        let pairs: Vec<_> = (0..5).map(|i| put_pair(0xab, i, 12)).collect();
        let req = encode_request(&pairs);
        assert_eq!(req.path, "/v3/kv/txn");
        assert_eq!(req.puts, 5);
        let body: serde_json::Value = serde_json::from_slice(&req.body).expect("JSON");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
        let ops = body["success"].as_array().expect("success");
        assert_eq!(ops.len(), 5);
        for (op, (k, v)) in ops.iter().zip(&pairs) {
            assert_eq!(decode(&op["request_put"]["key"]), *k);
            assert_eq!(decode(&op["request_put"]["value"]), *v);
        }
    }

    #[test]
    fn one_put_is_a_plain_put() {
        let pair = put_pair(7, 42, 3);
        let req = encode_request(std::slice::from_ref(&pair));
        assert_eq!(req.path, "/v3/kv/put");
        let body: serde_json::Value = serde_json::from_slice(&req.body).expect("JSON");
        assert_eq!(decode(&body["key"]), b"b7/42");
        assert_eq!(decode(&body["value"]), pair.1);
        assert_eq!(
            body["value"], "KgAA",
            "base64 of 42 as 3 little-endian bytes"
        );
    }

    #[test]
    fn keys_are_unique_and_values_have_the_payload_size() {
        let load = EtcdLoad {
            urls: vec![],
            pids: vec![],
            puts: 1001,
            payload_bytes: 100,
            batch: 100,
            concurrency: 1,
            timeout: Duration::from_secs(1),
            json: None,
        };
        let reqs = encode_all(&load);
        assert_eq!(reqs.len(), 11);
        assert_eq!(reqs.iter().map(|r| r.puts).sum::<usize>(), 1001);
        assert_eq!(reqs[10].path, "/v3/kv/put");
        let mut keys = std::collections::HashSet::new();
        for r in &reqs[..10] {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
            for op in body["success"].as_array().expect("success") {
                assert!(keys.insert(decode(&op["request_put"]["key"])));
                assert_eq!(decode(&op["request_put"]["value"]).len(), 100);
            }
        }
        assert_eq!(keys.len(), 1000);
    }
}
