//! Picking ready tasks for workers with free credits, proposing one
//! `Assign` for them, and handing the committed assignments out.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::dispatcher::{Dispatcher, Proposal, ProposalFailed, MAX_IDLE};
use super::leases::Lease;
use super::protocol::{Assignment, ToWorker};
use super::rate::TokenBucket;
use super::{Deps, Msg, SessionId};
use crate::domain::{Command, CommandResponse, Expiry, Leased, Operation, Rejection};
use crate::store::index;

/// Most tasks proposed in one `Assign` entry.
const MAX_ASSIGN_BATCH: usize = 1024;

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

impl Dispatcher {
    /// Pick ready tasks for sessions with free credits and propose one
    /// `Assign` for all of them.
    pub(super) fn dispatch(&mut self) {
        if self.assigning || self.sessions.is_empty() || self.held() {
            return;
        }
        let planned = self.plan();
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
        let deps = self.deps.clone();
        let tx = self.tx.clone();
        self.deps.tasks.spawn(async move {
            let proposal = propose_assignments(deps, planned, workers).await;
            let _ = tx.send(Msg::Proposed(proposal)).await;
        });
    }

    /// Which ready tasks go to which sessions: per callback, within its
    /// concurrency limit and the sessions' free credits, round-robin.
    fn plan(&mut self) -> Vec<Planned> {
        let now_ms = self.deps.clock.stamp();
        let now = Instant::now();
        let aging_ms = self.deps.priority_aging.as_millis() as u64;
        let callbacks: BTreeSet<String> =
            self.sessions.values().flat_map(|s| s.credits.keys().filter(|c| s.free(c) > 0).cloned()).collect();
        let mut planned = Vec::new();
        let index = index::lock(&self.deps.index);
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
            let mut n = cap.min(total).min((MAX_ASSIGN_BATCH - planned.len()) as u32);
            let bucket = config.rate.map(|limit| {
                let bucket = self.buckets.entry(name.clone()).or_insert_with(|| TokenBucket::empty(now));
                n = n.min(bucket.available(&limit, now));
                bucket
            });
            if n == 0 {
                continue;
            }
            let picked = index.pick(&name, now_ms, n as usize, &self.claimed, aging_ms);
            if let Some(bucket) = bucket {
                bucket.take(picked.len() as u32);
            }
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
        planned
    }

    /// An `Assign` came back: hand each committed assignment to its
    /// session, and release those that cannot be handed over.
    pub(super) fn assigned(
        &mut self,
        planned: Vec<Planned>,
        payloads: Vec<Inputs>,
        dropped: Vec<Planned>,
        result: Result<Vec<Result<Leased, Rejection>>, ProposalFailed>,
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
                self.hold();
                return;
            }
        };
        let now = Instant::now();
        let mut undelivered = Vec::new();
        for ((p, r), inputs) in planned.into_iter().zip(results).zip(payloads) {
            let leased = match r {
                Ok(l) => l,
                Err(rej) => {
                    tracing::debug!(task_id = p.task_id, callback = %p.callback, reason = %rej, "assignment skipped");
                    continue;
                }
            };
            // The lease starts before the assignment is sent, so the worker's
            // view of it (from receipt) never starts earlier than ours.
            let mut lease = Lease::granted(leased.fencing_token, p.callback.clone(), p.lease, p.timeout, now);
            let worker = self.sessions.get(&p.session).map_or("", |s| s.worker_id.as_str());
            let assigned = super::spans::Assigned {
                task_id: p.task_id,
                callback: &p.callback,
                attempt: leased.attempt,
                fencing_token: leased.fencing_token,
                worker,
                ready_at_ms: inputs.ready_at_ms,
            };
            let trace = self.spans.assigned(&assigned, inputs.trace.as_ref(), &inputs.links);
            let assignment = Assignment {
                task_id: p.task_id,
                callback: p.callback.clone(),
                payload: inputs.payload,
                upstream: inputs.upstream,
                attempt: leased.attempt,
                fencing_token: leased.fencing_token,
                lease_ms: p.lease.as_millis() as u64,
                timeout_ms: p.timeout.as_millis() as u64,
                priority: p.priority,
                trace,
                links: inputs.links,
            };
            match self.sessions.get_mut(&p.session) {
                Some(s) if s.send(ToWorker::Assignment(assignment)) => {
                    s.holds(&p.callback, p.task_id);
                    lease.session = Some(p.session);
                }
                // The worker's stream is full or gone: it never got the task.
                _ => undelivered.push(Expiry {
                    task_id: p.task_id,
                    fencing_token: leased.fencing_token,
                    reason: "the assignment could not be delivered to its worker".into(),
                }),
            }
            self.leases.insert(p.task_id, lease);
        }
        self.release(undelivered);
    }

    /// When to look again: the next delayed task that a free worker could
    /// take, or [`MAX_IDLE`].
    pub(super) fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + MAX_IDLE;
        if !self.leader || self.assigning {
            return wake;
        }
        // Holding after a failed proposal: nothing is dispatched before
        // the hold ends, so waking sooner would spin.
        if let Some(until) = self.hold_until.filter(|t| *t > now) {
            return until;
        }
        let now_ms = self.deps.clock.stamp();
        let index = index::lock(&self.deps.index);
        for s in self.sessions.values() {
            for callback in s.credits.keys().filter(|c| s.free(c) > 0) {
                // A callback at its concurrency limit starts nothing until
                // one of its runs ends, which an apply announces; and a
                // rate-limited one nothing before its next token. Waking
                // for its due tasks sooner would spin (found by the
                // simulation: a leader at 100% CPU while a callback sat at
                // its limit).
                let Some(config) = index.callback(callback) else { continue };
                let running = index.queues(callback).map_or(0, |q| q.running) as u32;
                if config.concurrency != 0 && running >= config.concurrency {
                    continue;
                }
                let token = match (&config.rate, self.buckets.get(callback)) {
                    (Some(limit), Some(bucket)) => bucket.until_next(limit, now),
                    _ => Duration::ZERO,
                };
                if let Some(at) = index.next_run_at(callback, now_ms, &self.claimed) {
                    wake = wake.min(now + Duration::from_millis(at.saturating_sub(now_ms)).max(token));
                }
            }
        }
        wake
    }
}

/// What a worker gets with a task besides its identity.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub payload: Vec<u8>,
    /// Its parents' states and results, for a task scheduled after others.
    pub upstream: Option<crate::domain::dependency::Upstream>,
    /// Its trace context and the ones its spans link to.
    pub trace: Option<crate::domain::trace::TraceContext>,
    pub links: Vec<crate::domain::trace::TraceContext>,
    /// When it became due (its last wait's start or its run-at, whichever
    /// is later; replicated time, Unix ms): its queue wait starts there.
    pub ready_at_ms: u64,
}

/// Read the rows (attempt counts), payloads and parents' results of planned
/// tasks off the async runtime, then propose one `Assign` for those that
/// could be read.
async fn propose_assignments(deps: Deps, planned: Vec<Planned>, workers: Vec<String>) -> Proposal {
    let store = deps.store.clone();
    let ids: Vec<u64> = planned.iter().map(|p| p.task_id).collect();
    let n = ids.len();
    let read = crate::blocking::run(move || {
        ids.into_iter()
            .map(|id| match (store.get(id), store.payload(id), store.upstream(id)) {
                (Ok(Some(t)), Ok(payload), Ok(upstream)) => {
                    // A trace context that cannot be read costs the task its
                    // trace, not its run.
                    let (trace, links) = store.trace_of(&t).unwrap_or_else(|e| {
                        tracing::warn!(task_id = id, error = %e, "reading a task's trace context");
                        (None, Vec::new())
                    });
                    let waiting_since = t.history.last().map_or(t.created_at_ms, |h| h.at_ms);
                    let ready_at_ms = waiting_since.max(t.run_at_ms);
                    let payload = payload.unwrap_or_default();
                    Some((t.attempts, Inputs { payload, upstream, trace, links, ready_at_ms }))
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    tracing::error!(task_id = id, error = %e, "reading a task to assign; it stays pending");
                    None
                }
                (Ok(None), _, _) => None,
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
        let cmd = Command { stamped_at_ms: deps.clock.stamp(), operation: Operation::Assign { assignments } };
        match deps.consensus.propose(cmd).await {
            Ok(CommandResponse::Assigned(v)) => Ok(v),
            Ok(other) => Err(ProposalFailed::Unexpected(other)),
            Err(e) => Err(e.into()),
        }
    };
    Proposal::Assigned { planned: kept, payloads, dropped, result }
}
