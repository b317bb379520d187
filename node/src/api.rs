//! The client API: JSON over HTTP (axum). `docs/api.md` documents every route and error.
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a stable `code`: 4xx for
//! bad input, 404 for unknown ids, 409 for duplicates, 413 for oversize bodies, and 503 with
//! `Retry-After` when there is no leader, the leader is unreachable or the mempool is full.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures::StreamExt;
use ordo_crypto::Hash;
use ordo_ledger::{Block, SignedTransaction, TxError, TxId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::consensus::{self, AppliedBlock, Role};
use crate::mempool::AdmitError;
use crate::validator::{Committed, Shared, SubmitError};

/// Largest request body.
pub const BODY_BYTES_MAX: usize = 32 << 20;
/// Most transactions in one submission.
pub const SUBMIT_TXS_MAX: usize = 10_000;
/// Longest a submission may wait for its commit.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// Default wait for a commit.
pub const WAIT_DEFAULT: Duration = Duration::from_secs(10);
/// Most block streams open at once.
pub const STREAMS_MAX: usize = 256;
/// Seconds a client is told to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

#[derive(Clone)]
struct Api {
    shared: Arc<Shared>,
    streams: Arc<Semaphore>,
}

/// The API's routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Api {
        shared,
        streams: Arc::new(Semaphore::new(STREAMS_MAX)),
    };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/{id}", get(transaction))
        .route("/v1/blocks/stream", get(stream_blocks))
        .route("/v1/blocks/{id}", get(block))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(refuse_oversize))
        .with_state(api)
}

/// Answers 413 at once when the declared body is over the limit, before reading it.
async fn refuse_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > BODY_BYTES_MAX as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body is larger than {BODY_BYTES_MAX} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Serves the API on `listener` until the node stops; requests in progress finish first.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let mut stopping = shared.stopping.clone();
    let app = router(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP API stopped");
    }
}

/// An error answer: status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({ "error": self.json() }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is larger than {BODY_BYTES_MAX} bytes"),
            );
        }
        ApiError::bad("malformed", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad("malformed", r.body_text())
    }
}

impl From<&SubmitError> for ApiError {
    fn from(e: &SubmitError) -> ApiError {
        let msg = e.to_string();
        match e {
            SubmitError::Admit(a) => match a {
                AdmitError::Invalid { error, .. } => {
                    let (status, code) = match error {
                        TxError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
                        TxError::WrongChain { .. } => (StatusCode::BAD_REQUEST, "wrong_chain"),
                        TxError::UnknownSender(_) => (StatusCode::FORBIDDEN, "unknown_sender"),
                        TxError::Expired { .. } => (StatusCode::BAD_REQUEST, "expired"),
                        TxError::ExpiryTooFar { .. } => (StatusCode::BAD_REQUEST, "expiry_too_far"),
                        TxError::Duplicate { .. } => (StatusCode::BAD_REQUEST, "malformed"),
                        TxError::BadSignature => (StatusCode::BAD_REQUEST, "bad_signature"),
                    };
                    ApiError::new(status, code, msg)
                }
                AdmitError::AlreadyPending(_) => {
                    ApiError::new(StatusCode::CONFLICT, "already_pending", msg)
                }
                AdmitError::AlreadyCommitted { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "already_committed", msg)
                }
                AdmitError::Busy { .. } => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg)
                }
            },
            SubmitError::Refused(_) => ApiError::bad("refused", msg),
            SubmitError::LeaderBusy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg),
            SubmitError::NoLeader => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", msg)
            }
            SubmitError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg)
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

async fn health(State(api): State<Api>) -> ApiResult {
    let stopping = *api.shared.stopping.borrow();
    health_of(stopping, &consensus::status(&api.shared.raft))?;
    Ok(Json(json!({ "status": "ok" })).into_response())
}

/// The node is healthy while it is not stopping and its Raft runs: a node whose Raft has
/// stopped (a fatal storage error, such as a full disk) still serves reads, but orders
/// nothing more.
fn health_of(stopping: bool, raft: &consensus::RaftStatus) -> Result<(), ApiError> {
    if stopping {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        ));
    }
    if consensus_stopped(raft) {
        let why = raft.failure.as_deref().unwrap_or("it was shut down");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "consensus_stopped",
            format!("consensus has stopped: {why}"),
        ));
    }
    Ok(())
}

/// Raft has stopped: on a fatal error, or shut down.
fn consensus_stopped(raft: &consensus::RaftStatus) -> bool {
    raft.failure.is_some() || raft.role == Role::Shutdown
}

async fn status(State(api): State<Api>) -> ApiResult {
    let s = &api.shared;
    let m = consensus::status(&s.raft);
    let tip = *s.tip.borrow();
    let leader = m
        .leader
        .and_then(|id| s.validator(id))
        .map(|(name, key)| json!({ "name": name, "public_key": key.to_string() }));
    let peers: Vec<Value> = s
        .network
        .connected()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            let name = s
                .genesis
                .validator(k)
                .map_or_else(String::new, |v| v.name.clone());
            json!({ "name": name, "public_key": k.to_string() })
        })
        .collect();
    let (txs, bytes) = {
        let pool = s.mempool.lock().expect("mempool lock poisoned");
        (pool.len(), pool.bytes())
    };
    Ok(Json(json!({
        "chain_id": s.policy.chain_id,
        "genesis_hash": s.policy.genesis_hash.to_string(),
        "node": {
            "name": s.name,
            "public_key": s.public_key.to_string(),
            "node_id": s.node_id,
        },
        "role": m.role.as_str(),
        "term": m.term,
        "leader": leader,
        "tip": { "height": tip.height, "hash": tip.hash.to_string() },
        "raft": {
            "last_log_index": m.last_log_index,
            "committed": m.committed,
            "applied": m.applied,
            "snapshot": m.snapshot,
            "purged": m.purged,
        },
        "peers": peers,
        "mempool": { "txs": txs, "bytes": bytes },
        "limits": s.policy.limits,
        "uptime_s": s.started.elapsed().as_secs(),
    }))
    .into_response())
}

async fn metrics(State(api): State<Api>) -> Response {
    let s = &api.shared;
    let m = consensus::status(&s.raft);
    let (txs, bytes) = {
        let pool = s.mempool.lock().expect("mempool lock poisoned");
        (pool.len(), pool.bytes())
    };
    let peers = s.network.connected().map_or(0, |p| p.len());
    let c = &s.counters;
    let net = s.network.stats();
    let pre = &s.prechecked.stats;
    let rows: [(&str, &str, &str, u64); 20] = [
        (
            "ordo_consensus_running",
            "gauge",
            "1 while Raft runs; 0 once it has stopped (a fatal storage error, or shutdown).",
            u64::from(!consensus_stopped(&m)),
        ),
        (
            "ordo_tip_height",
            "gauge",
            "Height of the last applied block.",
            s.tip.borrow().height,
        ),
        ("ordo_raft_term", "gauge", "Current Raft term.", m.term),
        (
            "ordo_is_leader",
            "gauge",
            "1 when this node leads.",
            u64::from(m.role == Role::Leader),
        ),
        (
            "ordo_raft_last_log_index",
            "gauge",
            "Index of the last Raft log entry.",
            m.last_log_index.unwrap_or(0),
        ),
        (
            "ordo_mempool_txs",
            "gauge",
            "Pending transactions.",
            txs as u64,
        ),
        (
            "ordo_mempool_bytes",
            "gauge",
            "Pending transaction bytes.",
            bytes,
        ),
        (
            "ordo_peers_connected",
            "gauge",
            "Validators connected.",
            peers as u64,
        ),
        (
            "ordo_waiting_clients",
            "gauge",
            "Clients waiting for a commit.",
            s.waiting() as u64,
        ),
        (
            "ordo_txs_accepted_total",
            "counter",
            "Transactions accepted by this node's API.",
            c.txs_accepted.load(Ordering::Relaxed),
        ),
        (
            "ordo_txs_refused_total",
            "counter",
            "Transactions refused by this node's API.",
            c.txs_refused.load(Ordering::Relaxed),
        ),
        (
            "ordo_txs_forwarded_total",
            "counter",
            "Transactions forwarded to the leader.",
            c.txs_forwarded.load(Ordering::Relaxed),
        ),
        (
            "ordo_blocks_proposed_total",
            "counter",
            "Blocks this node proposed that committed.",
            c.blocks_proposed.load(Ordering::Relaxed),
        ),
        (
            "ordo_proposals_failed_total",
            "counter",
            "Blocks this node proposed that did not commit.",
            c.proposals_failed.load(Ordering::Relaxed),
        ),
        (
            "ordo_txs_announced_total",
            "counter",
            "Transactions announced to followers as admitted (once per follower).",
            pre.announced.load(Ordering::Relaxed),
        ),
        (
            "ordo_txs_prechecked_total",
            "counter",
            "Transaction signatures verified ahead of their block (as follower).",
            pre.checked.load(Ordering::Relaxed),
        ),
        (
            "ordo_block_signatures_prechecked_total",
            "counter",
            "Block transaction signatures not verified again because they were prechecked.",
            pre.hits.load(Ordering::Relaxed),
        ),
        (
            "ordo_announcements_dropped_total",
            "counter",
            "Announcements dropped (a full outbox or queue, not delivered, not from the leader, undecodable or failing).",
            pre.dropped.load(Ordering::Relaxed),
        ),
        (
            "ordo_refused_connections_total",
            "counter",
            "Connections refused (not a validator, or over limits).",
            net.refused_connections.load(Ordering::Relaxed),
        ),
        (
            "ordo_dropped_requests_total",
            "counter",
            "Peer requests dropped because the node was overloaded.",
            net.dropped_requests.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    s.timings.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// How transactions are encoded in a submission.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    /// One transaction (the answer's status is this transaction's).
    transaction: Option<String>,
    /// A batch (the answer lists one result per transaction).
    transactions: Option<Vec<String>>,
    #[serde(default)]
    encoding: Encoding,
    /// Wait until each accepted transaction is committed.
    #[serde(default)]
    wait: bool,
    /// How long to wait, in milliseconds.
    timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct TxResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<TxId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    committed: Option<Committed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

impl TxResult {
    fn error(id: Option<TxId>, e: &ApiError) -> TxResult {
        TxResult {
            id,
            status: None,
            committed: None,
            error: Some(e.json()),
        }
    }
}

fn decode_tx(text: &str, encoding: Encoding, max: u64) -> Result<SignedTransaction, ApiError> {
    let text = text.trim();
    // Hex doubles the size and base64 adds a third: refuse before decoding.
    if text.len() as u64 > max.saturating_mul(2).saturating_add(8) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("transaction is larger than {max} bytes"),
        ));
    }
    let bytes = match encoding {
        Encoding::Hex => {
            hex::decode(text).map_err(|e| ApiError::bad("malformed", format!("not hex: {e}")))?
        }
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ApiError::bad("malformed", format!("not base64: {e}")))?,
    };
    if bytes.len() as u64 > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("transaction is {} bytes, limit is {max}", bytes.len()),
        ));
    }
    SignedTransaction::from_bytes(&bytes, max)
        .map_err(|e| ApiError::bad("malformed", format!("not a signed transaction: {e}")))
}

/// Query parameters of a binary submission (a JSON submission carries them in its body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BinaryQuery {
    /// Wait until each accepted transaction is committed.
    wait: Option<bool>,
    /// How long to wait, in milliseconds.
    timeout_ms: Option<u64>,
}

/// Media type of a binary submission: length-prefixed canonical transactions.
pub const BINARY_SUBMISSION: &str = "application/octet-stream";

fn is_binary(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(BINARY_SUBMISSION))
}

/// Splits a binary submission body into its transactions: each is a little-endian `u32`
/// length and that many bytes of canonical encoding. A frame that does not decode, or is
/// over `max` bytes, gets its own error; a body that does not split into frames is refused.
fn split_frames(
    body: &[u8],
    max: u64,
) -> Result<Vec<Result<SignedTransaction, ApiError>>, ApiError> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if out.len() >= SUBMIT_TXS_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a submission holds 1 to {SUBMIT_TXS_MAX} transactions"),
            ));
        }
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .map(|(len, tail)| (u32::from_le_bytes(*len) as usize, tail))
            .ok_or_else(|| {
                ApiError::bad("malformed", "binary submission ends inside a length prefix")
            })?;
        if len > tail.len() {
            return Err(ApiError::bad(
                "malformed",
                format!(
                    "binary submission frame {} declares {len} bytes, {} remain",
                    out.len(),
                    tail.len()
                ),
            ));
        }
        let (frame, tail) = tail.split_at(len);
        out.push(if len as u64 > max {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("transaction is {len} bytes, limit is {max}"),
            ))
        } else {
            SignedTransaction::from_bytes(frame, max)
                .map_err(|e| ApiError::bad("malformed", format!("not a signed transaction: {e}")))
        });
        rest = tail;
    }
    if out.is_empty() {
        return Err(ApiError::bad("malformed", "the submission is empty"));
    }
    Ok(out)
}

/// `POST /v1/transactions`: a JSON body (`application/json`), or length-prefixed
/// canonical transactions (`application/octet-stream`, with `wait` and `timeout_ms` in the
/// query string).
async fn submit(State(api): State<Api>, req: axum::extract::Request) -> ApiResult {
    use axum::extract::FromRequest;
    if *api.shared.stopping.borrow() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the node is shutting down",
        ));
    }
    // Refused at the door, before reading or decoding anything, when the node is saturated.
    let Some(turn) = api.shared.admission_turn().await else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "the node is admitting as many submissions as it can (or its mempool, or its leader's, is full); retry later",
        ));
    };
    let max = api.shared.policy.limits.tx_bytes_max;
    let (decoded, single, wait, timeout_ms) = if is_binary(&req) {
        let Query(q) = Query::<BinaryQuery>::try_from_uri(req.uri())?;
        let body = axum::body::Bytes::from_request(req, &())
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "too_large",
                        format!("request body is larger than {BODY_BYTES_MAX} bytes"),
                    )
                } else {
                    ApiError::bad("malformed", r.body_text())
                }
            })?;
        (
            split_frames(&body, max)?,
            false,
            q.wait.unwrap_or(false),
            q.timeout_ms,
        )
    } else {
        let Json(req) = Json::<SubmitRequest>::from_request(req, &()).await?;
        let (texts, single) = match (req.transaction, req.transactions) {
            (Some(t), None) => (vec![t], true),
            (None, Some(ts)) => (ts, false),
            _ => {
                return Err(ApiError::bad(
                    "malformed",
                    "give exactly one of `transaction` or `transactions`",
                ));
            }
        };
        if texts.is_empty() {
            return Err(ApiError::bad("malformed", "`transactions` is empty"));
        }
        if texts.len() > SUBMIT_TXS_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "a submission holds 1 to {SUBMIT_TXS_MAX} transactions, not {}",
                    texts.len()
                ),
            ));
        }
        let decoded = texts
            .iter()
            .map(|t| decode_tx(t, req.encoding, max))
            .collect();
        (decoded, single, req.wait, req.timeout_ms)
    };
    let timeout = timeout_ms
        .map_or(WAIT_DEFAULT, Duration::from_millis)
        .min(WAIT_MAX);

    // Submit what decodes.
    let mut errors = Vec::new();
    let mut results: Vec<Option<TxResult>> = Vec::with_capacity(decoded.len());
    let mut txs = Vec::new();
    for d in decoded {
        match d {
            Ok(tx) => {
                txs.push(tx);
                results.push(None);
            }
            Err(e) => {
                if single {
                    return Err(e);
                }
                results.push(Some(TxResult::error(None, &e)));
                errors.push(e);
            }
        }
    }
    let (ids, submitted) = api.shared.submit(txs).await;
    // Admitted: waiting for commits below must not hold up other clients' admissions.
    drop(turn);
    let mut outcome = submitted.iter().zip(&ids);
    let mut accepted = Vec::new();
    for (slot, r) in results.iter_mut().enumerate() {
        if r.is_some() {
            continue;
        }
        let (res, id) = outcome
            .next()
            .expect("one result per submitted transaction");
        *r = Some(match res {
            Ok(_) => {
                accepted.push(slot);
                TxResult {
                    id: Some(*id),
                    status: Some("pending"),
                    committed: None,
                    error: None,
                }
            }
            Err(e) => {
                let e = ApiError::from(e);
                let r = TxResult::error(Some(*id), &e);
                errors.push(e);
                r
            }
        });
    }
    let mut results: Vec<TxResult> = results.into_iter().map(|r| r.expect("filled")).collect();
    if single && let Some(e) = errors.pop() {
        return Err(e);
    }
    if accepted.is_empty()
        && !errors.is_empty()
        && errors
            .iter()
            .all(|e| e.status == StatusCode::SERVICE_UNAVAILABLE)
    {
        return Err(errors.swap_remove(0));
    }
    if wait {
        let waits = accepted.iter().map(|slot| {
            let id = results[*slot].id.expect("accepted results carry their id");
            let shared = api.shared.clone();
            async move { (*slot, shared.wait_committed(id, timeout).await) }
        });
        for (slot, waited) in futures::future::join_all(waits).await {
            match waited {
                Ok(Some(c)) => {
                    results[slot].status = Some("committed");
                    results[slot].committed = Some(c);
                }
                Ok(None) => results[slot].status = Some("pending"),
                Err(e) => {
                    let e = ApiError::from(&SubmitError::Admit(e));
                    if single {
                        return Err(e);
                    }
                    results[slot].status = None;
                    results[slot].error = Some(e.json());
                }
            }
        }
        if single && results[0].status == Some("pending") {
            let mut resp = Json(&results[0]).into_response();
            *resp.status_mut() = StatusCode::ACCEPTED;
            return Ok(resp);
        }
    }
    if single {
        return Ok(Json(&results[0]).into_response());
    }
    Ok(Json(Results { results: &results }).into_response())
}

/// A batch submission's answer.
#[derive(Serialize)]
struct Results<'a> {
    results: &'a [TxResult],
}

fn parse_id(text: &str) -> Result<Hash, ApiError> {
    text.parse::<Hash>()
        .map_err(|_| ApiError::bad("malformed", format!("'{text}' is not a 64-digit hex id")))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

async fn transaction(State(api): State<Api>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id)?;
    let shared = api.shared.clone();
    let found = tokio::task::spawn_blocking(move || shared.store.tx_with_proof(&id))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    if let Some(inc) = found {
        return Ok(Json(json!({
            "id": inc.id.to_string(),
            "status": "committed",
            "height": inc.height,
            "index": inc.index,
            "block_hash": inc.block_hash.to_string(),
            "tx_root": inc.tx_root.to_string(),
            "proof": inc.proof,
            "transaction": inc.tx,
        }))
        .into_response());
    }
    if api
        .shared
        .mempool
        .lock()
        .expect("mempool lock poisoned")
        .contains(&id)
    {
        return Ok(Json(json!({ "id": id.to_string(), "status": "pending" })).into_response());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("transaction {id} is neither committed nor pending on this node"),
    ))
}

/// A block as JSON: header fields, hash, signature and transactions with their ids.
pub fn block_json(block: &Block, with_txs: bool) -> Value {
    block_json_with(block, &block.hash(), &block.tx_ids(), with_txs)
}

/// As [`block_json`], given the block's hash and transaction ids.
fn block_json_with(block: &Block, hash: &Hash, ids: &[TxId], with_txs: bool) -> Value {
    let h = &block.header;
    let mut v = json!({
        "height": h.height,
        "hash": hash.to_string(),
        "prev_hash": h.prev_hash.to_string(),
        "chain_id": h.chain_id,
        "tx_root": h.tx_root.to_string(),
        "n_txs": h.n_txs,
        "timestamp_ms": h.timestamp_ms,
        "proposer": h.proposer.to_string(),
        "term": h.term,
        "signature": block.signature.to_string(),
        "bytes": block.encoded_len(),
    });
    if with_txs {
        v["transactions"] = block
            .txs
            .iter()
            .zip(ids)
            .map(|(tx, id)| json!({ "id": id.to_string(), "tx": tx.tx, "signature": tx.signature.to_string() }))
            .collect();
    } else {
        v["tx_ids"] = ids.iter().map(|id| Value::String(id.to_string())).collect();
    }
    v
}

#[derive(Debug, Deserialize)]
struct BlockQuery {
    /// Include whole transactions (default) or only their ids.
    txs: Option<bool>,
}

async fn block(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<Query<BlockQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let shared = api.shared.clone();
    let found = if id == "latest" {
        let height = shared.tip.borrow().height;
        tokio::task::spawn_blocking(move || shared.store.block(height)).await
    } else if let Ok(height) = id.parse::<u64>() {
        tokio::task::spawn_blocking(move || shared.store.block(height)).await
    } else {
        let hash = parse_id(&id)?;
        tokio::task::spawn_blocking(move || shared.store.block_by_hash(&hash)).await
    }
    .map_err(internal)?
    .map_err(internal)?;
    match found {
        Some(b) => Ok(Json(block_json(&b, q.txs.unwrap_or(true))).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no block {id} on this node"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    /// First height to send (default: the next block).
    from: Option<u64>,
    /// Include whole transactions instead of only their ids.
    txs: Option<bool>,
}

/// Media type of the binary block stream: committed transaction ids, block by block.
pub const BINARY_STREAM: &str = "application/octet-stream";

/// Bytes of one block's frame in the binary stream before its ids: height (`u64`), block
/// hash (32 bytes), number of ids (`u32`).
pub const STREAM_FRAME_HEAD: usize = 8 + 32 + 4;

/// One block's frame in the binary stream: little-endian height, the block hash, the
/// little-endian number of transactions, then each transaction id, in block order.
pub fn stream_frame(height: u64, hash: &Hash, ids: &[TxId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STREAM_FRAME_HEAD + 32 * ids.len());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(hash.as_bytes());
    // verify_block bounds the count far below u32::MAX.
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        out.extend_from_slice(id.as_bytes());
    }
    out
}

fn accepts_binary(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .filter_map(|m| m.split(';').next())
                .any(|m| m.trim().eq_ignore_ascii_case(BINARY_STREAM))
        })
}

/// `GET /v1/blocks/stream`: server-sent events of JSON blocks, or with
/// `Accept: application/octet-stream` a binary stream of each block's transaction ids.
async fn stream_blocks(
    State(api): State<Api>,
    headers: axum::http::HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = query?;
    let binary = accepts_binary(&headers);
    let with_txs = q.txs.unwrap_or(false);
    if binary && with_txs {
        return Err(ApiError::bad(
            "malformed",
            "the binary block stream carries transaction ids only; ask for JSON to get `txs=true`",
        ));
    }
    let permit = api.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{STREAMS_MAX} block streams are open already"),
        )
    })?;
    let shared = api.shared.clone();
    let from = q
        .from
        .unwrap_or_else(|| shared.tip.borrow().height + 1)
        .max(1);
    let blocks = applied_blocks(shared, from, permit);
    if binary {
        let frames = blocks.map(|(height, b)| {
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(stream_frame(
                height, &b.hash, &b.ids,
            )))
        });
        let mut resp = axum::body::Body::from_stream(frames).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(BINARY_STREAM),
        );
        return Ok(resp);
    }
    let events = blocks.map(move |(height, b)| {
        Event::default()
            .event("block")
            .id(height.to_string())
            .json_data(block_json_with(&b.block, &b.hash, &b.ids, with_txs))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The applied blocks from height `from` on, as they are applied, until the node stops
/// (holding a stream permit while it runs).
fn applied_blocks(
    shared: Arc<Shared>,
    from: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures::Stream<Item = (u64, AppliedBlock)> {
    let state = (
        from,
        shared.tip.clone(),
        shared.stopping.clone(),
        shared,
        permit,
    );
    futures::stream::unfold(
        state,
        |(next, mut tip, mut stopping, shared, permit)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                if next <= tip.borrow().height {
                    let applied = match shared.recent.get(next) {
                        Some(b) => Some(b),
                        None => {
                            let shared = shared.clone();
                            tokio::task::spawn_blocking(move || shared.applied_block(next))
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .flatten()
                        }
                    };
                    return applied.map(|b| ((next, b), (next + 1, tip, stopping, shared, permit)));
                }
                tokio::select! {
                    changed = tip.changed() => if changed.is_err() { return None },
                    _ = stopping.wait_for(|s| *s) => return None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(role: Role) -> consensus::RaftStatus {
        consensus::RaftStatus {
            role,
            term: 3,
            leader: Some(1),
            last_log_index: Some(10),
            committed: Some(10),
            applied: Some(10),
            snapshot: None,
            purged: None,
            failure: None,
        }
    }

    #[test]
    fn the_binary_stream_is_chosen_by_accept_and_frames_a_block_as_documented() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!accepts_binary(&headers));
        for accept in [
            "application/octet-stream",
            "text/event-stream, Application/Octet-Stream;q=0.9",
        ] {
            headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
            assert!(accepts_binary(&headers), "{accept}");
        }
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        assert!(!accepts_binary(&headers));

        let frame = stream_frame(0x0102, &Hash([9; 32]), &[Hash([1; 32]), Hash([2; 32])]);
        assert_eq!(frame.len(), STREAM_FRAME_HEAD + 64);
        assert_eq!(frame[..8], [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame[8..40], [9; 32]);
        assert_eq!(frame[40..44], [2, 0, 0, 0]);
        assert_eq!(frame[44..76], [1; 32]);
        assert_eq!(frame[76..], [2; 32]);
    }

    #[test]
    fn health_fails_once_raft_has_stopped_or_the_node_stops() {
        for role in [Role::Leader, Role::Follower, Role::Candidate, Role::Learner] {
            assert!(health_of(false, &running(role)).is_ok(), "{role:?}");
            let e = health_of(true, &running(role)).expect_err("stopping");
            assert_eq!(
                (e.status, e.code),
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            );
        }
        let e = health_of(false, &running(Role::Shutdown)).expect_err("shut down");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "consensus_stopped")
        );
        let failed = consensus::RaftStatus {
            failure: Some("storage error: No space left on device".into()),
            ..running(Role::Follower)
        };
        let e = health_of(false, &failed).expect_err("failed");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "consensus_stopped")
        );
        assert!(
            e.message.contains("No space left on device"),
            "{}",
            e.message
        );
    }
}
