//! Every error answer: `{"error": {"code", "message"}}` ([`ordo_api::ErrorAnswer`]), with
//! the HTTP status of its [`ErrorCode`] and, on a 503, `Retry-After`.

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ordo_api::{BODY_BYTES_MAX, ErrorAnswer, ErrorBody, ErrorCode, RETRY_AFTER_SECS};
use ordo_ledger::TxError;

use crate::error::{Fatal, SubmitError};
use crate::mempool::AdmitError;

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) ErrorBody);

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(ErrorBody::new(code, message))
    }

    pub(crate) fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Malformed, message)
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }

    /// A ledger read that failed: `storage_damaged` when the data is damaged (the repair
    /// is under way), else `internal`.
    pub(crate) fn store(e: &ordo_ledger::StoreError) -> ApiError {
        if e.is_damage() {
            ApiError::new(
                ErrorCode::StorageDamaged,
                format!("{e}; being repaired from the peers, ask another node"),
            )
        } else {
            ApiError::internal(e)
        }
    }

    pub(crate) fn body_too_large() -> ApiError {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body is larger than {BODY_BYTES_MAX} bytes"),
        )
    }

    pub(crate) fn shutting_down() -> ApiError {
        ApiError::new(ErrorCode::ShuttingDown, "the node is shutting down")
    }

    pub(crate) fn consensus_stopped(why: &Fatal) -> ApiError {
        ApiError::new(ErrorCode::ConsensusStopped, why.to_string())
    }

    pub(crate) fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retryable = self.0.code.is_retryable();
        let mut resp = (status, Json(ErrorAnswer { error: self.0 })).into_response();
        if retryable {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::body_too_large();
        }
        ApiError::malformed(r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::body_too_large();
        }
        ApiError::malformed(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::malformed(r.body_text())
    }
}

/// The code of a transaction that breaks a chain rule.
fn tx_error_code(error: &TxError) -> ErrorCode {
    match error {
        TxError::TooLarge { .. } => ErrorCode::TooLarge,
        TxError::WrongChain { .. } => ErrorCode::WrongChain,
        TxError::UnknownSender(_) => ErrorCode::UnknownSender,
        TxError::Expired { .. } => ErrorCode::Expired,
        TxError::ExpiryTooFar { .. } => ErrorCode::ExpiryTooFar,
        TxError::Duplicate { .. } => ErrorCode::Malformed,
        TxError::BadSignature => ErrorCode::BadSignature,
    }
}

impl From<&SubmitError> for ApiError {
    fn from(e: &SubmitError) -> ApiError {
        let code = match e {
            SubmitError::Admit(AdmitError::Invalid { error, .. }) => tx_error_code(error),
            SubmitError::Admit(AdmitError::AlreadyPending(_)) => ErrorCode::AlreadyPending,
            SubmitError::Admit(AdmitError::AlreadyCommitted { .. }) => ErrorCode::AlreadyCommitted,
            SubmitError::Admit(AdmitError::Busy { .. }) | SubmitError::LeaderBusy => {
                ErrorCode::Busy
            }
            SubmitError::Refused(_) => ErrorCode::Refused,
            SubmitError::NoLeader => ErrorCode::NoLeader,
            SubmitError::Unavailable(_) => ErrorCode::Unavailable,
        };
        ApiError::new(code, e.to_string())
    }
}
