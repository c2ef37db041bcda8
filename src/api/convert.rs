//! Protobuf <-> domain conversions, in one place at the edge.

use super::ApiError;
use crate::domain::dependency::{AfterPolicy, Counts, Deps, Upstream};
use crate::domain::{CallbackConfig, Gate, GateMode, RateLimit, Retention, ScheduleOutcome, Target, Task, TaskState};
use crate::pb;

/// A schedule's answer; `note` says why a task was cancelled on arrival.
pub fn outcome_to_pb(o: ScheduleOutcome, note: String) -> pb::ScheduleResponse {
    pb::ScheduleResponse {
        task_id: o.task_id,
        created: o.created,
        replayed: false,
        state: state_to_pb(o.state) as i32,
        note,
    }
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
        TaskState::Waiting => pb::TaskState::Waiting,
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
        pb::TaskState::Waiting => TaskState::Waiting,
    }
}

pub fn trace_to_pb(t: crate::domain::trace::TraceContext) -> pb::TraceContext {
    crate::telemetry::to_pb(t)
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
        collection: t.collection.unwrap_or_default(),
        dependencies: None,
        children: Vec::new(),
        trace: None,
    }
}

pub fn policy_to_pb(p: AfterPolicy) -> pb::AfterPolicy {
    match p {
        AfterPolicy::AllSucceeded => pb::AfterPolicy::AllSucceeded,
        AfterPolicy::AllFinished => pb::AfterPolicy::AllFinished,
    }
}

pub fn counts_to_pb(c: Counts) -> pb::ParentCounts {
    pb::ParentCounts { succeeded: c.succeeded, failed: c.failed, dead: c.dead, cancelled: c.cancelled }
}

/// A task's dependencies as `GetTask` shows them.
pub fn dependencies_to_pb(d: Deps, parents: Vec<u64>) -> pb::Dependencies {
    pb::Dependencies {
        parents,
        policy: policy_to_pb(d.policy) as i32,
        open: d.open,
        ended: Some(counts_to_pb(d.ended)),
        cancelled_by: d.cancelled_by,
    }
}

pub fn upstream_to_pb(u: Upstream) -> pb::Upstream {
    pb::Upstream {
        ended: Some(counts_to_pb(u.ended)),
        parents: u
            .parents
            .into_iter()
            .map(|p| pb::ParentResult { task_id: p.task_id, state: state_to_pb(p.state) as i32, result: p.result })
            .collect(),
        omitted: u.omitted,
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
        rate_count: c.rate.map_or(0, |r| r.count),
        rate_period_ms: c.rate.map_or(0, |r| r.per_ms),
        rate_burst: c.rate.map_or(0, |r| r.burst),
        retain_succeeded_ms: c.retention.succeeded_ms,
        retain_cancelled_ms: c.retention.cancelled_ms,
        retain_failed_ms: c.retention.failed_ms,
        retain_dead_ms: c.retention.dead_ms,
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
        rate: (s.rate_count > 0).then_some(RateLimit {
            count: s.rate_count,
            per_ms: if s.rate_period_ms == 0 { 1000 } else { s.rate_period_ms },
            burst: if s.rate_burst == 0 { s.rate_count } else { s.rate_burst },
        }),
        retention: Retention {
            succeeded_ms: s.retain_succeeded_ms,
            cancelled_ms: s.retain_cancelled_ms,
            failed_ms: s.retain_failed_ms,
            dead_ms: s.retain_dead_ms,
        },
    }
}

pub fn gate_mode_to_pb(m: GateMode) -> pb::GateMode {
    match m {
        GateMode::Pause => pb::GateMode::Pause,
        GateMode::Drop => pb::GateMode::Drop,
    }
}

/// A gate with what it holds at `now_ms`.
pub fn gate_to_pb(g: &Gate, pending: u64, running: u64, now_ms: u64) -> pb::Gate {
    pb::Gate {
        callback: g.target.callback.clone(),
        collection: g.target.collection.clone().unwrap_or_default(),
        mode: gate_mode_to_pb(g.mode) as i32,
        since_unix_ms: g.since_ms,
        since_index: g.since_index,
        until_unix_ms: g.until_ms,
        note: g.note.clone(),
        pending,
        running,
        active: g.active(now_ms),
    }
}

pub fn target_from_pb(req: &pb::DeadLetterRequest) -> Result<Target, ApiError> {
    match &req.target {
        Some(pb::dead_letter_request::Target::TaskId(id)) => Ok(Target::Task(*id)),
        Some(pb::dead_letter_request::Target::Callback(c)) if !c.is_empty() => Ok(Target::Callback(c.clone())),
        _ => Err(ApiError::InvalidArgument("name a task id or a callback".into())),
    }
}
