"""Exceptions: what a client call raises, and what a handler raises to fail a task."""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = ["DroverError", "RpcError", "Retry", "Fatal"]


class DroverError(Exception):
    """Base class of every exception the SDK raises."""


class RpcError(DroverError):
    """A call failed: the gRPC status code and the server's message.

    ``outcome_unknown`` is true when the request may have been applied (a
    timeout or a connection lost with the request in flight) and the SDK
    could not retry it safely. ``leader`` is the leader hint (``ID=HOST:PORT``)
    when the server gave one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        outcome_unknown: bool = False,
        leader: Optional[str] = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.outcome_unknown = outcome_unknown
        self.leader = leader


class Retry(DroverError):
    """Raise from a handler: the task failed and may succeed later.

    It is retried with the callback's backoff (no sooner than
    ``retry_after`` seconds when given) until its attempts run out, then it
    goes to the dead-letter queue.
    """

    def __init__(self, reason: str = "", retry_after: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Fatal(DroverError):
    """Raise from a handler: the task failed for good (state FAILED, no retry)."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
