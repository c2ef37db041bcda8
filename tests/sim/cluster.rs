//! The simulated cluster: drover nodes as turmoil hosts, started by the
//! real composition root (`RunningNode::start_in`) with the simulation's
//! environment: tonic over turmoil's sockets, a virtual wall clock per
//! node (skewable, jumpable), and the Raft log synced inline (no thread
//! beside the runtime). Storage is RocksDB in a per-run directory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::config::{DiskThreshold, Limits, NodeConfig, RaftTuning, RetentionDefaults, Timing};
use drover::consensus::clock::{WallClock, WallTime};
use drover::net::Dialer;
use drover::node::env::{Connection, Environment, Incoming};
use drover::node::RunningNode;
use drover::raft::log_store::WalSync;
use drover::store::TaskStore;
use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};

/// The gRPC port of every node.
pub const PORT: u16 = 7000;
/// The simulated wall clocks start here (ms since the Unix epoch).
pub const EPOCH_MS: u64 = 1_780_000_000_000;

pub fn host(id: u64) -> String {
    format!("node{id}")
}

pub fn endpoint(id: u64) -> String {
    format!("http://{}:{PORT}", host(id))
}

/// Channels over turmoil's TCP.
pub fn dialer() -> Dialer {
    Arc::new(|endpoint: Endpoint| {
        endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(PORT);
            turmoil::net::TcpStream::connect((host.as_str(), port)).await.map(TokioIo::new)
        }))
    })
}

/// A node's gRPC connections, accepted on turmoil's TCP.
async fn incoming() -> std::io::Result<Incoming> {
    let listener = turmoil::net::TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
    let local_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
    let connections = futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| Connection(Box::new(stream)));
        Some((next, listener))
    });
    Ok(Incoming { local_addr, connections: Box::pin(connections) })
}

/// A node's wall clock: simulated time plus a skew the fault schedule
/// sets (and jumps).
#[derive(Clone, Default)]
pub struct SimWall {
    pub skew_ms: Arc<AtomicI64>,
}

impl WallTime for SimWall {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
        (EPOCH_MS as i64 + elapsed + self.skew_ms.load(Ordering::SeqCst)).max(0) as u64
    }
}

/// What the checker reads of each node while it runs: its store, set by
/// the host when it starts and taken away before it is crashed (a
/// reference kept across the crash would hold the database open).
#[derive(Clone, Default)]
pub struct Stores(pub Arc<Mutex<Vec<Option<TaskStore>>>>);

impl Stores {
    pub fn new(n: usize) -> Stores {
        Stores(Arc::new(Mutex::new(vec![None; n])))
    }

    fn set(&self, i: usize, store: Option<TaskStore>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner())[i] = store;
    }

    pub fn take(&self, i: usize) {
        self.set(i, None);
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The stores of the running nodes, by node index.
    pub fn running(&self) -> Vec<(usize, TaskStore)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().enumerate().filter_map(|(i, s)| s.clone().map(|s| (i, s))).collect()
    }

    /// The store of the node that has applied the most (ties: the lowest
    /// index), with its applied replicated time.
    pub fn most_applied(&self) -> Option<(TaskStore, u64)> {
        let mut best: Option<(TaskStore, u64, u64)> = None;
        for (_, store) in self.running() {
            let (applied, _) = match store.digest_applied() {
                Some(a) => a,
                None => continue,
            };
            let now = store.now_ms().unwrap_or(0);
            if best.as_ref().is_none_or(|b| applied > b.1) {
                best = Some((store, applied, now));
            }
        }
        best.map(|(s, _, now)| (s, now))
    }
}

/// The applied index of a store, read from its state machine.
pub trait AppliedIndex {
    fn digest_applied(&self) -> Option<(u64, u64)>;
}

impl AppliedIndex for TaskStore {
    /// (applied index, digest) at one point in time.
    fn digest_applied(&self) -> Option<(u64, u64)> {
        let (raw, digest) = self.digest().ok()?;
        let index = drover::raft::codec::decode_log_id(&raw?).ok()?.index;
        Some((index, digest))
    }
}

/// One node's configuration: short timings so that a run covers many
/// elections and lease expiries in little simulated time.
pub fn node_config(id: u64, nodes: u64, dir: &Path) -> NodeConfig {
    let peers = (1..=nodes).map(|p| (p, format!("{}:{PORT}", host(p)))).collect();
    NodeConfig {
        id,
        listen: format!("0.0.0.0:{PORT}"),
        advertise: Some(format!("{}:{PORT}", host(id))),
        data_dir: dir.join(host(id)),
        peers,
        bootstrap: id == 1,
        limits: Limits::default(),
        raft: RaftTuning { snapshot_every: 400, logs_to_keep: 200, ..RaftTuning::default() },
        timing: Timing::default(),
        auto_register: true,
        priority_aging: Duration::from_secs(10),
        worker_buffer: 4096,
        max_clock_offset: Duration::from_millis(500),
        min_free_disk: DiskThreshold::Bytes(0),
        retention: RetentionDefaults::default(),
        http_listen: None,
        open_metrics: false,
        tls: None,
        insecure: true,
    }
}

/// The software of node `id`'s host: start the real node and serve until
/// it fails (a crash drops it with the host's runtime).
pub fn node_host(
    id: u64,
    nodes: u64,
    dir: PathBuf,
    wall: SimWall,
    stores: Stores,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = turmoil::Result>>> {
    move || {
        let (dir, wall, stores) = (dir.clone(), wall.clone(), stores.clone());
        Box::pin(async move {
            let env = Environment {
                wall: WallClock::from_source(Arc::new(wall)),
                dialer: Some(dialer()),
                incoming: Some(incoming().await?),
                wal_sync: WalSync::Inline,
            };
            let node = RunningNode::start_in(node_config(id, nodes, &dir), None, env)
                .await
                .map_err(|e| format!("node {id} did not start: {e}"))?;
            stores.set(id as usize - 1, Some(node.store.clone()));
            let why = node.failure().await;
            stores.take(id as usize - 1);
            Err(format!("node {id} stopped: {why:?}").into())
        })
    }
}
