//! ATF's controls: collections, gates (pause and drop), rate limits, and
//! retention. Each is a replicated command; each test checks the behaviour
//! a user relies on, across nodes and, where it matters, a leader kill.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::harness::*;
use drover::client::Client;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

fn in_collection(callback: &str, collection: &str) -> pb::TaskSpec {
    pb::TaskSpec { collection: collection.into(), ..spec(callback, b"") }
}

/// A worker that succeeds at once, counting its runs.
fn quick_worker(c: &TestCluster, callback: &str, credits: u32) -> (CancellationToken, Arc<AtomicU64>) {
    let stop = CancellationToken::new();
    let runs = Arc::new(AtomicU64::new(0));
    let counter = runs.clone();
    let worker = Worker::builder(c.endpoints())
        .id(format!("quick-{callback}"))
        .handle(callback, credits, move |_ctx: TaskContext| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                TaskResult::Success(Vec::new())
            }
        })
        .run(stop.clone());
    tokio::spawn(worker);
    (stop, runs)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_collection_holds_its_tasks_while_the_others_run_until_opened() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    register(&client, callback("email", 5_000)).await;
    let (ok, out, err) = cli(&ep, &["gate", "pause", "email/marketing", "--note", "campaign on hold", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["gate"]["mode"], "pause");
    let mut marketing = Vec::new();
    let mut reset = Vec::new();
    for _ in 0..5 {
        marketing.push(client.schedule(0, in_collection("email", "marketing")).await.unwrap().task_id);
        reset.push(client.schedule(1, in_collection("email", "password_reset")).await.unwrap().task_id);
    }
    let (stop, _) = quick_worker(&c, "email", 16);
    for id in &reset {
        wait_state(&client, *id, pb::TaskState::Succeeded, Duration::from_secs(20)).await;
    }
    // Every node agrees on the gate and what it holds.
    for node in 1..=3u64 {
        let (ok, out, err) = cli(&c.node(node).addr, &["gate", "list", "--json"]);
        assert!(ok, "{err}");
        let gates = json(&out)["gates"].clone();
        assert_eq!(gates[0]["callback"], "email");
        assert_eq!(gates[0]["collection"], "marketing");
        assert_eq!(gates[0]["note"], "campaign on hold");
        assert_eq!(gates[0]["pending"], 5, "node {node}: {out}");
    }
    for id in &marketing {
        let t = client.get_task(*id, false, false).await.unwrap();
        assert_eq!((t.state, t.attempts, t.collection.as_str()), (pb::TaskState::Ready as i32, 0, "marketing"));
    }
    let (ok, out, _) = cli(&ep, &["task", "list", "--collection", "marketing", "--json"]);
    assert!(ok);
    assert_eq!(json(&out)["tasks"].as_array().map(Vec::len), Some(5));
    let (ok, out, _) = cli(&ep, &["callback", "list", "--json"]);
    assert!(ok);
    assert_eq!(json(&out)["callbacks"][0]["collections"][0]["collection"], "marketing");
    let (ok, out, err) = cli(&ep, &["gate", "open", "email/marketing"]);
    assert!(ok && out.contains("opened"), "{out}{err}");
    let (ok, _, err) = cli(&ep, &["gate", "open", "email/marketing"]);
    assert!(!ok && err.contains("no gate on email/marketing"), "{err}");
    for id in &marketing {
        wait_state(&client, *id, pb::TaskState::Succeeded, Duration::from_secs(20)).await;
    }
    stop.cancel();
    let digests = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<std::collections::BTreeSet<_>>().len(), 1, "{digests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drop_gate_cancels_what_it_covers_and_answers_arrivals_as_cancelled() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    register(&client, callback("resize", 5_000)).await;
    let later = |collection| pb::TaskSpec {
        when: Some(pb::task_spec::When::DelayMs(3_600_000)),
        ..in_collection("resize", collection)
    };
    let doomed = client.schedule(0, later("thumbnails")).await.unwrap().task_id;
    let kept = client.schedule(0, later("originals")).await.unwrap().task_id;
    let (ok, out, err) = cli(&ep, &["gate", "drop", "resize/thumbnails", "--note", "bad build", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["cancelled"], 1);
    let t = client.get_task(doomed, false, false).await.unwrap();
    assert_eq!(t.state, pb::TaskState::Cancelled as i32);
    assert_eq!(t.last_error, "dropped by gate resize/thumbnails: bad build");
    assert_eq!(client.get_task(kept, false, false).await.unwrap().state, pb::TaskState::Scheduled as i32);
    // A producer gets an OK that says cancelled, and the CLI warns on stderr.
    let (ok, out, err) =
        cli(&ep, &["task", "schedule", "resize", "--collection", "thumbnails", "--key", "img-1", "--json"]);
    assert!(ok, "{err}");
    assert!(err.contains("warning") && err.contains("dropped by gate resize/thumbnails"), "{err}");
    let first = json(&out);
    assert_eq!(first["state"], "cancelled");
    // The key still names the same task.
    let (ok, out, _) =
        cli(&ep, &["task", "schedule", "resize", "--collection", "thumbnails", "--key", "img-1", "--json"]);
    assert!(ok);
    assert_eq!(
        (json(&out)["task_id"].clone(), json(&out)["created"].clone()),
        (first["task_id"].clone(), false.into())
    );
    // Bad input gets a clear error.
    let (ok, _, err) = cli(&ep, &["gate", "pause", "nope"]);
    assert!(!ok && err.contains("not registered"), "{err}");
    let (ok, _, err) = cli(&ep, &["gate", "pause", "resize/bad name"]);
    assert!(!ok && err.contains("collection name"), "{err}");
    let (ok, _, err) = cli(&ep, &["gate", "pause", "resize", "--until", "soon"]);
    assert!(!ok && err.contains("--until"), "{err}");
    let bad = client.schedule(0, in_collection("resize", "a/b")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // A drop with an end: arrivals after it are scheduled normally.
    let (ok, _, err) = cli(&ep, &["gate", "drop", "resize/originals", "--until", "1s"]);
    assert!(ok, "{err}");
    wait_until(Duration::from_secs(20), "the drop to end and its gate to be removed", || async {
        let gates = client.list_gates().await.ok()?;
        (!gates.gates.iter().any(|g| g.collection == "originals")).then_some(())
    })
    .await;
    let r = client.schedule(0, later("originals")).await.unwrap();
    assert_eq!(r.state, pb::TaskState::Scheduled as i32);
}

/// The race the apply-time check closes: the leader keeps a stream of
/// `Assign` entries in flight (a flood of instant tasks and many credits)
/// when the pause commits. No task of the gate may start at a later log
/// index than the pause's (a start's fencing token is its index). Several
/// pauses, each landing inside the flood, so that some assignment is in
/// flight at one of them (without the check in apply, one in three pauses
/// let tasks start behind it on this machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_task_of_a_gate_starts_after_the_pause_commits() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    register(&client, callback("flood", 5_000)).await;
    for b in 0..24 {
        let tasks =
            (0..500).map(|i| pb::TaskSpec { idempotency_key: format!("{b}-{i}"), ..spec("flood", b"") }).collect();
        client.schedule_batch(0, tasks).await.unwrap();
    }
    let (stop, runs) = quick_worker(&c, "flood", 512);
    let pause = pb::SetGateRequest { callback: "flood".into(), mode: pb::GateMode::Pause as i32, ..Default::default() };
    for round in 0..5u64 {
        let from = runs.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(20), "the flood to be under way", || async {
            (runs.load(Ordering::Relaxed) >= from + 200).then_some(())
        })
        .await;
        let pause_index = client.set_gate(pause.clone()).await.unwrap().gate.expect("the gate").since_index;
        // Let whatever was in flight land, then look at every start.
        wait_until(Duration::from_secs(10), "nothing of the gate to run", || async {
            list(&client, "flood", pb::TaskState::Running).await.is_empty().then_some(())
        })
        .await;
        let all = list(&client, "flood", pb::TaskState::Unspecified).await;
        let late: Vec<(u64, u64)> =
            all.iter().filter(|t| t.fencing_token > pause_index).map(|t| (t.id, t.fencing_token)).collect();
        assert!(late.is_empty(), "round {round}: tasks started after the pause at index {pause_index}: {late:?}");
        let held = all.iter().filter(|t| t.attempts == 0).count();
        assert!(held > 0, "round {round}: the pause came after the flood");
        client.open_gate("flood", "").await.unwrap();
    }
    stop.cancel();
}

/// 50/s with bursts of 10, a worker with 300 credits, 60 s, the leader
/// SIGKILLed at 30 s: no second holds more than rate + burst = 60 starts,
/// and the rate is kept within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_in_every_window_across_a_leader_kill() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let mut settings = callback("limited", 2_000);
    settings.rate_count = 50;
    settings.rate_period_ms = 1_000;
    settings.rate_burst = 10;
    register(&client, settings).await;
    for b in 0..8 {
        let tasks =
            (0..500).map(|i| pb::TaskSpec { idempotency_key: format!("{b}-{i}"), ..spec("limited", b"") }).collect();
        client.schedule_batch(0, tasks).await.unwrap();
    }
    let (stop, _) = quick_worker(&c, "limited", 300);
    let run = Duration::from_secs(60);
    tokio::time::sleep(run / 2).await;
    let leader = c.leader().await;
    c.kill(leader);
    tokio::time::sleep(run / 2).await;
    stop.cancel();
    c.restart(leader);
    let tasks = list(&client, "limited", pb::TaskState::Unspecified).await;
    let mut starts: Vec<u64> = tasks
        .iter()
        .flat_map(|t| t.history.iter().filter(|h| h.state == pb::TaskState::Running as i32).map(|h| h.at_unix_ms))
        .collect();
    starts.sort_unstable();
    let first = *starts.first().expect("some starts");
    let window_end = first + run.as_millis() as u64;
    let in_run: Vec<u64> = starts.into_iter().filter(|&t| t < window_end).collect();
    let mut worst = (0, 0);
    for (i, &t) in in_run.iter().enumerate() {
        let n = in_run[i..].iter().take_while(|&&u| u < t + 1_000).count();
        if n > worst.0 {
            worst = (n, t);
        }
    }
    assert!(worst.0 <= 60, "{} starts in the second from {} ms", worst.0, worst.1);
    let rate = in_run.len() as f64 / run.as_secs_f64();
    eprintln!("rate limit: {} starts in 60 s ({rate:.1}/s); busiest second {}", in_run.len(), worst.0);
    assert!((45.0..=55.0).contains(&rate), "{rate:.1} starts/s against a 50/s limit");
}

/// Retention deletes finished tasks on every replica alike, under load and
/// across a leader kill; a collected task's key creates a new task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_collects_finished_tasks_on_every_replica_and_frees_their_keys() {
    let mut c = TestCluster::start(3, &["--retain-succeeded", "2s", "--retain-cancelled", "2s"]).await;
    let client = c.client();
    let ep = endpoints(&c);
    register(&client, callback("gc", 5_000)).await;
    let (stop, _) = quick_worker(&c, "gc", 256);
    let first = client.schedule(0, pb::TaskSpec { idempotency_key: "once".into(), ..spec("gc", b"") }).await.unwrap();
    wait_state(&client, first.task_id, pb::TaskState::Succeeded, Duration::from_secs(20)).await;
    // Load while the leader is killed and comes back.
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop_load) = (client.clone(), stop_load.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop_load.load(Ordering::Relaxed) {
                let tasks =
                    (0..50).map(|j| pb::TaskSpec { idempotency_key: format!("l{i}-{j}"), ..spec("gc", b"") }).collect();
                let _ = client.schedule_batch(0, tasks).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let leader = c.leader().await;
    c.kill(leader);
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.restart(leader);
    stop_load.store(true, Ordering::Relaxed);
    let batches = load.await.unwrap();
    // The first task goes, and its key is free again.
    wait_until(Duration::from_secs(20), "the first task to be collected", || async {
        match client.get_task(first.task_id, false, false).await {
            Err(s) if s.code() == Code::NotFound => Some(()),
            _ => None,
        }
    })
    .await;
    let again = client.schedule(0, pb::TaskSpec { idempotency_key: "once".into(), ..spec("gc", b"") }).await.unwrap();
    assert!(again.created && again.task_id != first.task_id, "{again:?}");
    // Everything finished is collected in the end, and nothing else.
    let status = wait_until(Duration::from_secs(30), "retention to catch up", || async {
        let s = client.gc_status().await.ok()?;
        (s.finished == 0 && s.backlog == 0 && s.tasks == 0).then_some(s)
    })
    .await;
    assert!(status.collected >= batches * 50, "{status:?} after {batches} batches of 50");
    let (ok, out, err) = cli(&ep, &["gc", "status", "--json"]);
    assert!(ok, "{err}");
    assert!(json(&out)["collected"].as_u64() >= Some(batches * 50), "{out}");
    stop.cancel();
    let digests: BTreeMap<u64, String> = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<std::collections::BTreeSet<_>>().len(), 1, "{digests:?}");
}

/// A backup taken before retention existed for its rows (kept forever) and
/// restored into a node that keeps succeeded tasks 1 s: the old rows go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_backup_collects_its_old_rows() {
    let c = TestCluster::start(3, &["--retain-succeeded", "forever"]).await;
    let client = c.client();
    register(&client, callback("old", 5_000)).await;
    let (stop, _) = quick_worker(&c, "old", 64);
    let tasks = (0..40).map(|i| pb::TaskSpec { idempotency_key: format!("o{i}"), ..spec("old", b"") }).collect();
    client.schedule_batch(0, tasks).await.unwrap();
    wait_until(Duration::from_secs(20), "every task to succeed", || async {
        (list(&client, "old", pb::TaskState::Succeeded).await.len() == 40).then_some(())
    })
    .await;
    stop.cancel();
    let s = tempfile::tempdir().unwrap();
    let file = s.path().join("backup.snap");
    let (ok, _, err) = cli(&endpoints(&c), &["admin", "backup", "--out", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let dir = s.path().join("restored");
    let (ok, _, err) =
        cli("127.0.0.1:1", &["admin", "restore", "--in", file.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    let addr = format!("127.0.0.1:{}", free_port().expect("a free port"));
    let mut node = std::process::Command::new(BIN)
        .args(["server", "--id", "1", "--listen", &addr, "--data-dir", dir.to_str().unwrap(), "--bootstrap"])
        .args(["--retain-succeeded", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let restored = Client::new(vec![addr]);
    let status = wait_until(Duration::from_secs(40), "the restored rows to be collected", || async {
        let s = restored.gc_status().await.ok()?;
        (s.collected >= 40 && s.tasks == 0).then_some(s)
    })
    .await;
    let _ = node.kill();
    let _ = node.wait();
    assert_eq!(status.finished, 0, "{status:?}");
}
