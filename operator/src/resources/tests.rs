//! The builders, checked on a sample store.

use super::*;
use crate::crd::{BookStoreSpec, Replicas};
use crate::names::{PRIMARY, ROLE_LABEL};
use crate::validate::{self, ValidStore};

fn sample(spec: BookStoreSpec) -> BookStore {
    let mut store = BookStore::new("shop", spec);
    store.metadata.namespace = Some("books".into());
    store.metadata.uid = Some("uid-1".into());
    store
}

fn inputs() -> Inputs {
    Inputs {
        coordinator_url: "http://bookstore-operator.ops.svc:9100/stores/books/shop".into(),
        kept_members: Default::default(),
        hibernating: false,
    }
}

/// `spec` validated, with `inventory` resolved.
fn valid(spec: &BookStoreSpec, inventory: &str) -> ValidStore {
    validate::spec(spec)
        .expect("a valid sample spec")
        .with_inventory(inventory.to_owned())
}

/// Every object of the sample store with `spec`.
fn build(spec: BookStoreSpec) -> DesiredObjects {
    desired(
        &sample(spec.clone()),
        &valid(&spec, "init,1,3,10,t,a\n"),
        &inputs(),
    )
}

#[test]
fn a_default_store_has_every_object_owned_by_it() {
    let objects = build(BookStoreSpec::default());
    assert_eq!(objects.stateful_sets.len(), 2);
    assert_eq!(objects.deployments.len(), 2);
    assert_eq!(objects.services.len(), 6);
    assert_eq!(objects.disruption_budgets.len(), 4, "one per tier");
    assert_eq!(objects.config_maps.len(), 1);
    let owners = objects
        .stateful_sets
        .iter()
        .map(|s| &s.metadata)
        .chain(objects.services.iter().map(|s| &s.metadata))
        .chain(objects.deployments.iter().map(|d| &d.metadata));
    for meta in owners {
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "BookStore");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn replicated_tiers_are_statefulsets_with_volumes_and_hostname_ordinals() {
    let spec = BookStoreSpec {
        replicas: Replicas {
            catalog: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let objects = build(spec);
    let catalog = objects
        .stateful_sets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("shop-catalog"))
        .expect("catalog");
    let spec = catalog.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("shop-catalog"));
    let claims = spec.volume_claim_templates.as_ref().expect("claims");
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let container = &spec.template.spec.as_ref().expect("pod").containers[0];
    let args = container.args.as_ref().expect("args");
    assert_eq!(args[0], "catalog");
    assert!(args.contains(&"--ordinal-from-hostname".to_owned()));
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .expect("a retention policy");
    assert_eq!(
        retention.when_deleted.as_deref(),
        Some("Retain"),
        "data outlives a deleted store by default"
    );
    let advertised = args
        .iter()
        .position(|a| a == "--advertise-host")
        .expect("--advertise-host");
    assert_eq!(args[advertised + 1], "$(POD_IP)");
    let env = container.env.as_ref().expect("env");
    let pod_ip = env.iter().find(|e| e.name == "POD_IP").expect("POD_IP");
    let field = pod_ip
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("a field ref");
    assert_eq!(field.field_path, "status.podIP");
    let security = container.security_context.as_ref().expect("security");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
}

fn probe_path(probe: Option<&k8s_openapi::api::core::v1::Probe>) -> Option<&str> {
    probe?.http_get.as_ref()?.path.as_deref()
}

#[test]
fn a_replicated_member_is_ready_only_while_it_serves_and_live_while_it_answers() {
    let objects = build(BookStoreSpec::default());
    for set in &objects.stateful_sets {
        let pod = set.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let container = &pod.expect("a pod spec").containers[0];
        assert_eq!(
            probe_path(container.readiness_probe.as_ref()),
            Some("/readyz")
        );
        assert_eq!(
            probe_path(container.liveness_probe.as_ref()),
            Some("/healthz")
        );
    }
    for deployment in &objects.deployments {
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref());
        let container = &pod.expect("a pod spec").containers[0];
        assert_eq!(
            probe_path(container.readiness_probe.as_ref()),
            Some("/healthz")
        );
    }
}

#[test]
fn the_primary_service_selects_the_pod_labelled_primary() {
    let objects = build(BookStoreSpec::default());
    let primary = objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("shop-order-primary"))
        .expect("primary service");
    let selector = primary
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .expect("selector");
    assert_eq!(selector[ROLE_LABEL], PRIMARY);
    assert_eq!(selector["app.kubernetes.io/component"], "order");
}

#[test]
fn the_public_frontend_service_does_not_expose_the_peer_port() {
    let objects = build(BookStoreSpec::default());
    let frontend = objects
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("shop-frontend"))
        .expect("frontend service");
    let ports = frontend
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, crate::names::PUBLIC_PORT);
}

#[test]
fn the_cluster_file_lists_every_member_by_dns_name_and_parses() {
    let file = cluster_file(
        &crate::names::StoreNames::new("shop", "books"),
        &valid(&BookStoreSpec::default(), "").spec.replicas,
        &inputs().coordinator_url,
    );
    let cluster =
        bookstore_core::cluster::ClusterConfig::parse(&file).expect("a valid cluster file");
    let catalog1 = cluster.member(Role::Catalog, 1).expect("catalog-1");
    assert_eq!(catalog1.peer, "shop-catalog-1.shop-catalog.books.svc:9000");
    assert_eq!(
        cluster.first(Role::Coordinator).expect("coordinator").peer,
        "bookstore-operator.ops.svc:9100"
    );
}

#[test]
fn a_changed_inventory_rolls_the_pods() {
    let spec = BookStoreSpec::default();
    let hash = |inventory: &str| {
        let objects = desired(&sample(spec.clone()), &valid(&spec, inventory), &inputs());
        objects.deployments[0]
            .spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .as_ref()
            .expect("meta")
            .annotations
            .as_ref()
            .expect("annotations")["mybookstore.dev/config-hash"]
            .clone()
    };
    assert_ne!(hash("init,1,3,10,t,a\n"), hash("init,1,4,10,t,a\n"));
}

#[test]
fn volumes_go_with_the_store_only_when_asked() {
    let mut spec = BookStoreSpec::default();
    spec.storage.delete_with_store = true;
    let objects = build(spec);
    for stateful_set in &objects.stateful_sets {
        let retention = stateful_set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
            .expect("a retention policy");
        assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }
}

#[test]
fn the_operator_replaces_replicated_pods_itself_on_update() {
    let objects = build(BookStoreSpec::default());
    for set in &objects.stateful_sets {
        let strategy = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        assert_eq!(
            strategy.and_then(|s| s.type_.as_deref()),
            Some("OnDelete"),
            "the rollout planner picks each pod, the primary last"
        );
    }
}

#[test]
fn a_scale_down_keeps_the_pod_of_a_member_the_coordinator_still_counts() {
    let spec = BookStoreSpec::default();
    let store = valid(&spec, "init,1,3,10,t,a\n");
    let replicas = |inputs: &Inputs| {
        let built = desired(&sample(spec.clone()), &store, inputs);
        built.stateful_sets[0]
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
    };
    let mut kept = inputs();
    assert_eq!(replicas(&kept), Some(2), "the spec's count");
    kept.kept_members.insert(Role::Catalog, 3);
    assert_eq!(replicas(&kept), Some(3), "member 2 has not left yet");
    kept.kept_members.insert(Role::Catalog, 1);
    assert_eq!(replicas(&kept), Some(2), "never below the spec");
}

#[test]
fn replicated_members_prefer_separate_nodes_by_default() {
    let objects = build(BookStoreSpec::default());
    for set in &objects.stateful_sets {
        let pod = set.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let anti = pod
            .and_then(|p| p.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .expect("anti-affinity");
        let preferred = anti
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("preferred");
        let term = &preferred[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        let selector = term
            .label_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref());
        let component = selector.and_then(|l| l.get("app.kubernetes.io/component"));
        assert_eq!(
            component,
            set.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.as_ref())
                .and_then(|l| l.get("app.kubernetes.io/component")),
            "members of the same tier only"
        );
        assert!(
            anti.required_during_scheduling_ignored_during_execution
                .is_none()
        );
    }
    for deployment in &objects.deployments {
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref());
        assert!(pod.and_then(|p| p.affinity.as_ref()).is_none());
    }
}

#[test]
fn member_spread_can_be_required_or_switched_off() {
    use crate::crd::{MemberSpread, Placement};
    let affinity = |member_spread| {
        let spec = BookStoreSpec {
            placement: Placement { member_spread },
            ..Default::default()
        };
        let objects = build(spec);
        let pod = objects.stateful_sets[0]
            .spec
            .clone()
            .and_then(|s| s.template.spec);
        pod.and_then(|p| p.affinity)
    };
    let required = affinity(MemberSpread::Required)
        .and_then(|a| a.pod_anti_affinity)
        .and_then(|a| a.required_during_scheduling_ignored_during_execution);
    assert_eq!(required.map(|terms| terms.len()), Some(1));
    assert!(affinity(MemberSpread::None).is_none());
}

#[test]
fn every_tier_with_pods_has_a_disruption_budget_of_one() {
    let spec = BookStoreSpec {
        replicas: Replicas {
            cache: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let objects = build(spec);
    let names: Vec<&str> = objects
        .disruption_budgets
        .iter()
        .filter_map(|b| b.metadata.name.as_deref())
        .collect();
    assert_eq!(names, vec!["shop-catalog", "shop-order", "shop-frontend"]);
    for budget in &objects.disruption_budgets {
        let spec = budget.spec.as_ref().expect("a spec");
        assert_eq!(
            spec.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
    }
}

/// The pods' command lines come from the store plan
/// (`bookstore_core::plan::MemberCommand`); these are the exact args a
/// running store's pods have, so moving them there rolled no pod.
#[test]
fn the_pods_command_lines_are_the_ones_running_stores_have() {
    let objects = build(BookStoreSpec::default());
    let args_of = |name: &str| {
        let template = objects
            .stateful_sets
            .iter()
            .filter(|s| s.metadata.name.as_deref() == Some(name))
            .map(|s| &s.spec.as_ref().expect("spec").template)
            .chain(
                objects
                    .deployments
                    .iter()
                    .filter(|d| d.metadata.name.as_deref() == Some(name))
                    .map(|d| &d.spec.as_ref().expect("spec").template),
            )
            .next()
            .expect("the workload");
        template.spec.as_ref().expect("pod").containers[0]
            .args
            .clone()
            .expect("args")
    };
    let common = [
        "--cluster",
        "/etc/bookstore/cluster.conf",
        "--inventory",
        "/etc/bookstore/inventory.txt",
        "--token-file",
        "/var/run/bookstore/peer-token",
        "--data-dir",
        "/data",
        "--bind-host",
        "0.0.0.0",
        "--heartbeat-ms",
        "1000",
        "--coordinator-url",
        "http://bookstore-operator.ops.svc:9100/stores/books/shop",
    ];
    let expected = |role: &str, tail: &[&str]| -> Vec<String> {
        std::iter::once(role)
            .chain(common)
            .chain(tail.iter().copied())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        args_of("shop-catalog"),
        expected(
            "catalog",
            &["--ordinal-from-hostname", "--advertise-host", "$(POD_IP)"]
        )
    );
    assert_eq!(args_of("shop-frontend"), expected("frontend", &[]));
}

#[test]
fn a_hibernating_store_has_no_pods_but_keeps_its_volumes() {
    let spec = BookStoreSpec::default();
    let hibernating = Inputs {
        hibernating: true,
        ..inputs()
    };
    let objects = desired(
        &sample(spec.clone()),
        &valid(&spec, "init,1,3,10,t,a\n"),
        &hibernating,
    );
    for set in &objects.stateful_sets {
        let spec = set.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(0), "{:?}", set.metadata.name);
        let retention = spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .expect("retention");
        assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    }
    for deployment in &objects.deployments {
        let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
        assert_eq!(replicas, Some(0), "{:?}", deployment.metadata.name);
    }
}
