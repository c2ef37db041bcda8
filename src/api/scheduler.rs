//! The `Scheduler` service: schedule, read, list and cancel tasks; manage
//! callbacks and the dead-letter queue.

use std::sync::Arc;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::access;
use super::convert::{
    dependencies_to_pb, outcome_to_pb, settings_from_pb, settings_to_pb, state_from_pb, state_to_pb, target_from_pb,
    task_to_pb,
};
use super::forward::{leader_rpc, Forwarder};
use super::gates;
use super::schedules;
use super::validate::{self, ValidTask};
use super::ApiError;
use crate::config::Limits;
use crate::consensus::clock::ProposerClock;
use crate::consensus::disk::DiskSpace;
use crate::domain::{Command, CommandResponse, Operation, RequestId, ScheduleOutcome, TaskState};
use crate::pb;
use crate::pb::scheduler_client::SchedulerClient;
use crate::scheduler::collector::Collector;
use crate::store::{SharedIndex, TaskStore};

/// Largest page of `ListTasks`.
/// Most children `GetTask` lists.
const MAX_CHILDREN_SHOWN: usize = 1_000;

pub struct SchedulerService {
    pub forward: Forwarder,
    pub store: TaskStore,
    pub index: SharedIndex,
    pub clock: ProposerClock,
    pub limits: Limits,
    /// Accept tasks for unregistered callbacks (carried in the command, so
    /// that every replica decides alike).
    pub auto_register: bool,
    /// The space guard: no new tasks while a member is short of disk.
    pub disk: DiskSpace,
    /// Retention's figures (`GcStatus`).
    pub collector: Collector,
    /// The dispatcher, for the list of connected workers.
    pub dispatcher: crate::scheduler::Scheduler,
}

fn client(ch: Channel) -> SchedulerClient<Channel> {
    SchedulerClient::new(ch)
        .max_decoding_message_size(crate::net::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(crate::net::MAX_MESSAGE_BYTES)
}

impl SchedulerService {
    /// Leader only: wait until replicated time is established (a new
    /// cluster samples its voters' clocks first), then stamp.
    pub(super) async fn stamp(&self) -> Result<u64, ApiError> {
        if !self.clock.wait_established(self.forward.consensus.timing().leader_wait).await {
            return Err(ApiError::Unavailable {
                message: "this new cluster has not sampled a majority of its nodes' clocks yet; nothing was written"
                    .into(),
                leader: None,
                retry_after_ms: 200,
            });
        }
        Ok(self.clock.stamp())
    }

    /// Leader only: stamp and propose one operation.
    pub(super) async fn write(&self, operation: Operation) -> Result<CommandResponse, ApiError> {
        let cmd = Command { stamped_at_ms: self.stamp().await?, operation };
        match self.forward.consensus.propose(cmd).await? {
            CommandResponse::Rejected(r) => Err(r.into()),
            other => Ok(other),
        }
    }

    /// Leader only: stamp, resolve and propose one Schedule command. The
    /// flag says whether the answer is a replay of an earlier attempt's.
    async fn schedule_local(
        &self,
        tasks: Vec<ValidTask>,
        request_id: Option<RequestId>,
    ) -> Result<(Vec<ScheduleOutcome>, bool), ApiError> {
        let expected = tasks.len();
        if let Some(why) = self.disk.refusal() {
            // A retry of a request that was applied still gets its answer.
            if let Some(record) = request_id.map(|id| self.store.request(&id)).transpose()?.flatten() {
                if record.outcomes.len() == expected {
                    return Ok((record.outcomes, true));
                }
            }
            return Err(ApiError::ResourceExhausted(why));
        }
        let stamp = self.stamp().await?;
        let auto_register = self.auto_register;
        let traces: Vec<_> = tasks.iter().map(|t| t.trace.clone()).collect();
        let operation = if tasks.iter().any(|t| !t.after.parents.is_empty()) {
            let (tasks, after) =
                tasks.into_iter().map(|t| (t.after.clone(), t)).map(|(a, t)| (t.resolve(stamp), a)).unzip();
            Operation::ScheduleGraph { request_id, tasks, after, auto_register }
        } else {
            let tasks = tasks.into_iter().map(|t| t.resolve(stamp)).collect();
            match request_id {
                Some(request_id) => Operation::ScheduleRequest { request_id, tasks, auto_register },
                None => Operation::Schedule { tasks, auto_register },
            }
        };
        let cmd = Command { stamped_at_ms: stamp, operation: operation.traced(traces) };
        let commit = super::spans::commit("raft commit", expected);
        match self.forward.consensus.propose(cmd).instrument(commit).await? {
            CommandResponse::Scheduled(outcomes) if outcomes.len() == expected => Ok((outcomes, false)),
            CommandResponse::Replayed(outcomes) if outcomes.len() == expected => Ok((outcomes, true)),
            CommandResponse::Rejected(r) => Err(r.into()),
            other => Err(ApiError::internal(format!("unexpected state machine reply {other}"))),
        }
    }

    async fn schedule_one(
        &self,
        request: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let spec =
            request.get_ref().task.clone().ok_or_else(|| ApiError::InvalidArgument("request has no task".into()))?;
        let task = validate::task_spec(spec, &self.limits, self.clock.stamp())?;
        access::check_callback(&request, &task.callback)?;
        let request_id = validate::request_id(&request.get_ref().request_id)?;
        leader_rpc!(self, request, client, schedule, |req| {
            let _ = &req;
            let (outcomes, replayed) = self.schedule_local(vec![task.clone()], request_id).await?;
            self.answers(outcomes, replayed)?
                .pop()
                .ok_or_else(|| ApiError::internal("a schedule of one task got no answer".to_string()))
        })
    }

    async fn schedule_many(
        &self,
        request: Request<pb::ScheduleBatchRequest>,
    ) -> Result<Response<pb::ScheduleBatchResponse>, Status> {
        let tasks = validate::batch(request.get_ref().tasks.clone(), &self.limits, self.clock.stamp())?;
        // Once per callback, not per task.
        let callbacks: std::collections::BTreeSet<&str> = tasks.iter().map(|t| t.callback.as_str()).collect();
        for c in callbacks {
            access::check_callback(&request, c)?;
        }
        let request_id = validate::request_id(&request.get_ref().request_id)?;
        leader_rpc!(self, request, client, schedule_batch, |req| {
            let _ = &req;
            let (outcomes, replayed) = self.schedule_local(tasks.clone(), request_id).await?;
            Ok(pb::ScheduleBatchResponse { results: self.answers(outcomes, replayed)?, replayed })
        })
    }

    /// Answers for `outcomes`: a task cancelled on arrival says why (its
    /// row holds the gate's reason).
    fn answers(&self, outcomes: Vec<ScheduleOutcome>, replayed: bool) -> Result<Vec<pb::ScheduleResponse>, ApiError> {
        outcomes
            .into_iter()
            .map(|o| {
                let note = match o.state {
                    TaskState::Cancelled => self.store.get(o.task_id)?.and_then(|t| t.last_error).unwrap_or_default(),
                    _ => String::new(),
                };
                Ok(pb::ScheduleResponse { replayed, ..outcome_to_pb(o, note) })
            })
            .collect()
    }

    /// Leader only: wait until this node may serve a linearizable read
    /// (ReadIndex confirmed by a quorum, and applied up to it).
    pub(super) async fn linearizable(&self) -> Result<(), ApiError> {
        Ok(self.forward.consensus.read_index().await?)
    }

    fn read_task(&self, id: u64, include_payload: bool) -> Result<pb::Task, ApiError> {
        let task = self.store.get(id)?.ok_or_else(|| ApiError::NotFound(format!("task {id} does not exist")))?;
        let result = if task.state == TaskState::Succeeded { self.store.result(id)? } else { None };
        let payload = if include_payload { self.store.payload(id)? } else { None };
        let (trace, _) = self.store.trace_of(&task)?;
        let mut out = task_to_pb(task, self.clock.stamp(), result, payload);
        out.trace = trace.map(super::convert::trace_to_pb);
        out.dependencies = self
            .store
            .deps(id)?
            .map(|d| Ok::<_, ApiError>(dependencies_to_pb(d, self.store.parents(id)?)))
            .transpose()?;
        out.children = self.store.children(id, MAX_CHILDREN_SHOWN)?;
        Ok(out)
    }

    fn list_local(&self, req: &pb::ListTasksRequest) -> Result<pb::ListTasksResponse, ApiError> {
        let state = match pb::TaskState::try_from(req.state) {
            Ok(pb::TaskState::Unspecified) => None,
            Ok(s) => Some(state_from_pb(s)),
            Err(_) => return Err(ApiError::InvalidArgument(format!("unknown task state {}", req.state))),
        };
        let limit = match req.limit {
            0 => 100,
            n if n > self.limits.max_page => {
                return Err(ApiError::InvalidArgument(format!(
                    "limit {n} is above {} (the node's --max-page)",
                    self.limits.max_page
                )))
            }
            n => n,
        } as usize;
        let callback = (!req.callback.is_empty()).then_some(req.callback.as_str());
        let collection = (!req.collection.is_empty()).then_some(req.collection.as_str());
        if let Some(c) = collection {
            validate::collection_name(c, &self.limits)?;
        }
        let now = self.clock.stamp();
        let filter = crate::store::TaskFilter { callback, collection, state };
        let tasks = self.store.list(&filter, req.after_id, limit, now)?;
        let next_after = if tasks.len() == limit { tasks.last().map_or(0, |t| t.id) } else { 0 };
        Ok(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(|t| task_to_pb(t, now, None, None)).collect(),
            next_after,
        })
    }

    fn callbacks_local(&self) -> Result<pb::ListCallbacksResponse, ApiError> {
        let now = self.clock.stamp();
        let index = crate::store::index::lock(&self.index);
        let callbacks = index
            .callbacks()
            .map(|c| {
                let queues = index
                    .depths(&c.name, now)
                    .iter()
                    .enumerate()
                    .filter(|(_, (r, s))| r + s > 0)
                    .map(|(p, (ready, scheduled))| pb::QueueDepth {
                        priority: p as u32,
                        ready: *ready,
                        scheduled: *scheduled,
                    })
                    .collect();
                let q = index.queues(&c.name);
                let collections = index
                    .collection_depths(&c.name, now)
                    .into_iter()
                    .map(|(collection, ready, scheduled)| pb::CollectionDepth { collection, ready, scheduled })
                    .collect();
                pb::CallbackInfo {
                    settings: Some(settings_to_pb(c)),
                    queues,
                    running: q.map_or(0, |q| q.running) as u64,
                    // Counted by apply, not by reading dead tasks.
                    dead: q.map_or(0, |q| q.finished(TaskState::Dead)),
                    collections,
                }
            })
            .collect();
        Ok(pb::ListCallbacksResponse { callbacks })
    }
}

impl SchedulerService {
    /// The tonic service, with drover's message size limits.
    pub fn into_server(self: Arc<Self>) -> pb::scheduler_server::SchedulerServer<Self> {
        let max = self.limits.max_message_bytes;
        pb::scheduler_server::SchedulerServer::from_arc(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    async fn schedule(
        &self,
        mut request: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let tasks: &mut [pb::TaskSpec] = match request.get_mut().task.as_mut() {
            Some(t) => std::slice::from_mut(t),
            None => &mut [],
        };
        let span = super::spans::schedule("schedule", tasks);
        let reply = self.schedule_one(request).instrument(span.clone()).await;
        if let Ok(r) = &reply {
            span.record("drover.task_id", r.get_ref().task_id);
        }
        reply
    }

    async fn schedule_batch(
        &self,
        mut request: Request<pb::ScheduleBatchRequest>,
    ) -> Result<Response<pb::ScheduleBatchResponse>, Status> {
        let span = super::spans::schedule("schedule batch", &mut request.get_mut().tasks);
        self.schedule_many(request).instrument(span).await
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        self.scope_task(&request, request.get_ref().task_id)?;
        if request.get_ref().allow_stale {
            let req = request.into_inner();
            return Ok(Response::new(self.read_task(req.task_id, req.include_payload)?));
        }
        leader_rpc!(self, request, client, get_task, |req| {
            self.linearizable().await?;
            self.read_task(req.task_id, req.include_payload)
        })
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        match request.get_ref().callback.as_str() {
            "" => access::check_unscoped(&request, "name a callback to list its tasks")?,
            callback => access::check_callback(&request, callback)?,
        }
        if request.get_ref().allow_stale {
            return Ok(Response::new(self.list_local(request.get_ref())?));
        }
        leader_rpc!(self, request, client, list_tasks, |req| {
            self.linearizable().await?;
            self.list_local(&req)
        })
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        self.scope_task(&request, request.get_ref().task_id)?;
        leader_rpc!(self, request, client, cancel_task, |req| {
            match self.write(Operation::Cancel { task_id: req.task_id }).await? {
                CommandResponse::CancelRequested { state } => {
                    Ok(pb::CancelTaskResponse { state: state_to_pb(state) as i32 })
                }
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn register_callback(
        &self,
        request: Request<pb::RegisterCallbackRequest>,
    ) -> Result<Response<pb::RegisterCallbackResponse>, Status> {
        let settings = request
            .get_ref()
            .settings
            .clone()
            .ok_or_else(|| ApiError::InvalidArgument("request has no settings".into()))?;
        validate::callback_name(&settings.name, &self.limits)?;
        access::check_callback(&request, &settings.name)?;
        let config = settings_from_pb(settings);
        config.validate().map_err(ApiError::InvalidArgument)?;
        leader_rpc!(self, request, client, register_callback, |req| {
            let _ = &req;
            if let Some(why) = self.disk.refusal() {
                return Err(ApiError::ResourceExhausted(why));
            }
            match self.write(Operation::RegisterCallback(config.clone())).await? {
                CommandResponse::CallbackRegistered { created } => Ok(pb::RegisterCallbackResponse { created }),
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn list_callbacks(
        &self,
        request: Request<pb::ListCallbacksRequest>,
    ) -> Result<Response<pb::ListCallbacksResponse>, Status> {
        if request.get_ref().allow_stale {
            return Ok(Response::new(self.callbacks_local()?));
        }
        leader_rpc!(self, request, client, list_callbacks, |req| {
            let _ = &req;
            self.linearizable().await?;
            self.callbacks_local()
        })
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<pb::DeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetterResponse>, Status> {
        let target = target_from_pb(request.get_ref())?;
        self.scope_target(&request, &target)?;
        leader_rpc!(self, request, client, redrive_dead_letters, |req| {
            let target = target.clone();
            let operation = match req.with_dependents {
                true => Operation::RedriveWithDependents { target },
                false => Operation::Redrive { target },
            };
            match self.write(operation).await? {
                CommandResponse::Count(count) => Ok(pb::DeadLetterResponse { count }),
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn purge_dead_letters(
        &self,
        request: Request<pb::DeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetterResponse>, Status> {
        let target = target_from_pb(request.get_ref())?;
        self.scope_target(&request, &target)?;
        leader_rpc!(self, request, client, purge_dead_letters, |req| {
            let _ = &req;
            match self.write(Operation::Purge { target: target.clone() }).await? {
                CommandResponse::Count(count) => Ok(pb::DeadLetterResponse { count }),
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn set_gate(&self, request: Request<pb::SetGateRequest>) -> Result<Response<pb::SetGateResponse>, Status> {
        let spec = gates::GateSpec::validate(request.get_ref(), &self.limits)?;
        access::check_callback(&request, &spec.target.callback)?;
        leader_rpc!(self, request, client, set_gate, |req| {
            let _ = &req;
            self.set_gate_local(&spec).await
        })
    }

    async fn open_gate(&self, request: Request<pb::OpenGateRequest>) -> Result<Response<pb::OpenGateResponse>, Status> {
        let target = gates::target(&request.get_ref().callback, &request.get_ref().collection, &self.limits)?;
        access::check_callback(&request, &target.callback)?;
        leader_rpc!(self, request, client, open_gate, |req| {
            let _ = &req;
            self.open_gate_local(&target).await
        })
    }

    async fn list_gates(
        &self,
        request: Request<pb::ListGatesRequest>,
    ) -> Result<Response<pb::ListGatesResponse>, Status> {
        if request.get_ref().allow_stale {
            return Ok(Response::new(self.gates_local()));
        }
        leader_rpc!(self, request, client, list_gates, |req| {
            let _ = &req;
            self.linearizable().await?;
            Ok(self.gates_local())
        })
    }

    async fn create_schedule(
        &self,
        request: Request<pb::ScheduleDefinition>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        let s = schedules::schedule_from_pb(request.get_ref(), &self.limits)?;
        let trace = validate::trace(request.get_ref().trace.as_ref())?;
        access::check_callback(&request, &s.template.callback)?;
        self.scope_schedule(&request, &s.name)?;
        leader_rpc!(self, request, client, create_schedule, |req| {
            let _ = &req;
            self.put_schedule_local(&s, true, trace.clone()).await
        })
    }

    async fn update_schedule(
        &self,
        request: Request<pb::ScheduleDefinition>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        let s = schedules::schedule_from_pb(request.get_ref(), &self.limits)?;
        let trace = validate::trace(request.get_ref().trace.as_ref())?;
        access::check_callback(&request, &s.template.callback)?;
        self.scope_schedule(&request, &s.name)?;
        leader_rpc!(self, request, client, update_schedule, |req| {
            let _ = &req;
            self.put_schedule_local(&s, false, trace.clone()).await
        })
    }

    async fn get_schedule(&self, request: Request<pb::ScheduleRef>) -> Result<Response<pb::ScheduleInfo>, Status> {
        self.scope_schedule(&request, &request.get_ref().name)?;
        leader_rpc!(self, request, client, get_schedule, |req| {
            self.linearizable().await?;
            self.get_schedule_local(&req.name)
        })
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        if request.get_ref().allow_stale {
            return Ok(Response::new(self.list_schedules_local()?));
        }
        leader_rpc!(self, request, client, list_schedules, |req| {
            let _ = &req;
            self.linearizable().await?;
            self.list_schedules_local()
        })
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        self.scope_schedule(&request, &request.get_ref().name)?;
        leader_rpc!(self, request, client, delete_schedule, |req| {
            self.schedule_op_local(&req.name, Operation::DeleteSchedule { name: req.name.clone() }).await?;
            Ok(pb::DeleteScheduleResponse {})
        })
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        let note = schedules::note(&request.get_ref().note)?;
        self.scope_schedule(&request, &request.get_ref().name)?;
        leader_rpc!(self, request, client, pause_schedule, |req| {
            let op =
                Operation::PauseSchedule { name: req.name.clone(), paused: true, note: note.clone(), catch_up: false };
            self.schedule_op_local(&req.name, op).await?;
            self.get_schedule_local(&req.name)
        })
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        self.scope_schedule(&request, &request.get_ref().name)?;
        leader_rpc!(self, request, client, resume_schedule, |req| {
            let op = Operation::PauseSchedule {
                name: req.name.clone(),
                paused: false,
                note: String::new(),
                catch_up: req.catch_up,
            };
            self.schedule_op_local(&req.name, op).await?;
            self.get_schedule_local(&req.name)
        })
    }

    async fn trigger_schedule(
        &self,
        request: Request<pb::ScheduleRef>,
    ) -> Result<Response<pb::TriggerScheduleResponse>, Status> {
        self.scope_schedule(&request, &request.get_ref().name)?;
        leader_rpc!(self, request, client, trigger_schedule, |req| {
            if let Some(why) = self.disk.refusal() {
                return Err(ApiError::ResourceExhausted(why));
            }
            match self.schedule_op_local(&req.name, Operation::TriggerSchedule { name: req.name.clone() }).await? {
                CommandResponse::Fired { task_ids, .. } => {
                    Ok(pb::TriggerScheduleResponse { task_id: task_ids.first().copied() })
                }
                other => Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        })
    }

    async fn backfill_schedule(
        &self,
        request: Request<pb::BackfillScheduleRequest>,
    ) -> Result<Response<pb::BackfillScheduleResponse>, Status> {
        self.scope_schedule(&request, &request.get_ref().name)?;
        leader_rpc!(self, request, client, backfill_schedule, |req| {
            if req.dry_run {
                self.linearizable().await?;
            }
            self.backfill_local(&req).await
        })
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        leader_rpc!(self, request, client, list_workers, |req| {
            let _ = &req;
            let Some(workers) = self.dispatcher.workers().await else {
                return Err(ApiError::Unavailable {
                    message: "this node stopped leading; workers connect to the leader: retry".into(),
                    leader: None,
                    retry_after_ms: 200,
                });
            };
            let workers = workers
                .into_iter()
                .map(|w| pb::WorkerSession {
                    worker_id: w.worker_id,
                    callbacks: w
                        .callbacks
                        .into_iter()
                        .map(|(callback, credits, running)| pb::WorkerLoad { callback, credits, running })
                        .collect(),
                    draining: w.draining,
                    idle_ms: w.idle_ms,
                })
                .collect();
            Ok(pb::ListWorkersResponse { workers })
        })
    }

    async fn gc_status(&self, request: Request<pb::GcStatusRequest>) -> Result<Response<pb::GcStatusResponse>, Status> {
        leader_rpc!(self, request, client, gc_status, |req| {
            let _ = &req;
            self.linearizable().await?;
            self.gc_status_local().await
        })
    }
}
