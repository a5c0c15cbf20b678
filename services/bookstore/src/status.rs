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
use serde::Serialize;
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

/// The status of every service member, in cluster-file order, then the
/// coordinator's lines.
pub async fn collect(store: &StoreArgs) -> anyhow::Result<Vec<Value>> {
    collect_within(store, STATUS_TIMEOUT).await
}

/// [`collect`], asking every member at once and waiting at most `timeout`
/// for each (a paused member must not hold up the others' lines).
pub async fn collect_within(store: &StoreArgs, timeout: Duration) -> anyhow::Result<Vec<Value>> {
    let cluster = store.cluster()?;
    let token = store.load_token()?;
    let pids: Pids = std::fs::read(store.data_dir.join(PIDS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let client = PeerClient::with_timeout(token, Metrics::new("status"), timeout);
    let members = cluster
        .members
        .iter()
        .filter(|m| m.role != Role::Coordinator)
        .map(|member| {
            let pid = pids.members.get(&member.name()).copied();
            member_status(&client, member, pid)
        });
    let coordinator = async {
        match cluster.first(Role::Coordinator) {
            Ok(coordinator) => coordinator_status(&client, coordinator).await,
            Err(_) => Vec::new(),
        }
    };
    let (mut lines, coordinator) = futures::join!(futures::future::join_all(members), coordinator);
    lines.extend(coordinator);
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

/// One member as people read it: what the table prints and the console
/// shows, derived from the JSON lines in one place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRow {
    /// `catalog-0`.
    pub name: String,
    pub tier: String,
    pub ordinal: Option<u64>,
    /// Catalog and order: replicated, with a primary and replicas.
    pub replicated: bool,
    /// `primary` or `replica`; `None` for a member that does not answer or
    /// is not replicated.
    pub role: Option<&'static str>,
    /// In words: `leading`, `following`, `catching up`, `joining`,
    /// `fenced`, `shut down`, `serving` (the stateless services) or `down`
    /// (no answer).
    pub phase: String,
    pub epoch: Option<u64>,
    pub applied: Option<u64>,
    /// How many writes it is behind its tier's primary.
    pub lag: Option<u64>,
    /// The coordinator's word; `None` when it cannot say.
    pub in_sync: Option<bool>,
    pub pid: Option<u64>,
    pub healthy: bool,
}

/// The members' rows, in the order of the lines.
pub fn member_rows(lines: &[Value]) -> Vec<MemberRow> {
    let (coordinator, members) = split_lines(lines);
    members
        .iter()
        .map(|line| member_row(line, &members, &coordinator))
        .collect()
}

/// The coordinator's lines and the members' lines.
fn split_lines(lines: &[Value]) -> (Vec<&Value>, Vec<&Value>) {
    lines.iter().partition(|line| line["role"] == "coordinator")
}

fn member_row(line: &Value, members: &[&Value], coordinator: &[&Value]) -> MemberRow {
    let tier = line["role"].as_str().unwrap_or("?").to_owned();
    let ordinal = line["ordinal"].as_u64();
    let healthy = line["healthy"] == true;
    let replicated = matches!(tier.as_str(), "catalog" | "order");
    let role = (replicated && healthy).then(|| {
        if line["primary"] == true {
            "primary"
        } else {
            "replica"
        }
    });
    // A member that answers names its phase (a shut-down one answers too);
    // one that does not answer is down.
    let phase = match line["phase"].as_str() {
        Some(phase) => phase.replace('_', " "),
        None if healthy && !replicated => "serving".to_owned(),
        None => "down".to_owned(),
    };
    MemberRow {
        name: ordinal.map_or_else(|| tier.clone(), |o| format!("{tier}-{o}")),
        replicated,
        role,
        phase,
        epoch: line["epoch"].as_u64(),
        applied: line["applied_index"].as_u64(),
        lag: replicated.then(|| lag(line, members)).flatten(),
        in_sync: replicated
            .then(|| in_sync(&tier, ordinal, coordinator))
            .flatten(),
        pid: line["pid"].as_u64(),
        healthy,
        tier,
        ordinal,
    }
}

/// How many writes a member is behind its tier's primary.
fn lag(line: &Value, members: &[&Value]) -> Option<u64> {
    let primary = members
        .iter()
        .find(|m| m["role"] == line["role"] && m["primary"] == true && m["healthy"] == true)?;
    let primary = primary["applied_index"].as_u64()?;
    Some(primary.saturating_sub(line["applied_index"].as_u64()?))
}

/// Whether the coordinator counts a member in sync.
fn in_sync(tier: &str, ordinal: Option<u64>, coordinator: &[&Value]) -> Option<bool> {
    let listed = coordinator
        .iter()
        .find(|c| c["tier"] == tier)?
        .get("in_sync")?
        .as_array()?;
    let ordinal = ordinal?;
    Some(listed.iter().any(|o| o.as_u64() == Some(ordinal)))
}

/// The table `bookstore status` prints for people: one row per member (role,
/// phase, epoch, applied index, lag behind its tier's primary, in sync, pid),
/// then one line per tier from the coordinator. A pure function of the JSON
/// lines, so what people read and what scripts read cannot disagree.
pub fn render_table(lines: &[Value]) -> String {
    let header = [
        "MEMBER", "ROLE", "PHASE", "EPOCH", "APPLIED", "LAG", "IN SYNC", "PID",
    ];
    let mut rows = vec![header.map(str::to_owned)];
    rows.extend(member_rows(lines).iter().map(table_cells));
    let mut table = align(&rows);
    for line in split_lines(lines).0 {
        table.push_str(&coordinator_line(line));
        table.push('\n');
    }
    table
}

fn table_cells(row: &MemberRow) -> [String; 8] {
    let text = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let in_sync = match (row.replicated, row.in_sync) {
        (false, _) => "-",
        (true, None) => "?",
        (true, Some(true)) => "yes",
        (true, Some(false)) => "no",
    };
    [
        row.name.clone(),
        row.role.unwrap_or("-").to_owned(),
        row.phase.clone(),
        text(row.epoch),
        text(row.applied),
        text(row.lag),
        in_sync.to_owned(),
        text(row.pid),
    ]
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
fn align(rows: &[[String; 8]]) -> String {
    let mut widths = [0; 8];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row
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
