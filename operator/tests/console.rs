//! `kubectl bookstore console` against a real API server
//! (`tests/cluster/cluster.sh up api-only`): the real plugin binary, run as a
//! user runs it with the cluster's kubeconfig, serving its page on loopback.
//!
//! The test reads the console's snapshot (`GET /snapshot`, what the page
//! renders each tick) as the page would. With no kubelet it plays both ends
//! as `plugin.rs` does (`support::proxied`): the operator's coordinator
//! behind its Service, catalog-0's `/peer/status` on the node's address, and
//! the other members as heartbeats only. The snapshot must show both tiers
//! with their primaries and epochs as the store's status has them, catalog-0
//! leading in its pod, the actions a cluster offers, and the coordinator's
//! history. Then the guards: an action without the console's header, or
//! naming the server by a foreign Host, is refused and deletes nothing.
//! Then the page in headless Chromium (`bookstore_system_tests::browser`):
//! its switchover button on order-1, confirmed, moves the order primary,
//! and the page shows order-1 at a higher epoch with the handover in its
//! timeline (a screenshot is saved under `target/`). Last, the delete-pod
//! action as the page posts it deletes catalog-1's pod in the API server
//! (the StatefulSet controller makes a new one).

mod support;

use std::path::Path;
use std::time::Duration;

use bookstore_system_tests::browser::{
    Chromedriver, PrimaryMove, click_and_confirm, save_screenshot, text_of, wait_for_page,
};
use bookstore_system_tests::console::ConsoleProcess;
use bookstore_system_tests::store::tier;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::Value;
use support::proxied::{ProxiedStore, serve_member_status, set_address};
use support::{Cluster, Mode, eventually};

const STORE: &str = "watch";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_cluster_store_and_acts_on_it_through_the_api_server() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let store = ProxiedStore::start(&cluster, "console", STORE).await;
    let pods = &store.pods;
    let catalog_epoch = tier(&store.settled, "catalog").epoch;
    let order_epoch = tier(&store.settled, "order").epoch;
    let _status = serve_member_status(&store.host, store.token.clone(), catalog_epoch).await;
    set_address(pods, &format!("{STORE}-catalog-0"), &store.host).await;

    let console = ConsoleProcess::start(
        Path::new(env!("CARGO_BIN_EXE_kubectl-bookstore")),
        &cluster.kubeconfig,
        STORE,
        &store.ns,
    )
    .await;

    // 1. Both tiers, their primaries and epochs, catalog-0 in its pod, the
    //    cluster's actions and the coordinator's history.
    let snapshot = console
        .snapshot_until("both tiers led by ordinal 0 at the store's epochs", |s| {
            let catalog = tier_of(s, "catalog")?;
            let order = tier_of(s, "order")?;
            let catalog0 = member_of(catalog, "catalog-0")?;
            (catalog["primary"] == "catalog-0"
                && catalog["epoch"] == catalog_epoch
                && order["primary"] == "order-0"
                && order["epoch"] == order_epoch
                && catalog0["phase"] == "leading"
                && catalog0["role"] == "primary")
                .then_some(())
        })
        .await;
    let catalog0 = member_of(tier_of(&snapshot, "catalog").expect("catalog"), "catalog-0")
        .expect("catalog-0's row");
    assert_eq!(
        catalog0["pod"],
        format!("{STORE}-catalog-0"),
        "{snapshot:#}"
    );
    let catalog1 = member_of(tier_of(&snapshot, "catalog").expect("catalog"), "catalog-1")
        .expect("catalog-1's row");
    assert_eq!(
        catalog1["pod"],
        format!("{STORE}-catalog-1"),
        "{snapshot:#}"
    );
    let actions: Vec<&str> = snapshot["actions"]
        .as_array()
        .expect("the actions")
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(actions, ["delete-pod", "switchover"], "{snapshot:#}");
    assert!(snapshot["load"].is_null(), "a cluster console runs no load");
    let timeline = snapshot["timeline"].as_array().expect("a timeline");
    assert!(
        timeline
            .iter()
            .any(|e| e["tier"] == "catalog" && e["to"] == "catalog-0"),
        "the coordinator's history shows catalog-0 taking the tier: {snapshot:#}"
    );
    assert!(
        snapshot["problems"].as_array().is_some_and(|p| p
            .iter()
            .all(|p| !p.as_str().unwrap_or("").contains("history"))),
        "{snapshot:#}"
    );

    // 2. The guards: no header, or a foreign Host, and nothing is deleted.
    let pod_name = format!("{STORE}-catalog-1");
    let uid = pod_uid(pods, &pod_name).await.expect("catalog-1's pod");
    let path = "/actions/delete-pod/catalog-1";
    let refused = console.post(path, false, None).await;
    assert_eq!(refused.0, 403, "without the header: {}", refused.1);
    let foreign = format!("evil.example:{}", console.port);
    let refused = console.post(path, true, Some(&foreign)).await;
    assert_eq!(refused.0, 403, "with a foreign Host: {}", refused.1);
    let unknown = console.post("/actions/kill/catalog-1", true, None).await;
    assert_eq!(
        unknown.0, 404,
        "a local action is not offered: {}",
        unknown.1
    );
    assert_eq!(pod_uid(pods, &pod_name).await, Some(uid.clone()));

    // 3. In Chromium, as a person does: the page shows both tiers; its
    //    "Switch over to" button on order-1 (confirmation accepted) moves the
    //    order primary, and the page shows order-1 primary at a higher epoch
    //    with the handover in its timeline; the snapshot says the same.
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-console");
    let driver = Chromedriver::start(&scratch).await;
    let browser = driver.open(&scratch, &console.url("/")).await;
    wait_for_page(&browser, "both tiers led by ordinal 0", |page| {
        let tiers = &page["tiers"];
        (tiers["catalog"]["primary"] == "catalog-0"
            && tiers["order"]["primary"] == "order-0"
            // order-1 does not answer here (a loopback pod address): its
            // row is there, with its buttons, but its role is unknown.
            && tiers["order"]["roles"]["order-1"].is_string())
        .then_some(())
    })
    .await;
    click_and_confirm(
        &browser,
        r#"button[data-action="switchover"][data-member="order-1"]"#,
    )
    .await;
    let moved = PrimaryMove {
        tier: "order",
        kind: "handover",
        from: "order-0",
        to: "order-1",
        before: order_epoch,
    }
    .wait(&browser)
    .await;
    let result = text_of(&browser, "result").await;
    assert!(
        result.contains("asked for a switchover of order to order-1"),
        "the page says what it did: {result}"
    );
    save_screenshot(
        &browser,
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-console-switchover.png"),
    )
    .await;
    browser.close().await.expect("the browser closes");
    println!("the page showed order-1 primary at epoch {moved} (was order-0 at {order_epoch})");
    console
        .snapshot_until("order-1 primary with the handover", |s| {
            let order = tier_of(s, "order")?;
            let handover = s["timeline"].as_array()?.iter().any(|e| {
                e["tier"] == "order"
                    && e["kind"] == "handover"
                    && e["from"] == "order-0"
                    && e["to"] == "order-1"
            });
            (order["primary"] == "order-1" && order["epoch"] == moved && handover).then_some(())
        })
        .await;

    // 4. Delete catalog-1's pod as the page does: gone from the API server
    //    (the StatefulSet controller makes a new pod by that name).
    let (status, body) = console.post(path, true, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["done"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("deleted the pod {pod_name}"))),
        "{body}"
    );
    eventually("catalog-1's pod is deleted", WAIT, || async {
        (pod_uid(pods, &pod_name).await.as_ref() != Some(&uid)).then_some(())
    })
    .await;

    drop(console);
    store.tear_down(STORE).await;
}

fn tier_of<'a>(snapshot: &'a Value, name: &str) -> Option<&'a Value> {
    snapshot["tiers"]
        .as_array()?
        .iter()
        .find(|t| t["tier"] == name)
}

fn member_of<'a>(tier: &'a Value, name: &str) -> Option<&'a Value> {
    tier["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

async fn pod_uid(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name)
        .await
        .expect("the API server answers")
        .and_then(|pod| pod.metadata.uid)
}
