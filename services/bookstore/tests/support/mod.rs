//! Helpers shared by the system tests: free loopback ports, cluster files,
//! a `bookstore up` run as real processes, and small HTTP helpers.
#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_core::cluster::{ClusterConfig, Member, Role};
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
        let status = self.member_status();
        let expected = self
            .cluster
            .members
            .iter()
            .filter(|m| m.role != Role::Coordinator)
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
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.settled() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the store did not settle in {limit:?}: {:#?}",
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
            .map(|s| format!("{tier}-{}", s["ordinal"]))
    }

    /// Stops `up` with SIGTERM, as Ctrl-C would, and waits for it to exit.
    pub fn stop(self) {
        drop(self);
    }

    /// POSTs to a member's peer API (`/peer/shutdown`, `/peer/recover`)
    /// with the store's peer token.
    pub fn peer_post(&self, role: Role, ordinal: u32, path: &str) {
        let member = self.cluster.member(role, ordinal).expect("a member");
        let token = std::fs::read_to_string(self.data_dir.join("peer-token")).expect("peer token");
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", member.peer_url()))
            .header(bookstore_core::token::TOKEN_HEADER, token.trim())
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
        let pid = self
            .pid(name)
            .unwrap_or_else(|| panic!("no pid for {name}"));
        let status = Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -9 {pid} failed");
        pid
    }
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
