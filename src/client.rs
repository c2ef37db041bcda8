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

use tonic::transport::Channel;
use tonic::Status;

use crate::net::{ChannelPool, MAX_MESSAGE_BYTES};
use crate::pb::cluster_client::ClusterClient;
use crate::pb::scheduler_client::SchedulerClient;

/// A fresh request id: 128 random bits.
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
            attempt_timeout: Duration::from_secs(4),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn channel(&self, i: usize) -> Result<Channel, Status> {
        let addr = &self.endpoints[i % self.endpoints.len()];
        self.pool.get(addr).map_err(|e| Status::invalid_argument(format!("bad endpoint {addr:?}: {e}")))
    }

    pub fn scheduler(&self, i: usize) -> Result<SchedulerClient<Channel>, Status> {
        Ok(SchedulerClient::new(self.channel(i)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    pub fn cluster(&self, i: usize) -> Result<ClusterClient<Channel>, Status> {
        Ok(ClusterClient::new(self.channel(i)?))
    }

    /// Run `call` against node `start`, then the next ones, until it
    /// succeeds, fails for good, or the deadline passes. Retries only
    /// failures that certainly applied nothing: safe for any call.
    pub async fn call<T, F, Fut>(&self, start: usize, call: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(start, |s| is_retryable(s, false), call).await
    }

    /// Like [`Client::call`] for an idempotent call (a read, or a write that
    /// applied twice has the effect of once): also retries failures whose
    /// outcome is unknown.
    pub async fn call_idempotent<T, F, Fut>(&self, start: usize, call: F) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_with(start, |s| is_retryable(s, true), call).await
    }

    /// Schedule one task, under a fresh request id reused by every retry:
    /// a retry after an unknown outcome returns the first answer instead
    /// of creating a second task.
    pub async fn schedule(
        &self,
        start: usize,
        spec: crate::pb::TaskSpec,
    ) -> Result<crate::pb::ScheduleResponse, Status> {
        let req = crate::pb::ScheduleRequest { task: Some(spec), request_id: new_request_id() };
        self.call_with(
            self.write_start(start),
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
        tasks: Vec<crate::pb::TaskSpec>,
    ) -> Result<crate::pb::ScheduleBatchResponse, Status> {
        let req = crate::pb::ScheduleBatchRequest { tasks, request_id: new_request_id() };
        self.call_with(
            self.write_start(start),
            |s| is_retryable(s, true),
            |i| {
                let req = req.clone();
                async move { Ok(self.learn(self.scheduler(i)?.schedule_batch(req).await?)) }
            },
        )
        .await
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
        retryable: impl Fn(&Status) -> bool,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        if self.endpoints.is_empty() {
            return Err(Status::invalid_argument(
                "no endpoint given: pass --endpoint HOST:PORT or set DROVER_ENDPOINT",
            ));
        }
        let give_up = tokio::time::Instant::now() + self.deadline;
        let mut backoff = Duration::from_millis(50);
        let mut i = start;
        loop {
            let result = match tokio::time::timeout(self.attempt_timeout, call(i)).await {
                Ok(r) => r,
                Err(_) => {
                    let mut s = Status::deadline_exceeded(format!(
                        "{} did not answer within {:?}; the request may or may not have been applied",
                        self.endpoints[i % self.endpoints.len()],
                        self.attempt_timeout
                    ));
                    crate::net::mark_outcome_unknown(&mut s);
                    Err(s)
                }
            };
            match result {
                Err(s) if retryable(&s) && tokio::time::Instant::now() < give_up => {
                    // The preferred (leader) endpoint failed: forget it.
                    let _ = self.leader.compare_exchange(
                        i % self.endpoints.len(),
                        usize::MAX,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tracing::debug!(endpoint = %self.endpoints[i % self.endpoints.len()], error = %s.message(), "retrying at the next node");
                    i += 1;
                    if i % self.endpoints.len() == start % self.endpoints.len() {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
                other => return other,
            }
        }
    }
}
