//! `bookstore status`: a table for people, or with `--json` one JSON object
//! per member for scripts, as its members see
//! themselves: role, ordinal, pid, addresses, health, whether it is the
//! primary, its epoch, applied log index and a digest of its state (members
//! of a tier that agree on index and digest hold the same state). Then one
//! object per replicated tier as the coordinator sees it (`"role":
//! "coordinator"`): epoch, primary, in-sync set, and in words what it waits
//! for when it waits (a bootstrap without durable state waits for every
//! member).

use std::time::Duration;

use bookstore_core::cluster::{Member, Role};
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_replication::coordinator::TierStatus;
use bookstore_replication::node::messages::MemberStatus;
use clap::Args;
use serde_json::{Value, json};

use crate::settings::StoreArgs;
use crate::up::{PIDS_FILE, Pids};

/// How long a member may take to report.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// One JSON object per line (members, then the coordinator's tiers)
    /// instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let lines = collect(&args.store).await?;
    if args.json {
        for line in lines {
            println!("{line}");
        }
    } else {
        print!("{}", render_table(&lines));
    }
    Ok(())
}

/// The status of every service member, in cluster-file order.
pub async fn collect(store: &StoreArgs) -> anyhow::Result<Vec<Value>> {
    let cluster = store.cluster()?;
    let token = store.load_token()?;
    let pids: Pids = std::fs::read(store.data_dir.join(PIDS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let client = PeerClient::with_timeout(token, Metrics::new("status"), STATUS_TIMEOUT);
    let mut lines = Vec::new();
    for member in cluster
        .members
        .iter()
        .filter(|m| m.role != Role::Coordinator)
    {
        let pid = pids.members.get(&member.name()).copied();
        lines.push(member_status(&client, member, pid).await);
    }
    if let Ok(coordinator) = cluster.first(Role::Coordinator) {
        lines.extend(coordinator_status(&client, coordinator).await);
    }
    Ok(lines)
}

/// One line per tier from the coordinator, or one saying it is unreachable.
async fn coordinator_status(client: &PeerClient, coordinator: &Member) -> Vec<Value> {
    let url = format!("{}/coordinator/status", coordinator.peer_url());
    match client
        .get::<_, Vec<TierStatus>>("coordinator", "status", &url, &())
        .await
    {
        Ok(tiers) => tiers
            .into_iter()
            .map(|tier| {
                json!({
                    "role": Role::Coordinator,
                    "peer_address": coordinator.peer,
                    "healthy": true,
                    "tier": tier.tier,
                    "epoch": tier.epoch,
                    "primary": tier.primary,
                    "in_sync": tier.in_sync,
                    "waiting": tier.waiting,
                })
            })
            .collect(),
        Err(error) => vec![json!({
            "role": Role::Coordinator,
            "peer_address": coordinator.peer,
            "healthy": false,
            "error": error.to_string(),
        })],
    }
}

async fn member_status(client: &PeerClient, member: &Member, pid: Option<u32>) -> Value {
    if member.role.is_replicated() {
        let url = format!("{}/peer/status", member.peer_url());
        return match client
            .get::<_, MemberStatus>("member", "status", &url, &())
            .await
        {
            Ok(status) => serde_json::to_value(status).unwrap_or_default(),
            Err(error) => unreachable_member(member, pid, &error.to_string()),
        };
    }
    let url = format!("{}/healthz", member.public_url().unwrap_or_default());
    match client.get::<_, Value>("member", "healthz", &url, &()).await {
        Ok(_) => json!({
            "role": member.role,
            "ordinal": member.ordinal,
            "pid": pid,
            "address": member.public,
            "peer_address": member.peer,
            "healthy": true,
            "primary": null,
            "epoch": null,
            "applied_index": null,
            "digest": null,
        }),
        Err(error) => unreachable_member(member, pid, &error.to_string()),
    }
}

fn unreachable_member(member: &Member, pid: Option<u32>, error: &str) -> Value {
    json!({
        "role": member.role,
        "ordinal": member.ordinal,
        "pid": pid,
        "address": member.public,
        "peer_address": member.peer,
        "healthy": false,
        "primary": false,
        "epoch": null,
        "applied_index": null,
        "digest": null,
        "error": error,
    })
}

/// The table `bookstore status` prints for people: one row per member (role,
/// phase, epoch, applied index, lag behind its tier's primary, in sync, pid),
/// then one line per tier from the coordinator. A pure function of the JSON
/// lines, so what people read and what scripts read cannot disagree.
pub fn render_table(lines: &[Value]) -> String {
    let (coordinator, members): (Vec<&Value>, Vec<&Value>) =
        lines.iter().partition(|line| line["role"] == "coordinator");
    let mut rows = vec![Row::header()];
    rows.extend(
        members
            .iter()
            .map(|line| Row::of(line, &members, &coordinator)),
    );
    let mut table = align(&rows);
    for line in coordinator {
        table.push_str(&coordinator_line(line));
        table.push('\n');
    }
    table
}

/// One row of the table, as text.
struct Row([String; 8]);

impl Row {
    fn header() -> Self {
        Self(
            [
                "MEMBER", "ROLE", "PHASE", "EPOCH", "APPLIED", "LAG", "IN SYNC", "PID",
            ]
            .map(str::to_owned),
        )
    }

    fn of(line: &Value, members: &[&Value], coordinator: &[&Value]) -> Self {
        let role = line["role"].as_str().unwrap_or("?");
        let ordinal = line["ordinal"].as_u64();
        let name = ordinal.map_or_else(|| role.to_owned(), |o| format!("{role}-{o}"));
        let healthy = line["healthy"] == true;
        let replicated = !line["phase"].is_null() || matches!(role, "catalog" | "order");
        let dash = || "-".to_owned();
        let number = |key: &str| line[key].as_u64().map_or_else(dash, |n| n.to_string());
        let (member_role, phase, lag, in_sync) = if replicated {
            let member_role = match (healthy, line["primary"] == true) {
                (false, _) => dash(),
                (true, true) => "primary".to_owned(),
                (true, false) => "replica".to_owned(),
            };
            // A member that answers names its phase (a shut-down one
            // answers too); one that does not answer is down.
            let phase = match line["phase"].as_str() {
                Some(phase) => phase.replace('_', " "),
                None => "down".to_owned(),
            };
            (
                member_role,
                phase,
                lag(line, members),
                in_sync(role, ordinal, coordinator),
            )
        } else {
            let phase = if healthy { "serving" } else { "down" };
            (dash(), phase.to_owned(), dash(), dash())
        };
        Self([
            name,
            member_role,
            phase,
            number("epoch"),
            number("applied_index"),
            lag,
            in_sync,
            number("pid"),
        ])
    }
}

/// How many writes a member is behind its tier's primary.
fn lag(line: &Value, members: &[&Value]) -> String {
    let primary = members
        .iter()
        .find(|m| m["role"] == line["role"] && m["primary"] == true && m["healthy"] == true);
    match (
        primary.and_then(|p| p["applied_index"].as_u64()),
        line["applied_index"].as_u64(),
    ) {
        (Some(primary), Some(member)) => primary.saturating_sub(member).to_string(),
        _ => "-".to_owned(),
    }
}

/// Whether the coordinator counts a member in sync ("?" when it cannot say).
fn in_sync(role: &str, ordinal: Option<u64>, coordinator: &[&Value]) -> String {
    let tier = coordinator.iter().find(|c| c["tier"] == role);
    let listed = tier.and_then(|t| t["in_sync"].as_array());
    match (listed, ordinal) {
        (Some(listed), Some(ordinal)) => {
            let yes = listed.iter().any(|o| o.as_u64() == Some(ordinal));
            if yes { "yes" } else { "no" }.to_owned()
        }
        _ => "?".to_owned(),
    }
}

/// `coordinator: catalog at epoch 7, primary catalog-0, in sync [0, 1]`.
fn coordinator_line(line: &Value) -> String {
    if line["healthy"] != true {
        let error = line["error"].as_str().unwrap_or("no answer");
        return format!("coordinator: unreachable ({error})");
    }
    let tier = line["tier"].as_str().unwrap_or("?");
    let primary = line["primary"]
        .as_u64()
        .map_or_else(|| "none".to_owned(), |p| format!("{tier}-{p}"));
    let in_sync: Vec<String> = line["in_sync"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|o| o.to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut text = format!(
        "coordinator: {tier} at epoch {}, primary {primary}, in sync [{}]",
        line["epoch"].as_u64().unwrap_or(0),
        in_sync.join(", ")
    );
    if let Some(waiting) = line["waiting"].as_str() {
        text.push_str(&format!("; {waiting}"));
    }
    text
}

/// The rows as columns padded to their widest cell.
fn align(rows: &[Row]) -> String {
    let mut widths = [0; 8];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(&row.0) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .0
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(role: &str, ordinal: u64, primary: bool, applied: u64, phase: &str) -> Value {
        json!({"role": role, "ordinal": ordinal, "pid": 100 + ordinal, "healthy": true,
               "primary": primary, "phase": phase, "epoch": 7, "applied_index": applied})
    }

    fn coordinator(tier: &str, primary: u64, in_sync: &[u64], waiting: Option<&str>) -> Value {
        json!({"role": "coordinator", "healthy": true, "tier": tier, "epoch": 7,
               "primary": primary, "in_sync": in_sync, "waiting": waiting})
    }

    fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn a_replica_behind_its_primary_shows_its_lag_and_in_sync_comes_from_the_coordinator() {
        let table = render_table(&[
            member("catalog", 0, true, 120, "leading"),
            member("catalog", 1, false, 100, "catching_up"),
            coordinator("catalog", 0, &[0], None),
        ]);
        assert_eq!(
            row(&table, "catalog-0"),
            [
                "catalog-0",
                "primary",
                "leading",
                "7",
                "120",
                "0",
                "yes",
                "100"
            ]
        );
        assert_eq!(
            row(&table, "catalog-1"),
            [
                "catalog-1",
                "replica",
                "catching",
                "up",
                "7",
                "100",
                "20",
                "no",
                "101"
            ]
        );
        assert!(table.contains("coordinator: catalog at epoch 7, primary catalog-0, in sync [0]"));
    }

    #[test]
    fn an_unreachable_member_is_down_and_a_stateless_service_is_serving() {
        let table = render_table(&[
            json!({"role": "order", "ordinal": 1, "pid": null, "healthy": false,
                   "primary": false, "epoch": null, "applied_index": null, "error": "refused"}),
            json!({"role": "frontend", "ordinal": 0, "pid": 42, "healthy": true,
                   "primary": null, "epoch": null, "applied_index": null}),
        ]);
        assert_eq!(
            row(&table, "order-1"),
            ["order-1", "-", "down", "-", "-", "-", "?", "-"]
        );
        assert_eq!(
            row(&table, "frontend-0"),
            ["frontend-0", "-", "serving", "-", "-", "-", "-", "42"]
        );
    }

    #[test]
    fn the_coordinator_line_says_what_it_waits_for_or_that_it_is_unreachable() {
        let mut waiting = coordinator("order", 0, &[], Some("waiting for all 2 members"));
        waiting["primary"] = Value::Null;
        let unreachable = json!({"role": "coordinator", "healthy": false, "error": "refused"});
        let table = render_table(&[waiting, unreachable]);
        assert!(
            table.contains(
                "coordinator: order at epoch 7, primary none, in sync []; waiting for all 2 members"
            ),
            "{table}"
        );
        assert!(
            table.contains("coordinator: unreachable (refused)"),
            "{table}"
        );
    }
}
