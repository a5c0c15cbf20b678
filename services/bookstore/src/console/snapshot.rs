//! What the console's page shows at one moment, and the sampler that asks
//! the store for it every tick. [`shape`] turns the answers into the page's
//! snapshot and does no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bookstore_core::cluster::{ClusterConfig, Role};
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_replication::coordinator_server::Transition;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::TICK;
use super::load::{LoadProgress, LoadRun};
use super::rates::{RateWindow, RouteFigures, buckets_from_scrape};
use crate::settings::StoreArgs;
use bookstore_replication::status_table::{self, MemberRow};

use crate::status;

/// How long one tick waits for a member: under a tick, so a paused member
/// shows as down instead of stalling the page.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// How many topology changes the timeline shows.
const TIMELINE_LEN: usize = 50;

/// The page's data at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub at_ms: u64,
    pub tiers: Vec<TierView>,
    /// The stateless services (frontend, cache).
    pub services: Vec<MemberRow>,
    pub rates: BTreeMap<&'static str, RouteFigures>,
    /// Topology changes, newest first.
    pub timeline: Vec<TimelineEntry>,
    pub load: LoadProgress,
    /// What could not be read this tick, in words.
    pub problems: Vec<String>,
}

/// A replicated tier: the coordinator's view and each member's own.
#[derive(Debug, Clone, Serialize)]
pub struct TierView {
    pub tier: String,
    pub epoch: Option<u64>,
    /// `catalog-0`.
    pub primary: Option<String>,
    pub waiting: Option<String>,
    pub members: Vec<MemberRow>,
}

/// One topology change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub tier: String,
    pub epoch: u64,
    /// `failover` (the primary was lost), `handover` (it was handed on),
    /// `elected` (a tier without a primary got one), `primary lost` (no
    /// member can take over) or `in-sync set` (same primary).
    pub kind: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    pub in_sync: Vec<String>,
    /// The cause, as the coordinator detected it.
    pub cause: String,
}

/// Builds the snapshot from what one tick read.
pub fn shape(
    at_ms: u64,
    lines: Result<Vec<Value>, String>,
    history: Result<Vec<Transition>, String>,
    rates: BTreeMap<&'static str, RouteFigures>,
    load: LoadProgress,
) -> Snapshot {
    let mut problems = Vec::new();
    let lines = lines.unwrap_or_else(|error| {
        problems.push(format!("cannot read the members: {error}"));
        Vec::new()
    });
    let history = history.unwrap_or_else(|error| {
        problems.push(format!("cannot read the coordinator's history: {error}"));
        Vec::new()
    });
    for line in &lines {
        if line["role"] == "coordinator" && line["healthy"] != true {
            let error = line["error"].as_str().unwrap_or("no answer");
            problems.push(format!("the coordinator does not answer: {error}"));
        }
    }
    let rows = status_table::member_rows(&lines);
    let tiers = ["catalog", "order"]
        .iter()
        .map(|tier| tier_view(tier, &lines, &rows))
        .collect();
    let services = rows.iter().filter(|r| !r.replicated).cloned().collect();
    Snapshot {
        at_ms,
        tiers,
        services,
        rates,
        timeline: timeline(&history),
        load,
        problems,
    }
}

fn tier_view(tier: &str, lines: &[Value], rows: &[MemberRow]) -> TierView {
    let coordinator = lines
        .iter()
        .find(|l| l["role"] == "coordinator" && l["tier"] == tier);
    TierView {
        tier: tier.to_owned(),
        epoch: coordinator.and_then(|c| c["epoch"].as_u64()),
        primary: coordinator
            .and_then(|c| c["primary"].as_u64())
            .map(|p| format!("{tier}-{p}")),
        waiting: coordinator.and_then(|c| c["waiting"].as_str().map(str::to_owned)),
        members: rows.iter().filter(|r| r.tier == tier).cloned().collect(),
    }
}

/// The coordinator's history as the page's timeline, newest first. Each
/// change is named by comparing its primary with the one before it in the
/// same tier.
pub fn timeline(history: &[Transition]) -> Vec<TimelineEntry> {
    let mut primaries: BTreeMap<Role, Option<u32>> = BTreeMap::new();
    let mut entries: Vec<TimelineEntry> = history
        .iter()
        .map(|change| {
            let before = primaries
                .insert(change.tier, change.primary)
                .flatten()
                .or(change.previous_primary);
            let tier = change.tier.as_str();
            let name = |ordinal: u32| format!("{tier}-{ordinal}");
            let kind = match (change.failover, before, change.primary) {
                (true, _, _) => "failover",
                (false, Some(old), Some(new)) if old != new => "handover",
                (false, None, Some(_)) => "elected",
                (false, Some(_), None) => "primary lost",
                _ => "in-sync set",
            };
            TimelineEntry {
                at_ms: change.at_ms,
                tier: tier.to_owned(),
                epoch: change.epoch,
                kind,
                from: before.map(name),
                to: change.primary.map(name),
                in_sync: change.in_sync.iter().copied().map(name).collect(),
                cause: change.reason.clone(),
            }
        })
        .collect();
    entries.reverse();
    entries.truncate(TIMELINE_LEN);
    entries
}

/// The frontend's public URL (`http://host:port`).
pub fn frontend_url(cluster: &ClusterConfig) -> Option<String> {
    cluster.first(Role::Frontend).ok()?.public_url()
}

/// Asks the store what it is doing, every tick.
pub struct Sampler {
    store: StoreArgs,
    metrics_url: Option<String>,
    history_url: Option<String>,
    http: reqwest::Client,
    peer: PeerClient,
    window: RateWindow,
    load: LoadRun,
}

impl Sampler {
    pub fn new(store: StoreArgs, cluster: &ClusterConfig, load: LoadRun) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?;
        let peer =
            PeerClient::with_timeout(store.load_token()?, Metrics::new("console"), PROBE_TIMEOUT);
        Ok(Self {
            metrics_url: frontend_url(cluster).map(|url| format!("{url}/metrics")),
            history_url: cluster
                .first(Role::Coordinator)
                .ok()
                .map(|c| format!("{}/coordinator/history", c.peer_url())),
            store,
            http,
            peer,
            window: RateWindow::default(),
            load,
        })
    }

    /// Publishes a snapshot every tick until nobody can read them.
    pub async fn run(mut self, publish: watch::Sender<Arc<String>>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let snapshot = self.sample().await;
            let json = match serde_json::to_string(&snapshot) {
                Ok(json) => json,
                Err(error) => {
                    tracing::error!(%error, "cannot encode a snapshot");
                    continue;
                }
            };
            if publish.send(Arc::new(json)).is_err() {
                return;
            }
        }
    }

    async fn sample(&mut self) -> Snapshot {
        let (lines, history, scrape) = futures::join!(
            status::collect_within(&self.store, PROBE_TIMEOUT),
            self.history(),
            self.scrape(),
        );
        if let Some(text) = scrape {
            self.window.add(Instant::now(), buckets_from_scrape(&text));
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        shape(
            at_ms,
            lines.map_err(|e| format!("{e:#}")),
            history,
            self.window.figures(),
            self.load.progress(),
        )
    }

    async fn history(&self) -> Result<Vec<Transition>, String> {
        let url = self
            .history_url
            .as_deref()
            .ok_or("no coordinator in the cluster file")?;
        self.peer
            .get::<_, Vec<Transition>>("coordinator", "history", url, &())
            .await
            .map_err(|e| e.to_string())
    }

    async fn scrape(&self) -> Option<String> {
        let response = self
            .http
            .get(self.metrics_url.as_deref()?)
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(
        previous: Option<u32>,
        primary: Option<u32>,
        failover: bool,
        reason: &str,
    ) -> Transition {
        Transition {
            at_ms: 1,
            tier: Role::Catalog,
            epoch: 3,
            previous_primary: previous,
            primary,
            in_sync: vec![1],
            failover,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn the_timeline_names_each_kind_of_change_newest_first() {
        let history = [
            change(None, Some(0), false, "bootstrap: every member reported"),
            change(Some(0), Some(1), true, "catalog-0 stopped heartbeating"),
            change(
                Some(1),
                Some(0),
                false,
                "handover to the lowest in-sync ordinal",
            ),
            change(
                None,
                Some(0),
                false,
                "primary changed the catalog in-sync set",
            ),
        ];
        let kinds: Vec<&str> = timeline(&history).iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["in-sync set", "handover", "failover", "elected"]);
        let failover = &timeline(&history)[2];
        assert_eq!(failover.from.as_deref(), Some("catalog-0"));
        assert_eq!(failover.to.as_deref(), Some("catalog-1"));
        assert_eq!(failover.in_sync, ["catalog-1"]);
    }

    #[test]
    fn a_snapshot_groups_members_by_tier_and_says_what_it_could_not_read() {
        let lines = vec![
            json!({"role": "frontend", "ordinal": 0, "healthy": true}),
            json!({"role": "catalog", "ordinal": 0, "healthy": true, "primary": true,
                   "phase": "leading", "epoch": 3, "applied_index": 9}),
            json!({"role": "coordinator", "healthy": true, "tier": "catalog", "epoch": 3,
                   "primary": 0, "in_sync": [0], "waiting": null}),
        ];
        let snapshot = shape(
            5,
            Ok(lines),
            Err("refused".into()),
            BTreeMap::new(),
            LoadProgress::default(),
        );
        let catalog = &snapshot.tiers[0];
        assert_eq!(catalog.primary.as_deref(), Some("catalog-0"));
        assert_eq!(catalog.members[0].in_sync, Some(true));
        assert!(snapshot.tiers[1].members.is_empty());
        assert_eq!(snapshot.services[0].name, "frontend-0");
        assert_eq!(
            snapshot.problems,
            ["cannot read the coordinator's history: refused"]
        );
    }
}
