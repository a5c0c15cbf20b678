//! The console's "run a buy load" button: a bounded load of buys through the
//! frontend, so the page's plots move while members are broken. Bounded in
//! count and time, one at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bookstore_console::snapshot::LoadProgress;

/// Item numbers the load looks for (the inventory's books are numbered
/// from 1; it buys those that exist).
const MAX_ITEM: u64 = 64;

/// How big a load the button runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadPlan {
    pub buys: u64,
    pub clients: usize,
    pub limit: Duration,
}

impl Default for LoadPlan {
    fn default() -> Self {
        Self {
            buys: 2_000,
            clients: 4,
            limit: Duration::from_secs(30),
        }
    }
}

impl LoadPlan {
    pub fn describe(&self) -> String {
        format!(
            "a load of {} buys from {} clients, for at most {} s, is running",
            self.buys,
            self.clients,
            self.limit.as_secs()
        )
    }
}

/// The console's one load, shared by the button and the sampler.
#[derive(Debug, Clone, Default)]
pub struct LoadRun {
    progress: Arc<Mutex<LoadProgress>>,
}

impl LoadRun {
    pub fn progress(&self) -> LoadProgress {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a load against `frontend` (`http://host:port`) unless one runs.
    pub fn start(&self, frontend: String, plan: LoadPlan) -> Result<(), String> {
        {
            let mut progress = self.lock();
            if progress.running {
                return Err("a load is already running".to_owned());
            }
            *progress = LoadProgress {
                running: true,
                planned: plan.buys,
                ..LoadProgress::default()
            };
        }
        let run = self.clone();
        tokio::spawn(async move {
            run.drive(frontend, plan).await;
            run.lock().running = false;
        });
        Ok(())
    }

    async fn drive(&self, frontend: String, plan: LoadPlan) {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
        {
            Ok(http) => http,
            Err(error) => return self.failed(format!("no HTTP client: {error}")),
        };
        let items = books(&http, &frontend).await;
        if items.is_empty() {
            return self.failed(format!("no book answers a lookup at {frontend}"));
        }
        let started = Instant::now();
        let run_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let next = Arc::new(AtomicU64::new(0));
        let clients = (0..plan.clients).map(|_| {
            let (http, frontend, items, next) =
                (http.clone(), frontend.clone(), items.clone(), next.clone());
            let run = self.clone();
            async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= plan.buys || started.elapsed() > plan.limit {
                        break;
                    }
                    let item = items[(n as usize) % items.len()];
                    let url = format!(
                        "{frontend}/buy?item_number={item}&request_id=console-{run_id}-{n}"
                    );
                    let answer = buy(&http, &url).await;
                    run.record(answer);
                }
            }
        });
        futures::future::join_all(clients).await;
    }

    fn failed(&self, error: String) {
        let mut progress = self.lock();
        progress.errors += 1;
        progress.last_error = Some(error);
    }

    fn record(&self, answer: Result<bool, String>) {
        let mut progress = self.lock();
        progress.sent += 1;
        match answer {
            Ok(true) => progress.succeeded += 1,
            Ok(false) => progress.sold_out += 1,
            Err(error) => {
                progress.errors += 1;
                progress.last_error = Some(error);
            }
        }
    }
}

/// The item numbers that exist, from lookups of 1, 2, … until one is missing.
async fn books(http: &reqwest::Client, frontend: &str) -> Vec<u64> {
    let mut items = Vec::new();
    for item in 1..=MAX_ITEM {
        let url = format!("{frontend}/lookup?item_number={item}");
        match http.get(url).send().await {
            Ok(response) if response.status().is_success() => items.push(item),
            _ => break,
        }
    }
    items
}

/// One buy: `Ok(true)` bought, `Ok(false)` sold out, `Err` why it failed.
async fn buy(http: &reqwest::Client, url: &str) -> Result<bool, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    match body["result"].as_str() {
        Some("Success") => Ok(true),
        Some("Failed") => Ok(false),
        _ => Err(format!(
            "{status}: {}",
            body["error"]["message"].as_str().unwrap_or("no answer")
        )),
    }
}
