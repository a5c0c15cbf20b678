//! The cache tier: the most recent search and lookup results, so repeated
//! reads skip the catalog. Bounded in entries and age; kept consistent by
//! versioned puts and the catalog primary's invalidations (see [`entries`]).
//!
//! Public port: `GET /search?topic=`, `GET /lookup?item_number=` answer a hit
//! with `200` and the cached JSON as the body, verbatim (it is stored as the
//! bytes the frontend offered, so a hit is never decoded or re-encoded), and
//! a miss with `204 No Content`.
//! Peer port: `POST /peer/cache/put`, `/peer/cache/invalidate`, `/peer/cache/clear`.

pub mod entries;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bookstore_core::ApiError;
use bookstore_core::api::{CACHE_MISS_STATUS, CacheInvalidate, CacheKey, CachePut};
use bookstore_core::http::{Listeners, always_ready, serve_service};
use bookstore_core::metrics::Metrics;
use bookstore_core::params::{self, QueryParams};
use bookstore_core::shutdown::Shutdown;
use bookstore_core::token::{PeerToken, require_token};
use entries::{Entries, PutOutcome};
use prometheus::{IntCounterVec, IntGauge, Opts};
use serde_json::json;

/// How to run the cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    pub capacity: usize,
    pub max_age: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            capacity: entries::DEFAULT_CAPACITY,
            max_age: entries::DEFAULT_MAX_AGE,
        }
    }
}

#[derive(Clone)]
struct Cache {
    entries: Arc<Mutex<Entries>>,
    lookups: IntCounterVec,
    size: IntGauge,
}

/// Runs the cache until `shutdown`.
pub async fn run(
    settings: CacheSettings,
    listeners: Listeners,
    token: PeerToken,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let metrics = Metrics::new("cache");
    let lookups = IntCounterVec::new(
        Opts::new(
            "bookstore_cache_requests_total",
            "Cache reads and writes by kind and result (hit, miss, stored, stale).",
        ),
        &["kind", "result"],
    )
    .expect("valid metric");
    let size = IntGauge::new(
        "bookstore_cache_entries",
        "Entries held (values and tombstones).",
    )
    .expect("valid metric");
    metrics.register(Box::new(lookups.clone()));
    metrics.register(Box::new(size.clone()));
    let cache = Cache {
        entries: Arc::new(Mutex::new(Entries::new(
            settings.capacity,
            settings.max_age,
        ))),
        lookups,
        size,
    };
    let public = Router::new()
        .route("/search", get(search))
        .route("/lookup", get(lookup))
        .with_state(cache.clone());
    let peer = Router::new()
        .route("/peer/cache/put", post(put))
        .route("/peer/cache/invalidate", post(invalidate))
        .route("/peer/cache/clear", post(clear))
        .with_state(cache)
        .layer(middleware::from_fn_with_state(token, require_token));
    serve_service(listeners, public, peer, metrics, always_ready(), shutdown).await
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &CacheKey, kind: &str) -> Response {
        let value = self.lock().get(key, Instant::now());
        let result = if value.is_some() { "hit" } else { "miss" };
        self.lookups.with_label_values(&[kind, result]).inc();
        match value {
            Some(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
            None => StatusCode::from_u16(CACHE_MISS_STATUS)
                .unwrap_or(StatusCode::NO_CONTENT)
                .into_response(),
        }
    }
}

async fn search(
    State(cache): State<Cache>,
    Query(query): Query<QueryParams>,
) -> Result<Response, ApiError> {
    let topic = params::topic(&query)?;
    Ok(cache.get(&CacheKey::Search(topic), "search"))
}

async fn lookup(
    State(cache): State<Cache>,
    Query(query): Query<QueryParams>,
) -> Result<Response, ApiError> {
    let item = params::item_number(&query)?;
    Ok(cache.get(&CacheKey::Lookup(item), "lookup"))
}

async fn put(State(cache): State<Cache>, Json(put): Json<CachePut>) -> Json<serde_json::Value> {
    let outcome = {
        let mut entries = cache.lock();
        let value = Bytes::from(String::from(Box::<str>::from(put.value)));
        let outcome = entries.put(put.key, put.version, value, Instant::now());
        cache.size.set(entries.len() as i64);
        outcome
    };
    let result = match outcome {
        PutOutcome::Stored => "stored",
        PutOutcome::Stale => "stale",
    };
    cache.lookups.with_label_values(&["put", result]).inc();
    Json(json!({ "result": result }))
}

async fn invalidate(
    State(cache): State<Cache>,
    Json(request): Json<CacheInvalidate>,
) -> Json<serde_json::Value> {
    let mut entries = cache.lock();
    entries.invalidate(&request.item_numbers, request.version);
    cache.size.set(entries.len() as i64);
    Json(json!({ "result": "invalidated" }))
}

async fn clear(State(cache): State<Cache>) -> Json<serde_json::Value> {
    let mut entries = cache.lock();
    entries.clear();
    cache.size.set(0);
    tracing::info!("cache cleared (new catalog primary)");
    Json(json!({ "result": "cleared" }))
}
