//! Hostile input against a running cluster: garbage as the body of every
//! gRPC method of every service (Scheduler, Worker, Cluster and the
//! node-to-node Raft service, listed from the compiled descriptors),
//! garbage Raft payloads in well-formed protobuf, messages over the size
//! limit, a forged snapshot transfer, garbage and
//! truncated HTTP/2 on the gRPC port, and garbage on the HTTP port.
//! Afterwards every node must still be up and serving: a task scheduled
//! through each node succeeds, each answers a cluster status, the
//! replicas' digests are equal, and no node logged a panic.
//!
//! What each kind of garbage got back is printed (run with
//! `--nocapture`). `DROVER_HOSTILE_SEED=N` changes the random bodies (the
//! default seed makes the run repeatable); `DROVER_TEST_SCALE=N` sends N
//! times as many.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::bytes::{Buf, BufMut};
use prost::Message;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::harness::*;
use crate::testkit::launcher::Spec;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

/// The parts of `google.protobuf.FileDescriptorSet` that name methods.
#[derive(Clone, PartialEq, Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorProto {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceDescriptorProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescriptorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct MethodDescriptorProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bool, optional, tag = "5")]
    client_streaming: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    server_streaming: Option<bool>,
}

/// Every method of every service drover compiles in: (gRPC path, streams).
fn methods() -> Vec<(String, bool)> {
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for m in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), m.name());
                out.push((path, m.client_streaming() || m.server_streaming()));
            }
        }
    }
    out
}

/// Message bodies as they are: the gRPC framing is tonic's, the bytes
/// inside are ours.
#[derive(Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// What one garbage call got back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// A reply message (or a clean end of a reply stream).
    Answered,
    /// A gRPC status from the server.
    Refused(Code),
    /// The connection broke (a transport error, not a status).
    Broken(String),
    /// Nothing within the call's deadline.
    NoAnswer,
}

impl Outcome {
    fn name(&self) -> String {
        match self {
            Outcome::Answered => "ok".into(),
            Outcome::Refused(code) => format!("{code:?}"),
            Outcome::Broken(e) => format!("BROKEN({e})"),
            Outcome::NoAnswer => "no answer in 5s".into(),
        }
    }
}

/// A connection to `addr`, waiting up to 20 s for the node to listen (a
/// node that is still opening its storage when the others have elected a
/// leader does not listen yet; a node that died never will).
async fn channel(addr: &str) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    wait_until(Duration::from_secs(20), &format!("a connection to {addr}"), || async { endpoint.connect().await.ok() })
        .await
}

/// Send `body` as the one request message of `path`, and read the first
/// reply message or the status.
async fn call(channel: &Channel, path: &str, body: Vec<u8>) -> Outcome {
    call_as(channel, path, body, None).await
}

/// A peer's cluster envelope (a Raft message without one is refused
/// before its payload is read): from node `from` of `cluster`, for `to`.
fn envelope(cluster: &str, from: u64, to: u64) -> tonic::metadata::MetadataMap {
    let env = drover::raft::identity::Envelope {
        cluster: Some(cluster.parse().expect("a cluster ID")),
        from,
        from_addr: "hostile".into(),
        to,
        unborn: false,
        legacy: false,
    };
    let mut md = tonic::metadata::MetadataMap::new();
    env.write(&mut md);
    md
}

/// [`call`] with this metadata.
async fn call_as(channel: &Channel, path: &str, body: Vec<u8>, md: Option<tonic::metadata::MetadataMap>) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(usize::MAX);
    let path: http::uri::PathAndQuery = path.parse().expect("path");
    let exchange = async move {
        grpc.ready().await.map_err(|e| Outcome::Broken(e.to_string()))?;
        let mut request = tonic::Request::new(tokio_stream::once(body));
        if let Some(md) = md {
            *request.metadata_mut() = md;
        }
        request.set_timeout(Duration::from_secs(5));
        let reply = grpc.streaming(request, path, Raw).await.map_err(refused)?;
        reply.into_inner().message().await.map_err(refused)?;
        Ok::<_, Outcome>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(())) => Outcome::Answered,
        Ok(Err(outcome)) => outcome,
        Err(_) => Outcome::NoAnswer,
    }
}

/// A status the server sent, or a broken connection (a status tonic made
/// from a transport error carries that error as its source).
fn refused(status: Status) -> Outcome {
    match std::error::Error::source(&status) {
        Some(e) => Outcome::Broken(e.to_string()),
        None if status.code() == Code::DeadlineExceeded || status.code() == Code::Cancelled => Outcome::NoAnswer,
        None => Outcome::Refused(status.code()),
    }
}

/// Protobuf that no message decodes: a field 1 of 2^32 - 1 bytes with one
/// byte following; and a field number 0.
const UNDECODABLE: [&[u8]; 2] = [&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01], &[0x00, 0x01]];

/// Results by (kind of garbage, method): outcome -> count.
type Table = BTreeMap<(String, String), BTreeMap<String, usize>>;

fn note(table: &mut Table, kind: &str, what: &str, outcome: String) {
    *table.entry((kind.into(), what.into())).or_default().entry(outcome).or_default() += 1;
}

/// Bytes in after writing `bytes` (then half-closing if `close`), until
/// the server closes or 5 s pass: (bytes read, closed by the server).
async fn raw_exchange(addr: &str, bytes: &[u8], close: bool) -> (Vec<u8>, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may close before everything is written: that is an answer.
    let _ = s.write_all(bytes).await;
    if close {
        let _ = s.shutdown().await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing, new name", no Huffman.
fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// The frame types (and streams) in a server's HTTP/2 bytes, after its
/// first frames.
fn frame_types(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let name = match rest[3] {
            0 => "DATA",
            1 => "HEADERS",
            3 => "RST_STREAM",
            4 => "SETTINGS",
            6 => "PING",
            7 => "GOAWAY",
            8 => "WINDOW_UPDATE",
            _ => "OTHER",
        };
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        out.push(format!("{name}@{stream}"));
        rest = &rest[(9 + len).min(rest.len())..];
    }
    out
}

/// A gRPC request on stream 1 whose message prefix claims `claimed` bytes
/// (followed by 5), sent by hand.
fn grpc_frames(addr: &str, path: &str, claimed: u32) -> Vec<u8> {
    let mut headers = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", addr),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        header(&mut headers, n, v);
    }
    let mut body = vec![0];
    body.extend_from_slice(&claimed.to_be_bytes());
    body.extend_from_slice(&[1, 2, 3, 4, 5]);
    let mut out = PREFACE.to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(1, 0x4, 1, &headers));
    out.extend(frame(0, 0x1, 1, &body));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_from_outside_leaves_every_node_up_and_serving() {
    let mut cluster_spec = Spec::new(3, server_bin()).flags(&["--auto-register"]);
    cluster_spec.http_base_port = Some(0);
    let c = TestCluster::start_spec(cluster_spec).await;
    let leader = c.leader().await;
    let seed: u64 = std::env::var("DROVER_HOSTILE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(13);
    eprintln!("hostile input seed {seed} (DROVER_HOSTILE_SEED)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let methods = methods();
    assert!(methods.len() > 30, "only {} methods in the descriptors", methods.len());
    for service in ["drover.v1.Scheduler/", "drover.v1.Worker/", "drover.v1.Cluster/", "drover.raft.v1.Raft/"] {
        assert!(methods.iter().any(|(p, _)| p.contains(service)), "no method of {service}");
    }
    let mut table = Table::new();

    // 1. Garbage bodies to every method of every node.
    for node in &c.nodes {
        let ch = channel(&node.addr).await;
        for (path, _) in &methods {
            for body in UNDECODABLE {
                let outcome = call(&ch, path, body.to_vec()).await;
                note(&mut table, "undecodable protobuf", path, outcome.name());
                assert!(
                    matches!(outcome, Outcome::Refused(Code::InvalidArgument | Code::Internal)),
                    "node {}: {path} answered {outcome:?} to an undecodable body",
                    node.id
                );
            }
            for _ in 0..8 * scale() {
                let mut body = vec![0u8; rng.gen_range(1..2048)];
                rng.fill_bytes(&mut body);
                let outcome = call(&ch, path, body).await;
                note(&mut table, "random body", path, outcome.name());
                assert!(!matches!(outcome, Outcome::Broken(_)), "node {}: {path}: {outcome:?}", node.id);
            }
        }
    }

    // 2. Well-formed protobuf carrying garbage Raft payloads, so that the
    // bytes reach the Raft service's own decoder (bincode of openraft's
    // messages): random bytes, and an append whose entry's callback name
    // claims 2^60 bytes (an abort of the node before the decoder's fix).
    // They carry a valid envelope (this cluster's ID, from node 1), which
    // is checked before the payload is read.
    let inflated = inflated_append_entries();
    let cluster = c.node_status(leader).await.expect("leader status").cluster_id;
    for node in &c.nodes {
        let ch = channel(&node.addr).await;
        for (path, _) in methods.iter().filter(|(p, _)| p.starts_with("/drover.raft.v1.Raft/")) {
            let snapshot = path.ends_with("/InstallSnapshot");
            let wrap = |data: Vec<u8>| {
                if snapshot {
                    pb::raft::SnapshotChunk { header: data, data: b"DRVSNAP1".to_vec() }.encode_to_vec()
                } else {
                    pb::raft::RaftMessage { data }.encode_to_vec()
                }
            };
            for _ in 0..8 * scale() {
                let mut data = vec![0u8; rng.gen_range(0..2048)];
                rng.fill_bytes(&mut data);
                let outcome = call_as(&ch, path, wrap(data), Some(envelope(&cluster, 1, node.id))).await;
                note(&mut table, "random Raft payload", path, outcome.name());
                // Random bytes can make a valid message (a short vote
                // request): the Raft port believes its peers, which is the
                // transport's security to provide. Anything else is refused.
                assert!(
                    matches!(outcome, Outcome::Refused(Code::InvalidArgument) | Outcome::Answered),
                    "node {}: {path}: {outcome:?}",
                    node.id
                );
            }
            let outcome = call_as(&ch, path, wrap(inflated.clone()), Some(envelope(&cluster, 1, node.id))).await;
            note(&mut table, "Raft payload, a 2^60-byte string", path, outcome.name());
            assert_eq!(outcome, Outcome::Refused(Code::InvalidArgument), "node {}: {path}", node.id);
        }
    }

    // 3. One message over the limit per service (the Cluster service keeps
    // tonic's 4 MiB default).
    let ch = channel(&c.node(leader).addr).await;
    let oversized = vec![0u8; drover::net::MAX_MESSAGE_BYTES + 1];
    for path in [
        "/drover.v1.Scheduler/ScheduleBatch",
        "/drover.v1.Worker/Connect",
        "/drover.v1.Cluster/Status",
        "/drover.raft.v1.Raft/AppendEntries",
        "/drover.raft.v1.Raft/InstallSnapshot",
    ] {
        // With a valid envelope, so that a stream gets as far as its chunks.
        let outcome = call_as(&ch, path, oversized.clone(), Some(envelope(&cluster, 1, leader))).await;
        note(&mut table, "over MAX_MESSAGE_BYTES", path, outcome.name());
        assert!(
            matches!(outcome, Outcome::Refused(Code::ResourceExhausted | Code::OutOfRange)),
            "{path} answered {outcome:?} to an oversized message"
        );
    }

    // 4. A forged snapshot transfer: the leader's own vote in the header
    // (so the follower would accept it) and garbage for the file.
    let status = c.client().cluster_status().await.expect("cluster status");
    let follower = c.nodes.iter().map(|n| n.id).find(|id| *id != leader).expect("a follower");
    let md = envelope(&status.cluster_id, status.leader_id, follower);
    let outcome = forged_snapshot(&c.node(follower).addr, md, status.term, status.leader_id, &mut rng).await;
    note(&mut table, "forged snapshot, garbage file", "/drover.raft.v1.Raft/InstallSnapshot", outcome.name());
    assert_eq!(outcome, Outcome::Refused(Code::InvalidArgument), "a garbage snapshot file must be refused");

    // 5. Garbage, truncated and oversized HTTP/2 on the gRPC port.
    for node in &c.nodes {
        let mut random = vec![0u8; 4096];
        rng.fill_bytes(&mut random);
        let mut bad_frame = PREFACE.to_vec();
        bad_frame.extend(frame(4, 0, 0, &[]));
        bad_frame.extend_from_slice(&[0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0]); // a 16 MiB SETTINGS frame
        let mut truncated_frame = PREFACE.to_vec();
        truncated_frame.extend_from_slice(&[0, 0, 6, 4, 0]);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("random bytes, then close", random.clone(), true),
            ("random bytes, left open", random, false),
            ("truncated HTTP/2 preface, then close", PREFACE[..20].to_vec(), true),
            ("preface and a truncated frame, then close", truncated_frame, true),
            ("a frame over the maximum frame size", bad_frame, false),
            ("an HTTP/1.1 request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false),
            (
                "a gRPC message prefix claiming 4 GiB",
                grpc_frames(&node.addr, "/drover.v1.Cluster/Status", u32::MAX),
                false,
            ),
            (
                "a gRPC message prefix claiming 2 GiB, Raft",
                grpc_frames(&node.addr, "/drover.raft.v1.Raft/Vote", 1 << 31),
                false,
            ),
        ];
        for (what, bytes, close) in cases {
            let (reply, closed) = raw_exchange(&node.addr, &bytes, close).await;
            let types = frame_types(&reply);
            let summary =
                format!("{} bytes back, {}; frames {:?}", reply.len(), if closed { "closed" } else { "open" }, types);
            note(&mut table, "gRPC port", what, summary.clone());
            if what.starts_with("a gRPC message prefix") {
                // Answered on its stream (trailers or a reset), not dropped.
                assert!(
                    types.iter().any(|t| t == "HEADERS@1" || t == "RST_STREAM@1"),
                    "node {}: {what}: {summary}",
                    node.id
                );
            }
            if what == "a frame over the maximum frame size" {
                assert!(types.iter().any(|t| t == "GOAWAY@0"), "node {}: {what}: {summary}", node.id);
            }
        }
    }

    // 6. Garbage on the HTTP port.
    for node in &c.nodes {
        let http = node.http_addr.clone().expect("http address");
        let mut random = vec![0u8; 4096];
        rng.fill_bytes(&mut random);
        let long_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n", "a".repeat(1 << 20));
        let long_path = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(64 << 10));
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            ("random bytes, then close", random.clone(), true),
            ("random bytes, left open", random, false),
            ("a truncated request line, then close", b"GET /heal".to_vec(), true),
            ("a 1 MiB header", long_header.into_bytes(), false),
            ("a 64 KiB path", long_path.into_bytes(), false),
            (
                "a body claiming 10^15 bytes, then close",
                b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\nabc".to_vec(),
                true,
            ),
            ("an HTTP/2 preface", PREFACE.to_vec(), false),
        ];
        for (what, bytes, close) in cases {
            let (reply, closed) = raw_exchange(&http, &bytes, close).await;
            let head = String::from_utf8_lossy(&reply[..reply.len().min(12)]).replace("\r\n", " ");
            let summary = format!("{:?} ({} bytes), {}", head, reply.len(), if closed { "closed" } else { "open" });
            note(&mut table, "HTTP port", what, summary);
        }
        assert_eq!(http_status(&http, "/healthz").await, Some(200), "node {}: /healthz after garbage", node.id);
    }

    print_table(&table);

    // Every node is up and serving.
    for node in &c.nodes {
        let pid = node.pid().expect("a running node");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("gone");
        assert!(!matches!(state, "Z" | "X" | "gone"), "node {} exited; log:\n{}", node.id, c.log_tail(node.id));
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "node {} panicked; log:\n{}", node.id, c.log_tail(node.id));
    }
    let stop = CancellationToken::new();
    let worker = Worker::builder(c.endpoints())
        .id("hostile-worker")
        .handle("after-garbage", 4, |_ctx: TaskContext| async { TaskResult::Success(b"done".to_vec()) })
        .run(stop.clone());
    let worker = tokio::spawn(worker);
    let client = c.client();
    for node in &c.nodes {
        let mut via = c.client_of(node.id);
        via.deadline = Duration::from_secs(20);
        let status = via.cluster_status().await.expect("cluster status from every node");
        assert_ne!(status.leader_id, 0, "node {} knows no leader", node.id);
        let id = via.schedule(0, spec("after-garbage", b"x")).await.expect("schedule through every node").task_id;
        wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    }
    let digests = converged_digests(&c).await;
    assert_eq!(digests.len(), 3);
    assert!(digests.values().all(|d| d == &digests[&1]), "replicas differ: {digests:?}");
    stop.cancel();
    let _ = worker.await;
}

/// An `InstallSnapshot` with a valid header (the leader's vote, a meta far
/// ahead of the follower) and random bytes for the file.
async fn forged_snapshot(
    addr: &str,
    md: tonic::metadata::MetadataMap,
    term: u64,
    leader: u64,
    rng: &mut impl RngCore,
) -> Outcome {
    use drover::raft::codec::LogIdRecord;
    use drover::raft::{snapshot, LogId, SnapshotMeta, Vote};
    let mut vote = Vote::new(term, leader);
    vote.committed = true;
    let meta = SnapshotMeta {
        last_log_id: Some(LogId::from(LogIdRecord { term, node_id: leader, index: 10_000_000 })),
        last_membership: Default::default(),
    };
    let mut header = Vec::new();
    drover::encoding::encode_into(&mut header, &(vote, snapshot::encode_meta(&meta, true)));
    let mut data = b"DRVSNAP1".to_vec();
    let mut junk = vec![0u8; 64 << 10];
    rng.fill_bytes(&mut junk);
    data.extend(junk);
    let chunks = vec![
        pb::raft::SnapshotChunk { header, data: data[..1000].to_vec() },
        pb::raft::SnapshotChunk { header: Vec::new(), data: data[1000..].to_vec() },
    ];
    let mut client = pb::raft::raft_client::RaftClient::new(channel(addr).await);
    let mut request = tonic::Request::new(tokio_stream::iter(chunks));
    *request.metadata_mut() = md;
    match client.install_snapshot(request).await {
        Ok(_) => Outcome::Answered,
        Err(status) => refused(status),
    }
}

/// A bincode `AppendEntriesRequest` whose one entry's callback name claims
/// 2^60 bytes.
fn inflated_append_entries() -> Vec<u8> {
    use drover::domain::{Command, NewTask, Operation};
    use drover::raft::codec::LogIdRecord;
    use drover::raft::{Entry, LogId, TypeConfig, Vote};
    use openraft::entry::RaftEntry;
    let marker = b"CALLBACK-MARKER";
    let task = NewTask {
        callback: String::from_utf8(marker.to_vec()).expect("utf-8"),
        payload: Vec::new(),
        priority: 0,
        run_at_ms: 0,
        idempotency_key: None,
        collection: None,
    };
    let command =
        Command { stamped_at_ms: 1, operation: Operation::Schedule { tasks: vec![task], auto_register: true } };
    let log_id = LogId::from(LogIdRecord { term: 1, node_id: 1, index: 1 });
    let request = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, 1),
        prev_log_id: None,
        entries: vec![Entry::new_normal(log_id, command)],
        leader_commit: None,
    };
    let mut bytes = Vec::new();
    drover::encoding::encode_into(&mut bytes, &request);
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("the marker");
    bytes[at - 8..at].copy_from_slice(&(1u64 << 60).to_le_bytes());
    bytes
}

/// GET `path`: the status code.
async fn http_status(addr: &str, path: &str) -> Option<u16> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (reply, _) = raw_exchange(addr, request.as_bytes(), false).await;
    String::from_utf8_lossy(&reply).split_whitespace().nth(1)?.parse().ok()
}

fn print_table(table: &Table) {
    eprintln!("{:<34} {:<52} outcomes", "garbage", "target");
    for ((kind, what), outcomes) in table {
        let outcomes: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} x{n}")).collect();
        eprintln!("{kind:<34} {what:<52} {}", outcomes.join(", "));
    }
}
