//! The store's Services: the public frontend, the cache, a headless Service
//! per replicated tier (stable member DNS names), and a primary Service per
//! replicated tier that selects the pod the operator labelled primary.

use bookstore_core::cluster::Role;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{PEER_PORT, PRIMARY, PUBLIC_PORT, ROLE_LABEL, StoreNames};

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    }
}

/// Members reach each other by these names even before they are Ready:
/// a joining member must be reachable to resync.
pub fn headless(names: &StoreNames, role: Role, metadata: ObjectMeta) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector(role)),
            ports: Some(vec![port("http", PUBLIC_PORT), port("peer", PEER_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Selects the tier's current primary (for people and tools; the services
/// themselves follow the coordinator's topology).
pub fn primary(names: &StoreNames, role: Role, metadata: ObjectMeta) -> Service {
    let mut selector = names.selector(role);
    selector.insert(ROLE_LABEL.to_owned(), PRIMARY.to_owned());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![port("http", PUBLIC_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The frontend's Service is the store's public entry: only the public
/// port. The cache's Service also carries the peer port (the catalog sends
/// invalidations there).
pub fn for_deployment(names: &StoreNames, role: Role, metadata: ObjectMeta) -> Service {
    let ports = match role {
        Role::Frontend => vec![port("http", PUBLIC_PORT)],
        _ => vec![port("http", PUBLIC_PORT), port("peer", PEER_PORT)],
    };
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(names.selector(role)),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}
