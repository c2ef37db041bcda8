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

pub struct RaftService {
    raft: Raft,
    snapshots: SnapshotDir,
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
    ) -> RaftServer<Self> {
        RaftServer::new(RaftService { raft, snapshots, index, stopping })
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
        let received = async {
            let mut file = tokio::fs::File::create(&path).await?;
            file.write_all(&first.data).await?;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                file.write_all(&chunk.data).await?;
            }
            file.sync_all().await?;
            Ok::<_, std::io::Error>(())
        };
        if let Err(e) = received.await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Status::aborted(format!("snapshot transfer broke off: {e}")));
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
