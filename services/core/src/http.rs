//! How every service is served: the routes all of them share (`/healthz`,
//! `/readyz`, `/metrics`), JSON answers for every error (unknown paths, wrong
//! methods, oversized requests, rejected input: see [`crate::json_errors`]),
//! a body size limit per port, a per-request time limit, and graceful
//! shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::{ApiError, error_response};
use crate::json_errors;
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;

/// The longest query string any route accepts; a topic or item number is far
/// shorter, so anything longer is a mistake or an attack.
pub const MAX_QUERY_BYTES: usize = 1024;
/// The largest request body the public port accepts (413 beyond it): the
/// only public body, a buy (`{"item_number": N, "request_id": "..."}`), is
/// under 200 bytes, and a stranger's 10 MB upload is never buffered.
pub const MAX_PUBLIC_BODY_BYTES: usize = 16 * 1024;
/// The largest request body a peer port accepts (413 beyond it): the largest
/// peer request is a replicated batch of at most 512 writes of under 300
/// bytes each (about 150 KiB), or a cache put of a search result; resync
/// snapshots travel in answers, which have no such limit.
pub const MAX_PEER_BODY_BYTES: usize = 4 * 1024 * 1024;
/// No request may hold a connection longer than this; peers time out sooner.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of a service's two ports a router serves; they differ in the
/// largest body they accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The public API (the frontend's, or a tier's reads).
    Public,
    /// The internal API only peers call (with the peer token).
    Peer,
}

impl Port {
    pub const fn max_body_bytes(self) -> usize {
        match self {
            Self::Public => MAX_PUBLIC_BODY_BYTES,
            Self::Peer => MAX_PEER_BODY_BYTES,
        }
    }
}

/// Answers whether a service can take traffic now: `Err(reason)` when not.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A readiness check for services that are ready as soon as they listen.
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Ok(()))
}

/// Wraps the routes of a port that only peers call (the coordinator's, the
/// operator's health port) with the shared routes and layers.
pub fn service_router(routes: Router, metrics: Metrics, readiness: ReadinessCheck) -> Router {
    port_router(Port::Peer, routes, metrics, readiness)
}

/// Wraps a port's own routes with the shared routes and layers.
pub fn port_router(
    port: Port,
    routes: Router,
    metrics: Metrics,
    readiness: ReadinessCheck,
) -> Router {
    let shared = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(ready).with_state(readiness))
        .route(
            "/metrics",
            get(metrics::serve_metrics).with_state(metrics.clone()),
        );
    routes
        .merge(shared)
        .fallback(unknown_path)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn(reject_oversized_query))
        .layer(middleware::from_fn_with_state(
            metrics,
            metrics::track_requests,
        ))
        // One body limit, the port's: it refuses a too-long Content-Length
        // before reading anything and cuts a chunked body at the limit;
        // axum's own default (2 MB, for its extractors) is switched off so
        // that it cannot be a second, undocumented one.
        .layer(RequestBodyLimitLayer::new(port.max_body_bytes()))
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        // Outermost, so that it sees every error of the layers above.
        .layer(middleware::from_fn(json_errors::rewrite))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The two listeners of a service: the public API and the peer API.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub peer: TcpListener,
}

impl Listeners {
    /// Binds both addresses (`host:port`; port 0 picks a free port).
    pub async fn bind(public: &str, peer: &str) -> std::io::Result<Self> {
        Ok(Self {
            public: TcpListener::bind(public).await?,
            peer: TcpListener::bind(peer).await?,
        })
    }
}

/// Serves a service's public and peer routers until shutdown. Both get the
/// shared routes and layers; the peer router's routes check the peer token
/// themselves.
pub async fn serve_service(
    listeners: Listeners,
    public: Router,
    peer: Router,
    metrics: Metrics,
    readiness: ReadinessCheck,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let public = port_router(Port::Public, public, metrics.clone(), readiness.clone());
    let peer = port_router(Port::Peer, peer, metrics, readiness);
    let (public_done, peer_done) = tokio::join!(
        serve(listeners.public, public, shutdown.clone().wait()),
        serve(listeners.peer, peer, shutdown.wait()),
    );
    public_done.and(peer_done)
}

async fn ready(State(readiness): State<ReadinessCheck>) -> Response {
    match readiness() {
        Ok(()) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(reason) => ApiError::Unavailable(reason).into_response(),
    }
}

async fn unknown_path() -> ApiError {
    ApiError::NotFound("no such path".to_owned())
}

async fn wrong_method() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
}

async fn reject_oversized_query(request: Request, next: Next) -> Response {
    let query_len = request.uri().query().map_or(0, str::len);
    if query_len > MAX_QUERY_BYTES {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("query is {query_len} bytes; the limit is {MAX_QUERY_BYTES}"),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn app() -> Router {
        let routes = Router::new().route("/hello", get(|| async { "hi" }));
        service_router(routes, Metrics::new("test"), always_ready())
    }

    async fn status_of(method: &str, uri: &str) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("valid request");
        app().oneshot(request).await.expect("infallible").status()
    }

    #[tokio::test]
    async fn unknown_paths_wrong_methods_and_long_queries_are_4xx() {
        assert_eq!(status_of("GET", "/hello").await, StatusCode::OK);
        assert_eq!(status_of("GET", "/nope").await, StatusCode::NOT_FOUND);
        assert_eq!(
            status_of("DELETE", "/hello").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        let long = format!("/hello?x={}", "a".repeat(MAX_QUERY_BYTES + 1));
        assert_eq!(status_of("GET", &long).await, StatusCode::URI_TOO_LONG);
    }
}
