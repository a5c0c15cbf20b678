//! Hibernation, asked for by an annotation on the BookStore:
//! `mybookstore.dev/hibernation: "on"` scales every tier (the catalog and
//! order StatefulSets, the frontend and cache Deployments) to zero and keeps
//! the volumes; `"off"`, or removing the annotation, brings the store back
//! with its data. Before the pods go, the coordinator keeps only each tier's
//! primary in the in-sync set and freezes, so the members going away neither
//! fail over nor change the durable state; woken, it waits for that primary
//! (ordinal 0 unless a failover had moved it) and the others resync from it
//! (`bookstore_replication::coordinator`, `Coordinator::hibernate`).
//!
//! Parsing, the workloads' counts and the condition are pure functions here;
//! the controller reads the annotation and [`crate::coordination`] tells the
//! coordinator.

use crate::names::HIBERNATION_ANNOTATION;

/// Why the annotation cannot be read (the store then stays as it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {HIBERNATION_ANNOTATION}={0:?} is neither \"on\" nor \"off\"; nothing changed")]
pub struct BadAnnotation(String);

/// Whether the annotation asks for hibernation: `on` or `off` (no
/// annotation is `off`).
pub fn parse(value: Option<&str>) -> Result<bool, BadAnnotation> {
    match value.map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("on") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(false),
        Some(v) => Err(BadAnnotation(v.to_owned())),
    }
}

/// A workload's `replicas`: its count, or none while hibernating.
pub fn replicas(hibernating: bool, count: i32) -> i32 {
    if hibernating { 0 } else { count }
}

/// The `Hibernated` condition: status, reason, message.
pub fn condition(hibernating: bool, bad: Option<&BadAnnotation>) -> (bool, &'static str, String) {
    match (hibernating, bad) {
        (_, Some(bad)) => (hibernating, "InvalidAnnotation", bad.to_string()),
        (true, None) => (
            true,
            "Hibernating",
            format!(
                "every tier is scaled to zero and the volumes are kept; annotate {HIBERNATION_ANNOTATION}=off to resume"
            ),
        ),
        (false, None) => (false, "Running", "the store runs".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_and_off_and_nothing_else() {
        assert_eq!(parse(None), Ok(false));
        assert_eq!(parse(Some("on")), Ok(true));
        assert_eq!(parse(Some(" ON ")), Ok(true));
        assert_eq!(parse(Some("off")), Ok(false));
        let error = parse(Some("yes")).expect_err("not a value");
        assert!(error.to_string().contains("\"yes\""), "{error}");
    }

    #[test]
    fn hibernating_scales_every_workload_to_zero() {
        assert_eq!(replicas(true, 3), 0);
        assert_eq!(replicas(false, 3), 3);
    }

    #[test]
    fn the_condition_says_how_to_resume() {
        let (on, reason, message) = condition(true, None);
        assert!(on);
        assert_eq!(reason, "Hibernating");
        assert!(message.contains("=off"), "{message}");
        assert_eq!(condition(false, None).1, "Running");
        let bad = parse(Some("maybe")).expect_err("bad");
        assert_eq!(condition(true, Some(&bad)).1, "InvalidAnnotation");
    }
}
