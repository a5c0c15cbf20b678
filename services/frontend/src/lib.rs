//! The frontend: BookStore's public API, compatible with the original's
//! client (every answer is `{"result": ...}`).
//!
//! - `GET /search?topic=T` and `GET /lookup?item_number=N` read through the
//!   cache; on a miss they read from an in-sync catalog member (spreading
//!   reads over the replicas) and offer the result to the cache with the
//!   version it was read at.
//! - `GET /lookup?item_number=N&consistency=linearizable` skips the cache and
//!   reads from the catalog primary, which answers once it has confirmed it
//!   still leads: the answer reflects every buy acknowledged before it began.
//! - `GET /buy?item_number=N` and `POST /buy` go to the order primary, with a
//!   request id (the client's, or a fresh one) so that retries through a
//!   failover buy once.
//! - `GET /orders/{order_number}` reads an order from an in-sync order member.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bookstore_core::ApiError;
use bookstore_core::api::{
    BuyRequest, BuyResponse, CacheKey, CachePut, Envelope, Order, Versioned, new_request_id,
    validate_request_id,
};
use bookstore_core::cluster::Role;
use bookstore_core::http::{Listeners, always_ready, serve_service};
use bookstore_core::metrics::Metrics;
use bookstore_core::params::{self, Consistency, QueryParams};
use bookstore_core::peer::PeerClient;
use bookstore_core::retry::{self, FAILOVER_RETRY_BUDGET};
use bookstore_core::shutdown::Shutdown;
use bookstore_core::token::PeerToken;
use bookstore_replication::directory::Directory;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

/// How to run the frontend.
#[derive(Debug, Clone)]
pub struct FrontendSettings {
    /// The cache's (public, peer) addresses; `None` runs without a cache.
    pub cache: Option<(String, String)>,
    /// Base URL of the coordinator's peer API, polled for topologies.
    pub coordinator_url: String,
    pub refresh_interval: Duration,
}

/// The frontend's state, shared by every request (an `Arc`: handlers get it
/// without copying its settings).
struct Frontend {
    settings: FrontendSettings,
    directory: Directory,
    peers: PeerClient,
    /// Ends the failover retries of in-flight requests when the frontend stops.
    shutdown: Shutdown,
}

/// Runs the frontend until `shutdown`.
pub async fn run(
    settings: FrontendSettings,
    listeners: Listeners,
    token: PeerToken,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let metrics = Metrics::new("frontend");
    let peers = PeerClient::new(token.clone(), metrics.clone());
    let directory = Directory::new();
    directory.spawn_refresher(
        peers.clone(),
        settings.coordinator_url.clone(),
        settings.refresh_interval,
    );
    let frontend = Arc::new(Frontend {
        settings,
        directory: directory.clone(),
        peers,
        shutdown: shutdown.clone(),
    });
    let public = Router::new()
        .route("/search", get(search))
        .route("/lookup", get(lookup))
        .route("/buy", get(buy_get).post(buy_post))
        .route("/orders/{order_number}", get(order))
        .with_state(frontend);
    let peer = directory.push_route(token);
    serve_service(listeners, public, peer, metrics, always_ready(), shutdown).await
}

async fn search(
    State(frontend): State<Arc<Frontend>>,
    Query(query): Query<QueryParams>,
) -> Result<Response, ApiError> {
    let topic = params::topic(&query)?;
    if params::consistency(&query)? == Consistency::Linearizable {
        return Err(ApiError::bad_request(
            "search has no linearizable reads; /lookup?item_number=N&consistency=linearizable has",
        ));
    }
    let key = CacheKey::Search(topic.clone());
    frontend
        .read_through(key, "query_by_topic", &[("topic", topic.as_str())])
        .await
}

async fn lookup(
    State(frontend): State<Arc<Frontend>>,
    Query(query): Query<QueryParams>,
) -> Result<Response, ApiError> {
    let item = params::item_number(&query)?;
    let item_text = item.to_string();
    match params::consistency(&query)? {
        Consistency::Default => {
            let key = CacheKey::Lookup(item);
            frontend
                .read_through(key, "query_by_item", &[("item_number", item_text.as_str())])
                .await
        }
        Consistency::Linearizable => {
            let query = [
                ("item_number", item_text.as_str()),
                ("consistency", "linearizable"),
            ];
            frontend
                .read_from_primary(Role::Catalog, "query_by_item", &query)
                .await
        }
    }
}

async fn buy_get(
    State(frontend): State<Arc<Frontend>>,
    Query(query): Query<QueryParams>,
) -> Result<Json<BuyResponse>, ApiError> {
    let request = BuyRequest {
        item_number: params::item_number(&query)?,
        request_id: params::request_id(&query)?,
    };
    frontend.buy(request).await.map(Json)
}

/// `POST /buy` takes a JSON body `{"item_number": N, "request_id": "..."}`,
/// or, with an empty body, the same fields as query parameters.
async fn buy_post(
    State(frontend): State<Arc<Frontend>>,
    Query(query): Query<QueryParams>,
    body: Bytes,
) -> Result<Json<BuyResponse>, ApiError> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        BuyRequest {
            item_number: params::item_number(&query)?,
            request_id: params::request_id(&query)?,
        }
    } else {
        let request: BuyRequest = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body is not a buy request: {e}")))?;
        if let Some(id) = &request.request_id {
            validate_request_id(id).map_err(ApiError::BadRequest)?;
        }
        request
    };
    frontend.buy(request).await.map(Json)
}

async fn order(
    State(frontend): State<Arc<Frontend>>,
    Path(raw): Path<String>,
) -> Result<Json<Envelope<Order>>, ApiError> {
    let number = params::parse_item_number(&raw).map_err(|_| {
        ApiError::bad_request(format!(
            "order_number must be a non-negative integer, not {raw:?}"
        ))
    })?;
    let path = format!("orders/{number}");
    let envelope: Envelope<Order> = frontend
        .read_from(Role::Order, "order", "get_order", &path, &())
        .await?;
    Ok(Json(envelope))
}

impl Frontend {
    /// Reads through the cache: a hit answers at once; a miss reads from
    /// the catalog and offers the result to the cache. The result's JSON is
    /// passed through as text, never decoded: `{"result": <json>}`.
    async fn read_through(
        &self,
        key: CacheKey,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Response, ApiError> {
        if let Some(hit) = self.cache_get(&key, query).await {
            return Ok(envelope(&hit));
        }
        let read: Versioned<Box<RawValue>> = self
            .read_from(Role::Catalog, "catalog", path, path, query)
            .await?;
        let answer = envelope(read.value.get().as_bytes());
        self.cache_put(key, read.version, read.value);
        Ok(answer)
    }

    async fn cache_get(&self, key: &CacheKey, query: &[(&str, &str)]) -> Option<Bytes> {
        let (public, _) = self.settings.cache.as_ref()?;
        let path = match key {
            CacheKey::Lookup(_) => "lookup",
            CacheKey::Search(_) => "search",
        };
        let url = format!("http://{public}/{path}");
        match self.peers.get_bytes("cache", path, &url, query).await {
            Ok(hit) => hit,
            Err(error) => {
                tracing::debug!(%error, "cache read failed; reading from the catalog");
                None
            }
        }
    }

    /// Offers a read to the cache without making the client wait for it.
    fn cache_put(&self, key: CacheKey, version: u64, value: Box<RawValue>) {
        let Some((_, peer)) = self.settings.cache.clone() else {
            return;
        };
        let peers = self.peers.clone();
        tokio::spawn(async move {
            let url = format!("http://{peer}/peer/cache/put");
            let put = CachePut {
                key,
                version,
                value,
            };
            let stored: Result<serde_json::Value, _> = peers.post("cache", "put", &url, &put).await;
            if let Err(error) = stored {
                tracing::debug!(%error, "cache put failed");
            }
        });
    }

    /// Reads `path` from the first in-sync member of `tier` that answers,
    /// retrying through a failover.
    async fn read_from<Q, T>(
        &self,
        tier: Role,
        to: &str,
        operation: &str,
        path: &str,
        query: &Q,
    ) -> Result<T, ApiError>
    where
        Q: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        retry::while_unavailable(FAILOVER_RETRY_BUDGET, &self.shutdown, || async {
            let mut last_error =
                ApiError::Unavailable(format!("{tier} has no in-sync member right now"));
            for reader in self.directory.readers(tier) {
                let url = format!("http://{reader}/{path}");
                match self.peers.get(to, operation, &url, query).await {
                    Ok(value) => return Ok(value),
                    Err(error) if error.is_unavailable() => last_error = error.into(),
                    Err(error) => return Err(error.into()),
                }
            }
            Err(last_error)
        })
        .await
    }

    /// Reads `path` from the primary of `tier` (a linearizable read: never
    /// through the cache, whose entries may be older), retrying through a
    /// failover; the result's JSON is passed through as text.
    async fn read_from_primary(
        &self,
        tier: Role,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Response, ApiError> {
        let read: Versioned<Box<RawValue>> =
            retry::while_unavailable(FAILOVER_RETRY_BUDGET, &self.shutdown, || async {
                let (public, _) = self.directory.primary(tier).ok_or_else(|| {
                    ApiError::Unavailable(format!("{tier} has no primary right now"))
                })?;
                let url = format!("http://{public}/{path}");
                Ok(self.peers.get(tier.as_str(), path, &url, query).await?)
            })
            .await?;
        Ok(envelope(read.value.get().as_bytes()))
    }

    /// Sends a buy to the order primary, retrying through a failover under
    /// one request id.
    async fn buy(&self, request: BuyRequest) -> Result<BuyResponse, ApiError> {
        let request = BuyRequest {
            request_id: Some(request.request_id.unwrap_or_else(new_request_id)),
            ..request
        };
        retry::while_unavailable(FAILOVER_RETRY_BUDGET, &self.shutdown, || async {
            let (public, _) = self.directory.primary(Role::Order).ok_or_else(|| {
                ApiError::Unavailable("the order tier has no primary right now".to_owned())
            })?;
            let url = format!("http://{public}/buy");
            Ok(self.peers.post("order", "buy", &url, &request).await?)
        })
        .await
    }
}

/// The public answer `{"result": <json>}` around a result's JSON text.
fn envelope(result: &[u8]) -> Response {
    const OPEN: &[u8] = b"{\"result\":";
    let mut body = Vec::with_capacity(OPEN.len() + result.len() + 1);
    body.extend_from_slice(OPEN);
    body.extend_from_slice(result);
    body.push(b'}');
    ([(CONTENT_TYPE, "application/json")], body).into_response()
}
