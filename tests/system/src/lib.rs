//! BookStore's system tests share this kit:
//! - [`load`]: a bounded, concurrent buy load with a ledger of every answer,
//!   and the store's invariants checked against it (the chaos tests, locally
//!   and on Kubernetes);
//! - [`cluster`]: the test cluster of `tests/cluster/cluster.sh`, started by
//!   the test that needs it, with `kubectl` and `helm` against it;
//! - [`store`]: a BookStore's status, conditions, Events and token;
//! - [`eventually`]: waiting for a condition with a bound.

pub mod cluster;
pub mod load;
pub mod store;

pub use load::{
    BuyLoad, Ledger, LoadPlan, check_every_order_is_readable, check_stock_matches_successes,
};

use std::time::{Duration, Instant};

/// Polls `probe` until it yields a value, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
