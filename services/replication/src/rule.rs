//! The primary rule, as the project's user asked for it: the primary of a
//! replicated tier is its lowest healthy ordinal, where healthy means live
//! and caught up (in the in-sync set of the latest epoch).
//!
//! It is a pure function so both drivers (the local coordinator and the
//! Kubernetes operator) use exactly the same rule, and so it can be tested
//! exhaustively.

use bookstore_core::cluster::Ordinal;

/// What the rule needs to know about one member of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub ordinal: Ordinal,
    /// The member's heartbeats (or its pod's readiness) are current.
    pub live: bool,
    /// The member holds every acknowledged write: it is in the in-sync set.
    pub in_sync: bool,
}

impl Candidate {
    pub const fn new(ordinal: Ordinal, live: bool, in_sync: bool) -> Self {
        Self {
            ordinal,
            live,
            in_sync,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.live && self.in_sync
    }
}

/// The lowest healthy ordinal, or `None` when no member is healthy (the tier
/// then takes no writes rather than risk losing acknowledged ones).
pub fn choose_primary(candidates: &[Candidate]) -> Option<Ordinal> {
    candidates
        .iter()
        .filter(|c| c.is_healthy())
        .map(|c| c.ordinal)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(ordinal: Ordinal, live: bool, in_sync: bool) -> Candidate {
        Candidate {
            ordinal,
            live,
            in_sync,
        }
    }

    #[test]
    fn no_members_or_all_down_means_no_primary() {
        assert_eq!(choose_primary(&[]), None);
        assert_eq!(
            choose_primary(&[member(0, false, true), member(1, false, true)]),
            None
        );
    }

    #[test]
    fn the_one_member_up_is_primary() {
        assert_eq!(
            choose_primary(&[member(0, false, true), member(1, true, true)]),
            Some(1)
        );
    }

    #[test]
    fn a_recovering_member_is_not_primary_until_caught_up() {
        let recovering = [member(0, true, false), member(1, true, true)];
        assert_eq!(choose_primary(&recovering), Some(1));
        let caught_up = [member(0, true, true), member(1, true, true)];
        assert_eq!(choose_primary(&caught_up), Some(0));
    }

    #[test]
    fn live_but_behind_members_never_lead_even_if_alone() {
        assert_eq!(choose_primary(&[member(0, true, false)]), None);
    }

    #[test]
    fn ordinals_compare_as_numbers_not_strings() {
        let members = [member(10, true, true), member(2, true, true)];
        assert_eq!(choose_primary(&members), Some(2));
    }

    #[test]
    fn every_combination_of_three_members_follows_the_rule() {
        // 2^6 combinations of (live, in_sync) for three members: exhaustive.
        for bits in 0u32..64 {
            let members: Vec<Candidate> = (0..3)
                .map(|i| {
                    member(
                        i,
                        bits & (1 << (2 * i)) != 0,
                        bits & (1 << (2 * i + 1)) != 0,
                    )
                })
                .collect();
            let expected = (0..3).find(|&i| members[i as usize].is_healthy());
            assert_eq!(choose_primary(&members), expected, "bits {bits:06b}");
        }
    }

    proptest! {
        #[test]
        fn the_primary_is_healthy_and_no_healthy_member_is_lower(
            members in proptest::collection::vec((0u32..1000, any::<bool>(), any::<bool>()), 0..12)
        ) {
            let members: Vec<Candidate> =
                members.into_iter().map(|(o, l, s)| member(o, l, s)).collect();
            match choose_primary(&members) {
                Some(primary) => {
                    prop_assert!(members.iter().any(|m| m.ordinal == primary && m.is_healthy()));
                    prop_assert!(!members.iter().any(|m| m.is_healthy() && m.ordinal < primary));
                }
                None => prop_assert!(!members.iter().any(Candidate::is_healthy)),
            }
        }

        #[test]
        fn the_order_of_members_does_not_matter(
            members in proptest::collection::vec((0u32..50, any::<bool>(), any::<bool>()), 0..8)
        ) {
            let forward: Vec<Candidate> =
                members.iter().map(|&(o, l, s)| member(o, l, s)).collect();
            let mut backward = forward.clone();
            backward.reverse();
            prop_assert_eq!(choose_primary(&forward), choose_primary(&backward));
        }
    }
}
