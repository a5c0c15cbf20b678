//! `crds/bookstore.yaml` is generated from the Rust types; it must not drift.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

const COMMITTED: &str = include_str!("../../crds/bookstore.yaml");

#[test]
fn the_committed_crd_matches_the_types() {
    assert!(
        COMMITTED == bookstore_operator::crd_yaml(),
        "crds/bookstore.yaml is out of date; regenerate it with \
         `cargo run -p bookstore-operator -- crd > crds/bookstore.yaml`"
    );
}

#[test]
fn the_crd_names_the_group_version_and_short_name() {
    let crd: CustomResourceDefinition = serde_yaml::from_str(COMMITTED).expect("the CRD parses");
    assert_eq!(crd.spec.group, "mybookstore.dev");
    assert_eq!(crd.spec.names.short_names, Some(vec!["bs".to_owned()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    for column in ["Ready", "Catalog primary", "Order primary", "Epoch", "Age"] {
        assert!(
            columns.contains(&column),
            "printer column {column} missing: {columns:?}"
        );
    }
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
}
