//! The consensus handle: everything the layers above need from Raft, in
//! drover's own types. openraft stays behind it (and under [`crate::raft`]).
//!
//! - [`Consensus::propose`]: stamp-free write path: refuse fast when this
//!   node cannot commit (shutting down, restoring, no quorum), wait for the
//!   commit and the state machine's reply, and say whether a failure means
//!   "nothing was written" or "the outcome is unknown".
//! - [`Consensus::route`]: the leader, waiting for an election to finish.
//! - [`Consensus::read_index`]: a linearizable read barrier.
//! - [`Consensus::leadership`] / [`LeadershipWatch`]: who leads, and whether
//!   this node leads and has applied an entry of its own term (only then is
//!   its state machine complete for scheduling).
//! - [`Consensus::view`]: Raft's progress for operators.
//! - membership changes, leadership transfer, bootstrap and shutdown.
//! - [`clock`] and [`timekeeper`]: replicated time, which only the leader
//!   stamps.

pub mod clock;
pub mod disk;
mod error;
pub mod timekeeper;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use tokio_util::sync::CancellationToken;

pub use error::ConsensusError;

use crate::config::Timing;
use crate::domain::{Command, CommandResponse};
use crate::raft::{ClientWriteError, Node, Raft, RaftError, ReadPolicy, ServerState};

/// A cluster member: its id and the address others reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

/// Where a request that needs the leader should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node is the leader.
    Local,
    /// Another node is; forward there.
    Remote(Peer),
}

/// Who leads, as this node sees it now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub leader: Option<Peer>,
    /// This node leads and has applied an entry of its own term: its state
    /// machine holds everything earlier leaders committed.
    pub ready: bool,
}

/// Raft's progress as this node sees it, for operators.
#[derive(Debug, Clone, Default)]
pub struct RaftView {
    pub id: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: &'static str,
    pub is_voter: bool,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Every member's address.
    pub addrs: BTreeMap<u64, String>,
    /// Leader only: the log index each member is known to hold.
    pub matched: BTreeMap<u64, Option<u64>>,
    /// Leader only: ms since each member last acknowledged a heartbeat.
    pub last_contact_ms: BTreeMap<u64, Option<u64>>,
    /// Leader only: ms since a quorum last acknowledged this leader.
    pub quorum_ack_ms: Option<u64>,
}

/// A handle on this node's Raft. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    id: u64,
    raft: Raft,
    timing: Timing,
    /// Cancelled when the node starts shutting down: nothing new is proposed.
    stopping: CancellationToken,
    /// A restore is importing a backup: only its imports may be proposed.
    restoring: Arc<AtomicBool>,
    /// This node's log fsync is stalling: it proposes nothing and sends no
    /// heartbeats, so that a leader steps down by the next election.
    stalled: Arc<AtomicBool>,
}

fn index_of(log_id: Option<&crate::raft::LogId>) -> u64 {
    log_id.map(|l| l.index).unwrap_or(0)
}

impl Consensus {
    pub fn new(id: u64, raft: Raft, timing: Timing, stopping: CancellationToken, restoring: bool) -> Self {
        Consensus {
            id,
            raft,
            timing,
            stopping,
            restoring: Arc::new(AtomicBool::new(restoring)),
            stalled: Arc::default(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Whether a restore is still importing its backup.
    pub fn is_restoring(&self) -> bool {
        self.restoring.load(Ordering::Acquire)
    }

    /// The import is done: ordinary writes may be proposed.
    pub fn finish_restore(&self) {
        self.restoring.store(false, Ordering::Release);
    }

    /// Mark this node's disk as stalling (its log fsync has run past the
    /// bound) or healthy again. While stalling, it proposes nothing and a
    /// leader sends no heartbeats: the followers elect a new leader, as they
    /// would for a leader that went silent.
    pub fn set_disk_stalled(&self, stalled: bool) {
        if self.stalled.swap(stalled, Ordering::AcqRel) != stalled {
            self.raft.runtime_config().heartbeat(!stalled);
        }
    }

    /// Whether the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Who leads now.
    pub fn leadership(&self) -> Leadership {
        leadership_of(self.id, &self.raft.metrics().borrow_watched())
    }

    /// Resolves once Raft has stopped on a fatal error (a storage failure:
    /// a full disk, an I/O error, corruption), with its cause; `None` if
    /// Raft stopped normally (a shutdown).
    pub async fn failure(&self) -> Option<String> {
        let mut rx = self.raft.metrics();
        loop {
            if let Err(fatal) = &rx.borrow_watched().running_state {
                return Some(fatal.to_string());
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// A watch on who leads.
    pub fn watch(&self) -> LeadershipWatch {
        LeadershipWatch { me: self.id, rx: self.raft.metrics() }
    }

    /// The current leader, waiting up to `leader_wait` for an election.
    pub async fn route(&self) -> Result<Route, ConsensusError> {
        let mut metrics = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.timing.leader_wait;
        loop {
            let found = {
                let m = metrics.borrow_and_update();
                if let Err(fatal) = &m.running_state {
                    return Err(ConsensusError::unavailable(format!(
                        "this node's storage failed ({fatal}) and it is stopping; nothing was written: use another node"
                    )));
                }
                match m.current_leader {
                    Some(id) if id == self.id && m.state == ServerState::Leader => Some(Route::Local),
                    Some(id) if id != self.id => m
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| Route::Remote(Peer { id, addr: n.addr.clone() })),
                    _ => None,
                }
            };
            if let Some(route) = found {
                return Ok(route);
            }
            if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
                return Err(ConsensusError::Unavailable {
                    message: format!(
                        "no leader after waiting {:?}: the cluster is electing one or has lost its quorum; retry shortly",
                        self.timing.leader_wait
                    ),
                    retry_after_ms: 500,
                });
            }
        }
    }

    /// If this node leads but no quorum has acknowledged it for two election
    /// timeouts, for how long: it is probably cut off, and a new leader may
    /// already exist on the other side.
    pub fn quorum_silence(&self) -> Option<Duration> {
        // Hot path (every proposal): read the metrics in place, no clone.
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.current_leader != Some(self.id) {
            return None;
        }
        // A leader that is the only voter is its own quorum.
        if m.membership_config.membership().voter_ids().all(|v| v == self.id) {
            return None;
        }
        let age = m.last_quorum_acked.as_ref().map(|t| t.elapsed())?;
        (age > self.timing.quorum_silence).then_some(age)
    }

    /// Propose a command (this node believes it leads) and wait for the
    /// state machine's reply.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResponse, ConsensusError> {
        let pending = metrics::gauge!(crate::metrics::RAFT_PROPOSALS_PENDING);
        pending.increment(1.0);
        let result = self.propose_once(cmd).await;
        pending.decrement(1.0);
        if result.is_err() {
            metrics::counter!(crate::metrics::RAFT_PROPOSALS_FAILED).increment(1);
        }
        result
    }

    async fn propose_once(&self, cmd: Command) -> Result<CommandResponse, ConsensusError> {
        if self.is_stopping() {
            return Err(ConsensusError::unavailable("this node is shutting down; nothing was written"));
        }
        if self.stalled.load(Ordering::Acquire) {
            return Err(ConsensusError::Unavailable {
                message: "this node's disk is stalling (a log fsync ran past --max-fsync-stall); nothing was written: it is handing leadership over".into(),
                retry_after_ms: 200,
            });
        }
        if self.is_restoring() && !matches!(cmd.operation, crate::domain::Operation::Import { .. }) {
            return Err(ConsensusError::Unavailable {
                message: "this cluster is importing a backup; writes resume when it is done".into(),
                retry_after_ms: 1000,
            });
        }
        if let Some(age) = self.quorum_silence() {
            return Err(ConsensusError::Unavailable {
                message: format!(
                    "this node has not heard from a quorum for {age:?} (partitioned, or peers down); nothing was written"
                ),
                retry_after_ms: 200,
            });
        }
        let write = self.raft.client_write(cmd);
        tokio::pin!(write);
        let deadline = tokio::time::Instant::now() + self.timing.propose_timeout;
        let mut check = tokio::time::interval(Duration::from_millis(200));
        let result = loop {
            tokio::select! {
                r = &mut write => break r,
                _ = check.tick() => {
                    let lost = self.quorum_silence();
                    if lost.is_some() || tokio::time::Instant::now() >= deadline {
                        let why = match lost {
                            Some(age) => format!("this node lost contact with a quorum {age:?} ago"),
                            None => format!("not committed within {:?}", self.timing.propose_timeout),
                        };
                        return Err(ConsensusError::OutcomeUnknown(format!(
                            "{why}; the write may or may not commit: retry with the same idempotency key or request id"
                        )));
                    }
                }
            }
        };
        match result {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.filter(|id| *id != self.id).zip(f.leader_node).map(|(id, n)| Peer { id, addr: n.addr });
                let message = match &leader {
                    Some(p) => format!("leadership moved to node {} before the write was proposed; nothing was written", p.id),
                    None => "this node cannot reach a quorum of the cluster (partitioned, or peers down); nothing was written".into(),
                };
                Err(ConsensusError::NotLeader { message, leader })
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(ConsensusError::OutcomeUnknown(
                "leadership changed while the write was in flight; it may or may not have committed: retry with the same idempotency key or request id".into(),
            )),
            Err(RaftError::APIError(e)) => Err(ConsensusError::Refused(e.to_string())),
            // Raft stopped (a storage failure) after taking the write: it may
            // have reached followers and commit under the next leader.
            Err(RaftError::Fatal(e)) => Err(ConsensusError::OutcomeUnknown(format!(
                "this node's Raft stopped ({e}) while the write was in flight; it may or may not commit: retry with the same idempotency key or request id"
            ))),
        }
    }

    /// Wait until this node may serve a linearizable read (a quorum
    /// confirmed its leadership, and it applied up to that point).
    pub async fn read_index(&self) -> Result<(), ConsensusError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::LinearizableReadError::ForwardToLeader(f))) => {
                Err(ConsensusError::NotLeader {
                    message: "leadership moved".into(),
                    leader: f.leader_id.zip(f.leader_node).map(|(id, n)| Peer { id, addr: n.addr }),
                })
            }
            Err(RaftError::APIError(openraft::error::LinearizableReadError::QuorumNotEnough(_))) => {
                Err(ConsensusError::unavailable(
                    "this node cannot reach a quorum to confirm the read is current; retry, or read with --stale",
                ))
            }
            Err(e) => Err(ConsensusError::unavailable(format!("this node's Raft has stopped: {e}"))),
        }
    }

    /// Raft's progress, for status pages.
    pub fn view(&self) -> RaftView {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let is_voter = voters.contains(&self.id);
        let addrs: BTreeMap<u64, String> = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        let leading = m.current_leader == Some(self.id);
        let last = m.last_log_index.unwrap_or(0);
        let matched = addrs
            .keys()
            .map(|id| {
                let v = if *id == self.id {
                    leading.then_some(last)
                } else {
                    m.replication.as_ref().and_then(|r| r.get(id)).map(|l| index_of(l.as_ref()))
                };
                (*id, v)
            })
            .collect();
        let last_contact_ms = addrs
            .keys()
            .map(|id| {
                let v = if *id == self.id {
                    leading.then_some(0)
                } else {
                    m.heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id))
                        .and_then(|t| t.as_ref())
                        .map(|t| t.elapsed().as_millis() as u64)
                };
                (*id, v)
            })
            .collect();
        RaftView {
            id: self.id,
            role: role_name(m.state, is_voter),
            is_voter,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: last,
            committed_index: index_of(m.local_committed.as_ref()),
            applied_index: index_of(m.last_applied.as_ref()),
            snapshot_index: index_of(m.snapshot.as_ref()),
            purged_index: index_of(m.purged.as_ref()),
            learners: membership.learner_ids().collect(),
            voters,
            addrs,
            matched,
            last_contact_ms,
            quorum_ack_ms: m.last_quorum_acked.as_ref().map(|t| t.elapsed().as_millis() as u64),
        }
    }

    /// Add `id` at `addr` as a learner, waiting for it to catch up.
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<(), ConsensusError> {
        self.bounded("adding the learner", self.raft.add_learner(id, Node { addr }, false)).await.map(|_| ())
    }

    /// Make learners voters.
    pub async fn add_voters(&self, ids: BTreeSet<u64>) -> Result<(), ConsensusError> {
        let change = openraft::ChangeMembers::AddVoterIds(ids);
        self.bounded("promoting the learner", self.raft.change_membership(change, true)).await.map(|_| ())
    }

    /// Remove a member (a voter, or a learner). A removed voter does not
    /// linger as a learner.
    pub async fn remove(&self, id: u64, is_voter: bool) -> Result<(), ConsensusError> {
        let change: openraft::ChangeMembers<u64, Node> = if is_voter {
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.bounded("removing the node", self.raft.change_membership(change, false)).await.map(|_| ())
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RaftError<ClientWriteError>>>,
    ) -> Result<T, ConsensusError> {
        match tokio::time::timeout(self.timing.membership_change, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(c)))) => Err(ConsensusError::Refused(
                format!("membership change refused: {c} (one change at a time; wait for the previous one to finish)"),
            )),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(ConsensusError::NotLeader {
                message: "leadership moved during the change; retry".into(),
                leader: f.leader_id.zip(f.leader_node).map(|(id, n)| Peer { id, addr: n.addr }),
            }),
            Ok(Err(other)) => Err(ConsensusError::unavailable(format!("membership change failed: {other}"))),
            Err(_) => Err(ConsensusError::OutcomeUnknown(format!(
                "{what} did not commit within {:?}; check `drover cluster status`",
                self.timing.membership_change
            ))),
        }
    }

    /// Ask `to` to take over, and wait (at most `wait`) until it leads.
    pub async fn transfer_leader(&self, to: u64, wait: Duration) -> Result<(), ConsensusError> {
        let deadline = tokio::time::Instant::now() + wait;
        match tokio::time::timeout_at(deadline, self.raft.trigger().transfer_leader(to)).await {
            Ok(r) => r.map_err(|e| ConsensusError::unavailable(e.to_string()))?,
            Err(_) => {
                return Err(ConsensusError::unavailable(format!("Raft did not take the transfer within {wait:?}")))
            }
        }
        let mut metrics = self.raft.metrics();
        while metrics.borrow_watched().current_leader != Some(to) {
            if tokio::time::timeout_at(deadline, metrics.changed()).await.is_err() {
                return Err(ConsensusError::OutcomeUnknown(format!(
                    "node {to} did not take over within {wait:?}; see `drover cluster status`"
                )));
            }
        }
        Ok(())
    }

    /// If this node leads, hand leadership to the most up-to-date other
    /// voter that `eligible` accepts, and wait (at most `wait`) for it.
    /// Returns the new leader, if any took over.
    pub async fn hand_over(&self, wait: Duration, eligible: impl Fn(u64) -> bool) -> Option<u64> {
        let m = self.raft.metrics().borrow_watched().clone();
        // A Raft that stopped (its storage failed) hands nothing over.
        if m.current_leader != Some(self.id) || m.running_state.is_err() {
            return None;
        }
        let progress = m.replication.clone().unwrap_or_default();
        let to = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != self.id && eligible(*v))
            .max_by_key(|v| progress.get(v).cloned().flatten().map(|l| l.index))?;
        tracing::info!(to, "handing leadership over");
        match self.transfer_leader(to, wait).await {
            Ok(()) => Some(to),
            Err(e) => {
                tracing::warn!(to, error = %e, "leadership hand-over did not finish");
                None
            }
        }
    }

    /// Stop (or resume) starting elections: a node whose clock is wrong
    /// votes but does not campaign.
    pub fn set_campaigning(&self, enabled: bool) {
        self.raft.runtime_config().elect(enabled);
    }

    /// Initialise a new cluster with these members, unless this node
    /// already belongs to one (then `Ok(false)`).
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<bool, ConsensusError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| ConsensusError::unavailable(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        let members: BTreeMap<u64, Node> = members.into_iter().map(|(id, addr)| (id, Node { addr })).collect();
        self.raft.initialize(members).await.map_err(|e| ConsensusError::Refused(format!("initialize: {e}")))?;
        Ok(true)
    }

    /// Stop this node's Raft.
    pub async fn shutdown(&self) {
        match tokio::time::timeout(self.timing.hand_over, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "raft shutdown"),
            Err(_) => tracing::warn!("raft did not stop within {:?}; stopping anyway", self.timing.hand_over),
        }
    }
}

fn leadership_of(me: u64, m: &crate::raft::RaftMetrics) -> Leadership {
    // Raft stopped on a fatal error (its storage failed): no leader known.
    if m.running_state.is_err() {
        return Leadership { term: m.current_term, leader: None, ready: false };
    }
    let leader = m
        .current_leader
        .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| Peer { id, addr: n.addr.clone() }));
    // Lead only once an entry of our own term (the election's blank entry)
    // is applied: then the state machine holds every earlier commit.
    let caught_up = m.last_applied.as_ref().is_some_and(|l| l.leader_id.term == m.current_term);
    let ready = m.state == ServerState::Leader && m.current_leader == Some(me) && caught_up;
    Leadership { term: m.current_term, leader, ready }
}

/// Watches who leads.
pub struct LeadershipWatch {
    me: u64,
    rx: openraft::alias::WatchReceiverOf<crate::raft::TypeConfig, crate::raft::RaftMetrics>,
}

impl LeadershipWatch {
    /// The current view (and mark it seen).
    pub fn current(&mut self) -> Leadership {
        leadership_of(self.me, &self.rx.borrow_watched())
    }

    /// Wait for Raft's state to change; false once Raft has stopped.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Role of a node in human words.
pub fn role_name(state: ServerState, is_voter: bool) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Shutdown => "shutdown",
        ServerState::Follower | ServerState::Learner if !is_voter => "learner",
        ServerState::Follower | ServerState::Learner => "follower",
    }
}
