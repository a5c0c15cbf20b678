//! The writer: the one task that owns the database and the working state.
//!
//! Everything that changes state goes through its queue, so batches, resyncs
//! and in-sync changes are totally ordered without further locking. The
//! database work itself runs on the blocking pool. Whether to take a write,
//! to whom a batch goes, whether a batch is accepted and what a failed send
//! means are the core's decisions ([`super::state::MemberCore`]); the writer
//! carries them out.

use std::sync::{Arc, Mutex};

use bookstore_core::ApiError;
use bookstore_core::peer::PeerError;
use bookstore_core::telemetry::exit_now;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::messages::{
    Entry, JoinRequest, MemberError, ReplicateAck, ReplicateRequest, SnapshotRequest,
    SnapshotResponse, refusal_of,
};
use super::state::{
    AlterAnswer, BatchHeader, BatchPlan, Leadership, PrimaryId, SendOutcome, Settlement,
    SnapshotGrant, Target,
};
use super::{CommitHook, MAX_BATCH, Shared, writer_gone};
use crate::store::{self, DataPosition, StateDigest, StateMachine};
use crate::topology::{AlterInSync, LogIndex};

type Reply<T> = oneshot::Sender<Result<T, MemberError>>;

/// A linearizable read, run by the writer against the published state (with
/// the index it is at) once a batch sent after the read arrived has settled,
/// or handed the refusal (see [`super::state::MemberCore::confirm_reads`]).
pub(super) type ConfirmedRead<M> =
    Box<dyn FnOnce(Result<(LogIndex, &<M as StateMachine>::View), MemberError>) + Send>;

/// The work the writer does, one at a time.
pub(super) enum WriterOp<M: StateMachine> {
    /// A write to execute as primary.
    Submit {
        command: M::Command,
        reply: Reply<M::Output>,
    },
    /// A linearizable read to serve as primary, after the next batch.
    Read { read: ConfirmedRead<M> },
    /// A batch from the primary to apply as replica or learner.
    Replicate {
        request: ReplicateRequest<M::Command>,
        reply: Reply<ReplicateAck>,
    },
    /// A joiner's request for the whole state; it becomes a learner.
    Snapshot {
        learner: SnapshotRequest,
        reply: Reply<SnapshotResponse<M::Snapshot>>,
    },
    /// Replace the whole state with the primary's snapshot.
    Restore {
        response: SnapshotResponse<M::Snapshot>,
        reply: Reply<()>,
    },
    /// A learner that has kept up asks to enter the in-sync set.
    Join {
        request: JoinRequest,
        reply: Reply<()>,
    },
}

/// What one batch carries: the writes gathered for it (group commit) and
/// the linearizable reads it confirms.
struct Round<M: StateMachine> {
    writes: Vec<(M::Command, Reply<M::Output>)>,
    reads: Vec<ConfirmedRead<M>>,
}

impl<M: StateMachine> Default for Round<M> {
    fn default() -> Self {
        Self {
            writes: Vec::new(),
            reads: Vec::new(),
        }
    }
}

impl<M: StateMachine> Round<M> {
    /// Adds a write or a read; the caller passes nothing else.
    fn take(&mut self, op: WriterOp<M>) {
        match op {
            WriterOp::Submit { command, reply } => self.writes.push((command, reply)),
            WriterOp::Read { read } => self.reads.push(read),
            _ => unreachable!("a round takes only writes and reads"),
        }
    }
}

/// The database, the working state and the digest of its rows; only the
/// writer touches them.
struct Db<M> {
    conn: Connection,
    machine: M,
    digest: StateDigest,
}

pub(super) struct Writer<M: StateMachine> {
    shared: Arc<Shared<M>>,
    db: Arc<Mutex<Db<M>>>,
    position: DataPosition,
    on_commit: CommitHook<M>,
}

impl<M: StateMachine> Writer<M> {
    pub(super) fn spawn(
        shared: Arc<Shared<M>>,
        conn: Connection,
        machine: M,
        position: DataPosition,
        digest: StateDigest,
        ops: mpsc::Receiver<WriterOp<M>>,
        on_commit: CommitHook<M>,
    ) {
        let config = shared.config.clone();
        let writer = Self {
            shared,
            db: Arc::new(Mutex::new(Db {
                conn,
                machine,
                digest,
            })),
            position,
            on_commit,
        };
        let running = tokio::spawn(writer.run(ops));
        // The runtime would catch a panic of the writer and leave a member
        // that answers every write with "the writer task has stopped": a
        // member without its writer must not go on.
        tokio::spawn(async move {
            if let Err(error) = running.await
                && error.is_panic()
            {
                fatal_storage_error(&config, &"the writer task panicked");
            }
        });
    }

    async fn run(mut self, mut ops: mpsc::Receiver<WriterOp<M>>) {
        let mut next = ops.recv().await;
        while let Some(op) = next.take() {
            match op {
                op @ (WriterOp::Submit { .. } | WriterOp::Read { .. }) => {
                    let mut round = Round::default();
                    round.take(op);
                    // Group commit: take every write and read already waiting.
                    while round.writes.len() < MAX_BATCH {
                        match ops.try_recv() {
                            Ok(op @ (WriterOp::Submit { .. } | WriterOp::Read { .. })) => {
                                round.take(op)
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.lead(round).await;
                }
                WriterOp::Replicate { request, reply } => {
                    let _ = reply.send(self.follow(request).await);
                }
                WriterOp::Snapshot { learner, reply } => {
                    let _ = reply.send(self.snapshot_for(learner));
                }
                WriterOp::Restore { response, reply } => {
                    let _ = reply.send(self.restore(response).await);
                }
                WriterOp::Join { request, reply } => {
                    let _ = reply.send(self.admit(request).await);
                }
            }
            if next.is_none() {
                next = ops.recv().await;
            }
        }
    }

    fn with_db<R>(&self, f: impl FnOnce(&mut Db<M>) -> R) -> R {
        let mut db = self
            .db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut db)
    }

    /// Steps 2-4 of a primary's write (see the module comment of `node`),
    /// then the reads that arrived before the batch was sent. A round with
    /// reads only sends an empty batch: it touches no disk, but every
    /// in-sync replica must still acknowledge it at this leadership.
    async fn lead(&mut self, round: Round<M>) {
        let Round { writes, reads } = round;
        let leadership = match self.shared.with_core(|core| core.lead()) {
            Ok(leadership) => leadership,
            Err(refusal) => {
                for (_, reply) in writes {
                    let _ = reply.send(Err(refusal.into()));
                }
                for read in reads {
                    read(Err(refusal.into()));
                }
                return;
            }
        };
        let (commands, replies): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        let first = self.position.applied + 1;
        let entries: Vec<Entry<M::Command>> = commands
            .iter()
            .enumerate()
            .map(|(i, command)| Entry {
                index: first + i as u64,
                command: command.clone(),
            })
            .collect();
        let request = Arc::new(ReplicateRequest {
            epoch: leadership.topology.epoch,
            leader: self.shared.config.ordinal,
            leader_incarnation: leadership.incarnation,
            entries,
        });
        let targets = leadership.targets.clone();

        let writes_anything = !commands.is_empty();
        if writes_anything {
            self.shared
                .metrics
                .batch_size
                .observe(commands.len() as f64);
        }
        let position = if writes_anything {
            self.next_position(&request, leadership.topology.epoch)
        } else {
            self.position
        };
        let local = async {
            if writes_anything {
                apply_batch(self.db.clone(), request.clone(), position, false)
                    .await
                    .map(Some)
            } else {
                Ok(None)
            }
        };
        let remote = replicate(
            self.shared.replication_peers.clone(),
            targets,
            request.clone(),
            format!("{}-replica", self.shared.config.tier),
        );
        let hook = writes_anything.then(|| (self.on_commit)(position.applied, &commands));
        let hook = async {
            if let Some(hook) = hook {
                hook.await;
            }
        };
        let (local, remote, ()) = tokio::join!(local, remote, hook);
        let applied = match local {
            Ok(applied) => applied,
            Err(error) => fatal_storage_error(&self.shared.config, &error),
        };
        self.position = position;
        let outcome = self.settle_replication(remote, &leadership).await;
        let outputs = match applied {
            None => Vec::new(),
            Some(Applied { outputs, digest }) => {
                // Readers see the batch only now: it is durable on every in-sync
                // member (or, on failure, at least committed here and never
                // answered). The index readers get moves only after the view: a
                // read must never pair the new index with the old state, or the
                // cache could take that old state as being as new as the batch's
                // invalidation.
                self.with_db(|db| db.machine.publish());
                self.shared.set_applied(position, digest);
                outputs
            }
        };
        match &outcome {
            Ok(()) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(ApiError::Unavailable(error.clone()).into()));
                }
            }
        }
        self.serve_reads(reads, outcome.is_ok());
    }

    /// Serves the reads of a round whose batch has settled (`confirmed`:
    /// without error) from the state just published, or refuses them.
    fn serve_reads(&self, reads: Vec<ConfirmedRead<M>>, confirmed: bool) {
        if reads.is_empty() {
            return;
        }
        let verdict = if confirmed {
            self.shared.lock_core().confirm_reads()
        } else {
            Err(super::state::Refusal::Unconfirmed)
        };
        self.shared
            .metrics
            .observe_confirmed_reads(reads.len(), verdict.is_ok());
        for read in reads {
            read(
                verdict
                    .map(|()| (self.position.applied, &*self.shared.view))
                    .map_err(MemberError::from),
            );
        }
    }

    /// Where the data will stand once `request` is applied.
    fn next_position(&self, request: &ReplicateRequest<M::Command>, epoch: u64) -> DataPosition {
        DataPosition {
            applied: request
                .entries
                .last()
                .map_or(self.position.applied, |e| e.index),
            epoch: epoch.max(self.position.epoch),
        }
    }

    /// Carries out what the replication results mean (the core decides):
    /// the error message the writes fail with, if they fail.
    async fn settle_replication(
        &mut self,
        results: Vec<(Target, Result<ReplicateAck, PeerError>)>,
        leadership: &Leadership,
    ) -> Result<(), String> {
        let outcomes: Vec<(Target, SendOutcome)> = results
            .into_iter()
            .map(|(target, result)| {
                let outcome = match &result {
                    Ok(_) => SendOutcome::Acked,
                    Err(error) => {
                        tracing::warn!(ordinal = target.ordinal, in_sync = target.in_sync, %error, "replication failed");
                        refusal_of(error).map_or(SendOutcome::Failed, SendOutcome::Refused)
                    }
                };
                (target, outcome)
            })
            .collect();
        match self
            .shared
            .with_core(|core| core.settle(leadership, &outcomes))
        {
            Settlement::Done => Ok(()),
            Settlement::Deposed => Err("this member was deposed as primary; retry".to_owned()),
            Settlement::AlterInSync(request) => self.alter_in_sync(request).await.map_err(|e| {
                format!("a replica failed and the in-sync set could not be changed: {e}")
            }),
        }
    }

    /// Asks the coordinator to change the in-sync set, and hands the answer
    /// to the core.
    async fn alter_in_sync(&self, request: AlterInSync) -> Result<(), PeerError> {
        let asked = request.epoch;
        let url = format!("{}/coordinator/in-sync", self.shared.config.coordinator_url);
        let result = self
            .shared
            .peers
            .post::<_, crate::topology::Topology>("coordinator", "alter_in_sync", &url, &request)
            .await;
        let answer = match &result {
            Ok(topology) => AlterAnswer::Changed(topology.clone()),
            // The coordinator refuses a request for another epoch or from a
            // member that is not its primary with this code.
            Err(PeerError::Status {
                body: Some(body), ..
            }) if body.error.code == ApiError::StaleEpoch(String::new()).code() => {
                AlterAnswer::Stale { asked }
            }
            Err(_) => AlterAnswer::Failed,
        };
        self.shared.with_core(|core| core.in_sync_altered(answer));
        result.map(|_| ())
    }

    /// Applies a batch from the primary (as replica or learner).
    async fn follow(
        &mut self,
        request: ReplicateRequest<M::Command>,
    ) -> Result<ReplicateAck, MemberError> {
        let applied = self.position.applied;
        let header = BatchHeader {
            epoch: request.epoch,
            primary: PrimaryId {
                ordinal: request.leader,
                incarnation: request.leader_incarnation,
            },
            first: request.entries.first().map(|e| e.index),
            last: request.entries.last().map(|e| e.index),
        };
        let plan = self
            .shared
            .with_core(|core| core.accept_batch(header, applied))?;
        if plan == BatchPlan::AlreadyApplied {
            return Ok(ReplicateAck { applied });
        }
        let fresh: Vec<Entry<M::Command>> = request
            .entries
            .into_iter()
            .filter(|entry| entry.index > applied)
            .collect();
        let batch = Arc::new(ReplicateRequest {
            epoch: request.epoch,
            leader: request.leader,
            leader_incarnation: request.leader_incarnation,
            entries: fresh,
        });
        let position = self.next_position(&batch, request.epoch);
        let digest = match apply_batch(self.db.clone(), batch, position, true).await {
            Ok(applied) => applied.digest,
            Err(error) => fatal_storage_error(&self.shared.config, &error),
        };
        self.position = position;
        self.shared.set_applied(position, digest);
        Ok(ReplicateAck {
            applied: position.applied,
        })
    }

    /// The whole state for a joiner, who from now on receives every batch.
    fn snapshot_for(
        &mut self,
        learner: SnapshotRequest,
    ) -> Result<SnapshotResponse<M::Snapshot>, MemberError> {
        let ordinal = learner.ordinal;
        let grant = self.shared.with_core(|core| {
            core.grant_snapshot(
                learner.ordinal,
                learner.incarnation,
                learner.peer,
                self.position.applied,
            )
        })?;
        let (snapshot, digest) = self.with_db(|db| (db.machine.snapshot(&db.conn), db.digest));
        // The writer's own database failed to read back: the same as a
        // failed write (see `fatal_storage_error`).
        let snapshot =
            snapshot.unwrap_or_else(|error| fatal_storage_error(&self.shared.config, &error));
        tracing::info!(
            learner = ordinal,
            index = self.position.applied,
            "serving a resync snapshot"
        );
        Ok(SnapshotResponse {
            epoch: grant.epoch,
            leader: grant.primary.ordinal,
            leader_incarnation: grant.primary.incarnation,
            index: self.position.applied,
            snapshot,
            digest: Some(digest.to_string()),
        })
    }

    /// Replaces the whole state with the primary's; the member then catches up.
    async fn restore(
        &mut self,
        response: SnapshotResponse<M::Snapshot>,
    ) -> Result<(), MemberError> {
        let grant = SnapshotGrant {
            epoch: response.epoch,
            primary: PrimaryId {
                ordinal: response.leader,
                incarnation: response.leader_incarnation,
            },
            index: response.index,
        };
        let position = DataPosition {
            applied: response.index,
            epoch: response.epoch,
        };
        let db = self.db.clone();
        let snapshot = response.snapshot;
        let primary_digest = response.digest;
        let digest = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Db { conn, machine, .. } = &mut *db;
            let tx = conn.transaction().map_err(RestoreError::Storage)?;
            let mut digest = StateDigest::default();
            machine
                .restore(&tx, snapshot, &mut digest)
                .map_err(RestoreError::Storage)?;
            // Rows that differ from the primary's (a bug on either side, or
            // a snapshot damaged on the way) must not become a replica's:
            // roll back and leave the member to resync again.
            if let Some(expected) = primary_digest
                && expected != digest.to_string()
            {
                return Err(RestoreError::DigestMismatch {
                    expected,
                    restored: digest.to_string(),
                });
            }
            store::write_position(&tx, position).map_err(RestoreError::Storage)?;
            store::write_digest(&tx, digest).map_err(RestoreError::Storage)?;
            tx.commit().map_err(RestoreError::Storage)?;
            machine.publish();
            db.digest = digest;
            Ok(digest)
        })
        .await
        .map_err(|_| writer_gone())?
        .map_err(|error| ApiError::Internal(format!("restoring the snapshot failed: {error}")))?;
        self.position = position;
        self.shared.set_applied(position, digest);
        self.shared.with_core(|core| core.snapshot_installed(grant));
        Ok(())
    }

    /// Admits a learner into the in-sync set. Every batch since its snapshot
    /// reached it (a failed send would have removed it), and no batch is in
    /// flight while the writer is here, so it holds every write.
    async fn admit(&mut self, request: JoinRequest) -> Result<(), MemberError> {
        let alter = self.shared.with_core(|core| {
            core.admit(request.ordinal, request.incarnation, request.snapshot_index)
        })?;
        if let Err(error) = self.alter_in_sync(alter).await {
            // An answer (any status) is a refusal; no answer leaves the
            // admission in doubt (the core then treats it as in sync).
            // Either way the learner stays one: `unavailable` tells it to
            // ask again rather than start over (`join_refused`).
            if matches!(error, PeerError::Status { .. }) {
                self.shared
                    .with_core(|core| core.admission_refused(request.ordinal));
            }
            return Err(ApiError::Unavailable(error.to_string()).into());
        }
        self.shared
            .with_core(|core| core.learner_admitted(request.ordinal));
        tracing::info!(
            ordinal = request.ordinal,
            "learner admitted to the in-sync set"
        );
        Ok(())
    }
}

/// What applying a batch gave: each write's output, and the digest of the
/// rows after it.
struct Applied<O> {
    outputs: Vec<O>,
    digest: StateDigest,
}

/// Why a snapshot was not installed.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error(transparent)]
    Storage(rusqlite::Error),
    #[error("the restored rows have digest {restored}, the primary's have {expected}")]
    DigestMismatch { expected: String, restored: String },
}

/// Applies a batch to the database in one transaction (one fsync), on the
/// blocking pool, with the digest of the rows after it in the same
/// transaction; `publish` makes it visible to readers at once (replicas).
async fn apply_batch<M: StateMachine>(
    db: Arc<Mutex<Db<M>>>,
    request: Arc<ReplicateRequest<M::Command>>,
    position: DataPosition,
    publish: bool,
) -> Result<Applied<M::Output>, rusqlite::Error> {
    tokio::task::spawn_blocking(move || {
        let mut db = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Db {
            conn,
            machine,
            digest,
        } = &mut *db;
        let tx = conn.transaction()?;
        // Changed on a copy: a failed batch exits the member, but even so
        // the digest kept must never describe rows that were not committed.
        let mut next = *digest;
        let outputs = request
            .entries
            .iter()
            .map(|entry| machine.apply(&tx, &entry.command, &mut next))
            .collect::<Result<Vec<_>, _>>()?;
        store::write_position(&tx, position)?;
        store::write_digest(&tx, next)?;
        tx.commit()?;
        *digest = next;
        if publish {
            machine.publish();
        }
        Ok(Applied {
            outputs,
            digest: next,
        })
    })
    .await
    .unwrap_or_else(|join_error| panic!("the storage task panicked: {join_error}"))
}

/// Sends a batch to every target concurrently and collects the answers.
async fn replicate<C: serde::Serialize + Send + Sync + 'static>(
    client: bookstore_core::peer::PeerClient,
    targets: Vec<Target>,
    request: Arc<ReplicateRequest<C>>,
    to: String,
) -> Vec<(Target, Result<ReplicateAck, PeerError>)> {
    let mut sends = JoinSet::new();
    for target in targets {
        let client = client.clone();
        let request = request.clone();
        let to = to.clone();
        sends.spawn(async move {
            let url = format!("http://{}/peer/replicate", target.peer);
            let result = client.post(&to, "replicate", &url, &*request).await;
            (target, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = sends.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => tracing::error!(%error, "replication send task failed"),
        }
    }
    results
}

/// The exit status of a member whose storage failed (EX_SOFTWARE).
const STORAGE_FAILED_EXIT: i32 = 70;

/// A member that cannot write its own database must not go on: its state in
/// memory would drift from its disk. It exits at once; its supervisor (or
/// the kubelet) restarts it, the coordinator drops it, and it resyncs. The
/// report must not go through anything that can panic or block on the disk
/// that failed (the log file may be on it): see [`exit_now`].
fn fatal_storage_error(config: &super::NodeConfig, error: &dyn std::fmt::Display) -> ! {
    exit_now(
        &format!(
            "{}-{}: storage failed ({error}); exiting with status {STORAGE_FAILED_EXIT}",
            config.tier, config.ordinal
        ),
        STORAGE_FAILED_EXIT,
    )
}
