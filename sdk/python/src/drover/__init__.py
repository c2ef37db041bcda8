"""drover: schedule and run drover tasks from Python.

- :class:`Client` (blocking) and :class:`AsyncClient` (asyncio): schedule,
  read, list and cancel tasks; callbacks, gates, periodic schedules,
  workers, retention and cluster status, as the SDK's own dataclasses.
- :class:`Worker`: run handlers for callbacks (typed by the :class:`Task`
  protocol), with leases renewed in the background and self-fencing; as
  ``worker.run()`` in a script or ``async with worker:`` in async code.
- :class:`Retry` and :class:`Fatal`: raise from a handler to fail a task;
  :class:`RpcError`: a failed call, with its gRPC status and message.
- ``token=`` (or ``DROVER_TOKEN``): the bearer token every call carries;
  :meth:`Client.create_token` and :meth:`Client.who_am_i` for grants.

No generated protocol type appears in this API; the stubs are in
:mod:`drover.v1` for those who want the wire protocol itself.
"""

from ._errors import DroverError, Fatal, Retry, RpcError
from ._records import (
    BackfillSlot,
    CallbackInfo,
    CallbackSettings,
    Catchup,
    ClusterStatus,
    CollectionDepth,
    DstGap,
    DstRepeat,
    Gate,
    GateMode,
    GcStatus,
    MemberStatus,
    NodeRole,
    NodeStatus,
    Overlap,
    QueueDepth,
    ScheduleDefinition,
    ScheduleInfo,
    ScheduleRun,
    SetGateResult,
    Slot,
    WorkerLoad,
    WorkerSession,
)
from ._types import (
    AfterPolicy,
    AuthStatus,
    Dependencies,
    Duration,
    Instant,
    NewToken,
    ParentCounts,
    ParentResult,
    Payload,
    Role,
    Scheduled,
    TaskInfo,
    TaskSpec,
    TaskState,
    Transition,
    Upstream,
)
from ._version import __version__
from .aio import AsyncClient, Endpoints
from .client import Client
from .worker import AsyncHandler, HandlerFn, HandlerResult, SyncHandler, Task, Worker, WorkerStats

__all__ = [
    "AfterPolicy",
    "AsyncClient",
    "AsyncHandler",
    "AuthStatus",
    "BackfillSlot",
    "CallbackInfo",
    "CallbackSettings",
    "Catchup",
    "Client",
    "ClusterStatus",
    "CollectionDepth",
    "Dependencies",
    "DroverError",
    "DstGap",
    "DstRepeat",
    "Duration",
    "Endpoints",
    "Fatal",
    "Gate",
    "GateMode",
    "GcStatus",
    "HandlerFn",
    "HandlerResult",
    "Instant",
    "MemberStatus",
    "NewToken",
    "NodeRole",
    "NodeStatus",
    "Overlap",
    "ParentCounts",
    "ParentResult",
    "Payload",
    "QueueDepth",
    "Retry",
    "Role",
    "RpcError",
    "ScheduleDefinition",
    "ScheduleInfo",
    "ScheduleRun",
    "Scheduled",
    "SetGateResult",
    "Slot",
    "SyncHandler",
    "Task",
    "TaskInfo",
    "TaskSpec",
    "TaskState",
    "Transition",
    "Upstream",
    "Worker",
    "WorkerLoad",
    "WorkerSession",
    "WorkerStats",
    "__version__",
]
