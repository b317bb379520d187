//! One run: make the hosts, start the validators, load them, break them on the seed's
//! schedule, heal, probe, stop, read the chains, judge.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ordo_client::api::metrics;
use ordo_harness::{Net, Spec};
use serde::Serialize;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::chains::{audit, read_chain};
use crate::check::{Check, Figures, Run, check};
use crate::cluster::Cluster;
use crate::disk::{self, Disk};
use crate::history::{Event, History, secs};
use crate::lazy::Lazy;
use crate::netns::{Topology, host_ip};
use crate::schedule::{FaultKind, Step, schedule};
use crate::workload::{self, Endpoint, Shared};

/// What a run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The schedule's seed.
    pub seed: u64,
    /// How long faults are injected.
    pub length: Duration,
    /// How many validators.
    pub validators: usize,
    /// Writers waiting for commits, per validator.
    pub writers: usize,
    /// The kinds of fault drawn.
    pub kinds: Vec<FaultKind>,
    /// Where the run's directory is made.
    pub dir: PathBuf,
    /// Keep the run's directory even when it passes.
    pub keep: bool,
    /// The `ordo` binary.
    pub bin: PathBuf,
    /// The longest acceptable stall while a majority is up and connected.
    pub stall_max: Duration,
    /// The longest acceptable time from the heal to a commit.
    pub heal_max: Duration,
    /// How soon after a leader's slowdown the acknowledgements must be back.
    pub slow_leader_max: Duration,
}

/// A run's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Seconds of faults.
    pub seconds: u64,
    /// Validators.
    pub validators: usize,
    /// Whether every check held.
    pub pass: bool,
    /// The figures.
    pub figures: Figures,
    /// Every check.
    pub checks: Vec<Check>,
    /// The run's directory, when kept (logs, data, history).
    pub dir: Option<PathBuf>,
}

/// Where each validator's own disk is mounted, in its directory (its data directory is
/// `data` on it).
const DISK_DIR: &str = "disk";
/// Where each validator's `ordo-lazyfs` is mounted, in its directory, when the run cuts
/// power (its data directory is `data` in it).
const LAZY_DIR: &str = "lazy";

/// Waits this long at most for the first commit after the validators start.
const FIRST_COMMIT: Duration = Duration::from_secs(60);
/// Gives the probe this long before calling it lost.
const PROBE_MAX: Duration = Duration::from_secs(60);
/// Waits this long at most for every validator to reach the same tip after the load stops.
const CONVERGE: Duration = Duration::from_secs(60);
/// Waits this long at most, after the load, for a damaged validator to have re-checked its
/// chain and be healthy, and for one restarted for a salvage to be healthy again.
const SETTLE: Duration = Duration::from_secs(90);
/// Seconds between the starts of two scrub passes when the run damages ledger files (a
/// pass also starts when a validator starts): damage is found, and repaired, under load.
const SCRUB_EVERY_S: u64 = 10;

/// Makes the hosts, enters the hub on this thread, and runs `opts` on a runtime of its
/// own. Call from a thread with no runtime.
///
/// # Errors
/// When the run cannot be set up (the checks' failures are in the report).
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let topology = Topology::create(opts.validators)?;
    topology.enter_hub()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = run_inside(opts, topology) => report,
            signal = interrupted() => {
                eprintln!(
                    "nemesis: {signal}: stopping the validators, unmounting, removing the namespaces"
                );
                Err(Interrupted { signal }.into())
            }
        }
    });
    // The cluster of a run that ended in an error (interrupted, or not set up) is dropped
    // with the supervisor task, at the shutdown: its processes killed, its filesystems
    // unmounted (up to 10 s each), its namespaces removed. A finished run dropped it.
    runtime.shutdown_timeout(Duration::from_secs(if report.is_err() { 60 } else { 5 }));
    report
}

/// A run stopped by SIGINT or SIGTERM, after cleaning up; its directory is kept.
#[derive(Debug)]
pub struct Interrupted {
    /// `SIGINT` or `SIGTERM`.
    pub signal: &'static str,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.signal)
    }
}

impl std::error::Error for Interrupted {}

/// The first SIGINT or SIGTERM (pending for ever if they cannot be caught).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// Aborts a task when dropped (the supervisor, when a run is interrupted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_inside(opts: &Options, topology: Topology) -> anyhow::Result<Report> {
    let dir = opts.dir.join(format!("seed-{}", opts.seed));
    // A run killed before it could clean up may have left its disks mounted.
    disk::unmount_under(&dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let n = opts.validators;
    let clients = workload::keys_needed(n, opts.writers);
    let mut spec = Spec::new(&format!("nemesis-{}", opts.seed), n, clients);
    spec.hosts = (0..n).map(host_ip).collect::<Vec<IpAddr>>();
    // Where each validator's data lives: on its own disk (DISK_DIR) when the run fills
    // disks, under ordo-lazyfs (LAZY_DIR, backed by a directory on that disk or beside
    // it) when the run cuts power.
    let own_disks = opts.kinds.iter().any(|k| k.needs_own_disks());
    let lazy_fs = opts.kinds.iter().any(|k| k.needs_lazy_fs());
    let data_parent = match (lazy_fs, own_disks) {
        (true, _) => Some(LAZY_DIR),
        (false, true) => Some(DISK_DIR),
        (false, false) => None,
    };
    let frequent_scrub = opts.kinds.iter().any(|k| k.needs_frequent_scrub());
    spec.node = Box::new(move |_, c| {
        if let Some(parent) = data_parent {
            c.data_dir = PathBuf::from(parent).join("data");
        }
        if frequent_scrub {
            c.storage.scrub_every_s = SCRUB_EVERY_S;
        }
    });
    let keys = spec.clients.clone();
    let net = Net::create(&dir, &spec)?;
    let mut disks = Vec::new();
    if own_disks {
        for i in 0..n {
            let node_dir = Net::node_dir(&dir, i);
            disks.push(Disk::create(
                &node_dir.join("disk.img"),
                &node_dir.join(DISK_DIR),
            )?);
        }
    }
    let mut lazies = Vec::new();
    if lazy_fs {
        let lazy_bin = ordo_harness::sibling_bin("ordo-lazyfs", "ORDO_LAZYFS_BIN")?;
        for i in 0..n {
            let node_dir = Net::node_dir(&dir, i);
            let backing = if own_disks {
                node_dir.join(DISK_DIR).join("backing")
            } else {
                node_dir.join("backing")
            };
            lazies.push(Lazy::mount(
                &lazy_bin,
                &backing,
                &node_dir.join(LAZY_DIR),
                &node_dir.join("lazyfs.log"),
            )?);
        }
    }
    let genesis = net.genesis.clone();
    let genesis_path = Net::genesis_path(&dir);
    let history = History::new();
    let endpoints: Vec<Endpoint> = net
        .nodes
        .iter()
        .map(|node| Endpoint::new(&node.url()))
        .collect::<anyhow::Result<_>>()?;
    let data_dirs: Vec<PathBuf> = net.nodes.iter().map(|node| node.data_dir.clone()).collect();
    let fake_clock = if opts.kinds.iter().any(|k| k.needs_fake_clock()) {
        Some(faketime_library()?)
    } else {
        None
    };
    // The test-only faults need `ordo-faulty`; it runs as `ordo` does until one is set.
    let validator_bin = if opts.kinds.iter().any(|k| k.needs_faulty_binary()) {
        ordo_harness::sibling_bin("ordo-faulty", "ORDO_FAULTY_BIN")?
    } else {
        opts.bin.clone()
    };
    let slow_disk = if opts.kinds.iter().any(|k| k.needs_slow_disk()) {
        Some(ordo_harness::sibling_bin(
            "libordo_slowdisk.so",
            "ORDO_SLOWDISK_LIB",
        )?)
    } else {
        None
    };
    let cluster = Arc::new(Mutex::new(Cluster::new(
        net,
        lazies,
        disks,
        topology,
        validator_bin,
        history.clone(),
        fake_clock.as_deref(),
        slow_disk.as_deref(),
    )?));
    cluster.lock().await.start_all()?;

    let shared = Shared::new(history.clone(), n);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    workload::spawn(
        &mut tasks,
        &shared,
        &endpoints,
        (&keys, opts.writers),
        opts.seed,
        &stop_rx,
    );
    let mut supervisor = AbortOnDrop(tokio::spawn(supervise(cluster.clone())));

    let first = ordo_harness::poll(FIRST_COMMIT, Duration::from_millis(100), || {
        std::future::ready((shared.max_tip() > 0).then_some(()))
    })
    .await;
    if first.is_none() {
        // The supervisor is aborted as it drops.
        bail!(
            "the cluster committed nothing within {FIRST_COMMIT:?} of its start; logs in {}",
            dir.display()
        );
    }

    let steps = schedule(opts.seed, opts.length, &opts.kinds);
    info!(
        seed = opts.seed,
        faults = steps.len(),
        "the cluster commits; faults begin"
    );
    inject(&cluster, &shared, &history, &steps, opts.length).await?;

    cluster.lock().await.heal_all()?;
    let healed = history.now();
    history.push(Event::Healed { at: healed });
    info!("healed; probing");
    let probe = workload::probe(&endpoints, &keys[0], PROBE_MAX).await;
    let heal_to_commit = probe.map(|_| history.now().saturating_sub(healed));

    let end = history.now();
    let _ = stop_tx.send(true);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
    if let Err(detail) = converge(&endpoints).await {
        history.push(Event::Diverged {
            at: history.now(),
            detail,
        });
    }
    if settle_damage(&cluster, &endpoints, &history).await {
        // The final chains show whether they meet now.
        let _ = converge(&endpoints).await;
    }
    supervisor.0.abort();
    let _ = (&mut supervisor.0).await;
    {
        let mut c = cluster.lock().await;
        let killed = ordo_harness::stop_all(
            &mut c.net.nodes,
            Duration::from_secs(30),
            std::future::pending(),
        )
        .await;
        if !killed.is_empty() {
            warn!(
                ?killed,
                "validators that did not stop on SIGTERM were killed"
            );
        }
    }

    let bin = opts.bin.clone();
    let (chains, audits) = tokio::task::spawn_blocking(move || {
        let chains: Vec<_> = data_dirs
            .iter()
            .map(|d| read_chain(d, &genesis).map_err(|e| format!("{e:#}")))
            .collect();
        let audits: Vec<_> = data_dirs
            .iter()
            .map(|d| audit(&bin, d, &genesis_path))
            .collect();
        (chains, audits)
    })
    .await
    .context("reading the chains")?;

    let events = history.events();
    let genesis_hash = cluster.lock().await.net.genesis.hash();
    let (checks, figures) = check(&Run {
        events: &events,
        chains: &chains,
        audits: &audits,
        genesis_hash,
        start_unix_ms: history.start_unix_ms(),
        time_ahead_max: Duration::from_millis(
            cluster
                .lock()
                .await
                .net
                .genesis
                .consensus
                .block_time_ahead_max_ms,
        ),
        heal_to_commit,
        end,
        stall_max: opts.stall_max,
        heal_max: opts.heal_max,
        slow_leader_max: opts.slow_leader_max,
    });
    let pass = checks.iter().all(|c| c.ok);
    write_history(&dir, &events, &steps)?;
    let keep = opts.keep || !pass;
    let report = Report {
        seed: opts.seed,
        seconds: opts.length.as_secs(),
        validators: n,
        pass,
        figures,
        checks,
        dir: keep.then(|| dir.clone()),
    };
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report).context("report JSON")?,
    )
    .context("cannot write report.json")?;
    drop(cluster);
    if !keep {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(report)
}

/// Where Debian's and Ubuntu's `faketime` package put libfaketime; `ORDO_NEMESIS_FAKETIME`
/// overrides.
const FAKETIME_PATHS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

fn faketime_library() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ORDO_NEMESIS_FAKETIME") {
        return Ok(PathBuf::from(path));
    }
    FAKETIME_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context(
            "clock-skew faults need libfaketime: apt-get install faketime (or set \
             ORDO_NEMESIS_FAKETIME to the library), or leave skew-* out of --faults",
        )
}

/// Runs `steps`, each after its gap, then waits out the rest of `length`. A run lasts
/// longer than `length` by the time its faults took to end.
async fn inject(
    cluster: &Mutex<Cluster>,
    shared: &Shared,
    history: &History,
    steps: &[Step],
    length: Duration,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    for step in steps {
        tokio::time::sleep(step.gap).await;
        let leader = shared.leader();
        let active = cluster.lock().await.begin(step, leader)?;
        if let Some(Event::FaultStart { at, what, .. }) = history
            .events()
            .iter()
            .rev()
            .find(|e| matches!(e, Event::FaultStart { .. }))
        {
            info!(
                at_s = secs(*at),
                kind = step.kind.name(),
                hold_s = secs(step.hold),
                "{what}"
            );
        }
        tokio::time::sleep(step.hold).await;
        cluster.lock().await.end(step.kind, active)?;
    }
    tokio::time::sleep_until(start + length).await;
    Ok(())
}

/// Restarts validators that exit on their own (each is recorded as a failure).
async fn supervise(cluster: Arc<Mutex<Cluster>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Err(e) = cluster.lock().await.restart_crashed() {
            warn!("cannot restart a validator: {e:#}");
        }
    }
}

/// Waits until every validator reports the same tip twice in a row, half a second apart,
/// for at most [`CONVERGE`]; if they never do, each one's last tip.
async fn converge(endpoints: &[Endpoint]) -> Result<(), String> {
    let mut last = None;
    let mut tips = Vec::new();
    for _ in 0..(CONVERGE.as_millis() / 500) {
        tips.clear();
        for e in endpoints {
            tips.push(e.poll.status().await.ok().map(|s| s.tip));
        }
        let first = tips[0];
        let same = first.is_some() && tips.iter().all(|t| *t == first);
        if same && last == first {
            return Ok(());
        }
        last = if same { first } else { None };
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    warn!("the validators did not reach the same tip within {CONVERGE:?}");
    let shown: Vec<String> = tips
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Some(t) => format!("validator-{i} at height {}", t.height),
            None => format!("validator-{i} silent"),
        })
        .collect();
    Err(format!("after {CONVERGE:?}: {}", shown.join(", ")))
}

/// Before the final stop and audit: every validator whose ledger files were damaged must
/// have re-checked its whole chain since it last started (a scrub pass), so that damage
/// only a scrub finds is found, and be healthy (what was found, repaired from peers);
/// then every validator whose ledger asks for a salvage (the scrub met a damaged table
/// file, which the audit would meet too) is restarted once, so that the salvage sets the
/// file aside, and must be healthy again. Shortfalls are recorded. Returns whether a
/// validator was restarted.
async fn settle_damage(
    cluster: &Mutex<Cluster>,
    endpoints: &[Endpoint],
    history: &History,
) -> bool {
    let unhealed = |node, detail| {
        history.push(Event::Unhealed {
            at: history.now(),
            node,
            detail,
        });
    };
    let damaged = cluster.lock().await.damaged();
    for &i in &damaged {
        if let Err(detail) = settled(&endpoints[i], true).await {
            unhealed(i, detail);
        }
    }
    let asking: Vec<usize> = {
        let c = cluster.lock().await;
        (0..c.len())
            .filter(|&i| salvage_requested(&c.net.nodes[i].data_dir))
            .collect()
    };
    for &i in &asking {
        info!(
            validator = i,
            "restarting a validator whose ledger asks for a salvage"
        );
        if let Err(e) = cluster.lock().await.restart_gracefully(i) {
            unhealed(i, format!("cannot restart it for its salvage: {e:#}"));
            continue;
        }
        history.push(Event::SalvageRestart {
            at: history.now(),
            node: i,
        });
        if let Err(detail) = settled(&endpoints[i], false).await {
            unhealed(i, format!("after its restart for a salvage: {detail}"));
        }
    }
    for &i in &asking {
        let data_dir = cluster.lock().await.net.nodes[i].data_dir.clone();
        if salvage_requested(&data_dir) {
            unhealed(i, "its ledger still asks for a salvage".into());
        }
    }
    !asking.is_empty()
}

/// Whether the ledger in `data_dir` asks the next start to salvage it.
fn salvage_requested(data_dir: &Path) -> bool {
    data_dir
        .join(ordo_ledger::LEDGER_DIR)
        .join(ordo_ledger::SALVAGE_MARKER)
        .is_file()
}

/// Waits, for at most [`SETTLE`], until the validator at `endpoint` is healthy and, when
/// `scrubbed`, its scrub has re-checked at least as many blocks since it started as its
/// tip height when the wait began (so its first pass, over every block it held then, is
/// done). What was still missing when it gave up.
async fn settled(endpoint: &Endpoint, scrubbed: bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    let mut tip = None;
    loop {
        let (done, missing) = match endpoint.poll.metrics().await {
            Ok(page) => {
                let height = *tip.get_or_insert(sample(&page, metrics::TIP_HEIGHT.name));
                let checked = sample(&page, metrics::STORAGE_SCRUBBED_BLOCKS.name);
                match endpoint.poll.health().await {
                    Err(e) => (false, format!("not healthy: {e}")),
                    Ok(_) if scrubbed && checked < height => (
                        false,
                        format!("its scrub re-checked {checked} of {height} blocks"),
                    ),
                    Ok(_) => (true, String::new()),
                }
            }
            Err(e) => (false, format!("no metrics: {e}")),
        };
        if done {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("after {SETTLE:?}, {missing}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of the unlabelled sample `name` on a metrics page (0 when absent).
fn sample(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes the schedule and every event, one JSON object a line.
fn write_history(dir: &Path, events: &[Event], steps: &[Step]) -> anyhow::Result<()> {
    let mut out = Vec::new();
    for s in steps {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"event": "scheduled", "step": s}),
        )?;
        out.push(b'\n');
    }
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.push(b'\n');
    }
    std::fs::write(dir.join("history.jsonl"), out).context("cannot write history.jsonl")
}
