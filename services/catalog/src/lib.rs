//! The catalog tier: the books, their stock and cost, replicated
//! primary-backup across its members.
//!
//! Public port: `GET /query_by_topic?topic=` and `GET /query_by_item?item_number=`
//! (the original's catalog API), served by any in-sync member;
//! `query_by_item?...&consistency=linearizable` by the primary alone, once it
//! has confirmed it still leads.
//! Peer port: `POST /peer/catalog/update` (the original's `update`: a stock
//! change or a cost change; forwarded to the primary), and the replication
//! API of [`bookstore_replication::node`].
//!
//! The primary invalidates the cache entries of every book a batch of writes
//! touches while the batch is made durable, before it answers any of them,
//! and clears the cache when it is promoted.

pub mod machine;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bookstore_core::ApiError;
use bookstore_core::api::{
    BookDetails, CacheInvalidate, CatalogUpdate, SearchEntry, Versioned, new_request_id,
};
use bookstore_core::http::{Listeners, serve_service};
use bookstore_core::inventory::Book;
use bookstore_core::metrics::Metrics;
use bookstore_core::params::{self, Consistency, QueryParams};
use bookstore_core::peer::PeerClient;
use bookstore_core::shutdown::Shutdown;
use bookstore_core::token::{PeerToken, require_token};
use bookstore_replication::node::messages::MemberError;
use bookstore_replication::node::{
    BoxFuture, CommitHook, Node, NodeConfig, NodeError, PromoteHook,
};
use bookstore_replication::store;
pub use machine::{CatalogCommand, CatalogMachine, CatalogOutput};

/// Attempts to invalidate cache entries before a write is answered anyway:
/// a cache that stays unreachable is down, and a restarted cache is empty.
const INVALIDATE_ATTEMPTS: usize = 3;
const INVALIDATE_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How to run one catalog member.
#[derive(Debug, Clone)]
pub struct CatalogSettings {
    pub node: NodeConfig,
    pub inventory: Vec<Book>,
    /// The cache's peer address (`host:port`), if the store has a cache.
    pub cache_peer: Option<String>,
}

/// A running catalog member.
pub type CatalogNode = Node<CatalogMachine>;

/// Runs a catalog member until `shutdown`.
pub async fn run(
    settings: CatalogSettings,
    listeners: Listeners,
    token: PeerToken,
    shutdown: Shutdown,
) -> Result<(), CatalogError> {
    let metrics = Metrics::new("catalog");
    let cache = CacheNotifier {
        client: PeerClient::new(token.clone(), metrics.clone()),
        cache_peer: settings.cache_peer.clone(),
    };
    let node = Node::start(
        settings.node,
        CatalogMachine::new(settings.inventory),
        token.clone(),
        metrics.clone(),
        cache.commit_hook(),
        cache.promote_hook(),
    )?;
    let public = public_routes(node.clone());
    let peer = node
        .peer_routes(token.clone())
        .merge(update_route(node.clone(), token));
    serve_service(listeners, public, peer, metrics, node.readiness(), shutdown)
        .await
        .map_err(CatalogError::Serve)
}

/// Why a catalog member stopped.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

fn public_routes(node: CatalogNode) -> Router {
    Router::new()
        .route("/query_by_topic", get(query_by_topic))
        .route("/query_by_item", get(query_by_item))
        .with_state(node)
}

fn update_route(node: CatalogNode, token: PeerToken) -> Router {
    Router::new()
        .route("/peer/catalog/update", post(update))
        .with_state(node)
        .layer(middleware::from_fn_with_state(token, require_token))
}

async fn query_by_topic(
    State(node): State<CatalogNode>,
    Query(query): Query<QueryParams>,
) -> Result<Json<Versioned<Vec<SearchEntry>>>, ApiError> {
    let topic = params::topic(&query)?;
    let (version, value) = node.read(|view| view.search(&topic))?;
    let value = value.map_err(store::read_failed)?;
    Ok(Json(Versioned { version, value }))
}

/// `consistency=linearizable` is served by the primary only, once it has
/// confirmed its leadership; elsewhere it is refused with the typed reason
/// (`not_primary`, 409), so the caller asks the primary.
async fn query_by_item(
    State(node): State<CatalogNode>,
    Query(query): Query<QueryParams>,
) -> Result<Json<Versioned<BookDetails>>, MemberError> {
    let item_number = params::item_number(&query)?;
    let (version, book) = match params::consistency(&query)? {
        Consistency::Default => node.read(|view| view.lookup(item_number))?,
        Consistency::Linearizable => {
            node.read_linearizable(move |view| view.lookup(item_number))
                .await?
        }
    };
    let value = book
        .map_err(store::read_failed)?
        .ok_or_else(|| ApiError::NotFound(format!("no book with item_number {item_number}")))?;
    Ok(Json(Versioned { version, value }))
}

async fn update(
    State(node): State<CatalogNode>,
    Json(update): Json<CatalogUpdate>,
) -> Result<Json<CatalogOutput>, ApiError> {
    let command = match (update.stock_delta, update.cost) {
        (Some(delta), None) => CatalogCommand::AdjustStock {
            item_number: update.item_number,
            delta,
            request_id: update.request_id.unwrap_or_else(new_request_id),
        },
        (None, Some(cost)) => CatalogCommand::SetCost {
            item_number: update.item_number,
            cost,
        },
        _ => {
            return Err(ApiError::bad_request(
                "an update changes either stock_delta or cost, not both or neither",
            ));
        }
    };
    Ok(Json(node.submit(command).await?))
}

/// Tells the cache about catalog changes.
#[derive(Clone)]
struct CacheNotifier {
    client: PeerClient,
    cache_peer: Option<String>,
}

impl CacheNotifier {
    fn commit_hook(&self) -> CommitHook<CatalogMachine> {
        let notifier = self.clone();
        Arc::new(move |version, commands: &[CatalogCommand]| {
            // Every book a command may change (a failed stock change leaves
            // a harmless extra tombstone).
            let item_numbers: Vec<_> = commands.iter().map(CatalogCommand::item_number).collect();
            let notifier = notifier.clone();
            Box::pin(async move { notifier.invalidate(item_numbers, version).await }) as BoxFuture
        })
    }

    fn promote_hook(&self) -> PromoteHook {
        let notifier = self.clone();
        Arc::new(move || {
            let notifier = notifier.clone();
            Box::pin(async move { notifier.clear().await }) as BoxFuture
        })
    }

    async fn invalidate(&self, mut item_numbers: Vec<u64>, version: u64) {
        let Some(cache) = &self.cache_peer else {
            return;
        };
        if item_numbers.is_empty() {
            return;
        }
        item_numbers.sort_unstable();
        item_numbers.dedup();
        let body = CacheInvalidate {
            item_numbers,
            version,
        };
        let url = format!("http://{cache}/peer/cache/invalidate");
        self.send_with_retries("invalidate", &url, &body).await;
    }

    async fn clear(&self) {
        let Some(cache) = &self.cache_peer else {
            return;
        };
        let url = format!("http://{cache}/peer/cache/clear");
        self.send_with_retries("clear", &url, &serde_json::json!({}))
            .await;
    }

    async fn send_with_retries(&self, operation: &str, url: &str, body: &impl serde::Serialize) {
        for attempt in 1..=INVALIDATE_ATTEMPTS {
            let sent: Result<serde_json::Value, _> =
                self.client.post("cache", operation, url, body).await;
            match sent {
                Ok(_) => return,
                Err(error) if attempt == INVALIDATE_ATTEMPTS => {
                    tracing::warn!(%error, operation, "cache unreachable; its entries expire by age");
                }
                Err(_) => tokio::time::sleep(INVALIDATE_RETRY_PAUSE).await,
            }
        }
    }
}
