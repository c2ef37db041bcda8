//! Apply of task dependencies (the rules are in
//! [`crate::domain::dependency`]), and the reads of them.
//!
//! Three kinds of rows, apart from task rows so that a parent's final
//! transition rewrites a few small records, not a list of 10,000 parents:
//! - [`keys::deps`]: a child's policy and counts, updated by each parent;
//! - [`keys::parents`]: a child's parents, written once;
//! - [`keys::child`]: one per parent-to-child edge, with the parent's state
//!   as counted (so that counting twice is impossible, and a redrive can
//!   un-count it).
//!
//! Apply reads all three through the batch's [`Overlay`], like task rows.

use std::collections::{BTreeMap, HashMap};

use super::sorted_writes::SortedWrites;

use super::apply::{Applier, ApplyBatch};
use super::intake::Start;
use super::{cf, keys, read_record, StoreError, TaskStore};
use crate::domain::command::*;
use crate::domain::dependency::*;
use crate::domain::TaskState;
use crate::encoding;

/// Dependency rows changed in one batch (`None`: deleted), written at its
/// end.
#[derive(Default)]
pub struct Overlay {
    deps: HashMap<u64, Option<Deps>>,
    parents: HashMap<u64, Option<Vec<u64>>>,
    edges: BTreeMap<(u64, u64), Option<Edge>>,
}

impl Overlay {
    pub(super) fn write(&self, rows: &mut SortedWrites) {
        for (id, d) in &self.deps {
            rows.set(keys::deps(*id), d.as_ref().map(encoding::encode));
        }
        for (id, p) in &self.parents {
            rows.set(keys::parents(*id), p.as_ref().map(encoding::encode));
        }
        for ((parent, child), e) in &self.edges {
            rows.set(keys::child(*parent, *child), e.as_ref().map(encoding::encode));
        }
    }
}

impl encoding::Record for Deps {}
impl encoding::Record for Edge {}

impl ApplyBatch<'_> {
    fn read<T: encoding::Record>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        read_record(self.db(), key)
    }

    pub(super) fn deps_of(&self, child: u64) -> Result<Option<Deps>, StoreError> {
        match self.deps.deps.get(&child) {
            Some(d) => Ok(d.clone()),
            None => self.read(&keys::deps(child)),
        }
    }

    fn parents_of(&self, child: u64) -> Result<Vec<u64>, StoreError> {
        match self.deps.parents.get(&child) {
            Some(p) => Ok(p.clone().unwrap_or_default()),
            None => Ok(self.read(&keys::parents(child))?.unwrap_or_default()),
        }
    }

    /// A parent's children with their edges, in id order, as of the
    /// commands applied so far.
    fn children_of(&self, parent: u64) -> Result<Vec<(u64, Edge)>, StoreError> {
        let sm = cf(self.db(), keys::CF_SM)?;
        let prefix = keys::children_prefix(parent);
        let mut out = BTreeMap::new();
        for item in self.db().prefix_iterator_cf(sm, prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(child) = keys::child_id(&k) {
                out.insert(child, encoding::decode::<Edge>(&v)?);
            }
        }
        for (&(_, child), e) in self.deps.edges.range((parent, 0)..=(parent, u64::MAX)) {
            match e {
                Some(e) => out.insert(child, *e),
                None => out.remove(&child),
            };
        }
        Ok(out.into_iter().collect())
    }

    fn set_edge(&mut self, parent: u64, child: u64, edge: Option<Edge>) {
        self.deps.edges.insert((parent, child), edge);
    }

    /// Delete a removed task's dependency rows: its own, and its edges
    /// from its parents and to its children (a child keeps its counts).
    pub(super) fn forget_dependencies(&mut self, id: u64) -> Result<(), StoreError> {
        if self.deps_of(id)?.is_some() {
            for parent in self.parents_of(id)? {
                self.set_edge(parent, id, None);
            }
            self.deps.deps.insert(id, None);
            self.deps.parents.insert(id, None);
        }
        for (child, _) in self.children_of(id)? {
            self.set_edge(id, child, None);
        }
        Ok(())
    }

    /// Take an imported dependency row into the overlay; false if `key` is
    /// not one.
    pub(super) fn import_dependency(&mut self, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        match keys::parse_dependency(key) {
            Some(keys::DependencyKey::Deps(id)) => {
                self.deps.deps.insert(id, Some(encoding::decode(value)?));
            }
            Some(keys::DependencyKey::Parents(id)) => {
                self.deps.parents.insert(id, Some(encoding::decode(value)?));
            }
            Some(keys::DependencyKey::Child(parent, child)) => {
                self.set_edge(parent, child, Some(encoding::decode(value)?));
            }
            None => return Ok(false),
        }
        Ok(true)
    }
}

impl Applier {
    /// Every parent a schedule names must exist (or be an earlier item of
    /// the batch), and there are not too many.
    pub(super) fn check_parents(
        &self,
        b: &ApplyBatch<'_>,
        items: usize,
        after: &[After],
    ) -> Result<Result<(), Rejection>, StoreError> {
        if !after.is_empty() && after.len() != items {
            return Ok(Err(Rejection::InvalidArgument(format!("{} dependency lists for {items} tasks", after.len()))));
        }
        for (i, a) in after.iter().enumerate() {
            if a.parents.len() > MAX_PARENTS {
                return Ok(Err(Rejection::InvalidArgument(format!(
                    "task {i} of the batch has {} parents, more than {MAX_PARENTS}",
                    a.parents.len()
                ))));
            }
            for p in &a.parents {
                match *p {
                    Parent::Item(j) if j as usize >= i => {
                        return Ok(Err(Rejection::InvalidArgument(format!(
                            "task {i} of the batch is after item {j}, which is not an earlier item"
                        ))))
                    }
                    Parent::Item(_) => {}
                    Parent::Task(id) => {
                        if b.task(id)?.is_none() {
                            return Ok(Err(Rejection::NotFound(format!("parent task {id} does not exist"))));
                        }
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// Create a task with parents (checked by [`Applier::check_parents`]):
    /// waiting, or already runnable or cancelled if its parents decided.
    pub(super) fn create_child(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        new: &NewTask,
        after: &After,
        earlier: &[ScheduleOutcome],
    ) -> Result<ScheduleOutcome, StoreError> {
        let mut parents: Vec<u64> = Vec::with_capacity(after.parents.len());
        for p in &after.parents {
            let id = match *p {
                Parent::Task(id) => id,
                Parent::Item(j) => match earlier.get(j as usize) {
                    Some(o) => o.task_id,
                    None => continue,
                },
            };
            if !parents.contains(&id) {
                parents.push(id);
            }
        }
        let mut deps = Deps::new(after.policy, parents.len() as u32);
        let mut edges = Vec::with_capacity(parents.len());
        for &p in &parents {
            let state = b.task(p)?.map(|t| t.state).filter(|s| s.is_terminal());
            if let Some(s) = state {
                deps.recount(None, Some(s));
                if deps.cancelled_by.is_none() && s != TaskState::Succeeded {
                    deps.cancelled_by = Some(p);
                }
            }
            edges.push((p, Edge { counted: state }));
        }
        let start = match deps.verdict() {
            Verdict::Run => Start::Now,
            Verdict::Wait => Start::Waiting,
            Verdict::Cancel => {
                let by = deps.cancelled_by.unwrap_or_default();
                let state = b.task(by)?.map_or(TaskState::Cancelled, |t| t.state);
                Start::Cancelled(upstream_failed(by, state))
            }
        };
        if !matches!(start, Start::Cancelled(_)) {
            // A failed parent only matters to a child it cancels.
            deps.cancelled_by = None;
        }
        let outcome = self.create_task(b, index, new, None, start)?;
        if outcome.created {
            let id = outcome.task_id;
            for (p, edge) in edges {
                b.set_edge(p, id, Some(edge));
            }
            b.deps.deps.insert(id, Some(deps));
            b.deps.parents.insert(id, Some(parents));
        }
        Ok(outcome)
    }

    /// Count the tasks that ended in this command into their children,
    /// releasing or cancelling the waiting ones (a cancel ends a task too,
    /// so this cascades down the graph).
    pub(super) fn settle_dependents(&mut self, b: &mut ApplyBatch<'_>) -> Result<(), StoreError> {
        while let Some((parent, state)) = b.ended_parents.pop_front() {
            for (child, edge) in b.children_of(parent)? {
                if edge.counted == Some(state) {
                    continue;
                }
                let Some(mut deps) = b.deps_of(child)? else { continue };
                deps.recount(edge.counted, Some(state));
                b.set_edge(parent, child, Some(Edge { counted: Some(state) }));
                if let Some(before) = b.task(child)?.filter(|t| t.state == TaskState::Waiting) {
                    let mut t = before.clone();
                    match deps.verdict() {
                        Verdict::Wait => {}
                        Verdict::Run => match self.dropping_gate(&t) {
                            Some(gate) => {
                                t.last_error = Some(gate.drop_reason());
                                t.transition(TaskState::Cancelled, self.now_ms);
                            }
                            None => t.transition(TaskState::Scheduled, self.now_ms),
                        },
                        Verdict::Cancel => {
                            deps.cancelled_by = Some(parent);
                            t.last_error = Some(upstream_failed(parent, state));
                            t.transition(TaskState::Cancelled, self.now_ms);
                        }
                    }
                    if t.state != before.state {
                        b.save(Some(&before), t)?;
                    }
                }
                b.deps.deps.insert(child, Some(deps));
            }
        }
        Ok(())
    }

    /// A redriven task is not final any more: its waiting children wait
    /// for it again, and with `rearm` the children its failure cancelled
    /// wait again too (and theirs, down the graph), unless another parent
    /// of theirs failed.
    pub(super) fn reopen(&mut self, b: &mut ApplyBatch<'_>, task: u64, rearm: bool) -> Result<(), StoreError> {
        let mut queue = std::collections::VecDeque::from([task]);
        while let Some(parent) = queue.pop_front() {
            for (child, edge) in b.children_of(parent)? {
                let (Some(mut deps), Some(before)) = (b.deps_of(child)?, b.task(child)?) else { continue };
                let rearmable = rearm && before.state == TaskState::Cancelled && deps.cancelled_by == Some(parent);
                if before.state != TaskState::Waiting && !rearmable {
                    continue;
                }
                if edge.counted.is_some() {
                    deps.recount(edge.counted, None);
                    b.set_edge(parent, child, Some(Edge { counted: None }));
                }
                if rearmable {
                    deps.cancelled_by = self.failed_parent(b, child)?;
                    if deps.cancelled_by.is_none() {
                        let mut t = before.clone();
                        t.last_error = None;
                        t.transition(TaskState::Waiting, self.now_ms);
                        b.save(Some(&before), t)?;
                        queue.push_back(child);
                    }
                }
                b.deps.deps.insert(child, Some(deps));
            }
        }
        Ok(())
    }

    /// A parent of `child` that ended other than succeeded, if any.
    fn failed_parent(&self, b: &ApplyBatch<'_>, child: u64) -> Result<Option<u64>, StoreError> {
        for p in b.parents_of(child)? {
            if b.task(p)?.is_some_and(|t| t.state.is_terminal() && t.state != TaskState::Succeeded) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

impl TaskStore {
    fn read<T: encoding::Record>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.checked("reading a dependency row", read_record(self.db(), key))
    }

    /// A task's dependency state, if it was scheduled with parents.
    pub fn deps(&self, id: u64) -> Result<Option<Deps>, StoreError> {
        self.read(&keys::deps(id))
    }

    /// A task's parents, in the order it named them.
    pub fn parents(&self, id: u64) -> Result<Vec<u64>, StoreError> {
        Ok(self.read(&keys::parents(id))?.unwrap_or_default())
    }

    /// A task's children in id order, at most `limit`.
    pub fn children(&self, id: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let sm = cf(self.db(), keys::CF_SM)?;
        let prefix = keys::children_prefix(id);
        let mut out = Vec::new();
        for item in self.db().prefix_iterator_cf(sm, prefix) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.extend(keys::child_id(&k));
        }
        Ok(out)
    }

    /// What a child's worker gets from its parents: the counts, and the
    /// parents' results in the order it named them while they fit in
    /// [`MAX_PARENT_RESULT_BYTES`].
    pub fn upstream(&self, id: u64) -> Result<Option<Upstream>, StoreError> {
        let Some(deps) = self.deps(id)? else { return Ok(None) };
        let mut up = Upstream { ended: deps.ended, parents: Vec::new(), omitted: 0 };
        let mut budget = MAX_PARENT_RESULT_BYTES;
        for p in self.parents(id)? {
            let Some(t) = self.get(p)? else { continue };
            let mut result = None;
            if let Some(size) = t.result_size {
                if size as usize <= budget {
                    result = self.result(p)?;
                    budget -= result.as_ref().map_or(0, Vec::len);
                } else {
                    up.omitted += 1;
                }
            }
            up.parents.push(ParentResult { task_id: p, state: t.state, result });
        }
        Ok(Some(up))
    }
}
