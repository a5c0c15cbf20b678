//! A real Prometheus (the test cluster's build of the pinned Go module) run
//! in the cluster as a user runs one: a Deployment whose configuration is
//! exactly the `kubernetes_sd_configs` scrape configuration the README gives
//! (so it discovers the store's and the operator's pods through the cluster's
//! API, with its ServiceAccount), and whose rule file is the chart's
//! PrometheusRule as `helm template` renders it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bookstore_system_tests::cluster::{Cluster, output, run};
use bookstore_system_tests::eventually;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use serde_json::{Value, json};

/// The namespace of the test's Prometheus.
pub const NAMESPACE: &str = "bookstore-e2e-monitoring";
const NAME: &str = "prometheus";
/// Cluster-wide objects (RBAC) carry this name.
const CLUSTER_NAME: &str = "bookstore-e2e-prometheus";
const PORT: u16 = 9090;
/// The README's line just above the scrape configuration this test runs.
const README_MARKER: &str = "<!-- The end-to-end test runs Prometheus with exactly this block";
/// How long Prometheus may take to answer or to have scraped something.
const WAIT: Duration = Duration::from_secs(180);

pub struct Prometheus {
    url: String,
}

impl Prometheus {
    /// Packs the Prometheus image, deploys it and waits until it is ready.
    pub async fn start(cluster: &Cluster, client: &Client) -> Self {
        run(Command::new(cluster.root.join("tests/cluster/images.sh")).arg("prometheus"));
        let config = prometheus_config(&cluster.root);
        let rules = chart_rules(cluster);
        cluster.kubectl_stdin(
            &["apply", "-f", "-"],
            &manifests(&config, &rules).to_string(),
        );
        cluster.kubectl(&[
            "rollout",
            "status",
            "-n",
            NAMESPACE,
            &format!("deployment/{NAME}"),
            "--timeout=180s",
        ]);
        let services = Api::<Service>::namespaced(client.clone(), NAMESPACE);
        let ip = services
            .get(NAME)
            .await
            .expect("the Prometheus Service")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("the Prometheus Service has a ClusterIP");
        let prometheus = Self {
            url: format!("http://{ip}:{PORT}"),
        };
        let http = reqwest::Client::new();
        eventually("Prometheus is ready", WAIT, || async {
            let answer = http
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .ok()?;
            answer.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    /// One answer of Prometheus's HTTP API (`/api/v1/ENDPOINT?QUERY`); None
    /// while it does not answer.
    async fn api(
        &self,
        http: &reqwest::Client,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Option<Value> {
        http.get(format!("{}/api/v1/{endpoint}", self.url))
            .query(query)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Prometheus discovered and scrapes the store's pods of every tier and
    /// the operator's, through Kubernetes discovery.
    pub async fn check_targets(&self, store_namespace: &str, operator_namespace: &str) {
        let http = reqwest::Client::new();
        eventually(
            "Prometheus scrapes the store's and the operator's pods",
            WAIT,
            || async {
                let answer = self.api(&http, "targets", &[("state", "active")]).await?;
                let up: Vec<(String, String)> = answer["data"]["activeTargets"]
                    .as_array()?
                    .iter()
                    .filter(|t| t["health"] == "up")
                    .filter_map(|t| {
                        let labels = &t["labels"];
                        Some((
                            labels["namespace"].as_str()?.to_owned(),
                            labels["pod"].as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                let scraped = |namespace: &str, part: &str| {
                    up.iter()
                        .any(|(n, pod)| n == namespace && pod.contains(part))
                };
                let all = ["-frontend-", "-cache-", "-catalog-", "-order-"]
                    .iter()
                    .all(|part| scraped(store_namespace, part))
                    && scraped(operator_namespace, "operator");
                all.then(|| println!("Prometheus scrapes {} pods: {up:?}", up.len()))
            },
        )
        .await;
    }

    /// Every query of the Grafana dashboard (as `tests/chart/dashboard-queries.sh`
    /// prints them) returns at least one series.
    pub async fn check_dashboard(&self, root: &Path) {
        let script = root.join("tests/chart/dashboard-queries.sh");
        let queries: Vec<String> = output(&mut Command::new(&script))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert!(
            queries.len() >= 8,
            "the dashboard has only {} queries",
            queries.len()
        );
        let http = reqwest::Client::new();
        for query in &queries {
            eventually(
                &format!("Prometheus answers {query}"),
                Duration::from_secs(120),
                || async {
                    let answer = self.api(&http, "query", &[("query", query)]).await?;
                    let results = answer["data"]["result"].as_array()?;
                    (!results.is_empty()).then_some(())
                },
            )
            .await;
        }
        println!(
            "all {} dashboard queries answer from Prometheus",
            queries.len()
        );
    }

    /// Prometheus loaded every rule of the chart's PrometheusRule and has
    /// evaluated each without an error.
    pub async fn check_rules(&self, root: &Path) {
        let file = root.join("charts/bookstore/rules/bookstore.rules.yaml");
        let text = std::fs::read_to_string(&file).expect("the chart's rules");
        let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules are YAML");
        let want = rules["groups"]
            .as_sequence()
            .expect("rule groups")
            .iter()
            .map(|g| g["rules"].as_sequence().map_or(0, Vec::len))
            .sum::<usize>();
        let http = reqwest::Client::new();
        let loaded = eventually(
            &format!("Prometheus evaluated all {want} rules without an error"),
            WAIT,
            || async {
                let answer = self.api(&http, "rules", &[]).await?;
                let rules: Vec<&Value> = answer["data"]["groups"]
                    .as_array()?
                    .iter()
                    .filter_map(|g| g["rules"].as_array())
                    .flatten()
                    .collect();
                let errors: Vec<&Value> = rules
                    .iter()
                    .copied()
                    .filter(|r| r["health"] == "err")
                    .collect();
                assert!(errors.is_empty(), "rules fail to evaluate: {errors:?}");
                let healthy = rules.len() == want && rules.iter().all(|r| r["health"] == "ok");
                healthy.then(|| {
                    rules
                        .iter()
                        .filter(|r| r["type"] == "alerting")
                        .filter(|r| r["state"] != "inactive")
                        .flat_map(|r| r["alerts"].as_array().cloned().unwrap_or_default())
                        .map(|a| {
                            format!(
                                "{} {} since {} ({})",
                                a["state"], a["labels"], a["activeAt"], a["value"]
                            )
                        })
                        .collect::<Vec<_>>()
                })
            },
        )
        .await;
        println!("Prometheus loaded and evaluates all {want} rules; active alerts: {loaded:#?}");
    }
}

/// The README's scrape configuration (the YAML block below its marker line)
/// in a configuration that scrapes often and loads the chart's rules.
fn prometheus_config(root: &Path) -> String {
    let readme = std::fs::read_to_string(root.join("README.md")).expect("the README");
    let block = readme_scrape_config(&readme);
    format!(
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n\
         rule_files: [/etc/prometheus/rules/*.yaml]\n{block}"
    )
}

/// The fenced YAML block after the README's marker line.
fn readme_scrape_config(readme: &str) -> String {
    let after = readme
        .split_once(README_MARKER)
        .unwrap_or_else(|| panic!("the README has no line {README_MARKER:?}"))
        .1;
    let body = after
        .split_once("```yaml\n")
        .expect("a ```yaml block after the README's marker")
        .1;
    let block = body.split_once("```").expect("the block ends").0;
    assert!(
        block.contains("kubernetes_sd_configs"),
        "the README's scrape configuration uses Kubernetes discovery"
    );
    block.to_owned()
}

/// The spec (the rule groups) of the chart's PrometheusRule, as rendered.
fn chart_rules(cluster: &Cluster) -> String {
    let chart = cluster.root.join("charts/bookstore");
    let rendered = cluster.helm(&[
        "template",
        "bookstore",
        chart.to_str().expect("a UTF-8 path"),
        "--set",
        "prometheusRule.enabled=true",
        "--show-only",
        "templates/prometheusrule.yaml",
    ]);
    let rule: serde_yaml::Value = serde_yaml::from_str(&rendered).expect("the PrometheusRule");
    assert_eq!(rule["kind"], "PrometheusRule");
    serde_yaml::to_string(&rule["spec"]).expect("the rule groups")
}

/// Prometheus as a user deploys it: RBAC to discover pods, its configuration
/// and rules in a ConfigMap, a Deployment with an emptyDir for its data, a
/// Service.
fn manifests(config: &str, rules: &str) -> Value {
    let labels = json!({"app.kubernetes.io/name": NAME});
    let items = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": NAME, "namespace": NAMESPACE}}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_NAME},
            // Kubernetes discovery of pods (role: pod) lists and watches them.
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": CLUSTER_NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        }),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "data": {"prometheus.yml": config, "bookstore.rules.yaml": rules},
        }),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532},
                        "containers": [{
                            "name": NAME,
                            "image": prometheus_image(),
                            "imagePullPolicy": "Never",
                            "args": [
                                "--config.file=/etc/prometheus/prometheus.yml",
                                "--storage.tsdb.path=/prometheus",
                                format!("--web.listen-address=:{PORT}"),
                            ],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "http"}, "periodSeconds": 2},
                            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/prometheus/prometheus.yml", "subPath": "prometheus.yml"},
                                {"name": "config", "mountPath": "/etc/prometheus/rules/bookstore.rules.yaml", "subPath": "bookstore.rules.yaml"},
                                {"name": "data", "mountPath": "/prometheus"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": NAME}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
        }),
    ];
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The image `tests/cluster/images.sh prometheus` imports.
fn prometheus_image() -> String {
    let env = std::fs::read_to_string(
        bookstore_system_tests::cluster::repo_root().join("tests/cluster/cluster.env"),
    )
    .expect("tests/cluster/cluster.env");
    env.lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_IMAGE="))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
        .expect("PROMETHEUS_IMAGE in cluster.env")
}

/// Removes what an earlier run left (the namespace and the cluster's RBAC).
pub fn remove(cluster: &Cluster) {
    cluster.delete_namespace(NAMESPACE);
    cluster.kubectl(&[
        "delete",
        "clusterrole,clusterrolebinding",
        CLUSTER_NAME,
        "--ignore-not-found",
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_gives_a_kubernetes_scrape_configuration() {
        let readme =
            std::fs::read_to_string(bookstore_system_tests::cluster::repo_root().join("README.md"))
                .expect("the README");
        let block = readme_scrape_config(&readme);
        let config: serde_yaml::Value = serde_yaml::from_str(&block).expect("the block is YAML");
        let jobs = config["scrape_configs"]
            .as_sequence()
            .expect("scrape_configs");
        assert!(
            jobs.iter()
                .all(|j| j["kubernetes_sd_configs"].as_sequence().is_some()),
            "every job discovers through Kubernetes: {block}"
        );
    }
}
