//! The typed client for calls between services.
//!
//! Every call has a time limit, carries the shared peer token, escapes its
//! query values (they are never pasted into URLs), and is timed into the
//! caller's upstream histogram.
//!
//! It is hyper's pooled client on plain HTTP/1.1 keep-alive connections:
//! peers are addressed as `host:port` on loopback or a cluster network, so
//! the URL parsing, host name handling and extra layers of a general-purpose
//! client are all cost and no use on this hot path (every lookup and buy
//! makes one to five of these calls).

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::token::{PeerToken, TOKEN_HEADER};

/// How long a peer may take to accept a connection; on loopback or a cluster
/// network a live peer answers in well under a millisecond.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a peer may take to answer a call. A write waits for the replicas'
/// disk syncs, so this is generous, but far below the client's patience.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle keep-alive connections kept per peer; enough for the bench's 32 clients.
const MAX_IDLE_PER_PEER: usize = 64;

/// A transport failure (connect, send, receive), as the source of an error.
pub type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{to} did not answer {operation} in time")]
    Timeout { to: String, operation: String },
    #[error("{to} is unreachable for {operation}: {source}")]
    Unreachable {
        to: String,
        operation: String,
        #[source]
        source: TransportError,
    },
    #[error("{to} answered {operation} with HTTP {status}")]
    Status {
        to: String,
        operation: String,
        status: u16,
        body: Option<ErrorBody>,
    },
    #[error("{to} answered {operation} with a body we cannot read: {source}")]
    Decode {
        to: String,
        operation: String,
        #[source]
        source: serde_json::Error,
    },
}

impl PeerError {
    /// The HTTP status the peer answered, if it answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the peer may not have seen the request at all or crashed
    /// while handling it: a retry elsewhere (or later) can help.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status == 503 || *status == 409,
            Self::Decode { .. } => false,
        }
    }
}

impl From<PeerError> for ApiError {
    fn from(error: PeerError) -> Self {
        match error {
            PeerError::Status { status, body, .. } => ApiError::from_peer(status, body),
            PeerError::Timeout { .. } | PeerError::Unreachable { .. } => {
                ApiError::Unavailable(error.to_string())
            }
            PeerError::Decode { .. } => ApiError::BadGateway(error.to_string()),
        }
    }
}

/// A client for calls from one service to the others.
#[derive(Clone)]
pub struct PeerClient {
    http: Client<HttpConnector, Full<Bytes>>,
    token: HeaderValue,
    timeout: Duration,
    metrics: Metrics,
}

impl PeerClient {
    pub fn new(token: PeerToken, metrics: Metrics) -> Self {
        Self::with_timeout(token, metrics, CALL_TIMEOUT)
    }

    /// A client whose calls give up after `timeout` (heartbeats use a short one).
    pub fn with_timeout(token: PeerToken, metrics: Metrics, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
            .build(connector);
        let token = HeaderValue::from_str(token.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-token"));
        Self {
            http,
            token,
            timeout,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `GET base/path?query` on the tier `to`, decoding a JSON answer.
    pub async fn get<Q, T>(
        &self,
        to: &str,
        operation: &str,
        url: &str,
        query: &Q,
    ) -> Result<T, PeerError>
    where
        Q: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let started = Instant::now();
        let result = match with_query(url, query) {
            Ok(url) => {
                let answer = self.call(to, operation, Method::GET, &url, None).await;
                answer.and_then(|body| decode(to, operation, body))
            }
            Err(error) => Err(error.unreachable(to, operation)),
        };
        self.metrics
            .observe_upstream(to, operation, result.is_ok(), started);
        result
    }

    /// `GET base/path?query` on the tier `to`, answering the body as it came:
    /// `Some(body)` for `200`, `None` for `204 No Content` (a cache miss).
    pub async fn get_bytes<Q>(
        &self,
        to: &str,
        operation: &str,
        url: &str,
        query: &Q,
    ) -> Result<Option<Bytes>, PeerError>
    where
        Q: Serialize + ?Sized,
    {
        let started = Instant::now();
        let result = match with_query(url, query) {
            Ok(url) => match self.call(to, operation, Method::GET, &url, None).await {
                Ok(Answer::Body(body)) => Ok(Some(body)),
                Ok(Answer::NoContent) => Ok(None),
                Err(error) => Err(error),
            },
            Err(error) => Err(error.unreachable(to, operation)),
        };
        self.metrics
            .observe_upstream(to, operation, result.is_ok(), started);
        result
    }

    /// `POST base/path` with a JSON body on the tier `to`, decoding a JSON answer.
    pub async fn post<B, T>(
        &self,
        to: &str,
        operation: &str,
        url: &str,
        body: &B,
    ) -> Result<T, PeerError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let started = Instant::now();
        let result = match serde_json::to_vec(body) {
            Ok(json) => {
                let answer = self
                    .call(to, operation, Method::POST, url, Some(Bytes::from(json)))
                    .await;
                answer.and_then(|body| decode(to, operation, body))
            }
            Err(error) => Err(BadRequest(error.into()).unreachable(to, operation)),
        };
        self.metrics
            .observe_upstream(to, operation, result.is_ok(), started);
        result
    }

    /// One exchange within the call time limit: `200` and `204` are answers,
    /// any other status is an error carrying the peer's error body.
    async fn call(
        &self,
        to: &str,
        operation: &str,
        method: Method,
        url: &str,
        json: Option<Bytes>,
    ) -> Result<Answer, PeerError> {
        let uri: Uri = url.parse().map_err(|e: axum::http::uri::InvalidUri| {
            BadRequest(e.into()).unreachable(to, operation)
        })?;
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(headers) = request.headers_mut() {
            headers.insert(TOKEN_HEADER, self.token.clone());
            if json.is_some() {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
        }
        let request = request
            .body(Full::new(json.unwrap_or_default()))
            .map_err(|e| BadRequest(e.into()).unreachable(to, operation))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| BadRequest(e.into()).unreachable(to, operation))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| BadRequest(e.into()).unreachable(to, operation))?
                .to_bytes();
            Ok::<_, PeerError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PeerError::Timeout {
                to: to.to_owned(),
                operation: operation.to_owned(),
            })??;
        match status {
            StatusCode::OK => Ok(Answer::Body(body)),
            StatusCode::NO_CONTENT => Ok(Answer::NoContent),
            status => Err(PeerError::Status {
                to: to.to_owned(),
                operation: operation.to_owned(),
                status: status.as_u16(),
                body: serde_json::from_slice::<ErrorBody>(&body).ok(),
            }),
        }
    }
}

/// What a peer answered.
enum Answer {
    Body(Bytes),
    NoContent,
}

/// A failure to make or send a request: the peer is unreachable for it.
struct BadRequest(TransportError);

impl BadRequest {
    fn unreachable(self, to: &str, operation: &str) -> PeerError {
        PeerError::Unreachable {
            to: to.to_owned(),
            operation: operation.to_owned(),
            source: self.0,
        }
    }
}

/// `url?query`, the query form-encoded (so values are escaped, never pasted).
fn with_query<Q: Serialize + ?Sized>(url: &str, query: &Q) -> Result<String, BadRequest> {
    let query = serde_urlencoded::to_string(query).map_err(|e| BadRequest(e.into()))?;
    if query.is_empty() {
        return Ok(url.to_owned());
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}{query}"))
}

/// Decodes a JSON answer (a `204` decodes as JSON `null`).
fn decode<T: DeserializeOwned>(to: &str, operation: &str, answer: Answer) -> Result<T, PeerError> {
    let body = match answer {
        Answer::Body(body) => body,
        Answer::NoContent => Bytes::from_static(b"null"),
    };
    serde_json::from_slice(&body).map_err(|source| PeerError::Decode {
        to: to.to_owned(),
        operation: operation.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped() {
        let url = with_query("http://h:1/search", &[("topic", "a b&c=d")]).ok();
        assert_eq!(url.as_deref(), Some("http://h:1/search?topic=a+b%26c%3Dd"));
        let url = with_query("http://h:1/x", &()).ok();
        assert_eq!(url.as_deref(), Some("http://h:1/x"));
    }
}
