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

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bookstore_core::cluster::Role;
use bookstore_operator::crd::BookStore;
use bookstore_replication::node::messages::MemberStatus;
use bookstore_replication::topology::Phase;
use bookstore_system_tests::store::{self, tier};
use bookstore_system_tests::table_row as row;
#[allow(deprecated)] // the API server's service proxy reads Endpoints
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::members::Members;
use support::{
    Cluster, Mode, OperatorProcess, create_store, every_pod_ready, install_crd, namespace,
    set_ready,
};

const STORE: &str = "plug";
const WAIT: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_millis(200);
/// The digest catalog-0's played status reports.
const DIGEST: &str = "0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_reads_and_annotates_a_store_through_the_api_server() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "plugin").await;
    let host = node_address(&cluster);
    let operator = OperatorProcess::start_on_host(
        &cluster,
        &ns,
        "plugin",
        &host,
        &format!("http://bookstore-operator.{ns}.svc:9100"),
    )
    .until_leading()
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    operator_behind_a_service(&client, &pods, &ns, &host, &operator).await;

    let stores = Api::<BookStore>::namespaced(client.clone(), &ns);
    create_store(
        &stores,
        STORE,
        json!({"heartbeat": {"intervalMs": 200, "failureThreshold": 3}}),
    )
    .await;
    let token = store::peer_token(&client, &ns, STORE, WAIT).await;
    let endpoint = Arc::new(RwLock::new(operator.store_url(&ns, STORE)));
    let mut members = Members::start(endpoint, token.clone(), HEARTBEAT);
    every_pod_ready(&pods, STORE).await;
    let settled = wait(&stores, "both tiers led by ordinal 0, all in sync", |s| {
        ["catalog", "order"]
            .iter()
            .all(|t| tier(s, t).primary == Some(0) && tier(s, t).in_sync_members == 2)
    })
    .await;
    let plugin = Plugin {
        cluster: &cluster,
        ns: ns.clone(),
    };

    // 1. status: catalog-0 answers through the pod proxy (with the token);
    //    the coordinator through the operator Service's proxy.
    let catalog_epoch = tier(&settled, "catalog").epoch;
    let _status = serve_member_status(&host, token.clone(), catalog_epoch).await;
    set_address(&pods, &format!("{STORE}-catalog-0"), &host).await;
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
        annotation(&stores, "mybookstore.dev/switchover")
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
    members.crash(Role::Catalog, 0);
    set_ready(&pods, &format!("{STORE}-catalog-0"), false).await;
    wait(&stores, "catalog-0 left the in-sync set", |s| {
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
    assert_eq!(hibernation(&stores).await.as_deref(), Some("on"));
    let out = plugin.ok(&["hibernate", STORE]).await;
    assert!(out.contains("hibernated already"), "{out}");
    plugin.ok(&["resume", STORE]).await;
    assert_eq!(hibernation(&stores).await.as_deref(), Some("off"));

    // 4. fence / unfence, one member at a time, by member or pod name.
    let fenced = "mybookstore.dev/fenced-members";
    plugin.ok(&["fence", STORE, "catalog-1"]).await;
    plugin
        .ok(&["fence", STORE, &format!("{STORE}-order-0")])
        .await;
    let out = plugin.ok(&["fence", STORE, "order-0"]).await;
    assert!(out.contains("fenced already"), "{out}");
    assert_eq!(
        annotation(&stores, fenced).await.as_deref(),
        Some("catalog-1,order-0")
    );
    plugin.ok(&["unfence", STORE, "catalog-1"]).await;
    assert_eq!(
        annotation(&stores, fenced).await.as_deref(),
        Some("order-0")
    );
    plugin.ok(&["unfence", STORE, "order-0"]).await;
    assert_eq!(annotation(&stores, fenced).await, None);

    drop(members);
    stores
        .delete(STORE, &DeleteParams::foreground())
        .await
        .expect("the store is deleted");
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
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

/// The address of the node the API server advertises (from the
/// kubeconfig's server URL): not loopback, so the API server may proxy to it.
fn node_address(cluster: &Cluster) -> String {
    let config = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).expect("a kubeconfig");
    let server = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .expect("a server URL");
    let authority = server
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    host.trim_matches(['[', ']']).to_owned()
}

/// Puts the operator's coordinator behind the Service `bookstore-operator`
/// as the chart does. The API server proxies only to an endpoint that is a
/// pod's address, so a stand-in pod, Ready at the node's address, is the
/// Service's endpoint; the Endpoints are written here (the Service has no
/// selector), since no endpoints controller counts an unscheduled pod.
async fn operator_behind_a_service(
    client: &kube::Client,
    pods: &Api<Pod>,
    ns: &str,
    host: &str,
    operator: &OperatorProcess,
) {
    let port: u16 = operator
        .coordinator_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the coordinator's port");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bookstore-operator-0"},
        "spec": {"containers": [{"name": "operator", "image": "localhost/bookstore-operator:dev",
                                 "ports": [{"name": "coordinator", "containerPort": port}]}]},
    }))
    .expect("a pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the stand-in pod is created");
    set_address(pods, "bookstore-operator-0", host).await;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "bookstore-operator"},
        "spec": {"ports": [{"name": "coordinator", "port": 9100, "targetPort": port}]},
    }))
    .expect("a Service");
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("the Service is created");
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "bookstore-operator"},
        "subsets": [{
            "addresses": [{"ip": host, "targetRef":
                {"kind": "Pod", "name": "bookstore-operator-0", "namespace": ns}}],
            "ports": [{"name": "coordinator", "port": port}],
        }],
    }))
    .expect("Endpoints");
    Api::<Endpoints>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &endpoints)
        .await
        .expect("the Endpoints are created");
}

/// Plays the kubelet: the pod runs, Ready, at `address`.
async fn set_address(pods: &Api<Pod>, name: &str, address: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": address,
        "podIPs": [{"ip": address}],
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot set {name}'s address: {e}"));
}

/// Serves catalog-0's `GET /peer/status` on the node's address at the peer
/// port, as the member does: only with the store's peer token.
async fn serve_member_status(host: &str, token: String, epoch: u64) -> tokio::task::JoinHandle<()> {
    let status = MemberStatus {
        role: Role::Catalog,
        ordinal: 0,
        pid: 1,
        address: format!("{host}:8000"),
        peer_address: format!("{host}:9000"),
        healthy: true,
        primary: true,
        phase: Phase::Leading,
        epoch,
        applied_index: 7,
        digest: DIGEST.to_owned(),
        incarnation: 1,
    };
    let app = Router::new().route(
        "/peer/status",
        get(move |headers: HeaderMap| {
            let status = status.clone();
            let token = token.clone();
            async move {
                let offered = headers.get("x-bookstore-peer-token");
                if offered.is_none_or(|t| t.as_bytes() != token.as_bytes()) {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                axum::Json(status).into_response()
            }
        }),
    );
    let address = format!("{host}:{}", bookstore_operator::names::PEER_PORT);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .unwrap_or_else(|e| panic!("cannot serve catalog-0's status at {address}: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
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
