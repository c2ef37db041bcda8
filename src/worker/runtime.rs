//! The worker's runtime: one connection at a time to the leader, batched
//! heartbeats, per-task lease watchdogs, completions retried across
//! reconnects.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{AckHook, Handler, TaskContext, TaskResult, WorkerStats};
use crate::domain::dependency::{Counts, ParentResult, Upstream};
use crate::domain::TaskState;
use crate::net::{ChannelPool, MAX_MESSAGE_BYTES};
use crate::pb;
use crate::pb::server_message::Msg as In;
use crate::pb::worker_message::Msg as Out;

/// Fastest and slowest heartbeat periods.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
/// Also while idle: a new assignment's lease counts from the sending of the
/// last acknowledged heartbeat (see [`Runtime::start`]), so that basis must
/// stay well inside the shortest lease (1 s).
const MAX_HEARTBEAT: Duration = Duration::from_millis(250);

/// A handler's end, sent to the runtime.
struct Done {
    task_id: u64,
    token: u64,
    callback: String,
    /// `None`: the lease lapsed (or was lost); do not report.
    outcome: Option<pb::completion::Outcome>,
}

struct Running {
    token: u64,
    callback: String,
    lease: Duration,
    lease_tx: watch::Sender<Instant>,
    cancel: CancellationToken,
    /// The server asked to cancel it.
    cancel_requested: bool,
    /// Dropping the handler (lease lost) aborts it.
    abort: tokio::task::AbortHandle,
}

pub struct Runtime {
    endpoints: Vec<String>,
    id: String,
    handlers: HashMap<String, (u32, Arc<dyn Handler>)>,
    shutdown_grace: Duration,
    pool: ChannelPool,
    /// The token the session stream carries.
    bearer: crate::net::Bearer,
    running: HashMap<u64, Running>,
    /// Completions sent and not yet acknowledged, resent on reconnect.
    /// Completions sent and not yet answered, with their callback.
    unacked: HashMap<u64, (String, pb::Completion)>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    stats: WorkerStats,
    draining: bool,
    on_ack: Option<AckHook>,
}

/// A future that is never polled once its lease has lapsed.
struct Fenced<F> {
    inner: Pin<Box<F>>,
    lease: watch::Receiver<Instant>,
}

impl<F: Future> Future for Fenced<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if Instant::now() >= *self.lease.borrow() {
            return Poll::Ready(None);
        }
        self.inner.as_mut().poll(cx).map(Some)
    }
}

/// Resolve when the lease (as renewed) lapses.
async fn lease_lapsed(mut lease: watch::Receiver<Instant>) {
    loop {
        let deadline = *lease.borrow_and_update();
        if Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            r = lease.changed() => if r.is_err() { return },
        }
    }
}

fn outcome_of(result: TaskResult) -> pb::completion::Outcome {
    use pb::completion::Outcome;
    match result {
        TaskResult::Success(bytes) => Outcome::Success(bytes),
        TaskResult::Retry { error, retry_after } => {
            Outcome::Retry(pb::Failure { error, retry_after_ms: retry_after.map_or(0, |d| d.as_millis() as u64) })
        }
        TaskResult::Fatal(error) => Outcome::Fatal(pb::Failure { error, retry_after_ms: 0 }),
    }
}

enum Disconnect {
    /// Try this address next.
    Redirect(String),
    /// The stream broke; back off and try the next endpoint.
    Broken(String),
    /// Shutdown complete.
    Finished,
}

impl Runtime {
    /// Send `bearer`'s token on the session stream.
    pub fn with_bearer(mut self, bearer: crate::net::Bearer) -> Self {
        self.bearer = bearer;
        self
    }

    pub fn new(
        endpoints: Vec<String>,
        id: String,
        handlers: HashMap<String, (u32, Arc<dyn Handler>)>,
        shutdown_grace: Duration,
        on_ack: Option<AckHook>,
        pool: ChannelPool,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Runtime {
            endpoints,
            id,
            handlers,
            shutdown_grace,
            pool,
            bearer: crate::net::Bearer::default(),
            running: HashMap::new(),
            unacked: HashMap::new(),
            done_tx,
            done_rx,
            stats: WorkerStats::default(),
            draining: false,
            on_ack,
        }
    }

    #[tracing::instrument(name = "worker", skip_all, fields(worker_id = %self.id))]
    pub async fn run(mut self, shutdown: CancellationToken) -> WorkerStats {
        let mut next = 0usize;
        let mut redirect: Option<String> = None;
        let mut backoff = crate::net::Backoff::default();
        let mut grace_deadline: Option<tokio::time::Instant> = None;
        loop {
            let addr = redirect.take().unwrap_or_else(|| {
                let a = self.endpoints[next % self.endpoints.len()].clone();
                next += 1;
                a
            });
            match self.session(&addr, &shutdown, &mut grace_deadline).await {
                Disconnect::Finished => break,
                Disconnect::Redirect(to) => {
                    tracing::info!(from = %addr, to = %to, "redirected to the leader");
                    redirect = Some(to);
                    backoff.reset();
                }
                Disconnect::Broken(why) => {
                    tracing::info!(addr = %addr, reason = %why, "connection lost; reconnecting");
                    // Keep handling handler ends and the lease watchdogs
                    // while waiting to reconnect.
                    let until = tokio::time::Instant::now() + backoff.next_delay();
                    while let Ok(Some(done)) = tokio::time::timeout_at(until, self.done_rx.recv()).await {
                        self.finish(done, None);
                    }
                    if shutdown.is_cancelled() && self.running.is_empty() {
                        break;
                    }
                }
            }
        }
        for r in self.running.values() {
            r.abort.abort();
        }
        self.stats
    }

    /// One connection: Hello, then messages until it breaks or we finish.
    async fn session(
        &mut self,
        addr: &str,
        shutdown: &CancellationToken,
        grace: &mut Option<tokio::time::Instant>,
    ) -> Disconnect {
        let mut beats = Heartbeats::new();
        let (out_tx, mut inbound) = match self.open(addr).await {
            Ok(stream) => stream,
            Err(d) => return d,
        };
        let mut ticker = tokio::time::interval(MIN_HEARTBEAT);
        loop {
            tokio::select! {
                msg = inbound.next() => {
                    let msg = match msg {
                        Some(Ok(pb::ServerMessage { msg: Some(m) })) => m,
                        Some(Ok(_)) => continue,
                        Some(Err(s)) => return Disconnect::Broken(format!("{}: {}", s.code(), s.message())),
                        None => return Disconnect::Broken("the server closed the stream".into()),
                    };
                    if let Some(d) = self.on_message(msg, &mut beats) {
                        return d;
                    }
                }
                Some(done) = self.done_rx.recv() => {
                    let tx = out_tx.clone();
                    self.finish(done, Some(&tx));
                }
                _ = ticker.tick() => {
                    if let Some(d) = self.on_tick(&out_tx, &mut beats, *grace) {
                        return d;
                    }
                }
                _ = shutdown.cancelled(), if !self.draining => {
                    tracing::info!(running = self.running.len(), "shutting down: draining");
                    self.draining = true;
                    *grace = Some(tokio::time::Instant::now() + self.shutdown_grace);
                    send(&out_tx, Out::Drain(true));
                }
            }
        }
    }

    /// Open the session stream to `addr`: Hello (with the tasks still
    /// running, so the leader keeps their leases), Drain if draining, and
    /// every completion not yet acknowledged.
    async fn open(
        &mut self,
        addr: &str,
    ) -> Result<(mpsc::Sender<pb::WorkerMessage>, tonic::Streaming<pb::ServerMessage>), Disconnect> {
        let channel = self.pool.get(addr).map_err(|e| Disconnect::Broken(format!("bad address {addr}: {e}")))?;
        let channel = tonic::service::interceptor::InterceptedService::new(channel, self.bearer.clone());
        let mut client = pb::worker_client::WorkerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(1024);
        let hello = pb::Hello {
            worker_id: self.id.clone(),
            callbacks: self
                .handlers
                .iter()
                .map(|(c, (n, _))| pb::CallbackCredits { callback: c.clone(), concurrency: *n })
                .collect(),
            running: self.running.iter().map(|(id, r)| pb::TaskRef { task_id: *id, fencing_token: r.token }).collect(),
        };
        send(&out_tx, Out::Hello(hello));
        if self.draining {
            send(&out_tx, Out::Drain(true));
        }
        for (_, c) in self.unacked.values() {
            send(&out_tx, Out::Completion(c.clone()));
        }
        match client.connect(tokio_stream::wrappers::ReceiverStream::new(out_rx)).await {
            Ok(r) => Ok((out_tx, r.into_inner())),
            Err(s) => Err(Disconnect::Broken(format!("{}: {}", s.code(), s.message()))),
        }
    }

    /// One message from the server; `Some` ends the session.
    fn on_message(&mut self, msg: In, beats: &mut Heartbeats) -> Option<Disconnect> {
        match msg {
            In::Welcome(w) => {
                beats.hint = Duration::from_millis(w.heartbeat_interval_ms).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
            }
            In::Assignment(a) => self.start(a, beats.basis),
            In::HeartbeatAck(ack) => {
                let basis = beats.acked(ack.seq);
                self.renewed(basis, &ack.renewed);
                for r in ack.lost {
                    self.lose(r.task_id, r.fencing_token, "the leader says this run's lease is gone");
                }
            }
            In::CompletionAck(ack) => {
                if self.unacked.get(&ack.task_id).is_some_and(|(_, c)| c.fencing_token == ack.fencing_token) {
                    let callback = self.unacked.remove(&ack.task_id).map(|(cb, _)| cb).unwrap_or_default();
                    if let Some(hook) = &self.on_ack {
                        hook(ack.task_id, ack.accepted);
                    }
                    if !ack.accepted {
                        self.stats.rejected += 1;
                        tracing::warn!(task_id = ack.task_id, callback, token = ack.fencing_token, reason = %ack.reason, "completion rejected");
                    }
                }
            }
            In::Cancel(r) => {
                if let Some(t) = self.running.get_mut(&r.task_id).filter(|t| t.token == r.fencing_token) {
                    t.cancel_requested = true;
                    t.cancel.cancel();
                }
            }
            In::Redirect(r) => {
                return Some(if r.leader_addr.is_empty() {
                    Disconnect::Broken("the node knows no leader yet".into())
                } else {
                    Disconnect::Redirect(r.leader_addr)
                });
            }
        }
        None
    }

    /// The periodic work: a heartbeat when one is due, cancelling what
    /// outlived the shutdown grace, and ending a finished drain.
    fn on_tick(
        &mut self,
        out: &mpsc::Sender<pb::WorkerMessage>,
        beats: &mut Heartbeats,
        grace: Option<tokio::time::Instant>,
    ) -> Option<Disconnect> {
        let period = self.heartbeat_period(beats.hint);
        if beats.last.elapsed() >= period {
            let seq = beats.next();
            let tasks =
                self.running.iter().map(|(id, r)| pb::TaskRef { task_id: *id, fencing_token: r.token }).collect();
            if !send(out, Out::Heartbeat(pb::Heartbeat { seq, tasks })) {
                return Some(Disconnect::Broken("outbound queue full".into()));
            }
        }
        if grace.is_some_and(|g| tokio::time::Instant::now() >= g) {
            for t in self.running.values() {
                t.cancel.cancel();
            }
        }
        (self.draining && self.running.is_empty() && self.unacked.is_empty()).then_some(Disconnect::Finished)
    }

    /// A third of the shortest lease held, within [MIN, hint].
    fn heartbeat_period(&self, hint: Duration) -> Duration {
        let shortest = self.running.values().map(|r| r.lease).min().unwrap_or(hint * 3);
        (shortest / 3).clamp(MIN_HEARTBEAT, hint)
    }

    fn renewed(&mut self, basis: Instant, refs: &[pb::TaskRef]) {
        for r in refs {
            if let Some(t) = self.running.get(&r.task_id).filter(|t| t.token == r.fencing_token) {
                // Valid until a lease from when the renewal was *sent*.
                let until = basis + t.lease;
                t.lease_tx.send_if_modified(|d| {
                    let later = until > *d;
                    if later {
                        *d = until;
                    }
                    later
                });
            }
        }
    }

    fn lose(&mut self, task_id: u64, token: u64, why: &str) {
        if let Some(t) = self.running.get(&task_id).filter(|t| t.token == token) {
            tracing::warn!(task_id, callback = %t.callback, token, why, "stopping the handler without reporting");
            t.cancel.cancel();
            t.abort.abort();
            self.running.remove(&task_id);
            self.stats.fenced += 1;
        }
    }

    /// Start a handler for `a`, whose lease counts from `basis`: when the
    /// last heartbeat acknowledged before it arrived was sent, not from its
    /// receipt. The leader grants a lease just before sending it, in the
    /// actor that answers heartbeats, so the grant came after that
    /// heartbeat left: counting from then is never longer than the leader's
    /// lease. Counting from receipt would give an assignment that waited in
    /// the socket while this process was frozen a whole fresh lease, though
    /// the leader may have given the task to another worker meanwhile: such
    /// an assignment is now already lapsed and never starts.
    fn start(&mut self, a: pb::Assignment, basis: Instant) {
        let Some((_, handler)) = self.handlers.get(&a.callback).cloned() else {
            tracing::error!(callback = %a.callback, "assigned a callback this worker does not serve");
            return;
        };
        let lease = Duration::from_millis(a.lease_ms);
        let deadline = basis + lease;
        if deadline <= Instant::now() {
            tracing::warn!(
                task_id = a.task_id,
                callback = %a.callback,
                token = a.fencing_token,
                "not starting an assignment whose lease lapsed before it arrived (was this process frozen?)"
            );
            self.stats.fenced += 1;
            return;
        }
        let (lease_tx, lease_rx) = watch::channel(deadline);
        let cancel = CancellationToken::new();
        let (span, trace, links) = handler_span(&a);
        let ctx = TaskContext {
            task_id: a.task_id,
            callback: a.callback.clone(),
            attempt: a.attempt,
            fencing_token: a.fencing_token,
            payload: a.payload,
            priority: a.priority,
            timeout: Duration::from_millis(a.timeout_ms),
            parent_results: a.upstream.map(upstream_from_pb),
            trace,
            links,
            cancel: cancel.clone(),
            lease: lease_rx.clone(),
        };
        let done_tx = self.done_tx.clone();
        let (task_id, token, callback, timeout) = (a.task_id, a.fencing_token, a.callback, ctx.timeout);
        let cancel_for_timeout = cancel.clone();
        let running_callback = callback.clone();
        let span_for_end = span.clone();
        let join = tokio::spawn(async move {
            let inner = Box::pin(tracing::Instrument::instrument(handler.call(ctx), span));
            let fenced = Fenced { inner, lease: lease_rx.clone() };
            let outcome = tokio::select! {
                out = fenced => out.map(outcome_of),
                _ = lease_lapsed(lease_rx) => None,
                _ = tokio::time::sleep(timeout) => {
                    cancel_for_timeout.cancel();
                    Some(outcome_of(TaskResult::retry(format!("timed out after {timeout:?}"))))
                }
            };
            end_handler_span(&span_for_end, outcome.as_ref());
            let _ = done_tx.send(Done { task_id, token, callback, outcome });
        });
        self.stats.started += 1;
        self.running.insert(
            task_id,
            Running {
                token,
                callback: running_callback,
                lease,
                lease_tx,
                cancel,
                cancel_requested: false,
                abort: join.abort_handle(),
            },
        );
    }

    /// A handler ended: report it (unless its lease lapsed).
    fn finish(&mut self, done: Done, tx: Option<&mpsc::Sender<pb::WorkerMessage>>) {
        let Some(t) = self.running.get(&done.task_id).filter(|t| t.token == done.token) else { return };
        let cancel_requested = t.cancel_requested;
        self.running.remove(&done.task_id);
        let Some(mut outcome) = done.outcome else {
            self.stats.fenced += 1;
            tracing::warn!(task_id = done.task_id, token = done.token, callback = %done.callback, "lease lapsed: handler stopped, not reported");
            return;
        };
        if cancel_requested {
            outcome = pb::completion::Outcome::Cancelled(true);
        } else if self.draining && matches!(outcome, pb::completion::Outcome::Retry(_)) {
            outcome = pb::completion::Outcome::Retry(pb::Failure {
                error: "the worker shut down before the task finished".into(),
                retry_after_ms: 0,
            });
        }
        match &outcome {
            pb::completion::Outcome::Success(_) => self.stats.succeeded += 1,
            _ => self.stats.failed += 1,
        }
        let completion = pb::Completion { task_id: done.task_id, fencing_token: done.token, outcome: Some(outcome) };
        if let Some(tx) = tx {
            let _ = tx.try_send(pb::WorkerMessage { msg: Some(Out::Completion(completion.clone())) });
        }
        self.unacked.insert(done.task_id, (done.callback, completion));
    }
}

/// Queue a message on the session's outbound stream; false if it is full.
fn send(tx: &mpsc::Sender<pb::WorkerMessage>, msg: Out) -> bool {
    tx.try_send(pb::WorkerMessage { msg: Some(msg) }).is_ok()
}

/// The heartbeats of one session: when each was sent, so that an ack
/// renews leases from the moment its heartbeat left (seq 0 is the Hello).
struct Heartbeats {
    sent_at: HashMap<u64, Instant>,
    /// When the newest acknowledged heartbeat (or the Hello) was sent: the
    /// basis of a new assignment's lease.
    basis: Instant,
    seq: u64,
    /// The server's suggested interval.
    hint: Duration,
    last: Instant,
    hello: Instant,
}

impl Heartbeats {
    fn new() -> Heartbeats {
        let now = Instant::now();
        Heartbeats {
            sent_at: HashMap::from([(0, now)]),
            basis: now,
            seq: 0,
            hint: MAX_HEARTBEAT,
            last: now,
            hello: now,
        }
    }

    /// Note a heartbeat sent now; returns its seq.
    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.last = Instant::now();
        self.sent_at.insert(self.seq, self.last);
        self.seq
    }

    /// When the acknowledged heartbeat was sent (forgetting older ones).
    fn acked(&mut self, seq: u64) -> Instant {
        let basis = self.sent_at.remove(&seq).unwrap_or(self.hello);
        if seq != 0 {
            self.sent_at.retain(|s, _| *s > seq);
        }
        self.basis = self.basis.max(basis);
        basis
    }
}

/// The span a handler runs in: a child of the assignment's trace context,
/// linked to its parents' (or its schedule's), with the task's identity as
/// attributes (never its payload). Exported only when this process
/// installed an exporter; the context handed to the handler is the span's
/// then, else the assignment's own.
fn handler_span(
    a: &pb::Assignment,
) -> (tracing::Span, Option<crate::domain::trace::TraceContext>, Vec<crate::domain::trace::TraceContext>) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = a.trace.as_ref().and_then(crate::telemetry::from_pb);
    let links: Vec<_> = a.links.iter().filter_map(crate::telemetry::from_pb).collect();
    let span = tracing::info_span!(
        "drover.task.run",
        otel.name = %format!("run {}", a.callback),
        otel.kind = "consumer",
        drover.task_id = a.task_id,
        drover.callback = %a.callback,
        drover.attempt = a.attempt,
        drover.fencing_token = a.fencing_token,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    for link in &links {
        if let Some(sc) = crate::telemetry::span_context(link) {
            span.add_link(sc);
        }
    }
    crate::telemetry::adopt(&span, parent.as_ref());
    let own = crate::telemetry::trace_context(span.context().span().span_context());
    (span, own.or(parent), links)
}

/// Mark the handler's span with how the attempt ended.
fn end_handler_span(span: &tracing::Span, outcome: Option<&pb::completion::Outcome>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let status = match outcome {
        Some(pb::completion::Outcome::Success(_)) => opentelemetry::trace::Status::Ok,
        Some(pb::completion::Outcome::Retry(f)) => opentelemetry::trace::Status::error(format!("retry: {}", f.error)),
        Some(pb::completion::Outcome::Fatal(f)) => opentelemetry::trace::Status::error(f.error.clone()),
        Some(pb::completion::Outcome::Cancelled(_)) => opentelemetry::trace::Status::error("cancelled"),
        None => opentelemetry::trace::Status::error("lease lapsed"),
    };
    span.set_status(status);
}

/// The parents' results an assignment carries, read from the proto: the
/// SDK speaks the wire format, not the server's edge.
fn upstream_from_pb(u: pb::Upstream) -> Upstream {
    let c = u.ended.unwrap_or_default();
    Upstream {
        ended: Counts { succeeded: c.succeeded, failed: c.failed, dead: c.dead, cancelled: c.cancelled },
        parents: u
            .parents
            .into_iter()
            .map(|p| ParentResult { task_id: p.task_id, state: parent_state(p.state), result: p.result })
            .collect(),
        omitted: u.omitted,
    }
}

/// A parent's final state (a parent the worker hears of has ended).
fn parent_state(state: i32) -> TaskState {
    match pb::TaskState::try_from(state).unwrap_or(pb::TaskState::Unspecified) {
        pb::TaskState::Succeeded => TaskState::Succeeded,
        pb::TaskState::Failed => TaskState::Failed,
        pb::TaskState::Dead => TaskState::Dead,
        pb::TaskState::Cancelled => TaskState::Cancelled,
        pb::TaskState::Ready => TaskState::Ready,
        pb::TaskState::Running => TaskState::Running,
        pb::TaskState::RetryWait => TaskState::RetryWait,
        pb::TaskState::Waiting => TaskState::Waiting,
        pb::TaskState::Unspecified | pb::TaskState::Scheduled => TaskState::Scheduled,
    }
}
