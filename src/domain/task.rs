//! A task row as stored in the state machine.

use serde::{Deserialize, Serialize};

/// Lifecycle state of a task, as stored.
///
/// `Scheduled` and `RetryWait` tasks are *pending*: queued per (callback,
/// priority) by run-at. A pending task whose run-at has passed is *ready*;
/// readiness is derived from the clock ([`Task::display_state`]), so it costs
/// no Raft write.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    /// Waiting for its run-at time (or ready, once it has passed).
    Scheduled,
    /// Due and queued for a worker. Derived, never stored.
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
    /// Waiting for its parents (task dependencies); neither queued nor
    /// final. Appended last: the encoding of the others is unchanged.
    Waiting,
}

impl TaskState {
    pub const ALL: [TaskState; 9] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Running,
        TaskState::RetryWait,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Dead,
        TaskState::Cancelled,
        TaskState::Waiting,
    ];

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
            TaskState::Waiting => "waiting",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Waiting in a queue.
    pub fn is_pending(self) -> bool {
        matches!(self, TaskState::Scheduled | TaskState::Ready | TaskState::RetryWait)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Succeeded | TaskState::Failed | TaskState::Dead | TaskState::Cancelled)
    }

    /// Byte used in the by-state index.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether rows in this state are in the by-state index. Only the
    /// states that are rare and looked up by state are: running (rebuilt
    /// into the live index at start), dead (the DLQ), failed, cancelled.
    /// The common ones (scheduled, retry-wait, succeeded) would cost two
    /// extra writes per transition on the hot path; listing them scans rows.
    /// Waiting tasks are indexed so that they can be listed and checked.
    pub fn has_state_index(self) -> bool {
        matches!(
            self,
            TaskState::Running | TaskState::Dead | TaskState::Failed | TaskState::Cancelled | TaskState::Waiting
        )
    }
}

/// One entry of a task's history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub state: TaskState,
    /// Replicated time, Unix ms.
    pub at_ms: u64,
    pub attempt: u32,
}

/// Most history entries kept per task (the oldest are dropped).
pub const MAX_HISTORY: usize = 32;

/// A task row. The payload and result are stored apart (see
/// [`super::keys::payload`], [`super::keys::result`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: u64,
    pub callback: String,
    pub priority: u8,
    pub state: TaskState,
    /// When the task becomes runnable (for a retry: when the backoff ends),
    /// Unix ms, replicated clock.
    pub run_at_ms: u64,
    /// When the creating entry was applied, Unix ms (replicated clock).
    pub created_at_ms: u64,
    /// Attempts started so far.
    pub attempts: u32,
    pub payload_size: u64,
    pub idempotency_key: Option<String>,
    /// Log index of the entry that created the task.
    pub created_index: u64,
    /// Token of the current (or last) lease: the log index of the `Assign`
    /// entry. 0 before the first run. Strictly increases per task.
    pub fencing_token: u64,
    /// Worker holding (or that last held) the lease.
    pub worker: Option<String>,
    pub last_error: Option<String>,
    pub result_size: Option<u64>,
    /// A cancel arrived while the task was running.
    pub cancel_requested: bool,
    pub history: Vec<Transition>,
    /// The labelled subset of its callback's tasks it belongs to (gates
    /// and listings select by it).
    pub collection: Option<String>,
    /// The periodic schedule that created it, if any (its final transition
    /// updates the schedule in the same entry).
    pub schedule: Option<String>,
}

impl Task {
    /// The state to show at `now_ms`: pending tasks whose run-at has passed
    /// are `Ready`.
    pub fn display_state(&self, now_ms: u64) -> TaskState {
        match self.state {
            TaskState::Scheduled | TaskState::RetryWait if self.run_at_ms <= now_ms => TaskState::Ready,
            s => s,
        }
    }

    /// When a finished task finished (replicated time): the time of its
    /// last transition, which is the one into its final state.
    pub fn finished_at_ms(&self) -> Option<u64> {
        if !self.state.is_terminal() {
            return None;
        }
        Some(self.history.last().filter(|t| t.state == self.state).map_or(self.created_at_ms, |t| t.at_ms))
    }

    /// Move to `state` at `at_ms`, recording it in the history.
    pub fn transition(&mut self, state: TaskState, at_ms: u64) {
        self.state = state;
        self.history.push(Transition { state, at_ms, attempt: self.attempts });
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
    }
}
