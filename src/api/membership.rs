//! Membership changes, leadership transfer and backups: the leader-only
//! parts of the `Cluster` service.
//!
//! Safety rules (see DESIGN.md, "Membership"):
//! - one change at a time: a per-node admin lock, and openraft refuses a
//!   change while another is uncommitted (`FAILED_PRECONDITION`);
//! - a new node must answer at its address and report the id it is added
//!   under; a removed id is retired and refused forever;
//! - before it is added, the new node takes the cluster's ID from the
//!   leader (while its data dir is still empty) and keeps it; a node of
//!   another cluster refuses, and is not added;
//! - never down to zero voters.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tonic::Request;

use super::ApiError;
use crate::consensus::clock::ProposerClock;
use crate::consensus::Consensus;
use crate::domain::{Command, CommandResponse, Operation};
use crate::pb;
use crate::pb::cluster_client::ClusterClient;
use crate::raft::identity::Envelope;
use crate::store::TaskStore;

/// What membership changes need.
#[derive(Clone)]
pub struct Membership {
    pub consensus: Consensus,
    pub store: TaskStore,
    pub clock: ProposerClock,
    /// Probes a new node's address secured like every peer channel.
    pub pool: crate::net::ChannelPool,
    /// Serialises membership changes made through this node. A tokio mutex:
    /// held across the change's awaits.
    pub admin: Arc<tokio::sync::Mutex<()>>,
    /// The node's tracker: backup streams run on it.
    pub tasks: tokio_util::task::TaskTracker,
}

impl Membership {
    pub(super) fn reply(&self) -> pb::MembershipResponse {
        let v = self.consensus.view();
        pb::MembershipResponse { voters: v.voters, learners: v.learners, leader_id: v.leader.unwrap_or(0) }
    }
}

/// Check that a node answers at `addr` and is node `id`.
pub(super) async fn probe(
    pool: &crate::net::ChannelPool,
    timeout: Duration,
    id: u64,
    addr: &str,
) -> Result<(), ApiError> {
    let channel = pool
        .endpoint(addr)
        .map_err(|e| ApiError::InvalidArgument(format!("address {addr:?} is not HOST:PORT: {e}")))?
        .connect_timeout(timeout);
    let dialer = pool.dialer();
    let status = tokio::time::timeout(timeout, async {
        let channel = match dialer {
            Some(dial) => dial(channel),
            None => channel.connect().await.map_err(|e| e.to_string())?,
        };
        let mut req = Request::new(pb::NodeStatusRequest {});
        req.set_timeout(timeout);
        ClusterClient::new(channel).node_status(req).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
    })
    .await
    .map_err(|_| format!("no answer within {timeout:?}"))
    .and_then(|r| r)
    .map_err(|e| {
        ApiError::FailedPrecondition(format!(
            "node {id} does not answer at {addr} ({e}): start it first with `drover server --id {id} --listen {addr} --data-dir DIR`"
        ))
    })?;
    if status.id != id {
        return Err(ApiError::FailedPrecondition(format!("the node at {addr} is node {}, not node {id}", status.id)));
    }
    Ok(())
}

/// Hand the cluster's ID to node `id` at `addr` before it is added.
async fn ask_to_join(
    pool: &crate::net::ChannelPool,
    consensus: &Consensus,
    id: u64,
    addr: &str,
) -> Result<(), ApiError> {
    let timeout = consensus.timing().probe;
    let channel = pool.get(addr).map_err(|e| ApiError::InvalidArgument(format!("address {addr:?}: {e}")))?;
    let mut req = Request::new(pb::JoinRequest {});
    req.set_timeout(timeout);
    consensus.identity().envelope(id, false).write(req.metadata_mut());
    match tokio::time::timeout(timeout, ClusterClient::new(channel).join(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => {
            consensus.identity().refused_by(id, "join", &s);
            Err(ApiError::FailedPrecondition(format!("node {id} at {addr} did not join: {}", s.message())))
        }
        Err(_) => {
            Err(ApiError::FailedPrecondition(format!("node {id} at {addr} did not answer the join within {timeout:?}")))
        }
    }
}

/// On the node being added (the `Join` RPC, its envelope admitted): take
/// the leader's cluster ID if this node has none and holds nothing yet.
pub async fn join(consensus: &Consensus, env: &Envelope) -> Result<(), ApiError> {
    let identity = consensus.identity();
    // A leader without an ID yet (in the moment after a cluster's birth):
    // this node takes it from the leader's first entries instead.
    let Some(id) = env.cluster else { return Ok(()) };
    if identity.cluster_id().is_some() {
        // The envelope was admitted: it is the same ID.
        return Ok(());
    }
    let v = consensus.view();
    if !v.voters.is_empty() || !v.learners.is_empty() || v.last_log_index > 0 {
        return Err(ApiError::FailedPrecondition(format!(
            "node {} at {} holds data but no cluster ID (voters {:?}, log up to {}): its data dir was written by \
             another cluster, or before cluster IDs; move it aside and start the node on an empty data dir",
            v.id,
            v.addrs.get(&v.id).map(String::as_str).unwrap_or("?"),
            v.voters,
            v.last_log_index
        )));
    }
    identity.adopt(id, env.from).await?;
    Ok(())
}

impl Membership {
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<pb::MembershipResponse, ApiError> {
        if id == 0 {
            return Err(ApiError::InvalidArgument("node ids are positive integers".into()));
        }
        let _guard = self.admin.lock().await;
        if self.store.is_retired(id)? {
            return Err(ApiError::FailedPrecondition(format!(
                "node id {id} was removed from this cluster and cannot be reused: give the new node a new id"
            )));
        }
        let view = self.consensus.view();
        match view.addrs.get(&id) {
            Some(a) if *a == addr => return Ok(self.reply()),
            Some(a) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {id} is already a member at {a}; remove it first, or use a new id"
                )))
            }
            None => {}
        }
        probe(&self.pool, self.consensus.timing().probe, id, &addr).await?;
        ask_to_join(&self.pool, &self.consensus, id, &addr).await?;
        self.consensus.add_learner(id, addr).await?;
        Ok(self.reply())
    }

    pub async fn promote(&self, id: u64) -> Result<pb::MembershipResponse, ApiError> {
        let _guard = self.admin.lock().await;
        let view = self.consensus.view();
        if view.voters.contains(&id) {
            return Ok(self.reply());
        }
        if !view.learners.contains(&id) {
            return Err(ApiError::NotFound(format!("node {id} is not a learner of this cluster: add it first")));
        }
        self.consensus.add_voters(BTreeSet::from([id])).await?;
        Ok(self.reply())
    }

    pub async fn remove(&self, id: u64) -> Result<pb::MembershipResponse, ApiError> {
        let _guard = self.admin.lock().await;
        let view = self.consensus.view();
        let voters: BTreeSet<u64> = view.voters.iter().copied().collect();
        let is_voter = voters.contains(&id);
        if !is_voter && !view.learners.contains(&id) {
            return Err(ApiError::NotFound(format!("node {id} is not a member of this cluster")));
        }
        if is_voter && voters.len() == 1 {
            return Err(ApiError::FailedPrecondition(format!(
                "node {id} is the last voter: removing it would leave no quorum; add another voter first"
            )));
        }
        // Retire the id first: from now on it is refused, whatever happens next.
        let cmd = Command { stamped_at_ms: self.clock.stamp(), operation: Operation::RetireNode { node_id: id } };
        match self.consensus.propose(cmd).await? {
            CommandResponse::None => {}
            other => return Err(ApiError::internal(format!("unexpected reply {other}"))),
        }
        self.consensus.remove(id, is_voter).await?;
        Ok(self.reply())
    }

    pub async fn transfer_leader(&self, to: u64) -> Result<pb::MembershipResponse, ApiError> {
        let view = self.consensus.view();
        if !view.voters.contains(&to) {
            return Err(ApiError::NotFound(format!("node {to} is not a voter of this cluster")));
        }
        if view.leader != Some(to) {
            self.consensus.transfer_leader(to, Duration::from_secs(10)).await?;
        }
        Ok(self.reply())
    }
}

/// Stream a consistent copy of this node's state machine: a snapshot file
/// built from one RocksDB point-in-time view, in 1 MiB chunks.
pub async fn backup(
    store: &TaskStore,
    snapshot_dir: &std::path::Path,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(u64, tokio::sync::mpsc::Receiver<Result<pb::BackupChunk, tonic::Status>>), ApiError> {
    let path = snapshot_dir.join(format!("backup-{:016x}.tmp", rand::random::<u64>()));
    let build_path = path.clone();
    let store = store.clone();
    let applied = crate::blocking::run(move || crate::raft::snapshot::build_backup(&store, &build_path))
        .await
        .map_err(ApiError::internal)??;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tasks.spawn(async move {
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
