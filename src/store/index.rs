//! The live index: an in-memory view of the state machine that the
//! scheduler needs fast: callbacks, pending queues per (callback, priority)
//! and running tasks.
//!
//! It is derived data. Apply updates it only after the batch it describes
//! is written to RocksDB, and [`LiveIndex::load`] rebuilds it from disk at
//! start and after a snapshot install. Every node keeps one, so a new leader
//! schedules at once without a scan.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rocksdb::DB;

use super::{cf, keys, StoreError};
use crate::domain::{CallbackConfig, Task, TaskState};
use crate::encoding;

/// Number of priority levels (0..=9).
pub const PRIORITIES: usize = 10;

/// Shared handle: the state machine writes, the scheduler reads. A std
/// mutex: every critical section is short and has no `.await`.
pub type SharedIndex = Arc<Mutex<LiveIndex>>;

/// Lock a shared index, surviving a poisoned lock (the index is rebuilt
/// from disk on start anyway).
pub fn lock(index: &SharedIndex) -> std::sync::MutexGuard<'_, LiveIndex> {
    index.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQueues {
    /// Pending tasks per priority, ordered by (run-at, id).
    pub pending: [BTreeSet<(u64, u64)>; PRIORITIES],
    pub running: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub callback: String,
    pub fencing_token: u64,
    pub attempt: u32,
    pub worker: String,
    pub cancel_requested: bool,
}

/// A change to the index, recorded during apply and applied after the write.
#[derive(Debug, Clone)]
pub enum IndexOp {
    AddPending { callback: String, priority: u8, run_at_ms: u64, id: u64 },
    RemovePending { callback: String, priority: u8, run_at_ms: u64, id: u64 },
    SetRunning { id: u64, task: RunningTask },
    RemoveRunning { id: u64 },
    PutCallback(CallbackConfig),
    Retire { node_id: u64 },
}

impl IndexOp {
    pub fn add_pending(t: &Task) -> Self {
        IndexOp::AddPending { callback: t.callback.clone(), priority: t.priority, run_at_ms: t.run_at_ms, id: t.id }
    }

    pub fn remove_pending(t: &Task) -> Self {
        IndexOp::RemovePending { callback: t.callback.clone(), priority: t.priority, run_at_ms: t.run_at_ms, id: t.id }
    }
}

/// A task picked for dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    pub id: u64,
    pub priority: u8,
    pub run_at_ms: u64,
}

#[derive(Debug, Default)]
pub struct LiveIndex {
    callbacks: BTreeMap<String, CallbackConfig>,
    queues: HashMap<String, CallbackQueues>,
    running: HashMap<u64, RunningTask>,
    /// Node ids removed from the cluster (the Raft service refuses them).
    retired: BTreeSet<u64>,
}

/// Equal content: the same callbacks, running tasks, retired ids and
/// non-empty queues (an index kept by apply may hold empty queues that one
/// rebuilt from disk does not).
impl PartialEq for LiveIndex {
    fn eq(&self, other: &Self) -> bool {
        let non_empty = |i: &LiveIndex| -> BTreeMap<String, CallbackQueues> {
            i.queues
                .iter()
                .filter(|(_, q)| q.running > 0 || q.pending.iter().any(|p| !p.is_empty()))
                .map(|(k, q)| (k.clone(), q.clone()))
                .collect()
        };
        self.callbacks == other.callbacks
            && self.running == other.running
            && self.retired == other.retired
            && non_empty(self) == non_empty(other)
    }
}

impl LiveIndex {
    /// Rebuild from the state machine on disk.
    pub fn load(db: &DB) -> Result<Self, StoreError> {
        let sm = cf(db, keys::CF_SM)?;
        let mut index = LiveIndex::default();
        for item in db.prefix_iterator_cf(sm, keys::CALLBACK_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(&keys::CALLBACK_PREFIX) {
                break;
            }
            index.put_callback(encoding::decode(&v)?);
        }
        for item in db.prefix_iterator_cf(sm, keys::PENDING_PREFIX) {
            let (k, _) = item?;
            if !k.starts_with(&keys::PENDING_PREFIX) {
                break;
            }
            if let Some((callback, priority, run_at_ms, id)) = keys::parse_pending(&k) {
                index.apply(IndexOp::AddPending { callback, priority, run_at_ms, id });
            }
        }
        for item in db.prefix_iterator_cf(sm, keys::RETIRED_PREFIX) {
            let (k, _) = item?;
            match keys::retired_id(&k) {
                Some(id) => index.apply(IndexOp::Retire { node_id: id }),
                None => break,
            }
        }
        let prefix = keys::by_state_prefix(TaskState::Running.code());
        for item in db.prefix_iterator_cf(sm, prefix) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(id) = keys::by_state_id(&k) else { continue };
            let Some(row) = db.get_pinned_cf(sm, keys::task(id))? else { continue };
            let t: Task = encoding::decode(&row)?;
            index.apply(IndexOp::SetRunning { id, task: running_of(&t) });
        }
        Ok(index)
    }

    pub fn apply(&mut self, op: IndexOp) {
        match op {
            IndexOp::AddPending { callback, priority, run_at_ms, id } => {
                let q = self.queues.entry(callback).or_default();
                q.pending[(priority as usize).min(PRIORITIES - 1)].insert((run_at_ms, id));
            }
            IndexOp::RemovePending { callback, priority, run_at_ms, id } => {
                if let Some(q) = self.queues.get_mut(&callback) {
                    q.pending[(priority as usize).min(PRIORITIES - 1)].remove(&(run_at_ms, id));
                }
            }
            IndexOp::SetRunning { id, task } => {
                let callback = task.callback.clone();
                if self.running.insert(id, task).is_none() {
                    self.queues.entry(callback).or_default().running += 1;
                }
            }
            IndexOp::RemoveRunning { id } => {
                if let Some(t) = self.running.remove(&id) {
                    if let Some(q) = self.queues.get_mut(&t.callback) {
                        q.running = q.running.saturating_sub(1);
                    }
                }
            }
            IndexOp::PutCallback(c) => self.put_callback(c),
            IndexOp::Retire { node_id } => {
                self.retired.insert(node_id);
            }
        }
    }

    fn put_callback(&mut self, c: CallbackConfig) {
        self.queues.entry(c.name.clone()).or_default();
        self.callbacks.insert(c.name.clone(), c);
    }

    /// Whether `node_id` was removed from the cluster.
    pub fn is_retired(&self, node_id: u64) -> bool {
        self.retired.contains(&node_id)
    }

    pub fn callback(&self, name: &str) -> Option<&CallbackConfig> {
        self.callbacks.get(name)
    }

    pub fn callbacks(&self) -> impl Iterator<Item = &CallbackConfig> {
        self.callbacks.values()
    }

    pub fn queues(&self, callback: &str) -> Option<&CallbackQueues> {
        self.queues.get(callback)
    }

    pub fn running(&self) -> &HashMap<u64, RunningTask> {
        &self.running
    }

    pub fn running_task(&self, id: u64) -> Option<&RunningTask> {
        self.running.get(&id)
    }

    /// Earliest run-at among `callback`'s pending tasks that are not in
    /// `skip`.
    pub fn next_run_at(&self, callback: &str, skip: &HashSet<u64>) -> Option<u64> {
        let q = self.queues.get(callback)?;
        q.pending.iter().filter_map(|set| set.iter().find(|(_, id)| !skip.contains(id)).map(|(t, _)| *t)).min()
    }

    /// Pick up to `n` ready tasks of `callback` at `now_ms`, skipping ids in
    /// `skip`. Higher priority first; a task gains one priority level per
    /// `aging_ms` of waiting past its run-at, so a flood of high-priority
    /// work delays low-priority tasks but never starves them. Ties go to the
    /// higher base priority, then the earlier run-at, then the lower id.
    pub fn pick(&self, callback: &str, now_ms: u64, n: usize, skip: &HashSet<u64>, aging_ms: u64) -> Vec<Picked> {
        let Some(q) = self.queues.get(callback) else { return Vec::new() };
        let mut cursors: Vec<_> = q.pending.iter().map(|set| set.iter().peekable()).collect();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut best: Option<(u64, u8, u64, u64)> = None;
            for (p, cursor) in cursors.iter_mut().enumerate() {
                while cursor.peek().is_some_and(|(_, id)| skip.contains(id)) {
                    cursor.next();
                }
                let Some(&&(run_at, id)) = cursor.peek() else { continue };
                if run_at > now_ms {
                    continue;
                }
                let effective = p as u64 + (now_ms - run_at) / aging_ms.max(1);
                let better = match best {
                    None => true,
                    Some((e, bp, br, bid)) => {
                        (effective, p as u8, std::cmp::Reverse(run_at), std::cmp::Reverse(id))
                            > (e, bp, std::cmp::Reverse(br), std::cmp::Reverse(bid))
                    }
                };
                if better {
                    best = Some((effective, p as u8, run_at, id));
                }
            }
            let Some((_, p, run_at, id)) = best else { break };
            cursors[p as usize].next();
            out.push(Picked { id, priority: p, run_at_ms: run_at });
        }
        out
    }

    /// (ready, waiting) counts per priority for `callback` at `now_ms`.
    pub fn depths(&self, callback: &str, now_ms: u64) -> [(u64, u64); PRIORITIES] {
        let mut out = [(0, 0); PRIORITIES];
        if let Some(q) = self.queues.get(callback) {
            for (p, set) in q.pending.iter().enumerate() {
                let ready = set.range(..(now_ms.saturating_add(1), 0)).count() as u64;
                out[p] = (ready, set.len() as u64 - ready);
            }
        }
        out
    }
}

pub fn running_of(t: &Task) -> RunningTask {
    RunningTask {
        callback: t.callback.clone(),
        fencing_token: t.fencing_token,
        attempt: t.attempts,
        worker: t.worker.clone().unwrap_or_default(),
        cancel_requested: t.cancel_requested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_with(tasks: &[(u8, u64, u64)]) -> LiveIndex {
        let mut i = LiveIndex::default();
        for &(priority, run_at_ms, id) in tasks {
            i.apply(IndexOp::AddPending { callback: "a".into(), priority, run_at_ms, id });
        }
        i
    }

    #[test]
    fn higher_priority_first_then_run_at_then_arrival() {
        let i = index_with(&[(0, 10, 1), (5, 20, 2), (5, 10, 3), (9, 30, 4), (5, 10, 5)]);
        let ids: Vec<u64> = i.pick("a", 30, 10, &HashSet::new(), u64::MAX).iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![4, 3, 5, 2, 1]);
    }

    #[test]
    fn future_tasks_and_skipped_ids_are_not_picked() {
        let i = index_with(&[(0, 10, 1), (0, 100, 2), (3, 5, 3)]);
        let skip: HashSet<u64> = [3].into();
        let ids: Vec<u64> = i.pick("a", 50, 10, &skip, u64::MAX).iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![1]);
        assert_eq!(i.next_run_at("a", &skip), Some(10));
        assert_eq!(i.depths("a", 50)[0], (1, 1));
    }

    #[test]
    fn waiting_tasks_age_into_higher_priority() {
        // Priority 0 waiting 100 s with 10 s aging (effective 10) beats a
        // fresh priority 9; after 95 s (effective 9) it ties and loses.
        let i = index_with(&[(0, 0, 1), (9, 100_000, 2)]);
        let ids: Vec<u64> = i.pick("a", 100_000, 1, &HashSet::new(), 10_000).iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![1]);
        let tie = index_with(&[(0, 5_000, 1), (9, 100_000, 2)]);
        let ids: Vec<u64> = tie.pick("a", 100_000, 1, &HashSet::new(), 10_000).iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![2]);
        // Without aging, priority wins.
        let ids: Vec<u64> = i.pick("a", 100_000, 1, &HashSet::new(), u64::MAX).iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![2]);
    }

    #[test]
    fn running_counts_follow_set_and_remove() {
        let mut i = LiveIndex::default();
        let t = RunningTask {
            callback: "a".into(),
            fencing_token: 7,
            attempt: 1,
            worker: "w".into(),
            cancel_requested: false,
        };
        i.apply(IndexOp::SetRunning { id: 1, task: t.clone() });
        i.apply(IndexOp::SetRunning { id: 1, task: t });
        assert_eq!(i.queues("a").unwrap().running, 1);
        i.apply(IndexOp::RemoveRunning { id: 1 });
        i.apply(IndexOp::RemoveRunning { id: 1 });
        assert_eq!(i.queues("a").unwrap().running, 0);
    }
}
