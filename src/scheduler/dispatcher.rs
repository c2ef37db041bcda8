//! The dispatcher actor: owns worker sessions, leases and in-flight
//! proposals; active while its node leads. See the module doc of
//! [`crate::scheduler`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::session::Session;
use super::{lease_grace, Msg, SessionId};
use crate::api::propose;
use crate::domain::{Command, CommandResponse, Completion, Expiry, Leased, Operation, Outcome, Rejection, TaskState};
use crate::node::NodeContext;
use crate::pb;
use crate::pb::server_message::Msg as Out;
use crate::raft::ServerState;
use crate::store::index::{self, RunningTask};

/// Most tasks proposed in one `Assign` entry.
const MAX_ASSIGN_BATCH: usize = 1024;
/// Most completions or expiries in one entry.
const MAX_REPORT_BATCH: usize = 4096;
/// Longest the dispatcher sleeps without looking at its timers.
const MAX_IDLE: Duration = Duration::from_millis(50);
/// How often leases are reconciled with the live index.
const RECONCILE_EVERY: Duration = Duration::from_millis(100);
/// Heartbeat period advised to workers (they also heartbeat at a third of
/// their shortest lease).
const HEARTBEAT_HINT_MS: u64 = 1000;

/// A task the dispatcher picked for a session, awaiting its `Assign` commit.
#[derive(Debug, Clone)]
pub struct Planned {
    task_id: u64,
    session: SessionId,
    callback: String,
    priority: u8,
    lease: Duration,
    timeout: Duration,
}

/// Results of proposals, sent back to the actor.
pub enum Proposal {
    /// An `Assign` was proposed for `planned` (whose payloads were read
    /// before proposing); `dropped` were planned but not proposed (their row
    /// or payload could not be read).
    Assigned {
        planned: Vec<Planned>,
        payloads: Vec<Vec<u8>>,
        dropped: Vec<Planned>,
        result: Result<Vec<Result<Leased, Rejection>>, String>,
    },
    Released {
        items: Vec<(u64, u64)>,
        result: Result<Vec<Result<TaskState, Rejection>>, String>,
    },
    Completed {
        batch: Vec<(SessionId, Completion)>,
        result: Result<Vec<Result<TaskState, Rejection>>, String>,
    },
    Expired {
        items: Vec<(u64, u64)>,
        result: Result<Vec<Result<TaskState, Rejection>>, String>,
    },
}

/// A lease as the leader tracks it, on its own monotonic clock.
struct Lease {
    token: u64,
    callback: String,
    session: Option<SessionId>,
    lease: Duration,
    /// Expire after this (lease plus grace from the last renewal).
    deadline: Instant,
    /// Expire after this regardless of renewals (timeout plus grace).
    timeout_at: Instant,
    cancel_sent: bool,
}

pub struct Dispatcher {
    ctx: NodeContext,
    rx: mpsc::Receiver<Msg>,
    tx: mpsc::Sender<Msg>,
    leader: bool,
    sessions: HashMap<SessionId, Session>,
    by_worker: HashMap<String, SessionId>,
    next_session: SessionId,
    leases: HashMap<u64, Lease>,
    /// Picked tasks whose `Assign` is in flight.
    claimed: HashSet<u64>,
    assigning: bool,
    completions: Vec<(SessionId, Completion)>,
    completing: bool,
    expiring: HashSet<u64>,
    last_reconcile: Instant,
    /// After a failed `Assign`, wait until then before trying again (no
    /// busy loop while the cluster cannot commit).
    hold_until: Option<Instant>,
}

fn leased_ref(task_id: u64, fencing_token: u64) -> pb::TaskRef {
    pb::TaskRef { task_id, fencing_token }
}

impl Dispatcher {
    pub fn new(ctx: NodeContext, rx: mpsc::Receiver<Msg>, tx: mpsc::Sender<Msg>) -> Self {
        Dispatcher {
            ctx,
            rx,
            tx,
            leader: false,
            sessions: HashMap::new(),
            by_worker: HashMap::new(),
            next_session: 1,
            leases: HashMap::new(),
            claimed: HashSet::new(),
            assigning: false,
            completions: Vec::new(),
            completing: false,
            expiring: HashSet::new(),
            last_reconcile: Instant::now(),
            hold_until: None,
        }
    }

    #[tracing::instrument(name = "dispatcher", skip_all, fields(node_id = self.ctx.id))]
    pub async fn run(mut self, stop: CancellationToken) {
        let mut metrics = self.ctx.raft.metrics();
        let mut applied = self.ctx.applied.clone();
        self.update_leadership(&metrics);
        loop {
            let wake = tokio::time::Instant::from_std(self.next_wake());
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                r = metrics.changed() => {
                    if r.is_err() { break }
                    self.update_leadership(&metrics);
                }
                _ = applied.changed() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if self.leader {
                self.maintain();
                self.flush_completions();
                self.dispatch();
            }
        }
        self.step_down(None);
    }

    fn update_leadership(
        &mut self,
        metrics: &openraft::alias::WatchReceiverOf<crate::raft::TypeConfig, crate::raft::RaftMetrics>,
    ) {
        let (is_leader, leader) = {
            let m = metrics.borrow_watched();
            let leader = m.current_leader.and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| pb::Redirect { leader_id: id, leader_addr: n.addr.clone() })
            });
            // Lead only once an entry of our own term (the election's blank
            // entry) is applied: then the live index holds every task a
            // previous leader assigned, and re-attaching workers find theirs.
            let caught_up = m.last_applied.as_ref().is_some_and(|l| l.leader_id.term == m.current_term);
            (m.state == ServerState::Leader && m.current_leader == Some(self.ctx.id) && caught_up, leader)
        };
        if is_leader && !self.leader {
            tracing::info!("leading: dispatching tasks");
            self.leader = true;
            self.leases.clear();
            self.claimed.clear();
            // Every task already running gets a full lease from now.
            self.reconcile(Instant::now());
        } else if !is_leader && self.leader {
            tracing::info!("no longer leading: redirecting workers");
            self.step_down(leader);
        }
    }

    /// Drop every session (with a redirect) and all leader state.
    fn step_down(&mut self, leader: Option<pb::Redirect>) {
        self.leader = false;
        let redirect = leader.unwrap_or_default();
        for (_, s) in self.sessions.drain() {
            s.send(Out::Redirect(redirect.clone()));
        }
        self.by_worker.clear();
        self.leases.clear();
        self.claimed.clear();
        self.completions.clear();
        self.expiring.clear();
    }

    fn redirect(&self) -> pb::Redirect {
        let m = self.ctx.raft.metrics().borrow_watched().clone();
        m.current_leader
            .filter(|id| *id != self.ctx.id)
            .and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| pb::Redirect { leader_id: id, leader_addr: n.addr.clone() })
            })
            .unwrap_or_default()
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connect { hello, tx, reply } => {
                if !self.leader {
                    let _ = reply.send(Err(self.redirect()));
                    return;
                }
                let id = self.connect(hello, tx);
                let _ = reply.send(Ok(id));
            }
            Msg::Heartbeat { session, heartbeat, received } => {
                self.seen(session);
                self.heartbeat(session, heartbeat, received)
            }
            Msg::Completion { session, completion } => {
                self.seen(session);
                self.completion(session, completion)
            }
            Msg::Drain { session } => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.draining = true;
                }
            }
            Msg::Disconnect { session } => self.disconnect(session),
            Msg::Proposed(p) => self.proposed(p),
        }
    }

    fn seen(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_seen = Instant::now();
        }
    }

    fn connect(&mut self, hello: pb::Hello, tx: super::SessionTx) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        if let Some(old) = self.by_worker.insert(hello.worker_id.clone(), id) {
            // The same worker reconnected before its old stream was seen to
            // break: the new session takes over.
            self.disconnect(old);
            self.sessions.remove(&old);
        }
        let session = Session::new(&hello, tx);
        session.send(Out::Welcome(pb::Welcome { node_id: self.ctx.id, heartbeat_interval_ms: HEARTBEAT_HINT_MS }));
        self.sessions.insert(id, session);
        tracing::info!(worker = %hello.worker_id, session = id, reattach = hello.running.len(), "worker connected");
        // Re-attach what the worker still runs, as a heartbeat would.
        self.heartbeat(id, pb::Heartbeat { seq: 0, tasks: hello.running }, Instant::now());
        id
    }

    fn disconnect(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            tracing::info!(worker = %s.worker_id, session, "worker disconnected");
            if self.by_worker.get(&s.worker_id) == Some(&session) {
                self.by_worker.remove(&s.worker_id);
            }
        }
        for lease in self.leases.values_mut() {
            if lease.session == Some(session) {
                // Its lease runs on: the worker may reconnect and re-attach.
                lease.session = None;
            }
        }
    }

    /// Renew the leases a worker still holds; tell it which it lost.
    fn heartbeat(&mut self, session: SessionId, hb: pb::Heartbeat, received: Instant) {
        if !self.leader || !self.sessions.contains_key(&session) {
            return;
        }
        let (mut renewed, mut lost) = (Vec::new(), Vec::new());
        {
            let index = index::lock(&self.ctx.index);
            for r in hb.tasks {
                match index.running_task(r.task_id) {
                    Some(rt) if rt.fencing_token == r.fencing_token && !self.expiring.contains(&r.task_id) => {
                        let lease = self.leases.entry(r.task_id).or_insert_with(|| new_lease(rt, received, &index));
                        lease.deadline = received + lease.lease + lease_grace(lease.lease);
                        if lease.session != Some(session) {
                            if let Some(old) = lease.session.and_then(|s| self.sessions.get_mut(&s)) {
                                old.release(&rt.callback, r.task_id);
                            }
                            lease.session = Some(session);
                        }
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.holds(&rt.callback, r.task_id);
                        }
                        renewed.push(r);
                    }
                    _ => lost.push(r),
                }
            }
        }
        if let Some(s) = self.sessions.get(&session) {
            s.send(Out::HeartbeatAck(pb::HeartbeatAck { seq: hb.seq, renewed, lost }));
        }
    }

    fn completion(&mut self, session: SessionId, c: pb::Completion) {
        use pb::completion::Outcome as O;
        let outcome = match c.outcome {
            Some(O::Success(result)) => Outcome::Success { result },
            Some(O::Retry(f)) => {
                Outcome::Retry { error: f.error, retry_after_ms: (f.retry_after_ms > 0).then_some(f.retry_after_ms) }
            }
            Some(O::Fatal(f)) => Outcome::Fatal { error: f.error },
            Some(O::Cancelled(_)) => Outcome::Cancelled,
            None => {
                Outcome::Retry { error: "worker sent a completion without an outcome".into(), retry_after_ms: None }
            }
        };
        self.completions.push((session, Completion { task_id: c.task_id, fencing_token: c.fencing_token, outcome }));
        self.flush_completions();
    }

    fn flush_completions(&mut self) {
        if self.completing || self.completions.is_empty() || !self.leader || self.held() {
            return;
        }
        let take = self.completions.len().min(MAX_REPORT_BATCH);
        let batch: Vec<_> = self.completions.drain(..take).collect();
        let completions = batch.iter().map(|(_, c)| c.clone()).collect();
        self.completing = true;
        self.spawn_proposal(Operation::Complete { completions }, move |r| Proposal::Completed {
            batch,
            result: transitions(r),
        });
    }

    fn spawn_proposal(
        &self,
        operation: Operation,
        wrap: impl FnOnce(Result<CommandResponse, String>) -> Proposal + Send + 'static,
    ) {
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let cmd = Command { stamped_at_ms: ctx.clock.stamp(), operation };
            let result = propose(&ctx, cmd).await.map_err(|e| e.to_string());
            let _ = tx.send(Msg::Proposed(wrap(result))).await;
        });
    }

    fn proposed(&mut self, p: Proposal) {
        match p {
            Proposal::Assigned { planned, payloads, dropped, result } => {
                self.assigned(planned, payloads, dropped, result)
            }
            Proposal::Released { items, result } => {
                let results = result.unwrap_or_default();
                for (i, (task_id, token)) in items.into_iter().enumerate() {
                    self.expiring.remove(&task_id);
                    if let Some(Ok(state)) = results.get(i) {
                        tracing::info!(task_id, token, state = state.name(), "undelivered assignment released");
                        self.drop_lease(task_id);
                    }
                }
            }
            Proposal::Completed { batch, result } => {
                self.completing = false;
                let results = match result {
                    Ok(r) => r,
                    Err(e) => {
                        // Not recorded (no quorum, leadership moving): keep the
                        // reports and try again shortly, without spinning.
                        tracing::warn!(error = %e, reports = batch.len(), "completions not committed; retrying");
                        let mut retry = batch;
                        retry.append(&mut self.completions);
                        self.completions = retry;
                        self.hold_until = Some(Instant::now() + Duration::from_millis(200));
                        return;
                    }
                };
                for ((session, c), r) in batch.into_iter().zip(results) {
                    let (accepted, reason) = match &r {
                        Ok(_) => (true, String::new()),
                        Err(rej) => (false, rej.to_string()),
                    };
                    if accepted {
                        self.drop_lease(c.task_id);
                    }
                    if let Some(s) = self.sessions.get(&session) {
                        s.send(Out::CompletionAck(pb::CompletionAck {
                            task_id: c.task_id,
                            fencing_token: c.fencing_token,
                            accepted,
                            reason,
                        }));
                    }
                }
                self.flush_completions();
            }
            Proposal::Expired { items, result } => {
                let results = result.unwrap_or_default();
                for (i, (task_id, token)) in items.into_iter().enumerate() {
                    self.expiring.remove(&task_id);
                    if let Some(Ok(state)) = results.get(i) {
                        tracing::info!(task_id, token, state = state.name(), "lease expired");
                        if let Some(session) = self.leases.get(&task_id).and_then(|l| l.session) {
                            if let Some(s) = self.sessions.get_mut(&session) {
                                s.suspect();
                                let lost = vec![leased_ref(task_id, token)];
                                s.send(Out::HeartbeatAck(pb::HeartbeatAck { seq: 0, renewed: vec![], lost }));
                            }
                        }
                        self.drop_lease(task_id);
                    }
                }
            }
        }
    }

    /// Backing off after a failed proposal.
    fn held(&self) -> bool {
        self.hold_until.is_some_and(|t| Instant::now() < t)
    }

    fn drop_lease(&mut self, task_id: u64) {
        if let Some(l) = self.leases.remove(&task_id) {
            if let Some(s) = l.session.and_then(|s| self.sessions.get_mut(&s)) {
                s.release(&l.callback, task_id);
            }
        }
    }

    fn assigned(
        &mut self,
        planned: Vec<Planned>,
        payloads: Vec<Vec<u8>>,
        dropped: Vec<Planned>,
        result: Result<Vec<Result<Leased, Rejection>>, String>,
    ) {
        self.assigning = false;
        for p in planned.iter().chain(&dropped) {
            self.claimed.remove(&p.task_id);
            if let Some(s) = self.sessions.get_mut(&p.session) {
                if let Some(r) = s.reserved.get_mut(&p.callback) {
                    *r = r.saturating_sub(1);
                }
            }
        }
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, tasks = planned.len(), "assignment not committed; the tasks stay pending");
                self.hold_until = Some(Instant::now() + Duration::from_millis(200));
                return;
            }
        };
        let now = Instant::now();
        let mut undelivered = Vec::new();
        for ((p, r), payload) in planned.into_iter().zip(results).zip(payloads) {
            let leased = match r {
                Ok(l) => l,
                Err(rej) => {
                    tracing::debug!(task_id = p.task_id, reason = %rej, "assignment skipped");
                    continue;
                }
            };
            // The lease starts before the assignment is sent, so the worker's
            // view of it (from receipt) never starts earlier than ours.
            self.leases.insert(
                p.task_id,
                Lease {
                    token: leased.fencing_token,
                    callback: p.callback.clone(),
                    session: None,
                    lease: p.lease,
                    deadline: now + p.lease + lease_grace(p.lease),
                    timeout_at: now + p.timeout + lease_grace(p.lease),
                    cancel_sent: false,
                },
            );
            let assignment = pb::Assignment {
                task_id: p.task_id,
                callback: p.callback.clone(),
                payload,
                attempt: leased.attempt,
                fencing_token: leased.fencing_token,
                lease_ms: p.lease.as_millis() as u64,
                timeout_ms: p.timeout.as_millis() as u64,
                priority: u32::from(p.priority),
            };
            let delivered = match self.sessions.get_mut(&p.session) {
                Some(s) if s.send(Out::Assignment(assignment)) => {
                    s.holds(&p.callback, p.task_id);
                    true
                }
                _ => false,
            };
            if delivered {
                if let Some(lease) = self.leases.get_mut(&p.task_id) {
                    lease.session = Some(p.session);
                }
            } else {
                // The worker's stream is full or gone: it never got the task.
                // Release it now rather than let the lease lapse and count an
                // attempt that never ran. If the release does not commit,
                // the lease expires as usual.
                undelivered.push(Expiry {
                    task_id: p.task_id,
                    fencing_token: leased.fencing_token,
                    reason: "the assignment could not be delivered to its worker".into(),
                });
            }
        }
        if !undelivered.is_empty() {
            tracing::info!(tasks = undelivered.len(), "releasing assignments that could not be delivered");
            let items: Vec<(u64, u64)> = undelivered.iter().map(|e| (e.task_id, e.fencing_token)).collect();
            self.expiring.extend(items.iter().map(|(id, _)| *id));
            self.spawn_proposal(Operation::Release { leases: undelivered }, move |r| Proposal::Released {
                items,
                result: transitions(r),
            });
        }
    }

    /// Reconcile leases with the live index: adopt running tasks we do not
    /// track (a full lease from now), drop leases of tasks no longer
    /// running, and pass on cancel requests.
    fn reconcile(&mut self, now: Instant) {
        let index = index::lock(&self.ctx.index);
        let running = index.running();
        self.leases.retain(|id, l| running.get(id).is_some_and(|rt| rt.fencing_token == l.token));
        for (id, rt) in running {
            let lease = self.leases.entry(*id).or_insert_with(|| new_lease(rt, now, &index));
            if lease.session.is_none() {
                lease.session = self.by_worker.get(&rt.worker).copied();
            }
            if rt.cancel_requested && !lease.cancel_sent {
                if let Some(s) = lease.session.and_then(|s| self.sessions.get(&s)) {
                    lease.cancel_sent = s.send(Out::Cancel(leased_ref(*id, rt.fencing_token)));
                }
            }
        }
        // Sessions hold exactly the tasks whose leases name them.
        let mut held: HashMap<SessionId, HashMap<String, HashSet<u64>>> = HashMap::new();
        for (id, l) in &self.leases {
            if let Some(s) = l.session {
                held.entry(s).or_default().entry(l.callback.clone()).or_default().insert(*id);
            }
        }
        for (id, s) in self.sessions.iter_mut() {
            s.running = held.remove(id).unwrap_or_default();
        }
        self.last_reconcile = now;
    }

    /// Periodic work: reconcile, and expire lapsed leases.
    fn maintain(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_reconcile) >= RECONCILE_EVERY {
            self.reconcile(now);
        }
        let mut expiries = Vec::new();
        for (id, l) in &self.leases {
            if self.expiring.contains(id) || expiries.len() >= MAX_REPORT_BATCH {
                continue;
            }
            let reason = if now >= l.timeout_at {
                format!("timed out (no result within the callback's timeout, attempt lease {:?})", l.lease)
            } else if now >= l.deadline {
                format!("lease of {:?} expired: the worker stopped renewing it", l.lease)
            } else {
                continue;
            };
            expiries.push(Expiry { task_id: *id, fencing_token: l.token, reason });
        }
        if expiries.is_empty() {
            return;
        }
        let items: Vec<(u64, u64)> = expiries.iter().map(|e| (e.task_id, e.fencing_token)).collect();
        self.expiring.extend(items.iter().map(|(id, _)| *id));
        self.spawn_proposal(Operation::Expire { leases: expiries }, move |r| Proposal::Expired {
            items,
            result: transitions(r),
        });
    }

    /// Pick ready tasks for sessions with free credits and propose one
    /// `Assign` for all of them.
    fn dispatch(&mut self) {
        if self.assigning || self.sessions.is_empty() || self.held() {
            return;
        }
        let now_ms = self.ctx.clock.stamp();
        let aging_ms = self.ctx.config.priority_aging.as_millis() as u64;
        let callbacks: BTreeSet<String> =
            self.sessions.values().flat_map(|s| s.credits.keys().filter(|c| s.free(c) > 0).cloned()).collect();
        let mut planned = Vec::new();
        {
            let index = index::lock(&self.ctx.index);
            for name in callbacks {
                if planned.len() >= MAX_ASSIGN_BATCH {
                    break;
                }
                let Some(config) = index.callback(&name) else { continue };
                let running = index.queues(&name).map_or(0, |q| q.running) as u32;
                let cap = if config.concurrency == 0 { u32::MAX } else { config.concurrency.saturating_sub(running) };
                let mut free: Vec<(SessionId, u32)> =
                    self.sessions.iter().map(|(id, s)| (*id, s.free(&name))).filter(|(_, f)| *f > 0).collect();
                free.sort_unstable();
                let total: u32 = free.iter().map(|(_, f)| *f).sum();
                let n = cap.min(total).min((MAX_ASSIGN_BATCH - planned.len()) as u32) as usize;
                if n == 0 {
                    continue;
                }
                let picked = index.pick(&name, now_ms, n, &self.claimed, aging_ms);
                // Round-robin over sessions with free credits.
                let mut slot = 0;
                for task in picked {
                    while free[slot % free.len()].1 == 0 {
                        slot += 1;
                    }
                    let i = slot % free.len();
                    free[i].1 -= 1;
                    slot += 1;
                    planned.push(Planned {
                        task_id: task.id,
                        session: free[i].0,
                        callback: name.clone(),
                        priority: task.priority,
                        lease: Duration::from_millis(config.lease_ms),
                        timeout: Duration::from_millis(config.timeout_ms),
                    });
                }
            }
        }
        if planned.is_empty() {
            return;
        }
        for p in &planned {
            self.claimed.insert(p.task_id);
            if let Some(s) = self.sessions.get_mut(&p.session) {
                *s.reserved.entry(p.callback.clone()).or_default() += 1;
            }
        }
        let workers: Vec<String> = planned
            .iter()
            .map(|p| self.sessions.get(&p.session).map(|s| s.worker_id.clone()).unwrap_or_default())
            .collect();
        self.assigning = true;
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let proposal = propose_assignments(ctx, planned, workers).await;
            let _ = tx.send(Msg::Proposed(proposal)).await;
        });
    }

    /// When to look again: the next lease deadline, the next delayed task
    /// that a free worker could take, or [`MAX_IDLE`].
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + MAX_IDLE;
        if !self.leader || self.assigning {
            return wake;
        }
        let now_ms = self.ctx.clock.stamp();
        let index = index::lock(&self.ctx.index);
        for s in self.sessions.values() {
            for callback in s.credits.keys().filter(|c| s.free(c) > 0) {
                if let Some(at) = index.next_run_at(callback, &self.claimed) {
                    wake = wake.min(now + Duration::from_millis(at.saturating_sub(now_ms)));
                }
            }
        }
        wake
    }
}

/// Read the rows (attempt counts) and payloads of planned tasks off the
/// async runtime, then propose one `Assign` for those that could be read.
async fn propose_assignments(ctx: NodeContext, planned: Vec<Planned>, workers: Vec<String>) -> Proposal {
    let store = ctx.store.clone();
    let ids: Vec<u64> = planned.iter().map(|p| p.task_id).collect();
    let n = ids.len();
    let read = tokio::task::spawn_blocking(move || {
        ids.into_iter()
            .map(|id| match (store.get(id), store.payload(id)) {
                (Ok(Some(t)), Ok(payload)) => Some((t.attempts, payload.unwrap_or_default())),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(task_id = id, error = %e, "reading a task to assign; it stays pending");
                    None
                }
                (Ok(None), _) => None,
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|_| vec![None; n]);
    let (mut kept, mut payloads, mut dropped, mut assignments) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((p, worker), row) in planned.into_iter().zip(workers).zip(read) {
        match row {
            Some((attempts_seen, payload)) => {
                assignments.push(crate::domain::Assignment { task_id: p.task_id, worker, attempts_seen });
                payloads.push(payload);
                kept.push(p);
            }
            None => dropped.push(p),
        }
    }
    let result = if assignments.is_empty() {
        Ok(Vec::new())
    } else {
        let cmd = Command { stamped_at_ms: ctx.clock.stamp(), operation: Operation::Assign { assignments } };
        match propose(&ctx, cmd).await {
            Ok(CommandResponse::Assigned(v)) => Ok(v),
            Ok(other) => Err(format!("unexpected reply {other}")),
            Err(e) => Err(e.to_string()),
        }
    };
    Proposal::Assigned { planned: kept, payloads, dropped, result }
}

fn new_lease(rt: &RunningTask, from: Instant, index: &index::LiveIndex) -> Lease {
    let config = index
        .callback(&rt.callback)
        .cloned()
        .unwrap_or_else(|| crate::domain::CallbackConfig::with_defaults(rt.callback.clone()));
    let lease = Duration::from_millis(config.lease_ms);
    Lease {
        token: rt.fencing_token,
        callback: rt.callback.clone(),
        session: None,
        lease,
        deadline: from + lease + lease_grace(lease),
        timeout_at: from + Duration::from_millis(config.timeout_ms) + lease_grace(lease),
        cancel_sent: false,
    }
}

fn transitions(r: Result<CommandResponse, String>) -> Result<Vec<Result<TaskState, Rejection>>, String> {
    match r {
        Ok(CommandResponse::Transitioned(v)) => Ok(v),
        Ok(other) => Err(format!("unexpected reply {other}")),
        Err(e) => Err(e),
    }
}
