//! The chaos test: `bookstore up` as real processes under a bounded,
//! concurrent buy load, while the catalog primary and then the order primary
//! are killed with SIGKILL, several times over. Afterwards every invariant
//! of the store must hold:
//! - no item sold more than its stock, and for every item the successful
//!   buys equal the stock taken;
//! - every successful buy's order can be read back;
//! - all members of a tier have the same applied index and state digest.
//!
//! The load and the checks are `bookstore-system-tests`', shared with the
//! end-to-end test on Kubernetes.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_system_tests::{
    BuyLoad, LoadPlan, check_every_order_is_readable, check_stock_matches_successes,
};
use support::{TempDir, UpProcess, local_cluster, wait_until};

const KILL_CYCLES: usize = 3;

fn plan() -> LoadPlan {
    LoadPlan {
        first_item: 1,
        items: 20,
        stock: 3000,
        scarce_items: 10,
        scarce_stock: 50,
        buyers: 10,
        max_buys: 30000,
        min_buys: 2500,
        limit: Duration::from_secs(240),
        buy_deadline: Duration::from_secs(30),
        // Keeps the load going through every kill cycle.
        pause: Duration::from_millis(40),
        request_prefix: "chaos".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_survives_primaries_killed_under_load() {
    let plan = plan();
    let dir = TempDir::new("chaos");
    let inventory = dir.path().join("inventory.txt");
    std::fs::write(&inventory, plan.inventory()).expect("write inventory");
    let up = Arc::new(tokio::task::block_in_place(|| {
        UpProcess::start(dir.path(), local_cluster(2), &inventory, &[])
    }));
    let load = BuyLoad::start(&up.frontend(), &plan);

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
            let failover = load
                .first_success_after(killed_at, Duration::from_secs(60))
                .await;
            println!(
                "cycle {cycle}: killed {victim} (primary); first successful buy after {failover:?}"
            );
            failover_times.push((victim, failover));
        }
    }
    let ledger = load.finish().await;

    let up_for_settle = up.clone();
    tokio::task::spawn_blocking(move || up_for_settle.wait_until_settled(Duration::from_secs(60)))
        .await
        .expect("settle task");
    println!("load: {}", ledger.summary());
    for (victim, time) in &failover_times {
        println!(
            "failover time after killing {victim}: {} ms",
            time.as_millis()
        );
    }
    assert_eq!(ledger.unresolved, 0, "every buy got a definite answer");
    check_stock_matches_successes(&up.frontend(), &plan, &ledger).await;
    check_every_order_is_readable(&up.frontend(), &ledger).await;
    // Settled means: every member healthy, one primary per tier, and the
    // same applied index and state digest on every member of a tier.
    assert!(tokio::task::block_in_place(|| up.settled()));
}
