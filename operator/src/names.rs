//! Names and labels of everything the operator creates for a store, in one
//! place so builders, the coordinator and tests agree.

use bookstore_core::cluster::Role;
use std::collections::BTreeMap;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "bookstore-operator";
/// The label the operator puts on each replicated pod: `primary` or `replica`.
pub const ROLE_LABEL: &str = "mybookstore.dev/role";
pub const PRIMARY: &str = "primary";
pub const REPLICA: &str = "replica";
/// Ports every service container listens on.
pub const PUBLIC_PORT: i32 = 8000;
pub const PEER_PORT: i32 = 9000;
/// The port the operator serves the coordinator API on.
pub const COORDINATOR_PORT: u16 = 9100;
/// The annotation that hibernates a store (`"on"`: every tier scaled to
/// zero, volumes kept) or brings it back (`"off"`).
pub const HIBERNATION_ANNOTATION: &str = "mybookstore.dev/hibernation";
/// The annotation naming the fenced members, comma-separated
/// (`"catalog-1,order-0"`): each is out of the in-sync set and serves
/// nothing until unfenced.
pub const FENCED_MEMBERS_ANNOTATION: &str = "mybookstore.dev/fenced-members";

/// The names of one store's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreNames {
    pub name: String,
    pub namespace: String,
}

impl StoreNames {
    pub fn new(name: &str, namespace: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// `mystore-catalog`: the StatefulSet or Deployment and its Service.
    pub fn tier(&self, role: Role) -> String {
        format!("{}-{}", self.name, role)
    }

    /// `mystore-catalog-primary`: the Service selecting the primary pod.
    pub fn primary_service(&self, role: Role) -> String {
        format!("{}-{}-primary", self.name, role)
    }

    /// `mystore-catalog-1`: the pod of a StatefulSet member.
    pub fn pod(&self, role: Role, ordinal: u32) -> String {
        format!("{}-{}-{ordinal}", self.name, role)
    }

    pub fn config_map(&self) -> String {
        format!("{}-config", self.name)
    }

    /// The ConfigMap the store's coordinator keeps its durable state in.
    pub fn coordinator_state(&self) -> String {
        format!("{}-coordinator", self.name)
    }

    pub fn token_secret(&self) -> String {
        format!("{}-peer-token", self.name)
    }

    /// A member's stable DNS name through its tier's headless Service.
    pub fn member_host(&self, role: Role, ordinal: u32) -> String {
        format!(
            "{}.{}.{}.svc",
            self.pod(role, ordinal),
            self.tier(role),
            self.namespace
        )
    }

    /// A Deployment tier's Service DNS name.
    pub fn service_host(&self, role: Role) -> String {
        format!("{}.{}.svc", self.tier(role), self.namespace)
    }

    /// Labels every object of the store carries.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "bookstore".to_owned()),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                FIELD_MANAGER.to_owned(),
            ),
        ])
    }

    /// The labels that select one tier's pods.
    pub fn selector(&self, role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
            ("app.kubernetes.io/component".to_owned(), role.to_string()),
        ])
    }

    /// All labels of one tier's pods.
    pub fn tier_labels(&self, role: Role) -> BTreeMap<String, String> {
        let mut labels = self.labels();
        labels.extend(self.selector(role));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_statefulset_conventions() {
        let names = StoreNames::new("shop", "books");
        assert_eq!(names.pod(Role::Catalog, 1), "shop-catalog-1");
        assert_eq!(
            names.member_host(Role::Order, 0),
            "shop-order-0.shop-order.books.svc"
        );
        assert_eq!(names.primary_service(Role::Catalog), "shop-catalog-primary");
        assert_eq!(
            names.selector(Role::Cache)["app.kubernetes.io/component"],
            "cache"
        );
    }
}
