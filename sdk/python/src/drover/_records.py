"""The SDK's own view of everything around tasks: callbacks, gates,
periodic schedules, worker sessions, retention (GC) and the cluster.

Times are Unix seconds and durations seconds (floats), as in
:mod:`drover._types`; a protocol's "0 means none" becomes None. The
``*_from_pb`` functions convert at the boundary.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import List, Optional, Tuple, Union

from ._types import TaskState, seconds
from .v1 import drover_pb2 as pb

__all__ = [
    "CallbackSettings",
    "QueueDepth",
    "CollectionDepth",
    "CallbackInfo",
    "GateMode",
    "Gate",
    "SetGateResult",
    "Overlap",
    "Catchup",
    "DstRepeat",
    "DstGap",
    "ScheduleDefinition",
    "Slot",
    "ScheduleRun",
    "ScheduleInfo",
    "BackfillSlot",
    "WorkerLoad",
    "WorkerSession",
    "GcStatus",
    "NodeRole",
    "NodeStatus",
    "MemberStatus",
    "ClusterStatus",
]


def _opt_seconds(ms: int) -> Optional[float]:
    """Milliseconds as seconds, 0 as None."""
    return seconds(ms) if ms else None


# ---- callbacks ----


@dataclass(frozen=True)
class CallbackSettings:
    """A callback's settings (see :meth:`drover.Client.register_callback`).

    ``rate``: (starts, per period in seconds) across workers, None for no
    limit; ``retain_*``: how long finished tasks are kept, None for the
    cluster's default.
    """

    name: str
    max_attempts: int
    lease: float
    timeout: float
    concurrency: int
    backoff_initial: float
    backoff_max: float
    rate: Optional[Tuple[int, float]] = None
    rate_burst: int = 0
    retain_succeeded: Optional[float] = None
    retain_cancelled: Optional[float] = None
    retain_failed: Optional[float] = None
    retain_dead: Optional[float] = None


def callback_settings_from_pb(s: pb.CallbackSettings) -> CallbackSettings:
    return CallbackSettings(
        name=s.name,
        max_attempts=s.max_attempts,
        lease=seconds(s.lease_ms),
        timeout=seconds(s.timeout_ms),
        concurrency=s.concurrency,
        backoff_initial=seconds(s.backoff_initial_ms),
        backoff_max=seconds(s.backoff_max_ms),
        rate=(s.rate_count, seconds(s.rate_period_ms)) if s.rate_count else None,
        rate_burst=s.rate_burst,
        retain_succeeded=seconds(s.retain_succeeded_ms) if s.HasField("retain_succeeded_ms") else None,
        retain_cancelled=seconds(s.retain_cancelled_ms) if s.HasField("retain_cancelled_ms") else None,
        retain_failed=seconds(s.retain_failed_ms) if s.HasField("retain_failed_ms") else None,
        retain_dead=seconds(s.retain_dead_ms) if s.HasField("retain_dead_ms") else None,
    )


@dataclass(frozen=True)
class QueueDepth:
    """Pending tasks of one priority: due (``ready``) and not yet (``scheduled``)."""

    priority: int
    ready: int
    scheduled: int


@dataclass(frozen=True)
class CollectionDepth:
    """Pending tasks of one collection."""

    collection: str
    ready: int
    scheduled: int


@dataclass(frozen=True)
class CallbackInfo:
    """A callback: its settings, queue depths (non-empty priorities and
    collections only), running tasks and dead letters."""

    settings: CallbackSettings
    queues: List[QueueDepth] = field(default_factory=list[QueueDepth])
    running: int = 0
    dead: int = 0
    collections: List[CollectionDepth] = field(default_factory=list[CollectionDepth])

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def ready(self) -> int:
        """Due tasks waiting for a worker, over every priority."""
        return sum(q.ready for q in self.queues)

    @property
    def scheduled(self) -> int:
        """Tasks waiting for their run-at time, over every priority."""
        return sum(q.scheduled for q in self.queues)


def callback_info_from_pb(c: pb.CallbackInfo) -> CallbackInfo:
    return CallbackInfo(
        settings=callback_settings_from_pb(c.settings),
        queues=[QueueDepth(q.priority, q.ready, q.scheduled) for q in c.queues],
        running=c.running,
        dead=c.dead,
        collections=[CollectionDepth(d.collection, d.ready, d.scheduled) for d in c.collections],
    )


# ---- gates ----


class GateMode(str, enum.Enum):
    """What a gate does. Compares equal to its name (``GateMode.PAUSE == "pause"``)."""

    #: Nothing in the gate starts; scheduling continues; running tasks finish.
    PAUSE = "pause"
    #: Pending and newly scheduled tasks in the gate are cancelled.
    DROP = "drop"

    def __str__(self) -> str:
        return self.value


#: What ``set_gate``'s ``mode`` accepts: the enum or its name.
GateModeArg = Union[GateMode, str]

GATE_MODE_TO_PB = {GateMode.PAUSE: pb.GATE_MODE_PAUSE, GateMode.DROP: pb.GATE_MODE_DROP}
GATE_MODE_FROM_PB = {int(v): k for k, v in GATE_MODE_TO_PB.items()}


@dataclass(frozen=True)
class Gate:
    """A paused or dropping callback, or one collection of it (``collection``
    None: the whole callback). ``until`` None: until opened; ``active`` is
    false once ``until`` passed. ``pending``/``running``: tasks it holds and
    covers. ``since_index``: no task it covers starts at a later log index."""

    callback: str
    collection: Optional[str]
    mode: GateMode
    since: float
    until: Optional[float] = None
    note: str = ""
    pending: int = 0
    running: int = 0
    active: bool = True
    since_index: int = 0


def gate_from_pb(g: pb.Gate) -> Gate:
    return Gate(
        callback=g.callback,
        collection=g.collection or None,
        mode=GATE_MODE_FROM_PB[int(g.mode)],
        since=seconds(g.since_unix_ms),
        until=seconds(g.until_unix_ms) if g.HasField("until_unix_ms") else None,
        note=g.note,
        pending=g.pending,
        running=g.running,
        active=g.active,
        since_index=g.since_index,
    )


@dataclass(frozen=True)
class SetGateResult:
    """The gate set, with how many pending tasks a drop cancelled and how
    many running ones it asked to stop."""

    gate: Gate
    cancelled: int = 0
    cancel_requested: int = 0


def set_gate_result_from_pb(r: pb.SetGateResponse) -> SetGateResult:
    return SetGateResult(gate=gate_from_pb(r.gate), cancelled=r.cancelled, cancel_requested=r.cancel_requested)


# ---- periodic schedules ----


class Overlap(str, enum.Enum):
    """What a schedule does when a slot comes while its last task still runs."""

    SKIP = "skip"
    BUFFER_ONE = "buffer-one"
    BUFFER_ALL = "buffer-all"
    ALLOW = "allow"
    CANCEL_OTHER = "cancel-other"

    def __str__(self) -> str:
        return self.value


class Catchup(str, enum.Enum):
    """Which missed slots (while the cluster was down) run: the latest, all, none."""

    LATEST = "latest"
    ALL = "all"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


class DstRepeat(str, enum.Enum):
    """A cron time that a DST change repeats runs once, or both times."""

    ONCE = "once"
    BOTH = "both"

    def __str__(self) -> str:
        return self.value


class DstGap(str, enum.Enum):
    """A cron time that a DST change skips runs shifted, or is skipped."""

    SHIFT = "shift"
    SKIP = "skip"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ScheduleDefinition:
    """A periodic schedule's definition: ``cron`` (in ``tz``, default UTC)
    or ``every`` (seconds), and the task each slot schedules. Its fields are
    :meth:`drover.Client.create_schedule`'s arguments."""

    name: str
    callback: str
    cron: Optional[str] = None
    every: Optional[float] = None
    tz: Optional[str] = None
    payload: bytes = b""
    priority: int = 0
    collection: Optional[str] = None
    overlap: Overlap = Overlap.SKIP
    catchup: Catchup = Catchup.LATEST
    catchup_window: float = 86400.0
    jitter: float = 0.0
    start: Optional[float] = None
    end: Optional[float] = None
    pause_on_failure: bool = False
    dst_repeat: DstRepeat = DstRepeat.ONCE
    dst_gap: DstGap = DstGap.SHIFT


def schedule_definition_from_pb(d: pb.ScheduleDefinition) -> ScheduleDefinition:
    return ScheduleDefinition(
        name=d.name,
        callback=d.callback,
        cron=d.cron or None,
        every=_opt_seconds(d.every_ms),
        tz=d.tz or None,
        payload=d.payload,
        priority=d.priority,
        collection=d.collection or None,
        overlap=Overlap(d.overlap or Overlap.SKIP),
        catchup=Catchup(d.catchup or Catchup.LATEST),
        catchup_window=seconds(d.catchup_window_ms),
        jitter=seconds(d.jitter_ms),
        start=seconds(d.start_unix_ms) if d.HasField("start_unix_ms") else None,
        end=seconds(d.end_unix_ms) if d.HasField("end_unix_ms") else None,
        pause_on_failure=d.pause_on_failure,
        dst_repeat=DstRepeat(d.dst_repeat or DstRepeat.ONCE),
        dst_gap=DstGap(d.dst_gap or DstGap.SHIFT),
    )


@dataclass(frozen=True)
class Slot:
    """One nominal fire time of a schedule, and its id (the key of its task)."""

    at: float
    id: str


def slot_from_pb(s: pb.SlotInfo) -> Slot:
    return Slot(at=seconds(s.at_unix_ms), id=s.id)


@dataclass(frozen=True)
class ScheduleRun:
    """A slot that fired, its task, and the task's state now
    (UNSPECIFIED once retention deleted it)."""

    slot: Slot
    task_id: int
    state: TaskState


@dataclass(frozen=True)
class ScheduleInfo:
    """A periodic schedule: its definition and state. ``next``: the next 5
    fire times; ``runs``: the last 10 runs, oldest first; ``active``: the
    ids of its tasks not ended yet."""

    definition: ScheduleDefinition
    paused: bool = False
    note: str = ""
    created_at: float = 0.0
    last_slot: Optional[Slot] = None
    fired: int = 0
    skipped: int = 0
    active: List[int] = field(default_factory=list[int])
    buffered: int = 0
    next: List[Slot] = field(default_factory=list[Slot])
    runs: List[ScheduleRun] = field(default_factory=list[ScheduleRun])

    @property
    def name(self) -> str:
        return self.definition.name


def schedule_info_from_pb(i: pb.ScheduleInfo) -> ScheduleInfo:
    return ScheduleInfo(
        definition=schedule_definition_from_pb(i.definition),
        paused=i.paused,
        note=i.note,
        created_at=seconds(i.created_unix_ms),
        last_slot=slot_from_pb(i.last_slot) if i.HasField("last_slot") else None,
        fired=i.fired,
        skipped=i.skipped,
        active=list(i.active),
        buffered=i.buffered,
        next=[slot_from_pb(s) for s in i.next],
        runs=[ScheduleRun(slot_from_pb(r.slot), r.task_id, TaskState(r.state)) for r in i.runs],
    )


@dataclass(frozen=True)
class BackfillSlot:
    """A slot a backfill ran (or, in a dry run, would run): its task (None
    when a dry run found none yet), and whether the backfill created it."""

    slot: Slot
    task_id: Optional[int]
    created: bool


def backfill_slot_from_pb(s: pb.BackfillSlot) -> BackfillSlot:
    return BackfillSlot(slot=slot_from_pb(s.slot), task_id=s.task_id or None, created=s.created)


# ---- workers ----


@dataclass(frozen=True)
class WorkerLoad:
    """A worker's load for one callback: its credits (concurrency) and the
    ids of the tasks it runs now."""

    callback: str
    credits: int
    running: List[int] = field(default_factory=list[int])


@dataclass(frozen=True)
class WorkerSession:
    """A worker connected to the leader. ``idle``: seconds since its last
    message; ``draining``: it takes no new tasks (shutting down)."""

    worker_id: str
    callbacks: List[WorkerLoad] = field(default_factory=list[WorkerLoad])
    draining: bool = False
    idle: float = 0.0


def worker_session_from_pb(w: pb.WorkerSession) -> WorkerSession:
    return WorkerSession(
        worker_id=w.worker_id,
        callbacks=[WorkerLoad(c.callback, c.credits, list(c.running)) for c in w.callbacks],
        draining=w.draining,
        idle=seconds(w.idle_ms),
    )


# ---- retention ----


@dataclass(frozen=True)
class GcStatus:
    """Retention, as the leader sees it. ``collected``: rows deleted so far;
    ``backlog``: rows past their retention not deleted yet;
    ``oldest_finished``: finish time of the oldest finished task kept;
    ``default_retain_*``: the cluster's retention for callbacks that set
    none (None: kept forever)."""

    collected: int
    backlog: int
    finished: int
    tasks: int
    oldest_finished: Optional[float] = None
    default_retain_succeeded: Optional[float] = None
    default_retain_cancelled: Optional[float] = None
    default_retain_failed: Optional[float] = None
    default_retain_dead: Optional[float] = None


def gc_status_from_pb(g: pb.GcStatusResponse) -> GcStatus:
    return GcStatus(
        collected=g.collected,
        backlog=g.backlog,
        finished=g.finished,
        tasks=g.tasks,
        oldest_finished=seconds(g.oldest_finished_unix_ms) if g.HasField("oldest_finished_unix_ms") else None,
        default_retain_succeeded=_opt_seconds(g.default_succeeded_ms),
        default_retain_cancelled=_opt_seconds(g.default_cancelled_ms),
        default_retain_failed=_opt_seconds(g.default_failed_ms),
        default_retain_dead=_opt_seconds(g.default_dead_ms),
    )


# ---- the cluster ----


class NodeRole(str, enum.Enum):
    """A node's Raft role, as it reports it."""

    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEARNER = "learner"
    SHUTDOWN = "shutdown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class NodeStatus:
    """One node's own view of Raft and of its machine. ``clock_offset``:
    its clock minus the cluster's reference, seconds (None until enough
    voters were sampled)."""

    id: int
    role: NodeRole
    term: int
    leader_id: Optional[int]
    last_log_index: int
    committed_index: int
    applied_index: int
    snapshot_index: int
    purged_index: int
    task_count: int
    cpu_seconds: float
    rss_bytes: int
    disk_bytes: int
    snapshot_at: Optional[float]
    clock_offset: Optional[float]
    clock_skewed: bool
    replicated_now: float
    max_clock_offset: float
    disk_free_bytes: int
    disk_total_bytes: int
    disk_alarm: bool
    min_free_disk_bytes: int
    tls: bool
    insecure_exposed: bool
    cluster_id: str = ""
    """The cluster ID the node holds (32 hex digits; empty while it has none)."""
    version: str = ""
    """Its release and commit; empty from a 0.1.0 node."""
    feature_level: int = 0
    """The highest feature level it speaks; 0 from a 0.1.0 node (level 1)."""
    active_feature_level: int = 0
    """The cluster's feature level as this node knows it."""


def node_status_from_pb(s: pb.NodeStatusResponse) -> NodeStatus:
    return NodeStatus(
        id=s.id,
        role=NodeRole(s.role),
        term=s.term,
        leader_id=s.leader_id if s.has_leader else None,
        last_log_index=s.last_log_index,
        committed_index=s.committed_index,
        applied_index=s.applied_index,
        snapshot_index=s.snapshot_index,
        purged_index=s.purged_index,
        task_count=s.task_count,
        cpu_seconds=s.cpu_seconds,
        rss_bytes=s.rss_bytes,
        disk_bytes=s.disk_bytes,
        snapshot_at=_opt_seconds(s.snapshot_at_unix_ms),
        clock_offset=s.clock_offset_ms / 1000 if s.HasField("clock_offset_ms") else None,
        clock_skewed=s.clock_skewed,
        replicated_now=seconds(s.replicated_now_unix_ms),
        max_clock_offset=seconds(s.max_clock_offset_ms),
        disk_free_bytes=s.disk_free_bytes,
        disk_total_bytes=s.disk_total_bytes,
        disk_alarm=s.disk_alarm,
        min_free_disk_bytes=s.min_free_disk_bytes,
        tls=s.tls,
        insecure_exposed=s.insecure_exposed,
        cluster_id=s.cluster_id,
        version=s.version,
        feature_level=s.feature_level,
        active_feature_level=s.active_feature_level,
    )


@dataclass(frozen=True)
class MemberStatus:
    """A member as the leader sees it: ``status`` is its own view when it
    answered (``error`` says why not otherwise, or that it belongs to
    another cluster); ``lag`` in log entries
    (None while the leader does not know); ``last_contact`` seconds."""

    id: int
    addr: str
    voter: bool
    reachable: bool
    status: Optional[NodeStatus] = None
    lag: Optional[int] = None
    error: str = ""
    last_contact: Optional[float] = None
    version: str = ""
    """Its version as last reported ("0.1.0" for a node that reports none)."""
    feature_level: int = 0
    """The highest feature level it speaks (0: unknown)."""


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as the leader sees it. ``quorum_ack``: seconds since a
    quorum last acknowledged it (large: it may be cut off)."""

    leader_id: int
    term: int
    last_log_index: int
    committed_index: int
    members: List[MemberStatus] = field(default_factory=list[MemberStatus])
    quorum_ack: Optional[float] = None
    cluster_id: str = ""
    """The cluster's ID (32 hex digits), chosen once by its first leader."""
    active_feature_level: int = 1
    """The cluster's feature level (README, "Upgrading")."""

    @property
    def voters(self) -> List[int]:
        return [m.id for m in self.members if m.voter]


def cluster_status_from_pb(c: pb.ClusterStatusResponse) -> ClusterStatus:
    return ClusterStatus(
        leader_id=c.leader_id,
        term=c.term,
        last_log_index=c.last_log_index,
        committed_index=c.committed_index,
        members=[
            MemberStatus(
                id=m.id,
                addr=m.addr,
                voter=m.voter,
                reachable=m.reachable,
                status=node_status_from_pb(m.status) if m.HasField("status") and m.reachable else None,
                lag=m.lag if m.HasField("lag") else None,
                error=m.error,
                last_contact=seconds(m.last_contact_ms) if m.HasField("last_contact_ms") else None,
                version=m.version,
                feature_level=m.feature_level,
            )
            for m in c.members
        ],
        quorum_ack=seconds(c.quorum_ack_ms) if c.HasField("quorum_ack_ms") else None,
        cluster_id=c.cluster_id,
        active_feature_level=max(c.active_feature_level, 1),
    )
