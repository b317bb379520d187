//! Commands that talk to a running validator over its HTTP API, through `ordo-client`:
//! `tx submit`, `tx status`, `block get`, `blocks follow`, `status`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use ordo_client::api::{BlockId, BlockJson, Status, TxResult, TxState, TxStatus};
use ordo_client::{Client, ClientError, Signer, SubmitOptions, Wire};
use ordo_ledger::TxId;

use crate::failure::{CmdResult, Failure};
use crate::output::print_json;

/// Most transactions per HTTP request when submitting many.
const SUBMIT_CHUNK: usize = 1000;
/// Most transactions one `tx submit` signs and sends.
const SUBMIT_TXS_MAX: usize = 1_000_000;

/// Which node to talk to, and how.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Base URL of a validator's HTTP API (http:// or https://).
    #[arg(
        long,
        value_name = "URL",
        env = "ORDO_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub node: String,
    /// Also trust the CA certificate(s) in this PEM file for https:// URLs (beside the
    /// system's roots).
    #[arg(long, value_name = "FILE", env = "ORDO_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl NodeArgs {
    /// A client for the node.
    pub fn client(&self) -> anyhow::Result<Client> {
        let mut builder = Client::builder(&self.node);
        if let Some(path) = &self.ca_cert {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            builder = builder.ca_certificate_pem(&pem);
        }
        builder.build().context("--node")
    }
}

/// Runs an async command on a fresh runtime.
pub fn block_on<F: std::future::Future<Output = CmdResult>>(f: F) -> CmdResult {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

pub fn api_err(e: ClientError) -> Failure {
    Failure::Negative(format!("error: {e}"))
}

#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The client's key file (a client listed in the genesis).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    payload: SubmitPayload,
    /// Submit this many transactions with the payload, each with its own nonce.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    count: u64,
    /// Wait until each transaction is committed and print where.
    #[arg(long)]
    wait: bool,
    /// How long to wait for commits, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    timeout: u64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct SubmitPayload {
    /// The payload, as UTF-8 text.
    #[arg(long)]
    payload: Option<String>,
    /// The payload, as hex.
    #[arg(long, value_name = "HEX")]
    payload_hex: Option<String>,
    /// Read one payload's bytes from a file.
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// One transaction per line of this file ('-' for stdin), the line's text as payload.
    #[arg(long, value_name = "FILE")]
    lines: Option<PathBuf>,
}

impl SubmitPayload {
    fn payloads(&self, count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        let Some(path) = &self.lines else {
            let one = crate::payload::read_payload(
                self.payload.as_deref(),
                self.payload_hex.as_deref(),
                self.payload_file.as_deref(),
            )?;
            return Ok(vec![one; count]);
        };
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            ))
        };
        let mut out = Vec::new();
        for line in reader.lines() {
            let line = line.context("cannot read a line")?;
            if !line.is_empty() {
                if out.len() == SUBMIT_TXS_MAX {
                    bail!("more than {SUBMIT_TXS_MAX} lines; split the input");
                }
                out.push(line.into_bytes());
            }
        }
        Ok(out)
    }
}

pub fn submit(a: SubmitArgs) -> CmdResult {
    let key = ordo_crypto::load_key_file(&a.key)?;
    let payloads = a.payload.payloads(a.count as usize)?;
    if payloads.is_empty() {
        return Err(Failure::Usage(anyhow!("nothing to submit")));
    }
    block_on(async move {
        let client = a.node.client()?;
        let signer = Signer::connect(key, &client).await.map_err(api_err)?;
        let opts = SubmitOptions {
            wait: a.wait.then(|| Duration::from_secs(a.timeout)),
            wire: Wire::Json,
        };
        let mut out: Vec<TxResult> = Vec::with_capacity(payloads.len());
        for chunk in payloads.chunks(SUBMIT_CHUNK) {
            let txs: Vec<_> = chunk.iter().map(|p| signer.sign(p.clone())).collect();
            // The client retries while the cluster answers 503 or cannot be reached.
            let results = client.submit_batch(&txs, &opts).await.map_err(api_err)?;
            out.extend(results);
        }
        let failed = out
            .iter()
            .filter(|r| r.error.is_some() || (a.wait && r.status != Some(TxState::Committed)))
            .count();
        if a.json {
            print_json(&out)?;
        } else {
            out.iter().for_each(print_result);
        }
        if failed > 0 {
            return Err(Failure::Negative(format!(
                "{failed} of {} transactions were not {}",
                out.len(),
                if a.wait { "committed" } else { "accepted" }
            )));
        }
        Ok(())
    })
}

fn print_result(r: &TxResult) {
    let id = r.id.map_or_else(|| "-".to_owned(), |id| id.to_string());
    if let Some(e) = &r.error {
        println!("{id}  error {}: {}", e.code, e.message);
    } else if let Some(c) = r.committed_at() {
        println!(
            "{id}  committed  height {}  index {}  block {}",
            c.height, c.index, c.block_hash
        );
    } else {
        println!("{id}  pending");
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The transaction id (64 hex digits).
    #[arg(long, value_name = "HEX")]
    id: TxId,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn tx_status(a: StatusArgs) -> CmdResult {
    block_on(async move {
        let client = a.node.client()?;
        // A committed answer is checked: the transaction's id and signature, its proof
        // up to the block's root, and the block's header hash.
        let status = client.tx_status_checked(&a.id).await.map_err(api_err)?;
        if a.json {
            print_json(&status)?;
            return Ok(());
        }
        match status {
            TxStatus::Committed(c) => {
                println!("id        {}", c.id);
                println!("status    committed");
                println!("height    {}", c.height);
                println!("index     {}", c.index);
                println!("block     {}", c.block_hash);
                println!("tx_root   {}", c.tx_root);
                println!(
                    "proof     {} siblings; verifies against the block's header",
                    c.proof.path.len()
                );
            }
            TxStatus::Pending { id } => println!("{id}  pending"),
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct BlockGetArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Height, block hash (64 hex digits) or `latest`.
    #[arg(default_value = "latest")]
    block: BlockId,
    /// List the transactions' ids.
    #[arg(long)]
    txs: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn block_get(a: BlockGetArgs) -> CmdResult {
    block_on(async move {
        let client = a.node.client()?;
        let b = client.block(a.block, a.json).await.map_err(api_err)?;
        if a.json {
            print_json(&b)?;
            return Ok(());
        }
        let rows = [
            ("height", b.height.to_string()),
            ("hash", b.hash.to_string()),
            ("prev_hash", b.prev_hash.to_string()),
            ("tx_root", b.tx_root.to_string()),
            ("n_txs", b.n_txs.to_string()),
            ("timestamp_ms", b.timestamp_ms.to_string()),
            ("proposer", b.proposer.to_string()),
            ("term", b.term.to_string()),
            ("bytes", b.bytes.to_string()),
        ];
        for (field, value) in rows {
            println!("{field:<13}{value}");
        }
        if a.txs {
            for (i, id) in b.ids().iter().enumerate() {
                println!("{i:>6} {id}");
            }
        }
        Ok(())
    })
}

#[derive(Args)]
pub struct NodeStatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn node_status(a: NodeStatusArgs) -> CmdResult {
    block_on(async move {
        let client = a.node.client()?;
        let s = client.status().await.map_err(api_err)?;
        if a.json {
            print_json(&s)?;
        } else {
            print_status(&s);
        }
        Ok(())
    })
}

fn print_status(s: &Status) {
    println!("chain     {}", s.chain_id);
    println!("node      {} ({})", s.node.name, s.node.public_key);
    println!("role      {} (term {})", s.role, s.term);
    println!(
        "leader    {}",
        s.leader.as_ref().map_or("(none)", |l| l.name.as_str())
    );
    println!("tip       {} {}", s.tip.height, s.tip.hash);
    println!(
        "certified every block up to {} (by a majority of the validators)",
        s.tip.certified
    );
    let peers: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
    println!(
        "peers     {}",
        if peers.is_empty() {
            "(none)".to_owned()
        } else {
            peers.join(", ")
        }
    );
    println!("mempool   {} txs, {} bytes", s.mempool.txs, s.mempool.bytes);
    if let Some(ms) = s.clock_offset_ms {
        println!(
            "clock     {:+.3} s from the validators' median clock",
            ms as f64 / 1000.0
        );
    }
    println!("version   {} (protocol {})", s.version, s.protocol_version);
}

#[derive(Args)]
pub struct FollowArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// First height to show (default: the next block).
    #[arg(long, value_name = "HEIGHT")]
    from: Option<u64>,
    /// Stop after this many blocks.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Print each block as one JSON line.
    #[arg(long)]
    json: bool,
}

pub fn follow(a: FollowArgs) -> CmdResult {
    block_on(async move {
        let client = a.node.client()?;
        // Resumes by itself after a dropped connection; ends only when the node stays
        // unreachable past the client's retry policy.
        let mut blocks = std::pin::pin!(client.blocks(a.from, false));
        let mut shown = 0u64;
        while let Some(block) = blocks.next().await {
            let block: BlockJson = block.map_err(api_err)?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string(&block).context("encode a block")?
                );
            } else {
                println!(
                    "{:>8}  {}  {:>5} txs  term {}",
                    block.height, block.hash, block.n_txs, block.term
                );
            }
            shown += 1;
            if a.limit.is_some_and(|l| shown >= l) {
                return Ok(());
            }
        }
        Err(Failure::Negative("the block stream ended".into()))
    })
}
