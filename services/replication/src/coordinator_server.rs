//! The coordinator served over HTTP, as `bookstore up` runs it: members post
//! heartbeats and in-sync changes; every topology change is pushed to the
//! tier's members and to the subscribers (the frontend).
//!
//! The operator serves one of these per store and adds pod readiness
//! ([`CoordinatorServer::mark_down`]).
//!
//! Every change is saved to the coordinator's [`DurableStore`] before it is
//! published or answered: the coordinator's lock is held from the decision
//! through the save, so nobody ever sees a topology that a restarted
//! coordinator could forget. A failed save rolls the decision back (the next
//! tick decides again); a conflicting save (another operator leader saved
//! first) reloads the other's state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bookstore_core::ApiError;
use bookstore_core::cluster::{Ordinal, Role};
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_core::token::{PeerToken, require_token};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use serde::{Deserialize, Serialize};

use crate::coordinator::durable::{DurableError, DurableState, DurableStore};
use crate::coordinator::{AlterError, Coordinator, CoordinatorConfig, Published, TierStatus};
use crate::switchover::SwitchoverRefused;
use crate::topology::{AlterInSync, Epoch, Heartbeat, Topology};

/// How long a topology push may take; a member that misses one learns the
/// topology from its next heartbeat answer anyway.
const PUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// Called with every topology change (the operator records Events).
pub type ChangeHook = Arc<dyn Fn(&Published) + Send + Sync>;

/// How many recent topology changes `GET /coordinator/history` keeps: enough
/// for a console's timeline of a session of breaking things, bounded so a
/// long-lived coordinator's memory is too.
pub const HISTORY_LEN: usize = 200;

/// One published topology change, as a timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When it was published, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub tier: Role,
    pub epoch: Epoch,
    /// The primary before, when this change replaced it.
    pub previous_primary: Option<Ordinal>,
    pub primary: Option<Ordinal>,
    pub in_sync: Vec<Ordinal>,
    /// The primary was lost (not handed over).
    pub failover: bool,
    /// Why, as the coordinator detected it.
    pub reason: String,
}

impl Transition {
    fn of(change: &Published, at: SystemTime) -> Self {
        let topology = &change.topology;
        Self {
            at_ms: at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            tier: topology.tier,
            epoch: topology.epoch,
            previous_primary: change.previous_primary,
            primary: topology.primary,
            in_sync: topology.in_sync_ordinals(),
            failover: change.failover,
            reason: change.reason.clone(),
        }
    }
}

/// The coordinator and where to push its topologies.
#[derive(Clone)]
pub struct CoordinatorServer {
    guarded: Arc<tokio::sync::Mutex<Guarded>>,
    durable: Arc<dyn DurableStore>,
    /// Peer addresses that get every tier's topology; the operator replaces
    /// them as frontend pods come and go.
    subscribers: Arc<std::sync::RwLock<Vec<String>>>,
    pusher: PeerClient,
    metrics: CoordinatorMetrics,
    store: Arc<str>,
    on_change: Option<ChangeHook>,
    /// The last [`HISTORY_LEN`] changes published, oldest first.
    history: Arc<std::sync::Mutex<VecDeque<Transition>>>,
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
    save_failures: IntCounterVec,
}

/// The coordinator and the last state saved for it, under one lock.
struct Guarded {
    coordinator: Coordinator,
    saved: DurableState,
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
        let save_failures = IntCounterVec::new(
            Opts::new(
                "bookstore_coordinator_save_failures_total",
                "Topology changes not published because the durable state could not be saved.",
            ),
            &["store", "reason"],
        )
        .expect("valid metric");
        metrics.register(Box::new(save_failures.clone()));
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
            save_failures,
        }
    }
}

/// Who a coordinator serves and where it keeps its durable state.
pub struct CoordinatorSetup<'a> {
    /// The store's name in metrics and logs (`local` for `bookstore up`).
    pub store: &'a str,
    pub config: CoordinatorConfig,
    /// Each replicated tier with the number of members it expects.
    pub tiers: &'a [(Role, usize)],
    /// Peer addresses (`host:port`) that get every tier's topology.
    pub subscribers: Vec<String>,
    pub durable: Arc<dyn DurableStore>,
}

impl CoordinatorServer {
    /// Loads the durable state and starts a coordinator that continues from
    /// it; fails if the state cannot be read (a coordinator that started
    /// from nothing while its state exists could elect a stale member).
    pub async fn start(
        setup: CoordinatorSetup<'_>,
        token: PeerToken,
        metrics: &Metrics,
        coordinator_metrics: CoordinatorMetrics,
    ) -> Result<Self, DurableError> {
        let saved = setup.durable.load().await?;
        if saved.is_empty() {
            tracing::warn!(
                store = setup.store,
                location = %setup.durable.location(),
                "no durable coordinator state: each tier waits for all its members, then elects the one with the newest data"
            );
        } else {
            tracing::info!(store = setup.store, location = %setup.durable.location(), state = ?saved, "continuing from the durable coordinator state");
        }
        let coordinator = Coordinator::new(setup.config, setup.tiers, &saved, Instant::now());
        Ok(Self {
            guarded: Arc::new(tokio::sync::Mutex::new(Guarded { coordinator, saved })),
            durable: setup.durable,
            subscribers: Arc::new(std::sync::RwLock::new(setup.subscribers)),
            pusher: PeerClient::with_timeout(token, metrics.clone(), PUSH_TIMEOUT),
            metrics: coordinator_metrics,
            store: setup.store.into(),
            on_change: None,
            history: Arc::new(std::sync::Mutex::new(VecDeque::with_capacity(HISTORY_LEN))),
        })
    }

    /// `bookstore up`'s coordinator: the store `local`, with its own metrics.
    pub async fn start_local(
        config: CoordinatorConfig,
        tiers: &[(Role, usize)],
        subscribers: Vec<String>,
        durable: Arc<dyn DurableStore>,
        token: PeerToken,
        metrics: &Metrics,
    ) -> Result<Self, DurableError> {
        let setup = CoordinatorSetup {
            store: "local",
            config,
            tiers,
            subscribers,
            durable,
        };
        Self::start(setup, token, metrics, CoordinatorMetrics::new(metrics)).await
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
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<Topology, ApiError> {
        let mut guarded = self.guarded.lock().await;
        let now = Instant::now();
        let change = guarded.coordinator.heartbeat(heartbeat, now);
        self.commit(&mut guarded, change.into_iter().collect())
            .await;
        guarded
            .coordinator
            .topology(heartbeat.tier, Instant::now())
            .ok_or_else(|| {
                ApiError::Unavailable(format!(
                    "no topology for {} now (not a replicated tier, or resuming and waiting for its in-sync members)",
                    heartbeat.tier
                ))
            })
    }

    /// The primary's request to change the in-sync set.
    pub async fn alter_in_sync(&self, request: &AlterInSync) -> Result<Topology, ApiError> {
        let mut guarded = self.guarded.lock().await;
        match guarded.coordinator.alter_in_sync(request, Instant::now()) {
            Ok(change) => {
                let topology = change.topology.clone();
                if self.commit(&mut guarded, vec![change]).await {
                    Ok(topology)
                } else {
                    Err(ApiError::Unavailable(
                        "the coordinator could not save the in-sync change; retry".to_owned(),
                    ))
                }
            }
            Err(error @ (AlterError::StaleEpoch { .. } | AlterError::NotPrimary(_))) => {
                Err(ApiError::StaleEpoch(error.to_string()))
            }
            Err(error) => Err(ApiError::BadRequest(error.to_string())),
        }
    }

    /// Marks a member down now, until it rejoins (its pod is gone or being
    /// deleted, or its process exited, as seen at `observed_at`); see
    /// [`Coordinator::mark_down`].
    pub async fn mark_down(
        &self,
        tier: Role,
        ordinal: bookstore_core::cluster::Ordinal,
        cause: &str,
        observed_at: Instant,
    ) {
        let mut guarded = self.guarded.lock().await;
        let change =
            guarded
                .coordinator
                .mark_down(tier, ordinal, cause, observed_at, Instant::now());
        self.commit(&mut guarded, change.into_iter().collect())
            .await;
    }

    /// Treats a member as silent now, until its next heartbeat (its pod's
    /// container is not running); see [`Coordinator::mark_unresponsive`].
    pub async fn mark_unresponsive(
        &self,
        tier: Role,
        ordinal: bookstore_core::cluster::Ordinal,
        cause: &str,
    ) {
        let mut guarded = self.guarded.lock().await;
        let change = guarded
            .coordinator
            .mark_unresponsive(tier, ordinal, cause, Instant::now());
        self.commit(&mut guarded, change.into_iter().collect())
            .await;
    }

    /// Takes new settings (the spec changed) without a restart: see
    /// [`Coordinator::reconfigure`]; the changes are saved and published.
    pub async fn reconfigure(&self, config: CoordinatorConfig, tiers: &[(Role, usize)]) {
        let mut guarded = self.guarded.lock().await;
        let changes = guarded
            .coordinator
            .reconfigure(config, tiers, Instant::now());
        self.commit(&mut guarded, changes).await;
        tracing::info!(store = %self.store, heartbeat_interval = ?config.heartbeat_interval, miss_threshold = config.miss_threshold, ?tiers, "coordinator settings in force");
    }

    /// A planned switchover of `tier` to `target` (`None`: end the request);
    /// see [`Coordinator::switch_over`]. The handover is saved and published.
    pub async fn switch_over(
        &self,
        tier: Role,
        target: Option<bookstore_core::cluster::Ordinal>,
    ) -> Result<(), SwitchoverRefused> {
        let mut guarded = self.guarded.lock().await;
        let change = guarded
            .coordinator
            .switch_over(tier, target, Instant::now())?;
        self.commit(&mut guarded, change.into_iter().collect())
            .await;
        Ok(())
    }

    /// Fences exactly `fenced` of `tier`; true if that changed anything. See
    /// [`Coordinator::fence`]; the change is saved and published.
    pub async fn fence(
        &self,
        tier: Role,
        fenced: &std::collections::BTreeSet<bookstore_core::cluster::Ordinal>,
    ) -> bool {
        let mut guarded = self.guarded.lock().await;
        if &guarded.coordinator.fenced(tier) == fenced {
            return false;
        }
        let change = guarded.coordinator.fence(tier, fenced, Instant::now());
        self.commit(&mut guarded, change.into_iter().collect())
            .await;
        true
    }

    /// The members of `tier` that are fenced.
    pub async fn fenced(
        &self,
        tier: Role,
    ) -> std::collections::BTreeSet<bookstore_core::cluster::Ordinal> {
        self.guarded.lock().await.coordinator.fenced(tier)
    }

    /// Whether the tiers hibernate.
    pub async fn is_hibernating(&self) -> bool {
        self.guarded.lock().await.coordinator.is_hibernating()
    }

    /// Hibernates or wakes every tier; true if that changed anything. See
    /// [`Coordinator::hibernate`]; the changes are saved and published.
    pub async fn hibernate(&self, on: bool) -> bool {
        let mut guarded = self.guarded.lock().await;
        if guarded.coordinator.is_hibernating() == on {
            return false;
        }
        let changes = guarded.coordinator.hibernate(on, Instant::now());
        self.commit(&mut guarded, changes).await;
        true
    }

    /// The member a switchover asks for in `tier`, if any.
    pub async fn switchover_target(&self, tier: Role) -> Option<bookstore_core::cluster::Ordinal> {
        self.guarded
            .lock()
            .await
            .coordinator
            .switchover_target(tier)
    }

    /// The settings in force: heartbeat settings and members per tier.
    pub async fn settings(&self) -> (CoordinatorConfig, Vec<(Role, usize)>) {
        let guarded = self.guarded.lock().await;
        (
            *guarded.coordinator.config(),
            guarded.coordinator.expected_members(),
        )
    }

    /// How many pods `tier` must keep (see [`Coordinator::kept_members`]).
    pub async fn kept_members(&self, tier: Role) -> Option<usize> {
        self.guarded.lock().await.coordinator.kept_members(tier)
    }

    /// The current topology of every tier.
    pub async fn topologies(&self) -> Vec<Topology> {
        self.guarded
            .lock()
            .await
            .coordinator
            .topologies(Instant::now())
    }

    /// The recent topology changes, oldest first.
    pub fn history(&self) -> Vec<Transition> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.iter().cloned().collect()
    }

    fn remember(&self, change: &Published) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY_LEN {
            history.pop_front();
        }
        history.push_back(Transition::of(change, SystemTime::now()));
    }

    /// What every tier is doing, and why it waits if it does.
    pub async fn status(&self) -> Vec<TierStatus> {
        self.guarded.lock().await.coordinator.status(Instant::now())
    }

    /// The coordinator's peer routes, guarded by the peer token.
    pub fn routes(&self, token: PeerToken) -> Router {
        Router::new()
            .route("/coordinator/heartbeat", post(heartbeat))
            .route("/coordinator/in-sync", post(alter_in_sync))
            .route("/coordinator/topology", get(topologies))
            .route("/coordinator/status", get(status))
            .route("/coordinator/history", get(history))
            .with_state(self.clone())
            .layer(middleware::from_fn_with_state(token, require_token))
    }

    /// Expires silent members a few times per heartbeat interval, forever,
    /// and logs when a tier starts or stops waiting.
    /// The tick follows the heartbeat interval in force.
    pub async fn run_ticks(self) {
        let mut waiting: BTreeMap<Role, Option<String>> = BTreeMap::new();
        loop {
            let interval = self
                .guarded
                .lock()
                .await
                .coordinator
                .config()
                .heartbeat_interval;
            tokio::time::sleep(interval / 4).await;
            let mut guarded = self.guarded.lock().await;
            let now = Instant::now();
            let changes = guarded.coordinator.tick(now);
            self.commit(&mut guarded, changes).await;
            for tier in guarded.coordinator.status(now) {
                if waiting.get(&tier.tier) != Some(&tier.waiting) {
                    match &tier.waiting {
                        Some(why) => {
                            tracing::warn!(store = %self.store, tier = %tier.tier, "{why}")
                        }
                        None => {
                            tracing::info!(store = %self.store, tier = %tier.tier, epoch = tier.epoch, primary = ?tier.primary, "tier is served")
                        }
                    }
                    waiting.insert(tier.tier, tier.waiting);
                }
            }
        }
    }

    /// Saves what `changes` depend on, then publishes them; on a failed save
    /// rolls the coordinator back and publishes nothing. True if published.
    async fn commit(&self, guarded: &mut Guarded, changes: Vec<Published>) -> bool {
        let state = guarded.coordinator.durable_state();
        if state != guarded.saved {
            if let Err(error) = self.durable.save(&state).await {
                self.save_failed(guarded, &error).await;
                return false;
            }
            guarded.saved = state;
        }
        let silent_for = guarded.coordinator.config().liveness_timeout();
        for change in changes {
            self.publish(change, silent_for);
        }
        true
    }

    async fn save_failed(&self, guarded: &mut Guarded, error: &DurableError) {
        let reason = match error {
            DurableError::Conflict(_) => "conflict",
            _ => "io",
        };
        self.metrics
            .save_failures
            .with_label_values(&[&*self.store, reason])
            .inc();
        tracing::error!(store = %self.store, %error, "cannot save the coordinator's durable state; the change is not published");
        if matches!(error, DurableError::Conflict(_)) {
            match self.durable.load().await {
                Ok(theirs) => guarded.saved = theirs,
                Err(error) => {
                    tracing::error!(store = %self.store, %error, "cannot reload the durable state")
                }
            }
        }
        let saved = guarded.saved.clone();
        guarded.coordinator.roll_back(&saved);
    }

    /// Logs, counts and pushes a topology change; `silent_for` is how long
    /// a lost primary had been silent (the liveness timeout in force).
    fn publish(&self, change: Published, silent_for: Duration) {
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
            self.metrics
                .failover_seconds
                .with_label_values(&[store, tier])
                .observe(silent_for.as_secs_f64());
        }
        self.remember(&change);
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
    server.heartbeat(&heartbeat).await.map(Json)
}

async fn alter_in_sync(
    State(server): State<CoordinatorServer>,
    Json(request): Json<AlterInSync>,
) -> Result<Json<Topology>, ApiError> {
    server.alter_in_sync(&request).await.map(Json)
}

async fn topologies(State(server): State<CoordinatorServer>) -> Json<Vec<Topology>> {
    Json(server.topologies().await)
}

async fn status(State(server): State<CoordinatorServer>) -> Json<Vec<TierStatus>> {
    Json(server.status().await)
}

async fn history(State(server): State<CoordinatorServer>) -> Json<Vec<Transition>> {
    Json(server.history())
}
