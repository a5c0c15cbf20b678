//! What a replicated member measures: its phase, epoch and applied index,
//! batch sizes (how well group commit works), promotions, resyncs and
//! linearizable reads.

use bookstore_core::cluster::{Ordinal, Role};
use bookstore_core::metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts};

use crate::topology::Phase;

pub(super) struct ReplicationMetrics {
    pub epoch: IntGauge,
    pub is_primary: IntGauge,
    pub serving: IntGauge,
    pub applied: IntGauge,
    pub batch_size: Histogram,
    pub promotions: IntCounter,
    pub resyncs: IntCounter,
    pub resync_failures: IntCounter,
    pub resync_duration: Histogram,
    pub linearizable_reads: IntCounter,
    pub linearizable_reads_refused: IntCounter,
}

impl ReplicationMetrics {
    pub fn new(metrics: &Metrics, tier: Role, ordinal: Ordinal) -> Self {
        let labels = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("tier", tier.as_str())
                .const_label("ordinal", ordinal.to_string())
        };
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::with_opts(labels(name, help)).expect("valid metric");
            metrics.register(Box::new(gauge.clone()));
            gauge
        };
        let counter = |name: &str, help: &str| {
            let counter = IntCounter::with_opts(labels(name, help)).expect("valid metric");
            metrics.register(Box::new(counter.clone()));
            counter
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help)
                .const_label("tier", tier.as_str())
                .const_label("ordinal", ordinal.to_string())
                .buckets(buckets);
            let histogram = Histogram::with_opts(opts).expect("valid metric");
            metrics.register(Box::new(histogram.clone()));
            histogram
        };
        Self {
            epoch: gauge(
                "bookstore_replication_epoch",
                "The latest topology epoch this member adopted.",
            ),
            is_primary: gauge(
                "bookstore_replication_is_primary",
                "1 while this member is the primary of its tier.",
            ),
            serving: gauge(
                "bookstore_replication_serving",
                "1 while this member serves reads (primary or in-sync replica).",
            ),
            applied: gauge(
                "bookstore_replication_applied_index",
                "The log index this member has applied and made durable.",
            ),
            batch_size: histogram(
                "bookstore_replication_batch_writes",
                "Writes per batch (one transaction, one disk sync) on the primary.",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            ),
            promotions: counter(
                "bookstore_replication_promotions_total",
                "Times this member became primary.",
            ),
            resyncs: counter(
                "bookstore_replication_resyncs_total",
                "Snapshots this member installed from a primary.",
            ),
            resync_failures: counter(
                "bookstore_replication_resync_failures_total",
                "Resync steps that failed and were retried.",
            ),
            resync_duration: histogram(
                "bookstore_replication_resync_duration_seconds",
                "Time to fetch and install a snapshot.",
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0],
            ),
            linearizable_reads: counter(
                "bookstore_replication_linearizable_reads_total",
                "Linearizable reads this member served as primary.",
            ),
            linearizable_reads_refused: counter(
                "bookstore_replication_linearizable_reads_refused_total",
                "Linearizable reads refused because leadership could not be confirmed.",
            ),
        }
    }

    pub fn observe_confirmed_reads(&self, reads: usize, served: bool) {
        let counter = if served {
            &self.linearizable_reads
        } else {
            &self.linearizable_reads_refused
        };
        counter.inc_by(reads as u64);
    }

    pub fn observe_state(&self, phase: Phase, epoch: u64, applied: u64) {
        self.is_primary.set(i64::from(phase == Phase::Leading));
        self.serving.set(i64::from(phase.serves_reads()));
        self.epoch.set(epoch as i64);
        self.applied.set(applied as i64);
    }
}
