//! Apply of periodic schedules: create, update, pause, delete, and firing
//! a slot, which is a compare-and-set on the schedule's last slot, so a
//! slot fires once whatever the leaders propose. The overlap policy is
//! decided here too, and a run's final transition releases a buffered slot
//! (or pauses the schedule) in the same entry.

use super::apply::{Applier, ApplyBatch};
use super::index::IndexOp;
use super::{keys, StoreError};
use crate::domain::command::*;
use crate::domain::schedule::{Overlap, Run, Schedule, Slot, MAX_BUFFERED, MAX_RUNS};
use crate::domain::TaskState;
use crate::encoding;

fn not_found(name: &str) -> CommandResponse {
    CommandResponse::Rejected(Rejection::NotFound(format!("schedule {name:?} does not exist")))
}

/// Whether `slot` comes after `last`.
fn later(slot: &Slot, last: Option<&Slot>) -> bool {
    last.is_none_or(|l| slot.at_ms > l.at_ms)
}

impl Applier {
    fn save_schedule(&mut self, b: &mut ApplyBatch<'_>, s: Schedule) -> Result<(), StoreError> {
        let (fired, skipped) = self.schedules.get(&s.name).map_or((0, 0), |old| (old.fired, old.skipped));
        crate::metrics::schedule_fired(&s.name, s.fired.saturating_sub(fired), s.skipped.saturating_sub(skipped));
        b.put(&keys::schedule(&s.name), &encoding::encode(&s))?;
        b.index_ops.push(IndexOp::PutSchedule(Box::new(s.clone())));
        self.schedules.insert(s.name.clone(), s);
        Ok(())
    }

    pub(super) fn put_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        new: &Schedule,
        create: bool,
    ) -> Result<CommandResponse, StoreError> {
        if !self.callbacks.contains_key(&new.template.callback) {
            return Ok(CommandResponse::Rejected(Rejection::NotFound(format!(
                "callback {:?} is not registered",
                new.template.callback
            ))));
        }
        let s = match (self.schedules.get(&new.name), create) {
            (Some(_), true) => {
                return Ok(CommandResponse::Rejected(Rejection::FailedPrecondition(format!(
                    "schedule {:?} already exists; change it with `drover schedule update`",
                    new.name
                ))))
            }
            (None, false) => return Ok(not_found(&new.name)),
            (None, true) => Schedule { created_ms: self.now_ms, ..new.clone() },
            // An update changes the definition and keeps the state.
            (Some(old), false) => Schedule {
                spec: new.spec.clone(),
                template: new.template.clone(),
                policy: new.policy.clone(),
                ..old.clone()
            },
        };
        self.save_schedule(b, s)?;
        Ok(CommandResponse::ScheduleSaved { created: create })
    }

    pub(super) fn delete_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        name: &str,
    ) -> Result<CommandResponse, StoreError> {
        if self.schedules.remove(name).is_none() {
            return Ok(not_found(name));
        }
        b.delete(&keys::schedule(name))?;
        b.delete(&keys::schedule_trace(name))?;
        b.index_ops.push(IndexOp::RemoveSchedule(name.to_string()));
        Ok(CommandResponse::Count(1))
    }

    pub(super) fn pause_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        name: &str,
        paused: bool,
        note: &str,
        catch_up: bool,
    ) -> Result<CommandResponse, StoreError> {
        let Some(mut s) = self.schedules.get(name).cloned() else { return Ok(not_found(name)) };
        if s.paused && !paused && !catch_up {
            // The slots missed while paused never fire.
            s.not_before_ms = s.not_before_ms.max(self.now_ms);
        }
        s.paused = paused;
        s.note = if paused { note.to_string() } else { String::new() };
        self.save_schedule(b, s)?;
        Ok(CommandResponse::Count(1))
    }

    /// Fire `slots` (each only if later than the last slot), after moving
    /// the last slot to `skip_to` (counting `skipped`). A stale fire (a slot
    /// at or before the last one, or of a paused schedule) changes nothing.
    pub(super) fn fire_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        name: &str,
        slots: &[Slot],
        skip_to: Option<&Slot>,
        skipped: u64,
    ) -> Result<CommandResponse, StoreError> {
        let Some(mut s) = self.schedules.get(name).cloned() else { return Ok(not_found(name)) };
        if s.paused {
            return Ok(CommandResponse::Fired { task_ids: Vec::new(), skipped: 0 });
        }
        let mut out = Vec::new();
        let before = s.skipped;
        if let Some(skip) = skip_to.filter(|k| later(k, s.last_slot.as_ref())) {
            s.last_slot = Some(skip.clone());
            s.skipped += skipped;
        }
        for slot in slots {
            if !later(slot, s.last_slot.as_ref()) || slot.at_ms <= s.not_before_ms {
                continue;
            }
            s.last_slot = Some(slot.clone());
            // A slot fires again: a note of earlier skips no longer holds.
            s.note.clear();
            self.fire_slot(b, index, &mut s, slot.clone(), &mut out)?;
        }
        let skipped = s.skipped - before;
        self.save_schedule(b, s)?;
        Ok(CommandResponse::Fired { task_ids: out, skipped })
    }

    /// Skip due slots without firing them: the last slot moves forward to
    /// `skip_to` (a stale skip, at or before the last slot, or of a paused
    /// schedule, changes nothing), `skipped` are counted, and `note` says
    /// why until a slot fires again.
    pub(super) fn skip_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        name: &str,
        skip_to: &Slot,
        skipped: u64,
        note: &str,
    ) -> Result<CommandResponse, StoreError> {
        let Some(mut s) = self.schedules.get(name).cloned() else { return Ok(not_found(name)) };
        if s.paused || !later(skip_to, s.last_slot.as_ref()) {
            return Ok(CommandResponse::Fired { task_ids: Vec::new(), skipped: 0 });
        }
        s.last_slot = Some(skip_to.clone());
        s.skipped += skipped;
        s.note = note.to_string();
        self.save_schedule(b, s)?;
        Ok(CommandResponse::Fired { task_ids: Vec::new(), skipped })
    }

    /// Run one now under the overlap policy; no slot moves.
    pub(super) fn trigger_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        name: &str,
    ) -> Result<CommandResponse, StoreError> {
        let Some(mut s) = self.schedules.get(name).cloned() else { return Ok(not_found(name)) };
        let slot = Slot { at_ms: self.now_ms, id: format!("trigger-{index}") };
        let mut out = Vec::new();
        let before = s.skipped;
        self.fire_slot(b, index, &mut s, slot, &mut out)?;
        let skipped = s.skipped - before;
        self.save_schedule(b, s)?;
        Ok(CommandResponse::Fired { task_ids: out, skipped })
    }

    /// An operator's backfill: each slot runs (or finds the task its key
    /// already has), whatever the overlap policy and the last slot say.
    pub(super) fn backfill_schedule(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        name: &str,
        slots: &[Slot],
    ) -> Result<CommandResponse, StoreError> {
        let Some(mut s) = self.schedules.get(name).cloned() else { return Ok(not_found(name)) };
        let mut outcomes = Vec::with_capacity(slots.len());
        for slot in slots {
            let key = keys::idempotency(&s.template.callback, &s.task_key(slot));
            if let Some(task_id) = b.idempotent_task(&key)? {
                let state = b.task(task_id)?.map_or(TaskState::Scheduled, |t| t.display_state(self.now_ms));
                outcomes.push(ScheduleOutcome { task_id, created: false, state });
                continue;
            }
            match self.run_slot(b, index, &mut s, slot.clone())? {
                Some(o) => outcomes.push(o),
                None => {
                    return Ok(CommandResponse::Rejected(Rejection::NotFound(format!(
                        "callback {:?} of schedule {name:?} is not registered",
                        s.template.callback
                    ))))
                }
            }
        }
        self.save_schedule(b, s)?;
        Ok(CommandResponse::Scheduled(outcomes))
    }

    /// One slot under the overlap policy.
    fn fire_slot(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        s: &mut Schedule,
        slot: Slot,
        out: &mut Vec<u64>,
    ) -> Result<(), StoreError> {
        if !s.active.is_empty() {
            match s.policy.overlap {
                Overlap::Skip => {
                    s.skipped += 1;
                    return Ok(());
                }
                Overlap::BufferOne => {
                    s.skipped += s.buffered.len() as u64;
                    s.buffered = vec![slot];
                    return Ok(());
                }
                Overlap::BufferAll => {
                    if s.buffered.len() >= MAX_BUFFERED {
                        s.skipped += 1;
                    } else {
                        s.buffered.push(slot);
                    }
                    return Ok(());
                }
                Overlap::Allow => {}
                Overlap::CancelOther => {
                    for id in std::mem::take(&mut s.active) {
                        if let Some(before) = b.task(id)? {
                            let mut t = before.clone();
                            if t.state.is_pending() {
                                t.last_error = Some(format!("cancelled by the next run of schedule {}", s.name));
                                t.transition(TaskState::Cancelled, self.now_ms);
                            } else if t.state == TaskState::Running {
                                t.cancel_requested = true;
                            } else {
                                continue;
                            }
                            b.save(Some(&before), t)?;
                        }
                    }
                }
            }
        }
        out.extend(self.run_slot(b, index, s, slot)?.map(|o| o.task_id));
        Ok(())
    }

    /// Create the slot's task (`None`: its callback is gone, the slot is
    /// skipped).
    fn run_slot(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        s: &mut Schedule,
        slot: Slot,
    ) -> Result<Option<ScheduleOutcome>, StoreError> {
        if !self.callbacks.contains_key(&s.template.callback) {
            s.skipped += 1;
            return Ok(None);
        }
        let new = NewTask {
            callback: s.template.callback.clone(),
            payload: s.template.payload.clone(),
            priority: s.template.priority,
            run_at_ms: self.now_ms,
            idempotency_key: Some(s.task_key(&slot)),
            collection: s.template.collection.clone(),
        };
        let o = self.create_task(b, index, &new, Some(&s.name), super::intake::Start::Now)?;
        if o.created && !o.state.is_terminal() {
            s.active.push(o.task_id);
        }
        s.fired += 1;
        s.runs.push(Run { slot, task_id: o.task_id });
        if s.runs.len() > MAX_RUNS {
            let excess = s.runs.len() - MAX_RUNS;
            s.runs.drain(..excess);
        }
        Ok(Some(o))
    }

    /// Tasks of schedules that finished in this command: out of their
    /// schedule's active runs; a buffered slot runs when none is left; a
    /// failure pauses a `--pause-on-failure` schedule.
    pub(super) fn settle_schedules(&mut self, b: &mut ApplyBatch<'_>, index: u64) -> Result<(), StoreError> {
        while let Some((name, id, state)) = b.ended_runs.pop_front() {
            let Some(mut s) = self.schedules.get(&name).cloned() else { continue };
            s.active.retain(|a| *a != id);
            if s.policy.pause_on_failure && matches!(state, TaskState::Failed | TaskState::Dead) {
                s.paused = true;
                s.note = format!("paused: task {id} ended {}", state.name());
            }
            if s.active.is_empty() && !s.paused && !s.buffered.is_empty() {
                let slot = s.buffered.remove(0);
                let mut out = Vec::new();
                out.extend(self.run_slot(b, index, &mut s, slot)?.map(|o| o.task_id));
            }
            self.save_schedule(b, s)?;
        }
        Ok(())
    }
}
