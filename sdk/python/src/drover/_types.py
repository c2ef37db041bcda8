"""The SDK's own view of tasks: states, what to schedule, what the cluster
reports about a task and its parents, and who the caller is.

Times are Unix seconds and durations seconds (floats); the protocol's
messages (:mod:`drover.v1`) never appear in the SDK's API. The
``*_from_pb`` and ``*_to_pb`` functions here convert at the boundary.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union, cast

from .v1 import drover_pb2 as pb

__all__ = [
    "Duration",
    "Instant",
    "TaskState",
    "AfterPolicy",
    "Role",
    "TaskSpec",
    "Scheduled",
    "Transition",
    "ParentCounts",
    "Dependencies",
    "TaskInfo",
    "ParentResult",
    "Upstream",
    "AuthStatus",
    "NewToken",
    "to_ms",
    "to_unix_ms",
]

#: A duration: seconds (int or float) or a ``datetime.timedelta``.
Duration = Union[int, float, _dt.timedelta]
#: A point in time: Unix seconds (int or float) or a ``datetime.datetime``
#: (a naive one is local time, as ``datetime.timestamp`` reads it).
Instant = Union[int, float, _dt.datetime]
#: A payload: bytes, or text (sent as UTF-8).
Payload = Union[bytes, str]


def to_ms(d: Duration) -> int:
    """A duration in whole milliseconds (negative ones are an error)."""
    s = d.total_seconds() if isinstance(d, _dt.timedelta) else float(d)
    if s < 0:
        raise ValueError(f"a duration cannot be negative: {d!r}")
    return int(round(s * 1000))


def to_unix_ms(t: Instant) -> int:
    """A point in time as Unix milliseconds."""
    s = t.timestamp() if isinstance(t, _dt.datetime) else float(t)
    if s < 0:
        raise ValueError(f"a time before 1970 is not allowed: {t!r}")
    return int(round(s * 1000))


def seconds(ms: int) -> float:
    """Milliseconds (a duration or Unix time) as seconds."""
    return ms / 1000


def payload_bytes(p: Payload) -> bytes:
    """A payload as bytes (text as UTF-8)."""
    return p.encode() if isinstance(p, str) else bytes(p)


class TaskState(enum.IntEnum):
    """Where a task is in its life (the values are the protocol's)."""

    UNSPECIFIED = 0
    SCHEDULED = 1
    READY = 2
    RUNNING = 3
    RETRY_WAIT = 4
    SUCCEEDED = 5
    FAILED = 6
    DEAD = 7
    CANCELLED = 8
    WAITING = 9

    @property
    def finished(self) -> bool:
        """Whether the task has ended (succeeded, failed, dead or cancelled)."""
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED)

    def __str__(self) -> str:
        return self.name.lower()


class AfterPolicy(enum.IntEnum):
    """When a task with parents runs."""

    #: Once every parent succeeded; any other end cancels it (the default).
    ALL_SUCCEEDED = 1
    #: Once every parent ended, however it ended (a fan-in).
    ALL_FINISHED = 2


class Role(str, enum.Enum):
    """A grant's role; each includes the ones before it. Compares equal to
    its name (``Role.ADMIN == "admin"``)."""

    #: Get, list, status.
    READER = "reader"
    #: Schedule, cancel, register callbacks.
    PRODUCER = "producer"
    #: Connect as a worker.
    WORKER = "worker"
    #: Gates, redrive, purge, periodic schedules, leader transfer.
    OPERATOR = "operator"
    #: Membership, backup, tokens and grants.
    ADMIN = "admin"

    def __str__(self) -> str:
        return self.value


def role_from_pb(name: str) -> Optional[Role]:
    """A role's name as the cluster sends it; None for none (anonymous)."""
    return Role(name) if name else None


@dataclass
class TaskSpec:
    """One task to schedule (for :meth:`drover.Client.schedule_batch`).

    ``key`` is the idempotency key: scheduling twice with the same
    (callback, key) makes one task while it exists. None sends none (a
    retry of the same call is safe without one: the call's request id
    covers it). ``ref`` names the item inside a batch so that later items
    can name it in ``after_refs``; ``after`` names parents by id.
    ``traceparent`` (and ``tracestate``) is the W3C trace context the task
    runs in; None takes the current OpenTelemetry span's (when
    ``opentelemetry`` is installed), "" sends none.
    """

    callback: str
    payload: Payload = b""
    delay: Optional[Duration] = None
    at: Optional[Instant] = None
    priority: int = 0
    key: Optional[str] = None
    collection: Optional[str] = None
    after: Sequence[int] = ()
    after_policy: Optional[AfterPolicy] = None
    ref: Optional[str] = None
    after_refs: Sequence[str] = ()
    traceparent: Optional[str] = None
    tracestate: str = ""


def task_spec_to_pb(spec: TaskSpec) -> pb.TaskSpec:
    """The protocol message of a task to schedule."""
    if spec.delay is not None and spec.at is not None:
        raise ValueError("give delay or at, not both")
    m = pb.TaskSpec(
        callback=spec.callback,
        payload=payload_bytes(spec.payload),
        priority=spec.priority,
        idempotency_key=spec.key or "",
        collection=spec.collection or "",
        after=list(spec.after),
        ref=spec.ref or "",
        after_refs=list(spec.after_refs),
        # The stubs type enum fields as their wrapper class; the value is an int.
        after_policy=cast("pb.AfterPolicy", int(spec.after_policy or 0)),
    )
    if spec.traceparent:
        m.trace.traceparent = spec.traceparent
        m.trace.tracestate = spec.tracestate
    if spec.delay is not None:
        m.delay_ms = to_ms(spec.delay)
    elif spec.at is not None:
        m.run_at_unix_ms = to_unix_ms(spec.at)
    return m


@dataclass(frozen=True)
class Scheduled:
    """The answer to a schedule: the task's id, and whether this call created it.

    ``created`` is false when a task with the same idempotency key already
    existed (its id is returned); ``state`` is CANCELLED when a dropping gate
    took the task on arrival (``note`` says why). ``replayed``: the cluster
    had already answered this request (a retry) and repeated its answer.
    """

    id: int
    created: bool
    state: TaskState
    note: str = ""
    replayed: bool = False


def scheduled_from_pb(r: pb.ScheduleResponse, replayed: bool = False) -> Scheduled:
    return Scheduled(id=r.task_id, created=r.created, state=TaskState(r.state), note=r.note,
                     replayed=r.replayed or replayed)


@dataclass(frozen=True)
class Transition:
    """One step of a task's history: its new state, when, in which attempt."""

    state: TaskState
    at: float
    attempt: int


@dataclass(frozen=True)
class ParentCounts:
    """How many of a task's parents ended in each state."""

    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0


def parent_counts_from_pb(c: pb.ParentCounts) -> ParentCounts:
    return ParentCounts(succeeded=c.succeeded, failed=c.failed, dead=c.dead, cancelled=c.cancelled)


@dataclass(frozen=True)
class Dependencies:
    """A task's parents and how they ended, for a task scheduled after others.

    ``open``: parents not ended yet; ``cancelled_by``: the parent whose
    failure cancelled the task, if one did.
    """

    parents: List[int]
    policy: AfterPolicy
    open: int
    ended: ParentCounts
    cancelled_by: Optional[int] = None


@dataclass
class TaskInfo:
    """A task as the cluster reports it. Times are Unix seconds.

    ``key`` is its idempotency key ("" when it was scheduled without one);
    ``payload`` is None unless asked for (``get(id, payload=True)``);
    ``result`` is None until it succeeded.
    """

    id: int
    callback: str
    state: TaskState
    priority: int
    run_at: float
    created_at: float
    attempts: int
    key: str
    collection: str
    fencing_token: int
    worker: str
    last_error: str
    result: Optional[bytes]
    payload: Optional[bytes]
    cancel_requested: bool
    history: List[Transition] = field(default_factory=list[Transition])
    parents: List[int] = field(default_factory=list[int])
    children: List[int] = field(default_factory=list[int])
    #: Size of the payload in bytes (known without fetching it).
    payload_size: int = 0
    #: Log index of the Raft entry that created the task.
    created_index: int = 0
    #: Set for a task scheduled after others.
    dependencies: Optional[Dependencies] = None
    #: The W3C trace context it was scheduled with (None: none).
    traceparent: Optional[str] = None


def task_info_from_pb(t: pb.Task) -> TaskInfo:
    deps: Optional[Dependencies] = None
    if t.HasField("dependencies"):
        d = t.dependencies
        deps = Dependencies(
            parents=list(d.parents),
            policy=AfterPolicy(d.policy or AfterPolicy.ALL_SUCCEEDED),
            open=d.open,
            ended=parent_counts_from_pb(d.ended),
            cancelled_by=d.cancelled_by if d.HasField("cancelled_by") else None,
        )
    return TaskInfo(
        id=t.id,
        callback=t.callback,
        state=TaskState(t.state),
        priority=t.priority,
        run_at=seconds(t.run_at_unix_ms),
        created_at=seconds(t.created_at_unix_ms),
        attempts=t.attempts,
        key=t.idempotency_key,
        collection=t.collection,
        fencing_token=t.fencing_token,
        worker=t.worker,
        last_error=t.last_error,
        result=t.result if t.HasField("result") else None,
        payload=t.payload if t.HasField("payload") else None,
        cancel_requested=t.cancel_requested,
        history=[Transition(TaskState(h.state), seconds(h.at_unix_ms), h.attempt) for h in t.history],
        parents=list(deps.parents) if deps is not None else [],
        traceparent=t.trace.traceparent if t.HasField("trace") and t.trace.traceparent else None,
        children=list(t.children),
        payload_size=t.payload_size,
        created_index=t.created_index,
        dependencies=deps,
    )


@dataclass(frozen=True)
class ParentResult:
    """One parent of the task a handler runs: its id, how it ended, and its
    result (None when it has none, or it did not fit in the assignment:
    fetch it with ``get``)."""

    task_id: int
    state: TaskState
    result: Optional[bytes] = None


@dataclass(frozen=True)
class Upstream:
    """What a task scheduled after others gets about its parents.

    ``parents`` in the order the task named them (parents retention already
    deleted are left out); ``ended`` counts how they ended (a fan-in's
    summary); ``omitted`` results were left out to keep the assignment
    under 4 MiB.
    """

    ended: ParentCounts
    parents: List[ParentResult] = field(default_factory=list[ParentResult])
    omitted: int = 0

    def results(self) -> Dict[int, Optional[bytes]]:
        """Each parent's result by its task id."""
        return {p.task_id: p.result for p in self.parents}


def upstream_from_pb(u: pb.Upstream) -> Upstream:
    return Upstream(
        ended=parent_counts_from_pb(u.ended),
        parents=[
            ParentResult(p.task_id, TaskState(p.state), p.result if p.HasField("result") else None) for p in u.parents
        ],
        omitted=u.omitted,
    )


@dataclass(frozen=True)
class AuthStatus:
    """Who the cluster takes the caller for, and whether it enforces grants.

    ``principal`` is the caller's grant id (``t-...`` for a token, ``c-...``
    for a certificate subject), or empty when anonymous; ``role`` its role
    (None when anonymous); ``callbacks`` the globs its grant is limited to
    (empty: every callback).
    """

    enabled: bool
    principal: str
    role: Optional[Role]
    callbacks: List[str] = field(default_factory=list[str])
    #: For a status returned by SetEnabled: whether that call changed anything.
    changed: bool = False

    def __post_init__(self) -> None:
        # A role given by name (``role="reader"``) is kept as the enum.
        role = cast(object, self.role)
        if isinstance(role, str) and not isinstance(role, Role):
            object.__setattr__(self, "role", role_from_pb(role))


def auth_status_from_pb(s: pb.AuthStatus) -> AuthStatus:
    return AuthStatus(enabled=s.enabled, principal=s.principal, role=role_from_pb(s.role),
                      callbacks=list(s.callbacks), changed=s.changed)


@dataclass(frozen=True)
class NewToken:
    """A token made by :meth:`drover.Client.create_token`, and its grant.

    ``token`` is the secret: the cluster keeps only its SHA-256, so this is
    the only time it is seen (it is left out of ``repr``). ``id`` names the
    grant (``t-`` and 12 hex digits of the hash) for listing and revoking.
    ``expires_at`` is Unix seconds, None for never. ``created`` is false
    when the grant already existed (a retried call).
    """

    token: str = field(repr=False)
    id: str
    role: Role
    callbacks: List[str] = field(default_factory=list[str])
    expires_at: Optional[float] = None
    note: str = ""
    created: bool = True
    created_at: Optional[float] = None

    def __post_init__(self) -> None:
        role = cast(object, self.role)
        if isinstance(role, str) and not isinstance(role, Role):
            object.__setattr__(self, "role", Role(role))


def new_token_from_pb(token: str, g: pb.GrantInfo) -> NewToken:
    return NewToken(
        token=token,
        id=g.id,
        role=Role(g.role),
        callbacks=list(g.callbacks),
        expires_at=seconds(g.expires_unix_ms) if g.expires_unix_ms else None,
        note=g.note,
        created=g.created,
        created_at=seconds(g.created_unix_ms) if g.created_unix_ms else None,
    )
