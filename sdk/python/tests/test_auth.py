"""Authentication: the bearer token on every call (and every retry), never
shown; refusals final; the Auth wrappers. Most tests need no cluster (a
scripted stub, or a stand-in server); the last runs a real 3-node TLS
cluster with auth on."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Dict, List, Tuple

import grpc
import pytest

import drover
from drover import _net
from drover.v1 import drover_pb2 as pb
from drover.v1 import drover_pb2_grpc as rpc
from support import Cluster, InProcessWorker, make_certs, wait_until
from test_client import _scripted, _status

SECRET = "drover_" + "ab" * 32
BEARER = ("authorization", f"Bearer {SECRET}")


# ---- the token and its metadata ----


def test_the_token_becomes_a_bearer_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROVER_TOKEN", raising=False)
    assert _net.Bearer(SECRET).metadata == (BEARER,)
    assert _net.Bearer(f"  {SECRET}\n").metadata == (BEARER,), "trimmed, as the CLI does"
    assert _net.Bearer(None).metadata == () and not _net.Bearer(None), "no token, no header"
    monkeypatch.setenv("DROVER_TOKEN", SECRET)
    assert _net.Bearer(None).metadata == (BEARER,), "None takes DROVER_TOKEN"
    assert _net.Bearer("").metadata == (), '"" sends none even with DROVER_TOKEN set'
    assert _net.Bearer("other").metadata == (("authorization", "Bearer other"),), "an explicit token wins"


def test_a_token_that_is_not_printable_ascii_is_refused_without_echoing_it() -> None:
    for bad in ("drover_\u00e9t\u00e9", "two\nlines"):
        with pytest.raises(ValueError) as e:
            _net.Bearer(bad)
        assert bad not in str(e.value)
        with pytest.raises(ValueError):
            drover.AsyncClient("127.0.0.1:1", token=bad)


def test_repr_never_shows_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROVER_TOKEN", raising=False)
    with drover.Client("127.0.0.1:1", token=SECRET) as c:
        assert SECRET not in repr(c) and "redacted" in repr(c) and repr(c).startswith("Client(")
        assert SECRET not in repr(c._aio) and SECRET not in repr(c._aio._pool.bearer)
        assert SECRET not in str(vars(c)) and SECRET not in str(vars(c._aio))
    with drover.Client("127.0.0.1:1") as c:
        assert "token=None" in repr(c)
    w = drover.Worker("127.0.0.1:1", token=SECRET)
    assert SECRET not in repr(w) and SECRET not in str(vars(w))
    t = drover.NewToken(token=SECRET, id="t-0123456789ab", role="reader")
    assert SECRET not in repr(t) and "t-0123456789ab" in repr(t)


def test_every_attempt_carries_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        c, seen = _scripted(monkeypatch, [
            _status(grpc.StatusCode.UNAVAILABLE, [("retry-after-ms", "10"), ("x-drover-leader", "2=127.0.0.1:2")]),
            _status(grpc.StatusCode.UNAVAILABLE),  # lost in flight: retried, the write is idempotent
            pb.ScheduleResponse(task_id=7, created=True),
            pb.Task(id=7, callback="cb"),
            pb.ClusterStatusResponse(),
        ], token=SECRET)
        assert (await c.schedule("cb", b"x")).id == 7
        assert (await c.get(7)).id == 7
        await c.cluster_status()
        assert len(seen) == 5
        assert all(tuple(md) == (BEARER,) for md in c.sent_metadata), c.sent_metadata
        c, seen = _scripted(monkeypatch, [pb.Task(id=7)], token="")
        await c.get(7)
        assert [tuple(md) for md in c.sent_metadata] == [()], "no token: no authorization header"

    asyncio.run(body())


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
def test_refusals_are_final(monkeypatch: pytest.MonkeyPatch, code: grpc.StatusCode) -> None:
    assert _net.classify(_status(code)) is _net.Failure.FINAL

    async def body() -> None:
        for call in ("schedule", "get"):
            c, seen = _scripted(monkeypatch, [_status(code)], token=SECRET)
            with pytest.raises(drover.RpcError) as e:
                await (c.schedule("cb", b"") if call == "schedule" else c.get(1))
            assert e.value.code == code and not e.value.outcome_unknown
            assert len(seen) == 1, f"{code.name} was retried"

    asyncio.run(body())


def test_create_token_makes_the_token_here_and_sends_only_its_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        c, seen = _scripted(monkeypatch, [
            _status(grpc.StatusCode.UNAVAILABLE),  # an unknown outcome: retried with the same hash
            pb.GrantInfo(id="t-0123456789ab", kind="token", role="producer", callbacks=["email.*", "sms"],
                         expires_unix_ms=1_700_000_000_000, note="ci", created=True),
        ])
        t = await c.create_token("producer", "email.*, sms", expires=3600, note="ci")
        assert t.token.startswith("drover_") and len(t.token) == 7 + 64
        int(t.token[7:], 16)
        assert (t.id, t.role, t.callbacks, t.expires_at, t.note, t.created) == (
            "t-0123456789ab", "producer", ["email.*", "sms"], 1_700_000_000.0, "ci", True)
        assert len(seen) == 2 and seen[0] == seen[1]
        req = seen[0]
        assert isinstance(req, pb.CreateTokenRequest)
        assert req.token_sha256 == hashlib.sha256(t.token.encode()).digest() and len(req.token_sha256) == 32
        assert (req.role, list(req.callbacks), req.expires_in_ms, req.note) == (
            "producer", ["email.*", "sms"], 3_600_000, "ci")
        assert t.token.encode() not in req.SerializeToString(), "the token itself is never sent"
        c, seen = _scripted(monkeypatch, [pb.GrantInfo(id="t-1", role="admin")])
        t2 = await c.create_token("admin")
        assert (list(seen[0].callbacks), seen[0].expires_in_ms, t2.expires_at) == ([], 0, None)
        assert t2.token != t.token

    asyncio.run(body())


def test_who_am_i(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        reply = pb.AuthStatus(enabled=True, principal="t-0123456789ab", role="reader", callbacks=["a.*"])
        c, seen = _scripted(monkeypatch, [reply], token=SECRET)
        s = await c.who_am_i()
        assert s == drover.AuthStatus(enabled=True, principal="t-0123456789ab", role="reader", callbacks=["a.*"])
        assert isinstance(seen[0], pb.WhoAmIRequest) and tuple(c.sent_metadata[0]) == (BEARER,)

    asyncio.run(body())


# ---- on the wire, against a stand-in server ----


class _StandIn:
    """A stand-in drover node: Scheduler.GetTask and Schedule, Auth.WhoAmI
    and Worker.Connect, each recording the metadata it got. Token
    ``SECRET`` is a reader: it may get, not schedule; any other is refused."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, Dict[str, str]]] = []
        self.lock = threading.Lock()
        stand_in = self

        def check(method: str, context: grpc.ServicerContext, need_producer: bool = False) -> None:
            md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            with stand_in.lock:
                stand_in.seen.append((method, md))
            if md.get("authorization") != f"Bearer {SECRET}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "the token has no grant (unknown or revoked)")
            if need_producer:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"/drover.v1.Scheduler/{method} needs role producer")

        class Scheduler(rpc.SchedulerServicer):
            def GetTask(self, request: pb.GetTaskRequest, context: grpc.ServicerContext) -> pb.Task:
                check("GetTask", context)
                return pb.Task(id=request.task_id, callback="standin", state=pb.TASK_STATE_SUCCEEDED)

            def Schedule(self, request: pb.ScheduleRequest, context: grpc.ServicerContext) -> pb.ScheduleResponse:
                check("Schedule", context, need_producer=True)
                return pb.ScheduleResponse()

        class Auth(rpc.AuthServicer):
            def WhoAmI(self, request: pb.WhoAmIRequest, context: grpc.ServicerContext) -> pb.AuthStatus:
                check("WhoAmI", context)
                return pb.AuthStatus(enabled=True, principal="t-standin", role="reader")

        class Worker(rpc.WorkerServicer):
            def Connect(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
                check("Connect", context)
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "Connect needs role worker")

        self.server = grpc.server(futures.ThreadPoolExecutor(8))
        rpc.add_SchedulerServicer_to_server(Scheduler(), self.server)
        rpc.add_AuthServicer_to_server(Auth(), self.server)
        rpc.add_WorkerServicer_to_server(Worker(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def calls(self, method: str) -> List[Dict[str, str]]:
        with self.lock:
            return [md for m, md in self.seen if m == method]


@pytest.fixture
def stand_in() -> Any:
    s = _StandIn()
    yield s
    s.server.stop(0)


def test_the_token_goes_on_the_wire_and_refusals_come_back_once(
    stand_in: _StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DROVER_TOKEN", raising=False)
    # Two endpoints (one server): a retried refusal would show as a second call.
    eps = [f"127.0.0.1:{stand_in.port}", f"localhost:{stand_in.port}"]
    with drover.Client(eps, token=SECRET, deadline=5) as c:
        assert c.get(5).callback == "standin"
        assert c.who_am_i().role == "reader"
        with pytest.raises(drover.RpcError) as e:
            c.schedule("cb", b"")
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "producer" in e.value.message
    assert [md.get("authorization") for md in stand_in.calls("GetTask")] == [f"Bearer {SECRET}"]
    assert [md.get("authorization") for md in stand_in.calls("WhoAmI")] == [f"Bearer {SECRET}"]
    assert len(stand_in.calls("Schedule")) == 1, "PERMISSION_DENIED is final"

    monkeypatch.setenv("DROVER_TOKEN", "drover_not-a-grant")
    with drover.Client(eps, deadline=5) as c:
        with pytest.raises(drover.RpcError) as e:
            c.get(6)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert stand_in.calls("GetTask")[-1].get("authorization") == "Bearer drover_not-a-grant", "from DROVER_TOKEN"
    assert len(stand_in.calls("GetTask")) == 2, "UNAUTHENTICATED is final"
    with drover.Client(eps, token="", deadline=5) as c:
        with pytest.raises(drover.RpcError) as e:
            c.get(7)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization" not in stand_in.calls("GetTask")[-1]


def test_the_worker_s_stream_carries_the_token(stand_in: _StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROVER_TOKEN", raising=False)
    w = drover.Worker(f"127.0.0.1:{stand_in.port}", worker_id="py-auth", token=SECRET)
    w.register("cb", lambda task: b"")
    with InProcessWorker(w):
        # Refused (PERMISSION_DENIED), the worker reconnects: each stream carries the token.
        wait_until("two worker streams", lambda: len(stand_in.calls("Connect")) >= 2, timeout=10)
    assert all(md.get("authorization") == f"Bearer {SECRET}" for md in stand_in.calls("Connect"))


# ---- end to end: a TLS cluster with auth on ----


def test_a_tls_cluster_with_auth_on_refuses_and_admits_by_grant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROVER_TOKEN", raising=False)
    certs = make_certs(tmp_path / "certs", 3)
    cluster = Cluster(3, tmp_path / "cluster", tls=certs)
    try:
        ca = cluster.ca
        with drover.Client(cluster.endpoints, ca=ca, token="") as anon:
            # Auth is off: anyone may create the first admin token.
            assert not anon.who_am_i().enabled
            admin = anon.create_token("admin", note="py e2e admin")
            assert admin.created and admin.role == "admin" and admin.id.startswith("t-")

        # Turn auth on with the Auth stub, as the admin, at the leader.
        leader = cluster.leader()
        with cluster.channel(leader.addr) as ch:
            status = rpc.AuthStub(ch).SetEnabled(
                pb.SetAuthRequest(enabled=True), metadata=[("authorization", f"Bearer {admin.token}")], timeout=10)
        assert status.enabled and status.changed

        def everywhere_on() -> bool:
            for ep in cluster.endpoints:
                with drover.Client([ep], ca=ca, token=admin.token, deadline=5) as one:
                    s = one.who_am_i()
                    if not (s.enabled and s.principal == admin.id and s.role == "admin"):
                        return False
            return True

        wait_until("every node to enforce auth", everywhere_on, timeout=20)

        with drover.Client(cluster.endpoints, ca=ca, token=admin.token) as a:
            reader = a.create_token("reader", note="py e2e reader")
            producer = a.create_token("producer", note="py e2e producer")
            worker = a.create_token("worker", ["py_auth*"], note="py e2e worker")
            existing = a.schedule("py_auth", b"by the admin", delay=3600)

        def known_everywhere(token: str) -> bool:
            # Each node decides on its own applied state: wait until every
            # node knows the last grant made (and so the ones before it).
            for ep in cluster.endpoints:
                with drover.Client([ep], ca=ca, token=token, deadline=5) as one:
                    try:
                        one.who_am_i()
                    except drover.RpcError:
                        return False
            return True

        wait_until("the new grants on every node", lambda: known_everywhere(worker.token), timeout=20)

        with drover.Client(cluster.endpoints, ca=ca, token="") as nobody:
            start = time.monotonic()
            with pytest.raises(drover.RpcError) as e:
                nobody.get(existing.id)
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED, e.value
            assert time.monotonic() - start < 5, "a refusal is final, not retried until the deadline"
            with pytest.raises(drover.RpcError) as e:
                nobody.schedule("py_auth", b"")
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED

        with drover.Client(cluster.endpoints, ca=ca, token=reader.token) as r:
            me = r.who_am_i()
            assert (me.enabled, me.principal, me.role) == (True, reader.id, "reader")
            assert r.get(existing.id).id == existing.id
            assert existing.id in [t.id for t in r.list("py_auth")]
            with pytest.raises(drover.RpcError) as e:
                r.schedule("py_auth", b"by a reader")
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED, e.value
            with pytest.raises(drover.RpcError) as e:
                r.create_token("admin")
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED

        with drover.Client(cluster.endpoints, ca=ca, token=producer.token) as p:
            s = p.schedule("py_auth", b"by a producer")
            assert s.created and p.get(s.id).callback == "py_auth"

        # A worker with a worker token runs it.
        w = drover.Worker(cluster.endpoints, worker_id="py-auth-e2e", ca=ca, token=worker.token)
        w.register("py_auth", lambda task: b"done: " + task.payload)
        with InProcessWorker(w), drover.Client(cluster.endpoints, ca=ca, token=reader.token) as r:
            wait_until("the worker to run the task", lambda: r.get(s.id).state == drover.TaskState.SUCCEEDED)
            assert r.get(s.id).result == b"done: by a producer"
    finally:
        cluster.close()
