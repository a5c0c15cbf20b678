//! The per-tier breakdown: every service's `/metrics` scraped just before
//! and just after a run, and the mean of each hop from the growth of its
//! histogram's `_sum` and `_count` in between.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use bookstore_core::cluster::{ClusterConfig, Role};

use super::{Op, RunResult, TierRow};

/// How long a metrics scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// A tier row is shown when it saw at least this share of a run's requests;
/// rarer series are background traffic (heartbeats, topology polls).
const MIN_TIER_SHARE: f64 = 0.01;

/// Scrapes every service's `/metrics`.
pub(super) struct Scraper {
    client: reqwest::Client,
    urls: Vec<String>,
}

/// A series: its name and its labels, sorted.
type SeriesKey = (String, Vec<(String, String)>);
/// Each series' value, summed over the scraped processes.
type Samples = BTreeMap<SeriesKey, f64>;

impl Scraper {
    pub(super) fn new(cluster: &ClusterConfig) -> anyhow::Result<Self> {
        let urls = cluster
            .members
            .iter()
            .filter(|m| m.role != Role::Coordinator)
            .filter_map(|m| m.public_url())
            .map(|url| format!("{url}/metrics"))
            .collect();
        let client = reqwest::Client::builder()
            .timeout(SCRAPE_TIMEOUT)
            .build()
            .context("building the metrics client")?;
        Ok(Self { client, urls })
    }

    /// The `_sum` and `_count` series of the duration histograms, summed
    /// over processes (the two catalog members both label `catalog`). A
    /// member that does not answer (down, or not started with `--no-cache`)
    /// is left out.
    pub(super) async fn scrape(&self) -> anyhow::Result<Samples> {
        let mut samples = Samples::new();
        for url in &self.urls {
            let Ok(response) = self.client.get(url).send().await else {
                continue;
            };
            let Ok(text) = response.text().await else {
                continue;
            };
            for (key, value) in parse_exposition(&text) {
                *samples.entry(key).or_default() += value;
            }
        }
        Ok(samples)
    }
}

/// The `_sum`/`_count` samples of the two duration histograms in a
/// Prometheus text exposition; other lines are skipped.
fn parse_exposition(text: &str) -> Vec<(SeriesKey, f64)> {
    text.lines()
        .filter(|line| {
            line.starts_with("bookstore_http_request_duration_seconds_")
                || line.starts_with("bookstore_upstream_duration_seconds_")
        })
        .filter_map(parse_sample)
        .filter(|((name, _), _)| name.ends_with("_sum") || name.ends_with("_count"))
        .collect()
}

/// Parses `name{a="x",b="y"} value` (or `name value`).
fn parse_sample(line: &str) -> Option<(SeriesKey, f64)> {
    let Some(open) = line.find('{') else {
        let (name, value) = line.split_once(' ')?;
        return Some(((name.to_owned(), Vec::new()), value.trim().parse().ok()?));
    };
    let name = &line[..open];
    let mut rest = &line[open + 1..];
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    close = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.to_owned(), value));
        rest = &after[close? + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    labels.sort();
    Some(((name.to_owned(), labels), value))
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The hops a run went through: every route and upstream call whose count
/// grew by at least [`MIN_TIER_SHARE`] of the run's requests, with its mean.
pub(super) fn tier_rows(
    op: Op,
    clients: usize,
    run: &RunResult,
    before: &Samples,
    after: &Samples,
) -> Vec<TierRow> {
    // tier name -> (sum growth, count growth)
    let mut growth: BTreeMap<(u8, String), (f64, f64)> = BTreeMap::new();
    for ((name, labels), value) in after {
        let grown = value - before.get(&(name.clone(), labels.clone())).unwrap_or(&0.0);
        let Some(base) = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
        else {
            continue;
        };
        let (order, tier) = match base {
            "bookstore_http_request_duration_seconds" => {
                let service = label(labels, "service");
                let route = label(labels, "route");
                if service == "frontend" && route == op.route() {
                    (0, format!("client → frontend ({}, server time)", route))
                } else {
                    (
                        tier_order(service, "") + 1,
                        format!("{service} server {route}"),
                    )
                }
            }
            "bookstore_upstream_duration_seconds" => {
                let from = label(labels, "from");
                let to = label(labels, "to");
                let operation = label(labels, "operation");
                (tier_order(from, to), format!("{from} → {to} ({operation})"))
            }
            _ => continue,
        };
        let entry = growth.entry((order, tier)).or_default();
        if name.ends_with("_sum") {
            entry.0 += grown;
        } else {
            entry.1 += grown;
        }
    }
    let floor = (run.requests as f64 * MIN_TIER_SHARE).max(1.0);
    growth
        .into_iter()
        .filter(|(_, (_, count))| *count >= floor)
        .map(|((_, tier), (sum, count))| TierRow {
            op,
            clients,
            tier,
            calls: count.round() as u64,
            mean_ms: sum / count * 1e3,
        })
        .collect()
}

/// Orders hops as a request travels: frontend, cache, catalog, order, replicas.
fn tier_order(from: &str, to: &str) -> u8 {
    let rank = |role: &str| match role {
        "frontend" => 1,
        "cache" => 2,
        "catalog" => 3,
        "order" => 4,
        "catalog-replica" => 5,
        "order-replica" => 6,
        _ => 7,
    };
    rank(from) * 10 + rank(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::RunCpu;
    use crate::bench::load::{Counts, summarize};

    #[test]
    fn parses_histogram_samples_with_labels() {
        let text = "# HELP x y\n\
            bookstore_upstream_duration_seconds_sum{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 0.5\n\
            bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 10\n\
            bookstore_upstream_duration_seconds_bucket{from=\"frontend\",le=\"0.1\"} 3\n\
            bookstore_http_request_duration_seconds_count{method=\"GET\",route=\"/a \\\"b\\\"\",service=\"frontend\",status=\"200\"} 4\n";
        let samples = parse_exposition(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        let ((name, labels), value) = &samples[1];
        assert_eq!(name, "bookstore_upstream_duration_seconds_count");
        assert_eq!(label(labels, "to"), "cache");
        assert_eq!(*value, 10.0);
        assert_eq!(label(&samples[2].0.1, "route"), "/a \"b\"");
    }

    #[test]
    fn tier_means_come_from_the_growth_between_scrapes() {
        let parse = |text: &str| -> Samples { parse_exposition(text).into_iter().collect() };
        let before = parse(
            "bookstore_upstream_duration_seconds_sum{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 1\n\
             bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 100\n",
        );
        let after = parse(
            "bookstore_upstream_duration_seconds_sum{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 1.2\n\
             bookstore_upstream_duration_seconds_count{from=\"frontend\",operation=\"lookup\",outcome=\"ok\",to=\"cache\"} 300\n",
        );
        let run = summarize(
            Op::Lookup,
            1,
            &Counts::default(),
            vec![1_000; 200],
            RunCpu::default(),
        );
        let rows = tier_rows(Op::Lookup, 1, &run, &before, &after);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tier, "frontend → cache (lookup)");
        assert_eq!(rows[0].calls, 200);
        assert!((rows[0].mean_ms - 1.0).abs() < 1e-9, "{}", rows[0].mean_ms);
    }
}
