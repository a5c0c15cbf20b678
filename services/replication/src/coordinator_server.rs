//! The coordinator served over HTTP, as `bookstore up` runs it: members post
//! heartbeats and in-sync changes; every topology change is pushed to the
//! tier's members and to the subscribers (the frontend).
//!
//! The operator serves one of these per store and adds pod readiness
//! ([`CoordinatorServer::mark_down`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bookstore_core::ApiError;
use bookstore_core::cluster::Role;
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_core::token::{PeerToken, require_token};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use crate::coordinator::{AlterError, Coordinator, CoordinatorConfig, Published};
use crate::topology::{AlterInSync, Heartbeat, Topology};

/// How long a topology push may take; a member that misses one learns the
/// topology from its next heartbeat answer anyway.
const PUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// Called with every topology change (the operator records Events).
pub type ChangeHook = Arc<dyn Fn(&Published) + Send + Sync>;

/// The coordinator and where to push its topologies.
#[derive(Clone)]
pub struct CoordinatorServer {
    coordinator: Arc<Mutex<Coordinator>>,
    /// Peer addresses that get every tier's topology; the operator replaces
    /// them as frontend pods come and go.
    subscribers: Arc<std::sync::RwLock<Vec<String>>>,
    pusher: PeerClient,
    metrics: CoordinatorMetrics,
    store: Arc<str>,
    on_change: Option<ChangeHook>,
}

/// The coordinator's metrics, labelled by store and tier; one set serves
/// every store of a process.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    epoch: IntGaugeVec,
    primary: IntGaugeVec,
    failovers: IntCounterVec,
    failover_seconds: HistogramVec,
    changes: IntCounterVec,
}

impl CoordinatorMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let epoch = IntGaugeVec::new(
            Opts::new(
                "bookstore_coordinator_epoch",
                "The current topology epoch of each tier.",
            ),
            &["store", "tier"],
        )
        .expect("valid metric");
        let primary = IntGaugeVec::new(
            Opts::new(
                "bookstore_coordinator_primary",
                "The primary ordinal of each tier (-1: none).",
            ),
            &["store", "tier"],
        )
        .expect("valid metric");
        let failovers = IntCounterVec::new(
            Opts::new(
                "bookstore_coordinator_failovers_total",
                "Primaries replaced because they were lost.",
            ),
            &["store", "tier"],
        )
        .expect("valid metric");
        let failover_seconds = HistogramVec::new(
            HistogramOpts::new(
                "bookstore_coordinator_failover_seconds",
                "From the lost primary's last heartbeat to the new primary's topology.",
            )
            .buckets(vec![0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0]),
            &["store", "tier"],
        )
        .expect("valid metric");
        let changes = IntCounterVec::new(
            Opts::new(
                "bookstore_coordinator_topology_changes_total",
                "Topology changes published.",
            ),
            &["store", "tier"],
        )
        .expect("valid metric");
        metrics.register(Box::new(epoch.clone()));
        metrics.register(Box::new(primary.clone()));
        metrics.register(Box::new(failovers.clone()));
        metrics.register(Box::new(failover_seconds.clone()));
        metrics.register(Box::new(changes.clone()));
        Self {
            epoch,
            primary,
            failovers,
            failover_seconds,
            changes,
        }
    }
}

impl CoordinatorServer {
    /// A coordinator for `tiers` (tier and member count) that also pushes to
    /// `subscribers` (peer addresses, `host:port`); its metrics go to
    /// `metrics` under the store name `local`.
    pub fn new(
        config: CoordinatorConfig,
        tiers: &[(Role, usize)],
        subscribers: Vec<String>,
        token: PeerToken,
        metrics: &Metrics,
    ) -> Self {
        let coordinator_metrics = CoordinatorMetrics::new(metrics);
        Self::for_store(
            "local",
            config,
            tiers,
            subscribers,
            token,
            metrics,
            coordinator_metrics,
        )
    }

    /// A coordinator of the store `store`, with metrics shared by several.
    pub fn for_store(
        store: &str,
        config: CoordinatorConfig,
        tiers: &[(Role, usize)],
        subscribers: Vec<String>,
        token: PeerToken,
        metrics: &Metrics,
        coordinator_metrics: CoordinatorMetrics,
    ) -> Self {
        Self {
            coordinator: Arc::new(Mutex::new(Coordinator::new(config, tiers, Instant::now()))),
            subscribers: Arc::new(std::sync::RwLock::new(subscribers)),
            pusher: PeerClient::with_timeout(token, metrics.clone(), PUSH_TIMEOUT),
            metrics: coordinator_metrics,
            store: store.into(),
            on_change: None,
        }
    }

    /// Replaces the subscribers (peer addresses, `host:port`) that later
    /// topology changes are pushed to.
    pub fn set_subscribers(&self, subscribers: Vec<String>) {
        *self.subscribers.write().unwrap_or_else(|p| p.into_inner()) = subscribers;
    }

    /// Calls `hook` with every topology change.
    pub fn on_change(mut self, hook: ChangeHook) -> Self {
        self.on_change = Some(hook);
        self
    }

    /// Records a member's heartbeat; answers with its tier's topology.
    pub fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<Topology, ApiError> {
        let now = Instant::now();
        let (change, topology) = {
            let mut coordinator = self.lock();
            let change = coordinator.heartbeat(heartbeat, now);
            (change, coordinator.topology(heartbeat.tier, now))
        };
        if let Some(change) = change {
            self.publish(change);
        }
        topology.ok_or_else(|| {
            ApiError::NotFound(format!("{} is not a replicated tier", heartbeat.tier))
        })
    }

    /// The primary's request to change the in-sync set.
    pub fn alter_in_sync(&self, request: &AlterInSync) -> Result<Topology, ApiError> {
        let result = self.lock().alter_in_sync(request, Instant::now());
        match result {
            Ok(change) => {
                let topology = change.topology.clone();
                self.publish(change);
                Ok(topology)
            }
            Err(error @ (AlterError::StaleEpoch { .. } | AlterError::NotPrimary(_))) => {
                Err(ApiError::StaleEpoch(error.to_string()))
            }
            Err(error) => Err(ApiError::BadRequest(error.to_string())),
        }
    }

    /// Marks a member down now (its pod is gone or not Ready).
    pub fn mark_down(&self, tier: Role, ordinal: bookstore_core::cluster::Ordinal) {
        let change = self.lock().mark_down(tier, ordinal, Instant::now());
        if let Some(change) = change {
            self.publish(change);
        }
    }

    /// The current topology of every tier.
    pub fn topologies(&self) -> Vec<Topology> {
        self.lock().topologies(Instant::now())
    }

    /// The coordinator's peer routes, guarded by the peer token.
    pub fn routes(&self, token: PeerToken) -> Router {
        Router::new()
            .route("/coordinator/heartbeat", post(heartbeat))
            .route("/coordinator/in-sync", post(alter_in_sync))
            .route("/coordinator/topology", get(topologies))
            .with_state(self.clone())
            .layer(middleware::from_fn_with_state(token, require_token))
    }

    /// Expires silent members a few times per heartbeat interval, forever.
    pub async fn run_ticks(self) {
        let interval = self.lock().config().heartbeat_interval / 4;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let changes = self.lock().tick(Instant::now());
            for change in changes {
                self.publish(change);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.coordinator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Logs, counts and pushes a topology change.
    fn publish(&self, change: Published) {
        let topology = &change.topology;
        let tier = topology.tier.as_str();
        let store = &*self.store;
        tracing::info!(
            store,
            tier,
            epoch = topology.epoch,
            primary = ?topology.primary,
            failover = change.failover,
            reason = %change.reason,
            "topology changed"
        );
        self.metrics
            .epoch
            .with_label_values(&[store, tier])
            .set(topology.epoch as i64);
        self.metrics
            .primary
            .with_label_values(&[store, tier])
            .set(topology.primary.map_or(-1, i64::from));
        self.metrics.changes.with_label_values(&[store, tier]).inc();
        if change.failover {
            self.metrics
                .failovers
                .with_label_values(&[store, tier])
                .inc();
            let silent_for = self.lock().config().liveness_timeout();
            self.metrics
                .failover_seconds
                .with_label_values(&[store, tier])
                .observe(silent_for.as_secs_f64());
        }
        if let Some(hook) = &self.on_change {
            hook(&change);
        }
        // Members get their own tier's topology; subscribers (the frontend,
        // the order tier as a client of the catalog) get every tier's.
        let members = topology
            .members
            .iter()
            .map(|m| format!("http://{}/peer/topology", m.peer));
        let subscribers: Vec<String> = self
            .subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| format!("http://{s}/peer/directory"))
            .collect();
        for url in members.chain(subscribers) {
            let pusher = self.pusher.clone();
            let topology = topology.clone();
            tokio::spawn(async move {
                let pushed: Result<serde_json::Value, _> = pusher
                    .post("member", "push_topology", &url, &topology)
                    .await;
                if let Err(error) = pushed {
                    tracing::debug!(%url, %error, "topology push failed; the next poll or heartbeat carries it");
                }
            });
        }
    }
}

async fn heartbeat(
    State(server): State<CoordinatorServer>,
    Json(heartbeat): Json<Heartbeat>,
) -> Result<Json<Topology>, ApiError> {
    server.heartbeat(&heartbeat).map(Json)
}

async fn alter_in_sync(
    State(server): State<CoordinatorServer>,
    Json(request): Json<AlterInSync>,
) -> Result<Json<Topology>, ApiError> {
    server.alter_in_sync(&request).map(Json)
}

async fn topologies(State(server): State<CoordinatorServer>) -> Json<Vec<Topology>> {
    Json(server.topologies())
}
