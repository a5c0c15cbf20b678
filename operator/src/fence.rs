//! Fencing, asked for by an annotation on the BookStore:
//! `mybookstore.dev/fenced-members: "catalog-1,order-0"` takes each named
//! member out of its tier's in-sync set: the coordinator counts it as not
//! live whatever it says, never elects or admits it, and a fenced primary is
//! replaced by a failover to an in-sync member. A member that is neither
//! primary nor in sync serves nothing: no writes, no reads (the frontend
//! reads from in-sync members only), and its pod is not Ready (its
//! `/readyz`). Removing a name unfences it: it resyncs from the primary and
//! is admitted again. Fencing the last in-sync member of a tier leaves the
//! tier without a primary until it is unfenced (it holds the only copy of
//! the latest acknowledged writes).
//!
//! Parsing and the condition are pure functions here; the controller reads
//! the annotation and [`crate::coordination`] tells the coordinator.

use std::collections::{BTreeMap, BTreeSet};

use bookstore_core::cluster::{Ordinal, Role};
use bookstore_core::plan::REPLICATED_TIERS;

use crate::names::FENCED_MEMBERS_ANNOTATION;

/// The fenced members per replicated tier (every tier present, maybe empty).
pub type Fenced = BTreeMap<Role, BTreeSet<Ordinal>>;

/// Why the annotation cannot be read (fencing then stays as it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {FENCED_MEMBERS_ANNOTATION}={value:?}: {why} (expected member names, e.g. catalog-1,order-0); nothing changed"
)]
pub struct BadAnnotation {
    value: String,
    why: String,
}

/// Nobody fenced.
pub fn none() -> Fenced {
    REPLICATED_TIERS
        .into_iter()
        .map(|tier| (tier, BTreeSet::new()))
        .collect()
}

/// Reads the annotation's value: member names (`catalog-1`),
/// comma-separated; no annotation fences nobody.
pub fn parse(value: Option<&str>) -> Result<Fenced, BadAnnotation> {
    let mut fenced = none();
    let Some(value) = value else {
        return Ok(fenced);
    };
    let bad = |why: String| BadAnnotation {
        value: value.to_owned(),
        why,
    };
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (tier, ordinal) = name
            .rsplit_once('-')
            .ok_or_else(|| bad(format!("{name:?} is not a member name (tier-ordinal)")))?;
        let role: Role = tier
            .parse()
            .map_err(|_| bad(format!("{tier:?} is not a tier")))?;
        let ordinal: Ordinal = ordinal
            .parse()
            .map_err(|_| bad(format!("{ordinal:?} is not an ordinal")))?;
        fenced
            .get_mut(&role)
            .ok_or_else(|| {
                bad(format!(
                    "{role} is not replicated: it has no members to fence"
                ))
            })?
            .insert(ordinal);
    }
    Ok(fenced)
}

/// The member names of `fenced`, e.g. `catalog-1, order-0`.
pub fn names(fenced: &Fenced) -> Vec<String> {
    fenced
        .iter()
        .flat_map(|(tier, ordinals)| ordinals.iter().map(move |o| format!("{tier}-{o}")))
        .collect()
}

/// The `Fenced` condition (status, reason, message); `None` when nobody is
/// fenced and the annotation reads well.
pub fn condition(
    fenced: &Fenced,
    bad: Option<&BadAnnotation>,
) -> Option<(bool, &'static str, String)> {
    let members = names(fenced);
    match bad {
        Some(bad) => Some((!members.is_empty(), "InvalidAnnotation", bad.to_string())),
        None if members.is_empty() => None,
        None => Some((
            true,
            "Fenced",
            format!(
                "{} fenced: out of the in-sync set, serving nothing, until removed from {FENCED_MEMBERS_ANNOTATION}",
                members.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_members() {
        let fenced = parse(Some(" catalog-1, order-0 ,catalog-2")).expect("reads");
        assert_eq!(fenced[&Role::Catalog], BTreeSet::from([1, 2]));
        assert_eq!(fenced[&Role::Order], BTreeSet::from([0]));
        assert_eq!(names(&fenced), ["catalog-1", "catalog-2", "order-0"]);
        assert_eq!(parse(None), Ok(none()));
        assert_eq!(parse(Some("")), Ok(none()));
    }

    #[test]
    fn a_malformed_annotation_says_what_is_wrong() {
        for (value, why) in [
            ("catalog", "is not a member name"),
            ("books-1", "is not a tier"),
            ("frontend-0", "is not replicated"),
            ("catalog-one", "is not an ordinal"),
        ] {
            let error = parse(Some(value)).expect_err(value).to_string();
            assert!(error.contains(why), "{value}: {error}");
        }
    }

    #[test]
    fn the_condition_names_the_fenced_members() {
        assert_eq!(condition(&none(), None), None);
        let fenced = parse(Some("order-1")).expect("reads");
        let (on, reason, message) = condition(&fenced, None).expect("a condition");
        assert!(on);
        assert_eq!(reason, "Fenced");
        assert!(message.starts_with("order-1 fenced"), "{message}");
    }
}
