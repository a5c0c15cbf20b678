//! `bookstore status`: one JSON object per member, as its members see
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
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    for line in collect(&args.store).await? {
        println!("{line}");
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
