//! The BookStore console: one live web page of a store, for watching it fail
//! over while breaking it. Two commands serve it, each over its own
//! [`Backend`]: `bookstore console` reads a local store (the one `bookstore
//! up` runs) and kills or pauses its processes; `kubectl bookstore console`
//! reads a store in a cluster through the API server and deletes pods or
//! switches a tier over.
//!
//! This crate holds what both share: the page, the server ([`server`]) with
//! its guards, the snapshot the page renders ([`snapshot`]) and the rates
//! and latencies read from the frontends' metrics ([`rates`]). A backend
//! only says what the store does now and carries out the actions it offers;
//! the page shows only those.

pub mod rates;
pub mod server;
pub mod snapshot;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

pub use server::{ACTION_HEADER, DEFAULT_LISTEN, ServeError, run, serve};
pub use snapshot::Snapshot;

/// How often the page is updated.
pub const TICK: Duration = Duration::from_millis(500);

/// Where a store is read and broken: locally or through the API server.
pub trait Backend: Send + Sync + 'static {
    /// The actions the page offers, each behind a confirmation.
    fn actions(&self) -> &'static [Action];

    /// What the store does now. Called once per [`TICK`] by one task; it
    /// must answer within a tick (what does not answer is a problem in the
    /// snapshot, not a stall).
    fn snapshot(&self) -> impl Future<Output = Snapshot> + Send;

    /// Carries out one of [`Backend::actions`] on `target` (a member such as
    /// `catalog-0`, or `None` for a store-wide action); says what was done
    /// and what happens next.
    fn act(
        &self,
        action: &str,
        target: Option<&str>,
    ) -> impl Future<Output = Result<String, ActionFailed>> + Send;
}

/// An action the page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Action {
    /// In the action's URL: `/actions/NAME/TARGET`.
    pub name: &'static str,
    /// The button's text.
    pub label: &'static str,
    /// What it does, in the confirmation and the button's title.
    pub explanation: &'static str,
    /// Where its buttons go.
    pub scopes: &'static [Scope],
}

/// Where the page puts an action's button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// On each member of a replicated tier.
    Member,
    /// On each stateless service (frontend, cache).
    Service,
    /// Once, for the whole store.
    Store,
}

/// Why an action was not done, in words for the page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionFailed(pub String);

impl ActionFailed {
    /// An error with its causes, as `{:#}` prints them.
    pub fn from_error(error: impl std::fmt::Display) -> Self {
        Self(format!("{error:#}"))
    }
}

/// Milliseconds since the Unix epoch, for a snapshot's time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
