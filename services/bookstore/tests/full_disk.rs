//! A full disk under the order tier (issue 10), with `bookstore up` as real
//! processes under a bounded buy load. Each order member keeps its database
//! in its own directory (DATA_DIR/order-N/); the test mounts a small tmpfs
//! on each, before `up` starts, and removes them at the end. Mounting needs
//! root, as on the project's machines and CI: without it the test fails,
//! it never skips.
//!
//! 1. order-0's disk (the primary's) fills up: its next commit fails, it
//!    exits (status 70) and is dropped, order-1 takes over, buys go on.
//!    Restarted by `up`, order-0 cannot install the primary's snapshot: the
//!    resync fails cleanly and is retried with backoff while the member stays
//!    up and out of the in-sync set.
//! 2. order-1's disk fills too: no order member can commit, buys are answered
//!    with the store's JSON 503 (and retried by the buyers with the same
//!    request id), and lookups keep working.
//! 3. Both disks get their space back: buys succeed again with no manual
//!    step, both members end up in sync, and the chaos test's checks hold:
//!    no acknowledged order missing, stock accounting exact, order numbers
//!    unique, a retried request id answered with its first order, every
//!    member identical, and no 5xx other than a JSON 503.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_system_tests::{
    BuyLoad, LoadPlan, check_every_order_is_readable, check_retries_answer_their_first_order,
    check_stock_matches_successes,
};
use serde_json::Value;
use support::{TempDir, UpProcess, local_cluster, wait_until};

/// Each member's disk: room for its database and WAL with a few hundred
/// orders to spare, small enough to fill in a moment.
const DISK_BYTES: u64 = 16 * 1024 * 1024;
/// How long a step of the fault may take to show.
const STEP_LIMIT: Duration = Duration::from_secs(60);
/// Every how many acknowledged buys one is retried with its request id.
const RETRY_SAMPLE_STEP: usize = 5;

fn plan() -> LoadPlan {
    LoadPlan {
        first_item: 1,
        items: 7,
        stock: 1_000_000,
        scarce_items: 0,
        scarce_stock: 0,
        buyers: 4,
        max_buys: 20_000,
        min_buys: 100,
        limit: Duration::from_secs(240),
        // Longer than the whole outage of step 2: every buy gets a
        // definite answer in the end.
        buy_deadline: Duration::from_secs(120),
        pause: Duration::from_millis(20),
        request_prefix: "full-disk".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_stops_the_member_answers_json_503_and_loses_no_acknowledged_buy() {
    let dir = TempDir::new("full-disk");
    let data_dir = dir.path().join("data");
    let disks = [
        SmallDisk::mount(&data_dir.join("order-0")),
        SmallDisk::mount(&data_dir.join("order-1")),
    ];
    let plan = plan();
    let inventory = dir.path().join("inventory.txt");
    std::fs::write(&inventory, plan.inventory()).expect("write inventory");
    let up = Arc::new(tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &inventory, &[])
    }));
    let up_log = dir.path().join("up.log");
    let load = BuyLoad::start(&up.frontend(), &plan);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. The primary's disk fills up.
    let filled = Instant::now();
    let filler_0 = disks[0].fill();
    blocking(&up, |up| {
        wait_until(STEP_LIMIT, || {
            exits_with_storage_error(&up_log, "order-0") > 0
        })
        .expect("order-0 exits with status 70 when its disk is full");
        wait_until(STEP_LIMIT, || {
            up.primary("order").as_deref() == Some("order-1")
        })
        .expect("order-1 takes over");
    });
    load.first_success_after(Instant::now(), STEP_LIMIT).await;
    println!(
        "order-0's disk full: order-1 primary {:?} after the fill; longest gap between successful buys {:?}",
        filled.elapsed(),
        load.longest_gap_since(filled)
    );
    lookups_work(&up.frontend()).await;
    // `up` restarts order-0; its database is readable but cannot take the
    // primary's snapshot. The resync fails cleanly and is retried with
    // backoff, and the member stays up and answers, out of the in-sync set.
    blocking(&up, |_| {
        wait_until(STEP_LIMIT, || {
            failed_resync_steps(&data_dir)
                .iter()
                .any(|line| line.contains("restoring the snapshot failed"))
        })
        .expect("order-0's resync fails to install the snapshot on its full disk");
    });
    let order_0 = member_status(&up, 0);
    assert!(
        order_0["phase"].is_string() && !serves_writes(&order_0),
        "order-0 answers, neither primary nor in sync, while its disk is full: {order_0}"
    );

    // 2. The other member's disk fills up too: nothing can commit an order.
    let before = load.unavailable_answers();
    let filler_1 = disks[1].fill();
    blocking(&up, |_| {
        wait_until(STEP_LIMIT, || {
            exits_with_storage_error(&up_log, "order-1") > 0
        })
        .expect("order-1 exits with status 70 when its disk is full");
    });
    let refused_since = Instant::now();
    while load.unavailable_answers() < before + 3 {
        assert!(
            refused_since.elapsed() < STEP_LIMIT,
            "buys are not answered with a JSON 503 while no order member can write"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lookups_work(&up.frontend()).await;

    // 3. Space comes back: the store sells again with no manual step.
    let freed = Instant::now();
    disks[0].free(&filler_0);
    disks[1].free(&filler_1);
    let selling = load
        .first_success_after(freed, Duration::from_secs(90))
        .await;
    println!("space freed: the first buy succeeded {selling:?} later");
    let ledger = load.finish().await;
    blocking(&up, |up| up.wait_until_settled(Duration::from_secs(90)));
    let failed_resyncs = failed_resync_steps(&data_dir);
    println!(
        "{}; order-0 exited {} times and order-1 {} times with status 70; {} failed resync steps:\n{}",
        ledger.summary(),
        exits_with_storage_error(&up_log, "order-0"),
        exits_with_storage_error(&up_log, "order-1"),
        failed_resyncs.len(),
        failed_resyncs.join("\n")
    );
    assert_eq!(
        ledger.unresolved, 0,
        "every buy got a definite answer: {:#?}",
        ledger.unresolved_answers
    );
    assert!(
        ledger.other_server_errors.is_empty(),
        "every 5xx must be a JSON 503: {:#?}",
        ledger.other_server_errors
    );
    check_stock_matches_successes(&up.frontend(), &plan, &ledger).await;
    check_every_order_is_readable(&up.frontend(), &ledger).await;
    check_retries_answer_their_first_order(&up.frontend(), &ledger, RETRY_SAMPLE_STEP).await;
    check_stock_matches_successes(&up.frontend(), &plan, &ledger).await;
    for ordinal in [0, 1] {
        let status = member_status(&up, ordinal);
        assert!(
            serves_writes(&status),
            "order-{ordinal} is back in sync: {status}"
        );
    }
    // `up` stops before the disks are unmounted.
    drop(Arc::into_inner(up).expect("no other handle to up"));
}

/// Runs blocking checks on `up` while the load's tasks go on on the other
/// workers.
fn blocking<T>(up: &UpProcess, check: impl FnOnce(&UpProcess) -> T) -> T {
    tokio::task::block_in_place(|| check(up))
}

/// How many times `up` saw `name` exit with status 70 (a storage error).
fn exits_with_storage_error(up_log: &Path, name: &str) -> usize {
    let log = std::fs::read_to_string(up_log).unwrap_or_default();
    log.lines()
        .filter(|line| line.starts_with(&format!("{name} (pid ")))
        .filter(|line| line.contains("exited: exit status: 70"))
        .count()
}

/// The failed resync steps in the order members' logs (a snapshot that could
/// not be installed on a full disk, retried with backoff).
fn failed_resync_steps(data_dir: &Path) -> Vec<String> {
    ["order-0", "order-1"]
        .iter()
        .flat_map(|name| {
            std::fs::read_to_string(data_dir.join("logs").join(format!("{name}.log")))
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains("resync step failed"))
                .map(|line| format!("{name}: {line}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An order member's line of `bookstore status`.
fn member_status(up: &UpProcess, ordinal: u64) -> Value {
    blocking(up, |up| {
        up.tier_status("order")
            .into_iter()
            .find(|s| s["ordinal"] == ordinal)
            .unwrap_or(Value::Null)
    })
}

/// Whether a member's status says it is primary or an in-sync replica.
fn serves_writes(status: &Value) -> bool {
    status["healthy"] == true && matches!(status["phase"].as_str(), Some("leading" | "following"))
}

/// Lookups of every book still answer with a price and stock.
async fn lookups_work(frontend: &str) {
    let http = reqwest::Client::new();
    for item in plan().item_numbers() {
        let response = http
            .get(format!("{frontend}/lookup?item_number={item}"))
            .send()
            .await
            .expect("a lookup is answered");
        assert_eq!(response.status().as_u16(), 200, "lookup of {item}");
        let body: Value = response.json().await.expect("a JSON answer");
        assert!(body["result"]["stock"].is_u64(), "lookup of {item}: {body}");
    }
}

/// A small tmpfs mounted on a member's data directory for the test's life.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path) -> Self {
        std::fs::create_dir_all(path).expect("the member's data directory");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs on {} (the full-disk test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("the filler file");
        let chunk = vec![0xa5_u8; 64 * 1024];
        // Bounded: the disk holds DISK_BYTES, so this many chunks overfill it.
        let most = DISK_BYTES as usize / chunk.len() + 1;
        for _ in 0..most {
            if file
                .write_all(&chunk)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                break;
            }
        }
        // The last bytes, below a chunk.
        for _ in 0..chunk.len() {
            if file.write_all(&[0xa5]).is_err() {
                break;
            }
        }
        filler
    }

    fn free(&self, filler: &Path) {
        std::fs::remove_file(filler).expect("the filler is removed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.path).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            // Something still holds a file there: detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
