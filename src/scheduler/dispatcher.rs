//! The dispatcher actor: owns worker sessions, leases and in-flight
//! proposals; active while its node leads. See the module doc of
//! [`crate::scheduler`].
//!
//! This file has the actor loop, leadership, and the worker messages;
//! [`super::assign`] picks and assigns tasks; [`super::leases`] tracks,
//! renews, expires and releases leases.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::assign::Planned;
use super::leases::Lease;
use super::protocol::{FromWorker, Heartbeat, Hello, TaskRef, ToWorker};
use super::session::Session;
use super::{Deps, Msg, SessionId};
use crate::consensus::{ConsensusError, Peer};
use crate::domain::{Command, CommandResponse, Completion, Leased, Operation, Rejection, TaskState};

/// Most completions or expiries in one entry.
pub(super) const MAX_REPORT_BATCH: usize = 4096;
/// Longest the dispatcher sleeps without looking at its timers.
pub(super) const MAX_IDLE: Duration = Duration::from_millis(50);
/// After a proposal that did not commit, wait this long before the next
/// (no busy loop while the cluster cannot commit).
const HOLD_AFTER_FAILURE: Duration = Duration::from_millis(200);
/// Heartbeat period advised to workers (they also heartbeat at a third of
/// their shortest lease).
const HEARTBEAT_HINT_MS: u64 = 1000;

/// Why a proposal the dispatcher made did not give the reply it expected.
#[derive(Debug, thiserror::Error)]
pub enum ProposalFailed {
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    #[error("unexpected state machine reply: {0}")]
    Unexpected(CommandResponse),
}

pub type Transitions = Result<Vec<Result<TaskState, Rejection>>, ProposalFailed>;

/// Results of proposals, sent back to the actor.
pub enum Proposal {
    /// An `Assign` was proposed for `planned` (whose payloads were read
    /// before proposing); `dropped` were planned but not proposed (their row
    /// or payload could not be read).
    Assigned {
        planned: Vec<Planned>,
        payloads: Vec<super::assign::Inputs>,
        dropped: Vec<Planned>,
        result: Result<Vec<Result<Leased, Rejection>>, ProposalFailed>,
    },
    Completed {
        batch: Vec<(SessionId, Completion)>,
        result: Transitions,
    },
    LeasesEnded {
        items: Vec<TaskRef>,
        how: LeaseEnd,
        result: Transitions,
    },
}

/// How leases ended: lapsed (or timed out), or released because the
/// assignment never reached its worker.
#[derive(Debug, Clone, Copy)]
pub enum LeaseEnd {
    Expired,
    Released,
}

pub struct Dispatcher {
    pub(super) deps: Deps,
    rx: mpsc::Receiver<Msg>,
    pub(super) tx: mpsc::Sender<Msg>,
    pub(super) leader: bool,
    pub(super) sessions: HashMap<SessionId, Session>,
    pub(super) by_worker: HashMap<String, SessionId>,
    next_session: SessionId,
    pub(super) leases: HashMap<u64, Lease>,
    /// Picked tasks whose `Assign` is in flight.
    pub(super) claimed: HashSet<u64>,
    pub(super) assigning: bool,
    pub(super) completions: Vec<(SessionId, Completion)>,
    completing: bool,
    /// Tasks with an `Expire` or `Release` in flight.
    pub(super) expiring: HashSet<u64>,
    pub(super) last_reconcile: Instant,
    /// After a failed proposal, wait until then before trying again.
    pub(super) hold_until: Option<Instant>,
    /// Start-rate buckets of rate-limited callbacks; emptied whenever this
    /// node starts leading.
    pub(super) buckets: HashMap<String, super::rate::TokenBucket>,
    /// Sessions closed because their grant was revoked or expired, until
    /// their stream's pump says it ended: what they still send is refused.
    pub(super) revoked: HashSet<SessionId>,
    /// When the sessions' grants were last checked.
    pub(super) last_grant_check: Instant,
    /// The spans of traced tasks' attempts, from assignment to end.
    pub(super) spans: super::spans::TaskSpans,
}

impl Dispatcher {
    pub fn new(deps: Deps, rx: mpsc::Receiver<Msg>, tx: mpsc::Sender<Msg>) -> Self {
        Dispatcher {
            deps,
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
            buckets: HashMap::new(),
            revoked: HashSet::new(),
            last_grant_check: Instant::now(),
            spans: super::spans::TaskSpans::default(),
        }
    }

    #[tracing::instrument(name = "dispatcher", skip_all, fields(node_id = self.deps.consensus.id()))]
    pub async fn run(mut self, stop: CancellationToken) {
        let mut leadership = self.deps.consensus.watch();
        let mut applied = self.deps.applied.clone();
        self.update_leadership(leadership.current().ready, leadership.current().leader);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                msg = self.rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                alive = leadership.changed() => {
                    if !alive { break }
                    let l = leadership.current();
                    self.update_leadership(l.ready, l.leader);
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

    fn update_leadership(&mut self, ready: bool, leader: Option<Peer>) {
        // Lead only once the state machine holds everything earlier leaders
        // committed: then re-attaching workers find their tasks.
        if ready && !self.leader {
            tracing::info!("leading: dispatching tasks");
            self.leader = true;
            self.leases.clear();
            self.spans.clear();
            self.claimed.clear();
            // No credit carried over from an earlier term (see `rate`).
            self.buckets.clear();
            // Every task already running gets a full lease from now.
            self.reconcile(Instant::now());
        } else if !ready && self.leader {
            tracing::info!("no longer leading: redirecting workers");
            self.step_down(leader.filter(|p| p.id != self.deps.consensus.id()));
        }
    }

    /// Drop every session (with a redirect) and all leader state.
    fn step_down(&mut self, leader: Option<Peer>) {
        self.leader = false;
        for (_, s) in self.sessions.drain() {
            s.send(ToWorker::Redirect(leader.clone()));
        }
        self.by_worker.clear();
        self.publish_worker_gauges();
        self.leases.clear();
        self.spans.clear();
        self.claimed.clear();
        self.completions.clear();
        self.expiring.clear();
        self.revoked.clear();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Connect { hello, grant, tx, reply } => {
                if !self.leader {
                    let leader = self.deps.consensus.leadership().leader.filter(|p| p.id != self.deps.consensus.id());
                    let _ = reply.send(Err(leader));
                    return;
                }
                let id = self.connect(hello, grant, tx);
                let _ = reply.send(Ok(id));
            }
            Msg::FromWorker { session, msg, received } => {
                if self.revoked.contains(&session) {
                    // Its credential no longer holds: nothing it says counts
                    // (a completion is refused; the task is released).
                    tracing::debug!(session, "message on a revoked worker stream refused");
                    return;
                }
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.last_seen = Instant::now();
                }
                match msg {
                    FromWorker::Heartbeat(hb) => self.heartbeat(session, hb, received),
                    FromWorker::Completion(c) => {
                        self.completions.push((session, c));
                        self.flush_completions();
                    }
                    FromWorker::Drain => {
                        if let Some(s) = self.sessions.get_mut(&session) {
                            s.draining = true;
                        }
                    }
                }
            }
            Msg::Disconnect { session } => {
                self.revoked.remove(&session);
                self.disconnect(session)
            }
            Msg::Proposed(p) => self.proposed(p),
            Msg::ListWorkers { reply } => {
                let _ = reply.send(self.leader.then(|| self.worker_views()));
            }
        }
    }

    fn worker_views(&self) -> Vec<super::protocol::WorkerView> {
        let mut out: Vec<super::protocol::WorkerView> = self
            .sessions
            .values()
            .map(|s| {
                let mut callbacks: Vec<(String, u32, Vec<u64>)> = s
                    .credits
                    .iter()
                    .map(|(cb, credits)| {
                        let mut running: Vec<u64> =
                            s.running.get(cb).map(|r| r.iter().copied().collect()).unwrap_or_default();
                        running.sort_unstable();
                        (cb.clone(), *credits, running)
                    })
                    .collect();
                callbacks.sort();
                super::protocol::WorkerView {
                    worker_id: s.worker_id.clone(),
                    callbacks,
                    draining: s.draining,
                    idle_ms: s.last_seen.elapsed().as_millis() as u64,
                }
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    /// Publish the sessions and their credits per callback (every
    /// registered callback, so that one whose workers left shows 0).
    fn publish_worker_gauges(&self) {
        use crate::metrics as m;
        metrics::gauge!(m::WORKERS).set(self.sessions.len() as f64);
        let names: Vec<String> =
            crate::store::index::lock(&self.deps.index).callbacks().map(|c| c.name.clone()).collect();
        for name in names {
            let credits: u32 = self.sessions.values().filter_map(|s| s.credits.get(&name)).sum();
            metrics::gauge!(m::WORKER_CREDITS, "callback" => name).set(f64::from(credits));
        }
    }

    fn connect(&mut self, hello: Hello, grant: Option<String>, tx: super::SessionTx) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        if let Some(old) = self.by_worker.insert(hello.worker_id.clone(), id) {
            // The same worker reconnected before its old stream was seen to
            // break: the new session takes over.
            self.disconnect(old);
            self.sessions.remove(&old);
        }
        let session = Session::new(&hello, grant, tx);
        session.send(ToWorker::Welcome { node_id: self.deps.consensus.id(), heartbeat_interval_ms: HEARTBEAT_HINT_MS });
        self.sessions.insert(id, session);
        tracing::info!(worker = %hello.worker_id, session = id, reattach = hello.running.len(), "worker connected");
        // Re-attach what the worker still runs, as a heartbeat would.
        self.heartbeat(id, Heartbeat { seq: 0, tasks: hello.running }, Instant::now());
        self.publish_worker_gauges();
        id
    }

    pub(super) fn disconnect(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            tracing::info!(worker = %s.worker_id, session, "worker disconnected");
            if self.by_worker.get(&s.worker_id) == Some(&session) {
                self.by_worker.remove(&s.worker_id);
            }
            self.publish_worker_gauges();
        }
        for lease in self.leases.values_mut() {
            if lease.session == Some(session) {
                // Its lease runs on: the worker may reconnect and re-attach.
                lease.session = None;
            }
        }
    }

    fn flush_completions(&mut self) {
        if self.completing || self.completions.is_empty() || !self.leader || self.held() {
            return;
        }
        // Completions of a stream whose grant lapsed since the last check
        // are refused (one look at the grants per batch, not per message).
        self.refuse_lapsed_completions();
        if self.completions.is_empty() {
            return;
        }
        let take = self.completions.len().min(MAX_REPORT_BATCH);
        let batch: Vec<_> = self.completions.drain(..take).collect();
        for (_, c) in &batch {
            self.spans.completing(c.task_id, c.fencing_token, &c.outcome);
        }
        let completions = batch.iter().map(|(_, c)| c.clone()).collect();
        self.completing = true;
        self.spawn_proposal(Operation::Complete { completions }, move |r| Proposal::Completed {
            batch,
            result: transitions(r),
        });
    }

    /// Stamp and propose `operation` on a spawned task; its result comes
    /// back as a [`Msg::Proposed`].
    pub(super) fn spawn_proposal(
        &self,
        operation: Operation,
        wrap: impl FnOnce(Result<CommandResponse, ConsensusError>) -> Proposal + Send + 'static,
    ) {
        let deps = self.deps.clone();
        let tx = self.tx.clone();
        self.deps.tasks.spawn(async move {
            let cmd = Command { stamped_at_ms: deps.clock.stamp(), operation };
            let result = deps.consensus.propose(cmd).await;
            let _ = tx.send(Msg::Proposed(wrap(result))).await;
        });
    }

    fn proposed(&mut self, p: Proposal) {
        match p {
            Proposal::Assigned { planned, payloads, dropped, result } => {
                self.assigned(planned, payloads, dropped, result)
            }
            Proposal::Completed { batch, result } => self.completed(batch, result),
            Proposal::LeasesEnded { items, how, result } => self.leases_ended(items, how, result),
        }
    }

    fn completed(&mut self, batch: Vec<(SessionId, Completion)>, result: Transitions) {
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
                self.hold();
                return;
            }
        };
        for ((session, c), r) in batch.into_iter().zip(results) {
            self.spans.completed(c.task_id, c.fencing_token, &r);
            let (accepted, reason) = match &r {
                Ok(_) => (true, String::new()),
                Err(rej) => (false, rej.to_string()),
            };
            if accepted {
                self.drop_lease(c.task_id);
            }
            if let Some(s) = self.sessions.get(&session) {
                s.send(ToWorker::CompletionAck {
                    task_id: c.task_id,
                    fencing_token: c.fencing_token,
                    accepted,
                    reason,
                });
            }
        }
        self.flush_completions();
    }

    /// Back off after a failed proposal.
    pub(super) fn hold(&mut self) {
        self.hold_until = Some(Instant::now() + HOLD_AFTER_FAILURE);
    }

    pub(super) fn held(&self) -> bool {
        self.hold_until.is_some_and(|t| Instant::now() < t)
    }
}

pub(super) fn transitions(r: Result<CommandResponse, ConsensusError>) -> Transitions {
    match r {
        Ok(CommandResponse::Transitioned(v)) => Ok(v),
        Ok(other) => Err(ProposalFailed::Unexpected(other)),
        Err(e) => Err(e.into()),
    }
}
