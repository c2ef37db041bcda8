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
//! - [`Consensus::identity`]: the cluster ID. Nothing but its naming is
//!   proposed before this node knows it (DESIGN.md, "Cluster identity").
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
use crate::raft::identity::Identity;
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
    /// The cluster ID: stamped on every message to peers, checked on every
    /// message from them.
    identity: Identity,
}

fn index_of(log_id: Option<&crate::raft::LogId>) -> u64 {
    log_id.map(|l| l.index).unwrap_or(0)
}

impl Consensus {
    pub fn new(
        id: u64,
        raft: Raft,
        timing: Timing,
        stopping: CancellationToken,
        restoring: bool,
        identity: Identity,
    ) -> Self {
        Consensus {
            id,
            raft,
            timing,
            stopping,
            restoring: Arc::new(AtomicBool::new(restoring)),
            stalled: Arc::default(),
            identity,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// This node's cluster ID and the check of its peers' messages.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether this node holds nothing beyond a bootstrap membership (no
    /// log past index 0): a peer with a cluster ID still hears it.
    pub fn holds_nothing(&self) -> bool {
        self.raft.metrics().borrow_watched().last_log_index.is_none_or(|i| i == 0)
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
        let all = self.raft.metrics();
        // Raft's server metrics change only with its role, leader or
        // membership (the full metrics change on every write), and their
        // sender is dropped when Raft stops, after it has published why.
        let mut server = self.raft.server_metrics();
        loop {
            if let Err(fatal) = &all.borrow_watched().running_state {
                return Some(fatal.to_string());
            }
            if server.changed().await.is_err() {
                return all.borrow_watched().running_state.as_ref().err().map(|f| f.to_string());
            }
        }
    }

    /// A watch on who leads.
    pub fn watch(&self) -> LeadershipWatch {
        LeadershipWatch {
            me: self.id,
            all: self.raft.metrics(),
            server: self.raft.server_metrics(),
            data: self.raft.data_metrics(),
        }
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

    async fn propose_once(&self, mut cmd: Command) -> Result<CommandResponse, ConsensusError> {
        if self.is_stopping() {
            return Err(ConsensusError::unavailable("this node is shutting down; nothing was written"));
        }
        if self.stalled.load(Ordering::Acquire) {
            return Err(ConsensusError::Unavailable {
                message: "this node's disk is stalling (a log fsync ran past --max-fsync-stall); nothing was written: it is handing leadership over".into(),
                retry_after_ms: 200,
            });
        }
        // The naming, and the raise of a new cluster's level before it.
        let naming = matches!(
            cmd.operation,
            crate::domain::Operation::SetClusterId { .. } | crate::domain::Operation::SetFeatureLevel { .. }
        );
        if self.is_restoring() && !naming && !matches!(cmd.operation, crate::domain::Operation::Import { .. }) {
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
        // A cluster below level 3 cannot keep trace contexts: the schedule
        // is proposed without them (it works all the same).
        if let crate::domain::Operation::Traced { operation, .. } = &cmd.operation {
            let active = self.identity.versions().active();
            if active < crate::domain::feature::LEVEL_TRACES {
                tracing::debug!(
                    active,
                    "the cluster is below feature level 3: trace contexts are dropped from this entry"
                );
                cmd.operation = (**operation).clone();
            }
        }
        // Never an entry a member may not be able to decode (see
        // `domain::feature`).
        self.check_level(&cmd.operation)?;
        let deadline = tokio::time::Instant::now() + self.timing.propose_timeout;
        // Nothing but the naming is proposed before the cluster has its ID:
        // so a node holding an entry after the naming entry has been sent
        // the ID with it (see DESIGN.md, "Cluster identity"). The wait is
        // part of the proposal's time.
        if !naming {
            self.named(deadline).await?;
        }
        let write = self.raft.client_write(cmd);
        tokio::pin!(write);
        // The first check is due one period in (an interval's first tick is
        // immediate, which would cost every proposal a needless pass).
        let period = Duration::from_millis(200);
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
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

    /// Make `voters` the voter set (joint consensus underneath); voters left
    /// out are removed, not kept as learners.
    pub async fn replace_voters(&self, voters: BTreeSet<u64>) -> Result<(), ConsensusError> {
        let change = openraft::ChangeMembers::ReplaceAllVoters(voters);
        self.bounded("replacing a voter", self.raft.change_membership(change, false)).await.map(|_| ())
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

    /// Refuse an entry that a member may not be able to decode: one of a
    /// feature level above the cluster's, or a raise to a level that a
    /// member does not report speaking. Names the members behind.
    pub fn check_level(&self, op: &crate::domain::Operation) -> Result<(), ConsensusError> {
        self.check_level_within(op, crate::raft::versions::REPORT_FRESH)
    }

    /// [`Consensus::check_level`], counting only members' reports made
    /// within `fresh`.
    pub fn check_level_within(&self, op: &crate::domain::Operation, fresh: Duration) -> Result<(), ConsensusError> {
        use crate::domain::feature::describe;
        let need = op.feature_level();
        let versions = self.identity.versions();
        let active = versions.active();
        let raise = matches!(op, crate::domain::Operation::SetFeatureLevel { .. });
        if need <= active && !raise {
            return Ok(());
        }
        let view = self.view();
        let members = view.addrs.keys().copied().collect::<Vec<_>>();
        let behind = versions.behind(self.id, members.iter().copied(), need, fresh);
        if behind.is_empty() && raise {
            return Ok(());
        }
        // A new cluster this node made, up to its binary's level: its
        // members are the `--peers` it was made with (none can be added
        // before the raise), all meant to run this release. A majority of
        // voters reporting the level is enough; a member not started yet
        // does not hold it up, one that reports a lower level does.
        if raise && versions.born() >= need && versions.reported_below(members, need).is_empty() {
            let speaking =
                |v: &u64| *v == self.id || versions.report(*v).is_some_and(|r| r.level >= need && r.age <= fresh);
            if view.voters.iter().filter(|v| speaking(v)).count() * 2 > view.voters.len() {
                return Ok(());
            }
        }
        let behind = behind.into_values().collect::<Vec<_>>().join("; ");
        Err(ConsensusError::Refused(if raise {
            format!(
                "feature level {need} ({}) cannot be turned on: not every member speaks it: {behind}. Upgrade \
                 those nodes first (README, \"Upgrading\")",
                describe(need)
            )
        } else {
            format!(
                "this needs feature level {need} ({}); the cluster runs at level {active}{}. Upgrade every member, \
                 then run `drover cluster upgrade --finalize` (README, \"Upgrading\")",
                describe(need),
                if behind.is_empty() { String::new() } else { format!(", and {behind}") }
            )
        }))
    }

    /// Wait (until `deadline`) for this node to know its cluster's ID. At
    /// feature level 1 (a cluster of 0.1.0, being upgraded) there is none,
    /// unless this node made the cluster: its level is then raised, and
    /// the cluster named, before anything else is proposed.
    async fn named(&self, deadline: tokio::time::Instant) -> Result<(), ConsensusError> {
        let versions = self.identity.versions();
        if versions.active() < crate::domain::feature::LEVEL_IDENTITY && versions.born() <= versions.active() {
            return Ok(());
        }
        if self.identity.cluster_id().is_some()
            || self.identity.wait_named(deadline.saturating_duration_since(tokio::time::Instant::now())).await
        {
            return Ok(());
        }
        Err(ConsensusError::Unavailable {
            message: "this cluster has no ID yet (its leader is writing one); nothing was written".into(),
            retry_after_ms: 200,
        })
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, RaftError<ClientWriteError>>>,
    ) -> Result<T, ConsensusError> {
        self.named(tokio::time::Instant::now() + self.timing.leader_wait).await?;
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
    /// already belongs to one, or a vote or a log has reached it first (the
    /// cluster is forming; this node goes on as a member): then `Ok(false)`.
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<bool, ConsensusError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| ConsensusError::unavailable(e.to_string()))?;
        if initialized {
            return Ok(false);
        }
        let members: BTreeMap<u64, Node> = members.into_iter().map(|(id, addr)| (id, Node { addr })).collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(true),
            // Between the check and here a candidate's vote or a leader's
            // entries arrived: the cluster is forming without us.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(e))) => {
                tracing::info!(state = %e, "a peer reached this node before it initialized: joining the forming cluster");
                Ok(false)
            }
            Err(e) => Err(ConsensusError::Refused(format!("initialize: {e}"))),
        }
    }

    /// The voters (with their addresses) of the membership this node holds
    /// now; empty if it holds none (a new node).
    pub async fn held_voters(&self) -> Result<BTreeMap<u64, String>, ConsensusError> {
        self.raft
            .with_raft_state(|st| {
                let m = st.membership_state.effective().membership().clone();
                m.voter_ids().filter_map(|id| m.get_node(&id).map(|n| (id, n.addr.clone()))).collect()
            })
            .await
            .map_err(|e| ConsensusError::unavailable(e.to_string()))
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
    let role = Role {
        stopped: m.running_state.is_err(),
        term: m.current_term,
        state: m.state,
        leader: m.current_leader,
        membership: &m.membership_config,
        last_applied: m.last_applied.as_ref(),
    };
    role.leadership(me)
}

/// What [`Leadership`] is derived from: Raft's role, leader and membership,
/// and the last applied log id.
struct Role<'a> {
    /// Raft stopped on a fatal error (its storage failed): no leader known.
    stopped: bool,
    term: u64,
    state: ServerState,
    leader: Option<u64>,
    membership: &'a crate::raft::StoredMembership,
    last_applied: Option<&'a crate::raft::LogId>,
}

impl Role<'_> {
    fn leadership(&self, me: u64) -> Leadership {
        if self.stopped {
            return Leadership { term: self.term, leader: None, ready: false };
        }
        let leader = self
            .leader
            .and_then(|id| self.membership.membership().get_node(&id).map(|n| Peer { id, addr: n.addr.clone() }));
        Leadership { term: self.term, leader, ready: self.leads(me) && self.caught_up() }
    }

    fn leads(&self, me: u64) -> bool {
        !self.stopped && self.state == ServerState::Leader && self.leader == Some(me)
    }

    /// An entry of this term (the election's blank entry) is applied: the
    /// state machine holds every earlier commit.
    fn caught_up(&self) -> bool {
        self.last_applied.is_some_and(|l| l.leader_id.term == self.term)
    }
}

/// Watches who leads.
///
/// It waits on Raft's server metrics, which change only with the role, the
/// leader or the membership, and on the data metrics (which change with
/// every write) only while this node leads and has not yet applied an entry
/// of its term. Waiting on Raft's full metrics instead woke every watcher
/// (the dispatcher, the health reporter, the leader-change counter) on each
/// write.
pub struct LeadershipWatch {
    me: u64,
    /// Only read, for whether Raft stopped on a fatal error; never waited on.
    all: openraft::alias::WatchReceiverOf<crate::raft::TypeConfig, crate::raft::RaftMetrics>,
    server: openraft::alias::WatchReceiverOf<crate::raft::TypeConfig, crate::raft::RaftServerMetrics>,
    data: openraft::alias::WatchReceiverOf<crate::raft::TypeConfig, crate::raft::RaftDataMetrics>,
}

impl LeadershipWatch {
    /// The current view (marked seen), and whether this node leads but has
    /// not yet applied an entry of its term.
    fn look(&mut self) -> (Leadership, bool) {
        let stopped = self.all.borrow_watched().running_state.is_err();
        let server = self.server.borrow_watched();
        let data = self.data.borrow_watched();
        let role = Role {
            stopped,
            term: server.vote.leader_id.term,
            state: server.state,
            leader: server.current_leader,
            membership: &server.membership_config,
            last_applied: data.last_applied.as_ref(),
        };
        (role.leadership(self.me), role.leads(self.me) && !role.caught_up())
    }

    /// The current view (and mark it seen).
    pub fn current(&mut self) -> Leadership {
        self.look().0
    }

    /// Wait for Raft's state to change; false once Raft has stopped.
    pub async fn changed(&mut self) -> bool {
        let (_, becoming_ready) = self.look();
        if becoming_ready {
            tokio::select! {
                r = self.server.changed() => r.is_ok(),
                r = self.data.changed() => r.is_ok(),
            }
        } else {
            self.server.changed().await.is_ok()
        }
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
