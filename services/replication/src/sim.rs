//! A deterministic simulation of one replicated tier: the real coordinator
//! ([`Coordinator`]) and the real member cores ([`MemberCore`]) of three
//! members, with clients buying (request ids, retries) and reading, on
//! simulated time, network and disk, all driven by one seed.
//!
//! Why our own event loop rather than turmoil or madsim: both cores are
//! already pure (events in, effects out), so the simulation needs no async
//! runtime, no simulated sockets and no HTTP: one priority queue of events
//! (ordered by simulated time, then by a sequence number) replays exactly
//! from the seed, runs thousands of steps in milliseconds in a debug build,
//! and lets a test crash a process at any point between two decisions
//! (for example between the coordinator's save and its publish), which a
//! simulated tokio runtime can only do at an await point.
//!
//! What is modelled around the cores, as the I/O shell does it
//! (`node::writer`, `node::membership`, `coordinator_server`): one writer per
//! member that runs one operation at a time (group commit of queued buys;
//! a batch waits for every target or `REPLICATE_TIMEOUT`; an in-sync change
//! waits for the coordinator), a replica that holds a batch that overtook
//! its predecessor for up to `GAP_WAIT`, a resync poll every 100 ms with
//! backoff, heartbeats every second, coordinator ticks four times a second,
//! and a coordinator that saves its durable state before it pushes or
//! answers any topology. The state machine is a catalog of three books with
//! the outcome of every buy kept by request id (exactly once).
//!
//! Faults, each at random times during the first part of a run: crash and
//! restart of a member (its disk survives, its in-flight messages are lost)
//! or of the coordinator (also right between a save and the publish it
//! precedes), pauses longer than the failure-detection time, one-way and
//! two-way partitions, message loss, delay, duplication and reordering, a
//! slow disk, and a failing disk sync (the member exits, as the real one
//! does). Then the faults stop, and the tier must converge and take writes
//! within [`CONVERGENCE_BOUND_MS`].
//!
//! The invariants ([`Violation`]) are checked on every step or at the end
//! of the run; [`run`] returns the first violation with the trace of the
//! events that led to it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bookstore_core::cluster::{Ordinal, Role};

use crate::coordinator::durable::DurableState;
use crate::coordinator::{AlterError, Coordinator, CoordinatorConfig, Published};
use crate::node::state::{
    AlterAnswer, BatchHeader, BatchPlan, Effect, JoinRefused, Leadership, MemberCore, PrimaryId,
    Refusal, ResyncStep, SendOutcome, Settlement, SnapshotGrant, Target,
};
use crate::node::{GAP_WAIT, MAX_BATCH, REPLICATE_TIMEOUT};
use crate::topology::{AlterInSync, Epoch, Heartbeat, LogIndex, Phase, Topology};

const TIER: Role = Role::Catalog;
const MEMBERS: usize = 3;
const CLIENTS: usize = 4;
/// The books clients buy, with their initial stock (small, so books sell out).
const ITEMS: [(u32, i64); 3] = [(1, 12), (2, 8), (3, 30)];
/// The book the final probe buys; clients never touch it.
const PROBE_ITEM: u32 = 99;
const HEARTBEAT_MS: u64 = 1000;
const TICK_MS: u64 = 250;
const RESYNC_POLL_MS: u64 = 100;
const RESYNC_BACKOFF_MS: u64 = 300;
const MAX_RESYNC_BACKOFF_MS: u64 = 5000;
/// A peer call's time limit (`bookstore_core::peer::CALL_TIMEOUT`).
const CALL_TIMEOUT_MS: u64 = 5000;
/// A client's patience for one attempt, and its pause before a retry.
const CLIENT_TIMEOUT_MS: u64 = 2000;
const CLIENT_RETRY_MS: u64 = 100;
/// How long faults are injected, then how long the tier has to converge and
/// take a write again once they stop.
pub const FAULT_PHASE_MS: u64 = 40_000;
pub const CONVERGENCE_BOUND_MS: u64 = 30_000;
/// Trace lines kept for a failure report (the last ones before it).
const TRACE_KEPT: usize = 400;

/// What one run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub seed: u64,
    /// Keep every trace line (for a replay), not only the last ones.
    pub full_trace: bool,
    /// Break the store on purpose: answer linearizable reads at once from
    /// whichever member serves reads, without the primary's confirming
    /// batch (as before reads were confirmed). The checker must then find
    /// stale reads; the test list shows it does.
    pub skip_read_confirmation: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub steps: u64,
    pub faults: u64,
    pub acknowledged_buys: u64,
    /// Linearizable reads answered: each is checked.
    pub linearizable_reads: u64,
    /// Plain reads answered (any in-sync member; not checked).
    pub plain_reads: u64,
    pub failovers: u64,
    pub sim_ms: u64,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("two members acknowledged writes in epoch {epoch}: {first:?} and {second:?}")]
    TwoPrimariesInOneEpoch {
        epoch: Epoch,
        first: PrimaryId,
        second: PrimaryId,
    },
    #[error("member {ordinal} became primary without acknowledged write {request}")]
    AcknowledgedWriteLost { ordinal: Ordinal, request: u64 },
    #[error("request {request} was answered {first:?} and later {second:?}")]
    TwoAnswers {
        request: u64,
        first: Outcome,
        second: Outcome,
    },
    #[error("member {ordinal}: stock of item {item} is {stock}")]
    NegativeStock {
        ordinal: Ordinal,
        item: u32,
        stock: i64,
    },
    #[error("member {ordinal}: {taken} books taken but {orders} orders")]
    StockOrdersMismatch {
        ordinal: Ordinal,
        taken: i64,
        orders: usize,
    },
    #[error("item {item}: {initial} - {last} in stock is not the {acknowledged} acknowledged buys")]
    StockNotAcknowledgedBuys {
        item: u32,
        initial: i64,
        last: i64,
        acknowledged: i64,
    },
    #[error("item {item}: not linearizable: {why}")]
    NotLinearizable { item: u32, why: String },
    #[error("no convergence {bound_ms} ms after the faults stopped: {why}")]
    NoConvergence { bound_ms: u64, why: String },
}

/// The first violation of a run, with the events before it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub violation: Violation,
    pub trace: Vec<String>,
}

/// How a buy ended, as the state machine recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Bought,
    SoldOut,
}

/// Runs one seed; `Err` holds the first violated invariant.
pub fn run(config: SimConfig) -> Result<SimReport, Box<Failure>> {
    let mut sim = Sim::new(config);
    match sim.run_to_end() {
        Ok(()) => Ok(sim.report),
        Err(violation) => Err(Box::new(Failure {
            seed: config.seed,
            violation,
            trace: sim.trace.into_iter().collect(),
        })),
    }
}

// ---- The model around the cores. ----

/// A member's database: survives crashes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Db {
    applied: LogIndex,
    data_epoch: Epoch,
    stock: BTreeMap<u32, i64>,
    outcomes: BTreeMap<u64, Outcome>,
    orders: BTreeMap<u64, u32>,
}

impl Db {
    fn seeded() -> Self {
        let mut stock: BTreeMap<u32, i64> = ITEMS.into_iter().collect();
        stock.insert(PROBE_ITEM, 1000);
        Self {
            applied: 0,
            data_epoch: 0,
            stock,
            outcomes: BTreeMap::new(),
            orders: BTreeMap::new(),
        }
    }

    /// "Take one if stock stays >= 0", exactly once per request id.
    fn apply(&mut self, buy: &Buy) -> Outcome {
        if let Some(&outcome) = self.outcomes.get(&buy.request) {
            return outcome;
        }
        let stock = self.stock.entry(buy.item).or_insert(0);
        let outcome = if *stock > 0 {
            *stock -= 1;
            self.orders.insert(buy.request, buy.item);
            Outcome::Bought
        } else {
            Outcome::SoldOut
        };
        self.outcomes.insert(buy.request, outcome);
        outcome
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Buy {
    request: u64,
    item: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Addr {
    Coordinator,
    Member(Ordinal),
    Client(usize),
}

#[derive(Debug, Clone)]
enum Msg {
    Heartbeat(Heartbeat),
    HeartbeatAnswer(Topology),
    Push(Topology),
    Alter {
        call: u64,
        request: AlterInSync,
    },
    AlterAnswer {
        call: u64,
        answer: AlterAnswer,
    },
    Replicate {
        call: u64,
        header: BatchHeader,
        entries: Vec<(LogIndex, Buy)>,
    },
    ReplicateAnswer {
        call: u64,
        outcome: SendOutcome,
    },
    SnapshotRequest {
        call: u64,
        ordinal: Ordinal,
        incarnation: u64,
    },
    SnapshotAnswer {
        call: u64,
        result: Result<(SnapshotGrant, Db), Refusal>,
    },
    JoinRequest {
        call: u64,
        ordinal: Ordinal,
        incarnation: u64,
        snapshot_index: LogIndex,
    },
    JoinAnswer {
        call: u64,
        /// `None`: admitted; otherwise why not.
        refused: Option<JoinRefused>,
    },
    MarkDown {
        ordinal: Ordinal,
        /// When `up` saw the process exit: a message that arrives late must
        /// not mark down the process that replaced it.
        observed_at: Instant,
    },
    BuyRequest {
        attempt: u64,
        buy: Buy,
    },
    BuyAnswer {
        attempt: u64,
        result: Result<Outcome, Option<Ordinal>>,
    },
    ReadRequest {
        attempt: u64,
        item: u32,
        linearizable: bool,
    },
    /// The stock read, or a refusal with the primary the member knows of.
    ReadAnswer {
        attempt: u64,
        result: Result<i64, Option<Ordinal>>,
    },
}

#[derive(Debug, Clone)]
enum Timer {
    Heartbeat,
    ResyncPoll,
    WriterDeadline(u64),
    DiskDone(u64),
    HeldDeadline,
    ResyncDeadline(u64),
}

#[derive(Debug, Clone)]
enum Event {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    MemberTimer {
        ordinal: Ordinal,
        boot: u64,
        timer: Timer,
    },
    CoordinatorTick {
        boot: u64,
    },
    ClientWake {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    ClientRetry {
        client: usize,
    },
    Fault,
    Heal {
        what: Heal,
    },
    RestartMember {
        ordinal: Ordinal,
    },
    RestartCoordinator,
    Probe,
}

#[derive(Debug, Clone)]
enum Heal {
    Partition(Addr, Addr),
    Disk(Ordinal),
}

/// What a member's writer is doing (it does one thing at a time).
#[derive(Debug)]
enum Busy {
    Idle,
    /// A primary's batch, sent to `targets`, waiting for every answer.
    Lead {
        id: u64,
        leadership: Leadership,
        round: Round,
        outcomes: Vec<Outcome>,
        epoch: Epoch,
        waiting: BTreeMap<u64, Target>,
        results: Vec<(Target, SendOutcome)>,
    },
    /// Waiting for the coordinator's answer to an in-sync change.
    Alter {
        id: u64,
        call: u64,
        purpose: AlterPurpose,
    },
    /// A replica applying a batch: its disk sync ends at a timer.
    Disk {
        id: u64,
        from: Addr,
        call: u64,
        ack: SendOutcome,
    },
}

#[derive(Debug)]
enum AlterPurpose {
    /// The batch waits for the change before it is answered.
    Batch {
        round: Round,
        outcomes: Vec<Outcome>,
        epoch: Epoch,
    },
    /// A learner asked to be admitted.
    Admit {
        learner: Ordinal,
        from: Addr,
        call: u64,
    },
}

/// What one of a primary's batches carries: buys, each with the client and
/// attempt to answer, and the linearizable reads that wait for it to settle.
#[derive(Debug, Default)]
struct Round {
    buys: Vec<(Buy, Addr, u64)>,
    reads: Vec<(u32, Addr, u64)>,
}

impl Round {
    /// Adds a queued buy or read to the round; false for any other op.
    fn take(&mut self, op: &Op) -> bool {
        match *op {
            Op::Submit {
                buy,
                client,
                attempt,
            } => self.buys.push((buy, client, attempt)),
            Op::Read {
                item,
                client,
                attempt,
            } => self.reads.push((item, client, attempt)),
            _ => return false,
        }
        true
    }
}

/// Work queued for a member's writer.
#[derive(Debug)]
enum Op {
    Submit {
        buy: Buy,
        client: Addr,
        attempt: u64,
    },
    /// A linearizable read: answered after the next batch settles.
    Read {
        item: u32,
        client: Addr,
        attempt: u64,
    },
    Replicate {
        from: Addr,
        call: u64,
        header: BatchHeader,
        entries: Vec<(LogIndex, Buy)>,
    },
    Snapshot {
        from: Addr,
        call: u64,
        ordinal: Ordinal,
        incarnation: u64,
    },
    Join {
        from: Addr,
        call: u64,
        ordinal: Ordinal,
        incarnation: u64,
        snapshot_index: LogIndex,
    },
    Restore {
        grant: SnapshotGrant,
        db: Db,
    },
}

#[derive(Debug)]
struct Member {
    ordinal: Ordinal,
    /// Survives crashes.
    db: Db,
    running: Option<Process>,
    paused_until: u64,
    disk_slow_ms: u64,
    disk_fails: bool,
}

/// A member's process: lost on a crash.
#[derive(Debug)]
struct Process {
    boot: u64,
    core: MemberCore,
    published: BTreeMap<u32, i64>,
    busy: Busy,
    queue: VecDeque<Op>,
    /// Batches that overtook their predecessor, with the time they give up.
    held: Vec<(u64, Op)>,
    resync_call: Option<u64>,
    resync_backoff: u64,
    resync_not_before: u64,
}

#[derive(Debug)]
struct CoordinatorProcess {
    boot: u64,
    coordinator: Coordinator,
}

#[derive(Debug, Clone, Copy)]
enum ClientOp {
    Buy(Buy),
    /// A read of an item's stock; only linearizable ones enter the history
    /// the checker reads (a plain read may be served by a lagging replica).
    Read {
        item: u32,
        linearizable: bool,
    },
}

#[derive(Debug)]
struct Client {
    /// The operation under way: first invoked at, attempt, target.
    current: Option<(ClientOp, u64, u64, Ordinal)>,
    ops_left: u32,
}

/// One completed operation of the history the checker reads.
#[derive(Debug, Clone, Copy)]
struct Completed {
    item: u32,
    invoked: u64,
    answered: u64,
    what: Completion,
}

#[derive(Debug, Clone, Copy)]
enum Completion {
    Bought,
    SoldOut,
    Read(i64),
}

struct Sim {
    rng: fastrand::Rng,
    now: u64,
    base: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    members: Vec<Member>,
    coordinator: Option<CoordinatorProcess>,
    saved: DurableState,
    crash_after_next_save: bool,
    clients: Vec<Client>,
    next_id: u64,
    boots: u64,
    // Network faults.
    loss: f64,
    duplication: f64,
    max_delay: u64,
    blocked: BTreeSet<(Addr, Addr)>,
    faults_on: bool,
    // What the checker knows.
    acknowledged: BTreeMap<u64, Outcome>,
    acked_by_epoch: BTreeMap<Epoch, PrimaryId>,
    history: Vec<Completed>,
    probe: Option<(u64, bool)>,
    report: SimReport,
    trace: VecDeque<String>,
    full_trace: bool,
    skip_read_confirmation: bool,
}

impl Sim {
    fn new(config: SimConfig) -> Self {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let loss = [0.0, 0.01, 0.05, 0.15][rng.usize(..4)];
        let duplication = [0.0, 0.01, 0.05][rng.usize(..3)];
        let max_delay = [2, 20, 200, 1500][rng.usize(..4)];
        let members = (0..MEMBERS as Ordinal)
            .map(|ordinal| Member {
                ordinal,
                db: Db::seeded(),
                running: None,
                paused_until: 0,
                disk_slow_ms: 0,
                disk_fails: false,
            })
            .collect();
        let clients = (0..CLIENTS)
            .map(|_| Client {
                current: None,
                ops_left: 60,
            })
            .collect();
        let mut sim = Self {
            rng,
            now: 0,
            base: Instant::now(),
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            members,
            coordinator: None,
            saved: DurableState::new(),
            crash_after_next_save: false,
            clients,
            next_id: 1,
            boots: 0,
            loss,
            duplication,
            max_delay,
            blocked: BTreeSet::new(),
            faults_on: true,
            acknowledged: BTreeMap::new(),
            acked_by_epoch: BTreeMap::new(),
            history: Vec::new(),
            probe: None,
            report: SimReport::default(),
            trace: VecDeque::new(),
            full_trace: config.full_trace,
            skip_read_confirmation: config.skip_read_confirmation,
        };
        sim.log(format!(
            "seed {}: loss {loss}, duplication {duplication}, delay up to {max_delay} ms",
            config.seed
        ));
        sim.start_coordinator();
        for ordinal in 0..MEMBERS as Ordinal {
            sim.start_member(ordinal);
        }
        for client in 0..CLIENTS {
            let at = 500 + sim.rng.u64(..1000);
            sim.schedule(at, Event::ClientWake { client });
        }
        let first_fault = 1000 + sim.rng.u64(..2000);
        sim.schedule(first_fault, Event::Fault);
        sim.schedule(FAULT_PHASE_MS + CONVERGENCE_BOUND_MS / 2, Event::Probe);
        sim
    }

    fn log(&mut self, line: String) {
        let line = format!("{:>7} ms  {line}", self.now);
        if !self.full_trace && self.trace.len() >= TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_millis(self.now)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + after, self.seq)));
        self.events.insert(self.seq, event);
    }

    // ---- The loop. ----

    fn run_to_end(&mut self) -> Result<(), Violation> {
        let end = FAULT_PHASE_MS + CONVERGENCE_BOUND_MS;
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            if at > end {
                break;
            }
            self.now = at;
            if self.now >= FAULT_PHASE_MS && self.faults_on {
                self.stop_faults();
            }
            self.report.steps += 1;
            self.step(event)?;
            self.check_members()?;
        }
        self.report.sim_ms = self.now;
        self.check_end()
    }

    fn step(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Event::MemberTimer {
                ordinal,
                boot,
                timer,
            } => self.member_timer(ordinal, boot, timer),
            Event::CoordinatorTick { boot } => {
                if self.coordinator.as_ref().is_some_and(|c| c.boot == boot) {
                    let now = self.instant();
                    let changes = match self.coordinator.as_mut() {
                        Some(c) => c.coordinator.tick(now),
                        None => Vec::new(),
                    };
                    self.publish(changes);
                    if let Some(c) = &self.coordinator {
                        let boot = c.boot;
                        self.schedule(TICK_MS, Event::CoordinatorTick { boot });
                    }
                }
                Ok(())
            }
            Event::ClientWake { client } => {
                self.client_next(client);
                Ok(())
            }
            Event::ClientRetry { client } => {
                if self.clients[client].current.is_some_and(|c| c.2 == 0) {
                    self.client_attempt(client);
                }
                Ok(())
            }
            Event::ClientTimeout { client, attempt } => {
                self.client_timeout(client, attempt);
                Ok(())
            }
            Event::Fault => {
                if self.faults_on {
                    self.inject_fault();
                    let next = 500 + self.rng.u64(..3000);
                    self.schedule(next, Event::Fault);
                }
                Ok(())
            }
            Event::Heal { what } => {
                match what {
                    Heal::Partition(a, b) => {
                        self.blocked.remove(&(a, b));
                        self.log(format!("heal {a:?} -> {b:?}"));
                    }
                    Heal::Disk(ordinal) => {
                        self.members[ordinal as usize].disk_slow_ms = 0;
                        self.log(format!("member {ordinal}: disk fast again"));
                    }
                }
                Ok(())
            }
            Event::RestartMember { ordinal } => {
                if self.members[ordinal as usize].running.is_none() {
                    self.start_member(ordinal);
                }
                Ok(())
            }
            Event::RestartCoordinator => {
                if self.coordinator.is_none() {
                    self.start_coordinator();
                }
                Ok(())
            }
            Event::Probe => {
                self.probe = Some((self.now, false));
                self.log("probe: one more buy must succeed".to_owned());
                self.schedule(1, Event::ClientWake { client: 0 });
                Ok(())
            }
        }
    }

    // ---- Network. ----

    fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        if self.blocked.contains(&(from, to)) {
            return;
        }
        if self.faults_on && self.rng.f64() < self.loss {
            return;
        }
        let copies = if self.faults_on && self.rng.f64() < self.duplication {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.u64(..self.max_delay.max(1));
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    msg: msg.clone(),
                },
            );
        }
    }

    fn deliver(&mut self, from: Addr, to: Addr, msg: Msg) -> Result<(), Violation> {
        if self.blocked.contains(&(from, to)) {
            return Ok(());
        }
        match to {
            Addr::Coordinator => {
                self.coordinator_receive(from, msg);
                Ok(())
            }
            Addr::Member(ordinal) => {
                let member = &self.members[ordinal as usize];
                if member.running.is_none() {
                    return Ok(());
                }
                if member.paused_until > self.now {
                    // A stopped process: the message waits in its socket.
                    let wait = member.paused_until - self.now;
                    self.schedule(wait, Event::Deliver { from, to, msg });
                    return Ok(());
                }
                self.member_receive(ordinal, from, msg)
            }
            Addr::Client(client) => {
                self.client_receive(client, msg);
                Ok(())
            }
        }
    }

    // ---- The coordinator and its I/O shell. ----

    fn start_coordinator(&mut self) {
        self.boots += 1;
        let config = CoordinatorConfig {
            heartbeat_interval: Duration::from_millis(HEARTBEAT_MS),
            miss_threshold: 3,
        };
        let coordinator = Coordinator::new(config, &[(TIER, MEMBERS)], &self.saved, self.instant());
        self.coordinator = Some(CoordinatorProcess {
            boot: self.boots,
            coordinator,
        });
        self.log(format!("coordinator starts from saved {:?}", self.saved));
        let boot = self.boots;
        self.schedule(TICK_MS, Event::CoordinatorTick { boot });
    }

    /// Saves, then pushes (the server's order); `false` if it crashed
    /// between the two.
    fn publish(&mut self, changes: Vec<Published>) -> bool {
        if changes.is_empty() {
            return true;
        }
        let Some(c) = &self.coordinator else {
            return false;
        };
        self.saved = c.coordinator.durable_state();
        for change in &changes {
            if change.failover {
                self.report.failovers += 1;
            }
            let t = &change.topology;
            self.log(format!(
                "coordinator publishes epoch {} primary {:?} in-sync {:?}: {}",
                t.epoch,
                t.primary,
                t.in_sync_ordinals(),
                change.reason
            ));
        }
        if self.crash_after_next_save {
            self.crash_after_next_save = false;
            self.crash_coordinator("right after a save, before its publish");
            return false;
        }
        for change in changes {
            for ordinal in 0..MEMBERS as Ordinal {
                self.send(
                    Addr::Coordinator,
                    Addr::Member(ordinal),
                    Msg::Push(change.topology.clone()),
                );
            }
        }
        true
    }

    fn coordinator_receive(&mut self, from: Addr, msg: Msg) {
        let now = self.instant();
        let Some(c) = self.coordinator.as_mut() else {
            return;
        };
        match msg {
            Msg::Heartbeat(heartbeat) => {
                let change = c.coordinator.heartbeat(&heartbeat, now);
                let topology = c.coordinator.topology(TIER, now);
                if self.publish(change.into_iter().collect())
                    && let Some(topology) = topology
                {
                    self.send(Addr::Coordinator, from, Msg::HeartbeatAnswer(topology));
                }
            }
            Msg::Alter { call, request } => {
                let answer = match c.coordinator.alter_in_sync(&request, now) {
                    Ok(change) => {
                        let topology = change.topology.clone();
                        if !self.publish(vec![change]) {
                            return;
                        }
                        AlterAnswer::Changed(topology)
                    }
                    Err(AlterError::StaleEpoch { .. } | AlterError::NotPrimary(_)) => {
                        AlterAnswer::Stale {
                            asked: request.epoch,
                        }
                    }
                    Err(_) => AlterAnswer::Failed,
                };
                self.send(Addr::Coordinator, from, Msg::AlterAnswer { call, answer });
            }
            Msg::MarkDown {
                ordinal,
                observed_at,
            } => {
                let change =
                    c.coordinator
                        .mark_down(TIER, ordinal, "process exited", observed_at, now);
                self.publish(change.into_iter().collect());
            }
            _ => {}
        }
    }

    /// Drops every message in flight to or from `addr` (its connections die
    /// with the process).
    fn lose_in_flight(&mut self, addr: Addr) {
        self.events.retain(|_, event| {
            !matches!(event, Event::Deliver { from, to, .. } if *from == addr || *to == addr)
        });
    }

    fn crash_coordinator(&mut self, why: &str) {
        self.coordinator = None;
        self.lose_in_flight(Addr::Coordinator);
        self.log(format!("CRASH coordinator ({why})"));
        let after = 100 + self.rng.u64(..3000);
        self.schedule(after, Event::RestartCoordinator);
    }

    // ---- Members and their I/O shell. ----

    fn start_member(&mut self, ordinal: Ordinal) {
        self.boots += 1;
        let boot = self.boots;
        let incarnation = 1000 * boot + u64::from(ordinal);
        let member = &mut self.members[ordinal as usize];
        member.paused_until = 0;
        member.disk_fails = false;
        member.running = Some(Process {
            boot,
            core: MemberCore::new(TIER, ordinal, incarnation),
            published: member.db.stock.clone(),
            busy: Busy::Idle,
            queue: VecDeque::new(),
            held: Vec::new(),
            resync_call: None,
            resync_backoff: RESYNC_BACKOFF_MS,
            resync_not_before: 0,
        });
        self.log(format!(
            "member {ordinal} starts as incarnation {incarnation}"
        ));
        self.schedule(1, self.timer(ordinal, boot, Timer::Heartbeat));
        self.schedule(RESYNC_POLL_MS, self.timer(ordinal, boot, Timer::ResyncPoll));
    }

    fn timer(&self, ordinal: Ordinal, boot: u64, timer: Timer) -> Event {
        Event::MemberTimer {
            ordinal,
            boot,
            timer,
        }
    }

    fn crash_member(&mut self, ordinal: Ordinal, why: &str) {
        if self.members[ordinal as usize].running.take().is_none() {
            return;
        }
        self.log(format!("CRASH member {ordinal} ({why})"));
        self.lose_in_flight(Addr::Member(ordinal));
        // `bookstore up` sees its child exit and marks it down at once.
        let observed_at = self.instant();
        self.send(
            Addr::Member(ordinal),
            Addr::Coordinator,
            Msg::MarkDown {
                ordinal,
                observed_at,
            },
        );
        let after = 100 + self.rng.u64(..3000);
        self.schedule(after, Event::RestartMember { ordinal });
    }

    fn process(&mut self, ordinal: Ordinal) -> Option<&mut Process> {
        self.members[ordinal as usize].running.as_mut()
    }

    /// Runs a core decision and carries out the effects it queued.
    fn with_core<R>(
        &mut self,
        ordinal: Ordinal,
        decide: impl FnOnce(&mut MemberCore) -> R,
    ) -> Result<Option<R>, Violation> {
        let Some(process) = self.process(ordinal) else {
            return Ok(None);
        };
        let result = decide(&mut process.core);
        let effects = process.core.take_effects();
        for effect in effects {
            self.carry_out(ordinal, effect)?;
        }
        Ok(Some(result))
    }

    fn carry_out(&mut self, ordinal: Ordinal, effect: Effect) -> Result<(), Violation> {
        match effect {
            Effect::PhaseChanged {
                from,
                to,
                epoch,
                why,
            } => {
                self.log(format!(
                    "member {ordinal}: {} -> {} at epoch {epoch} ({why})",
                    from.as_str(),
                    to.as_str()
                ));
                if to == Phase::Leading {
                    self.check_new_primary(ordinal)?;
                }
            }
            Effect::TopologyAdopted { .. } => {}
            // The promotion hook (the catalog clears the cache) takes no
            // simulated time.
            Effect::Promote { epoch } => {
                self.with_core(ordinal, |core| core.promotion_ready(epoch))?;
            }
        }
        Ok(())
    }

    fn member_timer(&mut self, ordinal: Ordinal, boot: u64, timer: Timer) -> Result<(), Violation> {
        let member = &self.members[ordinal as usize];
        let Some(process) = &member.running else {
            return Ok(());
        };
        if process.boot != boot {
            return Ok(());
        }
        if member.paused_until > self.now {
            let wait = member.paused_until - self.now;
            let event = self.timer(ordinal, boot, timer);
            self.schedule(wait, event);
            return Ok(());
        }
        match timer {
            Timer::Heartbeat => {
                self.send_heartbeat(ordinal);
                self.schedule(HEARTBEAT_MS, self.timer(ordinal, boot, Timer::Heartbeat));
            }
            Timer::ResyncPoll => {
                self.resync_poll(ordinal)?;
                self.schedule(RESYNC_POLL_MS, self.timer(ordinal, boot, Timer::ResyncPoll));
            }
            Timer::WriterDeadline(id) => self.writer_deadline(ordinal, id)?,
            Timer::DiskDone(id) => self.disk_done(ordinal, id)?,
            Timer::HeldDeadline => self.release_held(ordinal, true)?,
            Timer::ResyncDeadline(call) => {
                if let Some(process) = self.process(ordinal)
                    && process.resync_call == Some(call)
                {
                    process.resync_call = None;
                    self.resync_failed(ordinal)?;
                }
            }
        }
        Ok(())
    }

    fn send_heartbeat(&mut self, ordinal: Ordinal) {
        let db = &self.members[ordinal as usize].db;
        let (applied, data_epoch) = (db.applied, db.data_epoch);
        let Some(process) = self.process(ordinal) else {
            return;
        };
        let heartbeat = Heartbeat {
            tier: TIER,
            ordinal,
            incarnation: process.core.incarnation(),
            peer: format!("member-{ordinal}"),
            public: format!("member-{ordinal}"),
            phase: process.core.phase(),
            epoch: process.core.topology().epoch,
            applied,
            data_epoch,
        };
        self.send(
            Addr::Member(ordinal),
            Addr::Coordinator,
            Msg::Heartbeat(heartbeat),
        );
    }

    fn member_receive(&mut self, ordinal: Ordinal, from: Addr, msg: Msg) -> Result<(), Violation> {
        match msg {
            Msg::HeartbeatAnswer(topology) | Msg::Push(topology) => {
                self.with_core(ordinal, |core| core.adopt(topology))?;
            }
            Msg::AlterAnswer { call, answer } => {
                self.alter_answered(ordinal, call, answer, true)?
            }
            Msg::Replicate {
                call,
                header,
                entries,
            } => {
                let op = Op::Replicate {
                    from,
                    call,
                    header,
                    entries,
                };
                if self.must_hold(ordinal, header) {
                    let until = self.now + GAP_WAIT.as_millis() as u64;
                    if let Some(process) = self.process(ordinal) {
                        process.held.push((until, op));
                        let boot = process.boot;
                        self.schedule(
                            GAP_WAIT.as_millis() as u64,
                            self.timer(ordinal, boot, Timer::HeldDeadline),
                        );
                    }
                } else {
                    self.enqueue(ordinal, op)?;
                }
            }
            Msg::ReplicateAnswer { call, outcome } => {
                self.replicate_answered(ordinal, call, outcome)?
            }
            Msg::SnapshotRequest {
                call,
                ordinal: learner,
                incarnation,
            } => {
                self.enqueue(
                    ordinal,
                    Op::Snapshot {
                        from,
                        call,
                        ordinal: learner,
                        incarnation,
                    },
                )?;
            }
            Msg::SnapshotAnswer { call, result } => {
                let Some(process) = self.process(ordinal) else {
                    return Ok(());
                };
                if process.resync_call != Some(call) {
                    return Ok(());
                }
                process.resync_call = None;
                match result {
                    Ok((grant, db)) => self.enqueue(ordinal, Op::Restore { grant, db })?,
                    Err(_) => self.resync_failed(ordinal)?,
                }
            }
            Msg::JoinRequest {
                call,
                ordinal: learner,
                incarnation,
                snapshot_index,
            } => {
                self.enqueue(
                    ordinal,
                    Op::Join {
                        from,
                        call,
                        ordinal: learner,
                        incarnation,
                        snapshot_index,
                    },
                )?;
            }
            Msg::JoinAnswer { call, refused } => {
                let Some(process) = self.process(ordinal) else {
                    return Ok(());
                };
                if process.resync_call != Some(call) {
                    return Ok(());
                }
                process.resync_call = None;
                match refused {
                    None => process.resync_backoff = RESYNC_BACKOFF_MS,
                    Some(why) => {
                        self.with_core(ordinal, |core| core.join_refused(why))?;
                        self.resync_failed(ordinal)?;
                    }
                }
            }
            Msg::BuyRequest { attempt, buy } => {
                let route = self
                    .process(ordinal)
                    .map(|p| (p.core.route_write(), p.core.topology().primary));
                match route {
                    Some((Ok(None), _)) => self.enqueue(
                        ordinal,
                        Op::Submit {
                            buy,
                            client: from,
                            attempt,
                        },
                    )?,
                    // A replica forwards in production; here the client is
                    // told where the primary is and retries there.
                    Some((_, hint)) => self.send(
                        Addr::Member(ordinal),
                        from,
                        Msg::BuyAnswer {
                            attempt,
                            result: Err(hint),
                        },
                    ),
                    None => {}
                }
            }
            Msg::ReadRequest {
                attempt,
                item,
                linearizable,
            } if !linearizable || self.skip_read_confirmation => {
                let Some(process) = self.process(ordinal) else {
                    return Ok(());
                };
                let result = if process.core.phase().serves_reads() {
                    Ok(process.published.get(&item).copied().unwrap_or(0))
                } else {
                    Err(process.core.topology().primary)
                };
                self.send(
                    Addr::Member(ordinal),
                    from,
                    Msg::ReadAnswer { attempt, result },
                );
            }
            Msg::ReadRequest {
                attempt,
                item,
                linearizable: _,
            } => {
                let route = self
                    .process(ordinal)
                    .map(|p| (p.core.take_linearizable_read(), p.core.topology().primary));
                match route {
                    Some((Ok(()), _)) => self.enqueue(
                        ordinal,
                        Op::Read {
                            item,
                            client: from,
                            attempt,
                        },
                    )?,
                    Some((Err(_), hint)) => self.send(
                        Addr::Member(ordinal),
                        from,
                        Msg::ReadAnswer {
                            attempt,
                            result: Err(hint),
                        },
                    ),
                    None => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A batch whose predecessor has not arrived waits (as the peer route
    /// does), while the member replicates.
    fn must_hold(&mut self, ordinal: Ordinal, header: BatchHeader) -> bool {
        let applied = self.members[ordinal as usize].db.applied;
        let Some(process) = self.process(ordinal) else {
            return false;
        };
        match process.core.phase() {
            Phase::Following | Phase::CatchingUp => {
                header.first.is_some_and(|first| first > applied + 1)
            }
            Phase::Joining | Phase::Fenced => true,
            _ => false,
        }
    }

    fn release_held(&mut self, ordinal: Ordinal, deadline: bool) -> Result<(), Violation> {
        let now = self.now;
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        let held = std::mem::take(&mut process.held);
        let mut keep = Vec::new();
        let mut release = Vec::new();
        for (until, op) in held {
            let Op::Replicate { header, .. } = &op else {
                continue;
            };
            let header = *header;
            if (deadline && until <= now) || !self.must_hold(ordinal, header) {
                release.push(op);
            } else {
                keep.push((until, op));
            }
        }
        if let Some(process) = self.process(ordinal) {
            process.held = keep;
        }
        for op in release {
            self.enqueue(ordinal, op)?;
        }
        Ok(())
    }

    fn enqueue(&mut self, ordinal: Ordinal, op: Op) -> Result<(), Violation> {
        if let Some(process) = self.process(ordinal) {
            process.queue.push_back(op);
        }
        self.run_writer(ordinal)
    }

    /// Starts the next queued op if the writer is idle.
    fn run_writer(&mut self, ordinal: Ordinal) -> Result<(), Violation> {
        loop {
            let Some(process) = self.process(ordinal) else {
                return Ok(());
            };
            if !matches!(process.busy, Busy::Idle) {
                return Ok(());
            }
            let Some(op) = process.queue.pop_front() else {
                return Ok(());
            };
            match op {
                Op::Submit { .. } | Op::Read { .. } => {
                    // Group commit: every buy and read queued behind it.
                    let mut round = Round::default();
                    round.take(&op);
                    while round.buys.len() < MAX_BATCH
                        && process.queue.front().is_some_and(|next| round.take(next))
                    {
                        process.queue.pop_front();
                    }
                    self.lead(ordinal, round)?;
                }
                Op::Replicate {
                    from,
                    call,
                    header,
                    entries,
                } => self.follow(ordinal, from, call, header, entries)?,
                Op::Snapshot {
                    from,
                    call,
                    ordinal: learner,
                    incarnation,
                } => {
                    let applied = self.members[ordinal as usize].db.applied;
                    let grant = self
                        .with_core(ordinal, |core| {
                            let peer = format!("member-{learner}");
                            core.grant_snapshot(learner, incarnation, peer, applied)
                        })?
                        .ok_or(Refusal::ShutDown)
                        .and_then(|g| g);
                    let db = self.members[ordinal as usize].db.clone();
                    let result = grant.map(|grant| (grant, db));
                    self.send(
                        Addr::Member(ordinal),
                        from,
                        Msg::SnapshotAnswer { call, result },
                    );
                }
                Op::Join {
                    from,
                    call,
                    ordinal: learner,
                    incarnation,
                    snapshot_index,
                } => {
                    let admit = self.with_core(ordinal, |core| {
                        core.admit(learner, incarnation, snapshot_index)
                    })?;
                    match admit {
                        Some(Ok(request)) => self.start_alter(
                            ordinal,
                            request,
                            AlterPurpose::Admit {
                                learner,
                                from,
                                call,
                            },
                        ),
                        _ => self.send(
                            Addr::Member(ordinal),
                            from,
                            Msg::JoinAnswer {
                                call,
                                refused: Some(JoinRefused::NotALearner),
                            },
                        ),
                    }
                }
                Op::Restore { grant, db } => {
                    if self.members[ordinal as usize].disk_fails {
                        self.crash_member(ordinal, "disk sync failed while restoring");
                        return Ok(());
                    }
                    let installing = self
                        .process(ordinal)
                        .is_some_and(|p| matches!(p.core.phase(), Phase::Joining | Phase::Fenced));
                    if installing {
                        let mut db = db;
                        db.data_epoch = grant.epoch;
                        self.members[ordinal as usize].db = db.clone();
                        if let Some(process) = self.process(ordinal) {
                            process.published = db.stock.clone();
                            process.resync_backoff = RESYNC_BACKOFF_MS;
                        }
                        self.log(format!(
                            "member {ordinal}: installed snapshot of {:?} at index {}",
                            grant.primary, db.applied
                        ));
                        self.with_core(ordinal, |core| core.snapshot_installed(grant))?;
                        self.release_held(ordinal, false)?;
                    }
                }
            }
        }
    }

    /// Sends a round's batch (empty if it has only reads: it touches no
    /// disk, as in `writer::Writer::lead`).
    fn lead(&mut self, ordinal: Ordinal, round: Round) -> Result<(), Violation> {
        let leadership = match self.with_core(ordinal, |core| core.lead())? {
            Some(Ok(leadership)) => leadership,
            _ => {
                self.refuse_round(ordinal, round);
                return Ok(());
            }
        };
        let writes_anything = !round.buys.is_empty();
        if writes_anything && self.members[ordinal as usize].disk_fails {
            self.crash_member(ordinal, "disk sync failed");
            return Ok(());
        }
        let epoch = leadership.topology.epoch;
        let db = &mut self.members[ordinal as usize].db;
        let first = db.applied + 1;
        let mut entries = Vec::new();
        let mut outcomes = Vec::new();
        for (i, (buy, _, _)) in round.buys.iter().enumerate() {
            outcomes.push(db.apply(buy));
            entries.push((first + i as u64, *buy));
        }
        if writes_anything {
            db.applied += round.buys.len() as u64;
            db.data_epoch = db.data_epoch.max(epoch);
        }
        let header = BatchHeader {
            epoch,
            primary: PrimaryId {
                ordinal,
                incarnation: leadership.incarnation,
            },
            first: entries.first().map(|e| e.0),
            last: entries.last().map(|e| e.0),
        };
        let id = self.id();
        let mut waiting = BTreeMap::new();
        for target in leadership.targets.clone() {
            let call = self.id();
            self.send(
                Addr::Member(ordinal),
                Addr::Member(target.ordinal),
                Msg::Replicate {
                    call,
                    header,
                    entries: entries.clone(),
                },
            );
            waiting.insert(call, target);
        }
        let disk = match writes_anything {
            true => self.members[ordinal as usize].disk_slow_ms,
            false => 0,
        };
        let boot = match self.process(ordinal) {
            Some(process) => {
                process.busy = Busy::Lead {
                    id,
                    leadership,
                    round,
                    outcomes,
                    epoch,
                    waiting,
                    results: Vec::new(),
                };
                process.boot
            }
            None => return Ok(()),
        };
        // The local sync runs alongside the sends: the batch cannot settle
        // before it, nor before every target answered or timed out.
        self.schedule(disk.max(1), self.timer(ordinal, boot, Timer::DiskDone(id)));
        self.schedule(
            REPLICATE_TIMEOUT.as_millis() as u64,
            self.timer(ordinal, boot, Timer::WriterDeadline(id)),
        );
        Ok(())
    }

    fn replicate_answered(
        &mut self,
        ordinal: Ordinal,
        call: u64,
        outcome: SendOutcome,
    ) -> Result<(), Violation> {
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        if let Busy::Lead {
            waiting,
            results,
            id,
            ..
        } = &mut process.busy
            && let Some(target) = waiting.remove(&call)
        {
            results.push((target, outcome));
            let id = *id;
            if waiting.is_empty() {
                return self.maybe_settle(ordinal, id, false);
            }
        }
        Ok(())
    }

    fn writer_deadline(&mut self, ordinal: Ordinal, id: u64) -> Result<(), Violation> {
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        match &mut process.busy {
            Busy::Lead {
                id: busy,
                waiting,
                results,
                ..
            } if *busy == id => {
                for (_, target) in std::mem::take(waiting) {
                    results.push((target, SendOutcome::Failed));
                }
                self.maybe_settle(ordinal, id, false)
            }
            Busy::Alter { id: busy, call, .. } if *busy == id => {
                let call = *call;
                self.alter_answered(ordinal, call, AlterAnswer::Failed, false)
            }
            _ => Ok(()),
        }
    }

    fn disk_done(&mut self, ordinal: Ordinal, id: u64) -> Result<(), Violation> {
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        match &mut process.busy {
            Busy::Disk { id: busy, .. } if *busy == id => {
                let Busy::Disk {
                    from, call, ack, ..
                } = std::mem::replace(&mut process.busy, Busy::Idle)
                else {
                    return Ok(());
                };
                self.send(
                    Addr::Member(ordinal),
                    from,
                    Msg::ReplicateAnswer { call, outcome: ack },
                );
                self.run_writer(ordinal)
            }
            Busy::Lead { id: busy, .. } if *busy == id => self.maybe_settle(ordinal, id, true),
            _ => Ok(()),
        }
    }

    /// Settles a batch once the local sync is done and every target answered.
    fn maybe_settle(
        &mut self,
        ordinal: Ordinal,
        id: u64,
        disk_done: bool,
    ) -> Result<(), Violation> {
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        let Busy::Lead {
            waiting, results, ..
        } = &mut process.busy
        else {
            return Ok(());
        };
        if disk_done {
            // Mark the local sync done with a sentinel result.
            results.push((
                Target {
                    ordinal,
                    peer: String::new(),
                    in_sync: false,
                },
                SendOutcome::Acked,
            ));
        }
        let local_done = results
            .iter()
            .any(|(t, _)| t.ordinal == ordinal && t.peer.is_empty());
        if !waiting.is_empty() || !local_done {
            return Ok(());
        }
        let Busy::Lead {
            leadership,
            round,
            outcomes,
            epoch,
            results,
            ..
        } = std::mem::replace(&mut process.busy, Busy::Idle)
        else {
            return Ok(());
        };
        let results: Vec<(Target, SendOutcome)> = results
            .into_iter()
            .filter(|(t, _)| !t.peer.is_empty())
            .collect();
        let settlement = self
            .with_core(ordinal, |core| core.settle(&leadership, &results))?
            .unwrap_or(Settlement::Deposed);
        self.log(format!(
            "member {ordinal}: batch of {} buys and {} reads at epoch {epoch} to {:?}: {settlement:?}",
            round.buys.len(),
            round.reads.len(),
            results
                .iter()
                .map(|(t, o)| (t.ordinal, o))
                .collect::<Vec<_>>()
        ));
        match settlement {
            Settlement::Done => self.answer_batch(ordinal, round, outcomes, epoch, true)?,
            Settlement::Deposed => self.answer_batch(ordinal, round, outcomes, epoch, false)?,
            Settlement::AlterInSync(request) => {
                let _ = id;
                self.start_alter(
                    ordinal,
                    request,
                    AlterPurpose::Batch {
                        round,
                        outcomes,
                        epoch,
                    },
                );
                return Ok(());
            }
        }
        self.run_writer(ordinal)
    }

    fn start_alter(&mut self, ordinal: Ordinal, request: AlterInSync, purpose: AlterPurpose) {
        let id = self.id();
        let call = self.id();
        self.send(
            Addr::Member(ordinal),
            Addr::Coordinator,
            Msg::Alter { call, request },
        );
        if let Some(process) = self.process(ordinal) {
            process.busy = Busy::Alter { id, call, purpose };
            let boot = process.boot;
            self.schedule(
                CALL_TIMEOUT_MS,
                self.timer(ordinal, boot, Timer::WriterDeadline(id)),
            );
        }
    }

    /// The coordinator's answer to an in-sync change; `answered` is false
    /// when the call timed out (the change may or may not have been made).
    fn alter_answered(
        &mut self,
        ordinal: Ordinal,
        call: u64,
        answer: AlterAnswer,
        answered: bool,
    ) -> Result<(), Violation> {
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        let Busy::Alter { call: waiting, .. } = &process.busy else {
            return Ok(());
        };
        if *waiting != call {
            return Ok(());
        }
        let Busy::Alter { purpose, .. } = std::mem::replace(&mut process.busy, Busy::Idle) else {
            return Ok(());
        };
        let changed = matches!(answer, AlterAnswer::Changed(_));
        self.with_core(ordinal, |core| core.in_sync_altered(answer))?;
        match purpose {
            AlterPurpose::Batch {
                round,
                outcomes,
                epoch,
            } => self.answer_batch(ordinal, round, outcomes, epoch, changed)?,
            AlterPurpose::Admit {
                learner,
                from,
                call,
            } => {
                if changed {
                    self.with_core(ordinal, |core| core.learner_admitted(learner))?;
                } else if answered {
                    self.with_core(ordinal, |core| core.admission_refused(learner))?;
                }
                self.send(
                    Addr::Member(ordinal),
                    from,
                    Msg::JoinAnswer {
                        call,
                        refused: (!changed).then_some(JoinRefused::NotAdmitted),
                    },
                );
            }
        }
        self.run_writer(ordinal)
    }

    /// Publishes the batch to readers, answers its buys, then serves its
    /// reads from the state just published (or refuses them).
    fn answer_batch(
        &mut self,
        ordinal: Ordinal,
        round: Round,
        outcomes: Vec<Outcome>,
        epoch: Epoch,
        acknowledged: bool,
    ) -> Result<(), Violation> {
        let Round { buys: batch, reads } = round;
        let stock = self.members[ordinal as usize].db.stock.clone();
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        process.published = stock;
        let me = PrimaryId {
            ordinal,
            incarnation: process.core.incarnation(),
        };
        if acknowledged {
            match self.acked_by_epoch.get(&epoch) {
                Some(&first) if first != me => {
                    return Err(Violation::TwoPrimariesInOneEpoch {
                        epoch,
                        first,
                        second: me,
                    });
                }
                _ => {
                    self.acked_by_epoch.insert(epoch, me);
                }
            }
        }
        for ((buy, client, attempt), outcome) in batch.into_iter().zip(outcomes) {
            let result = if acknowledged { Ok(outcome) } else { Err(None) };
            self.send(
                Addr::Member(ordinal),
                client,
                Msg::BuyAnswer { attempt, result },
            );
            if acknowledged {
                if let Some(&first) = self.acknowledged.get(&buy.request)
                    && first != outcome
                {
                    return Err(Violation::TwoAnswers {
                        request: buy.request,
                        first,
                        second: outcome,
                    });
                }
                self.acknowledged.insert(buy.request, outcome);
            }
        }
        self.serve_reads(ordinal, reads, acknowledged)
    }

    /// The reads of a settled round: served from the published state if the
    /// batch settled without error and the core confirms the leadership.
    fn serve_reads(
        &mut self,
        ordinal: Ordinal,
        reads: Vec<(u32, Addr, u64)>,
        settled: bool,
    ) -> Result<(), Violation> {
        let confirmed = settled
            && self
                .with_core(ordinal, |core| core.confirm_reads())?
                .is_some_and(|verdict| verdict.is_ok());
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        let answers: Vec<(Addr, u64, Result<i64, Option<Ordinal>>)> = reads
            .into_iter()
            .map(|(item, client, attempt)| {
                let result = match confirmed {
                    true => Ok(process.published.get(&item).copied().unwrap_or(0)),
                    false => Err(None),
                };
                (client, attempt, result)
            })
            .collect();
        for (client, attempt, result) in answers {
            self.send(
                Addr::Member(ordinal),
                client,
                Msg::ReadAnswer { attempt, result },
            );
        }
        Ok(())
    }

    /// Refuses a round this member cannot lead (it is not the primary).
    fn refuse_round(&mut self, ordinal: Ordinal, round: Round) {
        for (_, client, attempt) in round.buys {
            self.send(
                Addr::Member(ordinal),
                client,
                Msg::BuyAnswer {
                    attempt,
                    result: Err(None),
                },
            );
        }
        for (_, client, attempt) in round.reads {
            self.send(
                Addr::Member(ordinal),
                client,
                Msg::ReadAnswer {
                    attempt,
                    result: Err(None),
                },
            );
        }
    }

    fn follow(
        &mut self,
        ordinal: Ordinal,
        from: Addr,
        call: u64,
        header: BatchHeader,
        entries: Vec<(LogIndex, Buy)>,
    ) -> Result<(), Violation> {
        let applied = self.members[ordinal as usize].db.applied;
        let plan = self.with_core(ordinal, |core| core.accept_batch(header, applied))?;
        // Only a batch with new writes syncs the disk; a duplicate or an
        // empty batch (one that confirms reads) is acknowledged at once.
        let wrote = matches!(plan, Some(Ok(BatchPlan::Apply)));
        let outcome = match plan {
            None => return Ok(()),
            Some(Err(refusal)) => SendOutcome::Refused(refusal),
            Some(Ok(BatchPlan::AlreadyApplied)) => SendOutcome::Acked,
            Some(Ok(BatchPlan::Apply)) => {
                if self.members[ordinal as usize].disk_fails {
                    self.crash_member(ordinal, "disk sync failed");
                    return Ok(());
                }
                let member = &mut self.members[ordinal as usize];
                for (index, buy) in entries.iter().filter(|(i, _)| *i > applied) {
                    member.db.apply(buy);
                    member.db.applied = *index;
                }
                member.db.data_epoch = member.db.data_epoch.max(header.epoch);
                let stock = member.db.stock.clone();
                if let Some(process) = self.process(ordinal) {
                    process.published = stock;
                }
                self.release_held(ordinal, false)?;
                SendOutcome::Acked
            }
        };
        let disk = self.members[ordinal as usize].disk_slow_ms;
        if wrote && disk > 0 {
            let id = self.id();
            if let Some(process) = self.process(ordinal) {
                process.busy = Busy::Disk {
                    id,
                    from,
                    call,
                    ack: outcome,
                };
                let boot = process.boot;
                self.schedule(disk, self.timer(ordinal, boot, Timer::DiskDone(id)));
            }
            return Ok(());
        }
        self.send(
            Addr::Member(ordinal),
            from,
            Msg::ReplicateAnswer { call, outcome },
        );
        Ok(())
    }

    fn resync_poll(&mut self, ordinal: Ordinal) -> Result<(), Violation> {
        let now = self.now;
        let Some(process) = self.process(ordinal) else {
            return Ok(());
        };
        if process.resync_call.is_some() || process.resync_not_before > now {
            return Ok(());
        }
        let Some(step) = process.core.resync_step() else {
            return Ok(());
        };
        let incarnation = process.core.incarnation();
        let boot = process.boot;
        let call = self.id();
        let (to, msg) = match step {
            ResyncStep::FetchSnapshot { primary, .. } => (
                primary,
                Msg::SnapshotRequest {
                    call,
                    ordinal,
                    incarnation,
                },
            ),
            ResyncStep::AskToJoin {
                primary,
                snapshot_index,
                ..
            } => (
                primary,
                Msg::JoinRequest {
                    call,
                    ordinal,
                    incarnation,
                    snapshot_index,
                },
            ),
        };
        if let Some(process) = self.process(ordinal) {
            process.resync_call = Some(call);
        }
        self.send(Addr::Member(ordinal), Addr::Member(to), msg);
        self.schedule(
            CALL_TIMEOUT_MS,
            self.timer(ordinal, boot, Timer::ResyncDeadline(call)),
        );
        Ok(())
    }

    fn resync_failed(&mut self, ordinal: Ordinal) -> Result<(), Violation> {
        let now = self.now;
        if let Some(process) = self.process(ordinal) {
            process.resync_not_before = now + process.resync_backoff;
            process.resync_backoff = (process.resync_backoff * 2).min(MAX_RESYNC_BACKOFF_MS);
        }
        Ok(())
    }

    // ---- Clients. ----

    fn client_next(&mut self, client: usize) {
        if self.clients[client].current.is_some() {
            return;
        }
        let op = if let Some((_, false)) = self.probe
            && client == 0
        {
            let request = self.id();
            ClientOp::Buy(Buy {
                request,
                item: PROBE_ITEM,
            })
        } else {
            if self.clients[client].ops_left == 0 || !self.faults_on {
                return;
            }
            self.clients[client].ops_left -= 1;
            let item = ITEMS[self.rng.usize(..ITEMS.len())].0;
            // 6 in 10 buys; of the reads, 3 in 4 linearizable.
            match self.rng.u32(..10) {
                0..6 => {
                    let request = self.id();
                    ClientOp::Buy(Buy { request, item })
                }
                kind => ClientOp::Read {
                    item,
                    linearizable: kind >= 7,
                },
            }
        };
        let target = self.rng.u32(..MEMBERS as u32);
        self.clients[client].current = Some((op, self.now, 0, target));
        self.client_attempt(client);
    }

    fn client_attempt(&mut self, client: usize) {
        let Some((op, _, _, target)) = self.clients[client].current else {
            return;
        };
        let attempt = self.id();
        if let Some(current) = &mut self.clients[client].current {
            current.2 = attempt;
        }
        let msg = match op {
            ClientOp::Buy(buy) => Msg::BuyRequest { attempt, buy },
            ClientOp::Read { item, linearizable } => Msg::ReadRequest {
                attempt,
                item,
                linearizable,
            },
        };
        self.send(Addr::Client(client), Addr::Member(target), msg);
        self.schedule(CLIENT_TIMEOUT_MS, Event::ClientTimeout { client, attempt });
    }

    fn client_timeout(&mut self, client: usize, attempt: u64) {
        let Some((op, _, current, target)) = self.clients[client].current else {
            return;
        };
        if current != attempt {
            return;
        }
        match op {
            // A buy is retried, same request id, until it is answered.
            ClientOp::Buy(_) => self.client_retry(client, (target + 1) % MEMBERS as u32),
            // A read without an answer is dropped from the history.
            ClientOp::Read { .. } => self.client_done(client),
        }
    }

    /// Tries again after a pause (same request id for a buy).
    fn client_retry(&mut self, client: usize, target: Ordinal) {
        if let Some(current) = &mut self.clients[client].current {
            current.2 = 0;
            current.3 = target;
        }
        self.schedule(CLIENT_RETRY_MS, Event::ClientRetry { client });
    }

    fn client_done(&mut self, client: usize) {
        self.clients[client].current = None;
        let pause = 10 + self.rng.u64(..300);
        self.schedule(pause, Event::ClientWake { client });
    }

    fn client_receive(&mut self, client: usize, msg: Msg) {
        let Some((op, invoked, attempt, target)) = self.clients[client].current else {
            return;
        };
        match msg {
            Msg::BuyAnswer {
                attempt: answered,
                result,
            } if answered == attempt => match (op, result) {
                (ClientOp::Buy(buy), Ok(outcome)) => {
                    self.log(format!("client {client} buy {} of item {}: {outcome:?} from member {target} (asked at {invoked} ms)", buy.request, buy.item));
                    if buy.item == PROBE_ITEM {
                        if outcome == Outcome::Bought {
                            self.probe = self.probe.map(|(t, _)| (t, true));
                            self.log("probe bought".to_owned());
                        }
                    } else {
                        self.history.push(Completed {
                            item: buy.item,
                            invoked,
                            answered: self.now,
                            what: match outcome {
                                Outcome::Bought => Completion::Bought,
                                Outcome::SoldOut => Completion::SoldOut,
                            },
                        });
                        self.report.acknowledged_buys += 1;
                    }
                    self.client_done(client);
                }
                (ClientOp::Buy(_), Err(hint)) => {
                    let next = hint
                        .filter(|&h| h != target)
                        .unwrap_or((target + 1) % MEMBERS as u32);
                    self.client_retry(client, next);
                }
                _ => {}
            },
            Msg::ReadAnswer {
                attempt: answered,
                result,
            } if answered == attempt => match (op, result) {
                (ClientOp::Read { item, linearizable }, Ok(value)) => {
                    self.log(format!("client {client} read item {item} = {value} (linearizable: {linearizable}) from member {target} (asked at {invoked} ms)"));
                    if linearizable {
                        self.history.push(Completed {
                            item,
                            invoked,
                            answered: self.now,
                            what: Completion::Read(value),
                        });
                        self.report.linearizable_reads += 1;
                    } else {
                        self.report.plain_reads += 1;
                    }
                    self.client_done(client);
                }
                // A linearizable read is retried where the refusal points,
                // as the frontend does; a refused plain read is dropped.
                (
                    ClientOp::Read {
                        linearizable: true, ..
                    },
                    Err(hint),
                ) => {
                    let next = hint
                        .filter(|&h| h != target)
                        .unwrap_or((target + 1) % MEMBERS as u32);
                    self.client_retry(client, next);
                }
                _ => self.client_done(client),
            },
            _ => {}
        }
    }

    // ---- Faults. ----

    fn party(&mut self) -> Addr {
        match self.rng.usize(..MEMBERS + 1) {
            0 => Addr::Coordinator,
            n => Addr::Member((n - 1) as Ordinal),
        }
    }

    fn inject_fault(&mut self) {
        self.report.faults += 1;
        let member = self.rng.u32(..MEMBERS as u32);
        match self.rng.usize(..9) {
            0 => self.crash_member(member, "fault"),
            1 => {
                if self.coordinator.is_some() {
                    self.crash_coordinator("fault");
                }
            }
            2 => {
                self.crash_after_next_save = true;
                self.log("fault: the coordinator will crash after its next save".to_owned());
            }
            3 => {
                let length = 3500 + self.rng.u64(..5000);
                let m = &mut self.members[member as usize];
                if m.running.is_some() {
                    m.paused_until = self.now + length;
                    self.log(format!("PAUSE member {member} for {length} ms"));
                }
            }
            4 | 5 => {
                let (a, b) = (self.party(), self.party());
                if a != b {
                    let length = 1000 + self.rng.u64(..6000);
                    let two_way = self.rng.bool();
                    self.blocked.insert((a, b));
                    self.schedule(
                        length,
                        Event::Heal {
                            what: Heal::Partition(a, b),
                        },
                    );
                    if two_way {
                        self.blocked.insert((b, a));
                        self.schedule(
                            length,
                            Event::Heal {
                                what: Heal::Partition(b, a),
                            },
                        );
                    }
                    self.log(format!(
                        "PARTITION {a:?} {} {b:?} for {length} ms",
                        if two_way { "<->" } else { "->" }
                    ));
                }
            }
            6 | 7 => {
                let slow = 100 + self.rng.u64(..3000);
                let length = 1000 + self.rng.u64(..5000);
                self.members[member as usize].disk_slow_ms = slow;
                self.schedule(
                    length,
                    Event::Heal {
                        what: Heal::Disk(member),
                    },
                );
                self.log(format!(
                    "SLOW DISK member {member}: {slow} ms per sync for {length} ms"
                ));
            }
            _ => {
                self.members[member as usize].disk_fails = true;
                self.log(format!("FAILING DISK member {member}: its next sync fails"));
            }
        }
    }

    fn stop_faults(&mut self) {
        self.faults_on = false;
        self.blocked.clear();
        // Delays beyond a round trip of REPLICATE_TIMEOUT are a fault too.
        self.max_delay = self.max_delay.min(20);
        self.crash_after_next_save = false;
        for member in &mut self.members {
            member.disk_slow_ms = 0;
            member.disk_fails = false;
        }
        self.log("faults stop".to_owned());
    }

    // ---- Invariants. ----

    fn check_members(&self) -> Result<(), Violation> {
        let initial: i64 = Db::seeded().stock.values().sum();
        for member in &self.members {
            if let Some((&item, &stock)) = member.db.stock.iter().find(|(_, s)| **s < 0) {
                return Err(Violation::NegativeStock {
                    ordinal: member.ordinal,
                    item,
                    stock,
                });
            }
            let taken = initial - member.db.stock.values().sum::<i64>();
            if taken != member.db.orders.len() as i64 {
                return Err(Violation::StockOrdersMismatch {
                    ordinal: member.ordinal,
                    taken,
                    orders: member.db.orders.len(),
                });
            }
        }
        Ok(())
    }

    /// A member that becomes primary must hold every acknowledged write.
    fn check_new_primary(&mut self, ordinal: Ordinal) -> Result<(), Violation> {
        let db = &self.members[ordinal as usize].db;
        for (&request, &outcome) in &self.acknowledged {
            if db.outcomes.get(&request) != Some(&outcome) {
                return Err(Violation::AcknowledgedWriteLost { ordinal, request });
            }
        }
        Ok(())
    }

    fn check_end(&mut self) -> Result<(), Violation> {
        let bound_ms = CONVERGENCE_BOUND_MS;
        let no_convergence = |why: String| Violation::NoConvergence { bound_ms, why };
        if self.probe.is_some_and(|(_, bought)| !bought) {
            return Err(no_convergence("the probe buy did not succeed".to_owned()));
        }
        if let Some(client) = self
            .clients
            .iter()
            .position(|c| matches!(c.current, Some((ClientOp::Buy(_), ..))))
        {
            return Err(no_convergence(format!(
                "client {client}'s buy is still unanswered"
            )));
        }
        let primary = self
            .members
            .iter()
            .find(|m| {
                m.running
                    .as_ref()
                    .is_some_and(|p| p.core.phase() == Phase::Leading)
            })
            .ok_or_else(|| no_convergence("no primary".to_owned()))?;
        for member in &self.members {
            let phase = member.running.as_ref().map(|p| p.core.phase());
            if phase != Some(Phase::Leading) && phase != Some(Phase::Following) {
                return Err(no_convergence(format!(
                    "member {} is {phase:?}",
                    member.ordinal
                )));
            }
            let same = member.db.stock == primary.db.stock
                && member.db.outcomes == primary.db.outcomes
                && member.db.applied == primary.db.applied;
            if !same {
                return Err(no_convergence(format!(
                    "member {} (index {}) differs from primary {} (index {})",
                    member.ordinal, member.db.applied, primary.ordinal, primary.db.applied
                )));
            }
        }
        for (&request, &outcome) in &self.acknowledged {
            if primary.db.outcomes.get(&request) != Some(&outcome) {
                return Err(Violation::AcknowledgedWriteLost {
                    ordinal: primary.ordinal,
                    request,
                });
            }
        }
        for (item, initial) in ITEMS {
            let last = primary.db.stock[&item];
            let acknowledged = self
                .history
                .iter()
                .filter(|c| c.item == item && matches!(c.what, Completion::Bought))
                .count() as i64;
            if initial - last != acknowledged {
                return Err(Violation::StockNotAcknowledgedBuys {
                    item,
                    initial,
                    last,
                    acknowledged,
                });
            }
            check_linearizable(item, initial, &self.history)
                .map_err(|why| Violation::NotLinearizable { item, why })?;
        }
        Ok(())
    }
}

/// A simple linearizability check for one item's stock, a counter that
/// only buys decrement (by one, if it stays >= 0) and reads observe. Every
/// buy here was answered (clients retry until they are), so its effect lies
/// between its first attempt and its answer. Necessary conditions, each a
/// contradiction no linear order can explain:
/// 1. A read sees at most `initial` minus the buys answered before it began.
/// 2. A read sees at least `initial` minus the buys begun before it ended.
/// 3. Reads never go up: one that ended before another began saw as much.
/// 4. A "sold out" needs `initial` buys begun before it ended; after it
///    ended, every read sees 0.
fn check_linearizable(item: u32, initial: i64, history: &[Completed]) -> Result<(), String> {
    let ops: Vec<&Completed> = history.iter().filter(|c| c.item == item).collect();
    let bought: Vec<&&Completed> = ops
        .iter()
        .filter(|c| matches!(c.what, Completion::Bought))
        .collect();
    let reads: Vec<(&Completed, i64)> = ops
        .iter()
        .filter_map(|c| match c.what {
            Completion::Read(v) => Some((*c, v)),
            _ => None,
        })
        .collect();
    let done_before = |t: u64| bought.iter().filter(|b| b.answered < t).count() as i64;
    let begun_before = |t: u64| bought.iter().filter(|b| b.invoked < t).count() as i64;
    for &(read, value) in &reads {
        let most = initial - done_before(read.invoked);
        let least = initial - begun_before(read.answered);
        if value > most || value < least {
            return Err(format!(
                "read at [{}, {}] ms saw {value}, outside [{least}, {most}]",
                read.invoked, read.answered
            ));
        }
    }
    for &(first, a) in &reads {
        for &(second, b) in &reads {
            if first.answered < second.invoked && b > a {
                return Err(format!(
                    "read at [{}, {}] ms saw {a}, a later one at [{}, {}] ms saw {b}",
                    first.invoked, first.answered, second.invoked, second.answered
                ));
            }
        }
    }
    for sold_out in ops.iter().filter(|c| matches!(c.what, Completion::SoldOut)) {
        if begun_before(sold_out.answered) < initial {
            return Err(format!(
                "sold out at [{}, {}] ms with fewer than {initial} buys begun",
                sold_out.invoked, sold_out.answered
            ));
        }
        if let Some(&(read, value)) = reads
            .iter()
            .find(|(r, v)| r.invoked > sold_out.answered && *v != 0)
        {
            return Err(format!(
                "read at [{}, {}] ms saw {value} after a sold out answered at {} ms",
                read.invoked, read.answered, sold_out.answered
            ));
        }
    }
    Ok(())
}

/// Formats a failure for a person: the violation, then the events before it.
pub fn describe(failure: &Failure) -> String {
    let mut text = format!(
        "seed {} violated an invariant: {}\nlast {} events:\n",
        failure.seed,
        failure.violation,
        failure.trace.len()
    );
    for line in &failure.trace {
        let _ = writeln!(text, "  {line}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(invoked: u64, answered: u64, what: Completion) -> Completed {
        Completed {
            item: 1,
            invoked,
            answered,
            what,
        }
    }

    #[test]
    fn the_checker_accepts_a_linear_history() {
        let history = [
            op(0, 10, Completion::Bought),
            op(11, 12, Completion::Read(1)),
            op(13, 20, Completion::Bought),
            op(21, 22, Completion::SoldOut),
            op(23, 24, Completion::Read(0)),
        ];
        assert_eq!(check_linearizable(1, 2, &history), Ok(()));
    }

    #[test]
    fn the_checker_refuses_a_stale_read() {
        let history = [
            op(0, 10, Completion::Bought),
            op(11, 12, Completion::Read(2)),
        ];
        assert!(check_linearizable(1, 2, &history).is_err());
    }

    #[test]
    fn the_checker_refuses_a_read_that_goes_up() {
        let history = [
            op(0, 30, Completion::Bought),
            op(1, 2, Completion::Read(1)),
            op(3, 4, Completion::Read(2)),
        ];
        assert!(check_linearizable(1, 2, &history).is_err());
    }

    #[test]
    fn the_checker_refuses_an_early_sold_out() {
        let history = [
            op(0, 10, Completion::Bought),
            op(11, 12, Completion::SoldOut),
        ];
        assert!(check_linearizable(1, 2, &history).is_err());
    }

    #[test]
    fn a_seed_replays_exactly() {
        let config = SimConfig {
            seed: 7,
            full_trace: true,
            skip_read_confirmation: false,
        };
        let trace = |r: Result<SimReport, Box<Failure>>| match r {
            Ok(report) => format!("{report:?}"),
            Err(failure) => failure.trace.join("\n"),
        };
        assert_eq!(trace(run(config)), trace(run(config)));
    }
}
