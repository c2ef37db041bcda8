//! Leases as the leader tracks them, on its own monotonic clock: renewal by
//! heartbeats, reconciliation with the live index, expiry, and the release
//! of assignments that never reached their worker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::dispatcher::{transitions, Dispatcher, LeaseEnd, Proposal, Transitions, MAX_REPORT_BATCH};
use super::protocol::{Heartbeat, TaskRef, ToWorker};
use super::{lease_grace, SessionId};
use crate::domain::{CallbackConfig, Expiry, Operation};
use crate::store::index::{self, LiveIndex, RunningTask};

/// How often leases are reconciled with the live index.
const RECONCILE_EVERY: Duration = Duration::from_millis(100);

/// A lease as the leader tracks it.
pub(super) struct Lease {
    pub token: u64,
    pub callback: String,
    /// The session that holds it; `None` while its worker is disconnected
    /// (it may reconnect and re-attach) or before the assignment is sent.
    pub session: Option<SessionId>,
    pub lease: Duration,
    /// Expire after this (lease plus grace from the last renewal).
    pub deadline: Instant,
    /// Expire after this regardless of renewals (timeout plus grace).
    pub timeout_at: Instant,
    pub cancel_sent: bool,
    /// Its worker's credential was revoked: when it lapses, the task is
    /// released (no attempt counted) rather than expired. A renewal by a
    /// session with a valid credential clears it.
    pub release_at_lapse: bool,
}

impl Lease {
    /// A lease granted at `from` for an assignment just committed.
    pub fn granted(token: u64, callback: String, lease: Duration, timeout: Duration, from: Instant) -> Lease {
        Lease {
            token,
            callback,
            session: None,
            lease,
            deadline: from + lease + lease_grace(lease),
            timeout_at: from + timeout + lease_grace(lease),
            cancel_sent: false,
            release_at_lapse: false,
        }
    }

    /// A full lease from `from` for a task found running (a new leader's
    /// takeover, or a re-attach).
    fn adopted(rt: &RunningTask, from: Instant, index: &LiveIndex) -> Lease {
        let config =
            index.callback(&rt.callback).cloned().unwrap_or_else(|| CallbackConfig::with_defaults(rt.callback.clone()));
        Lease::granted(
            rt.fencing_token,
            rt.callback.clone(),
            Duration::from_millis(config.lease_ms),
            Duration::from_millis(config.timeout_ms),
            from,
        )
    }
}

impl Dispatcher {
    /// Renew the leases a worker still holds; tell it which it lost.
    pub(super) fn heartbeat(&mut self, session: SessionId, hb: Heartbeat, received: Instant) {
        if !self.leader || !self.sessions.contains_key(&session) {
            return;
        }
        let (mut renewed, mut lost) = (Vec::new(), Vec::new());
        {
            let index = index::lock(&self.deps.index);
            for r in hb.tasks {
                match index.running_task(r.task_id) {
                    Some(rt) if rt.fencing_token == r.fencing_token && !self.expiring.contains(&r.task_id) => {
                        let lease =
                            self.leases.entry(r.task_id).or_insert_with(|| Lease::adopted(rt, received, &index));
                        lease.deadline = received + lease.lease + lease_grace(lease.lease);
                        lease.release_at_lapse = false;
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
            s.send(ToWorker::HeartbeatAck { seq: hb.seq, renewed, lost });
        }
    }

    /// Reconcile leases with the live index: adopt running tasks we do not
    /// track (a full lease from now), drop leases of tasks no longer
    /// running, and pass on cancel requests.
    pub(super) fn reconcile(&mut self, now: Instant) {
        let index = index::lock(&self.deps.index);
        let running = index.running();
        self.leases.retain(|id, l| running.get(id).is_some_and(|rt| rt.fencing_token == l.token));
        let leases = &self.leases;
        self.spans.retain(|id| leases.contains_key(&id));
        for (id, rt) in running {
            let lease = self.leases.entry(*id).or_insert_with(|| Lease::adopted(rt, now, &index));
            if lease.session.is_none() {
                lease.session = self.by_worker.get(&rt.worker).copied();
            }
            if rt.cancel_requested && !lease.cancel_sent {
                if let Some(s) = lease.session.and_then(|s| self.sessions.get(&s)) {
                    lease.cancel_sent =
                        s.send(ToWorker::Cancel(TaskRef { task_id: *id, fencing_token: rt.fencing_token }));
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

    /// Periodic work: close streams whose credential lapsed, reconcile,
    /// and expire lapsed leases (or release those of revoked workers).
    pub(super) fn maintain(&mut self) {
        let now = Instant::now();
        self.check_grants(now);
        if now.duration_since(self.last_reconcile) >= RECONCILE_EVERY {
            self.reconcile(now);
        }
        if self.held() {
            return;
        }
        let (mut expiries, mut releases) = (Vec::new(), Vec::new());
        for (id, l) in &self.leases {
            if self.expiring.contains(id) || expiries.len() + releases.len() >= MAX_REPORT_BATCH {
                continue;
            }
            if l.release_at_lapse && now >= l.deadline.min(l.timeout_at) {
                let reason = "its worker's credential was revoked or expired".to_string();
                releases.push(Expiry { task_id: *id, fencing_token: l.token, reason });
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
        self.end_leases(expiries, LeaseEnd::Expired);
        self.release(releases);
    }

    /// Release assignments that never reached their worker: back to
    /// pending at once, the attempt not counted. If the release does not
    /// commit, the lease expires as usual.
    pub(super) fn release(&mut self, undelivered: Vec<Expiry>) {
        if !undelivered.is_empty() {
            tracing::info!(tasks = undelivered.len(), "releasing assignments that could not be delivered");
        }
        self.end_leases(undelivered, LeaseEnd::Released);
    }

    /// Propose the end of these leases (an `Expire` or a `Release`).
    fn end_leases(&mut self, leases: Vec<Expiry>, how: LeaseEnd) {
        if leases.is_empty() {
            return;
        }
        let items = refs(&leases);
        self.expiring.extend(items.iter().map(|r| r.task_id));
        let operation = match how {
            LeaseEnd::Expired => Operation::Expire { leases },
            LeaseEnd::Released => Operation::Release { leases },
        };
        self.spawn_proposal(operation, move |r| Proposal::LeasesEnded { items, how, result: transitions(r) });
    }

    /// The leases' end was applied (or failed): forget the ones that ended.
    /// A worker whose lease expired is told it lost the task; a released
    /// assignment never reached its worker.
    pub(super) fn leases_ended(&mut self, items: Vec<TaskRef>, how: LeaseEnd, result: Transitions) {
        if result.is_err() {
            // Not proposed (no quorum, not leading): back off before
            // proposing again, or a leader that lost its quorum would spin
            // (found by the simulation).
            self.hold();
        }
        let results = result.unwrap_or_default();
        for (i, r) in items.into_iter().enumerate() {
            self.expiring.remove(&r.task_id);
            let Some(Ok(state)) = results.get(i) else { continue };
            self.spans.ended(
                r.task_id,
                match how {
                    LeaseEnd::Expired => "the lease expired",
                    LeaseEnd::Released => "the assignment could not be delivered",
                },
            );
            let callback = self.leases.get(&r.task_id).map(|l| l.callback.clone()).unwrap_or_default();
            match how {
                LeaseEnd::Expired => {
                    tracing::info!(task_id = r.task_id, %callback, token = r.fencing_token, state = state.name(), "lease expired");
                    if let Some(session) = self.leases.get(&r.task_id).and_then(|l| l.session) {
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.suspect();
                            s.send(ToWorker::HeartbeatAck { seq: 0, renewed: vec![], lost: vec![r] });
                        }
                    }
                }
                LeaseEnd::Released => tracing::info!(
                    task_id = r.task_id,
                    %callback,
                    token = r.fencing_token,
                    state = state.name(),
                    "undelivered assignment released"
                ),
            }
            self.drop_lease(r.task_id);
        }
    }

    pub(super) fn drop_lease(&mut self, task_id: u64) {
        if let Some(l) = self.leases.remove(&task_id) {
            if let Some(s) = l.session.and_then(|s| self.sessions.get_mut(&s)) {
                s.release(&l.callback, task_id);
            }
        }
    }
}

fn refs(expiries: &[Expiry]) -> Vec<TaskRef> {
    expiries.iter().map(|e| TaskRef { task_id: e.task_id, fencing_token: e.fencing_token }).collect()
}
