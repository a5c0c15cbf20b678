//! The peer API of a replicated member. Every route requires the peer token.
//! A refusal answers with its reason as the error body's `code`
//! ([`super::state::Refusal`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bookstore_core::token::{PeerToken, require_token};
use tokio::sync::oneshot;

use super::messages::{
    Done, JoinRequest, MemberError, MemberStatus, ReplicateAck, ReplicateRequest, SnapshotRequest,
    SnapshotResponse, Verification,
};
use super::writer::WriterOp;
use super::{GAP_WAIT, Shared, membership, writer_gone};
use crate::store::StateMachine;
use crate::topology::{Phase, Topology};

pub(super) fn router<M: StateMachine>(shared: Arc<Shared<M>>, token: PeerToken) -> Router {
    Router::new()
        .route("/peer/replicate", post(replicate::<M>))
        .route("/peer/snapshot", post(snapshot::<M>))
        .route("/peer/join", post(join::<M>))
        .route("/peer/submit", post(submit::<M>))
        .route("/peer/topology", post(topology::<M>))
        .route("/peer/shutdown", post(shutdown::<M>))
        .route("/peer/recover", post(recover::<M>))
        .route("/peer/status", get(status::<M>))
        .route("/peer/verify", get(verify::<M>))
        .with_state(shared)
        .layer(middleware::from_fn_with_state(token, require_token))
}

/// Sends an op to the writer and waits for its answer.
async fn ask_writer<M: StateMachine, T>(
    shared: &Shared<M>,
    op: impl FnOnce(oneshot::Sender<Result<T, MemberError>>) -> WriterOp<M>,
) -> Result<T, MemberError> {
    let (reply, answer) = oneshot::channel();
    shared
        .writer
        .send(op(reply))
        .await
        .map_err(|_| writer_gone())?;
    answer.await.map_err(|_| writer_gone())?
}

async fn replicate<M: StateMachine>(
    State(shared): State<Arc<Shared<M>>>,
    Json(request): Json<ReplicateRequest<M::Command>>,
) -> Result<Json<ReplicateAck>, MemberError> {
    if let Some(first) = request.entries.first().map(|e| e.index) {
        wait_for_predecessor(&shared, first).await;
    }
    let ack = ask_writer(&shared, |reply| WriterOp::Replicate { request, reply }).await?;
    Ok(Json(ack))
}

/// Batches can overtake each other, and the first batches of a learner can
/// arrive before its snapshot is installed: wait (bounded) for the writes
/// before `first` rather than report a gap at once.
async fn wait_for_predecessor<M: StateMachine>(shared: &Shared<M>, first: u64) {
    let deadline = Instant::now() + GAP_WAIT;
    let mut progress = shared.progress.subscribe();
    loop {
        let ready = {
            let phase = shared.lock_core().phase();
            let applied = shared.applied.load(std::sync::atomic::Ordering::Acquire);
            match phase {
                Phase::Following | Phase::CatchingUp => applied + 1 >= first,
                Phase::Joining | Phase::Fenced => false,
                _ => true, // the writer rejects it with the reason
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if ready || left.is_zero() {
            return;
        }
        if tokio::time::timeout(left, progress.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn snapshot<M: StateMachine>(
    State(shared): State<Arc<Shared<M>>>,
    Json(learner): Json<SnapshotRequest>,
) -> Result<Json<SnapshotResponse<M::Snapshot>>, MemberError> {
    let response = ask_writer(&shared, |reply| WriterOp::Snapshot { learner, reply }).await?;
    Ok(Json(response))
}

async fn join<M: StateMachine>(
    State(shared): State<Arc<Shared<M>>>,
    Json(request): Json<JoinRequest>,
) -> Result<Json<Done>, MemberError> {
    ask_writer(&shared, |reply| WriterOp::Join { request, reply }).await?;
    Ok(Json(Done { ok: true }))
}

/// A write forwarded by a replica: executed here only if this is the primary
/// (never forwarded again, so a stale topology cannot make a loop).
async fn submit<M: StateMachine>(
    State(shared): State<Arc<Shared<M>>>,
    Json(command): Json<M::Command>,
) -> Result<Json<M::Output>, MemberError> {
    let output = ask_writer(&shared, |reply| WriterOp::Submit { command, reply }).await?;
    Ok(Json(output))
}

async fn topology<M: StateMachine>(
    State(shared): State<Arc<Shared<M>>>,
    Json(topology): Json<Topology>,
) -> Json<Done> {
    membership::adopt(&shared, topology);
    Json(Done { ok: true })
}

async fn shutdown<M: StateMachine>(State(shared): State<Arc<Shared<M>>>) -> Json<Done> {
    tracing::warn!(tier = %shared.config.tier, ordinal = shared.config.ordinal, "fault injection: shut down");
    membership::shut_down(&shared);
    Json(Done { ok: true })
}

async fn recover<M: StateMachine>(State(shared): State<Arc<Shared<M>>>) -> Json<Done> {
    tracing::warn!(tier = %shared.config.tier, ordinal = shared.config.ordinal, "fault injection: recover");
    membership::recover(&shared);
    Json(Done { ok: true })
}

async fn status<M: StateMachine>(State(shared): State<Arc<Shared<M>>>) -> Json<MemberStatus> {
    Json(shared.status())
}

async fn verify<M: StateMachine>(
    State(shared): State<Arc<Shared<M>>>,
) -> Result<Json<Verification>, MemberError> {
    Ok(Json(shared.verify().await?))
}
