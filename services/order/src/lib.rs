//! The order tier: it executes buys and keeps the order log, replicated
//! primary-backup across its members.
//!
//! A buy, on the order primary:
//! 1. A request id that already has an order answers with that order.
//! 2. Take one unit of stock through the catalog primary, under the same
//!    request id (so a retry never takes stock twice).
//! 3. If the catalog sold it, record the order (replicated, durable) and
//!    answer `Success` with its number; if sold out, answer `Failed`.
//!
//! Every step is idempotent under the request id, so a buy that failed
//! midway (a crash, a failover) completes when it is retried.
//!
//! Public port: `POST /buy`, `GET /orders/{order_number}`.

pub mod machine;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bookstore_catalog::CatalogOutput;
use bookstore_core::ApiError;
use bookstore_core::api::{
    BuyRequest, BuyResponse, BuyResult, CatalogUpdate, Envelope, Order, new_request_id,
    validate_request_id,
};
use bookstore_core::cluster::Role;
use bookstore_core::http::{Listeners, serve_service};
use bookstore_core::metrics::Metrics;
use bookstore_core::params;
use bookstore_core::peer::PeerClient;
use bookstore_core::retry::{self, FAILOVER_RETRY_BUDGET};
use bookstore_core::shutdown::Shutdown;
use bookstore_core::token::PeerToken;
use bookstore_replication::directory::Directory;
use bookstore_replication::node::{Node, NodeConfig, NodeError};
use bookstore_replication::store;
pub use machine::{OrderCommand, OrderMachine};

/// How to run one order member.
#[derive(Debug, Clone)]
pub struct OrderSettings {
    pub node: NodeConfig,
}

/// Why an order member stopped.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
struct OrderService {
    node: Node<OrderMachine>,
    catalog: Directory,
    peers: PeerClient,
    /// Ends the failover retries of in-flight buys when the member stops.
    shutdown: Shutdown,
}

/// Runs an order member until `shutdown`.
pub async fn run(
    settings: OrderSettings,
    listeners: Listeners,
    token: PeerToken,
    shutdown: Shutdown,
) -> Result<(), OrderError> {
    let metrics = Metrics::new("order");
    let peers = PeerClient::new(token.clone(), metrics.clone());
    let catalog = Directory::new();
    catalog.spawn_refresher(
        peers.clone(),
        settings.node.coordinator_url.clone(),
        settings.node.heartbeat_interval,
    );
    let noop_commit = std::sync::Arc::new(|_, _: &[OrderCommand]| {
        Box::pin(async {}) as bookstore_replication::node::BoxFuture
    });
    let noop_promote =
        std::sync::Arc::new(|| Box::pin(async {}) as bookstore_replication::node::BoxFuture);
    let node = Node::start(
        settings.node,
        OrderMachine::new(),
        token.clone(),
        metrics.clone(),
        noop_commit,
        noop_promote,
    )?;
    let service = OrderService {
        node: node.clone(),
        catalog: catalog.clone(),
        peers,
        shutdown: shutdown.clone(),
    };
    let public = Router::new()
        .route("/buy", post(buy))
        .route("/orders/{order_number}", get(order))
        .with_state(service);
    let peer = node
        .peer_routes(token.clone())
        .merge(catalog.push_route(token));
    serve_service(listeners, public, peer, metrics, node.readiness(), shutdown)
        .await
        .map_err(OrderError::Serve)
}

async fn buy(
    State(service): State<OrderService>,
    Json(request): Json<BuyRequest>,
) -> Result<Json<BuyResponse>, ApiError> {
    let request_id = match request.request_id {
        Some(id) => {
            validate_request_id(&id).map_err(ApiError::BadRequest)?;
            id
        }
        None => new_request_id(),
    };
    service.node.check_available()?;
    if !service.node.is_primary() {
        return service.forward_buy(request.item_number, request_id).await;
    }
    service
        .buy_here(request.item_number, request_id)
        .await
        .map(Json)
}

async fn order(
    State(service): State<OrderService>,
    Path(raw): Path<String>,
) -> Result<Json<Envelope<Order>>, ApiError> {
    let order_number = params::parse_item_number(&raw).map_err(|_| {
        ApiError::bad_request(format!(
            "order_number must be a non-negative integer, not {raw:?}"
        ))
    })?;
    let (_, order) = service.node.read(|view| view.get(order_number))?;
    let order = order
        .map_err(store::read_failed)?
        .ok_or_else(|| ApiError::NotFound(format!("no order {order_number}")))?;
    Ok(Json(Envelope { result: order }))
}

impl OrderService {
    /// Steps 1-3 of a buy (see the module comment).
    async fn buy_here(
        &self,
        item_number: u64,
        request_id: String,
    ) -> Result<BuyResponse, ApiError> {
        if let Ok((_, Ok(Some(order)))) = self.node.read(|view| view.by_request(&request_id)) {
            return Ok(success(order));
        }
        let taken = retry::while_unavailable(FAILOVER_RETRY_BUDGET, &self.shutdown, || {
            self.take_stock(item_number, &request_id)
        })
        .await?;
        match taken {
            CatalogOutput::Adjusted { .. } => {
                let record = OrderCommand::Record {
                    request_id,
                    item_number,
                };
                let order = self.node.submit(record).await?;
                Ok(success(order))
            }
            CatalogOutput::Insufficient { .. } => Ok(BuyResponse {
                result: BuyResult::Failed,
                order_number: None,
            }),
            CatalogOutput::UnknownItem { .. } => Err(ApiError::NotFound(format!(
                "no book with item_number {item_number}"
            ))),
            CatalogOutput::CostSet { .. } => Err(ApiError::BadGateway(
                "the catalog answered a stock change with a cost change".to_owned(),
            )),
        }
    }

    async fn take_stock(
        &self,
        item_number: u64,
        request_id: &str,
    ) -> Result<CatalogOutput, ApiError> {
        let (_, peer) = self.catalog.primary(Role::Catalog).ok_or_else(|| {
            ApiError::Unavailable("the catalog has no primary right now".to_owned())
        })?;
        let update = CatalogUpdate {
            item_number,
            stock_delta: Some(-1),
            cost: None,
            request_id: Some(request_id.to_owned()),
        };
        let url = format!("http://{peer}/peer/catalog/update");
        Ok(self.peers.post("catalog", "update", &url, &update).await?)
    }

    /// A buy that reached a replica goes to the primary.
    async fn forward_buy(
        &self,
        item_number: u64,
        request_id: String,
    ) -> Result<Json<BuyResponse>, ApiError> {
        let topology = self.node.topology();
        let primary = topology.primary_member().ok_or_else(|| {
            ApiError::Unavailable("the order tier has no primary right now".to_owned())
        })?;
        let url = format!("http://{}/buy", primary.public);
        let request = BuyRequest {
            item_number,
            request_id: Some(request_id),
        };
        Ok(Json(
            self.peers
                .post("order", "forward_buy", &url, &request)
                .await?,
        ))
    }
}

fn success(order: Order) -> BuyResponse {
    BuyResponse {
        result: BuyResult::Success,
        order_number: Some(order.order_number),
    }
}
