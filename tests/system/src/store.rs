//! Watching a BookStore through the API server, as the operator's tests and
//! the end-to-end test do: its status, its conditions, its Events, its token.

use std::time::Duration;

use bookstore_operator::crd::{BookStore, BookStoreStatus, TierStatus};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::Value;

use crate::eventually;

/// The status of a condition (`"True"`, `"False"`), if the status has it.
pub fn condition<'a>(status: &'a BookStoreStatus, type_: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// A replicated tier's status (`catalog` or `order`); empty if not reported.
pub fn tier(status: &BookStoreStatus, tier: &str) -> TierStatus {
    match tier {
        "catalog" => status.catalog.clone(),
        _ => status.order.clone(),
    }
    .unwrap_or_default()
}

/// Waits until the store's status passes `check`; returns that status.
pub async fn wait_status(
    stores: &Api<BookStore>,
    name: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&BookStoreStatus) -> bool,
) -> BookStoreStatus {
    eventually(what, limit, || async {
        let status = stores.get(name).await.ok()?.status?;
        check(&status).then_some(status)
    })
    .await
}

/// Waits for an Event about `regarding` with `reason` whose note starts
/// with `note_prefix`.
pub async fn wait_event(
    client: &Client,
    namespace: &str,
    regarding: &str,
    reason: &str,
    note_prefix: &str,
    limit: Duration,
) {
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    let what = format!("an Event {reason} about {regarding} ({note_prefix}...)");
    eventually(&what, limit, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
                    && e.note
                        .as_deref()
                        .unwrap_or_default()
                        .starts_with(note_prefix)
            })
            .map(|_| ())
    })
    .await;
}

/// The store's peer token, from the Secret the operator generated.
pub async fn peer_token(client: &Client, namespace: &str, store: &str, limit: Duration) -> String {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let name = format!("{store}-peer-token");
    eventually(
        &format!("the Secret {name} holds a token"),
        limit,
        || async {
            let secret = secrets.get_opt(&name).await.ok()??;
            let bytes = secret.data?.get("peer-token")?.0.clone();
            String::from_utf8(bytes).ok()
        },
    )
    .await
}

/// The store's frontend Service as this node reaches it (its ClusterIP).
pub async fn frontend_url(client: &Client, namespace: &str, store: &str) -> String {
    service_url(client, namespace, &format!("{store}-frontend"), 8000).await
}

/// `http://CLUSTER-IP:port` of a Service, as this node reaches it.
pub async fn service_url(client: &Client, namespace: &str, name: &str, port: u16) -> String {
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let service = services
        .get(name)
        .await
        .unwrap_or_else(|error| panic!("the Service {namespace}/{name}: {error}"));
    let ip = service
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_else(|| panic!("the Service {namespace}/{name} has no ClusterIP"));
    format!("http://{ip}:{port}")
}

/// Every member of each replicated tier reports the same applied index and
/// state digest (asked on its peer port, with the store's token).
pub async fn check_replicas_identical(
    client: &Client,
    namespace: &str,
    store: &str,
    limit: Duration,
) {
    let token = peer_token(client, namespace, store, limit).await;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let http = reqwest::Client::new();
    for tier in ["catalog", "order"] {
        let selector =
            format!("app.kubernetes.io/instance={store},app.kubernetes.io/component={tier}");
        eventually(
            &format!("the {tier} replicas are identical"),
            Duration::from_secs(60),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                let mut states = Vec::new();
                for pod in &list.items {
                    let ip = pod.status.as_ref()?.pod_ip.clone()?;
                    let status: Value = http
                        .get(format!("http://{ip}:9000/peer/status"))
                        .header("x-bookstore-peer-token", &token)
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    states.push((status["applied_index"].clone(), status["digest"].clone()));
                }
                let identical = states.len() >= 2 && states.iter().all(|s| *s == states[0]);
                if identical {
                    println!(
                        "{tier}: {} replicas at index {} with digest {}",
                        states.len(),
                        states[0].0,
                        states[0].1
                    );
                }
                identical.then_some(())
            },
        )
        .await;
    }
}
