//! The status of a BookStore, computed by a pure function from what the
//! operator observed: the coordinator's topologies, pod readiness, and the
//! Deployments' ready counts. Conditions keep their transition time while
//! their status does not change.

use bookstore_core::cluster::Role;
use bookstore_replication::topology::Topology;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{BookStoreStatus, CoordinatorSettings, TierRollout, TierStatus};
use crate::names::StoreNames;
use crate::switchover::SwitchoverState;
use crate::validate::ReplicaCounts;

/// What one reconcile observed.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    pub catalog: Option<Topology>,
    pub order: Option<Topology>,
    /// Ordinals of Ready catalog and order pods.
    pub ready_catalog_pods: Vec<u32>,
    pub ready_order_pods: Vec<u32>,
    pub frontend_ready: i32,
    pub cache_ready: i32,
    pub last_failover_time: Option<Time>,
    /// The settings the running coordinator uses.
    pub coordinator: Option<CoordinatorSettings>,
    /// Where the switchovers the annotation asks for stand.
    pub switchover: SwitchoverState,
    /// Each replicated tier's rolling upgrade.
    pub rollout: Vec<TierRollout>,
    /// Problems with the spec; non-empty means nothing was applied.
    pub spec_problems: Vec<String>,
    /// The store hibernates ([`crate::hibernation`]).
    pub hibernating: bool,
    /// The `Hibernated` condition (status, reason, message).
    pub hibernation: Option<(bool, &'static str, String)>,
    /// The `Fenced` condition, while a member is fenced or the annotation is
    /// unreadable.
    pub fencing: Option<(bool, &'static str, String)>,
}

/// The status to write, given the desired counts and the previous status
/// (for transition times).
pub fn compute(
    names: &StoreNames,
    replicas: &ReplicaCounts,
    observed: &Observed,
    previous: Option<&BookStoreStatus>,
    now: Time,
) -> BookStoreStatus {
    let catalog = tier_status(
        names,
        Role::Catalog,
        replicas.catalog,
        observed.catalog.as_ref(),
        &observed.ready_catalog_pods,
    );
    let order = tier_status(
        names,
        Role::Order,
        replicas.order,
        observed.order.as_ref(),
        &observed.ready_order_pods,
    );
    let verdict = judge(replicas, observed, &catalog, &order);
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, on: bool, reason: &str, message: &str| {
        let status = if on { "True" } else { "False" };
        let last_transition_time = previous_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: observed.generation,
            last_transition_time,
        }
    };
    let mut conditions = vec![
        condition("Ready", verdict.ready, verdict.reason, &verdict.sentence),
        condition(
            "Progressing",
            verdict.progressing,
            verdict.reason,
            &verdict.sentence,
        ),
        condition(
            "Degraded",
            verdict.degraded,
            verdict.reason,
            &verdict.sentence,
        ),
    ];
    if let Some((on, reason, message)) = observed.switchover.condition() {
        conditions.push(condition("Switchover", on, reason, &message));
    }
    if let Some((on, reason, message)) = &observed.hibernation {
        conditions.push(condition("Hibernated", *on, reason, message));
    }
    if let Some((on, reason, message)) = &observed.fencing {
        conditions.push(condition("Fenced", *on, reason, message));
    }
    BookStoreStatus {
        observed_generation: observed.generation,
        phase: Some(verdict.sentence.clone()),
        epochs: Some(format!("{}/{}", catalog.epoch, order.epoch)),
        catalog: Some(catalog),
        order: Some(order),
        frontend_ready: observed.frontend_ready,
        cache_ready: observed.cache_ready,
        last_failover_time: observed
            .last_failover_time
            .clone()
            .or_else(|| previous.and_then(|p| p.last_failover_time.clone())),
        coordinator: observed.coordinator.clone(),
        rollout: observed.rollout.clone(),
        last_confirmed: Some(now.clone()),
        conditions,
    }
}

fn tier_status(
    names: &StoreNames,
    role: Role,
    desired: u32,
    topology: Option<&Topology>,
    ready_pods: &[u32],
) -> TierStatus {
    let desired = count(desired);
    let in_sync = topology.map_or(0, |t| {
        t.members.iter().filter(|m| m.in_sync && m.live).count()
    }) as i32;
    let ready = ready_pods.len() as i32;
    let primary = topology.and_then(|t| t.primary);
    TierStatus {
        ready_members: ready,
        in_sync_members: in_sync,
        desired_members: desired,
        summary: format!("{ready}/{desired}"),
        primary,
        primary_pod: primary.map(|p| names.pod(role, p)),
        epoch: topology.map_or(0, |t| t.epoch),
    }
}

/// How often the leader rewrites `lastConfirmed` when nothing else in the
/// status changed: each write of the status is a change of the BookStore,
/// which the controller reconciles again, so writing at every reconcile
/// (every 2 s) would reconcile without pause. A status is thus confirmed at
/// least every 10 s while a leader acts.
pub const CONFIRM_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `next` must be written over `previous`: something changed
/// besides `lastConfirmed`, or `previous` was confirmed [`CONFIRM_PERIOD`]
/// or longer before `next`.
pub fn needs_write(previous: Option<&BookStoreStatus>, next: &BookStoreStatus) -> bool {
    let Some(previous) = previous else {
        return true;
    };
    let same_otherwise = BookStoreStatus {
        last_confirmed: next.last_confirmed.clone(),
        ..previous.clone()
    } == *next;
    if !same_otherwise {
        return true;
    }
    match (&previous.last_confirmed, &next.last_confirmed) {
        (Some(before), Some(now)) => {
            let period = k8s_openapi::jiff::SignedDuration::try_from(CONFIRM_PERIOD)
                .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
            now.0.duration_since(before.0) >= period
        }
        (before, now) => before != now,
    }
}

struct Verdict {
    ready: bool,
    progressing: bool,
    degraded: bool,
    reason: &'static str,
    sentence: String,
}

/// A count as the status reports it.
fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn judge(
    replicas: &ReplicaCounts,
    observed: &Observed,
    catalog: &TierStatus,
    order: &TierStatus,
) -> Verdict {
    let verdict = |ready, progressing, degraded, reason, sentence: String| Verdict {
        ready,
        progressing,
        degraded,
        reason,
        sentence,
    };
    if !observed.spec_problems.is_empty() {
        return verdict(
            false,
            false,
            true,
            "InvalidSpec",
            format!("Invalid spec: {}", observed.spec_problems.join("; ")),
        );
    }
    if observed.hibernating {
        return verdict(
            false,
            false,
            false,
            "Hibernated",
            "Hibernated: every tier is scaled to zero, the volumes are kept".to_owned(),
        );
    }
    let tiers = [("catalog", catalog), ("order", order)];
    let never_started = tiers.iter().all(|(_, t)| t.epoch == 0);
    if never_started {
        return verdict(
            false,
            true,
            false,
            "Starting",
            "Starting: waiting for the members' first heartbeats".to_owned(),
        );
    }
    // A primary the coordinator no longer hears from is no primary: Ready
    // never outlives it.
    let topologies = [observed.catalog.as_ref(), observed.order.as_ref()];
    let serving = |topology: Option<&Topology>| {
        topology
            .and_then(|t| t.primary.and_then(|p| t.member(p)))
            .is_some_and(|m| m.live)
    };
    if let Some(((tier, _), _)) = tiers
        .iter()
        .zip(topologies)
        .find(|((_, t), topology)| t.primary.is_none() || !serving(*topology))
    {
        return verdict(
            false,
            true,
            true,
            "NoPrimary",
            format!(
                "Failing over {tier}: no live primary (no in-sync member is live, or the primary stopped answering)"
            ),
        );
    }
    if let Some((tier, t)) = tiers
        .iter()
        .find(|(_, t)| t.in_sync_members < t.desired_members)
    {
        return verdict(
            false,
            true,
            true,
            "Resyncing",
            format!(
                "{tier} has {}/{} members in sync; the others are resyncing",
                t.in_sync_members, t.desired_members
            ),
        );
    }
    if observed.frontend_ready < count(replicas.frontend)
        || observed.cache_ready < count(replicas.cache)
    {
        return verdict(
            false,
            true,
            false,
            "Starting",
            format!(
                "Waiting for frontend ({}/{}) and cache ({}/{}) pods",
                observed.frontend_ready, replicas.frontend, observed.cache_ready, replicas.cache
            ),
        );
    }
    verdict(true, false, false, "Running", "Running".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Replicas;

    fn desired() -> ReplicaCounts {
        ReplicaCounts::requested(&Replicas::default())
    }
    use bookstore_replication::topology::TopologyMember;

    fn topology(tier: Role, epoch: u64, primary: Option<u32>, in_sync: &[u32]) -> Topology {
        Topology {
            tier,
            epoch,
            primary,
            members: (0..2)
                .map(|ordinal| TopologyMember {
                    ordinal,
                    incarnation: 1,
                    peer: String::new(),
                    public: String::new(),
                    live: true,
                    in_sync: in_sync.contains(&ordinal),
                })
                .collect(),
        }
    }

    fn healthy() -> Observed {
        Observed {
            generation: Some(3),
            catalog: Some(topology(Role::Catalog, 4, Some(0), &[0, 1])),
            order: Some(topology(Role::Order, 2, Some(0), &[0, 1])),
            ready_catalog_pods: vec![0, 1],
            ready_order_pods: vec![0, 1],
            frontend_ready: 1,
            cache_ready: 1,
            ..Default::default()
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"))
    }

    fn condition<'a>(status: &'a BookStoreStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition")
    }

    #[test]
    fn a_healthy_store_is_ready() {
        let names = StoreNames::new("shop", "books");
        let status = compute(&names, &desired(), &healthy(), None, now());
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "Degraded").status, "False");
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(
            status
                .catalog
                .as_ref()
                .and_then(|c| c.primary_pod.clone())
                .as_deref(),
            Some("shop-catalog-0")
        );
        assert_eq!(status.epochs.as_deref(), Some("4/2"));
        assert_eq!(status.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn a_tier_without_a_primary_is_degraded_and_failing_over() {
        let names = StoreNames::new("shop", "books");
        let observed = Observed {
            catalog: Some(topology(Role::Catalog, 5, None, &[0])),
            ..healthy()
        };
        let status = compute(&names, &desired(), &observed, None, now());
        assert_eq!(condition(&status, "Ready").status, "False");
        assert_eq!(condition(&status, "Degraded").reason, "NoPrimary");
        assert!(
            status
                .phase
                .as_deref()
                .unwrap_or_default()
                .starts_with("Failing over catalog")
        );
    }

    #[test]
    fn a_resyncing_member_is_progressing() {
        let names = StoreNames::new("shop", "books");
        let observed = Observed {
            order: Some(topology(Role::Order, 6, Some(1), &[1])),
            ..healthy()
        };
        let status = compute(&names, &desired(), &observed, None, now());
        assert_eq!(condition(&status, "Progressing").status, "True");
        assert_eq!(condition(&status, "Progressing").reason, "Resyncing");
        assert_eq!(status.order.as_ref().map(|o| o.in_sync_members), Some(1));
    }

    #[test]
    fn an_invalid_spec_is_reported() {
        let names = StoreNames::new("shop", "books");
        let observed = Observed {
            spec_problems: vec!["replicas.catalog is 0".into()],
            ..Default::default()
        };
        let status = compute(&names, &desired(), &observed, None, now());
        assert_eq!(condition(&status, "Ready").reason, "InvalidSpec");
        assert!(
            condition(&status, "Ready")
                .message
                .contains("replicas.catalog is 0")
        );
    }

    #[test]
    fn transition_times_hold_while_the_status_holds() {
        let names = StoreNames::new("shop", "books");
        let first = compute(&names, &desired(), &healthy(), None, now());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).expect("time"));
        let second = compute(&names, &desired(), &healthy(), Some(&first), later.clone());
        assert_eq!(
            condition(&second, "Ready").last_transition_time,
            condition(&first, "Ready").last_transition_time
        );
        let degraded = Observed {
            catalog: Some(topology(Role::Catalog, 5, None, &[0])),
            ..healthy()
        };
        let third = compute(&names, &desired(), &degraded, Some(&second), later.clone());
        assert_eq!(condition(&third, "Ready").last_transition_time, later);
    }

    #[test]
    fn ready_never_outlives_a_primary_the_coordinator_no_longer_hears() {
        let names = StoreNames::new("shop", "books");
        let mut observed = healthy();
        if let Some(catalog) = observed.catalog.as_mut() {
            catalog.members[0].live = false;
        }
        let status = compute(&names, &desired(), &observed, None, now());
        assert_eq!(condition(&status, "Ready").status, "False");
        assert_eq!(condition(&status, "Degraded").reason, "NoPrimary");
    }

    #[test]
    fn every_status_says_when_the_leader_confirmed_it() {
        let names = StoreNames::new("shop", "books");
        let status = compute(&names, &desired(), &healthy(), None, now());
        assert_eq!(status.last_confirmed, Some(now()));
    }

    #[test]
    fn a_hibernating_store_is_not_ready_and_says_why() {
        let names = StoreNames::new("shop", "books");
        let observed = Observed {
            hibernating: true,
            hibernation: Some(crate::hibernation::condition(true, None)),
            ..healthy()
        };
        let status = compute(&names, &desired(), &observed, None, now());
        assert_eq!(condition(&status, "Ready").reason, "Hibernated");
        assert_eq!(condition(&status, "Degraded").status, "False");
        assert_eq!(condition(&status, "Hibernated").status, "True");
    }

    #[test]
    fn an_unchanged_status_is_rewritten_only_to_confirm_it_every_period() {
        let names = StoreNames::new("shop", "books");
        let at = |second| Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("time"));
        let first = compute(&names, &desired(), &healthy(), None, at(1_800_000_000));
        assert!(needs_write(None, &first));
        let soon = compute(
            &names,
            &desired(),
            &healthy(),
            Some(&first),
            at(1_800_000_002),
        );
        assert!(
            !needs_write(Some(&first), &soon),
            "only lastConfirmed moved, 2 s later"
        );
        let later = compute(
            &names,
            &desired(),
            &healthy(),
            Some(&first),
            at(1_800_000_010),
        );
        assert!(
            needs_write(Some(&first), &later),
            "confirmed again after the period"
        );
        let changed = compute(
            &names,
            &desired(),
            &Observed {
                frontend_ready: 0,
                ..healthy()
            },
            Some(&first),
            at(1_800_000_002),
        );
        assert!(
            needs_write(Some(&first), &changed),
            "a change is written at once"
        );
    }
}
