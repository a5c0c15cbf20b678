//! The operator against a real API server (etcd, kube-apiserver and
//! kube-controller-manager; `tests/cluster/cluster.sh up api-only`), as
//! processes: it reconciles a BookStore into owned objects with server-side
//! apply, follows pod readiness, fails a deleted primary over to the next
//! ordinal and hands it back after the resync, reports a malformed store
//! without stopping the others, hands leadership over when killed, and the
//! garbage collector removes a deleted store's objects.
//!
//! No kubelet runs, so the test plays it (pod Ready conditions) and plays the
//! members (heartbeats; see `support::members`). The end-to-end test on the
//! full cluster runs the real pods.

mod support;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_operator::crd::{BookStore, BookStoreStatus};
use bookstore_system_tests::store::{self, condition};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::{NamespaceResourceScope, Resource as _};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use support::members::Members;
use support::{
    Cluster, Mode, OperatorProcess, create_store, eventually, every_pod_ready, install_crd,
    namespace, set_ready, tier,
};

const STORE: &str = "shop";
const WAIT: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_store_on_a_real_api_server() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "operator").await;
    let mut leader = OperatorProcess::start_leading(&cluster, &ns, "first").await;
    let standby = OperatorProcess::start(&cluster, &ns, "second");

    let stores = Api::<BookStore>::namespaced(client.clone(), &ns);
    let store = create_store(
        &stores,
        STORE,
        json!({"heartbeat": {"intervalMs": 200, "failureThreshold": 3}}),
    )
    .await;
    let objects = StoreObjects::new(&client, &ns);
    objects.owned_by(&store).await;

    // The members start, the (played) kubelet reports them Ready, and the
    // coordinator in the operator picks ordinal 0 of each tier.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let token = store::peer_token(&client, &ns, STORE, WAIT).await;
    let endpoint = Arc::new(RwLock::new(leader.store_url(&ns, STORE)));
    let mut members = Members::start(endpoint.clone(), token, HEARTBEAT);
    every_pod_ready(&pods, STORE).await;
    let ready = wait_status(&stores, "the store is Ready with primaries 0", |s| {
        condition(s, "Ready") == Some("True")
            && tier(s, Role::Catalog).0 == Some(0)
            && tier(s, Role::Order).0 == Some(0)
    })
    .await;
    assert_eq!(ready.catalog.as_ref().map(|t| t.in_sync_members), Some(2));
    wait_role(&pods, "shop-catalog-0", "primary").await;
    wait_role(&pods, "shop-catalog-1", "replica").await;
    wait_role(&pods, "shop-order-0", "primary").await;

    // The catalog primary's pod is deleted (its process dies with it): the
    // next ordinal takes over under a higher epoch, and an Event says so.
    let before = tier(&ready, Role::Catalog).1;
    let old_uid = pods.get("shop-catalog-0").await.expect("the pod").uid();
    members.crash(Role::Catalog, 0);
    pods.delete("shop-catalog-0", &DeleteParams::default())
        .await
        .expect("the primary's pod is deleted");
    let failed_over = wait_status(&stores, "catalog fails over to ordinal 1", |s| {
        let (primary, epoch) = tier(s, Role::Catalog);
        primary == Some(1) && epoch > before
    })
    .await;
    assert_eq!(
        failed_over
            .catalog
            .as_ref()
            .and_then(|t| t.primary_pod.as_deref()),
        Some("shop-catalog-1")
    );
    assert!(
        failed_over.last_failover_time.is_some(),
        "lastFailoverTime is recorded"
    );
    wait_role(&pods, "shop-catalog-1", "primary").await;
    store::wait_event(&client, &ns, STORE, "Failover", "", WAIT).await;
    let metrics = leader.metrics().await;
    let failovers = format!(
        "bookstore_coordinator_failovers_total{{store=\"{ns}/{STORE}\",tier=\"catalog\"}} 1"
    );
    assert!(
        metrics.contains(&failovers),
        "the operator counts the failover:\n{metrics}"
    );

    // The StatefulSet brings the pod back; the member rejoins, resyncs
    // (the primary admits it) and takes the primary back by a handover.
    let returned = eventually("shop-catalog-0 is recreated", WAIT, || async {
        pods.get_opt("shop-catalog-0")
            .await
            .ok()?
            .filter(|p| p.uid() != old_uid)
    })
    .await;
    members.start_member(Role::Catalog, 0);
    set_ready(&pods, &returned.name_any(), true).await;
    let handed_back = wait_status(&stores, "the catalog primary returns to ordinal 0", |s| {
        let (primary, epoch) = tier(s, Role::Catalog);
        primary == Some(0)
            && epoch > tier(&failed_over, Role::Catalog).1
            && s.catalog.as_ref().is_some_and(|t| t.in_sync_members == 2)
    })
    .await;
    wait_role(&pods, "shop-catalog-0", "primary").await;
    wait_role(&pods, "shop-catalog-1", "replica").await;
    store::wait_event(&client, &ns, STORE, "Handover", "", WAIT).await;

    // A malformed store (one the CRD's rules cannot judge: its inventory
    // ConfigMap does not exist) is reported, applies nothing, and does not
    // stop the operator from reconciling the others.
    create_store(
        &stores,
        "broken",
        json!({"inventory": {"configMap": {"name": "broken-inventory"}}}),
    )
    .await;
    let broken = store::wait_status(
        &stores,
        "broken",
        "the broken store reports InvalidSpec",
        WAIT,
        |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
        },
    )
    .await;
    assert!(
        broken
            .phase
            .unwrap_or_default()
            .contains("inventory ConfigMap broken-inventory does not exist")
    );
    store::wait_event(&client, &ns, "broken", "InvalidSpec", "", WAIT).await;
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    assert!(
        stateful_sets
            .get_opt("broken-catalog")
            .await
            .expect("a lookup")
            .is_none()
    );
    // It waits for a change rather than polling: the ConfigMap it names
    // appears, and that alone brings it to life.
    let inventory: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "broken-inventory"},
        "data": {"inventory.txt": "init,1,3,10,distributed systems,A book\n"},
    }))
    .expect("a ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &inventory)
        .await
        .expect("the inventory ConfigMap is created");
    eventually("the fixed store gets its StatefulSets", WAIT, || async {
        stateful_sets.get_opt("broken-catalog").await.ok()?
    })
    .await;
    stores
        .patch(
            STORE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": {"frontend": 2}}})),
        )
        .await
        .expect("the store is changed");
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    eventually("the frontend scales to 2", WAIT, || async {
        let spec = deployments.get("shop-frontend").await.ok()?.spec?;
        (spec.replicas == Some(2)).then_some(())
    })
    .await;

    // The leader is killed: the standby takes the Lease, its coordinator
    // starts over from the members' heartbeats (the Service would now route
    // them to it) with epochs above theirs, and keeps the store running.
    assert!(
        !standby.is_leading().await,
        "the standby must not act while the leader holds the Lease"
    );
    leader.kill();
    *endpoint.write().unwrap_or_else(|p| p.into_inner()) = standby.store_url(&ns, STORE);
    eventually(
        "the standby takes the Lease",
        Duration::from_secs(45),
        || async { standby.is_leading().await.then_some(()) },
    )
    .await;
    let epoch_before = tier(&handed_back, Role::Catalog).1;
    wait_status(
        &stores,
        "the new leader publishes above the old epochs",
        |s| {
            let (primary, epoch) = tier(s, Role::Catalog);
            primary == Some(0) && epoch > epoch_before && condition(s, "Ready").is_some()
        },
    )
    .await;

    // Deleting the store lets the garbage collector remove what it owned.
    stores
        .delete(STORE, &DeleteParams::foreground())
        .await
        .expect("the store is deleted");
    objects.gone().await;
    drop(members);
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

async fn wait_status(
    stores: &Api<BookStore>,
    what: &str,
    check: impl Fn(&BookStoreStatus) -> bool,
) -> BookStoreStatus {
    store::wait_status(stores, STORE, what, WAIT, check).await
}

async fn wait_role(pods: &Api<Pod>, name: &str, role: &str) {
    eventually(&format!("{name} is labelled {role}"), WAIT, || async {
        let pod = pods.get(name).await.ok()?;
        (pod.labels().get("mybookstore.dev/role").map(String::as_str) == Some(role)).then_some(())
    })
    .await;
}

/// Every object the operator creates for the store.
struct StoreObjects {
    client: Client,
    ns: String,
}

impl StoreObjects {
    fn new(client: &Client, ns: &str) -> Self {
        Self {
            client: client.clone(),
            ns: ns.to_owned(),
        }
    }

    /// Each object appears, owned by the store, applied by the operator.
    async fn owned_by(&self, store: &BookStore) {
        let uid = store.uid().expect("a stored BookStore has a uid");
        for name in ["shop-catalog", "shop-order"] {
            self.check::<StatefulSet>(name, &uid).await;
            self.check::<PodDisruptionBudget>(name, &uid).await;
        }
        for name in ["shop-frontend", "shop-cache"] {
            self.check::<Deployment>(name, &uid).await;
        }
        for name in [
            "shop-catalog",
            "shop-catalog-primary",
            "shop-order",
            "shop-order-primary",
            "shop-frontend",
            "shop-cache",
        ] {
            self.check::<Service>(name, &uid).await;
        }
        self.check::<ConfigMap>("shop-config", &uid).await;
        let secret: Secret = self.check("shop-peer-token", &uid).await;
        assert!(secret.data.is_some_and(|d| d.contains_key("peer-token")));
    }

    async fn check<K>(&self, name: &str, uid: &str) -> K
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug
            + k8s_openapi::Metadata,
    {
        let api = Api::<K>::namespaced(self.client.clone(), &self.ns);
        let kind = K::KIND;
        let object = eventually(&format!("{kind} {name} exists"), WAIT, || async {
            api.get_opt(name).await.ok()?
        })
        .await;
        let owners = object.meta().owner_references.clone().unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{kind} {name} is not controlled by the store: {owners:?}"
        );
        if kind != Secret::KIND {
            let managers = object.meta().managed_fields.clone().unwrap_or_default();
            assert!(
                managers
                    .iter()
                    .any(|m| m.manager.as_deref() == Some("bookstore-operator")
                        && m.operation.as_deref() == Some("Apply")),
                "{kind} {name} was not server-side applied by bookstore-operator: {managers:?}"
            );
        }
        object
    }

    /// The garbage collector has removed every owned object.
    async fn gone(&self) {
        let stateful_sets = Api::<StatefulSet>::namespaced(self.client.clone(), &self.ns);
        let services = Api::<Service>::namespaced(self.client.clone(), &self.ns);
        let config_maps = Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns);
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.ns);
        eventually("the store's objects are collected", WAIT, || async {
            let left = [
                stateful_sets.get_opt("shop-catalog").await.ok()?.is_some(),
                services.get_opt("shop-frontend").await.ok()?.is_some(),
                config_maps.get_opt("shop-config").await.ok()?.is_some(),
                secrets.get_opt("shop-peer-token").await.ok()?.is_some(),
            ];
            left.iter().all(|present| !present).then_some(())
        })
        .await;
    }
}
