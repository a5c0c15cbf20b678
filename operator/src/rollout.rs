//! Rolling upgrades with the primary last, as a pure planner.
//!
//! The replicated tiers' StatefulSets use the `OnDelete` update strategy:
//! the StatefulSet controller recreates a deleted pod from the new template,
//! and the operator decides which pod to delete, one at a time:
//! 1. Wait while a member's pod is missing, or while an updated member is
//!    not Ready (a member is Ready only in sync): never two members down.
//! 2. Replace the outdated replicas, highest ordinal first.
//! 3. When only the primary is outdated, switch over to the lowest updated
//!    in-sync member (a clean handover; the coordinator refuses a target
//!    that is not in sync), so no write waits for a failover.
//! 4. Then the old primary, now a replica, is replaced like the others.
//! 5. When every member is updated and in sync, the rollout's switchover
//!    ends and the plain rule applies again (at most two primary changes).
//!
//! A tier of one member has nobody to hand over to: its pod is replaced, and
//! the tier waits for it (the only copy of its writes).

use bookstore_core::cluster::{Ordinal, Role};

/// One member's pod as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPod {
    pub ordinal: Ordinal,
    /// The pod exists and is not being deleted.
    pub exists: bool,
    /// It runs the StatefulSet's update revision.
    pub updated: bool,
    /// Ready: its member serves (primary or in sync).
    pub ready: bool,
}

/// A replicated tier during a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierView {
    pub tier: Role,
    pub members: Vec<MemberPod>,
    pub primary: Option<Ordinal>,
}

/// What to do next for a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every member runs the new revision and is in sync.
    Done,
    /// Nothing to do until the reason is gone.
    Wait(String),
    /// Delete this member's pod (it comes back from the new template).
    Replace(Ordinal),
    /// Move the primary to this member before the old primary is replaced.
    SwitchOver(Ordinal),
}

/// The next step of `view`'s rollout.
pub fn plan(view: &TierView) -> Step {
    let tier = view.tier;
    if let Some(missing) = view.members.iter().find(|m| !m.exists) {
        return Step::Wait(format!("{tier}-{} is being recreated", missing.ordinal));
    }
    if let Some(resyncing) = view.members.iter().find(|m| m.updated && !m.ready) {
        return Step::Wait(format!(
            "{tier}-{} is updated and resyncing",
            resyncing.ordinal
        ));
    }
    let outdated: Vec<&MemberPod> = view.members.iter().filter(|m| !m.updated).collect();
    if outdated.is_empty() {
        return Step::Done;
    }
    if let Some(replica) = outdated
        .iter()
        .filter(|m| Some(m.ordinal) != view.primary)
        .max_by_key(|m| m.ordinal)
    {
        return Step::Replace(replica.ordinal);
    }
    // Only the primary is outdated.
    let target = view
        .members
        .iter()
        .filter(|m| m.updated && m.ready && Some(m.ordinal) != view.primary)
        .map(|m| m.ordinal)
        .min();
    match (target, view.primary) {
        (Some(target), _) => Step::SwitchOver(target),
        (None, Some(primary)) => Step::Replace(primary),
        (None, None) => Step::Wait(format!("{tier} has no primary")),
    }
}

/// How far a tier's rollout is, in words, for the status.
pub fn phase(step: &Step, view: &TierView) -> String {
    let updated = view.members.iter().filter(|m| m.updated).count();
    let total = view.members.len();
    let tier = view.tier;
    match step {
        Step::Done => format!("{tier}: all {total} members updated"),
        Step::Wait(why) => format!("{tier}: {updated}/{total} updated; waiting: {why}"),
        Step::Replace(o) => format!("{tier}: {updated}/{total} updated; replacing {tier}-{o}"),
        Step::SwitchOver(o) => {
            format!("{tier}: {updated}/{total} updated; switching the primary over to {tier}-{o}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIER: Role = Role::Catalog;

    fn pod(ordinal: Ordinal, updated: bool, ready: bool) -> MemberPod {
        MemberPod {
            ordinal,
            exists: true,
            updated,
            ready,
        }
    }

    fn view(members: Vec<MemberPod>, primary: Option<Ordinal>) -> TierView {
        TierView {
            tier: TIER,
            members,
            primary,
        }
    }

    #[test]
    fn replicas_go_first_highest_ordinal_first() {
        let tier = view(
            vec![
                pod(0, false, true),
                pod(1, false, true),
                pod(2, false, true),
            ],
            Some(0),
        );
        assert_eq!(plan(&tier), Step::Replace(2));
        let tier = view(
            vec![pod(0, false, true), pod(1, false, true), pod(2, true, true)],
            Some(0),
        );
        assert_eq!(plan(&tier), Step::Replace(1));
    }

    #[test]
    fn each_replaced_member_is_waited_for_until_it_is_back_in_sync() {
        let mut missing = pod(1, false, false);
        missing.exists = false;
        let tier = view(vec![pod(0, false, true), missing], Some(0));
        assert!(matches!(plan(&tier), Step::Wait(_)));
        let tier = view(vec![pod(0, false, true), pod(1, true, false)], Some(0));
        assert_eq!(
            plan(&tier),
            Step::Wait("catalog-1 is updated and resyncing".into())
        );
    }

    #[test]
    fn the_primary_is_switched_over_to_an_updated_in_sync_member_before_it_is_replaced() {
        let tier = view(
            vec![pod(0, false, true), pod(1, true, true), pod(2, true, true)],
            Some(0),
        );
        assert_eq!(plan(&tier), Step::SwitchOver(1));
        // After the handover the old primary is a replica: replaced next.
        let tier = view(
            vec![pod(0, false, true), pod(1, true, true), pod(2, true, true)],
            Some(1),
        );
        assert_eq!(plan(&tier), Step::Replace(0));
        // Resyncing after the handover and outdated: still replaced (it
        // serves nothing anyway).
        let tier = view(vec![pod(0, false, false), pod(1, true, true)], Some(1));
        assert_eq!(plan(&tier), Step::Replace(0));
    }

    #[test]
    fn a_rollout_ends_when_every_member_is_updated_and_in_sync() {
        let tier = view(vec![pod(0, true, true), pod(1, true, true)], Some(1));
        assert_eq!(plan(&tier), Step::Done);
        let tier = view(vec![pod(0, true, false), pod(1, true, true)], Some(1));
        assert!(matches!(plan(&tier), Step::Wait(_)));
    }

    #[test]
    fn a_single_member_tier_replaces_its_primary() {
        let tier = view(vec![pod(0, false, true)], Some(0));
        assert_eq!(plan(&tier), Step::Replace(0));
    }

    /// A whole rollout of a 3-member tier, the cluster played step by step:
    /// the primary is replaced last, after one switchover, never two members
    /// down at once, and the primary changes at most twice.
    #[test]
    fn a_whole_rollout_replaces_the_primary_last_with_one_switchover() {
        let mut members: Vec<MemberPod> = (0..3).map(|o| pod(o, false, true)).collect();
        let mut primary = Some(0);
        let mut replaced = Vec::new();
        let mut switchovers = 0;
        for _ in 0..20 {
            let step = plan(&view(members.clone(), primary));
            match step {
                Step::Done => break,
                Step::Replace(o) => {
                    assert!(
                        members.iter().filter(|m| !m.ready).count() <= 1,
                        "at most one member out"
                    );
                    replaced.push(o);
                    let member = &mut members[o as usize];
                    *member = pod(o, true, false);
                }
                Step::SwitchOver(o) => {
                    switchovers += 1;
                    primary = Some(o);
                }
                // The member comes back and resyncs.
                Step::Wait(_) => members.iter_mut().for_each(|m| m.ready = true),
            }
        }
        assert_eq!(replaced, vec![2, 1, 0], "the primary last");
        assert_eq!(switchovers, 1);
        assert!(members.iter().all(|m| m.updated && m.ready));
    }
}
