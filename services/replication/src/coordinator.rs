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
//! 3. The rule ([`crate::rule::choose_primary`]) picks a different primary:
//!    the lowest live in-sync ordinal. Every other member then leaves the
//!    in-sync set and resyncs from the new primary, so no replica ever keeps
//!    a write the new primary does not have.
//!
//! Safety rests on one invariant: the primary acknowledges a write only when
//! every member of the in-sync set has made it durable, and only the
//! coordinator grows that set, on the primary's request, while the primary is
//! already replicating to the newcomer. So every in-sync member holds every
//! acknowledged write, and the rule only ever elects in-sync members.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bookstore_core::cluster::{Ordinal, Role};

use crate::rule::{Candidate, choose_primary};
use crate::topology::{AlterInSync, Epoch, Heartbeat, LogIndex, Phase, Topology, TopologyMember};

/// How often members heartbeat, as in the original.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Heartbeats a member may miss before it counts as down. The original used
/// one (its timeout equalled the interval), so a busy member flapped; three
/// leave room for scheduling delays under load.
pub const DEFAULT_MISS_THRESHOLD: u32 = 3;
/// How long a freshly started coordinator waits for every member of a tier
/// before it picks a primary from the members it has heard from.
pub const DEFAULT_BOOTSTRAP_WAIT: Duration = Duration::from_secs(10);

/// The coordinator's settings.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    pub heartbeat_interval: Duration,
    pub miss_threshold: u32,
    pub bootstrap_wait: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            miss_threshold: DEFAULT_MISS_THRESHOLD,
            bootstrap_wait: DEFAULT_BOOTSTRAP_WAIT,
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
}

#[derive(Debug, Clone)]
struct MemberRecord {
    incarnation: u64,
    peer: String,
    public: String,
    last_seen: Instant,
    applied: LogIndex,
    data_epoch: Epoch,
}

#[derive(Debug)]
struct TierState {
    tier: Role,
    expected_members: usize,
    epoch: Epoch,
    primary: Option<Ordinal>,
    in_sync: BTreeSet<Ordinal>,
    members: BTreeMap<Ordinal, MemberRecord>,
    bootstrapped: bool,
}

/// The coordinator of every replicated tier of one store.
#[derive(Debug)]
pub struct Coordinator {
    config: CoordinatorConfig,
    started: Instant,
    tiers: BTreeMap<Role, TierState>,
}

impl Coordinator {
    /// A coordinator for `tiers`, each with the number of members it expects.
    pub fn new(config: CoordinatorConfig, tiers: &[(Role, usize)], now: Instant) -> Self {
        let tiers = tiers
            .iter()
            .map(|&(tier, expected_members)| {
                let state = TierState {
                    tier,
                    expected_members,
                    epoch: 0,
                    primary: None,
                    in_sync: BTreeSet::new(),
                    members: BTreeMap::new(),
                    bootstrapped: false,
                };
                (tier, state)
            })
            .collect();
        Self {
            config,
            started: now,
            tiers,
        }
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.config
    }

    /// The current topology of `tier`.
    pub fn topology(&self, tier: Role, now: Instant) -> Option<Topology> {
        self.tiers
            .get(&tier)
            .map(|state| state.topology(now, self.config.liveness_timeout()))
    }

    /// The current topology of every tier.
    pub fn topologies(&self, now: Instant) -> Vec<Topology> {
        self.tiers
            .values()
            .map(|state| state.topology(now, self.config.liveness_timeout()))
            .collect()
    }

    /// Records a heartbeat; returns the change it caused, if any.
    pub fn heartbeat(&mut self, heartbeat: &Heartbeat, now: Instant) -> Option<Published> {
        let timeout = self.config.liveness_timeout();
        let bootstrap_due = now.duration_since(self.started) >= self.config.bootstrap_wait;
        let state = self.tiers.get_mut(&heartbeat.tier)?;
        let mut reasons = Vec::new();
        let restarted = state
            .members
            .get(&heartbeat.ordinal)
            .is_some_and(|m| m.incarnation != heartbeat.incarnation);
        if restarted || heartbeat.phase == Phase::Joining {
            state.leave_in_sync(heartbeat.ordinal, "restarted", &mut reasons);
        }
        // A coordinator that starts over (a new operator leader, a restarted
        // `bookstore up`) must publish epochs above any its members have seen,
        // or they would refuse its topologies as stale.
        if !state.bootstrapped {
            state.epoch = state.epoch.max(heartbeat.epoch);
        }
        state.members.insert(
            heartbeat.ordinal,
            MemberRecord {
                incarnation: heartbeat.incarnation,
                peer: heartbeat.peer.clone(),
                public: heartbeat.public.clone(),
                last_seen: now,
                applied: heartbeat.applied,
                data_epoch: heartbeat.data_epoch,
            },
        );
        state.settle(now, timeout, bootstrap_due, reasons)
    }

    /// Marks a member down at once (its pod was deleted or is not Ready), so
    /// failover need not wait for missed heartbeats; its next heartbeat,
    /// if any, brings it back.
    pub fn mark_down(&mut self, tier: Role, ordinal: Ordinal, now: Instant) -> Option<Published> {
        let timeout = self.config.liveness_timeout();
        let bootstrap_due = now.duration_since(self.started) >= self.config.bootstrap_wait;
        let state = self.tiers.get_mut(&tier)?;
        let member = state.members.get_mut(&ordinal)?;
        let long_ago = now.checked_sub(timeout + Duration::from_secs(1))?;
        if member.last_seen <= long_ago {
            return None;
        }
        member.last_seen = long_ago;
        state.settle(now, timeout, bootstrap_due, Vec::new())
    }

    /// Expires silent members and re-applies the rule; call it a few times
    /// per heartbeat interval.
    pub fn tick(&mut self, now: Instant) -> Vec<Published> {
        let timeout = self.config.liveness_timeout();
        let bootstrap_due = now.duration_since(self.started) >= self.config.bootstrap_wait;
        self.tiers
            .values_mut()
            .filter_map(|state| state.settle(now, timeout, bootstrap_due, Vec::new()))
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
        if request.epoch != state.epoch {
            return Err(AlterError::StaleEpoch {
                asked: request.epoch,
                current: state.epoch,
            });
        }
        if state.primary != Some(request.primary) {
            return Err(AlterError::NotPrimary(request.primary));
        }
        let wanted: BTreeSet<Ordinal> = request.in_sync.iter().copied().collect();
        if !wanted.contains(&request.primary) {
            return Err(AlterError::MissingPrimary);
        }
        if let Some(&added) = wanted
            .difference(&state.in_sync)
            .find(|&&o| !state.is_live(o, now, timeout))
        {
            return Err(AlterError::NotLive(added));
        }
        let reason = describe_in_sync_change(state.tier, &state.in_sync, &wanted);
        state.in_sync = wanted;
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
    fn is_live(&self, ordinal: Ordinal, now: Instant, timeout: Duration) -> bool {
        self.members
            .get(&ordinal)
            .is_some_and(|m| now.duration_since(m.last_seen) <= timeout)
    }

    /// Removes `ordinal` from the in-sync set unless it is the last member
    /// there (see the module comment).
    fn leave_in_sync(&mut self, ordinal: Ordinal, why: &str, reasons: &mut Vec<String>) {
        if self.in_sync.len() > 1 && self.in_sync.remove(&ordinal) {
            reasons.push(format!(
                "{}-{ordinal} {why}, left the in-sync set",
                self.tier
            ));
        }
    }

    /// Applies liveness, bootstrap and the rule; bumps the epoch on change.
    fn settle(
        &mut self,
        now: Instant,
        timeout: Duration,
        bootstrap_due: bool,
        mut reasons: Vec<String>,
    ) -> Option<Published> {
        let silent: Vec<Ordinal> = self
            .in_sync
            .iter()
            .copied()
            .filter(|&o| !self.is_live(o, now, timeout))
            .collect();
        for ordinal in silent {
            self.leave_in_sync(ordinal, "stopped heartbeating", &mut reasons);
        }
        if !self.bootstrapped {
            self.try_bootstrap(now, timeout, bootstrap_due, &mut reasons);
        }
        let candidates: Vec<Candidate> = self
            .members
            .keys()
            .map(|&ordinal| Candidate {
                ordinal,
                live: self.is_live(ordinal, now, timeout),
                in_sync: self.in_sync.contains(&ordinal),
            })
            .collect();
        let desired = choose_primary(&candidates);
        let previous_primary = self.primary;
        let primary_changed = self.bootstrapped && desired != previous_primary;
        let mut failover = false;
        if primary_changed {
            failover = previous_primary.is_some_and(|p| !self.is_live(p, now, timeout))
                || previous_primary.is_some_and(|p| !self.in_sync.contains(&p));
            // A new primary starts a new lineage: everyone else resyncs. With
            // no healthy member, the in-sync set stays: the tier waits for it.
            if let Some(new) = desired {
                self.in_sync = BTreeSet::from([new]);
            }
            reasons.push(match (previous_primary, desired) {
                (Some(old), Some(new)) => {
                    format!("{} primary moved from {old} to {new}", self.tier)
                }
                (None, Some(new)) => format!("{} primary is {new}", self.tier),
                (Some(old), None) => format!(
                    "{} lost its primary {old}; no in-sync member is live",
                    self.tier
                ),
                (None, None) => format!("{} has no primary", self.tier),
            });
            self.primary = desired;
        }
        if reasons.is_empty() {
            return None;
        }
        self.epoch += 1;
        Some(Published {
            topology: self.topology(now, timeout),
            reason: reasons.join("; "),
            failover,
            previous_primary: primary_changed.then_some(previous_primary).flatten(),
        })
    }

    /// With no memory of the tier, waits for every expected member (or the
    /// bootstrap deadline), then trusts the member whose data is newest.
    fn try_bootstrap(
        &mut self,
        now: Instant,
        timeout: Duration,
        bootstrap_due: bool,
        reasons: &mut Vec<String>,
    ) {
        let live: Vec<(&Ordinal, &MemberRecord)> = self
            .members
            .iter()
            .filter(|&(&o, _)| self.is_live(o, now, timeout))
            .collect();
        let everyone_here = live.len() >= self.expected_members;
        if live.is_empty() || !(everyone_here || bootstrap_due) {
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
            .map(|(o, _)| **o)
            .min();
        if let Some(chosen) = chosen {
            self.in_sync = BTreeSet::from([chosen]);
            self.bootstrapped = true;
            reasons.push(format!(
                "{} bootstrapped from {}-{chosen} (data epoch {}, index {})",
                self.tier, self.tier, newest.0, newest.1
            ));
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
                    in_sync: self.in_sync.contains(&ordinal),
                })
                .collect(),
        }
    }
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
