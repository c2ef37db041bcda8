//! The worker SDK: run handlers for callbacks, with leases renewed in the
//! background and self-fencing.
//!
//! ```no_run
//! use drover::worker::{TaskResult, Worker};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), drover::worker::WorkerError> {
//! let shutdown = CancellationToken::new();
//! Worker::builder(["127.0.0.1:7001", "127.0.0.1:7002"])
//!     .handle("send_email", 8, |ctx: drover::worker::TaskContext| async move {
//!         // ctx.fencing_token goes to downstream systems with every write.
//!         println!("task {} attempt {} token {}", ctx.task_id, ctx.attempt, ctx.fencing_token);
//!         TaskResult::Success(b"sent".to_vec())
//!     })
//!     .run(shutdown)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Guarantees the SDK gives a handler:
//! - it runs only while its lease is valid: the lease is renewed by batched
//!   heartbeats, and if a renewal is not acknowledged before the lease would
//!   lapse (measured on this process's monotonic clock from when the
//!   renewal was sent), the handler is cancelled, is never polled again,
//!   and its outcome is not reported;
//! - `ctx.cancel` fires when the task is cancelled, times out, or the
//!   worker shuts down past its grace period;
//! - completions are retried across reconnects until the leader answers.
//!
//! Layout: [`runtime`] (connection, heartbeats, completions), [`shell`]
//! (run a command per task), [`builtin`] (no-op and recording handlers for
//! benchmarks and tests).

pub mod builtin;
mod runtime;
pub mod shell;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a handler returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult {
    /// Done; the bytes are stored as the task's result.
    Success(Vec<u8>),
    /// Failed, may succeed later: retried with backoff (no sooner than
    /// `retry_after`) until the callback's max attempts.
    Retry { error: String, retry_after: Option<Duration> },
    /// Failed for good: no retry.
    Fatal(String),
}

impl TaskResult {
    pub fn retry(error: impl Into<String>) -> Self {
        TaskResult::Retry { error: error.into(), retry_after: None }
    }
}

/// Everything a handler gets about the task it runs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub task_id: u64,
    pub callback: String,
    /// 1 for the first run.
    pub attempt: u32,
    /// Strictly increasing per task; hand it to downstream systems so they
    /// can reject writes from a stale run.
    pub fencing_token: u64,
    pub payload: Vec<u8>,
    pub priority: u32,
    /// Longest this attempt may run.
    pub timeout: Duration,
    /// For a task scheduled after others: how many parents ended in each
    /// state, and their results (those that fit in 4 MiB; `omitted` counts
    /// the others, which `Client::get` fetches).
    pub parent_results: Option<crate::domain::dependency::Upstream>,
    /// The W3C trace context of this attempt: the handler's own span's
    /// when this process exports spans (the handler runs inside that
    /// span, a child of the task's context, so its own `tracing` spans
    /// join the task's trace), else the context the task came with. Pass
    /// it on to what the handler calls (the shell worker sets
    /// `TRACEPARENT`). `None` for a task scheduled without one.
    pub trace: Option<crate::domain::trace::TraceContext>,
    /// Contexts the attempt's span links to: its parents' (a task
    /// scheduled after others) or its periodic schedule's.
    pub links: Vec<crate::domain::trace::TraceContext>,
    /// Fires when the handler should stop (cancelled, timed out, lease
    /// lost, shutdown).
    pub cancel: CancellationToken,
    lease: watch::Receiver<Instant>,
}

impl TaskContext {
    /// When the lease lapses unless renewed, on this process's clock.
    pub fn lease_deadline(&self) -> Instant {
        *self.lease.borrow()
    }

    /// Whether the lease is still valid now. Check it right before an
    /// external side effect that the fencing token cannot protect.
    pub fn lease_valid(&self) -> bool {
        Instant::now() < self.lease_deadline()
    }
}

/// A task handler. Implemented for every `Fn(TaskContext) -> Future`.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, ctx: TaskContext) -> Pin<Box<dyn Future<Output = TaskResult> + Send>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TaskResult> + Send + 'static,
{
    fn call(&self, ctx: TaskContext) -> Pin<Box<dyn Future<Output = TaskResult> + Send>> {
        Box::pin(self(ctx))
    }
}

/// SDK errors: only configuration mistakes end `run`; network trouble is
/// retried forever (until shutdown).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no endpoint: give at least one HOST:PORT")]
    NoEndpoint,
    #[error("no handler: register at least one callback with .handle()")]
    NoHandler,
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Counters of what a worker did, returned by `run`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Handlers stopped because their lease lapsed (not reported).
    pub fenced: u64,
    /// Completions the leader refused (e.g. a stale token).
    pub rejected: u64,
}

pub struct Worker;

impl Worker {
    pub fn builder<I, S>(endpoints: I) -> WorkerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        WorkerBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            id: None,
            handlers: HashMap::new(),
            shutdown_grace: Duration::from_secs(30),
            on_ack: None,
            tls: None,
            token: None,
            dialer: None,
        }
    }
}

/// Called with (task id, accepted) when the leader acknowledges a
/// completion.
pub type AckHook = Arc<dyn Fn(u64, bool) + Send + Sync>;

pub struct WorkerBuilder {
    endpoints: Vec<String>,
    id: Option<String>,
    handlers: HashMap<String, (u32, Arc<dyn Handler>)>,
    shutdown_grace: Duration,
    on_ack: Option<AckHook>,
    tls: Option<crate::tls::ClientTls>,
    token: Option<String>,
    /// How to connect, if not over TCP (the simulation's network).
    dialer: Option<crate::net::Dialer>,
}

impl WorkerBuilder {
    /// Connect through `dialer` instead of TCP (the simulation's network).
    pub fn dialer(mut self, dialer: crate::net::Dialer) -> Self {
        self.dialer = Some(dialer);
        self
    }

    /// Authenticate with a bearer token (a grant with the worker role, or
    /// higher, for the callbacks it serves).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Connect over TLS: the CA to trust, and a client certificate for
    /// mutual TLS.
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A stable id lets a restarted worker re-attach its session; default:
    /// hostname-pid-random.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Serve `callback`, running at most `concurrency` tasks of it at once.
    pub fn handle(mut self, callback: impl Into<String>, concurrency: u32, handler: impl Handler) -> Self {
        self.handlers.insert(callback.into(), (concurrency, Arc::new(handler)));
        self
    }

    /// On shutdown, how long running tasks may take to finish before they
    /// are cancelled (and reported as retriable).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Observe acknowledged completions (benchmarks, metrics).
    pub fn on_ack(mut self, hook: impl Fn(u64, bool) + Send + Sync + 'static) -> Self {
        self.on_ack = Some(Arc::new(hook));
        self
    }

    /// Run until `shutdown` fires, then drain gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerStats, WorkerError> {
        if self.endpoints.is_empty() {
            return Err(WorkerError::NoEndpoint);
        }
        if self.handlers.is_empty() {
            return Err(WorkerError::NoHandler);
        }
        if let Some((name, _)) = self.handlers.iter().find(|(_, (c, _))| *c == 0) {
            return Err(WorkerError::Config(format!("concurrency for {name:?} must be at least 1")));
        }
        let id = self.id.unwrap_or_else(default_id);
        let tls = match &self.tls {
            Some(t) => Some(t.load().map_err(|e| WorkerError::Config(e.to_string()))?),
            None => None,
        };
        let pool = crate::net::ChannelPool::with_tls(tls).with_dialer(self.dialer);
        let bearer = crate::net::Bearer::new(self.token.as_deref()).map_err(WorkerError::Config)?;
        let rt = runtime::Runtime::new(self.endpoints, id, self.handlers, self.shutdown_grace, self.on_ack, pool)
            .with_bearer(bearer);
        Ok(rt.run(shutdown).await)
    }
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}
