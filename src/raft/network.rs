//! Outgoing Raft RPCs over tonic, on the node's shared long-lived channels.
//!
//! Requests and replies are openraft's own message types encoded with
//! bincode inside `RaftMessage.data` (see `proto/raft.proto`). Every request
//! carries this node's [`Envelope`](super::identity::Envelope) (cluster ID,
//! sender and target node ids) in its metadata. A failure to reach the peer
//! is `Unreachable` (openraft backs off), and so is a refusal by a node of
//! another cluster: the peer's term never reaches openraft, so this node
//! neither steps down nor takes it. A reply that cannot be decoded or
//! another remote failure is a `NetworkError`.

use std::future::Future;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::identity::Identity;
use super::snapshot::SnapshotFile;
use super::{LogId, Node, NodeId, Snapshot, TypeConfig, Vote};
use crate::net::{ChannelPool, MAX_MESSAGE_BYTES};
use crate::pb::raft::raft_client::RaftClient;
use crate::pb::raft::{RaftMessage, SnapshotChunk};

/// Bytes of snapshot data per streamed chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A plain error carrying a message, for openraft's error wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RpcFailure(pub String);

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    crate::encoding::encode_into(&mut out, value);
    out
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcFailure> {
    crate::encoding::decode_exact(bytes).map_err(|e| RpcFailure(format!("malformed raft message: {e}")))
}

/// Creates one [`Peer`] per target node, on the shared channel pool.
pub struct Network {
    pub node_id: NodeId,
    pub pool: ChannelPool,
    /// Stamps every request with this node's cluster ID, and hears refusals.
    pub identity: Identity,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        let client = if target == self.node_id {
            Err(format!("node {target} must not open a Raft connection to itself"))
        } else {
            self.pool.get(&node.addr).map_err(|e| format!("bad address {:?} for node {target}: {e}", node.addr)).map(
                |ch| {
                    RaftClient::new(ch)
                        .max_decoding_message_size(MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_MESSAGE_BYTES)
                },
            )
        };
        Peer { target, client, identity: self.identity.clone() }
    }
}

/// The connection to one peer.
pub struct Peer {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    identity: Identity,
}

fn unreachable(msg: impl Into<String>) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&RpcFailure(msg.into())))
}

fn status_error(identity: &Identity, target: NodeId, what: &str, status: tonic::Status) -> RPCError<TypeConfig> {
    let msg = format!("node {target}: {}: {}", status.code(), status.message());
    // A node of another cluster: as good as unreachable. Its term stays
    // out of this node's Raft.
    if identity.refused_by(target, what, &status) {
        return unreachable(msg);
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unknown => {
            unreachable(msg)
        }
        _ => RPCError::Network(NetworkError::new(&RpcFailure(msg))),
    }
}

impl Peer {
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client.clone().map_err(unreachable)
    }

    /// One unary call. `unborn`: this node holds nothing beyond its
    /// bootstrap membership (a vote whose last log id is at most index 0).
    async fn call<Req, Resp, F, Fut>(
        &self,
        req: &Req,
        what: &str,
        unborn: bool,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(RaftMessage { data: encode(req) });
        request.set_timeout(option.hard_ttl());
        self.identity.stamp(request.metadata_mut(), self.target, unborn);
        let reply = match tokio::time::timeout(option.hard_ttl(), f(self.client()?, request)).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(status_error(&self.identity, self.target, what, status)),
            Err(_) => {
                return Err(unreachable(format!("node {}: timed out after {:?}", self.target, option.hard_ttl())))
            }
        };
        let result: Result<Resp, String> = decode(&reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::Network(NetworkError::new(&RpcFailure(format!("node {}: {e}", self.target)))))
    }
}

/// Whether a log ending at `last` holds nothing beyond a bootstrap
/// membership (openraft writes it at index 0).
fn holds_nothing(last: Option<&LogId>) -> bool {
    last.is_none_or(|l| l.index == 0)
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, "append", false, &option, |mut c, r| async move { c.append_entries(r).await }).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let unborn = holds_nothing(rpc.last_log_id.as_ref());
        self.call(&rpc, "vote", unborn, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let unborn = holds_nothing(rpc.last_log_id.as_ref());
        self.call(&rpc, "pre-vote", unborn, &option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, "leader transfer", false, &option, |mut c, r| async move { c.transfer_leader(r).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let target = self.target;
        let to_streaming = |e: RPCError<TypeConfig>| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            RPCError::Timeout(t) => StreamingError::Timeout(t),
            RPCError::RemoteError(r) => StreamingError::Network(NetworkError::new(&RpcFailure(r.to_string()))),
        };
        let mut client = self.client().map_err(to_streaming)?;
        let header = encode(&(vote, super::snapshot::encode_meta(&snapshot.meta, self.identity.versions().seal())));
        let path = snapshot.snapshot.path.clone();
        let file = crate::blocking::run(move || std::fs::File::open(path))
            .await
            .and_then(|r| r)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        // The stream reads the file lazily, one chunk per message.
        let chunks = futures::stream::unfold((file, Some(header)), |(file, header)| async move {
            let read = crate::blocking::run(move || {
                let mut file = file;
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = std::io::Read::read(&mut file, &mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>((file, buf))
            });
            let (file, buf) = match read.await.and_then(|r| r) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e, "reading snapshot file to send");
                    return None;
                }
            };
            if buf.is_empty() && header.is_none() {
                return None;
            }
            Some((SnapshotChunk { header: header.unwrap_or_default(), data: buf }, (file, None)))
        });
        let mut request = tonic::Request::new(chunks);
        self.identity.stamp(request.metadata_mut(), target, false);
        let send = client.install_snapshot(request);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            reply = send => reply.map_err(|s| to_streaming(status_error(&self.identity, target, "snapshot", s)))?,
        };
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&reply.into_inner().data).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| StreamingError::Network(NetworkError::new(&RpcFailure(format!("node {target}: {e}")))))
    }
}
