//! Stopping `bookstore up` with SIGTERM (what Ctrl-C or a service manager
//! does) while buys are in flight stops every child by itself within `up`'s
//! grace: none is SIGKILLed.
//!
//! The hard case is a tier without a primary: the frontend and the order
//! primary then hold each buy in their failover retries, whose budget (10 s)
//! is twice `up`'s grace (5 s). Those retries must end on shutdown instead
//! of running out their budget.

mod support;

use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bookstore_core::cluster::Role;
use support::{TempDir, UpProcess, default_inventory_path, local_cluster};

/// Concurrent buyers, so that several buys are in the retries at once.
const BUYERS: usize = 8;
/// How long buys keep retrying before `up` is stopped: long enough for every
/// buyer to have a buy in the retries, far below the 10 s budget.
const RETRYING_BEFORE_STOP: Duration = Duration::from_millis(1500);
/// The bound on waiting for `up` to exit (its grace is 5 s per child, all
/// children stopped at once).
const UP_EXIT_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_every_child_in_time_while_buys_retry_without_a_catalog_primary() {
    let dir = TempDir::new("stop");
    let mut up = tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &default_inventory_path(), &[])
    });
    play_dead(&up, Role::Catalog).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut buyers = start_buyers(&up.frontend(), &stop, &sent);
    tokio::time::sleep(RETRYING_BEFORE_STOP).await;
    assert!(
        sent.load(Ordering::Relaxed) >= BUYERS as u64,
        "every buyer has a buy in flight"
    );

    let status = tokio::task::block_in_place(|| sigterm_and_wait(&mut up));
    stop.store(true, Ordering::Relaxed);
    buyers.abort_all();

    let log = std::fs::read_to_string(dir.path().join("up.log")).expect("read up's log");
    assert!(status.success(), "up exited with {status}:\n{log}");
    let children: Vec<String> = up
        .cluster
        .members
        .iter()
        .filter(|m| m.role != Role::Coordinator)
        .map(|m| m.name())
        .collect();
    for child in &children {
        let ending = stop_report(&log, child)
            .unwrap_or_else(|| panic!("up did not say how {child} ended:\n{log}"));
        assert!(
            ending.ends_with("stopped: exit status: 0"),
            "{child} did not stop by itself within the grace: {ending:?}\n{log}"
        );
    }
}

/// Makes every member of `tier` play dead (`/peer/shutdown`): the tier has
/// no primary until they recover.
async fn play_dead(up: &UpProcess, tier: Role) {
    let token = std::fs::read_to_string(up.data_dir.join("peer-token")).expect("peer token");
    let http = reqwest::Client::new();
    for member in up.cluster.of_role(tier) {
        let response = http
            .post(format!("{}/peer/shutdown", member.peer_url()))
            .header("x-bookstore-peer-token", token.trim())
            .send()
            .await
            .expect("shut down a member");
        assert_eq!(response.status().as_u16(), 200, "{}", member.name());
    }
}

/// Buyers that send buys one after the other until `stop` (the answers do
/// not matter here: with no catalog primary they are 503s after the retries).
fn start_buyers(
    frontend: &str,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> tokio::task::JoinSet<()> {
    let mut buyers = tokio::task::JoinSet::new();
    for buyer in 0..BUYERS {
        let url = format!("{frontend}/buy?item_number={}", buyer % 7 + 1);
        let (stop, sent) = (stop.clone(), sent.clone());
        buyers.spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client");
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                if http.get(&url).send().await.is_err() {
                    // The store is gone; nothing left to hold in flight.
                    return;
                }
            }
        });
    }
    buyers
}

fn sigterm_and_wait(up: &mut UpProcess) -> ExitStatus {
    let pid = up.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(killed.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + UP_EXIT_LIMIT;
    while Instant::now() < deadline {
        if let Some(status) = up.child.try_wait().expect("wait for up") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("up did not exit within {UP_EXIT_LIMIT:?} of SIGTERM");
}

/// The line in which `up` says how `child` ended when it was stopped:
/// `catalog-0 (pid 123) stopped: exit status: 0`, or that it was killed.
fn stop_report<'a>(log: &'a str, child: &str) -> Option<&'a str> {
    let prefix = format!("{child} (pid ");
    log.lines()
        .filter(|line| line.starts_with(&prefix))
        .find(|line| line.contains(" stopped: ") || line.contains(" killed"))
}
