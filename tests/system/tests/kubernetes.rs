//! The end-to-end test on a real single-node Kubernetes (kubelet, containerd,
//! kube-proxy, CoreDNS; `tests/cluster/cluster.sh up`), done the way a user
//! does it:
//! - import the images, `helm install` the chart, `kubectl apply` a BookStore
//!   (the sample, its volumes from the cluster's local-path provisioner as on
//!   kind), wait for `Ready`;
//! - run `bookstore client` (the original's tests 1-4) against the frontend
//!   Service;
//! - under a bounded concurrent buy load through the frontend Service, delete
//!   the catalog primary's pod, then the order primary's: the next ordinal
//!   takes over under a higher epoch, an Event records it, the StatefulSet
//!   brings the pod back, it resyncs and takes the primary back; afterwards
//!   nothing is oversold, every order is readable, replicas are identical;
//! - `kubectl bookstore console` (the plugin binary, on loopback) in headless
//!   Chromium: the page shows both tiers led by ordinal 0; its "Delete pod"
//!   button on catalog-0, confirmed, deletes the pod, and the page shows
//!   catalog-1 primary at a higher epoch with the failover in its timeline
//!   (screenshot `target/e2e/cluster-console-failover.png`); the primary
//!   then returns to ordinal 0;
//! - Prometheus (the cluster's build of the pinned Go module), deployed in the
//!   cluster with the README's `kubernetes_sd_configs` scrape configuration,
//!   discovers and scrapes the store's and the operator's pods, every query of
//!   the Grafana dashboard returns data, and it evaluates every rule of the
//!   chart's PrometheusRule without an error;
//! - deleting the BookStore removes every object and its volumes (the
//!   provisioner deletes them), `helm uninstall` the operator.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bookstore_operator::crd::{BookStore, BookStoreStatus};
use bookstore_system_tests::browser::{
    Chromedriver, PrimaryMove, click_and_confirm, save_screenshot, text_of, wait_for_page,
};
use bookstore_system_tests::cluster::{Cluster, Mode, run};
use bookstore_system_tests::console::ConsoleProcess;
use bookstore_system_tests::store;
use bookstore_system_tests::store::{condition, tier as tier_status};
use bookstore_system_tests::{
    BuyLoad, LoadPlan, check_every_order_is_readable, check_stock_matches_successes, eventually,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

mod prometheus;
use prometheus::Prometheus;

const OPERATOR_NAMESPACE: &str = "bookstore-system";
const NAMESPACE: &str = "bookstore-e2e";
const WAIT: Duration = Duration::from_secs(240);

fn plan() -> LoadPlan {
    LoadPlan {
        first_item: 101,
        items: 20,
        stock: 2000,
        scarce_items: 5,
        scarce_stock: 20,
        buyers: 8,
        max_buys: 30000,
        min_buys: 1500,
        limit: Duration::from_secs(420),
        buy_deadline: Duration::from_secs(60),
        pause: Duration::from_millis(20),
        request_prefix: "e2e".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookstore_on_kubernetes_end_to_end() {
    let cluster = Cluster::start(Mode::Full);
    cluster.import_images();
    let client = cluster.client().await;
    let work = cluster.root.join("target/e2e");
    std::fs::create_dir_all(&work).expect("a work directory");

    // Install as a user does: the chart, then a BookStore.
    remove_earlier_runs(&cluster);
    cluster.install_chart(OPERATOR_NAMESPACE, &[]).await;
    cluster.kubectl(&["create", "namespace", NAMESPACE]);
    let sample = sample_store();
    let name = sample.name_any();
    let inventory = format!(
        "{}{}",
        std::fs::read_to_string(cluster.root.join("config/inventory.txt"))
            .expect("the default inventory"),
        plan().inventory()
    );
    let inventory_file = work.join("inventory.txt");
    std::fs::write(&inventory_file, &inventory).expect("the inventory file");
    let store_file = work.join("bookstore.yaml");
    std::fs::write(&store_file, store_manifest(&sample, &inventory))
        .expect("the BookStore manifest");
    cluster.kubectl(&["apply", "-n", NAMESPACE, "-f", path(&store_file)]);
    let stores = Api::<BookStore>::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    wait_status(&stores, &name, "the store is Ready", |s| {
        condition(s, "Ready") == Some("True")
    })
    .await;
    println!("store Ready {:?} after kubectl apply", started.elapsed());
    println!("{}", cluster.kubectl(&["get", "bs", "-n", NAMESPACE]));

    // The original's test cases, through the frontend Service.
    let frontend = store::frontend_url(&client, NAMESPACE, &name).await;
    // Ready pods reach the Service's rules on the node a moment later
    // (kube-proxy syncs the endpoints): until then connections are refused.
    let http = reqwest::Client::new();
    eventually("the frontend Service answers", WAIT, || async {
        let answer = http.get(format!("{frontend}/healthz")).send().await.ok()?;
        answer.status().is_success().then_some(())
    })
    .await;
    run(Command::new(cluster.root.join("target/release/bookstore"))
        .args(["client", "--frontend", &frontend, "--inventory"])
        .arg(&inventory_file));

    // Prometheus scrapes from now on, so the dashboard shows the crashes.
    let prometheus = Prometheus::start(&cluster, &client).await;
    prometheus
        .check_targets(NAMESPACE, OPERATOR_NAMESPACE)
        .await;

    // Crashes under load.
    let plan = plan();
    let load = BuyLoad::start(&frontend, &plan);
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let mut timings = Vec::new();
    for tier in ["catalog", "order"] {
        timings.push(crash_primary(&cluster, &stores, &pods, &client, &name, tier, &load).await);
    }
    let ledger = load.finish().await;
    println!("load: {}", ledger.summary());
    for timing in &timings {
        println!("{timing}");
    }
    assert_eq!(ledger.unresolved, 0, "every buy got a definite answer");
    wait_status(&stores, &name, "the store is Ready again", |s| {
        condition(s, "Ready") == Some("True")
    })
    .await;
    check_stock_matches_successes(&frontend, &plan, &ledger).await;
    check_every_order_is_readable(&frontend, &ledger).await;
    store::check_replicas_identical(&client, NAMESPACE, &name, WAIT).await;

    // The console for this store, in Chromium: its own button deletes the
    // catalog primary's pod, and the page shows the failover.
    println!(
        "{}",
        console_deletes_the_catalog_primary(&cluster, &stores, &name, &work).await
    );
    store::check_replicas_identical(&client, NAMESPACE, &name, WAIT).await;

    // Metrics: every query of the dashboard answers from the real Prometheus
    // that scraped the store and the operator through all of the above.
    prometheus.check_dashboard(&cluster.root).await;
    prometheus.check_rules(&cluster.root).await;
    prometheus::remove(&cluster);

    // Uninstall: the store's objects, then the operator's, go.
    cluster.kubectl(&[
        "delete",
        "-n",
        NAMESPACE,
        "-f",
        path(&store_file),
        "--wait=true",
    ]);
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), NAMESPACE);
    let services = Api::<Service>::namespaced(client.clone(), NAMESPACE);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), NAMESPACE);
    eventually("the store's objects are gone", WAIT, || async {
        let left = stateful_sets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .len()
            + services
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len()
            + pods.list(&ListParams::default()).await.ok()?.items.len()
            + claims.list(&ListParams::default()).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
    // The claims went with the store, and the provisioner deletes their volumes.
    let volumes = Api::<PersistentVolume>::all(client.clone());
    eventually("the store's volumes are deleted", WAIT, || async {
        let left = volumes
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|v| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| c.namespace.as_deref())
                    == Some(NAMESPACE)
            })
            .count();
        (left == 0).then_some(())
    })
    .await;
    cluster.uninstall_chart(OPERATOR_NAMESPACE);
    let deployments = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NAMESPACE);
    eventually("the operator is gone", WAIT, || async {
        deployments
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    remove_earlier_runs(&cluster);
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A cluster that was already up may hold what an earlier run left.
fn remove_earlier_runs(cluster: &Cluster) {
    cluster.delete_namespace(NAMESPACE);
    cluster.uninstall_chart(OPERATOR_NAMESPACE);
    prometheus::remove(cluster);
}

/// The sample a user applies (`k8s/bookstore.yaml`).
fn sample_store() -> BookStore {
    let text = std::fs::read_to_string(
        bookstore_system_tests::cluster::repo_root().join("k8s/bookstore.yaml"),
    )
    .expect("k8s/bookstore.yaml");
    serde_yaml::from_str(&text).expect("the sample is a BookStore")
}

/// The sample with this test's inventory; its storage as it is (the
/// cluster's default StorageClass).
fn store_manifest(sample: &BookStore, inventory: &str) -> String {
    let mut store = sample.clone();
    // So that deleting the store shows its volume claims go too.
    store.spec.storage.delete_with_store = true;
    store.spec.inventory = Some(bookstore_operator::crd::Inventory {
        lines: Some(inventory.to_owned()),
        config_map: None,
    });
    serde_yaml::to_string(&store).expect("a manifest")
}

/// Deletes a tier's primary pod under load and follows the store through
/// failover, return, resync and handover. Returns what it measured.
async fn crash_primary(
    cluster: &Cluster,
    stores: &Api<BookStore>,
    pods: &Api<Pod>,
    client: &Client,
    store: &str,
    tier: &str,
    load: &BuyLoad,
) -> String {
    let before = wait_status(
        stores,
        store,
        &format!("{tier} has primary 0, all in sync"),
        |s| {
            let t = tier_status(s, tier);
            t.primary == Some(0) && t.in_sync_members == t.desired_members
        },
    )
    .await;
    let epoch = tier_status(&before, tier).epoch;
    let victim = format!("{store}-{tier}-0");
    let old_uid = pods.get(&victim).await.expect("the primary's pod").uid();
    let deleted_at = Instant::now();
    cluster.kubectl(&["delete", "pod", "-n", NAMESPACE, &victim, "--wait=false"]);

    let failed_over = wait_status(
        stores,
        store,
        &format!("{tier} fails over to ordinal 1"),
        |s| {
            let t = tier_status(s, tier);
            t.primary == Some(1) && t.epoch > epoch
        },
    )
    .await;
    let status_after = deleted_at.elapsed();
    let buys_after = load.first_success_after(deleted_at, WAIT).await;
    store::wait_event(client, NAMESPACE, store, "Failover", tier, WAIT).await;

    let failover_epoch = tier_status(&failed_over, tier).epoch;
    eventually(&format!("{victim} returns"), WAIT, || async {
        pods.get_opt(&victim)
            .await
            .ok()?
            .filter(|p| p.uid() != old_uid)
            .map(|_| ())
    })
    .await;
    wait_status(
        stores,
        store,
        &format!("{tier} primary returns to ordinal 0"),
        |s| {
            let t = tier_status(s, tier);
            t.primary == Some(0)
                && t.epoch > failover_epoch
                && t.in_sync_members == t.desired_members
        },
    )
    .await;
    let handed_back = deleted_at.elapsed();
    let longest_gap = load.longest_gap_since(deleted_at);
    store::wait_event(client, NAMESPACE, store, "Handover", tier, WAIT).await;
    format!(
        "{tier}: deleted {victim}; status showed ordinal 1 primary after {} ms; \
         first successful buy sent after the delete answered after {} ms; \
         longest time without a successful buy {} ms; primary back on ordinal 0 after {} ms",
        status_after.as_millis(),
        buys_after.as_millis(),
        longest_gap.as_millis(),
        handed_back.as_millis()
    )
}

/// Deletes the catalog primary's pod with the console's own button, in
/// Chromium, and waits until the page shows the failover and the store has
/// its primary back on ordinal 0. Says what the page showed.
async fn console_deletes_the_catalog_primary(
    cluster: &Cluster,
    stores: &Api<BookStore>,
    store: &str,
    work: &Path,
) -> String {
    let before = wait_status(stores, store, "catalog has primary 0, all in sync", |s| {
        let t = tier_status(s, "catalog");
        t.primary == Some(0) && t.in_sync_members == t.desired_members
    })
    .await;
    let epoch = tier_status(&before, "catalog").epoch;
    let console = ConsoleProcess::start(
        &cluster.release_binary("kubectl-bookstore"),
        &cluster.kubeconfig,
        store,
        NAMESPACE,
    )
    .await;
    let scratch = work.join("console");
    let driver = Chromedriver::start(&scratch).await;
    let browser = driver.open(&scratch, &console.url("/")).await;
    wait_for_page(&browser, "both tiers led by ordinal 0", |page| {
        let tiers = &page["tiers"];
        (tiers["catalog"]["primary"] == "catalog-0" && tiers["order"]["primary"] == "order-0")
            .then_some(())
    })
    .await;
    let deleted_at = Instant::now();
    click_and_confirm(
        &browser,
        r#"button[data-action="delete-pod"][data-member="catalog-0"]"#,
    )
    .await;
    let failover_epoch = PrimaryMove {
        tier: "catalog",
        kind: "failover",
        from: "catalog-0",
        to: "catalog-1",
        before: epoch,
    }
    .wait(&browser)
    .await;
    let shown_after = deleted_at.elapsed();
    let result = text_of(&browser, "result").await;
    assert!(
        result.contains(&format!("deleted the pod {store}-catalog-0")),
        "the page says what it did: {result}"
    );
    save_screenshot(&browser, &work.join("cluster-console-failover.png")).await;
    browser.close().await.expect("the browser closes");
    wait_status(stores, store, "catalog primary returns to ordinal 0", |s| {
        let t = tier_status(s, "catalog");
        t.primary == Some(0) && t.epoch > failover_epoch && t.in_sync_members == t.desired_members
    })
    .await;
    format!(
        "console: its Delete pod button on catalog-0 (epoch {epoch}); the page showed catalog-1 \
         primary at epoch {failover_epoch} with the failover in its timeline after {} ms; \
         primary back on ordinal 0 after {} ms",
        shown_after.as_millis(),
        deleted_at.elapsed().as_millis()
    )
}

async fn wait_status(
    stores: &Api<BookStore>,
    name: &str,
    what: &str,
    check: impl Fn(&BookStoreStatus) -> bool,
) -> BookStoreStatus {
    store::wait_status(stores, name, what, WAIT, check).await
}
