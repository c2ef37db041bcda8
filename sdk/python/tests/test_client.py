"""The client: scheduling, reading, errors, failover and the retry rules."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List, Optional

import grpc
import grpc.aio
import pytest

import drover
from drover import _net, _rpc
from drover.v1 import drover_pb2 as pb
from support import Cluster, free_port


def test_schedule_get_list_and_cancel(client: drover.Client) -> None:
    assert client.register_callback("c_basic", lease=5, backoff_initial=0.1, backoff_max=1) in (True, False)
    later = client.schedule("c_basic", b"payload", delay=3600, priority=7, collection="blue")
    assert later.created and later.state == drover.TaskState.SCHEDULED
    t = client.get(later.id, payload=True)
    assert (t.callback, t.priority, t.collection, t.payload) == ("c_basic", 7, "blue", b"payload")
    assert t.state == drover.TaskState.SCHEDULED and t.run_at > time.time() + 3000
    assert t.key == "", "no idempotency key is made up (the request id covers retries)"
    listed = client.list("c_basic", collection="blue")
    assert [x.id for x in listed] == [later.id]
    assert client.cancel(later.id) == drover.TaskState.CANCELLED
    assert client.cancel(later.id) == drover.TaskState.CANCELLED, "cancelling twice is not an error"
    assert client.get(later.id).state == drover.TaskState.CANCELLED


def test_the_same_key_schedules_one_task(client: drover.Client) -> None:
    a = client.schedule("c_key", b"1", key="order-42", delay=3600)
    b = client.schedule("c_key", b"2", key="order-42", delay=3600)
    assert a.created and not b.created and a.id == b.id


def test_a_batch_is_scheduled_in_order_with_refs(client: drover.Client) -> None:
    res = client.schedule_batch([
        drover.TaskSpec("c_batch", b"a", ref="a", delay=3600),
        drover.TaskSpec("c_batch", b"b", after_refs=["a"]),
    ])
    assert len(res) == 2 and res[0].id < res[1].id
    child = client.get(res[1].id)
    assert child.state == drover.TaskState.WAITING and child.parents == [res[0].id]


def test_errors_carry_the_status_and_the_server_s_message(client: drover.Client) -> None:
    with pytest.raises(drover.RpcError) as e:
        client.get(987654321)
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "987654321" in e.value.message
    with pytest.raises(drover.RpcError) as e:
        client.schedule("bad name!", b"")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and e.value.message
    with pytest.raises(drover.RpcError) as e:
        client.register_callback("c_bad", lease=0.1)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "lease" in e.value.message


def test_a_dead_endpoint_is_skipped(cluster: Cluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with drover.Client([dead] + cluster.endpoints) as c:
        s = c.schedule("c_failover", b"", delay=3600)
        assert c.get(s.id).id == s.id


def test_gates_and_periodic_schedules(client: drover.Client) -> None:
    client.register_callback("c_gate")
    r = client.set_gate("c_gate", mode="pause", note="maintenance")
    assert isinstance(r, drover.SetGateResult) and r.gate.note == "maintenance"
    assert r.gate.mode is drover.GateMode.PAUSE and r.gate.collection is None and r.gate.active
    gates = [g for g in client.list_gates() if g.callback == "c_gate"]
    assert len(gates) == 1 and gates[0].mode is drover.GateMode.PAUSE and gates[0].until is None
    assert client.open_gate("c_gate") and not client.open_gate("c_gate")
    r = client.set_gate("c_gate", "blue", mode=drover.GateMode.DROP, duration=60)
    assert r.gate.collection == "blue" and r.gate.until is not None and 55 < r.gate.until - r.gate.since <= 61
    assert client.open_gate("c_gate", "blue")
    with pytest.raises(ValueError):
        client.set_gate("c_gate", mode="hold")
    # Starting in an hour: no slot is due at creation (a schedule without a
    # start fires its first slot at once), so the trigger below is its only run.
    later = time.time() + 3600
    info = client.create_schedule(
        "py-every", "c_gate", every=3600, payload=b"tick", overlap=drover.Overlap.ALLOW, start=later
    )
    assert isinstance(info, drover.ScheduleInfo) and info.name == "py-every"
    d = info.definition
    assert (d.every, d.cron, d.payload, d.overlap, d.catchup) == (3600, None, b"tick", "allow", drover.Catchup.LATEST)
    assert len(info.next) == 5 and all(isinstance(s, drover.Slot) for s in info.next)
    assert client.pause_schedule("py-every", "hold").paused
    assert client.trigger_schedule("py-every") is not None
    runs = client.get_schedule("py-every").runs
    assert len(runs) == 1 and client.get(runs[0].task_id).callback == "c_gate"
    assert [s.name for s in client.list_schedules()].count("py-every") == 1
    info = client.update_schedule("py-every", "c_gate", cron="0 * * * *", tz="Europe/Paris")
    assert (info.definition.cron, info.definition.every, info.definition.tz) == ("0 * * * *", None, "Europe/Paris")
    assert info.paused and info.fired >= 1, "an update keeps the schedule's state"
    client.delete_schedule("py-every")
    with pytest.raises(drover.RpcError) as e:
        client.get_schedule("py-every")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_the_async_client(cluster: Cluster) -> None:
    async def body() -> None:
        async with drover.AsyncClient(cluster.endpoint) as c:
            s = await c.schedule("c_async", "text payload", delay=3600)
            t = await c.get(s.id, payload=True)
            assert t.payload == b"text payload"
            assert await c.cancel(s.id) == drover.TaskState.CANCELLED

    asyncio.run(body())


# ---- the retry rules, against a scripted channel ----


class _Call:
    """A stand-in for a grpc.aio unary call: awaiting it gives `reply` or raises `error`."""

    def __init__(self, reply: Any = None, error: Optional[grpc.aio.AioRpcError] = None) -> None:
        self.reply, self.error = reply, error

    def __await__(self) -> Any:
        async def run() -> Any:
            if self.error is not None:
                raise self.error
            return self.reply

        return run().__await__()

    async def initial_metadata(self) -> Any:
        return grpc.aio.Metadata()


def _status(code: grpc.StatusCode, md: Any = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*md), "scripted")


def _scripted(monkeypatch: pytest.MonkeyPatch, outcomes: List[Any], **client_args: Any) -> tuple:
    """An AsyncClient whose calls get `outcomes` in turn; returns (client,
    requests seen). Each attempt's metadata goes to the client's
    `.sent_metadata`, each attempt's method to `.methods`."""
    seen: List[Any] = []
    sent_metadata: List[Any] = []
    methods: List[Any] = []

    def invoke(method: Any, ch: Any, req: Any, timeout: float, metadata: Any) -> _Call:
        assert isinstance(req, method.req), f"{method} called with a {type(req).__name__}"
        seen.append(req)
        sent_metadata.append(metadata)
        methods.append(method)
        o = outcomes.pop(0)
        if not isinstance(o, grpc.aio.AioRpcError):
            assert isinstance(o, method.resp), f"scripted a {type(o).__name__} for {method}"
        return _Call(error=o) if isinstance(o, grpc.aio.AioRpcError) else _Call(reply=o)

    async def ready(self: Any, addr: str) -> bool:
        return True

    monkeypatch.setattr(_rpc, "invoke", invoke)
    monkeypatch.setattr(_net.Pool, "ready", ready)
    client_args.setdefault("token", "")
    c = drover.AsyncClient(["127.0.0.1:1", "127.0.0.1:2"], deadline=5, **client_args)
    c.sent_metadata = sent_metadata  # type: ignore[attr-defined]
    c.methods = methods  # type: ignore[attr-defined]
    return c, seen


def test_a_write_retried_after_an_unknown_outcome_reuses_its_request_id_and_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def body() -> None:
        c, seen = _scripted(monkeypatch, [
            _status(grpc.StatusCode.UNAVAILABLE),  # the connection broke in flight
            _status(grpc.StatusCode.DEADLINE_EXCEEDED),
            _status(grpc.StatusCode.UNAVAILABLE, [("retry-after-ms", "10"), ("x-drover-leader", "2=127.0.0.1:2")]),
            pb.ScheduleResponse(task_id=7, created=True),
        ])
        s = await c.schedule("cb", b"x")
        assert s.id == 7 and len(seen) == 4
        assert len({r.request_id for r in seen}) == 1 and len(seen[0].request_id) == 16
        assert {r.task.idempotency_key for r in seen} == {""}, "no key is made up: the request id covers retries"

    asyncio.run(body())


def test_a_batch_has_one_request_id_for_all_its_tasks_and_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        c, seen = _scripted(monkeypatch, [
            _status(grpc.StatusCode.DEADLINE_EXCEEDED),
            pb.ScheduleBatchResponse(results=[pb.ScheduleResponse(task_id=i, created=True) for i in (1, 2, 3)],
                                     replayed=True),
            pb.ScheduleBatchResponse(results=[pb.ScheduleResponse(task_id=4, created=True)]),
        ])
        res = await c.schedule_batch([drover.TaskSpec("cb", b"x"), drover.TaskSpec("cb", "y", key="mine"),
                                      drover.TaskSpec("cb")])
        assert [s.id for s in res] == [1, 2, 3] and all(s.replayed for s in res)
        assert len(seen) == 2 and seen[0].request_id == seen[1].request_id and len(seen[0].request_id) == 16
        assert [t.idempotency_key for t in seen[0].tasks] == ["", "mine", ""]
        assert [t.payload for t in seen[0].tasks] == [b"x", b"y", b""]
        await c.schedule_batch([drover.TaskSpec("cb")])
        assert seen[2].request_id != seen[0].request_id, "a new call, a new request id"

    asyncio.run(body())


def test_a_non_idempotent_write_is_not_retried_after_an_unknown_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def body() -> None:
        c, seen = _scripted(monkeypatch, [_status(grpc.StatusCode.UNAVAILABLE)])
        with pytest.raises(drover.RpcError) as e:
            await c.redrive_dead_letters(callback="cb")
        assert e.value.outcome_unknown and len(seen) == 1
        # ...but it is when the node said nothing was applied.
        c, seen = _scripted(monkeypatch, [
            _status(grpc.StatusCode.UNAVAILABLE, [("retry-after-ms", "10")]),
            pb.DeadLetterResponse(count=3),
        ])
        assert await c.redrive_dead_letters(callback="cb") == 3 and len(seen) == 2

    asyncio.run(body())


def test_final_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        c, seen = _scripted(monkeypatch, [_status(grpc.StatusCode.FAILED_PRECONDITION)])
        with pytest.raises(drover.RpcError) as e:
            await c.schedule("cb", b"")
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and len(seen) == 1

    asyncio.run(body())


def test_classify() -> None:
    assert _net.classify(_status(grpc.StatusCode.UNAVAILABLE, [("retry-after-ms", "5")])) is _net.Failure.NOT_APPLIED
    assert _net.classify(_status(grpc.StatusCode.UNAVAILABLE)) is _net.Failure.OUTCOME_UNKNOWN
    assert _net.classify(_status(grpc.StatusCode.ABORTED)) is _net.Failure.OUTCOME_UNKNOWN
    assert _net.classify(_status(grpc.StatusCode.NOT_FOUND)) is _net.Failure.FINAL
