//! The client API: JSON over HTTP (axum). `docs/api.md` documents every route and error;
//! the answers are `ordo_api`'s types, which clients read back.
//!
//! * [`submit`]: `POST /v1/transactions`, JSON or binary.
//! * [`read`]: `GET /v1/transactions/{id}` and `GET /v1/blocks/{id}`.
//! * [`stream`]: `GET /v1/blocks/stream`, events or binary frames.
//! * [`status`]: `GET /v1/status`, `GET /health` and `GET /ready`.
//! * [`metrics`]: `GET /metrics`.
//! * [`error`]: every error answer, with its stable code; also for what axum would answer
//!   by itself (an unknown route, a wrong method, a body over the limit).

mod error;
mod metrics;
mod read;
mod status;
mod stream;
mod submit;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ordo_api::{BODY_BYTES_MAX, ErrorCode};
use tokio::sync::Semaphore;
use tracing::Instrument;

pub(crate) use error::ApiError;

use crate::shared::Shared;

/// What every handler shares.
#[derive(Clone)]
struct Api {
    shared: Arc<Shared>,
    /// Turns for block streams (`ordo_api::stream::STREAMS_MAX`).
    streams: Arc<Semaphore>,
}

/// The API's routes over `shared`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Api {
        shared,
        streams: Arc::new(Semaphore::new(ordo_api::stream::STREAMS_MAX)),
    };
    Router::new()
        .route(ordo_api::status::HEALTH_PATH, get(status::health))
        .route(ordo_api::status::READY_PATH, get(status::ready))
        .route(ordo_api::metrics::PATH, get(metrics::metrics))
        .route(ordo_api::status::PATH, get(status::status))
        .route(ordo_api::submit::PATH, post(submit::submit))
        .route("/v1/transactions/{id}", get(read::transaction))
        .route(ordo_api::tx::RECEIPT_PATH, get(read::receipt))
        .route(ordo_api::stream::PATH, get(stream::stream_blocks))
        .route("/v1/blocks/{id}", get(read::block))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not take that method (docs/api.md lists each route's)",
            )
        })
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
        return ApiError::body_too_large().into_response();
    }
    next.run(req).await
}

/// Serves the API on `listener` until the node stops; requests in progress finish first.
/// Every request is handled in the span `serve` runs in (the validator's): axum serves each
/// connection in a task of its own, outside every span.
pub(crate) async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let stopping = shared.clone();
    let span = tracing::Span::current();
    let in_span = move |req: axum::extract::Request, next: axum::middleware::Next| {
        let span = span.clone();
        async move { next.run(req).instrument(span).await }
    };
    let app = router(shared).layer(axum::middleware::from_fn(in_span));
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopping.stopped().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP API stopped");
    }
}
