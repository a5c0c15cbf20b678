//! The chaos test: `bookstore up` as real processes under a bounded,
//! concurrent buy load, while the catalog primary and then the order primary
//! are killed with SIGKILL, several times over. Afterwards every invariant
//! of the store must hold:
//! - no item sold more than its stock, and for every item the successful
//!   buys equal the stock taken;
//! - every successful buy's order can be read back;
//! - all members of a tier have the same applied index and state digest.
//!
//! Buyers retry a buy that got a 5xx or no answer with the same request id
//! (as a real client should) until it answers Success or Failed.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TempDir, UpProcess, local_cluster};

const ITEMS: u64 = 20;
const STOCK_PER_ITEM: u64 = 100;
const BUYERS: usize = 10;
/// The load stops after this many buys, or when the kill cycles are done and
/// at least `MIN_BUYS` were made, whichever comes first.
const MAX_BUYS: u64 = 6000;
const MIN_BUYS: u64 = 2500;
const KILL_CYCLES: usize = 3;
/// How long one buy may be retried before the test gives up on it.
const BUY_DEADLINE: Duration = Duration::from_secs(30);
/// The whole load phase is bounded by this.
const LOAD_LIMIT: Duration = Duration::from_secs(240);

#[derive(Default)]
struct Ledger {
    /// (item, order number) of every successful buy.
    successes: Vec<(u64, u64)>,
    /// (started, finished) of every successful buy.
    success_times: Vec<(Instant, Instant)>,
    failed: u64,
    retried_after_5xx: u64,
    unresolved: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_survives_primaries_killed_under_load() {
    let dir = TempDir::new("chaos");
    let inventory = dir.path().join("inventory.txt");
    let lines: String = (1..=ITEMS)
        .map(|i| format!("init,{i},{STOCK_PER_ITEM},10,chaos,Chaos Book {i}\n"))
        .collect();
    std::fs::write(&inventory, lines).expect("write inventory");
    let up = Arc::new(tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &inventory, &[])
    }));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let attempts = Arc::new(AtomicU64::new(0));
    let chaos_done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut buyers = tokio::task::JoinSet::new();
    for buyer in 0..BUYERS {
        let frontend = up.frontend();
        let (ledger, attempts, chaos_done) = (ledger.clone(), attempts.clone(), chaos_done.clone());
        buyers.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client");
            loop {
                let n = attempts.fetch_add(1, Ordering::Relaxed);
                let enough = n >= MIN_BUYS && chaos_done.load(Ordering::Relaxed);
                if n >= MAX_BUYS || enough || started.elapsed() > LOAD_LIMIT {
                    break;
                }
                let item = fastrand::u64(1..=ITEMS);
                let request_id = format!("chaos-{buyer}-{n}");
                buy_until_answered(&http, &frontend, item, &request_id, &ledger).await;
            }
        });
    }

    let mut failover_times = Vec::new();
    for cycle in 1..=KILL_CYCLES {
        for tier in ["catalog", "order"] {
            let up_for_wait = up.clone();
            tokio::task::spawn_blocking(move || {
                wait_until(Duration::from_secs(60), || up_for_wait.all_healthy())
            })
            .await
            .expect("wait task")
            .unwrap_or_else(|()| panic!("the store did not recover before cycle {cycle}"));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let up_for_kill = up.clone();
            let (victim, killed_at) = tokio::task::spawn_blocking(move || {
                let victim = up_for_kill.primary(tier).expect("a primary");
                up_for_kill.kill9(&victim);
                (victim, Instant::now())
            })
            .await
            .expect("kill task");
            let failover =
                wait_for_success_after(&ledger, killed_at, Duration::from_secs(60)).await;
            println!(
                "cycle {cycle}: killed {victim} (primary); first successful buy after {failover:?}"
            );
            failover_times.push((victim, failover));
        }
    }
    chaos_done.store(true, Ordering::Relaxed);
    while let Some(buyer) = buyers.join_next().await {
        buyer.expect("buyer task");
    }

    let up_for_settle = up.clone();
    tokio::task::spawn_blocking(move || up_for_settle.wait_until_settled(Duration::from_secs(60)))
        .await
        .expect("settle task");
    let ledger = std::mem::take(&mut *ledger.lock().expect("ledger"));
    println!(
        "load: {} buys, {} succeeded, {} sold out, {} retried after a 5xx or no answer, {} unresolved",
        ledger.successes.len() as u64 + ledger.failed + ledger.unresolved,
        ledger.successes.len(),
        ledger.failed,
        ledger.retried_after_5xx,
        ledger.unresolved
    );
    for (victim, time) in &failover_times {
        println!(
            "failover time after killing {victim}: {} ms",
            time.as_millis()
        );
    }
    assert_eq!(ledger.unresolved, 0, "every buy got a definite answer");
    check_stock_matches_successes(&up, &ledger).await;
    check_every_order_is_readable(&up, &ledger).await;
    // Settled means: every member healthy, one primary per tier, and the
    // same applied index and state digest on every member of a tier.
    assert!(tokio::task::block_in_place(|| up.settled()));
}

/// Buys once, retrying with the same request id through 5xx answers and
/// lost connections, and records the definite answer.
async fn buy_until_answered(
    http: &reqwest::Client,
    frontend: &str,
    item: u64,
    request_id: &str,
    ledger: &Mutex<Ledger>,
) {
    let started = Instant::now();
    let url = format!("{frontend}/buy?item_number={item}&request_id={request_id}");
    let mut retried = false;
    while started.elapsed() < BUY_DEADLINE {
        let answer = http.get(&url).send().await;
        let body: Option<Value> = match answer {
            Ok(response) if response.status().is_success() => response.json().await.ok(),
            Ok(response) if response.status().is_client_error() => {
                panic!("buy {request_id} answered {}", response.status())
            }
            _ => None,
        };
        {
            let mut ledger = ledger.lock().expect("ledger");
            match body.as_ref().and_then(|b| b["result"].as_str()) {
                Some("Success") => {
                    let order = body
                        .as_ref()
                        .and_then(|b| b["order_number"].as_u64())
                        .expect("order number");
                    ledger.successes.push((item, order));
                    ledger.success_times.push((started, Instant::now()));
                    return;
                }
                Some("Failed") => {
                    ledger.failed += 1;
                    return;
                }
                _ if !retried => {
                    ledger.retried_after_5xx += 1;
                    retried = true;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ledger.lock().expect("ledger").unresolved += 1;
}

/// The time from `killed_at` to the first successful buy sent after it.
async fn wait_for_success_after(
    ledger: &Mutex<Ledger>,
    killed_at: Instant,
    limit: Duration,
) -> Duration {
    let deadline = Instant::now() + limit;
    loop {
        let first = ledger
            .lock()
            .expect("ledger")
            .success_times
            .iter()
            .filter(|(started, _)| *started >= killed_at)
            .map(|(_, finished)| *finished)
            .min();
        if let Some(finished) = first {
            return finished.duration_since(killed_at);
        }
        assert!(
            Instant::now() < deadline,
            "no successful buy within {limit:?} of the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(())
}

async fn check_stock_matches_successes(up: &UpProcess, ledger: &Ledger) {
    let mut sold: BTreeMap<u64, u64> = BTreeMap::new();
    for (item, _) in &ledger.successes {
        *sold.entry(*item).or_default() += 1;
    }
    let http = reqwest::Client::new();
    for item in 1..=ITEMS {
        let body: Value = http
            .get(format!("{}/lookup?item_number={item}", up.frontend()))
            .send()
            .await
            .expect("lookup")
            .json()
            .await
            .expect("json");
        let stock = body["result"]["stock"].as_u64().expect("stock");
        let sold = sold.get(&item).copied().unwrap_or(0);
        assert!(
            sold <= STOCK_PER_ITEM,
            "item {item} sold {sold} times out of {STOCK_PER_ITEM}"
        );
        assert_eq!(
            STOCK_PER_ITEM - stock,
            sold,
            "item {item}: stock taken differs from successful buys"
        );
    }
}

async fn check_every_order_is_readable(up: &UpProcess, ledger: &Ledger) {
    let http = reqwest::Client::new();
    let mut numbers: Vec<u64> = ledger.successes.iter().map(|(_, n)| *n).collect();
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        before,
        "two successful buys share an order number"
    );
    for (item, number) in &ledger.successes {
        let body: Value = http
            .get(format!("{}/orders/{number}", up.frontend()))
            .send()
            .await
            .expect("order")
            .json()
            .await
            .expect("json");
        assert_eq!(
            body["result"]["item_number"], *item,
            "order {number}: {body}"
        );
    }
}
