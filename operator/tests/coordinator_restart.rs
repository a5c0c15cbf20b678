//! The restart that used to lose acknowledged buys, against a real API
//! server: a tier fails over, then the operator leader is replaced and every
//! member restarts (a node reboot) while the old primary is still cut off.
//!
//! Before the coordinator kept durable facts, the new leader started over
//! from the members' heartbeats: restarted processes reported epoch 0, so its
//! epochs went backwards, and it compared data across two coordinator
//! lifetimes and could elect the stale member. Now the facts live in the
//! ConfigMap `<store>-coordinator`, and the new leader must continue above
//! every epoch ever published and elect only the member recorded in sync.
//! The test reads what the new leader published from its history
//! (`coordinator/history`), so no short-lived topology can go unseen.
//!
//! As in `api_server.rs`, no kubelet runs: the test plays it (pod Ready
//! conditions) and plays the members (`support::members`).

mod support;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_operator::crd::{BookStore, BookStoreStatus};
use bookstore_replication::coordinator::durable::{DurableState, TierRecord};
use bookstore_replication::coordinator_server::Transition;
use bookstore_system_tests::store::{self, condition};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use support::members::{Data, Members};
use support::{
    Cluster, Mode, OperatorProcess, create_store, eventually, every_pod_ready, install_crd,
    namespace, tier,
};

const STORE: &str = "shop";
/// The operator's Service, as the pods it makes are told: one for both
/// processes, as for a Deployment's replicas. The test's members reach each
/// process directly; no pod runs here.
const SERVICE_URL: &str = "http://bookstore-operator.bookstore-system.svc:8081";
const WAIT: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_operator_leader_after_a_failover_and_restarts_never_elects_the_cut_off_primary() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "restart").await;
    let mut first = OperatorProcess::start_as_replica(&cluster, &ns, "restart-first", SERVICE_URL)
        .until_leading()
        .await;
    let stores = Api::<BookStore>::namespaced(client.clone(), &ns);
    create_store(
        &stores,
        STORE,
        json!({"heartbeat": {"intervalMs": 200, "failureThreshold": 3}}),
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let token = store::peer_token(&client, &ns, STORE, WAIT).await;
    let endpoint = Arc::new(RwLock::new(first.store_url(&ns, STORE)));
    let mut members = Members::start(endpoint.clone(), token.clone(), HEARTBEAT);
    every_pod_ready(&pods, STORE).await;
    let ready = wait_status(&stores, "the store is Ready with primaries 0", |s| {
        condition(s, "Ready") == Some("True")
            && tier(s, Role::Catalog).0 == Some(0)
            && tier(s, Role::Order).0 == Some(0)
            && s.catalog.as_ref().is_some_and(|t| t.in_sync_members == 2)
            && s.order.as_ref().is_some_and(|t| t.in_sync_members == 2)
    })
    .await;

    // 1. The catalog primary is cut off: its process stops heartbeating
    // (as after `/peer/shutdown`) while its pod stays Ready. Ordinal 1
    // takes over, and the ConfigMap records it alone in sync before the
    // topology that says so is published.
    members.crash(Role::Catalog, 0);
    let failed_over = wait_status(&stores, "catalog fails over to ordinal 1", |s| {
        let (primary, epoch) = tier(s, Role::Catalog);
        primary == Some(1) && epoch > tier(&ready, Role::Catalog).1
    })
    .await;
    let failover_epoch = tier(&failed_over, Role::Catalog).1;
    let order_epoch = tier(&failed_over, Role::Order).1;
    let recorded = eventually(
        "the ConfigMap records catalog-1 alone in sync",
        WAIT,
        || async {
            let catalog = saved_tier(&config_maps, Role::Catalog).await?;
            (catalog.primary == Some(1)
                && catalog.in_sync.keys().eq([&1])
                && catalog.epoch >= failover_epoch)
                .then_some(catalog)
        },
    )
    .await;
    println!("saved after the failover: catalog {recorded:?}");

    // 2. A node reboot: the operator leader is replaced, and every member
    // but the cut-off one restarts as a new process. Restarted processes
    // report what a fresh process reported when the fault was found: data
    // epoch 0 and nothing applied, so heartbeats alone cannot tell the new
    // leader which member is up to date.
    first.kill();
    // What the new leader starts from: the last facts the old one saved.
    let saved = saved_tier(&config_maps, Role::Catalog)
        .await
        .expect("the catalog's facts are saved");
    assert_eq!(saved.primary, Some(1), "{saved:?}");
    for (role, ordinal) in [(Role::Catalog, 1), (Role::Order, 0), (Role::Order, 1)] {
        members.crash(role, ordinal);
    }
    let second = OperatorProcess::start_as_replica(&cluster, &ns, "restart-second", SERVICE_URL);
    *endpoint.write().unwrap_or_else(|p| p.into_inner()) = second.store_url(&ns, STORE);
    for (role, ordinal) in [(Role::Catalog, 1), (Role::Order, 0), (Role::Order, 1)] {
        members.start_member(role, ordinal);
    }
    eventually(
        "the new operator takes the Lease",
        Duration::from_secs(45),
        || async { second.is_leading().await.then_some(()) },
    )
    .await;
    let resumed = wait_status(
        &stores,
        "the new leader elects catalog-1 above the old epochs",
        |s| {
            let (catalog, catalog_epoch) = tier(s, Role::Catalog);
            let (order, order_epoch_now) = tier(s, Role::Order);
            catalog == Some(1)
                && catalog_epoch > failover_epoch
                && order.is_some()
                && order_epoch_now > order_epoch
        },
    )
    .await;

    // 3. The cut-off primary comes back as a new process whose database
    // claims more than anyone's: a higher data epoch than the restarted
    // members report, and far more applied writes. It must resync like any
    // learner; only once the primary has admitted it may the rule hand the
    // primary back to the lowest ordinal, at a higher epoch still.
    let stale = Data {
        epoch: failover_epoch - 1,
        applied: 1_000_000,
    };
    members.start_holding(Role::Catalog, 0, stale);
    let handed_back = wait_status(
        &stores,
        "catalog-0 resyncs and takes the primary back",
        |s| {
            let (primary, epoch) = tier(s, Role::Catalog);
            primary == Some(0)
                && epoch > tier(&resumed, Role::Catalog).1
                && s.catalog.as_ref().is_some_and(|t| t.in_sync_members == 2)
        },
    )
    .await;
    let published = history(&second.store_url(&ns, STORE), &token, Role::Catalog).await;
    println!("catalog topologies published by the new leader: {published:#?}");
    check_published(&published, &saved);
    let told = members.told(Role::Catalog, 1);
    assert!(
        told.iter().all(|&(epoch, primary)| epoch > saved.epoch
            || (epoch, primary) == (saved.epoch, saved.primary)),
        "catalog-1, restarted, was told something new at an epoch not above {}: {told:?}",
        saved.epoch
    );
    let catalog = saved_tier(&config_maps, Role::Catalog)
        .await
        .expect("the ConfigMap still holds the catalog's facts");
    assert!(
        catalog.epoch >= tier(&handed_back, Role::Catalog).1 && catalog.primary == Some(0),
        "the ConfigMap follows the new leader: {catalog:?}"
    );

    stores
        .delete(STORE, &DeleteParams::default())
        .await
        .expect("the store is deleted");
    drop(members);
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}

/// Every change the new leader published, in order, must show: epochs
/// that only rise, all above the saved one; catalog-1 as the first primary;
/// catalog-0 as primary only after a change put it in sync.
fn check_published(published: &[Transition], saved: &TierRecord) {
    assert!(
        published
            .windows(2)
            .all(|pair| pair[0].epoch < pair[1].epoch),
        "the new leader's epochs did not rise: {published:#?}"
    );
    assert!(
        published.iter().all(|p| p.epoch > saved.epoch),
        "the new leader published at an epoch not above the saved {saved:?}: {published:#?}"
    );
    let first = published
        .iter()
        .find(|p| p.primary.is_some())
        .expect("the new leader published a catalog primary");
    assert_eq!(
        first.primary,
        Some(1),
        "the first primary must be the member recorded in sync: {published:#?}"
    );
    let first_zero = published
        .iter()
        .position(|p| p.primary == Some(0))
        .expect("catalog-0 got the primary back");
    assert!(
        published[..first_zero]
            .iter()
            .any(|p| p.primary == Some(1) && p.in_sync.contains(&0)),
        "catalog-0 became primary before the primary admitted it: {published:#?}"
    );
}

/// A tier's facts as saved in the store's coordinator ConfigMap.
async fn saved_tier(config_maps: &Api<ConfigMap>, role: Role) -> Option<TierRecord> {
    let config_map = config_maps
        .get_opt(&format!("{STORE}-coordinator"))
        .await
        .ok()??;
    let text = config_map.data?.remove("state.json")?;
    let state: DurableState = serde_json::from_str(&text).ok()?;
    state.get(&role).cloned()
}

async fn wait_status(
    stores: &Api<BookStore>,
    what: &str,
    check: impl Fn(&BookStoreStatus) -> bool,
) -> BookStoreStatus {
    store::wait_status(stores, STORE, what, WAIT, check).await
}

/// The changes a coordinator published for one tier, oldest first (the
/// coordinator keeps the last `HISTORY_LEN`, far more than this test makes).
async fn history(base: &str, token: &str, role: Role) -> Vec<Transition> {
    let history: Vec<Transition> = reqwest::Client::new()
        .get(format!("{base}/coordinator/history"))
        .header("x-bookstore-peer-token", token)
        .send()
        .await
        .expect("the coordinator answers")
        .error_for_status()
        .expect("the coordinator serves its history")
        .json()
        .await
        .expect("a JSON history");
    history.into_iter().filter(|t| t.tier == role).collect()
}
