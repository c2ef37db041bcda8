//! Apply of new tasks: `Schedule` (all or nothing, deduplicated on
//! idempotency keys, cancelled on arrival by a dropping gate) and
//! `ScheduleRequest` (a client's request id answered once).

use super::apply::{Applier, ApplyBatch};
use super::{keys, StoreError};
use crate::domain::command::*;
use crate::domain::dependency::After;
use crate::domain::{CallbackConfig, Task, TaskState};

/// The state a new task starts in (before any dropping gate).
pub(super) enum Start {
    Now,
    /// Its parents have not all ended.
    Waiting,
    /// A parent already failed, with this reason.
    Cancelled(String),
}

impl Applier {
    pub(super) fn schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        tasks: &[NewTask],
        after: &[After],
        auto_register: bool,
    ) -> Result<CommandResponse, StoreError> {
        // All or nothing: check every parent and callback first.
        if let Err(rejection) = self.check_parents(b, tasks.len(), after)? {
            return Ok(CommandResponse::Rejected(rejection));
        }
        for new in tasks {
            if !self.callbacks.contains_key(&new.callback) {
                if !auto_register {
                    return Ok(CommandResponse::Rejected(Rejection::NotFound(format!(
                        "callback {:?} is not registered: run `drover callback register {}` first",
                        new.callback, new.callback
                    ))));
                }
                self.register(b, &CallbackConfig::with_defaults(new.callback.clone()))?;
            }
        }
        let mut outcomes: Vec<ScheduleOutcome> = Vec::with_capacity(tasks.len());
        for (i, new) in tasks.iter().enumerate() {
            let outcome = match after.get(i).filter(|a| !a.parents.is_empty()) {
                None => self.create_task(b, index, new, None, Start::Now)?,
                Some(a) => self.create_child(b, index, new, a, &outcomes)?,
            };
            outcomes.push(outcome);
        }
        Ok(CommandResponse::Scheduled(outcomes))
    }

    /// A schedule under a request id: the first time, schedule and remember
    /// the answer; a repeat within the window gets that answer again.
    pub(super) fn schedule_request(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        request_id: Option<RequestId>,
        tasks: &[NewTask],
        after: &[After],
        auto_register: bool,
    ) -> Result<CommandResponse, StoreError> {
        let Some(request_id) = request_id else { return self.schedule(b, index, tasks, after, auto_register) };
        if let Some(seen) = b.request(&request_id)? {
            if self.now_ms.saturating_sub(seen.at_ms) <= REQUEST_ID_WINDOW_MS {
                return Ok(CommandResponse::Replayed(seen.outcomes));
            }
        }
        let response = self.schedule(b, index, tasks, after, auto_register)?;
        // Only a schedule that happened is remembered: a rejected request
        // changed nothing, and its retry is judged afresh.
        if let CommandResponse::Scheduled(outcomes) = &response {
            if let Some(earlier) = b.request(&request_id)? {
                b.delete(&keys::request_by_time(earlier.at_ms, &request_id.0))?;
            }
            b.put(&keys::request_by_time(self.now_ms, &request_id.0), &[])?;
            b.requests.insert(request_id, Some(RequestRecord { at_ms: self.now_ms, outcomes: outcomes.clone() }));
        }
        Ok(response)
    }

    /// Create one task (or find the one its idempotency key names), in the
    /// state `start` says. A dropping gate cancels it on arrival. `origin`
    /// names the periodic schedule that fires it.
    pub(super) fn create_task(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        new: &NewTask,
        origin: Option<&str>,
        start: Start,
    ) -> Result<ScheduleOutcome, StoreError> {
        let idem_key = new.idempotency_key.as_deref().map(|k| keys::idempotency(&new.callback, k));
        if let Some(key) = &idem_key {
            if let Some(task_id) = b.idempotent_task(key)? {
                let state = b.task(task_id)?.map_or(TaskState::Scheduled, |t| t.display_state(self.now_ms));
                return Ok(ScheduleOutcome { task_id, created: false, state });
            }
        }
        let id = self.next_task_id;
        self.next_task_id += 1;
        self.task_count += 1;
        let mut task = Task {
            id,
            callback: new.callback.clone(),
            priority: new.priority,
            state: TaskState::Scheduled,
            run_at_ms: new.run_at_ms,
            created_at_ms: self.now_ms,
            attempts: 0,
            payload_size: new.payload.len() as u64,
            idempotency_key: new.idempotency_key.clone(),
            created_index: index,
            fencing_token: 0,
            worker: None,
            last_error: None,
            result_size: None,
            cancel_requested: false,
            history: Vec::new(),
            collection: new.collection.clone(),
            schedule: origin.map(String::from),
        };
        task.transition(TaskState::Scheduled, self.now_ms);
        if let Some(gate) = self.dropping_gate(&task) {
            task.last_error = Some(gate.drop_reason());
            task.transition(TaskState::Cancelled, self.now_ms);
        } else {
            match start {
                Start::Now => {}
                Start::Waiting => task.transition(TaskState::Waiting, self.now_ms),
                Start::Cancelled(reason) => {
                    task.last_error = Some(reason);
                    task.transition(TaskState::Cancelled, self.now_ms);
                }
            }
        }
        let state = task.display_state(self.now_ms);
        b.put(&keys::payload(id), &new.payload)?;
        b.save(None, task)?;
        if let Some(key) = idem_key {
            // Written once, with the batch's other keys, by `finish`.
            b.set_idempotency(key, Some(id));
        }
        Ok(ScheduleOutcome { task_id: id, created: true, state })
    }
}
