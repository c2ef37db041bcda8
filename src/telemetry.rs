//! OpenTelemetry glue: W3C trace contexts to and from OpenTelemetry's
//! span contexts, the current span's context (what client libraries put
//! on a task), and the OTLP/gRPC exporter a process may install
//! (`--otlp-endpoint`).
//!
//! Spans go through OpenTelemetry's global tracer provider, which is a
//! no-op until [`start`] installs one: code that makes spans needs no
//! handle, and a process that exports nothing pays next to nothing. The
//! `tracing` spans of a process that exports (the schedule RPC, the
//! handler's span in the worker SDK) reach the same provider through
//! `tracing-opentelemetry`'s layer ([`layer`]).

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::trace::TraceContext;

/// The instrumentation scope of drover's spans.
pub const SCOPE: &str = "drover";

/// Install an OTLP/gRPC exporter to `endpoint` (e.g. `http://127.0.0.1:4317`)
/// as the global tracer provider. Root spans (a trace nobody upstream
/// started) are sampled at `ratio` (0 to 1); a span under a remote parent
/// follows the parent's sampled flag, so a trace its producer sampled is
/// always recorded. Call inside a Tokio runtime; keep the provider and
/// shut it down at exit (that flushes the last spans).
pub fn start(endpoint: &str, ratio: f64, service: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("--otlp-sample-ratio {ratio} is out of range: use 0 (no root spans) to 1 (all)"));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_string()).build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// The `tracing` layer that turns this process's task spans (the `tracing`
/// spans named `drover.*`) into OpenTelemetry spans of `provider`. Only
/// those: a long-lived span (the dispatcher's) must not become a trace
/// that never ends, nor collect every log line as an event.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SCOPE))
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| meta.is_span() && meta.name().starts_with("drover.")))
}

/// The global tracer (a no-op one unless [`start`] ran).
pub fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer(SCOPE)
}

/// `t` as OpenTelemetry's span context of a remote parent.
pub fn span_context(t: &TraceContext) -> Option<SpanContext> {
    let trace_id = TraceId::from_hex(t.trace_id()).ok()?;
    let span_id = SpanId::from_hex(t.span_id()).ok()?;
    let flags = if t.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
    let state = TraceState::from_str(&t.tracestate).unwrap_or_default();
    let sc = SpanContext::new(trace_id, span_id, flags, true, state);
    sc.is_valid().then_some(sc)
}

/// A context whose (remote) parent span is `t`.
pub fn remote_parent(t: &TraceContext) -> Context {
    span_context(t).map_or_else(Context::new, |sc| Context::new().with_remote_span_context(sc))
}

/// The W3C trace context of a span, if it is valid.
pub fn trace_context(sc: &SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    Some(TraceContext {
        traceparent: format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()),
        tracestate: sc.trace_state().header(),
    })
}

/// The current `tracing` span's trace context: set when this process
/// exports spans through [`layer`] (or another `tracing-opentelemetry`
/// layer) and a span is current.
pub fn current() -> Option<TraceContext> {
    trace_context(tracing::Span::current().context().span().span_context())
}

/// Make `span` (created with empty `trace_id` and `span_id` fields) a child
/// of `parent`, and record its ids in those fields, so that the log lines
/// written inside it carry them (`--log-format json` prints the current
/// span's fields).
pub fn adopt(span: &tracing::Span, parent: Option<&TraceContext>) {
    if let Some(parent) = parent {
        let _ = span.set_parent(remote_parent(parent));
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
        span.record("span_id", tracing::field::display(sc.span_id()));
    } else if let Some(parent) = parent {
        // Not exported here: the logs still name the task's trace.
        span.record("trace_id", parent.trace_id());
    }
}

/// A W3C trace context from the command line or the environment.
pub fn parse(traceparent: &str, tracestate: &str) -> Result<Option<crate::pb::TraceContext>, String> {
    Ok(TraceContext::parse(traceparent, tracestate)?.map(to_pb))
}

pub fn to_pb(t: TraceContext) -> crate::pb::TraceContext {
    crate::pb::TraceContext { traceparent: t.traceparent, tracestate: t.tracestate }
}

/// A trace context from the wire, if well formed (else none: a worker
/// runs the task all the same).
pub fn from_pb(t: &crate::pb::TraceContext) -> Option<TraceContext> {
    TraceContext::parse(&t.traceparent, &t.tracestate).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_w3c_context_round_trips_through_opentelemetry() {
        let t = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE")
            .unwrap()
            .unwrap();
        let sc = span_context(&t).unwrap();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(trace_context(&sc), Some(t));
        assert_eq!(trace_context(&SpanContext::empty_context()), None);
    }

    #[test]
    fn without_an_exporter_there_is_no_current_context() {
        let span = tracing::info_span!("x");
        let _g = span.enter();
        assert_eq!(current(), None);
    }
}
