//! Day-2 operations against a real API server (`tests/cluster/cluster.sh up
//! api-only`), one store through every step in turn.
//!
//! The running coordinator follows the spec (issue 13, item 4): a changed
//! heartbeat interval and failure threshold are in force at the next
//! reconcile, shown in the status and the operator's metrics, with the epochs
//! going on from where they were; a scale-up adds the member once it has
//! resynced; a scale-down first removes the highest ordinal from the in-sync
//! set and the topology, and only then shrinks the StatefulSet, and the
//! removed member's heartbeats do not bring it back.
//!
//! Planned switchover (item 2): the annotation `mybookstore.dev/switchover:
//! catalog=1` moves the catalog primary to ordinal 1 by one new epoch (a
//! `Switchover` Event, the `Switchover` condition), and keeps it there after
//! ordinal 0 is back in sync; a switchover to a member that is down is
//! refused with the condition and a `SwitchoverRefused` Event, and nothing
//! moves.
//!
//! Fencing (item 6): `mybookstore.dev/fenced-members: catalog-0` takes the
//! catalog primary out of the in-sync set; the primary moves to catalog-1 by
//! a failover, catalog-0 stays out (not in sync, not live, its pod not
//! Ready) while fenced, with a `Fenced` condition and Event; unfenced, it
//! rejoins and the primary returns to it.
//!
//! Hibernation (item 6): `mybookstore.dev/hibernation: "on"` scales every
//! workload to zero and keeps the volume claims; the coordinator neither
//! fails over nor moves its epochs while the members are gone (status
//! `Hibernated`); `"off"` brings the members back with the primaries on
//! ordinal 0 and both catalog members in sync.
//!
//! As in `api_server.rs`, the test plays the kubelet and the members.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_operator::crd::{BookStore, BookStoreStatus, CoordinatorSettings};
use bookstore_operator::names::{
    FENCED_MEMBERS_ANNOTATION, HIBERNATION_ANNOTATION, SWITCHOVER_ANNOTATION,
};
use bookstore_replication::topology::Topology;
use bookstore_system_tests::store::{self, tier};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::members::{CoordinatorEndpoint, SimulatedMember};
use support::{Cluster, Mode, OperatorProcess, eventually, install_crd, namespace, try_set_ready};

const STORE: &str = "spec";
const WAIT: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_scaling_switchover_fencing_and_hibernation_on_a_real_api_server() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "follows").await;
    let operator = OperatorProcess::start(&cluster, &ns, "follows");
    eventually("the operator leads", WAIT, || async {
        operator.is_leading().await.then_some(())
    })
    .await;
    let stores = Api::<BookStore>::namespaced(client.clone(), &ns);
    let store: BookStore = serde_json::from_value(json!({
        "apiVersion": "mybookstore.dev/v1alpha1",
        "kind": "BookStore",
        "metadata": {"name": STORE},
        "spec": {
            "replicas": {"catalog": 2, "order": 1},
            "heartbeat": {"intervalMs": 200, "failureThreshold": 3},
        },
    }))
    .expect("a BookStore");
    stores
        .create(&PostParams::default(), &store)
        .await
        .expect("the store is created");
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let token = store::peer_token(&client, &ns, STORE, WAIT).await;
    let endpoint = CoordinatorEndpoint {
        base: Arc::new(RwLock::new(format!(
            "{}/stores/{ns}/{STORE}",
            operator.coordinator_url
        ))),
        token: token.clone(),
        interval: HEARTBEAT,
    };
    let kubelet = Kubelet::start(
        pods.clone(),
        endpoint,
        operator.coordinator_url.clone(),
        &ns,
    );
    let started = wait(
        &stores,
        "both catalog members in sync, settings shown",
        |s| {
            tier(s, "catalog").in_sync_members == 2
                && tier(s, "catalog").primary == Some(0)
                && s.coordinator == Some(settings(200, 3, 2, 1))
        },
    )
    .await;

    // 1. New heartbeat settings: in force at the next reconcile, in the
    //    status and the metrics, and nothing is reset.
    patch_spec(
        &stores,
        json!({"heartbeat": {"intervalMs": 300, "failureThreshold": 15}}),
    )
    .await;
    let reconfigured = wait(&stores, "the new settings are in force", |s| {
        s.coordinator == Some(settings(300, 15, 2, 1))
    })
    .await;
    assert!(
        tier(&reconfigured, "catalog").epoch >= tier(&started, "catalog").epoch,
        "epochs go on, never reset: {:?} then {:?}",
        started.catalog,
        reconfigured.catalog
    );
    // The members' --heartbeat-ms is in their pod template: the operator
    // rolls the pods, replicas first, then a switchover, then the old
    // primary; afterwards the rule takes the primary back to ordinal 0.
    for note in [
        "catalog: replacing spec-catalog-1",
        "catalog: switching the primary over to spec-catalog-1",
        "catalog: replacing spec-catalog-0",
        "catalog: every member runs the new revision",
    ] {
        store::wait_event(&client, &ns, STORE, "RolloutStep", note, WAIT).await;
    }
    store::wait_event(&client, &ns, STORE, "Switchover", "catalog epoch", WAIT).await;
    let rolled = wait(
        &stores,
        "the rollout is done, catalog-0 primary again",
        |s| {
            s.rollout.len() == 2
                && s.rollout
                    .iter()
                    .all(|r| r.phase.contains("members updated"))
                && tier(s, "catalog").primary == Some(0)
                && tier(s, "catalog").in_sync_members == 2
        },
    )
    .await;
    println!("rollout: {:?}", rolled.rollout);
    let metrics = operator.metrics().await;
    for (setting, value) in [("failure_threshold", 15), ("heartbeat_interval_ms", 300)] {
        let series = format!(
            "bookstore_operator_coordinator_setting{{setting=\"{setting}\",store=\"{ns}/{STORE}\"}} {value}"
        );
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }

    // 2. Scale-up: the new member joins, resyncs (its primary admits it)
    //    and counts as in sync.
    patch_spec(&stores, json!({"replicas": {"catalog": 3}})).await;
    let grown = wait(&stores, "catalog-2 is in sync", |s| {
        tier(s, "catalog").in_sync_members == 3
            && s.coordinator.as_ref().map(|c| c.catalog_members) == Some(3)
    })
    .await;

    // 3. Scale-down: catalog-2 leaves the in-sync set and the topology before
    //    the StatefulSet shrinks; its heartbeats (it is still running) do
    //    not bring it back.
    patch_spec(&stores, json!({"replicas": {"catalog": 2}})).await;
    let sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    eventually("the catalog StatefulSet shrinks to 2", WAIT, || async {
        let replicas = sets
            .get(&format!("{STORE}-catalog"))
            .await
            .ok()?
            .spec?
            .replicas;
        (replicas == Some(2)).then_some(())
    })
    .await;
    let topology = catalog_topology(&operator, &ns, &token).await;
    assert!(
        topology.member(2).is_none(),
        "catalog-2 left the topology before its pod: {topology:?}"
    );
    let in_sync = topology.in_sync_ordinals();
    assert_eq!(in_sync, vec![0, 1]);
    assert!(topology.epoch > tier(&grown, "catalog").epoch);
    // Its process heartbeats for a grace period after its pod is gone (the
    // played kubelet's terminating pods do); it still is not a member.
    tokio::time::sleep(HEARTBEAT * 5).await;
    let later = catalog_topology(&operator, &ns, &token).await;
    assert!(later.member(2).is_none(), "{later:?}");
    assert_eq!(later.primary, Some(0));
    let shrunk = wait(&stores, "the status counts two catalog members", |s| {
        tier(s, "catalog").desired_members == 2
            && tier(s, "catalog").in_sync_members == 2
            && s.coordinator.as_ref().map(|c| c.catalog_members) == Some(2)
    })
    .await;
    assert!(tier(&shrunk, "catalog").epoch >= topology.epoch);

    // 4. Switchover to catalog-1 (in sync): one new epoch, a clean handover.
    let before = catalog_topology(&operator, &ns, &token).await;
    assert_eq!(before.primary, Some(0));
    annotate(&stores, Some("catalog=1")).await;
    store::wait_event(
        &client,
        &ns,
        STORE,
        "Switchover",
        &format!(
            "catalog epoch {}: catalog primary moved from 0 to 1 by switchover",
            before.epoch + 1
        ),
        WAIT,
    )
    .await;
    let switched = wait(
        &stores,
        "catalog-1 is primary, catalog-0 back in sync",
        |s| {
            tier(s, "catalog").primary == Some(1)
                && tier(s, "catalog").in_sync_members == 2
                && condition_reason(s, "Switchover") == Some(("True", "Requested"))
        },
    )
    .await;
    // The lowest ordinal is in sync again, yet the primary stays while asked.
    tokio::time::sleep(HEARTBEAT * 5).await;
    let held = catalog_topology(&operator, &ns, &token).await;
    assert_eq!(held.primary, Some(1), "{held:?}");
    assert!(tier(&switched, "catalog").epoch > before.epoch);

    // 5. Switchover to a member that is down: refused, nothing moves.
    kubelet.stop(&format!("{STORE}-catalog-0"));
    set_failed(&pods, &format!("{STORE}-catalog-0")).await;
    wait(&stores, "catalog-0 left the in-sync set", |s| {
        tier(s, "catalog").in_sync_members == 1
    })
    .await;
    annotate(&stores, Some("catalog=0")).await;
    let refused = wait(&stores, "the switchover to catalog-0 is refused", |s| {
        condition_reason(s, "Switchover") == Some(("False", "Refused"))
    })
    .await;
    assert_eq!(tier(&refused, "catalog").primary, Some(1));
    store::wait_event(
        &client,
        &ns,
        STORE,
        "SwitchoverRefused",
        "switchover of catalog to catalog-0 refused",
        WAIT,
    )
    .await;
    annotate(&stores, None).await;
    wait(&stores, "the Switchover condition is gone", |s| {
        s.conditions.iter().all(|c| c.type_ != "Switchover")
    })
    .await;

    // 6. Fencing the catalog primary: a failover to catalog-1; catalog-0
    //    stays out of the in-sync set and its pod not Ready until unfenced.
    kubelet.restart(&format!("{STORE}-catalog-0"));
    wait(&stores, "catalog-0 is back as primary", |s| {
        tier(s, "catalog").primary == Some(0) && tier(s, "catalog").in_sync_members == 2
    })
    .await;
    let unfenced = catalog_topology(&operator, &ns, &token).await;
    annotate_with(&stores, FENCED_MEMBERS_ANNOTATION, Some("catalog-0")).await;
    store::wait_event(
        &client,
        &ns,
        STORE,
        "Fenced",
        "catalog-0 (spec-catalog-0) fenced",
        WAIT,
    )
    .await;
    wait_event_saying(
        &client,
        &ns,
        "Failover",
        "catalog-0 is fenced, left the in-sync set; catalog primary moved from 0 to 1",
    )
    .await;
    let fenced = wait(&stores, "catalog-1 is primary, catalog-0 fenced", |s| {
        tier(s, "catalog").primary == Some(1)
            && condition_reason(s, "Fenced") == Some(("True", "Fenced"))
    })
    .await;
    assert!(tier(&fenced, "catalog").epoch > unfenced.epoch);
    // It heartbeats on, yet stays out and unready.
    tokio::time::sleep(HEARTBEAT * 10).await;
    let out = catalog_topology(&operator, &ns, &token).await;
    let member = out.member(0).expect("catalog-0 is listed");
    assert!(!member.in_sync && !member.live, "{out:?}");
    assert_eq!(out.primary, Some(1));
    eventually("catalog-0's pod is not Ready", WAIT, || async {
        let pod = pods.get(&format!("{STORE}-catalog-0")).await.ok()?;
        (!pod_ready(&pod)).then_some(())
    })
    .await;
    annotate_with(&stores, FENCED_MEMBERS_ANNOTATION, None).await;
    store::wait_event(
        &client,
        &ns,
        STORE,
        "Unfenced",
        "catalog-0 (spec-catalog-0) unfenced",
        WAIT,
    )
    .await;
    wait(&stores, "catalog-0 rejoined and is primary again", |s| {
        tier(s, "catalog").primary == Some(0)
            && tier(s, "catalog").in_sync_members == 2
            && s.conditions.iter().all(|c| c.type_ != "Fenced")
    })
    .await;

    // 7. Hibernation: every workload to zero, the claims kept, nothing
    //    moves in the coordinator while the members are gone.
    annotate_with(&stores, HIBERNATION_ANNOTATION, Some("on")).await;
    let hibernated = wait(&stores, "the store is hibernated", |s| {
        condition_reason(s, "Hibernated") == Some(("True", "Hibernating"))
            && condition_reason(s, "Ready") == Some(("False", "Hibernated"))
    })
    .await;
    store::wait_event(&client, &ns, STORE, "Hibernated", "hibernating", WAIT).await;
    let deployments =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns);
    eventually("every workload is scaled to zero", WAIT, || async {
        for tier in ["catalog", "order"] {
            let set = sets.get(&format!("{STORE}-{tier}")).await.ok()?;
            (set.spec?.replicas == Some(0)).then_some(())?;
        }
        for tier in ["frontend", "cache"] {
            let deployment = deployments.get(&format!("{STORE}-{tier}")).await.ok()?;
            (deployment.spec?.replicas == Some(0)).then_some(())?;
        }
        let members = pods.list(&Default::default()).await.ok()?;
        members
            .items
            .iter()
            .all(|p| member_of(p).is_none())
            .then_some(())
    })
    .await;
    let frozen = catalog_topology(&operator, &ns, &token).await;
    assert_eq!(frozen.primary, Some(0), "{frozen:?}");
    assert_eq!(
        frozen.in_sync_ordinals(),
        vec![0],
        "only the primary is kept"
    );
    // Far longer than failure detection: no failover, no new epoch.
    tokio::time::sleep(HEARTBEAT * 3 * 15 * 2).await;
    let still = catalog_topology(&operator, &ns, &token).await;
    assert_eq!(
        (still.epoch, still.primary),
        (frozen.epoch, Some(0)),
        "{still:?}"
    );
    let claims =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .expect("claims");
    println!(
        "hibernated at catalog epoch {}; {} volume claims kept",
        tier(&hibernated, "catalog").epoch,
        claims.items.len()
    );
    annotate_with(&stores, HIBERNATION_ANNOTATION, Some("off")).await;
    store::wait_event(&client, &ns, STORE, "Resumed", "resuming", WAIT).await;
    let resumed = wait(
        &stores,
        "the store runs again, primaries on ordinal 0",
        |s| {
            tier(s, "catalog").primary == Some(0)
                && tier(s, "catalog").in_sync_members == 2
                && tier(s, "order").primary == Some(0)
                && condition_reason(s, "Hibernated") == Some(("False", "Running"))
        },
    )
    .await;
    assert!(tier(&resumed, "catalog").epoch > frozen.epoch);
    let after =
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .expect("claims");
    assert_eq!(after.items.len(), claims.items.len(), "the same claims");

    stores
        .delete(STORE, &DeleteParams::foreground())
        .await
        .expect("the store is deleted");
    drop(kubelet);
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

fn settings(interval_ms: u64, threshold: u32, catalog: u32, order: u32) -> CoordinatorSettings {
    CoordinatorSettings {
        heartbeat_interval_ms: interval_ms,
        failure_threshold: threshold,
        catalog_members: catalog,
        order_members: order,
    }
}

async fn annotate(stores: &Api<BookStore>, value: Option<&str>) {
    annotate_with(stores, SWITCHOVER_ANNOTATION, value).await;
}

async fn annotate_with(stores: &Api<BookStore>, annotation: &str, value: Option<&str>) {
    let patch = json!({"metadata": {"annotations": {annotation: value}}});
    stores
        .patch(STORE, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("the store is annotated");
}

/// Waits for an Event about the store with `reason` whose note says `part`
/// (anywhere: a note starts with the tier and epoch).
async fn wait_event_saying(client: &kube::Client, ns: &str, reason: &str, part: &str) {
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns);
    eventually(
        &format!("an Event {reason} saying {part:?}"),
        WAIT,
        || async {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().is_some_and(|n| n.contains(part))
                })
                .then_some(())
        },
    )
    .await;
}

/// A condition's status and reason.
fn condition_reason<'a>(status: &'a BookStoreStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Plays the kubelet: the pod's container has exited.
async fn set_failed(pods: &Api<Pod>, name: &str) {
    let patch = json!({"status": {"phase": "Failed"}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("the pod's status is patched");
}

async fn patch_spec(stores: &Api<BookStore>, spec: serde_json::Value) {
    stores
        .patch(
            STORE,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .expect("the store is changed");
}

async fn wait(
    stores: &Api<BookStore>,
    what: &str,
    check: impl Fn(&BookStoreStatus) -> bool,
) -> BookStoreStatus {
    store::wait_status(stores, STORE, what, WAIT, check).await
}

/// The catalog topology, from the operator's coordinator API as a member
/// would read it.
async fn catalog_topology(operator: &OperatorProcess, ns: &str, token: &str) -> Topology {
    let url = format!(
        "{}/stores/{ns}/{STORE}/coordinator/topology",
        operator.coordinator_url
    );
    let topologies: Vec<Topology> = reqwest::Client::new()
        .get(url)
        .header("x-bookstore-peer-token", token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("the coordinator answers")
        .json()
        .await
        .expect("topologies");
    topologies
        .into_iter()
        .find(|t| t.tier == Role::Catalog)
        .expect("a catalog topology")
}

/// How long a member's process outlives its deleted pod (a terminating
/// pod's grace period: it still heartbeats).
const GRACE: Duration = Duration::from_secs(2);
/// The played kubelet's rounds (every heartbeat interval): a bound on the
/// test's length, far above what it needs.
const KUBELET_ROUNDS: u32 = 3_000;

/// Plays the kubelet and the member processes of the replicated tiers: a pod
/// that appears (a new uid) gets a member process, a new incarnation as a
/// recreated pod would; a pod is Ready while its member is in sync (as the
/// member's readiness probe says); a deleted pod's process heartbeats on for
/// [`GRACE`]; a stopped pod's process is gone for good.
struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Kubelet {
    fn start(
        pods: Api<Pod>,
        endpoint: CoordinatorEndpoint,
        operator_url: String,
        ns: &str,
    ) -> Self {
        let stopped = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let topology_url = format!("{operator_url}/stores/{ns}/{STORE}/coordinator/topology");
        let task = tokio::spawn(play(pods, endpoint, topology_url, stopped.clone()));
        Self { task, stopped }
    }

    /// The pod's process may run again (a new one, for its current pod).
    fn restart(&self, name: &str) {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The pod's process dies and is not started again.
    fn stop(&self, name: &str) {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Process {
    uid: String,
    ready: Option<bool>,
    _member: SimulatedMember,
}

async fn play(
    pods: Api<Pod>,
    endpoint: CoordinatorEndpoint,
    topology_url: String,
    stopped: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
) {
    let client = reqwest::Client::new();
    let mut running: BTreeMap<String, Process> = BTreeMap::new();
    // A deleted pod's process, by pod name, with when its pod went.
    let mut terminating: Vec<(String, std::time::Instant, Process)> = Vec::new();
    for _ in 0..KUBELET_ROUNDS {
        tokio::time::sleep(HEARTBEAT).await;
        terminating.retain(|(_, since, _)| since.elapsed() < GRACE);
        let Ok(list) = pods.list(&Default::default()).await else {
            continue;
        };
        let topologies: Vec<Topology> = match client
            .get(&topology_url)
            .header("x-bookstore-peer-token", &endpoint.token)
            .send()
            .await
        {
            Ok(answer) => answer.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let stopped = stopped.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut present = std::collections::BTreeSet::new();
        for pod in &list.items {
            let Some((name, role, ordinal)) = member_of(pod) else {
                continue;
            };
            if stopped.contains(&name) {
                running.remove(&name);
                continue;
            }
            present.insert(name.clone());
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if running.get(&name).is_none_or(|p| p.uid != uid) {
                // A recreated pod: the old process is gone before the new
                // pod exists (a StatefulSet pod is replaced only after its
                // predecessor has terminated), and the container runs
                // before its process heartbeats.
                terminating.retain(|(gone, _, _)| gone != &name);
                running.remove(&name);
                if !patch_ready(&pods, &name, false).await {
                    continue;
                }
                let member = SimulatedMember::start(endpoint.clone(), role, ordinal);
                let ready = Some(false);
                running.insert(
                    name.clone(),
                    Process {
                        uid,
                        ready,
                        _member: member,
                    },
                );
            }
            let in_sync = topologies
                .iter()
                .find(|t| t.tier == role)
                .is_some_and(|t| t.is_in_sync(ordinal));
            if let Some(process) = running.get_mut(&name)
                && process.ready != Some(in_sync)
                && patch_ready(&pods, &name, in_sync).await
            {
                process.ready = Some(in_sync);
            }
        }
        let gone: Vec<String> = running
            .keys()
            .filter(|name| !present.contains(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(process) = running.remove(&name) {
                terminating.push((name, std::time::Instant::now(), process));
            }
        }
    }
}

/// Plays the kubelet's status report; false if the pod went meanwhile (the
/// next round retries).
async fn patch_ready(pods: &Api<Pod>, name: &str, ready: bool) -> bool {
    try_set_ready(pods, name, ready).await.is_ok()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A replicated member's pod: its name, tier and ordinal.
fn member_of(pod: &Pod) -> Option<(String, Role, u32)> {
    let name = pod.metadata.name.clone()?;
    let labels = pod.metadata.labels.as_ref()?;
    let role: Role = labels.get("app.kubernetes.io/component")?.parse().ok()?;
    if !role.is_replicated() {
        return None;
    }
    let ordinal = name.rsplit('-').next()?.parse().ok()?;
    Some((name, role, ordinal))
}
