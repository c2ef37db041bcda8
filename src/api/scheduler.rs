//! The `Scheduler` service: schedule tasks and read them back.

use tonic::{Request, Response, Status};

use super::validate::{self, ValidTask};
use super::{is_forwarded, mark_forwarded, on_leader, propose, ApiError};
use crate::node::NodeContext;
use crate::pb;
use crate::pb::scheduler_client::SchedulerClient;
use crate::raft::ReadPolicy;
use crate::store::{Command, CommandResponse, Operation, ScheduleOutcome, Task, TaskState};

pub struct SchedulerService {
    ctx: NodeContext,
}

impl SchedulerService {
    pub fn new(ctx: NodeContext) -> Self {
        SchedulerService { ctx }
    }

    fn now_ms(&self) -> u64 {
        self.ctx.clock.stamp()
    }

    /// Leader only: stamp, resolve and propose one Schedule command.
    async fn schedule_local(&self, tasks: Vec<ValidTask>) -> Result<Vec<ScheduleOutcome>, ApiError> {
        let stamp = self.ctx.clock.stamp();
        let expected = tasks.len();
        let cmd = Command {
            stamped_at_ms: stamp,
            operation: Operation::Schedule { tasks: tasks.into_iter().map(|t| t.resolve(stamp)).collect() },
        };
        match propose(&self.ctx, cmd).await? {
            CommandResponse::Scheduled(outcomes) if outcomes.len() == expected => Ok(outcomes),
            CommandResponse::Rejected(reason) => Err(ApiError::InvalidArgument(reason)),
            other => Err(ApiError::internal(format!("unexpected state machine reply {other:?}"))),
        }
    }

    async fn read_task(&self, id: u64) -> Result<pb::Task, ApiError> {
        let task = self.ctx.store.get(id)?.ok_or_else(|| ApiError::NotFound(format!("task {id} does not exist")))?;
        Ok(task_to_pb(task))
    }

    /// Leader only: a linearizable read (ReadIndex, then wait for apply).
    async fn read_task_linearizable(&self, id: u64) -> Result<pb::Task, ApiError> {
        match self.ctx.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => self.read_task(id).await,
            Err(crate::raft::RaftError::APIError(e)) => match e {
                openraft::error::LinearizableReadError::ForwardToLeader(f) => Err(ApiError::Unavailable {
                    message: "leadership moved".into(),
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                    retry_after_ms: 0,
                }),
                other => Err(ApiError::unavailable(format!("cannot confirm leadership: {other}"))),
            },
            Err(e) => Err(ApiError::unavailable(format!("this node's Raft has stopped: {e}"))),
        }
    }
}

pub fn outcome_to_pb(o: ScheduleOutcome) -> pb::ScheduleResponse {
    pb::ScheduleResponse { task_id: o.task_id, created: o.created }
}

pub fn state_to_pb(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Scheduled => pb::TaskState::Scheduled,
        TaskState::Ready => pb::TaskState::Ready,
        TaskState::Running => pb::TaskState::Running,
        TaskState::RetryWait => pb::TaskState::RetryWait,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Dead => pb::TaskState::Dead,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn task_to_pb(t: Task) -> pb::Task {
    pb::Task {
        id: t.id,
        callback: t.callback,
        state: state_to_pb(t.state) as i32,
        priority: t.priority as u32,
        run_at_unix_ms: t.run_at_ms,
        created_at_unix_ms: t.created_at_ms,
        attempts: t.attempts,
        payload_size: t.payload_size,
        idempotency_key: t.idempotency_key.unwrap_or_default(),
        created_index: t.created_index,
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    async fn schedule(&self, request: Request<pb::ScheduleRequest>) -> Result<Response<pb::ScheduleResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let spec = req.task.clone().ok_or_else(|| ApiError::InvalidArgument("request has no task".into()))?;
        let task = validate::task_spec(spec, &self.ctx.config.limits, self.now_ms())?;
        let from = self.ctx.id;
        let outcome = on_leader(
            &self.ctx,
            forwarded,
            || async { self.schedule_local(vec![task.clone()]).await.map(|mut o| outcome_to_pb(o.remove(0))) },
            |ch| {
                let req = req.clone();
                async move {
                    Ok(SchedulerClient::new(ch).schedule(mark_forwarded(Request::new(req), from)).await?.into_inner())
                }
            },
        )
        .await?;
        Ok(Response::new(outcome))
    }

    async fn schedule_batch(
        &self,
        request: Request<pb::ScheduleBatchRequest>,
    ) -> Result<Response<pb::ScheduleBatchResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let tasks = validate::batch(req.tasks.clone(), &self.ctx.config.limits, self.now_ms())?;
        let from = self.ctx.id;
        let reply = on_leader(
            &self.ctx,
            forwarded,
            || async {
                let outcomes = self.schedule_local(tasks.clone()).await?;
                Ok(pb::ScheduleBatchResponse { results: outcomes.into_iter().map(outcome_to_pb).collect() })
            },
            |ch| {
                let req = req.clone();
                async move {
                    let client = SchedulerClient::new(ch)
                        .max_decoding_message_size(crate::net::MAX_MESSAGE_BYTES)
                        .max_encoding_message_size(crate::net::MAX_MESSAGE_BYTES);
                    Ok(client.clone().schedule_batch(mark_forwarded(Request::new(req), from)).await?.into_inner())
                }
            },
        )
        .await?;
        Ok(Response::new(reply))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        if req.allow_stale {
            return Ok(Response::new(self.read_task(req.task_id).await?));
        }
        let from = self.ctx.id;
        let task = on_leader(
            &self.ctx,
            forwarded,
            || self.read_task_linearizable(req.task_id),
            |ch| async move {
                Ok(SchedulerClient::new(ch).get_task(mark_forwarded(Request::new(req), from)).await?.into_inner())
            },
        )
        .await?;
        Ok(Response::new(task))
    }
}
