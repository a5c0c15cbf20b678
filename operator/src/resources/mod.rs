//! The objects a BookStore should have, built by pure functions from the
//! resource, its validated spec and a few resolved inputs. The controller applies them with
//! server-side apply; these functions never touch the API server.

mod config;
mod services;
mod workloads;

use std::collections::BTreeMap;

use bookstore_core::cluster::Role;
use bookstore_core::plan::REPLICATED_TIERS;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::crd::BookStore;
use crate::names::StoreNames;
use crate::validate::ValidStore;

pub use config::{TOKEN_KEY, cluster_file, token_secret};

/// What the builders need besides the resource and its validated spec.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The coordinator URL the members of this store use.
    pub coordinator_url: String,
    /// Pods each replicated tier keeps beyond its spec while the coordinator
    /// still counts a member above the new count (a scale-down waits until
    /// the member has left the in-sync set and the topology).
    pub kept_members: BTreeMap<Role, u32>,
    /// The store hibernates: every workload has no pods
    /// ([`crate::hibernation`]).
    pub hibernating: bool,
}

/// Every object of one store, in the order they are applied.
#[derive(Debug, Clone, Default)]
pub struct DesiredObjects {
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Vec<Deployment>,
    pub disruption_budgets: Vec<PodDisruptionBudget>,
}

/// Builds every object `store` should have; `valid` is its validated spec.
pub fn desired(store: &BookStore, valid: &ValidStore, inputs: &Inputs) -> DesiredObjects {
    let names = store_names(store);
    let owner = owner_reference(store);
    let meta = |name: String, labels| ObjectMeta {
        name: Some(name),
        namespace: Some(names.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let mut objects = DesiredObjects {
        config_maps: vec![config::config_map(
            &names,
            valid,
            inputs,
            meta(names.config_map(), names.labels()),
        )],
        ..Default::default()
    };
    for role in REPLICATED_TIERS {
        objects.services.push(services::headless(
            &names,
            role,
            meta(names.tier(role), names.tier_labels(role)),
        ));
        objects.services.push(services::primary(
            &names,
            role,
            meta(names.primary_service(role), names.tier_labels(role)),
        ));
        objects.stateful_sets.push(workloads::stateful_set(
            &names,
            valid,
            inputs,
            role,
            meta(names.tier(role), names.tier_labels(role)),
        ));
        objects.disruption_budgets.push(config::disruption_budget(
            &names,
            role,
            meta(names.tier(role), names.tier_labels(role)),
        ));
    }
    for role in [Role::Frontend, Role::Cache] {
        // A drain takes one pod of a tier at a time (a tier without pods,
        // a cache of 0, needs no budget).
        if valid.spec.replicas.of(role) > 0 {
            objects.disruption_budgets.push(config::disruption_budget(
                &names,
                role,
                meta(names.tier(role), names.tier_labels(role)),
            ));
        }
        objects.services.push(services::for_deployment(
            &names,
            role,
            meta(names.tier(role), names.tier_labels(role)),
        ));
        objects.deployments.push(workloads::deployment(
            &names,
            valid,
            inputs,
            role,
            meta(names.tier(role), names.tier_labels(role)),
        ));
    }
    objects
}

pub fn store_names(store: &BookStore) -> StoreNames {
    StoreNames::new(
        store.metadata.name.as_deref().unwrap_or_default(),
        store.metadata.namespace.as_deref().unwrap_or("default"),
    )
}

/// The owner reference that makes every object go when the store goes.
pub fn owner_reference(store: &BookStore) -> OwnerReference {
    store
        .controller_owner_ref(&())
        .unwrap_or_else(|| OwnerReference {
            api_version: BookStore::api_version(&()).into_owned(),
            kind: BookStore::kind(&()).into_owned(),
            name: store.metadata.name.clone().unwrap_or_default(),
            uid: store.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        })
}

#[cfg(test)]
mod tests;
