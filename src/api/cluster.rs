//! The `Cluster` service: what operators see of Raft.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;

use tonic::{Request, Response, Status};

use super::{is_forwarded, mark_forwarded, membership, on_leader, ApiError};
use crate::node::NodeContext;
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::raft::{index_of, role_name};

/// How long the leader waits for each member's own status.
const MEMBER_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

pub struct ClusterService {
    ctx: NodeContext,
}

impl ClusterService {
    pub fn new(ctx: NodeContext) -> Self {
        ClusterService { ctx }
    }

    fn node_status(&self) -> Result<pb::NodeStatusResponse, ApiError> {
        let m = self.ctx.raft.metrics().borrow_watched().clone();
        let is_voter = m.membership_config.membership().voter_ids().any(|id| id == self.ctx.id);
        let reference = self.ctx.clock.reference();
        Ok(pb::NodeStatusResponse {
            id: self.ctx.id,
            role: role_name(m.state, is_voter).to_string(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            has_leader: m.current_leader.is_some(),
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: index_of(m.local_committed.as_ref()),
            applied_index: index_of(m.last_applied.as_ref()),
            snapshot_index: index_of(m.snapshot.as_ref()),
            purged_index: index_of(m.purged.as_ref()),
            task_count: self.ctx.store.task_count()?,
            cpu_seconds: crate::node::process_cpu_seconds(),
            rss_bytes: crate::node::process_rss_bytes(),
            disk_bytes: dir_size(&self.ctx.config.data_dir),
            snapshot_at_unix_ms: newest_snapshot_ms(&self.ctx.config.data_dir.join("snapshots")),
            clock_offset_ms: reference.map(|r| r.own_offset_ms()),
            clock_skewed: reference.is_some_and(|r| crate::timekeeper::is_skewed(&r, self.ctx.clock.max_offset())),
            replicated_now_unix_ms: self.ctx.clock.now_ms(),
            max_clock_offset_ms: self.ctx.clock.max_offset().as_millis() as u64,
        })
    }

    /// Leader only: membership, replication progress and each member's own
    /// view.
    async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, ApiError> {
        let m = self.ctx.raft.metrics().borrow_watched().clone();
        if m.current_leader != Some(self.ctx.id) {
            return Err(ApiError::Unavailable {
                message: "leadership moved".into(),
                leader: None,
                retry_after_ms: 100,
            });
        }
        let membership = m.membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let mut members = Vec::new();
        let mut probes = Vec::new();
        for (id, node) in membership.nodes() {
            let (id, addr) = (*id, node.addr.clone());
            let ctx = self.ctx.clone();
            probes.push(async move {
                if id == ctx.id {
                    return (id, Ok(None));
                }
                let channel = match ctx.pool.get(&addr) {
                    Ok(c) => c,
                    Err(e) => return (id, Err(e.to_string())),
                };
                let mut req = Request::new(pb::NodeStatusRequest {});
                req.set_timeout(MEMBER_PROBE_TIMEOUT);
                let mut client = ClusterClient::new(channel);
                let call = client.node_status(req);
                match tokio::time::timeout(MEMBER_PROBE_TIMEOUT, call).await {
                    Ok(Ok(r)) => (id, Ok(Some(r.into_inner()))),
                    Ok(Err(s)) => (id, Err(s.message().to_string())),
                    Err(_) => (id, Err(format!("no answer within {MEMBER_PROBE_TIMEOUT:?}"))),
                }
            });
        }
        let results = futures::future::join_all(probes).await;
        for ((id, node), (_, probe)) in membership.nodes().zip(results) {
            let matched = if *id == self.ctx.id {
                Some(last)
            } else {
                m.replication.as_ref().and_then(|r| r.get(id)).map(|l| index_of(l.as_ref()))
            };
            let last_contact_ms = if *id == self.ctx.id {
                Some(0)
            } else {
                m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(id))
                    .and_then(|t| t.as_ref())
                    .map(|t| t.elapsed().as_millis() as u64)
            };
            let (reachable, status, error) = match probe {
                Ok(None) => (true, Some(self.node_status()?), String::new()),
                Ok(Some(s)) => (true, Some(s), String::new()),
                Err(e) => (false, None, e),
            };
            members.push(pb::MemberStatus {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
                reachable,
                status,
                lag: matched.map(|x| last.saturating_sub(x)),
                error,
                last_contact_ms,
            });
        }
        Ok(pb::ClusterStatusResponse {
            leader_id: self.ctx.id,
            term: m.current_term,
            last_log_index: last,
            committed_index: index_of(m.local_committed.as_ref()),
            members,
            quorum_ack_ms: m.last_quorum_acked.as_ref().map(|t| t.elapsed().as_millis() as u64),
        })
    }
}

/// Total size of the files under `dir`, bytes.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn newest_snapshot_ms(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .max()
        .unwrap_or(0)
}

/// Forward to the leader or run locally, like the Scheduler service does.
macro_rules! leader_rpc {
    ($self:ident, $request:ident, $method:ident, |$req:ident| $local:expr) => {{
        let forwarded = is_forwarded(&$request);
        let $req = $request.into_inner();
        let from = $self.ctx.id;
        let reply =
            on_leader(
                &$self.ctx,
                forwarded,
                || async { $local },
                |ch| {
                    let r = $req.clone();
                    async move {
                        Ok(ClusterClient::new(ch).$method(mark_forwarded(Request::new(r), from)).await?.into_inner())
                    }
                },
            )
            .await?;
        Ok(Response::new(reply))
    }};
}

type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    type BackupStream = BackupStream;

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(self, request, add_learner, |req| membership::add_learner(&self.ctx, req.id, req.addr.clone())
            .await)
    }

    async fn promote_voter(
        &self,
        request: Request<pb::PromoteVoterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(self, request, promote_voter, |req| membership::promote(&self.ctx, req.id).await)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(self, request, remove_node, |req| membership::remove(&self.ctx, req.id).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(self, request, transfer_leader, |req| membership::transfer_leader(&self.ctx, req.to).await)
    }

    async fn backup(&self, _request: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let (_, rx) = membership::backup(&self.ctx).await?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn digest(&self, _request: Request<pb::DigestRequest>) -> Result<Response<pb::DigestResponse>, Status> {
        let store = self.ctx.store.clone();
        let (applied_index, digest) = tokio::task::spawn_blocking(move || store.digest())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::from(ApiError::from(e)))?;
        Ok(Response::new(pb::DigestResponse {
            applied_index,
            digest: format!("{digest:016x}"),
            task_count: self.ctx.store.task_count().map_err(ApiError::from)?,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let from = self.ctx.id;
        let status = on_leader(
            &self.ctx,
            forwarded,
            || self.cluster_status(),
            |ch| async move {
                Ok(ClusterClient::new(ch)
                    .status(mark_forwarded(Request::new(pb::ClusterStatusRequest {}), from))
                    .await?
                    .into_inner())
            },
        )
        .await?;
        Ok(Response::new(status))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        Ok(Response::new(self.node_status()?))
    }

    async fn clock(&self, _request: Request<pb::ClockRequest>) -> Result<Response<pb::ClockResponse>, Status> {
        Ok(Response::new(pb::ClockResponse { node_id: self.ctx.id, unix_ms: self.ctx.clock.wall().now_ms() }))
    }
}
