//! Members of a replicated tier, played by the test: each heartbeats to the
//! operator's coordinator like a `bookstore catalog`/`order` process does,
//! follows the topologies it gets back, and, as primary, admits live
//! learners to the in-sync set as a primary does after their resync.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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

/// What a member's database holds, as its heartbeats report it: the epoch
/// of the primary whose writes it holds and how many it has applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Data {
    pub epoch: u64,
    pub applied: u64,
}

/// One `(epoch, primary)` a member was told, in the order it was told.
pub type Told = (u64, Option<u32>);

/// One running member; dropping it (or [`SimulatedMember::crash`]) stops it.
pub struct SimulatedMember {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
    told: Arc<Mutex<Vec<Told>>>,
}

impl SimulatedMember {
    /// Starts a member process: a fresh incarnation, joining, with an empty
    /// database.
    pub fn start(endpoint: CoordinatorEndpoint, tier: Role, ordinal: u32) -> Self {
        Self::start_holding(endpoint, tier, ordinal, Data::default())
    }

    /// Starts a member process whose database holds `data`.
    pub fn start_holding(
        endpoint: CoordinatorEndpoint,
        tier: Role,
        ordinal: u32,
        data: Data,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let told = Arc::new(Mutex::new(Vec::new()));
        let state = MemberState {
            tier,
            ordinal,
            incarnation: fastrand::u64(1..),
            phase: Phase::Joining,
            epoch: 0,
            data,
        };
        let task = tokio::spawn(run(endpoint, state, stop.clone(), told.clone()));
        Self { stop, task, told }
    }

    /// Every change of epoch or primary this member was told, in order.
    pub fn told(&self) -> Vec<Told> {
        self.told.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
    data: Data,
}

async fn run(
    endpoint: CoordinatorEndpoint,
    mut state: MemberState,
    stop: Arc<AtomicBool>,
    told: Arc<Mutex<Vec<Told>>>,
) {
    let client = reqwest::Client::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(topology) = heartbeat(&client, &endpoint, &state).await {
            remember(&told, &topology);
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
        applied: state.data.applied,
        data_epoch: state.data.epoch,
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

/// Records `topology` if it changes the epoch or the primary.
fn remember(told: &Mutex<Vec<Told>>, topology: &Topology) {
    let mut told = told.lock().unwrap_or_else(|p| p.into_inner());
    let now = (topology.epoch, topology.primary);
    if told.last() != Some(&now) {
        told.push(now);
    }
}

/// Takes the role the topology gives this member. In sync, its database
/// holds the writes of this epoch's primary.
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
    if in_sync {
        state.data.epoch = topology.epoch;
    }
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
        added: Default::default(),
    };
    let _ = client
        .post(endpoint.url("in-sync"))
        .header("x-bookstore-peer-token", &endpoint.token)
        .json(&request)
        .send()
        .await;
}

/// The members of both replicated tiers (two each), played by the test.
pub struct Members {
    endpoint: Arc<RwLock<String>>,
    token: String,
    interval: Duration,
    running: BTreeMap<(Role, u32), SimulatedMember>,
}

impl Members {
    /// Starts ordinals 0 and 1 of both tiers, heartbeating every `interval`.
    pub fn start(endpoint: Arc<RwLock<String>>, token: String, interval: Duration) -> Self {
        let mut members = Self {
            endpoint,
            token,
            interval,
            running: BTreeMap::new(),
        };
        for role in [Role::Catalog, Role::Order] {
            for ordinal in [0, 1] {
                members.start_member(role, ordinal);
            }
        }
        members
    }

    /// Starts (or restarts, as a new incarnation) a member with an empty
    /// database.
    pub fn start_member(&mut self, role: Role, ordinal: u32) {
        self.start_holding(role, ordinal, Data::default());
    }

    /// Starts (or restarts, as a new incarnation) a member whose database
    /// holds `data`.
    pub fn start_holding(&mut self, role: Role, ordinal: u32, data: Data) {
        let endpoint = CoordinatorEndpoint {
            base: self.endpoint.clone(),
            token: self.token.clone(),
            interval: self.interval,
        };
        let member = SimulatedMember::start_holding(endpoint, role, ordinal, data);
        if let Some(old) = self.running.insert((role, ordinal), member) {
            old.crash();
        }
    }

    pub fn crash(&mut self, role: Role, ordinal: u32) {
        if let Some(member) = self.running.remove(&(role, ordinal)) {
            member.crash();
        }
    }

    /// What a running member was told; empty for one not running.
    pub fn told(&self, role: Role, ordinal: u32) -> Vec<Told> {
        self.running
            .get(&(role, ordinal))
            .map(SimulatedMember::told)
            .unwrap_or_default()
    }
}
