//! [`Client`]: one node's HTTP API, typed.

use std::time::Duration;

use ordo_api::block::BlockQuery;
use ordo_api::submit::{self, BinaryQuery};
use ordo_api::{
    BlockId, BlockJson, ErrorAnswer, ErrorCode, Health, Status, SubmitRequest, SubmitResults,
    TxResult, TxStatus,
};
use ordo_ledger::{SignedTransaction, TxId};
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;

use crate::{ClientError, Result, RetryPolicy};

/// How long a request may take unless it waits for commits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a submission that waits for commits gets beyond its own wait.
const WAIT_MARGIN: Duration = Duration::from_secs(10);

/// How a batch of transactions is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wire {
    /// Length-prefixed canonical bytes (`application/octet-stream`): half the bytes of
    /// hex, no text decoding on the node.
    #[default]
    Binary,
    /// Hex strings in JSON (`application/json`).
    Json,
}

impl Wire {
    /// The request's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Wire::Binary => ordo_api::BINARY,
            Wire::Json => ordo_api::JSON,
        }
    }
}

/// What a submission asks of the node besides taking the transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Wait for each accepted transaction to commit, for at most this long (the node
    /// clamps it to 60 s); `None`: answer once admitted.
    pub wait: Option<Duration>,
    /// How a batch is sent.
    pub wire: Wire,
}

impl SubmitOptions {
    /// Wait for commits, for the node's default of 10 s.
    pub fn wait() -> SubmitOptions {
        SubmitOptions {
            wait: Some(Duration::from_millis(submit::WAIT_DEFAULT_MS)),
            wire: Wire::Binary,
        }
    }

    /// Wait for commits for at most `timeout`.
    pub fn wait_for(timeout: Duration) -> SubmitOptions {
        SubmitOptions {
            wait: Some(timeout),
            wire: Wire::Binary,
        }
    }

    /// The request's deadline: `request` (the client's), or the wait plus a margin.
    fn timeout(&self, request: Duration) -> Duration {
        self.wait.map_or(request, |w| w + WAIT_MARGIN)
    }

    fn timeout_ms(&self) -> Option<u64> {
        self.wait
            .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Settings for a [`Client`].
pub struct ClientBuilder {
    url: String,
    retry: RetryPolicy,
    request_timeout: Duration,
    roots: Vec<Vec<u8>>,
}

impl ClientBuilder {
    /// Retries by `policy` (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> ClientBuilder {
        self.retry = policy;
        self
    }

    /// Gives up on a request after `timeout` (default 30 s; submissions that wait for
    /// commits get their wait plus 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// Also trusts the CA certificate(s) in `pem` for `https://` URLs, beside the system's.
    pub fn ca_certificate_pem(mut self, pem: &[u8]) -> ClientBuilder {
        self.roots.push(pem.to_vec());
        self
    }

    /// The client.
    ///
    /// # Errors
    /// A URL that is not `http://` or `https://`, or a CA certificate that does not parse.
    pub fn build(self) -> Result<Client> {
        let url = self.url.trim_end_matches('/').to_owned();
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(ClientError::BadUrl(url));
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("ordo-client/", env!("CARGO_PKG_VERSION")));
        for pem in &self.roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ClientError::Setup(format!("CA certificate: {e}")))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client {
            http,
            url,
            retry: self.retry,
            request_timeout: self.request_timeout,
        })
    }
}

/// One validator's HTTP API. Cheap to clone (clones share connections).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl Client {
    /// A client for the node at `url` (`http://host:port` or `https://…`), with the default
    /// settings.
    ///
    /// # Errors
    /// As [`ClientBuilder::build`].
    pub fn new(url: &str) -> Result<Client> {
        Client::builder(url).build()
    }

    /// Settings for a client of the node at `url`.
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            retry: RetryPolicy::default(),
            request_timeout: REQUEST_TIMEOUT,
            roots: Vec::new(),
        }
    }

    /// The node's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The retry policy of this client's submissions.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The node's status.
    ///
    /// # Errors
    /// When the node cannot be reached or answers an error.
    pub async fn status(&self) -> Result<Status> {
        self.get_json(ordo_api::status::PATH).await
    }

    /// The node's health: `Ok` while it serves and its consensus runs.
    ///
    /// # Errors
    /// [`ClientError::Api`] with `shutting_down` or `consensus_stopped` when it is not
    /// healthy; a transport error when it cannot be reached.
    pub async fn health(&self) -> Result<Health> {
        self.get_json(ordo_api::status::HEALTH_PATH).await
    }

    /// Polls the node's status until it knows a leader, for at most `timeout`.
    ///
    /// # Errors
    /// The last error, or [`ClientError::Protocol`] when a leader never came.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<Status> {
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.status().await {
                Ok(s) if s.leader.is_some() => return Ok(s),
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if tokio::time::Instant::now() >= give_up {
                return Err(last.unwrap_or_else(|| ClientError::Protocol {
                    url: self.url.clone(),
                    reason: format!("no leader known after {timeout:?}"),
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Submits one transaction; its result is the answer's (an error answer is
    /// [`ClientError::Api`]). Retried by the client's policy while the node answers 503
    /// or cannot be reached. When a retry finds the transaction already held (an earlier
    /// attempt was taken but its answer lost), the result says where it is instead.
    ///
    /// # Errors
    /// Why the transaction was not taken.
    pub async fn submit(&self, tx: &SignedTransaction, opts: &SubmitOptions) -> Result<TxResult> {
        let request = SubmitRequest {
            transaction: Some(hex::encode(tx.to_bytes())),
            wait: opts.wait.is_some(),
            timeout_ms: opts.timeout_ms(),
            ..SubmitRequest::default()
        };
        let body = serde_json::to_vec(&request).expect("JSON of strings");
        let timeout = opts.timeout(self.request_timeout);
        let mut attempts = 0u32;
        let answer = self
            .retry
            .run(|| {
                attempts += 1;
                self.post_submission(body.clone(), Wire::Json, None, timeout)
            })
            .await;
        match answer {
            Err(e) if attempts > 1 && e.code().is_some_and(ErrorCode::is_already_held) => {
                self.where_held(tx.id()).await.ok_or(e)
            }
            answer => answer,
        }
    }

    /// Where a transaction this client submitted is held: committed, or pending.
    async fn where_held(&self, id: TxId) -> Option<TxResult> {
        match self.tx_status(&id).await.ok()? {
            TxStatus::Committed(c) => Some(TxResult::committed(
                id,
                ordo_api::Committed {
                    height: c.height,
                    index: c.index,
                    block_hash: c.block_hash,
                },
            )),
            TxStatus::Pending { .. } => Some(TxResult::pending(id)),
        }
    }

    /// Submits a batch of 1 to 10,000 transactions; one result per transaction, in order.
    /// Retried as a whole by the client's policy while the node refuses it as a whole with
    /// 503 or cannot be reached; transactions refused one by one are in the results. After
    /// a retry, a transaction the cluster already holds (an earlier attempt was taken but
    /// its answer lost) reads as where it is.
    ///
    /// # Errors
    /// Why the batch was not taken.
    pub async fn submit_batch(
        &self,
        txs: &[SignedTransaction],
        opts: &SubmitOptions,
    ) -> Result<Vec<TxResult>> {
        let encoded: Vec<Vec<u8>> = txs.iter().map(SignedTransaction::to_bytes).collect();
        let body = Client::batch_body(encoded.iter().map(Vec::as_slice), opts);
        let body = bytes::Bytes::from(body);
        let mut attempts = 0u32;
        let mut results = self
            .retry
            .run(|| {
                attempts += 1;
                self.submit_encoded(body.clone(), opts)
            })
            .await?;
        if attempts > 1 {
            for r in &mut results {
                let held = r.error.as_ref().is_some_and(|e| e.code.is_already_held());
                if let (true, Some(id)) = (held, r.id)
                    && let Some(found) = self.where_held(id).await
                {
                    *r = found;
                }
            }
        }
        Ok(results)
    }

    /// The request body of a batch of encoded transactions (canonical bytes each), as
    /// [`Client::submit_encoded`] takes it with the same `opts`.
    pub fn batch_body<'a>(
        encoded: impl IntoIterator<Item = &'a [u8]>,
        opts: &SubmitOptions,
    ) -> Vec<u8> {
        match opts.wire {
            Wire::Binary => submit::binary_body(encoded),
            Wire::Json => {
                let request = SubmitRequest {
                    transactions: Some(encoded.into_iter().map(hex::encode).collect()),
                    wait: opts.wait.is_some(),
                    timeout_ms: opts.timeout_ms(),
                    ..SubmitRequest::default()
                };
                serde_json::to_vec(&request).expect("JSON of strings")
            }
        }
    }

    /// Submits a batch already encoded by [`Client::batch_body`], once,
    /// without retrying (for load generators that count their own retries).
    ///
    /// # Errors
    /// Why the batch was not taken.
    pub async fn submit_encoded(
        &self,
        body: bytes::Bytes,
        opts: &SubmitOptions,
    ) -> Result<Vec<TxResult>> {
        let query = (opts.wire == Wire::Binary).then(|| BinaryQuery {
            wait: opts.wait.map(|_| true),
            timeout_ms: opts.timeout_ms(),
        });
        let timeout = opts.timeout(self.request_timeout);
        let answer: SubmitResults = self
            .post_submission(body, opts.wire, query, timeout)
            .await?;
        Ok(answer.results)
    }

    async fn post_submission<T: DeserializeOwned>(
        &self,
        body: impl Into<reqwest::Body>,
        wire: Wire,
        query: Option<BinaryQuery>,
        timeout: Duration,
    ) -> Result<T> {
        let mut request = self
            .http
            .post(format!("{}{}", self.url, submit::PATH))
            .timeout(timeout)
            .header(CONTENT_TYPE, wire.content_type())
            .body(body);
        if let Some(q) = query {
            request = request.query(&q);
        }
        self.answer(request.send().await).await
    }

    /// A transaction's status on this node.
    ///
    /// # Errors
    /// `not_found` when the node neither holds it nor has it pending.
    pub async fn tx_status(&self, id: &TxId) -> Result<TxStatus> {
        self.get_json(&format!("{}/{id}", submit::PATH)).await
    }

    /// A transaction's status, with a committed one's answer checked: the transaction
    /// hashes to its id, its signature verifies, its proof leads to the block's
    /// transaction root, and the block (read from the node) hashes to the block hash the
    /// answer names.
    ///
    /// # Errors
    /// [`ClientError::Inclusion`] when the answer does not hold; as [`Client::tx_status`]
    /// and [`Client::block`] otherwise.
    pub async fn tx_status_checked(&self, id: &TxId) -> Result<TxStatus> {
        let status = self.tx_status(id).await?;
        if let TxStatus::Committed(c) = &status {
            c.check_inclusion()?;
            let block = self.block(BlockId::Hash(c.block_hash), false).await?;
            c.check_block(&block)?;
        }
        Ok(status)
    }

    /// A committed transaction's receipt (`GET /v1/transactions/{id}/receipt`): its bytes
    /// once its block is certified, else where the block is. Check a receipt with
    /// [`crate::verify_receipt`]; it needs no node.
    ///
    /// # Errors
    /// `not_found` when the transaction is not committed on this node.
    pub async fn receipt(&self, id: &TxId) -> Result<ordo_api::ReceiptStatus> {
        self.get_json(&format!("{}/{id}/receipt", submit::PATH))
            .await
    }

    /// A block, with whole transactions or only their ids.
    ///
    /// # Errors
    /// `not_found` when this node has no such block.
    pub async fn block(&self, id: BlockId, with_txs: bool) -> Result<BlockJson> {
        let query = BlockQuery {
            txs: Some(with_txs),
        };
        let request = self
            .http
            .get(format!("{}/v1/blocks/{id}", self.url))
            .query(&query)
            .timeout(self.request_timeout);
        self.answer(request.send().await).await
    }

    /// The node's metrics page (Prometheus text; names in [`ordo_api::metrics`]).
    ///
    /// # Errors
    /// When the node cannot be reached or answers an error.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self.send(self.get(ordo_api::metrics::PATH)).await?;
        let resp = self.check(resp).await?;
        resp.text().await.map_err(|e| self.transport(e))
    }

    pub(crate) fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .timeout(self.request_timeout)
    }

    /// A GET of a stream: no overall timeout (a stream lasts), only the connect timeout.
    pub(crate) fn get_stream(&self, path: &str, accept: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .header(ACCEPT, accept)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.answer(self.get(path).send().await).await
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        request.send().await.map_err(|e| self.transport(e))
    }

    /// The answer's body as `T`, or the error it carries.
    async fn answer<T: DeserializeOwned>(
        &self,
        sent: reqwest::Result<reqwest::Response>,
    ) -> Result<T> {
        let resp = self.check(sent.map_err(|e| self.transport(e))?).await?;
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("{e}")))
    }

    /// `resp` if it is a success; otherwise the error its body carries.
    pub(crate) async fn check(&self, resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(|e| self.transport(e))?;
        match serde_json::from_slice::<ErrorAnswer>(&bytes) {
            Ok(answer) => Err(ClientError::Api {
                url: self.url.clone(),
                status,
                error: answer.error,
                retry_after,
            }),
            Err(_) => Err(self.protocol(format!(
                "HTTP {status} without an ordo error: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))),
        }
    }

    pub(crate) fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            url: self.url.clone(),
            source,
        }
    }

    pub(crate) fn protocol(&self, reason: String) -> ClientError {
        ClientError::Protocol {
            url: self.url.clone(),
            reason,
        }
    }
}
