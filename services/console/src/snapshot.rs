//! What the console's page shows at one moment. A backend reads the store
//! its own way; [`shape`] turns what it read into the page's snapshot and
//! does no I/O, so both backends' pages say the same things the same way.

use std::collections::BTreeMap;

use bookstore_core::cluster::Role;
use bookstore_replication::coordinator_server::Transition;
use bookstore_replication::status_table::{self, MemberRow};
use serde::Serialize;
use serde_json::Value;

use crate::Action;
use crate::rates::RouteFigures;

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
    /// The bounded buy load, for a backend that runs one.
    pub load: Option<LoadProgress>,
    /// What could not be read this tick, in words.
    pub problems: Vec<String>,
    /// The buttons the page offers.
    pub actions: &'static [Action],
}

/// What a bounded buy load has done, as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadProgress {
    pub running: bool,
    pub planned: u64,
    pub sent: u64,
    pub succeeded: u64,
    pub sold_out: u64,
    /// Buys answered with an error or not at all (each tried once).
    pub errors: u64,
    pub last_error: Option<String>,
}

/// What a backend read in one tick.
#[derive(Debug, Clone)]
pub struct Readings {
    /// Every member's and the coordinator's status lines, in `bookstore
    /// status --json`'s shape (with `pod` in a cluster).
    pub lines: Result<Vec<Value>, String>,
    /// The coordinator's topology changes, oldest first.
    pub history: Result<Vec<Transition>, String>,
    pub rates: BTreeMap<&'static str, RouteFigures>,
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

/// Builds the snapshot from what one tick read (without a load: a backend
/// that runs one adds its progress).
pub fn shape(at_ms: u64, readings: Readings, actions: &'static [Action]) -> Snapshot {
    let Readings {
        lines,
        history,
        rates,
    } = readings;
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
        load: None,
        problems,
        actions,
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
        let readings = Readings {
            lines: Ok(lines),
            history: Err("refused".into()),
            rates: BTreeMap::new(),
        };
        let snapshot = shape(5, readings, &[]);
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
