//! The operator's own metrics: reconciles, errors by kind, and how long a
//! reconcile takes. Failovers and their timing come from the coordinators
//! (`bookstore_coordinator_*`, labelled by store and tier) in the same
//! registry.

use bookstore_core::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};

#[derive(Clone)]
pub struct OperatorMetrics {
    pub registry: Metrics,
    pub reconciles: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: Histogram,
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
        registry.register(Box::new(reconciles.clone()));
        registry.register(Box::new(errors.clone()));
        registry.register(Box::new(duration.clone()));
        Self {
            registry,
            reconciles,
            errors,
            duration,
        }
    }
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}
