//! `bookstore status`: a table for people, or with `--json` one JSON object
//! per member for scripts, as its members see
//! themselves: role, ordinal, pid, addresses, health, whether it is the
//! primary, its epoch, applied log index and a digest of its state (members
//! of a tier that agree on index and digest hold the same state). Then one
//! object per replicated tier as the coordinator sees it (`"role":
//! "coordinator"`): epoch, primary, in-sync set, and in words what it waits
//! for when it waits (a bootstrap without durable state waits for every
//! member).
//!
//! `--verify` then has every replicated member recompute its digest from
//! its rows on disk (off its writer, a pass over the whole database) and
//! checks that it matches the digest the member keeps per write, and that
//! the members of a tier at the same index agree; it fails if either does
//! not hold.

use std::time::Duration;

use bookstore_core::cluster::{Member, Role};
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_replication::coordinator::TierStatus;
use bookstore_replication::node::messages::{MemberStatus, Verification};
use bookstore_replication::status_table::{Columns, render_table};
use clap::Args;
use serde_json::{Value, json};

use crate::settings::StoreArgs;
use crate::up::{PIDS_FILE, Pids};

/// How long a member may take to report.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a member may take to read its whole database for `--verify`
/// (a million books take about a second on a laptop).
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// One JSON object per line (members, then the coordinator's tiers)
    /// instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also recompute each replicated member's digest from its rows and
    /// check it, and that the members of each tier agree (slow on a large
    /// store: every member reads its whole database).
    #[arg(long)]
    pub verify: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let lines = collect(&args.store).await?;
    if args.json {
        for line in lines {
            println!("{line}");
        }
    } else {
        print!("{}", render_table(&lines, Columns::Local));
    }
    if args.verify {
        let report = verify(&args.store).await?;
        for line in &report.lines {
            println!("{line}");
        }
        anyhow::ensure!(report.holds, "verification failed (see above)");
    }
    Ok(())
}

/// Has every replicated member verify its digest against its rows.
async fn verify(store: &StoreArgs) -> anyhow::Result<VerifyReport> {
    let cluster = store.cluster()?;
    let client =
        PeerClient::with_timeout(store.load_token()?, Metrics::new("status"), VERIFY_TIMEOUT);
    let asks = cluster
        .members
        .iter()
        .filter(|m| m.role.is_replicated())
        .map(|member| {
            let client = &client;
            async move {
                let url = format!("{}/peer/verify", member.peer_url());
                let answer = client
                    .get::<_, Verification>("member", "verify", &url, &())
                    .await
                    .map_err(|error| error.to_string());
                (member.role, member.name(), answer)
            }
        });
    Ok(verify_report(&futures::future::join_all(asks).await))
}

/// What `--verify` found: one line per member and per tier, and whether
/// everything held.
#[derive(Debug, PartialEq, Eq)]
struct VerifyReport {
    lines: Vec<String>,
    holds: bool,
}

/// Judges the members' verifications. A member whose kept digest differs
/// from its rows fails; so do members of one tier at the same index with
/// different digests. Members at different indexes cannot be compared (a
/// write landed between their reads): said, not failed.
fn verify_report(answers: &[(Role, String, Result<Verification, String>)]) -> VerifyReport {
    let mut lines = Vec::new();
    let mut holds = true;
    for (_, name, answer) in answers {
        lines.push(match answer {
            Ok(v) if v.holds() => format!(
                "verify {name}: at index {} its digest {} matches its rows",
                v.applied_index, v.digest
            ),
            Ok(v) => {
                holds = false;
                format!(
                    "verify {name}: at index {} it keeps digest {} but its rows have {}",
                    v.applied_index, v.digest, v.rows_digest
                )
            }
            Err(error) => {
                holds = false;
                format!("verify {name}: no answer: {error}")
            }
        });
    }
    for tier in &bookstore_core::plan::REPLICATED_TIERS {
        let verified: Vec<(&str, &Verification)> = answers
            .iter()
            .filter(|(role, _, _)| role == tier)
            .filter_map(|(_, name, answer)| Some((name.as_str(), answer.as_ref().ok()?)))
            .collect();
        let Some((_, first)) = verified.first() else {
            continue;
        };
        let names = verified
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(
            if verified.iter().any(|(_, v)| v.applied_index != first.applied_index) {
                format!("verify {tier}: {names} were read at different indexes (writes in flight); run again when the store is idle to compare them")
            } else if verified.iter().all(|(_, v)| v.rows_digest == first.rows_digest) {
                format!(
                    "verify {tier}: {names} hold the same rows at index {}",
                    first.applied_index
                )
            } else {
                holds = false;
                format!(
                    "verify {tier}: {names} are all at index {} but their rows differ",
                    first.applied_index
                )
            },
        );
    }
    VerifyReport { lines, holds }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(index: u64, kept: &str, rows: &str) -> Result<Verification, String> {
        Ok(Verification {
            applied_index: index,
            digest: kept.to_owned(),
            rows_digest: rows.to_owned(),
        })
    }

    fn answer(
        role: Role,
        ordinal: u32,
        result: Result<Verification, String>,
    ) -> (Role, String, Result<Verification, String>) {
        (role, format!("{role}-{ordinal}"), result)
    }

    #[test]
    fn members_whose_digests_match_their_rows_and_each_other_verify() {
        let report = verify_report(&[
            answer(Role::Catalog, 0, verified(7, "aa", "aa")),
            answer(Role::Catalog, 1, verified(7, "aa", "aa")),
            answer(Role::Order, 0, verified(3, "bb", "bb")),
        ]);
        assert!(report.holds, "{report:?}");
        assert!(
            report.lines.contains(
                &"verify catalog: catalog-0, catalog-1 hold the same rows at index 7".to_owned()
            ),
            "{report:?}"
        );
    }

    #[test]
    fn a_kept_digest_that_differs_from_the_rows_fails() {
        let report = verify_report(&[answer(Role::Order, 0, verified(3, "bb", "cc"))]);
        assert!(!report.holds);
        assert!(
            report.lines[0].contains("keeps digest bb but its rows have cc"),
            "{report:?}"
        );
    }

    #[test]
    fn members_at_one_index_with_different_rows_fail() {
        let report = verify_report(&[
            answer(Role::Catalog, 0, verified(7, "aa", "aa")),
            answer(Role::Catalog, 1, verified(7, "ab", "ab")),
        ]);
        assert!(!report.holds);
        assert!(report.lines[2].contains("their rows differ"), "{report:?}");
    }

    #[test]
    fn members_at_different_indexes_are_not_compared_and_a_silent_one_fails() {
        let report = verify_report(&[
            answer(Role::Catalog, 0, verified(7, "aa", "aa")),
            answer(Role::Catalog, 1, verified(8, "ab", "ab")),
        ]);
        assert!(report.holds, "{report:?}");
        assert!(report.lines[2].contains("different indexes"), "{report:?}");
        let report = verify_report(&[answer(Role::Catalog, 0, Err("timed out".to_owned()))]);
        assert!(!report.holds);
    }
}
