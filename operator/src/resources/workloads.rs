//! The store's workloads: a StatefulSet per replicated tier (stable
//! ordinals, one volume each) and a Deployment for the frontend and cache.
//! Every container runs the same `bookstore` image with its role as the
//! first argument, non-root, with a read-only root filesystem.

use std::collections::BTreeMap;

use bookstore_core::cluster::Role;
use bookstore_core::plan::{MemberCommand, OrdinalSource};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use super::config::{CLUSTER_KEY, INVENTORY_KEY};
use crate::crd::MemberSpread;
use crate::hibernation;
use crate::names::{PEER_PORT, PUBLIC_PORT, StoreNames};
use crate::validate::ValidStore;

/// The unprivileged user every container runs as.
const RUN_AS_USER: i64 = 65532;
const CONFIG_DIR: &str = "/etc/bookstore";
const TOKEN_DIR: &str = "/var/run/bookstore";
const DATA_DIR: &str = "/data";

pub fn stateful_set(
    names: &StoreNames,
    store: &ValidStore,
    inputs: &Inputs,
    role: Role,
    metadata: ObjectMeta,
) -> StatefulSet {
    let spec = &store.spec;
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".to_owned()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(spec.storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(hibernation::replicas(
                inputs.hibernating,
                kept_pod_count(store, inputs, role),
            )),
            service_name: Some(names.tier(role)),
            // Members start together: each waits for its own resync anyway.
            pod_management_policy: Some("Parallel".to_owned()),
            // The operator replaces the pods itself, replicas first and the
            // primary last after a switchover (crate::rollout).
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(names.selector(role)),
                ..Default::default()
            },
            template: pod_template(names, store, inputs, role),
            volume_claim_templates: Some(vec![claim]),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(claim_policy(spec.storage.delete_with_store)),
                    // Scaling down keeps a member's data for when it returns.
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn claim_policy(delete: bool) -> String {
    if delete { "Delete" } else { "Retain" }.to_owned()
}

/// The tier's count as a workload's `replicas` (at most `MAX_REPLICAS`).
fn pod_count(store: &ValidStore, role: Role) -> i32 {
    i32::try_from(store.spec.replicas.of(role)).unwrap_or(i32::MAX)
}

/// A replicated tier's pods: its spec's count, or more while the coordinator
/// still has a member above it (scale-down: the topology first, then the pod).
fn kept_pod_count(store: &ValidStore, inputs: &Inputs, role: Role) -> i32 {
    let kept = inputs.kept_members.get(&role).copied().unwrap_or(0);
    pod_count(store, role).max(i32::try_from(kept).unwrap_or(i32::MAX))
}

pub fn deployment(
    names: &StoreNames,
    store: &ValidStore,
    inputs: &Inputs,
    role: Role,
    metadata: ObjectMeta,
) -> Deployment {
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(hibernation::replicas(
                inputs.hibernating,
                pod_count(store, role),
            )),
            selector: LabelSelector {
                match_labels: Some(names.selector(role)),
                ..Default::default()
            },
            template: pod_template(names, store, inputs, role),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_template(
    names: &StoreNames,
    store: &ValidStore,
    inputs: &Inputs,
    role: Role,
) -> PodTemplateSpec {
    let mut annotations = BTreeMap::new();
    if store.spec.annotate_pods {
        annotations.insert("prometheus.io/scrape".to_owned(), "true".to_owned());
        annotations.insert("prometheus.io/port".to_owned(), PUBLIC_PORT.to_string());
        annotations.insert("prometheus.io/path".to_owned(), "/metrics".to_owned());
    }
    // A changed inventory or cluster file must reach running pods: a hash of
    // it in the template rolls them.
    annotations.insert(
        "mybookstore.dev/config-hash".to_owned(),
        config_hash(store, inputs),
    );
    let data_volume = if role.is_replicated() {
        None
    } else {
        Some(Volume {
            name: "data".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        })
    };
    let volumes = [
        Some(Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Some(Volume {
            name: "token".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.token_secret()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        }),
        data_volume,
    ];
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(names.tier_labels(role)),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(store, inputs, role)],
            volumes: Some(volumes.into_iter().flatten().collect()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS_USER),
                run_as_group: Some(RUN_AS_USER),
                fs_group: Some(RUN_AS_USER),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(10),
            affinity: member_spread(names, store.spec.member_spread, role),
            ..Default::default()
        }),
    }
}

/// Pod anti-affinity that spreads a replicated tier's members across nodes
/// (one node's loss then takes at most one copy of the tier's data); the
/// stateless tiers go where the scheduler likes.
fn member_spread(names: &StoreNames, spread: MemberSpread, role: Role) -> Option<Affinity> {
    if !role.is_replicated() {
        return None;
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(names.selector(role)),
            ..Default::default()
        }),
        topology_key: "kubernetes.io/hostname".to_owned(),
        ..Default::default()
    };
    let anti_affinity = match spread {
        MemberSpread::None => return None,
        MemberSpread::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        },
        MemberSpread::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(anti_affinity),
        ..Default::default()
    })
}

fn container(store: &ValidStore, inputs: &Inputs, role: Role) -> Container {
    let spec = &store.spec;
    let replicated = role.is_replicated();
    let args = MemberCommand {
        role,
        ordinal: if replicated {
            OrdinalSource::FromHostname
        } else {
            OrdinalSource::First
        },
        cluster: format!("{CONFIG_DIR}/{CLUSTER_KEY}"),
        inventory: format!("{CONFIG_DIR}/{INVENTORY_KEY}"),
        token_file: format!("{TOKEN_DIR}/peer-token"),
        data_dir: DATA_DIR.to_owned(),
        heartbeat_ms: u64::try_from(spec.heartbeat.interval.as_millis()).unwrap_or(u64::MAX),
        bind_host: Some("0.0.0.0".to_owned()),
        // Peers reach a member at its pod IP: a recreated pod's DNS record
        // may be stale in resolvers' caches for a while.
        advertise_host: replicated.then(|| "$(POD_IP)".to_owned()),
        coordinator_url: Some(inputs.coordinator_url.clone()),
        no_cache: spec.replicas.cache == 0,
    }
    .args();
    let probe = |path: &str, period_seconds, failure_threshold| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(PUBLIC_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(1),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    };
    Container {
        name: role.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(args),
        env: Some(vec![
            EnvVar {
                name: "BOOKSTORE_LOG_FORMAT".to_owned(),
                value: Some("json".to_owned()),
                ..Default::default()
            },
            EnvVar {
                name: "POD_IP".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".to_owned()),
                container_port: PUBLIC_PORT,
                ..Default::default()
            },
            ContainerPort {
                name: Some("peer".to_owned()),
                container_port: PEER_PORT,
                ..Default::default()
            },
        ]),
        // A replicated member is Ready only while it serves (primary, or in
        // the in-sync set: its /readyz), so a rollout or a drain never counts
        // a resyncing member as available. Liveness stays "the process
        // answers" (/healthz): a resync is not a reason to restart it.
        readiness_probe: Some(probe(readiness_path(role), READINESS_PERIOD_SECONDS, 1)),
        liveness_probe: Some(probe("/healthz", LIVENESS_PERIOD_SECONDS, 5)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_owned(),
                mount_path: CONFIG_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "token".to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "data".to_owned(),
                mount_path: DATA_DIR.to_owned(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// How often the kubelet asks whether a pod serves: a member admitted to
/// the in-sync set counts as available within about this.
const READINESS_PERIOD_SECONDS: i32 = 1;
/// How often the kubelet asks whether the process answers at all (five
/// misses restart it).
const LIVENESS_PERIOD_SECONDS: i32 = 2;

/// Where the kubelet asks whether a pod serves: a replicated member's
/// `/readyz` answers 200 only while it is primary or an in-sync replica;
/// the stateless tiers serve as soon as they answer.
fn readiness_path(role: Role) -> &'static str {
    if role.is_replicated() {
        "/readyz"
    } else {
        "/healthz"
    }
}

/// A stable hash of what the pods read at start but cannot see change (the
/// inventory, the coordinator's address), put on the pod template so a
/// change rolls the pods. FNV-1a of the JSON, as it has been since the first
/// release: another hash would roll every pod on an operator upgrade.
fn config_hash(store: &ValidStore, inputs: &Inputs) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes =
        serde_json::to_vec(&(&store.inventory, &inputs.coordinator_url)).unwrap_or_default();
    let hash = bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:016x}")
}
