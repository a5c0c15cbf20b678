//! Watching a BookStore through the API server, as the operator's tests and
//! the end-to-end test do: its status, its conditions, its Events, its token.

use std::time::Duration;

use bookstore_operator::crd::{BookStore, BookStoreStatus, TierStatus};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};

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
