//! The namespace-scoped install on a real API server (`tests/cluster/cluster.sh
//! up api-only`): the chart rendered with `watchNamespaces`, its
//! ServiceAccount and Roles applied, and `bookstore-operator run
//! --watch-namespaces` started with that ServiceAccount's own token (no
//! ClusterRole): the stores of the watched namespaces are run, a store outside
//! them is left alone, and no watch fails for want of a permission.

mod support;

use std::time::Duration;

use bookstore_operator::crd::BookStore;
use bookstore_system_tests::store;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use serde_json::json;
use support::{
    Cluster, Mode, OperatorProcess, create_store, eventually, install_crd, kubectl, namespace,
    repo_root,
};

const WAIT: Duration = Duration::from_secs(60);
/// The chart's release in the test: its objects are `<release>-operator`.
const RELEASE: &str = "scoped";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_scoped_operator_leaves_other_namespaces_alone() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    install_crd(&client).await;
    let operator_ns = namespace(&client, "scoped-operator").await;
    let watched = [
        namespace(&client, "scoped-a").await,
        namespace(&client, "scoped-b").await,
    ];
    let outside = namespace(&client, "scoped-outside").await;

    // The chart's RBAC for these namespaces, as `helm install` would make it.
    let chart = repo_root().join("charts/bookstore");
    let rbac = cluster.helm(&[
        "template",
        RELEASE,
        chart.to_str().expect("a UTF-8 path"),
        "-n",
        &operator_ns,
        "--set",
        &format!("watchNamespaces={{{}}}", watched.join(",")),
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]);
    assert!(
        !rbac.contains("kind: ClusterRole"),
        "a namespace-scoped install grants nothing cluster-wide:\n{rbac}"
    );
    cluster.kubectl_stdin(&["apply", "-f", "-"], &rbac);
    let kubeconfig = service_account_kubeconfig(&cluster, &operator_ns);

    // A store outside the list exists before the operator starts: its first
    // list would have brought it in, were it watched.
    create_store(
        &Api::namespaced(client.clone(), &outside),
        "elsewhere",
        json!({}),
    )
    .await;
    let operator = OperatorProcess::start_with(
        &kubeconfig,
        &operator_ns,
        "scoped",
        &["--watch-namespaces", &watched.join(",")],
    );
    eventually("the scoped operator leads", WAIT, || async {
        operator.is_leading().await.then_some(())
    })
    .await;
    for ns in &watched {
        create_store(&Api::namespaced(client.clone(), ns), "shop", json!({})).await;
    }

    // The watched stores are run with the Roles alone: objects applied,
    // status written.
    for ns in &watched {
        let stores = Api::<BookStore>::namespaced(client.clone(), ns);
        store::wait_status(
            &stores,
            "shop",
            "a watched store gets a status",
            WAIT,
            |s| s.observed_generation.is_some() && s.phase.is_some(),
        )
        .await;
        let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), ns);
        eventually(&format!("{ns}/shop-catalog exists"), WAIT, || async {
            stateful_sets.get_opt("shop-catalog").await.ok()?
        })
        .await;
    }

    // The one outside: no status, and nothing made for it.
    let elsewhere = Api::<BookStore>::namespaced(client.clone(), &outside)
        .get("elsewhere")
        .await
        .expect("the outside store");
    assert_eq!(elsewhere.status, None, "the outside store was reconciled");
    let made = [
        Api::<StatefulSet>::namespaced(client.clone(), &outside)
            .get_opt("elsewhere-catalog")
            .await
            .expect("a lookup")
            .is_some(),
        Api::<ConfigMap>::namespaced(client.clone(), &outside)
            .get_opt("elsewhere-config")
            .await
            .expect("a lookup")
            .is_some(),
        Api::<Secret>::namespaced(client.clone(), &outside)
            .get_opt("elsewhere-peer-token")
            .await
            .expect("a lookup")
            .is_some(),
    ];
    assert_eq!(made, [false; 3], "objects were made for the outside store");

    // Every watch the operator opened was allowed (a cluster-wide one would
    // be forbidden to this ServiceAccount, and logged).
    let log = std::fs::read_to_string(&operator.log).expect("the operator's log");
    assert!(
        !log.contains("watch failed") && !log.contains("forbidden"),
        "the scoped operator hit a permission it lacks:\n{log}"
    );
    drop(operator);
    for ns in watched.iter().chain([&outside, &operator_ns]) {
        let _ = kubectl(&cluster, &["delete", "namespace", ns, "--wait=false"]);
    }
}

/// A kubeconfig that authenticates as the chart's ServiceAccount, with a
/// token from the TokenRequest API (as its pod would mount).
fn service_account_kubeconfig(cluster: &Cluster, operator_ns: &str) -> std::path::PathBuf {
    let account = format!("{RELEASE}-operator");
    let token = cluster.kubectl(&[
        "create",
        "token",
        &account,
        "-n",
        operator_ns,
        "--duration=1h",
    ]);
    let view = |path: &str| {
        cluster.kubectl(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
        ])
    };
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": view("server"),
            "certificate-authority-data": view("certificate-authority-data"),
        }}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account}}],
        "current-context": "test",
    });
    let path = std::env::temp_dir().join(format!("bookstore-{RELEASE}-operator.kubeconfig"));
    std::fs::write(&path, config.to_string()).expect("the kubeconfig is written");
    path
}
