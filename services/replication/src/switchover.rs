//! Planned switchover: moving a tier's primary to a named member on purpose
//! (before its pod is upgraded, or because a person asked), as pure rules.
//!
//! A switchover is the primary rule with a preference: while a switchover
//! asks for a member, the rule picks that member whenever it is healthy (live
//! and in sync), and the lowest healthy ordinal otherwise; when the request
//! ends, the plain rule applies again. A member can be asked for only while it
//! is in the in-sync set: only then does it hold every acknowledged write, so
//! the handover loses nothing. The move itself is the coordinator's usual
//! clean handover: one new epoch naming the new primary; the old primary sees
//! it, stops taking writes and resyncs.

use bookstore_core::cluster::Ordinal;

use crate::rule::{Candidate, choose_primary};

/// Why a switchover to a member was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverRefused {
    #[error("member {0} is not a member of the tier")]
    UnknownMember(Ordinal),
    #[error("member {0} is not live")]
    NotLive(Ordinal),
    #[error("member {0} is not in sync: it may lack acknowledged writes")]
    NotInSync(Ordinal),
    #[error("the tier has no primary to hand over from")]
    NoPrimary,
}

/// Whether the primary may be moved to `target` now (nothing to do when it
/// is the primary already: `Ok`).
pub fn check(
    candidates: &[Candidate],
    primary: Option<Ordinal>,
    target: Ordinal,
) -> Result<(), SwitchoverRefused> {
    let member = candidates
        .iter()
        .find(|c| c.ordinal == target)
        .ok_or(SwitchoverRefused::UnknownMember(target))?;
    if primary == Some(target) {
        return Ok(());
    }
    if primary.is_none() {
        return Err(SwitchoverRefused::NoPrimary);
    }
    if !member.live {
        return Err(SwitchoverRefused::NotLive(target));
    }
    if !member.in_sync {
        return Err(SwitchoverRefused::NotInSync(target));
    }
    Ok(())
}

/// The primary rule with a switchover's preference: `preferred` if it is
/// healthy, else the lowest healthy ordinal.
pub fn choose_primary_preferring(
    candidates: &[Candidate],
    preferred: Option<Ordinal>,
) -> Option<Ordinal> {
    preferred
        .filter(|&p| candidates.iter().any(|c| c.ordinal == p && c.is_healthy()))
        .or_else(|| choose_primary(candidates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(ordinal: Ordinal, live: bool, in_sync: bool) -> Candidate {
        Candidate::new(ordinal, live, in_sync)
    }

    #[test]
    fn a_switchover_to_an_in_sync_member_is_allowed() {
        let tier = [member(0, true, true), member(1, true, true)];
        assert_eq!(check(&tier, Some(0), 1), Ok(()));
        assert_eq!(check(&tier, Some(1), 1), Ok(()), "already primary");
    }

    #[test]
    fn a_switchover_to_a_member_that_is_not_in_sync_is_refused() {
        let tier = [member(0, true, true), member(1, true, false)];
        assert_eq!(
            check(&tier, Some(0), 1),
            Err(SwitchoverRefused::NotInSync(1))
        );
    }

    #[test]
    fn a_switchover_to_a_silent_or_unknown_member_or_without_a_primary_is_refused() {
        let tier = [member(0, true, true), member(1, false, true)];
        assert_eq!(check(&tier, Some(0), 1), Err(SwitchoverRefused::NotLive(1)));
        assert_eq!(
            check(&tier, Some(0), 5),
            Err(SwitchoverRefused::UnknownMember(5))
        );
        let leaderless = [member(0, false, true), member(1, true, true)];
        assert_eq!(
            check(&leaderless, None, 1),
            Err(SwitchoverRefused::NoPrimary)
        );
    }

    #[test]
    fn the_preference_wins_only_while_it_is_healthy() {
        let tier = [member(0, true, true), member(1, true, true)];
        assert_eq!(choose_primary_preferring(&tier, Some(1)), Some(1));
        assert_eq!(choose_primary_preferring(&tier, None), Some(0));
        let resyncing = [member(0, true, true), member(1, true, false)];
        assert_eq!(choose_primary_preferring(&resyncing, Some(1)), Some(0));
        let gone = [member(0, true, true), member(1, false, true)];
        assert_eq!(choose_primary_preferring(&gone, Some(1)), Some(0));
        assert_eq!(choose_primary_preferring(&tier, Some(7)), Some(0));
    }

    proptest! {
        /// The preferred primary is always healthy, and with no preference
        /// the rule is the plain one.
        #[test]
        fn a_preference_never_elects_an_unhealthy_member(
            members in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..6),
            preferred in proptest::option::of(0..8u32),
        ) {
            let tier: Vec<Candidate> = members
                .iter()
                .enumerate()
                .map(|(i, &(live, in_sync))| member(i as u32, live, in_sync))
                .collect();
            let chosen = choose_primary_preferring(&tier, preferred);
            if let Some(chosen) = chosen {
                prop_assert!(tier.iter().any(|c| c.ordinal == chosen && c.is_healthy()));
            }
            prop_assert_eq!(chosen.is_some(), choose_primary(&tier).is_some());
            prop_assert_eq!(choose_primary_preferring(&tier, None), choose_primary(&tier));
            if let Some(p) = preferred {
                let allowed = check(&tier, choose_primary(&tier), p).is_ok();
                if allowed && choose_primary(&tier).is_some() {
                    prop_assert_eq!(chosen, Some(p));
                }
            }
        }
    }
}
