//! The web console, served by every node beside `/metrics` (`--http-listen`).
//!
//! Server-rendered pages ([`pages`], HTML from maud templates, escaped by
//! default; the stylesheet is embedded in the binary, no JavaScript build).
//! Every page calls this node's own gRPC services in process, through
//! their trait methods, so it gets exactly what a client would: reads are
//! served locally (`allow_stale`), writes go through the leader like every
//! API call. Pages refresh themselves every few seconds.
//!
//! Writes are HTML form POSTs. Each form carries this process's random
//! token, which a page of another site cannot read, and the request must
//! not come from another site (`Sec-Fetch-Site`, when the browser sends
//! it): a cross-site request is refused with 403.
//!
//! With auth on, every page and action needs a token ([`login`]).

mod login;
mod pages;
pub mod rates;
mod workflow;

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::cluster::ClusterService;
use super::scheduler::SchedulerService;
use crate::pb;
use crate::pb::cluster_server::Cluster;
use crate::pb::scheduler_server::Scheduler;

/// What the console pages read and write through.
#[derive(Clone)]
pub struct ConsoleState {
    pub scheduler: Arc<SchedulerService>,
    pub cluster: Arc<ClusterService>,
    /// This process's form token (random per start).
    token: Arc<String>,
    /// Recent rates, for the overview.
    history: Arc<std::sync::Mutex<rates::History>>,
    /// Mark the sign-in cookie Secure (the console serves TLS).
    secure_cookies: bool,
}

impl ConsoleState {
    /// The rates sampler runs on `tasks` until `stop`.
    pub fn new(
        scheduler: Arc<SchedulerService>,
        cluster: Arc<ClusterService>,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) -> Self {
        let token = format!("{:032x}", rand::random::<u128>());
        ConsoleState {
            scheduler,
            cluster,
            token: Arc::new(token),
            history: rates::spawn_sampler(tasks, stop),
            secure_cookies: false,
        }
    }

    /// The console is served over TLS: its sign-in cookie is Secure.
    pub fn with_secure_cookies(mut self, secure: bool) -> Self {
        self.secure_cookies = secure;
        self
    }

    fn recent(&self) -> Vec<rates::Point> {
        self.history.lock().map(|h| h.points()).unwrap_or_default()
    }
}

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/console.css", get(|| async { ([("content-type", "text/css")], pages::CSS) }))
        .route("/callbacks/{name}", get(callback_page))
        .route("/tasks", get(tasks_page))
        .route("/tasks/{id}", get(task_page))
        .route("/dlq", get(dlq_page))
        .route("/schedules", get(schedules_page))
        .route("/workers", get(workers_page))
        .route("/workflows/{id}", get(workflow_page))
        .route("/api/rates", get(|State(s): State<ConsoleState>| async move { axum::Json(s.recent()) }))
        .route("/actions/gate", post(gate_action))
        .route("/actions/cancel", post(cancel_action))
        .route("/actions/dlq", post(dlq_action))
        .route("/actions/schedule", post(schedule_action))
        .route("/login", get(login::login_form).post(login::login))
        .layer(axum::middleware::from_fn_with_state(state.clone(), login::require))
        .with_state(state)
}

/// A failed call, shown as a page with its status.
fn failure(s: tonic::Status) -> Response {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, pages::error_page(&format!("{:?}", s.code()), s.message())).into_response()
}

async fn overview(State(s): State<ConsoleState>) -> Response {
    let callbacks = s.scheduler.list_callbacks(login::request(pb::ListCallbacksRequest { allow_stale: true })).await;
    let status = s.cluster.status(login::request(pb::ClusterStatusRequest {})).await;
    let gates = s.scheduler.list_gates(login::request(pb::ListGatesRequest { allow_stale: true })).await;
    match callbacks {
        Ok(c) => pages::overview(
            &c.into_inner(),
            status.ok().map(tonic::Response::into_inner).as_ref(),
            &gates.map(|g| g.into_inner().gates).unwrap_or_default(),
            &s.recent(),
        )
        .into_response(),
        Err(e) => failure(e),
    }
}

async fn callback_page(State(s): State<ConsoleState>, Path(name): Path<String>) -> Response {
    let callbacks =
        match s.scheduler.list_callbacks(login::request(pb::ListCallbacksRequest { allow_stale: true })).await {
            Ok(c) => c.into_inner(),
            Err(e) => return failure(e),
        };
    let Some(info) = callbacks.callbacks.into_iter().find(|c| c.settings.as_ref().is_some_and(|st| st.name == name))
    else {
        return failure(tonic::Status::not_found(format!("callback {name:?} is not registered")));
    };
    let gates = s.scheduler.list_gates(login::request(pb::ListGatesRequest { allow_stale: true })).await;
    let gates: Vec<pb::Gate> =
        gates.map(|g| g.into_inner().gates).unwrap_or_default().into_iter().filter(|g| g.callback == name).collect();
    pages::callback(&info, &gates, &s.token).into_response()
}

#[derive(Deserialize, Default)]
pub struct TaskSearch {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub callback: String,
    #[serde(default)]
    pub collection: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub after: u64,
}

async fn tasks_page(State(s): State<ConsoleState>, Query(q): Query<TaskSearch>) -> Response {
    if let Ok(id) = q.id.trim().parse::<u64>() {
        return Redirect::to(&format!("/tasks/{id}")).into_response();
    }
    let state = match crate::domain::TaskState::parse(&q.state) {
        Some(st) => super::convert::state_to_pb(st) as i32,
        None => 0,
    };
    let req = pb::ListTasksRequest {
        callback: q.callback.clone(),
        state,
        limit: 100,
        after_id: q.after,
        allow_stale: true,
        collection: q.collection.clone(),
    };
    match s.scheduler.list_tasks(login::request(req)).await {
        Ok(r) => pages::tasks(&q, &r.into_inner()).into_response(),
        Err(e) => failure(e),
    }
}

async fn task_page(State(s): State<ConsoleState>, Path(id): Path<u64>) -> Response {
    let req = pb::GetTaskRequest { task_id: id, allow_stale: true, include_payload: true };
    match s.scheduler.get_task(login::request(req)).await {
        Ok(t) => pages::task(&t.into_inner(), &s.token).into_response(),
        Err(e) => failure(e),
    }
}

async fn workflow_page(State(s): State<ConsoleState>, Path(id): Path<u64>) -> Response {
    match workflow::load(&s, id).await {
        Ok(g) => workflow::page(id, &g).into_response(),
        Err(e) => failure(e),
    }
}

async fn dlq_page(State(s): State<ConsoleState>) -> Response {
    let req =
        pb::ListTasksRequest { state: pb::TaskState::Dead as i32, limit: 500, allow_stale: true, ..Default::default() };
    match s.scheduler.list_tasks(login::request(req)).await {
        Ok(r) => pages::dlq(&r.into_inner().tasks, &s.token).into_response(),
        Err(e) => failure(e),
    }
}

async fn schedules_page(State(s): State<ConsoleState>) -> Response {
    match s.scheduler.list_schedules(login::request(pb::ListSchedulesRequest { allow_stale: true })).await {
        Ok(r) => pages::schedules(&r.into_inner().schedules, &s.token).into_response(),
        Err(e) => failure(e),
    }
}

async fn workers_page(State(s): State<ConsoleState>) -> Response {
    match s.scheduler.list_workers(login::request(pb::ListWorkersRequest {})).await {
        Ok(r) => pages::workers(&r.into_inner().workers).into_response(),
        Err(e) => failure(e),
    }
}

/// Refuse a form that is not from this console: a wrong token, or a
/// browser saying the request comes from another site.
fn refused(s: &ConsoleState, headers: &HeaderMap, token: &str) -> Option<Response> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !matches!(v, "same-origin" | "none"));
    (cross_site || token != s.token.as_str()).then(|| {
        let page = pages::error_page("FORBIDDEN", "this form did not come from this console");
        (StatusCode::FORBIDDEN, page).into_response()
    })
}

/// Back where the form was, or to `fallback`.
fn back(headers: &HeaderMap, fallback: &str) -> Response {
    let to = headers
        .get("referer")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.find("://").and_then(|i| r[i + 3..].find('/').map(|j| r[i + 3 + j..].to_string())))
        .unwrap_or_else(|| fallback.to_string());
    Redirect::to(&to).into_response()
}

#[derive(Deserialize)]
pub struct GateForm {
    pub token: String,
    pub callback: String,
    #[serde(default)]
    pub collection: String,
    /// pause, drop or open.
    pub mode: String,
}

async fn gate_action(State(s): State<ConsoleState>, headers: HeaderMap, Form(f): Form<GateForm>) -> Response {
    if let Some(r) = refused(&s, &headers, &f.token) {
        return r;
    }
    let result = match f.mode.as_str() {
        "open" => s
            .scheduler
            .open_gate(login::request(pb::OpenGateRequest { callback: f.callback.clone(), collection: f.collection }))
            .await
            .map(|_| ()),
        mode => {
            let mode = if mode == "drop" { pb::GateMode::Drop } else { pb::GateMode::Pause };
            let req = pb::SetGateRequest {
                callback: f.callback.clone(),
                collection: f.collection,
                mode: mode as i32,
                note: "from the web console".into(),
                ..Default::default()
            };
            s.scheduler.set_gate(login::request(req)).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => back(&headers, &format!("/callbacks/{}", f.callback)),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct TaskForm {
    pub token: String,
    pub task_id: u64,
}

async fn cancel_action(State(s): State<ConsoleState>, headers: HeaderMap, Form(f): Form<TaskForm>) -> Response {
    if let Some(r) = refused(&s, &headers, &f.token) {
        return r;
    }
    match s.scheduler.cancel_task(login::request(pb::CancelTaskRequest { task_id: f.task_id })).await {
        Ok(_) => back(&headers, &format!("/tasks/{}", f.task_id)),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct DlqForm {
    pub token: String,
    /// redrive or purge.
    pub op: String,
    #[serde(default)]
    pub task_id: Option<u64>,
    #[serde(default)]
    pub callback: Option<String>,
    #[serde(default)]
    pub with_dependents: Option<String>,
}

async fn dlq_action(State(s): State<ConsoleState>, headers: HeaderMap, Form(f): Form<DlqForm>) -> Response {
    if let Some(r) = refused(&s, &headers, &f.token) {
        return r;
    }
    use pb::dead_letter_request::Target;
    let target = match (f.task_id, f.callback.filter(|c| !c.is_empty())) {
        (Some(id), _) => Target::TaskId(id),
        (None, Some(c)) => Target::Callback(c),
        (None, None) => return failure(tonic::Status::invalid_argument("name a task or a callback")),
    };
    let req = pb::DeadLetterRequest {
        target: Some(target),
        with_dependents: f.with_dependents.is_some() && f.op == "redrive",
    };
    let result = match f.op.as_str() {
        "redrive" => s.scheduler.redrive_dead_letters(login::request(req)).await,
        "purge" => s.scheduler.purge_dead_letters(login::request(req)).await,
        other => return failure(tonic::Status::invalid_argument(format!("unknown operation {other:?}"))),
    };
    match result {
        Ok(_) => back(&headers, "/dlq"),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
pub struct ScheduleForm {
    pub token: String,
    pub name: String,
    /// pause, resume or trigger.
    pub op: String,
}

async fn schedule_action(State(s): State<ConsoleState>, headers: HeaderMap, Form(f): Form<ScheduleForm>) -> Response {
    if let Some(r) = refused(&s, &headers, &f.token) {
        return r;
    }
    let name = f.name.clone();
    let result = match f.op.as_str() {
        "pause" => s
            .scheduler
            .pause_schedule(login::request(pb::PauseScheduleRequest { name, note: "from the web console".into() }))
            .await
            .map(|_| ()),
        "resume" => s
            .scheduler
            .resume_schedule(login::request(pb::ResumeScheduleRequest { name, catch_up: false }))
            .await
            .map(|_| ()),
        "trigger" => s.scheduler.trigger_schedule(login::request(pb::ScheduleRef { name })).await.map(|_| ()),
        other => return failure(tonic::Status::invalid_argument(format!("unknown operation {other:?}"))),
    };
    match result {
        Ok(()) => back(&headers, "/schedules"),
        Err(e) => failure(e),
    }
}
