//! The `Worker` service: a worker's bidirectional stream, bridged to the
//! leader's dispatcher. A node that does not lead answers the first message
//! with a `Redirect` and closes the stream; the SDK reconnects there.

use std::pin::Pin;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status, Streaming};

use super::validate;
use crate::node::NodeContext;
use crate::pb;
use crate::pb::worker_message::Msg as In;
use crate::scheduler::Msg;

pub struct WorkerService {
    ctx: NodeContext,
}

impl WorkerService {
    pub fn new(ctx: NodeContext) -> Self {
        WorkerService { ctx }
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

fn check_hello(hello: &pb::Hello, ctx: &NodeContext) -> Result<(), Status> {
    if hello.worker_id.is_empty() || hello.worker_id.len() > 256 {
        return Err(Status::invalid_argument("worker_id must be 1 to 256 bytes"));
    }
    if hello.callbacks.is_empty() {
        return Err(Status::invalid_argument("a worker must serve at least one callback"));
    }
    for c in &hello.callbacks {
        validate::callback_name(&c.callback, &ctx.config.limits).map_err(Status::from)?;
        if c.concurrency == 0 || c.concurrency > 100_000 {
            return Err(Status::invalid_argument(format!(
                "concurrency for {:?} must be between 1 and 100000",
                c.callback
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(pb::WorkerMessage { msg: Some(In::Hello(h)) })) => h,
            Some(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Some(Err(s)) => return Err(s),
            None => return Err(Status::invalid_argument("empty stream: send Hello first")),
        };
        check_hello(&hello, &self.ctx)?;
        let (tx, rx) = mpsc::channel(self.ctx.config.worker_buffer);
        let (reply_tx, reply_rx) = oneshot::channel();
        let scheduler = self.ctx.scheduler.clone();
        if !scheduler.send(Msg::Connect { hello, tx, reply: reply_tx }).await {
            return Err(Status::unavailable("this node is shutting down"));
        }
        let session = match reply_rx.await {
            Ok(Ok(session)) => session,
            Ok(Err(redirect)) => {
                let msg = pb::ServerMessage { msg: Some(pb::server_message::Msg::Redirect(redirect)) };
                let once = futures::stream::once(async move { Ok(msg) });
                return Ok(Response::new(Box::pin(once)));
            }
            Err(_) => return Err(Status::unavailable("this node is shutting down")),
        };
        // Pump the worker's messages to the dispatcher until the stream ends.
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let msg = match item {
                    Ok(pb::WorkerMessage { msg: Some(In::Heartbeat(heartbeat)) }) => {
                        Msg::Heartbeat { session, heartbeat, received: Instant::now() }
                    }
                    Ok(pb::WorkerMessage { msg: Some(In::Completion(completion)) }) => {
                        Msg::Completion { session, completion }
                    }
                    Ok(pb::WorkerMessage { msg: Some(In::Drain(_)) }) => Msg::Drain { session },
                    Ok(_) => continue,
                    Err(_) => break,
                };
                if !scheduler.send(msg).await {
                    return;
                }
            }
            scheduler.send(Msg::Disconnect { session }).await;
        });
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(outbound)))
    }
}
