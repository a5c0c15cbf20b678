//! The reconcile loop: a pipeline of read → validate → build → apply →
//! coordinate → status. Only this module talks to the API server; the
//! decisions are the pure functions of `validate`, `resources` and `status`.
//! An invalid store is reported once and then waits for a change: of the
//! store itself, or of the ConfigMap its inventory names.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_core::cluster::Role;
use bookstore_core::plan::{REPLICATED_TIERS, TOPOLOGY_SUBSCRIBERS};
use bookstore_core::token::PeerToken;
use futures::{FutureExt as _, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::Instrument as _;

use crate::coordination::{Coordination, StoreKey, coordinator_url};
use crate::coordinator_state::ConfigMapStore;
use crate::crd::{BookStore, BookStoreStatus, TierRollout};
use crate::metrics::{self, OperatorMetrics};
use crate::names::{
    FENCED_MEMBERS_ANNOTATION, FIELD_MANAGER, HIBERNATION_ANNOTATION, PRIMARY, REPLICA, ROLE_LABEL,
    StoreNames,
};
use crate::resources::{self, Inputs, owner_reference, store_names};
use crate::status::{self, Observed};
use crate::validate::{self, InventorySource, ReplicaCounts, ValidSpec, ValidStore};
use crate::{fence, hibernation, rollout, switchover};

/// How often a healthy store is looked at again: the coordinator changes
/// topologies between reconciles, and labels and status follow within this.
const RESYNC_PERIOD: Duration = Duration::from_secs(2);
/// How long to wait before retrying after an error.
const ERROR_REQUEUE: Duration = Duration::from_secs(5);
/// How often coordinators of deleted stores are stopped.
const SWEEP_PERIOD: Duration = Duration::from_secs(15);

/// Why a reconcile failed. Each error knows its metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the peer token Secret {0} has no usable token")]
    BadTokenSecret(String),
    #[error("the coordinator's durable state: {0}")]
    CoordinatorState(#[from] bookstore_replication::coordinator::durable::DurableError),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::BadTokenSecret(_) => "token_secret",
            Error::CoordinatorState(_) => "coordinator_state",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The namespaces whose stores this operator runs; empty: every one.
    pub watch_namespaces: Vec<String>,
    pub coordination: Arc<Coordination>,
    pub metrics: OperatorMetrics,
    pub recorder: Recorder,
    /// The operator's coordinator base URL, as the store's pods reach it.
    pub operator_url: String,
}

/// The namespaces watched: `None` for every namespace (one cluster-wide
/// watch per kind), or one controller per listed namespace, so that Roles in
/// those namespaces are all the operator needs.
fn scopes(context: &Context) -> Vec<Option<String>> {
    if context.watch_namespaces.is_empty() {
        vec![None]
    } else {
        context.watch_namespaces.iter().cloned().map(Some).collect()
    }
}

/// The API of kind `K` in `scope` (`None`: every namespace).
fn scoped<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    tokio::spawn(sweep_deleted_stores(context.clone()));
    let shutdown = shutdown.shared();
    let controllers = scopes(&context)
        .into_iter()
        .map(|scope| run_in(context.clone(), scope, shutdown.clone()));
    futures::future::join_all(controllers).await;
}

/// One controller over the stores of `scope` and what they own.
async fn run_in(
    context: Arc<Context>,
    scope: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let scope = scope.as_deref();
    let managed =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=bookstore-operator");
    let controller = Controller::new(
        scoped::<BookStore>(&client, scope),
        watcher::Config::default(),
    );
    let stores = controller.store();
    controller
        .owns(scoped::<StatefulSet>(&client, scope), managed.clone())
        .owns(scoped::<Deployment>(&client, scope), managed.clone())
        .owns(scoped::<Service>(&client, scope), managed.clone())
        .owns(scoped::<ConfigMap>(&client, scope), managed.clone())
        .watches(scoped::<Pod>(&client, scope), managed, |pod| {
            let store = pod.labels().get("app.kubernetes.io/instance")?.clone();
            Some(ObjectRef::<BookStore>::new(&store).within(&pod.namespace()?))
        })
        // A user's inventory ConfigMap: a store waiting for it to appear or be
        // fixed is reconciled when it changes.
        .watches(
            scoped::<ConfigMap>(&client, scope),
            watcher::Config::default(),
            move |config_map| stores_reading(&stores, &config_map),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                // A watch that fails (e.g. forbidden by RBAC) stalls every
                // store it feeds: say so where an operator of the cluster looks.
                Err(kube::runtime::controller::Error::QueueError(error)) => {
                    tracing::warn!(%error, "watch failed");
                }
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
                Ok(_) => {}
            }
        })
        .await;
}

/// Sets up the span and the timer, then runs the pipeline.
async fn reconcile(store: Arc<BookStore>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let names = store_names(&store);
    let span = tracing::info_span!("reconcile", store = %names.name, namespace = %names.namespace);
    let result = Reconciler {
        store: &store,
        names: &names,
        context: &context,
    }
    .run()
    .instrument(span)
    .await;
    context
        .metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    context
        .metrics
        .reconciles
        .with_label_values(&[outcome])
        .inc();
    result
}

/// The stores whose inventory is `config_map`.
fn stores_reading(stores: &Store<BookStore>, config_map: &ConfigMap) -> Vec<ObjectRef<BookStore>> {
    let (Some(name), Some(namespace)) = (&config_map.metadata.name, &config_map.metadata.namespace)
    else {
        return Vec::new();
    };
    stores
        .state()
        .iter()
        .filter(|store| store.namespace().as_ref() == Some(namespace))
        .filter(|store| {
            store
                .spec
                .inventory
                .as_ref()
                .and_then(|i| i.config_map.as_ref())
                .is_some_and(|reference| &reference.name == name)
        })
        .map(|store| ObjectRef::from_obj(store.as_ref()))
        .collect()
}

fn error_policy(store: Arc<BookStore>, error: &Error, context: Arc<Context>) -> Action {
    tracing::warn!(store = %store.name_any(), %error, "reconcile failed");
    context
        .metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    Action::requeue(ERROR_REQUEUE)
}

/// Hibernation and fencing as in force, with their conditions.
struct Day2 {
    hibernating: bool,
    hibernation: (bool, &'static str, String),
    fencing: Option<(bool, &'static str, String)>,
}

struct Reconciler<'a> {
    store: &'a BookStore,
    names: &'a StoreNames,
    context: &'a Context,
}

impl Reconciler<'_> {
    async fn run(&self) -> Result<Action, Error> {
        // 1. Validate: a bad spec is reported, never applied, never fatal;
        //    the store then waits for a change (its own, or its inventory's).
        let valid = match self.validate().await? {
            Ok(valid) => valid,
            Err(problem) => {
                self.report_invalid(vec![problem]).await?;
                return Ok(Action::await_change());
            }
        };
        // 2. The coordinator takes the spec's settings first: a scale-down
        //    removes the members above the new count from the in-sync set
        //    and the topology before their pods go.
        let token = self.ensure_token().await?;
        let durable = ConfigMapStore::for_store(
            self.context.client.clone(),
            self.names,
            resources::owner_reference(self.store),
        );
        self.context
            .coordination
            .ensure(self.store, &valid, token, Arc::new(durable))
            .await?;
        // 3. Hibernation and fencing go to the coordinator before the
        //    workloads change: it freezes before the pods go, and wakes
        //    before they come back.
        let day2 = self.hibernate_and_fence().await;
        // 4. Build and apply the desired objects.
        let inputs = Inputs {
            coordinator_url: coordinator_url(&self.context.operator_url, self.names),
            kept_members: self.context.coordination.kept_members(&self.key()).await,
            hibernating: day2.hibernating,
        };
        let stateful_sets = self
            .apply_all(&resources::desired(self.store, &valid, &inputs))
            .await?;
        // 5. Coordinate: pods in, the rollout's next step (none while
        //    hibernating: there are no pods to replace), primaries' labels
        //    out.
        let listed_at = Instant::now();
        let pods = self.list_pods().await?;
        let rollout = if day2.hibernating {
            Vec::new()
        } else {
            self.roll_out(&valid, &pods, &stateful_sets).await?
        };
        let mut observed = self.observe(&valid, &pods, listed_at).await?;
        observed.rollout = rollout;
        observed.hibernating = day2.hibernating;
        observed.hibernation = Some(day2.hibernation);
        observed.fencing = day2.fencing;
        self.label_pods(&valid, &pods, &observed).await?;
        // 6. Report.
        self.write_status(&valid, &observed).await?;
        Ok(Action::requeue(RESYNC_PERIOD))
    }

    /// The validated store, or what is wrong with it (one sentence).
    async fn validate(&self) -> Result<Result<ValidStore, String>, Error> {
        let spec = match validate::spec(&self.store.spec) {
            Ok(spec) => spec,
            Err(problems) => return Ok(Err(problems.to_string())),
        };
        Ok(self
            .inventory(&spec)
            .await?
            .map(|text| spec.with_inventory(text))
            .map_err(|problem| problem.to_string()))
    }

    /// The store's inventory: the spec's own, or its ConfigMap's.
    async fn inventory(
        &self,
        spec: &ValidSpec,
    ) -> Result<Result<String, validate::InventoryProblem>, Error> {
        let reference = match &spec.inventory_source {
            InventorySource::BuiltIn => return Ok(Ok(validate::BUILT_IN_INVENTORY.to_owned())),
            InventorySource::Lines(lines) => return Ok(Ok(lines.clone())),
            InventorySource::ConfigMap(reference) => reference,
        };
        let api = Api::<ConfigMap>::namespaced(self.context.client.clone(), &self.names.namespace);
        let config_map = api.get_opt(&reference.name).await?;
        Ok(validate::config_map_inventory(
            reference,
            config_map.as_ref(),
        ))
    }

    /// Tells the coordinator what the hibernation and fencing annotations
    /// ask for (an unreadable one changes nothing), with an Event for each
    /// change; what is in force, and the conditions.
    async fn hibernate_and_fence(&self) -> Day2 {
        let key = self.key();
        let coordination = &self.context.coordination;
        let annotations = self.store.annotations();
        let asked = hibernation::parse(annotations.get(HIBERNATION_ANNOTATION).map(String::as_str));
        let hibernating = match &asked {
            Ok(on) => {
                if coordination.hibernate(&key, *on).await {
                    self.report_hibernation(*on).await;
                }
                *on
            }
            Err(_) => coordination.is_hibernating(&key).await,
        };
        let asked_fence = fence::parse(
            annotations
                .get(FENCED_MEMBERS_ANNOTATION)
                .map(String::as_str),
        );
        let fenced = match &asked_fence {
            Ok(fenced) => {
                for (tier, before) in coordination.fence(&key, fenced).await {
                    let now = fenced.get(&tier).cloned().unwrap_or_default();
                    self.report_fencing(tier, &before, &now).await;
                }
                fenced.clone()
            }
            Err(_) => coordination.fenced(&key).await,
        };
        Day2 {
            hibernating,
            hibernation: hibernation::condition(hibernating, asked.as_ref().err()),
            fencing: fence::condition(&fenced, asked_fence.as_ref().err()),
        }
    }

    /// An Event for hibernating or resuming; its action names the epochs,
    /// so that each cycle is an Event of its own.
    async fn report_hibernation(&self, on: bool) {
        let key = self.key();
        let coordination = &self.context.coordination;
        let mut epochs = Vec::new();
        for tier in REPLICATED_TIERS {
            let topology = coordination.topology(&key, tier).await;
            epochs.push(topology.map_or(0, |t| t.epoch).to_string());
        }
        let epochs = epochs.join("/");
        let (reason, action, note) = if on {
            (
                "Hibernated",
                format!("Hibernate at epochs {epochs}"),
                "hibernating: every tier is scaled to zero, the volumes are kept; each tier's coordinator keeps its primary as the only in-sync member and changes nothing until the store resumes".to_owned(),
            )
        } else {
            (
                "Resumed",
                format!("Resume at epochs {epochs}"),
                "resuming: every tier is scaled back up; each tier waits for the primary it kept, and the others resync from it".to_owned(),
            )
        };
        tracing::info!(store = %self.names.name, namespace = %self.names.namespace, "{note}");
        self.publish_event(EventType::Normal, reason, &action, Some(note))
            .await;
    }

    /// An Event for each member of `tier` fenced or unfenced.
    async fn report_fencing(
        &self,
        tier: Role,
        before: &std::collections::BTreeSet<u32>,
        now: &std::collections::BTreeSet<u32>,
    ) {
        for ordinal in now.difference(before) {
            let pod = self.names.pod(tier, *ordinal);
            let note = format!(
                "{tier}-{ordinal} ({pod}) fenced: out of the in-sync set, serving nothing; a fenced primary is replaced by an in-sync member"
            );
            self.publish_event(
                EventType::Normal,
                "Fenced",
                &format!("Fence {pod}"),
                Some(note),
            )
            .await;
        }
        for ordinal in before.difference(now) {
            let pod = self.names.pod(tier, *ordinal);
            let note = format!(
                "{tier}-{ordinal} ({pod}) unfenced: it resyncs and rejoins the in-sync set"
            );
            self.publish_event(
                EventType::Normal,
                "Unfenced",
                &format!("Unfence {pod}"),
                Some(note),
            )
            .await;
        }
    }

    /// What the switchover annotation asks for (nothing without it).
    fn switchover_requests(&self) -> Result<switchover::Requests, switchover::BadAnnotation> {
        self.store
            .annotations()
            .get(switchover::ANNOTATION)
            .map_or_else(|| Ok(switchover::Requests::new()), |v| switchover::parse(v))
    }

    fn key(&self) -> StoreKey {
        (self.names.namespace.clone(), self.names.name.clone())
    }

    /// The store's peer token: read from its Secret, or generated once.
    async fn ensure_token(&self) -> Result<PeerToken, Error> {
        let name = self.names.token_secret();
        let api = Api::<Secret>::namespaced(self.context.client.clone(), &self.names.namespace);
        if let Some(secret) = api.get_opt(&name).await? {
            let token = secret
                .data
                .as_ref()
                .and_then(|d| d.get(resources_token_key()))
                .and_then(|bytes| std::str::from_utf8(&bytes.0).ok())
                .map(PeerToken::new)
                .filter(|t| !t.as_str().is_empty());
            return token.ok_or(Error::BadTokenSecret(name));
        }
        let token = PeerToken::generate();
        let metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(self.names.namespace.clone()),
            labels: Some(self.names.labels()),
            owner_references: Some(vec![owner_reference(self.store)]),
            ..Default::default()
        };
        api.create(
            &PostParams::default(),
            &resources::token_secret(metadata, token.as_str()),
        )
        .await?;
        tracing::info!(secret = %name, "generated the store's peer token");
        Ok(token)
    }

    /// Applies every object; returns the StatefulSets as the API server
    /// answered (with their status: the rollout reads their update revision,
    /// and the operator's RBAC has no `get` on StatefulSets).
    async fn apply_all(
        &self,
        objects: &resources::DesiredObjects,
    ) -> Result<Vec<StatefulSet>, Error> {
        for object in &objects.config_maps {
            self.apply(object).await?;
        }
        for object in &objects.services {
            self.apply(object).await?;
        }
        let mut stateful_sets = Vec::new();
        for object in &objects.stateful_sets {
            stateful_sets.push(self.apply(object).await?);
        }
        for object in &objects.deployments {
            self.apply(object).await?;
        }
        for object in &objects.disruption_budgets {
            self.apply::<PodDisruptionBudget>(object).await?;
        }
        Ok(stateful_sets)
    }

    /// Server-side apply under the operator's one field manager; the object
    /// as stored.
    async fn apply<K>(&self, object: &K) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = Api::<K>::namespaced(self.context.client.clone(), &self.names.namespace);
        let name = object.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
    }

    /// The store's pods, read once per reconcile.
    async fn list_pods(&self) -> Result<Vec<Pod>, Error> {
        let pods = Api::<Pod>::namespaced(self.context.client.clone(), &self.names.namespace);
        let selector = format!("app.kubernetes.io/instance={}", self.names.name);
        Ok(pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items)
    }

    /// Takes each replicated tier's rollout one step ([`rollout::plan`]):
    /// deletes the next outdated pod, or asks for the switchover away from
    /// the primary, or ends the rollout's switchover; an Event per step.
    async fn roll_out(
        &self,
        valid: &ValidStore,
        pods: &[Pod],
        stateful_sets: &[StatefulSet],
    ) -> Result<Vec<TierRollout>, Error> {
        let key = self.key();
        let mut rollouts = Vec::new();
        for role in REPLICATED_TIERS {
            let name = self.names.tier(role);
            let Some(set) = stateful_sets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name.as_str()))
            else {
                continue;
            };
            let Some(revision) = set.status.as_ref().and_then(|s| s.update_revision.clone()) else {
                continue;
            };
            let topology = self.context.coordination.topology(&key, role).await;
            let view = rollout::TierView {
                tier: role,
                members: (0..valid.spec.replicas.of(role))
                    .map(|ordinal| {
                        member_pod(pods, &self.names.pod(role, ordinal), ordinal, &revision)
                    })
                    .collect(),
                primary: topology.and_then(|t| t.primary),
            };
            let step = rollout::plan(&view);
            self.take_step(role, &step, &revision).await?;
            rollouts.push(TierRollout {
                tier: role.to_string(),
                phase: rollout::phase(&step, &view),
                updated_members: i32::try_from(view.members.iter().filter(|m| m.updated).count())
                    .unwrap_or(i32::MAX),
                current_images: pod_images(pods, self.names, role),
                target_image: valid.spec.image.clone(),
            });
        }
        Ok(rollouts)
    }

    /// Takes `step` towards `revision`; an Event per step taken (its action
    /// names the step and the revision, so that no two steps fold into one
    /// Event series, whose note would stay the first one).
    async fn take_step(
        &self,
        role: Role,
        step: &rollout::Step,
        revision: &str,
    ) -> Result<(), Error> {
        let key = self.key();
        let coordination = &self.context.coordination;
        let (what, note) = match *step {
            rollout::Step::Replace(ordinal) => {
                let name = self.names.pod(role, ordinal);
                Api::<Pod>::namespaced(self.context.client.clone(), &self.names.namespace)
                    .delete(&name, &Default::default())
                    .await?;
                (
                    format!("Replace {name}"),
                    format!("{role}: replacing {name} to run the new revision"),
                )
            }
            rollout::Step::SwitchOver(ordinal)
                if coordination.set_rollout_target(&key, role, Some(ordinal)) =>
            {
                let name = self.names.pod(role, ordinal);
                (
                    format!("SwitchOver to {name}"),
                    format!(
                        "{role}: switching the primary over to {name} before the old primary is replaced"
                    ),
                )
            }
            rollout::Step::Done if coordination.set_rollout_target(&key, role, None) => (
                format!("Finish {role}"),
                format!(
                    "{role}: every member runs the new revision; the rollout's switchover ends"
                ),
            ),
            _ => return Ok(()),
        };
        tracing::info!("{note}");
        let action = format!("Roll {revision}: {what}");
        self.publish_event(EventType::Normal, "RolloutStep", &action, Some(note))
            .await;
        Ok(())
    }

    /// An Event about the store; a failure to publish is only logged.
    async fn publish_event(
        &self,
        type_: EventType,
        reason: &str,
        action: &str,
        note: Option<String>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note,
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self
            .context
            .recorder
            .publish(&event, &self.store.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "cannot publish an Event");
        }
    }

    /// Reads the Deployments, tells the coordinator which members' pods are
    /// gone, terminating or not running.
    /// `listed_at`: when `pods` were read.
    async fn observe(
        &self,
        valid: &ValidStore,
        pods: &[Pod],
        listed_at: Instant,
    ) -> Result<Observed, Error> {
        let key = self.key();
        let replicas = &valid.spec.replicas;
        let ready_catalog = ready_ordinals(pods, self.names, Role::Catalog);
        let ready_order = ready_ordinals(pods, self.names, Role::Order);
        let coordination = &self.context.coordination;
        for role in REPLICATED_TIERS {
            let down = down_members(pods, self.names, role, replicas.of(role));
            coordination
                .observe_pods(&key, role, &down, listed_at)
                .await;
        }
        let subscriber_pods: Vec<String> = TOPOLOGY_SUBSCRIBERS
            .into_iter()
            .filter(|role| !role.is_replicated())
            .flat_map(|role| pod_ips(pods, self.names, role))
            .collect();
        coordination.observe_subscriber_pods(&key, &subscriber_pods);
        let switchover = coordination
            .apply_switchovers(self.store, &key, self.switchover_requests())
            .await;
        Ok(Observed {
            generation: self.store.metadata.generation,
            catalog: coordination.topology(&key, Role::Catalog).await,
            order: coordination.topology(&key, Role::Order).await,
            ready_catalog_pods: ready_catalog,
            ready_order_pods: ready_order,
            frontend_ready: self.deployment_ready(Role::Frontend).await?,
            cache_ready: self.deployment_ready(Role::Cache).await?,
            last_failover_time: coordination.last_failover(&key),
            coordinator: coordination.settings(&key).await,
            switchover,
            rollout: Vec::new(),
            spec_problems: Vec::new(),
            hibernating: false,
            hibernation: None,
            fencing: None,
        })
    }

    async fn deployment_ready(&self, role: Role) -> Result<i32, Error> {
        let api = Api::<Deployment>::namespaced(self.context.client.clone(), &self.names.namespace);
        let deployment = api.get_opt(&self.names.tier(role)).await?;
        Ok(deployment
            .and_then(|d| d.status)
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0))
    }

    /// Labels each replicated pod `primary` or `replica` as the coordinator
    /// decided, so the primary Services select the right pod.
    async fn label_pods(
        &self,
        valid: &ValidStore,
        pods: &[Pod],
        observed: &Observed,
    ) -> Result<(), Error> {
        let api = Api::<Pod>::namespaced(self.context.client.clone(), &self.names.namespace);
        for (role, topology) in [
            (Role::Catalog, &observed.catalog),
            (Role::Order, &observed.order),
        ] {
            let primary = topology.as_ref().and_then(|t| t.primary);
            for ordinal in 0..valid.spec.replicas.of(role) {
                let name = self.names.pod(role, ordinal);
                let Some(pod) = pods
                    .iter()
                    .find(|p| p.metadata.name.as_ref() == Some(&name))
                else {
                    continue;
                };
                let wanted = if primary == Some(ordinal) {
                    PRIMARY
                } else {
                    REPLICA
                };
                if pod.labels().get(ROLE_LABEL).map(String::as_str) != Some(wanted) {
                    let patch = json!({"metadata": {"labels": {ROLE_LABEL: wanted}}});
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                    tracing::info!(pod = %name, role = wanted, "labelled");
                }
            }
        }
        Ok(())
    }

    async fn write_status(&self, valid: &ValidStore, observed: &Observed) -> Result<(), Error> {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = status::compute(
            self.names,
            &valid.spec.replicas,
            observed,
            self.store.status.as_ref(),
            now,
        );
        self.patch_status(&status).await
    }

    async fn patch_status(&self, status: &BookStoreStatus) -> Result<(), Error> {
        self.context.metrics.observe_status(
            &metrics::store_label(&self.names.namespace, &self.names.name),
            status,
        );
        if !status::needs_write(self.store.status.as_ref(), status) {
            return Ok(());
        }
        let api = Api::<BookStore>::namespaced(self.context.client.clone(), &self.names.namespace);
        let patch = json!({"status": status});
        api.patch_status(
            &self.names.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Reports a malformed resource in its status and as an Event.
    async fn report_invalid(&self, problems: Vec<String>) -> Result<(), Error> {
        let observed = Observed {
            generation: self.store.metadata.generation,
            spec_problems: problems,
            ..Default::default()
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = status::compute(
            self.names,
            &ReplicaCounts::requested(&self.store.spec.replicas),
            &observed,
            self.store.status.as_ref(),
            now,
        );
        let already_reported =
            self.store.status.as_ref().and_then(|s| s.phase.clone()) == status.phase;
        if !already_reported {
            self.publish_event(
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                status.phase.clone(),
            )
            .await;
        }
        tracing::warn!(phase = ?status.phase, "invalid BookStore");
        self.patch_status(&status).await
    }
}

fn resources_token_key() -> &'static str {
    "peer-token"
}

/// Ordinals of the tier's pods that are Ready (a replicated member is Ready
/// only while it serves: primary or in sync) and not being deleted.
fn ready_ordinals(pods: &[Pod], names: &StoreNames, role: Role) -> Vec<u32> {
    ordinals_where(pods, names, role, is_ready)
}

/// A member whose pod shows it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownMember {
    pub ordinal: u32,
    pub cause: &'static str,
    /// Down until it rejoins (the pod is being deleted: that process never
    /// serves again, though it still talks for its grace period), or only
    /// until its next heartbeat.
    pub sticky: bool,
}

/// The tier's members (of `desired`) that are down now, with what shows it:
/// the pod is gone, being deleted, or its container is not running. Not
/// readiness: a member that joins or resyncs is not Ready yet and must stay
/// live to be admitted.
fn down_members(pods: &[Pod], names: &StoreNames, role: Role, desired: u32) -> Vec<DownMember> {
    (0..desired)
        .filter_map(|ordinal| {
            let name = names.pod(role, ordinal);
            let pod = pods
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(&name));
            let (cause, sticky) = match pod {
                // A pod object goes once its containers have stopped; until a
                // new one runs, nothing heartbeats as that member anyway.
                None => ("pod is gone", false),
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    ("pod is being deleted", true)
                }
                // A status that may lag behind a process that just started:
                // its next heartbeat brings it back.
                Some(pod) if !is_running(pod) => ("pod's container is not running", false),
                Some(_) => return None,
            };
            Some(DownMember {
                ordinal,
                cause,
                sticky,
            })
        })
        .collect()
}

fn ordinals_where(
    pods: &[Pod],
    names: &StoreNames,
    role: Role,
    keep: impl Fn(&Pod) -> bool,
) -> Vec<u32> {
    let prefix = format!("{}-", names.tier(role));
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none() && keep(pod))
        .filter_map(|pod| {
            pod.metadata
                .name
                .as_deref()?
                .strip_prefix(&prefix)?
                .parse()
                .ok()
        })
        .collect()
}

/// The pod runs, and none of its containers is waiting or terminated.
fn is_running(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .iter()
            .flatten()
            .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// The rollout's view of one member's pod.
fn member_pod(pods: &[Pod], name: &str, ordinal: u32, revision: &str) -> rollout::MemberPod {
    let pod = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .filter(|p| p.metadata.deletion_timestamp.is_none());
    rollout::MemberPod {
        ordinal,
        exists: pod.is_some(),
        updated: pod.is_some_and(|p| {
            p.labels()
                .get("controller-revision-hash")
                .map(String::as_str)
                == Some(revision)
        }),
        ready: pod.is_some_and(is_ready),
    }
}

/// The distinct images the tier's pods run.
fn pod_images(pods: &[Pod], names: &StoreNames, role: Role) -> Vec<String> {
    let prefix = format!("{}-", names.tier(role));
    let images: std::collections::BTreeSet<String> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
        .collect();
    images.into_iter().collect()
}

/// IPs of the tier's running pods (a Deployment's pods have no stable names).
fn pod_ips(pods: &[Pod], names: &StoreNames, role: Role) -> Vec<String> {
    let component = role.to_string();
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| pod.labels().get("app.kubernetes.io/component") == Some(&component))
        .filter(|pod| pod.labels().get("app.kubernetes.io/instance") == Some(&names.name))
        .filter_map(|pod| pod.status.as_ref()?.pod_ip.clone())
        .collect()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Stops the coordinators of stores that no longer exist.
async fn sweep_deleted_stores(context: Arc<Context>) {
    let apis: Vec<Api<BookStore>> = scopes(&context)
        .iter()
        .map(|scope| scoped(&context.client, scope.as_deref()))
        .collect();
    let every_store = ListParams::default();
    loop {
        tokio::time::sleep(SWEEP_PERIOD).await;
        // Only a complete picture may stop a coordinator.
        let Ok(lists) =
            futures::future::try_join_all(apis.iter().map(|api| api.list(&every_store))).await
        else {
            continue;
        };
        let alive: Vec<StoreKey> = lists
            .iter()
            .flat_map(|list| &list.items)
            .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        context.metrics.retain_stores(
            &alive
                .iter()
                .map(|(namespace, name)| metrics::store_label(namespace, name))
                .collect(),
        );
        for key in context.coordination.keys() {
            if !alive.contains(&key) {
                context.coordination.forget(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn pod(name: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: if ready { "True" } else { "False" }.to_owned(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_pods_of_the_tier_count() {
        let names = StoreNames::new("shop", "books");
        let pods = vec![
            pod("shop-catalog-0", true),
            pod("shop-catalog-1", false),
            pod("shop-catalog-10", true),
            pod("shop-order-0", true),
        ];
        assert_eq!(ready_ordinals(&pods, &names, Role::Catalog), vec![0, 10]);
        assert_eq!(ready_ordinals(&pods, &names, Role::Order), vec![0]);
    }

    fn with_phase(mut pod: Pod, phase: &str, container_running: Option<bool>) -> Pod {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus,
        };
        let status = pod.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.to_owned());
        status.container_statuses = container_running.map(|running| {
            vec![ContainerStatus {
                name: "catalog".to_owned(),
                state: Some(if running {
                    ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    }
                } else {
                    ContainerState {
                        waiting: Some(ContainerStateWaiting::default()),
                        ..Default::default()
                    }
                }),
                ..Default::default()
            }]
        });
        pod
    }

    #[test]
    fn a_joining_member_that_is_not_ready_still_counts_as_running() {
        let names = StoreNames::new("shop", "books");
        let mut terminating = with_phase(pod("shop-catalog-3", true), "Running", Some(true));
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let pods = vec![
            with_phase(pod("shop-catalog-0", true), "Running", Some(true)),
            with_phase(pod("shop-catalog-1", false), "Running", Some(true)),
            with_phase(pod("shop-catalog-2", false), "Running", Some(false)),
            terminating,
            with_phase(pod("shop-catalog-4", false), "Pending", None),
        ];
        let down: Vec<(u32, &str, bool)> = down_members(&pods, &names, Role::Catalog, 6)
            .into_iter()
            .map(|d| (d.ordinal, d.cause, d.sticky))
            .collect();
        assert_eq!(
            down,
            vec![
                (2, "pod's container is not running", false),
                (3, "pod is being deleted", true),
                (4, "pod's container is not running", false),
                (5, "pod is gone", false),
            ]
        );
    }

    #[test]
    fn errors_know_their_metric_label() {
        assert_eq!(
            Error::BadTokenSecret("s".into()).metric_label(),
            "token_secret"
        );
    }
}
