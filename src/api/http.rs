//! The operator's HTTP endpoint (`drover server --http-listen`): `/metrics`
//! (Prometheus text format), `/healthz` (the process is up) and `/readyz`
//! (it knows a leader and has applied what it knows committed).
//!
//! With auth on, `/metrics` needs a reader grant for every callback (a
//! bearer token, or a client certificate over TLS), unless the node runs
//! with `--open-metrics`; `/healthz` and `/readyz` stay open. Every
//! connection carries its client certificate's subject ([`ClientCert`]),
//! for `/metrics` and the console.
//!
//! The gauges are read from the node's state at each scrape (see
//! [`crate::metrics`]); the counters and histograms are kept as things
//! happen.

use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics::gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::access::{self, Need};
use crate::consensus::clock::ProposerClock;
use crate::consensus::Consensus;
use crate::domain::auth::Role;
use crate::domain::GateMode;
use crate::metrics as m;
use crate::store::index::{self, PRIORITIES};
use crate::store::{SharedIndex, TaskStore};
use crate::tls::Acceptor;

/// What the endpoint reads.
#[derive(Clone)]
pub struct HttpState {
    pub consensus: Consensus,
    pub store: TaskStore,
    pub index: SharedIndex,
    pub clock: ProposerClock,
    process: std::sync::Arc<metrics_process::Collector>,
    /// Serve `/metrics` without credentials even with auth on.
    open_metrics: bool,
}

impl HttpState {
    pub fn new(consensus: Consensus, store: TaskStore, index: SharedIndex, clock: ProposerClock) -> Self {
        m::handle();
        let process = metrics_process::Collector::new("drover_");
        process.describe();
        HttpState { consensus, store, index, clock, process: std::sync::Arc::new(process), open_metrics: false }
    }

    /// Serve `/metrics` to anyone, even with auth on (`--open-metrics`).
    pub fn with_open_metrics(mut self, open: bool) -> Self {
        self.open_metrics = open;
        self
    }
}

/// The subject of the client certificate a connection presented (verified
/// against the client CA during the TLS handshake); `None` over plaintext
/// or without one. Handlers read it as `ConnectInfo<ClientCert>`.
#[derive(Debug, Clone, Default)]
pub struct ClientCert(pub Option<String>);

impl ClientCert {
    /// The subject a request's connection presented.
    pub fn of<B>(req: &http::Request<B>) -> Option<String> {
        req.extensions().get::<ConnectInfo<ClientCert>>().and_then(|c| c.0 .0.clone())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientCert {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientCert(crate::tls::client_subject(stream.io().get_ref().1.peer_certificates()))
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for ClientCert {
    fn connect_info(_: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        ClientCert(None)
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown`; over TLS when the node
/// serves TLS.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Acceptor>,
    router: Router,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let stop = shutdown.clone().cancelled_owned();
    let served = match tls {
        None => {
            let service = router.into_make_service_with_connect_info::<ClientCert>();
            axum::serve(listener, service).with_graceful_shutdown(stop).await
        }
        Some(acceptor) => {
            let local = listener.local_addr();
            let tcp = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let connections = crate::tls::incoming(tcp, acceptor, true, Duration::from_secs(10), &tasks, shutdown);
            let service = router.into_make_service_with_connect_info::<ClientCert>();
            axum::serve(TlsListener { connections, local }, service).with_graceful_shutdown(stop).await
        }
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP endpoint stopped");
    }
}

/// Connections after their TLS handshake, as axum's listener.
pub struct TlsListener {
    connections: tokio_stream::wrappers::ReceiverStream<Result<crate::tls::TlsConnection, std::io::Error>>,
    local: std::io::Result<std::net::SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = crate::tls::TlsConnection;
    type Addr = Option<std::net::SocketAddr>;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt;
        loop {
            match self.connections.next().await {
                Some(Ok(conn)) => {
                    let addr = conn.get_ref().0.peer_addr().ok();
                    return (conn, addr);
                }
                Some(Err(_)) => continue,
                // Shutting down: wait for axum's graceful shutdown.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(a) => Ok(Some(*a)),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    let v = s.consensus.view();
    match v.leader {
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader known\n".to_string()),
        Some(_) if v.applied_index < v.committed_index => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("catching up: applied {} of {} committed\n", v.applied_index, v.committed_index),
        ),
        Some(leader) => (StatusCode::OK, format!("ready: leader {leader}, applied {}\n", v.applied_index)),
    }
}

/// With auth on (and without `--open-metrics`), `/metrics` needs a reader
/// grant for every callback: the metrics name every callback.
fn may_scrape(s: &HttpState, req: &axum::extract::Request) -> Result<(), (StatusCode, String)> {
    if s.open_metrics {
        return Ok(());
    }
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let now = s.clock.stamp();
    let principal = {
        let index = index::lock(&s.index);
        access::http_principal(index.auth(), authorization, ClientCert::of(req), now)
    };
    let refused = |code, e: crate::api::ApiError| {
        tracing::warn!(path = "/metrics", reason = %e, "refused a scrape");
        Err((code, format!("{e}\n")))
    };
    match principal {
        Ok(None) => Ok(()),
        Ok(Some(p)) => match access::authorize(&p, Need::Role(Role::Reader), "/metrics")
            .and_then(|()| p.check_unscoped("the metrics name every callback"))
        {
            Ok(()) => Ok(()),
            Err(e) => refused(StatusCode::FORBIDDEN, e),
        },
        Err(e) => refused(StatusCode::UNAUTHORIZED, e),
    }
}

async fn metrics_page(State(s): State<HttpState>, req: axum::extract::Request) -> axum::response::Response {
    if let Err(refusal) = may_scrape(&s, &req) {
        return refusal.into_response();
    }
    let state = s.clone();
    // RocksDB property reads and /proc reads: off the async runtime.
    let _ = crate::blocking::run(move || refresh(&state)).await;
    let handle = m::handle();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

/// Set every scrape-time gauge.
fn refresh(s: &HttpState) {
    raft_gauges(&s.consensus);
    queue_gauges(&s.index, s.clock.stamp());
    rocksdb_gauges(&s.store);
    s.process.collect();
}

fn raft_gauges(consensus: &Consensus) {
    let v = consensus.view();
    if let Some(id) = consensus.identity().cluster_id() {
        gauge!(m::CLUSTER_INFO, "cluster_id" => id.to_string(), "node_id" => v.id.to_string()).set(1.0);
    }
    gauge!(m::RAFT_HAS_LEADER).set(f64::from(u8::from(v.leader.is_some())));
    gauge!(m::RAFT_IS_LEADER).set(f64::from(u8::from(v.leader == Some(v.id))));
    gauge!(m::RAFT_TERM).set(v.term as f64);
    gauge!(m::RAFT_COMMITTED).set(v.committed_index as f64);
    gauge!(m::RAFT_APPLIED).set(v.applied_index as f64);
    gauge!(m::RAFT_LAST_LOG).set(v.last_log_index as f64);
    let leading = v.leader == Some(v.id);
    match v.quorum_ack_ms.filter(|_| leading) {
        Some(ms) => gauge!(m::RAFT_QUORUM_ACK_AGE).set(Duration::from_millis(ms).as_secs_f64()),
        None => gauge!(m::RAFT_QUORUM_ACK_AGE).set(0.0),
    }
    for (peer, matched) in &v.matched {
        if *peer == v.id {
            continue;
        }
        let lag = match (leading, matched) {
            (true, Some(i)) => v.last_log_index.saturating_sub(*i) as f64,
            (true, None) => v.last_log_index as f64,
            (false, _) => 0.0,
        };
        gauge!(m::RAFT_REPLICATION_LAG, "peer" => peer.to_string()).set(lag);
    }
}

fn queue_gauges(shared: &SharedIndex, now_ms: u64) {
    let index = index::lock(shared);
    for c in index.callbacks() {
        let depths = index.depths(&c.name, now_ms);
        for (p, (ready, scheduled)) in depths.iter().enumerate().take(PRIORITIES) {
            let priority = p.to_string();
            gauge!(m::QUEUE_DEPTH, "callback" => c.name.clone(), "state" => "ready", "priority" => priority.clone())
                .set(*ready as f64);
            gauge!(m::QUEUE_DEPTH, "callback" => c.name.clone(), "state" => "scheduled", "priority" => priority)
                .set(*scheduled as f64);
        }
        let age = index.oldest_ready(&c.name, now_ms).map_or(0, |at| now_ms.saturating_sub(at));
        gauge!(m::OLDEST_READY_AGE, "callback" => c.name.clone()).set(age as f64 / 1000.0);
        let running = index.queues(&c.name).map_or(0, |q| q.running);
        gauge!(m::RUNNING, "callback" => c.name.clone()).set(running as f64);
    }
    let (mut paused, mut dropping) = (0u32, 0u32);
    for g in index.gates().filter(|g| g.active(now_ms)) {
        match g.mode {
            GateMode::Pause => paused += 1,
            GateMode::Drop => dropping += 1,
        }
    }
    gauge!(m::GATES, "mode" => "pause").set(f64::from(paused));
    gauge!(m::GATES, "mode" => "drop").set(f64::from(dropping));
}

fn rocksdb_gauges(store: &TaskStore) {
    let db = store.db();
    let Some(sm) = db.cf_handle(crate::store::keys::CF_SM) else { return };
    for (name, property) in [
        (m::ROCKSDB_LIVE_DATA, "rocksdb.estimate-live-data-size"),
        (m::ROCKSDB_PENDING_COMPACTION, "rocksdb.estimate-pending-compaction-bytes"),
        (m::ROCKSDB_MEMTABLES, "rocksdb.cur-size-all-mem-tables"),
    ] {
        if let Ok(Some(v)) = db.property_int_value_cf(sm, property) {
            gauge!(name).set(v as f64);
        }
    }
}
