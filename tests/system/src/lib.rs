//! BookStore's system tests share this kit:
//! - [`load`]: a bounded, concurrent buy load with a ledger of every answer,
//!   and the store's invariants checked against it (the chaos tests, locally
//!   and on Kubernetes);
//! - [`browser`]: headless Chromium through chromedriver, and the console's
//!   page read in it;
//! - [`console`]: `kubectl-bookstore console` run as a user runs it;
//! - [`cluster`]: the test cluster of `tests/cluster/cluster.sh`, started by
//!   the test that needs it, with `kubectl` and `helm` against it;
//! - [`store`]: a BookStore's status, conditions, Events and token;
//! - [`eventually`]: waiting for a condition with a bound; [`free_port`]: a
//!   loopback port for a service a test starts; [`table_row`]: a member's
//!   cells in a `status` table.

pub mod browser;
pub mod cluster;
pub mod console;
pub mod load;
pub mod store;

pub use load::{
    BuyLoad, BuyOutcome, Ledger, LoadPlan, buy_until_definite, check_every_order_is_readable,
    check_retries_answer_their_first_order, check_stock_matches_successes,
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

/// Test ports come from below the kernel's ephemeral range (32768-60999 by
/// default): a port handed out by `bind(:0)` can be taken by any outgoing
/// connection before the service binds it, which made tests fail with
/// AddrInUse. A counter keeps the tests of one process apart, a random start
/// keeps processes apart.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that was free a moment ago and that no outgoing
/// connection will take.
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let next = NEXT.get_or_init(|| AtomicU16::new(fastrand::u16(0..span)));
    for _ in 0..span {
        let port = TEST_PORTS.start + next.fetch_add(1, Ordering::Relaxed) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// The cells of a member's row in a `bookstore status` or `kubectl
/// bookstore status` table (split at whitespace, so `catching up` is two).
pub fn table_row(table: &str, member: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{member} ")))
        .unwrap_or_else(|| panic!("no row {member} in\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
