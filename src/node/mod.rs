//! A drover node, the composition root: it opens the data dir, builds every
//! layer (store, Raft, consensus handle, scheduler, gRPC services) and
//! hands each only the handles it needs. Nothing inside the server imports
//! this module.
//!
//! Lifecycle: `start` -> serving -> `shutdown` (hand leadership over, stop
//! accepting, stop Raft, flush and close the database). See DESIGN.md,
//! "Node lifecycle".
//!
//! - [`health`]: the gRPC health service.
//! - [`restore`]: seeding a new cluster from a backup.
//! - `stall`: a leader whose disk stalls hands leadership over.
//! - `observe`: gRPC handling time and leader changes, for the metrics.
//! - `guard`: the layer in front of every RPC that keeps the node-to-node
//!   methods to authenticated peers.

mod guard;
mod health;
mod observe;
pub mod restore;
mod stall;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;

use crate::api::cluster::ClusterService;
use crate::api::forward::Forwarder;
use crate::api::membership::Membership;
use crate::api::scheduler::SchedulerService;
use crate::api::worker::WorkerService;
use crate::config::NodeConfig;
use crate::consensus::clock::{ProposerClock, WallClock};
use crate::consensus::disk::{self, DiskSpace};
use crate::consensus::{timekeeper, Consensus, ConsensusError};
use crate::domain::Retention;
use crate::net::ChannelPool;
use crate::raft::service::RaftService;
use crate::scheduler::collector::{Collector, CollectorConfig};
use crate::scheduler::ticker::Ticker;
use crate::scheduler::{Deps, Dispatcher, Scheduler};
use crate::store::{self, TaskStore};

/// Errors starting a node.
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
    Raft(crate::raft::StartError),
    /// The data dir failed its checks: this node must not serve from it.
    #[error(
        "the data in {path} is damaged: {what}. This node cannot start from it. Way out: check the disk, move the data dir aside, and rejoin the cluster as a new node: `drover cluster remove-node --id ID`, then start a node with a new id and an empty data dir and run `drover cluster add-node` (README, \"When a disk fills or fails\"). `drover admin check --data-dir DIR` verifies a stopped node's data dir."
    )]
    Corrupt { path: String, what: String },
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ConsensusError),
}

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started node.
pub struct RunningNode {
    /// The address the gRPC server is bound to.
    pub local_addr: std::net::SocketAddr,
    pub consensus: Consensus,
    pub store: TaskStore,
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
        let http_listener = match &config.http_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.map_err(|source| NodeError::Listen { addr: addr.clone(), source })?)
            }
            None => None,
        };
        let (db, store, pending_restore) = open_storage(&config)?;

        // TLS: the files load now (a node does not start with bad ones),
        // and again on SIGHUP or when they change.
        let tls = match &config.tls {
            Some(files) => {
                Some(crate::tls::Acceptor::new(files.clone()).map_err(|e| NodeError::Config(e.to_string()))?)
            }
            None => None,
        };
        if config.plaintext_exposed() {
            tracing::warn!(listen = %config.listen, "serving PLAINTEXT on an address other hosts can reach (--insecure): anyone there can call any API");
        }
        let pool = ChannelPool::with_tls(tls.as_ref().and_then(|t| t.dial()));
        let started = crate::raft::start(config.id, &config.raft, db, &config.data_dir, pool.clone()).await.map_err(
            |e| match e {
                crate::raft::StartError::Corrupt(c) => {
                    NodeError::Corrupt { path: config.data_dir.display().to_string(), what: c.what }
                }
                other => NodeError::Raft(other),
            },
        )?;
        let shutdown = CancellationToken::new();
        let consensus = Consensus::new(
            config.id,
            started.raft.clone(),
            config.timing.clone(),
            shutdown.clone(),
            pending_restore.is_some(),
        );
        let clock = ProposerClock::new(
            config.id,
            WallClock { skew_ms: config.clock_skew_ms },
            config.max_clock_offset,
            started.applied.clone(),
        );
        let disk = DiskSpace::new(config.id, config.data_dir.clone(), config.min_free_disk);
        disk.refresh();
        let (scheduler, scheduler_rx) = Scheduler::channel();
        let tasks = TaskTracker::new();
        let deps = Deps {
            consensus: consensus.clone(),
            store: store.clone(),
            index: started.index.clone(),
            clock: clock.clone(),
            priority_aging: config.priority_aging,
            applied: started.applied.clone(),
        };
        tasks.spawn(Dispatcher::new(deps, scheduler_rx, scheduler.sender()).run(shutdown.clone()));
        let collector = Collector {
            consensus: consensus.clone(),
            store: store.clone(),
            index: started.index.clone(),
            clock: clock.clone(),
            config: collector_config(&config.retention),
        };
        tasks.spawn(collector.clone().run(shutdown.clone()));
        let ticker = Ticker { consensus: consensus.clone(), index: started.index.clone(), clock: clock.clone() };
        tasks.spawn(ticker.run(shutdown.clone()));

        let handles = Handles {
            consensus: consensus.clone(),
            store: store.clone(),
            clock: clock.clone(),
            disk: disk.clone(),
            pool: pool.clone(),
            index: started.index.clone(),
            collector,
        };
        let services = Services::build(&config, &handles, scheduler);
        let (scheduler_api, cluster_api) = (Arc::new(services.scheduler), Arc::new(services.cluster));
        let auth_api = Arc::new(crate::api::auth::AuthService {
            forward: scheduler_api.forward.clone(),
            scheduler: scheduler_api.clone(),
            peer_tls: config.tls.as_ref().is_some_and(|t| t.peer_ca.is_some()),
        });
        let raft_service =
            RaftService::server(started.raft.clone(), started.snapshots, started.index.clone(), shutdown.clone(), {
                let disk = disk.clone();
                Arc::new(move || disk.room())
            });
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = (
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .build_v1(),
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .build_v1alpha(),
        );
        let router = Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
            .layer(observe::GrpcMetricsLayer)
            .layer(guard::GuardLayer {
                tls: tls.clone(),
                index: started.index.clone(),
                clock: clock.clone(),
                throttle: Arc::default(),
            })
            .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted))
            .add_service(health_service)
            .add_service(raft_service)
            .add_service(scheduler_api.clone().into_server())
            .add_service(cluster_api.clone().into_server())
            .add_service(auth_api.into_server())
            .add_service(services.worker.into_server());
        let router = match reflection {
            (Ok(v1), Ok(v1alpha)) => router.add_service(v1).add_service(v1alpha),
            (v1, v1alpha) => {
                // The descriptor set is compiled in: this cannot fail but
                // on a broken build, and the node serves without it.
                let e = v1.err().or(v1alpha.err()).map(|e| e.to_string()).unwrap_or_default();
                tracing::error!(error = %e, "gRPC reflection is not served");
                router
            }
        };
        // Nagle's algorithm with delayed ACKs adds ~40 ms to replies that
        // span several segments: disable it on every accepted connection.
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(30)));
        let stop = shutdown.clone();
        match &tls {
            Some(acceptor) => {
                let incoming =
                    crate::tls::incoming(incoming, acceptor.clone(), false, HANDSHAKE_TIMEOUT, shutdown.clone());
                tasks.spawn(async move {
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
                        tracing::error!(error = %e, "grpc server stopped");
                    }
                });
                tasks.spawn(acceptor.clone().watch(Duration::from_secs(2), shutdown.clone()));
            }
            None => {
                tasks.spawn(async move {
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
                        tracing::error!(error = %e, "grpc server stopped");
                    }
                });
            }
        }
        tasks.spawn(health::report(consensus.watch(), health_reporter, shutdown.clone()));
        tasks.spawn(observe::count_leader_changes(consensus.watch(), shutdown.clone()));
        if let Some(listener) = http_listener {
            let state = crate::api::http::HttpState::new(
                consensus.clone(),
                store.clone(),
                started.index.clone(),
                clock.clone(),
            );
            let console =
                crate::api::console::ConsoleState::new(scheduler_api, cluster_api).with_secure_cookies(tls.is_some());
            let router = crate::api::http::router(state).merge(crate::api::console::router(console));
            tracing::info!(addr = ?listener.local_addr().ok(), "serving the web console, /metrics, /healthz and /readyz");
            tasks.spawn(crate::api::http::serve(listener, tls.clone(), router, shutdown.clone()));
        }
        tasks.spawn(stall::watch(
            consensus.clone(),
            started.sync_watch.clone(),
            config.timing.fsync_stall,
            shutdown.clone(),
        ));
        tasks.spawn(timekeeper::run(consensus.clone(), pool.clone(), clock.clone(), disk, shutdown.clone()));
        if config.clock_skew_ms != 0 {
            tracing::warn!(skew_ms = config.clock_skew_ms, "fault injection: this node's wall clock is skewed");
        }

        if config.bootstrap {
            bootstrap(&config, &consensus).await?;
        }
        if let Some(path) = pending_restore {
            let importer = restore::Importer { consensus: consensus.clone(), clock: clock.clone() };
            tasks.spawn(importer.run(path, shutdown.clone()));
        }
        tracing::info!(id = config.id, addr = %local_addr, "node started");
        Ok(RunningNode { local_addr, consensus, store, shutdown, tasks })
    }

    /// Resolves once this node's Raft has stopped on a fatal (storage)
    /// error, with its cause; the node then serves nothing and should be
    /// shut down. `None` if Raft stopped normally.
    pub async fn failure(&self) -> Option<String> {
        self.consensus.failure().await
    }

    /// Graceful stop: hand leadership over (if leading), stop serving, stop
    /// Raft, wait for every task, then make everything durable and stop
    /// RocksDB's background work.
    pub async fn shutdown(self) {
        let timing = self.consensus.timing().clone();
        if let Some(to) = self.consensus.hand_over(timing.hand_over, |_| true).await {
            tracing::info!(to, "node {to} leads; shutting down");
        }
        self.shutdown.cancel();
        self.tasks.close();
        // Requests in flight finish (or fail) against a running Raft; only
        // then does Raft stop, so nothing calls into a stopped Raft core.
        // Connections a peer never closed (it was cut off) would hold the
        // server's graceful shutdown for a long time: bound the wait.
        if tokio::time::timeout(timing.drain, self.tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not close within {:?}; stopping anyway", timing.drain);
        }
        self.consensus.shutdown().await;
        // Durable: everything written so far.
        if let Err(e) = self.store.close() {
            tracing::warn!(error = %e, "final WAL sync");
        }
        tracing::info!(id = self.consensus.id(), "node stopped");
    }
}

/// Claim the data dir, open the database, and refuse what cannot start:
/// a retired node id, or a restore alongside other peers. Returns the
/// database, the store over it, and the backup waiting to be imported.
fn open_storage(config: &NodeConfig) -> Result<(Arc<rocksdb::DB>, TaskStore, Option<std::path::PathBuf>), NodeError> {
    claim_data_dir(&config.data_dir, config.id)?;
    check_free_disk(config)?;
    let pending_restore = restore::pending(&config.data_dir);
    if pending_restore.is_some() && config.peers.iter().any(|(id, _)| *id != config.id) {
        return Err(NodeError::Config(
            "a restored node bootstraps a cluster alone: start it without other --peers, then add nodes with `drover cluster add-node`".into(),
        ));
    }
    let db = store::open_db(&config.data_dir.join("db")).map_err(|e| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        message: format!("{e} (is another drover process using it?)"),
    })?;
    let store = TaskStore::new(db.clone());
    if store.is_retired(config.id)? {
        return Err(NodeError::Config(format!(
            "node {} was removed from its cluster and cannot rejoin: start a new node with a new id and an empty data dir",
            config.id
        )));
    }
    Ok((db, store, pending_restore))
}

/// Refuse to start with less free space than `--min-free-disk`.
fn check_free_disk(config: &NodeConfig) -> Result<(), NodeError> {
    let dir = &config.data_dir;
    let (free, total) = disk::measure(dir).map_err(|e| NodeError::DataDir {
        path: dir.display().to_string(),
        message: format!("cannot measure free space: {e}"),
    })?;
    let need = config.min_free_disk.required(total);
    if free < need {
        return Err(NodeError::Config(format!(
            "not enough free disk space: the filesystem of {} has {} free (of {}), and --min-free-disk requires {} ({}); free some space, or lower --min-free-disk, and start again",
            dir.display(),
            disk::human(free),
            disk::human(total),
            disk::human(need),
            config.min_free_disk,
        )));
    }
    Ok(())
}

/// Initialise a new cluster from `--peers` (a no-op for a node that
/// already belongs to one).
async fn bootstrap(config: &NodeConfig, consensus: &Consensus) -> Result<(), NodeError> {
    let mut members: BTreeMap<u64, String> = config.peers.iter().cloned().collect();
    members.entry(config.id).or_insert_with(|| config.advertise_addr());
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
    if !consensus.bootstrap(members).await? {
        tracing::info!("--bootstrap ignored: this node already belongs to a cluster");
    }
    Ok(())
}

/// The public gRPC services, each built from the narrow handles it uses.
struct Services {
    scheduler: SchedulerService,
    cluster: ClusterService,
    worker: WorkerService,
}

/// The shared handles the services are built from.
struct Handles {
    consensus: Consensus,
    store: TaskStore,
    clock: ProposerClock,
    disk: DiskSpace,
    pool: ChannelPool,
    index: crate::store::SharedIndex,
    collector: Collector,
}

/// The collector's settings from the node's retention options.
fn collector_config(r: &crate::config::RetentionDefaults) -> CollectorConfig {
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    CollectorConfig {
        defaults: Retention {
            succeeded_ms: ms(r.succeeded),
            cancelled_ms: ms(r.cancelled),
            failed_ms: ms(r.failed),
            dead_ms: ms(r.dead),
        },
        batch: r.batch,
        ..CollectorConfig::default()
    }
}

impl Services {
    fn build(config: &NodeConfig, h: &Handles, scheduler: Scheduler) -> Services {
        let forward = Forwarder { consensus: h.consensus.clone(), pool: h.pool.clone() };
        let membership = Membership {
            consensus: h.consensus.clone(),
            store: h.store.clone(),
            clock: h.clock.clone(),
            pool: h.pool.clone(),
            admin: Arc::default(),
        };
        Services {
            scheduler: SchedulerService {
                forward: forward.clone(),
                store: h.store.clone(),
                index: h.index.clone(),
                clock: h.clock.clone(),
                limits: config.limits.clone(),
                auto_register: config.auto_register,
                disk: h.disk.clone(),
                collector: h.collector.clone(),
                dispatcher: scheduler.clone(),
            },
            cluster: ClusterService {
                forward,
                membership,
                store: h.store.clone(),
                clock: h.clock.clone(),
                data_dir: config.data_dir.clone(),
                disk: h.disk.clone(),
                tls: config.tls.is_some(),
                insecure_exposed: config.plaintext_exposed(),
            },
            worker: WorkerService { scheduler, limits: config.limits.clone(), buffer: config.worker_buffer },
        }
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
