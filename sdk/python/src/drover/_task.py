"""What a handler gets: the :class:`Task` protocol, the worker's task that
implements it (with its lease), and the handler types."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Awaitable, Callable, List, Optional, Protocol, TypeVar, Union, runtime_checkable

from ._types import Upstream, upstream_from_pb
from .v1 import drover_pb2 as pb

__all__ = ["Task", "HandlerResult", "AsyncHandler", "SyncHandler", "HandlerFn"]

#: What a handler may return: the task's result (text as UTF-8; None: empty).
HandlerResult = Union[bytes, bytearray, memoryview, str, None]


@runtime_checkable
class Task(Protocol):
    """What a handler gets about the task it runs (type your handlers'
    parameter with it: ``async def send(task: drover.Task) -> bytes``).

    ``payload`` (bytes), ``attempt`` (1 for the first run),
    ``fencing_token`` (strictly increasing per task: hand it to downstream
    systems so they can reject a stale writer), ``id``, ``callback``,
    ``priority``, ``timeout`` (seconds this attempt may run), ``lease``
    (seconds), ``upstream`` (for a task scheduled after others: its
    parents' states and results, a :class:`drover.Upstream`),
    ``traceparent`` (its W3C trace context, if it has one).
    """

    @property
    def id(self) -> int: ...

    @property
    def callback(self) -> str: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def attempt(self) -> int: ...

    @property
    def fencing_token(self) -> int: ...

    @property
    def priority(self) -> int: ...

    @property
    def timeout(self) -> float: ...

    @property
    def lease(self) -> float: ...

    @property
    def upstream(self) -> Optional[Upstream]: ...

    @property
    def traceparent(self) -> Optional[str]:
        """The W3C trace context this attempt runs under (its node's span of
        the attempt, or the producer's), for a task scheduled with one; the
        worker's handler span is its child when opentelemetry is installed."""
        ...

    @property
    def cancelled(self) -> bool:
        """Set when the handler should stop: the task was cancelled, timed
        out, its lease lapsed, or the worker is shutting down past its grace."""
        ...

    @property
    def cancel_reason(self) -> Optional[str]:
        """Why :attr:`cancelled` was set (None while it is not)."""
        ...

    def lease_valid(self) -> bool:
        """Whether the lease is still valid now. Check it right before an
        external side effect that the fencing token cannot protect."""
        ...

    def lease_remaining(self) -> float:
        """Seconds until the lease lapses unless renewed."""
        ...

    async def wait_cancelled(self) -> None:
        """Return once :attr:`cancelled` is set (for async handlers)."""
        ...


#: A handler run on the worker's event loop.
AsyncHandler = Callable[[Task], Awaitable[HandlerResult]]
#: A handler run in the worker's thread pool.
SyncHandler = Callable[[Task], HandlerResult]
#: Either kind of handler.
HandlerFn = Union[AsyncHandler, SyncHandler]
#: A handler's own type, which `Worker.handler` keeps.
HandlerT = TypeVar("HandlerT", bound=HandlerFn)


class WorkerTask:
    """The worker's task: what :class:`Task` describes, and its lease (the
    worker renews it; handler threads only read it)."""

    def __init__(self, a: pb.Assignment, basis: float) -> None:
        self._id: int = a.task_id
        self._callback: str = a.callback
        self._payload: bytes = a.payload
        self._attempt: int = a.attempt
        self._fencing_token: int = a.fencing_token
        self._priority: int = a.priority
        self._timeout: float = a.timeout_ms / 1000
        self._upstream: Optional[Upstream] = upstream_from_pb(a.upstream) if a.HasField("upstream") else None
        self._lease: float = a.lease_ms / 1000
        self.trace_context: Optional[pb.TraceContext] = (
            a.trace if a.HasField("trace") and a.trace.traceparent else None
        )
        self.trace_links: List[pb.TraceContext] = list(a.links)
        # The lease's end on the monotonic clock; only the worker's loop
        # writes it (renewals), handler threads only read it.
        self.lease_deadline = basis + self._lease
        self._cancel = threading.Event()
        self._cancel_async = asyncio.Event()
        self._cancel_reason: Optional[str] = None

    @property
    def id(self) -> int:
        return self._id

    @property
    def callback(self) -> str:
        return self._callback

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def fencing_token(self) -> int:
        return self._fencing_token

    @property
    def priority(self) -> int:
        return self._priority

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def lease(self) -> float:
        return self._lease

    @property
    def upstream(self) -> Optional[Upstream]:
        return self._upstream

    @property
    def traceparent(self) -> Optional[str]:
        return self.trace_context.traceparent if self.trace_context is not None else None

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def cancel_reason(self) -> Optional[str]:
        return self._cancel_reason

    def lease_valid(self) -> bool:
        return time.monotonic() < self.lease_deadline

    def lease_remaining(self) -> float:
        return max(0.0, self.lease_deadline - time.monotonic())

    async def wait_cancelled(self) -> None:
        await self._cancel_async.wait()

    def set_cancelled(self, reason: str) -> None:
        if not self._cancel.is_set():
            self._cancel_reason = reason
            self._cancel.set()
            self._cancel_async.set()

    def __repr__(self) -> str:
        return f"Task(id={self.id}, callback={self.callback!r}, attempt={self.attempt}, token={self.fencing_token})"
