//! Retrying a call while its target tier has no primary (a failover is in
//! progress). Only safe for idempotent calls: every write in BookStore
//! carries a request id, so a retry never applies it twice.
//!
//! Retries end on shutdown: a stopping service answers what it holds with
//! "unavailable, retry" (the caller retries elsewhere with the same request
//! id) instead of running out a budget that is longer than any supervisor's
//! grace (`bookstore up` gives a child 5 s).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ApiError;
use crate::shutdown::Shutdown;

/// How long a caller keeps retrying through a failover. The coordinator
/// needs `heartbeat interval * miss threshold` (3 s by default) to notice a
/// lost primary, plus a moment to promote the next one.
pub const FAILOVER_RETRY_BUDGET: Duration = Duration::from_secs(10);
/// The pause between two tries.
pub const FAILOVER_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a try already under way may still take once shutdown is
/// requested: a peer that is answering does so in milliseconds, so the try
/// usually finishes; one waiting on a stuck peer (up to the 5 s call
/// timeout) is abandoned, so a stop fits well within a supervisor's grace.
pub const ATTEMPT_GRACE_ON_SHUTDOWN: Duration = Duration::from_secs(1);

/// Calls `attempt` until it succeeds, fails with something other than
/// "unavailable", `budget` runs out, or `shutdown` is requested.
pub async fn while_unavailable<T, F, Fut>(
    budget: Duration,
    shutdown: &Shutdown,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let deadline = Instant::now() + budget;
    loop {
        match attempt_until_shutdown(attempt(), shutdown).await {
            Err(ApiError::Unavailable(reason)) | Err(ApiError::StaleEpoch(reason)) => {
                if shutdown.is_requested() {
                    return Err(stopping(&reason));
                }
                if Instant::now() + FAILOVER_RETRY_PAUSE >= deadline {
                    return Err(ApiError::Unavailable(reason));
                }
                tokio::select! {
                    () = tokio::time::sleep(FAILOVER_RETRY_PAUSE) => {}
                    () = shutdown.clone().wait() => return Err(stopping(&reason)),
                }
            }
            other => return other,
        }
    }
}

/// One try; once shutdown is requested it gets [`ATTEMPT_GRACE_ON_SHUTDOWN`]
/// more to finish.
async fn attempt_until_shutdown<T>(
    attempt: impl Future<Output = Result<T, ApiError>>,
    shutdown: &Shutdown,
) -> Result<T, ApiError> {
    tokio::pin!(attempt);
    tokio::select! {
        outcome = &mut attempt => outcome,
        () = shutdown.clone().wait() => {
            tokio::time::timeout(ATTEMPT_GRACE_ON_SHUTDOWN, attempt)
                .await
                .unwrap_or_else(|_| Err(stopping("a call was still under way")))
        }
    }
}

fn stopping(reason: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "this service is shutting down ({reason}); retry with the same request id"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown;

    fn never() -> Shutdown {
        let (trigger, shutdown) = shutdown::channel();
        std::mem::forget(trigger);
        shutdown
    }

    #[tokio::test]
    async fn retries_until_available_then_returns() {
        let mut calls = 0;
        let result = while_unavailable(Duration::from_secs(5), &never(), || {
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
        let result: Result<(), _> = while_unavailable(Duration::from_secs(5), &never(), || {
            calls += 1;
            async { Err(ApiError::bad_request("no")) }
        })
        .await;
        assert!(matches!(result, Err(ApiError::BadRequest(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn gives_up_when_the_budget_is_spent() {
        let result: Result<(), _> =
            while_unavailable(Duration::from_millis(250), &never(), || async {
                Err(ApiError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(result, Err(ApiError::Unavailable(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_retries_long_before_the_budget() {
        let (trigger, shutdown) = shutdown::channel();
        let started = tokio::time::Instant::now();
        let retries = tokio::spawn(async move {
            while_unavailable(FAILOVER_RETRY_BUDGET, &shutdown, || async {
                Err::<(), _>(ApiError::Unavailable("no primary".into()))
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(350)).await;
        trigger.fire();
        let result = retries.await.expect("the retry task");
        assert!(
            matches!(result, Err(ApiError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abandons_a_stuck_attempt_after_its_grace() {
        let (trigger, shutdown) = shutdown::channel();
        let started = tokio::time::Instant::now();
        let retries = tokio::spawn(async move {
            while_unavailable(FAILOVER_RETRY_BUDGET, &shutdown, || {
                std::future::pending::<Result<(), ApiError>>()
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        trigger.fire();
        let result = retries.await.expect("the retry task");
        assert!(
            matches!(result, Err(ApiError::Unavailable(_))),
            "{result:?}"
        );
        let waited = started.elapsed();
        assert!(waited >= ATTEMPT_GRACE_ON_SHUTDOWN, "{waited:?}");
        assert!(waited < ATTEMPT_GRACE_ON_SHUTDOWN * 2, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_under_way_at_shutdown_may_still_succeed() {
        let (trigger, shutdown) = shutdown::channel();
        let retries = tokio::spawn(async move {
            while_unavailable(FAILOVER_RETRY_BUDGET, &shutdown, || async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(7)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        trigger.fire();
        assert_eq!(retries.await.expect("the retry task").expect("ok"), 7);
    }
}
