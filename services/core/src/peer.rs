//! The typed client for calls between services.
//!
//! Every call has a time limit, carries the shared peer token, escapes its
//! query values (they are never pasted into URLs), and is timed into the
//! caller's upstream histogram.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
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
        source: reqwest::Error,
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
        source: reqwest::Error,
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
    http: reqwest::Client,
    token: PeerToken,
    metrics: Metrics,
}

impl PeerClient {
    pub fn new(token: PeerToken, metrics: Metrics) -> Self {
        Self::with_timeout(token, metrics, CALL_TIMEOUT)
    }

    /// A client whose calls give up after `timeout` (heartbeats use a short one).
    pub fn with_timeout(token: PeerToken, metrics: Metrics, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
            .tcp_nodelay(true)
            .build()
            .expect("a client with static settings always builds");
        Self {
            http,
            token,
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
        let request = self.http.get(url).query(query);
        self.send(to, operation, request).await
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
        let request = self.http.post(url).json(body);
        self.send(to, operation, request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        to: &str,
        operation: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, PeerError> {
        let started = Instant::now();
        let result = self.exchange(to, operation, request).await;
        self.metrics
            .observe_upstream(to, operation, result.is_ok(), started);
        result
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        to: &str,
        operation: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, PeerError> {
        let response = request
            .header(TOKEN_HEADER, self.token.as_str())
            .send()
            .await
            .map_err(|source| transport_error(to, operation, source))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.json::<ErrorBody>().await.ok();
            return Err(PeerError::Status {
                to: to.to_owned(),
                operation: operation.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        response
            .json::<T>()
            .await
            .map_err(|source| match source.is_timeout() {
                true => transport_error(to, operation, source),
                false => PeerError::Decode {
                    to: to.to_owned(),
                    operation: operation.to_owned(),
                    source,
                },
            })
    }
}

fn transport_error(to: &str, operation: &str, source: reqwest::Error) -> PeerError {
    if source.is_timeout() {
        PeerError::Timeout {
            to: to.to_owned(),
            operation: operation.to_owned(),
        }
    } else {
        PeerError::Unreachable {
            to: to.to_owned(),
            operation: operation.to_owned(),
            source,
        }
    }
}
