//! The worker protocol as the scheduler speaks it: domain types, not
//! protobuf. The gRPC edge ([`crate::api`]) converts both ways.

use crate::consensus::Peer;
use crate::domain::Completion;

/// A run of a task: its id and the fencing token of the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskRef {
    pub task_id: u64,
    pub fencing_token: u64,
}

/// A worker's first message.
#[derive(Debug, Clone)]
pub struct Hello {
    pub worker_id: String,
    /// Most tasks of each callback it runs at once.
    pub credits: Vec<(String, u32)>,
    /// What it still runs (after a reconnect): re-attached as a heartbeat.
    pub running: Vec<TaskRef>,
}

/// "These runs are still going": renews their leases.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub seq: u64,
    pub tasks: Vec<TaskRef>,
}

/// From a worker to the scheduler.
#[derive(Debug, Clone)]
pub enum FromWorker {
    Heartbeat(Heartbeat),
    Completion(Completion),
    /// Take no more tasks (graceful shutdown).
    Drain,
}

/// A task handed to a worker.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub task_id: u64,
    pub callback: String,
    pub payload: Vec<u8>,
    /// Its parents' states and results (a task scheduled after others).
    pub upstream: Option<crate::domain::dependency::Upstream>,
    pub attempt: u32,
    pub fencing_token: u64,
    pub lease_ms: u64,
    pub timeout_ms: u64,
    pub priority: u8,
    /// The context the handler's span starts under, and the ones it links
    /// to (see [`crate::store::TaskStore::trace_of`]).
    pub trace: Option<crate::domain::trace::TraceContext>,
    pub links: Vec<crate::domain::trace::TraceContext>,
}

/// A connected worker, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub worker_id: String,
    /// (callback, credits, tasks it runs now), by callback.
    pub callbacks: Vec<(String, u32, Vec<u64>)>,
    pub draining: bool,
    pub idle_ms: u64,
}

/// From the scheduler to a worker.
#[derive(Debug, Clone)]
pub enum ToWorker {
    Welcome {
        node_id: u64,
        heartbeat_interval_ms: u64,
    },
    Assignment(Assignment),
    HeartbeatAck {
        seq: u64,
        renewed: Vec<TaskRef>,
        lost: Vec<TaskRef>,
    },
    CompletionAck {
        task_id: u64,
        fencing_token: u64,
        accepted: bool,
        reason: String,
    },
    /// Stop this run (the task was cancelled).
    Cancel(TaskRef),
    /// This node does not lead: reconnect to the leader, if known.
    Redirect(Option<Peer>),
    /// The credential the stream was opened with was revoked or expired:
    /// the stream ends with this reason (`UNAUTHENTICATED`).
    Revoked(String),
}
