//! Prometheus from Debian's package, scraping the pods annotated for it
//! (`prometheus.io/scrape`, `/port`, `/path`): the store's and the
//! operator's. Debian builds Prometheus without Kubernetes discovery, so the
//! test discovers the pods itself and writes them to a file Prometheus
//! watches (`file_sd_configs`), with the `namespace` and `pod` labels that
//! Kubernetes discovery (or a PodMonitor) would add.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bookstore_system_tests::cluster::run;
use bookstore_system_tests::{eventually, free_port};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// How often the pods are listed again (they change IPs when recreated).
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

pub struct Prometheus {
    child: Child,
    discovery: tokio::task::JoinHandle<()>,
    url: String,
}

impl Prometheus {
    /// Starts Prometheus and the discovery of the pods of `namespaces`.
    pub fn start(client: &Client, work: &Path, namespaces: &[&str]) -> Self {
        install();
        let dir = work.join("prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a Prometheus directory");
        let targets = dir.join("targets.json");
        std::fs::write(&targets, "[]").expect("the targets file");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, config_for(&targets)).expect("the Prometheus config");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("a log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let discovery = tokio::spawn(discover(
            client.clone(),
            namespaces.iter().map(|n| n.to_string()).collect(),
            targets,
        ));
        Self {
            child,
            discovery,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Every query of the Grafana dashboard (as `tests/chart/dashboard-queries.sh`
    /// prints them) returns at least one series.
    pub async fn check_dashboard(&self, root: &Path) {
        let script = root.join("tests/chart/dashboard-queries.sh");
        let output = Command::new(&script)
            .output()
            .expect("dashboard-queries.sh runs");
        assert!(output.status.success(), "{} failed", script.display());
        let queries: Vec<String> = String::from_utf8_lossy(&output.stdout)
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
                    let answer: Value = http
                        .get(format!("{}/api/v1/query", self.url))
                        .query(&[("query", query.as_str())])
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
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
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.discovery.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the annotated pods of `namespaces` as file_sd targets, again and
/// again; replaced atomically so Prometheus never reads half a file.
async fn discover(client: Client, namespaces: Vec<String>, targets: PathBuf) {
    loop {
        let mut groups = Vec::new();
        for namespace in &namespaces {
            let pods = Api::<Pod>::namespaced(client.clone(), namespace);
            if let Ok(list) = pods.list(&ListParams::default()).await {
                groups.extend(list.items.iter().filter_map(target_group));
            }
        }
        let tmp = targets.with_extension("tmp");
        if std::fs::write(&tmp, Value::Array(groups).to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &targets);
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

/// The scrape target of a pod annotated for Prometheus.
fn target_group(pod: &Pod) -> Option<Value> {
    let annotations = pod.metadata.annotations.as_ref()?;
    if annotations.get("prometheus.io/scrape").map(String::as_str) != Some("true") {
        return None;
    }
    let port = annotations.get("prometheus.io/port")?;
    let path = annotations
        .get("prometheus.io/path")
        .cloned()
        .unwrap_or_else(|| "/metrics".to_owned());
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    Some(json!({
        "targets": [format!("{ip}:{port}")],
        "labels": {
            "__metrics_path__": path,
            "namespace": pod.namespace().unwrap_or_default(),
            "pod": pod.name_any(),
        },
    }))
}

fn config_for(targets: &Path) -> String {
    format!(
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n\
         scrape_configs:\n  - job_name: bookstore-pods\n    file_sd_configs:\n\
         \x20     - files: [{}]\n        refresh_interval: 2s\n",
        targets.display()
    )
}

fn install() {
    let installed = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return;
    }
    run(Command::new("apt-get").args(["update", "-q"]));
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "prometheus",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"));
}
