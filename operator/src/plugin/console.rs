//! `kubectl bookstore console NAME`: the live page (`bookstore_console`) for
//! a store in a cluster, served on loopback on the user's machine.
//!
//! This is the cluster backend. Every tick it reads, all through the API
//! server with the user's kubeconfig: each member's `/peer/status` through
//! the pod proxy and the coordinator's view through the operator Service's
//! proxy (what `kubectl bookstore status` reads, by the same code), the
//! coordinator's history of topology changes the same way, and every
//! frontend pod's `/metrics` through the pod proxy. The peer token is read
//! from the store's Secret by this process; it never reaches the browser.
//!
//! Its buttons delete a member's pod (the StatefulSet makes it again, the
//! coordinator fails over if it led) and switch a tier over to a member
//! (the switchover annotation, as `kubectl bookstore switchover` sets it).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bookstore_console::snapshot::{self, Readings, Snapshot};
use bookstore_console::{Action, ActionFailed, Backend, Scope, rates::Rates};
use bookstore_replication::coordinator_server::Transition;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

use super::api::StoreApi;
use super::edit;
use super::status::{self, coordinator_service, frontend_pods};
use crate::names::PUBLIC_PORT;

/// How long one tick waits for a pod or the coordinator through the API
/// server: under a tick, so a member that does not answer shows as down
/// instead of stalling the page.
const PROBE_TIMEOUT: Duration = Duration::from_millis(450);

const DELETE_POD: &str = "delete-pod";
const SWITCHOVER: &str = "switchover";

/// What the cluster's page offers.
const ACTIONS: &[Action] = &[
    Action {
        name: DELETE_POD,
        label: "Delete pod",
        explanation: "the StatefulSet makes the pod again; a primary's tier fails over",
        scopes: &[Scope::Member],
    },
    Action {
        name: SWITCHOVER,
        label: "Switch over to",
        explanation: "a clean handover of the tier to this member, if it is in sync; \
                      held there while the switchover annotation asks",
        scopes: &[Scope::Member],
    },
];

/// Serves the console for `api`'s store on `listen` until Ctrl-C.
pub async fn run(api: StoreApi, listen: SocketAddr) -> anyhow::Result<()> {
    api.get().await?;
    api.token()
        .await
        .context("the console reads the store with its peer token")?;
    let about = format!(" for {}", api.describe());
    let backend = ClusterBackend {
        api,
        rates: Rates::default(),
    };
    Ok(bookstore_console::run(listen, backend, &about).await?)
}

/// A store in a cluster, read and acted on through the API server.
struct ClusterBackend {
    api: StoreApi,
    rates: Rates,
}

impl ClusterBackend {
    /// One tick's reading; the store's pods and token are read first, since
    /// every other read needs them.
    async fn read(&self) -> Readings {
        let basis = futures::join!(self.api.token(), self.api.pods());
        let (token, pods) = match basis {
            (Ok(token), Ok(pods)) => (token, pods),
            (Err(error), _) | (_, Err(error)) => {
                let error = format!("{error:#}");
                return Readings {
                    lines: Err(error.clone()),
                    history: Err(error),
                    rates: self.rates.record::<String>(&[]),
                };
            }
        };
        // All three at once: each is bounded by PROBE_TIMEOUT, so a tick
        // takes one bound at most, not two.
        let (lines, history, scrapes) = futures::join!(
            status::lines(&self.api, pods.clone(), &token, PROBE_TIMEOUT),
            self.history(&pods, &token),
            self.scrape_frontends(&pods, &token)
        );
        Readings {
            lines: Ok(lines),
            history,
            rates: self.rates.record(&scrapes),
        }
    }

    /// The coordinator's topology changes, through the operator Service.
    async fn history(&self, pods: &[Pod], token: &str) -> Result<Vec<Transition>, String> {
        let service = coordinator_service(pods)?;
        let path = format!("{}/coordinator/history", service.path);
        self.api
            .service_get(&service, &path, token, PROBE_TIMEOUT)
            .await
            .and_then(|text| Ok(serde_json::from_str(&text)?))
            .map_err(|error| format!("{error:#}"))
    }

    /// Every frontend pod's metrics that answered this tick.
    async fn scrape_frontends(&self, pods: &[Pod], token: &str) -> Vec<String> {
        let scrapes = frontend_pods(pods).into_iter().map(|pod| async move {
            self.api
                .pod_get(&pod, PUBLIC_PORT, "/metrics", token, PROBE_TIMEOUT)
                .await
                .ok()
        });
        futures::future::join_all(scrapes)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn delete_pod(&self, member: &str) -> anyhow::Result<String> {
        let store = self.api.get().await?;
        let member = edit::parse_member(&store, member)?;
        let pod = self.api.names.pod(member.tier, member.ordinal);
        Api::<Pod>::namespaced(self.api.client.clone(), &self.api.names.namespace)
            .delete(&pod, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting the pod {pod}"))?;
        Ok(format!(
            "deleted the pod {pod} ({member}); its StatefulSet makes it again, and if it led \
             {} the coordinator fails over",
            member.tier
        ))
    }

    async fn switchover(&self, member: &str) -> anyhow::Result<String> {
        let store = self.api.get().await?;
        let member = edit::parse_member(&store, member)?;
        let request = super::request_switchover(&self.api, member.tier, member.ordinal).await?;
        Ok(if request.already_there() {
            format!(
                "{member} ({}) already leads {} at epoch {}; {}",
                request.pod, request.tier, request.epoch_before, request.hold
            )
        } else {
            format!(
                "asked for a switchover of {} to {member} ({}); the timeline shows the \
                 handover, {}",
                request.tier, request.pod, request.hold
            )
        })
    }
}

impl Backend for ClusterBackend {
    fn actions(&self) -> &'static [Action] {
        ACTIONS
    }

    async fn snapshot(&self) -> Snapshot {
        let readings = self.read().await;
        snapshot::shape(bookstore_console::now_ms(), readings, ACTIONS)
    }

    async fn act(&self, action: &str, target: Option<&str>) -> Result<String, ActionFailed> {
        let member = target.ok_or_else(|| ActionFailed(format!("{action} needs a member")))?;
        let done = match action {
            DELETE_POD => self.delete_pod(member).await,
            SWITCHOVER => self.switchover(member).await,
            _ => return Err(ActionFailed(format!("no action {action}"))),
        };
        done.map_err(ActionFailed::from_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn every_action_acts_on_a_member() {
        assert!(ACTIONS.iter().all(|a| a.scopes == [Scope::Member]));
    }
}
