//! One coordinator per store, inside the operator.
//!
//! The store's members heartbeat to the operator (as they heartbeat to
//! `bookstore up` locally) at `/stores/{namespace}/{name}/coordinator/...`,
//! and the primary asks it to change the in-sync set there. The operator
//! adds what only Kubernetes knows: a member whose pod is gone or not Ready
//! is marked down at once, without waiting for missed heartbeats. Every
//! topology change becomes a Kubernetes Event on the BookStore. Each
//! coordinator continues from its store's durable state
//! ([`crate::coordinator_state`]), so a new operator leader picks up the
//! epochs and in-sync sets where the old one left them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use bookstore_core::ApiError;
use bookstore_core::cluster::{Ordinal, Role};
use bookstore_core::metrics::Metrics;
use bookstore_core::plan::{self, REPLICATED_TIERS, TOPOLOGY_SUBSCRIBERS};
use bookstore_core::token::{PeerToken, TOKEN_HEADER};
use bookstore_replication::coordinator::durable::{DurableError, DurableStore};
use bookstore_replication::coordinator::{CoordinatorConfig, Published};
use bookstore_replication::coordinator_server::{
    CoordinatorMetrics, CoordinatorServer, CoordinatorSetup, Transition,
};
use bookstore_replication::topology::{AlterInSync, Heartbeat, Topology};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::controller::DownMember;
use crate::crd::{BookStore, CoordinatorSettings};
use crate::fence::{self, Fenced};
use crate::names::{PEER_PORT, StoreNames};
use crate::resources::store_names;
use crate::switchover::{BadAnnotation, Requests, SwitchoverState};
use crate::validate::ValidStore;

/// A store, by namespace and name.
pub type StoreKey = (String, String);

struct StoreCoordinator {
    server: CoordinatorServer,
    token: PeerToken,
    /// The settings it was last given (from the spec).
    settings: Settings,
    /// The replicated subscribers' peer addresses (the order members:
    /// clients of the catalog, they get every topology, as the frontend pods
    /// do).
    member_subscribers: Vec<String>,
    ticks: tokio::task::AbortHandle,
    last_failover: Arc<Mutex<Option<Time>>>,
    /// The switchover refusals last reported (an Event only for new ones).
    refused: Vec<String>,
    /// The primaries a rolling upgrade asks for (where the annotation asks
    /// for none), per tier.
    rollout: BTreeMap<Role, Ordinal>,
}

impl Drop for StoreCoordinator {
    fn drop(&mut self) {
        self.ticks.abort();
    }
}

/// What a store's coordinator takes from its spec; a change is applied to
/// the running coordinator at the next reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    config: CoordinatorConfig,
    tiers: [(Role, usize); 2],
}

impl Settings {
    fn of(valid: &ValidStore) -> Self {
        let spec = &valid.spec;
        Self {
            config: CoordinatorConfig {
                heartbeat_interval: spec.heartbeat.interval,
                miss_threshold: spec.heartbeat.failure_threshold,
            },
            tiers: plan::coordinator_tiers(|role| spec.replicas.of(role) as usize),
        }
    }
}

/// The peer addresses of the replicated topology subscribers (the order
/// members), by their stable DNS names; the stateless ones (the frontend
/// pods) are added by pod IP as the pods are seen.
fn member_subscribers(names: &StoreNames, valid: &ValidStore) -> Vec<String> {
    TOPOLOGY_SUBSCRIBERS
        .into_iter()
        .filter(|role| role.is_replicated())
        .flat_map(|role| {
            (0..valid.spec.replicas.of(role))
                .map(move |ordinal| format!("{}:{PEER_PORT}", names.member_host(role, ordinal)))
        })
        .collect()
}

/// The coordinators of every store this operator manages.
pub struct Coordination {
    stores: Mutex<HashMap<StoreKey, StoreCoordinator>>,
    metrics: Metrics,
    coordinator_metrics: CoordinatorMetrics,
    recorder: Option<Recorder>,
}

impl Coordination {
    /// `recorder` publishes Events; `None` in tests without an API server.
    pub fn new(metrics: Metrics, recorder: Option<Recorder>) -> Arc<Self> {
        let coordinator_metrics = CoordinatorMetrics::new(&metrics);
        Arc::new(Self {
            stores: Mutex::new(HashMap::new()),
            metrics,
            coordinator_metrics,
            recorder,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StoreKey, StoreCoordinator>> {
        self.stores.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The coordinator of `store` (`valid` is its validated spec), started on
    /// first use from the durable state in `durable` (it fails if that cannot
    /// be read: starting from nothing while a state exists could elect a
    /// stale member). A running one takes the spec's settings in place (it
    /// keeps everything it knows, so epochs go on rising).
    pub async fn ensure(
        &self,
        store: &BookStore,
        valid: &ValidStore,
        token: PeerToken,
        durable: Arc<dyn DurableStore>,
    ) -> Result<CoordinatorServer, DurableError> {
        let names = store_names(store);
        let key = (names.namespace.clone(), names.name.clone());
        let settings = Settings::of(valid);
        if let Some(server) = self.reuse(&key, &token, &settings, member_subscribers(&names, valid))
        {
            if let Some(settings) = server.1 {
                server.0.reconfigure(settings.config, &settings.tiers).await;
            }
            return Ok(server.0);
        }
        let member_subscribers = member_subscribers(&names, valid);
        let last_failover = Arc::new(Mutex::new(None));
        let hook = self.change_hook(store.object_ref(&()), names.clone(), last_failover.clone());
        let setup = CoordinatorSetup {
            store: &format!("{}/{}", names.namespace, names.name),
            config: settings.config,
            tiers: &settings.tiers,
            subscribers: member_subscribers.clone(),
            durable,
        };
        let server = CoordinatorServer::start(
            setup,
            token.clone(),
            &self.metrics,
            self.coordinator_metrics.clone(),
        )
        .await?
        .on_change(hook);
        let mut stores = self.lock();
        // Another reconcile of the same store may have started one meanwhile.
        if let Some(existing) = stores.get(&key).filter(|s| s.token == token) {
            return Ok(existing.server.clone());
        }
        let ticks = tokio::spawn(server.clone().run_ticks()).abort_handle();
        tracing::info!(store = %names.name, namespace = %names.namespace, "coordinator started");
        stores.insert(
            key,
            StoreCoordinator {
                server: server.clone(),
                token,
                settings,
                member_subscribers,
                ticks,
                last_failover,
                refused: Vec::new(),
                rollout: BTreeMap::new(),
            },
        );
        Ok(server)
    }

    /// The running coordinator of `key` if it has `token`, with the settings
    /// it must take now if they changed (recorded as given).
    fn reuse(
        &self,
        key: &StoreKey,
        token: &PeerToken,
        settings: &Settings,
        member_subscribers: Vec<String>,
    ) -> Option<(CoordinatorServer, Option<Settings>)> {
        let mut stores = self.lock();
        let existing = stores.get_mut(key).filter(|s| &s.token == token)?;
        let changed = (existing.settings != *settings).then(|| settings.clone());
        if changed.is_some() {
            tracing::info!(store = %key.1, namespace = %key.0, from = ?existing.settings, to = ?settings, "the spec changed the coordinator's settings");
            existing.settings = settings.clone();
            existing.member_subscribers = member_subscribers;
        }
        Some((existing.server.clone(), changed))
    }

    /// The settings in force in the coordinator of `key`.
    pub async fn settings(&self, key: &StoreKey) -> Option<CoordinatorSettings> {
        let server = self.lock().get(key)?.server.clone();
        let (config, tiers) = server.settings().await;
        let members = |role| {
            tiers
                .iter()
                .find(|(tier, _)| *tier == role)
                .map_or(0, |&(_, n)| u32::try_from(n).unwrap_or(u32::MAX))
        };
        Some(CoordinatorSettings {
            heartbeat_interval_ms: u64::try_from(config.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            failure_threshold: config.miss_threshold,
            catalog_members: members(Role::Catalog),
            order_members: members(Role::Order),
        })
    }

    /// Pods each replicated tier of `key` must keep: more than its spec
    /// while a scaled-down member is still in the coordinator's topology.
    pub async fn kept_members(&self, key: &StoreKey) -> BTreeMap<Role, u32> {
        let Some(server) = self.lock().get(key).map(|s| s.server.clone()) else {
            return BTreeMap::new();
        };
        let mut kept = BTreeMap::new();
        for role in REPLICATED_TIERS {
            if let Some(count) = server.kept_members(role).await {
                kept.insert(role, u32::try_from(count).unwrap_or(u32::MAX));
            }
        }
        kept
    }

    /// Applies what the switchover annotation asks for (`requests`; an
    /// unreadable annotation changes nothing and is reported): each tier's
    /// coordinator is asked to move its primary, or to end a request the
    /// annotation no longer makes. A refused request is retried at every
    /// reconcile (the target may come in sync), with one Warning Event per
    /// new refusal.
    pub async fn apply_switchovers(
        &self,
        store: &BookStore,
        key: &StoreKey,
        requests: Result<Requests, BadAnnotation>,
    ) -> SwitchoverState {
        let Some(server) = self.lock().get(key).map(|s| s.server.clone()) else {
            return SwitchoverState::default();
        };
        let rollout = self
            .lock()
            .get(key)
            .map(|s| s.rollout.clone())
            .unwrap_or_default();
        let mut state = SwitchoverState::default();
        match requests.map(|asked| merged(asked, rollout)) {
            Err(bad) => state.refused.push(bad.to_string()),
            Ok(requests) => {
                for tier in REPLICATED_TIERS {
                    let target = requests.get(&tier).copied();
                    let outcome = if server.switchover_target(tier).await == target {
                        Ok(())
                    } else {
                        server.switch_over(tier, target).await
                    };
                    match (outcome, target) {
                        (Err(refused), Some(ordinal)) => state.refused.push(format!(
                            "switchover of {tier} to {tier}-{ordinal} refused: {refused}"
                        )),
                        (Ok(()), Some(ordinal)) => state.held.push((tier, ordinal)),
                        _ => {}
                    }
                }
            }
        }
        self.report_refusals(store, key, &state.refused).await;
        state
    }

    /// Hibernates (`on`) or wakes the coordinator of `key` (before the
    /// workloads are scaled to zero, or back up); true if that changed it.
    pub async fn hibernate(&self, key: &StoreKey, on: bool) -> bool {
        let Some(server) = self.lock().get(key).map(|s| s.server.clone()) else {
            return false;
        };
        server.hibernate(on).await
    }

    /// Whether the coordinator of `key` hibernates.
    pub async fn is_hibernating(&self, key: &StoreKey) -> bool {
        let server = self.lock().get(key).map(|s| s.server.clone());
        match server {
            Some(server) => server.is_hibernating().await,
            None => false,
        }
    }

    /// Fences exactly `fenced` in each tier of `key`; the tiers whose fenced
    /// members changed, with what was fenced before.
    pub async fn fence(&self, key: &StoreKey, fenced: &Fenced) -> Vec<(Role, BTreeSet<Ordinal>)> {
        let Some(server) = self.lock().get(key).map(|s| s.server.clone()) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (&tier, ordinals) in fenced {
            let before = server.fenced(tier).await;
            if server.fence(tier, ordinals).await {
                changed.push((tier, before));
            }
        }
        changed
    }

    /// The members fenced in each tier of `key`.
    pub async fn fenced(&self, key: &StoreKey) -> Fenced {
        let mut fenced = fence::none();
        let server = self.lock().get(key).map(|s| s.server.clone());
        if let Some(server) = server {
            for (tier, ordinals) in fenced.iter_mut() {
                *ordinals = server.fenced(*tier).await;
            }
        }
        fenced
    }

    /// Sets (or with `None` ends) the switchover a rolling upgrade of `tier`
    /// asks for; true if that changed anything.
    pub fn set_rollout_target(&self, key: &StoreKey, tier: Role, target: Option<Ordinal>) -> bool {
        let mut stores = self.lock();
        let Some(store) = stores.get_mut(key) else {
            return false;
        };
        let before = match target {
            Some(ordinal) => store.rollout.insert(tier, ordinal),
            None => store.rollout.remove(&tier),
        };
        before != target
    }

    /// One Warning Event per refusal not reported before.
    async fn report_refusals(&self, store: &BookStore, key: &StoreKey, refused: &[String]) {
        let new: Vec<String> = {
            let mut stores = self.lock();
            let Some(entry) = stores.get_mut(key) else {
                return;
            };
            let new = refused
                .iter()
                .filter(|r| !entry.refused.contains(r))
                .cloned()
                .collect();
            entry.refused = refused.to_vec();
            new
        };
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        for note in new {
            tracing::warn!(store = %key.1, namespace = %key.0, "{note}");
            let event = Event {
                type_: EventType::Warning,
                reason: "SwitchoverRefused".to_owned(),
                // Each refusal its own Event: one series would keep the first
                // refusal's note.
                action: refusal_action(&note),
                note: Some(note),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &store.object_ref(&())).await {
                tracing::warn!(%error, "cannot publish an Event");
            }
        }
    }

    /// Stops the coordinator of a deleted store.
    pub fn forget(&self, key: &StoreKey) {
        if self.lock().remove(key).is_some() {
            tracing::info!(namespace = %key.0, store = %key.1, "coordinator stopped");
        }
    }

    /// The stores that have a coordinator.
    pub fn keys(&self) -> Vec<StoreKey> {
        self.lock().keys().cloned().collect()
    }

    pub async fn topology(&self, key: &StoreKey, tier: Role) -> Option<Topology> {
        let server = self.lock().get(key)?.server.clone();
        server
            .topologies()
            .await
            .into_iter()
            .find(|t| t.tier == tier)
    }

    pub fn last_failover(&self, key: &StoreKey) -> Option<Time> {
        let last_failover = self.lock().get(key)?.last_failover.clone();
        let time = last_failover.lock().unwrap_or_else(|p| p.into_inner());
        time.clone()
    }

    /// Members of `tier` whose pod is being deleted are down now until they
    /// rejoin; those whose pod is gone or whose container is not running
    /// until their next heartbeat. `listed_at` is when the pods were read.
    pub async fn observe_pods(
        &self,
        key: &StoreKey,
        tier: Role,
        down: &[DownMember],
        listed_at: std::time::Instant,
    ) {
        let Some(server) = self.lock().get(key).map(|s| s.server.clone()) else {
            return;
        };
        for member in down {
            if member.sticky {
                server
                    .mark_down(tier, member.ordinal, member.cause, listed_at)
                    .await;
            } else {
                server
                    .mark_unresponsive(tier, member.ordinal, member.cause)
                    .await;
            }
        }
    }

    /// The stateless subscribers' pods (the frontend, by IP) get every later
    /// topology pushed, with the replicated ones; they also poll, so a pod
    /// that starts between two reconciles learns the topology within a
    /// heartbeat interval.
    pub fn observe_subscriber_pods(&self, key: &StoreKey, pod_ips: &[String]) {
        let stores = self.lock();
        let Some(store) = stores.get(key) else { return };
        let pods = pod_ips.iter().map(|ip| format!("{ip}:{PEER_PORT}"));
        store.server.set_subscribers(
            store
                .member_subscribers
                .iter()
                .cloned()
                .chain(pods)
                .collect(),
        );
    }

    /// Turns topology changes into Events (failover, handover, resync).
    fn change_hook(
        &self,
        reference: ObjectReference,
        names: StoreNames,
        last_failover: Arc<Mutex<Option<Time>>>,
    ) -> bookstore_replication::coordinator_server::ChangeHook {
        let recorder = self.recorder.clone();
        Arc::new(move |change: &Published| {
            if change.failover {
                *last_failover.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            let Some(recorder) = recorder.clone() else {
                return;
            };
            let event = event_for(&names, change);
            let reference = reference.clone();
            tokio::spawn(async move {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::warn!(%error, "cannot publish an Event");
                }
            });
        })
    }

    /// The coordinator API of every store, on the operator's coordinator port.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/stores/{namespace}/{name}/coordinator/heartbeat",
                post(heartbeat),
            )
            .route(
                "/stores/{namespace}/{name}/coordinator/in-sync",
                post(alter_in_sync),
            )
            .route(
                "/stores/{namespace}/{name}/coordinator/topology",
                get(topologies),
            )
            .route(
                "/stores/{namespace}/{name}/coordinator/history",
                get(history),
            )
            .with_state(self.clone())
    }

    /// The coordinator of a store, if the caller holds the store's token.
    fn authorized(
        &self,
        key: StoreKey,
        headers: &HeaderMap,
    ) -> Result<CoordinatorServer, ApiError> {
        let stores = self.lock();
        let store = stores
            .get(&key)
            .ok_or_else(|| ApiError::NotFound(format!("no store {}/{}", key.0, key.1)))?;
        let offered = headers
            .get(TOKEN_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !store.token.matches(offered) {
            return Err(ApiError::Unauthorized(
                "wrong or missing peer token".to_owned(),
            ));
        }
        Ok(store.server.clone())
    }
}

/// An Event action that tells refusals apart: the note up to its reason
/// ("switchover of catalog to catalog-1 refused"), within the API's limit.
fn refusal_action(note: &str) -> String {
    let head = note.split(": ").next().unwrap_or(note);
    head.chars().take(MAX_EVENT_ACTION_CHARS).collect()
}

/// The longest `action` the Events API accepts.
const MAX_EVENT_ACTION_CHARS: usize = 128;

/// The annotation's requests, with the rollout's for the tiers it does not
/// name (a person's request wins).
fn merged(mut asked: Requests, rollout: BTreeMap<Role, Ordinal>) -> Requests {
    for (tier, ordinal) in rollout {
        asked.entry(tier).or_insert(ordinal);
    }
    asked
}

/// The Event that tells a person what a topology change was: its reason is
/// the kind of change, its note names the tier, the epoch, the old and new
/// primary and the cause as it was detected. Events with the same reason,
/// action and related object fold into one series whose note stays the
/// first one, so the action names the tier and the epoch: every transition
/// is an Event of its own, and `kubectl describe bs` reads as a timeline.
pub fn event_for(names: &StoreNames, change: &Published) -> Event {
    let topology = &change.topology;
    let (reason, action, type_) = match (change.failover, change.previous_primary) {
        (true, _) => ("Failover", "FailOver", EventType::Warning),
        (false, Some(_)) if change.reason.contains("by switchover") => {
            ("Switchover", "SwitchOver", EventType::Normal)
        }
        (false, Some(_)) => ("Handover", "HandOver", EventType::Normal),
        _ if change.reason.contains("added [") && !change.reason.contains("added []") => {
            ("Resynced", "Admit", EventType::Normal)
        }
        _ if change.reason.contains("removed: the tier is scaled down") => {
            ("MemberRemoved", "Remove", EventType::Normal)
        }
        _ => ("TopologyChanged", "Publish", EventType::Normal),
    };
    let name =
        |ordinal: Option<u32>| ordinal.map_or("none".to_owned(), |o| names.pod(topology.tier, o));
    let primary = match change.previous_primary {
        Some(old) if Some(old) != topology.primary => {
            format!("primary {} -> {}", name(Some(old)), name(topology.primary))
        }
        _ => format!("primary {}", name(topology.primary)),
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(format!(
            "{} epoch {}: {} (primary {}; {primary})",
            topology.tier,
            topology.epoch,
            change.reason,
            topology
                .primary
                .map_or("none".to_owned(), |p| p.to_string())
        )),
        action: format!("{action} {} epoch {}", topology.tier, topology.epoch),
        secondary: topology.primary.map(|ordinal| ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(names.pod(topology.tier, ordinal)),
            namespace: Some(names.namespace.clone()),
            ..Default::default()
        }),
    }
}

async fn heartbeat(
    State(coordination): State<Arc<Coordination>>,
    Path(key): Path<StoreKey>,
    headers: HeaderMap,
    Json(heartbeat): Json<Heartbeat>,
) -> Result<Json<Topology>, ApiError> {
    coordination
        .authorized(key, &headers)?
        .heartbeat(&heartbeat)
        .await
        .map(Json)
}

async fn alter_in_sync(
    State(coordination): State<Arc<Coordination>>,
    Path(key): Path<StoreKey>,
    headers: HeaderMap,
    Json(request): Json<AlterInSync>,
) -> Result<Json<Topology>, ApiError> {
    coordination
        .authorized(key, &headers)?
        .alter_in_sync(&request)
        .await
        .map(Json)
}

async fn topologies(
    State(coordination): State<Arc<Coordination>>,
    Path(key): Path<StoreKey>,
    headers: HeaderMap,
) -> Result<Json<Vec<Topology>>, ApiError> {
    let server = coordination.authorized(key, &headers)?;
    Ok(Json(server.topologies().await))
}

/// The store's recent topology changes, oldest first, with their causes.
async fn history(
    State(coordination): State<Arc<Coordination>>,
    Path(key): Path<StoreKey>,
    headers: HeaderMap,
) -> Result<Json<Vec<Transition>>, ApiError> {
    let server = coordination.authorized(key, &headers)?;
    Ok(Json(server.history()))
}

/// The URL the members of `names` reach their coordinator at.
pub fn coordinator_url(operator_base_url: &str, names: &StoreNames) -> String {
    format!(
        "{}/stores/{}/{}",
        operator_base_url.trim_end_matches('/'),
        names.namespace,
        names.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookstore_replication::topology::TopologyMember;

    fn published(failover: bool, previous: Option<u32>, reason: &str) -> Published {
        Published {
            topology: Topology {
                tier: Role::Catalog,
                epoch: 7,
                primary: Some(1),
                members: vec![TopologyMember {
                    ordinal: 1,
                    incarnation: 1,
                    peer: String::new(),
                    public: String::new(),
                    live: true,
                    in_sync: true,
                }],
            },
            reason: reason.to_owned(),
            failover,
            previous_primary: previous,
        }
    }

    #[test]
    fn events_name_the_kind_of_change() {
        let names = StoreNames::new("shop", "books");
        let failover = event_for(
            &names,
            &published(true, Some(0), "catalog primary moved from 0 to 1"),
        );
        assert_eq!(failover.reason, "Failover");
        assert!(matches!(failover.type_, EventType::Warning));
        let related = failover.secondary.as_ref().expect("the primary pod");
        assert_eq!(related.name.as_deref(), Some("shop-catalog-1"));
        assert!(
            failover
                .note
                .as_deref()
                .unwrap_or_default()
                .contains("epoch 7")
        );
        assert_eq!(
            event_for(&names, &published(false, Some(1), "moved")).reason,
            "Handover"
        );
        // One Event per transition: the action names the tier and epoch, so
        // no two transitions fold into one series; the note names both
        // primaries and the cause.
        let note = failover.note.as_deref().unwrap_or_default();
        assert_eq!(failover.action, "FailOver catalog epoch 7");
        assert!(
            note.contains("primary shop-catalog-0 -> shop-catalog-1"),
            "{note}"
        );
        assert!(note.contains("catalog primary moved from 0 to 1"), "{note}");
        let mut later = published(true, Some(0), "moved");
        later.topology.epoch = 9;
        assert_ne!(event_for(&names, &later).action, failover.action);
        assert_eq!(
            event_for(
                &names,
                &published(
                    false,
                    Some(0),
                    "catalog primary moved from 0 to 1 by switchover"
                )
            )
            .reason,
            "Switchover"
        );
        assert_eq!(
            event_for(
                &names,
                &published(false, None, "added [catalog-0], dropped []")
            )
            .reason,
            "Resynced"
        );
        assert_eq!(
            event_for(
                &names,
                &published(false, None, "added [], dropped [catalog-0]")
            )
            .reason,
            "TopologyChanged"
        );
    }

    #[test]
    fn each_refusal_is_an_event_of_its_own() {
        let one = refusal_action("switchover of catalog to catalog-1 refused: not in sync");
        let other = refusal_action("switchover of catalog to catalog-0 refused: not live");
        assert_eq!(one, "switchover of catalog to catalog-1 refused");
        assert_ne!(one, other);
        assert!(refusal_action(&"x".repeat(500)).chars().count() <= MAX_EVENT_ACTION_CHARS);
    }

    #[test]
    fn members_reach_their_store_under_its_path() {
        let names = StoreNames::new("shop", "books");
        assert_eq!(
            coordinator_url("http://bookstore-operator.ops.svc:9100/", &names),
            "http://bookstore-operator.ops.svc:9100/stores/books/shop"
        );
    }
}
