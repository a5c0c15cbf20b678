//! The operator's own metrics: reconciles, errors by kind, how long a
//! reconcile takes, whether this replica leads, and each store's conditions
//! and member counts as its status says them (what the chart's alerts read).
//! Failovers and their timing come from the coordinators
//! (`bookstore_coordinator_*`, labelled by store and tier) in the same
//! registry.
//!
//! Per-store series carry `store="namespace/name"`, as the coordinators' do:
//! a `namespace` label would clash with the one Prometheus gives the target.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bookstore_core::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::crd::{BookStoreStatus, CoordinatorSettings, TierStatus};

/// The condition types the status writes (`status::compute`).
const CONDITION_TYPES: [&str; 3] = ["Ready", "Progressing", "Degraded"];

#[derive(Clone)]
pub struct OperatorMetrics {
    pub registry: Metrics,
    pub reconciles: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: Histogram,
    pub leader: IntGauge,
    condition: IntGaugeVec,
    members: IntGaugeVec,
    settings: IntGaugeVec,
    /// Stores that have per-store series, so a deleted store's can be removed.
    labelled: Arc<Mutex<BTreeSet<String>>>,
}

impl OperatorMetrics {
    pub fn new() -> Self {
        let registry = Metrics::new("operator");
        let reconciles = IntCounterVec::new(
            Opts::new(
                "bookstore_operator_reconciles_total",
                "Reconciles of BookStore resources, by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "bookstore_operator_reconcile_errors_total",
                "Failed reconciles, by kind of error.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "bookstore_operator_reconcile_duration_seconds",
                "Time of one reconcile.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "bookstore_operator_leader",
            "1 while this replica holds the leader Lease (and acts), 0 while it waits.",
        )
        .expect("valid metric");
        let condition = IntGaugeVec::new(
            Opts::new(
                "bookstore_operator_store_condition",
                "1 while the store's status condition of this type is True.",
            ),
            &["store", "type"],
        )
        .expect("valid metric");
        let members = IntGaugeVec::new(
            Opts::new(
                "bookstore_operator_tier_members",
                "Members of a replicated tier: desired, ready (pod Ready) and in_sync (hold every acknowledged write).",
            ),
            &["store", "tier", "state"],
        )
        .expect("valid metric");
        let settings = IntGaugeVec::new(
            Opts::new(
                "bookstore_operator_coordinator_setting",
                "The settings in force in the store's running coordinator: heartbeat_interval_ms, failure_threshold, catalog_members, order_members.",
            ),
            &["store", "setting"],
        )
        .expect("valid metric");
        registry.register(Box::new(settings.clone()));
        registry.register(Box::new(reconciles.clone()));
        registry.register(Box::new(errors.clone()));
        registry.register(Box::new(duration.clone()));
        registry.register(Box::new(leader.clone()));
        registry.register(Box::new(condition.clone()));
        registry.register(Box::new(members.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            condition,
            members,
            settings,
            labelled: Arc::default(),
        }
    }

    /// Sets the store's series from the status the operator writes.
    pub fn observe_status(&self, store: &str, status: &BookStoreStatus) {
        for type_ in CONDITION_TYPES {
            let on = status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True");
            self.condition
                .with_label_values(&[store, type_])
                .set(i64::from(on));
        }
        for (tier, tier_status) in [("catalog", &status.catalog), ("order", &status.order)] {
            let counts = tier_status.clone().unwrap_or_default();
            for (state, count) in member_counts(&counts) {
                self.members
                    .with_label_values(&[store, tier, state])
                    .set(i64::from(count));
            }
        }
        if let Some(settings) = &status.coordinator {
            for (setting, value) in coordinator_settings(settings) {
                self.settings
                    .with_label_values(&[store, setting])
                    .set(value);
            }
        }
        self.lock_labelled().insert(store.to_owned());
    }

    /// Removes the series of every store not in `alive` (deleted stores).
    pub fn retain_stores(&self, alive: &BTreeSet<String>) {
        let mut labelled = self.lock_labelled();
        for store in labelled.difference(alive) {
            for type_ in CONDITION_TYPES {
                let _ = self.condition.remove_label_values(&[store, type_]);
            }
            for (setting, _) in coordinator_settings(&CoordinatorSettings::default()) {
                let _ = self.settings.remove_label_values(&[store, setting]);
            }
            for tier in ["catalog", "order"] {
                for (state, _) in member_counts(&TierStatus::default()) {
                    let _ = self.members.remove_label_values(&[store, tier, state]);
                }
            }
        }
        labelled.retain(|store| alive.contains(store));
    }

    fn lock_labelled(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // The set only names stores: still right after a panic elsewhere.
        self.labelled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Each setting with its metric label.
fn coordinator_settings(settings: &CoordinatorSettings) -> [(&'static str, i64); 4] {
    [
        (
            "heartbeat_interval_ms",
            i64::try_from(settings.heartbeat_interval_ms).unwrap_or(i64::MAX),
        ),
        ("failure_threshold", i64::from(settings.failure_threshold)),
        ("catalog_members", i64::from(settings.catalog_members)),
        ("order_members", i64::from(settings.order_members)),
    ]
}

fn member_counts(tier: &TierStatus) -> [(&'static str, i32); 3] {
    [
        ("desired", tier.desired_members),
        ("ready", tier.ready_members),
        ("in_sync", tier.in_sync_members),
    ]
}

/// The `store` label of a store's series: `namespace/name`.
pub fn store_label(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    /// The value of the first series of `name` that has every label of `labels`.
    fn gauge(metrics: &OperatorMetrics, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        metrics.registry.render().lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (series_labels, value) = rest.split_once("} ")?;
            labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.trim().parse().ok())?
        })
    }

    fn degraded_status() -> BookStoreStatus {
        let condition = |type_: &str, status: &str| Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: "NoPrimary".to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        BookStoreStatus {
            catalog: Some(TierStatus {
                desired_members: 2,
                ready_members: 1,
                in_sync_members: 1,
                ..TierStatus::default()
            }),
            conditions: vec![
                condition("Ready", "False"),
                condition("Progressing", "True"),
                condition("Degraded", "True"),
            ],
            ..BookStoreStatus::default()
        }
    }

    #[test]
    fn status_conditions_and_member_counts_become_gauges() {
        let metrics = OperatorMetrics::new();
        metrics.observe_status("shop/mystore", &degraded_status());
        let condition = |t| {
            gauge(
                &metrics,
                "bookstore_operator_store_condition",
                &[("store", "shop/mystore"), ("type", t)],
            )
        };
        assert_eq!(condition("Degraded"), Some(1));
        assert_eq!(condition("Ready"), Some(0));
        let members = |tier, state| {
            gauge(
                &metrics,
                "bookstore_operator_tier_members",
                &[("store", "shop/mystore"), ("tier", tier), ("state", state)],
            )
        };
        assert_eq!(members("catalog", "desired"), Some(2));
        assert_eq!(members("catalog", "in_sync"), Some(1));
        assert_eq!(members("order", "desired"), Some(0));
    }

    #[test]
    fn the_coordinators_settings_in_force_become_gauges() {
        let metrics = OperatorMetrics::new();
        let status = BookStoreStatus {
            coordinator: Some(CoordinatorSettings {
                heartbeat_interval_ms: 200,
                failure_threshold: 15,
                catalog_members: 3,
                order_members: 2,
            }),
            ..degraded_status()
        };
        metrics.observe_status("shop/mystore", &status);
        let setting = |name| {
            gauge(
                &metrics,
                "bookstore_operator_coordinator_setting",
                &[("store", "shop/mystore"), ("setting", name)],
            )
        };
        assert_eq!(setting("heartbeat_interval_ms"), Some(200));
        assert_eq!(setting("failure_threshold"), Some(15));
        assert_eq!(setting("catalog_members"), Some(3));
        metrics.retain_stores(&BTreeSet::new());
        assert_eq!(setting("failure_threshold"), None);
    }

    #[test]
    fn a_deleted_store_loses_its_series_and_the_others_keep_theirs() {
        let metrics = OperatorMetrics::new();
        metrics.observe_status("shop/gone", &degraded_status());
        metrics.observe_status("shop/kept", &degraded_status());
        metrics.retain_stores(&BTreeSet::from(["shop/kept".to_owned()]));
        let degraded = |store| {
            gauge(
                &metrics,
                "bookstore_operator_store_condition",
                &[("store", store), ("type", "Degraded")],
            )
        };
        assert_eq!(degraded("shop/gone"), None);
        assert_eq!(degraded("shop/kept"), Some(1));
        let catalog_members = gauge(
            &metrics,
            "bookstore_operator_tier_members",
            &[("store", "shop/gone")],
        );
        assert_eq!(catalog_members, None);
    }
}
