"""The shape of the public API (no cluster needed): the typed RPCs match the
proto, the blocking client has the asyncio client's signatures, no generated
protobuf type appears, and replies become the SDK's own records."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import importlib.metadata
import inspect
import re
import typing
from pathlib import Path
from typing import Any, Iterator, Set

import pytest

import drover
from drover import _rpc
from drover._task import WorkerTask
from drover.v1 import drover_pb2 as pb
from support import REPO
from test_client import _scripted


def test_every_rpc_matches_the_proto() -> None:
    assert len({m.path for m in _rpc.ALL}) == len(_rpc.ALL) >= 26
    for m in _rpc.ALL:
        d = pb.DESCRIPTOR.services_by_name[m.service].methods_by_name[m.method]
        assert m.path == f"/{d.containing_service.full_name}/{d.name}"
        assert (m.req.DESCRIPTOR.full_name, m.resp.DESCRIPTOR.full_name) == (
            d.input_type.full_name, d.output_type.full_name), m
        assert not d.client_streaming and not d.server_streaming, m
    connect = pb.DESCRIPTOR.services_by_name["Worker"].methods_by_name["Connect"]
    assert (connect.input_type.full_name, connect.output_type.full_name) == (
        "drover.v1.WorkerMessage", "drover.v1.ServerMessage")


def _public_methods(cls: type) -> Iterator[str]:
    for name, f in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("_"):
            yield name


def test_the_blocking_client_has_the_async_client_s_signatures() -> None:
    async_methods = {n for n in _public_methods(drover.AsyncClient) if inspect.iscoroutinefunction(
        getattr(drover.AsyncClient, n))}
    sync_methods = set(_public_methods(drover.Client))
    assert async_methods - {"close"} <= sync_methods, async_methods - sync_methods
    assert sync_methods - {"close"} <= async_methods, sync_methods - async_methods
    assert len(async_methods) >= 27
    for name in sorted(async_methods - {"close"}):
        a = inspect.signature(getattr(drover.AsyncClient, name))
        s = inspect.signature(getattr(drover.Client, name))
        assert list(a.parameters.values()) == list(s.parameters.values()), name
        assert a.return_annotation == s.return_annotation, name
        assert not any(p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL for p in s.parameters.values()), name
        assert (getattr(drover.Client, name).__doc__ or "").strip(), f"Client.{name} has no doc"


def _types_in(hint: Any) -> Iterator[Any]:
    yield hint
    for arg in typing.get_args(hint):
        yield from _types_in(arg)


def _is_generated(t: Any) -> bool:
    module = getattr(t, "__module__", "") or ""
    return module.startswith("drover.v1") or module.startswith("google.protobuf")


def test_no_generated_protobuf_type_in_the_public_api() -> None:
    checked: Set[str] = set()
    bad = []

    def check(where: str, obj: Any) -> None:
        hints = typing.get_type_hints(obj)
        for name, hint in hints.items():
            checked.add(f"{where}.{name}")
            bad.extend(f"{where}: {name}: {t}" for t in _types_in(hint) if _is_generated(t))

    for export in drover.__all__:
        obj = getattr(drover, export)
        if dataclasses.is_dataclass(obj):
            check(export, obj)
        if inspect.isclass(obj) and not issubclass(obj, enum.Enum):
            for name, member in inspect.getmembers(obj):
                if name.startswith("_") and name not in ("__init__", "__aenter__", "__enter__"):
                    continue
                if isinstance(member, property) and member.fget is not None:
                    check(f"{export}.{name}", member.fget)
                elif inspect.isfunction(member):
                    check(f"{export}.{name}", member)
    assert not bad, "generated protobuf types in the public API:\n" + "\n".join(bad)
    for must in ("Client.schedule.return", "AsyncClient.list_gates.return", "Task.upstream.return",
                 "ScheduleInfo.definition", "Worker.handler.return", "GcStatus.oldest_finished"):
        assert must in checked, f"{must} was not checked"


def test_enums_compare_with_their_names() -> None:
    assert drover.Role("admin") is drover.Role.ADMIN and drover.Role.ADMIN == "admin" and str(drover.Role.ADMIN) == "admin"
    assert drover.GateMode("drop") is drover.GateMode.DROP and f"{drover.GateMode.PAUSE}" == "pause"
    assert drover.Overlap("buffer-one") is drover.Overlap.BUFFER_ONE
    assert drover.NodeRole("leader") is drover.NodeRole.LEADER
    assert str(drover.TaskState.RETRY_WAIT) == "retry_wait" and drover.TaskState.DEAD.finished
    assert drover.AuthStatus(enabled=True, principal="t-1", role="reader").role is drover.Role.READER
    assert drover.AuthStatus(enabled=False, principal="", role=None).role is None
    assert drover.NewToken(token="x", id="t-1", role="worker").role is drover.Role.WORKER  # type: ignore[arg-type]


def test_replies_become_the_sdk_s_records(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        settings = pb.CallbackSettings(name="cb", max_attempts=3, lease_ms=1500, timeout_ms=60_000, concurrency=2,
                                       backoff_initial_ms=100, backoff_max_ms=2000, rate_count=10,
                                       rate_period_ms=1000, rate_burst=5, retain_dead_ms=0)
        node = pb.NodeStatusResponse(id=2, role="follower", term=3, leader_id=1, has_leader=True,
                                     clock_offset_ms=-12, replicated_now_unix_ms=1_700_000_000_500)
        c, seen = _scripted(monkeypatch, [
            pb.ListCallbacksResponse(callbacks=[pb.CallbackInfo(
                settings=settings, queues=[pb.QueueDepth(priority=0, ready=4, scheduled=1),
                                           pb.QueueDepth(priority=9, ready=2)],
                running=1, dead=7, collections=[pb.CollectionDepth(collection="blue", ready=6)])]),
            pb.ListWorkersResponse(workers=[pb.WorkerSession(
                worker_id="w1", draining=True, idle_ms=250,
                callbacks=[pb.WorkerLoad(callback="cb", credits=4, running=[5, 6])])]),
            pb.GcStatusResponse(collected=10, backlog=2, finished=3, tasks=9, default_succeeded_ms=86_400_000),
            pb.ClusterStatusResponse(leader_id=1, term=3, last_log_index=100, committed_index=99, quorum_ack_ms=20,
                                     members=[pb.MemberStatus(id=2, addr="a:2", voter=True, reachable=True,
                                                              status=node, lag=1, last_contact_ms=40),
                                              pb.MemberStatus(id=3, addr="a:3", reachable=False, error="down")]),
            pb.BackfillScheduleResponse(slots=[pb.BackfillSlot(slot=pb.SlotInfo(at_unix_ms=60_000, id="s1"))]),
        ])
        (cb,) = await c.list_callbacks()
        assert cb.settings == drover.CallbackSettings(
            name="cb", max_attempts=3, lease=1.5, timeout=60.0, concurrency=2, backoff_initial=0.1, backoff_max=2.0,
            rate=(10, 1.0), rate_burst=5, retain_dead=0.0)
        assert (cb.name, cb.ready, cb.scheduled, cb.running, cb.dead) == ("cb", 6, 1, 1, 7)
        assert cb.collections == [drover.CollectionDepth("blue", 6, 0)]
        (w,) = await c.list_workers()
        assert w == drover.WorkerSession("w1", [drover.WorkerLoad("cb", 4, [5, 6])], draining=True, idle=0.25)
        gc = await c.gc_status()
        assert (gc.collected, gc.backlog, gc.oldest_finished, gc.default_retain_succeeded,
                gc.default_retain_dead) == (10, 2, None, 86400.0, None)
        cs = await c.cluster_status()
        assert (cs.leader_id, cs.quorum_ack, cs.voters) == (1, 0.02, [2])
        m2, m3 = cs.members
        assert m2.status is not None and m2.status.role is drover.NodeRole.FOLLOWER
        assert (m2.status.leader_id, m2.status.clock_offset, m2.status.replicated_now) == (1, -0.012, 1_700_000_000.5)
        assert (m2.lag, m2.last_contact) == (1, 0.04)
        assert (m3.status, m3.lag, m3.error) == (None, None, "down")
        (slot,) = await c.backfill_schedule("s", 0, 120, dry_run=True)
        assert slot == drover.BackfillSlot(drover.Slot(60.0, "s1"), task_id=None, created=False)
        assert (seen[-1].from_unix_ms, seen[-1].to_unix_ms, seen[-1].dry_run) == (0, 120_000, True)

    asyncio.run(body())


def test_a_worker_s_task_is_a_task_with_typed_upstream() -> None:
    async def body() -> None:
        a = pb.Assignment(task_id=3, callback="cb", payload=b"p", attempt=2, fencing_token=9, lease_ms=5000,
                          timeout_ms=60_000, priority=4, upstream=pb.Upstream(
                              ended=pb.ParentCounts(succeeded=1, failed=1),
                              parents=[pb.ParentResult(task_id=1, state=pb.TASK_STATE_SUCCEEDED, result=b"r"),
                                       pb.ParentResult(task_id=2, state=pb.TASK_STATE_FAILED)],
                              omitted=0))
        t = WorkerTask(a, basis=0.0)
        assert isinstance(t, drover.Task)
        assert (t.id, t.callback, t.payload, t.attempt, t.fencing_token, t.priority, t.timeout, t.lease) == (
            3, "cb", b"p", 2, 9, 4, 60.0, 5.0)
        assert t.upstream == drover.Upstream(
            ended=drover.ParentCounts(succeeded=1, failed=1),
            parents=[drover.ParentResult(1, drover.TaskState.SUCCEEDED, b"r"),
                     drover.ParentResult(2, drover.TaskState.FAILED, None)])
        assert t.upstream.results() == {1: b"r", 2: None}
        assert not t.cancelled and t.cancel_reason is None
        t.set_cancelled("why")
        assert t.cancelled and t.cancel_reason == "why"
        await asyncio.wait_for(t.wait_cancelled(), 1)
        assert WorkerTask(pb.Assignment(task_id=1), basis=0.0).upstream is None

    asyncio.run(body())


def test_handlers_keep_their_type_and_kind() -> None:
    w = drover.Worker("127.0.0.1:1")

    @w.handler("a")
    async def a(task: drover.Task) -> bytes:
        return b""

    @w.handler("s", concurrency=3)
    def s(task: drover.Task) -> str:
        return ""

    class Handler:
        async def __call__(self, task: drover.Task) -> None:
            return None

    w.register("c", Handler())
    assert a.__name__ == "a" and s.__name__ == "s", "the decorator returns the function itself"
    assert {k: (h.is_async, h.concurrency) for k, h in w._handlers.items()} == {
        "a": (True, 1), "s": (False, 3), "c": (True, 1)}
    assert w.callbacks == ["a", "s", "c"]
    with pytest.raises(ValueError):
        w.register("bad", s, concurrency=0)


def test_the_version_is_the_crate_s_and_the_wheel_ships_its_types() -> None:
    cargo = (REPO / "Cargo.toml").read_text()
    package = cargo[cargo.index("[package]"):]
    m = re.search(r'^version\s*=\s*"([^"]+)"', package, re.M)
    assert m is not None
    assert drover.__version__ == m.group(1) == importlib.metadata.version("drover")
    installed = Path(drover.__file__).parent
    assert "site-packages" in installed.parts, f"the tests run against the installed wheel, not {installed}"
    for f in ("py.typed", "v1/drover_pb2.pyi"):
        assert (installed / f).is_file(), f"the wheel lacks {f}"
