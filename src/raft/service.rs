//! Incoming Raft RPCs: decode, hand to the local Raft node, encode the reply.

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::network::{decode, encode};
use super::snapshot::{decode_meta, SnapshotDir, SnapshotFile};
use super::{Raft, Snapshot, Vote};
use crate::pb::raft::raft_server::RaftServer;
use crate::pb::raft::{RaftMessage, SnapshotChunk};
use crate::store::TaskStore;

pub struct RaftService {
    raft: Raft,
    snapshots: SnapshotDir,
    /// To refuse traffic from removed (retired) nodes.
    store: TaskStore,
}

impl RaftService {
    pub fn server(raft: Raft, snapshots: SnapshotDir, store: TaskStore) -> RaftServer<Self> {
        RaftServer::new(RaftService { raft, snapshots, store })
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
    fn refuse_retired(&self, from: u64) -> Result<(), Status> {
        match self.store.is_retired(from) {
            Ok(true) => Err(Status::permission_denied(format!("node {from} was removed from this cluster"))),
            _ => Ok(()),
        }
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
        self.refuse_retired(req.vote.leader_id.node_id)?;
        reply(self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: openraft::raft::VoteRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.refuse_retired(req.vote.leader_id.node_id)?;
        reply(self.raft.vote(req).await)
    }

    async fn pre_vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: openraft::raft::VoteRequest<super::TypeConfig> =
            decode(&request.into_inner().data).map_err(bad_request)?;
        self.refuse_retired(req.vote.leader_id.node_id)?;
        reply(self.raft.pre_vote(req).await)
    }

    async fn transfer_leader(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad_request)?;
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
        let snapshot = Snapshot { meta, snapshot: SnapshotFile { path } };
        reply(self.raft.install_full_snapshot(vote, snapshot).await)
    }
}
