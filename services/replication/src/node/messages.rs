//! The peer messages of the replication protocol.

use bookstore_core::cluster::{Ordinal, Role};
use serde::{Deserialize, Serialize};

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
}

/// A learner's request to enter the in-sync set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub ordinal: Ordinal,
    pub incarnation: u64,
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
