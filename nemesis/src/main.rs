//! `ordo-nemesis`: runs real validators in network namespaces, breaks them on a seeded
//! schedule (kill -9, SIGSTOP, iptables partitions, clock skew, full disks, power cuts,
//! damaged ledger files) under a load of clients, heals them, and checks that nothing
//! acknowledged was lost and the chain never forked.
//! See docs/reliability.md.

mod chains;
mod check;
mod cluster;
mod damage;
mod disk;
mod history;
mod lazy;
mod netns;
mod run;
mod schedule;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::run::{Options, Report};
use crate::schedule::FaultKind;

/// Breaks a real ordo cluster on purpose and checks what it promised.
///
/// Each run makes one network namespace per validator (joined by a bridge in a hub
/// namespace, removed afterwards), starts `ordo node run` in each, loads them with clients
/// that submit (waiting for commits or not) and read, injects faults on the schedule its
/// seed gives, heals, probes, stops the validators and checks their chains. Needs root.
///
/// SIGINT or SIGTERM stops the run: its validators are killed, its filesystems unmounted
/// and its namespaces removed; its directory is kept.
///
/// Exit status: 0 when every check of every run holds, 1 when one does not, 2 when a run
/// could not be set up, 130 when interrupted.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Seed of the first run (the next runs take the next seeds); random when not given,
    /// and always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// How many runs.
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// Seconds of faults per run (the heal, probe and checks come after).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Validators per run (3 to 7).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(3..=7))]
    validators: u8,
    /// Clients per validator that submit one transaction at a time and wait for its
    /// commit (the acknowledgement rate the slow-disk figures compare).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32))]
    writers: u8,
    /// The kinds of fault to draw from (comma-separated; default: all but
    /// invalid-blocks-leader and the slow-disk kinds).
    #[arg(long, value_delimiter = ',', value_enum)]
    faults: Vec<FaultKind>,
    /// Where each run's directory (keys, configs, data, logs, history) is made.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("ordo-nemesis"))]
    dir: PathBuf,
    /// Keep each run's directory even when it passes (a failed run's is always kept).
    #[arg(long)]
    keep: bool,
    /// Write every run's report, as a JSON array, to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The longest acceptable stretch without a commit while a majority is up and
    /// connected, in seconds.
    #[arg(long, default_value_t = 3.5)]
    stall_max: f64,
    /// The longest acceptable time from the heal to a probe's commit, in seconds.
    #[arg(long, default_value_t = 10.0)]
    heal_max: f64,
    /// How soon after a leader's fsyncs slow by 100 ms or more it must have handed over
    /// and the acknowledgements through the others be back to 80 % of their quiet rate,
    /// in seconds.
    #[arg(long, default_value_t = 5.0)]
    slow_leader_max: f64,
    /// Print the fault schedule of each run and the faults by kind over all runs, and
    /// exit without running anything (needs no root).
    #[arg(long)]
    plan: bool,
    /// Print the ledger's table files in this data directory and exit (what the
    /// corrupt-random fault runs in a child process of its own).
    #[arg(long, hide = true, value_name = "DATA_DIR")]
    list_table_files: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.list_table_files {
        return match damage::print_ledger_table_files(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let first = args.seed.unwrap_or_else(random_seed);
    let kinds = if args.faults.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let seeds = first..first.saturating_add(args.runs);
    if args.plan {
        print_plan(seeds, Duration::from_secs(args.seconds), &kinds);
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let bin = match ordo_harness::ordo_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut reports = Vec::new();
    for seed in seeds {
        eprintln!(
            "== nemesis seed {seed}: {} s, {} validators",
            args.seconds, args.validators
        );
        let opts = Options {
            seed,
            length: Duration::from_secs(args.seconds),
            validators: usize::from(args.validators),
            writers: usize::from(args.writers),
            kinds: kinds.clone(),
            dir: args.dir.clone(),
            keep: args.keep,
            bin: bin.clone(),
            stall_max: Duration::from_secs_f64(args.stall_max),
            heal_max: Duration::from_secs_f64(args.heal_max),
            slow_leader_max: Duration::from_secs_f64(args.slow_leader_max),
        };
        match run::run(&opts) {
            Ok(report) => {
                print_report(&report);
                reports.push(report);
            }
            Err(e) if e.is::<run::Interrupted>() => {
                eprintln!(
                    "seed {seed}: {e}; cleaned up, its directory kept: {}",
                    args.dir.join(format!("seed-{seed}")).display()
                );
                return ExitCode::from(130);
            }
            Err(e) => {
                eprintln!("error: seed {seed} could not run: {e:#}");
                return ExitCode::from(2);
            }
        }
    }
    if reports.len() > 1 {
        print_summary(&reports);
    }
    if let Some(path) = &args.json {
        let written = serde_json::to_vec_pretty(&reports)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(path, bytes));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if reports.iter().all(|r| r.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000_000
}

/// What `--plan` prints: each run's faults, then how many of each kind in all.
fn print_plan(seeds: std::ops::Range<u64>, length: Duration, kinds: &[FaultKind]) {
    let mut total: BTreeMap<&str, u64> = kinds.iter().map(|k| (k.name(), 0)).collect();
    let runs = seeds.end - seeds.start;
    for seed in seeds {
        let steps = schedule::schedule(seed, length, kinds);
        println!(
            "seed {seed}: {} faults in {} s",
            steps.len(),
            length.as_secs()
        );
        for s in &steps {
            println!(
                "  at {:>6.1} s  {:<20} for {:>5.1} s",
                s.at.as_secs_f64(),
                s.kind.name(),
                s.hold.as_secs_f64()
            );
            *total.entry(s.kind.name()).or_default() += 1;
        }
    }
    if runs > 1 {
        println!("== {runs} runs, {} faults", total.values().sum::<u64>());
        for (k, n) in &total {
            println!("  {k:<22} {n}");
        }
    }
}

fn print_report(r: &Report) {
    let f = &r.figures;
    let faults: Vec<String> = f.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "seed {}: {} · {} s · {} validators · faults: {}",
        r.seed,
        if r.pass { "PASS" } else { "FAIL" },
        r.seconds,
        r.validators,
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    );
    println!(
        "  submitted {} · acknowledged {} · lost {} · moved {} · duplicated {} · chain {} blocks, {} txs · {} reads",
        f.submitted, f.acknowledged, f.lost, f.moved, f.duplicated, f.blocks, f.chain_txs, f.reads
    );
    println!(
        "  longest stall with a majority up {:.2} s (at {:.1} s) · heal to commit {} · restarted for a salvage {}",
        f.longest_stall_s,
        f.longest_stall_at_s,
        f.heal_to_commit_s
            .map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s")),
        f.salvage_restarts
    );
    for s in &f.slow_disks {
        println!(
            "  slow disk at {:.1} s: validator-{} ({}) fsyncs +{} ms · acknowledged through the others {:.1}/s quiet, {:.1}/s during (through all {:.1}/s, {:.1}/s){} · back to 80 % {}",
            s.at_s,
            s.node,
            if s.leader { "leader" } else { "follower" },
            s.delay_ms,
            s.quiet_per_s,
            s.during_per_s,
            s.all_quiet_per_s,
            s.all_during_per_s,
            match (s.leader, s.moved_s) {
                (false, _) => String::new(),
                (true, Some(m)) => format!(" · leadership moved after {m:.2} s"),
                (true, None) => " · leadership never moved".to_owned(),
            },
            s.recovered_s
                .map_or_else(|| "never".to_owned(), |r| format!("after {r:.2} s")),
        );
    }
    for c in &r.checks {
        println!(
            "  {} {} — {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if let Some(dir) = &r.dir {
        println!("  kept: {}", dir.display());
    }
}

fn print_summary(reports: &[Report]) {
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for (k, n) in &r.figures.faults {
            *faults.entry(k).or_default() += n;
        }
    }
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let max = |f: fn(&Report) -> f64| reports.iter().map(f).fold(0.0, f64::max);
    let passed = reports.iter().filter(|r| r.pass).count();
    println!("== {} runs, {passed} passed", reports.len());
    for (k, n) in &faults {
        println!("  {k:<22} {n}");
    }
    println!(
        "  acknowledged {} · lost {} · moved {} · duplicated {}",
        sum(|r| r.figures.acknowledged),
        sum(|r| r.figures.lost),
        sum(|r| r.figures.moved),
        sum(|r| r.figures.duplicated)
    );
    println!(
        "  longest stall with a majority up {:.2} s · longest heal to commit {:.2} s · restarted for a salvage {}",
        max(|r| r.figures.longest_stall_s),
        max(|r| r.figures.heal_to_commit_s.unwrap_or(f64::INFINITY)),
        sum(|r| r.figures.salvage_restarts)
    );
    println!(
        "  block time at most {:.3} s ahead of an acknowledgement, {:.3} s behind a submission",
        max(|r| r.figures.block_time_ahead_s),
        max(|r| r.figures.block_time_behind_s)
    );
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.seed.to_string())
        .collect();
    if !failed.is_empty() {
        println!("  failed seeds: {}", failed.join(", "));
    }
}
