//! What the operator's tests against a real API server share: the CRD,
//! operator processes, the kubelet's part, and members played by the test.
//! The cluster (`tests/cluster/cluster.sh up api-only`) comes from
//! `bookstore-system-tests`.
//!
//! With no kubelet, no container runs: the StatefulSet and ReplicaSet
//! controllers create real pods that stay unscheduled, and the test plays the
//! kubelet by patching their Ready condition and the members by sending the
//! heartbeats their processes would send.

#![allow(dead_code)]

pub mod members;
pub mod proxied;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use bookstore_system_tests::cluster::{Cluster, Mode, repo_root};
pub use bookstore_system_tests::{eventually, free_port};

use bookstore_core::cluster::Role;
use bookstore_operator::crd::{BookStore, BookStoreStatus};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Installs the CRD from `crds/` (as a user would) and waits until it serves.
pub async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(repo_root().join("crds/bookstore.yaml"))
        .expect("crds/bookstore.yaml");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).expect("the CRD parses");
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply("bookstore-operator-tests").force();
    api.patch("bookstores.mybookstore.dev", &params, &Patch::Apply(&crd))
        .await
        .expect("the API server accepts the CRD");
    eventually(
        "the CRD is established",
        Duration::from_secs(30),
        || async {
            let crd = api.get("bookstores.mybookstore.dev").await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

/// A fresh namespace for one test.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:06x}", fastrand::u32(..0xff_ffff));
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("a namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("the namespace is created");
    name
}

/// Runs kubectl as the cluster's admin; its output, whether or not it failed.
pub fn kubectl(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(cluster.bin("kubectl"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Plays the kubelet: sets a pod's Ready condition.
pub async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) {
    try_set_ready(pods, name, ready)
        .await
        .unwrap_or_else(|error| panic!("cannot set pod {name} ready={ready}: {error}"));
}

/// Plays the kubelet: sets a pod running, Ready or not; fails if the pod
/// cannot be patched (it may have gone meanwhile).
pub async fn try_set_ready(pods: &Api<Pod>, name: &str, ready: bool) -> Result<(), kube::Error> {
    let status = if ready { "True" } else { "False" };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        ],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// One `bookstore-operator run` process; killed with SIGKILL on drop.
pub struct OperatorProcess {
    child: Child,
    pub metrics_url: String,
    pub coordinator_url: String,
    /// Its stderr (the logs).
    pub log: PathBuf,
}

impl OperatorProcess {
    /// As the cluster's admin, every namespace.
    pub fn start(cluster: &Cluster, namespace: &str, identity: &str) -> Self {
        Self::start_with(&cluster.kubeconfig, namespace, identity, &[])
    }

    /// With `kubeconfig`'s identity and more `args` to `run`.
    pub fn start_with(kubeconfig: &Path, namespace: &str, identity: &str, args: &[&str]) -> Self {
        Self::start_behind(kubeconfig, namespace, identity, args, None)
    }

    /// As the cluster's admin, every namespace, telling the pods it makes
    /// that the operator is at `service_url`: several processes started so
    /// are replicas behind one Service, so a new leader renders the same pod
    /// templates as the old one (each process's own URL would roll every
    /// StatefulSet when leadership moves).
    pub fn start_as_replica(
        cluster: &Cluster,
        namespace: &str,
        identity: &str,
        service_url: &str,
    ) -> Self {
        Self::start_behind(
            &cluster.kubeconfig,
            namespace,
            identity,
            &[],
            Some(service_url),
        )
    }

    /// As the cluster's admin, every namespace, its coordinator port bound
    /// on `host` (an address the API server may proxy to, unlike loopback)
    /// and the pods told that the operator is at `service_url`.
    pub fn start_on_host(
        cluster: &Cluster,
        namespace: &str,
        identity: &str,
        host: &str,
        service_url: &str,
    ) -> Self {
        Self::start_at(
            &cluster.kubeconfig,
            namespace,
            identity,
            &[],
            Some(service_url),
            host,
        )
    }

    fn start_behind(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        args: &[&str],
        service_url: Option<&str>,
    ) -> Self {
        Self::start_at(
            kubeconfig,
            namespace,
            identity,
            args,
            service_url,
            "127.0.0.1",
        )
    }

    fn start_at(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        args: &[&str],
        service_url: Option<&str>,
        host: &str,
    ) -> Self {
        let metrics_port = free_port();
        let coordinator_port = free_port();
        let coordinator_url = format!("http://{host}:{coordinator_port}");
        let operator_url = service_url.unwrap_or(&coordinator_url);
        let log_path = std::env::temp_dir().join(format!("bookstore-operator-{identity}.log"));
        let log = std::fs::File::create(&log_path).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_bookstore-operator"))
            .arg("run")
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--coordinator-addr", &format!("{host}:{coordinator_port}")])
            .args(["--operator-url", operator_url])
            .args(["--namespace", namespace, "--identity", identity])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the operator starts");
        Self {
            child,
            metrics_url: format!("http://127.0.0.1:{metrics_port}"),
            coordinator_url,
            log: log_path,
        }
    }

    /// Starts one as the cluster's admin and waits until it holds the Lease.
    pub async fn start_leading(cluster: &Cluster, namespace: &str, identity: &str) -> Self {
        Self::start(cluster, namespace, identity)
            .until_leading()
            .await
    }

    /// Waits (at most 60 s) until this process holds the Lease.
    pub async fn until_leading(self) -> Self {
        let operator = self;
        eventually(
            &format!("the operator logging to {} leads", operator.log.display()),
            Duration::from_secs(60),
            || async { operator.is_leading().await.then_some(()) },
        )
        .await;
        operator
    }

    /// `http://…/stores/{namespace}/{store}`: where members reach this
    /// operator's coordinator for one store.
    pub fn store_url(&self, namespace: &str, store: &str) -> String {
        format!("{}/stores/{namespace}/{store}", self.coordinator_url)
    }

    /// `/readyz` answers 200 only while this process leads.
    pub async fn is_leading(&self) -> bool {
        let url = format!("{}/readyz", self.metrics_url);
        matches!(reqwest::get(url).await, Ok(r) if r.status().is_success())
    }

    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.metrics_url);
        reqwest::get(url)
            .await
            .expect("the operator serves /metrics")
            .text()
            .await
            .expect("a metrics body")
    }

    /// Crashes it: SIGKILL, no chance to release the Lease.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a BookStore named `name` with `spec`, as `kubectl create` would.
pub async fn create_store(
    stores: &Api<BookStore>,
    name: &str,
    spec: serde_json::Value,
) -> BookStore {
    let store: BookStore = serde_json::from_value(json!({
        "apiVersion": "mybookstore.dev/v1alpha1",
        "kind": "BookStore",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a BookStore");
    stores
        .create(&PostParams::default(), &store)
        .await
        .expect("the API server accepts the BookStore")
}

/// One pod of a store's Deployment tier (frontend or cache).
pub async fn tier_pod(pods: &Api<Pod>, store: &str, tier: &str) -> Option<Pod> {
    let selector = format!("app.kubernetes.io/instance={store},app.kubernetes.io/component={tier}");
    pods.list(&ListParams::default().labels(&selector))
        .await
        .ok()?
        .items
        .into_iter()
        .next()
}

/// A replicated tier's primary and epoch, as the store's status shows them.
pub fn tier(status: &BookStoreStatus, role: Role) -> (Option<u32>, u64) {
    let tier = match role {
        Role::Catalog => status.catalog.as_ref(),
        _ => status.order.as_ref(),
    };
    tier.map_or((None, 0), |t| (t.primary, t.epoch))
}

/// Plays the kubelet for every pod of a store of two catalog and two order
/// members: each is Ready once it exists.
pub async fn every_pod_ready(pods: &Api<Pod>, store: &str) {
    let wait = Duration::from_secs(60);
    for tier in ["catalog", "order"] {
        for ordinal in [0, 1] {
            let name = format!("{store}-{tier}-{ordinal}");
            eventually(&format!("{name} exists"), wait, || async {
                pods.get_opt(&name).await.ok()?
            })
            .await;
            set_ready(pods, &name, true).await;
        }
    }
    for tier in ["frontend", "cache"] {
        let pod = eventually(&format!("a {tier} pod exists"), wait, || {
            tier_pod(pods, store, tier)
        })
        .await;
        set_ready(pods, &pod.metadata.name.unwrap_or_default(), true).await;
    }
}
