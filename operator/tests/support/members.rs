//! Members of a replicated tier, played by the test: each heartbeats to the
//! operator's coordinator like a `bookstore catalog`/`order` process does,
//! follows the topologies it gets back, and, as primary, admits live
//! learners to the in-sync set as a primary does after their resync.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_replication::topology::{AlterInSync, Heartbeat, Phase, Topology};
use tokio::task::JoinHandle;

/// Where members reach their coordinator, and with which token.
#[derive(Clone)]
pub struct CoordinatorEndpoint {
    /// `http://operator/stores/{namespace}/{name}`; the test switches it
    /// to the new leader as the operator's Service would.
    pub base: Arc<RwLock<String>>,
    pub token: String,
    pub interval: Duration,
}

/// One running member; dropping it (or [`SimulatedMember::crash`]) stops it.
pub struct SimulatedMember {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl SimulatedMember {
    /// Starts a member process: a fresh incarnation, joining.
    pub fn start(endpoint: CoordinatorEndpoint, tier: Role, ordinal: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let state = MemberState {
            tier,
            ordinal,
            incarnation: fastrand::u64(1..),
            phase: Phase::Joining,
            epoch: 0,
        };
        let task = tokio::spawn(run(endpoint, state, stop.clone()));
        Self { stop, task }
    }

    /// Stops heartbeating at once, as a killed process does.
    pub fn crash(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

impl Drop for SimulatedMember {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

struct MemberState {
    tier: Role,
    ordinal: u32,
    incarnation: u64,
    phase: Phase,
    epoch: u64,
}

async fn run(endpoint: CoordinatorEndpoint, mut state: MemberState, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(topology) = heartbeat(&client, &endpoint, &state).await {
            follow(&mut state, &topology);
            if state.phase == Phase::Leading {
                admit_learners(&client, &endpoint, &state, &topology).await;
            }
        }
        tokio::time::sleep(endpoint.interval).await;
    }
}

impl CoordinatorEndpoint {
    fn url(&self, path: &str) -> String {
        let base = self.base.read().unwrap_or_else(|p| p.into_inner());
        format!("{base}/coordinator/{path}")
    }
}

async fn heartbeat(
    client: &reqwest::Client,
    endpoint: &CoordinatorEndpoint,
    state: &MemberState,
) -> Option<Topology> {
    let heartbeat = Heartbeat {
        tier: state.tier,
        ordinal: state.ordinal,
        incarnation: state.incarnation,
        // Port 9 refuses at once: the coordinator's pushes fail fast and the
        // member learns from heartbeat answers, which it would anyway.
        peer: "127.0.0.1:9".to_owned(),
        public: "127.0.0.1:9".to_owned(),
        phase: state.phase,
        epoch: state.epoch,
        applied: 0,
        data_epoch: state.epoch,
    };
    let response = client
        .post(endpoint.url("heartbeat"))
        .header("x-bookstore-peer-token", &endpoint.token)
        .json(&heartbeat)
        .send()
        .await
        .ok()?;
    response.error_for_status().ok()?.json().await.ok()
}

/// Takes the role the topology gives this member.
fn follow(state: &mut MemberState, topology: &Topology) {
    if topology.epoch < state.epoch {
        return;
    }
    state.epoch = topology.epoch;
    let me = topology
        .member(state.ordinal)
        .filter(|m| m.incarnation == state.incarnation);
    let in_sync = me.is_some_and(|m| m.in_sync);
    state.phase = match (topology.primary == Some(state.ordinal), in_sync) {
        (true, true) => Phase::Leading,
        (false, true) => Phase::Following,
        _ => Phase::CatchingUp,
    };
}

/// As primary: every live member outside the in-sync set has "resynced".
async fn admit_learners(
    client: &reqwest::Client,
    endpoint: &CoordinatorEndpoint,
    state: &MemberState,
    topology: &Topology,
) {
    let in_sync = topology.in_sync_ordinals();
    let Some(learner) = topology.members.iter().find(|m| m.live && !m.in_sync) else {
        return;
    };
    let request = AlterInSync {
        tier: state.tier,
        epoch: topology.epoch,
        primary: state.ordinal,
        in_sync: in_sync.into_iter().chain([learner.ordinal]).collect(),
    };
    let _ = client
        .post(endpoint.url("in-sync"))
        .header("x-bookstore-peer-token", &endpoint.token)
        .json(&request)
        .send()
        .await;
}
