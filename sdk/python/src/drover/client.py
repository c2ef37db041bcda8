"""The blocking client: :class:`Client`.

It runs an :class:`~drover.aio.AsyncClient` on an event loop in a
background thread of its own, so its failover and retry rules are exactly
the asyncio client's. It is safe to share between threads. Every method
has the asyncio client's signature and answer (a test checks that they
stay the same).
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Coroutine, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import _tracing
from ._records import (
    BackfillSlot,
    CallbackInfo,
    Catchup,
    ClusterStatus,
    DstGap,
    DstRepeat,
    Gate,
    GateMode,
    GateModeArg,
    GcStatus,
    Overlap,
    ScheduleInfo,
    SetGateResult,
    WorkerSession,
)
from ._types import (
    AfterPolicy,
    AuthStatus,
    Duration,
    Instant,
    NewToken,
    Payload,
    Role,
    Scheduled,
    TaskInfo,
    TaskSpec,
    TaskState,
)
from .aio import AsyncClient, Endpoints, with_current_trace

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A client of a drover cluster (blocking calls).

    ``Client("127.0.0.1:7001,127.0.0.1:7002")`` or a list of ``HOST:PORT``.
    Calls fail over between the nodes, follow leader hints, retry
    ``UNAVAILABLE``, and reuse one request id across the retries of a
    schedule, so a retry never makes a duplicate. Errors are
    :class:`drover.RpcError` with the gRPC status code and the server's
    message. ``token``: a bearer token sent with every call (default: the
    environment variable ``DROVER_TOKEN``, when set; ``""``: none); see
    :class:`drover.AsyncClient` for it and the other arguments. Close it
    with :meth:`close` or use it as a context manager.
    Its calls block: from async code (an async handler) use
    :class:`drover.AsyncClient` instead.
    """

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        deadline: float = 15.0,
        attempt_timeout: float = 4.0,
        connect_timeout: float = 0.5,
        ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        # Made first: a bad argument raises before a thread is started.
        self._aio = AsyncClient(
            endpoints, deadline=deadline, attempt_timeout=attempt_timeout, connect_timeout=connect_timeout,
            ca=ca, cert=cert, key=key, token=token,
        )
        self.endpoints: List[str] = self._aio.endpoints
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="drover-client", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        # The asyncio client's, which never shows the token.
        return repr(self._aio).replace("AsyncClient(", "Client(", 1)

    def _run(self, coro: Coroutine[object, object, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Close the channels and stop the client's thread."""
        if self._loop.is_closed():
            return
        self._run(self._aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def schedule(
        self,
        callback: str,
        payload: Payload = b"",
        *,
        delay: Optional[Duration] = None,
        at: Optional[Instant] = None,
        priority: int = 0,
        key: Optional[str] = None,
        collection: Optional[str] = None,
        after: Sequence[int] = (),
        after_policy: Optional[AfterPolicy] = None,
        traceparent: Optional[str] = None,
        tracestate: str = "",
    ) -> Scheduled:
        """Schedule one task; returns its id and whether this call created it.

        ``delay`` (seconds or timedelta) or ``at`` (Unix seconds or datetime)
        set when it runs (default now); ``priority`` 0..=9, higher first;
        ``key`` makes scheduling idempotent per callback (as long as the
        task exists); ``collection`` labels it for gates and listings;
        ``after`` names parent task ids it waits for, ``after_policy`` when
        it then runs. ``traceparent``/``tracestate``: the W3C trace context
        its runs join; None takes the current OpenTelemetry span's (with
        ``opentelemetry`` installed), "" sends none. Retried safely after an
        unknown outcome (one request id for every attempt).
        """
        # The current span is this thread's: read it here, not on the loop's.
        if traceparent is None:
            traceparent, tracestate = _tracing.current() or ("", "")
        return self._run(
            self._aio.schedule(
                callback, payload, delay=delay, at=at, priority=priority, key=key, collection=collection,
                after=after, after_policy=after_policy, traceparent=traceparent, tracestate=tracestate,
            )
        )

    def schedule_batch(self, tasks: Sequence[TaskSpec]) -> List[Scheduled]:
        """Schedule many tasks as one Raft entry (all or nothing), in order.
        One request id covers the whole batch and its retries."""
        return self._run(self._aio.schedule_batch(with_current_trace(tasks)))

    def get(self, task_id: int, *, stale: bool = False, payload: bool = False) -> TaskInfo:
        """One task (``stale``: from any node without a leader round trip;
        ``payload``: with its payload). ``NOT_FOUND`` when there is none."""
        return self._run(self._aio.get(task_id, stale=stale, payload=payload))

    def list(
        self,
        callback: Optional[str] = None,
        *,
        state: Optional[TaskState] = None,
        collection: Optional[str] = None,
        limit: Optional[int] = None,
        stale: bool = False,
    ) -> List[TaskInfo]:
        """Tasks in id order, filtered by callback, state and collection;
        every page up to ``limit`` tasks (None: all)."""
        return self._run(self._aio.list(callback, state=state, collection=collection, limit=limit, stale=stale))

    def cancel(self, task_id: int) -> TaskState:
        """Cancel a task: CANCELLED at once if it had not started, RUNNING
        while its worker stops it. Cancelling twice is not an error."""
        return self._run(self._aio.cancel(task_id))

    def register_callback(
        self,
        name: str,
        *,
        max_attempts: int = 5,
        lease: Duration = 30,
        timeout: Duration = 300,
        concurrency: int = 0,
        backoff_initial: Duration = 1,
        backoff_max: Duration = 600,
        rate: Optional[Tuple[int, Duration]] = None,
        rate_burst: int = 0,
        retain_succeeded: Optional[Duration] = None,
        retain_cancelled: Optional[Duration] = None,
        retain_failed: Optional[Duration] = None,
        retain_dead: Optional[Duration] = None,
    ) -> bool:
        """Create or update a callback's settings; True if it was created.

        The defaults are ``drover callback register``'s. ``lease``: a worker
        must renew within this; ``timeout``: longest one attempt may run;
        ``concurrency``: most running at once across workers (0: no limit);
        ``rate``: (starts, per period) across workers; ``retain_*``: how
        long finished tasks are kept (None: the cluster's default).
        """
        return self._run(
            self._aio.register_callback(
                name, max_attempts=max_attempts, lease=lease, timeout=timeout, concurrency=concurrency,
                backoff_initial=backoff_initial, backoff_max=backoff_max, rate=rate, rate_burst=rate_burst,
                retain_succeeded=retain_succeeded, retain_cancelled=retain_cancelled, retain_failed=retain_failed,
                retain_dead=retain_dead,
            )
        )

    def list_callbacks(self, *, stale: bool = False) -> List[CallbackInfo]:
        """Every callback with its settings, queue depths and running count."""
        return self._run(self._aio.list_callbacks(stale=stale))

    def redrive_dead_letters(
        self, *, task_id: Optional[int] = None, callback: Optional[str] = None, with_dependents: bool = False
    ) -> int:
        """Dead tasks (one, or a callback's) back to ready, attempts reset;
        returns how many. ``with_dependents``: also re-arm the dependents
        their failure cancelled. Not retried once it may have been applied."""
        return self._run(
            self._aio.redrive_dead_letters(
                task_id=task_id, callback=callback, with_dependents=with_dependents,
            )
        )

    def purge_dead_letters(self, *, task_id: Optional[int] = None, callback: Optional[str] = None) -> int:
        """Delete dead tasks (one, or a callback's); returns how many."""
        return self._run(self._aio.purge_dead_letters(task_id=task_id, callback=callback))

    def set_gate(
        self,
        callback: str,
        collection: Optional[str] = None,
        *,
        mode: GateModeArg = GateMode.PAUSE,
        until: Optional[Instant] = None,
        duration: Optional[Duration] = None,
        note: str = "",
        cancel_running: bool = False,
    ) -> SetGateResult:
        """Pause (:attr:`GateMode.PAUSE`) or drop (:attr:`GateMode.DROP`) a
        callback or one collection of it, until opened, until ``until``, or
        for ``duration``. ``cancel_running`` (drop only): ask running tasks
        in the gate to stop. ``NOT_FOUND`` for an unknown callback."""
        return self._run(
            self._aio.set_gate(
                callback, collection, mode=mode, until=until, duration=duration, note=note,
                cancel_running=cancel_running,
            )
        )

    def open_gate(self, callback: str, collection: Optional[str] = None) -> bool:
        """Remove a gate; False when there was none."""
        return self._run(self._aio.open_gate(callback, collection))

    def list_gates(self, *, stale: bool = False) -> List[Gate]:
        """Every gate, with the tasks it holds."""
        return self._run(self._aio.list_gates(stale=stale))

    def create_schedule(
        self,
        name: str,
        callback: str,
        *,
        cron: Optional[str] = None,
        every: Optional[Duration] = None,
        tz: Optional[str] = None,
        payload: Payload = b"",
        priority: int = 0,
        collection: Optional[str] = None,
        overlap: Union[Overlap, str, None] = None,
        catchup: Union[Catchup, str, None] = None,
        catchup_window: Optional[Duration] = None,
        jitter: Optional[Duration] = None,
        start: Optional[Instant] = None,
        end: Optional[Instant] = None,
        pause_on_failure: bool = False,
        dst_repeat: Union[DstRepeat, str, None] = None,
        dst_gap: Union[DstGap, str, None] = None,
    ) -> ScheduleInfo:
        """Create a periodic schedule that schedules a ``callback`` task per
        slot: ``cron`` (5 fields, 6 with seconds first, or ``@hourly`` ...;
        in ``tz``, default UTC) or ``every`` (a duration). ``overlap``: what
        a slot does while the last task runs (default skip); ``catchup``:
        which missed slots run (default latest) within ``catchup_window``
        (default 24 h); ``jitter``: a random delay up to this; ``start`` /
        ``end``: when it is active; ``pause_on_failure``; ``dst_repeat`` /
        ``dst_gap``: cron times a DST change repeats or skips.
        ``FAILED_PRECONDITION`` when the name is taken; not retried once it
        may have been applied."""
        return self._run(
            self._aio.create_schedule(
                name, callback, cron=cron, every=every, tz=tz, payload=payload, priority=priority,
                collection=collection, overlap=overlap, catchup=catchup, catchup_window=catchup_window,
                jitter=jitter, start=start, end=end, pause_on_failure=pause_on_failure, dst_repeat=dst_repeat,
                dst_gap=dst_gap,
            )
        )

    def update_schedule(
        self,
        name: str,
        callback: str,
        *,
        cron: Optional[str] = None,
        every: Optional[Duration] = None,
        tz: Optional[str] = None,
        payload: Payload = b"",
        priority: int = 0,
        collection: Optional[str] = None,
        overlap: Union[Overlap, str, None] = None,
        catchup: Union[Catchup, str, None] = None,
        catchup_window: Optional[Duration] = None,
        jitter: Optional[Duration] = None,
        start: Optional[Instant] = None,
        end: Optional[Instant] = None,
        pause_on_failure: bool = False,
        dst_repeat: Union[DstRepeat, str, None] = None,
        dst_gap: Union[DstGap, str, None] = None,
    ) -> ScheduleInfo:
        """Replace a schedule's definition (the arguments are
        :meth:`create_schedule`'s), keeping its state (last slot, runs,
        counts)."""
        return self._run(
            self._aio.update_schedule(
                name, callback, cron=cron, every=every, tz=tz, payload=payload, priority=priority,
                collection=collection, overlap=overlap, catchup=catchup, catchup_window=catchup_window,
                jitter=jitter, start=start, end=end, pause_on_failure=pause_on_failure, dst_repeat=dst_repeat,
                dst_gap=dst_gap,
            )
        )

    def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule (``NOT_FOUND`` when there is none)."""
        return self._run(self._aio.get_schedule(name))

    def list_schedules(self, *, stale: bool = False) -> List[ScheduleInfo]:
        """Every periodic schedule."""
        return self._run(self._aio.list_schedules(stale=stale))

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule (its tasks stay)."""
        return self._run(self._aio.delete_schedule(name))

    def pause_schedule(self, name: str, note: str = "") -> ScheduleInfo:
        """Stop firing until resumed."""
        return self._run(self._aio.pause_schedule(name, note))

    def resume_schedule(self, name: str, catch_up: bool = False) -> ScheduleInfo:
        """Fire again; the slots missed while paused fire only with ``catch_up``."""
        return self._run(self._aio.resume_schedule(name, catch_up))

    def trigger_schedule(self, name: str) -> Optional[int]:
        """Run one now; the task's id, or None when the overlap policy held it."""
        return self._run(self._aio.trigger_schedule(name))

    def backfill_schedule(
        self, name: str, start: Instant, end: Instant, *, dry_run: bool = False
    ) -> List[BackfillSlot]:
        """Run the slots with nominal times in [start, end] (at most 1,000),
        each under its slot key: a slot that already has a task gets no
        second one. ``dry_run``: only list them."""
        return self._run(self._aio.backfill_schedule(name, start, end, dry_run=dry_run))

    def list_workers(self) -> List[WorkerSession]:
        """The worker sessions connected to the leader."""
        return self._run(self._aio.list_workers())

    def gc_status(self) -> GcStatus:
        """Retention: rows deleted so far, the backlog, the defaults."""
        return self._run(self._aio.gc_status())

    def cluster_status(self) -> ClusterStatus:
        """The cluster as the leader sees it, with every member's own view."""
        return self._run(self._aio.cluster_status())

    def who_am_i(self) -> AuthStatus:
        """Who the cluster takes this client for (its grant id, role and
        callbacks; an empty principal when anonymous), and whether auth is
        on. Needs no role: any grant may ask (and anyone while auth is off)."""
        return self._run(self._aio.who_am_i())

    def create_token(
        self,
        role: Union[Role, str],
        callbacks: Union[str, Sequence[str]] = (),
        expires: Optional[Duration] = None,
        note: str = "",
    ) -> NewToken:
        """Make a bearer token with ``role`` (:class:`drover.Role` or its
        name), for the callbacks matching the globs ``callbacks`` (a list,
        or comma-separated; empty: every callback), ending ``expires`` after
        now (None: never).

        The token is made here, and only its SHA-256 is sent: the returned
        :class:`drover.NewToken`'s ``token`` is the only copy (keep it), its
        ``id`` names the grant. Needs admin once auth is on. Retried safely:
        the same hash is the same grant.
        """
        return self._run(self._aio.create_token(role, callbacks, expires, note))
