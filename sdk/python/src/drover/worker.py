"""The worker: run Python handlers for drover callbacks.

```python
w = drover.Worker("127.0.0.1:7001,127.0.0.1:7002", worker_id="py-1")

@w.handler("send_email", concurrency=8)
async def send(task: drover.Task) -> bytes:
    ...
    return b"sent"            # or raise drover.Retry("why") / drover.Fatal("why")

w.run()                       # SIGTERM/SIGINT: stop taking work, drain, exit
```

The rules are the Rust SDK's (``src/worker/runtime.rs``):

- One stream at a time, to the leader (a follower answers with a redirect).
  Any end of the stream, a heartbeat left unacknowledged, or a send that
  fails leads to a reconnect with jittered backoff, unless the worker is
  stopping; handlers keep running meanwhile.
- Leases are renewed by batched heartbeats. A renewal extends the lease from
  when the heartbeat was *sent*, on this process's monotonic clock. A new
  assignment's lease counts from when the last heartbeat acknowledged before
  it was sent (the leader granted it after reading that heartbeat), not from
  its receipt: an assignment that waited in the socket while the process was
  frozen is never started. When the local lease lapses, the handler is told to stop (``task.cancelled`` is
  set, an async handler is cancelled), and its result is dropped, never
  reported: another worker may run the task now (self-fencing).
- A handler's end is reported with its fencing token and resent on every
  reconnect until the leader acknowledges it.
- Plain (sync) functions run in a thread pool; they should check
  ``task.cancelled``, since a thread cannot be stopped from outside.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import AsyncIterator, Callable, Dict, List, Optional, Set, Tuple, Type, Union, cast

import grpc
import grpc.aio

from . import _rpc, _tracing
from ._errors import Fatal, Retry
from ._health import Health
from ._net import Backoff, Bearer, Pool, credentials
from ._task import AsyncHandler, HandlerFn, HandlerResult, HandlerT, SyncHandler, Task, WorkerTask
from .aio import Endpoints, parse_endpoints
from .v1 import drover_pb2 as pb

__all__ = ["Task", "Worker", "WorkerStats", "HandlerFn", "HandlerResult", "AsyncHandler", "SyncHandler"]

log = logging.getLogger("drover.worker")

#: Fastest and slowest heartbeat periods, seconds. The slowest is short
#: because a new assignment's lease counts from the last acknowledged
#: heartbeat's sending (see _Heartbeats.grant_basis), and the shortest lease
#: a callback may have is 1 s.
MIN_HEARTBEAT = 0.05
MAX_HEARTBEAT = 0.25
#: A heartbeat unacknowledged this long (at least) means the stream is dead.
ACK_TIMEOUT = 5.0

@dataclass
class WorkerStats:
    """What a worker did, returned by :meth:`Worker.run`."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    #: Handlers stopped because their lease lapsed or was lost (not reported).
    fenced: int = 0
    #: Completions the leader refused (e.g. a stale token).
    rejected: int = 0

    def __str__(self) -> str:
        return (
            f"{self.started} started, {self.succeeded} succeeded, {self.failed} failed, "
            f"{self.fenced} fenced, {self.rejected} rejected"
        )


@dataclass
class _Handler:
    fn: HandlerFn
    concurrency: int
    is_async: bool


class _Running:
    """A task this worker runs: its handler's future and why it was stopped."""

    def __init__(self, task: WorkerTask) -> None:
        self.task = task
        self.future: Optional[asyncio.Future[HandlerResult]] = None
        #: The server asked to cancel it.
        self.cancel_requested = False
        #: Stopped because the shutdown grace ran out.
        self.shutdown = False
        self.is_async = False


class _Disconnect(Exception):
    """Why a session ended: ``redirect`` to the leader, broken, or finished."""

    def __init__(self, why: str, redirect: Optional[str] = None, finished: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.redirect = redirect
        self.finished = finished


class _Heartbeats:
    """One session's heartbeats: when each was sent, so that an ack renews
    leases from the moment its heartbeat left (seq 0 is the Hello)."""

    def __init__(self) -> None:
        now = time.monotonic()
        self.sent_at: Dict[int, float] = {0: now}
        self.seq = 0
        #: The server's suggested interval.
        self.hint = MAX_HEARTBEAT
        self.last = now
        self.hello = now
        #: When the newest acknowledged heartbeat (or the Hello) was sent.
        #: The leader sends messages in order, so an assignment that arrives
        #: after that ack was granted after the heartbeat was sent: its lease
        #: counts from here, the safe side of its receipt.
        self.grant_basis = now

    def next(self) -> int:
        self.seq += 1
        self.last = time.monotonic()
        self.sent_at[self.seq] = self.last
        return self.seq

    def acked(self, seq: int) -> float:
        basis = self.sent_at.pop(seq, self.hello)
        if seq != 0:
            self.sent_at = {s: t for s, t in self.sent_at.items() if s > seq}
        return basis

    def oldest_unacked(self) -> Optional[float]:
        return min((t for s, t in self.sent_at.items() if s != 0), default=None)


def _is_async(fn: object) -> bool:
    """Whether a handler is a coroutine function (or an object whose
    ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


#: A signal's handler as ``signal.getsignal`` gives it.
_SignalHandler = Union[Callable[[int, Optional[FrameType]], object], int, signal.Handlers, None]


class _Signals:
    """SIGTERM and SIGINT call ``stop`` while the worker runs, where that can
    be: Python lets only the main thread set signal handlers (elsewhere
    ``add_signal_handler`` fails with "set_wakeup_fd only works in main
    thread"), and some loops have none. ``wanted``: False never, None where
    possible, True as well but with a warning where not. :meth:`restore`
    puts back the handlers there were."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Callable[[], None], wanted: Optional[bool]) -> None:
        self.loop = loop
        #: The signals handled, with the handlers they had.
        self.installed: List[Tuple[signal.Signals, _SignalHandler]] = []
        if wanted is False:
            return
        if threading.current_thread() is not threading.main_thread():
            (log.warning if wanted else log.debug)(
                "not handling SIGTERM/SIGINT: only the main thread may (stop this worker with Worker.stop())"
            )
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            before = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, stop)
            except (NotImplementedError, RuntimeError, ValueError) as e:
                log.warning("not handling %s: %s (stop this worker with Worker.stop())", sig.name, e)
            else:
                self.installed.append((sig, before))

    @property
    def signals(self) -> Tuple[signal.Signals, ...]:
        return tuple(sig for sig, _ in self.installed)

    def restore(self) -> None:
        for sig, before in self.installed:
            self.loop.remove_signal_handler(sig)
            if before is not None:
                signal.signal(sig, before)
        self.installed = []


def _default_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(16):04x}"


def _as_bytes(v: object) -> bytes:
    if v is None:
        return b""
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, memoryview):
        return v.tobytes()
    raise Fatal(f"the handler returned {type(v).__name__}; return bytes, str or None")


class Worker:
    """Runs handlers for callbacks, with leases renewed in the background.

    ``endpoints``: every node's ``HOST:PORT`` (list or comma-separated).
    ``worker_id``: stable across restarts lets the leader re-attach the
    session (default: host-pid-random). ``shutdown_grace``: seconds running
    handlers may take to finish after a stop (SIGTERM, :meth:`stop`, the end
    of an ``async with`` block) before they are cancelled (and reported as
    retriable). ``health_file`` / ``health_port``: see
    :mod:`drover._health`; unhealthy after ``unhealthy_after`` seconds
    without a stream. ``on_ack(task_id, accepted)`` observes acknowledged
    completions. ``ca``, ``cert``, ``key``: TLS, as for :class:`drover.Client`.
    ``token``: the bearer token its stream carries (a grant with the worker
    role or higher, for the callbacks it serves), as for
    :class:`drover.Client`: None takes ``DROVER_TOKEN`` from the environment
    when set. A refused stream (``UNAUTHENTICATED``, ``PERMISSION_DENIED``)
    is logged as a warning and retried with backoff, since a grant may be
    created meanwhile.

    Run it in one of three ways: ``worker.run()`` (a script: blocks, and
    drains on SIGTERM/SIGINT when called from the main thread);
    ``async with worker:`` (runs while the block runs, drains at its end);
    or ``await worker.run_async()`` with :meth:`stop` from elsewhere.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        worker_id: Optional[str] = None,
        shutdown_grace: float = 30.0,
        health_file: Optional[str] = None,
        health_port: Optional[int] = None,
        unhealthy_after: float = 30.0,
        on_ack: Optional[Callable[[int, bool], None]] = None,
        connect_timeout: float = 1.0,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        self.endpoints: List[str] = parse_endpoints(endpoints)
        self._tls = credentials(self.endpoints, ca, cert, key)
        self._bearer = Bearer(token)
        self.worker_id: str = worker_id or _default_id()
        self.shutdown_grace = shutdown_grace
        self.on_ack = on_ack
        self.stats = WorkerStats()
        self.health = Health(unhealthy_after, health_file, health_port)
        #: The health endpoint's port once running (when one was asked for).
        self.health_port: Optional[int] = None
        self._connect_timeout = connect_timeout
        self._handlers: Dict[str, _Handler] = {}
        self._running: Dict[int, _Running] = {}
        #: Completions sent and not yet acknowledged, resent on reconnect.
        self._unacked: Dict[int, pb.Completion] = {}
        #: The current session's outbound queue (None between sessions).
        self._out: Optional[asyncio.Queue[Optional[pb.WorkerMessage]]] = None
        #: The running loop, and whether a stop came before it ran; guarded
        #: by _lock, since stop() may come from any thread (reentrant: or
        #: from a signal handler of the thread that holds it).
        self._lock = threading.RLock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop_early = False
        self._stopping = False
        self._grace_deadline: Optional[float] = None
        self._threads: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._tasks: Set[asyncio.Future[None]] = set()
        #: The run started by ``async with``.
        self._run_task: Optional[asyncio.Task[WorkerStats]] = None

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, {self.endpoints!r}, callbacks={sorted(self._handlers)!r})"

    # ---- configuration ----

    def handler(self, callback: str, concurrency: int = 1) -> Callable[[HandlerT], HandlerT]:
        """Decorator: serve ``callback`` with this function, running at most
        ``concurrency`` of its tasks at once. Async functions run on the
        worker's event loop, plain ones in a thread pool. The function is
        returned unchanged."""

        def register(fn: HandlerT) -> HandlerT:
            self.register(callback, fn, concurrency)
            return fn

        return register

    def register(self, callback: str, fn: HandlerFn, concurrency: int = 1) -> None:
        """Serve ``callback`` with ``fn`` (the decorator's plain form)."""
        if concurrency < 1:
            raise ValueError(f"concurrency for {callback!r} must be at least 1")
        if self._loop is not None:
            raise RuntimeError("register handlers before the worker runs")
        self._handlers[callback] = _Handler(fn, concurrency, _is_async(fn))

    @property
    def callbacks(self) -> List[str]:
        """The callbacks this worker serves."""
        return list(self._handlers)

    # ---- running ----

    def run(self, *, install_signal_handlers: Optional[bool] = None) -> WorkerStats:
        """Run until SIGTERM/SIGINT or :meth:`stop`: then take no new tasks,
        let running ones finish within the shutdown grace, and return.

        It blocks, on an event loop of its own. The signal handlers are
        installed only where Python allows it, in the main thread (None, the
        default); elsewhere (a thread next to a web app, a notebook's
        thread) stop it with :meth:`stop`. ``False`` never installs them.
        From inside an event loop use ``async with worker`` or
        :meth:`run_async` instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "Worker.run() blocks and cannot run inside an event loop: "
                "use `async with worker:` or `await worker.run_async()`"
            )
        return asyncio.run(self.run_async(install_signal_handlers=install_signal_handlers))

    def stop(self) -> None:
        """Begin a graceful shutdown (safe from any thread or signal handler).
        A second call cuts the grace short."""
        with self._lock:
            loop = self._loop
            if loop is None:
                self._stop_early = True
                return
        try:
            loop.call_soon_threadsafe(self._begin_stop)
        except RuntimeError:
            pass  # the loop closed meanwhile: the worker has stopped

    @property
    def stopping(self) -> bool:
        """Whether a shutdown has begun."""
        return self._stopping

    def _begin_stop(self) -> None:
        now = time.monotonic()
        if self._stopping:
            log.info("stopping now: cancelling %d running handler(s)", len(self._running))
            self._grace_deadline = now
            return
        log.info("shutting down: draining %d running task(s)", len(self._running))
        self._stopping = True
        self._grace_deadline = now + self.shutdown_grace

    async def __aenter__(self) -> "Worker":
        """Start running in the background (on the current event loop)."""
        if self._run_task is not None:
            raise RuntimeError("the worker is already running")
        self._check_handlers()
        self._run_task = asyncio.ensure_future(self.run_async())
        # Let it start, so that a failure to start surfaces here.
        await asyncio.sleep(0)
        if self._run_task.done():
            task, self._run_task = self._run_task, None
            task.result()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Stop gracefully: no new tasks, running ones finish within the
        shutdown grace (a cancellation of the waiting code cuts it short)."""
        task, self._run_task = self._run_task, None
        if task is None:
            return
        self.stop()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            self.stop()  # a second stop: cancel the handlers now
            await asyncio.wait({task})
            raise

    def _check_handlers(self) -> None:
        if not self._handlers:
            raise ValueError("no handler: register at least one callback with @worker.handler(...)")

    async def run_async(self, *, install_signal_handlers: Optional[bool] = False) -> WorkerStats:
        """:meth:`run` for code already inside an event loop: returns after
        :meth:`stop` (and the drain). ``install_signal_handlers``: True or
        None installs SIGTERM/SIGINT handlers that stop it, where Python
        allows (the main thread); False (the default here) does not."""
        self._check_handlers()
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not None:
                raise RuntimeError("the worker is already running")
            self._loop = loop
            stop_early, self._stop_early = self._stop_early, False
        self._stopping = False
        self._grace_deadline = None
        if stop_early:  # stop() before the loop existed
            self._begin_stop()
        sync_slots = sum(h.concurrency for h in self._handlers.values() if not h.is_async)
        self._threads = concurrent.futures.ThreadPoolExecutor(max(1, sync_slots), thread_name_prefix="drover-handler")
        signals = _Signals(loop, self._begin_stop, install_signal_handlers)
        pool = Pool(self.endpoints, self._connect_timeout, self._tls, self._bearer)
        housekeeping: Optional[asyncio.Future[None]] = None
        try:
            self.health_port = await self.health.start()
            housekeeping = asyncio.ensure_future(self._housekeeping())
            await self._sessions(pool)
        finally:
            if housekeeping is not None:
                housekeeping.cancel()
            for r in list(self._running.values()):
                self._stop_handler(r, "the worker exited")
            signals.restore()
            await pool.close()
            await self.health.stop()
            self._threads.shutdown(wait=False)
            with self._lock:
                self._loop = None
        log.info("worker %s stopped: %s", self.worker_id, self.stats)
        return self.stats

    async def _housekeeping(self) -> None:
        """Every 50 ms: cancel what outlived the shutdown grace; publish health."""
        while True:
            if self._grace_deadline is not None and time.monotonic() >= self._grace_deadline:
                for r in list(self._running.values()):
                    if not r.shutdown:
                        r.shutdown = True
                        self._stop_handler(r, "the worker is shutting down")
            self.health.publish()
            await asyncio.sleep(MIN_HEARTBEAT)

    async def _sessions(self, pool: Pool) -> None:
        next_i = 0
        redirect: Optional[str] = None
        backoff = Backoff()
        while True:
            if redirect is not None:
                addr, redirect = redirect, None
            else:
                addr = self.endpoints[next_i % len(self.endpoints)]
                next_i += 1
            try:
                await self._session(pool, addr)
            except _Disconnect as d:
                if d.finished:
                    return
                if d.redirect:
                    log.info("redirected from %s to the leader at %s", addr, d.redirect)
                    redirect = d.redirect
                    backoff.reset()
                    continue
                log.info("connection to %s lost (%s); reconnecting", addr, d.why)
            finally:
                self.health.stream_down()
            if self._stopping and not self._running:
                past_grace = self._grace_deadline is not None and time.monotonic() >= self._grace_deadline
                if not self._unacked or past_grace:
                    return
            await asyncio.sleep(backoff.next_delay())

    async def _session(self, pool: Pool, addr: str) -> None:
        """One stream: Hello (with the tasks still running, so the leader
        keeps their leases), Drain if stopping, every unacknowledged
        completion; then messages until it breaks or the drain is done."""
        out: asyncio.Queue[Optional[pb.WorkerMessage]] = asyncio.Queue()
        hello = pb.Hello(
            worker_id=self.worker_id,
            callbacks=[pb.CallbackCredits(callback=c, concurrency=h.concurrency) for c, h in self._handlers.items()],
            running=[pb.TaskRef(task_id=i, fencing_token=r.task.fencing_token) for i, r in self._running.items()],
        )
        out.put_nowait(pb.WorkerMessage(hello=hello))
        beats = _Heartbeats()
        draining_sent = self._stopping
        if draining_sent:
            out.put_nowait(pb.WorkerMessage(drain=True))
        for c in self._unacked.values():
            out.put_nowait(pb.WorkerMessage(completion=c))

        async def outgoing() -> AsyncIterator[pb.WorkerMessage]:
            while True:
                m = await out.get()
                if m is None:
                    return
                yield m

        call = _rpc.connect(pool.channel(addr))(outgoing(), metadata=tuple(pool.metadata))
        self._out = out
        reader = asyncio.ensure_future(self._read(call, beats))
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=MIN_HEARTBEAT)
                if done:
                    reader.result()  # raises the _Disconnect
                    raise _Disconnect("the reader ended")
                if self._stopping and not draining_sent:
                    draining_sent = True
                    out.put_nowait(pb.WorkerMessage(drain=True))
                self._heartbeat(out, beats)
                if self._stopping and not self._running and not self._unacked:
                    raise _Disconnect("drained", finished=True)
        finally:
            self._out = None
            reader.cancel()
            out.put_nowait(None)
            call.cancel()

    def _heartbeat(self, out: "asyncio.Queue[Optional[pb.WorkerMessage]]", beats: _Heartbeats) -> None:
        """Send a heartbeat when one is due; a stale one ends the session."""
        now = time.monotonic()
        oldest = beats.oldest_unacked()
        if oldest is not None and now - oldest > max(ACK_TIMEOUT, 3 * beats.hint):
            raise _Disconnect(f"no heartbeat acknowledged for {now - oldest:.1f}s")
        shortest = min((r.task.lease for r in self._running.values()), default=beats.hint * 3)
        period = min(max(shortest / 3, MIN_HEARTBEAT), beats.hint)
        if now - beats.last >= period:
            seq = beats.next()
            tasks = [pb.TaskRef(task_id=i, fencing_token=r.task.fencing_token) for i, r in self._running.items()]
            out.put_nowait(pb.WorkerMessage(heartbeat=pb.Heartbeat(seq=seq, tasks=tasks)))

    async def _read(
        self, call: "grpc.aio.StreamStreamCall[pb.WorkerMessage, pb.ServerMessage]", beats: _Heartbeats
    ) -> None:
        try:
            async for msg in call:
                self.health.stream_up()
                self._on_message(msg, beats)
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                log.warning("the cluster refused this worker's stream: %s: %s", e.code().name, e.details())
            raise _Disconnect(f"{e.code().name}: {e.details()}")
        raise _Disconnect("the server closed the stream")

    def _on_message(self, msg: pb.ServerMessage, beats: _Heartbeats) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "welcome":
            hint = msg.welcome.heartbeat_interval_ms / 1000
            beats.hint = min(max(hint, MIN_HEARTBEAT), MAX_HEARTBEAT)
        elif kind == "assignment":
            self._start(msg.assignment, beats.grant_basis)
        elif kind == "heartbeat_ack":
            basis = beats.acked(msg.heartbeat_ack.seq)
            beats.grant_basis = max(beats.grant_basis, basis)
            for ref in msg.heartbeat_ack.renewed:
                r = self._running.get(ref.task_id)
                if r is not None and r.task.fencing_token == ref.fencing_token:
                    # Valid until a lease from when the renewal was *sent*.
                    r.task.lease_deadline = max(r.task.lease_deadline, basis + r.task.lease)
            for ref in msg.heartbeat_ack.lost:
                self._lose(ref.task_id, ref.fencing_token, "the leader says this run's lease is gone")
        elif kind == "completion_ack":
            ack = msg.completion_ack
            c = self._unacked.get(ack.task_id)
            if c is not None and c.fencing_token == ack.fencing_token:
                del self._unacked[ack.task_id]
                if not ack.accepted:
                    self.stats.rejected += 1
                    log.warning("completion of task %d (token %d) rejected: %s", ack.task_id, ack.fencing_token,
                                ack.reason)
                if self.on_ack is not None:
                    self.on_ack(ack.task_id, ack.accepted)
        elif kind == "cancel":
            r = self._running.get(msg.cancel.task_id)
            if r is not None and r.task.fencing_token == msg.cancel.fencing_token:
                r.cancel_requested = True
                self._stop_handler(r, "the task was cancelled")
        elif kind == "redirect":
            if msg.redirect.leader_addr:
                raise _Disconnect("redirect", redirect=msg.redirect.leader_addr)
            raise _Disconnect("the node knows no leader yet")

    # ---- handlers ----

    def _start(self, a: pb.Assignment, basis: float) -> None:
        h = self._handlers.get(a.callback)
        if h is None:
            log.error("assigned callback %r, which this worker does not serve", a.callback)
            return
        old = self._running.get(a.task_id)
        if old is not None:
            self._lose(a.task_id, old.task.fencing_token, "the task was assigned again")
        assert self._loop is not None
        r = _Running(WorkerTask(a, basis))
        r.is_async = h.is_async
        if not r.task.lease_valid():
            self.stats.fenced += 1
            log.warning("task %d (token %d): the assignment arrived after its lease could have lapsed (this process "
                        "was frozen or its event loop stalled); not run", a.task_id, a.fencing_token)
            return
        self._running[a.task_id] = r
        self.stats.started += 1
        t = asyncio.ensure_future(self._execute(r, h))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _execute(self, r: _Running, h: _Handler) -> None:
        task = r.task
        assert self._loop is not None and self._threads is not None
        fut: asyncio.Future[HandlerResult]
        if h.is_async:
            fut = asyncio.ensure_future(_traced_async(cast(AsyncHandler, h.fn), task))
        else:
            fut = self._loop.run_in_executor(self._threads, _traced_sync, cast(SyncHandler, h.fn), task)
        r.future = fut
        fut.add_done_callback(_consume)
        timeout_at = time.monotonic() + task.timeout
        outcome: Optional[pb.Completion] = None
        while True:
            now = time.monotonic()
            if now >= task.lease_deadline:
                self._stop_handler(r, "the lease lapsed")
                break
            if now >= timeout_at:
                self._stop_handler(r, "the task timed out")
                outcome = _retry(f"timed out after {task.timeout:g}s")
                break
            await asyncio.wait({fut}, timeout=min(task.lease_deadline, timeout_at) - now)
            if fut.done():
                # A result that arrives after the lease lapsed is dropped.
                if time.monotonic() < task.lease_deadline:
                    outcome = self._outcome(r, fut)
                break
        self._finish(r, outcome)

    def _outcome(self, r: _Running, fut: "asyncio.Future[HandlerResult]") -> pb.Completion:
        if r.cancel_requested:
            return pb.Completion(cancelled=True)
        if r.shutdown:
            return _retry("the worker shut down before the task finished")
        if fut.cancelled():
            return _retry("the handler was cancelled")
        e = fut.exception()
        if e is None:
            try:
                return pb.Completion(success=_as_bytes(fut.result()))
            except Fatal as bad:
                e = bad
        if isinstance(e, Retry):
            after = int(e.retry_after * 1000) if e.retry_after else 0
            return pb.Completion(retry=pb.Failure(error=e.reason, retry_after_ms=after))
        if isinstance(e, Fatal):
            return pb.Completion(fatal=pb.Failure(error=e.reason))
        if isinstance(e, asyncio.CancelledError):
            return _retry("the handler was cancelled")
        return _retry(f"{type(e).__name__}: {e}")

    def _stop_handler(self, r: _Running, why: str) -> None:
        """Tell a handler to stop: an async one gets CancelledError; a thread
        only sees the flag, and is waited for unless its lease lapsed or it
        timed out (then its result is not waited for)."""
        r.task.set_cancelled(why)
        if r.is_async and r.future is not None and not r.future.done():
            r.future.cancel()

    def _lose(self, task_id: int, token: int, why: str) -> None:
        r = self._running.get(task_id)
        if r is not None and r.task.fencing_token == token:
            log.warning("task %d (token %d): %s; stopping the handler without reporting", task_id, token, why)
            del self._running[task_id]
            self._stop_handler(r, why)
            self.stats.fenced += 1

    def _finish(self, r: _Running, outcome: Optional[pb.Completion]) -> None:
        """A handler ended: report it (unless its lease lapsed or was lost)."""
        task = r.task
        if self._running.get(task.id) is not r:
            return
        del self._running[task.id]
        if outcome is None:
            self.stats.fenced += 1
            log.warning("task %d (token %d): lease lapsed: handler stopped, not reported", task.id,
                        task.fencing_token)
            return
        outcome.task_id, outcome.fencing_token = task.id, task.fencing_token
        if outcome.WhichOneof("outcome") == "success":
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        self._unacked[task.id] = outcome
        if self._out is not None:
            self._out.put_nowait(pb.WorkerMessage(completion=outcome))


async def _traced_async(fn: AsyncHandler, task: WorkerTask) -> HandlerResult:
    """Run an async handler inside its span (see :func:`_tracing.handler_span`)."""
    with _tracing.handler_span(task):
        return await fn(task)


def _traced_sync(fn: SyncHandler, task: WorkerTask) -> HandlerResult:
    """Run a handler in a pool thread inside its span."""
    with _tracing.handler_span(task):
        return fn(task)


def _retry(error: str) -> pb.Completion:
    return pb.Completion(retry=pb.Failure(error=error))


def _consume(fut: "asyncio.Future[HandlerResult]") -> None:
    """Retrieve a handler's exception so that asyncio does not log it as lost."""
    if not fut.cancelled():
        fut.exception()


