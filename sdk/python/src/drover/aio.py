"""The asyncio client: :class:`AsyncClient`.

Every call fails over between the endpoints it was given, follows leader
hints, and retries only what is safe (see :mod:`drover._net`). Every
``schedule`` and ``schedule_batch`` carries one request id, made once per
call and reused by every retry of it, as the Rust client does: the cluster
remembers it for 24 hours and answers a repeat with the first answer, so a
retry after an unknown outcome never creates a second task. (Idempotency
keys are the caller's, per task: none is generated.)

Every call carries the client's bearer token (``token=``, or the
environment variable ``DROVER_TOKEN``) as ``authorization: Bearer <token>``
metadata, on every attempt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from types import TracebackType
from typing import List, Optional, Sequence, Tuple, Type, Union, cast

from . import _rpc, _tracing
from ._net import Bearer, Caller, Pool, credentials
from ._records import (
    GATE_MODE_TO_PB,
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
    backfill_slot_from_pb,
    callback_info_from_pb,
    cluster_status_from_pb,
    gate_from_pb,
    gc_status_from_pb,
    schedule_info_from_pb,
    set_gate_result_from_pb,
    worker_session_from_pb,
)
from ._rpc import Req, Resp, Unary
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
    auth_status_from_pb,
    new_token_from_pb,
    payload_bytes,
    scheduled_from_pb,
    task_info_from_pb,
    task_spec_to_pb,
    to_ms,
    to_unix_ms,
)
from .v1 import drover_pb2 as pb

__all__ = ["AsyncClient", "Endpoints"]

#: Where the cluster is: ``"host:port,host:port"`` or a list of ``host:port``.
Endpoints = Union[str, Sequence[str]]


def parse_endpoints(endpoints: Endpoints) -> List[str]:
    """``"a:1,b:2"`` or ``["a:1", "b:2"]`` as a list of addresses."""
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    out = [e.strip() for e in endpoints if e.strip()]
    if not out:
        raise ValueError("no endpoint given: pass at least one HOST:PORT")
    return out


def new_request_id() -> bytes:
    """A fresh request id: 128 random bits (``src/client.rs``'s ``new_request_id``)."""
    return os.urandom(16)


def new_token() -> str:
    """A fresh bearer token: ``drover_`` and 64 random hex digits (256 bits),
    as the CLI's ``drover auth token create`` makes."""
    return "drover_" + secrets.token_hex(32)


def token_sha256(token: str) -> bytes:
    """What the cluster stores of a token: the SHA-256 of its text (32 bytes)."""
    return hashlib.sha256(token.encode()).digest()


def _dead_letter_request(task_id: Optional[int], callback: Optional[str], deps: bool) -> pb.DeadLetterRequest:
    if (task_id is None) == (callback is None):
        raise ValueError("give task_id or callback")
    if task_id is not None:
        return pb.DeadLetterRequest(task_id=task_id, with_dependents=deps)
    return pb.DeadLetterRequest(callback=callback, with_dependents=deps)


def _schedule_definition(
    name: str,
    callback: str,
    *,
    cron: Optional[str],
    every: Optional[Duration],
    tz: Optional[str],
    payload: Payload,
    priority: int,
    collection: Optional[str],
    overlap: Union[Overlap, str, None],
    catchup: Union[Catchup, str, None],
    catchup_window: Optional[Duration],
    jitter: Optional[Duration],
    start: Optional[Instant],
    end: Optional[Instant],
    pause_on_failure: bool,
    dst_repeat: Union[DstRepeat, str, None],
    dst_gap: Union[DstGap, str, None],
) -> pb.ScheduleDefinition:
    """The protocol message of a schedule's definition (unset fields take
    the cluster's defaults)."""
    d = pb.ScheduleDefinition(
        name=name, callback=callback, cron=cron or "", tz=tz or "", payload=payload_bytes(payload),
        priority=priority, collection=collection or "", pause_on_failure=pause_on_failure,
        overlap=Overlap(overlap).value if overlap is not None else "",
        catchup=Catchup(catchup).value if catchup is not None else "",
        dst_repeat=DstRepeat(dst_repeat).value if dst_repeat is not None else "",
        dst_gap=DstGap(dst_gap).value if dst_gap is not None else "",
    )
    if every is not None:
        d.every_ms = to_ms(every)
    if catchup_window is not None:
        d.catchup_window_ms = to_ms(catchup_window)
    if jitter is not None:
        d.jitter_ms = to_ms(jitter)
    if start is not None:
        d.start_unix_ms = to_unix_ms(start)
    if end is not None:
        d.end_unix_ms = to_unix_ms(end)
    return d


def with_current_trace(tasks: Sequence[TaskSpec]) -> List[TaskSpec]:
    """The specs, those without a trace context given the current span's."""
    cur = _tracing.current()
    if cur is None:
        return list(tasks)
    return [t if t.traceparent is not None else dataclasses.replace(t, traceparent=cur[0], tracestate=cur[1])
            for t in tasks]


class AsyncClient:
    """A client of a drover cluster, for asyncio code.

    ``endpoints``: every node's ``HOST:PORT`` (a list or a comma-separated
    string). ``deadline``: give up failing over after this many seconds.
    ``attempt_timeout``: per attempt (a frozen node costs this before the
    next is tried). It belongs to the event loop that first uses it (its
    channels do). ``ca``, ``cert``, ``key``: TLS, as the CLI's --ca,
    --cert and --cert-key (PEM files); an ``https://`` endpoint also means
    TLS. ``token``: a bearer token sent with every call (as the CLI's
    --token); None takes ``DROVER_TOKEN`` from the environment when it is
    set, ``""`` sends none. A cluster with auth on refuses a call with
    :class:`drover.RpcError` ``UNAUTHENTICATED`` (no, unknown, expired or
    revoked token) or ``PERMISSION_DENIED`` (the grant does not cover it),
    neither retried. Use it as ``async with AsyncClient(...) as c:`` or
    call :meth:`close`.
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
        self.endpoints: List[str] = parse_endpoints(endpoints)
        tls = credentials(self.endpoints, ca, cert, key)
        self._pool = Pool(self.endpoints, connect_timeout, tls, Bearer(token))
        self._caller = Caller(self._pool, deadline, attempt_timeout)

    def __repr__(self) -> str:
        # Never the token: only whether there is one.
        token = "<redacted>" if self._pool.bearer else "None"
        return f"{type(self).__name__}({self.endpoints!r}, tls={self._pool.tls is not None}, token={token})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels."""
        await self._pool.close()

    async def _call(self, method: "Unary[Req, Resp]", req: Req, *, idempotent: bool, write: bool = False) -> Resp:
        """``method`` with failover (every attempt carries the token)."""
        return await self._caller.call(method, req, idempotent=idempotent, write=write)

    # ---- tasks ----

    async def schedule(
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
        if traceparent is None:
            traceparent, tracestate = _tracing.current() or ("", "")
        spec = TaskSpec(callback, payload, delay, at, priority, key, collection, after, after_policy,
                        traceparent=traceparent, tracestate=tracestate)
        req = pb.ScheduleRequest(task=task_spec_to_pb(spec), request_id=new_request_id())
        return scheduled_from_pb(await self._call(_rpc.SCHEDULE, req, idempotent=True, write=True))

    async def schedule_batch(self, tasks: Sequence[TaskSpec]) -> List[Scheduled]:
        """Schedule many tasks as one Raft entry (all or nothing), in order.
        One request id covers the whole batch and its retries."""
        tasks = with_current_trace(tasks)
        req = pb.ScheduleBatchRequest(tasks=[task_spec_to_pb(t) for t in tasks], request_id=new_request_id())
        r = await self._call(_rpc.SCHEDULE_BATCH, req, idempotent=True, write=True)
        return [scheduled_from_pb(x, r.replayed) for x in r.results]

    async def get(self, task_id: int, *, stale: bool = False, payload: bool = False) -> TaskInfo:
        """One task (``stale``: from any node without a leader round trip;
        ``payload``: with its payload). ``NOT_FOUND`` when there is none."""
        req = pb.GetTaskRequest(task_id=task_id, allow_stale=stale, include_payload=payload)
        return task_info_from_pb(await self._call(_rpc.GET_TASK, req, idempotent=True))

    async def list(
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
        out: List[TaskInfo] = []
        after = 0
        while limit is None or len(out) < limit:
            page = 10_000 if limit is None else min(10_000, limit - len(out))
            req = pb.ListTasksRequest(
                callback=callback or "", state=cast("pb.TaskState", int(state or 0)), limit=page, after_id=after,
                allow_stale=stale, collection=collection or "",
            )
            r = await self._call(_rpc.LIST_TASKS, req, idempotent=True)
            out.extend(task_info_from_pb(t) for t in r.tasks)
            if r.next_after == 0:
                break
            after = r.next_after
        return out

    async def cancel(self, task_id: int) -> TaskState:
        """Cancel a task: CANCELLED at once if it had not started, RUNNING
        while its worker stops it. Cancelling twice is not an error."""
        r = await self._call(_rpc.CANCEL_TASK, pb.CancelTaskRequest(task_id=task_id), idempotent=True)
        return TaskState(r.state)

    # ---- callbacks and dead letters ----

    async def register_callback(
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
        s = pb.CallbackSettings(
            name=name, max_attempts=max_attempts, lease_ms=to_ms(lease), timeout_ms=to_ms(timeout),
            concurrency=concurrency, backoff_initial_ms=to_ms(backoff_initial), backoff_max_ms=to_ms(backoff_max),
        )
        if rate is not None:
            s.rate_count, s.rate_period_ms, s.rate_burst = rate[0], to_ms(rate[1]), rate_burst
        if retain_succeeded is not None:
            s.retain_succeeded_ms = to_ms(retain_succeeded)
        if retain_cancelled is not None:
            s.retain_cancelled_ms = to_ms(retain_cancelled)
        if retain_failed is not None:
            s.retain_failed_ms = to_ms(retain_failed)
        if retain_dead is not None:
            s.retain_dead_ms = to_ms(retain_dead)
        r = await self._call(_rpc.REGISTER_CALLBACK, pb.RegisterCallbackRequest(settings=s), idempotent=True)
        return r.created

    async def list_callbacks(self, *, stale: bool = False) -> List[CallbackInfo]:
        """Every callback with its settings, queue depths and running count."""
        r = await self._call(_rpc.LIST_CALLBACKS, pb.ListCallbacksRequest(allow_stale=stale), idempotent=True)
        return [callback_info_from_pb(c) for c in r.callbacks]

    async def redrive_dead_letters(
        self, *, task_id: Optional[int] = None, callback: Optional[str] = None, with_dependents: bool = False
    ) -> int:
        """Dead tasks (one, or a callback's) back to ready, attempts reset;
        returns how many. ``with_dependents``: also re-arm the dependents
        their failure cancelled. Not retried once it may have been applied."""
        req = _dead_letter_request(task_id, callback, with_dependents)
        return (await self._call(_rpc.REDRIVE_DEAD_LETTERS, req, idempotent=False)).count

    async def purge_dead_letters(self, *, task_id: Optional[int] = None, callback: Optional[str] = None) -> int:
        """Delete dead tasks (one, or a callback's); returns how many."""
        req = _dead_letter_request(task_id, callback, False)
        return (await self._call(_rpc.PURGE_DEAD_LETTERS, req, idempotent=False)).count

    # ---- gates ----

    async def set_gate(
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
        try:
            gate_mode = GateMode(mode)
        except ValueError:
            raise ValueError(f"mode is 'pause' or 'drop', not {mode!r}") from None
        req = pb.SetGateRequest(
            callback=callback, collection=collection or "", mode=GATE_MODE_TO_PB[gate_mode], note=note,
            cancel_running=cancel_running,
        )
        if until is not None:
            req.until_unix_ms = to_unix_ms(until)
        elif duration is not None:
            req.for_ms = to_ms(duration)
        return set_gate_result_from_pb(await self._call(_rpc.SET_GATE, req, idempotent=True))

    async def open_gate(self, callback: str, collection: Optional[str] = None) -> bool:
        """Remove a gate; False when there was none."""
        req = pb.OpenGateRequest(callback=callback, collection=collection or "")
        return (await self._call(_rpc.OPEN_GATE, req, idempotent=True)).existed

    async def list_gates(self, *, stale: bool = False) -> List[Gate]:
        """Every gate, with the tasks it holds."""
        r = await self._call(_rpc.LIST_GATES, pb.ListGatesRequest(allow_stale=stale), idempotent=True)
        return [gate_from_pb(g) for g in r.gates]

    # ---- periodic schedules ----

    async def create_schedule(
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
        d = _schedule_definition(
            name, callback, cron=cron, every=every, tz=tz, payload=payload, priority=priority,
            collection=collection, overlap=overlap, catchup=catchup, catchup_window=catchup_window, jitter=jitter,
            start=start, end=end, pause_on_failure=pause_on_failure, dst_repeat=dst_repeat, dst_gap=dst_gap,
        )
        return schedule_info_from_pb(await self._call(_rpc.CREATE_SCHEDULE, d, idempotent=False))

    async def update_schedule(
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
        d = _schedule_definition(
            name, callback, cron=cron, every=every, tz=tz, payload=payload, priority=priority,
            collection=collection, overlap=overlap, catchup=catchup, catchup_window=catchup_window, jitter=jitter,
            start=start, end=end, pause_on_failure=pause_on_failure, dst_repeat=dst_repeat, dst_gap=dst_gap,
        )
        return schedule_info_from_pb(await self._call(_rpc.UPDATE_SCHEDULE, d, idempotent=True))

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule (``NOT_FOUND`` when there is none)."""
        return schedule_info_from_pb(await self._call(_rpc.GET_SCHEDULE, pb.ScheduleRef(name=name), idempotent=True))

    async def list_schedules(self, *, stale: bool = False) -> List[ScheduleInfo]:
        """Every periodic schedule."""
        r = await self._call(_rpc.LIST_SCHEDULES, pb.ListSchedulesRequest(allow_stale=stale), idempotent=True)
        return [schedule_info_from_pb(s) for s in r.schedules]

    async def delete_schedule(self, name: str) -> None:
        """Delete a schedule (its tasks stay)."""
        await self._call(_rpc.DELETE_SCHEDULE, pb.ScheduleRef(name=name), idempotent=False)

    async def pause_schedule(self, name: str, note: str = "") -> ScheduleInfo:
        """Stop firing until resumed."""
        req = pb.PauseScheduleRequest(name=name, note=note)
        return schedule_info_from_pb(await self._call(_rpc.PAUSE_SCHEDULE, req, idempotent=True))

    async def resume_schedule(self, name: str, catch_up: bool = False) -> ScheduleInfo:
        """Fire again; the slots missed while paused fire only with ``catch_up``."""
        req = pb.ResumeScheduleRequest(name=name, catch_up=catch_up)
        return schedule_info_from_pb(await self._call(_rpc.RESUME_SCHEDULE, req, idempotent=True))

    async def trigger_schedule(self, name: str) -> Optional[int]:
        """Run one now; the task's id, or None when the overlap policy held it."""
        r = await self._call(_rpc.TRIGGER_SCHEDULE, pb.ScheduleRef(name=name), idempotent=False)
        return r.task_id if r.HasField("task_id") else None

    async def backfill_schedule(
        self, name: str, start: Instant, end: Instant, *, dry_run: bool = False
    ) -> List[BackfillSlot]:
        """Run the slots with nominal times in [start, end] (at most 1,000),
        each under its slot key: a slot that already has a task gets no
        second one. ``dry_run``: only list them."""
        req = pb.BackfillScheduleRequest(
            name=name, from_unix_ms=to_unix_ms(start), to_unix_ms=to_unix_ms(end), dry_run=dry_run
        )
        r = await self._call(_rpc.BACKFILL_SCHEDULE, req, idempotent=True)
        return [backfill_slot_from_pb(s) for s in r.slots]

    # ---- operations ----

    async def list_workers(self) -> List[WorkerSession]:
        """The worker sessions connected to the leader."""
        r = await self._call(_rpc.LIST_WORKERS, pb.ListWorkersRequest(), idempotent=True)
        return [worker_session_from_pb(w) for w in r.workers]

    async def gc_status(self) -> GcStatus:
        """Retention: rows deleted so far, the backlog, the defaults."""
        return gc_status_from_pb(await self._call(_rpc.GC_STATUS, pb.GcStatusRequest(), idempotent=True))

    async def cluster_status(self) -> ClusterStatus:
        """The cluster as the leader sees it, with every member's own view."""
        r = await self._call(_rpc.CLUSTER_STATUS, pb.ClusterStatusRequest(), idempotent=True)
        return cluster_status_from_pb(r)

    # ---- auth ----

    async def who_am_i(self) -> AuthStatus:
        """Who the cluster takes this client for (its grant id, role and
        callbacks; an empty principal when anonymous), and whether auth is
        on. Needs no role: any grant may ask (and anyone while auth is off)."""
        return auth_status_from_pb(await self._call(_rpc.WHO_AM_I, pb.WhoAmIRequest(), idempotent=True))

    async def create_token(
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
        if isinstance(callbacks, str):
            callbacks = callbacks.split(",")
        token = new_token()
        req = pb.CreateTokenRequest(
            token_sha256=token_sha256(token), role=Role(role).value,
            callbacks=[c.strip() for c in callbacks if c.strip()],
            expires_in_ms=to_ms(expires) if expires is not None else 0, note=note,
        )
        return new_token_from_pb(token, await self._call(_rpc.CREATE_TOKEN, req, idempotent=True, write=True))
