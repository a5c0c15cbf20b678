//! Planned switchover, asked for by an annotation on the BookStore:
//! `mybookstore.dev/switchover: catalog=1` (or `catalog=1,order=1`) moves
//! each named tier's primary to that ordinal by a clean handover, and keeps
//! it there while the annotation asks; removing the annotation lets the
//! plain rule (the lowest in-sync ordinal) apply again. The coordinator
//! refuses a target that is not in sync ([`bookstore_replication::switchover`]);
//! the refusal is shown as the `Switchover` condition and a Warning Event.
//!
//! Parsing and the condition's wording are pure functions here; the
//! controller reads the annotation and [`crate::coordination`] applies it.

use std::collections::BTreeMap;

use bookstore_core::cluster::{Ordinal, Role};

/// The annotation that asks for a switchover.
pub const ANNOTATION: &str = crate::names::SWITCHOVER_ANNOTATION;

/// What the annotation asks for: the primary wanted per tier.
pub type Requests = BTreeMap<Role, Ordinal>;

/// Why the annotation cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {ANNOTATION}={value:?}: {why} (expected e.g. catalog=1 or catalog=1,order=1)")]
pub struct BadAnnotation {
    value: String,
    why: String,
}

/// Reads the annotation's value: `tier=ordinal` pairs, comma-separated.
pub fn parse(value: &str) -> Result<Requests, BadAnnotation> {
    let bad = |why: String| BadAnnotation {
        value: value.to_owned(),
        why,
    };
    let mut requests = Requests::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tier, ordinal) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} is not tier=ordinal")))?;
        let role: Role = tier
            .trim()
            .parse()
            .map_err(|_| bad(format!("{tier:?} is not a tier")))?;
        if !role.is_replicated() {
            return Err(bad(format!("{role} has no primary")));
        }
        let ordinal: Ordinal = ordinal
            .trim()
            .parse()
            .map_err(|_| bad(format!("{ordinal:?} is not an ordinal")))?;
        if requests.insert(role, ordinal).is_some() {
            return Err(bad(format!("{role} is named twice")));
        }
    }
    Ok(requests)
}

/// Where switchovers stand, for the `Switchover` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchoverState {
    /// Tiers whose primary is held at the asked member.
    pub held: Vec<(Role, Ordinal)>,
    /// Refused requests, each with the reason in words.
    pub refused: Vec<String>,
}

impl SwitchoverState {
    /// The condition's status, reason and message; `None` when nothing is
    /// asked.
    pub fn condition(&self) -> Option<(bool, &'static str, String)> {
        if !self.refused.is_empty() {
            return Some((false, "Refused", self.refused.join("; ")));
        }
        if self.held.is_empty() {
            return None;
        }
        let held: Vec<String> = self
            .held
            .iter()
            .map(|(tier, ordinal)| format!("{tier} primary held at {tier}-{ordinal}"))
            .collect();
        Some((
            true,
            "Requested",
            format!("{} by {ANNOTATION}", held.join(", ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_a_primary_per_tier() {
        assert_eq!(parse("catalog=1"), Ok(Requests::from([(Role::Catalog, 1)])));
        assert_eq!(
            parse(" catalog = 1 , order=0 "),
            Ok(Requests::from([(Role::Catalog, 1), (Role::Order, 0)]))
        );
        assert_eq!(parse(""), Ok(Requests::new()));
    }

    #[test]
    fn a_malformed_annotation_says_what_is_wrong() {
        for (value, why) in [
            ("catalog", "is not tier=ordinal"),
            ("books=1", "is not a tier"),
            ("frontend=0", "has no primary"),
            ("catalog=one", "is not an ordinal"),
            ("catalog=1,catalog=0", "named twice"),
        ] {
            let error = parse(value).expect_err(value).to_string();
            assert!(error.contains(why), "{value}: {error}");
        }
    }

    #[test]
    fn a_refusal_is_a_false_condition_and_a_held_primary_a_true_one() {
        assert_eq!(SwitchoverState::default().condition(), None);
        let held = SwitchoverState {
            held: vec![(Role::Catalog, 1)],
            refused: Vec::new(),
        };
        let (on, reason, message) = held.condition().expect("a condition");
        assert!(on);
        assert_eq!(reason, "Requested");
        assert!(message.contains("catalog primary held at catalog-1"));
        let refused = SwitchoverState {
            held: Vec::new(),
            refused: vec!["catalog-1: not in sync".to_owned()],
        };
        assert_eq!(
            refused.condition().map(|c| (c.0, c.1)),
            Some((false, "Refused"))
        );
    }
}
