//! The store's ConfigMap (inventory and cluster file), its peer-token
//! Secret and its PodDisruptionBudgets.

use std::collections::BTreeMap;

use bookstore_core::cluster::{ClusterConfig, Member, Role};
use bookstore_core::plan::REPLICATED_TIERS;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::names::{PEER_PORT, PUBLIC_PORT, StoreNames};
use crate::validate::{ReplicaCounts, ValidStore};

/// Keys of the store's ConfigMap, mounted at /etc/bookstore.
pub const INVENTORY_KEY: &str = "inventory.txt";
pub const CLUSTER_KEY: &str = "cluster.conf";
/// Key of the peer-token Secret, mounted at /var/run/bookstore.
pub const TOKEN_KEY: &str = "peer-token";

pub fn config_map(
    names: &StoreNames,
    store: &ValidStore,
    inputs: &Inputs,
    metadata: ObjectMeta,
) -> ConfigMap {
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([
            (INVENTORY_KEY.to_owned(), store.inventory.clone()),
            (
                CLUSTER_KEY.to_owned(),
                cluster_file(names, &store.spec.replicas, &inputs.coordinator_url),
            ),
        ])),
        ..Default::default()
    }
}

/// The cluster file of a store in Kubernetes: replicated members by their
/// headless-Service DNS names, the frontend and cache by their Services.
pub fn cluster_file(names: &StoreNames, replicas: &ReplicaCounts, coordinator_url: &str) -> String {
    let address = |host: &str, port: i32| format!("{host}:{port}");
    let single = |role: Role| Member {
        role,
        ordinal: 0,
        public: Some(address(&names.service_host(role), PUBLIC_PORT)),
        peer: address(&names.service_host(role), PEER_PORT),
    };
    let mut members = vec![single(Role::Frontend), single(Role::Cache)];
    for role in REPLICATED_TIERS {
        for ordinal in 0..replicas.of(role) {
            let host = names.member_host(role, ordinal);
            members.push(Member {
                role,
                ordinal,
                public: Some(address(&host, PUBLIC_PORT)),
                peer: address(&host, PEER_PORT),
            });
        }
    }
    let coordinator_host = coordinator_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    members.push(Member {
        role: Role::Coordinator,
        ordinal: 0,
        public: None,
        peer: coordinator_host,
    });
    ClusterConfig { members }.render()
}

/// The Secret holding the store's peer token; created once, never rotated
/// by a reconcile (members would stop trusting each other mid-flight).
pub fn token_secret(metadata: ObjectMeta, token: &str) -> Secret {
    Secret {
        metadata,
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), token.to_owned())])),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    }
}

/// At most one pod of a tier down for voluntary disruptions (drains): a
/// drain never takes a replicated tier's whole in-sync set at once (its
/// members are Ready only in sync, so a resyncing one already counts as
/// down), nor every frontend or cache pod.
pub fn disruption_budget(
    names: &StoreNames,
    role: Role,
    metadata: ObjectMeta,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector(role)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
