//! A task row as stored in the state machine.

use serde::{Deserialize, Serialize};

/// Lifecycle state of a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for its run-at time.
    Scheduled,
    /// Due and queued for a worker.
    Ready,
    /// Leased to a worker.
    Running,
    /// Waiting for a retry after a retriable failure or an expired lease.
    RetryWait,
    Succeeded,
    Failed,
    /// Out of attempts: in the dead-letter queue.
    Dead,
    Cancelled,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::RetryWait => "retry_wait",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// A task row. The payload is stored apart (see [`super::keys::payload`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: u64,
    pub callback: String,
    pub priority: u8,
    pub state: TaskState,
    /// When the task becomes runnable, Unix ms (replicated clock).
    pub run_at_ms: u64,
    /// When the creating entry was applied, Unix ms (replicated clock).
    pub created_at_ms: u64,
    pub attempts: u32,
    pub payload_size: u64,
    pub idempotency_key: Option<String>,
    /// Log index of the entry that created the task.
    pub created_index: u64,
}
