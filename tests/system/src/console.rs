//! `kubectl-bookstore console` as a user runs it, for the tests of the
//! cluster console (against the API server and on the real cluster): the
//! plugin binary on a free loopback port with the cluster's kubeconfig, and
//! its snapshot and actions read and posted as the page does.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{eventually, free_port};

/// How long the console may take to serve its page or show a change.
const WAIT: Duration = Duration::from_secs(60);
/// The console's action header (`bookstore_console::ACTION_HEADER`; the
/// test kit does not depend on the console crate).
pub const ACTION_HEADER: &str = "x-bookstore-console";

/// A running `kubectl-bookstore console STORE -n NAMESPACE`.
pub struct ConsoleProcess {
    child: Child,
    pub port: u16,
    http: reqwest::Client,
}

impl ConsoleProcess {
    /// Starts `plugin` (the `kubectl-bookstore` binary) and waits until it
    /// serves its page.
    pub async fn start(plugin: &Path, kubeconfig: &Path, store: &str, namespace: &str) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(plugin)
            .args(["console", store, "-n", namespace, "--listen", &listen])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} console starts: {e}", plugin.display()));
        let console = Self {
            child,
            port,
            http: reqwest::Client::new(),
        };
        let page = eventually("the console serves its page", WAIT, || async {
            let response = console.http.get(console.url("/")).send().await.ok()?;
            response.text().await.ok()
        })
        .await;
        assert!(page.contains("BookStore console"), "{page}");
        console
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Reads the snapshot every 200 ms until `check` finds what it looks for.
    pub async fn snapshot_until<T>(
        &self,
        what: &str,
        check: impl Fn(&Value) -> Option<T>,
    ) -> Value {
        let mut last = Value::Null;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(snapshot) = self.snapshot().await {
                    if check(&snapshot).is_some() {
                        return snapshot;
                    }
                    last = snapshot;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!("the console did not show {what} within {WAIT:?}; it showed {last:#}")
        })
    }

    /// What the page renders now (`GET /snapshot`).
    pub async fn snapshot(&self) -> Option<Value> {
        let response = self.http.get(self.url("/snapshot")).send().await.ok()?;
        response.json().await.ok()
    }

    /// POSTs an action as the page does (`from_the_page`: with the header),
    /// naming the server by `host` if given; the status and the answer.
    pub async fn post(&self, path: &str, from_the_page: bool, host: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(self.url(path));
        if from_the_page {
            request = request.header(ACTION_HEADER, "1");
        }
        if let Some(host) = host {
            request = request.header(reqwest::header::HOST, host);
        }
        let response = request.send().await.expect("the console answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
