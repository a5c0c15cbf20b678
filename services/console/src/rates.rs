//! Buy and lookup rates and latencies over the last minute, from the
//! frontends' request histogram (`bookstore_http_request_duration_seconds`).
//!
//! The console scrapes every frontend every tick, sums their counts and
//! keeps a minute of cumulative bucket counts per route. A rate is the count's growth between
//! two samples over the time between them; a quantile comes from the growth
//! of each bucket over the whole window, interpolated inside its bucket as
//! Prometheus's `histogram_quantile` does. Everything here is pure: samples
//! in, figures out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The metric the frontend times every request with.
const REQUEST_HISTOGRAM: &str = "bookstore_http_request_duration_seconds";
/// How far back the plots and quantiles look.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The routes the console plots, by the name the page shows.
pub const ROUTES: [(&str, &str); 2] = [("buy", "/buy"), ("lookup", "/lookup")];

/// Cumulative counts of one route's histogram: `(upper bound, count)` in
/// ascending bound order, the last bound being infinity.
pub type Buckets = Vec<(f64, f64)>;

/// Every plotted route's buckets from one scrape, summed over methods and
/// statuses.
pub fn buckets_from_scrape(text: &str) -> BTreeMap<&'static str, Buckets> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return BTreeMap::new();
    };
    let mut routes: BTreeMap<&'static str, BTreeMap<u64, (f64, f64)>> = BTreeMap::new();
    for sample in scrape.samples {
        let prometheus_parse::Value::Histogram(counts) = &sample.value else {
            continue;
        };
        if sample.metric != REQUEST_HISTOGRAM {
            continue;
        }
        let Some((name, _)) = ROUTES
            .iter()
            .find(|(_, route)| sample.labels.get("route") == Some(route))
        else {
            continue;
        };
        let summed = routes.entry(name).or_default();
        for count in counts {
            // Keyed by the bound's bits: bounds are the same static list in
            // every series, and f64 is not Ord.
            let entry = summed
                .entry(count.less_than.to_bits())
                .or_insert((count.less_than, 0.0));
            entry.1 += count.count;
        }
    }
    routes
        .into_iter()
        .map(|(name, buckets)| {
            let mut buckets: Buckets = buckets.into_values().collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, buckets)
        })
        .collect()
}

/// Every plotted route's buckets summed over several frontends' scrapes
/// (a cluster runs more than one).
pub fn buckets_from_scrapes<S: AsRef<str>>(texts: &[S]) -> BTreeMap<&'static str, Buckets> {
    let mut routes: BTreeMap<&'static str, Buckets> = BTreeMap::new();
    for scrape in texts.iter().map(|t| buckets_from_scrape(t.as_ref())) {
        for (name, buckets) in scrape {
            let summed = routes.entry(name).or_default();
            *summed = add(summed, &buckets);
        }
    }
    routes
}

/// The bucket-wise sum of two routes' buckets (a bound only one of them has
/// keeps its count).
fn add(a: &Buckets, b: &Buckets) -> Buckets {
    let mut summed: Buckets = a.clone();
    for (bound, count) in b {
        match summed.iter_mut().find(|(other, _)| other == bound) {
            Some(entry) => entry.1 += count,
            None => summed.push((*bound, *count)),
        }
    }
    summed.sort_by(|x, y| x.0.total_cmp(&y.0));
    summed
}

/// The window a backend keeps across ticks: scrapes in, figures out.
#[derive(Debug, Default)]
pub struct Rates {
    window: Mutex<RateWindow>,
}

impl Rates {
    /// Adds this tick's scrapes (none: the frontends did not answer, and
    /// the window keeps what it had) and returns the figures.
    pub fn record<S: AsRef<str>>(&self, scrapes: &[S]) -> BTreeMap<&'static str, RouteFigures> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if !scrapes.is_empty() {
            window.add(Instant::now(), buckets_from_scrapes(scrapes));
        }
        window.figures()
    }
}

/// One route's figures over the window, as the page plots them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteFigures {
    /// Requests per second between consecutive samples, oldest first.
    pub per_second: Vec<f64>,
    /// The latest rate.
    pub now_per_second: f64,
    /// Median latency over the window, in milliseconds; `None` without
    /// requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A minute of samples of the plotted routes.
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: VecDeque<(Instant, BTreeMap<&'static str, Buckets>)>,
}

impl RateWindow {
    /// Adds a scrape taken at `at`; forgets samples older than the window.
    pub fn add(&mut self, at: Instant, buckets: BTreeMap<&'static str, Buckets>) {
        self.samples.push_back((at, buckets));
        while let Some((oldest, _)) = self.samples.front() {
            if at.duration_since(*oldest) > WINDOW {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Each plotted route's figures.
    pub fn figures(&self) -> BTreeMap<&'static str, RouteFigures> {
        ROUTES
            .iter()
            .map(|(name, _)| (*name, self.route_figures(name)))
            .collect()
    }

    fn route_figures(&self, name: &str) -> RouteFigures {
        let series: Vec<(Instant, Option<&Buckets>)> = self
            .samples
            .iter()
            .map(|(at, routes)| (*at, routes.get(name)))
            .collect();
        let per_second: Vec<f64> = series
            .windows(2)
            .map(|pair| {
                let seconds = pair[1].0.duration_since(pair[0].0).as_secs_f64();
                let grown = total(pair[1].1) - total(pair[0].1);
                if seconds > 0.0 {
                    (grown / seconds).max(0.0)
                } else {
                    0.0
                }
            })
            .collect();
        let growth = match (series.first(), series.last()) {
            (Some((_, Some(first))), Some((_, Some(last)))) if series.len() > 1 => {
                growth(first, last)
            }
            (_, Some((_, Some(last)))) => (*last).clone(),
            _ => Vec::new(),
        };
        RouteFigures {
            now_per_second: per_second.last().copied().unwrap_or(0.0),
            per_second,
            p50_ms: quantile(0.5, &growth).map(|s| s * 1000.0),
            p99_ms: quantile(0.99, &growth).map(|s| s * 1000.0),
        }
    }
}

/// All requests counted in `buckets` (the infinite bucket's count).
fn total(buckets: Option<&Buckets>) -> f64 {
    buckets
        .and_then(|b| b.last())
        .map_or(0.0, |(_, count)| *count)
}

/// Each bucket's growth from `first` to `last` (a restarted frontend's
/// counters start again: then `last` alone is the window's count).
fn growth(first: &Buckets, last: &Buckets) -> Buckets {
    let restarted = total(Some(last)) < total(Some(first));
    last.iter()
        .map(|(bound, count)| {
            let before = first
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, c)| *c);
            let grown = if restarted { *count } else { count - before };
            (*bound, grown.max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative `buckets`, by linear interpolation inside
/// the bucket where it falls; the last finite bound when it falls in the
/// infinite bucket.
pub fn quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    let count = buckets.last()?.1;
    if count <= 0.0 {
        return None;
    }
    let rank = q * count;
    let mut lower = (0.0, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = cumulative - lower.1;
            let fraction = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, cumulative);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP bookstore_http_request_duration_seconds Time to answer.
# TYPE bookstore_http_request_duration_seconds histogram
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"200\",le=\"0.001\"} 10
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"200\",le=\"0.01\"} 90
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"200\",le=\"+Inf\"} 100
bookstore_http_request_duration_seconds_sum{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"200\"} 0.5
bookstore_http_request_duration_seconds_count{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"200\"} 100
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"503\",le=\"0.001\"} 0
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"503\",le=\"0.01\"} 0
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/buy\",method=\"GET\",status=\"503\",le=\"+Inf\"} 4
bookstore_http_request_duration_seconds_bucket{service=\"frontend\",route=\"/healthz\",method=\"GET\",status=\"200\",le=\"+Inf\"} 7
";

    #[test]
    fn a_scrape_sums_each_plotted_route_over_its_statuses_and_ignores_the_rest() {
        let routes = buckets_from_scrape(SCRAPE);
        assert_eq!(
            routes.get("buy"),
            Some(&vec![(0.001, 10.0), (0.01, 90.0), (f64::INFINITY, 104.0)])
        );
        assert!(!routes.contains_key("lookup"), "no lookups were scraped");
        assert!(buckets_from_scrape("not a scrape {").is_empty());
    }

    #[test]
    fn scrapes_of_several_frontends_add_up() {
        let routes = buckets_from_scrapes(&[SCRAPE, SCRAPE]);
        assert_eq!(
            routes.get("buy"),
            Some(&vec![(0.001, 20.0), (0.01, 180.0), (f64::INFINITY, 208.0)])
        );
        assert!(buckets_from_scrapes::<&str>(&[]).is_empty());
    }

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let buckets = vec![(0.001, 50.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.001));
        let p75 = quantile(0.75, &buckets).expect("a p75");
        assert!((p75 - 0.0055).abs() < 1e-9, "{p75}");
        assert_eq!(quantile(0.5, &vec![(f64::INFINITY, 0.0)]), None);
        // Beyond the last finite bound: that bound is the best answer.
        assert_eq!(
            quantile(0.99, &vec![(0.01, 1.0), (f64::INFINITY, 100.0)]),
            Some(0.01)
        );
    }

    #[test]
    fn rates_and_quantiles_cover_the_window_only() {
        let start = Instant::now();
        let mut window = RateWindow::default();
        let at = |seconds| start + Duration::from_secs(seconds);
        let sample = |slow: f64, all: f64| {
            BTreeMap::from([("buy", vec![(0.001, all - slow), (f64::INFINITY, all)])])
        };
        window.add(at(0), sample(0.0, 0.0));
        window.add(at(1), sample(0.0, 100.0));
        window.add(at(2), sample(0.0, 300.0));
        let figures = &window.figures()["buy"];
        assert_eq!(figures.per_second, vec![100.0, 200.0]);
        assert_eq!(figures.now_per_second, 200.0);
        // 70 s later the first three samples have left the window: the slow
        // requests since then are all the quantile sees.
        window.add(at(70), sample(50.0, 400.0));
        window.add(at(71), sample(100.0, 450.0));
        let figures = &window.figures()["buy"];
        assert_eq!(figures.per_second, vec![50.0]);
        assert_eq!(
            figures.p50_ms,
            Some(1.0),
            "every request in the window was slow"
        );
        assert_eq!(window.figures()["lookup"].p50_ms, None);
    }

    #[test]
    fn a_restarted_frontend_counts_from_zero_again() {
        let first = vec![(0.001, 500.0), (f64::INFINITY, 600.0)];
        let after_restart = vec![(0.001, 3.0), (f64::INFINITY, 4.0)];
        assert_eq!(growth(&first, &after_restart), after_restart);
    }
}
