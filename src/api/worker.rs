//! The `Worker` service: a worker's bidirectional stream, bridged to the
//! leader's dispatcher. A node that does not lead answers the first message
//! with a `Redirect` and closes the stream; the SDK reconnects there.

use std::pin::Pin;
use tokio::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::validate;
use crate::config::Limits;
use crate::domain::{Completion, Outcome};
use crate::pb;
use crate::pb::worker_message::Msg as In;
use crate::scheduler::protocol::{FromWorker, Heartbeat, Hello, TaskRef, ToWorker};
use crate::scheduler::{Msg, Scheduler};

pub struct WorkerService {
    pub scheduler: Scheduler,
    pub limits: Limits,
    /// Messages buffered per worker stream.
    pub buffer: usize,
    /// The node's tracker: each stream's pump runs on it.
    pub tasks: tokio_util::task::TaskTracker,
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

fn check_hello(hello: &pb::Hello, limits: &Limits) -> Result<(), Status> {
    if hello.worker_id.is_empty() || hello.worker_id.len() > 256 {
        return Err(Status::invalid_argument("worker_id must be 1 to 256 bytes"));
    }
    if hello.callbacks.is_empty() {
        return Err(Status::invalid_argument("a worker must serve at least one callback"));
    }
    for c in &hello.callbacks {
        validate::callback_name(&c.callback, limits).map_err(Status::from)?;
        if c.concurrency == 0 || c.concurrency > limits.max_worker_credits {
            return Err(Status::invalid_argument(format!(
                "concurrency for {:?} must be between 1 and {} (the node's --max-worker-credits)",
                c.callback, limits.max_worker_credits
            )));
        }
    }
    Ok(())
}

impl WorkerService {
    /// The tonic service, with drover's message size limits.
    pub fn into_server(self: std::sync::Arc<Self>) -> pb::worker_server::WorkerServer<Self> {
        let max = self.limits.max_message_bytes;
        pb::worker_server::WorkerServer::from_arc(self).max_decoding_message_size(max).max_encoding_message_size(max)
    }
}

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let principal = super::access::principal_of(&request).cloned();
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(pb::WorkerMessage { msg: Some(In::Hello(h)) })) => h,
            Some(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Some(Err(s)) => return Err(s),
            None => return Err(Status::invalid_argument("empty stream: send Hello first")),
        };
        check_hello(&hello, &self.limits)?;
        if let Some(p) = &principal {
            for c in &hello.callbacks {
                p.check_callback(&c.callback)?;
            }
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let (reply_tx, reply_rx) = oneshot::channel();
        let scheduler = self.scheduler.clone();
        let grant = principal.as_ref().and_then(|p| p.grant()).map(|g| g.id.clone());
        if !scheduler.send(Msg::Connect { hello: hello_from_pb(hello), grant, tx, reply: reply_tx }).await {
            return Err(Status::unavailable("this node is shutting down"));
        }
        let session = match reply_rx.await {
            Ok(Ok(session)) => session,
            Ok(Err(leader)) => {
                let msg = to_pb(ToWorker::Redirect(leader));
                let once = futures::stream::once(async move { msg });
                return Ok(Response::new(Box::pin(once)));
            }
            Err(_) => return Err(Status::unavailable("this node is shutting down")),
        };
        // Pump the worker's messages to the dispatcher until the stream ends.
        self.tasks.spawn(async move {
            while let Some(item) = inbound.next().await {
                let msg = match item {
                    Ok(pb::WorkerMessage { msg: Some(In::Heartbeat(hb)) }) => FromWorker::Heartbeat(Heartbeat {
                        seq: hb.seq,
                        tasks: hb.tasks.into_iter().map(task_ref).collect(),
                    }),
                    Ok(pb::WorkerMessage { msg: Some(In::Completion(c)) }) => FromWorker::Completion(completion(c)),
                    Ok(pb::WorkerMessage { msg: Some(In::Drain(_)) }) => FromWorker::Drain,
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if !scheduler.send(Msg::FromWorker { session, msg, received: Instant::now() }).await {
                    return;
                }
            }
            scheduler.send(Msg::Disconnect { session }).await;
        });
        // A revoked credential's `Err` ends the stream (tonic sends it as
        // the call's status).
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx).map(to_pb);
        Ok(Response::new(Box::pin(outbound)))
    }
}

fn task_ref(r: pb::TaskRef) -> TaskRef {
    TaskRef { task_id: r.task_id, fencing_token: r.fencing_token }
}

fn ref_to_pb(r: TaskRef) -> pb::TaskRef {
    pb::TaskRef { task_id: r.task_id, fencing_token: r.fencing_token }
}

fn hello_from_pb(h: pb::Hello) -> Hello {
    Hello {
        worker_id: h.worker_id,
        credits: h.callbacks.into_iter().map(|c| (c.callback, c.concurrency)).collect(),
        running: h.running.into_iter().map(task_ref).collect(),
    }
}

fn completion(c: pb::Completion) -> Completion {
    use pb::completion::Outcome as O;
    let outcome = match c.outcome {
        Some(O::Success(result)) => Outcome::Success { result },
        Some(O::Retry(f)) => {
            Outcome::Retry { error: f.error, retry_after_ms: (f.retry_after_ms > 0).then_some(f.retry_after_ms) }
        }
        Some(O::Fatal(f)) => Outcome::Fatal { error: f.error },
        Some(O::Cancelled(_)) => Outcome::Cancelled,
        None => Outcome::Retry { error: "worker sent a completion without an outcome".into(), retry_after_ms: None },
    };
    Completion { task_id: c.task_id, fencing_token: c.fencing_token, outcome }
}

/// A message for the worker, or the status that ends its stream.
fn to_pb(m: ToWorker) -> Result<pb::ServerMessage, Status> {
    use pb::server_message::Msg as Out;
    let msg = match m {
        ToWorker::Welcome { node_id, heartbeat_interval_ms } => {
            Out::Welcome(pb::Welcome { node_id, heartbeat_interval_ms })
        }
        ToWorker::Assignment(a) => Out::Assignment(pb::Assignment {
            task_id: a.task_id,
            callback: a.callback,
            payload: a.payload,
            attempt: a.attempt,
            fencing_token: a.fencing_token,
            lease_ms: a.lease_ms,
            timeout_ms: a.timeout_ms,
            priority: u32::from(a.priority),
            upstream: a.upstream.map(super::convert::upstream_to_pb),
            trace: a.trace.map(super::convert::trace_to_pb),
            links: a.links.into_iter().map(super::convert::trace_to_pb).collect(),
        }),
        ToWorker::HeartbeatAck { seq, renewed, lost } => Out::HeartbeatAck(pb::HeartbeatAck {
            seq,
            renewed: renewed.into_iter().map(ref_to_pb).collect(),
            lost: lost.into_iter().map(ref_to_pb).collect(),
        }),
        ToWorker::CompletionAck { task_id, fencing_token, accepted, reason } => {
            Out::CompletionAck(pb::CompletionAck { task_id, fencing_token, accepted, reason })
        }
        ToWorker::Cancel(r) => Out::Cancel(ref_to_pb(r)),
        ToWorker::Redirect(leader) => Out::Redirect(match leader {
            Some(p) => pb::Redirect { leader_id: p.id, leader_addr: p.addr },
            None => pb::Redirect::default(),
        }),
        ToWorker::Revoked(reason) => return Err(Status::unauthenticated(reason)),
    };
    Ok(pb::ServerMessage { msg: Some(msg) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_asking_more_credits_than_the_node_allows_is_refused() {
        let limits = Limits { max_worker_credits: 8, ..Limits::default() };
        let hello = |concurrency| pb::Hello {
            worker_id: "w".into(),
            callbacks: vec![pb::CallbackCredits { callback: "c".into(), concurrency }],
            ..Default::default()
        };
        assert!(check_hello(&hello(8), &limits).is_ok());
        let e = check_hello(&hello(9), &limits).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("--max-worker-credits"), "{}", e.message());
        assert!(check_hello(&hello(0), &limits).is_err());
    }
}
