"""The blocking client: :class:`Client`.

It runs an :class:`~drover.aio.AsyncClient` on an event loop in a
background thread of its own, so its failover and retry rules are exactly
the asyncio client's. It is safe to share between threads.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Awaitable, Callable, List, Optional, Sequence, TypeVar, Union

from ._types import AfterPolicy, AuthStatus, Duration, Instant, NewToken, Scheduled, TaskInfo, TaskSpec, TaskState
from .aio import AsyncClient, Endpoints

__all__ = ["Client"]

T = TypeVar("T")


def _sync(method: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    @functools.wraps(method)
    def run(self: "Client", *args: Any, **kw: Any) -> T:
        return self._run(method(self._aio, *args, **kw))

    return run


class Client:
    """A client of a drover cluster (blocking calls).

    ``Client("127.0.0.1:7001,127.0.0.1:7002")`` or a list of ``HOST:PORT``.
    Calls fail over between the nodes, follow leader hints, retry
    ``UNAVAILABLE``, and reuse one request id and idempotency key across the
    retries of a write, so a retry never makes a duplicate. Errors are
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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="drover-client", daemon=True)
        self._thread.start()
        self._aio = AsyncClient(
            endpoints, deadline=deadline, attempt_timeout=attempt_timeout, connect_timeout=connect_timeout,
            ca=ca, cert=cert, key=key, token=token,
        )
        self.endpoints = self._aio.endpoints

    def __repr__(self) -> str:
        # The asyncio client's, which never shows the token.
        return repr(self._aio).replace("AsyncClient(", "Client(", 1)

    def _run(self, coro: Awaitable[T]) -> T:
        if self._loop.is_closed():
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

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

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def schedule(
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
        """Schedule one task (see :meth:`drover.AsyncClient.schedule`)."""
        return self._run(
            self._aio.schedule(
                callback, payload, delay=delay, at=at, priority=priority, key=key, collection=collection,
                after=after, after_policy=after_policy,
            )
        )

    def schedule_batch(self, tasks: Sequence[TaskSpec]) -> List[Scheduled]:
        """Schedule many tasks as one Raft entry (all or nothing), in order."""
        return self._run(self._aio.schedule_batch(tasks))

    def get(self, task_id: int, *, stale: bool = False, payload: bool = False) -> TaskInfo:
        """One task (``stale``: from any node without a leader round trip)."""
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
        """Tasks in id order (every page up to ``limit``; None: all)."""
        return self._run(self._aio.list(callback, state=state, collection=collection, limit=limit, stale=stale))

    def cancel(self, task_id: int) -> TaskState:
        """Cancel a task (CANCELLED at once, or RUNNING while its worker stops it)."""
        return self._run(self._aio.cancel(task_id))

    def register_callback(self, name: str, **settings: Any) -> bool:
        """Create or update a callback (see :meth:`drover.AsyncClient.register_callback`)."""
        return self._run(self._aio.register_callback(name, **settings))

    list_callbacks = _sync(AsyncClient.list_callbacks)
    redrive_dead_letters = _sync(AsyncClient.redrive_dead_letters)
    purge_dead_letters = _sync(AsyncClient.purge_dead_letters)
    set_gate = _sync(AsyncClient.set_gate)
    open_gate = _sync(AsyncClient.open_gate)
    list_gates = _sync(AsyncClient.list_gates)
    create_schedule = _sync(AsyncClient.create_schedule)
    update_schedule = _sync(AsyncClient.update_schedule)
    get_schedule = _sync(AsyncClient.get_schedule)
    list_schedules = _sync(AsyncClient.list_schedules)
    delete_schedule = _sync(AsyncClient.delete_schedule)
    pause_schedule = _sync(AsyncClient.pause_schedule)
    resume_schedule = _sync(AsyncClient.resume_schedule)
    trigger_schedule = _sync(AsyncClient.trigger_schedule)
    backfill_schedule = _sync(AsyncClient.backfill_schedule)
    list_workers = _sync(AsyncClient.list_workers)
    gc_status = _sync(AsyncClient.gc_status)
    cluster_status = _sync(AsyncClient.cluster_status)

    def who_am_i(self) -> AuthStatus:
        """Who the cluster takes this client for, and whether auth is on
        (see :meth:`drover.AsyncClient.who_am_i`)."""
        return self._run(self._aio.who_am_i())

    def create_token(
        self,
        role: str,
        callbacks: Union[str, Sequence[str]] = (),
        expires: Optional[Duration] = None,
        note: str = "",
    ) -> NewToken:
        """Make a bearer token with ``role`` and register only its SHA-256;
        returns the token and its grant id (see
        :meth:`drover.AsyncClient.create_token`)."""
        return self._run(self._aio.create_token(role, callbacks, expires, note))


