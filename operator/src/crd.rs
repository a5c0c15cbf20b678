//! The `BookStore` resource (`mybookstore.dev/v1alpha1`, short name `bs`).
//!
//! These types are the source of truth: `crds/bookstore.yaml` is generated
//! from them (`bookstore-operator crd`), and a test fails if it drifts.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The image the operator runs when the spec names none.
pub const DEFAULT_IMAGE: &str = "localhost/bookstore:dev";

/// A replicated online bookstore: a frontend, a cache, and replicated catalog
/// and order tiers whose primaries the operator picks (the lowest healthy
/// ordinal) and fails over.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
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
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BookStoreSpec {
    /// Container image of the `bookstore` binary (every service runs it).
    #[serde(default = "default_image")]
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
        }
    }
}

/// Members per tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// Catalog replicas (a StatefulSet); 2 by default.
    #[serde(default = "two")]
    pub catalog: i32,
    /// Order replicas (a StatefulSet); 2 by default.
    #[serde(default = "two")]
    pub order: i32,
    /// Frontend pods (a Deployment); 1 by default.
    #[serde(default = "one")]
    pub frontend: i32,
    /// Cache pods (a Deployment); 1 by default. 0 runs without a cache.
    #[serde(default = "one")]
    pub cache: i32,
}

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
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of each member's volume; 1Gi by default.
    #[serde(default = "default_storage_size")]
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
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatSpec {
    /// Milliseconds between a member's heartbeats; 1000 by default.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Heartbeats a member may miss before it counts as down; 3 by default.
    #[serde(default = "default_failure_threshold")]
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
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
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
