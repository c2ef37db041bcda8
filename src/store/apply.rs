//! The deterministic apply logic: commands in, one `WriteBatch` and index
//! changes out. It never reads a clock (only the command's stamp) and
//! never fails on business grounds: a command that does not apply says why
//! in its reply and changes nothing.

use std::collections::{BTreeMap, HashMap};

use rocksdb::{WriteBatch, DB};

use super::sorted_writes::SortedWrites;

use super::index::{running_of, IndexOp, QueueSlot};
use super::{cf, get_u64, keys, read_record, StoreError};
use crate::domain::callback::{splitmix64, CallbackConfig};
use crate::domain::command::*;
use crate::domain::{Gate, GateTarget, Task, TaskState};
use crate::encoding;

/// Largest result kept per task, bytes.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Longest error message kept per task, bytes.
pub const MAX_ERROR_BYTES: usize = 4096;

/// The apply-side state of the state machine, rebuilt from disk on start
/// ([`Applier::load`]) and written back with each batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applier {
    /// Replicated clock: max of every applied stamp, Unix ms.
    pub now_ms: u64,
    pub next_task_id: u64,
    pub task_count: u64,
    /// Every callback's settings. Apply owns this copy, so that it never
    /// reads the scheduler's live index (which changes only after a batch
    /// is written) and never holds its lock.
    pub callbacks: BTreeMap<String, CallbackConfig>,
    /// Every gate, for the same reason.
    pub gates: BTreeMap<GateTarget, Gate>,
    /// Rows retention has deleted so far.
    pub collected: u64,
    /// Every periodic schedule, for the same reason as callbacks.
    pub schedules: BTreeMap<String, crate::domain::schedule::Schedule>,
    /// Every grant, by id, for the same reason.
    pub grants: BTreeMap<String, crate::domain::auth::Grant>,
    /// Whether grants are enforced.
    pub auth_enabled: bool,
    /// The cluster's ID, once the first `SetClusterId` is applied.
    pub cluster_id: Option<crate::domain::ClusterId>,
    /// The cluster's feature level (1 until a `SetFeatureLevel`).
    pub feature_level: u32,
}

/// Pending writes of one applied batch.
///
/// **Every read made during apply goes through this batch**, so that a
/// command sees exactly what the commands before it wrote, whether they were
/// in this batch or an earlier one: otherwise replicas that cut the log into
/// different batches would diverge. The only reads of RocksDB are in
/// [`ApplyBatch::task`], [`ApplyBatch::idempotent_task`] and
/// [`ApplyBatch::dead_ids`], [`ApplyBatch::ids_under`] and [`ApplyBatch::request`], and each consults
/// the overlay of this batch first. Keys that apply never reads back (payloads, results, queue and
/// by-state index entries, retired ids) go straight into the rows to write.
pub struct ApplyBatch<'a> {
    db: &'a DB,
    /// Rows to write, in key order (see [`super::sorted_writes`]).
    rows: SortedWrites,
    /// Task rows changed in this batch (`None`: deleted), written at the end.
    pub(super) tasks: HashMap<u64, Option<Task>>,
    /// Idempotency keys changed in this batch (`None`: deleted), written at
    /// the end.
    idempotency: HashMap<Vec<u8>, Option<u64>>,
    /// Request ids recorded (`Some`) or forgotten (`None`) in this batch,
    /// written at the end.
    pub(super) requests: HashMap<RequestId, Option<RequestRecord>>,
    /// Index changes, applied after the write succeeds.
    pub index_ops: Vec<IndexOp>,
    /// Raw records were imported: rebuild the live index from disk.
    pub reload_index: bool,
    /// Tasks of periodic schedules that reached a final state in the
    /// current command: (schedule, task id, state).
    pub(super) ended_runs: std::collections::VecDeque<(String, u64, TaskState)>,
    /// Tasks that reached a final state in the current command, whose
    /// children (if any) count it in the same entry.
    pub(super) ended_parents: std::collections::VecDeque<(u64, TaskState)>,
    /// Dependency rows changed in this batch (see [`super::dependency`]).
    pub(super) deps: super::dependency::Overlay,
}

impl<'a> ApplyBatch<'a> {
    pub fn new(db: &'a DB) -> Self {
        ApplyBatch {
            db,
            rows: SortedWrites::default(),
            tasks: HashMap::new(),
            idempotency: HashMap::new(),
            requests: HashMap::new(),
            index_ops: Vec::new(),
            reload_index: false,
            ended_runs: std::collections::VecDeque::new(),
            ended_parents: std::collections::VecDeque::new(),
            deps: super::dependency::Overlay::default(),
        }
    }

    pub(super) fn db(&self) -> &DB {
        self.db
    }

    /// Write a key that apply never reads back.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.rows.put(key, value);
        Ok(())
    }

    /// Delete a key that apply never reads back.
    pub(super) fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.rows.delete(key);
        Ok(())
    }

    /// The task an idempotency key names, as of the commands applied so far.
    pub(super) fn idempotent_task(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        if let Some(id) = self.idempotency.get(key) {
            return Ok(*id);
        }
        read_record(self.db, key)
    }

    /// What a request id answered, as of the commands applied so far.
    pub(super) fn request(&self, id: &RequestId) -> Result<Option<RequestRecord>, StoreError> {
        if let Some(r) = self.requests.get(id) {
            return Ok(r.clone());
        }
        read_record(self.db, &keys::request(&id.0))
    }

    pub(super) fn set_idempotency(&mut self, key: Vec<u8>, id: Option<u64>) {
        self.idempotency.insert(key, id);
    }

    /// A task row, as of the commands applied so far.
    pub(super) fn task(&self, id: u64) -> Result<Option<Task>, StoreError> {
        if let Some(t) = self.tasks.get(&id) {
            return Ok(t.clone());
        }
        read_record(self.db, &keys::task(id))
    }

    /// Ids of tasks that may be dead, in id order: those in the on-disk
    /// by-state index plus those this batch changed. Callers check each
    /// with [`ApplyBatch::task`], which sees this batch's changes.
    fn dead_ids(&self) -> Result<Vec<u64>, StoreError> {
        self.ids_in_state(TaskState::Dead)
    }

    /// Ids of tasks that may be in `state` (one with a by-state index), in
    /// id order: the on-disk index plus this batch's changes. Callers check
    /// each with [`ApplyBatch::task`].
    pub(super) fn ids_in_state(&self, state: TaskState) -> Result<Vec<u64>, StoreError> {
        let prefix = keys::by_state_prefix(state.code());
        let mut ids = self.ids_under(&prefix, keys::by_state_id)?;
        ids.extend(self.tasks.iter().filter(|(_, t)| t.as_ref().is_some_and(|t| t.state == state)).map(|(id, _)| *id));
        Ok(ids.into_iter().collect())
    }

    /// Task ids parsed out of the on-disk keys under `prefix`.
    pub(super) fn ids_under(
        &self,
        prefix: &[u8],
        id_of: impl Fn(&[u8]) -> Option<u64>,
    ) -> Result<std::collections::BTreeSet<u64>, StoreError> {
        let sm = cf(self.db, keys::CF_SM)?;
        let mut ids = std::collections::BTreeSet::new();
        for item in self.db.prefix_iterator_cf(sm, prefix) {
            let (k, _) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if let Some(id) = id_of(&k) {
                ids.insert(id);
            }
        }
        Ok(ids)
    }

    /// Record a task's new row, keeping the by-state and pending indexes in
    /// step with the change from `before`.
    pub(super) fn save(&mut self, before: Option<&Task>, after: Task) -> Result<(), StoreError> {
        let old_state = before.map(|b| b.state);
        let old_pending = before.filter(|b| b.state.is_pending()).map(QueueSlot::of);
        if old_state != Some(after.state) {
            if let Some(s) = old_state.filter(|s| s.has_state_index()) {
                self.delete(&keys::by_state(s.code(), after.id))?;
            }
            if after.state.has_state_index() {
                self.put(&keys::by_state(after.state.code(), after.id), &[])?;
            }
        }
        let old_finished = before.and_then(finished_entry);
        let new_finished = finished_entry(&after);
        if old_finished != new_finished {
            if let Some((key, callback, state)) = old_finished {
                self.delete(&key)?;
                self.index_ops.push(IndexOp::RemoveFinished { callback, state });
            }
            if let Some((key, callback, state)) = new_finished {
                self.put(&key, &[])?;
                self.index_ops.push(IndexOp::AddFinished { callback, state });
            }
        }
        let new_pending = after.state.is_pending().then(|| QueueSlot::of(&after));
        if old_pending != new_pending {
            if let Some(slot) = old_pending {
                self.delete(&slot.key())?;
                self.index_ops.push(IndexOp::RemovePending(slot));
            }
            if let Some(slot) = new_pending {
                self.put(&slot.key(), &[])?;
                self.index_ops.push(IndexOp::AddPending(slot));
            }
        }
        if after.state.is_terminal() && !old_state.is_some_and(TaskState::is_terminal) {
            if let Some(name) = &after.schedule {
                self.ended_runs.push_back((name.clone(), after.id, after.state));
            }
            self.ended_parents.push_back((after.id, after.state));
        }
        record_metrics(before, &after);
        let was_running = old_state == Some(TaskState::Running);
        if after.state == TaskState::Running {
            self.index_ops.push(IndexOp::SetRunning { id: after.id, task: running_of(&after) });
        } else if was_running {
            self.index_ops.push(IndexOp::RemoveRunning { id: after.id });
        }
        self.tasks.insert(after.id, Some(after));
        Ok(())
    }

    /// Delete a task with everything that refers to it, its idempotency
    /// key included (the key may then name a new task).
    pub(super) fn remove(&mut self, t: &Task) -> Result<(), StoreError> {
        self.delete(&keys::payload(t.id))?;
        self.delete(&keys::result(t.id))?;
        self.delete(&keys::trace(t.id))?;
        if t.state.has_state_index() {
            self.delete(&keys::by_state(t.state.code(), t.id))?;
        }
        if let Some((key, callback, state)) = finished_entry(t) {
            self.delete(&key)?;
            self.index_ops.push(IndexOp::RemoveFinished { callback, state });
        }
        if t.state.is_pending() {
            let slot = QueueSlot::of(t);
            self.delete(&slot.key())?;
            self.index_ops.push(IndexOp::RemovePending(slot));
        }
        if t.state == TaskState::Running {
            self.index_ops.push(IndexOp::RemoveRunning { id: t.id });
        }
        if let Some(key) = &t.idempotency_key {
            let key = keys::idempotency(&t.callback, key);
            if self.idempotent_task(&key)? == Some(t.id) {
                self.set_idempotency(key, None);
            }
        }
        self.forget_dependencies(t.id)?;
        self.tasks.insert(t.id, None);
        Ok(())
    }

    /// The write batch with every changed row, ready to be written.
    pub fn finish(self) -> Result<(WriteBatch, Vec<IndexOp>, bool), StoreError> {
        let sm = cf(self.db, keys::CF_SM)?;
        let mut rows = self.rows;
        for (id, task) in self.tasks {
            rows.set(keys::task(id), task.map(|t| encoding::encode(&t)));
        }
        for (key, id) in self.idempotency {
            rows.set(key, id.map(|id| encoding::encode(&id)));
        }
        for (id, record) in self.requests {
            rows.set(keys::request(&id.0), record.map(|r| encoding::encode(&r)));
        }
        self.deps.write(&mut rows);
        Ok((rows.into_write_batch(sm), self.index_ops, self.reload_index))
    }
}

/// Count a task's change (see [`crate::metrics`]): creation, state,
/// schedule-to-start at its first start, run time at the end of a run.
/// Side output only: nothing here feeds back into the state.
fn record_metrics(before: Option<&Task>, after: &Task) {
    use crate::metrics;
    let old_state = before.map(|b| b.state);
    if old_state == Some(after.state) {
        return;
    }
    if before.is_none() {
        metrics::task_scheduled(&after.callback);
    }
    metrics::task_transition(&after.callback, after.state.name());
    let now = after.history.last().map_or(after.created_at_ms, |h| h.at_ms);
    if after.state == TaskState::Running && after.attempts == 1 {
        metrics::first_start(&after.callback, after.priority, now.saturating_sub(after.run_at_ms));
    }
    if old_state == Some(TaskState::Running) {
        let started = before.and_then(|b| b.history.iter().rev().find(|h| h.state == TaskState::Running));
        if let Some(started) = started {
            metrics::run_ended(&after.callback, now.saturating_sub(started.at_ms));
        }
    }
}

/// The finished-index key of a finished task, with its callback and state.
fn finished_entry(t: &Task) -> Option<(Vec<u8>, String, TaskState)> {
    let at = t.finished_at_ms()?;
    Some((keys::finished(&t.callback, t.state.code(), at, t.id), t.callback.clone(), t.state))
}

/// Every record under `prefix`, from disk.
fn load_records<T: encoding::Record>(db: &DB, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    let sm = cf(db, keys::CF_SM)?;
    let mut out = Vec::new();
    for item in db.prefix_iterator_cf(sm, prefix) {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        out.push(encoding::decode(&v)?);
    }
    Ok(out)
}

fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Whether a task that ended in `state` is what a completion with
/// `outcome` under the same token would have produced.
fn repeats(outcome: &Outcome, state: TaskState) -> bool {
    match outcome {
        _ if state == TaskState::Cancelled => true,
        Outcome::Success { .. } => state == TaskState::Succeeded,
        Outcome::Fatal { .. } => state == TaskState::Failed,
        Outcome::Retry { .. } | Outcome::Cancelled => matches!(state, TaskState::RetryWait | TaskState::Dead),
    }
}

fn not_found(id: u64) -> Rejection {
    Rejection::NotFound(format!("task {id} does not exist"))
}

impl Applier {
    /// Load the counters persisted by the last applied batch.
    pub fn load(db: &DB) -> Result<Self, StoreError> {
        Ok(Applier {
            now_ms: get_u64(db, keys::SM_NOW)?,
            next_task_id: get_u64(db, keys::SM_NEXT_TASK_ID)?.max(1),
            task_count: get_u64(db, keys::SM_TASK_COUNT)?,
            callbacks: load_records::<CallbackConfig>(db, &keys::CALLBACK_PREFIX)?
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect(),
            gates: load_records::<Gate>(db, &keys::GATE_PREFIX)?.into_iter().map(|g| (g.target.clone(), g)).collect(),
            collected: get_u64(db, keys::SM_COLLECTED)?,
            schedules: load_records::<crate::domain::schedule::Schedule>(db, &keys::SCHEDULE_PREFIX)?
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            grants: load_records::<crate::domain::auth::Grant>(db, &keys::GRANT_PREFIX)?
                .into_iter()
                .map(|g| (g.id.clone(), g))
                .collect(),
            auth_enabled: get_u64(db, keys::SM_AUTH_ENABLED)? == 1,
            cluster_id: read_record(db, keys::SM_CLUSTER_ID)?,
            feature_level: read_record::<u64>(db, keys::SM_FEATURE_LEVEL)?
                .map_or(crate::domain::feature::LEVEL_0_1_0, |l| u32::try_from(l).unwrap_or(u32::MAX)),
        })
    }

    /// Apply one command at log index `index`. Deterministic: the result
    /// depends only on the store's contents and the command.
    pub fn apply(&mut self, b: &mut ApplyBatch<'_>, index: u64, cmd: &Command) -> Result<CommandResponse, StoreError> {
        self.now_ms = self.now_ms.max(cmd.stamped_at_ms);
        let response = self.apply_operation(b, index, &cmd.operation)?;
        // Tasks that ended update their children and their periodic
        // schedule in this same entry (either may end more tasks).
        while !b.ended_parents.is_empty() || !b.ended_runs.is_empty() {
            self.settle_dependents(b)?;
            self.settle_schedules(b, index)?;
        }
        Ok(response)
    }

    pub(super) fn apply_operation(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        operation: &Operation,
    ) -> Result<CommandResponse, StoreError> {
        match operation {
            Operation::Schedule { tasks, auto_register } => self.schedule(b, index, tasks, &[], *auto_register),
            Operation::RegisterCallback(config) => self.register(b, config),
            Operation::Assign { assignments } => self.assign(b, index, assignments),
            Operation::Complete { completions } => {
                let results = completions.iter().map(|c| self.complete(b, c)).collect::<Result<_, _>>()?;
                Ok(CommandResponse::Transitioned(results))
            }
            Operation::Expire { leases } => {
                let results = leases.iter().map(|e| self.expire(b, e)).collect::<Result<_, _>>()?;
                Ok(CommandResponse::Transitioned(results))
            }
            Operation::Cancel { task_id } => self.cancel(b, *task_id),
            Operation::Redrive { target } => self.redrive(b, target, false),
            Operation::RedriveWithDependents { target } => self.redrive(b, target, true),
            Operation::BackfillSchedule { name, slots } => self.backfill_schedule(b, index, name, slots),
            Operation::Purge { target } => self.purge(b, target),
            Operation::RetireNode { node_id } => {
                b.put(&keys::retired(*node_id), &[])?;
                b.index_ops.push(IndexOp::Retire { node_id: *node_id });
                Ok(CommandResponse::None)
            }
            Operation::Import { records } => self.import(b, records),
            Operation::Release { leases } => {
                let results = leases.iter().map(|e| self.release(b, e)).collect::<Result<_, _>>()?;
                Ok(CommandResponse::Transitioned(results))
            }
            Operation::ScheduleRequest { request_id, tasks, auto_register } => {
                self.schedule_request(b, index, Some(*request_id), tasks, &[], *auto_register)
            }
            Operation::ScheduleGraph { request_id, tasks, after, auto_register } => {
                self.schedule_request(b, index, *request_id, tasks, after, *auto_register)
            }
            Operation::SetGate { gate, cancel_running } => self.set_gate(b, index, gate, *cancel_running),
            Operation::OpenGate { target, if_expired } => self.open_gate(b, target, *if_expired),
            Operation::Collect { task_ids, request_ids } => self.collect(b, task_ids, request_ids),
            Operation::PutSchedule { schedule, create } => self.put_schedule(b, schedule, *create),
            Operation::DeleteSchedule { name } => self.delete_schedule(b, name),
            Operation::PauseSchedule { name, paused, note, catch_up } => {
                self.pause_schedule(b, name, *paused, note, *catch_up)
            }
            Operation::FireSchedule { name, slots, skip_to, skipped } => {
                self.fire_schedule(b, index, name, slots, skip_to.as_ref(), *skipped)
            }
            Operation::TriggerSchedule { name } => self.trigger_schedule(b, index, name),
            Operation::PutGrant { grant } => self.put_grant(b, grant),
            Operation::RevokeGrant { id } => self.revoke_grant(b, id),
            Operation::SetAuth { enabled } => self.set_auth(b, *enabled),
            Operation::SkipSchedule { name, skip_to, skipped, note } => {
                self.skip_schedule(b, name, skip_to, *skipped, note)
            }
            // The first one applied names the cluster for good.
            Operation::SetClusterId { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(*cluster_id);
                    b.put(keys::SM_CLUSTER_ID, &encoding::encode(cluster_id))?;
                }
                Ok(CommandResponse::None)
            }
            Operation::Traced { operation, traces } => self.traced(b, index, operation, traces),
            // Only ever raised.
            Operation::SetFeatureLevel { level } => {
                if *level > self.feature_level {
                    self.feature_level = *level;
                    b.put(keys::SM_FEATURE_LEVEL, &encoding::encode(&u64::from(*level)))?;
                }
                Ok(CommandResponse::None)
            }
        }
    }

    fn import(
        &mut self,
        b: &mut ApplyBatch<'_>,
        records: &[(serde_bytes::ByteBuf, serde_bytes::ByteBuf)],
    ) -> Result<CommandResponse, StoreError> {
        for (k, v) in records {
            let (k, v) = (k.as_slice(), v.as_slice());
            // Index rows are rebuilt from the rows below (a backup of an
            // earlier build may lack some, or have them in an older form).
            // A restore makes a new cluster, which names itself: the
            // backup's cluster ID is not taken either.
            if keys::is_raft_state(k)
                || keys::is_derived(k)
                || k == keys::SM_LAYOUT
                || k == keys::SM_CLUSTER_ID
                || k == keys::SM_FEATURE_LEVEL
            {
                continue;
            }
            // The counters live in this applier and are written at the end
            // of the batch: take the backup's values.
            if k == keys::SM_NOW {
                self.now_ms = self.now_ms.max(encoding::decode(v)?);
            } else if k == keys::SM_NEXT_TASK_ID {
                self.next_task_id = self.next_task_id.max(encoding::decode(v)?);
            } else if k == keys::SM_TASK_COUNT {
                self.task_count = encoding::decode(v)?;
            } else if k == keys::SM_COLLECTED {
                self.collected = encoding::decode(v)?;
            } else if k == keys::SM_AUTH_ENABLED {
                self.auth_enabled = encoding::decode::<u64>(v)? == 1;
                b.put(k, v)?;
            } else if keys::is_grant(k) {
                let grant: crate::domain::auth::Grant = encoding::decode(v)?;
                self.grants.insert(grant.id.clone(), grant);
                b.put(k, v)?;
            } else if let Some(id) = keys::task_id(k) {
                // Rows, keys and callbacks go through the batch's overlay, so
                // that later commands in the same batch read them; saving a
                // row writes its index rows.
                let task: Task = encoding::decode(v)?;
                if task.id != id {
                    return Ok(CommandResponse::Rejected(Rejection::InvalidArgument(format!(
                        "imported row {id} holds task {}",
                        task.id
                    ))));
                }
                b.save(None, task)?;
            } else if b.import_dependency(k, v)? {
                // Taken into the batch's overlay.
            } else if keys::is_idempotency(k) {
                b.set_idempotency(k.to_vec(), Some(encoding::decode(v)?));
            } else if keys::is_request(k) {
                let mut id = [0u8; 16];
                id.copy_from_slice(&k[1..]);
                let record: RequestRecord = encoding::decode(v)?;
                b.put(&keys::request_by_time(record.at_ms, &id), &[])?;
                b.requests.insert(RequestId(id), Some(record));
            } else if keys::is_callback(k) {
                let config: CallbackConfig = encoding::decode(v)?;
                self.callbacks.insert(config.name.clone(), config);
                b.put(k, v)?;
            } else if keys::is_gate(k) {
                let gate: Gate = encoding::decode(v)?;
                self.gates.insert(gate.target.clone(), gate);
                b.put(k, v)?;
            } else if keys::is_schedule(k) {
                let s: crate::domain::schedule::Schedule = encoding::decode(v)?;
                self.schedules.insert(s.name.clone(), s);
                b.put(k, v)?;
            } else {
                b.put(k, v)?;
            }
        }
        b.reload_index = true;
        Ok(CommandResponse::Count(records.len() as u64))
    }

    pub(super) fn register(
        &mut self,
        b: &mut ApplyBatch<'_>,
        config: &CallbackConfig,
    ) -> Result<CommandResponse, StoreError> {
        if let Err(e) = config.validate() {
            return Ok(CommandResponse::Rejected(Rejection::InvalidArgument(e)));
        }
        let created = !self.callbacks.contains_key(&config.name);
        b.put(&keys::callback(&config.name), &encoding::encode(config))?;
        self.callbacks.insert(config.name.clone(), config.clone());
        b.index_ops.push(IndexOp::PutCallback(config.clone()));
        Ok(CommandResponse::CallbackRegistered { created })
    }

    fn assign(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        items: &[Assignment],
    ) -> Result<CommandResponse, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for a in items {
            let Some(before) = b.task(a.task_id)? else {
                out.push(Err(not_found(a.task_id)));
                continue;
            };
            if !before.state.is_pending() || before.attempts != a.attempts_seen || before.run_at_ms > self.now_ms {
                out.push(Err(Rejection::FailedPrecondition(format!(
                    "task {} is {} at attempt {}, not pending and due at attempt {}",
                    a.task_id,
                    before.state.name(),
                    before.attempts,
                    a.attempts_seen
                ))));
                continue;
            }
            // The gate as of this entry: an assignment planned before a
            // pause committed is refused here.
            if let Some(gate) = self.gate_for(&before) {
                out.push(Err(Rejection::FailedPrecondition(format!(
                    "task {} is held by the {} gate on {}",
                    a.task_id,
                    gate.mode.name(),
                    gate.target
                ))));
                continue;
            }
            let mut t = before.clone();
            t.attempts += 1;
            t.fencing_token = index;
            t.worker = Some(a.worker.clone());
            t.transition(TaskState::Running, self.now_ms);
            out.push(Ok(Leased { task_id: t.id, fencing_token: index, attempt: t.attempts }));
            b.save(Some(&before), t)?;
        }
        Ok(CommandResponse::Assigned(out))
    }

    /// Check that `id` is running under `token`; the fencing check.
    fn running_with_token(b: &ApplyBatch<'_>, id: u64, token: u64) -> Result<Result<Task, Rejection>, StoreError> {
        let Some(t) = b.task(id)? else { return Ok(Err(not_found(id))) };
        if t.state != TaskState::Running || t.fencing_token != token {
            return Ok(Err(Rejection::FailedPrecondition(format!(
                "stale fencing token {token} for task {id}: it is {} with token {}",
                t.state.name(),
                t.fencing_token
            ))));
        }
        Ok(Ok(t))
    }

    /// Move a failed attempt to retry-wait, or to dead when out of attempts.
    fn fail_retriable(&self, t: &mut Task, error: String, floor_ms: u64) {
        let config = self
            .callbacks
            .get(&t.callback)
            .cloned()
            .unwrap_or_else(|| CallbackConfig::with_defaults(t.callback.clone()));
        t.last_error = Some(clip(error, MAX_ERROR_BYTES));
        if t.attempts >= config.max_attempts {
            t.transition(TaskState::Dead, self.now_ms);
        } else {
            let seed = t.id ^ (u64::from(t.attempts) << 48) ^ t.fencing_token;
            let delay = config.backoff_ms(t.attempts, splitmix64(seed)).max(floor_ms);
            t.run_at_ms = self.now_ms.saturating_add(delay);
            t.transition(TaskState::RetryWait, self.now_ms);
        }
    }

    fn complete(&mut self, b: &mut ApplyBatch<'_>, c: &Completion) -> Result<Result<TaskState, Rejection>, StoreError> {
        let before = match Self::running_with_token(b, c.task_id, c.fencing_token)? {
            Ok(t) => t,
            Err(r) => {
                // A worker whose completion was applied but whose ack was
                // lost sends it again: the same outcome under the same token
                // is accepted, and changes nothing.
                if let Some(t) = b.task(c.task_id)?.filter(|t| t.fencing_token == c.fencing_token) {
                    if repeats(&c.outcome, t.state) {
                        return Ok(Ok(t.state));
                    }
                }
                return Ok(Err(r));
            }
        };
        let mut t = before.clone();
        match &c.outcome {
            _ if t.cancel_requested => t.transition(TaskState::Cancelled, self.now_ms),
            Outcome::Success { result } => {
                let result = &result[..result.len().min(MAX_RESULT_BYTES)];
                b.put(&keys::result(t.id), result)?;
                t.result_size = Some(result.len() as u64);
                t.transition(TaskState::Succeeded, self.now_ms);
            }
            Outcome::Retry { error, retry_after_ms } => {
                self.fail_retriable(&mut t, error.clone(), retry_after_ms.unwrap_or(0));
            }
            Outcome::Fatal { error } => {
                t.last_error = Some(clip(error.clone(), MAX_ERROR_BYTES));
                t.transition(TaskState::Failed, self.now_ms);
            }
            // A cancellation nobody asked for (the worker shut down): retry.
            Outcome::Cancelled => self.fail_retriable(&mut t, "the worker cancelled the run".into(), 0),
        }
        let state = t.state;
        b.save(Some(&before), t)?;
        Ok(Ok(state))
    }

    fn expire(&mut self, b: &mut ApplyBatch<'_>, e: &Expiry) -> Result<Result<TaskState, Rejection>, StoreError> {
        let before = match Self::running_with_token(b, e.task_id, e.fencing_token)? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        let mut t = before.clone();
        if t.cancel_requested {
            t.transition(TaskState::Cancelled, self.now_ms);
        } else {
            self.fail_retriable(&mut t, e.reason.clone(), 0);
        }
        let state = t.state;
        b.save(Some(&before), t)?;
        Ok(Ok(state))
    }

    /// An assignment that never reached its worker: back to pending, the
    /// attempt not counted.
    fn release(&mut self, b: &mut ApplyBatch<'_>, e: &Expiry) -> Result<Result<TaskState, Rejection>, StoreError> {
        let before = match Self::running_with_token(b, e.task_id, e.fencing_token)? {
            Ok(t) => t,
            Err(r) => return Ok(Err(r)),
        };
        let mut t = before.clone();
        if t.cancel_requested {
            t.transition(TaskState::Cancelled, self.now_ms);
        } else {
            t.attempts = t.attempts.saturating_sub(1);
            t.transition(TaskState::Scheduled, self.now_ms);
        }
        let state = t.state;
        b.save(Some(&before), t)?;
        Ok(Ok(state))
    }

    fn cancel(&mut self, b: &mut ApplyBatch<'_>, id: u64) -> Result<CommandResponse, StoreError> {
        let Some(before) = b.task(id)? else { return Ok(CommandResponse::Rejected(not_found(id))) };
        let mut t = before.clone();
        if t.state == TaskState::Cancelled {
            // Cancelling twice (a retried request) is not an error.
            return Ok(CommandResponse::CancelRequested { state: t.state });
        }
        if t.state.is_pending() || t.state == TaskState::Waiting {
            t.transition(TaskState::Cancelled, self.now_ms);
        } else if t.state == TaskState::Running {
            t.cancel_requested = true;
        } else {
            return Ok(CommandResponse::Rejected(Rejection::FailedPrecondition(format!(
                "task {id} already ended: {}",
                t.state.name()
            ))));
        }
        let state = t.state;
        b.save(Some(&before), t)?;
        Ok(CommandResponse::CancelRequested { state })
    }

    /// Dead tasks the target names, in id order, as of the commands
    /// applied so far (this batch included).
    fn dead_tasks(&self, b: &ApplyBatch<'_>, target: &Target) -> Result<Vec<Task>, StoreError> {
        match target {
            Target::Task(id) => Ok(b.task(*id)?.filter(|t| t.state == TaskState::Dead).into_iter().collect()),
            Target::Callback(name) => {
                let mut out = Vec::new();
                for id in b.dead_ids()? {
                    if let Some(t) = b.task(id)?.filter(|t| t.state == TaskState::Dead && &t.callback == name) {
                        out.push(t);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Redrive dead tasks. Their waiting children wait for them again;
    /// `with_dependents` also re-arms the children their failure cancelled.
    fn redrive(
        &mut self,
        b: &mut ApplyBatch<'_>,
        target: &Target,
        with_dependents: bool,
    ) -> Result<CommandResponse, StoreError> {
        let dead = self.dead_tasks(b, target)?;
        if dead.is_empty() {
            if let Target::Task(id) = target {
                return Ok(CommandResponse::Rejected(match b.task(*id)? {
                    None => not_found(*id),
                    Some(t) => Rejection::FailedPrecondition(format!("task {id} is {}, not dead", t.state.name())),
                }));
            }
        }
        let n = dead.len() as u64;
        for before in dead {
            let mut t = before.clone();
            t.attempts = 0;
            t.run_at_ms = self.now_ms;
            t.transition(TaskState::Scheduled, self.now_ms);
            b.save(Some(&before), t)?;
            self.reopen(b, before.id, with_dependents)?;
        }
        Ok(CommandResponse::Count(n))
    }

    fn purge(&mut self, b: &mut ApplyBatch<'_>, target: &Target) -> Result<CommandResponse, StoreError> {
        let dead = self.dead_tasks(b, target)?;
        let n = dead.len() as u64;
        for t in dead {
            b.remove(&t)?;
            self.task_count = self.task_count.saturating_sub(1);
        }
        Ok(CommandResponse::Count(n))
    }

    /// Write the counters into the batch, beside the rows they describe.
    pub fn write_counters(&self, batch: &mut ApplyBatch<'_>) -> Result<(), StoreError> {
        batch.put(keys::SM_NOW, &encoding::encode(&self.now_ms))?;
        batch.put(keys::SM_NEXT_TASK_ID, &encoding::encode(&self.next_task_id))?;
        batch.put(keys::SM_TASK_COUNT, &encoding::encode(&self.task_count))?;
        batch.put(keys::SM_COLLECTED, &encoding::encode(&self.collected))?;
        Ok(())
    }
}
