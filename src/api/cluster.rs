//! The `Cluster` service: what operators see of Raft.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::forward::{is_forwarded, leader_rpc, Forwarder};
use super::membership::{self, Membership};
use super::ApiError;
use crate::consensus::clock::ProposerClock;
use crate::consensus::disk::DiskSpace;
use crate::consensus::timekeeper;
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::store::TaskStore;

/// How long the leader waits for each member's own status.
const MEMBER_PROBE_TIMEOUT: Duration = Duration::from_millis(800);

pub struct ClusterService {
    pub forward: Forwarder,
    pub membership: Membership,
    pub store: TaskStore,
    pub clock: ProposerClock,
    /// The node's data dir (status shows its size; backups are built in it).
    pub data_dir: PathBuf,
    /// Free disk space, reported in status and to peers' clock samples.
    pub disk: DiskSpace,
    /// Whether the node serves TLS, and whether it serves plaintext where
    /// other hosts can reach it (status warns).
    pub tls: bool,
    pub insecure_exposed: bool,
}

impl ClusterService {
    async fn node_status(&self) -> Result<pb::NodeStatusResponse, ApiError> {
        // Files and /proc: read on a blocking thread, off the runtime.
        let (store, dir) = (self.store.clone(), self.data_dir.clone());
        let files = crate::blocking::run(move || {
            Ok::<_, ApiError>(FileStats {
                task_count: store.task_count()?,
                cpu_seconds: process::cpu_seconds(),
                rss_bytes: process::rss_bytes(),
                disk_bytes: dir_size(&dir),
                snapshot_at_unix_ms: newest_snapshot_ms(&dir.join("snapshots")),
            })
        })
        .await
        .map_err(ApiError::internal)??;
        let v = self.forward.consensus.view();
        let reference = self.clock.reference();
        let disk = self.disk.local();
        Ok(pb::NodeStatusResponse {
            id: v.id,
            role: v.role.to_string(),
            term: v.term,
            leader_id: v.leader.unwrap_or(0),
            has_leader: v.leader.is_some(),
            last_log_index: v.last_log_index,
            committed_index: v.committed_index,
            applied_index: v.applied_index,
            snapshot_index: v.snapshot_index,
            purged_index: v.purged_index,
            task_count: files.task_count,
            cpu_seconds: files.cpu_seconds,
            rss_bytes: files.rss_bytes,
            disk_bytes: files.disk_bytes,
            snapshot_at_unix_ms: files.snapshot_at_unix_ms,
            clock_offset_ms: reference.map(|r| r.own_offset_ms()),
            clock_skewed: reference.is_some_and(|r| timekeeper::is_skewed(&r, self.clock.max_offset())),
            replicated_now_unix_ms: self.clock.now_ms(),
            max_clock_offset_ms: self.clock.max_offset().as_millis() as u64,
            disk_free_bytes: disk.free_bytes,
            disk_total_bytes: disk.total_bytes,
            disk_alarm: disk.alarm,
            min_free_disk_bytes: self.disk.threshold().required(disk.total_bytes),
            tls: self.tls,
            insecure_exposed: self.insecure_exposed,
            cluster_id: self.cluster_id(),
            refused_messages: self.forward.consensus.identity().refused_counts().into_iter().collect(),
            version: crate::raft::versions::VERSION.to_string(),
            feature_level: crate::domain::feature::SUPPORTED,
            active_feature_level: self.forward.consensus.identity().versions().active(),
        })
    }

    /// This node's cluster ID as text; empty while it has none.
    fn cluster_id(&self) -> String {
        self.forward.consensus.identity().cluster_id().map(|id| id.to_string()).unwrap_or_default()
    }

    /// Leader only: membership, replication progress and each member's own
    /// view.
    async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, ApiError> {
        let v = self.forward.consensus.view();
        if v.leader != Some(v.id) {
            return Err(ApiError::Unavailable {
                message: "leadership moved".into(),
                leader: None,
                retry_after_ms: 100,
            });
        }
        let probes = v.addrs.iter().map(|(id, addr)| {
            let (id, addr) = (*id, addr.clone());
            async move {
                if id == v.id {
                    return (id, Ok(None));
                }
                (id, self.probe(&addr).await.map(Some))
            }
        });
        let results = futures::future::join_all(probes).await;
        let mut members = Vec::new();
        let ours = self.cluster_id();
        for (id, probe) in results {
            let (reachable, status, error) = match probe {
                Ok(None) => (true, Some(self.node_status().await?), String::new()),
                Ok(Some(s)) => {
                    let error = foreign(id, v.addrs.get(&id), &s.cluster_id, &ours)
                        .or_else(|| self.forward.consensus.identity().peer_error(id))
                        .unwrap_or_default();
                    (true, Some(s), error)
                }
                Err(e) => (false, None, self.forward.consensus.identity().peer_error(id).unwrap_or(e)),
            };
            let (version, feature_level) = super::upgrade::member_version(&self.forward.consensus, id, status.as_ref());
            members.push(pb::MemberStatus {
                id,
                addr: v.addrs.get(&id).cloned().unwrap_or_default(),
                voter: v.voters.contains(&id),
                reachable,
                status,
                lag: v.matched.get(&id).copied().flatten().map(|x| v.last_log_index.saturating_sub(x)),
                error,
                last_contact_ms: v.last_contact_ms.get(&id).copied().flatten(),
                version,
                feature_level,
            });
        }
        Ok(pb::ClusterStatusResponse {
            leader_id: v.id,
            term: v.term,
            last_log_index: v.last_log_index,
            committed_index: v.committed_index,
            members,
            quorum_ack_ms: v.quorum_ack_ms,
            cluster_id: ours,
            active_feature_level: self.forward.consensus.identity().versions().active(),
        })
    }

    /// One member's own status.
    async fn probe(&self, addr: &str) -> Result<pb::NodeStatusResponse, String> {
        let channel = self.forward.pool.get(addr).map_err(|e| e.to_string())?;
        let mut req = Request::new(pb::NodeStatusRequest {});
        req.set_timeout(MEMBER_PROBE_TIMEOUT);
        match tokio::time::timeout(MEMBER_PROBE_TIMEOUT, ClusterClient::new(channel).node_status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s.message().to_string()),
            Err(_) => Err(format!("no answer within {MEMBER_PROBE_TIMEOUT:?}")),
        }
    }
}

/// A member whose own status names another cluster ID than ours: why.
fn foreign(id: u64, addr: Option<&String>, theirs: &str, ours: &str) -> Option<String> {
    if theirs.is_empty() || ours.is_empty() || theirs == ours {
        return None;
    }
    let addr = addr.map(String::as_str).unwrap_or("?");
    Some(format!(
        "node {id} at {addr} belongs to another cluster: it holds cluster ID {theirs}, this cluster's is {ours} (README, \"Cluster identity\")"
    ))
}

/// This process's resources, from /proc (Linux; zero elsewhere).
mod process {
    /// CPU time (user + system) of this process in seconds.
    pub fn cpu_seconds() -> f64 {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
        // Fields after the command name (which may contain spaces) start after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after ')'.
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// Resident set size of this process in bytes.
    pub fn rss_bytes() -> u64 {
        let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        let page =
            nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096).max(1) as u64;
        pages * page
    }
}

/// What a node's status reads from files and /proc.
struct FileStats {
    task_count: u64,
    cpu_seconds: f64,
    rss_bytes: u64,
    disk_bytes: u64,
    snapshot_at_unix_ms: u64,
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

type BackupStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

impl ClusterService {
    /// The tonic service, with drover's message size limits.
    pub fn into_server(self: std::sync::Arc<Self>) -> pb::cluster_server::ClusterServer<Self> {
        pb::cluster_server::ClusterServer::from_arc(self)
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    type BackupStream = BackupStream;

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(membership self, request, ClusterClient::new, add_learner, |req| self
            .membership
            .add_learner(req.id, req.addr.clone())
            .await)
    }

    async fn promote_voter(
        &self,
        request: Request<pb::PromoteVoterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(membership self, request, ClusterClient::new, promote_voter, |req| self.membership.promote(req.id).await)
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(membership self, request, ClusterClient::new, remove_node, |req| self.membership.remove(req.id).await)
    }

    async fn replace_node(
        &self,
        request: Request<pb::ReplaceNodeRequest>,
    ) -> Result<Response<pb::ReplaceNodeResponse>, Status> {
        leader_rpc!(membership self, request, ClusterClient::new, replace_node, |req| self.membership.replace(req.id).await)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        leader_rpc!(membership self, request, ClusterClient::new, transfer_leader, |req| self
            .membership
            .transfer_leader(req.to)
            .await)
    }

    async fn backup(&self, _request: Request<pb::BackupRequest>) -> Result<Response<Self::BackupStream>, Status> {
        let (_, rx) = membership::backup(&self.store, &self.data_dir.join("snapshots"), &self.membership.tasks).await?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn digest(&self, _request: Request<pb::DigestRequest>) -> Result<Response<pb::DigestResponse>, Status> {
        let store = self.store.clone();
        let (applied_index, digest) = crate::blocking::run(move || crate::raft::snapshot::digest(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::from(ApiError::from(e)))?;
        Ok(Response::new(pb::DigestResponse {
            applied_index,
            digest: format!("{digest:016x}"),
            task_count: self.store.task_count().map_err(ApiError::from)?,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let identity = super::access::Identity::of(&request);
        let status = self
            .forward
            .on_leader(
                forwarded,
                self.forward.consensus.timing().forward_timeout,
                || self.cluster_status(),
                |ch, forwarding| {
                    let identity = identity.clone();
                    async move {
                        Ok(ClusterClient::new(ch)
                            .status(identity.attach(forwarding.mark(Request::new(pb::ClusterStatusRequest {}))))
                            .await?
                            .into_inner())
                    }
                },
            )
            .await?;
        Ok(Response::new(status))
    }

    async fn node_status(
        &self,
        _request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        Ok(Response::new(self.node_status().await?))
    }

    async fn clock(&self, request: Request<pb::ClockRequest>) -> Result<Response<pb::ClockResponse>, Status> {
        let identity = self.forward.consensus.identity();
        identity.admit(request.metadata().as_ref(), request.remote_addr(), "clock probe")?;
        let disk = self.disk.local();
        Ok(Response::new(pb::ClockResponse {
            node_id: self.forward.consensus.id(),
            unix_ms: self.clock.wall().now_ms(),
            disk_free_bytes: disk.free_bytes,
            disk_total_bytes: disk.total_bytes,
            disk_alarm: disk.alarm,
            feature_level: crate::domain::feature::SUPPORTED,
            version: crate::raft::versions::VERSION.to_string(),
        }))
    }

    async fn finalize_upgrade(
        &self,
        request: Request<pb::FinalizeUpgradeRequest>,
    ) -> Result<Response<pb::FinalizeUpgradeResponse>, Status> {
        leader_rpc!(self, request, ClusterClient::new, finalize_upgrade, |req| super::upgrade::finalize(
            &self.forward.consensus,
            &self.forward.pool,
            req.level
        )
        .await)
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let consensus = &self.forward.consensus;
        let env = consensus.identity().admit(request.metadata().as_ref(), request.remote_addr(), "join")?;
        membership::join(consensus, &env).await?;
        Ok(Response::new(pb::JoinResponse { node_id: consensus.id(), cluster_id: self.cluster_id() }))
    }
}
