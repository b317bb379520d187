//! A run's result: what it measured, as JSON and as printed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Run;
use crate::bound::Bound;
use crate::report::{Latency, Second, per_second, steady_rate};
use crate::resources::Usage;
use crate::stages::{self, Prechecks, Scrape, Stage};
use crate::{Api, Args};

/// One node's resource use during the run (devnet only: its processes are local).
#[derive(Debug, Serialize)]
pub(super) struct NodeUse {
    pub(super) name: String,
    #[serde(flatten)]
    pub(super) usage: Usage,
    pub(super) disk_bytes: u64,
}

/// The result, as printed and as JSON.
#[derive(Debug, Serialize)]
pub(super) struct BenchResult {
    pub(super) mode: &'static str,
    pub(super) validators: usize,
    pub(super) txs: usize,
    pub(super) payload_bytes: usize,
    pub(super) api: Api,
    pub(super) batch: usize,
    pub(super) concurrency: usize,
    pub(super) offered_tps: Option<u64>,
    pub(super) committed: usize,
    pub(super) rejected: u64,
    /// Requests refused as a whole with 503 (or unreachable) and sent again.
    pub(super) retried: u64,
    /// Transactions refused one by one as retryable (busy, no leader) and sent again.
    pub(super) resubmitted: u64,
    pub(super) elapsed_s: f64,
    pub(super) committed_tps: f64,
    pub(super) steady_tps: f64,
    pub(super) latency_ms: Latency,
    /// How long a node took to answer an accepted submission (admission, and forwarding to
    /// the leader when the node follows): the part of the latency before ordering.
    pub(super) answer_ms: Latency,
    pub(super) nodes: Vec<NodeUse>,
    pub(super) disk_bytes_per_tx: Option<f64>,
    pub(super) stages: Vec<Stage>,
    /// Signatures the followers checked ahead of their blocks.
    pub(super) prechecks: Prechecks,
    /// Latency second by second (by commit time): a stall shows as a bad second.
    pub(super) seconds: Vec<Second>,
    pub(super) bound: Bound,
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces of one run's result
pub(super) fn summarise(
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

pub(super) fn print(r: &BenchResult) {
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
