//! Admission on a real API server (`tests/cluster/cluster.sh up api-only`):
//! `kubectl apply` of each bad store in `k8s/invalid/` is refused by the CEL
//! rules of `crds/bookstore.yaml` with the message its file names, the sample
//! store and valid changes to it are accepted, and every rule of the CRD has
//! a bad example that trips it.

mod support;

use std::path::{Path, PathBuf};

use bookstore_operator::crd::BookStore;
use kube::Api;
use serde_json::Value;
use support::{Cluster, Mode, install_crd, kubectl, namespace, repo_root};

/// The line of a bad example that says how the API server refuses it.
const REFUSED_WITH: &str = "# refused with: ";

/// One file of `k8s/invalid/`.
struct BadExample {
    path: PathBuf,
    /// The `metadata.name` of its store.
    name: String,
    /// What `kubectl apply` must print.
    refusal: String,
}

impl BadExample {
    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("a readable example");
        let refusal = text
            .lines()
            .find_map(|line| line.strip_prefix(REFUSED_WITH))
            .unwrap_or_else(|| panic!("{} has no '{REFUSED_WITH}' line", path.display()))
            .to_owned();
        let name = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("name: "))
            .unwrap_or_else(|| panic!("{} names no store", path.display()))
            .to_owned();
        Self {
            path: path.to_owned(),
            name,
            refusal,
        }
    }
}

fn bad_examples() -> Vec<BadExample> {
    let dir = repo_root().join("k8s/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("k8s/invalid")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no bad examples in {}", dir.display());
    paths.iter().map(|path| BadExample::read(path)).collect()
}

/// Every `message` of an `x-kubernetes-validations` rule in the CRD.
fn rule_messages(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(fields) => {
            for rule in fields
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let message = rule["message"].as_str().expect("every rule has a message");
                found.push(message.to_owned());
            }
            fields.values().for_each(|v| rule_messages(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| rule_messages(v, found)),
        _ => {}
    }
}

#[test]
fn every_cel_rule_has_a_bad_example() {
    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("crds/bookstore.yaml")).expect("the CRD"),
    )
    .expect("the CRD parses");
    let mut messages = Vec::new();
    rule_messages(&crd, &mut messages);
    assert!(messages.len() >= 10, "too few CEL rules: {messages:?}");
    let examples = bad_examples();
    for message in messages {
        assert!(
            examples.iter().any(|e| e.refusal.ends_with(&message)),
            "no example in k8s/invalid/ is refused with: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_refuses_each_bad_store_with_its_message() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "admission").await;
    let stores = Api::<BookStore>::namespaced(client.clone(), &ns);

    // A good store passes, and so does a valid change to it: the rules only
    // refuse what they should.
    let sample = repo_root().join("k8s/bookstore.yaml");
    let sample = sample.to_str().expect("a UTF-8 path");
    let applied = kubectl(&cluster, &["apply", "-n", &ns, "-f", sample]);
    assert!(
        applied.status.success(),
        "the sample store is refused: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let patch = r#"{"spec": {"replicas": {"catalog": 3, "cache": 0}, "storage": {"deleteWithStore": true}}}"#;
    let changed = kubectl(
        &cluster,
        &[
            "patch",
            "-n",
            &ns,
            "bookstore",
            "mystore",
            "--type=merge",
            "-p",
            patch,
        ],
    );
    assert!(
        changed.status.success(),
        "a valid change is refused: {}",
        String::from_utf8_lossy(&changed.stderr)
    );

    for example in bad_examples() {
        let file = example.path.to_str().expect("a UTF-8 path");
        let out = kubectl(&cluster, &["apply", "-n", &ns, "-f", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{file} was accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains(&example.refusal),
            "{file} was refused, but not with\n  {}\nkubectl said:\n{stderr}",
            example.refusal
        );
        // A two-document example refuses a change: its first document
        // created the store. A single document creates nothing.
        let kept = stores.get_opt(&example.name).await.expect("a lookup");
        let documents = std::fs::read_to_string(&example.path)
            .expect("the example")
            .matches("\n---\n")
            .count()
            + 1;
        assert_eq!(
            kept.is_some(),
            documents == 2,
            "{file}: only an update example leaves its (valid) store behind"
        );
    }
    let _ = kubectl(&cluster, &["delete", "namespace", &ns, "--wait=false"]);
}
