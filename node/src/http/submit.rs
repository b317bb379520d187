//! `POST /v1/transactions`: a JSON body (`application/json`), or length-prefixed canonical
//! transactions (`application/octet-stream`, with `wait` and `timeout_ms` in the query
//! string). Any other `Content-Type` is refused as malformed.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRequest, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ordo_api::submit::{SUBMIT_TXS_MAX, WAIT_DEFAULT_MS, WAIT_MAX_MS};
use ordo_api::{
    BINARY, BinaryFrames, BinaryQuery, Encoding, ErrorCode, SubmitRequest, SubmitResults, TxResult,
    TxState,
};
use ordo_ledger::SignedTransaction;

use super::{Api, ApiError};
use crate::error::SubmitError;

/// A submission, decoded as far as it goes: each transaction or why it did not decode.
struct Decoded {
    txs: Vec<Result<SignedTransaction, ApiError>>,
    /// One transaction (`transaction`): the answer's status is its own.
    single: bool,
    wait: bool,
    timeout: Duration,
}

/// `POST /v1/transactions`.
pub(super) async fn submit(State(api): State<Api>, req: axum::extract::Request) -> Response {
    match submit_inner(api, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn submit_inner(api: Api, req: axum::extract::Request) -> Result<Response, ApiError> {
    let started = Instant::now();
    if api.shared.is_stopping() {
        return Err(ApiError::shutting_down());
    }
    // Refused at the door, before reading or decoding anything, when the node is saturated.
    let Some(turn) = api.shared.admission_turn().await else {
        return Err(ApiError::new(
            ErrorCode::Busy,
            "the node is admitting as many submissions as it can (or its mempool, or its leader's, is full); retry later",
        ));
    };
    let max = api.shared.policy().limits.tx_bytes_max;
    let decoded = if is_binary(&req) {
        decode_binary(req, max).await?
    } else {
        decode_json(req, max).await?
    };
    let (single, wait, timeout) = (decoded.single, decoded.wait, decoded.timeout);
    // The client's time bounds the whole answer: a forward to a leader that does not
    // answer, then the wait for commits.
    let deadline = started + timeout;
    let (mut results, errors, unconfirmed) = admit(&api, decoded.txs, deadline).await;
    // Admitted: waiting for commits below must not hold up other clients' admissions.
    drop(turn);
    if single {
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
    } else if let Some(e) = all_retryable(&results, errors) {
        return Err(e);
    }
    if wait {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_for_commits(&api, &mut results, left, single).await?;
    }
    if single {
        let one = results.swap_remove(0);
        // 202: taken, its commit not seen yet (the wait ran out, or the leader it was
        // forwarded to did not answer); poll it, or resubmit the same bytes.
        let status = if one.status == Some(TxState::Pending) && (wait || unconfirmed) {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        return Ok((status, Json(one)).into_response());
    }
    Ok(Json(SubmitResults { results }).into_response())
}

/// Admits what decoded, forwarding by `deadline`; one result per transaction, the errors
/// among them in order, and whether any was taken unconfirmed (forwarded to a leader that
/// did not answer).
async fn admit(
    api: &Api,
    decoded: Vec<Result<SignedTransaction, ApiError>>,
    deadline: Instant,
) -> (Vec<TxResult>, Vec<ApiError>, bool) {
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
                results.push(Some(TxResult::refused(None, e.0.clone())));
                errors.push(e);
            }
        }
    }
    let (ids, submitted) = if txs.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        api.shared.submit(txs, deadline).await
    };
    let unconfirmed = submitted
        .iter()
        .any(|r| r.as_ref().is_ok_and(|t| !t.confirmed));
    let mut outcome = submitted.iter().zip(&ids);
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                let (res, id) = outcome
                    .next()
                    .expect("one result per submitted transaction");
                match res {
                    Ok(_) => TxResult::pending(*id),
                    Err(e) => {
                        let e = ApiError::from(e);
                        let r = TxResult::refused(Some(*id), e.0.clone());
                        errors.push(e);
                        r
                    }
                }
            })
        })
        .collect();
    (results, errors, unconfirmed)
}

/// When every transaction of a batch was refused for a retryable reason (no leader, busy,
/// unavailable), the first of those errors: the batch is answered with it as a whole, so
/// that it can be retried as it is.
fn all_retryable(results: &[TxResult], errors: Vec<ApiError>) -> Option<ApiError> {
    let accepted = results.iter().any(|r| r.error.is_none());
    if accepted || errors.is_empty() || !errors.iter().all(|e| e.code().is_retryable()) {
        return None;
    }
    errors.into_iter().next()
}

/// Waits for each accepted result's commit (at most `timeout`), and writes where.
async fn wait_for_commits(
    api: &Api,
    results: &mut [TxResult],
    timeout: Duration,
    single: bool,
) -> Result<(), ApiError> {
    let waits = results.iter().enumerate().filter_map(|(slot, r)| {
        let id = r.id.filter(|_| r.status == Some(TxState::Pending))?;
        let shared = api.shared.clone();
        Some(async move { (slot, id, shared.wait_committed(id, timeout).await) })
    });
    for (slot, id, waited) in futures::future::join_all(waits).await {
        match waited {
            Ok(Some(at)) => results[slot] = TxResult::committed(id, at),
            Ok(None) => {}
            Err(e) => {
                let e = ApiError::from(&SubmitError::Admit(e));
                if single {
                    return Err(e);
                }
                results[slot] = TxResult::refused(Some(id), e.0);
            }
        }
    }
    Ok(())
}

fn is_binary(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(BINARY))
}

/// The wait a client asked for: the default when it gave none, clamped to the maximum.
fn wait_timeout(timeout_ms: Option<u64>) -> Duration {
    Duration::from_millis(timeout_ms.unwrap_or(WAIT_DEFAULT_MS).min(WAIT_MAX_MS))
}

async fn decode_binary(req: axum::extract::Request, max: u64) -> Result<Decoded, ApiError> {
    let Query(q) = Query::<BinaryQuery>::try_from_uri(req.uri())?;
    let body = axum::body::Bytes::from_request(req, &()).await?;
    Ok(Decoded {
        txs: split_frames(&body, max)?,
        single: false,
        wait: q.wait.unwrap_or(false),
        timeout: wait_timeout(q.timeout_ms),
    })
}

async fn decode_json(req: axum::extract::Request, max: u64) -> Result<Decoded, ApiError> {
    let Json(req) = Json::<SubmitRequest>::from_request(req, &()).await?;
    let (texts, single) = match (req.transaction, req.transactions) {
        (Some(t), None) => (vec![t], true),
        (None, Some(ts)) => (ts, false),
        _ => {
            return Err(ApiError::malformed(
                "give exactly one of `transaction` or `transactions`",
            ));
        }
    };
    if texts.is_empty() {
        return Err(ApiError::malformed("`transactions` is empty"));
    }
    if texts.len() > SUBMIT_TXS_MAX {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "a submission holds 1 to {SUBMIT_TXS_MAX} transactions, not {}",
                texts.len()
            ),
        ));
    }
    Ok(Decoded {
        txs: texts
            .iter()
            .map(|t| decode_text(t, req.encoding, max))
            .collect(),
        single,
        wait: req.wait,
        timeout: wait_timeout(req.timeout_ms),
    })
}

fn too_large(len: u64, max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::TooLarge,
        format!("transaction is {len} bytes, limit is {max}"),
    )
}

fn decode_bytes(bytes: &[u8], max: u64) -> Result<SignedTransaction, ApiError> {
    if bytes.len() as u64 > max {
        return Err(too_large(bytes.len() as u64, max));
    }
    SignedTransaction::from_bytes(bytes, max)
        .map_err(|e| ApiError::malformed(format!("not a signed transaction: {e}")))
}

fn decode_text(text: &str, encoding: Encoding, max: u64) -> Result<SignedTransaction, ApiError> {
    let text = text.trim();
    // Hex doubles the size and base64 adds a third: refuse before decoding.
    if text.len() as u64 > max.saturating_mul(2).saturating_add(8) {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("transaction is larger than {max} bytes"),
        ));
    }
    let bytes = match encoding {
        Encoding::Hex => {
            hex::decode(text).map_err(|e| ApiError::malformed(format!("not hex: {e}")))?
        }
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ApiError::malformed(format!("not base64: {e}")))?,
    };
    decode_bytes(&bytes, max)
}

/// Splits a binary submission body into its transactions (`ordo_api::submit`). A frame
/// that does not decode, or is over `max` bytes, gets its own error; a body that does not
/// split into frames, an empty one, or one of more than [`SUBMIT_TXS_MAX`] is refused.
fn split_frames(
    body: &[u8],
    max: u64,
) -> Result<Vec<Result<SignedTransaction, ApiError>>, ApiError> {
    let mut out = Vec::new();
    for frame in BinaryFrames::new(body) {
        if out.len() >= SUBMIT_TXS_MAX {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!("a submission holds 1 to {SUBMIT_TXS_MAX} transactions"),
            ));
        }
        let frame = frame.map_err(|e| ApiError::malformed(e.to_string()))?;
        out.push(decode_bytes(frame, max));
    }
    if out.is_empty() {
        return Err(ApiError::malformed("the submission is empty"));
    }
    Ok(out)
}
