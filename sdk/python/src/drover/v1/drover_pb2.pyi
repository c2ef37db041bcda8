from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AfterPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AFTER_POLICY_UNSPECIFIED: _ClassVar[AfterPolicy]
    AFTER_POLICY_ALL_SUCCEEDED: _ClassVar[AfterPolicy]
    AFTER_POLICY_ALL_FINISHED: _ClassVar[AfterPolicy]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_SCHEDULED: _ClassVar[TaskState]
    TASK_STATE_READY: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_RETRY_WAIT: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_DEAD: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_WAITING: _ClassVar[TaskState]

class GateMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_MODE_UNSPECIFIED: _ClassVar[GateMode]
    GATE_MODE_PAUSE: _ClassVar[GateMode]
    GATE_MODE_DROP: _ClassVar[GateMode]
AFTER_POLICY_UNSPECIFIED: AfterPolicy
AFTER_POLICY_ALL_SUCCEEDED: AfterPolicy
AFTER_POLICY_ALL_FINISHED: AfterPolicy
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_SCHEDULED: TaskState
TASK_STATE_READY: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_RETRY_WAIT: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_DEAD: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_WAITING: TaskState
GATE_MODE_UNSPECIFIED: GateMode
GATE_MODE_PAUSE: GateMode
GATE_MODE_DROP: GateMode

class CreateTokenRequest(_message.Message):
    __slots__ = ("token_sha256", "role", "callbacks", "expires_in_ms", "note")
    TOKEN_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_MS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    token_sha256: bytes
    role: str
    callbacks: _containers.RepeatedScalarFieldContainer[str]
    expires_in_ms: int
    note: str
    def __init__(self, token_sha256: _Optional[bytes] = ..., role: _Optional[str] = ..., callbacks: _Optional[_Iterable[str]] = ..., expires_in_ms: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class GrantSubjectRequest(_message.Message):
    __slots__ = ("subject", "role", "callbacks", "expires_in_ms", "note")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_MS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    callbacks: _containers.RepeatedScalarFieldContainer[str]
    expires_in_ms: int
    note: str
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ..., callbacks: _Optional[_Iterable[str]] = ..., expires_in_ms: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class GrantInfo(_message.Message):
    __slots__ = ("id", "kind", "subject", "role", "callbacks", "created_unix_ms", "expires_unix_ms", "expired", "note", "created")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    subject: str
    role: str
    callbacks: _containers.RepeatedScalarFieldContainer[str]
    created_unix_ms: int
    expires_unix_ms: int
    expired: bool
    note: str
    created: bool
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., role: _Optional[str] = ..., callbacks: _Optional[_Iterable[str]] = ..., created_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., expired: bool = ..., note: _Optional[str] = ..., created: bool = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants", "enabled")
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[GrantInfo]
    enabled: bool
    def __init__(self, grants: _Optional[_Iterable[_Union[GrantInfo, _Mapping]]] = ..., enabled: bool = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: bool = ...) -> None: ...

class SetAuthRequest(_message.Message):
    __slots__ = ("enabled",)
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    def __init__(self, enabled: bool = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AuthStatus(_message.Message):
    __slots__ = ("enabled", "principal", "role", "callbacks", "changed")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    principal: str
    role: str
    callbacks: _containers.RepeatedScalarFieldContainer[str]
    changed: bool
    def __init__(self, enabled: bool = ..., principal: _Optional[str] = ..., role: _Optional[str] = ..., callbacks: _Optional[_Iterable[str]] = ..., changed: bool = ...) -> None: ...

class ClockRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClockResponse(_message.Message):
    __slots__ = ("node_id", "unix_ms", "disk_free_bytes", "disk_total_bytes", "disk_alarm", "feature_level", "version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_ALARM_FIELD_NUMBER: _ClassVar[int]
    FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    unix_ms: int
    disk_free_bytes: int
    disk_total_bytes: int
    disk_alarm: bool
    feature_level: int
    version: str
    def __init__(self, node_id: _Optional[int] = ..., unix_ms: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., disk_alarm: bool = ..., feature_level: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("callback", "payload", "priority", "delay_ms", "run_at_unix_ms", "idempotency_key", "collection", "after", "ref", "after_refs", "after_policy", "trace")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    AFTER_REFS_FIELD_NUMBER: _ClassVar[int]
    AFTER_POLICY_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    callback: str
    payload: bytes
    priority: int
    delay_ms: int
    run_at_unix_ms: int
    idempotency_key: str
    collection: str
    after: _containers.RepeatedScalarFieldContainer[int]
    ref: str
    after_refs: _containers.RepeatedScalarFieldContainer[str]
    after_policy: AfterPolicy
    trace: TraceContext
    def __init__(self, callback: _Optional[str] = ..., payload: _Optional[bytes] = ..., priority: _Optional[int] = ..., delay_ms: _Optional[int] = ..., run_at_unix_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., collection: _Optional[str] = ..., after: _Optional[_Iterable[int]] = ..., ref: _Optional[str] = ..., after_refs: _Optional[_Iterable[str]] = ..., after_policy: _Optional[_Union[AfterPolicy, str]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ("traceparent", "tracestate")
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    TRACESTATE_FIELD_NUMBER: _ClassVar[int]
    traceparent: str
    tracestate: str
    def __init__(self, traceparent: _Optional[str] = ..., tracestate: _Optional[str] = ...) -> None: ...

class ScheduleRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: TaskSpec
    request_id: bytes
    def __init__(self, task: _Optional[_Union[TaskSpec, _Mapping]] = ..., request_id: _Optional[bytes] = ...) -> None: ...

class ScheduleResponse(_message.Message):
    __slots__ = ("task_id", "created", "replayed", "state", "note")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    created: bool
    replayed: bool
    state: TaskState
    note: str
    def __init__(self, task_id: _Optional[int] = ..., created: bool = ..., replayed: bool = ..., state: _Optional[_Union[TaskState, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ScheduleBatchRequest(_message.Message):
    __slots__ = ("tasks", "request_id")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    request_id: bytes
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., request_id: _Optional[bytes] = ...) -> None: ...

class ScheduleBatchResponse(_message.Message):
    __slots__ = ("results", "replayed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScheduleResponse]
    replayed: bool
    def __init__(self, results: _Optional[_Iterable[_Union[ScheduleResponse, _Mapping]]] = ..., replayed: bool = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id", "allow_stale", "include_payload")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_STALE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    allow_stale: bool
    include_payload: bool
    def __init__(self, task_id: _Optional[int] = ..., allow_stale: bool = ..., include_payload: bool = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "callback", "state", "priority", "run_at_unix_ms", "created_at_unix_ms", "attempts", "payload_size", "idempotency_key", "created_index", "fencing_token", "worker", "last_error", "result", "cancel_requested", "history", "payload", "collection", "dependencies", "children", "trace")
    ID_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_INDEX_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    id: int
    callback: str
    state: TaskState
    priority: int
    run_at_unix_ms: int
    created_at_unix_ms: int
    attempts: int
    payload_size: int
    idempotency_key: str
    created_index: int
    fencing_token: int
    worker: str
    last_error: str
    result: bytes
    cancel_requested: bool
    history: _containers.RepeatedCompositeFieldContainer[TaskTransition]
    payload: bytes
    collection: str
    dependencies: Dependencies
    children: _containers.RepeatedScalarFieldContainer[int]
    trace: TraceContext
    def __init__(self, id: _Optional[int] = ..., callback: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., priority: _Optional[int] = ..., run_at_unix_ms: _Optional[int] = ..., created_at_unix_ms: _Optional[int] = ..., attempts: _Optional[int] = ..., payload_size: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., created_index: _Optional[int] = ..., fencing_token: _Optional[int] = ..., worker: _Optional[str] = ..., last_error: _Optional[str] = ..., result: _Optional[bytes] = ..., cancel_requested: bool = ..., history: _Optional[_Iterable[_Union[TaskTransition, _Mapping]]] = ..., payload: _Optional[bytes] = ..., collection: _Optional[str] = ..., dependencies: _Optional[_Union[Dependencies, _Mapping]] = ..., children: _Optional[_Iterable[int]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ...) -> None: ...

class Dependencies(_message.Message):
    __slots__ = ("parents", "policy", "open", "ended", "cancelled_by")
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BY_FIELD_NUMBER: _ClassVar[int]
    parents: _containers.RepeatedScalarFieldContainer[int]
    policy: AfterPolicy
    open: int
    ended: ParentCounts
    cancelled_by: int
    def __init__(self, parents: _Optional[_Iterable[int]] = ..., policy: _Optional[_Union[AfterPolicy, str]] = ..., open: _Optional[int] = ..., ended: _Optional[_Union[ParentCounts, _Mapping]] = ..., cancelled_by: _Optional[int] = ...) -> None: ...

class ParentCounts(_message.Message):
    __slots__ = ("succeeded", "failed", "dead", "cancelled")
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    succeeded: int
    failed: int
    dead: int
    cancelled: int
    def __init__(self, succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., dead: _Optional[int] = ..., cancelled: _Optional[int] = ...) -> None: ...

class TaskTransition(_message.Message):
    __slots__ = ("state", "at_unix_ms", "attempt")
    STATE_FIELD_NUMBER: _ClassVar[int]
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    state: TaskState
    at_unix_ms: int
    attempt: int
    def __init__(self, state: _Optional[_Union[TaskState, str]] = ..., at_unix_ms: _Optional[int] = ..., attempt: _Optional[int] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("callback", "state", "limit", "after_id", "allow_stale", "collection")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOW_STALE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    callback: str
    state: TaskState
    limit: int
    after_id: int
    allow_stale: bool
    collection: str
    def __init__(self, callback: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., limit: _Optional[int] = ..., after_id: _Optional[int] = ..., allow_stale: bool = ..., collection: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_after")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_after: int
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_after: _Optional[int] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: TaskState
    def __init__(self, state: _Optional[_Union[TaskState, str]] = ...) -> None: ...

class CallbackSettings(_message.Message):
    __slots__ = ("name", "max_attempts", "lease_ms", "timeout_ms", "concurrency", "backoff_initial_ms", "backoff_max_ms", "rate_count", "rate_period_ms", "rate_burst", "retain_succeeded_ms", "retain_cancelled_ms", "retain_failed_ms", "retain_dead_ms")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RATE_PERIOD_MS_FIELD_NUMBER: _ClassVar[int]
    RATE_BURST_FIELD_NUMBER: _ClassVar[int]
    RETAIN_SUCCEEDED_MS_FIELD_NUMBER: _ClassVar[int]
    RETAIN_CANCELLED_MS_FIELD_NUMBER: _ClassVar[int]
    RETAIN_FAILED_MS_FIELD_NUMBER: _ClassVar[int]
    RETAIN_DEAD_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    max_attempts: int
    lease_ms: int
    timeout_ms: int
    concurrency: int
    backoff_initial_ms: int
    backoff_max_ms: int
    rate_count: int
    rate_period_ms: int
    rate_burst: int
    retain_succeeded_ms: int
    retain_cancelled_ms: int
    retain_failed_ms: int
    retain_dead_ms: int
    def __init__(self, name: _Optional[str] = ..., max_attempts: _Optional[int] = ..., lease_ms: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., concurrency: _Optional[int] = ..., backoff_initial_ms: _Optional[int] = ..., backoff_max_ms: _Optional[int] = ..., rate_count: _Optional[int] = ..., rate_period_ms: _Optional[int] = ..., rate_burst: _Optional[int] = ..., retain_succeeded_ms: _Optional[int] = ..., retain_cancelled_ms: _Optional[int] = ..., retain_failed_ms: _Optional[int] = ..., retain_dead_ms: _Optional[int] = ...) -> None: ...

class RegisterCallbackRequest(_message.Message):
    __slots__ = ("settings",)
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    settings: CallbackSettings
    def __init__(self, settings: _Optional[_Union[CallbackSettings, _Mapping]] = ...) -> None: ...

class RegisterCallbackResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: bool = ...) -> None: ...

class ListCallbacksRequest(_message.Message):
    __slots__ = ("allow_stale",)
    ALLOW_STALE_FIELD_NUMBER: _ClassVar[int]
    allow_stale: bool
    def __init__(self, allow_stale: bool = ...) -> None: ...

class QueueDepth(_message.Message):
    __slots__ = ("priority", "ready", "scheduled")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    priority: int
    ready: int
    scheduled: int
    def __init__(self, priority: _Optional[int] = ..., ready: _Optional[int] = ..., scheduled: _Optional[int] = ...) -> None: ...

class CollectionDepth(_message.Message):
    __slots__ = ("collection", "ready", "scheduled")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ready: int
    scheduled: int
    def __init__(self, collection: _Optional[str] = ..., ready: _Optional[int] = ..., scheduled: _Optional[int] = ...) -> None: ...

class CallbackInfo(_message.Message):
    __slots__ = ("settings", "queues", "running", "dead", "collections")
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DEAD_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    settings: CallbackSettings
    queues: _containers.RepeatedCompositeFieldContainer[QueueDepth]
    running: int
    dead: int
    collections: _containers.RepeatedCompositeFieldContainer[CollectionDepth]
    def __init__(self, settings: _Optional[_Union[CallbackSettings, _Mapping]] = ..., queues: _Optional[_Iterable[_Union[QueueDepth, _Mapping]]] = ..., running: _Optional[int] = ..., dead: _Optional[int] = ..., collections: _Optional[_Iterable[_Union[CollectionDepth, _Mapping]]] = ...) -> None: ...

class SetGateRequest(_message.Message):
    __slots__ = ("callback", "collection", "mode", "until_unix_ms", "for_ms", "note", "cancel_running")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FOR_MS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_RUNNING_FIELD_NUMBER: _ClassVar[int]
    callback: str
    collection: str
    mode: GateMode
    until_unix_ms: int
    for_ms: int
    note: str
    cancel_running: bool
    def __init__(self, callback: _Optional[str] = ..., collection: _Optional[str] = ..., mode: _Optional[_Union[GateMode, str]] = ..., until_unix_ms: _Optional[int] = ..., for_ms: _Optional[int] = ..., note: _Optional[str] = ..., cancel_running: bool = ...) -> None: ...

class SetGateResponse(_message.Message):
    __slots__ = ("cancelled", "cancel_requested", "gate")
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    cancelled: int
    cancel_requested: int
    gate: Gate
    def __init__(self, cancelled: _Optional[int] = ..., cancel_requested: _Optional[int] = ..., gate: _Optional[_Union[Gate, _Mapping]] = ...) -> None: ...

class OpenGateRequest(_message.Message):
    __slots__ = ("callback", "collection")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    callback: str
    collection: str
    def __init__(self, callback: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class OpenGateResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: bool = ...) -> None: ...

class ListGatesRequest(_message.Message):
    __slots__ = ("allow_stale",)
    ALLOW_STALE_FIELD_NUMBER: _ClassVar[int]
    allow_stale: bool
    def __init__(self, allow_stale: bool = ...) -> None: ...

class Gate(_message.Message):
    __slots__ = ("callback", "collection", "mode", "since_unix_ms", "until_unix_ms", "note", "pending", "running", "active", "since_index")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SINCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    callback: str
    collection: str
    mode: GateMode
    since_unix_ms: int
    until_unix_ms: int
    note: str
    pending: int
    running: int
    active: bool
    since_index: int
    def __init__(self, callback: _Optional[str] = ..., collection: _Optional[str] = ..., mode: _Optional[_Union[GateMode, str]] = ..., since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., note: _Optional[str] = ..., pending: _Optional[int] = ..., running: _Optional[int] = ..., active: bool = ..., since_index: _Optional[int] = ...) -> None: ...

class ListGatesResponse(_message.Message):
    __slots__ = ("gates",)
    GATES_FIELD_NUMBER: _ClassVar[int]
    gates: _containers.RepeatedCompositeFieldContainer[Gate]
    def __init__(self, gates: _Optional[_Iterable[_Union[Gate, _Mapping]]] = ...) -> None: ...

class ScheduleDefinition(_message.Message):
    __slots__ = ("name", "callback", "cron", "tz", "every_ms", "payload", "priority", "collection", "overlap", "catchup", "catchup_window_ms", "jitter_ms", "start_unix_ms", "end_unix_ms", "pause_on_failure", "dst_repeat", "dst_gap", "trace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    EVERY_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_WINDOW_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PAUSE_ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    DST_REPEAT_FIELD_NUMBER: _ClassVar[int]
    DST_GAP_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    callback: str
    cron: str
    tz: str
    every_ms: int
    payload: bytes
    priority: int
    collection: str
    overlap: str
    catchup: str
    catchup_window_ms: int
    jitter_ms: int
    start_unix_ms: int
    end_unix_ms: int
    pause_on_failure: bool
    dst_repeat: str
    dst_gap: str
    trace: TraceContext
    def __init__(self, name: _Optional[str] = ..., callback: _Optional[str] = ..., cron: _Optional[str] = ..., tz: _Optional[str] = ..., every_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., priority: _Optional[int] = ..., collection: _Optional[str] = ..., overlap: _Optional[str] = ..., catchup: _Optional[str] = ..., catchup_window_ms: _Optional[int] = ..., jitter_ms: _Optional[int] = ..., start_unix_ms: _Optional[int] = ..., end_unix_ms: _Optional[int] = ..., pause_on_failure: bool = ..., dst_repeat: _Optional[str] = ..., dst_gap: _Optional[str] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ...) -> None: ...

class ScheduleRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SlotInfo(_message.Message):
    __slots__ = ("at_unix_ms", "id")
    AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    at_unix_ms: int
    id: str
    def __init__(self, at_unix_ms: _Optional[int] = ..., id: _Optional[str] = ...) -> None: ...

class ScheduleRun(_message.Message):
    __slots__ = ("slot", "task_id", "state")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    slot: SlotInfo
    task_id: int
    state: TaskState
    def __init__(self, slot: _Optional[_Union[SlotInfo, _Mapping]] = ..., task_id: _Optional[int] = ..., state: _Optional[_Union[TaskState, str]] = ...) -> None: ...

class ScheduleInfo(_message.Message):
    __slots__ = ("definition", "paused", "note", "created_unix_ms", "last_slot", "fired", "skipped", "active", "buffered", "next", "runs")
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SLOT_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    definition: ScheduleDefinition
    paused: bool
    note: str
    created_unix_ms: int
    last_slot: SlotInfo
    fired: int
    skipped: int
    active: _containers.RepeatedScalarFieldContainer[int]
    buffered: int
    next: _containers.RepeatedCompositeFieldContainer[SlotInfo]
    runs: _containers.RepeatedCompositeFieldContainer[ScheduleRun]
    def __init__(self, definition: _Optional[_Union[ScheduleDefinition, _Mapping]] = ..., paused: bool = ..., note: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., last_slot: _Optional[_Union[SlotInfo, _Mapping]] = ..., fired: _Optional[int] = ..., skipped: _Optional[int] = ..., active: _Optional[_Iterable[int]] = ..., buffered: _Optional[int] = ..., next: _Optional[_Iterable[_Union[SlotInfo, _Mapping]]] = ..., runs: _Optional[_Iterable[_Union[ScheduleRun, _Mapping]]] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ("allow_stale",)
    ALLOW_STALE_FIELD_NUMBER: _ClassVar[int]
    allow_stale: bool
    def __init__(self, allow_stale: bool = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[ScheduleInfo]
    def __init__(self, schedules: _Optional[_Iterable[_Union[ScheduleInfo, _Mapping]]] = ...) -> None: ...

class DeleteScheduleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PauseScheduleRequest(_message.Message):
    __slots__ = ("name", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    note: str
    def __init__(self, name: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ResumeScheduleRequest(_message.Message):
    __slots__ = ("name", "catch_up")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_FIELD_NUMBER: _ClassVar[int]
    name: str
    catch_up: bool
    def __init__(self, name: _Optional[str] = ..., catch_up: bool = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerSession]
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerSession, _Mapping]]] = ...) -> None: ...

class WorkerSession(_message.Message):
    __slots__ = ("worker_id", "callbacks", "draining", "idle_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    callbacks: _containers.RepeatedCompositeFieldContainer[WorkerLoad]
    draining: bool
    idle_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., callbacks: _Optional[_Iterable[_Union[WorkerLoad, _Mapping]]] = ..., draining: bool = ..., idle_ms: _Optional[int] = ...) -> None: ...

class WorkerLoad(_message.Message):
    __slots__ = ("callback", "credits", "running")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    callback: str
    credits: int
    running: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, callback: _Optional[str] = ..., credits: _Optional[int] = ..., running: _Optional[_Iterable[int]] = ...) -> None: ...

class BackfillScheduleRequest(_message.Message):
    __slots__ = ("name", "from_unix_ms", "to_unix_ms", "dry_run")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TO_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_unix_ms: int
    to_unix_ms: int
    dry_run: bool
    def __init__(self, name: _Optional[str] = ..., from_unix_ms: _Optional[int] = ..., to_unix_ms: _Optional[int] = ..., dry_run: bool = ...) -> None: ...

class BackfillScheduleResponse(_message.Message):
    __slots__ = ("slots",)
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    slots: _containers.RepeatedCompositeFieldContainer[BackfillSlot]
    def __init__(self, slots: _Optional[_Iterable[_Union[BackfillSlot, _Mapping]]] = ...) -> None: ...

class BackfillSlot(_message.Message):
    __slots__ = ("slot", "task_id", "created")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    slot: SlotInfo
    task_id: int
    created: bool
    def __init__(self, slot: _Optional[_Union[SlotInfo, _Mapping]] = ..., task_id: _Optional[int] = ..., created: bool = ...) -> None: ...

class TriggerScheduleResponse(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    def __init__(self, task_id: _Optional[int] = ...) -> None: ...

class GcStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GcStatusResponse(_message.Message):
    __slots__ = ("collected", "oldest_finished_unix_ms", "backlog", "finished", "tasks", "default_succeeded_ms", "default_cancelled_ms", "default_failed_ms", "default_dead_ms")
    COLLECTED_FIELD_NUMBER: _ClassVar[int]
    OLDEST_FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SUCCEEDED_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_CANCELLED_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FAILED_MS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_DEAD_MS_FIELD_NUMBER: _ClassVar[int]
    collected: int
    oldest_finished_unix_ms: int
    backlog: int
    finished: int
    tasks: int
    default_succeeded_ms: int
    default_cancelled_ms: int
    default_failed_ms: int
    default_dead_ms: int
    def __init__(self, collected: _Optional[int] = ..., oldest_finished_unix_ms: _Optional[int] = ..., backlog: _Optional[int] = ..., finished: _Optional[int] = ..., tasks: _Optional[int] = ..., default_succeeded_ms: _Optional[int] = ..., default_cancelled_ms: _Optional[int] = ..., default_failed_ms: _Optional[int] = ..., default_dead_ms: _Optional[int] = ...) -> None: ...

class ListCallbacksResponse(_message.Message):
    __slots__ = ("callbacks",)
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    callbacks: _containers.RepeatedCompositeFieldContainer[CallbackInfo]
    def __init__(self, callbacks: _Optional[_Iterable[_Union[CallbackInfo, _Mapping]]] = ...) -> None: ...

class DeadLetterRequest(_message.Message):
    __slots__ = ("task_id", "callback", "with_dependents")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    WITH_DEPENDENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    callback: str
    with_dependents: bool
    def __init__(self, task_id: _Optional[int] = ..., callback: _Optional[str] = ..., with_dependents: bool = ...) -> None: ...

class DeadLetterResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class TaskRef(_message.Message):
    __slots__ = ("task_id", "fencing_token")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    fencing_token: int
    def __init__(self, task_id: _Optional[int] = ..., fencing_token: _Optional[int] = ...) -> None: ...

class CallbackCredits(_message.Message):
    __slots__ = ("callback", "concurrency")
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    callback: str
    concurrency: int
    def __init__(self, callback: _Optional[str] = ..., concurrency: _Optional[int] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("hello", "heartbeat", "completion", "drain")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    heartbeat: Heartbeat
    completion: Completion
    drain: bool
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., completion: _Optional[_Union[Completion, _Mapping]] = ..., drain: bool = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("worker_id", "callbacks", "running")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CALLBACKS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    callbacks: _containers.RepeatedCompositeFieldContainer[CallbackCredits]
    running: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, worker_id: _Optional[str] = ..., callbacks: _Optional[_Iterable[_Union[CallbackCredits, _Mapping]]] = ..., running: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "tasks")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    tasks: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, seq: _Optional[int] = ..., tasks: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("task_id", "fencing_token", "success", "retry", "fatal", "cancelled")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    fencing_token: int
    success: bytes
    retry: Failure
    fatal: Failure
    cancelled: bool
    def __init__(self, task_id: _Optional[int] = ..., fencing_token: _Optional[int] = ..., success: _Optional[bytes] = ..., retry: _Optional[_Union[Failure, _Mapping]] = ..., fatal: _Optional[_Union[Failure, _Mapping]] = ..., cancelled: bool = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("error", "retry_after_ms")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    error: str
    retry_after_ms: int
    def __init__(self, error: _Optional[str] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "assignment", "heartbeat_ack", "completion_ack", "cancel", "redirect")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_ACK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    assignment: Assignment
    heartbeat_ack: HeartbeatAck
    completion_ack: CompletionAck
    cancel: TaskRef
    redirect: Redirect
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., assignment: _Optional[_Union[Assignment, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., completion_ack: _Optional[_Union[CompletionAck, _Mapping]] = ..., cancel: _Optional[_Union[TaskRef, _Mapping]] = ..., redirect: _Optional[_Union[Redirect, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("node_id", "heartbeat_interval_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    heartbeat_interval_ms: int
    def __init__(self, node_id: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "callback", "payload", "attempt", "fencing_token", "lease_ms", "timeout_ms", "priority", "upstream", "trace", "links")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    callback: str
    payload: bytes
    attempt: int
    fencing_token: int
    lease_ms: int
    timeout_ms: int
    priority: int
    upstream: Upstream
    trace: TraceContext
    links: _containers.RepeatedCompositeFieldContainer[TraceContext]
    def __init__(self, task_id: _Optional[int] = ..., callback: _Optional[str] = ..., payload: _Optional[bytes] = ..., attempt: _Optional[int] = ..., fencing_token: _Optional[int] = ..., lease_ms: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., priority: _Optional[int] = ..., upstream: _Optional[_Union[Upstream, _Mapping]] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ..., links: _Optional[_Iterable[_Union[TraceContext, _Mapping]]] = ...) -> None: ...

class Upstream(_message.Message):
    __slots__ = ("ended", "parents", "omitted")
    ENDED_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    OMITTED_FIELD_NUMBER: _ClassVar[int]
    ended: ParentCounts
    parents: _containers.RepeatedCompositeFieldContainer[ParentResult]
    omitted: int
    def __init__(self, ended: _Optional[_Union[ParentCounts, _Mapping]] = ..., parents: _Optional[_Iterable[_Union[ParentResult, _Mapping]]] = ..., omitted: _Optional[int] = ...) -> None: ...

class ParentResult(_message.Message):
    __slots__ = ("task_id", "state", "result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    state: TaskState
    result: bytes
    def __init__(self, task_id: _Optional[int] = ..., state: _Optional[_Union[TaskState, str]] = ..., result: _Optional[bytes] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("seq", "renewed", "lost")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    seq: int
    renewed: _containers.RepeatedCompositeFieldContainer[TaskRef]
    lost: _containers.RepeatedCompositeFieldContainer[TaskRef]
    def __init__(self, seq: _Optional[int] = ..., renewed: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ..., lost: _Optional[_Iterable[_Union[TaskRef, _Mapping]]] = ...) -> None: ...

class CompletionAck(_message.Message):
    __slots__ = ("task_id", "fencing_token", "accepted", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FENCING_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    fencing_token: int
    accepted: bool
    reason: str
    def __init__(self, task_id: _Optional[int] = ..., fencing_token: _Optional[int] = ..., accepted: bool = ..., reason: _Optional[str] = ...) -> None: ...

class Redirect(_message.Message):
    __slots__ = ("leader_id", "leader_addr")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_ADDR_FIELD_NUMBER: _ClassVar[int]
    leader_id: int
    leader_addr: str
    def __init__(self, leader_id: _Optional[int] = ..., leader_addr: _Optional[str] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("leader_id", "term", "last_log_index", "committed_index", "members", "quorum_ack_ms", "cluster_id", "active_feature_level")
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_ACK_MS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    leader_id: int
    term: int
    last_log_index: int
    committed_index: int
    members: _containers.RepeatedCompositeFieldContainer[MemberStatus]
    quorum_ack_ms: int
    cluster_id: str
    active_feature_level: int
    def __init__(self, leader_id: _Optional[int] = ..., term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., committed_index: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberStatus, _Mapping]]] = ..., quorum_ack_ms: _Optional[int] = ..., cluster_id: _Optional[str] = ..., active_feature_level: _Optional[int] = ...) -> None: ...

class MemberStatus(_message.Message):
    __slots__ = ("id", "addr", "voter", "reachable", "status", "lag", "error", "last_contact_ms", "version", "feature_level")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    addr: str
    voter: bool
    reachable: bool
    status: NodeStatusResponse
    lag: int
    error: str
    last_contact_ms: int
    version: str
    feature_level: int
    def __init__(self, id: _Optional[int] = ..., addr: _Optional[str] = ..., voter: bool = ..., reachable: bool = ..., status: _Optional[_Union[NodeStatusResponse, _Mapping]] = ..., lag: _Optional[int] = ..., error: _Optional[str] = ..., last_contact_ms: _Optional[int] = ..., version: _Optional[str] = ..., feature_level: _Optional[int] = ...) -> None: ...

class AddLearnerRequest(_message.Message):
    __slots__ = ("id", "addr")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    id: int
    addr: str
    def __init__(self, id: _Optional[int] = ..., addr: _Optional[str] = ...) -> None: ...

class PromoteVoterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ReplaceNodeRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ReplaceNodeResponse(_message.Message):
    __slots__ = ("new_id", "addr", "membership")
    NEW_ID_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    new_id: int
    addr: str
    membership: MembershipResponse
    def __init__(self, new_id: _Optional[int] = ..., addr: _Optional[str] = ..., membership: _Optional[_Union[MembershipResponse, _Mapping]] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("to",)
    TO_FIELD_NUMBER: _ClassVar[int]
    to: int
    def __init__(self, to: _Optional[int] = ...) -> None: ...

class MembershipResponse(_message.Message):
    __slots__ = ("voters", "learners", "leader_id")
    VOTERS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    voters: _containers.RepeatedScalarFieldContainer[int]
    learners: _containers.RepeatedScalarFieldContainer[int]
    leader_id: int
    def __init__(self, voters: _Optional[_Iterable[int]] = ..., learners: _Optional[_Iterable[int]] = ..., leader_id: _Optional[int] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupChunk(_message.Message):
    __slots__ = ("data", "applied_index")
    DATA_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    applied_index: int
    def __init__(self, data: _Optional[bytes] = ..., applied_index: _Optional[int] = ...) -> None: ...

class DigestRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DigestResponse(_message.Message):
    __slots__ = ("applied_index", "digest", "task_count")
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    applied_index: int
    digest: str
    task_count: int
    def __init__(self, applied_index: _Optional[int] = ..., digest: _Optional[str] = ..., task_count: _Optional[int] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatusResponse(_message.Message):
    __slots__ = ("id", "role", "term", "leader_id", "has_leader", "last_log_index", "committed_index", "applied_index", "snapshot_index", "purged_index", "task_count", "cpu_seconds", "rss_bytes", "disk_bytes", "snapshot_at_unix_ms", "clock_offset_ms", "clock_skewed", "replicated_now_unix_ms", "max_clock_offset_ms", "disk_free_bytes", "disk_total_bytes", "disk_alarm", "min_free_disk_bytes", "tls", "insecure_exposed", "cluster_id", "refused_messages", "version", "feature_level", "active_feature_level")
    class RefusedMessagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_LEADER_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PURGED_INDEX_FIELD_NUMBER: _ClassVar[int]
    TASK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    CLOCK_SKEWED_FIELD_NUMBER: _ClassVar[int]
    REPLICATED_NOW_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLOCK_OFFSET_MS_FIELD_NUMBER: _ClassVar[int]
    DISK_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_ALARM_FIELD_NUMBER: _ClassVar[int]
    MIN_FREE_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    INSECURE_EXPOSED_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSED_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    role: str
    term: int
    leader_id: int
    has_leader: bool
    last_log_index: int
    committed_index: int
    applied_index: int
    snapshot_index: int
    purged_index: int
    task_count: int
    cpu_seconds: float
    rss_bytes: int
    disk_bytes: int
    snapshot_at_unix_ms: int
    clock_offset_ms: int
    clock_skewed: bool
    replicated_now_unix_ms: int
    max_clock_offset_ms: int
    disk_free_bytes: int
    disk_total_bytes: int
    disk_alarm: bool
    min_free_disk_bytes: int
    tls: bool
    insecure_exposed: bool
    cluster_id: str
    refused_messages: _containers.ScalarMap[str, int]
    version: str
    feature_level: int
    active_feature_level: int
    def __init__(self, id: _Optional[int] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader_id: _Optional[int] = ..., has_leader: bool = ..., last_log_index: _Optional[int] = ..., committed_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., snapshot_index: _Optional[int] = ..., purged_index: _Optional[int] = ..., task_count: _Optional[int] = ..., cpu_seconds: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., disk_bytes: _Optional[int] = ..., snapshot_at_unix_ms: _Optional[int] = ..., clock_offset_ms: _Optional[int] = ..., clock_skewed: bool = ..., replicated_now_unix_ms: _Optional[int] = ..., max_clock_offset_ms: _Optional[int] = ..., disk_free_bytes: _Optional[int] = ..., disk_total_bytes: _Optional[int] = ..., disk_alarm: bool = ..., min_free_disk_bytes: _Optional[int] = ..., tls: bool = ..., insecure_exposed: bool = ..., cluster_id: _Optional[str] = ..., refused_messages: _Optional[_Mapping[str, int]] = ..., version: _Optional[str] = ..., feature_level: _Optional[int] = ..., active_feature_level: _Optional[int] = ...) -> None: ...

class FinalizeUpgradeRequest(_message.Message):
    __slots__ = ("level",)
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    level: int
    def __init__(self, level: _Optional[int] = ...) -> None: ...

class FinalizeUpgradeResponse(_message.Message):
    __slots__ = ("active_feature_level", "previous_feature_level")
    ACTIVE_FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FEATURE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    active_feature_level: int
    previous_feature_level: int
    def __init__(self, active_feature_level: _Optional[int] = ..., previous_feature_level: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("node_id", "cluster_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    cluster_id: str
    def __init__(self, node_id: _Optional[int] = ..., cluster_id: _Optional[str] = ...) -> None: ...
