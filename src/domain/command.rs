//! Commands replicated through the Raft log, and the state machine's replies.
//!
//! A command is built on the proposing node (the leader), which stamps it with
//! its clock ([`Command::stamped_at_ms`]). Apply never reads a clock: it
//! advances the replicated clock to `max(now, stamp)` and uses that. Every
//! task transition is a compare-and-set on the task's state and fencing
//! token (or attempt count), so a stale or duplicated command changes
//! nothing and says why in its reply.

use serde::{Deserialize, Serialize};

use super::auth::Grant;
use super::callback::CallbackConfig;
use super::dependency::After;
use super::gate::{Gate, GateTarget};
use super::schedule::{Schedule, Slot};
use super::task::TaskState;

/// One Raft log entry's worth of application work.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Proposer's clock when it proposed this command, Unix ms.
    pub stamped_at_ms: u64,
    pub operation: Operation,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create tasks, all in one entry. Each is deduplicated on its
    /// idempotency key. Unknown callbacks are refused unless
    /// `auto_register` (a node option, carried in the command so that every
    /// replica decides alike).
    Schedule {
        tasks: Vec<NewTask>,
        auto_register: bool,
    },
    /// Create or update a callback.
    RegisterCallback(CallbackConfig),
    /// Lease pending tasks to workers. The fencing token of each is this
    /// entry's log index.
    Assign {
        assignments: Vec<Assignment>,
    },
    /// Workers' reports.
    Complete {
        completions: Vec<Completion>,
    },
    /// Leases the leader saw lapse (or tasks past their timeout).
    Expire {
        leases: Vec<Expiry>,
    },
    /// Cancel a task: at once if it is not running, else when its worker
    /// stops it (or its lease lapses).
    Cancel {
        task_id: u64,
    },
    /// Dead tasks back to pending with attempts reset.
    Redrive {
        target: Target,
    },
    /// Delete dead tasks.
    Purge {
        target: Target,
    },
    /// Remember a removed node id, so that it is never reused.
    RetireNode {
        node_id: u64,
    },
    /// Load raw state machine records from a backup (a restore). Only ever
    /// proposed by a freshly restored single-node cluster, before it serves.
    Import {
        records: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)>,
    },
    /// Assignments the leader could not hand to their worker (its stream
    /// was full or gone): back to pending at once, and the attempt does not
    /// count, since the task never ran.
    Release {
        leases: Vec<Expiry>,
    },
    /// `Schedule` under a client's request id: a repeat of the id (within
    /// [`REQUEST_ID_WINDOW_MS`]) gets the first answer again and creates
    /// nothing, so a client may retry any schedule whose outcome it does
    /// not know.
    ScheduleRequest {
        request_id: RequestId,
        tasks: Vec<NewTask>,
        auto_register: bool,
    },
    /// Set (or replace) a gate. Its `since_ms` is the applying entry's
    /// time. A dropping gate cancels the pending tasks it covers in this
    /// entry; with `cancel_running`, running ones get a cancel request.
    SetGate {
        gate: Gate,
        cancel_running: bool,
    },
    /// Remove a gate. With `if_expired`, only if it no longer applies (the
    /// leader's clean-up, which must not remove a gate set again since).
    OpenGate {
        target: GateTarget,
        if_expired: bool,
    },
    /// Retention: delete these finished tasks (with payload, result, index
    /// rows and idempotency key) and forget these request ids. The leader
    /// picks them; apply skips any task that is not finished.
    Collect {
        task_ids: Vec<u64>,
        request_ids: Vec<RequestId>,
    },
    /// Create (`create`) or update a periodic schedule; an update keeps its
    /// state (last slot, runs, counts).
    PutSchedule {
        schedule: Box<Schedule>,
        create: bool,
    },
    DeleteSchedule {
        name: String,
    },
    /// Pause or resume; a resume without `catch_up` never fires the slots
    /// up to its entry's time.
    PauseSchedule {
        name: String,
        paused: bool,
        note: String,
        catch_up: bool,
    },
    /// Fire `slots` of a schedule, each only if later than its last slot
    /// (compare-and-set), after moving the last slot to `skip_to` and
    /// counting `skipped` missed slots.
    FireSchedule {
        name: String,
        slots: Vec<Slot>,
        skip_to: Option<Slot>,
        skipped: u64,
    },
    /// Run a schedule's task now, under its overlap policy.
    TriggerSchedule {
        name: String,
    },
    /// Schedule tasks that wait for others (see
    /// [`crate::domain::dependency`]): `after` has one entry per task. All
    /// or nothing, like `Schedule`; with a request id, answered once like
    /// `ScheduleRequest`.
    ScheduleGraph {
        request_id: Option<RequestId>,
        tasks: Vec<NewTask>,
        after: Vec<After>,
        auto_register: bool,
    },
    /// Redrive dead tasks, and re-arm the dependents their failure
    /// cancelled.
    RedriveWithDependents {
        target: Target,
    },
    /// Run these slots of a schedule (an operator's backfill), each under
    /// its slot key, ignoring the overlap policy and the last slot.
    BackfillSchedule {
        name: String,
        slots: Vec<Slot>,
    },
    /// Create a grant (see [`crate::domain::auth`]); its `created_ms` is
    /// this entry's time. An existing id is refused, unless the grant is
    /// the same (a retry), which answers `created: false`.
    PutGrant {
        grant: Grant,
    },
    RevokeGrant {
        id: String,
    },
    /// Turn enforcement of grants on or off. On is refused unless an
    /// unexpired admin grant for every callback exists, so that nobody is
    /// locked out.
    SetAuth {
        enabled: bool,
    },
    /// Skip a schedule's due slots without firing them (the cluster
    /// refused new tasks when they came due, e.g. out of disk): move its
    /// last slot to `skip_to` (only forward), count `skipped`, and keep
    /// `note` (why) on the schedule until one of its slots fires again.
    SkipSchedule {
        name: String,
        skip_to: Slot,
        skipped: u64,
        note: String,
    },
    /// Name the cluster: the first one applied sets the cluster's ID for
    /// good, and any later one changes nothing (two leaders in a row may
    /// each propose one before either applied). Proposed by a leader that
    /// finds its cluster without an ID: a new cluster's first leader, or
    /// the first leader of a cluster made before cluster IDs. Stamped 0:
    /// it does not move replicated time.
    SetClusterId {
        cluster_id: super::ClusterId,
    },
    /// Raise the cluster's feature level (see [`super::feature`]) to
    /// `level`; a lower or equal one changes nothing. Proposed only once
    /// every member reported that it speaks `level`. Stamped 0.
    SetFeatureLevel {
        level: u32,
    },
    /// A `Schedule`, `ScheduleRequest`, `ScheduleGraph` or `PutSchedule`
    /// with W3C trace contexts (see [`super::trace`]): applied as
    /// `operation` is, then each task it created keeps the context at its
    /// position in `traces` (one per task; a schedule's is the first).
    /// Feature level 3; the proposer falls back to `operation` alone on a
    /// cluster below it. A separate entry, so that the encoding of the
    /// others does not change.
    Traced {
        operation: Box<Operation>,
        traces: Vec<Option<super::trace::TraceContext>>,
    },
}

impl Operation {
    /// This operation with its trace contexts, when any is set (a
    /// [`Operation::Traced`]), else as it is.
    pub fn traced(self, traces: Vec<Option<super::trace::TraceContext>>) -> Operation {
        if traces.iter().any(Option::is_some) {
            Operation::Traced { operation: Box::new(self), traces }
        } else {
            self
        }
    }

    /// Roughly how much work applying this is: the number of tasks or
    /// records it touches (a redrive or purge by callback counts as many).
    pub fn weight(&self) -> usize {
        match self {
            Operation::Schedule { tasks, .. }
            | Operation::ScheduleRequest { tasks, .. }
            | Operation::ScheduleGraph { tasks, .. } => tasks.len(),
            Operation::Assign { assignments } => assignments.len(),
            Operation::Complete { completions } => completions.len(),
            Operation::Expire { leases } | Operation::Release { leases } => leases.len(),
            Operation::Import { records } => records.len().max(1_000),
            Operation::Redrive { target: Target::Callback(_) }
            | Operation::RedriveWithDependents { .. }
            | Operation::Purge { target: Target::Callback(_) }
            | Operation::SetGate { .. } => 1_000,
            Operation::Collect { task_ids, request_ids } => task_ids.len() + request_ids.len(),
            Operation::FireSchedule { slots, .. } | Operation::BackfillSchedule { slots, .. } => slots.len().max(1),
            Operation::Traced { operation, .. } => operation.weight(),
            _ => 1,
        }
    }
}

/// A client's name for one request, the same in all its retries: 16 random
/// bytes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub [u8; 16]);

/// How long (replicated time) a request id is remembered: far longer than
/// any client retries.
pub const REQUEST_ID_WINDOW_MS: u64 = 24 * 3_600_000;

/// What the state machine remembers of a request id: when it was first
/// applied and what it answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub at_ms: u64,
    pub outcomes: Vec<ScheduleOutcome>,
}

/// Which dead tasks a DLQ operation touches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Task(u64),
    Callback(String),
}

/// A validated task to create. Times are absolute: the proposer resolved any
/// delay against its stamp.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    pub callback: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub priority: u8,
    pub run_at_ms: u64,
    pub idempotency_key: Option<String>,
    pub collection: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub task_id: u64,
    pub worker: String,
    /// The task's attempt count when the leader picked it (CAS).
    pub attempts_seen: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub task_id: u64,
    pub fencing_token: u64,
    pub outcome: Outcome,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success {
        #[serde(with = "serde_bytes")]
        result: Vec<u8>,
    },
    /// Retriable failure; `retry_after_ms` is a floor for the backoff.
    Retry {
        error: String,
        retry_after_ms: Option<u64>,
    },
    Fatal {
        error: String,
    },
    /// The handler stopped because the task was cancelled.
    Cancelled,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub task_id: u64,
    pub fencing_token: u64,
    pub reason: String,
}

/// Why a command (or one item of it) was not applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotFound(String),
    InvalidArgument(String),
    /// The task is not in a state the command applies to (a stale token, a
    /// task already finished...).
    FailedPrecondition(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::NotFound(m) | Rejection::InvalidArgument(m) | Rejection::FailedPrecondition(m) => f.write_str(m),
        }
    }
}

/// The state machine's reply to one entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub enum CommandResponse {
    /// Blank and membership entries.
    #[default]
    None,
    /// One outcome per scheduled task, in request order.
    Scheduled(Vec<ScheduleOutcome>),
    CallbackRegistered {
        created: bool,
    },
    /// One result per assignment, in order.
    Assigned(Vec<Result<Leased, Rejection>>),
    /// One result per completion or expiry, in order: the task's new state.
    Transitioned(Vec<Result<TaskState, Rejection>>),
    /// The task's state after the cancel request; `running` if its worker
    /// still has to stop it.
    CancelRequested {
        state: TaskState,
    },
    /// How many dead tasks were redriven or purged.
    Count(u64),
    /// The command was not applied (it changes nothing). This is a business
    /// outcome, never a storage failure.
    Rejected(Rejection),
    /// A repeated request id: the first answer, again; nothing was created.
    Replayed(Vec<ScheduleOutcome>),
    /// A gate was set: how many pending tasks it cancelled and how many
    /// running ones were asked to stop.
    GateSet {
        cancelled: u64,
        cancel_requested: u64,
    },
    /// A gate was removed (`existed`: there was one to remove).
    GateOpened {
        existed: bool,
    },
    /// A schedule was created (or updated).
    ScheduleSaved {
        created: bool,
    },
    /// The tasks a fire or trigger created, and the slots it skipped.
    Fired {
        task_ids: Vec<u64>,
        skipped: u64,
    },
    GrantSaved {
        created: bool,
    },
    GrantRevoked {
        existed: bool,
    },
    AuthSet {
        changed: bool,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleOutcome {
    pub task_id: u64,
    /// False when an existing task with the same idempotency key was returned.
    pub created: bool,
    /// The task's state when this entry applied: `Cancelled` for a task
    /// scheduled into a dropping gate.
    pub state: TaskState,
}

/// A lease granted by an `Assign`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leased {
    pub task_id: u64,
    pub fencing_token: u64,
    /// 1 for the first run.
    pub attempt: u32,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self.stamped_at_ms;
        match &self.operation {
            Operation::Schedule { tasks, .. } => write!(f, "schedule {} task(s) @{at}", tasks.len()),
            Operation::RegisterCallback(c) => write!(f, "register callback {} @{at}", c.name),
            Operation::Assign { assignments } => write!(f, "assign {} task(s) @{at}", assignments.len()),
            Operation::Complete { completions } => write!(f, "complete {} task(s) @{at}", completions.len()),
            Operation::Expire { leases } => write!(f, "expire {} lease(s) @{at}", leases.len()),
            Operation::Cancel { task_id } => write!(f, "cancel task {task_id} @{at}"),
            Operation::Redrive { target } => write!(f, "redrive {target:?} @{at}"),
            Operation::Purge { target } => write!(f, "purge {target:?} @{at}"),
            Operation::RetireNode { node_id } => write!(f, "retire node {node_id} @{at}"),
            Operation::Import { records } => write!(f, "import {} record(s) @{at}", records.len()),
            Operation::ScheduleRequest { tasks, .. } => {
                write!(f, "schedule {} task(s) (request id) @{at}", tasks.len())
            }
            Operation::Release { leases } => write!(f, "release {} undelivered assignment(s) @{at}", leases.len()),
            Operation::SetGate { gate, .. } => write!(f, "{} gate {} @{at}", gate.mode.name(), gate.target),
            Operation::OpenGate { target, .. } => write!(f, "open gate {target} @{at}"),
            Operation::Collect { task_ids, request_ids } => {
                write!(f, "collect {} task(s), {} request id(s) @{at}", task_ids.len(), request_ids.len())
            }
            Operation::PutSchedule { schedule, create } => {
                write!(f, "{} schedule {} @{at}", if *create { "create" } else { "update" }, schedule.name)
            }
            Operation::DeleteSchedule { name } => write!(f, "delete schedule {name} @{at}"),
            Operation::PauseSchedule { name, paused, .. } => {
                write!(f, "{} schedule {name} @{at}", if *paused { "pause" } else { "resume" })
            }
            Operation::FireSchedule { name, slots, .. } => write!(f, "fire {} slot(s) of {name} @{at}", slots.len()),
            Operation::TriggerSchedule { name } => write!(f, "trigger schedule {name} @{at}"),
            Operation::SkipSchedule { name, skipped, .. } => write!(f, "skip {skipped} slot(s) of {name} @{at}"),
            Operation::ScheduleGraph { tasks, .. } => {
                write!(f, "schedule {} task(s) with dependencies @{at}", tasks.len())
            }
            Operation::RedriveWithDependents { target } => write!(f, "redrive {target:?} with dependents @{at}"),
            Operation::BackfillSchedule { name, slots } => {
                write!(f, "backfill {} slot(s) of {name} @{at}", slots.len())
            }
            Operation::PutGrant { grant } => write!(f, "grant {} to {} @{at}", grant.role, grant.id),
            Operation::RevokeGrant { id } => write!(f, "revoke grant {id} @{at}"),
            Operation::SetAuth { enabled } => write!(f, "set auth enabled={enabled} @{at}"),
            Operation::SetClusterId { cluster_id } => write!(f, "set cluster ID {cluster_id} @{at}"),
            Operation::SetFeatureLevel { level } => write!(f, "set feature level {level} @{at}"),
            Operation::Traced { operation, traces } => {
                let inner = Command { stamped_at_ms: self.stamped_at_ms, operation: (**operation).clone() };
                write!(f, "{inner} with {} trace context(s)", traces.iter().flatten().count())
            }
        }
    }
}

impl std::fmt::Display for CommandResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandResponse::None => write!(f, "none"),
            CommandResponse::Scheduled(o) => write!(f, "scheduled {} task(s)", o.len()),
            CommandResponse::CallbackRegistered { created } => write!(f, "callback registered (new: {created})"),
            CommandResponse::Assigned(a) => write!(f, "assigned {} task(s)", a.iter().filter(|r| r.is_ok()).count()),
            CommandResponse::Transitioned(t) => write!(f, "{} transition(s)", t.iter().filter(|r| r.is_ok()).count()),
            CommandResponse::CancelRequested { state } => write!(f, "cancel requested, now {state:?}"),
            CommandResponse::Count(n) => write!(f, "{n} task(s)"),
            CommandResponse::Rejected(r) => write!(f, "rejected: {r}"),
            CommandResponse::Replayed(o) => write!(f, "replayed {} task(s)", o.len()),
            CommandResponse::GateSet { cancelled, cancel_requested } => {
                write!(f, "gate set: {cancelled} cancelled, {cancel_requested} asked to stop")
            }
            CommandResponse::GateOpened { existed } => write!(f, "gate opened (existed: {existed})"),
            CommandResponse::ScheduleSaved { created } => write!(f, "schedule saved (new: {created})"),
            CommandResponse::Fired { task_ids, skipped } => {
                write!(f, "fired {} task(s), skipped {skipped}", task_ids.len())
            }
            CommandResponse::GrantSaved { created } => write!(f, "grant saved (new: {created})"),
            CommandResponse::GrantRevoked { existed } => write!(f, "grant revoked (existed: {existed})"),
            CommandResponse::AuthSet { changed } => write!(f, "auth set (changed: {changed})"),
        }
    }
}
