//! The member's decisions, free of I/O: what phase it is in, which primary
//! its data derives from, whom it replicates to, and what it refuses.
//!
//! Built like the coordinator (and raft-rs): requests and events go in,
//! answers and effects come out, and the I/O around it ([`super::writer`],
//! [`super::membership`], [`super::routes`]) only carries them out. That is
//! why it can be tested message by message (`state/tests.rs`) and run inside
//! the deterministic simulation of a whole tier (`crate::sim`), where the
//! same code meets crashes, pauses, partitions and lost messages.
//!
//! The phases, and the one transition function that enters each:
//! - `joining` ([`MemberCore::become_joining`]): started, restarted, or
//!   lost its place; its data may be stale, so it serves nothing and resyncs.
//! - `catching_up` ([`MemberCore::become_catching_up`]): installed a snapshot
//!   from the primary, applies the batches that follow, asks to be admitted.
//! - `following` ([`MemberCore::become_following`]): in the in-sync set; it
//!   applies the primary's batches and serves reads.
//! - `leading` ([`MemberCore::become_primary`]): the primary of its epoch.
//! - `fenced` ([`MemberCore::become_fenced`]): was primary and learned of a
//!   newer epoch; it takes no writes and resyncs like a joiner (or leads
//!   again if a newer topology names it).
//! - `shut_down` ([`MemberCore::become_shut_down`]): fault injection.
//!
//! Phase changes are not reported by return value but queued as
//! [`Effect`]s, which the caller drains with [`MemberCore::take_effects`]
//! after every call and carries out (logs, metrics, waking waiters, running
//! the promotion hook).

use std::collections::BTreeMap;

use bookstore_core::cluster::{Ordinal, Role};
use serde::{Deserialize, Serialize};

use crate::topology::{AlterInSync, Epoch, LogIndex, Phase, Topology};

/// A primary as a member knows it: its ordinal and process incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryId {
    pub ordinal: Ordinal,
    pub incarnation: u64,
}

/// Why a member refused a request. It travels on the wire as the error
/// body's `code` ([`Refusal::code`]), so the sender acts on the reason, not
/// on a status code it has to guess the meaning of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// A batch from an epoch before the current primary took over: its
    /// sender has been deposed and must step down.
    #[error("the batch is from an epoch before the current primary took over")]
    StaleEpoch,
    /// A batch from a primary this member's data does not derive from (a
    /// newer one it has not heard of): it resyncs.
    #[error("the batch is from a primary this member does not follow; resyncing")]
    NotFollowingYou,
    /// A batch reached a member that was primary itself: it steps down.
    #[error("this member was primary; it steps down and resyncs")]
    WasPrimary,
    /// A batch or request reached a member that does not replicate now.
    #[error("this member is not replicating (joining, fenced or shut down)")]
    NotReplicating,
    /// The batch starts after a write this member does not have.
    #[error("a batch is missing before this one; resync needed")]
    Gap,
    /// A write, snapshot or join request reached a member that is not the
    /// primary.
    #[error("this member is not the primary")]
    NotPrimary,
    /// A join request from a member that is not a learner of this
    /// leadership (it missed a batch, or asked a previous primary).
    #[error("not a learner of this primary; resync")]
    NotALearner,
    /// Fault injection: the member plays dead.
    #[error("this member is shut down (fault injection); POST /peer/recover")]
    ShutDown,
    /// A linearizable read reached a primary that could not confirm it still
    /// leads: a replica did not acknowledge the confirming batch, or this
    /// member was deposed meanwhile. Retry (at the primary the topology names).
    #[error("the primary could not confirm that it still leads; retry")]
    Unconfirmed,
}

impl Refusal {
    const ALL: [Refusal; 9] = [
        Refusal::StaleEpoch,
        Refusal::NotFollowingYou,
        Refusal::WasPrimary,
        Refusal::NotReplicating,
        Refusal::Gap,
        Refusal::NotPrimary,
        Refusal::NotALearner,
        Refusal::ShutDown,
        Refusal::Unconfirmed,
    ];

    /// The stable code this refusal has on the wire.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::StaleEpoch => "stale_epoch",
            Refusal::NotFollowingYou => "not_following_you",
            Refusal::WasPrimary => "was_primary",
            Refusal::NotReplicating => "not_replicating",
            Refusal::Gap => "gap",
            Refusal::NotPrimary => "not_primary",
            Refusal::NotALearner => "not_a_learner",
            Refusal::ShutDown => "shut_down",
            Refusal::Unconfirmed => "unconfirmed",
        }
    }

    /// The refusal a wire code names, if any.
    pub fn from_code(code: &str) -> Option<Refusal> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// True when the sender of a batch must stop being primary: only a
    /// member that follows a newer primary can tell it so.
    pub fn deposes_sender(self) -> bool {
        self == Refusal::StaleEpoch
    }

    /// True when the caller should retry after learning the topology (HTTP
    /// 409) rather than just later (503).
    pub fn is_conflict(self) -> bool {
        matches!(
            self,
            Refusal::StaleEpoch
                | Refusal::NotFollowingYou
                | Refusal::WasPrimary
                | Refusal::NotPrimary
        )
    }
}

/// The header of a batch from a primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub epoch: Epoch,
    pub primary: PrimaryId,
    /// The index of the batch's first write (`None` for an empty batch).
    pub first: Option<LogIndex>,
    /// The index of its last write.
    pub last: Option<LogIndex>,
}

/// What to do with an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPlan {
    /// Every write is already here (a duplicate): acknowledge `applied`.
    AlreadyApplied,
    /// Apply the writes with an index above `applied` (the first of them is
    /// `applied + 1`).
    Apply,
}

/// One member a primary sends a batch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ordinal: Ordinal,
    pub peer: String,
    /// In the in-sync set (its failure must be settled before answering),
    /// or a learner (dropped silently).
    pub in_sync: bool,
}

/// What a primary needs to send one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub topology: Topology,
    pub incarnation: u64,
    pub targets: Vec<Target>,
}

/// How one send of a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Acked,
    Refused(Refusal),
    /// No answer (timeout, unreachable) or one that names no refusal.
    Failed,
}

/// What the replication results of a batch mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Every in-sync replica holds the batch: answer the writes.
    Done,
    /// An in-sync replica failed: the coordinator must drop it before any
    /// write of the batch is answered.
    AlterInSync(AlterInSync),
    /// A replica follows a newer primary: this member stepped down; the
    /// writes fail.
    Deposed,
}

/// How the coordinator answered a request to change the in-sync set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterAnswer {
    Changed(Topology),
    /// The coordinator is at another epoch than `asked` (the epoch the
    /// request was made in), or has another primary.
    Stale {
        asked: Epoch,
    },
    Failed,
}

/// A learner's resync grant: the snapshot carries this leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotGrant {
    pub epoch: Epoch,
    pub primary: PrimaryId,
    /// The index the snapshot is at; the learner names it when it asks to
    /// be admitted, so it is admitted only on the registration it actually
    /// caught up from.
    pub index: LogIndex,
}

/// The next step of a resync, if one can be made now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncStep {
    /// Fetch a snapshot from the primary at `peer` (it makes us a learner).
    FetchSnapshot { primary: Ordinal, peer: String },
    /// Ask the primary at `peer` to admit us to the in-sync set, naming
    /// the snapshot we installed.
    AskToJoin {
        primary: Ordinal,
        peer: String,
        snapshot_index: LogIndex,
    },
}

/// Something the I/O around the core must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The phase changed (log it, update metrics, wake waiters).
    PhaseChanged {
        from: Phase,
        to: Phase,
        epoch: Epoch,
        why: &'static str,
    },
    /// A topology was adopted.
    TopologyAdopted { epoch: Epoch },
    /// Named primary at `epoch`: run the promotion hook (the catalog clears
    /// the cache), then step [`MemberCore::promotion_ready`].
    Promote { epoch: Epoch },
}

/// A member that receives the primary's batches but is not yet in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Learner {
    incarnation: u64,
    peer: String,
    /// This member asked the coordinator (at this epoch) to admit the
    /// learner and got no answer: the coordinator may count it in sync, so
    /// it is treated as in sync (a failed send to it must be settled
    /// through the coordinator) until a topology says otherwise.
    in_doubt: Option<Epoch>,
    /// The index of the snapshot this registration began with.
    snapshot_index: LogIndex,
    /// A send to it failed while its admission was in doubt: it stays a
    /// target, but may lack a write, so it is never admitted on this
    /// registration (simulator seed 6149).
    missed_batch: bool,
}

/// Why the primary did not admit a learner to the in-sync set
/// ([`MemberCore::join_refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The primary does not know this member as a learner (any more), or
    /// could not be asked: the resync starts over.
    NotALearner,
    /// The primary asked the coordinator, which refused or did not answer:
    /// this member is still a learner and asks again.
    NotAdmitted,
}

/// The member's whole decision state.
#[derive(Debug, Clone)]
pub struct MemberCore {
    tier: Role,
    me: Ordinal,
    phase: Phase,
    incarnation: u64,
    topology: Topology,
    /// The epoch at which the current primary took over, as this member saw
    /// it: batches from an older epoch come from a deposed primary.
    primary_since: Epoch,
    /// The primary this member's data derives from.
    following: Option<PrimaryId>,
    /// The snapshot this member installed last (while catching up).
    installed: Option<SnapshotGrant>,
    /// While primary: members that fetched a snapshot of this leadership.
    learners: BTreeMap<Ordinal, Learner>,
    effects: Vec<Effect>,
}

impl MemberCore {
    /// A member that has just started as `incarnation`: joining, with no
    /// topology yet.
    pub fn new(tier: Role, me: Ordinal, incarnation: u64) -> Self {
        Self {
            tier,
            me,
            phase: Phase::Joining,
            incarnation,
            topology: Topology::unknown(tier),
            primary_since: 0,
            following: None,
            installed: None,
            learners: BTreeMap::new(),
            effects: Vec::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn ordinal(&self) -> Ordinal {
        self.me
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn following(&self) -> Option<PrimaryId> {
        self.following
    }

    /// The effects queued since the last call; carry them out in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Where a write should go: `Ok(None)` here, `Ok(Some(peer))` forwarded
    /// to the primary.
    pub fn route_write(&self) -> Result<Option<String>, Refusal> {
        match self.phase {
            Phase::Leading => Ok(None),
            Phase::ShutDown => Err(Refusal::ShutDown),
            _ => self
                .topology
                .primary_member()
                .filter(|p| p.ordinal != self.me)
                .map(|p| Some(p.peer.clone()))
                .ok_or(Refusal::NotPrimary),
        }
    }

    /// Whether a linearizable read may be taken here: only the primary
    /// serves one (others refuse with `NotPrimary`, so the caller goes to
    /// the primary the topology names), and only once a batch sent after
    /// the read arrived has settled, see [`MemberCore::confirm_reads`].
    pub fn take_linearizable_read(&self) -> Result<(), Refusal> {
        match self.phase {
            Phase::Leading => Ok(()),
            Phase::ShutDown => Err(Refusal::ShutDown),
            _ => Err(Refusal::NotPrimary),
        }
    }

    /// A batch sent after some linearizable reads arrived has settled
    /// without error (every in-sync replica acknowledged it, or the
    /// coordinator agreed at this leadership to drop the ones that failed):
    /// serve the reads from the state published with it, if this member
    /// still leads.
    ///
    /// Why that makes them linearizable (raft's ReadIndex, with the in-sync
    /// set in place of a quorum): the coordinator elects a new primary only
    /// from the in-sync set, which only shrinks without this primary's say
    /// (or grows through a learner it still sends to). A member elected
    /// after the read arrived would have refused the batch as stale, and
    /// the coordinator would have refused the change; so no write was
    /// acknowledged elsewhere that this state lacks. A paused or cut-off
    /// primary that wakes up thus never answers from its old state.
    pub fn confirm_reads(&self) -> Result<(), Refusal> {
        match self.phase {
            Phase::Leading => Ok(()),
            _ => Err(Refusal::Unconfirmed),
        }
    }

    // ---- Transitions: the only code that sets the phase. ----

    /// Its data may be stale or from another lineage: serve nothing and
    /// resync from the current primary.
    fn become_joining(&mut self, why: &'static str) {
        self.following = None;
        self.learners.clear();
        self.set_phase(Phase::Joining, why);
    }

    /// Was primary and learned of a newer epoch: stop taking writes at once
    /// (another member may be taking them), then resync like a joiner. Its
    /// data may hold a batch the new primary lacks (never acknowledged), so
    /// it must not serve it.
    fn become_fenced(&mut self, why: &'static str) {
        self.following = None;
        self.learners.clear();
        self.set_phase(Phase::Fenced, why);
    }

    /// Installed the primary's snapshot: from now on its data derives from
    /// `primary`, and every batch of that primary is applied here.
    fn become_catching_up(&mut self, grant: SnapshotGrant) {
        self.following = Some(grant.primary);
        self.installed = Some(grant);
        self.set_phase(Phase::CatchingUp, "installed a snapshot from the primary");
    }

    /// The coordinator added it to the in-sync set: it holds every
    /// acknowledged write, serves reads and may be elected.
    fn become_following(&mut self) {
        self.set_phase(Phase::Following, "admitted to the in-sync set");
    }

    /// Named primary by a topology, and the promotion hook has run: take
    /// writes. Learners of a previous leadership start over.
    fn become_primary(&mut self) {
        self.following = Some(PrimaryId {
            ordinal: self.me,
            incarnation: self.incarnation,
        });
        self.learners.clear();
        self.set_phase(Phase::Leading, "named primary");
    }

    /// Fault injection: behave as crashed.
    fn become_shut_down(&mut self) {
        self.following = None;
        self.learners.clear();
        self.set_phase(Phase::ShutDown, "shut down by fault injection");
    }

    fn set_phase(&mut self, to: Phase, why: &'static str) {
        if self.phase != to {
            self.effects.push(Effect::PhaseChanged {
                from: self.phase,
                to,
                epoch: self.topology.epoch,
                why,
            });
            self.phase = to;
        }
    }

    // ---- Events from the coordinator. ----

    /// Adopts a topology (pushed, or in a heartbeat answer). Ignored while
    /// shut down, if not newer than the one it has, or if it does not name
    /// this incarnation (it is about a previous process; the next heartbeat
    /// fixes that).
    pub fn adopt(&mut self, topology: Topology) {
        if self.phase == Phase::ShutDown
            || topology.tier != self.tier
            || topology.epoch <= self.topology.epoch
            || topology.member(self.me).map(|m| m.incarnation) != Some(self.incarnation)
        {
            return;
        }
        let primary = primary_of(&topology);
        if primary != primary_of(&self.topology) {
            self.primary_since = topology.epoch;
        }
        let in_sync = topology.is_in_sync(self.me);
        let epoch = topology.epoch;
        self.learners.retain(|&ordinal, learner| {
            if topology.is_in_sync(ordinal) {
                return false; // admitted: a replica now
            }
            if learner.in_doubt.is_some_and(|asked| topology.epoch > asked) {
                learner.in_doubt = None; // the coordinator's answer is known now
            }
            learner.in_doubt.is_some() || !learner.missed_batch
        });
        self.topology = topology;
        self.effects.push(Effect::TopologyAdopted { epoch });
        let named = primary.map(|p| p.ordinal) == Some(self.me);
        match (named, self.phase) {
            (true, Phase::Leading) => {}
            (true, _) => self.effects.push(Effect::Promote { epoch }),
            (false, Phase::Leading) => self.become_fenced("a newer topology names another primary"),
            (false, Phase::Following) if !in_sync || self.following != primary => {
                self.become_joining("left the in-sync set or the primary changed")
            }
            (false, Phase::CatchingUp) if self.following != primary => {
                self.become_joining("the primary changed during the resync")
            }
            (false, Phase::CatchingUp) if in_sync => self.become_following(),
            (false, _) => {}
        }
    }

    /// The promotion hook for `epoch` has run: lead, if the topology still
    /// names this member.
    pub fn promotion_ready(&mut self, epoch: Epoch) {
        let still_mine = self.topology.primary == Some(self.me) && self.topology.epoch >= epoch;
        if still_mine && !matches!(self.phase, Phase::Leading | Phase::ShutDown) {
            self.become_primary();
        }
    }

    // ---- A replica's side of replication. ----

    /// Decides about a batch from a primary, given this member's applied
    /// index: accepted only from the primary its data derives from, in that
    /// primary's current leadership, without a gap.
    pub fn accept_batch(
        &mut self,
        batch: BatchHeader,
        applied: LogIndex,
    ) -> Result<BatchPlan, Refusal> {
        if batch.epoch < self.primary_since {
            return Err(Refusal::StaleEpoch);
        }
        let from_my_primary = self.following == Some(batch.primary);
        match self.phase {
            Phase::Following | Phase::CatchingUp if from_my_primary => {}
            Phase::Following | Phase::CatchingUp => {
                self.become_joining("a batch came from a primary this member does not follow");
                return Err(Refusal::NotFollowingYou);
            }
            Phase::Leading => {
                self.become_fenced("received a batch from a newer primary");
                return Err(Refusal::WasPrimary);
            }
            Phase::ShutDown => return Err(Refusal::ShutDown),
            Phase::Joining | Phase::Fenced => return Err(Refusal::NotReplicating),
        }
        match (batch.first, batch.last) {
            (Some(_), Some(last)) if last <= applied => Ok(BatchPlan::AlreadyApplied),
            (Some(first), Some(_)) if first > applied + 1 => Err(Refusal::Gap),
            (Some(_), Some(_)) => Ok(BatchPlan::Apply),
            _ => Ok(BatchPlan::AlreadyApplied),
        }
    }

    /// Installed the snapshot `grant` describes: catch up from that primary.
    /// Ignored unless the member is still resyncing (it may have been shut
    /// down or named primary meanwhile).
    ///
    /// A snapshot from a member that is no longer the primary (the topology
    /// moved on while it was fetched) leaves it joining: no batch of the
    /// current primary would ever be accepted on top of it, and it would
    /// wait for an admission that cannot come (simulator seed 1414).
    pub fn snapshot_installed(&mut self, grant: SnapshotGrant) {
        if !matches!(self.phase, Phase::Joining | Phase::Fenced) {
            return;
        }
        if primary_of(&self.topology) == Some(grant.primary) {
            self.become_catching_up(grant);
        } else {
            self.become_joining("the snapshot is from a member that is no longer the primary");
        }
    }

    /// The primary did not admit this member to the in-sync set.
    ///
    /// Only a member the primary no longer knows as a learner starts the
    /// resync over. One whose admission the coordinator refused (or left
    /// unanswered) is still a learner: the primary goes on sending it every
    /// batch, so it stays catching up and asks again. Starting over there
    /// made it wait for a snapshot while the primary's next batch waited for
    /// its answer, and its snapshot request waited behind that batch in the
    /// primary's writer: every write of the tier stalled for the replicate
    /// timeout (2 s), during a rolling upgrade or a scale-up.
    pub fn join_refused(&mut self, why: JoinRefused) {
        if self.phase == Phase::CatchingUp && why == JoinRefused::NotALearner {
            self.become_joining("the primary does not know this member as a learner");
        }
    }

    /// The next resync step, if one can be made now.
    pub fn resync_step(&self) -> Option<ResyncStep> {
        let primary = self
            .topology
            .primary_member()
            .filter(|p| p.ordinal != self.me && p.live)?;
        match self.phase {
            Phase::Joining | Phase::Fenced => Some(ResyncStep::FetchSnapshot {
                primary: primary.ordinal,
                peer: primary.peer.clone(),
            }),
            Phase::CatchingUp if self.following.map(|f| f.ordinal) == Some(primary.ordinal) => {
                Some(ResyncStep::AskToJoin {
                    primary: primary.ordinal,
                    peer: primary.peer.clone(),
                    snapshot_index: self.installed.map_or(0, |g| g.index),
                })
            }
            _ => None,
        }
    }

    // ---- The primary's side of replication. ----

    /// What a batch needs, if this member is the primary.
    pub fn lead(&self) -> Result<Leadership, Refusal> {
        if self.phase != Phase::Leading {
            return Err(Refusal::NotPrimary);
        }
        let mut targets: BTreeMap<Ordinal, Target> = self
            .learners
            .iter()
            .map(|(&ordinal, learner)| {
                let target = Target {
                    ordinal,
                    peer: learner.peer.clone(),
                    in_sync: learner.in_doubt.is_some(),
                };
                (ordinal, target)
            })
            .collect();
        for member in self
            .topology
            .members
            .iter()
            .filter(|m| m.in_sync && m.ordinal != self.me)
        {
            let target = Target {
                ordinal: member.ordinal,
                peer: member.peer.clone(),
                in_sync: true,
            };
            targets.insert(member.ordinal, target);
        }
        Ok(Leadership {
            topology: self.topology.clone(),
            incarnation: self.incarnation,
            targets: targets.into_values().collect(),
        })
    }

    /// Decides what the replication results of a batch sent under
    /// `leadership` mean: learners that failed are dropped silently; failed
    /// in-sync replicas are dropped through the coordinator first; a
    /// replica that follows a newer primary deposes this one.
    pub fn settle(
        &mut self,
        leadership: &Leadership,
        results: &[(Target, SendOutcome)],
    ) -> Settlement {
        if self.phase != Phase::Leading {
            // It stepped down while the batch was out: another member may
            // lead without this batch (simulator seed 559).
            return Settlement::Deposed;
        }
        if results
            .iter()
            .any(|(_, o)| matches!(o, SendOutcome::Refused(r) if r.deposes_sender()))
        {
            // The batch fails either way; the member steps down only if the
            // refusal is about the leadership it holds now, not about an
            // older one it lost and regained while the batch was out
            // (simulator seed 86).
            if self.phase == Phase::Leading && leadership.topology.epoch >= self.topology.epoch {
                self.become_fenced("a replica follows a newer primary");
            }
            return Settlement::Deposed;
        }
        let failed: Vec<&Target> = results
            .iter()
            .filter(|(_, outcome)| *outcome != SendOutcome::Acked)
            .map(|(target, _)| target)
            .collect();
        // A learner whose admission is in doubt stays: until a topology
        // says it is not in sync, dropping it would let the next batch be
        // acknowledged without a member the coordinator may count in sync
        // (simulator seed 1805).
        self.learners.retain(|ordinal, learner| {
            if !failed.iter().any(|t| t.ordinal == *ordinal) {
                return true;
            }
            learner.missed_batch = true;
            learner.in_doubt.is_some()
        });
        if !failed.iter().any(|t| t.in_sync) {
            return Settlement::Done;
        }
        // Failed learners in doubt are not in the topology's in-sync set, so
        // they are left out of it as well.
        let in_sync = leadership
            .topology
            .members
            .iter()
            .filter(|m| m.in_sync && !failed.iter().any(|t| t.in_sync && t.ordinal == m.ordinal))
            .map(|m| m.ordinal)
            .collect();
        Settlement::AlterInSync(self.alter_request(&leadership.topology, in_sync))
    }

    /// The coordinator answered a request to change the in-sync set.
    pub fn in_sync_altered(&mut self, answer: AlterAnswer) {
        match answer {
            AlterAnswer::Changed(topology) => self.adopt(topology),
            // Only a refusal this member cannot explain fences it: if it
            // adopted a newer topology since it asked (one that still names
            // it, or it would be fenced already), that topology is why, and
            // fencing now would leave it fenced under a topology that names
            // it primary, with nothing left to change it (simulator seed 2).
            AlterAnswer::Stale { asked }
                if self.phase == Phase::Leading && asked >= self.topology.epoch =>
            {
                self.become_fenced("the coordinator is at a newer epoch")
            }
            AlterAnswer::Stale { .. } | AlterAnswer::Failed => {}
        }
    }

    /// A joiner asks for a snapshot: it becomes a learner of this
    /// leadership, sent every batch from now on.
    pub fn grant_snapshot(
        &mut self,
        ordinal: Ordinal,
        incarnation: u64,
        peer: String,
        index: LogIndex,
    ) -> Result<SnapshotGrant, Refusal> {
        if self.phase != Phase::Leading {
            return Err(Refusal::NotPrimary);
        }
        let learner = Learner {
            incarnation,
            peer,
            in_doubt: None,
            snapshot_index: index,
            missed_batch: false,
        };
        self.learners.insert(ordinal, learner);
        Ok(SnapshotGrant {
            epoch: self.topology.epoch,
            primary: PrimaryId {
                ordinal: self.me,
                incarnation: self.incarnation,
            },
            index,
        })
    }

    /// A learner asks to be admitted: the in-sync set to ask the coordinator
    /// for. Every batch since its snapshot reached it (a failed send would
    /// have removed it), and the caller sends no batch until the answer is
    /// in, so it holds every write.
    /// A learner that installed another snapshot than the one of its
    /// current registration (it fetched twice; the registration it caught
    /// up from was dropped after a failed send) is refused: it may lack a
    /// write sent in between (simulator seed 1171).
    pub fn admit(
        &mut self,
        ordinal: Ordinal,
        incarnation: u64,
        snapshot_index: LogIndex,
    ) -> Result<AlterInSync, Refusal> {
        if self.phase != Phase::Leading {
            return Err(Refusal::NotPrimary);
        }
        let epoch = self.topology.epoch;
        match self.learners.get_mut(&ordinal) {
            Some(learner)
                if learner.incarnation == incarnation
                    && learner.snapshot_index == snapshot_index
                    && !learner.missed_batch =>
            {
                learner.in_doubt = Some(epoch);
            }
            _ => return Err(Refusal::NotALearner),
        }
        let mut in_sync = self.topology.in_sync_ordinals();
        in_sync.push(ordinal);
        let mut request = self.alter_request(&self.topology, in_sync);
        request.added.insert(ordinal, incarnation);
        Ok(request)
    }

    /// The coordinator admitted a learner: it is a replica now, once the
    /// topology this member holds says so. Until then it stays a learner
    /// and gets every batch: if the answer's topology could not be adopted
    /// (it did not name this incarnation), dropping it would acknowledge
    /// writes the coordinator's in-sync member lacks (simulator seed 237).
    pub fn learner_admitted(&mut self, ordinal: Ordinal) {
        if self.topology.is_in_sync(ordinal) {
            self.learners.remove(&ordinal);
        }
    }

    /// The coordinator answered the admission of `ordinal` with a refusal:
    /// it is certainly not in sync, a learner as before.
    pub fn admission_refused(&mut self, ordinal: Ordinal) {
        if let Some(learner) = self.learners.get_mut(&ordinal) {
            learner.in_doubt = None;
        }
        self.learners
            .retain(|_, learner| learner.in_doubt.is_some() || !learner.missed_batch);
    }

    fn alter_request(&self, topology: &Topology, in_sync: Vec<Ordinal>) -> AlterInSync {
        AlterInSync {
            tier: self.tier,
            epoch: topology.epoch,
            primary: self.me,
            in_sync,
            added: BTreeMap::new(),
        }
    }

    // ---- Fault injection. ----

    /// Plays dead until [`MemberCore::recover`].
    pub fn shut_down(&mut self) {
        self.become_shut_down();
    }

    /// Comes back as `incarnation`, a new process as far as anyone can tell:
    /// it must resync.
    pub fn recover(&mut self, incarnation: u64) {
        if self.phase == Phase::ShutDown {
            self.incarnation = incarnation;
            self.become_joining("recovered from fault injection");
        }
    }
}

fn primary_of(topology: &Topology) -> Option<PrimaryId> {
    topology.primary_member().map(|p| PrimaryId {
        ordinal: p.ordinal,
        incarnation: p.incarnation,
    })
}

#[cfg(test)]
mod tests;
