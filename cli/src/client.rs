//! Commands that talk to a running validator over its HTTP API: `tx submit`, `tx status`,
//! `block get`, `status`, `blocks follow`.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use futures::StreamExt;
use ordo_crypto::load_key_file;
use ordo_ledger::{SignedTransaction, Transaction};
use serde_json::{Value, json};

use crate::output::print_json;
use crate::{CmdResult, Failure};

/// Most transactions per HTTP request when submitting many.
const SUBMIT_CHUNK: usize = 1000;
/// Most transactions one `tx submit` signs and sends.
const SUBMIT_TXS_MAX: usize = 1_000_000;
/// How long `tx submit` keeps retrying while the cluster answers 503.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// Which node to talk to.
#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Base URL of a validator's HTTP API.
    #[arg(
        long,
        value_name = "URL",
        env = "ORDO_NODE",
        default_value = "http://127.0.0.1:8080"
    )]
    pub node: String,
}

/// An error answer from the API, or a transport failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    /// The node answered with an error.
    #[error("{code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable error code.
        code: String,
        /// Message.
        message: String,
        /// The node's Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// The node could not be reached or answered nonsense.
    #[error("{0}")]
    Transport(String),
}

impl ApiFailure {
    fn retryable(&self) -> Option<Duration> {
        match self {
            ApiFailure::Api {
                status: 503,
                retry_after,
                ..
            } => Some(retry_after.unwrap_or(Duration::from_secs(1))),
            ApiFailure::Transport(_) => Some(Duration::from_millis(500)),
            ApiFailure::Api { .. } => None,
        }
    }
}

/// A small JSON client for one node.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> anyhow::Result<Client> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--node must be an http:// URL, got '{base}'");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot create an HTTP client")?;
        Ok(Client { http, base })
    }

    async fn answer(&self, resp: reqwest::Response) -> Result<(u16, Value), ApiFailure> {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = resp.json().await.map_err(|e| {
            ApiFailure::Transport(format!("unreadable answer from {}: {e}", self.base))
        })?;
        if let Some(err) = body.get("error").filter(|_| status >= 400) {
            return Err(ApiFailure::Api {
                status,
                code: err["code"].as_str().unwrap_or("unknown").to_owned(),
                message: err["message"].as_str().unwrap_or("").to_owned(),
                retry_after,
            });
        }
        Ok((status, body))
    }

    async fn send_get(&self, path: &str) -> Result<reqwest::Response, ApiFailure> {
        self.http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(format!("cannot reach {}: {e}", self.base)))
    }

    /// GETs `path` and returns the JSON body.
    pub async fn get(&self, path: &str) -> Result<Value, ApiFailure> {
        let resp = self.send_get(path).await?;
        self.answer(resp).await.map(|(_, v)| v)
    }

    /// POSTs `body` to `path` and returns the status and JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(u16, Value), ApiFailure> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(format!("cannot reach {}: {e}", self.base)))?;
        self.answer(resp).await
    }

    /// POSTs an already encoded JSON body; returns the status and JSON answer.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<(u16, Value), ApiFailure> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(120))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| ApiFailure::Transport(format!("cannot reach {}: {e}", self.base)))?;
        self.answer(resp).await
    }

    /// GETs `path` and returns the body as text (for `/metrics`).
    pub async fn text(&self, path: &str) -> Result<String, ApiFailure> {
        let resp = self.send_get(path).await?.error_for_status().map_err(|e| {
            ApiFailure::Transport(format!("cannot read {path} from {}: {e}", self.base))
        })?;
        resp.text().await.map_err(|e| {
            ApiFailure::Transport(format!("unreadable answer from {}: {e}", self.base))
        })
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Value, ApiFailure> {
        self.get("/v1/status").await
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

fn api_err(e: ApiFailure) -> Failure {
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
            let one = crate::tx::read_payload(
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
    let key = load_key_file(&a.key)?;
    let payloads = a.payload.payloads(a.count as usize)?;
    if payloads.is_empty() {
        return Err(Failure::Usage(anyhow!("nothing to submit")));
    }
    block_on(async move {
        let client = Client::new(&a.node.node)?;
        let status = client.status().await.map_err(api_err)?;
        let chain_id = status["chain_id"].as_str().unwrap_or_default().to_owned();
        let tip = status["tip"]["height"].as_u64().unwrap_or(0);
        let lifetime = status["limits"]["tx_lifetime_blocks"].as_u64().unwrap_or(1);
        let txs: Vec<SignedTransaction> = payloads
            .into_iter()
            .map(|payload| {
                Transaction {
                    chain_id: chain_id.clone(),
                    sender: key.public(),
                    nonce: rand::random(),
                    expires_at: tip + lifetime,
                    payload,
                }
                .sign(&key)
            })
            .collect();
        let mut failed = 0;
        let mut out = Vec::new();
        for chunk in txs.chunks(SUBMIT_CHUNK) {
            let body = json!({
                "transactions": chunk.iter().map(|t| hex::encode(t.to_bytes())).collect::<Vec<_>>(),
                "wait": a.wait,
                "timeout_ms": a.timeout * 1000,
            });
            let answer = post_with_retry(&client, &body, Duration::from_secs(a.timeout + 10))
                .await
                .map_err(api_err)?;
            for r in answer["results"].as_array().cloned().unwrap_or_default() {
                if r.get("error").is_some() || (a.wait && r["status"] != "committed") {
                    failed += 1;
                }
                out.push(r);
            }
        }
        if a.json {
            print_json(&out)?;
        } else {
            for r in &out {
                let id = r["id"].as_str().unwrap_or("-");
                match (&r["error"], r["status"].as_str()) {
                    (Value::Object(e), _) => println!(
                        "{id}  error {}: {}",
                        e["code"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    ),
                    (_, Some("committed")) => println!(
                        "{id}  committed  height {}  index {}  block {}",
                        r["height"],
                        r["index"],
                        r["block_hash"].as_str().unwrap_or("")
                    ),
                    (_, Some(s)) => println!("{id}  {s}"),
                    _ => println!("{id}  ?"),
                }
            }
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

/// POSTs a submission, retrying while the cluster answers 503 (no leader, busy) or cannot
/// be reached, for up to [`RETRY_FOR`]. Resubmitting the same signed transaction is safe:
/// it is either pending or committed once.
async fn post_with_retry(
    client: &Client,
    body: &Value,
    timeout: Duration,
) -> Result<Value, ApiFailure> {
    let give_up = tokio::time::Instant::now() + RETRY_FOR;
    loop {
        match client.post("/v1/transactions", body, timeout).await {
            Ok((_, v)) => return Ok(v),
            Err(e) => match e.retryable() {
                Some(pause) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::info!(error = %e, "retrying");
                    tokio::time::sleep(pause).await;
                }
                _ => return Err(e),
            },
        }
    }
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The transaction id (64 hex digits).
    #[arg(long, value_name = "HEX")]
    id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn tx_status(a: StatusArgs) -> CmdResult {
    block_on(async move {
        let client = Client::new(&a.node.node)?;
        let v = client
            .get(&format!("/v1/transactions/{}", a.id.trim()))
            .await
            .map_err(api_err)?;
        if a.json {
            print_json(&v)?;
        } else if v["status"] == "committed" {
            println!("id        {}", v["id"].as_str().unwrap_or(""));
            println!("status    committed");
            println!("height    {}", v["height"]);
            println!("index     {}", v["index"]);
            println!("block     {}", v["block_hash"].as_str().unwrap_or(""));
            println!("tx_root   {}", v["tx_root"].as_str().unwrap_or(""));
            println!(
                "proof     {} siblings",
                v["proof"]["path"].as_array().map_or(0, Vec::len)
            );
        } else {
            println!(
                "{}  {}",
                v["id"].as_str().unwrap_or(""),
                v["status"].as_str().unwrap_or("?")
            );
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
    block: String,
    /// List the transactions' ids.
    #[arg(long)]
    txs: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn block_get(a: BlockGetArgs) -> CmdResult {
    block_on(async move {
        let client = Client::new(&a.node.node)?;
        let v = client
            .get(&format!("/v1/blocks/{}?txs={}", a.block.trim(), a.json))
            .await
            .map_err(api_err)?;
        if a.json {
            print_json(&v)?;
            return Ok(());
        }
        for field in [
            "height",
            "hash",
            "prev_hash",
            "tx_root",
            "n_txs",
            "timestamp_ms",
            "proposer",
            "term",
            "bytes",
        ] {
            println!(
                "{field:<13}{}",
                v[field]
                    .as_str()
                    .map_or_else(|| v[field].to_string(), str::to_owned)
            );
        }
        if a.txs {
            for (i, id) in v["tx_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                println!("{i:>6} {}", id.as_str().unwrap_or(""));
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
        let client = Client::new(&a.node.node)?;
        let v = client.status().await.map_err(api_err)?;
        if a.json {
            print_json(&v)?;
            return Ok(());
        }
        println!("chain     {}", v["chain_id"].as_str().unwrap_or(""));
        println!(
            "node      {} ({})",
            v["node"]["name"].as_str().unwrap_or(""),
            v["node"]["public_key"].as_str().unwrap_or("")
        );
        println!(
            "role      {} (term {})",
            v["role"].as_str().unwrap_or(""),
            v["term"]
        );
        println!(
            "leader    {}",
            v["leader"]["name"].as_str().unwrap_or("(none)")
        );
        println!(
            "tip       {} {}",
            v["tip"]["height"],
            v["tip"]["hash"].as_str().unwrap_or("")
        );
        let peers: Vec<&str> = v["peers"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        println!(
            "peers     {}",
            if peers.is_empty() {
                "(none)".to_owned()
            } else {
                peers.join(", ")
            }
        );
        println!(
            "mempool   {} txs, {} bytes",
            v["mempool"]["txs"], v["mempool"]["bytes"]
        );
        Ok(())
    })
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
        let client = Client::new(&a.node.node)?;
        let mut url = format!("{}/v1/blocks/stream", client.base);
        if let Some(from) = a.from {
            url.push_str(&format!("?from={from}"));
        }
        let resp = client.http.get(&url).send().await.map_err(|e| {
            api_err(ApiFailure::Transport(format!(
                "cannot reach {}: {e}",
                client.base
            )))
        })?;
        if !resp.status().is_success() {
            return Err(api_err(client.answer(resp).await.err().unwrap_or_else(
                || ApiFailure::Transport("unexpected answer".into()),
            )));
        }
        let mut body = resp.bytes_stream();
        let mut events = SseReader::default();
        let mut shown = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| api_err(ApiFailure::Transport(format!("stream ended: {e}"))))?;
            for data in events.feed(&chunk) {
                let v: Value =
                    serde_json::from_str(&data).context("the stream sent a bad event")?;
                if a.json {
                    println!("{data}");
                } else {
                    println!(
                        "{:>8}  {}  {:>5} txs  term {}",
                        v["height"],
                        v["hash"].as_str().unwrap_or(""),
                        v["n_txs"],
                        v["term"]
                    );
                }
                shown += 1;
                if a.limit.is_some_and(|l| shown >= l) {
                    return Ok(());
                }
            }
        }
        Err(Failure::Negative("the node closed the stream".into()))
    })
}

/// Splits a server-sent-event byte stream into the `data` of each event.
#[derive(Default)]
pub struct SseReader {
    buf: String,
}

impl SseReader {
    /// Takes the next bytes; returns the data of every event they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let event: String = self.buf.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if !data.is_empty() {
                out.push(data);
            }
        }
        out
    }
}
