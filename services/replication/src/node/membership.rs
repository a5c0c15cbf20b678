//! A member's place in its tier, as I/O: heartbeats to the coordinator,
//! topologies handed to the core, the promotion hook, and the resync steps
//! the core asks for. Every decision is [`super::state::MemberCore`]'s.
//!
//! A joiner resyncs in three steps:
//! 1. It asks the primary for a snapshot; from that moment the primary sends
//!    it every batch as a learner.
//! 2. It installs the snapshot (phase `catching_up`) and applies the batches
//!    that follow.
//! 3. It asks the primary to admit it; the primary, between two batches, asks
//!    the coordinator to add it to the in-sync set. The next topology makes
//!    it a `following` replica: it now serves reads and may be elected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bookstore_core::ApiError;
use bookstore_core::peer::{PeerClient, PeerError};
use tokio::sync::oneshot;

use super::messages::{Done, JoinRequest, SnapshotRequest, SnapshotResponse};
use super::state::{JoinRefused, ResyncStep};
use super::writer::WriterOp;
use super::{Shared, writer_gone};
use crate::store::StateMachine;
use crate::topology::{Epoch, Heartbeat, Phase, Topology};

/// How often a joiner checks whether it can make progress on its resync.
const RESYNC_POLL: Duration = Duration::from_millis(100);
/// Pause after a failed resync step before the next try; it doubles with
/// every failure in a row (a snapshot that cannot be installed on a full
/// disk should not be fetched from the primary three times a second).
const RESYNC_BACKOFF: Duration = Duration::from_millis(300);
/// The longest pause between resync attempts.
const MAX_RESYNC_BACKOFF: Duration = Duration::from_secs(5);

pub(super) fn spawn<M: StateMachine>(shared: Arc<Shared<M>>) {
    tokio::spawn(heartbeat_loop(shared.clone()));
    tokio::spawn(resync_loop(shared));
}

/// Sends a heartbeat every interval and adopts the topology in the answer, so
/// a member that missed a push still learns the topology within a second.
async fn heartbeat_loop<M: StateMachine>(shared: Arc<Shared<M>>) {
    let interval = shared.config.heartbeat_interval;
    let client = PeerClient::with_timeout(
        shared.peers_token(),
        shared.peers.metrics().clone(),
        interval.max(Duration::from_millis(200)),
    );
    let url = format!("{}/coordinator/heartbeat", shared.config.coordinator_url);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(heartbeat) = shared.heartbeat() else {
            continue;
        };
        match client
            .post::<_, Topology>("coordinator", "heartbeat", &url, &heartbeat)
            .await
        {
            Ok(topology) => adopt(&shared, topology),
            Err(error) => tracing::debug!(%error, "heartbeat failed"),
        }
    }
}

impl<M: StateMachine> Shared<M> {
    fn peers_token(&self) -> bookstore_core::token::PeerToken {
        self.token.clone()
    }

    /// This member's heartbeat, or `None` while shut down (it plays dead).
    fn heartbeat(&self) -> Option<Heartbeat> {
        let core = self.lock_core();
        if core.phase() == Phase::ShutDown {
            return None;
        }
        Some(Heartbeat {
            tier: self.config.tier,
            ordinal: self.config.ordinal,
            incarnation: core.incarnation(),
            peer: self.config.peer_addr.clone(),
            public: self.config.public_addr.clone(),
            phase: core.phase(),
            epoch: core.topology().epoch,
            applied: self.applied.load(std::sync::atomic::Ordering::Acquire),
            data_epoch: self.data_epoch.load(std::sync::atomic::Ordering::Acquire),
        })
    }
}

/// Adopts a topology from the coordinator (pushed, or in a heartbeat answer).
pub(super) fn adopt<M: StateMachine>(shared: &Arc<Shared<M>>, topology: Topology) {
    shared.with_core(|core| core.adopt(topology));
}

/// Becomes primary: first the promotion hook (the catalog clears the cache,
/// which may hold reads of writes the old primary never acknowledged), then
/// writes are taken.
pub(super) async fn promote_to_primary<M: StateMachine>(shared: Arc<Shared<M>>, epoch: Epoch) {
    (shared.on_promote)().await;
    shared.with_core(|core| core.promotion_ready(epoch));
}

/// Drives a joiner through its resync, one step at a time.
async fn resync_loop<M: StateMachine>(shared: Arc<Shared<M>>) {
    let mut backoff = RESYNC_BACKOFF;
    loop {
        tokio::time::sleep(RESYNC_POLL).await;
        let step = shared.lock_core().resync_step();
        let result = match step {
            Some(ResyncStep::FetchSnapshot { peer, .. }) => fetch_snapshot(&shared, &peer).await,
            Some(ResyncStep::AskToJoin {
                peer,
                snapshot_index,
                ..
            }) => ask_to_join(&shared, &peer, snapshot_index).await,
            None => Ok(()),
        };
        match result {
            Ok(()) => backoff = RESYNC_BACKOFF,
            Err(error) => {
                tracing::warn!(tier = %shared.config.tier, ordinal = shared.config.ordinal, %error, retry_in = ?backoff, "resync step failed");
                shared.metrics.resync_failures.inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_RESYNC_BACKOFF);
            }
        }
    }
}

/// Steps 1 and 2: fetch the primary's snapshot and install it.
async fn fetch_snapshot<M: StateMachine>(
    shared: &Arc<Shared<M>>,
    peer: &str,
) -> Result<(), ApiError> {
    let started = Instant::now();
    let incarnation = shared.lock_core().incarnation();
    let request = SnapshotRequest {
        ordinal: shared.config.ordinal,
        incarnation,
        peer: shared.config.peer_addr.clone(),
    };
    let response: SnapshotResponse<M::Snapshot> = shared
        .peers
        .post(
            shared.config.tier.as_str(),
            "snapshot",
            &format!("http://{peer}/peer/snapshot"),
            &request,
        )
        .await?;
    let index = response.index;
    let (reply, answer) = oneshot::channel();
    shared
        .writer
        .send(WriterOp::Restore { response, reply })
        .await
        .map_err(|_| writer_gone())?;
    answer.await.map_err(|_| writer_gone())??;
    shared.metrics.resyncs.inc();
    shared
        .metrics
        .resync_duration
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(tier = %shared.config.tier, ordinal = shared.config.ordinal, index, "installed snapshot from the primary");
    Ok(())
}

/// Step 3: ask the primary to admit this member to the in-sync set.
async fn ask_to_join<M: StateMachine>(
    shared: &Arc<Shared<M>>,
    peer: &str,
    snapshot_index: crate::topology::LogIndex,
) -> Result<(), ApiError> {
    let request = JoinRequest {
        ordinal: shared.config.ordinal,
        incarnation: shared.lock_core().incarnation(),
        snapshot_index,
    };
    let joined: Result<Done, _> = shared
        .peers
        .post(
            shared.config.tier.as_str(),
            "join",
            &format!("http://{peer}/peer/join"),
            &request,
        )
        .await;
    if let Err(error) = joined {
        shared.with_core(|core| core.join_refused(join_refusal(&error)));
        return Err(error.into());
    }
    Ok(())
}

/// Why the primary did not admit us: it answers `unavailable` when it asked
/// the coordinator and got a refusal or no answer (we are still its
/// learner); anything else means starting over.
fn join_refusal(error: &PeerError) -> JoinRefused {
    match error {
        PeerError::Status {
            body: Some(body), ..
        } if body.error.code == ApiError::Unavailable(String::new()).code() => {
            JoinRefused::NotAdmitted
        }
        _ => JoinRefused::NotALearner,
    }
}

/// Fault injection: behave as crashed (no heartbeats, no service).
pub(super) fn shut_down<M: StateMachine>(shared: &Arc<Shared<M>>) {
    shared.with_core(|core| core.shut_down());
}

/// Fault injection: come back as a new incarnation that must resync.
pub(super) fn recover<M: StateMachine>(shared: &Arc<Shared<M>>) {
    shared.with_core(|core| core.recover(fastrand::u64(1..)));
}
