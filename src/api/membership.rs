//! Membership changes, leadership transfer and backups: the leader-only
//! parts of the `Cluster` service.
//!
//! Safety rules (see DESIGN.md, "Membership"):
//! - one change at a time: a per-node admin lock, and openraft refuses a
//!   change while another is uncommitted (`FAILED_PRECONDITION`);
//! - a new node must answer at its address and report the id it is added
//!   under; a removed id is retired and refused forever;
//! - never down to zero voters.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tonic::Request;

use super::ApiError;
use crate::domain::{Command, CommandResponse, Operation};
use crate::node::NodeContext;
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::raft::{ClientWriteError, Node, RaftError};

/// How long an address gets to answer before `AddLearner` gives up on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on one membership change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(15);

fn membership_reply(ctx: &NodeContext) -> pb::MembershipResponse {
    let m = ctx.raft.metrics().borrow_watched().clone();
    let membership = m.membership_config.membership();
    pb::MembershipResponse {
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        leader_id: m.current_leader.unwrap_or(0),
    }
}

fn change_error(e: RaftError<ClientWriteError>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ApiError::FailedPrecondition(format!(
            "membership change refused: {c} (one change at a time; wait for the previous one to finish)"
        )),
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ApiError::Unavailable {
            message: "leadership moved during the change; retry".into(),
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
            retry_after_ms: 200,
        },
        other => ApiError::unavailable(format!("membership change failed: {other}")),
    }
}

async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, RaftError<ClientWriteError>>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(CHANGE_TIMEOUT, f).await {
        Ok(r) => r.map_err(change_error),
        Err(_) => Err(ApiError::Timeout(format!(
            "{what} did not commit within {CHANGE_TIMEOUT:?}; check `drover cluster status`"
        ))),
    }
}

/// Check that a node answers at `addr` and is node `id`.
async fn probe(ctx: &NodeContext, id: u64, addr: &str) -> Result<(), ApiError> {
    let channel = crate::net::endpoint(addr)
        .map_err(|e| ApiError::InvalidArgument(format!("address {addr:?} is not HOST:PORT: {e}")))?
        .connect_timeout(PROBE_TIMEOUT);
    let status = tokio::time::timeout(PROBE_TIMEOUT, async {
        let channel = channel.connect().await.map_err(|e| e.to_string())?;
        let mut req = Request::new(pb::NodeStatusRequest {});
        req.set_timeout(PROBE_TIMEOUT);
        ClusterClient::new(channel).node_status(req).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
    })
    .await
    .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))
    .and_then(|r| r)
    .map_err(|e| {
        ApiError::FailedPrecondition(format!(
            "node {id} does not answer at {addr} ({e}): start it first with `drover server --id {id} --listen {addr} --data-dir DIR`"
        ))
    })?;
    if status.id != id {
        return Err(ApiError::FailedPrecondition(format!("the node at {addr} is node {}, not node {id}", status.id)));
    }
    let _ = ctx;
    Ok(())
}

pub async fn add_learner(ctx: &NodeContext, id: u64, addr: String) -> Result<pb::MembershipResponse, ApiError> {
    if id == 0 {
        return Err(ApiError::InvalidArgument("node ids are positive integers".into()));
    }
    let _guard = ctx.admin.lock().await;
    if ctx.store.is_retired(id)? {
        return Err(ApiError::FailedPrecondition(format!(
            "node id {id} was removed from this cluster and cannot be reused: give the new node a new id"
        )));
    }
    let current = ctx.raft.metrics().borrow_watched().membership_config.membership().get_node(&id).cloned();
    match current {
        Some(n) if n.addr == addr => return Ok(membership_reply(ctx)),
        Some(n) => {
            return Err(ApiError::FailedPrecondition(format!(
                "node {id} is already a member at {}; remove it first, or use a new id",
                n.addr
            )))
        }
        None => {}
    }
    probe(ctx, id, &addr).await?;
    bounded("adding the learner", ctx.raft.add_learner(id, Node { addr }, false)).await?;
    Ok(membership_reply(ctx))
}

pub async fn promote(ctx: &NodeContext, id: u64) -> Result<pb::MembershipResponse, ApiError> {
    let _guard = ctx.admin.lock().await;
    let m = ctx.raft.metrics().borrow_watched().membership_config.membership().clone();
    if m.voter_ids().any(|v| v == id) {
        return Ok(membership_reply(ctx));
    }
    if !m.learner_ids().any(|l| l == id) {
        return Err(ApiError::NotFound(format!("node {id} is not a learner of this cluster: add it first")));
    }
    let change: openraft::ChangeMembers<u64, Node> = openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id]));
    bounded("promoting the learner", ctx.raft.change_membership(change, true)).await?;
    Ok(membership_reply(ctx))
}

pub async fn remove(ctx: &NodeContext, id: u64) -> Result<pb::MembershipResponse, ApiError> {
    let _guard = ctx.admin.lock().await;
    let m = ctx.raft.metrics().borrow_watched().membership_config.membership().clone();
    let voters: BTreeSet<u64> = m.voter_ids().collect();
    let is_voter = voters.contains(&id);
    if !is_voter && !m.learner_ids().any(|l| l == id) {
        return Err(ApiError::NotFound(format!("node {id} is not a member of this cluster")));
    }
    if is_voter && voters.len() == 1 {
        return Err(ApiError::FailedPrecondition(format!(
            "node {id} is the last voter: removing it would leave no quorum; add another voter first"
        )));
    }
    // Retire the id first: from now on it is refused, whatever happens next.
    let cmd = Command { stamped_at_ms: ctx.clock.stamp(), operation: Operation::RetireNode { node_id: id } };
    match super::propose(ctx, cmd).await? {
        CommandResponse::None => {}
        other => return Err(ApiError::internal(format!("unexpected reply {other}"))),
    }
    let change: openraft::ChangeMembers<u64, Node> = if is_voter {
        openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    // retain = false: a removed voter does not linger as a learner.
    bounded("removing the node", ctx.raft.change_membership(change, false)).await?;
    Ok(membership_reply(ctx))
}

pub async fn transfer_leader(ctx: &NodeContext, to: u64) -> Result<pb::MembershipResponse, ApiError> {
    let m = ctx.raft.metrics().borrow_watched().clone();
    if !m.membership_config.membership().voter_ids().any(|v| v == to) {
        return Err(ApiError::NotFound(format!("node {to} is not a voter of this cluster")));
    }
    if m.current_leader == Some(to) {
        return Ok(membership_reply(ctx));
    }
    ctx.raft.trigger().transfer_leader(to).await.map_err(|e| ApiError::unavailable(e.to_string()))?;
    let mut metrics = ctx.raft.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if metrics.borrow_watched().current_leader == Some(to) {
            return Ok(membership_reply(ctx));
        }
        if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
            return Err(ApiError::Timeout(format!(
                "node {to} did not take over within 10s; see `drover cluster status`"
            )));
        }
    }
}

/// Stream a consistent copy of this node's state machine: a snapshot file
/// built from one RocksDB point-in-time view, in 1 MiB chunks.
pub async fn backup(
    ctx: &NodeContext,
) -> Result<(u64, tokio::sync::mpsc::Receiver<Result<pb::BackupChunk, tonic::Status>>), ApiError> {
    let db = ctx.db.clone();
    let dir = ctx.config.data_dir.join("snapshots");
    let path = dir.join(format!("backup-{:016x}.tmp", rand::random::<u64>()));
    let build_path = path.clone();
    let meta = tokio::task::spawn_blocking(move || crate::raft::snapshot::build(&db, &build_path))
        .await
        .map_err(ApiError::internal)??;
    let applied = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let result = async {
            let mut file = tokio::fs::File::open(&path).await?;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                let chunk = pb::BackupChunk { data: buf, applied_index: if first { applied } else { 0 } };
                first = false;
                if tx.send(Ok(chunk)).await.is_err() {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(tonic::Status::internal(format!("reading the backup: {e}")))).await;
        }
        let _ = tokio::fs::remove_file(&path).await;
    });
    Ok((applied, rx))
}
