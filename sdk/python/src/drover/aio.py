"""The asyncio client: :class:`AsyncClient`.

Every call fails over between the endpoints it was given, follows leader
hints, and retries only what is safe (see :mod:`drover._net`). Every
``schedule`` and ``schedule_batch`` carries a request id, and every task an
idempotency key (generated when the caller gave none), both made once and
reused by every retry: a retry after an unknown outcome returns the first
answer instead of creating a second task.

Every call carries the client's bearer token (``token=``, or the
environment variable ``DROVER_TOKEN``) as ``authorization: Bearer <token>``
metadata, on every attempt.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union, cast

import grpc.aio

from ._net import Bearer, Caller, Pool, credentials
from ._types import (
    AfterPolicy,
    AuthStatus,
    Duration,
    Instant,
    NewToken,
    Scheduled,
    TaskInfo,
    TaskSpec,
    TaskState,
    to_ms,
    to_unix_ms,
)
from .v1 import drover_pb2 as pb
from .v1 import drover_pb2_grpc as rpc

__all__ = ["AsyncClient"]

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
    """A fresh request id: 128 random bits."""
    return os.urandom(16)


def new_key() -> str:
    """A generated idempotency key."""
    return "py-" + uuid.uuid4().hex


def new_token() -> str:
    """A fresh bearer token: ``drover_`` and 64 random hex digits (256 bits),
    as the CLI's ``drover auth token create`` makes."""
    return "drover_" + secrets.token_hex(32)


def token_sha256(token: str) -> bytes:
    """What the cluster stores of a token: the SHA-256 of its text (32 bytes)."""
    return hashlib.sha256(token.encode()).digest()


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
        self.endpoints = parse_endpoints(endpoints)
        tls = credentials(self.endpoints, ca, cert, key)
        self._pool = Pool(self.endpoints, connect_timeout, tls, Bearer(token))
        self._caller = Caller(self._pool, deadline, attempt_timeout)

    def __repr__(self) -> str:
        # Never the token: only whether there is one.
        token = "<redacted>" if self._pool.bearer else "None"
        return f"{type(self).__name__}({self.endpoints!r}, tls={self._pool.tls is not None}, token={token})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels."""
        await self._pool.close()

    async def _call(self, service: str, method: str, req: Any, *, idempotent: bool, write: bool = False) -> Any:
        """Call ``service``'s ``method`` (e.g. "Scheduler", "GetTask") with
        failover; every attempt carries the token's metadata."""
        metadata = self._pool.metadata

        def attempt(ch: grpc.aio.Channel, timeout: float) -> Any:
            stub = getattr(rpc, f"{service}Stub")(ch)
            return getattr(stub, method)(req, timeout=timeout, metadata=metadata)

        return await self._caller.call(attempt, idempotent=idempotent, write=write)

    async def _scheduler(self, method: str, req: Any, *, idempotent: bool, write: bool = False) -> Any:
        return await self._call("Scheduler", method, req, idempotent=idempotent, write=write)

    async def _cluster(self, method: str, req: Any) -> Any:
        return await self._call("Cluster", method, req, idempotent=True)

    # ---- tasks ----

    async def schedule(
        self,
        callback: str,
        payload: Union[bytes, str] = b"",
        *,
        delay: Optional[Duration] = None,
        at: Optional[Instant] = None,
        priority: int = 0,
        key: Optional[str] = None,
        collection: Optional[str] = None,
        after: Sequence[int] = (),
        after_policy: Optional[AfterPolicy] = None,
    ) -> Scheduled:
        """Schedule one task; returns its id and whether this call created it.

        ``delay`` (seconds or timedelta) or ``at`` (Unix seconds or datetime)
        set when it runs (default now); ``priority`` 0..=9, higher first;
        ``key`` makes scheduling idempotent per callback (generated when
        None); ``after`` names parent task ids it waits for.
        """
        spec = TaskSpec(
            callback, payload if isinstance(payload, bytes) else payload.encode(), delay, at, priority, key,
            collection, after, after_policy,
        )
        req = pb.ScheduleRequest(task=spec.to_pb(new_key()), request_id=new_request_id())
        return Scheduled.from_pb(await self._scheduler("Schedule", req, idempotent=True, write=True))

    async def schedule_batch(self, tasks: Sequence[TaskSpec]) -> List[Scheduled]:
        """Schedule many tasks as one Raft entry (all or nothing), in order."""
        req = pb.ScheduleBatchRequest(tasks=[t.to_pb(new_key()) for t in tasks], request_id=new_request_id())
        r = await self._scheduler("ScheduleBatch", req, idempotent=True, write=True)
        return [Scheduled.from_pb(x) for x in r.results]

    async def get(self, task_id: int, *, stale: bool = False, payload: bool = False) -> TaskInfo:
        """One task (``stale``: from any node without a leader round trip)."""
        req = pb.GetTaskRequest(task_id=task_id, allow_stale=stale, include_payload=payload)
        return TaskInfo.from_pb(await self._scheduler("GetTask", req, idempotent=True))

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
                callback=callback or "", state=cast(Any, int(state or 0)), limit=page, after_id=after,
                allow_stale=stale, collection=collection or "",
            )
            r = await self._scheduler("ListTasks", req, idempotent=True)
            out.extend(TaskInfo.from_pb(t) for t in r.tasks)
            if r.next_after == 0:
                break
            after = r.next_after
        return out

    async def cancel(self, task_id: int) -> TaskState:
        """Cancel a task: CANCELLED at once if it had not started, RUNNING
        while its worker stops it. Cancelling twice is not an error."""
        r = await self._scheduler("CancelTask", pb.CancelTaskRequest(task_id=task_id), idempotent=True)
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
        ``rate``: (starts, per period) across workers.
        """
        s = pb.CallbackSettings(
            name=name, max_attempts=max_attempts, lease_ms=to_ms(lease), timeout_ms=to_ms(timeout),
            concurrency=concurrency, backoff_initial_ms=to_ms(backoff_initial), backoff_max_ms=to_ms(backoff_max),
        )
        if rate is not None:
            s.rate_count, s.rate_period_ms, s.rate_burst = rate[0], to_ms(rate[1]), rate_burst
        for field, v in (
            ("retain_succeeded_ms", retain_succeeded), ("retain_cancelled_ms", retain_cancelled),
            ("retain_failed_ms", retain_failed), ("retain_dead_ms", retain_dead),
        ):
            if v is not None:
                setattr(s, field, to_ms(v))
        r = await self._scheduler("RegisterCallback", pb.RegisterCallbackRequest(settings=s), idempotent=True)
        return bool(r.created)

    async def list_callbacks(self) -> List[pb.CallbackInfo]:
        """Every callback with its settings, queue depths and running count."""
        return list((await self._scheduler("ListCallbacks", pb.ListCallbacksRequest(), idempotent=True)).callbacks)

    def _dead_letter_request(self, task_id: Optional[int], callback: Optional[str], deps: bool) -> Any:
        if (task_id is None) == (callback is None):
            raise ValueError("give task_id or callback")
        if task_id is not None:
            return pb.DeadLetterRequest(task_id=task_id, with_dependents=deps)
        return pb.DeadLetterRequest(callback=callback, with_dependents=deps)

    async def redrive_dead_letters(
        self, *, task_id: Optional[int] = None, callback: Optional[str] = None, with_dependents: bool = False
    ) -> int:
        """Dead tasks back to ready, attempts reset; returns how many. Not
        retried once it may have been applied."""
        req = self._dead_letter_request(task_id, callback, with_dependents)
        return int((await self._scheduler("RedriveDeadLetters", req, idempotent=False)).count)

    async def purge_dead_letters(self, *, task_id: Optional[int] = None, callback: Optional[str] = None) -> int:
        """Delete dead tasks; returns how many."""
        req = self._dead_letter_request(task_id, callback, False)
        return int((await self._scheduler("PurgeDeadLetters", req, idempotent=False)).count)

    # ---- gates ----

    async def set_gate(
        self,
        callback: str,
        collection: Optional[str] = None,
        *,
        mode: str = "pause",
        until: Optional[Instant] = None,
        duration: Optional[Duration] = None,
        note: str = "",
        cancel_running: bool = False,
    ) -> pb.SetGateResponse:
        """Pause (``mode="pause"``) or drop (``"drop"``) a callback or one
        collection of it, until opened, until ``until``, or for ``duration``."""
        modes = {"pause": pb.GATE_MODE_PAUSE, "drop": pb.GATE_MODE_DROP}
        if mode not in modes:
            raise ValueError("mode is 'pause' or 'drop'")
        req = pb.SetGateRequest(
            callback=callback, collection=collection or "", mode=modes[mode], note=note,
            cancel_running=cancel_running,
        )
        if until is not None:
            req.until_unix_ms = to_unix_ms(until)
        elif duration is not None:
            req.for_ms = to_ms(duration)
        return await self._scheduler("SetGate", req, idempotent=True)

    async def open_gate(self, callback: str, collection: Optional[str] = None) -> bool:
        """Remove a gate; False when there was none."""
        req = pb.OpenGateRequest(callback=callback, collection=collection or "")
        return bool((await self._scheduler("OpenGate", req, idempotent=True)).existed)

    async def list_gates(self) -> List[pb.Gate]:
        return list((await self._scheduler("ListGates", pb.ListGatesRequest(), idempotent=True)).gates)

    # ---- periodic schedules ----

    @staticmethod
    def schedule_definition(name: str, callback: str, **kw: Any) -> pb.ScheduleDefinition:
        """A schedule definition: ``cron`` or ``every`` (a duration), and
        optionally tz, payload, priority, collection, overlap, catchup,
        catchup_window, jitter, start, end, pause_on_failure, dst_repeat,
        dst_gap (the proto's ScheduleDefinition fields)."""
        d = pb.ScheduleDefinition(name=name, callback=callback)
        conv: dict[str, Tuple[str, Callable[[Any], Any]]] = {
            "every": ("every_ms", to_ms), "catchup_window": ("catchup_window_ms", to_ms),
            "jitter": ("jitter_ms", to_ms), "start": ("start_unix_ms", to_unix_ms),
            "end": ("end_unix_ms", to_unix_ms),
        }
        for k, v in kw.items():
            if v is None:
                continue
            field, f = conv.get(k, (k, lambda x: x))
            setattr(d, field, f(v))
        return d

    async def create_schedule(self, name: str, callback: str, **kw: Any) -> pb.ScheduleInfo:
        """Create a periodic schedule (see :meth:`schedule_definition`).
        Not retried once it may have been applied (the name would be taken)."""
        return await self._scheduler("CreateSchedule", self.schedule_definition(name, callback, **kw), idempotent=False)

    async def update_schedule(self, name: str, callback: str, **kw: Any) -> pb.ScheduleInfo:
        """Replace a schedule's definition, keeping its state."""
        return await self._scheduler("UpdateSchedule", self.schedule_definition(name, callback, **kw), idempotent=True)

    async def get_schedule(self, name: str) -> pb.ScheduleInfo:
        return await self._scheduler("GetSchedule", pb.ScheduleRef(name=name), idempotent=True)

    async def list_schedules(self) -> List[pb.ScheduleInfo]:
        return list((await self._scheduler("ListSchedules", pb.ListSchedulesRequest(), idempotent=True)).schedules)

    async def delete_schedule(self, name: str) -> None:
        await self._scheduler("DeleteSchedule", pb.ScheduleRef(name=name), idempotent=False)

    async def pause_schedule(self, name: str, note: str = "") -> pb.ScheduleInfo:
        return await self._scheduler("PauseSchedule", pb.PauseScheduleRequest(name=name, note=note), idempotent=True)

    async def resume_schedule(self, name: str, catch_up: bool = False) -> pb.ScheduleInfo:
        req = pb.ResumeScheduleRequest(name=name, catch_up=catch_up)
        return await self._scheduler("ResumeSchedule", req, idempotent=True)

    async def trigger_schedule(self, name: str) -> Optional[int]:
        """Run one now; the task's id, or None when the overlap policy held it."""
        r = await self._scheduler("TriggerSchedule", pb.ScheduleRef(name=name), idempotent=False)
        return r.task_id if r.HasField("task_id") else None

    async def backfill_schedule(
        self, name: str, start: Instant, end: Instant, *, dry_run: bool = False
    ) -> List[pb.BackfillSlot]:
        """Run the slots with nominal times in [start, end] (each under its slot key)."""
        req = pb.BackfillScheduleRequest(
            name=name, from_unix_ms=to_unix_ms(start), to_unix_ms=to_unix_ms(end), dry_run=dry_run
        )
        return list((await self._scheduler("BackfillSchedule", req, idempotent=True)).slots)

    # ---- operations ----

    async def list_workers(self) -> List[pb.WorkerSession]:
        """The worker sessions connected to the leader."""
        return list((await self._scheduler("ListWorkers", pb.ListWorkersRequest(), idempotent=True)).workers)

    async def gc_status(self) -> pb.GcStatusResponse:
        return await self._scheduler("GcStatus", pb.GcStatusRequest(), idempotent=True)

    async def cluster_status(self) -> pb.ClusterStatusResponse:
        """The cluster as the leader sees it."""
        return await self._cluster("Status", pb.ClusterStatusRequest())

    # ---- auth ----

    async def who_am_i(self) -> AuthStatus:
        """Who the cluster takes this client for (its grant id, role and
        callbacks; an empty principal when anonymous), and whether auth is
        on. Needs no role: any grant may ask (and anyone while auth is off)."""
        return AuthStatus.from_pb(await self._call("Auth", "WhoAmI", pb.WhoAmIRequest(), idempotent=True))

    async def create_token(
        self,
        role: str,
        callbacks: Union[str, Sequence[str]] = (),
        expires: Optional[Duration] = None,
        note: str = "",
    ) -> NewToken:
        """Make a bearer token with ``role`` (reader, producer, worker,
        operator or admin), for the callbacks matching the globs
        ``callbacks`` (a list, or comma-separated; empty: every callback),
        ending ``expires`` after now (None: never).

        The token is made here, and only its SHA-256 is sent: the returned
        :class:`drover.NewToken`'s ``token`` is the only copy (keep it), its
        ``id`` names the grant. Needs admin once auth is on. Retried safely:
        the same hash is the same grant.
        """
        if isinstance(callbacks, str):
            callbacks = callbacks.split(",")
        token = new_token()
        req = pb.CreateTokenRequest(
            token_sha256=token_sha256(token), role=role, callbacks=[c.strip() for c in callbacks if c.strip()],
            expires_in_ms=to_ms(expires) if expires is not None else 0, note=note,
        )
        return NewToken.from_pb(token, await self._call("Auth", "CreateToken", req, idempotent=True, write=True))
