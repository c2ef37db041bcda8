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
use crate::domain::gate::strictest;
use crate::domain::schedule::Schedule;
use crate::domain::{CallbackConfig, Gate, GateTarget, Task, TaskState};
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

/// Pending tasks of one (callback, collection), per priority, ordered by
/// (run-at, id).
pub type Lane = [BTreeSet<(u64, u64)>; PRIORITIES];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallbackQueues {
    /// Pending tasks per collection (`None`: tasks without one).
    pub lanes: BTreeMap<Option<String>, Lane>,
    pub running: usize,
    /// Finished tasks kept, per final state (see [`finished_slot`]).
    pub finished: [u64; 4],
}

impl CallbackQueues {
    fn is_empty(&self) -> bool {
        self.running == 0 && self.finished == [0; 4] && self.lanes.values().all(|l| l.iter().all(BTreeSet::is_empty))
    }

    /// Finished tasks kept in `state`.
    pub fn finished(&self, state: TaskState) -> u64 {
        finished_slot(state).map_or(0, |i| self.finished[i])
    }
}

/// Slot of a final state in [`CallbackQueues::finished`].
fn finished_slot(state: TaskState) -> Option<usize> {
    match state {
        TaskState::Succeeded => Some(0),
        TaskState::Failed => Some(1),
        TaskState::Dead => Some(2),
        TaskState::Cancelled => Some(3),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub callback: String,
    pub collection: Option<String>,
    pub fencing_token: u64,
    pub attempt: u32,
    pub worker: String,
    pub cancel_requested: bool,
}

/// A pending task's place in the queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSlot {
    pub callback: String,
    pub collection: Option<String>,
    pub priority: u8,
    pub run_at_ms: u64,
    pub id: u64,
}

impl QueueSlot {
    pub fn of(t: &Task) -> Self {
        QueueSlot {
            callback: t.callback.clone(),
            collection: t.collection.clone(),
            priority: t.priority,
            run_at_ms: t.run_at_ms,
            id: t.id,
        }
    }

    /// Its RocksDB key.
    pub fn key(&self) -> Vec<u8> {
        keys::pending(&self.callback, self.collection.as_deref(), self.priority, self.run_at_ms, self.id)
    }
}

/// A change to the index, recorded during apply and applied after the write.
#[derive(Debug, Clone)]
pub enum IndexOp {
    AddPending(QueueSlot),
    RemovePending(QueueSlot),
    SetRunning { id: u64, task: RunningTask },
    RemoveRunning { id: u64 },
    PutCallback(CallbackConfig),
    Retire { node_id: u64 },
    PutGate(Gate),
    RemoveGate(GateTarget),
    AddFinished { callback: String, state: TaskState },
    RemoveFinished { callback: String, state: TaskState },
    PutSchedule(Box<Schedule>),
    RemoveSchedule(String),
    PutGrant(Box<crate::domain::auth::Grant>),
    RemoveGrant(String),
    SetAuth(bool),
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
    gates: BTreeMap<GateTarget, Gate>,
    schedules: BTreeMap<String, Schedule>,
    auth: crate::domain::auth::AuthTable,
}

/// Equal content: the same callbacks, running tasks, retired ids, gates and
/// non-empty queues (an index kept by apply may hold empty queues that one
/// rebuilt from disk does not).
impl PartialEq for LiveIndex {
    fn eq(&self, other: &Self) -> bool {
        let non_empty = |i: &LiveIndex| -> BTreeMap<String, CallbackQueues> {
            i.queues
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, q)| {
                    let mut q = q.clone();
                    q.lanes.retain(|_, l| l.iter().any(|p| !p.is_empty()));
                    (k.clone(), q)
                })
                .collect()
        };
        self.callbacks == other.callbacks
            && self.running == other.running
            && self.retired == other.retired
            && self.gates == other.gates
            && self.schedules == other.schedules
            && self.auth == other.auth
            && non_empty(self) == non_empty(other)
    }
}

/// One key and value read from RocksDB.
type Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>;

/// Every key under `prefix` in the state machine.
fn scan<'a>(db: &'a DB, prefix: &'a [u8]) -> Result<impl Iterator<Item = Item> + 'a, StoreError> {
    let sm = cf(db, keys::CF_SM)?;
    Ok(db
        .prefix_iterator_cf(sm, prefix)
        .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(prefix))))
}

impl LiveIndex {
    /// Rebuild from the state machine on disk.
    pub fn load(db: &DB) -> Result<Self, StoreError> {
        let sm = cf(db, keys::CF_SM)?;
        let mut index = LiveIndex::default();
        for item in scan(db, &keys::CALLBACK_PREFIX)? {
            let (_, v) = item?;
            index.put_callback(encoding::decode(&v)?);
        }
        for item in scan(db, &keys::GATE_PREFIX)? {
            let (_, v) = item?;
            index.apply(IndexOp::PutGate(encoding::decode(&v)?));
        }
        for item in scan(db, &keys::GRANT_PREFIX)? {
            let (_, v) = item?;
            index.auth.put(encoding::decode(&v)?);
        }
        index.auth.enabled = super::get_u64(db, keys::SM_AUTH_ENABLED)? == 1;
        for item in scan(db, &keys::SCHEDULE_PREFIX)? {
            let (_, v) = item?;
            index.apply(IndexOp::PutSchedule(Box::new(encoding::decode(&v)?)));
        }
        for item in scan(db, &keys::PENDING_PREFIX)? {
            let (k, _) = item?;
            if let Some(p) = keys::parse_pending(&k) {
                index.apply(IndexOp::AddPending(QueueSlot {
                    callback: p.callback,
                    collection: p.collection,
                    priority: p.priority,
                    run_at_ms: p.run_at_ms,
                    id: p.id,
                }));
            }
        }
        for item in scan(db, &keys::FINISHED_PREFIX)? {
            let (k, _) = item?;
            if let Some((callback, code, _, _)) = keys::parse_finished(&k) {
                if let Some(state) = TaskState::ALL.into_iter().find(|s| s.code() == code) {
                    index.apply(IndexOp::AddFinished { callback, state });
                }
            }
        }
        for item in scan(db, &keys::RETIRED_PREFIX)? {
            let (k, _) = item?;
            if let Some(id) = keys::retired_id(&k) {
                index.apply(IndexOp::Retire { node_id: id });
            }
        }
        let prefix = keys::by_state_prefix(TaskState::Running.code());
        for item in scan(db, &prefix)? {
            let (k, _) = item?;
            let Some(id) = keys::by_state_id(&k) else { continue };
            let Some(row) = db.get_pinned_cf(sm, keys::task(id))? else { continue };
            let t: Task = encoding::decode(&row)?;
            index.apply(IndexOp::SetRunning { id, task: running_of(&t) });
        }
        Ok(index)
    }

    pub fn apply(&mut self, op: IndexOp) {
        match op {
            IndexOp::AddPending(s) => {
                let lane = self.queues.entry(s.callback).or_default().lanes.entry(s.collection).or_default();
                lane[(s.priority as usize).min(PRIORITIES - 1)].insert((s.run_at_ms, s.id));
            }
            IndexOp::RemovePending(s) => {
                if let Some(q) = self.queues.get_mut(&s.callback) {
                    if let Some(lane) = q.lanes.get_mut(&s.collection) {
                        lane[(s.priority as usize).min(PRIORITIES - 1)].remove(&(s.run_at_ms, s.id));
                        if lane.iter().all(BTreeSet::is_empty) {
                            q.lanes.remove(&s.collection);
                        }
                    }
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
            IndexOp::PutGate(g) => {
                self.gates.insert(g.target.clone(), g);
            }
            IndexOp::RemoveGate(target) => {
                self.gates.remove(&target);
            }
            IndexOp::AddFinished { callback, state } => {
                if let Some(i) = finished_slot(state) {
                    self.queues.entry(callback).or_default().finished[i] += 1;
                }
            }
            IndexOp::RemoveFinished { callback, state } => {
                if let (Some(i), Some(q)) = (finished_slot(state), self.queues.get_mut(&callback)) {
                    q.finished[i] = q.finished[i].saturating_sub(1);
                }
            }
            IndexOp::PutSchedule(s) => {
                self.schedules.insert(s.name.clone(), *s);
            }
            IndexOp::RemoveSchedule(name) => {
                self.schedules.remove(&name);
            }
            IndexOp::PutGrant(g) => self.auth.put(*g),
            IndexOp::RemoveGrant(id) => self.auth.remove(&id),
            IndexOp::SetAuth(enabled) => self.auth.enabled = enabled,
        }
    }

    /// Grants and whether they are enforced.
    pub fn auth(&self) -> &crate::domain::auth::AuthTable {
        &self.auth
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

    pub fn gates(&self) -> impl Iterator<Item = &Gate> {
        self.gates.values()
    }

    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.get(name)
    }

    pub fn gate(&self, target: &GateTarget) -> Option<&Gate> {
        self.gates.get(target)
    }

    /// The gate that holds tasks of `callback` in `collection` at
    /// `now_ms`, if any (the stricter of the callback's and the
    /// collection's).
    pub fn gated(&self, callback: &str, collection: Option<&str>, now_ms: u64) -> Option<&Gate> {
        let range = GateTarget::new(callback, None)..=GateTarget::new(callback, Some(char::MAX.to_string()));
        strictest(self.gates.range(range).map(|(_, g)| g), callback, collection, now_ms)
    }

    /// Lanes of `callback` whose tasks may start at `now_ms`.
    fn open_lanes<'a>(&'a self, callback: &'a str, now_ms: u64) -> impl Iterator<Item = &'a Lane> + 'a {
        self.queues
            .get(callback)
            .into_iter()
            .flat_map(|q| q.lanes.iter())
            .filter(move |(collection, _)| self.gated(callback, collection.as_deref(), now_ms).is_none())
            .map(|(_, lane)| lane)
    }

    /// Earliest run-at among `callback`'s pending tasks that are not in
    /// `skip` nor held by a gate at `now_ms`.
    pub fn next_run_at(&self, callback: &str, now_ms: u64, skip: &HashSet<u64>) -> Option<u64> {
        self.open_lanes(callback, now_ms)
            .flat_map(|lane| lane.iter())
            .filter_map(|set| set.iter().find(|(_, id)| !skip.contains(id)).map(|(t, _)| *t))
            .min()
    }

    /// Pick up to `n` ready tasks of `callback` at `now_ms`, skipping ids in
    /// `skip` and collections a gate holds. Higher priority first; a task
    /// gains one priority level per `aging_ms` of waiting past its run-at,
    /// so a flood of high-priority work delays low-priority tasks but never
    /// starves them. Ties go to the higher base priority, then the earlier
    /// run-at, then the lower id.
    pub fn pick(&self, callback: &str, now_ms: u64, n: usize, skip: &HashSet<u64>, aging_ms: u64) -> Vec<Picked> {
        let mut cursors: Vec<(u8, _)> = self
            .open_lanes(callback, now_ms)
            .flat_map(|lane| lane.iter().enumerate().map(|(p, set)| (p as u8, set.iter().peekable())))
            .collect();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut best: Option<(u64, u8, u64, u64, usize)> = None;
            for (i, (p, cursor)) in cursors.iter_mut().enumerate() {
                while cursor.peek().is_some_and(|(_, id)| skip.contains(id)) {
                    cursor.next();
                }
                let Some(&&(run_at, id)) = cursor.peek() else { continue };
                if run_at > now_ms {
                    continue;
                }
                let effective = u64::from(*p) + (now_ms - run_at) / aging_ms.max(1);
                let better = match best {
                    None => true,
                    Some((e, bp, br, bid, _)) => {
                        (effective, *p, std::cmp::Reverse(run_at), std::cmp::Reverse(id))
                            > (e, bp, std::cmp::Reverse(br), std::cmp::Reverse(bid))
                    }
                };
                if better {
                    best = Some((effective, *p, run_at, id, i));
                }
            }
            let Some((_, p, run_at, id, i)) = best else { break };
            cursors[i].1.next();
            out.push(Picked { id, priority: p, run_at_ms: run_at });
        }
        out
    }

    /// The run-at of `callback`'s oldest ready task at `now_ms`, over all
    /// its collections and priorities.
    pub fn oldest_ready(&self, callback: &str, now_ms: u64) -> Option<u64> {
        let q = self.queues.get(callback)?;
        q.lanes
            .values()
            .flat_map(|l| l.iter())
            .filter_map(|s| s.first())
            .map(|(t, _)| *t)
            .filter(|t| *t <= now_ms)
            .min()
    }

    /// (ready, waiting) counts per priority for `callback` at `now_ms`,
    /// over all its collections.
    pub fn depths(&self, callback: &str, now_ms: u64) -> [(u64, u64); PRIORITIES] {
        let mut out = [(0, 0); PRIORITIES];
        for lane in self.queues.get(callback).into_iter().flat_map(|q| q.lanes.values()) {
            for (p, (ready, waiting)) in lane_depths(lane, now_ms).into_iter().enumerate() {
                out[p].0 += ready;
                out[p].1 += waiting;
            }
        }
        out
    }

    /// (collection, ready, waiting) of each non-empty collection of
    /// `callback` at `now_ms` (tasks without a collection are not listed).
    pub fn collection_depths(&self, callback: &str, now_ms: u64) -> Vec<(String, u64, u64)> {
        let Some(q) = self.queues.get(callback) else { return Vec::new() };
        q.lanes
            .iter()
            .filter_map(|(c, lane)| {
                let (ready, waiting) =
                    lane_depths(lane, now_ms).into_iter().fold((0, 0), |(r, w), (a, b)| (r + a, w + b));
                c.clone().filter(|_| ready + waiting > 0).map(|c| (c, ready, waiting))
            })
            .collect()
    }

    /// Pending tasks a gate on `target` covers.
    pub fn pending_in(&self, target: &GateTarget) -> u64 {
        let Some(q) = self.queues.get(&target.callback) else { return 0 };
        q.lanes
            .iter()
            .filter(|(c, _)| target.collection.is_none() || **c == target.collection)
            .map(|(_, lane)| lane.iter().map(|s| s.len() as u64).sum::<u64>())
            .sum()
    }

    /// Running tasks a gate on `target` covers.
    pub fn running_in(&self, target: &GateTarget) -> u64 {
        self.running.values().filter(|t| target.covers(&t.callback, t.collection.as_deref())).count() as u64
    }
}

fn lane_depths(lane: &Lane, now_ms: u64) -> [(u64, u64); PRIORITIES] {
    let mut out = [(0, 0); PRIORITIES];
    for (p, set) in lane.iter().enumerate() {
        let ready = set.range(..(now_ms.saturating_add(1), 0)).count() as u64;
        out[p] = (ready, set.len() as u64 - ready);
    }
    out
}

pub fn running_of(t: &Task) -> RunningTask {
    RunningTask {
        callback: t.callback.clone(),
        collection: t.collection.clone(),
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
            i.apply(IndexOp::AddPending(QueueSlot {
                callback: "a".into(),
                collection: (id % 3 == 0).then(|| format!("c{}", id % 2)),
                priority,
                run_at_ms,
                id,
            }));
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
        assert_eq!(i.next_run_at("a", 50, &skip), Some(10));
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
    fn gated_collections_are_not_picked_and_the_callback_gate_holds_all() {
        use crate::domain::GateMode;
        // Ids divisible by 3 are in collection c0 or c1 (see index_with).
        let mut i = index_with(&[(0, 10, 1), (0, 10, 3), (0, 10, 6), (0, 10, 7)]);
        let gate = |collection: Option<&str>, mode, until_ms| Gate {
            target: GateTarget::new("a", collection.map(String::from)),
            mode,
            since_ms: 0,
            since_index: 0,
            until_ms,
            note: String::new(),
        };
        let ids = |i: &LiveIndex, now| {
            i.pick("a", now, 10, &HashSet::new(), u64::MAX).iter().map(|p| p.id).collect::<Vec<_>>()
        };
        assert_eq!(ids(&i, 50), vec![1, 3, 6, 7]);
        i.apply(IndexOp::PutGate(gate(Some("c1"), GateMode::Pause, Some(100))));
        assert_eq!(ids(&i, 50), vec![1, 6, 7], "c1 (task 3) is paused");
        assert_eq!(ids(&i, 100), vec![1, 3, 6, 7], "the pause expired at 100");
        assert_eq!(i.pending_in(&GateTarget::new("a", Some("c1".into()))), 1);
        assert_eq!(i.collection_depths("a", 50), vec![("c0".into(), 1, 0), ("c1".into(), 1, 0)]);
        i.apply(IndexOp::PutGate(gate(None, GateMode::Pause, None)));
        assert!(ids(&i, 50).is_empty());
        assert_eq!(i.next_run_at("a", 50, &HashSet::new()), None);
        assert_eq!(i.pending_in(&GateTarget::new("a", None)), 4);
        i.apply(IndexOp::RemoveGate(GateTarget::new("a", None)));
        assert_eq!(ids(&i, 50), vec![1, 6, 7]);
    }

    #[test]
    fn running_counts_follow_set_and_remove() {
        let mut i = LiveIndex::default();
        let t = RunningTask {
            callback: "a".into(),
            collection: None,
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
