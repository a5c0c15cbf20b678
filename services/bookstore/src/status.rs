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
use bookstore_replication::status_table::{Columns, render_table};
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
        print!("{}", render_table(&lines, Columns::Local));
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
