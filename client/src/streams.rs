//! The block streams, followed across dropped connections.
//!
//! A stream resumes from the block after the last one it yielded: a node that restarts, or
//! a connection that breaks, costs a pause, never a block. While the node cannot be
//! reached it retries by the client's [`crate::RetryPolicy`], and ends with the last error
//! once that policy gives up or the node refuses the request for good.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use ordo_api::stream::{self, StreamQuery};
use ordo_api::{BlockJson, StreamDecoder, StreamFrame};

use crate::sse::SseDecoder;
use crate::{Client, ClientError, Result};

/// How one kind of stream is asked for and read.
trait Decode: Default + Send + 'static {
    type Item: Send + 'static;
    /// The `Accept` header that selects it.
    const ACCEPT: &'static str;
    /// Whether to ask for whole transactions.
    fn with_txs(&self) -> Option<bool>;
    /// Every item that `chunk` completes.
    fn feed(&mut self, client: &Client, chunk: &[u8]) -> Result<Vec<Self::Item>>;
    /// The height of an item.
    fn height(item: &Self::Item) -> u64;
    /// Forgets a partial item (its connection broke), keeping what is asked for.
    fn reset(&mut self);
}

/// Server-sent events of JSON blocks.
#[derive(Default)]
struct Events {
    decoder: SseDecoder,
    with_txs: bool,
}

impl Decode for Events {
    type Item = BlockJson;
    const ACCEPT: &'static str = "text/event-stream";

    fn with_txs(&self) -> Option<bool> {
        self.with_txs.then_some(true)
    }

    fn feed(&mut self, client: &Client, chunk: &[u8]) -> Result<Vec<BlockJson>> {
        let events = self
            .decoder
            .feed(chunk)
            .ok_or_else(|| client.protocol("a block event is too large".into()))?;
        events
            .into_iter()
            .filter(|e| e.event == "block")
            .map(|e| {
                serde_json::from_str(&e.data)
                    .map_err(|err| client.protocol(format!("a block event does not decode: {err}")))
            })
            .collect()
    }

    fn height(item: &BlockJson) -> u64 {
        item.height
    }

    fn reset(&mut self) {
        self.decoder = SseDecoder::default();
    }
}

/// Binary frames of transaction ids.
#[derive(Default)]
struct Frames(StreamDecoder);

impl Decode for Frames {
    type Item = StreamFrame;
    const ACCEPT: &'static str = ordo_api::BINARY;

    fn with_txs(&self) -> Option<bool> {
        None
    }

    fn feed(&mut self, _client: &Client, chunk: &[u8]) -> Result<Vec<StreamFrame>> {
        Ok(self.0.feed(chunk)?)
    }

    fn height(item: &StreamFrame) -> u64 {
        item.height
    }

    fn reset(&mut self) {
        self.0 = StreamDecoder::default();
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A stream being followed: where it is, its connection if one is open, and what it has
/// decoded but not yielded yet.
struct Follow<D: Decode> {
    client: Client,
    /// The next height to yield; `None` until the first connection picks it.
    next: Option<u64>,
    decoder: D,
    body: Option<Body>,
    ready: VecDeque<D::Item>,
    /// Failed connection attempts in a row, and when the first of them failed.
    failures: Option<(u32, tokio::time::Instant)>,
    /// When the open connection was made.
    connected_at: tokio::time::Instant,
    done: bool,
}

/// A connection that stayed up this long was healthy: what ends it starts a new count of
/// failures (an idle stream carries nothing for as long as no block commits).
const HEALTHY_CONNECTION: std::time::Duration = std::time::Duration::from_secs(2);

impl<D: Decode> Follow<D> {
    async fn next_item(&mut self) -> Option<Result<D::Item>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                self.next = Some(D::height(&item) + 1);
                return Some(Ok(item));
            }
            if self.done {
                return None;
            }
            let Some(body) = self.body.as_mut() else {
                if let Err(e) = self.connect().await
                    && let Some(e) = self.failed(e).await
                {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) => match self.decoder.feed(&self.client, &chunk) {
                    Ok(items) => {
                        if !items.is_empty() {
                            self.failures = None;
                        }
                        self.ready.extend(items);
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                // The connection broke or the node closed it (it stops): resume, after a
                // pause unless the connection was healthy, so that a node that ends every
                // stream at once is not asked again and again without a break.
                ended => {
                    self.body = None;
                    if self.connected_at.elapsed() >= HEALTHY_CONNECTION {
                        self.failures = None;
                    }
                    let why = match ended {
                        Some(Err(e)) => e.to_string(),
                        _ => "the node closed the stream".to_owned(),
                    };
                    tracing::debug!(error = %why, "block stream ended; resuming");
                    let closed = ClientError::Closed {
                        url: self.client.url().to_owned(),
                        reason: why,
                    };
                    if let Some(e) = self.failed(closed).await {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let from = match self.next {
            Some(h) => h,
            None => self.client.status().await?.tip.height + 1,
        };
        self.next = Some(from);
        let query = StreamQuery {
            from: Some(from),
            txs: self.decoder.with_txs(),
        };
        let request = self
            .client
            .get_stream(stream::PATH, D::ACCEPT)
            .query(&query);
        let resp = self.client.send(request).await?;
        let resp = self.client.check(resp).await?;
        self.body = Some(Box::pin(resp.bytes_stream()));
        self.connected_at = tokio::time::Instant::now();
        self.decoder.reset();
        Ok(())
    }

    /// After a failed or ended connection: waits before the next attempt and returns
    /// `None`, or returns the error when it is final or the retry policy gives up (the
    /// failures in a row, since the first of them, outlast its total).
    async fn failed(&mut self, e: ClientError) -> Option<ClientError> {
        if !e.is_retryable() {
            return Some(e);
        }
        let policy = self.client.retry_policy();
        let now = tokio::time::Instant::now();
        let (attempt, since) = self.failures.unwrap_or((0, now));
        let pause = policy.pause(attempt, e.retry_after());
        if now + pause >= since + policy.total {
            return Some(e);
        }
        self.failures = Some((attempt + 1, since));
        tokio::time::sleep(pause).await;
        None
    }
}

fn follow<D: Decode>(
    client: &Client,
    from: Option<u64>,
    decoder: D,
) -> impl Stream<Item = Result<D::Item>> + Send + 'static {
    let state = Follow {
        client: client.clone(),
        next: from,
        decoder,
        body: None,
        ready: VecDeque::new(),
        failures: None,
        connected_at: tokio::time::Instant::now(),
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    })
}

impl Client {
    /// The committed blocks from height `from` on (default: the next block), in height
    /// order, as the node applies them (`GET /v1/blocks/stream`, server-sent events), with
    /// whole transactions or only their ids. Resumes after a dropped connection (see the
    /// module documentation); the stream ends only with an error.
    pub fn blocks(
        &self,
        from: Option<u64>,
        with_txs: bool,
    ) -> impl Stream<Item = Result<BlockJson>> + Send + 'static {
        let decoder = Events {
            decoder: SseDecoder::default(),
            with_txs,
        };
        follow(self, from, decoder)
    }

    /// The committed blocks' transaction ids from height `from` on (default: the next
    /// block), from the binary block stream: no JSON on either side, for clients that
    /// track many transactions. Resumes as [`Client::blocks`] does.
    pub fn block_ids(
        &self,
        from: Option<u64>,
    ) -> impl Stream<Item = Result<StreamFrame>> + Send + 'static {
        follow(self, from, Frames::default())
    }
}
