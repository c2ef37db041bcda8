//! A client for a drover cluster that fails over between the nodes it is
//! given, retrying only what is safe to retry.
//!
//! Whether a failed call may be retried depends on where it failed
//! ([`classify`]), never on the text of its message:
//! - **not applied** (`UNAVAILABLE` from a drover node, or a connection that
//!   could not be made): any call may be retried, at this or another node;
//! - **outcome unknown** (a timeout, a connection lost after the request was
//!   sent, `ABORTED`, `DEADLINE_EXCEEDED`, `UNKNOWN`, `CANCELLED`): the
//!   write may have been applied. Only idempotent calls are retried: reads,
//!   and writes that carry an idempotency key;
//! - anything else is final.
//!
//! Every `Schedule` and `ScheduleBatch` this client sends is idempotent: it
//! carries a request id ([`new_request_id`]), sent with the first attempt
//! and reused by every retry; the cluster answers a repeat with the first
//! answer, so a retry after an unknown outcome never creates a second task.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use crate::net::{AuthedChannel, Bearer, ChannelPool, MAX_MESSAGE_BYTES};
use crate::pb;
use crate::pb::auth_client::AuthClient;
use crate::pb::cluster_client::ClusterClient;
use crate::pb::scheduler_client::SchedulerClient;

/// Give a task spec without a trace context the caller's current span's
/// (when this process exports spans and one is current; see
/// [`crate::telemetry::current`]).
fn with_current_trace(spec: &mut pb::TaskSpec) {
    if spec.trace.is_none() {
        spec.trace = crate::telemetry::current().map(crate::telemetry::to_pb);
    }
}

/// A fresh request id: 128 random bits.
/// What a client with no endpoints answers every call.
const NO_ENDPOINT: &str = "no endpoint given: pass --endpoint HOST:PORT or set DROVER_ENDPOINT";

pub fn new_request_id() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

pub use crate::net::{classify, Failure};

/// Whether a failed call may succeed if retried: true only where that is
/// safe, given whether the call is idempotent.
pub fn is_retryable(status: &Status, idempotent: bool) -> bool {
    match classify(status) {
        Failure::NotApplied => true,
        Failure::OutcomeUnknown => idempotent,
        Failure::Final => false,
    }
}

#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    pool: ChannelPool,
    /// Index of the endpoint last named leader: writes start there, saving
    /// the forwarding hop.
    leader: Arc<AtomicUsize>,
    /// Give up after this long of failing over.
    pub deadline: Duration,
    /// Per-attempt timeout.
    pub attempt_timeout: Duration,
    /// Per-attempt timeout of a membership change, which a node may work
    /// on for longer (see [`crate::config::CLIENT_MEMBERSHIP_ATTEMPT_TIMEOUT`]).
    pub membership_attempt_timeout: Duration,
    /// The token every call carries (none: no `authorization` header).
    bearer: Bearer,
}

impl Client {
    pub fn new(endpoints: Vec<String>) -> Self {
        // An attempt normally answers within the server's leader wait (3 s)
        // or forward timeout (3 s); a frozen node (accepting TCP, never
        // answering) costs 4 s at most before the next node is tried.
        Client {
            endpoints,
            pool: ChannelPool::default(),
            leader: Arc::new(AtomicUsize::new(usize::MAX)),
            deadline: Duration::from_secs(15),
            attempt_timeout: crate::config::CLIENT_ATTEMPT_TIMEOUT,
            membership_attempt_timeout: crate::config::CLIENT_MEMBERSHIP_ATTEMPT_TIMEOUT,
            bearer: Bearer::default(),
        }
    }

    /// Connect over TLS, as `tls` says (see [`crate::tls::ClientTls`]).
    pub fn with_tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.pool = ChannelPool::with_tls(Some(tls));
        self
    }

    /// Connect through `dialer` instead of TCP (the simulation's network).
    pub fn with_dialer(mut self, dialer: crate::net::Dialer) -> Self {
        self.pool = self.pool.with_dialer(Some(dialer));
        self
    }

    /// Send `token` with every call (`authorization: Bearer <token>`).
    pub fn with_token(mut self, token: &str) -> Result<Self, String> {
        self.bearer = Bearer::new(Some(token))?;
        Ok(self)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Endpoint `i`, counting round the list; an error for an empty list.
    fn endpoint(&self, i: usize) -> Result<&str, Status> {
        match self.endpoints.len() {
            0 => Err(Status::invalid_argument(NO_ENDPOINT)),
            n => Ok(&self.endpoints[i % n]),
        }
    }

    /// A channel to node `i`, whose calls carry this client's token.
    pub fn channel(&self, i: usize) -> Result<AuthedChannel, Status> {
        let addr = self.endpoint(i)?;
        let channel =
            self.pool.get(addr).map_err(|e| Status::invalid_argument(format!("bad endpoint {addr:?}: {e}")))?;
        Ok(tonic::service::interceptor::InterceptedService::new(channel, self.bearer.clone()))
    }

    pub fn scheduler(&self, i: usize) -> Result<SchedulerClient<AuthedChannel>, Status> {
        Ok(SchedulerClient::new(self.channel(i)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn cluster(&self, i: usize) -> Result<ClusterClient<AuthedChannel>, Status> {
        Ok(ClusterClient::new(self.channel(i)?))
    }

    pub fn auth(&self, i: usize) -> Result<AuthClient<AuthedChannel>, Status> {
        Ok(AuthClient::new(self.channel(i)?))
    }

    /// Run `call` against node `start`, then the next ones, until it
    /// succeeds, fails for good, or the deadline passes. Retries only
    /// failures that certainly applied nothing: safe for any call.
    pub async fn call<T, F, Fut>(&self, start: usize, call: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(start, self.attempt_timeout, |s| is_retryable(s, false), call).await
    }

    /// A membership change: like [`Client::call`] (not retried after an
    /// unknown outcome), waiting longer for each attempt.
    async fn call_membership<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(0, self.membership_attempt_timeout, |s| is_retryable(s, false), call).await
    }

    /// Like [`Client::call`] for an idempotent call (a read, or a write that
    /// applied twice has the effect of once): also retries failures whose
    /// outcome is unknown.
    pub async fn call_idempotent<T, F, Fut>(&self, start: usize, call: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(start, self.attempt_timeout, |s| is_retryable(s, true), call).await
    }

    /// Schedule one task, under a fresh request id reused by every retry:
    /// a retry after an unknown outcome returns the first answer instead
    /// of creating a second task.
    pub async fn schedule(
        &self,
        start: usize,
        mut spec: crate::pb::TaskSpec,
    ) -> Result<crate::pb::ScheduleResponse, Status> {
        with_current_trace(&mut spec);
        let req = crate::pb::ScheduleRequest { task: Some(spec), request_id: new_request_id() };
        self.call_with(
            self.write_start(start),
            self.attempt_timeout,
            |s| is_retryable(s, true),
            |i| {
                let req = req.clone();
                async move { Ok(self.learn(self.scheduler(i)?.schedule(req).await?)) }
            },
        )
        .await
    }

    /// Schedule a batch (one Raft entry), preferring the known leader,
    /// under a request id as in [`Client::schedule`].
    pub async fn schedule_batch(
        &self,
        start: usize,
        mut tasks: Vec<crate::pb::TaskSpec>,
    ) -> Result<crate::pb::ScheduleBatchResponse, Status> {
        tasks.iter_mut().for_each(with_current_trace);
        let req = crate::pb::ScheduleBatchRequest { tasks, request_id: new_request_id() };
        self.call_with(
            self.write_start(start),
            self.attempt_timeout,
            |s| is_retryable(s, true),
            |i| {
                let req = req.clone();
                async move { Ok(self.learn(self.scheduler(i)?.schedule_batch(req).await?)) }
            },
        )
        .await
    }

    /// Read one task (`stale`: from whichever node answers, without a
    /// leader round trip).
    pub async fn get_task(&self, id: u64, stale: bool, include_payload: bool) -> Result<pb::Task, Status> {
        self.get_task_from(0, id, stale, include_payload).await
    }

    /// [`Client::get_task`], trying node `start` first (to spread reads).
    pub async fn get_task_from(
        &self,
        start: usize,
        id: u64,
        stale: bool,
        include_payload: bool,
    ) -> Result<pb::Task, Status> {
        let req = pb::GetTaskRequest { task_id: id, allow_stale: stale, include_payload };
        self.call_idempotent(start, |i| async move { Ok(self.scheduler(i)?.get_task(req).await?.into_inner()) }).await
    }

    /// One page of tasks.
    pub async fn list_tasks(&self, req: pb::ListTasksRequest) -> Result<pb::ListTasksResponse, Status> {
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.list_tasks(req).await?.into_inner()) }
        })
        .await
    }

    /// Every task of `callback` (all callbacks if empty) in `state`
    /// (`Unspecified`: any), page by page.
    pub async fn list_all_tasks(&self, callback: &str, state: pb::TaskState) -> Result<Vec<pb::Task>, Status> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let req = pb::ListTasksRequest {
                callback: callback.into(),
                state: state as i32,
                limit: 10_000,
                after_id: after,
                allow_stale: false,
                collection: String::new(),
            };
            let page = self.list_tasks(req).await?;
            out.extend(page.tasks);
            if page.next_after == 0 {
                return Ok(out);
            }
            after = page.next_after;
        }
    }

    /// Cancel a task (cancelling twice is not an error: retried freely).
    pub async fn cancel_task(&self, id: u64) -> Result<pb::CancelTaskResponse, Status> {
        let req = pb::CancelTaskRequest { task_id: id };
        self.call_idempotent(0, |i| async move { Ok(self.scheduler(i)?.cancel_task(req).await?.into_inner()) }).await
    }

    /// Create or update a callback (the same settings twice is one change).
    pub async fn register_callback(
        &self,
        settings: pb::CallbackSettings,
    ) -> Result<pb::RegisterCallbackResponse, Status> {
        let req = pb::RegisterCallbackRequest { settings: Some(settings) };
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.register_callback(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list_callbacks(&self) -> Result<pb::ListCallbacksResponse, Status> {
        let req = pb::ListCallbacksRequest { allow_stale: false };
        self.call_idempotent(0, |i| async move { Ok(self.scheduler(i)?.list_callbacks(req).await?.into_inner()) }).await
    }

    /// Redrive (or, with `purge`, delete) dead tasks. Not idempotent: a
    /// failure whose outcome is unknown is returned, not retried.
    pub async fn dead_letters(
        &self,
        start: usize,
        req: pb::DeadLetterRequest,
        purge: bool,
    ) -> Result<pb::DeadLetterResponse, Status> {
        self.call(start, |i| {
            let req = req.clone();
            async move {
                let mut s = self.scheduler(i)?;
                let r = if purge { s.purge_dead_letters(req).await? } else { s.redrive_dead_letters(req).await? };
                Ok(r.into_inner())
            }
        })
        .await
    }

    /// Set a gate (the same request twice sets the same gate: retried
    /// freely).
    pub async fn set_gate(&self, req: pb::SetGateRequest) -> Result<pb::SetGateResponse, Status> {
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.set_gate(req).await?.into_inner()) }
        })
        .await
    }

    /// Remove a gate (idempotent).
    pub async fn open_gate(&self, callback: &str, collection: &str) -> Result<pb::OpenGateResponse, Status> {
        let req = pb::OpenGateRequest { callback: callback.into(), collection: collection.into() };
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.open_gate(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list_gates(&self) -> Result<pb::ListGatesResponse, Status> {
        let req = pb::ListGatesRequest { allow_stale: false };
        self.call_idempotent(0, |i| async move { Ok(self.scheduler(i)?.list_gates(req).await?.into_inner()) }).await
    }

    /// Retention's figures, as the leader sees them.
    pub async fn gc_status(&self) -> Result<pb::GcStatusResponse, Status> {
        self.call_idempotent(0, |i| async move {
            Ok(self.scheduler(i)?.gc_status(pb::GcStatusRequest {}).await?.into_inner())
        })
        .await
    }

    /// Create a periodic schedule. Not retried once it may have been
    /// applied (a retry would find the name taken).
    pub async fn create_schedule(&self, mut def: pb::ScheduleDefinition) -> Result<pb::ScheduleInfo, Status> {
        if def.trace.is_none() {
            def.trace = crate::telemetry::current().map(crate::telemetry::to_pb);
        }
        self.call(0, |i| {
            let def = def.clone();
            async move { Ok(self.scheduler(i)?.create_schedule(def).await?.into_inner()) }
        })
        .await
    }

    /// Replace a schedule's definition (idempotent).
    pub async fn update_schedule(&self, def: pb::ScheduleDefinition) -> Result<pb::ScheduleInfo, Status> {
        self.call_idempotent(0, |i| {
            let def = def.clone();
            async move { Ok(self.scheduler(i)?.update_schedule(def).await?.into_inner()) }
        })
        .await
    }

    pub async fn get_schedule(&self, name: &str) -> Result<pb::ScheduleInfo, Status> {
        let req = pb::ScheduleRef { name: name.into() };
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.get_schedule(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn list_schedules(&self) -> Result<pb::ListSchedulesResponse, Status> {
        let req = pb::ListSchedulesRequest { allow_stale: false };
        self.call_idempotent(0, |i| async move { Ok(self.scheduler(i)?.list_schedules(req).await?.into_inner()) }).await
    }

    /// Delete a schedule (not retried once it may have been applied).
    pub async fn delete_schedule(&self, name: &str) -> Result<(), Status> {
        let req = pb::ScheduleRef { name: name.into() };
        self.call(0, |i| {
            let req = req.clone();
            async move { self.scheduler(i)?.delete_schedule(req).await.map(|_| ()) }
        })
        .await
    }

    /// Pause (idempotent).
    pub async fn pause_schedule(&self, name: &str, note: &str) -> Result<pb::ScheduleInfo, Status> {
        let req = pb::PauseScheduleRequest { name: name.into(), note: note.into() };
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.pause_schedule(req).await?.into_inner()) }
        })
        .await
    }

    /// Resume (idempotent).
    pub async fn resume_schedule(&self, name: &str, catch_up: bool) -> Result<pb::ScheduleInfo, Status> {
        let req = pb::ResumeScheduleRequest { name: name.into(), catch_up };
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.resume_schedule(req).await?.into_inner()) }
        })
        .await
    }

    /// Run one now (not retried once it may have been applied).
    pub async fn trigger_schedule(&self, name: &str) -> Result<pb::TriggerScheduleResponse, Status> {
        let req = pb::ScheduleRef { name: name.into() };
        self.call(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.trigger_schedule(req).await?.into_inner()) }
        })
        .await
    }

    /// Run (or, dry, list) a schedule's slots in a range. Retried freely:
    /// each slot's task has its slot key, so a repeat creates nothing.
    pub async fn backfill_schedule(
        &self,
        req: pb::BackfillScheduleRequest,
    ) -> Result<pb::BackfillScheduleResponse, Status> {
        self.call_idempotent(0, |i| {
            let req = req.clone();
            async move { Ok(self.scheduler(i)?.backfill_schedule(req).await?.into_inner()) }
        })
        .await
    }

    /// The workers connected to the leader.
    pub async fn list_workers(&self) -> Result<pb::ListWorkersResponse, Status> {
        self.call_idempotent(0, |i| async move {
            Ok(self.scheduler(i)?.list_workers(pb::ListWorkersRequest {}).await?.into_inner())
        })
        .await
    }

    /// The cluster as the leader sees it.
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, Status> {
        self.call_idempotent(0, |i| async move {
            Ok(self.cluster(i)?.status(pb::ClusterStatusRequest {}).await?.into_inner())
        })
        .await
    }

    /// The first answering node's own view (a client of one node: that node's).
    pub async fn node_status(&self) -> Result<pb::NodeStatusResponse, Status> {
        self.call_idempotent(0, |i| async move {
            Ok(self.cluster(i)?.node_status(pb::NodeStatusRequest {}).await?.into_inner())
        })
        .await
    }

    /// The first answering node's state digest.
    pub async fn digest(&self) -> Result<pb::DigestResponse, Status> {
        self.call_idempotent(
            0,
            |i| async move { Ok(self.cluster(i)?.digest(pb::DigestRequest {}).await?.into_inner()) },
        )
        .await
    }

    /// Membership changes: not retried after an unknown outcome (check
    /// `cluster_status` instead), and given longer than other calls: a
    /// node may work on one for up to its `--membership-timeout`.
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<pb::MembershipResponse, Status> {
        let req = pb::AddLearnerRequest { id, addr };
        self.call_membership(|i| {
            let req = req.clone();
            async move { Ok(self.cluster(i)?.add_learner(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn promote_voter(&self, id: u64) -> Result<pb::MembershipResponse, Status> {
        let req = pb::PromoteVoterRequest { id };
        self.call_membership(|i| async move { Ok(self.cluster(i)?.promote_voter(req).await?.into_inner()) }).await
    }

    pub async fn remove_node(&self, id: u64) -> Result<pb::MembershipResponse, Status> {
        let req = pb::RemoveNodeRequest { id };
        self.call_membership(|i| async move { Ok(self.cluster(i)?.remove_node(req).await?.into_inner()) }).await
    }

    /// Replace a member whose storage was damaged: see `Cluster.ReplaceNode`.
    pub async fn replace_node(&self, id: u64) -> Result<pb::ReplaceNodeResponse, Status> {
        let req = pb::ReplaceNodeRequest { id };
        self.call_membership(|i| async move { Ok(self.cluster(i)?.replace_node(req).await?.into_inner()) }).await
    }

    pub async fn transfer_leader(&self, to: u64) -> Result<pb::MembershipResponse, Status> {
        let req = pb::TransferLeaderRequest { to };
        self.call_membership(|i| async move { Ok(self.cluster(i)?.transfer_leader(req).await?.into_inner()) }).await
    }

    /// Raise the cluster's feature level (0: the leader's highest); refused
    /// with `FAILED_PRECONDITION`, naming them, while a member does not
    /// speak it.
    pub async fn finalize_upgrade(&self, level: u32) -> Result<pb::FinalizeUpgradeResponse, Status> {
        let req = pb::FinalizeUpgradeRequest { level };
        self.call(0, |i| async move { Ok(self.cluster(i)?.finalize_upgrade(req).await?.into_inner()) }).await
    }

    /// Where a write should start: the known leader, else `start`.
    fn write_start(&self, start: usize) -> usize {
        match self.leader.load(Ordering::Relaxed) {
            usize::MAX => start,
            i => i,
        }
    }

    /// Remember the leader a reply names (a follower forwarded the call).
    fn learn<T>(&self, response: tonic::Response<T>) -> T {
        if let Some((_, addr)) = crate::net::leader_hint_in(response.metadata()) {
            if let Some(i) = self.endpoints.iter().position(|e| *e == addr) {
                self.leader.store(i, Ordering::Relaxed);
            }
        }
        response.into_inner()
    }

    async fn call_with<T, F, Fut>(
        &self,
        start: usize,
        attempt_timeout: Duration,
        retryable: impl Fn(&Status) -> bool,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(Status::invalid_argument(NO_ENDPOINT));
        }
        let give_up = tokio::time::Instant::now() + self.deadline;
        let mut backoff = crate::net::Backoff::default();
        let mut i = start;
        loop {
            let result = match tokio::time::timeout(attempt_timeout, call(i)).await {
                Ok(r) => r,
                Err(_) => {
                    let mut s = Status::deadline_exceeded(format!(
                        "{} did not answer within {:?}; the request may or may not have been applied",
                        self.endpoints[i % n],
                        attempt_timeout
                    ));
                    crate::net::mark_outcome_unknown(&mut s);
                    Err(s)
                }
            };
            match result {
                Err(s) if retryable(&s) && tokio::time::Instant::now() < give_up => {
                    // The preferred (leader) endpoint failed: forget it.
                    let _ = self.leader.compare_exchange(i % n, usize::MAX, Ordering::Relaxed, Ordering::Relaxed);
                    tracing::debug!(endpoint = %self.endpoints[i % n], error = %s.message(), "retrying at the next node");
                    i += 1;
                    if i % n == start % n {
                        backoff.wait().await;
                    }
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_without_endpoints_answers_an_error_not_a_panic() {
        let client = Client::new(Vec::new());
        for i in [0, 1, 7] {
            let e = client.channel(i).err().map(|s| s.code());
            assert_eq!(e, Some(tonic::Code::InvalidArgument), "channel({i})");
            assert!(client.scheduler(i).is_err());
            assert!(client.cluster(i).is_err());
            assert!(client.auth(i).is_err());
        }
        let e = client.get_task(1, false, false).await.map(|_| ()).map_err(|s| s.code());
        assert_eq!(e, Err(tonic::Code::InvalidArgument));
        let e = client.node_status().await.map(|_| ()).map_err(|s| s.code());
        assert_eq!(e, Err(tonic::Code::InvalidArgument));
    }
}
