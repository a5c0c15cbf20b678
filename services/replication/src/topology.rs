//! The messages between the coordinator and the members of a replicated tier.
//!
//! The coordinator publishes a [`Topology`] per tier: the epoch, the primary,
//! and each member's liveness and in-sync state. Members send [`Heartbeat`]s;
//! the primary asks for in-sync set changes with [`AlterInSync`].

use std::collections::BTreeMap;

use bookstore_core::cluster::{Ordinal, Role};
use serde::{Deserialize, Serialize};

/// The term of a topology. It rises on every change of a tier's topology, so
/// every message carries it and a node refuses anything from an older one.
pub type Epoch = u64;

/// A log index: the number of writes a member has applied.
pub type LogIndex = u64;

/// One member as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyMember {
    pub ordinal: Ordinal,
    /// The process incarnation this entry describes: a member acts on a
    /// topology only if it names its own incarnation, so a message meant for
    /// a crashed process never steers the one that replaced it.
    pub incarnation: u64,
    /// Internal API address (`host:port`).
    pub peer: String,
    /// Public API address (`host:port`).
    pub public: String,
    pub live: bool,
    /// Holds every acknowledged write: may be elected, and serves reads.
    pub in_sync: bool,
}

/// What every member of a tier (and the frontend) is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub tier: Role,
    pub epoch: Epoch,
    pub primary: Option<Ordinal>,
    pub members: Vec<TopologyMember>,
}

impl Topology {
    /// The topology before the coordinator has spoken: epoch 0, no primary.
    pub fn unknown(tier: Role) -> Self {
        Self {
            tier,
            epoch: 0,
            primary: None,
            members: Vec::new(),
        }
    }

    pub fn member(&self, ordinal: Ordinal) -> Option<&TopologyMember> {
        self.members.iter().find(|m| m.ordinal == ordinal)
    }

    pub fn primary_member(&self) -> Option<&TopologyMember> {
        self.primary.and_then(|p| self.member(p))
    }

    /// The ordinals of the in-sync set, lowest first.
    pub fn in_sync_ordinals(&self) -> Vec<Ordinal> {
        self.members
            .iter()
            .filter(|m| m.in_sync)
            .map(|m| m.ordinal)
            .collect()
    }

    pub fn is_in_sync(&self, ordinal: Ordinal) -> bool {
        self.member(ordinal).is_some_and(|m| m.in_sync)
    }

    /// The members a read may go to: live and in sync.
    pub fn readable(&self) -> impl Iterator<Item = &TopologyMember> {
        self.members.iter().filter(|m| m.live && m.in_sync)
    }
}

/// Where a member stands in the replication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Started or restarted: its state may be stale; it must resync.
    Joining,
    /// Installed a snapshot from the primary and is applying the tail.
    CatchingUp,
    /// A replica in the in-sync set, applying the primary's writes.
    Following,
    /// The primary of the current epoch: executes writes.
    Leading,
    /// Was primary, then saw a newer epoch: takes no writes until resynced.
    Fenced,
    /// Fault injection: behaves as crashed until `recover`.
    ShutDown,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Joining => "joining",
            Phase::CatchingUp => "catching_up",
            Phase::Following => "following",
            Phase::Leading => "leading",
            Phase::Fenced => "fenced",
            Phase::ShutDown => "shut_down",
        }
    }

    /// True when the member's state is current enough to serve reads.
    pub fn serves_reads(self) -> bool {
        matches!(self, Phase::Following | Phase::Leading)
    }
}

/// A member's periodic "I am alive" message, with what `bookstore status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub tier: Role,
    pub ordinal: Ordinal,
    /// Random per process start (and per `recover`): a new value tells the
    /// coordinator the member restarted and lost its in-sync standing.
    pub incarnation: u64,
    pub peer: String,
    pub public: String,
    pub phase: Phase,
    pub epoch: Epoch,
    pub applied: LogIndex,
    /// The highest epoch this member's data was written under (from disk),
    /// used to pick the most up-to-date member when the coordinator starts
    /// with no memory of the tier.
    pub data_epoch: Epoch,
}

/// The primary's request to change the in-sync set (add a caught-up learner,
/// or drop a replica that stopped answering).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterInSync {
    pub tier: Role,
    pub epoch: Epoch,
    pub primary: Ordinal,
    pub in_sync: Vec<Ordinal>,
    /// The incarnation of each member the request adds, as the primary
    /// brought it up to date: the request names ordinals, and the process
    /// now behind one may have restarted since (simulator seed 4240).
    #[serde(default)]
    pub added: BTreeMap<Ordinal, u64>,
}
