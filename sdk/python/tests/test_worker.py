"""The worker: outcomes, retries, dead letters, cancellation, fencing of
killed and frozen workers, reconnects and health."""

from __future__ import annotations

import asyncio
import signal
import threading
import urllib.request
from pathlib import Path

import grpc

import drover
from drover.v1 import drover_pb2 as pb
from drover.v1 import drover_pb2_grpc as rpc
from support import Cluster, InProcessWorker, Proxy, WorkerProc, assert_no_overlap, runs, wait_until


def final(client: drover.Client, task_id: int, state: drover.TaskState, timeout: float = 30) -> drover.TaskInfo:
    """Wait until the task is in `state`."""
    return wait_until(
        f"task {task_id} to be {state}",
        lambda: (lambda t: t if t.state == state else None)(client.get(task_id, stale=True)),
        timeout,
    )


def test_schedule_run_succeed(cluster: Cluster, client: drover.Client) -> None:
    w = drover.Worker(cluster.endpoints, worker_id="py-ok")

    @w.handler("w_ok", concurrency=4)
    async def ok(task: drover.Task) -> bytes:
        return b"done:" + task.payload

    @w.handler("w_sync")
    def plain(task: drover.Task) -> str:
        assert threading.current_thread() is not threading.main_thread()
        return f"sync attempt {task.attempt}"

    with InProcessWorker(w) as iw:
        a = client.schedule("w_ok", b"x")
        b = client.schedule("w_sync", b"")
        t = final(client, a.id, drover.TaskState.SUCCEEDED)
        assert (t.result, t.attempts, t.worker) == (b"done:x", 1, "py-ok")
        assert final(client, b.id, drover.TaskState.SUCCEEDED).result == b"sync attempt 1"
    assert iw.stats is not None and iw.stats.succeeded == 2


def test_retry_then_fatal_and_the_dead_letter_queue(cluster: Cluster, client: drover.Client) -> None:
    client.register_callback("w_flaky", max_attempts=3, lease=5, backoff_initial=0.1, backoff_max=0.4)
    healed = threading.Event()
    w = drover.Worker(cluster.endpoints)

    @w.handler("w_flaky", concurrency=4)
    async def flaky(task: drover.Task) -> bytes:
        if task.payload == b"fatal":
            if task.attempt < 2:
                raise drover.Retry("not yet")
            raise drover.Fatal("bad input")
        if task.payload == b"crash":
            raise ValueError("an ordinary exception is retriable")
        if not healed.is_set():
            raise drover.Retry(f"still broken at attempt {task.attempt}")
        return b"healed"

    with InProcessWorker(w):
        fatal = client.schedule("w_flaky", b"fatal")
        dead = client.schedule("w_flaky", b"dead")
        crash = client.schedule("w_flaky", b"crash")
        t = final(client, fatal.id, drover.TaskState.FAILED)
        assert t.attempts == 2 and "bad input" in t.last_error
        t = final(client, dead.id, drover.TaskState.DEAD)
        assert t.attempts == 3 and "still broken at attempt 3" in t.last_error
        t = final(client, crash.id, drover.TaskState.DEAD)
        assert "ValueError: an ordinary exception is retriable" in t.last_error
        assert {x.id for x in client.list("w_flaky", state=drover.TaskState.DEAD)} == {dead.id, crash.id}
        healed.set()
        assert client.redrive_dead_letters(task_id=dead.id) == 1
        t = final(client, dead.id, drover.TaskState.SUCCEEDED)
        assert (t.attempts, t.result) == (1, b"healed")


def test_cancel_reaches_a_running_handler(cluster: Cluster, client: drover.Client, tmp_path: Path) -> None:
    client.register_callback("w_cancel", lease=5)
    client.register_callback("w_cancel_sync", lease=5)
    rec = tmp_path / "rec"
    procs = [
        WorkerProc(cluster.endpoint, tmp_path / "a.log", "--callback", "w_cancel", "--mode", "cancel",
                   "--record", str(rec)),
        WorkerProc(cluster.endpoint, tmp_path / "s.log", "--callback", "w_cancel_sync", "--mode", "cancel",
                   "--sync", "--record", str(rec)),
    ]
    try:
        for cb in ("w_cancel", "w_cancel_sync"):
            s = client.schedule(cb, b"")
            wait_until("the handler to run", lambda: client.get(s.id).state == drover.TaskState.RUNNING)
            assert client.cancel(s.id) == drover.TaskState.RUNNING, "a running task is cancelled on its worker"
            t = final(client, s.id, drover.TaskState.CANCELLED, timeout=10)
            assert t.attempts == 1
            assert f"{s.id} cancelled True" in rec.read_text(), "the handler saw the cancel"
    finally:
        for p in procs:
            p.terminate()


def _raw_complete(addr: str, task_id: int, token: int) -> pb.CompletionAck:
    """Send a completion with `token` on a raw worker stream; return the ack."""
    import queue

    q: "queue.Queue[pb.WorkerMessage]" = queue.Queue()
    hello = pb.Hello(worker_id="raw", callbacks=[pb.CallbackCredits(callback="w_raw_none", concurrency=1)])
    q.put(pb.WorkerMessage(hello=hello))
    q.put(pb.WorkerMessage(completion=pb.Completion(task_id=task_id, fencing_token=token, success=b"stale")))
    with grpc.insecure_channel(addr) as ch:
        stream = rpc.WorkerStub(ch).Connect(iter(q.get, None), timeout=20)
        for m in stream:
            if m.WhichOneof("msg") == "completion_ack":
                q.put(None)  # type: ignore[arg-type]
                stream.cancel()
                return m.completion_ack
            assert m.WhichOneof("msg") != "redirect", "connected to a follower"
    raise AssertionError("no completion ack")


def test_a_sigkilled_worker_s_task_reruns_with_a_higher_token(
    cluster: Cluster, client: drover.Client, tmp_path: Path
) -> None:
    client.register_callback("w_kill", lease=2)
    rec = tmp_path / "rec"
    a = WorkerProc(cluster.endpoint, tmp_path / "a.log", "--callback", "w_kill", "--id", "a", "--record", str(rec))
    s = client.schedule("w_kill", b"2000")
    wait_until("the first run", lambda: runs(rec).get(s.id), 20)
    a.kill()
    b = WorkerProc(cluster.endpoint, tmp_path / "b.log", "--callback", "w_kill", "--id", "b", "--record", str(rec))
    try:
        t = final(client, s.id, drover.TaskState.SUCCEEDED)
        assert t.attempts == 2, "the killed run counts as an attempt"
        assert "lease" in t.last_error, t.last_error
        r = runs(rec)[s.id]
        assert len(r) == 2 and not r[0].ended and r[1].ended and r[1].token > r[0].token
        assert t.fencing_token == r[1].token
        assert_no_overlap(rec)
        ack = _raw_complete(cluster.leader().addr, s.id, r[0].token)
        assert not ack.accepted and "stale fencing token" in ack.reason, ack
        assert client.get(s.id).result == b"2000", "the stale completion changed nothing"
    finally:
        b.terminate()


def test_a_frozen_worker_fences_itself_and_never_overlaps_the_rerun(
    cluster: Cluster, client: drover.Client, tmp_path: Path
) -> None:
    client.register_callback("w_frozen", lease=1.5)
    rec = tmp_path / "rec"
    a = WorkerProc(cluster.endpoint, tmp_path / "a.log", "--callback", "w_frozen", "--id", "fa", "--record", str(rec))
    s = client.schedule("w_frozen", b"3000")
    wait_until("the first run", lambda: runs(rec).get(s.id), 20)
    a.signal(signal.SIGSTOP)
    b = WorkerProc(cluster.endpoint, tmp_path / "b.log", "--callback", "w_frozen", "--id", "fb", "--record", str(rec))
    try:
        wait_until("the re-run", lambda: len(runs(rec).get(s.id, [])) >= 2, 20)
        a.signal(signal.SIGCONT)  # wake the frozen worker while the re-run is in progress
        t = final(client, s.id, drover.TaskState.SUCCEEDED)
        r = runs(rec)[s.id]
        assert not r[0].ended, "the frozen run never finished"
        assert t.fencing_token > r[0].token, "the frozen run's result is not the one kept"
        assert any(x.token == t.fencing_token and x.ended for x in r), r
        assert_no_overlap(rec)
        log = a.terminate()
        # The woken worker stops its stale run itself. (It may also have been
        # sent, and refused, a later assignment while it was frozen: a timing
        # the cluster allows, so the count of fenced runs is not asserted.)
        stopped = f"task {s.id} (token {r[0].token}): lease lapsed: handler stopped"
        assert stopped in log, f"the woken worker stopped its stale run itself:\n{log}"
    finally:
        a.kill()
        b.terminate()


def test_a_worker_whose_stream_dies_reconnects_and_reports_health(
    cluster: Cluster, client: drover.Client, tmp_path: Path
) -> None:
    client.register_callback("w_zombie", lease=5)
    proxy = Proxy(cluster.leader().addr)
    health = tmp_path / "healthy"
    w = drover.Worker(proxy.addr, worker_id="zombie", health_file=str(health), health_port=0, unhealthy_after=1)

    @w.handler("w_zombie")
    async def ok(task: drover.Task) -> bytes:
        return b"ran"

    def http_ok() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{w.health_port}/healthz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    with InProcessWorker(w):
        s = client.schedule("w_zombie", b"")
        final(client, s.id, drover.TaskState.SUCCEEDED)
        wait_until("the health file", health.exists, 10)
        assert http_ok()
        proxy.cut()
        wait_until("the worker to report itself unhealthy", lambda: not health.exists(), 10)
        assert not http_ok()
        proxy.restore()
        wait_until("the health file again", health.exists, 15)
        s = client.schedule("w_zombie", b"")
        t = final(client, s.id, drover.TaskState.SUCCEEDED)
        assert t.worker == "zombie", "the reconnected worker runs new tasks"
    proxy.close()
    assert not health.exists(), "a stopped worker removes its health file"


def test_handlers_are_required() -> None:
    w = drover.Worker("127.0.0.1:1")
    try:
        asyncio.run(w.run_async())
    except ValueError as e:
        assert "handler" in str(e)
    else:
        raise AssertionError("a worker without handlers must refuse to run")


def test_sigterm_drains_running_tasks_within_the_grace(
    cluster: Cluster, client: drover.Client, tmp_path: Path
) -> None:
    client.register_callback("w_drain", lease=5, backoff_initial=60, backoff_max=60)
    rec = tmp_path / "rec"
    w = WorkerProc(cluster.endpoint, tmp_path / "w.log", "--callback", "w_drain", "--concurrency", "2",
                   "--record", str(rec), "--grace", "2")
    short = client.schedule("w_drain", b"1000")
    long = client.schedule("w_drain", b"20000")
    wait_until("both runs to start", lambda: short.id in runs(rec) and long.id in runs(rec), 20)
    log = w.terminate()
    assert "1 succeeded" in log and "stats: 2 started, 1 succeeded, 1 failed" in log, log
    t = final(client, short.id, drover.TaskState.SUCCEEDED, timeout=5)
    assert t.attempts == 1 and runs(rec)[short.id][0].ended, "the running task finished before the exit"
    t = final(client, long.id, drover.TaskState.RETRY_WAIT, timeout=5)
    assert "shut down before the task finished" in t.last_error, t.last_error
    assert not runs(rec)[long.id][0].ended, "the task past the grace was stopped"


def test_an_assignment_that_waited_while_the_worker_was_frozen_is_never_started(
    cluster: Cluster, client: drover.Client, tmp_path: Path
) -> None:
    client.register_callback("w_stale", lease=1, backoff_initial=0.1, backoff_max=0.2)
    rec = tmp_path / "rec"
    a = WorkerProc(cluster.endpoint, tmp_path / "a.log", "--callback", "w_stale", "--id", "sa", "--record", str(rec))
    try:
        wait_until("worker sa to connect", lambda: any(x.worker_id == "sa" for x in client.list_workers()), 20)
        a.signal(signal.SIGSTOP)
        s = client.schedule("w_stale", b"300")
        wait_until("the task to be leased to the frozen worker", lambda: client.get(s.id).worker == "sa", 20)
        b = WorkerProc(cluster.endpoint, tmp_path / "b.log", "--callback", "w_stale", "--id", "sb",
                       "--record", str(rec))
        try:
            t = final(client, s.id, drover.TaskState.SUCCEEDED)
            assert t.worker == "sb" and t.attempts >= 2
            a.signal(signal.SIGCONT)
            wait_until("the frozen worker to read its stale assignment",
                       lambda: "arrived after its lease" in a.text() or "lease is gone" in a.text(), 20)
            log = a.terminate()
            assert "0 started" in log, f"the frozen worker started a stale assignment:\n{log}"
            r = runs(rec)[s.id]
            assert len(r) == 1 and r[0].ended and r[0].token == t.fencing_token, r
        finally:
            b.terminate()
    finally:
        a.kill()


def test_run_in_a_background_thread_needs_no_flag(cluster: Cluster, client: drover.Client) -> None:
    """`Worker.run()` in a thread (next to a web app, in a notebook) runs
    with the defaults: signal handlers are installed only in the main thread."""
    w = drover.Worker(cluster.endpoints, worker_id="py-thread", shutdown_grace=5)

    @w.handler("w_thread")
    async def ok(task: drover.Task) -> bytes:
        return b"from a thread"

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    result: "dict[str, object]" = {}

    def run() -> None:
        try:
            result["stats"] = w.run()
        except BaseException as e:  # noqa: BLE001 (asserted below)
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        s = client.schedule("w_thread", b"")
        assert final(client, s.id, drover.TaskState.SUCCEEDED).result == b"from a thread"
    finally:
        w.stop()
        t.join(30)
    assert not t.is_alive(), "the worker did not stop"
    assert "error" not in result, f"Worker.run() in a thread failed: {result.get('error')!r}"
    stats = result["stats"]
    assert isinstance(stats, drover.WorkerStats) and stats.succeeded == 1
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before, "signals untouched"


def test_signal_handlers_are_installed_only_in_the_main_thread() -> None:
    from drover.worker import _Signals

    stopped: "list[str]" = []
    mine = lambda signum, frame: None  # noqa: E731

    async def in_main() -> "tuple[object, ...]":
        s = _Signals(asyncio.get_running_loop(), lambda: stopped.append("stop"), None)
        handled = s.signals
        try:
            if signal.SIGTERM in handled:
                signal.raise_signal(signal.SIGTERM)  # handled: no exit
                for _ in range(100):
                    if stopped:
                        break
                    await asyncio.sleep(0.01)
        finally:
            s.restore()
        assert s.signals == ()
        return handled

    assert threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, mine)
    try:
        assert asyncio.run(in_main()) == (signal.SIGTERM, signal.SIGINT) and stopped == ["stop"]
        assert signal.getsignal(signal.SIGTERM) is mine, "the handler there was is put back"
        assert asyncio.run(_no_handlers(False)) == ()
    finally:
        signal.signal(signal.SIGTERM, before)

    out: "dict[str, object]" = {}
    t = threading.Thread(target=lambda: out.update(auto=asyncio.run(_no_handlers(None)),
                                                   forced=asyncio.run(_no_handlers(True))))
    t.start()
    t.join(10)
    assert out == {"auto": (), "forced": ()}, "no handlers outside the main thread, and no error"


async def _no_handlers(wanted: "bool | None") -> "tuple[object, ...]":
    from drover.worker import _Signals

    s = _Signals(asyncio.get_running_loop(), lambda: None, wanted)
    got = s.signals
    s.restore()
    return got


def test_run_inside_an_event_loop_says_what_to_use() -> None:
    w = drover.Worker("127.0.0.1:1")
    w.register("x", lambda task: None)

    async def body() -> None:
        try:
            w.run()
        except RuntimeError as e:
            assert "async with worker" in str(e)
        else:
            raise AssertionError("run() inside a loop must refuse")

    asyncio.run(body())


def test_async_with_runs_the_worker_and_drains_at_the_end(cluster: Cluster, client: drover.Client) -> None:
    client.register_callback("w_with", lease=5)
    started = threading.Event()

    async def body() -> "drover.WorkerStats":
        w = drover.Worker(cluster.endpoints, worker_id="py-with", shutdown_grace=10)

        @w.handler("w_with", concurrency=2)
        async def slow(task: drover.Task) -> str:
            started.set()
            await asyncio.sleep(float(task.payload))
            return f"slept {task.payload.decode()}"

        async with drover.AsyncClient(cluster.endpoints) as c:
            async with w:
                quick = await c.schedule("w_with", b"0")
                for _ in range(600):
                    if (await c.get(quick.id)).state == drover.TaskState.SUCCEEDED:
                        break
                    await asyncio.sleep(0.05)
                long = await c.schedule("w_with", b"1.5")
                while not started.is_set() or (await c.get(long.id)).state != drover.TaskState.RUNNING:
                    await asyncio.sleep(0.05)
            # The block's end drained the running task before returning.
            t = await c.get(long.id)
            assert t.state == drover.TaskState.SUCCEEDED and t.result == b"slept 1.5", t
            assert (await c.get(quick.id)).result == b"slept 0"
        return w.stats

    stats = asyncio.run(body())
    assert (stats.started, stats.succeeded, stats.failed) == (2, 2, 0)


def test_a_child_task_reads_its_parents_results(cluster: Cluster, client: drover.Client) -> None:
    seen: "dict[int, drover.Upstream]" = {}
    w = drover.Worker(cluster.endpoints, worker_id="py-chain")

    @w.handler("w_parent", concurrency=2)
    async def parent(task: drover.Task) -> bytes:
        assert task.upstream is None
        return b"parent " + task.payload

    @w.handler("w_child")
    def child(task: drover.Task) -> bytes:
        assert task.upstream is not None
        seen[task.id] = task.upstream
        return b" + ".join(p.result or b"?" for p in task.upstream.parents)

    a, b, c = client.schedule_batch([
        drover.TaskSpec("w_parent", b"a", ref="a"),
        drover.TaskSpec("w_parent", b"b", ref="b"),
        drover.TaskSpec("w_child", after_refs=["a", "b"], after_policy=drover.AfterPolicy.ALL_FINISHED),
    ])
    with InProcessWorker(w):
        t = final(client, c.id, drover.TaskState.SUCCEEDED)
    assert t.result == b"parent a + parent b"
    assert t.dependencies is not None and t.dependencies.parents == [a.id, b.id] == t.parents
    assert t.dependencies.policy is drover.AfterPolicy.ALL_FINISHED
    assert t.dependencies.ended == drover.ParentCounts(succeeded=2) and t.dependencies.open == 0
    up = seen[c.id]
    assert up.ended == drover.ParentCounts(succeeded=2) and up.omitted == 0
    assert up.parents == [drover.ParentResult(a.id, drover.TaskState.SUCCEEDED, b"parent a"),
                          drover.ParentResult(b.id, drover.TaskState.SUCCEEDED, b"parent b")]
    assert client.get(a.id).children == [c.id]
