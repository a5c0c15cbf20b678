//! The member table `bookstore status` and `kubectl bookstore status`
//! print, and the rows the consoles show: one place that turns the status
//! lines (one JSON object per member as it reports itself, then one per
//! replicated tier as the coordinator sees it, `"role": "coordinator"`) into
//! what people read. Pure functions, so what people read and what scripts
//! read cannot disagree.

use serde::Serialize;
use serde_json::Value;

/// Which columns a table has: a local store names each member's process
/// (`PID`), a store in Kubernetes its pod and the digest of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// MEMBER, ROLE, PHASE, EPOCH, APPLIED, LAG, IN SYNC, PID.
    Local,
    /// MEMBER, POD, ROLE, PHASE, EPOCH, APPLIED, LAG, DIGEST, IN SYNC.
    Cluster,
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
    /// The member's pod, in a cluster (the line's `pod`).
    pub pod: Option<String>,
    /// A digest of its state: members of a tier that agree on applied index
    /// and digest hold the same state.
    pub digest: Option<String>,
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
        pod: line["pod"].as_str().map(str::to_owned),
        digest: line["digest"].as_str().map(str::to_owned),
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

/// The table for people: one row per member (role, phase, epoch, applied
/// index, lag behind its tier's primary, in sync, and the `columns`' own),
/// then one line per tier from the coordinator.
pub fn render_table(lines: &[Value], columns: Columns) -> String {
    let header: &[&str] = match columns {
        Columns::Local => &[
            "MEMBER", "ROLE", "PHASE", "EPOCH", "APPLIED", "LAG", "IN SYNC", "PID",
        ],
        Columns::Cluster => &[
            "MEMBER", "POD", "ROLE", "PHASE", "EPOCH", "APPLIED", "LAG", "DIGEST", "IN SYNC",
        ],
    };
    let mut rows = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    rows.extend(
        member_rows(lines)
            .iter()
            .map(|row| table_cells(row, columns)),
    );
    let mut table = align(&rows);
    for line in split_lines(lines).0 {
        table.push_str(&coordinator_line(line));
        table.push('\n');
    }
    table
}

fn table_cells(row: &MemberRow, columns: Columns) -> Vec<String> {
    let text = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let words = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let in_sync = match (row.replicated, row.in_sync) {
        (false, _) => "-",
        (true, None) => "?",
        (true, Some(true)) => "yes",
        (true, Some(false)) => "no",
    }
    .to_owned();
    let role = row.role.unwrap_or("-").to_owned();
    match columns {
        Columns::Local => vec![
            row.name.clone(),
            role,
            row.phase.clone(),
            text(row.epoch),
            text(row.applied),
            text(row.lag),
            in_sync,
            text(row.pid),
        ],
        Columns::Cluster => vec![
            row.name.clone(),
            words(&row.pod),
            role,
            row.phase.clone(),
            text(row.epoch),
            text(row.applied),
            text(row.lag),
            words(&row.digest),
            in_sync,
        ],
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
fn align(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut table = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
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
    use serde_json::json;

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
        let table = render_table(
            &[
                member("catalog", 0, true, 120, "leading"),
                member("catalog", 1, false, 100, "catching_up"),
                coordinator("catalog", 0, &[0], None),
            ],
            Columns::Local,
        );
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
        let table = render_table(
            &[
                json!({"role": "order", "ordinal": 1, "pid": null, "healthy": false,
                   "primary": false, "epoch": null, "applied_index": null, "error": "refused"}),
                json!({"role": "frontend", "ordinal": 0, "pid": 42, "healthy": true,
                   "primary": null, "epoch": null, "applied_index": null}),
            ],
            Columns::Local,
        );
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
        let table = render_table(&[waiting, unreachable], Columns::Local);
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

    #[test]
    fn a_cluster_table_names_each_members_pod_and_digest_instead_of_a_pid() {
        let mut primary = member("catalog", 0, true, 120, "leading");
        primary["pod"] = json!("shop-catalog-0");
        primary["digest"] = json!("00ff00ff00ff00ff");
        let table = render_table(
            &[primary, coordinator("catalog", 0, &[0], None)],
            Columns::Cluster,
        );
        assert!(
            table.starts_with("MEMBER     POD             ROLE"),
            "{table}"
        );
        assert_eq!(
            row(&table, "catalog-0"),
            [
                "catalog-0",
                "shop-catalog-0",
                "primary",
                "leading",
                "7",
                "120",
                "0",
                "00ff00ff00ff00ff",
                "yes"
            ]
        );
    }
}
