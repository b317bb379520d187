//! What can go wrong talking to a node.

use std::time::Duration;

use ordo_api::{ErrorBody, ErrorCode, InclusionError, StreamError};

/// This crate's results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Why a request did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error (`docs/api.md`).
    #[error("{url}: {error}")]
    Api {
        /// The node's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error the node sent.
        error: ErrorBody,
        /// The node's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach {url}: {source}")]
    Transport {
        /// The node's URL.
        url: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The node answered something that is not ordo's API.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The node's URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A stream's connection ended (the node stopped, or the connection broke).
    #[error("{url} closed the stream: {reason}")]
    Closed {
        /// The node's URL.
        url: String,
        /// What ended it.
        reason: String,
    },
    /// The URL is not an `http://` or `https://` URL.
    #[error("'{0}' is not an http:// or https:// URL")]
    BadUrl(String),
    /// The client could not be set up (a CA certificate that does not parse, say).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// A key file cannot be used.
    #[error(transparent)]
    Key(#[from] ordo_crypto::KeyFileError),
    /// A committed transaction's proof does not hold.
    #[error("the node's answer does not prove the transaction's inclusion: {0}")]
    Inclusion(#[from] InclusionError),
    /// The binary block stream broke its format.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl ClientError {
    /// The error code the node sent, if it sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: the node answered 503 (no leader,
    /// busy, unavailable, shutting down) or could not be reached.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => *status == 503,
            ClientError::Transport { .. } | ClientError::Closed { .. } => true,
            _ => false,
        }
    }

    /// How long the node asked to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
