//! `ordo-bench`: measures an ordo cluster (one it starts itself with `--devnet`, or any
//! cluster given by `--node`), or an etcd cluster as a baseline (`--etcd`).
//! `bench/README.md` says what each figure means; `ordo bench` runs this binary.
//!
//! Exit codes: 0 when every transaction (or put) was committed; 1 when some were not; 2 on
//! bad usage or a setup that cannot run.

mod bound;
mod devnet;
mod etcd;
mod load;
mod report;
mod resources;
mod stages;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

/// Measure a cluster: committed tx/s, submit-to-commit latency, resources, and how close
/// it comes to this machine's signature-verification bound.
///
/// Signs all transactions before the clock starts, submits them in batches over the binary
/// (default) or JSON API spread over every node (closed loop, or open loop with --rate),
/// and confirms commits from the binary block stream. --devnet starts and measures a local
/// cluster of separate validator processes (the `ordo` binary beside this one, or
/// $ORDO_BIN).
#[derive(Parser)]
#[command(name = "ordo-bench", version, max_term_width = 100)]
pub(crate) struct Args {
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
    /// How to talk to etcd: its native gRPC API, or the JSON gateway in front of it (which
    /// costs etcd CPU to translate).
    #[arg(long, value_enum, default_value_t = EtcdApi::Grpc, requires = "etcd")]
    etcd_api: EtcdApi,
    /// PID of a local etcd member, to report its CPU and peak RSS (repeat for several).
    #[arg(
        long,
        value_name = "PID",
        requires = "etcd",
        conflicts_with_all = ["devnet", "node", "key"]
    )]
    etcd_pid: Vec<u32>,
}

/// How the load goes to ordo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Api {
    /// `application/octet-stream`: each transaction as a little-endian u32 length and its
    /// canonical bytes.
    Binary,
    /// `application/json`: `{"transactions": ["<hex>", …]}`.
    Json,
}

/// How the load goes to etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EtcdApi {
    /// etcd's native gRPC API (`etcdserverpb.KV`), over HTTP/2.
    Grpc,
    /// etcd's JSON gateway (`POST /v3/kv/put`, `/v3/kv/txn`).
    Json,
}

/// How a run ends: the exit code's reason.
pub(crate) enum Failure {
    /// It ran, and not everything was committed (exit 1).
    Incomplete(String),
    /// It could not run (exit 2).
    Setup(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Setup(e)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = if args.txs == 0 || args.batch == 0 || args.concurrency == 0 {
        Err(Failure::Setup(anyhow::anyhow!(
            "--txs, --batch and --concurrency must be at least 1"
        )))
    } else {
        run(args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Incomplete(msg)) => {
            eprintln!("{msg}");
            ExitCode::from(1)
        }
        Err(Failure::Setup(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Setup(e.into()))?;
    if !args.etcd.is_empty() {
        let load = etcd::EtcdLoad {
            urls: args.etcd,
            api: args.etcd_api,
            pids: args.etcd_pid,
            puts: args.txs,
            payload_bytes: args.payload_bytes,
            batch: args.batch,
            concurrency: args.concurrency,
            timeout: Duration::from_secs(args.stall_timeout),
        };
        let json = args.json;
        return runtime.block_on(async move {
            let result = etcd::run(&load).await?;
            report::settle(
                json.as_deref(),
                &result,
                result.committed,
                load.puts,
                "puts acknowledged",
            )
        });
    }
    runtime.block_on(load::run(args))
}
