"""drover: schedule and run drover tasks from Python.

- :class:`Client` (blocking) and :class:`AsyncClient` (asyncio): schedule,
  read, list and cancel tasks; callbacks, gates, periodic schedules.
- :class:`Worker`: run handlers for callbacks, with leases renewed in the
  background and self-fencing.
- :class:`Retry` and :class:`Fatal`: raise from a handler to fail a task;
  :class:`RpcError`: a failed call, with its gRPC status and message.
- ``token=`` (or ``DROVER_TOKEN``): the bearer token every call carries;
  :meth:`Client.create_token` and :meth:`Client.who_am_i` for grants.

The generated protocol stubs are in :mod:`drover.v1`.
"""

from ._errors import DroverError, Fatal, Retry, RpcError
from ._types import AfterPolicy, AuthStatus, NewToken, Scheduled, TaskInfo, TaskSpec, TaskState, Transition
from .aio import AsyncClient
from .client import Client
from .worker import Task, Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "AfterPolicy",
    "AsyncClient",
    "AuthStatus",
    "Client",
    "DroverError",
    "Fatal",
    "NewToken",
    "Retry",
    "RpcError",
    "Scheduled",
    "Task",
    "TaskInfo",
    "TaskSpec",
    "TaskState",
    "Transition",
    "Worker",
    "WorkerStats",
]
