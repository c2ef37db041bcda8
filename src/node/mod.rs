//! A drover node, the composition root: it opens the data dir, builds every
//! layer (store, Raft, consensus handle, scheduler, gRPC services) and
//! hands each only the handles it needs. Nothing inside the server imports
//! this module.
//!
//! Lifecycle: `start` -> serving -> `shutdown` (hand leadership over, stop
//! accepting, stop Raft, flush and close the database). See DESIGN.md,
//! "Node lifecycle".
//!
//! - `birth`: bootstrap, the `--peers` check, and naming the cluster.
//! - [`health`]: the gRPC health service.
//! - [`restore`]: seeding a new cluster from a backup.
//! - [`rejoin`]: a data dir rebuilt by `drover admin rejoin` (the node runs
//!   under the new id it was given, and never bootstraps).
//! - `stall`: a leader whose disk stalls hands leadership over.
//! - `observe`: gRPC handling time and leader changes, for the metrics.
//! - `guard`: the layer in front of every RPC that keeps the node-to-node
//!   methods to authenticated peers.

mod birth;
pub mod env;
mod guard;
mod health;
mod observe;
pub mod rejoin;
pub mod restore;
mod stall;
pub mod upgrade;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;

use crate::api::auth::AuthService;
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
    /// The data dir failed its checks: this node must not serve from it
    /// (it could vote or acknowledge from state it lost).
    #[error(
        "the data in {path} is damaged: {what}. This node must not start from it: it could vote or acknowledge from state it lost. Way out, with the other nodes running: `drover admin rejoin --data-dir {path}` moves the damaged data aside; then start this node again with the same command, and it comes back empty under a new node id and catches up from the others (README, \"When a disk fills or fails\"). `drover admin check --data-dir {path}` shows the damage again."
    )]
    Corrupt { path: String, what: String },
    #[error("bootstrap: {0}")]
    Bootstrap(#[from] ConsensusError),
    /// The data dir holds log entries of a feature level this binary does
    /// not speak (it ran a newer release after the level was raised).
    #[error(
        "the data in {path} was written by a newer release: {what}. This binary cannot apply it and does not skip \
         it: start this node on a release of the cluster's feature level (README, \"Upgrading\")"
    )]
    TooNew { path: String, what: String },
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
    ///
    /// A node is made of, in order: its listeners, its storage, its TLS
    /// identity, Raft, the handles over Raft (consensus, replicated time,
    /// disk space), the `--peers` check, the leader's background work
    /// (dispatcher, collector, ticker, naming), the gRPC services and their server, the watchers (health,
    /// leader changes, disk stalls, the timekeeper), the HTTP endpoint, and
    /// last the cluster's birth or a restore.
    pub async fn start(config: NodeConfig, listener: Option<TcpListener>) -> Result<RunningNode, NodeError> {
        RunningNode::start_in(config, listener, env::Environment::production()).await
    }

    /// [`RunningNode::start`] in `env`: the production one, or the
    /// simulation's (its clock, network and log syncing).
    pub async fn start_in(
        config: NodeConfig,
        listener: Option<TcpListener>,
        env: env::Environment,
    ) -> Result<RunningNode, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let config = Arc::new(rejoin::identity(config)?);
        let listeners = Listeners::bind(&config, listener, env.incoming).await?;
        let (db, store, pending_restore) = open_storage(&config)?;
        let tls = load_tls(&config)?;
        let pool = ChannelPool::with_tls(tls.as_ref().and_then(|t| t.dial())).with_dialer(env.dialer);
        let started = start_raft(&config, db, pool.clone(), store.damage().clone(), env.wal_sync).await?;
        let life = Lifetime { shutdown: CancellationToken::new(), tasks: TaskTracker::new() };
        let core = Core::build(&config, &started, store, pool, pending_restore.is_some(), &life, env.wall);
        birth::check_peers(&config, &core.consensus).await?;
        let scheduler = spawn_leader_work(&config, &core);
        let services = Services::build(&config, &core, scheduler, tls.is_some());
        life.tasks.spawn(services.cluster.membership.clone().finish_replacements(life.shutdown.clone()));
        serve_grpc(&config, &core, &started, &services, tls.clone(), listeners.grpc);
        spawn_watchers(&config, &core, &started);
        if let Some(listener) = listeners.http {
            serve_http(&config, listener, &core, &services, tls);
        }
        if config.bootstrap {
            birth::bootstrap(&config, &core.consensus).await?;
        }
        if let Some(path) = pending_restore {
            let importer = restore::Importer { consensus: core.consensus.clone(), clock: core.clock.clone() };
            life.tasks.spawn(importer.run(path, life.shutdown.clone()));
        }
        tracing::info!(id = config.id, addr = %listeners.local_addr, "node started");
        Ok(RunningNode {
            local_addr: listeners.local_addr,
            consensus: core.consensus,
            store: core.store,
            shutdown: life.shutdown,
            tasks: life.tasks,
        })
    }

    /// Resolves once this node's Raft has stopped on a fatal (storage)
    /// error, or a read found damaged data, with its cause; the node then
    /// must be shut down. `None` if Raft stopped normally.
    pub async fn failure(&self) -> Option<String> {
        tokio::select! {
            cause = self.consensus.failure() => cause,
            cause = self.store.damage().wait() => Some(cause),
            cause = self.consensus.identity().versions().wait_too_new() => Some(cause),
        }
    }

    /// Why this node must stop because a peer sent entries of a feature
    /// level this binary does not speak, if it must (exit code
    /// `EXIT_TOO_NEW`, not the I/O one).
    pub fn too_new(&self) -> Option<String> {
        self.consensus.identity().versions().too_new()
    }

    /// The damaged data this node found while running, if any (then it
    /// must stop, and exit with the damaged-data code, not the I/O one).
    pub fn damaged(&self) -> Option<String> {
        self.store.damage().found()
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

/// What every long-lived task of the node belongs to: the token that stops
/// them and the tracker that shutdown waits on.
#[derive(Clone)]
pub(crate) struct Lifetime {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// The node's sockets, bound before anything else so that a taken port
/// fails the start at once.
struct Listeners {
    grpc: GrpcListener,
    /// The address the gRPC server is bound to (port 0 resolved).
    local_addr: std::net::SocketAddr,
    /// The operator's HTTP endpoint, if `--http-listen`.
    http: Option<TcpListener>,
}

/// Where the gRPC server's connections come from.
enum GrpcListener {
    Tcp(TcpListener),
    /// The simulation's sockets (plaintext only).
    Other(env::Incoming),
}

impl Listeners {
    async fn bind(
        config: &NodeConfig,
        listener: Option<TcpListener>,
        incoming: Option<env::Incoming>,
    ) -> Result<Listeners, NodeError> {
        let listen_err = |addr: &str| {
            let addr = addr.to_string();
            move |source| NodeError::Listen { addr, source }
        };
        let (grpc, local_addr) = match (listener, incoming) {
            (_, Some(incoming)) => {
                let local_addr = incoming.local_addr;
                (GrpcListener::Other(incoming), local_addr)
            }
            (Some(l), None) => {
                let local_addr = l.local_addr().map_err(listen_err(&config.listen))?;
                (GrpcListener::Tcp(l), local_addr)
            }
            (None, None) => {
                let l = TcpListener::bind(&config.listen).await.map_err(listen_err(&config.listen))?;
                let local_addr = l.local_addr().map_err(listen_err(&config.listen))?;
                (GrpcListener::Tcp(l), local_addr)
            }
        };
        let http = match &config.http_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(listen_err(addr))?),
            None => None,
        };
        Ok(Listeners { grpc, local_addr, http })
    }
}

/// TLS: the files load now (a node does not start with bad ones), and
/// again on SIGHUP or when they change.
fn load_tls(config: &NodeConfig) -> Result<Option<crate::tls::Acceptor>, NodeError> {
    if config.plaintext_exposed() {
        tracing::warn!(listen = %config.listen, "serving PLAINTEXT on an address other hosts can reach (--insecure): anyone there can call any API");
    }
    match &config.tls {
        Some(files) => crate::tls::Acceptor::new(files.clone()).map(Some).map_err(|e| NodeError::Config(e.to_string())),
        None => Ok(None),
    }
}

/// Verify the data dir and start Raft over it; a read that finds damaged
/// data raises `damage`.
async fn start_raft(
    config: &NodeConfig,
    db: Arc<rocksdb::DB>,
    pool: ChannelPool,
    damage: crate::store::Damage,
    wal_sync: crate::raft::log_store::WalSync,
) -> Result<crate::raft::Started, NodeError> {
    let corrupt = |what: String| NodeError::Corrupt { path: config.data_dir.display().to_string(), what };
    let storage = crate::raft::Storage { db, data_dir: &config.data_dir, wal_sync };
    crate::raft::start(config.id, config.advertise_addr(), &config.raft, storage, pool, damage).await.map_err(|e| {
        match e {
            crate::raft::StartError::Corrupt(c) if c.too_new => {
                NodeError::TooNew { path: config.data_dir.display().to_string(), what: c.what }
            }
            crate::raft::StartError::Corrupt(c) => corrupt(c.what),
            crate::raft::StartError::Store(e) if e.is_damage() => corrupt(e.to_string()),
            other => NodeError::Raft(other),
        }
    })
}

/// The handles over Raft and storage that the rest of the node is built
/// from.
struct Core {
    consensus: Consensus,
    store: TaskStore,
    clock: ProposerClock,
    disk: DiskSpace,
    pool: ChannelPool,
    index: crate::store::SharedIndex,
    applied: tokio::sync::watch::Receiver<crate::store::Applied>,
    /// Where every long-lived task belongs.
    life: Lifetime,
}

impl Core {
    fn build(
        config: &NodeConfig,
        started: &crate::raft::Started,
        store: TaskStore,
        pool: ChannelPool,
        restoring: bool,
        life: &Lifetime,
        wall: WallClock,
    ) -> Core {
        let consensus = Consensus::new(
            config.id,
            started.raft.clone(),
            config.timing.clone(),
            life.shutdown.clone(),
            restoring,
            started.identity.clone(),
        );
        let clock = ProposerClock::new(config.id, wall, config.max_clock_offset, started.applied.clone());
        let disk = DiskSpace::new(config.id, config.data_dir.clone(), config.min_free_disk);
        disk.refresh();
        Core {
            consensus,
            store,
            clock,
            disk,
            pool,
            index: started.index.clone(),
            applied: started.applied.clone(),
            life: life.clone(),
        }
    }
}

/// The leader-side work every node runs (each acts only while it leads):
/// the dispatcher, the retention collector, the periodic ticker, and the
/// naming of a cluster that has no ID yet.
/// Returns the dispatcher's handle.
fn spawn_leader_work(config: &NodeConfig, core: &Core) -> (Scheduler, Collector) {
    let life = &core.life;
    let (scheduler, scheduler_rx) = Scheduler::channel();
    let deps = Deps {
        consensus: core.consensus.clone(),
        store: core.store.clone(),
        index: core.index.clone(),
        clock: core.clock.clone(),
        priority_aging: config.priority_aging,
        applied: core.applied.clone(),
        tasks: life.tasks.clone(),
    };
    life.tasks.spawn(Dispatcher::new(deps, scheduler_rx, scheduler.sender()).run(life.shutdown.clone()));
    let collector = Collector {
        consensus: core.consensus.clone(),
        store: core.store.clone(),
        index: core.index.clone(),
        clock: core.clock.clone(),
        config: collector_config(&config.retention),
    };
    life.tasks.spawn(collector.clone().run(life.shutdown.clone()));
    let ticker = Ticker {
        consensus: core.consensus.clone(),
        index: core.index.clone(),
        clock: core.clock.clone(),
        disk: core.disk.clone(),
    };
    life.tasks.spawn(ticker.run(life.shutdown.clone()));
    life.tasks.spawn(birth::name_cluster(core.consensus.clone(), life.shutdown.clone()));
    if let Some(level) = upgrade::born_level(&config.data_dir) {
        core.consensus.identity().versions().set_born(level);
    }
    life.tasks.spawn(upgrade::raise_new_cluster(core.consensus.clone(), life.shutdown.clone()));
    (scheduler, collector)
}

/// Serve every gRPC service on `listener`, behind the node's layers:
/// metrics, the guard (who may call what) and the message size status
/// fix-up; over TLS when the node has it.
fn serve_grpc(
    config: &NodeConfig,
    core: &Core,
    started: &crate::raft::Started,
    services: &Services,
    tls: Option<crate::tls::Acceptor>,
    listener: GrpcListener,
) {
    let life = &core.life;
    let disk = core.disk.clone();
    let raft_service = RaftService::server(
        started.raft.clone(),
        started.snapshots.clone(),
        core.index.clone(),
        life.shutdown.clone(),
        Arc::new(move || disk.room()),
        core.consensus.identity().clone(),
    );
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    life.tasks.spawn(health::report(core.consensus.watch(), health_reporter, life.shutdown.clone()));
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .max_concurrent_streams(Some(config.limits.max_streams_per_connection))
        .layer(observe::GrpcMetricsLayer)
        .layer(guard::GuardLayer {
            tls: tls.clone(),
            index: core.index.clone(),
            clock: core.clock.clone(),
            throttle: Arc::default(),
            identity: core.consensus.identity().clone(),
        })
        .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted))
        .add_service(health_service)
        .add_service(raft_service)
        .add_service(services.scheduler.clone().into_server())
        .add_service(services.cluster.clone().into_server())
        .add_service(services.auth.clone().into_server())
        .add_service(services.worker.clone().into_server());
    let router = match reflection() {
        Ok((v1, v1alpha)) => router.add_service(v1).add_service(v1alpha),
        Err(e) => {
            // The descriptor set is compiled in: this cannot fail but on a
            // broken build, and the node serves without it.
            tracing::error!(error = %e, "gRPC reflection is not served");
            router
        }
    };
    let stop = life.shutdown.clone();
    let listener = match listener {
        GrpcListener::Tcp(l) => l,
        GrpcListener::Other(incoming) => {
            life.tasks.spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming.connections, stop.cancelled()).await {
                    tracing::error!(error = %e, "grpc server stopped");
                }
            });
            return;
        }
    };
    // Nagle's algorithm with delayed ACKs adds ~40 ms to replies that span
    // several segments: disable it on every accepted connection.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)));
    match tls {
        Some(acceptor) => {
            let incoming = crate::tls::incoming(
                incoming,
                acceptor.clone(),
                false,
                HANDSHAKE_TIMEOUT,
                &life.tasks,
                life.shutdown.clone(),
            );
            life.tasks.spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
                    tracing::error!(error = %e, "grpc server stopped");
                }
            });
            life.tasks.spawn(acceptor.watch(Duration::from_secs(2), life.shutdown.clone()));
        }
        None => {
            life.tasks.spawn(async move {
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
                    tracing::error!(error = %e, "grpc server stopped");
                }
            });
        }
    }
}

/// gRPC server reflection (v1 and v1alpha), from the compiled descriptors.
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// The node's watchers: leader changes (for the metrics), a disk whose
/// syncs stall (the leader hands over), and the timekeeper (clock samples,
/// free disk space).
fn spawn_watchers(config: &NodeConfig, core: &Core, started: &crate::raft::Started) {
    let life = &core.life;
    life.tasks.spawn(observe::count_leader_changes(core.consensus.watch(), life.shutdown.clone()));
    life.tasks.spawn(stall::watch(
        core.consensus.clone(),
        started.sync_watch.clone(),
        config.timing.fsync_stall,
        life.shutdown.clone(),
    ));
    life.tasks.spawn(timekeeper::run(
        core.consensus.clone(),
        core.pool.clone(),
        core.clock.clone(),
        core.disk.clone(),
        life.shutdown.clone(),
    ));
}

/// The operator's HTTP endpoint: the web console, `/metrics`, `/healthz`
/// and `/readyz`.
fn serve_http(
    config: &NodeConfig,
    listener: TcpListener,
    core: &Core,
    services: &Services,
    tls: Option<crate::tls::Acceptor>,
) {
    let life = &core.life;
    let state = crate::api::http::HttpState::new(
        core.consensus.clone(),
        core.store.clone(),
        core.index.clone(),
        core.clock.clone(),
    )
    .with_open_metrics(config.open_metrics);
    let console = crate::api::console::ConsoleState::new(
        services.scheduler.clone(),
        services.cluster.clone(),
        &life.tasks,
        life.shutdown.clone(),
    )
    .with_secure_cookies(tls.is_some());
    let router = crate::api::http::router(state).merge(crate::api::console::router(console));
    tracing::info!(addr = ?listener.local_addr().ok(), "serving the web console, /metrics, /healthz and /readyz");
    life.tasks.spawn(crate::api::http::serve(listener, tls, router, life.tasks.clone(), life.shutdown.clone()));
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
    let db = store::open_db(&config.data_dir.join("db")).map_err(|e| match e {
        e if e.is_damage() => NodeError::Corrupt { path: config.data_dir.display().to_string(), what: e.to_string() },
        e => NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            message: format!("{e} (is another drover process using it?)"),
        },
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

/// The public gRPC services, each built from the narrow handles it uses.
struct Services {
    scheduler: Arc<SchedulerService>,
    cluster: Arc<ClusterService>,
    auth: Arc<AuthService>,
    worker: Arc<WorkerService>,
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
    fn build(config: &NodeConfig, core: &Core, (dispatcher, collector): (Scheduler, Collector), tls: bool) -> Services {
        let forward = Forwarder { consensus: core.consensus.clone(), pool: core.pool.clone() };
        let membership = Membership {
            consensus: core.consensus.clone(),
            store: core.store.clone(),
            clock: core.clock.clone(),
            pool: core.pool.clone(),
            admin: Arc::default(),
            tasks: core.life.tasks.clone(),
        };
        let scheduler = Arc::new(SchedulerService {
            forward: forward.clone(),
            store: core.store.clone(),
            index: core.index.clone(),
            clock: core.clock.clone(),
            limits: config.limits.clone(),
            auto_register: config.auto_register,
            disk: core.disk.clone(),
            collector,
            dispatcher: dispatcher.clone(),
        });
        let cluster = Arc::new(ClusterService {
            forward: forward.clone(),
            membership,
            store: core.store.clone(),
            clock: core.clock.clone(),
            data_dir: config.data_dir.clone(),
            disk: core.disk.clone(),
            tls,
            insecure_exposed: config.plaintext_exposed(),
        });
        let auth = Arc::new(AuthService {
            forward,
            scheduler: scheduler.clone(),
            peer_tls: config.tls.as_ref().is_some_and(|t| t.peer_ca.is_some()),
        });
        let worker = Arc::new(WorkerService {
            scheduler: dispatcher,
            limits: config.limits.clone(),
            buffer: config.worker_buffer,
            tasks: core.life.tasks.clone(),
        });
        Services { scheduler, cluster, auth, worker }
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
