"""Traces: the W3C trace context a task carries, from OpenTelemetry.

With ``opentelemetry-api`` installed (an optional dependency: ``pip install
drover[otel]``), a task scheduled inside a span carries that span's context,
and the worker runs each handler inside a span that is a child of the
context its assignment names (the node's span of that attempt, or the
producer's). Without it, nothing is traced and nothing is imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING, Dict, Generator, List, Optional, Tuple

from .v1 import drover_pb2 as pb

if TYPE_CHECKING:
    from ._task import WorkerTask

__all__ = ["current", "handler_span"]


def _available() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ImportError:  # no opentelemetry package at all
        return False


#: Whether opentelemetry-api is installed; it is imported only then.
_HAVE_OTEL = _available()

#: A trace context: (traceparent, tracestate).
TraceContext = Tuple[str, str]


def current() -> Optional[TraceContext]:
    """The current span's W3C trace context (None without opentelemetry, or
    outside a valid span)."""
    if not _HAVE_OTEL:
        return None
    from opentelemetry import trace as otel

    sc = otel.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    traceparent = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
    return traceparent, sc.trace_state.to_header()


def _carrier(t: pb.TraceContext) -> Dict[str, str]:
    c = {"traceparent": t.traceparent}
    if t.tracestate:
        c["tracestate"] = t.tracestate
    return c


@contextlib.contextmanager
def handler_span(task: "WorkerTask") -> Generator[None, None, None]:
    """Run a handler inside a span, child of the assignment's trace context
    and linked to its parents' (or its schedule's). A no-op without
    opentelemetry or for a task scheduled without a context. Attributes name
    the task, never its payload. An exception the handler raises (a
    :class:`drover.Retry` too) marks the span as an error."""
    if not _HAVE_OTEL or task.trace_context is None:
        yield
        return
    from opentelemetry import trace as otel
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    parent = propagator.extract(_carrier(task.trace_context))
    links: List[otel.Link] = []
    for link in task.trace_links:
        sc = otel.get_current_span(propagator.extract(_carrier(link))).get_span_context()
        if sc.is_valid:
            links.append(otel.Link(sc))
    tracer = otel.get_tracer("drover")
    with tracer.start_as_current_span(
        f"run {task.callback}",
        context=parent,
        kind=otel.SpanKind.CONSUMER,
        links=links,
        attributes={
            "drover.task_id": task.id,
            "drover.callback": task.callback,
            "drover.attempt": task.attempt,
            "drover.fencing_token": task.fencing_token,
        },
    ):
        yield
