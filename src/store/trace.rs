//! Apply and reads of trace contexts (feature level 3): the rows an
//! `Operation::Traced` writes beside the tasks (or the schedule) its inner
//! operation created, and what a worker's assignment and `GetTask` carry.
//! The rows are apart from task and schedule records, whose encodings
//! stay as they were; nothing but a task's removal (and a schedule's
//! deletion) touches them, so retries and redrives keep them.

use super::apply::{Applier, ApplyBatch};
use super::{keys, read_record, StoreError, TaskStore};
use crate::domain::command::*;
use crate::domain::trace::TraceContext;
use crate::domain::Task;
use crate::encoding;

/// Most parents' contexts an assignment links to.
pub const MAX_LINKS: usize = 32;

impl Applier {
    /// Apply `operation`, then keep `traces[i]` for the i-th task it
    /// created (a repeat of an idempotency key or request id writes
    /// nothing: the first task keeps its own), or `traces[0]` for the
    /// schedule a `PutSchedule` saved.
    pub(super) fn traced(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        operation: &Operation,
        traces: &[Option<TraceContext>],
    ) -> Result<CommandResponse, StoreError> {
        let response = self.apply_operation(b, index, operation)?;
        match (&response, operation) {
            (CommandResponse::Scheduled(outcomes), _) => {
                for (outcome, trace) in outcomes.iter().zip(traces) {
                    if let (true, Some(trace)) = (outcome.created, trace) {
                        b.put(&keys::trace(outcome.task_id), &encoding::encode(trace))?;
                    }
                }
            }
            (CommandResponse::ScheduleSaved { .. }, Operation::PutSchedule { schedule, .. }) => {
                if let Some(Some(trace)) = traces.first() {
                    b.put(&keys::schedule_trace(&schedule.name), &encoding::encode(trace))?;
                }
            }
            _ => {}
        }
        Ok(response)
    }
}

impl TaskStore {
    /// The trace context a task was scheduled with, if any.
    pub fn trace(&self, id: u64) -> Result<Option<TraceContext>, StoreError> {
        self.checked("reading a trace context", read_record(self.db(), &keys::trace(id)))
    }

    /// A periodic schedule's trace context, if it was given one.
    pub fn schedule_trace(&self, name: &str) -> Result<Option<TraceContext>, StoreError> {
        self.checked("reading a trace context", read_record(self.db(), &keys::schedule_trace(name)))
    }

    /// The trace a task runs in, and the contexts its spans link to: its
    /// own context and its parents' (a task scheduled after others), or,
    /// for a task a traced schedule fired, a trace of the fire's own,
    /// linked to the schedule's.
    pub fn trace_of(&self, task: &Task) -> Result<(Option<TraceContext>, Vec<TraceContext>), StoreError> {
        if let Some(own) = self.trace(task.id)? {
            let mut links = Vec::new();
            for p in self.parents(task.id)?.into_iter().take(MAX_LINKS) {
                links.extend(self.trace(p)?);
            }
            return Ok((Some(own), links));
        }
        if let Some(name) = &task.schedule {
            if let Some(schedule) = self.schedule_trace(name)? {
                return Ok((Some(schedule.fire(name, task.id, task.created_index)), vec![schedule]));
            }
        }
        Ok((None, Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{new_task, retry, Sm};
    use super::*;

    fn context(span: &str) -> TraceContext {
        TraceContext::parse(&format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{span}-01"), "k=v").unwrap().unwrap()
    }

    #[test]
    fn a_traced_schedule_keeps_each_created_tasks_context_through_a_retry_until_the_task_is_deleted() {
        let mut sm = Sm::new();
        let id = RequestId([7; 16]);
        let traced = |tasks| Operation::Traced {
            operation: Box::new(Operation::ScheduleRequest { request_id: id, tasks, auto_register: false }),
            traces: vec![Some(context("00f067aa0ba902b7")), None],
        };
        let r = sm.run(1000, traced(vec![new_task("a", 0, None), new_task("a", 0, None)]));
        let CommandResponse::Scheduled(o) = r else { panic!("{r:?}") };
        let store = TaskStore::new(sm.db.clone());
        assert_eq!(store.trace(o[0].task_id).unwrap(), Some(context("00f067aa0ba902b7")));
        assert_eq!(store.trace(o[1].task_id).unwrap(), None);
        // A repeat of the request id creates nothing and writes nothing.
        let again = sm.run(1001, traced(vec![new_task("a", 0, None), new_task("a", 0, None)]));
        assert!(matches!(again, CommandResponse::Replayed(_)), "{again:?}");
        // A retry keeps it.
        let leased = sm.assign(1002, o[0].task_id).unwrap();
        sm.complete(1003, o[0].task_id, leased.fencing_token, retry("again")).unwrap();
        assert_eq!(store.trace(o[0].task_id).unwrap(), Some(context("00f067aa0ba902b7")));
        let (trace, links) = store.trace_of(&sm.task(o[0].task_id)).unwrap();
        assert_eq!((trace, links), (Some(context("00f067aa0ba902b7")), vec![]));
        // Retention's delete takes it with the task.
        let leased = sm.assign(5000, o[0].task_id).unwrap();
        sm.complete(5001, o[0].task_id, leased.fencing_token, Outcome::Success { result: vec![] }).unwrap();
        sm.run(5002, Operation::Collect { task_ids: vec![o[0].task_id], request_ids: vec![] });
        assert_eq!(store.trace(o[0].task_id).unwrap(), None);
    }

    #[test]
    fn a_childs_spans_link_to_its_parents_contexts() {
        let mut sm = Sm::new();
        let traced = |tasks, after, span: &str| Operation::Traced {
            operation: Box::new(Operation::ScheduleGraph { request_id: None, tasks, after, auto_register: false }),
            traces: vec![Some(context(span))],
        };
        let none = crate::domain::dependency::After::default();
        let r = sm.run(1000, traced(vec![new_task("a", 0, None)], vec![none], "00000000000000a1"));
        let CommandResponse::Scheduled(parent) = r else { panic!("{r:?}") };
        let after = crate::domain::dependency::After {
            parents: vec![crate::domain::dependency::Parent::Task(parent[0].task_id)],
            ..Default::default()
        };
        let r = sm.run(1001, traced(vec![new_task("a", 0, None)], vec![after], "00000000000000c1"));
        let CommandResponse::Scheduled(child) = r else { panic!("{r:?}") };
        let store = TaskStore::new(sm.db.clone());
        let (trace, links) = store.trace_of(&sm.task(child[0].task_id)).unwrap();
        assert_eq!((trace, links), (Some(context("00000000000000c1")), vec![context("00000000000000a1")]));
    }
}
