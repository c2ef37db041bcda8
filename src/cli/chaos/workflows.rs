//! The chaos suite's periodic schedule and task graphs.
//!
//! - A 1-second schedule (`--catchup all`, `--overlap allow`) runs
//!   throughout: SLOT checks that every slot from the first to the last
//!   fired has exactly one task, whatever the faults did to the leaders,
//!   or was skipped (and counted) while the cluster was out of disk: a
//!   slot without a task needs a disk fault in the run and a count in the
//!   schedule's `skipped`.
//! - Every 2 s a client schedules a small graph in one batch: `a`; `b` and
//!   `c` after `a` (`c` fails); `d` after `b`, `c` (all-succeeded, so `c`
//!   cancels it); `e` after `b`, `c` (all-finished); the fan-in `f` after
//!   `a`, `d`, `e` (all-finished). DAG checks each task's final state, the
//!   counts its worker got, and that no child started before the run of
//!   each parent that counted had ended.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::check::list_all;
use super::{lock, real_ms, status_message, CliError, History};
use drover::client::Client;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, WorkerBuilder};

pub(super) const TICK_CALLBACK: &str = "chaos-tick";
const TICK_SCHEDULE: &str = "chaos-tick";
pub(super) const DAG_CALLBACK: &str = "chaos-dag";

/// The graph's items: (ref, payload, parents, all-finished).
const GRAPH: [(&str, &str, &[&str], bool); 6] = [
    ("a", "ok", &[], false),
    ("b", "ok", &["a"], false),
    ("c", "fail", &["a"], false),
    ("d", "ok", &["b", "c"], false),
    ("e", "ok", &["b", "c"], true),
    ("f", "ok", &["a", "d", "e"], true),
];

/// Each item's expected final state and, for those that run after
/// parents, the (succeeded, failed, dead, cancelled) counts they get.
const EXPECTED: [(pb::TaskState, Option<Counts>); 6] = [
    (pb::TaskState::Succeeded, None),
    (pb::TaskState::Succeeded, Some((1, 0, 0, 0))),
    (pb::TaskState::Failed, Some((1, 0, 0, 0))),
    (pb::TaskState::Cancelled, None),
    (pb::TaskState::Succeeded, Some((1, 1, 0, 0))),
    (pb::TaskState::Succeeded, Some((2, 0, 0, 1))),
];

/// Parents that ended (succeeded, failed, dead, cancelled).
type Counts = (u32, u32, u32, u32);

/// What the graph workers saw: each run's real start and end by (task,
/// fencing token), and the counts each task got.
#[derive(Default)]
pub(super) struct Seen {
    runs: Mutex<HashMap<(u64, u64), (u64, u64)>>,
    counts: Mutex<HashMap<u64, Counts>>,
}

/// Register the callbacks and create the schedule (kept if it exists).
pub(super) async fn setup(client: &Client) -> Result<(), CliError> {
    let def = pb::ScheduleDefinition {
        name: TICK_SCHEDULE.into(),
        callback: TICK_CALLBACK.into(),
        every_ms: 1_000,
        overlap: "allow".into(),
        catchup: "all".into(),
        catchup_window_ms: 24 * 3_600_000,
        ..Default::default()
    };
    match client.create_schedule(def).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
        Err(s) => Err(CliError(format!("creating schedule {TICK_SCHEDULE}: {}", status_message(&s)))),
    }
}

/// The handlers of both callbacks, on a chaos worker.
pub(super) fn handlers(builder: WorkerBuilder, seen: &Arc<Seen>) -> WorkerBuilder {
    let seen = seen.clone();
    builder.handle(TICK_CALLBACK, 8, |_ctx: TaskContext| async { TaskResult::Success(Vec::new()) }).handle(
        DAG_CALLBACK,
        16,
        move |ctx: TaskContext| {
            let seen = seen.clone();
            async move {
                let start = real_ms();
                if let Some(up) = &ctx.parent_results {
                    let e = up.ended;
                    lock(&seen.counts).insert(ctx.task_id, (e.succeeded, e.failed, e.dead, e.cancelled));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let result = match ctx.payload.as_slice() {
                    b"fail" => TaskResult::Fatal("fails on purpose".into()),
                    _ => TaskResult::Success(Vec::new()),
                };
                lock(&seen.runs).insert((ctx.task_id, ctx.fencing_token), (start, real_ms()));
                result
            }
        },
    )
}

/// Schedule a graph every 2 s until `stop`; returns the acknowledged
/// graphs' task ids, in item order.
pub(super) async fn dag_load(client: Arc<Client>, stop: CancellationToken, history: Arc<History>) -> Vec<Vec<u64>> {
    let mut graphs = Vec::new();
    let mut i = 0usize;
    while !stop.is_cancelled() {
        let specs = GRAPH
            .iter()
            .map(|(name, payload, parents, all_finished)| pb::TaskSpec {
                callback: DAG_CALLBACK.into(),
                payload: payload.as_bytes().to_vec(),
                r#ref: (*name).into(),
                after_refs: parents.iter().map(|p| p.to_string()).collect(),
                after_policy: if *all_finished { pb::AfterPolicy::AllFinished } else { pb::AfterPolicy::AllSucceeded }
                    as i32,
                ..Default::default()
            })
            .collect();
        // One request id across the client's retries: a graph is created
        // once or not at all.
        match client.schedule_batch(i, specs).await {
            Ok(r) => graphs.push(r.results.iter().map(|r| r.task_id).collect()),
            Err(s) => {
                history.log(json!({"event": "dag_error", "code": format!("{:?}", s.code()), "message": s.message()}))
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    graphs
}

/// Stop the schedule (so that its slots stop growing) before the drain.
pub(super) async fn pause(client: &Client) -> Result<(), CliError> {
    client
        .pause_schedule(TICK_SCHEDULE, "chaos run over")
        .await
        .map(|_| ())
        .map_err(|s| CliError(format!("pausing schedule {TICK_SCHEDULE}: {}", status_message(&s))))
}

/// SLOT and DAG checks; returns their summary.
pub(super) async fn check(
    client: &Client,
    graphs: &[Vec<u64>],
    seen: &Seen,
    disk_faults: usize,
    violations: &mut Vec<String>,
) -> Result<serde_json::Value, CliError> {
    // Slots.
    let prefix = format!("schedule:{TICK_SCHEDULE}:");
    let ticks = list_all(client, TICK_CALLBACK).await?;
    let slots: Vec<u64> =
        ticks.iter().filter_map(|t| t.idempotency_key.strip_prefix(&prefix).and_then(|s| s.parse().ok())).collect();
    let distinct: BTreeSet<u64> = slots.iter().copied().collect();
    if distinct.len() != slots.len() {
        violations.push(format!(
            "SLOT: {} tasks for {} distinct slots (a slot fired twice)",
            slots.len(),
            distinct.len()
        ));
    }
    let (first, last) = (distinct.first().copied().unwrap_or(0), distinct.last().copied().unwrap_or(0));
    let expected = if distinct.is_empty() { 0 } else { (last - first) / 1_000 + 1 };
    let missing: Vec<u64> = (0..expected).map(|k| first + k * 1_000).filter(|s| !distinct.contains(s)).collect();
    // With `--catchup all` and `--overlap allow`, the only slots skipped
    // are those that came due while the cluster was out of disk.
    let skipped = client
        .get_schedule(TICK_SCHEDULE)
        .await
        .map_err(|s| CliError(format!("reading schedule {TICK_SCHEDULE}: {}", status_message(&s))))?
        .skipped;
    if !missing.is_empty() && (disk_faults == 0 || missing.len() as u64 > skipped) {
        violations.push(format!(
            "SLOT: {} slots without a task ({skipped} counted as skipped, {disk_faults} disk faults), first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if distinct.is_empty() {
        violations.push("SLOT: the schedule fired nothing".into());
    }

    // Graphs.
    let tasks: HashMap<u64, pb::Task> = list_all(client, DAG_CALLBACK).await?.into_iter().map(|t| (t.id, t)).collect();
    let runs = lock(&seen.runs).clone();
    let counts = lock(&seen.counts).clone();
    let mut bad_graphs = 0;
    for ids in graphs {
        let before = violations.len();
        for (i, id) in ids.iter().enumerate() {
            let Some(t) = tasks.get(id) else {
                violations.push(format!("DAG: task {id} ({}) is missing", GRAPH[i].0));
                continue;
            };
            let (state, want_counts) = EXPECTED[i];
            if t.state != state as i32 {
                violations.push(format!(
                    "DAG: task {id} ({}) is {}, expected {} ({})",
                    GRAPH[i].0,
                    t.state().as_str_name(),
                    state.as_str_name(),
                    t.last_error
                ));
            }
            if let (Some(want), Some(got)) = (want_counts, counts.get(id)) {
                if *got != want {
                    violations
                        .push(format!("DAG: task {id} ({}) got parent counts {got:?}, expected {want:?}", GRAPH[i].0));
                }
            }
            // No run of the child began before the counted run of each
            // parent (the one whose token the parent ended with) ended.
            let first_start = runs.iter().filter(|((task, _), _)| task == id).map(|(_, (s, _))| *s).min();
            for parent in GRAPH[i].2 {
                let p = GRAPH.iter().position(|g| g.0 == *parent).map(|j| ids[j]).unwrap_or(0);
                let end = tasks.get(&p).and_then(|pt| runs.get(&(p, pt.fencing_token))).map(|(_, e)| *e);
                if let (Some(start), Some(end)) = (first_start, end) {
                    if start < end {
                        violations.push(format!(
                            "DAG: task {id} ({}) started at {start}, before its parent {p} ended at {end}",
                            GRAPH[i].0
                        ));
                    }
                }
            }
        }
        if violations.len() > before {
            bad_graphs += 1;
        }
    }
    let waiting = tasks.values().filter(|t| t.state == pb::TaskState::Waiting as i32).count();
    if waiting > 0 {
        violations.push(format!("DAG: {waiting} tasks still waiting after the drain"));
    }
    println!(
        "schedule: {expected} slots from the first to the last fired, {} with a task, {} skipped while out of disk, {} tasks | graphs: {} acknowledged, {bad_graphs} wrong, {waiting} tasks left waiting",
        distinct.len(),
        skipped,
        slots.len(),
        graphs.len()
    );
    Ok(json!({
        "slots_expected": expected, "slots_with_a_task": distinct.len(), "slot_tasks": slots.len(), "slots_skipped": skipped,
        "graphs": graphs.len(), "graphs_wrong": bad_graphs, "left_waiting": waiting,
    }))
}
