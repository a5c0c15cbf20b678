//! `kubectl bookstore status`: each member as it sees itself, read from the
//! member through the API server's pod proxy (`GET /peer/status` on its peer
//! port, with the store's peer token), then each replicated tier as the
//! store's coordinator sees it (`GET .../coordinator/topology` through the
//! operator Service's proxy). The lines have the shape `bookstore status
//! --json` prints, plus each member's `pod`, so one table
//! ([`bookstore_replication::status_table`]) renders both.

use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_replication::node::messages::MemberStatus;
use bookstore_replication::topology::Topology;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::api::{ServiceRef, StoreApi, coordinator_url_of, operator_service};
use crate::names::PEER_PORT;

/// How long one member or the coordinator may take to answer.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The status lines of every pod of the store, then the coordinator's.
pub async fn collect(api: &StoreApi, timeout: Duration) -> anyhow::Result<Vec<Value>> {
    api.get().await?;
    let token = api.token().await?;
    let pods = api.pods().await?;
    Ok(lines(api, pods, &token, timeout).await)
}

/// The status lines of `pods` (the store's), then the coordinator's, each
/// read with the peer `token`.
pub async fn lines(
    api: &StoreApi,
    mut pods: Vec<Pod>,
    token: &str,
    timeout: Duration,
) -> Vec<Value> {
    pods.sort_by_key(|pod| member_of(pod).map(|(role, ordinal, _)| (tier_order(role), ordinal)));
    let members = stateless_ordinals(&pods);
    let lines = pods.iter().zip(members).filter_map(|(pod, ordinal)| {
        let (role, own, name) = member_of(pod)?;
        Some(member_line(
            api,
            pod,
            role,
            own.or(ordinal)?,
            name,
            token,
            timeout,
        ))
    });
    let coordinator = coordinator_lines(api, &pods, token, timeout);
    let (mut lines, coordinator) = futures::join!(futures::future::join_all(lines), coordinator);
    lines.extend(coordinator);
    lines
}

/// Frontend and cache first, as `bookstore status` lists them, then the
/// replicated tiers.
fn tier_order(role: Role) -> u8 {
    match role {
        Role::Frontend => 0,
        Role::Cache => 1,
        Role::Catalog => 2,
        _ => 3,
    }
}

/// A pod's tier, its ordinal if it is a StatefulSet member, and its name.
fn member_of(pod: &Pod) -> Option<(Role, Option<u32>, String)> {
    let name = pod.metadata.name.clone()?;
    let role: Role = pod
        .metadata
        .labels
        .as_ref()?
        .get("app.kubernetes.io/component")?
        .parse()
        .ok()?;
    let ordinal = role
        .is_replicated()
        .then(|| name.rsplit('-').next()?.parse().ok())
        .flatten();
    Some((role, ordinal, name))
}

/// The names of the store's frontend pods.
pub fn frontend_pods(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(member_of)
        .filter(|(role, _, _)| *role == Role::Frontend)
        .map(|(_, _, name)| name)
        .collect()
}

/// Numbers for the pods of the Deployment tiers (`frontend-0`,
/// `frontend-1`, in name order); replicated members keep their own.
fn stateless_ordinals(pods: &[Pod]) -> Vec<Option<u32>> {
    let mut next: std::collections::BTreeMap<Role, u32> = Default::default();
    pods.iter()
        .map(|pod| {
            let (role, own, _) = member_of(pod)?;
            if own.is_some() {
                return own;
            }
            let counter = next.entry(role).or_default();
            *counter += 1;
            Some(*counter - 1)
        })
        .collect()
}

async fn member_line(
    api: &StoreApi,
    pod: &Pod,
    role: Role,
    ordinal: u32,
    name: String,
    token: &str,
    timeout: Duration,
) -> Value {
    if !role.is_replicated() {
        // The stateless services have no peer status: their pod's readiness
        // (their /readyz, probed by the kubelet) says whether they serve.
        return json!({
            "role": role, "ordinal": ordinal, "pod": name, "healthy": is_ready(pod),
            "primary": null, "epoch": null, "applied_index": null, "digest": null,
        });
    }
    let answer = api
        .pod_get(&name, PEER_PORT, "/peer/status", token, timeout)
        .await
        .and_then(|text| Ok(serde_json::from_str::<MemberStatus>(&text)?));
    match answer {
        Ok(status) => {
            let mut line = serde_json::to_value(status).unwrap_or_default();
            line["pod"] = json!(name);
            line
        }
        Err(error) => json!({
            "role": role, "ordinal": ordinal, "pod": name, "healthy": false,
            "primary": false, "epoch": null, "applied_index": null, "digest": null,
            "error": format!("{error:#}"),
        }),
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Where the store's members reach their coordinator: the operator
/// Service their `--coordinator-url` names.
pub fn coordinator_service(pods: &[Pod]) -> Result<ServiceRef, String> {
    let url = pods
        .iter()
        .find_map(coordinator_url_of)
        .ok_or("no pod of the store names its coordinator (--coordinator-url)")?;
    operator_service(&url).ok_or_else(|| {
        format!("the members reach their coordinator at {url}, not at a Service the API server can proxy to")
    })
}

/// One line per replicated tier from the coordinator, or one saying it
/// does not answer.
async fn coordinator_lines(
    api: &StoreApi,
    pods: &[Pod],
    token: &str,
    timeout: Duration,
) -> Vec<Value> {
    let topologies = match coordinator_service(pods) {
        Ok(service) => {
            let path = format!("{}/coordinator/topology", service.path);
            api.service_get(&service, &path, token, timeout)
                .await
                .and_then(|text| Ok(serde_json::from_str::<Vec<Topology>>(&text)?))
                .map_err(|error| format!("{error:#}"))
        }
        Err(error) => Err(error),
    };
    match topologies {
        Ok(topologies) => topologies.iter().map(coordinator_line).collect(),
        Err(error) => vec![json!({"role": Role::Coordinator, "healthy": false, "error": error})],
    }
}

/// A tier as the coordinator sees it, in `bookstore status`'s shape.
pub fn coordinator_line(topology: &Topology) -> Value {
    json!({
        "role": Role::Coordinator,
        "healthy": true,
        "tier": topology.tier,
        "epoch": topology.epoch,
        "primary": topology.primary,
        "in_sync": topology.in_sync_ordinals(),
        "waiting": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, component: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/component": component}},
        }))
        .expect("a pod")
    }

    #[test]
    fn statefulset_members_keep_their_ordinal_and_deployment_pods_are_numbered() {
        let pods = [
            pod("shop-frontend-7d9f-abcde", "frontend"),
            pod("shop-catalog-1", "catalog"),
            pod("shop-frontend-7d9f-fghij", "frontend"),
            pod("shop-cache-5c4b-xyz12", "cache"),
        ];
        assert_eq!(
            stateless_ordinals(&pods),
            [Some(0), Some(1), Some(1), Some(0)]
        );
        assert_eq!(
            member_of(&pods[1]),
            Some((Role::Catalog, Some(1), "shop-catalog-1".into()))
        );
    }

    #[test]
    fn metrics_are_read_from_every_frontend_pod_and_no_other() {
        let pods = [
            pod("shop-frontend-7d9f-abcde", "frontend"),
            pod("shop-catalog-0", "catalog"),
            pod("shop-frontend-7d9f-fghij", "frontend"),
            pod("shop-cache-5c4b-xyz12", "cache"),
        ];
        assert_eq!(
            frontend_pods(&pods),
            ["shop-frontend-7d9f-abcde", "shop-frontend-7d9f-fghij"]
        );
    }

    #[test]
    fn the_coordinator_is_found_from_the_members_command_line() {
        let mut member = pod("shop-catalog-0", "catalog");
        member.spec = Some(
            serde_json::from_value(json!({"containers": [{"name": "catalog", "args": [
                "catalog", "--coordinator-url",
                "http://bookstore-operator.ops.svc:9100/stores/books/shop"]}]}))
            .expect("a pod spec"),
        );
        let service =
            coordinator_service(&[pod("shop-frontend-x", "frontend"), member]).expect("a Service");
        assert_eq!(
            (
                service.namespace.as_str(),
                service.name.as_str(),
                service.port
            ),
            ("ops", "bookstore-operator", 9100)
        );
        assert!(coordinator_service(&[]).is_err());
    }
}
