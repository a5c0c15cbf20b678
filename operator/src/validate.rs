//! Checks a BookStore's spec at the boundary, so a malformed resource is
//! reported in its status (and an Event) instead of producing broken objects.

use bookstore_core::inventory;

use crate::crd::BookStoreSpec;

/// The most members a replicated tier may have; more buys nothing here.
pub const MAX_REPLICAS: i32 = 9;

/// Every problem found in a spec, as sentences.
pub fn problems(spec: &BookStoreSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let replicas = &spec.replicas;
    for (tier, count, min) in [
        ("catalog", replicas.catalog, 1),
        ("order", replicas.order, 1),
        ("frontend", replicas.frontend, 1),
        ("cache", replicas.cache, 0),
    ] {
        if !(min..=MAX_REPLICAS).contains(&count) {
            problems.push(format!(
                "replicas.{tier} is {count}; it must be {min} to {MAX_REPLICAS}"
            ));
        }
    }
    if spec.image.trim().is_empty() {
        problems.push("image is empty".to_owned());
    }
    if spec.heartbeat.interval_ms < 100 || spec.heartbeat.interval_ms > 60_000 {
        problems.push(format!(
            "heartbeat.intervalMs is {}; it must be 100 to 60000",
            spec.heartbeat.interval_ms
        ));
    }
    if !(1..=20).contains(&spec.heartbeat.failure_threshold) {
        problems.push(format!(
            "heartbeat.failureThreshold is {}; it must be 1 to 20",
            spec.heartbeat.failure_threshold
        ));
    }
    if !is_quantity(&spec.storage.size) {
        problems.push(format!(
            "storage.size {:?} is not a quantity such as 1Gi",
            spec.storage.size
        ));
    }
    if let Some(inventory) = &spec.inventory {
        match (&inventory.lines, &inventory.config_map) {
            (Some(lines), None) => {
                if let Err(error) = inventory::parse(lines) {
                    problems.push(format!("inventory.lines: {error}"));
                }
            }
            (None, Some(_)) => {}
            _ => problems.push("inventory needs exactly one of lines and configMap".to_owned()),
        }
    }
    problems
}

/// A Kubernetes quantity, roughly: digits with an optional binary or
/// decimal suffix.
fn is_quantity(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Inventory, Replicas};

    #[test]
    fn the_default_spec_is_valid() {
        assert!(
            problems(&BookStoreSpec::default()).is_empty(),
            "{:?}",
            problems(&BookStoreSpec::default())
        );
    }

    #[test]
    fn each_kind_of_mistake_is_named() {
        let spec = BookStoreSpec {
            image: "img".into(),
            replicas: Replicas {
                catalog: 0,
                order: 12,
                frontend: 1,
                cache: -1,
            },
            inventory: Some(Inventory {
                lines: Some("init,x,1,1,t,a".into()),
                config_map: None,
            }),
            ..Default::default()
        };
        let found = problems(&spec);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().any(|p| p.starts_with("replicas.catalog")));
        assert!(found.iter().any(|p| p.starts_with("inventory.lines")));
    }

    #[test]
    fn quantities() {
        assert!(is_quantity("1Gi"));
        assert!(is_quantity("500M"));
        assert!(!is_quantity("1.5Gi"));
        assert!(!is_quantity("lots"));
        assert!(!is_quantity("1Qi"));
    }
}
