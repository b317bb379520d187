//! `GET /v1/blocks/stream`: server-sent events of JSON blocks, or with
//! `Accept: application/octet-stream` binary frames of each block's transaction ids.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use ordo_api::stream::{STREAMS_MAX, StreamQuery, encode_frame};
use ordo_api::{BINARY, BlockJson, ErrorCode};
use tokio::sync::OwnedSemaphorePermit;

use super::{Api, ApiError};
use crate::consensus::AppliedBlock;
use crate::shared::Shared;

fn accepts_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .filter_map(|m| m.split(';').next())
                .any(|m| m.trim().eq_ignore_ascii_case(BINARY))
        })
}

/// `GET /v1/blocks/stream[?from=H][&txs=true]`.
pub(super) async fn stream_blocks(
    State(api): State<Api>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let binary = accepts_binary(&headers);
    let with_txs = q.txs.unwrap_or(false);
    if binary && with_txs {
        return Err(ApiError::malformed(
            "the binary block stream carries transaction ids only; ask for JSON to get `txs=true`",
        ));
    }
    let permit = api.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::Busy,
            format!("{STREAMS_MAX} block streams are open already"),
        )
    })?;
    let shared = api.shared.clone();
    let from = q.from.unwrap_or_else(|| shared.tip().height + 1).max(1);
    let blocks = applied_blocks(shared, from, permit);
    if binary {
        let frames = blocks.map(|(height, b)| {
            Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(encode_frame(
                height, &b.hash, &b.ids,
            )))
        });
        let mut resp = axum::body::Body::from_stream(frames).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(BINARY));
        return Ok(resp);
    }
    let events = blocks.map(move |(height, b)| {
        Event::default()
            .event("block")
            .id(height.to_string())
            .json_data(BlockJson::new(&b.block, &b.hash, &b.ids, with_txs))
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
    permit: OwnedSemaphorePermit,
) -> impl futures::Stream<Item = (u64, AppliedBlock)> {
    let state = (from, shared.tip_watch(), shared, permit);
    futures::stream::unfold(state, |(next, mut tip, shared, permit)| async move {
        loop {
            if shared.is_stopping() {
                return None;
            }
            if next <= tip.borrow().height {
                let applied = match shared.recent().get(next) {
                    Some(b) => Some(b),
                    None => {
                        let shared = shared.clone();
                        crate::tasks::spawn_blocking(move || shared.applied_block(next))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .flatten()
                    }
                };
                return applied.map(|b| ((next, b), (next + 1, tip, shared, permit)));
            }
            tokio::select! {
                changed = tip.changed() => if changed.is_err() { return None },
                () = shared.stopped() => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_stream_is_chosen_by_accept() {
        let mut headers = HeaderMap::new();
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
    }
}
