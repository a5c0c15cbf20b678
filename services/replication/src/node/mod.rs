//! A member of a replicated tier: it executes writes when it is the primary,
//! applies the primary's writes when it is a replica, resyncs when it joins,
//! and fences itself when it learns of a newer primary.
//!
//! The parts, one concept a module:
//! - [`state`]: the member's decisions (phase, whom it follows, whom it
//!   replicates to, what it refuses), a pure state machine; the modules
//!   below only carry out its answers and effects.
//! - [`writer`]: the single task that owns the database and applies batches
//!   (group commit on the primary, replicated batches on a replica).
//! - [`membership`]: heartbeats, topology changes and the resync of a joiner.
//! - [`routes`]: the peer API (replicate, snapshot, join, submit, topology,
//!   shutdown and recover for fault injection, status).
//!
//! A write on the primary, step by step (see `writer::Writer::lead`):
//! 1. Gather every write queued so far into one batch (group commit).
//! 2. Apply it to the local database in one transaction and, at the same
//!    time, send it to every in-sync replica and learner and run the commit
//!    hook (the catalog invalidates cache entries).
//! 3. Wait until the local commit (one fsync), every in-sync replica's
//!    commit and the hook are done. A replica that failed is dropped from
//!    the in-sync set through the coordinator before anything is
//!    acknowledged.
//! 4. Publish the new state to readers, then answer every write of the batch.
//! 5. Serve the linearizable reads that arrived before the batch was sent
//!    (raft's ReadIndex; a round of reads alone sends an empty batch): the
//!    acknowledgements prove no newer primary existed when they arrived.

mod membership;
pub mod messages;
mod metrics;
mod routes;
pub mod state;
mod writer;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use bookstore_core::ApiError;
use bookstore_core::cluster::{Ordinal, Role};
use bookstore_core::http::ReadinessCheck;
use bookstore_core::metrics::Metrics;
use bookstore_core::peer::PeerClient;
use bookstore_core::token::PeerToken;
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{self, DataPosition, StateDigest, StateMachine};
use crate::topology::{LogIndex, Phase, Topology};
use messages::{MemberError, MemberStatus, Verification};
use metrics::ReplicationMetrics;
use state::{Effect, MemberCore};
use writer::{Writer, WriterOp};

/// How long a replica waits for an earlier batch (or its own snapshot) before
/// it reports a gap; batches can overtake each other on the wire.
pub const GAP_WAIT: Duration = Duration::from_secs(2);
/// How long the primary waits for a replica to acknowledge a batch before it
/// drops the replica from the in-sync set.
pub const REPLICATE_TIMEOUT: Duration = Duration::from_secs(2);
/// The most writes one batch (one transaction, one fsync) may hold.
pub const MAX_BATCH: usize = 512;
/// Writes that may wait for the writer; beyond this, callers wait to enqueue.
const WRITER_QUEUE: usize = 4096;

/// A boxed future, for hooks.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs while a batch is being made durable, and finishes before any write
/// of it is answered: the log index of the batch's last write, and its
/// commands. The catalog invalidates the cache entries of the books they
/// touch here. That is safe before the batch is durable: the invalidation
/// leaves a tombstone at that index, so the cache refuses any read older
/// than the batch, and readers see the batch only after it is durable. Doing
/// it while the disks sync keeps a round trip off every write.
pub type CommitHook<M> =
    Arc<dyn Fn(LogIndex, &[<M as StateMachine>::Command]) -> BoxFuture + Send + Sync>;
/// Runs when this member becomes primary, before it takes its first write.
pub type PromoteHook = Arc<dyn Fn() -> BoxFuture + Send + Sync>;

/// How to run one member.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub tier: Role,
    pub ordinal: Ordinal,
    pub data_dir: PathBuf,
    /// The public address others use to reach this member (`host:port`).
    pub public_addr: String,
    /// The peer address others use to reach this member (`host:port`).
    pub peer_addr: String,
    /// Base URL of the coordinator's peer API.
    pub coordinator_url: String,
    pub heartbeat_interval: Duration,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the WAL checkpoint thread: {0}")]
    Checkpointer(#[source] std::io::Error),
    #[error("cannot open database {path}: {source}")]
    Database {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

/// State shared by the node's tasks and handlers.
struct Shared<M: StateMachine> {
    config: NodeConfig,
    token: PeerToken,
    peers: PeerClient,
    replication_peers: PeerClient,
    /// The member's decisions; change it only through [`Shared::with_core`].
    core: Mutex<MemberCore>,
    /// Bumped on every phase or applied-index change, for waiters.
    progress: watch::Sender<u64>,
    applied: AtomicU64,
    data_epoch: AtomicU64,
    /// The index readers see and the digest of the rows at it: `status`
    /// reads it here, never from the writer, so it answers at once whatever
    /// the writer is busy with.
    published: Mutex<Published>,
    /// The database file, for reads off the writer (`verify`).
    database: PathBuf,
    writer: mpsc::Sender<WriterOp<M>>,
    view: Arc<M::View>,
    on_promote: PromoteHook,
    metrics: ReplicationMetrics,
}

/// What `status` reports of the data: a pair, changed together.
#[derive(Debug, Clone, Copy)]
struct Published {
    applied: LogIndex,
    digest: StateDigest,
}

/// A handle to a running member; cheap to clone.
pub struct Node<M: StateMachine> {
    shared: Arc<Shared<M>>,
}

impl<M: StateMachine> Clone for Node<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M: StateMachine> Node<M> {
    /// Opens the member's database, loads (or seeds) its state and starts its
    /// writer, heartbeat and resync tasks. It starts in [`Phase::Joining`]:
    /// it serves nothing until the coordinator has placed it.
    pub fn start(
        config: NodeConfig,
        mut machine: M,
        token: PeerToken,
        metrics: Metrics,
        on_commit: CommitHook<M>,
        on_promote: PromoteHook,
    ) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let path = config
            .data_dir
            .join(format!("{}-{}.db", config.tier, config.ordinal));
        let db_error = |source| NodeError::Database {
            path: path.display().to_string(),
            source,
        };
        let mut conn = store::open(&path).map_err(db_error)?;
        store::writer_without_checkpoints(&conn).map_err(db_error)?;
        store::spawn_checkpointer(store::open(&path).map_err(db_error)?)
            .map_err(NodeError::Checkpointer)?;
        let position = store::read_position(&conn).map_err(db_error)?;
        let tx = conn.transaction().map_err(db_error)?;
        machine.open(&tx).map_err(db_error)?;
        let digest = opened_digest::<M>(&tx).map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        machine.publish();
        let view = machine.view();

        let replication_metrics = ReplicationMetrics::new(&metrics, config.tier, config.ordinal);
        let (writer_tx, writer_rx) = mpsc::channel(WRITER_QUEUE);
        let (progress, _) = watch::channel(0);
        let core = MemberCore::new(config.tier, config.ordinal, fastrand::u64(1..));
        let shared = Arc::new(Shared {
            peers: PeerClient::new(token.clone(), metrics.clone()),
            replication_peers: PeerClient::with_timeout(token.clone(), metrics, REPLICATE_TIMEOUT),
            token,
            config,
            core: Mutex::new(core),
            progress,
            applied: AtomicU64::new(position.applied),
            data_epoch: AtomicU64::new(position.epoch),
            published: Mutex::new(Published {
                applied: position.applied,
                digest,
            }),
            database: path,
            writer: writer_tx,
            view,
            on_promote,
            metrics: replication_metrics,
        });
        shared
            .metrics
            .observe_state(Phase::Joining, 0, position.applied);
        Writer::spawn(
            shared.clone(),
            conn,
            machine,
            position,
            digest,
            writer_rx,
            on_commit,
        );
        membership::spawn(shared.clone());
        Ok(Self { shared })
    }

    /// Executes a write: here if this member is the primary, otherwise on
    /// the primary (a replica forwards writes, as in the original).
    pub async fn submit(&self, command: M::Command) -> Result<M::Output, ApiError> {
        let primary_url = self
            .shared
            .lock_core()
            .route_write()
            .map_err(|refusal| match refusal {
                state::Refusal::NotPrimary => ApiError::Unavailable(format!(
                    "{} has no primary right now",
                    self.shared.config.tier
                )),
                refusal => ApiError::from(MemberError::from(refusal)),
            })?
            .map(|peer| format!("http://{peer}"));
        match primary_url {
            None => self.submit_here(command).await,
            Some(url) => {
                let forwarded = self
                    .shared
                    .peers
                    .post(
                        self.shared.config.tier.as_str(),
                        "forward_write",
                        &format!("{url}/peer/submit"),
                        &command,
                    )
                    .await?;
                Ok(forwarded)
            }
        }
    }

    /// Executes a write only if this member is the primary.
    async fn submit_here(&self, command: M::Command) -> Result<M::Output, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .writer
            .send(WriterOp::Submit { command, reply })
            .await
            .map_err(|_| writer_gone())?;
        Ok(answer.await.map_err(|_| writer_gone())??)
    }

    /// Reads the published state, with the log index it is at least as new
    /// as. Fails while this member cannot serve reads (joining, shut down).
    pub fn read<R>(&self, read: impl FnOnce(&M::View) -> R) -> Result<(LogIndex, R), ApiError> {
        self.shared.check_serves_reads()?;
        // Read the index first: the view may be newer, never older.
        let index = self.shared.applied.load(Ordering::Acquire);
        Ok((index, read(&self.shared.view)))
    }

    /// Reads the published state linearizably, with the log index it is at:
    /// only on the primary, after a batch sent after this call has settled
    /// (an empty one if no write is waiting), so it never answers from a
    /// leadership it has lost (see `MemberCore::confirm_reads`). A member
    /// that is not the primary refuses with `not_primary`; a primary that
    /// cannot confirm its leadership with `unconfirmed`.
    pub async fn read_linearizable<R: Send + 'static>(
        &self,
        read: impl FnOnce(&M::View) -> R + Send + 'static,
    ) -> Result<(LogIndex, R), MemberError> {
        self.shared.lock_core().take_linearizable_read()?;
        let (reply, answer) = oneshot::channel();
        let read: writer::ConfirmedRead<M> = Box::new(move |state| {
            let _ = reply.send(state.map(|(index, view)| (index, read(view))));
        });
        self.shared
            .writer
            .send(WriterOp::Read { read })
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Fails with 503 while the member is shut down by fault injection; the
    /// service wraps its public routes with it.
    pub fn check_available(&self) -> Result<(), ApiError> {
        match self.shared.lock_core().phase() {
            Phase::ShutDown => Err(ApiError::from(MemberError::from(state::Refusal::ShutDown))),
            _ => Ok(()),
        }
    }

    /// Ready when the member can serve reads: it is primary, or an in-sync
    /// replica. A joining member is not ready until it has resynced.
    pub fn readiness(&self) -> ReadinessCheck {
        let shared = self.shared.clone();
        Arc::new(move || shared.check_serves_reads().map_err(|e| e.to_string()))
    }

    /// The peer API of this member, guarded by the peer token.
    pub fn peer_routes(&self, token: PeerToken) -> Router {
        routes::router(self.shared.clone(), token)
    }

    pub fn is_primary(&self) -> bool {
        self.shared.lock_core().phase() == Phase::Leading
    }

    pub fn phase(&self) -> Phase {
        self.shared.lock_core().phase()
    }

    /// The latest topology this member accepted.
    pub fn topology(&self) -> Topology {
        self.shared.lock_core().topology().clone()
    }

    /// What `bookstore status` shows for this member.
    pub fn status(&self) -> MemberStatus {
        self.shared.status()
    }
}

impl<M: StateMachine> Shared<M> {
    /// The core, for reading; changes go through [`Shared::with_core`].
    fn lock_core(&self) -> MutexGuard<'_, MemberCore> {
        // A panic while holding this lock is a bug; the state is still valid.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one decision of the core, then carries out the effects it
    /// queued (outside the lock).
    fn with_core<R>(self: &Arc<Self>, decide: impl FnOnce(&mut MemberCore) -> R) -> R {
        let (result, effects) = {
            let mut core = self.lock_core();
            let result = decide(&mut core);
            (result, core.take_effects())
        };
        for effect in effects {
            self.carry_out(effect);
        }
        result
    }

    fn carry_out(self: &Arc<Self>, effect: Effect) {
        match effect {
            Effect::PhaseChanged {
                from,
                to,
                epoch,
                why,
            } => {
                let level_warn = from == Phase::Leading;
                if level_warn {
                    tracing::warn!(tier = %self.config.tier, ordinal = self.config.ordinal, from = from.as_str(), to = to.as_str(), epoch, why, "phase change");
                } else {
                    tracing::info!(tier = %self.config.tier, ordinal = self.config.ordinal, from = from.as_str(), to = to.as_str(), epoch, why, "phase change");
                }
                if to == Phase::Leading {
                    self.metrics.promotions.inc();
                }
                self.metrics
                    .observe_state(to, epoch, self.applied.load(Ordering::Acquire));
                self.progress.send_modify(|n| *n += 1);
            }
            Effect::TopologyAdopted { epoch } => self.metrics.epoch.set(epoch as i64),
            Effect::Promote { epoch } => {
                tokio::spawn(membership::promote_to_primary(self.clone(), epoch));
            }
        }
    }

    fn check_serves_reads(&self) -> Result<(), ApiError> {
        let phase = self.lock_core().phase();
        if phase.serves_reads() {
            Ok(())
        } else {
            Err(ApiError::Unavailable(format!(
                "{}-{} is {} and serves no reads",
                self.config.tier,
                self.config.ordinal,
                phase.as_str()
            )))
        }
    }

    /// Readers now see the data at `position`, whose rows have `digest`.
    fn set_applied(&self, position: DataPosition, digest: StateDigest) {
        let DataPosition { applied, epoch } = position;
        *self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Published { applied, digest };
        self.applied.store(applied, Ordering::Release);
        self.data_epoch.store(epoch, Ordering::Release);
        self.metrics.applied.set(applied as i64);
        self.progress.send_modify(|n| *n += 1);
    }

    fn status(&self) -> MemberStatus {
        let published = *self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let core = self.lock_core();
        MemberStatus {
            role: self.config.tier,
            ordinal: self.config.ordinal,
            pid: std::process::id(),
            address: self.config.public_addr.clone(),
            peer_address: self.config.peer_addr.clone(),
            healthy: core.phase().serves_reads(),
            primary: core.phase() == Phase::Leading,
            phase: core.phase(),
            epoch: core.topology().epoch,
            applied_index: published.applied,
            digest: published.digest.to_string(),
            incarnation: core.incarnation(),
        }
    }

    /// Recomputes the digest from the rows on disk, in one read transaction
    /// of its own connection (WAL: it never blocks the writer, nor the
    /// writer it), next to the index and digest kept in the same snapshot.
    async fn verify(&self) -> Result<Verification, ApiError> {
        let path = self.database.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = store::open_reader(&path)?;
            let tx = conn.transaction()?;
            let position = store::read_position(&tx)?;
            let kept = store::read_digest(&tx)?.unwrap_or_default();
            let rows = M::digest_rows(&tx)?;
            Ok::<_, rusqlite::Error>(Verification {
                applied_index: position.applied,
                digest: kept.to_string(),
                rows_digest: rows.to_string(),
            })
        })
        .await
        .map_err(|error| ApiError::Internal(format!("the verification task failed: {error}")))?
        .map_err(store::read_failed)
    }
}

/// The digest of a database just opened: the one it keeps, or for a
/// database written before the digest was kept (or just seeded), the one
/// computed from its rows, kept from now on.
fn opened_digest<M: StateMachine>(tx: &rusqlite::Transaction) -> rusqlite::Result<StateDigest> {
    if let Some(digest) = store::read_digest(tx)? {
        return Ok(digest);
    }
    let digest = M::digest_rows(tx)?;
    store::write_digest(tx, digest)?;
    Ok(digest)
}

fn writer_gone() -> ApiError {
    ApiError::Internal("the writer task has stopped".to_owned())
}
