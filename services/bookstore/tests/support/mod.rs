//! Helpers shared by the system tests: free loopback ports, cluster files,
//! a `bookstore up` run as real processes, small HTTP helpers, and the
//! store's invariants checked against a buy load's ledger.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_core::cluster::{ClusterConfig, Member, Role};
use bookstore_system_tests::{
    Ledger, LoadPlan, check_every_order_is_readable, check_retries_answer_their_first_order,
    check_stock_matches_successes,
};
use serde_json::Value;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "bookstore-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use bookstore_system_tests::free_port;

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A cluster of one frontend, one cache, `replicas` catalog and order
/// members and a coordinator, on free loopback ports.
pub fn local_cluster(replicas: u32) -> ClusterConfig {
    let member = |role: Role, ordinal: u32| Member {
        role,
        ordinal,
        public: (role != Role::Coordinator).then(addr),
        peer: addr(),
    };
    let mut members = vec![member(Role::Frontend, 0), member(Role::Cache, 0)];
    for ordinal in 0..replicas {
        members.push(member(Role::Catalog, ordinal));
        members.push(member(Role::Order, ordinal));
    }
    members.push(member(Role::Coordinator, 0));
    ClusterConfig { members }
}

pub fn frontend_url(cluster: &ClusterConfig) -> String {
    cluster
        .first(Role::Frontend)
        .expect("a frontend")
        .public_url()
        .expect("a public address")
}

/// The default inventory of the repository.
pub fn default_inventory_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/inventory.txt")
}

/// `bookstore up` as a real process tree; stopped (SIGTERM) on drop.
pub struct UpProcess {
    pub child: Child,
    pub cluster: ClusterConfig,
    pub data_dir: PathBuf,
    pub cluster_file: PathBuf,
}

impl UpProcess {
    /// Starts `bookstore up` in `dir` and waits until every replicated member
    /// is healthy and the frontend answers.
    pub fn start(dir: &Path, cluster: ClusterConfig, inventory: &Path, extra: &[&str]) -> Self {
        let up = Self::launch(dir, cluster, inventory, extra);
        up.wait_until_settled(Duration::from_secs(60));
        up
    }

    /// Starts `bookstore up` in `dir` without waiting for it.
    pub fn launch(dir: &Path, cluster: ClusterConfig, inventory: &Path, extra: &[&str]) -> Self {
        let cluster_file = dir.join("cluster.conf");
        std::fs::write(&cluster_file, cluster.render()).expect("write cluster file");
        let data_dir = dir.join("data");
        // Appended to: a test that restarts `up` keeps every run's log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("up.log"))
            .expect("up log");
        let child = Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .arg("up")
            .arg("--cluster")
            .arg(&cluster_file)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--inventory")
            .arg(inventory)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start bookstore up");
        Self {
            child,
            cluster,
            data_dir,
            cluster_file,
        }
    }

    pub fn frontend(&self) -> String {
        frontend_url(&self.cluster)
    }

    /// `bookstore status --json`: one JSON value per line.
    pub fn status(&self) -> Vec<Value> {
        let output = Command::new(env!("CARGO_BIN_EXE_bookstore"))
            .args(["status", "--json"])
            .arg("--cluster")
            .arg(&self.cluster_file)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("run bookstore status");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The status lines of the members (without the coordinator's).
    pub fn member_status(&self) -> Vec<Value> {
        self.status()
            .into_iter()
            .filter(|s| s["role"] != "coordinator")
            .collect()
    }

    /// The coordinator's status line of `tier`.
    pub fn coordinator_status(&self, tier: &str) -> Option<Value> {
        self.status()
            .into_iter()
            .find(|s| s["role"] == "coordinator" && s["tier"] == tier)
    }

    /// The status lines of one tier.
    pub fn tier_status(&self, role: &str) -> Vec<Value> {
        self.status()
            .into_iter()
            .filter(|s| s["role"] == role)
            .collect()
    }

    /// True when every member is healthy and each replicated tier has one
    /// primary and identical applied index and digest on every member.
    pub fn settled(&self) -> bool {
        self.settled_except(None)
    }

    /// [`Self::settled`] for every member but `absent` (one that is paused
    /// or cut off): the others healthy, one primary per tier, and the same
    /// applied index and digest on every other member of a tier.
    pub fn settled_except(&self, absent: Option<&str>) -> bool {
        let status: Vec<Value> = self
            .member_status()
            .into_iter()
            .filter(|s| absent != Some(status_name(s).as_str()))
            .collect();
        let expected = self
            .cluster
            .members
            .iter()
            .filter(|m| m.role != Role::Coordinator && absent != Some(m.name().as_str()))
            .count();
        if status.len() != expected || status.iter().any(|s| s["healthy"] != true) {
            return false;
        }
        ["catalog", "order"].iter().all(|tier| {
            let members: Vec<&Value> = status.iter().filter(|s| s["role"] == *tier).collect();
            let primaries = members.iter().filter(|s| s["primary"] == true).count();
            primaries == 1
                && members.iter().all(|s| {
                    s["applied_index"] == members[0]["applied_index"]
                        && s["digest"] == members[0]["digest"]
                })
        })
    }

    /// True when every member is healthy and each replicated tier has one
    /// primary (their states may still differ by in-flight writes).
    pub fn all_healthy(&self) -> bool {
        let status = self.member_status();
        let expected = self
            .cluster
            .members
            .iter()
            .filter(|m| m.role != Role::Coordinator)
            .count();
        status.len() == expected
            && status.iter().all(|s| s["healthy"] == true)
            && ["catalog", "order"].iter().all(|tier| {
                status
                    .iter()
                    .filter(|s| s["role"] == *tier && s["primary"] == true)
                    .count()
                    == 1
            })
    }

    /// Waits until [`Self::settled`], panicking with the last status after `limit`.
    pub fn wait_until_settled(&self, limit: Duration) {
        self.wait_until_settled_except(None, limit);
    }

    /// Waits until [`Self::settled_except`], panicking with the last status
    /// after `limit`.
    pub fn wait_until_settled_except(&self, absent: Option<&str>, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.settled_except(absent) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the store (but {absent:?}) did not settle in {limit:?}: {:#?}",
            self.status()
        );
    }

    /// The pid of a child from `up.json`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let bytes = std::fs::read(self.data_dir.join("up.json")).ok()?;
        let pids: Value = serde_json::from_slice(&bytes).ok()?;
        pids["members"][name].as_u64().map(|p| p as u32)
    }

    /// The name (`catalog-0`) of the current primary of `tier`.
    pub fn primary(&self, tier: &str) -> Option<String> {
        self.tier_status(tier)
            .into_iter()
            .find(|s| s["primary"] == true)
            .map(|s| status_name(&s))
    }

    /// Stops `up` with SIGTERM, as Ctrl-C would, and waits for it to exit.
    pub fn stop(self) {
        drop(self);
    }

    /// The store's peer token (`DATA_DIR/peer-token`).
    pub fn peer_token(&self) -> String {
        let token = std::fs::read_to_string(self.data_dir.join("peer-token")).expect("peer token");
        token.trim().to_owned()
    }

    /// POSTs to a member's peer API (`/peer/shutdown`, `/peer/recover`)
    /// with the store's peer token.
    pub fn peer_post(&self, role: Role, ordinal: u32, path: &str) {
        let member = self.cluster.member(role, ordinal).expect("a member");
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", member.peer_url()))
            .header(bookstore_core::token::TOKEN_HEADER, self.peer_token())
            .send()
            .unwrap_or_else(|error| panic!("POST {path} to {role}-{ordinal}: {error}"));
        assert!(
            response.status().is_success(),
            "POST {path} to {role}-{ordinal}: {}",
            response.status()
        );
    }

    /// SIGKILLs a child; returns its pid.
    pub fn kill9(&self, name: &str) -> u32 {
        self.signal(name, "KILL")
    }

    /// SIGSTOPs a child (it freezes: its sockets still accept, nothing
    /// answers); returns its pid.
    pub fn pause(&self, name: &str) -> u32 {
        self.signal(name, "STOP")
    }

    /// SIGCONTs a paused child: it carries on as if no time had passed.
    pub fn resume(&self, name: &str) -> u32 {
        self.signal(name, "CONT")
    }

    /// Sends `signal` (`KILL`, `STOP`, ...) to a child; returns its pid.
    fn signal(&self, name: &str, signal: &str) -> u32 {
        let pid = self
            .pid(name)
            .unwrap_or_else(|| panic!("no pid for {name}"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        pid
    }
}

/// The member name (`catalog-0`) of a `bookstore status` line.
pub fn status_name(status: &Value) -> String {
    format!(
        "{}-{}",
        status["role"].as_str().unwrap_or_default(),
        status["ordinal"]
    )
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 200 ms until it holds (`Ok`) or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(())
}

/// Runs `work` on `up` on the blocking pool (`bookstore status` and the
/// signals are blocking calls) and waits for it.
pub async fn on_blocking<T: Send + 'static>(
    up: &Arc<UpProcess>,
    work: impl FnOnce(&UpProcess) -> T + Send + 'static,
) -> T {
    let up = up.clone();
    tokio::task::spawn_blocking(move || work(&up))
        .await
        .expect("a blocking task")
}

/// Every how many acknowledged buys one is retried with its request id.
pub const RETRY_SAMPLE_STEP: usize = 7;

/// The chaos tests' checks of a finished load: the store settles (every
/// member but `absent` healthy, one primary per tier, every member of a tier
/// identical), every buy got a definite answer, no item was oversold and the
/// stock taken equals the successful buys (`plan` holds the initial stock),
/// every acknowledged order reads back and no two share a number, and a
/// retried request id answers its first order and takes no stock.
pub async fn check_invariants(
    up: &Arc<UpProcess>,
    plan: &LoadPlan,
    ledger: &Ledger,
    absent: Option<&str>,
) {
    let absent_name = absent.map(str::to_owned);
    on_blocking(up, move |up| {
        up.wait_until_settled_except(absent_name.as_deref(), Duration::from_secs(60))
    })
    .await;
    println!("load: {}", ledger.summary());
    assert_eq!(
        ledger.unresolved, 0,
        "every buy got a definite answer: {:#?}",
        ledger.unresolved_answers
    );
    check_stock_matches_successes(&up.frontend(), plan, ledger).await;
    check_every_order_is_readable(&up.frontend(), ledger).await;
    check_retries_answer_their_first_order(&up.frontend(), ledger, RETRY_SAMPLE_STEP).await;
    // The retries took no stock.
    check_stock_matches_successes(&up.frontend(), plan, ledger).await;
    let absent_name = absent.map(str::to_owned);
    assert!(on_blocking(up, move |up| up.settled_except(absent_name.as_deref())).await);
}
