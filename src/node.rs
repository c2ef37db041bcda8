//! A drover node: opens the data dir, starts Raft and the gRPC server, and
//! owns the shared context the services use.
//!
//! Lifecycle: `start` -> serving -> `shutdown` (stop accepting, stop Raft,
//! close the database). See DESIGN.md, "Node lifecycle".

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;

use crate::api::{self, ApiError};
use crate::clock::{ProposerClock, WallClock};
use crate::config::NodeConfig;
use crate::net::ChannelPool;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::service::RaftService;
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::{Applied, StateMachine};
use crate::raft::{self, Raft, ServerState};
use crate::scheduler::dispatcher::Dispatcher;
use crate::scheduler::Scheduler;
use crate::store::{self, SharedIndex, TaskStore};

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("data dir {path}: {message}")]
    DataDir { path: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("storage: {0}")]
    Store(#[from] store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("grpc server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// What every service of a node shares. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    pub id: u64,
    pub raft: Raft,
    pub store: TaskStore,
    pub clock: ProposerClock,
    pub pool: ChannelPool,
    pub config: Arc<NodeConfig>,
    pub applied: tokio::sync::watch::Receiver<Applied>,
    /// The live index (callbacks, queues, running tasks), kept by apply.
    pub index: SharedIndex,
    /// This node's dispatcher (active while it leads).
    pub scheduler: Scheduler,
    /// The node's RocksDB (backups read it directly).
    pub db: Arc<rocksdb::DB>,
    /// Serialises membership changes made through this node.
    pub admin: Arc<tokio::sync::Mutex<()>>,
    /// A restore from a backup is being imported: client writes wait.
    pub restoring: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled when the node starts shutting down (after any leadership
    /// hand-over): nothing new is proposed to Raft after that.
    pub stopping: CancellationToken,
}

/// Where a request that needs the leader should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node is the leader.
    Local,
    /// Another node is; forward there.
    Remote { id: u64, addr: String },
}

impl NodeContext {
    /// The current leader, waiting up to the configured `leader_wait` for an
    /// election to finish.
    pub async fn route(&self) -> Result<Route, ApiError> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.config.leader_wait;
        loop {
            let found = {
                let m = metrics.borrow_and_update();
                match m.current_leader {
                    Some(id) if id == self.id && m.state == ServerState::Leader => Some(Route::Local),
                    Some(id) if id != self.id => m
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| Route::Remote { id, addr: n.addr.clone() }),
                    _ => None,
                }
            };
            if let Some(route) = found {
                return Ok(route);
            }
            if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
                return Err(ApiError::Unavailable {
                    message: format!(
                        "no leader after waiting {:?}: the cluster is electing one or has lost its quorum; retry shortly",
                        self.config.leader_wait
                    ),
                    leader: None,
                    retry_after_ms: 500,
                });
            }
        }
    }
}

/// A started node.
pub struct RunningNode {
    pub ctx: NodeContext,
    /// The address the gRPC server is bound to.
    pub local_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RunningNode {
    /// Start a node: bind (or take `listener`), open storage, start Raft and
    /// serve. With `bootstrap`, initialise the cluster if it is new.
    pub async fn start(config: NodeConfig, listener: Option<TcpListener>) -> Result<RunningNode, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let config = Arc::new(config);
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(&config.listen)
                .await
                .map_err(|source| NodeError::Listen { addr: config.listen.clone(), source })?,
        };
        let local_addr =
            listener.local_addr().map_err(|source| NodeError::Listen { addr: config.listen.clone(), source })?;
        claim_data_dir(&config.data_dir, config.id)?;
        let pending_restore = crate::restore::pending(&config.data_dir);
        if pending_restore.is_some() && config.peers.iter().any(|(id, _)| *id != config.id) {
            return Err(NodeError::Config(
                "a restored node bootstraps a cluster alone: start it without other --peers, then add nodes with `drover cluster add-node`".into(),
            ));
        }

        let db = store::open_db(&config.data_dir.join("db")).map_err(|e| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            message: format!("{e} (is another drover process using it?)"),
        })?;
        let snapshot_dir = config.data_dir.join("snapshots");
        let (state_machine, applied) = StateMachine::open(db.clone(), snapshot_dir.clone())?;
        let index = state_machine.index();
        let log_store = LogStore::new(db.clone()).map_err(store::StoreError::from)?;
        let pool = ChannelPool::default();
        let network = Network { node_id: config.id, pool: pool.clone() };
        let raft_config = raft::raft_config(&config.raft).map_err(NodeError::Config)?;
        let raft = Raft::new(config.id, raft_config, network, log_store, state_machine)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;

        let (scheduler, scheduler_rx) = Scheduler::channel();
        let shutdown = CancellationToken::new();
        let ctx = NodeContext {
            id: config.id,
            raft: raft.clone(),
            store: TaskStore::new(db.clone()),
            clock: ProposerClock::new(
                config.id,
                WallClock { skew_ms: config.clock_skew_ms },
                config.max_clock_offset,
                applied.clone(),
            ),
            pool,
            config: config.clone(),
            applied,
            index,
            scheduler: scheduler.clone(),
            db: db.clone(),
            admin: Arc::default(),
            restoring: Arc::new(std::sync::atomic::AtomicBool::new(pending_restore.is_some())),
            stopping: shutdown.clone(),
        };
        if ctx.store.is_retired(ctx.id)? {
            return Err(NodeError::Config(format!(
                "node {} was removed from its cluster and cannot rejoin: start a new node with a new id and an empty data dir",
                ctx.id
            )));
        }

        let tasks = TaskTracker::new();
        let dispatcher = Dispatcher::new(ctx.clone(), scheduler_rx, scheduler.sender());
        tasks.spawn(dispatcher.run(shutdown.clone()));
        let snapshots = SnapshotDir::open(snapshot_dir).map_err(store::StoreError::from)?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted))
            .add_service(health_service)
            .add_service(RaftService::server(raft.clone(), snapshots, ctx.index.clone(), shutdown.clone()))
            .add_service(api::scheduler_server(ctx.clone()))
            .add_service(api::cluster_server(ctx.clone()))
            .add_service(api::worker_server(ctx.clone()));
        // Nagle's algorithm with delayed ACKs adds ~40 ms to replies that
        // span several segments: disable it on every accepted connection.
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(30)));
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
                tracing::error!(error = %e, "grpc server stopped");
            }
        });
        tasks.spawn(health::report(ctx.clone(), health_reporter, shutdown.clone()));
        tasks.spawn(crate::timekeeper::run(
            ctx.id,
            raft.clone(),
            ctx.pool.clone(),
            ctx.clock.clone(),
            shutdown.clone(),
        ));
        if config.clock_skew_ms != 0 {
            tracing::warn!(skew_ms = config.clock_skew_ms, "fault injection: this node's wall clock is skewed");
        }

        if config.bootstrap {
            bootstrap(&ctx).await?;
        }
        if let Some(path) = pending_restore {
            tasks.spawn(crate::restore::import(ctx.clone(), path, shutdown.clone()));
        }
        tracing::info!(id = config.id, addr = %local_addr, "node started");
        Ok(RunningNode { ctx, local_addr, shutdown, tasks })
    }

    /// Graceful stop: hand leadership over (if leading), stop serving, stop
    /// Raft, wait for every task.
    pub async fn shutdown(self) {
        hand_over_leadership(&self.ctx).await;
        self.shutdown.cancel();
        self.tasks.close();
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // Connections a peer never closed (it was cut off) would hold the
        // server's graceful shutdown for a long time: bound the wait.
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not close within 5s; stopping anyway");
        }
        // Durable: everything written so far. Then stop RocksDB's background
        // threads so that process exit cannot race them.
        if let Err(e) = self.ctx.db.flush_wal(true) {
            tracing::warn!(error = %e, "final WAL sync");
        }
        self.ctx.db.cancel_all_background_work(true);
        tracing::info!(id = self.ctx.id, "node stopped");
    }
}

/// tonic answers a request over the message size limit with OUT_OF_RANGE;
/// gRPC specifies RESOURCE_EXHAUSTED for that (and drover's docs promise
/// it). Drover's own handlers never return OUT_OF_RANGE, so every such
/// status is the limit's.
fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let out_of_range = http::HeaderValue::from_static("11");
    if response.headers().get("grpc-status") == Some(&out_of_range) {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// If this node leads, transfer leadership to the most up-to-date other
/// voter and wait (at most 2 s) for it to take over, so that a planned
/// restart costs no election timeout.
async fn hand_over_leadership(ctx: &NodeContext) {
    let m = ctx.raft.metrics().borrow_watched().clone();
    if m.current_leader != Some(ctx.id) {
        return;
    }
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().filter(|v| *v != ctx.id).collect();
    let progress = m.replication.clone().unwrap_or_default();
    let Some(to) = voters.into_iter().max_by_key(|v| progress.get(v).cloned().flatten().map(|l| l.index)) else {
        return;
    };
    tracing::info!(to, "handing leadership over before shutting down");
    if ctx.raft.trigger().transfer_leader(to).await.is_err() {
        return;
    }
    let mut metrics = ctx.raft.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while metrics.borrow_watched().current_leader == Some(ctx.id) {
        if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
            tracing::warn!(to, "leadership transfer did not finish within 2s; stopping anyway");
            return;
        }
    }
}

/// Initialise a new cluster from the configured peers (or this node alone).
async fn bootstrap(ctx: &NodeContext) -> Result<(), NodeError> {
    if ctx.raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))? {
        tracing::info!("--bootstrap ignored: this node already belongs to a cluster");
        return Ok(());
    }
    let mut members = std::collections::BTreeMap::new();
    for (id, addr) in &ctx.config.peers {
        members.insert(*id, raft::Node { addr: addr.clone() });
    }
    members.entry(ctx.id).or_insert_with(|| raft::Node { addr: ctx.config.advertise_addr() });
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
    ctx.raft.initialize(members).await.map_err(|e| NodeError::Raft(format!("initialize: {e}")))
}

/// Record which node owns a data dir, and refuse to start a different id on
/// it: reusing a data dir under another id can split a cluster's brain.
fn claim_data_dir(dir: &Path, id: u64) -> Result<(), NodeError> {
    let err = |message: String| NodeError::DataDir { path: dir.display().to_string(), message };
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let id_file = dir.join("node_id");
    match std::fs::read_to_string(&id_file) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(existing) if existing == id => Ok(()),
            Ok(existing) => {
                Err(err(format!("belongs to node {existing}, not node {id}; use a fresh data dir for a new node")))
            }
            Err(_) => Err(err(format!("{} is corrupt", id_file.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&id_file, format!("{id}\n")).map_err(|e| err(e.to_string()))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

mod health {
    //! The standard gRPC health service: SERVING while this node knows a
    //! leader (it can take writes, directly or by forwarding).
    use super::*;
    use tonic_health::server::HealthReporter;
    use tonic_health::ServingStatus;

    pub async fn report(ctx: NodeContext, reporter: HealthReporter, stop: CancellationToken) {
        let mut metrics = ctx.raft.metrics();
        loop {
            let serving = metrics.borrow_and_update().current_leader.is_some();
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status("", status).await;
            reporter.set_service_status("drover.v1.Scheduler", status).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                r = metrics.changed() => if r.is_err() { break },
            }
        }
    }
}

/// CPU time (user + system) of this process in seconds, from /proc (0 if
/// unavailable).
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may contain spaces) start after ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after ')'.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Resident set size of this process in bytes (0 if unavailable).
pub fn process_rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}
