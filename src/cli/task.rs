//! `drover task ...`: schedule and read tasks.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{failed, parse_duration, Cli, CliError};
use drover::api::convert::state_to_pb;
use drover::domain::TaskState;
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Schedule a task; prints its id.
    #[command(after_help = "Examples:\n  \
        drover task schedule send_email --payload '{\"to\":\"a@example.com\"}'\n  \
        drover task schedule report --delay 10m --priority 5 --key report-2026-11-26\n  \
        drover task schedule send_email --collection password_reset --payload '{\"to\":\"a@b.c\"}'\n  \
        drover task schedule cleanup --at 2026-12-01T00:00:00Z --payload-file job.json --json\n  \
        drover task schedule publish --after 41,42                        # runs once 41 and 42 succeeded\n  \
        drover task schedule summarize --after 41,42 --after-policy all-finished")]
    Schedule(ScheduleArgs),
    /// Schedule a graph of tasks in one request; prints their ids in order.
    #[command(after_help = super::graph::GRAPH_HELP)]
    ScheduleBatch(super::graph::BatchArgs),
    /// Show a task's state, attempts, last error, result and history.
    Get(GetArgs),
    /// Page through tasks, newest last.
    List(ListArgs),
    /// Cancel a task (a running one is stopped on its worker).
    Cancel {
        /// Task id.
        id: u64,
    },
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub callback: Option<String>,
    /// scheduled, ready, running, retry_wait, succeeded, failed, dead, cancelled or waiting.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<TaskState>,
    /// Most tasks to show.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Start after this task id (for paging).
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Only tasks of this collection.
    #[arg(long)]
    pub collection: Option<String>,
}

fn parse_state(s: &str) -> Result<TaskState, String> {
    TaskState::parse(s).ok_or_else(|| {
        let names: Vec<&str> = TaskState::ALL.iter().map(|t| t.name()).collect();
        format!("unknown state {s:?}; use one of {}", names.join(", "))
    })
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// The callback (handler) that will run the task.
    pub callback: String,
    /// Payload as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload read from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// Run after this delay (e.g. 500ms, 10s, 5m, 2h).
    #[arg(long, value_parser = parse_duration, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Run at this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// 0 (lowest, default) to 9 (highest).
    #[arg(long, default_value_t = 0)]
    pub priority: u32,
    /// Idempotency key: scheduling again with the same key returns the first task (while it is kept: retention deletes finished tasks with their keys).
    #[arg(long)]
    pub key: Option<String>,
    /// The collection (labelled subset of the callback's tasks) it belongs to; gates can pause or drop one collection.
    #[arg(long)]
    pub collection: Option<String>,
    /// Run after these tasks (comma-separated ids); it waits until they end.
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub after: Vec<u64>,
    /// all-succeeded (default: any parent that fails, dies or is cancelled cancels this task) or all-finished (runs once every parent ended, however).
    #[arg(long, value_parser = parse_policy, requires = "after")]
    pub after_policy: Option<pb::AfterPolicy>,
    /// The W3C trace context to schedule the task under (00-TRACEID-SPANID-FLAGS): every attempt's worker span joins that trace. A shell script inside a traced job usually has it in TRACEPARENT already.
    #[arg(long, env = "TRACEPARENT", value_name = "TRACEPARENT")]
    pub traceparent: Option<String>,
    /// The W3C tracestate that goes with --traceparent.
    #[arg(long, env = "TRACESTATE", value_name = "TRACESTATE")]
    pub tracestate: Option<String>,
}

pub fn parse_policy(s: &str) -> Result<pb::AfterPolicy, String> {
    match s {
        "all-succeeded" => Ok(pb::AfterPolicy::AllSucceeded),
        "all-finished" => Ok(pb::AfterPolicy::AllFinished),
        _ => Err(format!("unknown policy {s:?}; use all-succeeded or all-finished")),
    }
}

pub fn policy_name(p: i32) -> &'static str {
    match pb::AfterPolicy::try_from(p) {
        Ok(pb::AfterPolicy::AllFinished) => "all-finished",
        _ => "all-succeeded",
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Task id.
    pub id: u64,
    /// Read the answering node's copy without asking the leader (may lag; works without a leader).
    #[arg(long)]
    pub stale: bool,
}

pub async fn run(cli: &Cli, cmd: &TaskCommand) -> Result<(), CliError> {
    match cmd {
        TaskCommand::Schedule(args) => schedule(cli, args).await,
        TaskCommand::ScheduleBatch(args) => super::graph::schedule_batch(cli, args).await,
        TaskCommand::Get(args) => get(cli, args).await,
        TaskCommand::List(args) => list(cli, args).await,
        TaskCommand::Cancel { id } => cancel(cli, *id).await,
    }
}

fn read_payload(args: &ScheduleArgs) -> Result<Vec<u8>, CliError> {
    match (&args.payload, &args.payload_file) {
        (Some(p), _) => Ok(p.clone().into_bytes()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| CliError(format!("reading stdin: {e}")))?;
            Ok(buf)
        }
        (None, Some(f)) => std::fs::read(f).map_err(|e| CliError(format!("--payload-file {}: {e}", f.display()))),
        (None, None) => Ok(Vec::new()),
    }
}

async fn schedule(cli: &Cli, args: &ScheduleArgs) -> Result<(), CliError> {
    let when = match (&args.delay, &args.at) {
        (Some(d), _) => Some(pb::task_spec::When::DelayMs(d.as_millis() as u64)),
        (None, Some(at)) => {
            let t = humantime::parse_rfc3339_weak(at)
                .map_err(|e| CliError(format!("--at {at:?} is not an RFC 3339 time like 2026-12-01T09:00:00Z: {e}")))?;
            let ms =
                t.duration_since(UNIX_EPOCH).map_err(|_| CliError(format!("--at {at:?} is before 1970")))?.as_millis()
                    as u64;
            Some(pb::task_spec::When::RunAtUnixMs(ms))
        }
        (None, None) => None,
    };
    let spec = pb::TaskSpec {
        callback: args.callback.clone(),
        payload: read_payload(args)?,
        priority: args.priority,
        when,
        idempotency_key: args.key.clone().unwrap_or_default(),
        collection: args.collection.clone().unwrap_or_default(),
        after: args.after.clone(),
        after_policy: args.after_policy.unwrap_or(pb::AfterPolicy::Unspecified) as i32,
        trace: drover::telemetry::parse(
            args.traceparent.as_deref().unwrap_or_default(),
            args.traceparent.as_ref().and(args.tracestate.as_deref()).unwrap_or_default(),
        )
        .map_err(|e| CliError(format!("--traceparent: {e}")))?,
        ..Default::default()
    };
    let client = cli.client()?;
    let reply = client.schedule(0, spec).await.map_err(failed)?;
    if reply.state == pb::TaskState::Cancelled as i32 {
        // Acknowledged, but a dropping gate took it: say so where a script
        // will not parse it.
        eprintln!("warning: task {} was cancelled on arrival: {}", reply.task_id, reply.note);
    }
    if cli.json {
        println!(
            "{}",
            json!({ "task_id": reply.task_id, "created": reply.created, "state": state_name(reply.state), "note": reply.note })
        );
    } else if reply.created {
        println!("{}", reply.task_id);
    } else {
        println!("{}", reply.task_id);
        eprintln!("(existing task for key {:?}; nothing new was created)", args.key.as_deref().unwrap_or(""));
    }
    Ok(())
}

fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn state_name(state: i32) -> &'static str {
    match pb::TaskState::try_from(state).unwrap_or(pb::TaskState::Unspecified) {
        pb::TaskState::Unspecified => "unknown",
        pb::TaskState::Scheduled => "scheduled",
        pb::TaskState::Ready => "ready",
        pb::TaskState::Running => "running",
        pb::TaskState::RetryWait => "retry_wait",
        pb::TaskState::Succeeded => "succeeded",
        pb::TaskState::Failed => "failed",
        pb::TaskState::Dead => "dead",
        pb::TaskState::Cancelled => "cancelled",
        pb::TaskState::Waiting => "waiting",
    }
}

fn task_json(t: &pb::Task) -> serde_json::Value {
    json!({
        "id": t.id,
        "callback": t.callback,
        "collection": if t.collection.is_empty() { None } else { Some(&t.collection) },
        "state": state_name(t.state),
        "priority": t.priority,
        "run_at": fmt_time(t.run_at_unix_ms),
        "run_at_unix_ms": t.run_at_unix_ms,
        "created_at": fmt_time(t.created_at_unix_ms),
        "created_at_unix_ms": t.created_at_unix_ms,
        "attempts": t.attempts,
        "payload_size": t.payload_size,
        "idempotency_key": if t.idempotency_key.is_empty() { None } else { Some(&t.idempotency_key) },
        "created_index": t.created_index,
        "fencing_token": t.fencing_token,
        "worker": if t.worker.is_empty() { None } else { Some(&t.worker) },
        "last_error": if t.last_error.is_empty() { None } else { Some(&t.last_error) },
        "result": t.result.as_ref().map(|r| String::from_utf8_lossy(r).into_owned()),
        "cancel_requested": t.cancel_requested,
        "history": t.history.iter().map(|h| json!({
            "state": state_name(h.state), "at": fmt_time(h.at_unix_ms), "at_unix_ms": h.at_unix_ms, "attempt": h.attempt,
        })).collect::<Vec<_>>(),
        "dependencies": t.dependencies.as_ref().map(|d| {
            let e = d.ended.unwrap_or_default();
            json!({
                "parents": d.parents, "policy": policy_name(d.policy), "open": d.open,
                "ended": { "succeeded": e.succeeded, "failed": e.failed, "dead": e.dead, "cancelled": e.cancelled },
                "cancelled_by": d.cancelled_by,
            })
        }),
        "children": t.children,
        "trace": t.trace.as_ref().map(|c| json!({ "traceparent": c.traceparent, "tracestate": c.tracestate })),
    })
}

async fn get(cli: &Cli, args: &GetArgs) -> Result<(), CliError> {
    let client = cli.client()?;
    let t = client.get_task(args.id, args.stale, false).await.map_err(failed)?;
    if cli.json {
        println!("{}", task_json(&t));
        return Ok(());
    }
    println!("id:           {}", t.id);
    println!("callback:     {}", t.callback);
    if !t.collection.is_empty() {
        println!("collection:   {}", t.collection);
    }
    println!("state:        {}{}", state_name(t.state), if t.cancel_requested { " (cancel requested)" } else { "" });
    println!("priority:     {}", t.priority);
    println!("run at:       {}", fmt_time(t.run_at_unix_ms));
    println!("created at:   {}", fmt_time(t.created_at_unix_ms));
    println!("attempts:     {}", t.attempts);
    println!("payload size: {} bytes", t.payload_size);
    if !t.idempotency_key.is_empty() {
        println!("key:          {}", t.idempotency_key);
    }
    if t.fencing_token > 0 {
        println!("worker:       {} (fencing token {})", t.worker, t.fencing_token);
    }
    if !t.last_error.is_empty() {
        println!("last error:   {}", t.last_error);
    }
    if let Some(r) = &t.result {
        println!("result:       {}", String::from_utf8_lossy(r));
    }
    if let Some(d) = &t.dependencies {
        let e = d.ended.unwrap_or_default();
        println!("after:        {} ({})", ids(&d.parents), policy_name(d.policy));
        println!(
            "parents:      {} open, {} succeeded, {} failed, {} dead, {} cancelled",
            d.open, e.succeeded, e.failed, e.dead, e.cancelled
        );
    }
    if !t.children.is_empty() {
        println!("children:     {}", ids(&t.children));
    }
    if let Some(c) = &t.trace {
        println!("traceparent:  {}", c.traceparent);
        if !c.tracestate.is_empty() {
            println!("tracestate:   {}", c.tracestate);
        }
    }
    println!("history:");
    for h in &t.history {
        println!("  {}  {:<10} attempt {}", fmt_time(h.at_unix_ms), state_name(h.state), h.attempt);
    }
    Ok(())
}

/// Ids as a comma-separated list, the middle elided past 20.
fn ids(v: &[u64]) -> String {
    let show = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    if v.len() <= 20 {
        show(v)
    } else {
        format!("{},...({} more)...,{}", show(&v[..10]), v.len() - 15, show(&v[v.len() - 5..]))
    }
}

/// Print a page of tasks as a table, or as JSON.
pub fn print_tasks(json_out: bool, r: &pb::ListTasksResponse) {
    if json_out {
        let tasks: Vec<_> = r.tasks.iter().map(task_json).collect();
        println!("{}", json!({ "tasks": tasks, "next_after": r.next_after }));
        return;
    }
    println!(
        "{:>10}  {:<20} {:<10} {:>3} {:>4}  {:<24}  LAST ERROR",
        "ID", "CALLBACK", "STATE", "PRI", "TRY", "RUN AT"
    );
    for t in &r.tasks {
        let mut err = t.last_error.replace('\n', " ");
        if err.len() > 60 {
            let mut cut = 57;
            while !err.is_char_boundary(cut) {
                cut -= 1;
            }
            err.truncate(cut);
            err.push_str("...");
        }
        println!(
            "{:>10}  {:<20} {:<10} {:>3} {:>4}  {:<24}  {}",
            t.id,
            t.callback,
            state_name(t.state),
            t.priority,
            t.attempts,
            fmt_time(t.run_at_unix_ms),
            err
        );
    }
    if r.next_after != 0 {
        println!("(more: --after {})", r.next_after);
    }
}

async fn list(cli: &Cli, args: &ListArgs) -> Result<(), CliError> {
    let client = cli.client()?;
    let req = pb::ListTasksRequest {
        callback: args.callback.clone().unwrap_or_default(),
        state: args.state.map_or(pb::TaskState::Unspecified, state_to_pb) as i32,
        limit: args.limit,
        after_id: args.after,
        allow_stale: false,
        collection: args.collection.clone().unwrap_or_default(),
    };
    let r = client.list_tasks(req).await.map_err(failed)?;
    print_tasks(cli.json, &r);
    Ok(())
}

async fn cancel(cli: &Cli, id: u64) -> Result<(), CliError> {
    let client = cli.client()?;
    let r = client.cancel_task(id).await.map_err(failed)?;
    let state = state_name(r.state);
    if cli.json {
        println!("{}", json!({ "task_id": id, "state": state }));
    } else if state == "running" {
        println!("task {id}: cancel requested; its worker is stopping it");
    } else {
        println!("task {id}: {state}");
    }
    Ok(())
}
