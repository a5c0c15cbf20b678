//! Prometheus metrics, in place of the original's file-based monitor.
//!
//! Each service owns one [`Metrics`] (its own registry, so services started in
//! one process for tests still expose only their own series). Two histograms
//! answer the original's evaluation questions: how long each route takes as
//! seen by its caller (`bookstore_http_request_duration_seconds`) and how long
//! each call to another tier takes (`bookstore_upstream_duration_seconds`).
//! Every registry also carries the process's CPU time and resident memory
//! under the standard names (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`), so a scrape gives the CPU per request
//! of each pod without access to its `/proc`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Encoder, Gauge, HistogramOpts, HistogramVec, Registry, TextEncoder};

use crate::process::ProcessStat;

/// Latency buckets from 50 µs (a cache hit on loopback) to 5 s (a peer timeout).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The metrics of one service process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    service: Arc<str>,
    http_duration: HistogramVec,
    upstream_duration: HistogramVec,
}

impl Metrics {
    /// Creates the registry of `service` (e.g. `catalog`) with the request and
    /// upstream histograms registered.
    pub fn new(service: &str) -> Self {
        let registry = Registry::new();
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "bookstore_http_request_duration_seconds",
                "Time to answer an HTTP request, by service, route, method and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service", "route", "method", "status"],
        )
        .expect("static metric definition is valid");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "bookstore_upstream_duration_seconds",
                "Time of a call to another tier as seen by the caller, by caller, callee, operation and outcome.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["from", "to", "operation", "outcome"],
        )
        .expect("static metric definition is valid");
        let metrics = Self {
            registry,
            service: service.into(),
            http_duration,
            upstream_duration,
        };
        metrics.register(Box::new(metrics.http_duration.clone()));
        metrics.register(Box::new(metrics.upstream_duration.clone()));
        metrics.register(Box::new(ProcessCollector::new()));
        metrics
    }

    /// Registers a service-specific collector (cache hits, replication lag...).
    ///
    /// Panics on a duplicate name: that is a programming error found by any test.
    pub fn register(&self, collector: Box<dyn Collector>) {
        self.registry
            .register(collector)
            .expect("each metric is registered once per service");
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Records one call from this service to `to` (`cache`, `catalog`...).
    pub fn observe_upstream(&self, to: &str, operation: &str, ok: bool, started: Instant) {
        let outcome = if ok { "ok" } else { "error" };
        self.upstream_duration
            .with_label_values(&[self.service(), to, operation, outcome])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The Prometheus text exposition of every series of this service.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "encoding metrics failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// This process's CPU time and resident memory, read from `/proc/self/stat`
/// at each scrape (nothing is counted between scrapes).
struct ProcessCollector {
    cpu: Counter,
    resident: Gauge,
    descs: Vec<Desc>,
    /// A counter only grows by increments: two scrapes at once would both
    /// add the same growth, so one scrape at a time brings it up to date.
    updating: Mutex<()>,
}

impl ProcessCollector {
    fn new() -> Self {
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )
        .expect("static metric definition is valid");
        let resident = Gauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .expect("static metric definition is valid");
        let descs = cpu
            .desc()
            .into_iter()
            .chain(resident.desc())
            .cloned()
            .collect();
        Self {
            cpu,
            resident,
            descs,
            updating: Mutex::new(()),
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Without /proc (not Linux) the series are left out rather than
        // reported as zero.
        let Some(stat) = ProcessStat::read_self() else {
            return Vec::new();
        };
        {
            let _one_scrape = self.updating.lock().unwrap_or_else(PoisonError::into_inner);
            let growth = stat.cpu().as_secs_f64() - self.cpu.get();
            if growth > 0.0 {
                self.cpu.inc_by(growth);
            }
        }
        self.resident.set(stat.resident_bytes() as f64);
        let mut families = self.cpu.collect();
        families.extend(self.resident.collect());
        families
    }
}

/// Axum middleware that times every request by its matched route.
pub async fn track_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Both are cheap to clone (a shared string, a method without allocation).
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics
        .http_duration
        .with_label_values(&[
            metrics.service(),
            route.as_ref().map_or("unmatched", MatchedPath::as_str),
            method.as_str(),
            response.status().as_str(),
        ])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The `/metrics` handler.
pub async fn serve_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_calls_show_up_in_the_exposition() {
        let metrics = Metrics::new("frontend");
        metrics.observe_upstream("cache", "lookup", true, Instant::now());
        let text = metrics.render();
        assert!(text.contains("bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 1"), "{text}");
    }

    #[test]
    fn every_registry_exports_the_process_cpu_and_memory() {
        let value = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        let metrics = Metrics::new("catalog");
        let first = metrics.render();
        assert!(
            first.contains("# TYPE process_cpu_seconds_total counter"),
            "{first}"
        );
        assert!(
            value(&first, "process_resident_memory_bytes") > 0.0,
            "{first}"
        );
        // Scraped again, the counter follows the kernel's and never goes back.
        let second = metrics.render();
        assert!(
            value(&second, "process_cpu_seconds_total")
                >= value(&first, "process_cpu_seconds_total"),
            "{first}\n{second}"
        );
    }
}
