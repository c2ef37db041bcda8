"""Traces end to end: a task scheduled from Python inside a span and run by a
Python worker with one retry gives one trace, received by an OTLP/gRPC
receiver inside the test, that holds the producer's span, the nodes' spans
(the schedule RPC, its Raft commit, each attempt's queue wait, assignment
and completion) and both attempts' handler spans, each under its parent."""

from __future__ import annotations

import os
import threading
from concurrent import futures
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import grpc
import pytest

# Without these the test cannot run at all: a missing one fails it (test.sh
# installs them), it is not skipped.
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import drover
from support import Cluster, InProcessWorker, wait_until

Received = Tuple[str, trace_pb2.Span]  # (service.name, span)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps every span it is sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: List[Received] = []

    def Export(  # noqa: N802 - the gRPC method's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self.lock:
            for rs in request.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "?"
                )
                for ss in rs.scope_spans:
                    self.spans.extend((service, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: bytes) -> List[Received]:
        with self.lock:
            return [(svc, s) for svc, s in self.spans if s.trace_id == trace_id]


@pytest.fixture
def receiver() -> Iterator[Tuple[Receiver, int]]:
    r = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(r, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield r, port
    server.stop(grace=None)


def attr(s: trace_pb2.Span, key: str) -> Optional[object]:
    for a in s.attributes:
        if a.key == key:
            v = a.value
            return v.int_value if v.HasField("int_value") else v.string_value
    return None


def render(spans: List[Received]) -> str:
    """The trace as an indented tree: name, service, offset and duration
    from the trace's start, and the task attributes."""
    by_parent: Dict[bytes, List[Received]] = {}
    ids = {s.span_id for _, s in spans}
    roots = [x for x in spans if x[1].parent_span_id not in ids]
    for x in spans:
        by_parent.setdefault(x[1].parent_span_id, []).append(x)
    t0 = min(s.start_time_unix_nano for _, s in spans)
    lines: List[str] = []

    def walk(x: Received, depth: int) -> None:
        svc, s = x
        keys = ["drover.task_id", "drover.attempt", "drover.fencing_token", "drover.worker"]
        shown = " ".join(f"{k.split('.')[1]}={attr(s, k)}" for k in keys if attr(s, k) not in (None, ""))
        status = " ERROR" if s.status.code == trace_pb2.Status.STATUS_CODE_ERROR else ""
        start = (s.start_time_unix_nano - t0) / 1e6
        dur = (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6
        lines.append(f"{'  ' * depth}{s.name:<{34 - 2 * depth}} {svc:<14} +{start:7.1f}ms {dur:7.1f}ms{status}  {shown}")
        for child in sorted(by_parent.get(s.span_id, []), key=lambda c: c[1].start_time_unix_nano):
            walk(child, depth + 1)

    for r in sorted(roots, key=lambda c: c[1].start_time_unix_nano):
        walk(r, 0)
    return "\n".join(lines)


def test_one_trace_from_the_producer_through_the_nodes_to_both_attempts(
    receiver: Tuple[Receiver, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, port = receiver
    endpoint = f"http://127.0.0.1:{port}"
    # The nodes' batch exporter sends every 200 ms rather than every 5 s.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    provider = TracerProvider(resource=Resource.create({"service.name": "py-app"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("test")

    cluster = Cluster(3, tmp_path / "cluster", flags=["--otlp-endpoint", endpoint])
    try:
        with drover.Client(cluster.endpoints, deadline=20) as client:
            client.register_callback("traced", max_attempts=3, lease=5, backoff_initial=0.1, backoff_max=0.2)
            w = drover.Worker(cluster.endpoints, worker_id="py-traced")
            seen: List[Optional[str]] = []

            @w.handler("traced")
            async def run(task: drover.Task) -> bytes:
                seen.append(task.traceparent)
                # The handler runs inside its span: the current one.
                assert trace.get_current_span().get_span_context().is_valid
                if task.attempt == 1:
                    raise drover.Retry("the first attempt fails")
                return b"ok"

            with InProcessWorker(w):
                with tracer.start_as_current_span("checkout") as producer:
                    t = client.schedule("traced", b"secret payload")
                want = producer.get_span_context().trace_id
                done = wait_until(
                    "the task to succeed",
                    lambda: (lambda x: x if x.state == drover.TaskState.SUCCEEDED else None)(client.get(t.id)),
                )
            assert done.attempts == 2
            # GetTask shows the producer's context.
            assert done.traceparent is not None and done.traceparent.startswith(f"00-{want:032x}-")
            assert len(seen) == 2 and all(p is not None and f"-{want:032x}-" in p for p in seen)

            trace_id = want.to_bytes(16, "big")
            names = ["checkout", "schedule", "raft commit", "queue wait", "queue wait", "attempt 1", "attempt 2",
                     "run traced", "run traced", "commit completion", "commit completion"]

            def complete() -> Optional[List[Received]]:
                spans = rec.of_trace(trace_id)
                have = [s.name for _, s in spans]
                return spans if all(have.count(n) >= names.count(n) for n in set(names)) else None

            spans = wait_until("every span of the trace at the receiver", complete, timeout=30)
    finally:
        cluster.close()

    print("\n" + render(spans))
    by_name: Dict[str, List[trace_pb2.Span]] = {}
    for _, s in spans:
        by_name.setdefault(s.name, []).append(s)
    services = {svc for svc, _ in spans}
    assert "py-app" in services and any(s.startswith("drover-node-") for s in services), services

    (checkout,) = by_name["checkout"]
    root = checkout.span_id
    # The schedule RPC (on the node the client reached, and on the leader
    # if that one forwarded) under the producer; the commit under the RPC.
    assert all(s.parent_span_id == root for s in by_name["schedule"])
    schedules = {s.span_id for s in by_name["schedule"]}
    assert all(s.parent_span_id in schedules for s in by_name["raft commit"])
    # Each attempt: its queue wait and its assignment under the producer,
    # the handler's span and the completion's commit under the assignment.
    assert all(s.parent_span_id == root for s in by_name["queue wait"])
    attempts = {}
    for n in (1, 2):
        (a,) = by_name[f"attempt {n}"]
        assert a.parent_span_id == root
        assert attr(a, "drover.task_id") == t.id and attr(a, "drover.attempt") == n
        assert attr(a, "drover.fencing_token") and attr(a, "drover.callback") == "traced"
        attempts[n] = a
    runs = {attr(s, "drover.attempt"): s for s in by_name["run traced"]}
    assert set(runs) == {1, 2}
    for n in (1, 2):
        assert runs[n].parent_span_id == attempts[n].span_id, f"attempt {n}'s handler span is under its assignment"
        assert attr(runs[n], "drover.fencing_token") == attr(attempts[n], "drover.fencing_token")
    commits = {c.parent_span_id for c in by_name["commit completion"]}
    assert commits == {attempts[1].span_id, attempts[2].span_id}
    # The first attempt failed (retryably), the second succeeded.
    assert runs[1].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert runs[2].status.code != trace_pb2.Status.STATUS_CODE_ERROR
    assert attempts[1].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert attempts[2].status.code == trace_pb2.Status.STATUS_CODE_OK
    # No payload in any attribute.
    for _, s in spans:
        for a in s.attributes:
            assert "secret payload" not in a.value.string_value, (s.name, a.key)
    if os.environ.get("DROVER_TRACE_RENDER"):
        Path(os.environ["DROVER_TRACE_RENDER"]).write_text(render(spans) + "\n")


def test_a_task_scheduled_inside_a_span_carries_its_context_unless_told_otherwise() -> None:
    from drover import _tracing
    from drover._types import task_spec_to_pb
    from drover.aio import with_current_trace

    assert _tracing.current() is None, "no span, no context"
    tracer = TracerProvider().get_tracer("unit")
    with tracer.start_as_current_span("producer") as span:
        sc = span.get_span_context()
        want = f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
        assert _tracing.current() == (want, "")
        given = drover.TaskSpec("cb", traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        filled, kept, none = with_current_trace([drover.TaskSpec("cb"), given, drover.TaskSpec("cb", traceparent="")])
    assert (filled.traceparent, kept.traceparent, none.traceparent) == (want, given.traceparent, "")
    assert task_spec_to_pb(filled).trace.traceparent == want
    assert not task_spec_to_pb(none).HasField("trace")
