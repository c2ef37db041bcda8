//! The leader's spans of each attempt of a traced task (a task with a
//! trace context; see [`crate::domain::trace`]), made through the global
//! tracer ([`crate::telemetry`]), a no-op unless the node exports spans:
//!
//! ```text
//! producer's span (the task's trace context)
//! ├── queue wait        from when the task was due (or its retry) to its assignment
//! └── attempt N         from the assignment to the completion's commit
//!     ├── (worker) run CALLBACK    the handler's span: Assignment.trace names this span
//!     └── commit completion        the completion's Raft commit
//! ```
//!
//! Attributes: task id, callback, attempt, fencing token, worker; never a
//! payload or a result. An attempt's span lives in the dispatcher (the
//! actor that owns leases) from its assignment to its end; a span dropped
//! unended (the leader stepped down) ends where it is dropped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::global::BoxedSpan;
use opentelemetry::trace::{Link, Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};

use crate::domain::trace::TraceContext;
use crate::domain::{Outcome, Rejection, TaskState};
use crate::telemetry;

/// One running attempt's spans.
struct Attempt {
    token: u64,
    span: BoxedSpan,
    /// The completion's commit, while it is proposed.
    commit: Option<BoxedSpan>,
}

/// What the span of an assignment says about it.
pub(super) struct Assigned<'a> {
    pub task_id: u64,
    pub callback: &'a str,
    pub attempt: u32,
    pub fencing_token: u64,
    pub worker: &'a str,
    /// When the task became due (replicated time, Unix ms).
    pub ready_at_ms: u64,
}

/// The spans of the attempts this leader handed out, by task id.
#[derive(Default)]
pub(super) struct TaskSpans {
    attempts: HashMap<u64, Attempt>,
}

fn attributes(a: &Assigned<'_>) -> Vec<KeyValue> {
    vec![
        KeyValue::new("drover.task_id", a.task_id as i64),
        KeyValue::new("drover.callback", a.callback.to_string()),
        KeyValue::new("drover.attempt", i64::from(a.attempt)),
        KeyValue::new("drover.fencing_token", a.fencing_token as i64),
    ]
}

fn child_of(span: &BoxedSpan) -> Context {
    Context::new().with_remote_span_context(span.span_context().clone())
}

impl TaskSpans {
    /// An assignment was committed: record the task's wait in the queue
    /// and open the attempt's span. Returns the context the worker's span
    /// starts under: the attempt's span when it is recorded, else the
    /// task's own.
    pub(super) fn assigned(
        &mut self,
        a: &Assigned<'_>,
        trace: Option<&TraceContext>,
        links: &[TraceContext],
    ) -> Option<TraceContext> {
        let trace = trace?;
        let tracer = telemetry::tracer();
        let parent = telemetry::remote_parent(trace);
        let now = SystemTime::now();
        let ready = (UNIX_EPOCH + Duration::from_millis(a.ready_at_ms)).min(now);
        let mut wait = tracer
            .span_builder("queue wait")
            .with_kind(SpanKind::Internal)
            .with_start_time(ready)
            .with_attributes(attributes(a))
            .start_with_context(&tracer, &parent);
        wait.end_with_timestamp(now);
        let mut attrs = attributes(a);
        attrs.push(KeyValue::new("drover.worker", a.worker.to_string()));
        let span = tracer
            .span_builder(format!("attempt {}", a.attempt))
            .with_kind(SpanKind::Producer)
            .with_start_time(now)
            .with_attributes(attrs)
            .with_links(links.iter().filter_map(telemetry::span_context).map(Link::with_context).collect())
            .start_with_context(&tracer, &parent);
        let handed = if span.is_recording() { telemetry::trace_context(span.span_context()) } else { None };
        self.attempts.insert(a.task_id, Attempt { token: a.fencing_token, span, commit: None });
        Some(handed.unwrap_or_else(|| trace.clone()))
    }

    /// A worker reported the attempt: its commit starts.
    pub(super) fn completing(&mut self, task_id: u64, token: u64, outcome: &Outcome) {
        let Some(a) = self.attempts.get_mut(&task_id).filter(|a| a.token == token) else { return };
        if a.commit.is_some() {
            return;
        }
        let tracer = telemetry::tracer();
        let mut commit = tracer
            .span_builder("commit completion")
            .with_kind(SpanKind::Internal)
            .with_attributes(vec![KeyValue::new("drover.outcome", outcome_name(outcome))])
            .start_with_context(&tracer, &child_of(&a.span));
        if let Outcome::Retry { error, .. } | Outcome::Fatal { error } = outcome {
            commit.set_attribute(KeyValue::new("drover.error", clip(error)));
        }
        a.commit = Some(commit);
    }

    /// The completion was applied (`Ok`: the task's new state) or refused:
    /// end the attempt's spans.
    pub(super) fn completed(&mut self, task_id: u64, token: u64, result: &Result<TaskState, Rejection>) {
        let Some(mut a) = self.attempts.remove(&task_id) else { return };
        if a.token != token {
            self.attempts.insert(task_id, a);
            return;
        }
        let status = match result {
            Ok(TaskState::Succeeded) => Status::Ok,
            Ok(state) => Status::error(format!("the task is now {}", state.name())),
            Err(rejection) => Status::error(format!("completion refused: {rejection}")),
        };
        if let Some(mut commit) = a.commit.take() {
            commit.set_status(if result.is_ok() { Status::Ok } else { status.clone() });
            commit.end();
        }
        if let Ok(state) = result {
            a.span.set_attribute(KeyValue::new("drover.state", state.name()));
        }
        a.span.set_status(status);
        a.span.end();
    }

    /// The attempt ended otherwise (its lease expired, its assignment was
    /// released): say why.
    pub(super) fn ended(&mut self, task_id: u64, why: &str) {
        if let Some(mut a) = self.attempts.remove(&task_id) {
            a.span.set_status(Status::error(why.to_string()));
            a.span.end();
        }
    }

    /// Forget the attempts this leader no longer tracks (their spans end
    /// as they are dropped).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        self.attempts.retain(|id, _| keep(*id));
    }

    pub(super) fn clear(&mut self) {
        self.attempts.clear();
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Success { .. } => "success",
        Outcome::Retry { .. } => "retry",
        Outcome::Fatal { .. } => "fatal",
        Outcome::Cancelled => "cancelled",
    }
}

/// An error message, cut to a size fit for an attribute.
fn clip(s: &str) -> String {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
