//! Public gRPC services (`proto/drover.proto`), served by every node.
//!
//! - [`scheduler`]: `Schedule`, `ScheduleBatch`, `GetTask`.
//! - [`cluster`]: `Status`, `NodeStatus`.
//! - [`validate`]: request validation at the edge.
//! - [`error`]: [`ApiError`] and its single conversion into `tonic::Status`.
//!
//! Writes and linearizable reads need the leader. [`on_leader`] runs them
//! locally on the leader, or forwards the original request to the leader
//! over the node's long-lived channel; the client sees no difference.

pub mod cluster;
pub mod error;
pub mod membership;
pub mod scheduler;
pub mod validate;
pub mod worker;

use std::future::Future;
use std::time::Duration;

pub use error::ApiError;
use tonic::transport::Channel;

use crate::domain::{Command, CommandResponse};
use crate::node::{NodeContext, Route};
use crate::pb;
use crate::raft::{ClientWriteError, RaftError};

/// Metadata key set on forwarded requests: a forwarded request is never
/// forwarded again (no loops); the receiver answers `UNAVAILABLE` with a
/// leader hint instead, and the forwarding node retries.
pub const FORWARDED: &str = "x-drover-forwarded";

/// Longest a forwarded request waits for the leader. Healthy leaders answer
/// in milliseconds; one that does not answer is likely cut off.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

pub fn scheduler_server(ctx: NodeContext) -> pb::scheduler_server::SchedulerServer<scheduler::SchedulerService> {
    pb::scheduler_server::SchedulerServer::new(scheduler::SchedulerService::new(ctx))
        .max_decoding_message_size(crate::net::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::net::MAX_MESSAGE_BYTES)
}

pub fn worker_server(ctx: NodeContext) -> pb::worker_server::WorkerServer<worker::WorkerService> {
    pb::worker_server::WorkerServer::new(worker::WorkerService::new(ctx))
        .max_decoding_message_size(crate::net::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::net::MAX_MESSAGE_BYTES)
}

pub fn cluster_server(ctx: NodeContext) -> pb::cluster_server::ClusterServer<cluster::ClusterService> {
    pb::cluster_server::ClusterServer::new(cluster::ClusterService::new(ctx))
}

pub(crate) fn is_forwarded<T>(req: &tonic::Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

pub(crate) fn mark_forwarded<T>(mut req: tonic::Request<T>, from: u64) -> tonic::Request<T> {
    if let Ok(v) = from.to_string().parse() {
        req.metadata_mut().insert(FORWARDED, v);
    }
    req
}

/// Run `local` if this node leads, else `remote` against the leader's
/// channel. Retries across leader changes until `leader_wait` runs out.
pub(crate) async fn on_leader<T, L, LF, R, RF>(
    ctx: &NodeContext,
    forwarded: bool,
    local: L,
    remote: R,
) -> Result<T, tonic::Status>
where
    L: Fn() -> LF,
    LF: Future<Output = Result<T, ApiError>>,
    R: Fn(Channel) -> RF,
    RF: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = tokio::time::Instant::now() + ctx.config.leader_wait;
    loop {
        let retry = match ctx.route().await? {
            Route::Local => match local().await {
                Err(ApiError::Unavailable { leader: Some(_), .. })
                    if !forwarded && tokio::time::Instant::now() < deadline =>
                {
                    true
                }
                other => return other.map_err(Into::into),
            },
            Route::Remote { id, addr } if forwarded => {
                return Err(ApiError::Unavailable {
                    message: format!("node {} is not the leader; node {id} at {addr} is", ctx.id),
                    leader: Some((id, addr)),
                    retry_after_ms: 0,
                }
                .into());
            }
            Route::Remote { id, addr } => {
                let channel =
                    ctx.pool.get(&addr).map_err(|e| ApiError::internal(format!("leader address {addr}: {e}")))?;
                let answer = match tokio::time::timeout(FORWARD_TIMEOUT, remote(channel)).await {
                    Ok(answer) => answer,
                    // The request may have reached the leader: the outcome is unknown.
                    Err(_) => {
                        return Err(ApiError::Timeout(format!(
                            "leader node {id} at {addr} did not answer within {FORWARD_TIMEOUT:?}; \
                             the request may or may not have been applied: retry (writes: with the same idempotency key)"
                        ))
                        .into())
                    }
                };
                match answer {
                    Ok(v) => return Ok(v),
                    Err(s) => match crate::net::classify(&s) {
                        // Nothing was applied: the leader moved, is electing,
                        // or could not be connected to. Find it again.
                        crate::net::Failure::NotApplied if tokio::time::Instant::now() < deadline => true,
                        crate::net::Failure::NotApplied if std::error::Error::source(&s).is_none() => return Err(s),
                        crate::net::Failure::NotApplied => {
                            return Err(ApiError::Unavailable {
                                message: format!(
                                    "leader node {id} at {addr} is unreachable ({}); nothing was written; retry shortly",
                                    s.message()
                                ),
                                leader: None,
                                retry_after_ms: 500,
                            }
                            .into());
                        }
                        // The connection broke with the request in flight:
                        // the leader may have applied it.
                        crate::net::Failure::OutcomeUnknown if std::error::Error::source(&s).is_some() => {
                            return Err(ApiError::OutcomeUnknown(format!(
                                "the connection to leader node {id} at {addr} broke while the request was in flight ({}); \
                                 it may or may not have been applied: retry (writes: with the same idempotency key)",
                                s.message()
                            ))
                            .into());
                        }
                        _ => return Err(s),
                    },
                }
            }
        };
        if retry {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// If this node leads but no quorum has acknowledged it for longer than an
/// election timeout, how long: it is probably cut off, and a new leader may
/// already exist on the other side. Writes fail fast instead of hanging.
pub(crate) fn quorum_silence(ctx: &NodeContext) -> Option<Duration> {
    use openraft::async_runtime::WatchReceiver;
    use openraft::Instant as _;
    // Hot path (every proposal): read the metrics in place, no clone.
    let metrics = ctx.raft.metrics();
    let m = metrics.borrow_watched();
    if m.current_leader != Some(ctx.id) {
        return None;
    }
    // A leader that is the only voter is its own quorum.
    if m.membership_config.membership().voter_ids().all(|v| v == ctx.id) {
        return None;
    }
    let limit = Duration::from_millis(ctx.config.raft.election_timeout_ms * 2);
    let age = m.last_quorum_acked.as_ref().map(|t| t.elapsed())?;
    (age > limit).then_some(age)
}

/// Propose a command on this node (which believes it leads) and wait for
/// the state machine's reply.
pub(crate) async fn propose(ctx: &NodeContext, cmd: Command) -> Result<CommandResponse, ApiError> {
    if ctx.stopping.is_cancelled() {
        return Err(ApiError::Unavailable {
            message: "this node is shutting down; nothing was written".into(),
            leader: None,
            retry_after_ms: 200,
        });
    }
    if ctx.restoring.load(std::sync::atomic::Ordering::Acquire)
        && !matches!(cmd.operation, crate::domain::Operation::Import { .. })
    {
        return Err(ApiError::Unavailable {
            message: "this cluster is importing a backup; writes resume when it is done".into(),
            leader: None,
            retry_after_ms: 1000,
        });
    }
    if let Some(age) = quorum_silence(ctx) {
        return Err(ApiError::Unavailable {
            message: format!(
                "this node has not heard from a quorum for {age:?} (partitioned, or peers down); nothing was written"
            ),
            leader: None,
            retry_after_ms: 200,
        });
    }
    let write = ctx.raft.client_write(cmd);
    tokio::pin!(write);
    let deadline = tokio::time::Instant::now() + ctx.config.propose_timeout;
    let mut check = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        tokio::select! {
            r = &mut write => break r,
            _ = check.tick() => {
                let lost = quorum_silence(ctx);
                if lost.is_some() || tokio::time::Instant::now() >= deadline {
                    let why = match lost {
                        Some(age) => format!("this node lost contact with a quorum {age:?} ago"),
                        None => format!("not committed within {:?}", ctx.config.propose_timeout),
                    };
                    return Err(ApiError::Timeout(format!(
                        "{why}; the write may or may not commit: retry with the same idempotency key"
                    )));
                }
            }
        }
    };
    match result {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            let message = match f.leader_id {
                Some(id) if id != ctx.id => format!("leadership moved to node {id} before the write was proposed; nothing was written"),
                _ => "this node cannot reach a quorum of the cluster (partitioned, or peers down); nothing was written".into(),
            };
            Err(ApiError::Unavailable {
                message,
                leader: f.leader_id.filter(|id| *id != ctx.id).zip(f.leader_node.map(|n| n.addr)),
                retry_after_ms: 200,
            })
        }
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(ApiError::Timeout(
            "leadership changed while the write was in flight; it may or may not have committed: retry with the same idempotency key".into(),
        )),
        Err(RaftError::APIError(e)) => Err(ApiError::internal(e)),
        Err(RaftError::Fatal(e)) => Err(ApiError::unavailable(format!("this node's Raft has stopped: {e}"))),
    }
}
