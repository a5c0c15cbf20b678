//! Retrying a call while its target tier has no primary (a failover is in
//! progress). Only safe for idempotent calls: every write in BookStore
//! carries a request id, so a retry never applies it twice.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// How long a caller keeps retrying through a failover. The coordinator
/// needs `heartbeat interval * miss threshold` (3 s by default) to notice a
/// lost primary, plus a moment to promote the next one.
pub const FAILOVER_RETRY_BUDGET: Duration = Duration::from_secs(10);
/// The pause between two tries.
pub const FAILOVER_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Calls `attempt` until it succeeds, fails with something other than
/// "unavailable", or `budget` runs out.
pub async fn while_unavailable<T, F, Fut>(budget: Duration, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let deadline = Instant::now() + budget;
    loop {
        match attempt().await {
            Err(ApiError::Unavailable(reason)) | Err(ApiError::StaleEpoch(reason)) => {
                if Instant::now() + FAILOVER_RETRY_PAUSE >= deadline {
                    return Err(ApiError::Unavailable(reason));
                }
                tokio::time::sleep(FAILOVER_RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_available_then_returns() {
        let mut calls = 0;
        let result = while_unavailable(Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(ApiError::Unavailable("no primary".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.expect("eventually ok"), 3);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = while_unavailable(Duration::from_secs(5), || {
            calls += 1;
            async { Err(ApiError::bad_request("no")) }
        })
        .await;
        assert!(matches!(result, Err(ApiError::BadRequest(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn gives_up_when_the_budget_is_spent() {
        let result: Result<(), _> = while_unavailable(Duration::from_millis(250), || async {
            Err(ApiError::Unavailable("down".into()))
        })
        .await;
        assert!(matches!(result, Err(ApiError::Unavailable(_))));
    }
}
