//! What the plugin's commands change, as pure functions: naming a member or
//! a tier of a store, the new value of each annotation, the JSON merge patch
//! that sets it, and what the store's status says about a switchover. The
//! commands in [`super`] read the store, call these and patch.

use bookstore_core::cluster::{Ordinal, Role};
use serde_json::{Value, json};

use crate::crd::{BookStore, BookStoreStatus};
use crate::names::{FENCED_MEMBERS_ANNOTATION, HIBERNATION_ANNOTATION};
use crate::switchover;

/// Why a command cannot do what it was asked, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("{0:?} is not a replicated tier (catalog or order)")]
    UnknownTier(String),
    #[error("{member:?} is not a member of BookStore {store}: {why}")]
    UnknownMember {
        store: String,
        member: String,
        why: String,
    },
    #[error("the store's {annotation} annotation cannot be read: {why}")]
    MalformedAnnotation { annotation: String, why: String },
}

/// A replicated member of a store: `catalog-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberName {
    pub tier: Role,
    pub ordinal: Ordinal,
}

impl std::fmt::Display for MemberName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.tier, self.ordinal)
    }
}

/// A replicated tier by name.
pub fn parse_tier(text: &str) -> Result<Role, EditError> {
    match text.parse::<Role>() {
        Ok(role) if role.is_replicated() => Ok(role),
        _ => Err(EditError::UnknownTier(text.to_owned())),
    }
}

/// How many members the store's spec asks of a replicated tier.
pub fn members_of(store: &BookStore, tier: Role) -> u32 {
    let count = match tier {
        Role::Catalog => store.spec.replicas.catalog,
        _ => store.spec.replicas.order,
    };
    u32::try_from(count).unwrap_or(0)
}

/// Checks that `ordinal` names a member of `tier` in `store`.
pub fn check_member(store: &BookStore, member: MemberName) -> Result<MemberName, EditError> {
    let count = members_of(store, member.tier);
    if member.ordinal >= count {
        return Err(EditError::UnknownMember {
            store: store_name(store),
            member: member.to_string(),
            why: format!(
                "its {} tier has {count} member{} ({})",
                member.tier,
                if count == 1 { "" } else { "s" },
                (0..count)
                    .map(|o| format!("{}-{o}", member.tier))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(member)
}

/// A member named as the annotation names it (`catalog-1`) or by its pod
/// (`mystore-catalog-1`), checked against the store's spec.
pub fn parse_member(store: &BookStore, text: &str) -> Result<MemberName, EditError> {
    let name = store_name(store);
    let unknown = |why: &str| EditError::UnknownMember {
        store: name.clone(),
        member: text.to_owned(),
        why: why.to_owned(),
    };
    let short = text
        .strip_prefix(&format!(
            "{}-",
            store.metadata.name.as_deref().unwrap_or("")
        ))
        .filter(|rest| rest.contains('-'))
        .unwrap_or(text);
    let (tier, ordinal) = short
        .rsplit_once('-')
        .ok_or_else(|| unknown("a member is named tier-ordinal, e.g. catalog-1"))?;
    let tier = parse_tier(tier).map_err(|e| unknown(&e.to_string()))?;
    let ordinal: Ordinal = ordinal
        .parse()
        .map_err(|_| unknown(&format!("{ordinal:?} is not an ordinal")))?;
    check_member(store, MemberName { tier, ordinal })
}

fn store_name(store: &BookStore) -> String {
    format!(
        "{}/{}",
        store.metadata.namespace.as_deref().unwrap_or("default"),
        store.metadata.name.as_deref().unwrap_or("?")
    )
}

/// An annotation of the store, if set.
pub fn annotation<'a>(store: &'a BookStore, key: &str) -> Option<&'a str> {
    store
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The switchover annotation's new value: `tier=ordinal` added to (or
/// replacing that tier's entry in) what it asks already.
pub fn switchover_value(
    current: Option<&str>,
    tier: Role,
    ordinal: Ordinal,
) -> Result<String, EditError> {
    let mut requests =
        switchover::parse(current.unwrap_or("")).map_err(|bad| EditError::MalformedAnnotation {
            annotation: switchover::ANNOTATION.to_owned(),
            why: bad.to_string(),
        })?;
    requests.insert(tier, ordinal);
    Ok(requests
        .iter()
        .map(|(tier, ordinal)| format!("{tier}={ordinal}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// The fenced members the annotation names, in its order.
pub fn fenced_members(current: Option<&str>) -> Vec<String> {
    current
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The fenced-members annotation with `member` added; `None` when it is
/// fenced already (nothing to change).
pub fn with_fenced(current: Option<&str>, member: MemberName) -> Option<String> {
    let mut members = fenced_members(current);
    let name = member.to_string();
    if members.contains(&name) {
        return None;
    }
    members.push(name);
    Some(members.join(","))
}

/// What the fenced-members annotation becomes without `member`: `None` when
/// it was not fenced (nothing to change), `Some(None)` when no member stays
/// fenced (the annotation goes).
pub fn without_fenced(current: Option<&str>, member: MemberName) -> Option<Option<String>> {
    let members = fenced_members(current);
    let name = member.to_string();
    if !members.contains(&name) {
        return None;
    }
    let rest: Vec<String> = members.into_iter().filter(|m| *m != name).collect();
    Some((!rest.is_empty()).then(|| rest.join(",")))
}

/// The hibernation annotation's value: `"on"` or `"off"`.
pub fn hibernation_value(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Whether the store is hibernated (or asked to be).
pub fn is_hibernated(store: &BookStore) -> bool {
    annotation(store, HIBERNATION_ANNOTATION) == Some("on")
}

/// The store's fenced members, as its annotation names them.
pub fn fenced(store: &BookStore) -> Vec<String> {
    fenced_members(annotation(store, FENCED_MEMBERS_ANNOTATION))
}

/// A JSON merge patch that sets (or, with `None`, removes) one annotation,
/// only if the store is still at `resource_version` (the API server answers
/// 409 otherwise, so two edits of a list never lose one another).
pub fn annotation_patch(key: &str, value: Option<&str>, resource_version: Option<&str>) -> Value {
    let mut metadata = json!({"annotations": {key: value}});
    if let Some(version) = resource_version {
        metadata["resourceVersion"] = json!(version);
    }
    json!({ "metadata": metadata })
}

/// How a switchover ended, as the store's status tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverOutcome {
    /// The tier's primary is the asked member, at `epoch`.
    Moved { epoch: u64 },
    /// The operator refused it; its reason.
    Refused(String),
}

/// What the status says of a switchover of `tier` to `ordinal` asked when
/// the tier was at `epoch_before`; `None` while it has not happened yet.
pub fn switchover_outcome(
    status: &BookStoreStatus,
    tier: Role,
    ordinal: Ordinal,
    epoch_before: u64,
) -> Option<SwitchoverOutcome> {
    let refusal = format!("switchover of {tier} to {tier}-{ordinal} refused");
    if let Some(condition) = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Switchover" && c.status == "False" && c.reason == "Refused")
        && let Some(start) = condition.message.find(&refusal)
    {
        let reason = condition.message[start..]
            .split("; ")
            .next()
            .unwrap_or(&refusal);
        return Some(SwitchoverOutcome::Refused(reason.to_owned()));
    }
    let now = match tier {
        Role::Catalog => status.catalog.as_ref(),
        _ => status.order.as_ref(),
    }?;
    (now.primary == Some(ordinal) && now.epoch > epoch_before)
        .then_some(SwitchoverOutcome::Moved { epoch: now.epoch })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TierStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn store(catalog: i32, order: i32) -> BookStore {
        serde_json::from_value(json!({
            "apiVersion": "mybookstore.dev/v1alpha1",
            "kind": "BookStore",
            "metadata": {"name": "shop", "namespace": "books"},
            "spec": {"replicas": {"catalog": catalog, "order": order}},
        }))
        .expect("a BookStore")
    }

    fn member(tier: Role, ordinal: Ordinal) -> MemberName {
        MemberName { tier, ordinal }
    }

    #[test]
    fn a_member_is_named_by_tier_and_ordinal_or_by_its_pod() {
        let shop = store(3, 2);
        assert_eq!(
            parse_member(&shop, "catalog-2"),
            Ok(member(Role::Catalog, 2))
        );
        assert_eq!(
            parse_member(&shop, "shop-order-1"),
            Ok(member(Role::Order, 1))
        );
    }

    #[test]
    fn an_unknown_tier_or_member_says_what_the_store_has() {
        let shop = store(2, 2);
        for (text, why) in [
            (
                "catalog-2",
                "its catalog tier has 2 members (catalog-0, catalog-1)",
            ),
            ("frontend-0", "\"frontend\" is not a replicated tier"),
            ("books-0", "\"books\" is not a replicated tier"),
            ("catalog", "a member is named tier-ordinal"),
            ("catalog-x", "\"x\" is not an ordinal"),
        ] {
            let error = parse_member(&shop, text).expect_err(text).to_string();
            assert!(error.contains(why), "{text}: {error}");
            assert!(error.contains("BookStore books/shop"), "{text}: {error}");
        }
        assert_eq!(
            parse_tier("cache"),
            Err(EditError::UnknownTier("cache".into()))
        );
        assert_eq!(parse_tier("order"), Ok(Role::Order));
    }

    #[test]
    fn a_switchover_replaces_its_tiers_entry_and_keeps_the_others() {
        assert_eq!(
            switchover_value(None, Role::Catalog, 1),
            Ok("catalog=1".into())
        );
        assert_eq!(
            switchover_value(Some("order=0,catalog=0"), Role::Catalog, 1),
            Ok("catalog=1,order=0".into())
        );
        let error = switchover_value(Some("books=1"), Role::Catalog, 1).expect_err("malformed");
        assert!(
            error.to_string().contains("mybookstore.dev/switchover"),
            "{error}"
        );
    }

    #[test]
    fn fencing_adds_a_member_once_and_unfencing_removes_it_or_the_annotation() {
        let catalog1 = member(Role::Catalog, 1);
        let order0 = member(Role::Order, 0);
        assert_eq!(with_fenced(None, catalog1), Some("catalog-1".into()));
        assert_eq!(
            with_fenced(Some("catalog-1"), order0),
            Some("catalog-1,order-0".into())
        );
        assert_eq!(with_fenced(Some("catalog-1, order-0"), order0), None);
        assert_eq!(
            without_fenced(Some("catalog-1,order-0"), catalog1),
            Some(Some("order-0".into()))
        );
        assert_eq!(without_fenced(Some("order-0"), order0), Some(None));
        assert_eq!(without_fenced(Some("order-0"), catalog1), None);
        assert_eq!(without_fenced(None, catalog1), None);
    }

    #[test]
    fn a_patch_sets_or_removes_one_annotation_at_a_resource_version() {
        assert_eq!(
            annotation_patch(
                HIBERNATION_ANNOTATION,
                Some(hibernation_value(true)),
                Some("42")
            ),
            json!({"metadata": {"annotations": {"mybookstore.dev/hibernation": "on"},
                                "resourceVersion": "42"}})
        );
        assert_eq!(
            annotation_patch(FENCED_MEMBERS_ANNOTATION, None, None),
            json!({"metadata": {"annotations": {"mybookstore.dev/fenced-members": null}}})
        );
    }

    fn status(primary: u32, epoch: u64, refused: Option<&str>) -> BookStoreStatus {
        let mut status = BookStoreStatus {
            catalog: Some(TierStatus {
                primary: Some(primary),
                epoch,
                ..TierStatus::default()
            }),
            ..BookStoreStatus::default()
        };
        if let Some(message) = refused {
            status.conditions.push(Condition {
                type_: "Switchover".into(),
                status: "False".into(),
                reason: "Refused".into(),
                message: message.into(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            });
        }
        status
    }

    #[test]
    fn a_switchover_is_done_when_the_target_leads_a_newer_epoch_or_its_refusal_is_shown() {
        assert_eq!(
            switchover_outcome(&status(0, 5, None), Role::Catalog, 1, 5),
            None
        );
        assert_eq!(
            switchover_outcome(&status(1, 6, None), Role::Catalog, 1, 5),
            Some(SwitchoverOutcome::Moved { epoch: 6 })
        );
        let refused = status(
            0,
            5,
            Some(
                "switchover of order to order-1 refused: x; switchover of catalog to catalog-1 refused: catalog-1 is not in sync",
            ),
        );
        assert_eq!(
            switchover_outcome(&refused, Role::Catalog, 1, 5),
            Some(SwitchoverOutcome::Refused(
                "switchover of catalog to catalog-1 refused: catalog-1 is not in sync".into()
            ))
        );
        // Another target's refusal is not this one's.
        assert_eq!(switchover_outcome(&refused, Role::Catalog, 0, 5), None);
    }
}
