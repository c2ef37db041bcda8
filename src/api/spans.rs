//! The spans of the schedule RPCs (`tracing` spans, exported through
//! `tracing-opentelemetry` when the node exports; see
//! [`crate::telemetry`]): a child of the producer's span when the task
//! came with a trace context; else a root span, sampled at the node's
//! `--otlp-sample-ratio`, whose context the tasks then carry, so that a
//! task scheduled by an untraced client can still be followed.

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::pb;
use crate::telemetry;

/// The span of a `Schedule` or `ScheduleBatch` of `tasks`. Tasks without a
/// context get the span's, when it is a sampled root.
pub fn schedule(rpc: &'static str, tasks: &mut [pb::TaskSpec]) -> tracing::Span {
    let parent = tasks.iter().find_map(|t| t.trace.as_ref().and_then(telemetry::from_pb));
    let callback = tasks.first().map_or("", |t| t.callback.as_str());
    let span = tracing::info_span!(
        "drover.schedule",
        otel.name = rpc,
        otel.kind = "server",
        drover.callback = %callback,
        drover.tasks = tasks.len(),
        drover.task_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::adopt(&span, parent.as_ref());
    if parent.is_none() {
        let sc = span.context().span().span_context().clone();
        if let Some(own) = telemetry::trace_context(&sc).filter(|_| sc.is_sampled()) {
            for t in tasks.iter_mut() {
                t.trace = Some(telemetry::to_pb(own.clone()));
            }
        }
    }
    span
}

/// The span of a proposal's Raft commit, a child of the current span.
pub fn commit(what: &'static str, entries: usize) -> tracing::Span {
    tracing::info_span!("drover.raft.commit", otel.name = what, drover.tasks = entries)
}
