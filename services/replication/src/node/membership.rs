//! A member's place in its tier: heartbeats to the coordinator, adopting the
//! topologies it publishes, promotion, fencing, and the resync of a joiner.
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
use bookstore_core::peer::PeerClient;
use tokio::sync::oneshot;

use super::messages::{Done, JoinRequest, ReplicateRequest, SnapshotRequest, SnapshotResponse};
use super::writer::WriterOp;
use super::{Shared, writer_gone};
use crate::store::StateMachine;
use crate::topology::{Heartbeat, Phase, Topology};

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
        let state = self.lock_state();
        if state.phase == Phase::ShutDown {
            return None;
        }
        Some(Heartbeat {
            tier: self.config.tier,
            ordinal: self.config.ordinal,
            incarnation: state.incarnation,
            peer: self.config.peer_addr.clone(),
            public: self.config.public_addr.clone(),
            phase: state.phase,
            epoch: state.topology.epoch,
            applied: self.applied.load(std::sync::atomic::Ordering::Acquire),
            data_epoch: self.data_epoch.load(std::sync::atomic::Ordering::Acquire),
        })
    }

    /// Accepts a batch only from the primary this member's data derives from,
    /// in its current leadership.
    pub(super) fn check_leader(
        &self,
        request: &ReplicateRequest<M::Command>,
    ) -> Result<(), ApiError> {
        let mut state = self.lock_state();
        if request.epoch < state.leader_since {
            return Err(ApiError::StaleEpoch(format!(
                "batch from epoch {} but primary {:?} took over at epoch {}",
                request.epoch, state.topology.primary, state.leader_since
            )));
        }
        let from_my_primary = state.following == Some((request.leader, request.leader_incarnation));
        match state.phase {
            Phase::Following | Phase::CatchingUp if from_my_primary => Ok(()),
            Phase::Following | Phase::CatchingUp => {
                // A newer primary we have not heard of: our data may differ.
                self.set_phase(&mut state, Phase::Joining);
                state.following = None;
                Err(ApiError::Unavailable(
                    "batch from an unknown primary; resyncing".to_owned(),
                ))
            }
            Phase::Leading => {
                drop(state);
                self.fence("received a batch from a newer primary");
                Err(ApiError::Unavailable("was primary; resyncing".to_owned()))
            }
            phase => Err(ApiError::Unavailable(format!(
                "member is {}",
                phase.as_str()
            ))),
        }
    }
}

/// Adopts a topology from the coordinator (pushed, or in a heartbeat answer).
pub(super) fn adopt<M: StateMachine>(shared: &Arc<Shared<M>>, topology: Topology) {
    let me = shared.config.ordinal;
    let mut state = shared.lock_state();
    if state.phase == Phase::ShutDown || topology.tier != shared.config.tier {
        return;
    }
    if topology.epoch <= state.topology.epoch {
        return;
    }
    // A topology that does not name this process is about a previous
    // incarnation (or predates this member); the next heartbeat fixes that.
    if topology.member(me).map(|m| m.incarnation) != Some(state.incarnation) {
        return;
    }
    let primary = topology
        .primary_member()
        .map(|p| (p.ordinal, p.incarnation));
    let old_primary = state
        .topology
        .primary_member()
        .map(|p| (p.ordinal, p.incarnation));
    if primary != old_primary {
        state.leader_since = topology.epoch;
    }
    shared.metrics.epoch.set(topology.epoch as i64);
    let in_sync = topology.is_in_sync(me);
    let epoch = topology.epoch;
    state.topology = topology;
    let promote = match (primary.map(|p| p.0) == Some(me), state.phase) {
        (true, Phase::Leading) => false,
        (true, _) => true,
        (false, Phase::Leading) => {
            tracing::warn!(
                ordinal = me,
                epoch,
                "a newer topology names another primary: stepping down"
            );
            state.following = None;
            shared.set_phase(&mut state, Phase::Joining);
            false
        }
        (false, Phase::Following) => {
            if !in_sync || state.following != primary {
                state.following = None;
                shared.set_phase(&mut state, Phase::Joining);
            }
            false
        }
        (false, Phase::CatchingUp) => {
            if state.following != primary {
                state.following = None;
                shared.set_phase(&mut state, Phase::Joining);
            } else if in_sync {
                shared.set_phase(&mut state, Phase::Following);
            }
            false
        }
        (false, _) => false,
    };
    drop(state);
    if promote {
        tokio::spawn(promote_to_primary(shared.clone(), epoch));
    }
}

/// Becomes primary: first the promotion hook (the catalog clears the cache,
/// which may hold reads of writes the old primary never acknowledged), then
/// writes are taken.
async fn promote_to_primary<M: StateMachine>(shared: Arc<Shared<M>>, epoch: u64) {
    (shared.on_promote)().await;
    let mut state = shared.lock_state();
    let me = shared.config.ordinal;
    let still_mine = state.topology.primary == Some(me) && state.topology.epoch >= epoch;
    if still_mine && !matches!(state.phase, Phase::Leading | Phase::ShutDown) {
        state.following = Some((me, state.incarnation));
        shared.set_phase(&mut state, Phase::Leading);
        shared.metrics.promotions.inc();
    }
}

/// Drives a joiner through its resync, one step at a time.
async fn resync_loop<M: StateMachine>(shared: Arc<Shared<M>>) {
    let mut backoff = RESYNC_BACKOFF;
    loop {
        tokio::time::sleep(RESYNC_POLL).await;
        let (phase, primary, following) = {
            let state = shared.lock_state();
            let me = shared.config.ordinal;
            let primary = state
                .topology
                .primary_member()
                .filter(|p| p.ordinal != me && p.live)
                .map(|p| (p.ordinal, p.peer.clone()));
            (state.phase, primary, state.following)
        };
        let result = match (phase, primary) {
            (Phase::Joining, Some((_, peer))) => fetch_snapshot(&shared, &peer).await,
            (Phase::CatchingUp, Some((ordinal, peer)))
                if following.map(|f| f.0) == Some(ordinal) =>
            {
                ask_to_join(&shared, &peer).await
            }
            _ => Ok(()),
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
    let incarnation = shared.lock_state().incarnation;
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
async fn ask_to_join<M: StateMachine>(shared: &Arc<Shared<M>>, peer: &str) -> Result<(), ApiError> {
    let request = JoinRequest {
        ordinal: shared.config.ordinal,
        incarnation: shared.lock_state().incarnation,
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
        // The primary no longer knows us as a learner: start over.
        let mut state = shared.lock_state();
        if state.phase == Phase::CatchingUp {
            state.following = None;
            shared.set_phase(&mut state, Phase::Joining);
        }
        return Err(error.into());
    }
    Ok(())
}

/// Fault injection: behave as crashed (no heartbeats, no service).
pub(super) fn shut_down<M: StateMachine>(shared: &Shared<M>) {
    let mut state = shared.lock_state();
    state.following = None;
    shared.set_phase(&mut state, Phase::ShutDown);
}

/// Fault injection: come back as a new incarnation that must resync.
pub(super) fn recover<M: StateMachine>(shared: &Shared<M>) {
    let mut state = shared.lock_state();
    if state.phase == Phase::ShutDown {
        state.incarnation = fastrand::u64(1..);
        state.following = None;
        shared.set_phase(&mut state, Phase::Joining);
    }
}
