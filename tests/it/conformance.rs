//! The shared SDK conformance scenarios (`sdk/conformance/scenarios.json`),
//! run with the Rust worker SDK in-process against a real 3-node cluster.
//! The Python SDK runs the same file (`sdk/python/tests/test_conformance.py`),
//! so that the two SDKs cannot drift apart. The conformance handler and the
//! expectations are described in `sdk/conformance/README.md`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::harness::*;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

const SCENARIOS: &str = include_str!("../../sdk/conformance/scenarios.json");

/// What the handlers saw, per task id.
#[derive(Default)]
struct Seen {
    /// Short critical sections only (insert or lookup), never across an
    /// `.await`.
    started: Mutex<HashSet<u64>>,
    saw_cancel: Mutex<HashSet<u64>>,
}

/// The conformance handler, as `sdk/conformance/README.md` describes it.
async fn conformance_handler(ctx: TaskContext, seen: Arc<Seen>) -> TaskResult {
    seen.started.lock().unwrap().insert(ctx.task_id);
    let p: Value = serde_json::from_slice(&ctx.payload).unwrap_or(Value::Null);
    if let Some(ms) = p["sleep_ms"].as_u64() {
        tokio::select! {
            _ = ctx.cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
        }
    }
    if p["wait_cancel"].as_bool() == Some(true) {
        tokio::select! {
            _ = ctx.cancel.cancelled() => { seen.saw_cancel.lock().unwrap().insert(ctx.task_id); }
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        return TaskResult::Success(b"stopped".to_vec());
    }
    if p["retry_until_attempt"].as_u64().is_some_and(|n| u64::from(ctx.attempt) < n) {
        return TaskResult::Retry {
            error: format!("retry {}", ctx.attempt),
            retry_after: p["retry_after_ms"].as_u64().map(Duration::from_millis),
        };
    }
    if let Some(f) = p["fatal"].as_str() {
        return TaskResult::Fatal(f.into());
    }
    let result = p["result"].as_str().unwrap_or("ok");
    let result = if p["echo_attempt"].as_bool() == Some(true) {
        format!("{result}:{}", ctx.attempt)
    } else {
        result.to_string()
    };
    TaskResult::Success(result.into_bytes())
}

fn state_named(name: &str) -> pb::TaskState {
    pb::TaskState::from_str_name(&format!("TASK_STATE_{}", name.to_uppercase()))
        .unwrap_or_else(|| panic!("unknown state {name:?} in scenarios.json"))
}

fn history_at(t: &pb::Task, state: pb::TaskState, attempt: Option<u32>) -> u64 {
    t.history
        .iter()
        .find(|h| h.state == state as i32 && attempt.is_none_or(|a| h.attempt == a))
        .map(|h| h.at_unix_ms)
        .unwrap_or_else(|| panic!("task {}: no {state:?} in its history", t.id))
}

/// Check one scenario's `expect` against its ended task.
async fn check(
    client: &drover::client::Client,
    sc: &Value,
    id: u64,
    second: Option<&pb::ScheduleResponse>,
    seen: &Seen,
) {
    let name = sc["name"].as_str().unwrap_or("?");
    let exp = &sc["expect"];
    let finished = [pb::TaskState::Succeeded, pb::TaskState::Failed, pb::TaskState::Dead, pb::TaskState::Cancelled]
        .map(|s| s as i32);
    let t = wait_until(Duration::from_secs(60), &format!("{name}: task {id} to end"), || async {
        client.get_task(id, false, false).await.ok().filter(|t| finished.contains(&t.state))
    })
    .await;
    let want = state_named(exp["state"].as_str().expect("expect.state"));
    assert_eq!(t.state, want as i32, "{name}: state (last error {:?})", t.last_error);
    assert_eq!(u64::from(t.attempts), exp["attempts"].as_u64().expect("expect.attempts"), "{name}: attempts");
    if let Some(r) = exp["result"].as_str() {
        assert_eq!(t.result.as_deref(), Some(r.as_bytes()), "{name}: result");
    }
    if let Some(e) = exp["error_contains"].as_str() {
        assert!(t.last_error.contains(e), "{name}: error {:?}", t.last_error);
    }
    if exp["in_dead_letters"].as_bool() == Some(true) {
        let dead = list(client, &t.callback, pb::TaskState::Dead).await;
        assert!(dead.iter().any(|d| d.id == id), "{name}: not in the dead-letter queue");
    }
    if let Some(gap) = exp["min_retry_gap_ms"].as_u64() {
        let waited =
            history_at(&t, pb::TaskState::Running, Some(2)) - history_at(&t, pb::TaskState::RetryWait, Some(1));
        assert!(waited + 1 >= gap, "{name}: retried after {waited} ms");
    }
    if exp["started_not_before_run_at"].as_bool() == Some(true) {
        let started = history_at(&t, pb::TaskState::Running, None);
        assert!(started >= t.run_at_unix_ms, "{name}: started {started} before its run-at {}", t.run_at_unix_ms);
    }
    if exp["handler_saw_cancel"].as_bool() == Some(true) {
        assert!(seen.saw_cancel.lock().unwrap().contains(&id), "{name}: the handler did not see the cancel");
    }
    if let Some(created) = exp["second_schedule_created"].as_bool() {
        let second = second.expect("a second schedule");
        assert_eq!((second.task_id, second.created), (id, created), "{name}: second schedule");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shared_sdk_conformance_scenarios_hold_for_the_rust_sdk() {
    let spec: Value = serde_json::from_str(SCENARIOS).expect("scenarios.json");
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let callbacks = spec["callbacks"].as_array().expect("callbacks");
    for cb in callbacks {
        let ms = |k: &str| cb[k].as_u64().unwrap_or_else(|| panic!("callbacks.{k}"));
        register(
            &client,
            pb::CallbackSettings {
                name: cb["name"].as_str().expect("callbacks.name").into(),
                max_attempts: ms("max_attempts") as u32,
                lease_ms: ms("lease_ms"),
                timeout_ms: ms("timeout_ms"),
                backoff_initial_ms: ms("backoff_initial_ms"),
                backoff_max_ms: ms("backoff_max_ms"),
                ..Default::default()
            },
        )
        .await;
    }
    let seen = Arc::new(Seen::default());
    let mut builder = Worker::builder(c.endpoints().to_vec()).id("conformance-rust");
    for cb in callbacks {
        let seen = seen.clone();
        let handler = move |ctx: TaskContext| conformance_handler(ctx, seen.clone());
        builder = builder.handle(cb["name"].as_str().expect("callbacks.name"), 4, handler);
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(builder.run(shutdown.clone()));

    let scenarios = spec["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 10, "the shared set has at least 10 scenarios");
    let mut ids = HashMap::new();
    let mut seconds = HashMap::new();
    for sc in scenarios {
        let name = sc["name"].as_str().expect("name").to_string();
        let task = pb::TaskSpec {
            callback: sc["callback"].as_str().expect("callback").into(),
            payload: serde_json::to_vec(&sc["payload"]).expect("payload"),
            idempotency_key: sc["key"].as_str().unwrap_or_default().into(),
            when: sc["delay_ms"].as_u64().map(pb::task_spec::When::DelayMs),
            ..Default::default()
        };
        let first = client.schedule(0, task.clone()).await.expect("schedule");
        ids.insert(name.clone(), first.task_id);
        if sc["action"].as_str() == Some("schedule_twice") {
            seconds.insert(name, client.schedule(0, task).await.expect("schedule again"));
        }
    }
    for sc in scenarios.iter().filter(|sc| sc["action"].as_str() == Some("cancel_when_running")) {
        let id = ids[sc["name"].as_str().expect("name")];
        wait_until(Duration::from_secs(30), "the handler to start", || async {
            seen.started.lock().unwrap().contains(&id).then_some(())
        })
        .await;
        let r = client.cancel_task(id).await.expect("cancel");
        assert_eq!(r.state, pb::TaskState::Running as i32, "a running task is cancelled on its worker");
    }
    for sc in scenarios {
        let name = sc["name"].as_str().expect("name");
        check(&client, sc, ids[name], seconds.get(name), &seen).await;
    }
    shutdown.cancel();
    let stats = worker.await.expect("worker task").expect("worker run");
    assert_eq!(stats.rejected, 0, "no completion was rejected");
}
