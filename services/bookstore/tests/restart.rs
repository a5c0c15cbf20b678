//! Restarts of the whole store after failovers (issue 10): `bookstore up` as
//! real processes under a bounded buy load.
//!
//! 1. Ordinal 0 of both tiers (the primaries) plays dead (`/peer/shutdown`),
//!    ordinal 1 takes over; 0 recovers; twice. Then `up` is stopped with
//!    SIGTERM mid-load and started again.
//! 2. Ordinal 0 of both tiers plays dead again, ordinal 1 takes buys for a
//!    few seconds, and `up` is stopped while 0 is still shut down, then
//!    started again: 0's data is behind 1's, and only the coordinator's
//!    durable state says so.
//!
//! After each restart the chaos test's checks hold: no acknowledged order
//! missing, stock accounting exact, order numbers unique, a retried request
//! id answered with its first order, every member of a tier identical.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bookstore_core::cluster::{ClusterConfig, Role};
use bookstore_system_tests::{BuyLoad, LoadPlan};
use support::{TempDir, UpProcess, check_invariants, local_cluster, wait_until};

const TIERS: [Role; 2] = [Role::Catalog, Role::Order];

fn plan(phase: &str) -> LoadPlan {
    LoadPlan {
        first_item: 1,
        items: 10,
        stock: 100_000,
        scarce_items: 0,
        scarce_stock: 0,
        buyers: 8,
        max_buys: 20_000,
        min_buys: 200,
        limit: Duration::from_secs(120),
        buy_deadline: Duration::from_secs(40),
        pause: Duration::from_millis(20),
        request_prefix: format!("restart-{phase}"),
    }
}

fn start(dir: &Path, inventory: &Path, cluster: ClusterConfig) -> Arc<UpProcess> {
    Arc::new(tokio::task::block_in_place(|| {
        UpProcess::start(dir, cluster, inventory, &[])
    }))
}

/// Every ordinal-0 member plays dead; waits until ordinal 1 leads both tiers.
async fn shut_down_ordinal_zero(up: &Arc<UpProcess>) {
    let up = up.clone();
    tokio::task::spawn_blocking(move || {
        for tier in TIERS {
            up.peer_post(tier, 0, "/peer/shutdown");
        }
        wait_until(Duration::from_secs(30), || {
            TIERS
                .iter()
                .all(|t| up.primary(t.as_str()).as_deref() == Some(&format!("{t}-1")))
        })
        .expect("ordinal 1 takes over both tiers");
    })
    .await
    .expect("shutdown task");
}

async fn recover_ordinal_zero(up: &Arc<UpProcess>) {
    let up = up.clone();
    tokio::task::spawn_blocking(move || {
        for tier in TIERS {
            up.peer_post(tier, 0, "/peer/recover");
        }
        // Under load the members' indexes differ by in-flight writes:
        // healthy with one primary per tier is what a recovery gives.
        wait_until(Duration::from_secs(60), || up.all_healthy())
            .expect("ordinal 0 resyncs and the store is healthy");
    })
    .await
    .expect("recover task");
}

/// SIGTERM `up`, start it again on the same data dir and the same ports
/// (the load's buyers keep retrying the same frontend); returns the new one.
async fn restart(up: Arc<UpProcess>, dir: &Path, inventory: &Path) -> Arc<UpProcess> {
    let up = Arc::into_inner(up).expect("no other handle to up");
    let cluster = up.cluster.clone();
    tokio::task::block_in_place(|| {
        up.stop();
        // The load goes on: members differ by in-flight writes until it ends.
        let up = UpProcess::launch(dir, cluster, inventory, &[]);
        wait_until(Duration::from_secs(60), || up.all_healthy())
            .expect("the restarted store is healthy");
        Arc::new(up)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_after_failovers_loses_no_acknowledged_buy() {
    let dir = TempDir::new("restart");
    let plans = [plan("first"), plan("second")];
    let inventory = dir.path().join("inventory.txt");
    std::fs::write(&inventory, plans[0].inventory()).expect("write inventory");
    let mut up = start(dir.path(), &inventory, local_cluster(2));

    // 1. Two failovers and recoveries, then a restart mid-load.
    let load = BuyLoad::start(&up.frontend(), &plans[0]);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        shut_down_ordinal_zero(&up).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        recover_ordinal_zero(&up).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    up = restart(up, dir.path(), &inventory).await;
    let mut ledger = load.finish().await;
    // Both phases buy the same items: the first phase's plan holds the stock.
    check_invariants(&up, &plans[0], &ledger, None).await;

    // 2. Ordinal 1 takes writes while 0 is shut down; restart before 0
    //    recovers, so 0 comes back with stale data.
    let load = BuyLoad::start(&up.frontend(), &plans[1]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    shut_down_ordinal_zero(&up).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    up = restart(up, dir.path(), &inventory).await;
    ledger.absorb(load.finish().await);
    // Both phases buy the same items: the first phase's plan holds the stock.
    check_invariants(&up, &plans[0], &ledger, None).await;
}
