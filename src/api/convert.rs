//! Protobuf <-> domain conversions, in one place at the edge.

use super::ApiError;
use crate::domain::{CallbackConfig, ScheduleOutcome, Target, Task, TaskState};
use crate::pb;

pub fn outcome_to_pb(o: ScheduleOutcome) -> pb::ScheduleResponse {
    pb::ScheduleResponse { task_id: o.task_id, created: o.created, replayed: false }
}

pub fn state_to_pb(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Scheduled => pb::TaskState::Scheduled,
        TaskState::Ready => pb::TaskState::Ready,
        TaskState::Running => pb::TaskState::Running,
        TaskState::RetryWait => pb::TaskState::RetryWait,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Dead => pb::TaskState::Dead,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn state_from_pb(s: pb::TaskState) -> TaskState {
    match s {
        pb::TaskState::Unspecified | pb::TaskState::Scheduled => TaskState::Scheduled,
        pb::TaskState::Ready => TaskState::Ready,
        pb::TaskState::Running => TaskState::Running,
        pb::TaskState::RetryWait => TaskState::RetryWait,
        pb::TaskState::Succeeded => TaskState::Succeeded,
        pb::TaskState::Failed => TaskState::Failed,
        pb::TaskState::Dead => TaskState::Dead,
        pb::TaskState::Cancelled => TaskState::Cancelled,
    }
}

pub fn task_to_pb(t: Task, now_ms: u64, result: Option<Vec<u8>>, payload: Option<Vec<u8>>) -> pb::Task {
    pb::Task {
        id: t.id,
        callback: t.callback.clone(),
        state: state_to_pb(t.display_state(now_ms)) as i32,
        priority: u32::from(t.priority),
        run_at_unix_ms: t.run_at_ms,
        created_at_unix_ms: t.created_at_ms,
        attempts: t.attempts,
        payload_size: t.payload_size,
        idempotency_key: t.idempotency_key.unwrap_or_default(),
        created_index: t.created_index,
        fencing_token: t.fencing_token,
        worker: t.worker.unwrap_or_default(),
        last_error: t.last_error.unwrap_or_default(),
        result,
        cancel_requested: t.cancel_requested,
        history: t
            .history
            .iter()
            .map(|h| pb::TaskTransition { state: state_to_pb(h.state) as i32, at_unix_ms: h.at_ms, attempt: h.attempt })
            .collect(),
        payload,
    }
}

pub fn settings_to_pb(c: &CallbackConfig) -> pb::CallbackSettings {
    pb::CallbackSettings {
        name: c.name.clone(),
        max_attempts: c.max_attempts,
        lease_ms: c.lease_ms,
        timeout_ms: c.timeout_ms,
        concurrency: c.concurrency,
        backoff_initial_ms: c.backoff_initial_ms,
        backoff_max_ms: c.backoff_max_ms,
    }
}

pub fn settings_from_pb(s: pb::CallbackSettings) -> CallbackConfig {
    CallbackConfig {
        name: s.name,
        max_attempts: s.max_attempts,
        lease_ms: s.lease_ms,
        timeout_ms: s.timeout_ms,
        concurrency: s.concurrency,
        backoff_initial_ms: s.backoff_initial_ms,
        backoff_max_ms: s.backoff_max_ms,
    }
}

pub fn target_from_pb(req: &pb::DeadLetterRequest) -> Result<Target, ApiError> {
    match &req.target {
        Some(pb::dead_letter_request::Target::TaskId(id)) => Ok(Target::Task(*id)),
        Some(pb::dead_letter_request::Target::Callback(c)) if !c.is_empty() => Ok(Target::Callback(c.clone())),
        _ => Err(ApiError::InvalidArgument("name a task id or a callback".into())),
    }
}
