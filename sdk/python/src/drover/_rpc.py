"""The drover RPCs the SDK calls, typed by their request and reply messages.

The generated ``drover_pb2_grpc`` module is untyped; the SDK calls the
methods through these typed descriptors instead (same paths, same
messages), so that every reply has its message type. ``tests`` check each
one against the service descriptor of ``proto/drover.proto``.
"""

from __future__ import annotations

from typing import Any, Generic, Sequence, Tuple, Type, TypeVar

import grpc.aio
from google.protobuf.message import Message

from .v1 import drover_pb2 as pb

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)

#: Call metadata: (key, value) pairs.
Metadata = Sequence[Tuple[str, str]]


class Unary(Generic[Req, Resp]):
    """One unary method: ``/drover.v1.<service>/<method>``, ``req`` in, ``resp`` out."""

    __slots__ = ("service", "method", "req", "resp")

    def __init__(self, service: str, method: str, req: Type[Req], resp: Type[Resp]) -> None:
        self.service = service
        self.method = method
        self.req = req
        self.resp = resp

    @property
    def path(self) -> str:
        return f"/drover.v1.{self.service}/{self.method}"

    def __repr__(self) -> str:
        return f"Unary({self.path})"


def invoke(
    method: "Unary[Req, Resp]", channel: grpc.aio.Channel, req: Req, timeout: float, metadata: Metadata
) -> "grpc.aio.UnaryUnaryCall[Req, Resp]":
    """Start one attempt of ``method`` on ``channel`` (tests replace this)."""
    call: "grpc.aio.UnaryUnaryMultiCallable[Req, Resp]" = channel.unary_unary(
        method.path,
        request_serializer=method.req.SerializeToString,
        response_deserializer=method.resp.FromString,
    )
    return call(req, timeout=timeout, metadata=tuple(metadata))


def connect(channel: grpc.aio.Channel) -> "grpc.aio.StreamStreamMultiCallable[pb.WorkerMessage, pb.ServerMessage]":
    """The worker stream's callable (``Worker.Connect``)."""
    return channel.stream_stream(
        "/drover.v1.Worker/Connect",
        request_serializer=pb.WorkerMessage.SerializeToString,
        response_deserializer=pb.ServerMessage.FromString,
    )


# Scheduler
SCHEDULE = Unary("Scheduler", "Schedule", pb.ScheduleRequest, pb.ScheduleResponse)
SCHEDULE_BATCH = Unary("Scheduler", "ScheduleBatch", pb.ScheduleBatchRequest, pb.ScheduleBatchResponse)
GET_TASK = Unary("Scheduler", "GetTask", pb.GetTaskRequest, pb.Task)
LIST_TASKS = Unary("Scheduler", "ListTasks", pb.ListTasksRequest, pb.ListTasksResponse)
CANCEL_TASK = Unary("Scheduler", "CancelTask", pb.CancelTaskRequest, pb.CancelTaskResponse)
REGISTER_CALLBACK = Unary("Scheduler", "RegisterCallback", pb.RegisterCallbackRequest, pb.RegisterCallbackResponse)
LIST_CALLBACKS = Unary("Scheduler", "ListCallbacks", pb.ListCallbacksRequest, pb.ListCallbacksResponse)
REDRIVE_DEAD_LETTERS = Unary("Scheduler", "RedriveDeadLetters", pb.DeadLetterRequest, pb.DeadLetterResponse)
PURGE_DEAD_LETTERS = Unary("Scheduler", "PurgeDeadLetters", pb.DeadLetterRequest, pb.DeadLetterResponse)
SET_GATE = Unary("Scheduler", "SetGate", pb.SetGateRequest, pb.SetGateResponse)
OPEN_GATE = Unary("Scheduler", "OpenGate", pb.OpenGateRequest, pb.OpenGateResponse)
LIST_GATES = Unary("Scheduler", "ListGates", pb.ListGatesRequest, pb.ListGatesResponse)
GC_STATUS = Unary("Scheduler", "GcStatus", pb.GcStatusRequest, pb.GcStatusResponse)
CREATE_SCHEDULE = Unary("Scheduler", "CreateSchedule", pb.ScheduleDefinition, pb.ScheduleInfo)
UPDATE_SCHEDULE = Unary("Scheduler", "UpdateSchedule", pb.ScheduleDefinition, pb.ScheduleInfo)
GET_SCHEDULE = Unary("Scheduler", "GetSchedule", pb.ScheduleRef, pb.ScheduleInfo)
LIST_SCHEDULES = Unary("Scheduler", "ListSchedules", pb.ListSchedulesRequest, pb.ListSchedulesResponse)
DELETE_SCHEDULE = Unary("Scheduler", "DeleteSchedule", pb.ScheduleRef, pb.DeleteScheduleResponse)
PAUSE_SCHEDULE = Unary("Scheduler", "PauseSchedule", pb.PauseScheduleRequest, pb.ScheduleInfo)
RESUME_SCHEDULE = Unary("Scheduler", "ResumeSchedule", pb.ResumeScheduleRequest, pb.ScheduleInfo)
TRIGGER_SCHEDULE = Unary("Scheduler", "TriggerSchedule", pb.ScheduleRef, pb.TriggerScheduleResponse)
BACKFILL_SCHEDULE = Unary("Scheduler", "BackfillSchedule", pb.BackfillScheduleRequest, pb.BackfillScheduleResponse)
LIST_WORKERS = Unary("Scheduler", "ListWorkers", pb.ListWorkersRequest, pb.ListWorkersResponse)
# Cluster
CLUSTER_STATUS = Unary("Cluster", "Status", pb.ClusterStatusRequest, pb.ClusterStatusResponse)
# Auth
WHO_AM_I = Unary("Auth", "WhoAmI", pb.WhoAmIRequest, pb.AuthStatus)
CREATE_TOKEN = Unary("Auth", "CreateToken", pb.CreateTokenRequest, pb.GrantInfo)

#: Every method above, for the test that checks them against the proto.
ALL: Tuple["Unary[Any, Any]", ...] = (
    SCHEDULE,
    SCHEDULE_BATCH,
    GET_TASK,
    LIST_TASKS,
    CANCEL_TASK,
    REGISTER_CALLBACK,
    LIST_CALLBACKS,
    REDRIVE_DEAD_LETTERS,
    PURGE_DEAD_LETTERS,
    SET_GATE,
    OPEN_GATE,
    LIST_GATES,
    GC_STATUS,
    CREATE_SCHEDULE,
    UPDATE_SCHEDULE,
    GET_SCHEDULE,
    LIST_SCHEDULES,
    DELETE_SCHEDULE,
    PAUSE_SCHEDULE,
    RESUME_SCHEDULE,
    TRIGGER_SCHEDULE,
    BACKFILL_SCHEDULE,
    LIST_WORKERS,
    CLUSTER_STATUS,
    WHO_AM_I,
    CREATE_TOKEN,
)
