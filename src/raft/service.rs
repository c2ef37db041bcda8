//! Incoming Raft RPCs: decode, hand to the local Raft node, encode the reply.

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::network::{decode, encode};
use super::snapshot::{decode_meta, SnapshotDir, SnapshotFile};
use super::{Raft, Snapshot, Vote};
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
}

impl RaftService {
    pub fn server(
        raft: Raft,
        snapshots: SnapshotDir,
        index: SharedIndex,
        stopping: CancellationToken,
        room: Room,
    ) -> RaftServer<Self> {
        RaftServer::new(RaftService { raft, snapshots, room, index, stopping })
            .max_decoding_message_size(crate::net::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::net::MAX_MESSAGE_BYTES)
    }
}

fn reply<T: serde::Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Result<Response<RaftMessage>, Status> {
    let result = result.map_err(|e| e.to_string());
    Ok(Response::new(RaftMessage { data: encode(&result) }))
}

impl RaftService {
    /// A removed node takes no part in the cluster: its votes and appends
    /// are refused.
    /// A node that is shutting down takes none either.
    fn admit(&self, from: u64) -> Result<(), Status> {
        if self.stopping.is_cancelled() {
            return Err(Status::unavailable("this node is shutting down"));
        }
        if index::lock(&self.index).is_retired(from) {
            return Err(Status::permission_denied(format!("node {from} was removed from this cluster")));
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
    let mut file = tokio::fs::File::create(path).await.map_err(broke)?;
    let mut written = 0u64;
    let mut next = Some(first);
    while let Some(data) = next.take() {
        written = written.saturating_add(data.len() as u64);
        if written > room {
            return Err(Status::resource_exhausted(format!(
                "the snapshot is larger than this node's free disk space beyond --min-free-disk ({room} bytes)"
            )));
        }
        file.write_all(&data).await.map_err(broke)?;
        next = match rest.next().await {
            Some(chunk) => Some(chunk.map_err(|s| broke(std::io::Error::other(s)))?),
            None => None,
        };
    }
    file.sync_all().await.map_err(broke)?;
    Ok(())
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("malformed raft request: {e}"))
}

#[tonic::async_trait]
impl crate::pb::raft::raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: openraft::raft::AppendEntriesRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.admit(req.vote.leader_id.node_id)?;
        reply(self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: openraft::raft::VoteRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.admit(req.vote.leader_id.node_id)?;
        reply(self.raft.vote(req).await)
    }

    async fn pre_vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: openraft::raft::VoteRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.admit(req.vote.leader_id.node_id)?;
        reply(self.raft.pre_vote(req).await)
    }

    async fn transfer_leader(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: openraft::raft::TransferLeaderRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.admit(req.from_leader().leader_id.node_id)?;
        reply(self.raft.handle_transfer_leader(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = match chunks.next().await {
            Some(chunk) => chunk?,
            None => return Err(Status::invalid_argument("empty snapshot stream")),
        };
        let (vote, meta_bytes): (Vote, Vec<u8>) = decode(&first.header).map_err(bad_request)?;
        self.admit(vote.leader_id.node_id)?;
        let meta = decode_meta(&meta_bytes).map_err(bad_request)?;
        let path = self.snapshots.temp_path();
        let chunks = chunks.map(|c| c.map(|c| c.data));
        if let Err(status) = receive(first.data, chunks, &path, (self.room)()).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(status);
        }
        // A file that does not verify is refused here: handed to Raft, its
        // install would fail inside the state machine, and a storage error
        // there stops this node's Raft core for good.
        let file = path.clone();
        let verified = tokio::task::spawn_blocking(move || super::snapshot::verify(&file)).await;
        if let Err(e) = verified.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(bad_request(format!("snapshot file: {e}")));
        }
        let snapshot = Snapshot { meta, snapshot: SnapshotFile { path } };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
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
