//! Format-1 layouts of the records that format 2 changed, read only.
//!
//! Format 2 added task collections, callback rate limits and retention,
//! and the state of a scheduled task to a schedule's answer. bincode is
//! positional, so a record written by an earlier build is decoded with the
//! layout it was written in (these structs, field for field) and converted.
//! Nothing ever writes these.

use serde::{Deserialize, Serialize};

use super::callback::{CallbackConfig, Retention};
use super::command::*;
use super::task::{Task, TaskState, Transition};
use crate::encoding::{decode_raw, Record};

type Decoded<T> = Result<T, bincode::error::DecodeError>;

#[derive(Serialize, Deserialize)]
pub struct TaskV1 {
    pub id: u64,
    pub callback: String,
    pub priority: u8,
    pub state: TaskState,
    pub run_at_ms: u64,
    pub created_at_ms: u64,
    pub attempts: u32,
    pub payload_size: u64,
    pub idempotency_key: Option<String>,
    pub created_index: u64,
    pub fencing_token: u64,
    pub worker: Option<String>,
    pub last_error: Option<String>,
    pub result_size: Option<u64>,
    pub cancel_requested: bool,
    pub history: Vec<Transition>,
}

impl From<TaskV1> for Task {
    fn from(t: TaskV1) -> Self {
        Task {
            id: t.id,
            callback: t.callback,
            priority: t.priority,
            state: t.state,
            run_at_ms: t.run_at_ms,
            created_at_ms: t.created_at_ms,
            attempts: t.attempts,
            payload_size: t.payload_size,
            idempotency_key: t.idempotency_key,
            created_index: t.created_index,
            fencing_token: t.fencing_token,
            worker: t.worker,
            last_error: t.last_error,
            result_size: t.result_size,
            cancel_requested: t.cancel_requested,
            history: t.history,
            collection: None,
            schedule: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct CallbackConfigV1 {
    pub name: String,
    pub max_attempts: u32,
    pub lease_ms: u64,
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl From<CallbackConfigV1> for CallbackConfig {
    fn from(c: CallbackConfigV1) -> Self {
        CallbackConfig {
            name: c.name,
            max_attempts: c.max_attempts,
            lease_ms: c.lease_ms,
            timeout_ms: c.timeout_ms,
            concurrency: c.concurrency,
            backoff_initial_ms: c.backoff_initial_ms,
            backoff_max_ms: c.backoff_max_ms,
            rate: None,
            retention: Retention::default(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub struct NewTaskV1 {
    pub callback: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub priority: u8,
    pub run_at_ms: u64,
    pub idempotency_key: Option<String>,
}

impl From<NewTaskV1> for NewTask {
    fn from(t: NewTaskV1) -> Self {
        NewTask {
            callback: t.callback,
            payload: t.payload,
            priority: t.priority,
            run_at_ms: t.run_at_ms,
            idempotency_key: t.idempotency_key,
            collection: None,
        }
    }
}

/// Format 1's operations, in their variant order.
#[derive(Serialize, Deserialize)]
pub enum OperationV1 {
    Schedule { tasks: Vec<NewTaskV1>, auto_register: bool },
    RegisterCallback(CallbackConfigV1),
    Assign { assignments: Vec<Assignment> },
    Complete { completions: Vec<Completion> },
    Expire { leases: Vec<Expiry> },
    Cancel { task_id: u64 },
    Redrive { target: Target },
    Purge { target: Target },
    RetireNode { node_id: u64 },
    Import { records: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> },
    Release { leases: Vec<Expiry> },
    ScheduleRequest { request_id: RequestId, tasks: Vec<NewTaskV1>, auto_register: bool },
}

#[derive(Serialize, Deserialize)]
pub struct CommandV1 {
    pub stamped_at_ms: u64,
    pub operation: OperationV1,
}

fn tasks(v: Vec<NewTaskV1>) -> Vec<NewTask> {
    v.into_iter().map(NewTask::from).collect()
}

impl From<CommandV1> for Command {
    fn from(c: CommandV1) -> Self {
        use OperationV1 as V1;
        let operation = match c.operation {
            V1::Schedule { tasks: t, auto_register } => Operation::Schedule { tasks: tasks(t), auto_register },
            V1::RegisterCallback(config) => Operation::RegisterCallback(config.into()),
            V1::Assign { assignments } => Operation::Assign { assignments },
            V1::Complete { completions } => Operation::Complete { completions },
            V1::Expire { leases } => Operation::Expire { leases },
            V1::Cancel { task_id } => Operation::Cancel { task_id },
            V1::Redrive { target } => Operation::Redrive { target },
            V1::Purge { target } => Operation::Purge { target },
            V1::RetireNode { node_id } => Operation::RetireNode { node_id },
            V1::Import { records } => Operation::Import { records },
            V1::Release { leases } => Operation::Release { leases },
            V1::ScheduleRequest { request_id, tasks: t, auto_register } => {
                Operation::ScheduleRequest { request_id, tasks: tasks(t), auto_register }
            }
        };
        Command { stamped_at_ms: c.stamped_at_ms, operation }
    }
}

#[derive(Serialize, Deserialize)]
pub struct ScheduleOutcomeV1 {
    pub task_id: u64,
    pub created: bool,
}

#[derive(Serialize, Deserialize)]
pub struct RequestRecordV1 {
    pub at_ms: u64,
    pub outcomes: Vec<ScheduleOutcomeV1>,
}

impl From<RequestRecordV1> for RequestRecord {
    fn from(r: RequestRecordV1) -> Self {
        RequestRecord {
            at_ms: r.at_ms,
            // Format 1 did not record states; a task it scheduled was
            // created `Scheduled` (no gates existed).
            outcomes: r
                .outcomes
                .into_iter()
                .map(|o| ScheduleOutcome { task_id: o.task_id, created: o.created, state: TaskState::Scheduled })
                .collect(),
        }
    }
}

impl Record for Task {
    fn from_format_1(body: &[u8]) -> Decoded<Self> {
        decode_raw::<TaskV1>(body).map(Task::from)
    }
}

impl Record for CallbackConfig {
    fn from_format_1(body: &[u8]) -> Decoded<Self> {
        decode_raw::<CallbackConfigV1>(body).map(CallbackConfig::from)
    }
}

impl Record for Command {
    fn from_format_1(body: &[u8]) -> Decoded<Self> {
        decode_raw::<CommandV1>(body).map(Command::from)
    }
}

impl Record for RequestRecord {
    fn from_format_1(body: &[u8]) -> Decoded<Self> {
        decode_raw::<RequestRecordV1>(body).map(RequestRecord::from)
    }
}

/// Gates and schedules did not exist in format 1: their layout is the
/// same in both.
impl Record for super::gate::Gate {}
impl Record for super::schedule::Schedule {}
impl Record for super::auth::Grant {}
