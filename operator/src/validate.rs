//! The validate step: a BookStore's spec checked at the boundary and turned
//! into a [`ValidStore`], the typed store the object builders and the
//! coordination read (counts that cannot be negative, a heartbeat as a
//! `Duration`, the inventory resolved), so nothing downstream re-checks it.
//!
//! Two stages, each with its own error: [`spec`] needs nothing but the spec
//! ([`SpecProblems`]); the inventory of a ConfigMap can only be judged once it
//! is read ([`InventoryProblem`], see [`config_map_inventory`]). The CRD's CEL
//! rules refuse most of these at `kubectl apply` already; they are checked
//! again because Helm never upgrades a CRD, so a cluster may run an older one.

use std::time::Duration;

use bookstore_core::cluster::Role;
use bookstore_core::inventory;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceRequirements};

use crate::crd::{
    BookStoreSpec, ConfigMapKey, MAX_DETECTION_MS, MAX_FAILURE_THRESHOLD,
    MAX_HEARTBEAT_INTERVAL_MS, MAX_REPLICAS, MIN_HEARTBEAT_INTERVAL_MS, MemberSpread, Replicas,
    Storage,
};

/// The inventory of a store whose spec names none: the original's seven books.
pub const BUILT_IN_INVENTORY: &str = include_str!("../../config/inventory.txt");

/// Members or pods of each tier, in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCounts {
    pub catalog: u32,
    pub order: u32,
    pub frontend: u32,
    pub cache: u32,
}

impl ReplicaCounts {
    /// What the spec asks for, negative counts as 0: for the status of a
    /// store whose spec is invalid.
    pub fn requested(replicas: &Replicas) -> Self {
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        Self {
            catalog: count(replicas.catalog),
            order: count(replicas.order),
            frontend: count(replicas.frontend),
            cache: count(replicas.cache),
        }
    }

    /// The count of `role`'s tier (the coordinator is no tier: 0).
    pub fn of(&self, role: Role) -> u32 {
        match role {
            Role::Catalog => self.catalog,
            Role::Order => self.order,
            Role::Frontend => self.frontend,
            Role::Cache => self.cache,
            Role::Coordinator => 0,
        }
    }
}

/// Failure detection of the replicated tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval: Duration,
    /// Heartbeats a member may miss before it counts as down.
    pub failure_threshold: u32,
}

/// Where the inventory comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InventorySource {
    /// [`BUILT_IN_INVENTORY`].
    BuiltIn,
    /// Inline lines, already parsed once.
    Lines(String),
    /// A ConfigMap key, read by the controller.
    ConfigMap(ConfigMapKey),
}

/// A spec that passed every check that needs only the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    pub image: String,
    pub replicas: ReplicaCounts,
    pub heartbeat: Heartbeat,
    pub storage: Storage,
    pub resources: Option<ResourceRequirements>,
    pub annotate_pods: bool,
    pub member_spread: MemberSpread,
    pub inventory_source: InventorySource,
}

impl ValidSpec {
    /// The store, with its inventory resolved.
    pub fn with_inventory(self, inventory: String) -> ValidStore {
        ValidStore {
            spec: self,
            inventory,
        }
    }
}

/// A store that passed validation, with its inventory resolved: what the
/// builders and the coordination read.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidStore {
    pub spec: ValidSpec,
    /// The inventory text (inline, from a ConfigMap, or the built-in one).
    pub inventory: String,
}

/// Every problem the spec alone shows, as sentences.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct SpecProblems(pub Vec<String>);

/// Why the inventory a ConfigMap holds cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InventoryProblem {
    #[error("inventory ConfigMap {0} does not exist")]
    MissingConfigMap(String),
    #[error("inventory ConfigMap {name} has no key {key}")]
    MissingKey { name: String, key: String },
    #[error("inventory ConfigMap {name}: {error}")]
    Unparseable { name: String, error: String },
}

/// Checks the spec; the typed spec, or every problem it has.
pub fn spec(spec: &BookStoreSpec) -> Result<ValidSpec, SpecProblems> {
    let mut problems = Vec::new();
    let replicas = &spec.replicas;
    let mut count = |tier: &str, count: i32, min: i32| {
        if !(min..=MAX_REPLICAS).contains(&count) {
            problems.push(format!(
                "replicas.{tier} is {count}; it must be {min} to {MAX_REPLICAS}"
            ));
        }
        u32::try_from(count).unwrap_or(0)
    };
    let counts = ReplicaCounts {
        catalog: count("catalog", replicas.catalog, 1),
        order: count("order", replicas.order, 1),
        frontend: count("frontend", replicas.frontend, 1),
        cache: count("cache", replicas.cache, 0),
    };
    if spec.image.is_empty() || spec.image.chars().any(char::is_whitespace) {
        problems.push(format!(
            "image {:?} is not an image reference (empty or with spaces)",
            spec.image
        ));
    }
    let heartbeat = &spec.heartbeat;
    if !(MIN_HEARTBEAT_INTERVAL_MS..=MAX_HEARTBEAT_INTERVAL_MS).contains(&heartbeat.interval_ms) {
        problems.push(format!(
            "heartbeat.intervalMs is {}; it must be {MIN_HEARTBEAT_INTERVAL_MS} to {MAX_HEARTBEAT_INTERVAL_MS}",
            heartbeat.interval_ms
        ));
    }
    if !(1..=MAX_FAILURE_THRESHOLD).contains(&heartbeat.failure_threshold) {
        problems.push(format!(
            "heartbeat.failureThreshold is {}; it must be 1 to {MAX_FAILURE_THRESHOLD}",
            heartbeat.failure_threshold
        ));
    }
    let detection = heartbeat
        .interval_ms
        .saturating_mul(u64::from(heartbeat.failure_threshold));
    if detection > MAX_DETECTION_MS {
        problems.push(format!(
            "heartbeat.intervalMs × failureThreshold is {detection} ms; it must be at most {MAX_DETECTION_MS}"
        ));
    }
    if !is_positive_quantity(&spec.storage.size) {
        problems.push(format!(
            "storage.size {:?} is not a positive quantity such as 1Gi",
            spec.storage.size
        ));
    }
    let inventory_source = match spec.inventory.as_ref().map(|i| (&i.lines, &i.config_map)) {
        None => InventorySource::BuiltIn,
        Some((Some(lines), None)) => {
            if let Err(error) = inventory::parse(lines) {
                problems.push(format!("inventory.lines: {error}"));
            }
            InventorySource::Lines(lines.clone())
        }
        Some((None, Some(reference))) => InventorySource::ConfigMap(reference.clone()),
        Some(_) => {
            problems.push("inventory needs exactly one of lines and configMap".to_owned());
            InventorySource::BuiltIn
        }
    };
    if !problems.is_empty() {
        return Err(SpecProblems(problems));
    }
    Ok(ValidSpec {
        image: spec.image.clone(),
        replicas: counts,
        heartbeat: Heartbeat {
            interval: Duration::from_millis(heartbeat.interval_ms),
            failure_threshold: heartbeat.failure_threshold,
        },
        storage: spec.storage.clone(),
        resources: spec.resources.clone(),
        annotate_pods: spec.metrics.annotate_pods,
        member_spread: spec.placement.member_spread,
        inventory_source,
    })
}

/// The inventory `reference` names, given the ConfigMap as read (`None`: it
/// does not exist).
pub fn config_map_inventory(
    reference: &ConfigMapKey,
    config_map: Option<&ConfigMap>,
) -> Result<String, InventoryProblem> {
    let config_map =
        config_map.ok_or_else(|| InventoryProblem::MissingConfigMap(reference.name.clone()))?;
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(&reference.key))
        .ok_or_else(|| InventoryProblem::MissingKey {
            name: reference.name.clone(),
            key: reference.key.clone(),
        })?;
    inventory::parse(text).map_err(|error| InventoryProblem::Unparseable {
        name: reference.name.clone(),
        error: error.to_string(),
    })?;
    Ok(text.clone())
}

/// A positive Kubernetes quantity: a decimal number with an optional binary
/// (Ki..Ei), decimal (m, k..E) or exponent (e3) suffix, as the API server
/// reads it.
fn is_positive_quantity(text: &str) -> bool {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number_ok = !number.is_empty()
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let exponent_ok = |rest: &str| {
        let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    };
    let suffix_ok = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E",
    ]
    .contains(&suffix)
        || suffix.strip_prefix(['e', 'E']).is_some_and(exponent_ok);
    let positive = number.chars().any(|c| c.is_ascii_digit() && c != '0');
    number_ok && suffix_ok && positive
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{HeartbeatSpec, Inventory};
    use std::collections::BTreeMap;

    #[test]
    fn the_default_spec_is_valid_with_the_built_in_inventory() {
        let valid = spec(&BookStoreSpec::default()).expect("valid");
        assert_eq!(
            valid.replicas,
            ReplicaCounts {
                catalog: 2,
                order: 2,
                frontend: 1,
                cache: 1
            }
        );
        assert_eq!(valid.heartbeat.interval, Duration::from_secs(1));
        assert_eq!(valid.inventory_source, InventorySource::BuiltIn);
    }

    #[test]
    fn each_kind_of_mistake_is_named() {
        let bad = BookStoreSpec {
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
        let SpecProblems(found) = spec(&bad).expect_err("invalid");
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().any(|p| p.starts_with("replicas.catalog is 0")));
        assert!(found.iter().any(|p| p.starts_with("inventory.lines")));
    }

    #[test]
    fn a_hung_primary_must_be_noticed_within_the_detection_limit() {
        let slow = BookStoreSpec {
            heartbeat: HeartbeatSpec {
                interval_ms: 30_000,
                failure_threshold: 5,
            },
            ..Default::default()
        };
        let SpecProblems(found) = spec(&slow).expect_err("too slow");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("150000 ms"), "{found:?}");
    }

    #[test]
    fn both_inventory_sources_or_neither_is_a_problem() {
        for inventory in [
            Inventory::default(),
            Inventory {
                lines: Some("init,1,1,1,t,a".into()),
                config_map: Some(ConfigMapKey::default()),
            },
        ] {
            let bad = BookStoreSpec {
                inventory: Some(inventory),
                ..Default::default()
            };
            assert!(spec(&bad).is_err());
        }
    }

    fn config_map(key: &str, text: &str) -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([(key.to_owned(), text.to_owned())])),
            ..Default::default()
        }
    }

    #[test]
    fn a_config_map_inventory_is_read_or_its_problem_named() {
        let reference = ConfigMapKey {
            name: "books".into(),
            key: "inventory.txt".into(),
        };
        let good = config_map("inventory.txt", "init,1,3,10,t,a\n");
        assert_eq!(
            config_map_inventory(&reference, Some(&good)),
            Ok("init,1,3,10,t,a\n".to_owned())
        );
        assert_eq!(
            config_map_inventory(&reference, None),
            Err(InventoryProblem::MissingConfigMap("books".into()))
        );
        assert!(matches!(
            config_map_inventory(&reference, Some(&config_map("other", "x"))),
            Err(InventoryProblem::MissingKey { .. })
        ));
        assert!(matches!(
            config_map_inventory(&reference, Some(&config_map("inventory.txt", "init,x"))),
            Err(InventoryProblem::Unparseable { .. })
        ));
    }

    #[test]
    fn quantities() {
        for good in ["1Gi", "500M", "1.5Gi", "100", "1e3", "2Ti", "0.5Gi"] {
            assert!(is_positive_quantity(good), "{good}");
        }
        for bad in [
            "lots", "1Qi", "", "Gi", "0", "0Gi", "1.2.3Gi", "-1Gi", "1 Gi", "1e",
        ] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn counts_per_role() {
        let counts = ReplicaCounts::requested(&Replicas {
            catalog: 3,
            order: -2,
            frontend: 1,
            cache: 0,
        });
        assert_eq!(counts.of(Role::Catalog), 3);
        assert_eq!(counts.of(Role::Order), 0);
        assert_eq!(counts.of(Role::Coordinator), 0);
    }
}
