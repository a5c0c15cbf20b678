//! The single-node cluster of `tests/cluster/cluster.sh` for tests: the
//! full one (API server, controller manager, scheduler, containerd, kubelet,
//! kube-proxy, CoreDNS) with the BookStore images built from this checkout
//! and imported, or the API-only one (etcd, API server, controller manager);
//! and the commands a user types (`kubectl`, `helm`) run against it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The workspace root (this crate is `tests/system`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Which cluster a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every component: pods run.
    Full,
    /// etcd, the API server and the controller manager: objects, no pods
    /// running (tests play the kubelet).
    ApiOnly,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::ApiOnly => "api-only",
        }
    }
}

/// A cluster, started by the test unless one of the same mode is up (then
/// it is used and left up).
pub struct Cluster {
    pub root: PathBuf,
    pub kubeconfig: PathBuf,
    started_here: bool,
}

impl Cluster {
    /// Builds the cluster's binaries (cached) and starts it.
    pub fn start(mode: Mode) -> Self {
        let root = repo_root();
        let script = root.join("tests/cluster/cluster.sh");
        run(Command::new(&script).arg("build"));
        let running = std::fs::read_to_string(root.join("target/cluster/state/mode")).ok();
        let started_here = match running.as_deref().map(str::trim) {
            Some(up) if up == mode.as_str() => false,
            Some(other) => panic!(
                "a cluster is up in mode {other}; this test needs {} (run tests/cluster/cluster.sh down first)",
                mode.as_str()
            ),
            None => {
                let mut up = Command::new(&script);
                up.arg("up");
                if mode == Mode::ApiOnly {
                    up.arg("api-only");
                }
                run(&mut up);
                true
            }
        };
        Self {
            kubeconfig: root.join("target/cluster/kubeconfig"),
            root,
            started_here,
        }
    }

    /// Builds the release binaries (the kubectl plugin too) and imports the
    /// images into the cluster's containerd (a full cluster only).
    pub fn import_images(&self) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build.current_dir(&self.root).args([
            "build",
            "--release",
            "--bin",
            "bookstore",
            "--bin",
            "bookstore-operator",
            "--bin",
            "kubectl-bookstore",
        ]);
        // `cargo test` gives this process the test crate's variables; passed on,
        // they would change the release build's fingerprints and rebuild it.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_by_cargo_test = name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_EXE_")
                || matches!(
                    &*name,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "LD_LIBRARY_PATH"
                );
            if set_by_cargo_test {
                build.env_remove(&*name);
            }
        }
        run(&mut build);
        // The binaries are where cargo put them (CARGO_TARGET_DIR, if set);
        // the images go to this checkout's cluster.
        for (image, binary) in [
            ("bookstore", "bookstore"),
            ("operator", "bookstore-operator"),
        ] {
            run(Command::new(self.root.join("tests/cluster/images.sh"))
                .arg(image)
                .arg(self.release_binary(binary)));
        }
    }

    /// A binary of this workspace's release build (`import_images` builds
    /// `bookstore`, `bookstore-operator` and `kubectl-bookstore`).
    pub fn release_binary(&self, name: &str) -> PathBuf {
        cargo_target_dir(&self.root).join("release").join(name)
    }

    /// Installs the chart from this checkout as release `bookstore` in
    /// `namespace`, with the images imported here and `sets` (`key=value`),
    /// and waits until one operator replica is Ready: the leader. (Only the
    /// leader is Ready, so with two replicas waiting for all would never end.)
    pub async fn install_chart(&self, namespace: &str, sets: &[&str]) {
        let chart = self.root.join("charts/bookstore");
        let mut args = vec![
            "install".to_owned(),
            "bookstore".to_owned(),
            chart.to_string_lossy().into_owned(),
            "--namespace".to_owned(),
            namespace.to_owned(),
            "--create-namespace".to_owned(),
            "--set".to_owned(),
            "image.pullPolicy=Never".to_owned(),
        ];
        for set in sets {
            args.extend(["--set".to_owned(), (*set).to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.helm(&args);
        let pods = Api::<Pod>::namespaced(self.client().await, namespace);
        crate::eventually(
            "an operator replica is Ready (the leader)",
            Duration::from_secs(180),
            || async {
                let list = pods.list(&ListParams::default()).await.ok()?;
                list.items.iter().any(pod_is_ready).then_some(())
            },
        )
        .await;
    }

    /// Uninstalls release `bookstore` from `namespace`, if it is there.
    pub fn uninstall_chart(&self, namespace: &str) {
        self.helm(&[
            "uninstall",
            "bookstore",
            "--namespace",
            namespace,
            "--ignore-not-found",
            "--wait",
        ]);
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("the cluster's kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("a usable kubeconfig");
        Client::try_from(config).expect("a Kubernetes client")
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("target/cluster/bin").join(name)
    }

    /// Runs kubectl; panics with its output if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        output(
            Command::new(self.bin("kubectl"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }

    /// Runs kubectl with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> String {
        let mut child = Command::new(self.bin("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl starts");
        child
            .stdin
            .take()
            .expect("a stdin pipe")
            .write_all(input.as_bytes())
            .expect("kubectl reads its input");
        let out = child.wait_with_output().expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Deletes a namespace and waits until it is gone (nothing if there is none).
    pub fn delete_namespace(&self, namespace: &str) {
        self.kubectl(&[
            "delete",
            "namespace",
            namespace,
            "--ignore-not-found",
            "--wait=true",
        ]);
    }

    /// Runs helm; panics with its output if it fails.
    pub fn helm(&self, args: &[&str]) -> String {
        output(
            Command::new(self.bin("helm"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started_here && std::env::var_os("BOOKSTORE_KEEP_CLUSTER").is_none() {
            let _ = Command::new(self.root.join("tests/cluster/cluster.sh"))
                .arg("down")
                .status();
        }
    }
}

/// Where cargo puts this workspace's build output.
fn cargo_target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
}

/// The pod's `Ready` condition is true.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

pub fn output(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
