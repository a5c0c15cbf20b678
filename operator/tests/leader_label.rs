//! The leader's pod label on a real API server (`tests/cluster/cluster.sh up
//! api-only`): the chart's Service selects `mybookstore.dev/operator-leader=true`,
//! so the leader must put it on its own pod and take it off every other one
//! (an old leader that crashed keeps its labels), and a replica that is not
//! leading must not carry it. The test plays the two operator pods (pod
//! objects no kubelet runs) and runs two `bookstore-operator run --own-pod`
//! processes as them.

mod support;

use std::time::Duration;

use bookstore_operator::names::OPERATOR_LEADER_LABEL;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::{Cluster, Mode, OperatorProcess, eventually, namespace};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_labels_its_own_pod_and_no_other() {
    let cluster = Cluster::start(Mode::ApiOnly);
    let client = cluster.client().await;
    let ns = namespace(&client, "leader-label").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    // Both pods carry the label: "op-b" as a crashed old leader would, "op-a"
    // as a restarted container in a leader's pod would.
    for name in ["op-a", "op-b"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {OPERATOR_LEADER_LABEL: "true"}},
            "spec": {"containers": [{"name": "operator", "image": "localhost/bookstore-operator:dev"}]},
        }))
        .expect("a pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("the pod is created");
    }
    let leader =
        OperatorProcess::start_with(&cluster.kubeconfig, &ns, "op-a", &["--own-pod", "op-a"])
            .until_leading()
            .await;
    let labelled = || async {
        let mut names = Vec::new();
        for name in ["op-a", "op-b"] {
            let pod = pods.get(name).await.ok()?;
            // A pod whose only label was taken off has no labels at all.
            let labels = pod.metadata.labels.unwrap_or_default();
            if labels.get(OPERATOR_LEADER_LABEL).map(String::as_str) == Some("true") {
                names.push(name);
            }
        }
        Some(names)
    };
    eventually("only the leader's pod is labelled", WAIT, || async {
        (labelled().await? == ["op-a"]).then_some(())
    })
    .await;
    // A standby starting in the other pod leaves the label where it is.
    let standby =
        OperatorProcess::start_with(&cluster.kubeconfig, &ns, "op-b", &["--own-pod", "op-b"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!standby.is_leading().await);
    assert_eq!(labelled().await, Some(vec!["op-a"]));
    // The leader is killed (SIGKILL: its pod keeps the label, the Lease
    // expires): the standby takes over, takes the label off the old leader's
    // pod and puts it on its own.
    drop(leader);
    eventually(
        "the standby leads and its pod alone is labelled",
        WAIT,
        || async { (standby.is_leading().await && labelled().await? == ["op-b"]).then_some(()) },
    )
    .await;
}
