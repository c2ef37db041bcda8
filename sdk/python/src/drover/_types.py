"""Plain Python views of drover's messages: task states, tasks, schedule results."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Union, cast

from .v1 import drover_pb2 as pb

__all__ = [
    "Duration",
    "Instant",
    "TaskState",
    "AfterPolicy",
    "TaskSpec",
    "Scheduled",
    "Transition",
    "TaskInfo",
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


@dataclass
class TaskSpec:
    """One task to schedule (for :meth:`Client.schedule_batch`).

    ``key`` is the idempotency key (one is generated when it is None);
    ``ref`` names the item inside a batch so that later items can name it in
    ``after_refs``.
    """

    callback: str
    payload: bytes = b""
    delay: Optional[Duration] = None
    at: Optional[Instant] = None
    priority: int = 0
    key: Optional[str] = None
    collection: Optional[str] = None
    after: Sequence[int] = ()
    after_policy: Optional[AfterPolicy] = None
    ref: Optional[str] = None
    after_refs: Sequence[str] = ()

    def to_pb(self, generated_key: str) -> pb.TaskSpec:
        """The protocol message, with ``generated_key`` as key if none was given."""
        if self.delay is not None and self.at is not None:
            raise ValueError("give delay or at, not both")
        payload = self.payload.encode() if isinstance(self.payload, str) else bytes(self.payload)
        spec = pb.TaskSpec(
            callback=self.callback,
            payload=payload,
            priority=self.priority,
            idempotency_key=self.key if self.key is not None else generated_key,
            collection=self.collection or "",
            after=list(self.after),
            ref=self.ref or "",
            after_refs=list(self.after_refs),
            after_policy=cast(Any, int(self.after_policy or 0)),
        )
        if self.delay is not None:
            spec.delay_ms = to_ms(self.delay)
        elif self.at is not None:
            spec.run_at_unix_ms = to_unix_ms(self.at)
        return spec


@dataclass(frozen=True)
class Scheduled:
    """The answer to a schedule: the task's id, and whether this call created it.

    ``created`` is false when a task with the same idempotency key already
    existed (its id is returned); ``state`` is CANCELLED when a dropping gate
    took the task on arrival (``note`` says why).
    """

    id: int
    created: bool
    state: TaskState
    note: str = ""

    @classmethod
    def from_pb(cls, r: pb.ScheduleResponse) -> "Scheduled":
        return cls(id=r.task_id, created=r.created, state=TaskState(r.state), note=r.note)


@dataclass(frozen=True)
class Transition:
    """One step of a task's history."""

    state: TaskState
    at: float
    attempt: int


@dataclass
class TaskInfo:
    """A task as the cluster reports it. Times are Unix seconds."""

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
    history: List[Transition] = field(default_factory=list)
    parents: List[int] = field(default_factory=list)
    children: List[int] = field(default_factory=list)
    #: The protocol message, for fields not copied here.
    raw: Optional[pb.Task] = field(default=None, repr=False)

    @classmethod
    def from_pb(cls, t: pb.Task) -> "TaskInfo":
        return cls(
            id=t.id,
            callback=t.callback,
            state=TaskState(t.state),
            priority=t.priority,
            run_at=t.run_at_unix_ms / 1000,
            created_at=t.created_at_unix_ms / 1000,
            attempts=t.attempts,
            key=t.idempotency_key,
            collection=t.collection,
            fencing_token=t.fencing_token,
            worker=t.worker,
            last_error=t.last_error,
            result=t.result if t.HasField("result") else None,
            payload=t.payload if t.HasField("payload") else None,
            cancel_requested=t.cancel_requested,
            history=[Transition(TaskState(h.state), h.at_unix_ms / 1000, h.attempt) for h in t.history],
            parents=list(t.dependencies.parents) if t.HasField("dependencies") else [],
            children=list(t.children),
            raw=t,
        )


@dataclass(frozen=True)
class AuthStatus:
    """Who the cluster takes the caller for, and whether it enforces grants.

    ``principal`` is the caller's grant id (``t-...`` for a token, ``c-...``
    for a certificate subject), or empty when anonymous; ``role`` its role
    (reader, producer, worker, operator or admin); ``callbacks`` the globs
    its grant is limited to (empty: every callback).
    """

    enabled: bool
    principal: str
    role: str
    callbacks: List[str] = field(default_factory=list)
    #: For a status returned by SetEnabled: whether that call changed anything.
    changed: bool = False

    @classmethod
    def from_pb(cls, s: pb.AuthStatus) -> "AuthStatus":
        return cls(enabled=s.enabled, principal=s.principal, role=s.role, callbacks=list(s.callbacks),
                   changed=s.changed)


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
    role: str
    callbacks: List[str] = field(default_factory=list)
    expires_at: Optional[float] = None
    note: str = ""
    created: bool = True
    #: The protocol message, for fields not copied here.
    raw: Optional[pb.GrantInfo] = field(default=None, repr=False)

    @classmethod
    def from_pb(cls, token: str, g: pb.GrantInfo) -> "NewToken":
        return cls(
            token=token,
            id=g.id,
            role=g.role,
            callbacks=list(g.callbacks),
            expires_at=g.expires_unix_ms / 1000 if g.expires_unix_ms else None,
            note=g.note,
            created=g.created,
            raw=g,
        )
