//! The `BookStore` resource (`mybookstore.dev/v1alpha1`, short name `bs`).
//!
//! These types are the source of truth: `crds/bookstore.yaml` is generated
//! from them (`bookstore-operator crd`), and a test fails if it drifts.
//!
//! The CEL rules (`x-kubernetes-validations`) make the API server refuse a
//! malformed store at `kubectl apply`, with the reason in the message; the
//! examples in `k8s/invalid/` show each one. `validate` checks the same limits
//! again (Helm never upgrades a CRD, so a cluster may run an older one) and
//! what CEL cannot see: the inventory's lines and the ConfigMap it names.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::Rule;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The image the operator runs when the spec names none.
pub const DEFAULT_IMAGE: &str = "localhost/bookstore:dev";

/// The most members or pods a tier may have: every replicated member is one
/// more copy each write waits for, and this store's load needs no more.
pub const MAX_REPLICAS: i32 = 9;
/// The shortest heartbeat interval: faster beats load the operator without
/// finding a failure sooner than a pod's readiness does.
pub const MIN_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// The longest heartbeat interval: slower beats leave a hung primary
/// unnoticed for minutes.
pub const MAX_HEARTBEAT_INTERVAL_MS: u64 = 60_000;
/// The most heartbeats a member may miss before it counts as down.
pub const MAX_FAILURE_THRESHOLD: u32 = 20;
/// The longest time a silent member may go unnoticed (interval × threshold):
/// while a hung primary is not replaced, every write of its tier waits.
pub const MAX_DETECTION_MS: u64 = 120_000;
/// Longest image reference or storage size the schema accepts; it also bounds
/// what the CEL rules on them cost the API server.
const MAX_IMAGE_LENGTH: u32 = 512;
const MAX_QUANTITY_LENGTH: u32 = 32;

/// `min <= self <= max`, with the reason in the message.
fn range(min: impl std::fmt::Display, max: impl std::fmt::Display, why: &str) -> Rule {
    Rule::new(format!("self >= {min} && self <= {max}"))
        .message(format!("must be {min} to {max}: {why}").as_str())
}

/// A replicated online bookstore: a frontend, a cache, and replicated catalog
/// and order tiers whose primaries the operator picks (the lowest healthy
/// ordinal) and fails over.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "mybookstore.dev",
    version = "v1alpha1",
    kind = "BookStore",
    plural = "bookstores",
    shortname = "bs",
    namespaced,
    status = "BookStoreStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Catalog","type":"string","description":"Ready catalog members / desired","jsonPath":".status.catalog.summary"}"#,
    printcolumn = r#"{"name":"Catalog primary","type":"string","jsonPath":".status.catalog.primaryPod"}"#,
    printcolumn = r#"{"name":"Order","type":"string","description":"Ready order members / desired","jsonPath":".status.order.summary"}"#,
    printcolumn = r#"{"name":"Order primary","type":"string","jsonPath":".status.order.primaryPod"}"#,
    printcolumn = r#"{"name":"Epoch","type":"string","description":"Catalog/order topology epochs","jsonPath":".status.epochs"}"#,
    printcolumn = r#"{"name":"Confirmed","type":"date","description":"When the operator leader last confirmed this status; an old time means nobody is watching the store and the status may be stale","jsonPath":".status.lastConfirmed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BookStoreSpec {
    /// Container image of the `bookstore` binary (every service runs it).
    #[serde(default = "default_image")]
    #[schemars(length(max = MAX_IMAGE_LENGTH))]
    #[x_kube(validation = Rule::new("self.matches('^[^\\\\s]+$')").message(
        "must be a container image reference such as localhost/bookstore:dev (not empty, no spaces)"
    ))]
    pub image: String,
    /// Members per tier. Catalog and order are replicated (primary-backup).
    #[serde(default)]
    pub replicas: Replicas,
    /// Resources of every service container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The initial inventory; the built-in seven books when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// The PersistentVolumeClaim of each catalog and order member.
    #[serde(default)]
    pub storage: Storage,
    /// Failure detection of the replicated tiers.
    #[serde(default)]
    pub heartbeat: HeartbeatSpec,
    /// Prometheus scraping of the store's pods.
    #[serde(default)]
    pub metrics: MetricsSpec,
    /// Where the pods run.
    #[serde(default)]
    pub placement: Placement,
}

fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}

impl Default for BookStoreSpec {
    fn default() -> Self {
        Self {
            image: default_image(),
            replicas: Replicas::default(),
            resources: None,
            inventory: None,
            storage: Storage::default(),
            heartbeat: HeartbeatSpec::default(),
            metrics: MetricsSpec::default(),
            placement: Placement::default(),
        }
    }
}

/// Members per tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// Catalog replicas (a StatefulSet); 2 by default, 1 to 9.
    #[serde(default = "two")]
    #[x_kube(validation = range(1, MAX_REPLICAS, REPLICATED_RANGE))]
    pub catalog: i32,
    /// Order replicas (a StatefulSet); 2 by default, 1 to 9.
    #[serde(default = "two")]
    #[x_kube(validation = range(1, MAX_REPLICAS, REPLICATED_RANGE))]
    pub order: i32,
    /// Frontend pods (a Deployment); 1 by default, 1 to 9.
    #[serde(default = "one")]
    #[x_kube(validation = range(1, MAX_REPLICAS, "the store's public API needs a frontend pod"))]
    pub frontend: i32,
    /// Cache pods (a Deployment); 1 by default, 0 to 9. 0 runs without a cache.
    #[serde(default = "one")]
    #[x_kube(validation = range(0, MAX_REPLICAS, "0 runs the store without a cache"))]
    pub cache: i32,
}

/// Why a replicated tier has 1 to 9 members.
const REPLICATED_RANGE: &str = "a replicated tier needs a member to hold its data, \
     and each further member is one more copy every write waits for";

fn one() -> i32 {
    1
}

fn two() -> i32 {
    2
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            catalog: 2,
            order: 2,
            frontend: 1,
            cache: 1,
        }
    }
}

/// The initial inventory, in the original's `init,item,stock,cost,topic,title`
/// line format: inline, or from a ConfigMap key. Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.lines) != has(self.configMap)").message(
    "inventory needs exactly one of lines (the inventory itself) and configMap (where to read it)"
))]
pub struct Inventory {
    /// The inventory lines themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<String>,
    /// A ConfigMap in the same namespace holding the lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKey>,
}

/// A key of a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ConfigMapKey {
    pub name: String,
    /// The key; `inventory.txt` by default.
    #[serde(default = "default_inventory_key")]
    pub key: String,
}

fn default_inventory_key() -> String {
    "inventory.txt".to_owned()
}

/// Storage of each replicated member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.storageClassName) == has(oldSelf.storageClassName) \
     && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)"
).message(
    "storage.storageClassName cannot change: the members' volumes already exist in their class, \
     and a StatefulSet's volume claim template is immutable"
))]
pub struct Storage {
    /// Size of each member's volume; 1Gi by default. Fixed once the store
    /// exists (a StatefulSet's volume claim template is immutable).
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = MAX_QUANTITY_LENGTH))]
    #[x_kube(
        validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
            .message("must be a positive quantity such as 1Gi or 500Mi"),
        validation = Rule::new(
            "!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) >= 0"
        ).message(
            "storage.size cannot shrink: Kubernetes never shrinks a volume, and the members' data may not fit a smaller one"
        ),
        validation = Rule::new(
            "!isQuantity(self) || !isQuantity(oldSelf) || quantity(self).compareTo(quantity(oldSelf)) <= 0"
        ).message(
            "storage.size cannot grow yet: a StatefulSet's volume claim template is immutable, so the operator cannot resize the members' volumes"
        ),
    )]
    pub size: String,
    /// StorageClass of the volumes; the cluster's default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Delete the members' volumes (their data) when the BookStore is
    /// deleted; false by default, so deleting a store never loses its books
    /// and orders by accident.
    #[serde(default)]
    pub delete_with_store: bool,
}

fn default_storage_size() -> String {
    "1Gi".to_owned()
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            delete_with_store: false,
        }
    }
}

/// How members are watched.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(format!("self.intervalMs * self.failureThreshold <= {MAX_DETECTION_MS}")).message(
    format!(
        "heartbeat.intervalMs × failureThreshold must be at most {MAX_DETECTION_MS} ms: \
         that is how long a hung primary goes unnoticed while every write of its tier waits"
    ).as_str()
))]
pub struct HeartbeatSpec {
    /// Milliseconds between a member's heartbeats; 1000 by default, 100 to 60000.
    #[serde(default = "default_interval_ms")]
    #[x_kube(validation = range(
        MIN_HEARTBEAT_INTERVAL_MS,
        MAX_HEARTBEAT_INTERVAL_MS,
        "faster heartbeats load the operator without finding failures sooner, \
         slower ones leave a hung primary unnoticed for minutes"
    ))]
    pub interval_ms: u64,
    /// Heartbeats a member may miss before it counts as down; 3 by default, 1 to 20.
    #[serde(default = "default_failure_threshold")]
    #[x_kube(validation = range(
        1,
        MAX_FAILURE_THRESHOLD,
        "0 would count every member down at once, and more only delays failover"
    ))]
    pub failure_threshold: u32,
}

fn default_interval_ms() -> u64 {
    1000
}

fn default_failure_threshold() -> u32 {
    3
}

impl Default for HeartbeatSpec {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

/// Pod placement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// How the members of a replicated tier are spread across nodes (pod
    /// anti-affinity on the hostname): `Preferred` (the default: spread when
    /// the scheduler can, so one node's loss takes at most one copy),
    /// `Required` (never two members of a tier on one node; a member stays
    /// Pending without a free node), or `None`.
    #[serde(default)]
    pub member_spread: MemberSpread,
}

/// See [`Placement::member_spread`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MemberSpread {
    #[default]
    Preferred,
    Required,
    None,
}

/// Prometheus scraping.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Annotate pods with `prometheus.io/scrape`, `/port` and `/path`; true by default.
    #[serde(default = "yes")]
    pub annotate_pods: bool,
}

fn yes() -> bool {
    true
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            annotate_pods: true,
        }
    }
}

/// What the operator observed and decided.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookStoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// A sentence a person can read, e.g. "Running" or "Failing over catalog".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<TierStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<TierStatus>,
    /// Ready frontend pods.
    #[serde(default)]
    pub frontend_ready: i32,
    /// Ready cache pods.
    #[serde(default)]
    pub cache_ready: i32,
    /// `catalog/order` topology epochs, for `kubectl get bs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<String>,
    /// When a primary was last replaced because it was lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<Time>,
    /// When the operator leader last confirmed this status (at every change,
    /// and at least every 10 s). Much older than that means no operator is
    /// watching: the status, `Ready` included, says what was true then, not
    /// now, and failover waits for a leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_confirmed: Option<Time>,
    /// The settings the store's running coordinator uses now (read from it,
    /// not from the spec: they show whether a spec change took effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorSettings>,
    /// Where each replicated tier's rolling upgrade stands (pods replaced
    /// by the operator, the primary last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout: Vec<TierRollout>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One replicated tier's rolling upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierRollout {
    pub tier: String,
    /// Where it stands, in words (e.g. "catalog: 1/2 updated; replacing catalog-0").
    pub phase: String,
    /// Members running the StatefulSet's update revision.
    pub updated_members: i32,
    /// The images the tier's pods run now (more than one during a rollout).
    pub current_images: Vec<String>,
    /// The image of the update revision (the spec's).
    pub target_image: String,
}

/// The settings in force in a store's coordinator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorSettings {
    /// How often members heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeats after which a member is down.
    pub failure_threshold: u32,
    /// The catalog members the coordinator counts.
    pub catalog_members: u32,
    /// The order members the coordinator counts.
    pub order_members: u32,
}

/// One replicated tier.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Members whose pod is Ready.
    pub ready_members: i32,
    /// Members in the in-sync set (hold every acknowledged write).
    pub in_sync_members: i32,
    /// Desired members.
    pub desired_members: i32,
    /// `ready/desired`, for `kubectl get bs`.
    pub summary: String,
    /// The primary's ordinal, if the tier has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<u32>,
    /// The primary's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_pod: Option<String>,
    /// The topology epoch (rises on every change).
    pub epoch: u64,
}
