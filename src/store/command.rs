//! Commands replicated through the Raft log, and the state machine's replies.
//!
//! A command is built on the proposing node (the leader), which stamps it with
//! its clock ([`Command::stamped_at_ms`]). Apply never reads a clock: it
//! advances the replicated clock to `max(now, stamp)` and uses that.

use serde::{Deserialize, Serialize};

/// One Raft log entry's worth of application work.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Proposer's clock when it proposed this command, Unix ms.
    pub stamped_at_ms: u64,
    pub operation: Operation,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create tasks, all in one entry. Each is deduplicated on its
    /// idempotency key.
    Schedule { tasks: Vec<NewTask> },
}

/// A validated task to create. Times are absolute: the proposer resolved any
/// delay against its stamp.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    pub callback: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub priority: u8,
    pub run_at_ms: u64,
    pub idempotency_key: Option<String>,
}

/// The state machine's reply to one entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub enum CommandResponse {
    /// Blank and membership entries.
    #[default]
    None,
    /// One outcome per scheduled task, in request order.
    Scheduled(Vec<ScheduleOutcome>),
    /// The command was not applied (it changes nothing). This is a business
    /// outcome, never a storage failure.
    Rejected(String),
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleOutcome {
    pub task_id: u64,
    /// False when an existing task with the same idempotency key was returned.
    pub created: bool,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.operation {
            Operation::Schedule { tasks } => write!(f, "schedule {} task(s) @{}", tasks.len(), self.stamped_at_ms),
        }
    }
}

impl std::fmt::Display for CommandResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandResponse::None => write!(f, "none"),
            CommandResponse::Scheduled(o) => write!(f, "scheduled {} task(s)", o.len()),
            CommandResponse::Rejected(r) => write!(f, "rejected: {r}"),
        }
    }
}
