//! The peer messages of the replication protocol, and how a member's
//! refusals travel on the wire.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bookstore_core::ApiError;
use bookstore_core::cluster::{Ordinal, Role};
use bookstore_core::error::error_response;
use bookstore_core::peer::PeerError;
use serde::{Deserialize, Serialize};

use super::state::Refusal;
use crate::topology::{Epoch, LogIndex, Phase};

/// One write of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry<C> {
    pub index: LogIndex,
    pub command: C,
}

/// A batch of writes from the primary to a replica or learner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicateRequest<C> {
    pub epoch: Epoch,
    pub leader: Ordinal,
    pub leader_incarnation: u64,
    pub entries: Vec<Entry<C>>,
}

/// A replica's acknowledgement: the writes are durable up to `applied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateAck {
    pub applied: LogIndex,
}

/// Who asks the primary for a snapshot (and becomes its learner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub ordinal: Ordinal,
    pub incarnation: u64,
    pub peer: String,
}

/// The primary's whole state at one index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotResponse<S> {
    pub epoch: Epoch,
    pub leader: Ordinal,
    pub leader_incarnation: u64,
    pub index: LogIndex,
    pub snapshot: S,
    /// The digest of the primary's rows at `index`; the learner checks that
    /// its restored rows have the same. Absent from a primary of a version
    /// that did not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// A learner's request to enter the in-sync set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub ordinal: Ordinal,
    pub incarnation: u64,
    /// The index of the snapshot the learner installed (0 from a member
    /// that predates this field: it is then refused and fetches again).
    #[serde(default)]
    pub snapshot_index: LogIndex,
}

/// An empty acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
}

/// What a member reports about itself (`bookstore status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub role: Role,
    pub ordinal: Ordinal,
    pub pid: u32,
    pub address: String,
    pub peer_address: String,
    pub healthy: bool,
    pub primary: bool,
    pub phase: Phase,
    pub epoch: Epoch,
    pub applied_index: LogIndex,
    pub digest: String,
    pub incarnation: u64,
}

/// A member's digest checked against its rows (`bookstore status --verify`):
/// in one read of its database, the index and digest it keeps, and the
/// digest recomputed row by row. They differ only if the kept digest lies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub applied_index: LogIndex,
    pub digest: String,
    pub rows_digest: String,
}

impl Verification {
    pub fn holds(&self) -> bool {
        self.digest == self.rows_digest
    }
}

/// How a member's peer routes fail: a typed refusal (its reason is the error
/// body's `code`, see [`Refusal::code`]), or any other error.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("{0}")]
    Refused(Refusal),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<Refusal> for MemberError {
    fn from(refusal: Refusal) -> Self {
        Self::Refused(refusal)
    }
}

impl From<MemberError> for ApiError {
    /// For callers outside the peer API (a service's own write): a refusal
    /// becomes "retry after learning the topology" (409) or "retry later"
    /// (503).
    fn from(error: MemberError) -> Self {
        match error {
            MemberError::Refused(refusal) if refusal.is_conflict() => {
                ApiError::StaleEpoch(refusal.to_string())
            }
            MemberError::Refused(refusal) => ApiError::Unavailable(refusal.to_string()),
            MemberError::Api(error) => error,
        }
    }
}

impl IntoResponse for MemberError {
    fn into_response(self) -> Response {
        match self {
            MemberError::Refused(refusal) => {
                let status = if refusal.is_conflict() {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                error_response(status, refusal.code(), refusal.to_string())
            }
            MemberError::Api(error) => error.into_response(),
        }
    }
}

/// The refusal a peer's error answer names, if it names one.
pub fn refusal_of(error: &PeerError) -> Option<Refusal> {
    match error {
        PeerError::Status {
            body: Some(body), ..
        } => Refusal::from_code(&body.error.code),
        _ => None,
    }
}
