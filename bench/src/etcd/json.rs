//! etcd's JSON gateway: one put per `POST /v3/kv/put`, or many puts in one transaction
//! (`POST /v3/kv/txn`), keys and values in base64 as the gateway's JSON mapping of
//! protobuf bytes requires. The gateway answers 200 only after the request is committed
//! and applied. It translates every request to gRPC inside etcd, which costs etcd CPU.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use serde::Serialize;

use super::{EtcdLoad, Request, Sent, member_urls, wait_healthy};

/// Characters of an etcd error answer kept for the warning.
const ERROR_TEXT_MAX: usize = 300;

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

/// Encodes puts as one gateway request: a plain put for one, a transaction for several
/// (all in `success`, with no compare, so it always applies).
pub(super) fn encode_request(pairs: &[(Vec<u8>, Vec<u8>)]) -> Request {
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
        body: body.expect("JSON of plain strings").into(),
        puts: pairs.len(),
    }
}

/// The members' gateways.
pub(super) struct Driver {
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
}

impl Driver {
    /// Waits for every member to be healthy.
    pub(super) async fn connect(load: &EtcdLoad) -> anyhow::Result<Driver> {
        let urls = member_urls(load);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(load.concurrency)
            .build()
            .context("cannot create an HTTP client")?;
        wait_healthy(&urls, |i| healthy(&http, &urls[i])).await?;
        Ok(Driver {
            http,
            urls: Arc::new(urls),
        })
    }

    pub(super) fn members(&self) -> usize {
        self.urls.len()
    }

    /// Sends `req` to `member` once. Refusals for load (429, 503: too many requests, no
    /// leader, leader changed) and failed connections may pass later; any other answer, or
    /// a request that times out, fails.
    pub(super) async fn send(&self, member: usize, req: &Request, timeout: Duration) -> Sent {
        let url = &self.urls[member];
        let answer = self
            .http
            .post(format!("{url}{}", req.path))
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(req.body.clone())
            .send()
            .await;
        match answer {
            Ok(resp) if resp.status() == StatusCode::OK => {
                // Acknowledged by the status; the body is read only so that the connection
                // can be reused.
                let _ = resp.bytes().await;
                Sent::Acked
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
                let e = format!("{url}{}: {status}: {text}", req.path);
                match status {
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                        Sent::Retry(e)
                    }
                    _ => Sent::Failed(e),
                }
            }
            Err(e) if e.is_connect() => Sent::Retry(format!("{url}: {e}")),
            Err(e) => Sent::Failed(format!("{url}{}: {e}", req.path)),
        }
    }
}

/// Whether the member at `url` answers `/health` with `"health": "true"`.
pub(super) async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    let answer = async {
        let v: serde_json::Value = http
            .get(format!("{url}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await?
            .json()
            .await?;
        anyhow::Ok(v["health"] == "true")
    };
    matches!(answer.await, Ok(true))
}

#[cfg(test)]
mod tests {
    use super::super::put_pair;
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
}
