//! The `kubectl-bookstore` plugin binary against a real API server
//! (`tests/cluster/cluster.sh up api-only`), run as a user runs it, with the
//! cluster's kubeconfig.
//!
//! `status` reads the members through the API server's pod proxy and the
//! coordinator through the operator Service's proxy. With no kubelet the
//! test plays both ends: the operator's coordinator listens on the node's
//! address behind a Service whose endpoint is a pod the test marks Ready at
//! that address, and catalog-0's pod gets that address too, where the test
//! serves its `/peer/status` (only with the store's peer token, as a member
//! does). The other members' pods keep a loopback address, which the API
//! server refuses to proxy to: they show as down, with the reason.
//!
//! `switchover` moves the catalog and then the order primary to ordinal 1
//! and prints how; one to a member that is down is refused and exits
//! non-zero. `hibernate`/`resume` and `fence`/`unfence` set and clear their
//! annotations; unknown stores, tiers and members are refused with what the
//! store has.

mod support;

use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_operator::crd::BookStore;
use bookstore_system_tests::store::{self, tier};
use bookstore_system_tests::table_row as row;
use kube::Api;
use support::proxied::{DIGEST, ProxiedStore, serve_member_status, set_address};
use support::{Cluster, Mode, set_ready};

const STORE: &str = "plug";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_reads_and_annotates_a_store_through_the_api_server() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let mut store = ProxiedStore::start(&cluster, "plugin", STORE).await;
    let (ns, host, token) = (store.ns.clone(), store.host.clone(), store.token.clone());
    let (pods, stores, settled) = (&store.pods, &store.stores, store.settled.clone());
    let plugin = Plugin {
        cluster: &cluster,
        ns: ns.clone(),
    };

    // 1. status: catalog-0 answers through the pod proxy (with the token);
    //    the coordinator through the operator Service's proxy.
    let catalog_epoch = tier(&settled, "catalog").epoch;
    let _status = serve_member_status(&host, token.clone(), catalog_epoch).await;
    set_address(pods, &format!("{STORE}-catalog-0"), &host).await;
    let out = plugin.ok(&["status", STORE]).await;
    println!("{out}");
    let catalog0 = row(&out, "catalog-0");
    assert_eq!(
        catalog0,
        [
            "catalog-0",
            &format!("{STORE}-catalog-0"),
            "primary",
            "leading",
            &catalog_epoch.to_string(),
            "7",
            "0",
            DIGEST,
            "yes"
        ],
        "{out}"
    );
    // In the API-only cluster the other pods' addresses are loopback: down,
    // but the coordinator still counts them in sync.
    let catalog1 = row(&out, "catalog-1");
    assert_eq!(
        catalog1[2..],
        ["-", "down", "-", "-", "-", "-", "yes"],
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "coordinator: catalog at epoch {catalog_epoch}, primary catalog-0, in sync [0, 1]"
        )),
        "{out}"
    );
    assert!(out.contains("coordinator: order at epoch"), "{out}");
    let json = plugin.ok(&["status", STORE, "--json"]).await;
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let down = lines
        .iter()
        .find(|l| l["pod"] == format!("{STORE}-order-1"))
        .expect("order-1's line");
    assert_eq!(down["healthy"], false);
    println!("order-1 through the pod proxy: {}", down["error"]);
    assert!(down["error"].as_str().is_some_and(|e| !e.is_empty()));

    // 2. switchover, each tier to ordinal 1: moved, printed, annotated.
    let out = plugin.ok(&["switchover", STORE, "catalog", "1"]).await;
    assert!(
        out.contains(&format!(
            "catalog primary moved from {STORE}-catalog-0 to {STORE}-catalog-1 at epoch"
        )),
        "{out}"
    );
    let out = plugin.ok(&["switchover", STORE, "order", "1"]).await;
    assert!(out.contains("order primary moved from"), "{out}");
    assert_eq!(
        annotation(stores, "mybookstore.dev/switchover")
            .await
            .as_deref(),
        Some("catalog=1,order=1")
    );
    let now = stores.get(STORE).await.expect("the store");
    let status = now.status.expect("a status");
    assert_eq!(tier(&status, "catalog").primary, Some(1));
    assert_eq!(tier(&status, "order").primary, Some(1));
    let out = plugin.ok(&["switchover", STORE, "catalog", "1"]).await;
    assert!(out.contains("already leads catalog"), "{out}");

    // A switchover to a member that is down is refused: a non-zero exit
    // with the operator's reason.
    store.members.crash(Role::Catalog, 0);
    set_ready(pods, &format!("{STORE}-catalog-0"), false).await;
    wait(stores, "catalog-0 left the in-sync set", |s| {
        tier(s, "catalog").in_sync_members == 1
    })
    .await;
    let refused = plugin.fails(&["switchover", STORE, "catalog", "0"]).await;
    assert!(
        refused.contains("switchover of catalog to catalog-0 refused"),
        "{refused}"
    );
    let status = stores.get(STORE).await.expect("the store").status;
    assert_eq!(status.map(|s| tier(&s, "catalog").primary), Some(Some(1)));

    // Unknown stores, tiers and members.
    for (args, says) in [
        (
            &["status", "nosuch"][..],
            format!("no BookStore {ns}/nosuch"),
        ),
        (
            &["switchover", STORE, "catalog", "5"],
            "its catalog tier has 2 members".to_owned(),
        ),
        (
            &["switchover", STORE, "cache", "0"],
            "\"cache\" is not a replicated tier".to_owned(),
        ),
        (
            &["fence", STORE, "frontend-0"],
            "\"frontend\" is not a replicated tier".to_owned(),
        ),
    ] {
        let error = plugin.fails(args).await;
        assert!(error.contains(&says), "{args:?}: {error}");
    }

    // 3. hibernate / resume.
    let out = plugin.ok(&["hibernate", STORE]).await;
    assert!(out.contains("mybookstore.dev/hibernation=on"), "{out}");
    assert_eq!(hibernation(stores).await.as_deref(), Some("on"));
    let out = plugin.ok(&["hibernate", STORE]).await;
    assert!(out.contains("hibernated already"), "{out}");
    plugin.ok(&["resume", STORE]).await;
    assert_eq!(hibernation(stores).await.as_deref(), Some("off"));

    // 4. fence / unfence, one member at a time, by member or pod name.
    let fenced = "mybookstore.dev/fenced-members";
    plugin.ok(&["fence", STORE, "catalog-1"]).await;
    plugin
        .ok(&["fence", STORE, &format!("{STORE}-order-0")])
        .await;
    let out = plugin.ok(&["fence", STORE, "order-0"]).await;
    assert!(out.contains("fenced already"), "{out}");
    assert_eq!(
        annotation(stores, fenced).await.as_deref(),
        Some("catalog-1,order-0")
    );
    plugin.ok(&["unfence", STORE, "catalog-1"]).await;
    assert_eq!(annotation(stores, fenced).await.as_deref(), Some("order-0"));
    plugin.ok(&["unfence", STORE, "order-0"]).await;
    assert_eq!(annotation(stores, fenced).await, None);

    store.tear_down(STORE).await;
}

/// Runs the built plugin binary as a user would, with the cluster's
/// kubeconfig.
struct Plugin<'a> {
    cluster: &'a Cluster,
    ns: String,
}

impl Plugin<'_> {
    async fn run(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-bookstore"))
            .args(args)
            .args(["-n", &self.ns])
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .output()
            .await
            .expect("kubectl-bookstore runs")
    }

    /// Its stdout; it must succeed.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl bookstore {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Its stderr; it must fail.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "kubectl bookstore {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

async fn annotation(stores: &Api<BookStore>, key: &str) -> Option<String> {
    let store = stores.get(STORE).await.expect("the store");
    store.metadata.annotations?.get(key).cloned()
}

async fn hibernation(stores: &Api<BookStore>) -> Option<String> {
    annotation(stores, "mybookstore.dev/hibernation").await
}

async fn wait(
    stores: &Api<BookStore>,
    what: &str,
    check: impl Fn(&bookstore_operator::crd::BookStoreStatus) -> bool,
) -> bookstore_operator::crd::BookStoreStatus {
    store::wait_status(stores, STORE, what, WAIT, check).await
}
