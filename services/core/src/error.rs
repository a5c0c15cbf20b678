//! The one error type a handler returns, and how it looks on the wire.
//!
//! Every failure answers with a JSON body `{"error": {"code": ..., "message": ...}}`
//! and a status code that tells the caller whether retrying can help: 4xx for
//! input that will never work, 503 for "no primary right now, retry", 502 when a
//! peer answered nonsense.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// A failure a handler reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request can never succeed as sent (missing or malformed input).
    #[error("{0}")]
    BadRequest(String),
    /// The named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller is not allowed (missing or wrong peer token).
    #[error("{0}")]
    Unauthorized(String),
    /// The request is well-formed but cannot be served now (no primary, the
    /// node is resyncing or shut down by fault injection); retrying can help.
    #[error("{0}")]
    Unavailable(String),
    /// A peer we depend on failed or answered something we cannot use.
    #[error("{0}")]
    BadGateway(String),
    /// A message from an older epoch; the sender must learn the new topology.
    #[error("{0}")]
    StaleEpoch(String),
    /// A bug or a local I/O failure.
    #[error("{0}")]
    Internal(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `bad_request`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// An error answer: `status` with the shared JSON body.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// The code of an error that has only its status (an extractor's rejection,
/// a time limit): the status's reason phrase in snake case, so that it reads
/// like the codes of [`ApiError`] (`payload_too_large`, `method_not_allowed`).
pub fn code_for_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => reason
            .chars()
            .map(|c| match c {
                ' ' | '-' => '_',
                c => c.to_ascii_lowercase(),
            })
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
        None => format!("http_{}", status.as_u16()),
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::StaleEpoch(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Unauthorized(_) => "unauthorized",
            Self::Unavailable(_) => "unavailable",
            Self::BadGateway(_) => "bad_gateway",
            Self::StaleEpoch(_) => "stale_epoch",
            Self::Internal(_) => "internal",
        }
    }

    /// Rebuilds an error from a peer's status and body, so a 4xx from a peer
    /// reaches the client as the same 4xx instead of a generic 502.
    pub fn from_peer(status: u16, body: Option<ErrorBody>) -> Self {
        let message = body
            .map(|b| b.error.message)
            .unwrap_or_else(|| format!("peer answered HTTP {status}"));
        match status {
            400 => Self::BadRequest(message),
            404 => Self::NotFound(message),
            401 | 403 => Self::Unauthorized(message),
            409 => Self::StaleEpoch(message),
            503 => Self::Unavailable(message),
            _ => Self::BadGateway(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, Self::Internal(_)) {
            tracing::error!(error = %self, "internal error");
        }
        error_response(self.status(), self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_status_codes_map_back_to_the_same_kind() {
        assert!(matches!(
            ApiError::from_peer(400, None),
            ApiError::BadRequest(_)
        ));
        assert!(matches!(
            ApiError::from_peer(404, None),
            ApiError::NotFound(_)
        ));
        assert!(matches!(
            ApiError::from_peer(409, None),
            ApiError::StaleEpoch(_)
        ));
        assert!(matches!(
            ApiError::from_peer(503, None),
            ApiError::Unavailable(_)
        ));
        assert!(matches!(
            ApiError::from_peer(500, None),
            ApiError::BadGateway(_)
        ));
    }

    #[test]
    fn a_status_alone_gets_its_reason_as_the_code() {
        let code = |status: u16| code_for_status(StatusCode::from_u16(status).expect("status"));
        assert_eq!(code(400), "bad_request");
        assert_eq!(code(404), "not_found");
        assert_eq!(code(405), "method_not_allowed");
        assert_eq!(code(408), "request_timeout");
        assert_eq!(code(413), "payload_too_large");
        assert_eq!(code(414), "uri_too_long");
        assert_eq!(code(415), "unsupported_media_type");
        assert_eq!(code(422), "unprocessable_entity");
        assert_eq!(code(599), "http_599");
    }

    #[test]
    fn every_error_has_a_json_body_with_its_code() {
        let response = ApiError::bad_request("item_number is missing").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
