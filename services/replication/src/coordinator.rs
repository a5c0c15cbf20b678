//! The coordinator: one failure detector and one primary rule for every
//! replicated tier, free of I/O so that both drivers (`bookstore up` locally,
//! the operator in Kubernetes) run exactly this code.
//!
//! It keeps, per tier, the epoch, the primary and the in-sync set, and
//! changes them only in these ways (each bumps the epoch):
//! 1. A member stops heartbeating for `heartbeat_interval * miss_threshold`,
//!    or comes back as a new incarnation (it restarted): it leaves the
//!    in-sync set, unless it is the last member there, because then it holds
//!    the only copy of the latest acknowledged writes and the tier must wait
//!    for it rather than elect a member that lacks them.
//! 2. The primary asks to add a learner it has brought up to date, or to drop
//!    a replica that stopped answering ([`Coordinator::alter_in_sync`]).
//!    A member its driver marked down ([`Coordinator::mark_down`]: its pod is
//!    going away, its process exited) stays down until it has rejoined: a
//!    heartbeat from a new incarnation, or the primary admitting it after a
//!    completed resync. Heartbeats of the incarnation that was marked down do
//!    not revive it, so a terminating pod can never bounce the primary.
//! 3. The rule ([`crate::rule::choose_primary`]) picks a different primary:
//!    the lowest live in-sync ordinal, or, while a planned switchover asks for
//!    an in-sync member ([`Coordinator::switch_over`]), that member. Every other member then leaves the
//!    in-sync set and resyncs from the new primary, so no replica ever keeps
//!    a write the new primary does not have.
//!
//! Two requests of an operator suspend parts of this:
//! - **Fencing** ([`Coordinator::fence`]): a fenced member counts as not
//!   live whatever it says, so it leaves the in-sync set (unless it is the
//!   last member there), is never elected nor admitted, and a fenced primary
//!   is replaced by a failover to an in-sync member; unfenced, it rejoins as
//!   any member does (resync, then admission).
//! - **Hibernation** ([`Coordinator::hibernate`]): before every member is
//!   stopped, the in-sync set shrinks to the primary (the others resync when
//!   the store resumes) and the tier freezes: nothing it hears changes
//!   anything, so the members going away neither fail over nor lose the
//!   durable facts. Woken, it forgets the members it heard and waits, with
//!   no deadline, until the primary it kept is heard again, which then
//!   continues at a higher epoch.
//!
//! Its settings (heartbeat interval, miss threshold, members per tier) can
//! change while it runs ([`Coordinator::reconfigure`]): nothing it knows is
//! reset, so epochs go on rising. A scale-down removes the members above the
//! new count from the in-sync set and the topology at once (their driver
//! shrinks the workload after that, [`Coordinator::kept_members`]); the
//! primary, or the last in-sync member, is kept until it no longer is.
//!
//! What it must never forget (the epoch, the primary and the in-sync set,
//! [`durable::TierRecord`]) its driver saves before it publishes a topology
//! that depends on it; a coordinator built from those records continues
//! where the last one stopped (see [`Coordinator::new`]).
//!
//! Safety rests on one invariant: the primary acknowledges a write only when
//! every member of the in-sync set has made it durable, and only the
//! coordinator grows that set, on the primary's request, while the primary is
//! already replicating to the newcomer. So every in-sync member holds every
//! acknowledged write, and the rule only ever elects in-sync members.

pub mod durable;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bookstore_core::cluster::{Ordinal, Role};
use serde::{Deserialize, Serialize};

use crate::rule::Candidate;
use crate::switchover::{self, SwitchoverRefused};
use crate::topology::{AlterInSync, Epoch, Heartbeat, LogIndex, Phase, Topology, TopologyMember};
use durable::{DurableState, TierRecord};

/// How often members heartbeat, as in the original.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeats a member may miss before it counts as down. The original used
/// one (its timeout equalled the interval), so a busy member flapped; three
/// leave room for scheduling delays under load.
pub const DEFAULT_MISS_THRESHOLD: u32 = 3;

/// The coordinator's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    pub heartbeat_interval: Duration,
    pub miss_threshold: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            miss_threshold: DEFAULT_MISS_THRESHOLD,
        }
    }
}

impl CoordinatorConfig {
    /// Silence longer than this marks a member down.
    pub fn liveness_timeout(&self) -> Duration {
        self.heartbeat_interval * self.miss_threshold.max(1)
    }
}

/// A topology change, with why it happened (for logs, Events and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topology: Topology,
    pub reason: String,
    /// The primary changed because the old one was lost (not a handover).
    pub failover: bool,
    /// The previous primary, if the primary changed.
    pub previous_primary: Option<Ordinal>,
}

/// Why a request to change the in-sync set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlterError {
    #[error("no such replicated tier {0}")]
    UnknownTier(Role),
    #[error("request is for epoch {asked} but the tier is at epoch {current}")]
    StaleEpoch { asked: Epoch, current: Epoch },
    #[error("{0} is not the primary of this epoch")]
    NotPrimary(Ordinal),
    #[error("the in-sync set must contain the primary")]
    MissingPrimary,
    #[error("member {0} is not live")]
    NotLive(Ordinal),
    /// The member restarted since the primary brought it up to date.
    #[error("member {0} restarted since it caught up")]
    Restarted(Ordinal),
    #[error("member {0} is fenced")]
    Fenced(Ordinal),
    #[error("the tier is hibernating")]
    Hibernating,
}

/// What `bookstore status` and the operator show of a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStatus {
    pub tier: Role,
    pub epoch: Epoch,
    pub primary: Option<Ordinal>,
    pub in_sync: Vec<Ordinal>,
    /// Why the tier has no primary or is not yet acting, in words.
    pub waiting: Option<String>,
}

#[derive(Debug, Clone)]
struct MemberRecord {
    incarnation: u64,
    peer: String,
    public: String,
    last_seen: Instant,
    applied: LogIndex,
    data_epoch: Epoch,
    /// Marked down by the driver, with the cause it saw (pod deleted,
    /// process exited); sticky for this incarnation until the primary admits
    /// it again after a resync.
    down_cause: Option<String>,
    /// Why the driver last thought it unresponsive (not sticky: its next
    /// heartbeat clears it).
    suspect_cause: Option<String>,
    /// When this incarnation was first heard from.
    first_heard: Instant,
}

/// How a tier's coordinator came by its knowledge of the tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// No durable facts: wait for every member, then trust the newest data.
    Bootstrapping,
    /// Continued from durable facts: until `until` (`None`: woken from
    /// hibernation, when no member runs yet, so no deadline), or until every
    /// member of the recorded in-sync set has been heard from, change nothing
    /// (a member not yet heard from is unknown, not down).
    Resuming { until: Option<Instant> },
    /// Acting on what it has seen.
    Settled,
}

#[derive(Debug)]
struct TierState {
    tier: Role,
    expected_members: usize,
    epoch: Epoch,
    primary: Option<Ordinal>,
    /// Each in-sync member with the incarnation it was in sync as.
    in_sync: BTreeMap<Ordinal, u64>,
    members: BTreeMap<Ordinal, MemberRecord>,
    memory: Memory,
    /// A change was decided while the tier withheld its topology (see
    /// [`TierState::withholding`]); it is published when that ends.
    held_back: bool,
    /// The member a planned switchover asks for, while it asks.
    preferred: Option<Ordinal>,
    /// Members the operator fenced: never live, never elected or admitted.
    fenced: BTreeSet<Ordinal>,
    /// Frozen while the store hibernates (see the module comment).
    hibernating: bool,
}

/// The coordinator of every replicated tier of one store.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    tiers: BTreeMap<Role, TierState>,
}

impl Coordinator {
    /// A coordinator for `tiers`, each with the number of members it expects,
    /// continuing from `durable` (the last saved state; empty for a new
    /// store, or if the state was lost).
    ///
    /// A tier with a record starts at the recorded epoch, so everything it
    /// publishes is above every epoch ever published, and only a member of
    /// the recorded in-sync set can be elected. A tier without one waits for
    /// every expected member and elects the one with the newest data.
    pub fn new(
        config: CoordinatorConfig,
        tiers: &[(Role, usize)],
        durable: &DurableState,
        now: Instant,
    ) -> Self {
        let resume_until = now + config.liveness_timeout();
        let tiers = tiers
            .iter()
            .map(|&(tier, expected_members)| {
                let mut state = TierState {
                    tier,
                    expected_members,
                    epoch: 0,
                    primary: None,
                    in_sync: BTreeMap::new(),
                    members: BTreeMap::new(),
                    memory: Memory::Bootstrapping,
                    held_back: false,
                    preferred: None,
                    fenced: BTreeSet::new(),
                    hibernating: false,
                };
                match durable.get(&tier) {
                    Some(record) if !record.in_sync.is_empty() => {
                        state.resume_from(record, resume_until);
                    }
                    // A record that names nobody in sync cannot elect
                    // anyone: bootstrap, but above its epoch.
                    Some(record) => state.epoch = record.epoch,
                    None => {}
                }
                (tier, state)
            })
            .collect();
        Self { config, tiers }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The members each tier expects, as configured now.
    pub fn expected_members(&self) -> Vec<(Role, usize)> {
        self.tiers
            .values()
            .map(|state| (state.tier, state.expected_members))
            .collect()
    }

    /// Takes new settings: the heartbeat settings apply from now on; each
    /// tier expects its new member count, and members at or above it leave
    /// the in-sync set and the topology (a scale-down), except the primary
    /// and the last in-sync member, which are kept until they no longer are.
    /// Returns the changes it caused; nothing else is reset.
    pub fn reconfigure(
        &mut self,
        config: CoordinatorConfig,
        tiers: &[(Role, usize)],
        now: Instant,
    ) -> Vec<Published> {
        self.config = config;
        let timeout = config.liveness_timeout();
        for &(tier, expected) in tiers {
            if let Some(state) = self.tiers.get_mut(&tier) {
                state.expected_members = expected;
            }
        }
        self.tiers
            .values_mut()
            .filter_map(|state| state.settle(now, timeout, Vec::new()))
            .collect()
    }

    /// How many pods `tier` must keep: its expected members, or more while a
    /// member above that count is still in its topology (the primary or the
    /// last in-sync member of a scale-down).
    pub fn kept_members(&self, tier: Role) -> Option<usize> {
        let state = self.tiers.get(&tier)?;
        let highest = state
            .members
            .keys()
            .next_back()
            .map_or(0, |&o| o as usize + 1);
        Some(state.expected_members.max(highest))
    }

    /// What must be saved before the current topologies are published.
    pub fn durable_state(&self) -> DurableState {
        self.tiers
            .values()
            .filter(|state| state.memory != Memory::Bootstrapping)
            .map(|state| (state.tier, state.record()))
            .collect()
    }

    /// Goes back to `durable` (the last state that was saved) after a save
    /// failed: nothing decided since may be published. Members heard from
    /// are kept; the next tick decides again.
    pub fn roll_back(&mut self, durable: &DurableState) {
        for state in self.tiers.values_mut() {
            match durable.get(&state.tier) {
                Some(record) => {
                    state.epoch = record.epoch;
                    state.primary = record.primary;
                    state.in_sync = record.in_sync.clone();
                    if state.memory == Memory::Bootstrapping {
                        state.memory = Memory::Settled;
                    }
                }
                None => {
                    state.primary = None;
                    state.in_sync.clear();
                    state.memory = Memory::Bootstrapping;
                }
            }
        }
    }

    /// The current topology of `tier`, for its members; `None` for an
    /// unknown tier, and while a resumed tier has not heard from every
    /// recorded in-sync member: a topology lists only members heard from,
    /// so it would hide an in-sync member from the primary, which would
    /// then acknowledge writes that member lacks (the simulator's seed 0 of
    /// `sim::tests`, found with `cargo run --example simulate`). The
    /// members keep the topology they have until then.
    pub fn topology(&self, tier: Role, now: Instant) -> Option<Topology> {
        self.tiers
            .get(&tier)
            .filter(|state| !state.withholding())
            .map(|state| state.topology(now, self.config.liveness_timeout()))
    }

    /// The current topology of every tier, for status (see
    /// [`Coordinator::topology`] for what members are told).
    pub fn topologies(&self, now: Instant) -> Vec<Topology> {
        self.tiers
            .values()
            .map(|state| state.topology(now, self.config.liveness_timeout()))
            .collect()
    }

    /// What every tier is doing, in words where it is waiting.
    pub fn status(&self, now: Instant) -> Vec<TierStatus> {
        let timeout = self.config.liveness_timeout();
        self.tiers
            .values()
            .map(|state| TierStatus {
                tier: state.tier,
                epoch: state.epoch,
                primary: state.primary,
                in_sync: state.in_sync.keys().copied().collect(),
                waiting: state.waiting(now, timeout),
            })
            .collect()
    }

    /// Records a heartbeat; returns the change it caused, if any.
    pub fn heartbeat(&mut self, heartbeat: &Heartbeat, now: Instant) -> Option<Published> {
        let timeout = self.config.liveness_timeout();
        let state = self.tiers.get_mut(&heartbeat.tier)?;
        let mut reasons = Vec::new();
        let ordinal = heartbeat.ordinal;
        // A member removed by a scale-down (its pod is terminating) is not
        // taken back; a hibernating tier hears nobody.
        if !state.is_expected(ordinal) || state.hibernating {
            return None;
        }
        let restarted = state
            .members
            .get(&ordinal)
            .map(|m| m.incarnation)
            .or_else(|| state.in_sync.get(&ordinal).copied())
            .is_some_and(|known| known != heartbeat.incarnation);
        if restarted || heartbeat.phase == Phase::Joining {
            state.leave_in_sync(ordinal, "restarted", &mut reasons);
        }
        if let Some(recorded) = state.in_sync.get_mut(&ordinal)
            && *recorded != heartbeat.incarnation
        {
            // The last in-sync member restarted: its disk still holds every
            // acknowledged write, so it stays, as its new incarnation. The
            // epoch rises so that no two processes ever lead in one epoch.
            *recorded = heartbeat.incarnation;
            reasons.push(format!(
                "{}-{ordinal} restarted; it stays in sync as the only member holding every acknowledged write",
                state.tier
            ));
        }
        // Epochs only rise: never publish one a member has already seen (a
        // coordinator that lost its durable state learns them from here).
        state.epoch = state.epoch.max(heartbeat.epoch).max(heartbeat.data_epoch);
        // Down stays down for the incarnation that was marked down.
        let same = state
            .members
            .get(&ordinal)
            .filter(|m| m.incarnation == heartbeat.incarnation);
        let down_cause = same.and_then(|m| m.down_cause.clone());
        let first_heard = same.map_or(now, |m| m.first_heard);
        state.members.insert(
            ordinal,
            MemberRecord {
                incarnation: heartbeat.incarnation,
                peer: heartbeat.peer.clone(),
                public: heartbeat.public.clone(),
                last_seen: now,
                applied: heartbeat.applied,
                data_epoch: heartbeat.data_epoch,
                down_cause,
                suspect_cause: None,
                first_heard,
            },
        );
        state.settle(now, timeout, reasons)
    }

    /// Marks a member down at once (its pod is gone or being deleted, or its
    /// process exited), so failover need not wait for missed heartbeats. It
    /// stays down until it rejoins: a heartbeat from a new incarnation, or the
    /// primary admitting it after a resync; heartbeats of this incarnation
    /// (a terminating pod still talks) keep it down. `cause` says what the
    /// driver saw, for the change's reason ("pod is being deleted");
    /// `observed_at` is when it saw it: an incarnation first heard after that
    /// is a newer process than the one seen down, and is left alone.
    pub fn mark_down(
        &mut self,
        tier: Role,
        ordinal: Ordinal,
        cause: &str,
        observed_at: Instant,
        now: Instant,
    ) -> Option<Published> {
        let timeout = self.config.liveness_timeout();
        let state = self.tiers.get_mut(&tier)?;
        let member = state.members.get_mut(&ordinal)?;
        if member.down_cause.is_some() || member.first_heard > observed_at {
            return None;
        }
        member.down_cause = Some(cause.to_owned());
        state.settle(now, timeout, Vec::new())
    }

    /// Treats a member as silent now (its pod's container is not running:
    /// a status that may lag behind a process that just started), so
    /// failover need not wait for missed heartbeats; unlike
    /// [`Self::mark_down`] its next heartbeat brings it back.
    pub fn mark_unresponsive(
        &mut self,
        tier: Role,
        ordinal: Ordinal,
        cause: &str,
        now: Instant,
    ) -> Option<Published> {
        let timeout = self.config.liveness_timeout();
        let state = self.tiers.get_mut(&tier)?;
        let member = state.members.get_mut(&ordinal)?;
        let long_ago = now.checked_sub(timeout + Duration::from_secs(1))?;
        if member.down_cause.is_some() || member.last_seen <= long_ago {
            return None;
        }
        member.last_seen = long_ago;
        member.suspect_cause = Some(cause.to_owned());
        state.settle(now, timeout, Vec::new())
    }

    /// Whether the driver marked `ordinal` down and it has not rejoined.
    pub fn is_marked_down(&self, tier: Role, ordinal: Ordinal) -> bool {
        self.tiers
            .get(&tier)
            .and_then(|state| state.members.get(&ordinal))
            .is_some_and(|m| m.down_cause.is_some())
    }

    /// A planned switchover: while `target` is `Some`, the rule prefers that
    /// member whenever it is healthy, so the primary moves to it now by a
    /// clean handover (one new epoch; the old primary stops taking writes);
    /// `None` ends the request and the plain rule applies again. Refused,
    /// and nothing changed, unless the target is live and in sync.
    pub fn switch_over(
        &mut self,
        tier: Role,
        target: Option<Ordinal>,
        now: Instant,
    ) -> Result<Option<Published>, SwitchoverRefused> {
        let timeout = self.config.liveness_timeout();
        let Some(state) = self.tiers.get_mut(&tier) else {
            return Ok(None);
        };
        if let Some(target) = target {
            switchover::check(&state.candidates(now, timeout), state.primary, target)?;
        }
        state.preferred = target;
        Ok(state.settle(now, timeout, Vec::new()))
    }

    /// The member a switchover asks for in `tier`, if any.
    pub fn switchover_target(&self, tier: Role) -> Option<Ordinal> {
        self.tiers.get(&tier).and_then(|state| state.preferred)
    }

    /// Fences exactly `fenced` of `tier` (an empty set unfences everyone):
    /// a fenced member is not live, so it leaves the in-sync set and a fenced
    /// primary is replaced at once; see the module comment.
    pub fn fence(
        &mut self,
        tier: Role,
        fenced: &BTreeSet<Ordinal>,
        now: Instant,
    ) -> Option<Published> {
        let timeout = self.config.liveness_timeout();
        let state = self.tiers.get_mut(&tier)?;
        if &state.fenced == fenced {
            return None;
        }
        state.fenced = fenced.clone();
        state.settle(now, timeout, Vec::new())
    }

    /// The members of `tier` that are fenced.
    pub fn fenced(&self, tier: Role) -> BTreeSet<Ordinal> {
        self.tiers
            .get(&tier)
            .map(|state| state.fenced.clone())
            .unwrap_or_default()
    }

    /// Hibernates (`on`) or wakes every tier; returns the changes published
    /// on the way in (the in-sync set shrinking to the primary). See the
    /// module comment.
    pub fn hibernate(&mut self, on: bool, now: Instant) -> Vec<Published> {
        let timeout = self.config.liveness_timeout();
        let mut changes = Vec::new();
        for state in self.tiers.values_mut() {
            if state.hibernating == on {
                continue;
            }
            if on {
                changes.extend(state.shrink_to_primary(now, timeout));
                state.hibernating = true;
            } else {
                state.hibernating = false;
                state.members.clear();
                if state.memory != Memory::Bootstrapping {
                    state.memory = Memory::Resuming { until: None };
                }
            }
        }
        changes
    }

    /// Whether the tiers are hibernating.
    pub fn is_hibernating(&self) -> bool {
        self.tiers.values().any(|state| state.hibernating)
    }

    /// Expires silent members and re-applies the rule; call it a few times
    /// per heartbeat interval.
    pub fn tick(&mut self, now: Instant) -> Vec<Published> {
        let timeout = self.config.liveness_timeout();
        self.tiers
            .values_mut()
            .filter_map(|state| state.settle(now, timeout, Vec::new()))
            .collect()
    }

    /// The primary's request to change the in-sync set.
    pub fn alter_in_sync(
        &mut self,
        request: &AlterInSync,
        now: Instant,
    ) -> Result<Published, AlterError> {
        let timeout = self.config.liveness_timeout();
        let state = self
            .tiers
            .get_mut(&request.tier)
            .ok_or(AlterError::UnknownTier(request.tier))?;
        if state.hibernating {
            return Err(AlterError::Hibernating);
        }
        if request.epoch != state.epoch {
            return Err(AlterError::StaleEpoch {
                asked: request.epoch,
                current: state.epoch,
            });
        }
        if state.primary != Some(request.primary) {
            return Err(AlterError::NotPrimary(request.primary));
        }
        // A primary not heard from (a restarted coordinator has not heard
        // it yet) would not be named in the topology this change publishes,
        // so it could not adopt it and would go on without the member it
        // asked to add (simulator seed 237).
        if !state.is_live(request.primary, now, timeout) {
            return Err(AlterError::NotLive(request.primary));
        }
        if let Some(&unheard) = state.unheard_in_sync().first()
            && state.withholding()
        {
            return Err(AlterError::NotLive(unheard));
        }
        let wanted: BTreeSet<Ordinal> = request.in_sync.iter().copied().collect();
        if !wanted.contains(&request.primary) {
            return Err(AlterError::MissingPrimary);
        }
        let current: BTreeSet<Ordinal> = state.in_sync.keys().copied().collect();
        // A member marked down may be admitted if it is heard from: the
        // primary has just brought it up to date (a completed resync), which
        // is how it rejoins without restarting.
        if let Some(&added) = wanted
            .difference(&current)
            .find(|&&o| !state.is_heard(o, now, timeout))
        {
            return Err(AlterError::NotLive(added));
        }
        if let Some(&fenced) = wanted
            .difference(&current)
            .find(|o| state.fenced.contains(o))
        {
            return Err(AlterError::Fenced(fenced));
        }
        if let Some((&added, _)) = request
            .added
            .iter()
            .find(|&(&o, &incarnation)| state.incarnation_of(o) != incarnation)
        {
            return Err(AlterError::Restarted(added));
        }
        for ordinal in wanted.difference(&current) {
            if let Some(member) = state.members.get_mut(ordinal) {
                member.down_cause = None;
            }
        }
        let reason = describe_in_sync_change(state.tier, &current, &wanted);
        state.in_sync = wanted
            .into_iter()
            .map(|ordinal| (ordinal, state.incarnation_of(ordinal)))
            .collect();
        state.epoch += 1;
        Ok(Published {
            topology: state.topology(now, timeout),
            reason,
            failover: false,
            previous_primary: None,
        })
    }
}

impl TierState {
    fn resume_from(&mut self, record: &TierRecord, until: Instant) {
        self.epoch = record.epoch;
        self.primary = record.primary;
        self.in_sync = record.in_sync.clone();
        self.memory = Memory::Resuming { until: Some(until) };
    }

    /// The in-sync set becomes the primary alone (one new epoch), before the
    /// members stop: on waking only the primary is waited for, and the rest
    /// resync from it.
    fn shrink_to_primary(&mut self, now: Instant, timeout: Duration) -> Option<Published> {
        let primary = self.primary?;
        if self.in_sync.len() <= 1 || !self.in_sync.contains_key(&primary) {
            return None;
        }
        self.in_sync.retain(|&ordinal, _| ordinal == primary);
        self.epoch += 1;
        Some(Published {
            topology: self.topology(now, timeout),
            reason: format!(
                "{} hibernating: {}-{primary} is kept as the only in-sync member; the others resync when the store resumes",
                self.tier, self.tier
            ),
            failover: false,
            previous_primary: None,
        })
    }

    fn record(&self) -> TierRecord {
        TierRecord {
            epoch: self.epoch,
            primary: self.primary,
            in_sync: self.in_sync.clone(),
        }
    }

    /// Below the expected count, or still kept (see [`Self::remove_scaled_down`]).
    fn is_expected(&self, ordinal: Ordinal) -> bool {
        (ordinal as usize) < self.expected_members || self.members.contains_key(&ordinal)
    }

    /// Removes the members at or above the expected count from the in-sync
    /// set and the topology, but never the primary, nor the last in-sync
    /// member (it holds the only copy of the latest acknowledged writes).
    fn remove_scaled_down(&mut self) -> Vec<String> {
        let above: Vec<Ordinal> = self
            .members
            .keys()
            .chain(self.in_sync.keys())
            .copied()
            .filter(|&o| o as usize >= self.expected_members)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .rev()
            .collect();
        let mut reasons = Vec::new();
        for ordinal in above {
            let last_in_sync = self.in_sync.len() == 1 && self.in_sync.contains_key(&ordinal);
            if self.primary == Some(ordinal) || last_in_sync {
                continue;
            }
            self.members.remove(&ordinal);
            self.in_sync.remove(&ordinal);
            reasons.push(format!(
                "{}-{ordinal} removed: the tier is scaled down to {} members",
                self.tier, self.expected_members
            ));
        }
        reasons
    }

    fn incarnation_of(&self, ordinal: Ordinal) -> u64 {
        self.members.get(&ordinal).map_or(0, |m| m.incarnation)
    }

    /// Heard from within the liveness timeout and not marked down.
    fn is_live(&self, ordinal: Ordinal, now: Instant, timeout: Duration) -> bool {
        !self.fenced.contains(&ordinal)
            && self.members.get(&ordinal).is_some_and(|m| {
                m.down_cause.is_none() && now.duration_since(m.last_seen) <= timeout
            })
    }

    /// How a member that is not live was found down, in words.
    fn why_down(&self, ordinal: Ordinal) -> String {
        if self.fenced.contains(&ordinal) {
            return "is fenced".to_owned();
        }
        let member = self.members.get(&ordinal);
        match member.and_then(|m| m.down_cause.as_deref().or(m.suspect_cause.as_deref())) {
            Some(cause) => format!("is down ({cause})"),
            None => "stopped heartbeating".to_owned(),
        }
    }

    /// Heard from within the liveness timeout, marked down or not.
    fn is_heard(&self, ordinal: Ordinal, now: Instant, timeout: Duration) -> bool {
        self.members
            .get(&ordinal)
            .is_some_and(|m| now.duration_since(m.last_seen) <= timeout)
    }

    /// Removes `ordinal` from the in-sync set unless it is the last member
    /// there (see the module comment).
    fn leave_in_sync(&mut self, ordinal: Ordinal, why: &str, reasons: &mut Vec<String>) {
        if self.in_sync.len() > 1 && self.in_sync.remove(&ordinal).is_some() {
            reasons.push(format!(
                "{}-{ordinal} {why}, left the in-sync set",
                self.tier
            ));
        }
    }

    /// In-sync members a resuming coordinator has not heard from yet.
    fn unheard_in_sync(&self) -> Vec<Ordinal> {
        self.in_sync
            .keys()
            .copied()
            .filter(|o| !self.members.contains_key(o))
            .collect()
    }

    /// True while a resumed tier has not heard from every recorded in-sync
    /// member: a topology lists only members heard from, so any topology
    /// now would hide an in-sync member from the primary. Nothing is
    /// published or answered until then.
    fn withholding(&self) -> bool {
        matches!(self.memory, Memory::Resuming { .. }) && !self.unheard_in_sync().is_empty()
    }

    /// Ends a resumed tier's wait once every recorded in-sync member has
    /// been heard from, or the wait is over.
    fn end_resume_if_due(&mut self, now: Instant) {
        if let Memory::Resuming { until } = self.memory
            && (until.is_some_and(|until| now >= until) || self.unheard_in_sync().is_empty())
        {
            self.memory = Memory::Settled;
        }
    }

    /// Applies liveness, bootstrap and the rule; bumps the epoch on change.
    fn settle(
        &mut self,
        now: Instant,
        timeout: Duration,
        mut reasons: Vec<String>,
    ) -> Option<Published> {
        if self.hibernating {
            return None;
        }
        reasons.extend(self.remove_scaled_down());
        self.end_resume_if_due(now);
        if self.held_back && !self.withholding() {
            // Members may hold a topology pushed before the restart that the
            // held-back changes superseded: a new epoch tells them all.
            self.held_back = false;
            reasons.push(format!(
                "{} resumed: publishing the changes decided while waiting for its in-sync members",
                self.tier
            ));
        }
        if self.memory == Memory::Bootstrapping {
            self.try_bootstrap(now, timeout, &mut reasons);
        }
        let mut change = PrimaryChange::default();
        match self.memory {
            Memory::Bootstrapping => {}
            // Not everyone is heard from: elect nobody yet (a lower in-sync
            // ordinal may still come), but a recorded primary that left the
            // in-sync set (it restarted) must not stay primary.
            Memory::Resuming { .. } => {
                if let Some(old) = self.primary.filter(|p| !self.in_sync.contains_key(p)) {
                    self.primary = None;
                    reasons.push(format!(
                        "{} primary {old} left the in-sync set; waiting for the other in-sync members",
                        self.tier
                    ));
                    change = PrimaryChange {
                        failover: true,
                        previous_primary: Some(old),
                    };
                }
            }
            Memory::Settled => {
                let silent: Vec<Ordinal> = self
                    .in_sync
                    .keys()
                    .copied()
                    .filter(|&o| !self.is_live(o, now, timeout))
                    .collect();
                for ordinal in silent {
                    let why = self.why_down(ordinal);
                    self.leave_in_sync(ordinal, &why, &mut reasons);
                }
                change = self.apply_rule(now, timeout, &mut reasons);
                // A primary kept through a scale-down may just have moved.
                reasons.extend(self.remove_scaled_down());
            }
        }
        if reasons.is_empty() {
            return None;
        }
        self.epoch += 1;
        if self.withholding() {
            // Decided and kept (saved with the next change published), but
            // not published: see `withholding` (simulator seed 343).
            self.held_back = true;
            return None;
        }
        Some(Published {
            topology: self.topology(now, timeout),
            reason: reasons.join("; "),
            failover: change.failover,
            previous_primary: change.previous_primary,
        })
    }

    fn candidates(&self, now: Instant, timeout: Duration) -> Vec<Candidate> {
        self.members
            .keys()
            .map(|&ordinal| Candidate {
                ordinal,
                live: self.is_live(ordinal, now, timeout),
                in_sync: self.in_sync.contains_key(&ordinal),
            })
            .collect()
    }

    /// Elects the lowest live in-sync member (or the one a switchover asks
    /// for) if that is not the primary.
    fn apply_rule(
        &mut self,
        now: Instant,
        timeout: Duration,
        reasons: &mut Vec<String>,
    ) -> PrimaryChange {
        let desired =
            switchover::choose_primary_preferring(&self.candidates(now, timeout), self.preferred);
        let previous = self.primary;
        if desired == previous {
            return PrimaryChange::default();
        }
        let failover = previous
            .is_some_and(|p| !self.is_live(p, now, timeout) || !self.in_sync.contains_key(&p));
        let by_switchover = !failover && previous.is_some() && desired == self.preferred;
        // A new primary starts a new lineage: everyone else resyncs. With no
        // healthy member, the in-sync set stays: the tier waits for it.
        if let Some(new) = desired {
            self.in_sync = BTreeMap::from([(new, self.incarnation_of(new))]);
        }
        reasons.push(match (previous, desired) {
            (Some(old), Some(new)) if by_switchover => format!(
                "{} primary moved from {old} to {new} by switchover",
                self.tier
            ),
            (Some(old), Some(new)) => format!("{} primary moved from {old} to {new}", self.tier),
            (None, Some(new)) => format!("{} primary is {new}", self.tier),
            (Some(old), None) => format!(
                "{} lost its primary {old} ({}-{old} {}); no in-sync member is live",
                self.tier,
                self.tier,
                self.why_down(old)
            ),
            (None, None) => format!("{} has no primary", self.tier),
        });
        self.primary = desired;
        PrimaryChange {
            failover,
            previous_primary: previous,
        }
    }

    /// With no durable facts, waits for every expected member, then trusts
    /// the member whose data is newest: only with everyone heard from can no
    /// member that the others show to be behind be elected.
    fn try_bootstrap(&mut self, now: Instant, timeout: Duration, reasons: &mut Vec<String>) {
        let live: Vec<(&Ordinal, &MemberRecord)> = self
            .members
            .iter()
            .filter(|&(&o, _)| self.is_live(o, now, timeout))
            .collect();
        if live.is_empty() || live.len() < self.expected_members {
            return;
        }
        let newest = live
            .iter()
            .map(|(_, m)| (m.data_epoch, m.applied))
            .max()
            .unwrap_or_default();
        let chosen = live
            .iter()
            .filter(|(_, m)| (m.data_epoch, m.applied) == newest)
            .map(|(o, m)| (**o, m.incarnation))
            .min();
        if let Some((chosen, incarnation)) = chosen {
            self.in_sync = BTreeMap::from([(chosen, incarnation)]);
            self.memory = Memory::Settled;
            reasons.push(format!(
                "{} bootstrapped from {}-{chosen} (data epoch {}, index {})",
                self.tier, self.tier, newest.0, newest.1
            ));
        }
    }

    /// Why the tier is not acting or has no primary, in words.
    fn waiting(&self, now: Instant, timeout: Duration) -> Option<String> {
        let tier = self.tier;
        let names = |ordinals: &[Ordinal]| {
            ordinals
                .iter()
                .map(|o| format!("{tier}-{o}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.memory {
            Memory::Bootstrapping => {
                let heard: Vec<Ordinal> = self
                    .members
                    .keys()
                    .copied()
                    .filter(|&o| self.is_live(o, now, timeout))
                    .collect();
                Some(format!(
                    "no durable coordinator state for {tier}: waiting for all {} members before electing the one with the newest data (live: [{}])",
                    self.expected_members,
                    names(&heard)
                ))
            }
            Memory::Resuming { .. } => Some(format!(
                "resumed {tier} at epoch {} from the durable state: waiting for in-sync members [{}]",
                self.epoch,
                names(&self.unheard_in_sync())
            )),
            Memory::Settled if self.primary.is_none() => {
                let in_sync: Vec<Ordinal> = self.in_sync.keys().copied().collect();
                Some(format!(
                    "no live in-sync member: waiting for [{}], which hold every acknowledged write",
                    names(&in_sync)
                ))
            }
            Memory::Settled => None,
        }
    }

    fn topology(&self, now: Instant, timeout: Duration) -> Topology {
        Topology {
            tier: self.tier,
            epoch: self.epoch,
            primary: self.primary,
            members: self
                .members
                .iter()
                .map(|(&ordinal, m)| TopologyMember {
                    ordinal,
                    incarnation: m.incarnation,
                    peer: m.peer.clone(),
                    public: m.public.clone(),
                    live: self.is_live(ordinal, now, timeout),
                    in_sync: self.in_sync.contains_key(&ordinal),
                })
                .collect(),
        }
    }
}

/// How the rule changed the primary, for [`Published`].
#[derive(Debug, Default)]
struct PrimaryChange {
    failover: bool,
    previous_primary: Option<Ordinal>,
}

fn describe_in_sync_change(tier: Role, old: &BTreeSet<Ordinal>, new: &BTreeSet<Ordinal>) -> String {
    let added: Vec<String> = new.difference(old).map(|o| format!("{tier}-{o}")).collect();
    let dropped: Vec<String> = old.difference(new).map(|o| format!("{tier}-{o}")).collect();
    format!(
        "primary changed the {tier} in-sync set: added [{}], dropped [{}]",
        added.join(", "),
        dropped.join(", ")
    )
}

#[cfg(test)]
mod tests;
