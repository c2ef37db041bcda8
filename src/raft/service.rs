//! Incoming Raft RPCs: judge the sender's envelope (cluster and node ids,
//! before anything is decoded: a message of another cluster never reaches
//! Raft), decode, hand to the local Raft node, encode the reply. A node
//! without a cluster ID takes the leader's once it accepts its entries.

use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::identity::{Envelope, Identity};
use super::network::{decode, encode};
use super::snapshot::{decode_meta, SnapshotDir, SnapshotFile};
use super::versions::LEVEL_HEADER;
use super::{Raft, Snapshot, Vote};
use crate::domain::feature::SUPPORTED;
use crate::pb::raft::raft_server::RaftServer;
use crate::pb::raft::{RaftMessage, SnapshotChunk};
use tokio_util::sync::CancellationToken;

use crate::store::index::{self, SharedIndex};

/// How many bytes a received snapshot may take on disk, asked when a
/// transfer starts (the node's free space beyond its reserve).
pub type Room = std::sync::Arc<dyn Fn() -> u64 + Send + Sync>;

pub struct RaftService {
    raft: Raft,
    snapshots: SnapshotDir,
    room: Room,
    /// To refuse traffic from removed (retired) nodes, from memory.
    index: SharedIndex,
    /// Cancelled when the node starts shutting down: RPCs are then refused
    /// before they reach a Raft core that may have stopped.
    stopping: CancellationToken,
    /// Judges every request's envelope; takes a leader's cluster ID.
    identity: Identity,
}

impl RaftService {
    pub fn server(
        raft: Raft,
        snapshots: SnapshotDir,
        index: SharedIndex,
        stopping: CancellationToken,
        room: Room,
        identity: Identity,
    ) -> RaftServer<Self> {
        RaftServer::new(RaftService { raft, snapshots, room, index, stopping, identity })
            .max_decoding_message_size(crate::net::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::net::MAX_MESSAGE_BYTES)
    }
}

fn reply<T: serde::Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<Response<RaftMessage>, Status> {
    let result = result.map_err(|e| e.to_string());
    Ok(Response::new(RaftMessage { data: encode(&result) }))
}

impl RaftService {
    /// Before anything is decoded: a node that is shutting down takes no
    /// message; a message of another cluster, or meant for another node, is
    /// refused (`FAILED_PRECONDITION`); a removed node takes no part in the
    /// cluster (`PERMISSION_DENIED`).
    fn admit<T>(&self, request: &Request<T>, what: &str) -> Result<Envelope, Status> {
        if self.stopping.is_cancelled() {
            return Err(Status::unavailable("this node is shutting down"));
        }
        let env = self.identity.admit(request.metadata().as_ref(), request.remote_addr(), what)?;
        if index::lock(&self.index).is_retired(env.from) {
            return Err(Status::permission_denied(format!("node {} was removed from this cluster", env.from)));
        }
        Ok(env)
    }

    /// A message's leader or candidate must be its sender. A 0.1.0 peer
    /// (no envelope) names itself only in the message: it must not be a
    /// removed node.
    fn same_sender(&self, env: &Envelope, node: u64) -> Result<(), Status> {
        if env.legacy {
            if index::lock(&self.index).is_retired(node) {
                return Err(Status::permission_denied(format!("node {node} was removed from this cluster")));
            }
            return Ok(());
        }
        if env.from == node {
            return Ok(());
        }
        Err(bad_request(format!("the envelope says node {} sent it, the message says node {node}", env.from)))
    }

    /// This node accepted the entries of the leader that sent `env`: a node
    /// without a cluster ID takes the leader's.
    async fn accepted(&self, env: &Envelope) -> Result<(), Status> {
        if let Some(id) = env.cluster.filter(|_| self.identity.cluster_id().is_none()) {
            self.identity
                .adopt(id, env.from)
                .await
                .map_err(|e| Status::unavailable(format!("keeping the cluster ID: {e}")))?;
        }
        Ok(())
    }
}

/// Write a snapshot's chunks to `path` and fsync it, taking at most
/// `room` bytes: a larger snapshot is refused with `RESOURCE_EXHAUSTED`
/// before it fills the disk (which would fail this node's log writes).
async fn receive(
    first: Vec<u8>,
    mut rest: impl futures::Stream<Item = Result<Vec<u8>, Status>> + Unpin,
    path: &std::path::Path,
    room: u64,
) -> Result<(), Status> {
    let broke = |e: std::io::Error| Status::aborted(format!("snapshot transfer broke off: {e}"));
    let create = path.to_path_buf();
    let mut file = crate::blocking::run(move || std::fs::File::create(create)).await.and_then(|r| r).map_err(broke)?;
    let mut written = 0u64;
    let mut next = Some(first);
    while let Some(data) = next.take() {
        written = written.saturating_add(data.len() as u64);
        if written > room {
            return Err(Status::resource_exhausted(format!(
                "the snapshot is larger than this node's free disk space beyond --min-free-disk ({room} bytes)"
            )));
        }
        file = crate::blocking::run(move || {
            let mut file = file;
            std::io::Write::write_all(&mut file, &data).map(|()| file)
        })
        .await
        .and_then(|r| r)
        .map_err(broke)?;
        next = match rest.next().await {
            Some(chunk) => Some(chunk.map_err(|s| broke(std::io::Error::other(s)))?),
            None => None,
        };
    }
    crate::blocking::run(move || file.sync_all()).await.and_then(|r| r).map_err(broke)?;
    Ok(())
}

/// The feature level a request's sender says it speaks (0: it says none).
fn sender_level<T>(request: &Request<T>) -> u32 {
    request.metadata().get(LEVEL_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl RaftService {
    /// Entries from a member of this cluster that this binary cannot
    /// decode. From a sender of a higher feature level than this binary
    /// speaks, they are entries of a level this binary does not know (the
    /// cluster's level was raised past it, e.g. after a rollback): this
    /// node must not go on (it would apply part of the log, or skip it),
    /// so it stops, with its own exit code. Anything else is a bad request.
    fn undecodable(&self, env: &Envelope, level: u32, e: impl std::fmt::Display) -> Status {
        if level > SUPPORTED {
            let why = format!(
                "node {} (feature level {level}) sent log entries this binary ({}, feature level {SUPPORTED}) cannot \
                 decode: {e}. This node stops rather than skip them; start it on a binary of feature level {level} \
                 or later (README, \"Upgrading\")",
                env.from,
                super::versions::VERSION
            );
            self.identity.versions().raise_too_new(why.clone());
            return Status::failed_precondition(why);
        }
        bad_request(e)
    }
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed raft request: {e}"))
}

#[tonic::async_trait]
impl crate::pb::raft::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let env = self.admit(&request, "append")?;
        let level = sender_level(&request);
        let req: openraft::raft::AppendEntriesRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(|e| self.undecodable(&env, level, e))?;
        self.same_sender(&env, req.vote.leader_id.node_id)?;
        let result = self.raft.append_entries(req).await;
        if matches!(&result, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.accepted(&env).await?;
        }
        reply(result)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let env = self.admit(&request, "vote")?;
        let req: openraft::raft::VoteRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.same_sender(&env, req.vote.leader_id.node_id)?;
        reply(self.raft.vote(req).await)
    }

    async fn pre_vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let env = self.admit(&request, "pre-vote")?;
        let req: openraft::raft::VoteRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.same_sender(&env, req.vote.leader_id.node_id)?;
        reply(self.raft.pre_vote(req).await)
    }

    async fn transfer_leader(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let env = self.admit(&request, "leader transfer")?;
        let req: openraft::raft::TransferLeaderRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.same_sender(&env, req.from_leader().leader_id.node_id)?;
        reply(self.raft.handle_transfer_leader(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let env = self.admit(&request, "snapshot")?;
        let mut chunks = request.into_inner();
        let first = match chunks.next().await {
            Some(chunk) => chunk?,
            None => return Err(Status::invalid_argument("empty snapshot stream")),
        };
        let (vote, meta_bytes): (Vote, Vec<u8>) = decode(&first.header).map_err(bad_request)?;
        self.same_sender(&env, vote.leader_id.node_id)?;
        let meta = decode_meta(&meta_bytes).map_err(bad_request)?;
        let path = self.snapshots.temp_path();
        let chunks = chunks.map(|c| c.map(|c| c.data));
        if let Err(status) = receive(first.data, chunks, &path, (self.room)()).await {
            let gone = path.clone();
            let _ = crate::blocking::run(move || std::fs::remove_file(gone)).await;
            return Err(status);
        }
        // A file that does not verify is refused here: handed to Raft, its
        // install would fail inside the state machine, and a storage error
        // there stops this node's Raft core for good.
        let file = path.clone();
        let verified = crate::blocking::run(move || super::snapshot::verify(&file)).await;
        if let Err(e) = verified.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            let gone = path.clone();
            let _ = crate::blocking::run(move || std::fs::remove_file(gone)).await;
            return Err(bad_request(format!("snapshot file: {e}")));
        }
        let snapshot = Snapshot { meta, snapshot: SnapshotFile { path } };
        let sent = vote;
        let result = self.raft.install_full_snapshot(vote, snapshot).await;
        if matches!(&result, Ok(r) if r.vote <= sent) {
            self.accepted(&env).await?;
        }
        reply(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize, size: usize) -> impl futures::Stream<Item = Result<Vec<u8>, Status>> + Unpin {
        futures::stream::iter((0..n).map(move |_| Ok(vec![7u8; size])))
    }

    #[tokio::test]
    async fn a_snapshot_is_received_within_the_room_and_refused_beyond_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        receive(vec![1; 10], chunks(3, 10), &path, 40).await.expect("fits exactly");
        assert_eq!(std::fs::read(&path).unwrap().len(), 40);
        let e = receive(vec![1; 10], chunks(3, 10), &path, 39).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        let e = receive(vec![1; 10], futures::stream::iter(vec![Err(Status::cancelled("gone"))]), &path, 99)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
    }
}
