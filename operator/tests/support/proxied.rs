//! With no kubelet, the API server's pod and service proxies reach only
//! what the test serves itself: the operator's coordinator behind a
//! Service, and a member's `/peer/status`, on the node's address (the API
//! server refuses to proxy to loopback), at pods whose status the test sets
//! to that address. The plugin's tests read the store through these
//! proxies, as `kubectl bookstore` does in a real cluster.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bookstore_core::cluster::Role;
use bookstore_operator::crd::{BookStore, BookStoreStatus};
use bookstore_replication::node::messages::MemberStatus;
use bookstore_replication::topology::Phase;
use bookstore_system_tests::store as system_store;
#[allow(deprecated)] // the API server's service proxy reads Endpoints
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::members::Members;
use super::{Cluster, OperatorProcess, create_store, every_pod_ready, install_crd, namespace};

/// The digest a played member's status reports.
pub const DIGEST: &str = "0123456789abcdef";
/// How long the store may take to get its token and settle.
const STORE_WAIT: Duration = Duration::from_secs(60);
/// The played members' heartbeat (the store is created with it).
const HEARTBEAT: Duration = Duration::from_millis(200);

/// The address of the node the API server advertises (from the
/// kubeconfig's server URL): not loopback, so the API server may proxy to it.
pub fn node_address(cluster: &Cluster) -> String {
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
pub async fn operator_behind_a_service(
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
pub async fn set_address(pods: &Api<Pod>, name: &str, address: &str) {
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
pub async fn serve_member_status(
    host: &str,
    token: String,
    epoch: u64,
) -> tokio::task::JoinHandle<()> {
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

/// A store in the API-only cluster as the plugin sees it: the operator
/// leading behind its Service, the store created with a fast heartbeat, its
/// members played by heartbeats, every pod Ready, and both tiers led by
/// ordinal 0 with every member in sync.
pub struct ProxiedStore {
    pub client: kube::Client,
    pub ns: String,
    /// The node's address, where the test serves what the proxies reach.
    pub host: String,
    pub operator: OperatorProcess,
    pub pods: Api<Pod>,
    pub stores: Api<BookStore>,
    pub token: String,
    pub members: Members,
    /// The store's status once both tiers settled.
    pub settled: BookStoreStatus,
}

impl ProxiedStore {
    /// `store` in a new namespace named after `prefix`.
    pub async fn start(cluster: &Cluster, prefix: &str, store: &str) -> Self {
        let client = cluster.client().await;
        install_crd(&client).await;
        let ns = namespace(&client, prefix).await;
        let host = node_address(cluster);
        let operator = OperatorProcess::start_on_host(
            cluster,
            &ns,
            prefix,
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
            store,
            json!({"heartbeat": {"intervalMs": 200, "failureThreshold": 3}}),
        )
        .await;
        let token = system_store::peer_token(&client, &ns, store, STORE_WAIT).await;
        let endpoint = Arc::new(RwLock::new(operator.store_url(&ns, store)));
        let members = Members::start(endpoint, token.clone(), HEARTBEAT);
        every_pod_ready(&pods, store).await;
        let what = "both tiers led by ordinal 0, all in sync";
        let settled = system_store::wait_status(&stores, store, what, STORE_WAIT, |s| {
            ["catalog", "order"].iter().all(|t| {
                let tier = system_store::tier(s, t);
                tier.primary == Some(0) && tier.in_sync_members == 2
            })
        })
        .await;
        Self {
            client,
            ns,
            host,
            operator,
            pods,
            stores,
            token,
            members,
            settled,
        }
    }

    /// Stops the played members and deletes `store` and the namespace.
    pub async fn tear_down(self, store: &str) {
        drop(self.members);
        self.stores
            .delete(store, &DeleteParams::foreground())
            .await
            .expect("the store is deleted");
        let _ = Api::<Namespace>::all(self.client)
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }
}
