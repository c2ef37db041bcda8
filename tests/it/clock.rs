//! Time that survives a wrong clock: one node's wall clock is an hour off
//! (libfaketime on that node's process only; the machine's clock is never
//! touched). Delayed tasks must never start before their run-at by the real
//! clock, must start within a few seconds after it, and the skewed node must
//! be named by `cluster status` and must not stay leader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::harness::*;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

/// Where Debian's `faketime` package puts the library (`scripts/prereqs.sh`
/// installs it).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn real_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Environment that shifts a process's wall clock (not its monotonic clock).
pub fn faketime(offset: &str) -> Vec<(String, String)> {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's `faketime` package (scripts/prereqs.sh does)"
    );
    vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_NO_CACHE".into(), "1".into()),
    ]
}

async fn leader_is(c: &TestCluster, id: u64) -> bool {
    c.node_status(id).await.is_some_and(|s| s.role == "leader")
}

/// Schedule a task `delay` from now; returns (id, run-at, real time when
/// the schedule was acknowledged).
async fn schedule_delayed(c: &TestCluster, delay: Duration, what: &str) -> (u64, u64, u64) {
    let client = c.client();
    let mut s = spec("timed", what.as_bytes());
    s.when = Some(pb::task_spec::When::DelayMs(delay.as_millis() as u64));
    let before = real_ms();
    let id = client.schedule(0, s).await.expect("schedule").task_id;
    let acked = real_ms();
    let t = client.get_task(id, false, false).await.expect("get");
    let expected = before + delay.as_millis() as u64;
    assert!(
        t.run_at_unix_ms + 2_000 >= expected && t.run_at_unix_ms <= acked + delay.as_millis() as u64 + 2_000,
        "{what}: run-at {} is not {delay:?} after the schedule (real {before}..{acked})",
        t.run_at_unix_ms
    );
    (id, t.run_at_unix_ms, acked)
}

async fn a_skewed_node_moves_no_task(offset: &str) {
    let skewed = 3u64;
    let env: HashMap<u64, Vec<(String, String)>> = [(skewed, faketime(offset))].into();
    let mut c = TestCluster::start_with_env(3, &[], env).await;
    let ep = endpoints(&c);
    register(&c.client(), callback("timed", 5_000)).await;
    // Record when (by the real clock) each task starts.
    let started: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let stop = CancellationToken::new();
    let rec = started.clone();
    let worker = Worker::builder(c.endpoints())
        .id("timer")
        .handle("timed", 8, move |ctx: TaskContext| {
            let rec = rec.clone();
            async move {
                rec.lock().unwrap_or_else(|p| p.into_inner()).entry(ctx.task_id).or_insert_with(real_ms);
                TaskResult::Success(Vec::new())
            }
        })
        .run(stop.clone());
    let worker = tokio::spawn(worker);

    let mut tasks = Vec::new();
    tasks.push(schedule_delayed(&c, Duration::from_secs(20), "under a good leader").await);
    // Hand leadership to the skewed node: it may lead for a moment, then
    // hands it back; time must not move.
    let (ok, _, err) = cli(&ep, &["cluster", "transfer-leader", "--to", &skewed.to_string()]);
    if !ok {
        // Refusing is fine too; what matters is that time did not move.
        eprintln!("transfer-leader to the skewed node: {err}");
    }
    tasks.push(schedule_delayed(&c, Duration::from_secs(8), "around the skewed node's turn").await);
    wait_until(Duration::from_secs(15), "the skewed node to give up leadership", || async {
        let leader = c.wait_for_leader(Duration::from_secs(10)).await;
        (leader != skewed).then_some(())
    })
    .await;
    // Kill the good leader: the skewed node must not take over.
    let leader = c.leader().await;
    c.kill(leader);
    let next = c.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(next, skewed, "the skewed node won an election");
    tasks.push(schedule_delayed(&c, Duration::from_secs(6), "after a failover").await);
    c.restart(leader);
    tasks.push(schedule_delayed(&c, Duration::from_secs(4), "after a restart").await);

    let last_run_at = tasks.iter().map(|t| t.1).max().unwrap_or(0);
    wait_until(Duration::from_secs(60), "every delayed task to start", || async {
        let s = started.lock().unwrap_or_else(|p| p.into_inner());
        tasks.iter().all(|(id, _, _)| s.contains_key(id)).then_some(())
    })
    .await;
    stop.cancel();
    let _ = worker.await;
    let started = started.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut lateness = Vec::new();
    for (id, run_at, _) in &tasks {
        let at = started[id];
        assert!(at >= *run_at, "task {id} started {} ms before its run-at (offset {offset})", run_at - at);
        assert!(at - run_at < 5_000, "task {id} started {} ms after its run-at (offset {offset})", at - run_at);
        lateness.push(at - run_at);
    }
    assert!(last_run_at > 0);
    eprintln!("clock offset {offset}: delayed tasks started late by {lateness:?} ms");
    assert!(!leader_is(&c, skewed).await, "the skewed node leads at the end");
    // The skewed node is found and named.
    wait_until(Duration::from_secs(20), "cluster status to name the skewed node", || async {
        let (ok, out, _) = cli(&ep, &["cluster", "status"]);
        (ok && out.contains(&format!("node {skewed}'s wall clock"))).then_some(())
    })
    .await;
    let status = status_json(&ep);
    let members = status["members"].as_array().expect("members");
    for m in members {
        let skewed_here = m["id"].as_u64() == Some(skewed);
        assert_eq!(m["clock_skewed"].as_bool(), Some(skewed_here), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_an_hour_ahead_moves_no_task() {
    a_skewed_node_moves_no_task("+1h").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_an_hour_behind_moves_no_task() {
    a_skewed_node_moves_no_task("-1h").await;
}
