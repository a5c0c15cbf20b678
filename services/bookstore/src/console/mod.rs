//! `bookstore console`: the live page (`bookstore_console`) for a local
//! store, one that `bookstore up` runs, served on loopback.
//!
//! This is the local backend: every tick it asks each member, the
//! coordinator and the frontend what they are doing, with the peer token
//! from the data dir; its buttons kill, pause, resume, shut down or recover
//! a member (what `bookstore fault` does) and run a bounded buy load.

pub mod load;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bookstore_console::snapshot::{self, Readings, Snapshot};
use bookstore_console::{Action, ActionFailed, Backend, DEFAULT_LISTEN, Scope, rates::Rates};
use bookstore_core::cluster::{ClusterConfig, Role};
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_replication::coordinator_server::Transition;
use clap::Args;

use crate::fault::{self, FaultAction};
use crate::settings::StoreArgs;
use crate::status;
use load::{LoadPlan, LoadRun};

/// How long one tick waits for a member: under a tick, so a paused member
/// shows as down instead of stalling the page.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// The name of the store-wide load action (and of its button's id).
const LOAD: &str = "load";

/// Where a signal can go: every process `bookstore up` runs.
const EVERY_PROCESS: &[Scope] = &[Scope::Member, Scope::Service];

/// What the local page offers: signals to any process, `bookstore fault`'s
/// shutdown and recovery to the replicated members, and a bounded load.
const ACTIONS: &[Action] = &[
    action(
        "kill",
        "Kill",
        "SIGKILL: a crash; bookstore up restarts it",
        EVERY_PROCESS,
    ),
    action(
        "pause",
        "Pause",
        "SIGSTOP: the process freezes until resumed",
        EVERY_PROCESS,
    ),
    action(
        "resume",
        "Resume",
        "SIGCONT: a paused process carries on",
        EVERY_PROCESS,
    ),
    action(
        "shutdown",
        "Shut down",
        "it plays dead until recovered",
        &[Scope::Member],
    ),
    action(
        "recover",
        "Recover",
        "a shut-down member comes back and resyncs",
        &[Scope::Member],
    ),
    action(
        LOAD,
        "Run a bounded buy load",
        "a bounded load of buys through the frontend",
        &[Scope::Store],
    ),
];

const fn action(
    name: &'static str,
    label: &'static str,
    explanation: &'static str,
    scopes: &'static [Scope],
) -> Action {
    Action {
        name,
        label,
        explanation,
        scopes,
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where the console's page is served. Keep it on loopback: its buttons
    /// kill and pause the store's processes.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let cluster = args.store.cluster()?;
    args.store
        .load_token()
        .context("the console acts on a local store; start it with `bookstore up` first")?;
    let backend = LocalBackend::new(args.store, &cluster)?;
    Ok(bookstore_console::run(args.listen, backend, "").await?)
}

/// A store `bookstore up` runs, read and broken from this machine.
struct LocalBackend {
    store: StoreArgs,
    frontend: Option<String>,
    history_url: Option<String>,
    http: reqwest::Client,
    peer: PeerClient,
    rates: Rates,
    load: LoadRun,
}

impl LocalBackend {
    fn new(store: StoreArgs, cluster: &ClusterConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?;
        let peer =
            PeerClient::with_timeout(store.load_token()?, Metrics::new("console"), PROBE_TIMEOUT);
        Ok(Self {
            frontend: frontend_url(cluster),
            history_url: cluster
                .first(Role::Coordinator)
                .ok()
                .map(|c| format!("{}/coordinator/history", c.peer_url())),
            store,
            http,
            peer,
            rates: Rates::default(),
            load: LoadRun::default(),
        })
    }

    async fn history(&self) -> Result<Vec<Transition>, String> {
        let url = self
            .history_url
            .as_deref()
            .ok_or("no coordinator in the cluster file")?;
        self.peer
            .get::<_, Vec<Transition>>("coordinator", "history", url, &())
            .await
            .map_err(|e| e.to_string())
    }

    /// The frontend's metrics, or nothing when it does not answer.
    async fn scrape(&self) -> Vec<String> {
        let Some(frontend) = &self.frontend else {
            return Vec::new();
        };
        let text = async {
            let response = self.http.get(format!("{frontend}/metrics")).send().await;
            response.ok()?.text().await.ok()
        };
        text.await.into_iter().collect()
    }

    fn start_load(&self) -> Result<String, ActionFailed> {
        let frontend = self
            .frontend
            .clone()
            .ok_or_else(|| ActionFailed("the cluster file has no frontend".to_owned()))?;
        let plan = LoadPlan::default();
        self.load.start(frontend, plan).map_err(ActionFailed)?;
        Ok(plan.describe())
    }
}

impl Backend for LocalBackend {
    fn actions(&self) -> &'static [Action] {
        ACTIONS
    }

    async fn snapshot(&self) -> Snapshot {
        let (lines, history, scrapes) = futures::join!(
            status::collect_within(&self.store, PROBE_TIMEOUT),
            self.history(),
            self.scrape(),
        );
        let readings = Readings {
            lines: lines.map_err(|e| format!("{e:#}")),
            history,
            rates: self.rates.record(&scrapes),
        };
        let mut snapshot = snapshot::shape(bookstore_console::now_ms(), readings, ACTIONS);
        snapshot.load = Some(self.load.progress());
        snapshot
    }

    async fn act(&self, action: &str, target: Option<&str>) -> Result<String, ActionFailed> {
        match (parse_action(action), target) {
            (Some(fault), Some(member)) => fault::apply(&self.store, fault, member)
                .await
                .map_err(ActionFailed::from_error),
            _ if action == LOAD => self.start_load(),
            _ => Err(ActionFailed(format!("no action {action}"))),
        }
    }
}

/// The frontend's public URL (`http://host:port`).
fn frontend_url(cluster: &ClusterConfig) -> Option<String> {
    cluster.first(Role::Frontend).ok()?.public_url()
}

fn parse_action(name: &str) -> Option<FaultAction> {
    match name {
        "kill" => Some(FaultAction::Kill),
        "pause" => Some(FaultAction::Pause),
        "resume" => Some(FaultAction::Resume),
        "shutdown" => Some(FaultAction::Shutdown),
        "recover" => Some(FaultAction::Recover),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_button_but_the_load_names_a_fault() {
        for action in ACTIONS.iter().filter(|a| a.name != LOAD) {
            assert!(parse_action(action.name).is_some(), "{}", action.name);
        }
        assert!(parse_action("rm").is_none());
    }
}
