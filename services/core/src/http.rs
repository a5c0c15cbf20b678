//! How every service is served: the routes all of them share (`/healthz`,
//! `/readyz`, `/metrics`), JSON answers for unknown paths, wrong methods and
//! oversized requests, a per-request time limit, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;
use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;

/// The longest query string any route accepts; a topic or item number is far
/// shorter, so anything longer is a mistake or an attack.
pub const MAX_QUERY_BYTES: usize = 1024;
/// The largest request body any route accepts (a replicated batch of writes
/// or a resync snapshot of a large order log fits well within it).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// No request may hold a connection longer than this; peers time out sooner.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers whether a service can take traffic now: `Err(reason)` when not.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A readiness check for services that are ready as soon as they listen.
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Ok(()))
}

/// Wraps a service's own routes with the shared routes and layers.
pub fn service_router(routes: Router, metrics: Metrics, readiness: ReadinessCheck) -> Router {
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
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
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
    let public = service_router(public, metrics.clone(), readiness.clone());
    let peer = service_router(peer, metrics, readiness);
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
    let body = json!({"error": {"code": "method_not_allowed", "message": "method not allowed on this path"}});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

async fn reject_oversized_query(request: Request, next: Next) -> Response {
    let query_len = request.uri().query().map_or(0, str::len);
    if query_len > MAX_QUERY_BYTES {
        let body = json!({"error": {"code": "uri_too_long", "message": format!("query is {query_len} bytes; the limit is {MAX_QUERY_BYTES}")}});
        return (StatusCode::URI_TOO_LONG, axum::Json(body)).into_response();
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
