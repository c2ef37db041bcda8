//! Execution guarantees: at-least-once, never concurrently (fencing),
//! retries and dead letters, priorities and isolation, cancellation, and the
//! shell worker's contract. Workers are real `drover worker` processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::harness::*;
use crate::invariants::{assert_no_overlap, runs};
use crate::proxy::Proxy;
use drover::pb;

fn record_arg(path: &Path) -> String {
    format!("record:{}", path.display())
}

/// Wait until the record file shows `n` runs of `task`.
async fn wait_runs(rec: &Path, task: u64, n: usize, timeout: Duration) {
    wait_until(timeout, &format!("{n} run(s) of task {task}"), || async {
        (runs(rec).get(&task).map_or(0, |r| r.len()) >= n).then_some(())
    })
    .await;
}

/// [`wait_runs`], and on a timeout the workers' logs in the panic (a stall
/// seen once in CI and not since: the logs say where it stood).
async fn wait_runs_or_show(rec: &Path, task: u64, n: usize, timeout: Duration, logs: &[PathBuf]) {
    let deadline = tokio::time::Instant::now() + timeout;
    while runs(rec).get(&task).map_or(0, |r| r.len()) < n {
        if tokio::time::Instant::now() >= deadline {
            let shown: Vec<String> = logs
                .iter()
                .map(|p| format!("--- {}:\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default()))
                .collect();
            panic!("timed out after {timeout:?} waiting for {n} run(s) of task {task}\n{}", shown.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        Scratch(tempfile::tempdir().expect("tempdir"))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_worker_s_task_reruns_after_its_lease_and_succeeds() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("work", 2000)).await;
    let mut a = WorkerProc::start(
        &endpoints(&c),
        s.path("a.log"),
        &["--callback", "work", "--id", "a", "--builtin", &record_arg(&rec)],
    );
    let id = client.schedule(0, spec("work", b"2000")).await.unwrap().task_id;
    wait_runs(&rec, id, 1, Duration::from_secs(20)).await;
    a.kill();
    let _b = WorkerProc::start(
        &endpoints(&c),
        s.path("b.log"),
        &["--callback", "work", "--id", "b", "--builtin", &record_arg(&rec)],
    );
    let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(t.attempts, 2, "the killed run counts as an attempt");
    assert!(t.last_error.contains("lease"), "{}", t.last_error);
    let r = &runs(&rec)[&id];
    assert_eq!(r.len(), 2);
    assert!(!r[0].ended && r[1].ended && r[1].token > r[0].token);
    assert_eq!(t.fencing_token, r[1].token);
    assert_no_overlap(&rec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_while_workers_run_still_ends_every_task_succeeded() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("batch", 2000)).await;
    let eps = endpoints(&c);
    let args = |id: &'static str| {
        vec![
            "--callback".to_string(),
            "batch".into(),
            "--concurrency".into(),
            "8".into(),
            "--id".into(),
            id.into(),
            "--builtin".into(),
            record_arg(&rec),
        ]
    };
    let wa: Vec<String> = args("a");
    let wb: Vec<String> = args("b");
    let _a = WorkerProc::start(&eps, s.path("a.log"), &wa.iter().map(String::as_str).collect::<Vec<_>>());
    let _b = WorkerProc::start(&eps, s.path("b.log"), &wb.iter().map(String::as_str).collect::<Vec<_>>());
    let mut sched = client.scheduler(0).unwrap();
    let total = 300usize;
    for _ in 0..3 {
        let tasks = (0..100).map(|_| spec("batch", b"40")).collect();
        sched.schedule_batch(pb::ScheduleBatchRequest { tasks, ..Default::default() }).await.expect("batch");
    }
    wait_until(Duration::from_secs(30), "some tasks to finish", || async {
        (list(&client, "batch", pb::TaskState::Succeeded).await.len() >= 30).then_some(())
    })
    .await;
    let leader = c.leader().await;
    c.kill(leader);
    wait_until(Duration::from_secs(90), "every task to succeed", || async {
        (list(&client, "batch", pb::TaskState::Succeeded).await.len() == total).then_some(())
    })
    .await;
    assert_no_overlap(&rec);
    assert_eq!(runs(&rec).len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_worker_never_overlaps_the_rerun_and_its_late_result_is_dropped() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("slow", 1500)).await;
    let mut a = WorkerProc::start(
        &endpoints(&c),
        s.path("a.log"),
        &["--callback", "slow", "--id", "a", "--builtin", &record_arg(&rec)],
    );
    let id = client.schedule(0, spec("slow", b"3000")).await.unwrap().task_id;
    wait_runs_or_show(&rec, id, 1, Duration::from_secs(20), &[s.path("a.log")]).await;
    a.signal(Signal::SIGSTOP);
    let _b = WorkerProc::start(
        &endpoints(&c),
        s.path("b.log"),
        &["--callback", "slow", "--id", "b", "--builtin", &record_arg(&rec)],
    );
    wait_runs_or_show(&rec, id, 2, Duration::from_secs(20), &[s.path("a.log"), s.path("b.log")]).await;
    // Wake the paused worker while the re-run is in progress.
    a.signal(Signal::SIGCONT);
    let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    let r = &runs(&rec)[&id];
    assert!(r.len() >= 2, "{r:?}");
    assert!(!r[0].ended, "the paused run never finished");
    assert!(t.fencing_token > r[0].token, "the paused run's result is not the one kept");
    assert!(
        r.iter().any(|run| run.token == t.fencing_token && run.ended),
        "the kept result is a finished run's: {r:?}"
    );
    assert_no_overlap(&rec);
    let log = a.terminate();
    // While frozen it may also have been sent (and then refused) a later
    // assignment, so its fenced count may be more than one: what matters is
    // that it stopped this stale run without reporting it, on its own
    // lease watchdog or because the leader said the lease was gone,
    // whichever it heard first on waking.
    let (task, token) = (format!("task_id={id}"), format!("token={}", r[0].token));
    assert!(
        log.lines().any(|l| (l.contains("lease lapsed: handler stopped")
            || l.contains("stopping the handler without reporting"))
            && l.split_whitespace().any(|w| w == task)
            && l.split_whitespace().any(|w| w == token)),
        "the woken worker stopped its stale run (token {}) itself:\n{log}",
        r[0].token
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_assignment_that_waited_while_its_worker_was_frozen_never_starts() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("frozen", 1000)).await;
    let a = WorkerProc::start(
        &endpoints(&c),
        s.path("a.log"),
        &["--callback", "frozen", "--id", "a", "--builtin", &record_arg(&rec)],
    );
    wait_until(Duration::from_secs(20), "worker a to connect", || async {
        let w = client.list_workers().await.ok()?;
        w.workers.iter().any(|w| w.worker_id == "a").then_some(())
    })
    .await;
    // Frozen, it cannot read the assignment the leader sends it.
    a.signal(Signal::SIGSTOP);
    let id = client.schedule(0, spec("frozen", b"3000")).await.unwrap().task_id;
    let stale = wait_until(Duration::from_secs(20), "the assignment to a", || async {
        let t = client.get_task(id, false, false).await.ok()?;
        (t.state == pb::TaskState::Running as i32 && t.worker == "a").then_some(t.fencing_token)
    })
    .await;
    let _b = WorkerProc::start(
        &endpoints(&c),
        s.path("b.log"),
        &["--callback", "frozen", "--id", "b", "--builtin", &record_arg(&rec)],
    );
    wait_runs(&rec, id, 1, Duration::from_secs(20)).await;
    // Thawed while b runs the task: a reads its old assignment now.
    a.signal(Signal::SIGCONT);
    wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    let r = &runs(&rec)[&id];
    assert!(r.iter().all(|run| run.token != stale), "the stale assignment (token {stale}) ran: {r:?}");
    assert_no_overlap(&rec);
    wait_until(Duration::from_secs(10), "worker a to say it did not start it", || async {
        let log = std::fs::read_to_string(s.path("a.log")).ok()?;
        log.contains("lease lapsed before it arrived").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_worker_fences_itself_before_the_rerun() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("part", 1500)).await;
    let proxy = Proxy::start(c.nodes[0].addr.clone()).await;
    let mut a = WorkerProc::start(
        &proxy.addr,
        s.path("a.log"),
        &["--callback", "part", "--id", "a", "--builtin", &record_arg(&rec)],
    );
    let id = client.schedule(0, spec("part", b"3000")).await.unwrap().task_id;
    wait_runs(&rec, id, 1, Duration::from_secs(20)).await;
    proxy.cut();
    let _b = WorkerProc::start(
        &endpoints(&c),
        s.path("b.log"),
        &["--callback", "part", "--id", "b", "--builtin", &record_arg(&rec)],
    );
    let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    // At least the cut-off run and the re-run (a loaded machine may add one).
    assert!(t.attempts >= 2, "attempts {}", t.attempts);
    let r = &runs(&rec)[&id];
    assert!(!r[0].ended, "the cut-off run never finished");
    assert!(
        r.iter().any(|run| run.token == t.fencing_token && run.ended),
        "the kept result is a finished run's: {r:?}"
    );
    assert_no_overlap(&rec);
    let log = a.terminate();
    assert!(log.contains("lease lapsed"), "the cut-off worker fenced itself:\n{log}");
}

/// A raw worker stream, for protocol-level tests.
struct RawWorker {
    tx: mpsc::Sender<pb::WorkerMessage>,
    rx: tonic::Streaming<pb::ServerMessage>,
}

impl RawWorker {
    async fn connect(addr: &str, id: &str, callback: &str) -> RawWorker {
        let ch = drover::net::endpoint(addr, None).unwrap().connect().await.unwrap();
        let (tx, out) = mpsc::channel(16);
        let hello = pb::Hello {
            worker_id: id.into(),
            callbacks: vec![pb::CallbackCredits { callback: callback.into(), concurrency: 1 }],
            running: vec![],
        };
        tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Hello(hello)) }).await.unwrap();
        let rx = pb::worker_client::WorkerClient::new(ch).connect(ReceiverStream::new(out)).await.unwrap().into_inner();
        RawWorker { tx, rx }
    }

    async fn next_assignment(&mut self) -> pb::Assignment {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.rx.next()).await.expect("an assignment in time");
            if let Some(Ok(pb::ServerMessage { msg: Some(pb::server_message::Msg::Assignment(a)) })) = m {
                return a;
            }
        }
    }

    async fn complete(&mut self, task_id: u64, token: u64) -> pb::CompletionAck {
        let c = pb::Completion {
            task_id,
            fencing_token: token,
            outcome: Some(pb::completion::Outcome::Success(b"raw".to_vec())),
        };
        self.tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Completion(c)) }).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), self.rx.next()).await.expect("an ack in time");
            if let Some(Ok(pb::ServerMessage { msg: Some(pb::server_message::Msg::CompletionAck(a)) })) = m {
                return a;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_completion_with_an_old_token_is_rejected_and_changes_nothing() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    register(&client, callback("fence", 1000)).await;
    let mut w = RawWorker::connect(&c.nodes[0].addr, "raw", "fence").await;
    let id = client.schedule(0, spec("fence", b"")).await.unwrap().task_id;
    let first = w.next_assignment().await;
    assert_eq!((first.task_id, first.attempt), (id, 1));
    // Heartbeats that do not renew the task keep the worker alive; the
    // lease lapses and the task is assigned again.
    let tx = w.tx.clone();
    tokio::spawn(async move {
        for seq in 1.. {
            let hb = pb::Heartbeat { seq, tasks: vec![] };
            if tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Heartbeat(hb)) }).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let second = w.next_assignment().await;
    assert_eq!((second.task_id, second.attempt), (id, 2));
    assert!(second.fencing_token > first.fencing_token);
    let stale = w.complete(id, first.fencing_token).await;
    assert!(!stale.accepted && stale.reason.contains("stale fencing token"), "{stale:?}");
    let t = client.get_task(id, false, false).await.unwrap();
    assert_eq!((t.state, t.fencing_token), (pb::TaskState::Running as i32, second.fencing_token));
    let fresh = w.complete(id, second.fencing_token).await;
    assert!(fresh.accepted, "{fresh:?}");
    wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_back_off_then_dead_letter_and_redrive_runs_it_again() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let marker = s.path("ok");
    register(
        &client,
        pb::CallbackSettings {
            max_attempts: 3,
            backoff_initial_ms: 200,
            backoff_max_ms: 1000,
            ..callback("flaky", 5000)
        },
    )
    .await;
    let script = format!("if [ -f {m} ]; then echo done; else echo nope >&2; exit 75; fi", m = marker.display());
    let _w = WorkerProc::start(&endpoints(&c), s.path("w.log"), &["--callback", "flaky", "--", "sh", "-c", &script]);
    let id = client.schedule(0, spec("flaky", b"")).await.unwrap().task_id;
    let t = wait_state(&client, id, pb::TaskState::Dead, Duration::from_secs(30)).await;
    assert_eq!(t.attempts, 3);
    assert!(t.last_error.contains("nope"), "{}", t.last_error);
    // Each retry waited at least half its exponential backoff (equal jitter).
    let at = |state: pb::TaskState, attempt: u32| {
        t.history
            .iter()
            .find(|h| h.state == state as i32 && h.attempt == attempt)
            .map(|h| h.at_unix_ms)
            .expect("history entry")
    };
    for (attempt, base) in [(1u32, 200u64), (2, 400)] {
        let waited = at(pb::TaskState::Running, attempt + 1) - at(pb::TaskState::RetryWait, attempt);
        assert!(waited >= base / 2, "retry {attempt} after {waited} ms, backoff base {base} ms");
    }
    let dead = list(&client, "flaky", pb::TaskState::Dead).await;
    assert_eq!(dead.iter().map(|t| t.id).collect::<Vec<_>>(), vec![id]);
    std::fs::write(&marker, b"").unwrap();
    let mut sched = client.scheduler(0).unwrap();
    let target = Some(pb::dead_letter_request::Target::TaskId(id));
    let r = sched
        .redrive_dead_letters(pb::DeadLetterRequest { target, with_dependents: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.count, 1);
    let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(20)).await;
    assert_eq!(t.attempts, 1, "redrive resets attempts");
    assert_eq!(t.result.as_deref(), Some(&b"done\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn higher_priority_runs_first_and_delayed_tasks_never_run_early() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    register(&client, callback("prio", 5000)).await;
    let tasks: Vec<pb::TaskSpec> = (0..30).map(|i| pb::TaskSpec { priority: i % 10, ..spec("prio", b"") }).collect();
    client
        .scheduler(0)
        .unwrap()
        .schedule_batch(pb::ScheduleBatchRequest { tasks, ..Default::default() })
        .await
        .unwrap();
    let delayed = client
        .schedule(0, pb::TaskSpec { when: Some(pb::task_spec::When::DelayMs(1500)), ..spec("prio", b"") })
        .await
        .unwrap()
        .task_id;
    let _w = WorkerProc::start(
        &endpoints(&c),
        s.path("w.log"),
        &["--callback", "prio", "--concurrency", "1", "--builtin", "noop"],
    );
    wait_until(Duration::from_secs(30), "all tasks done", || async {
        (list(&client, "prio", pb::TaskState::Succeeded).await.len() == 31).then_some(())
    })
    .await;
    let mut done = list(&client, "prio", pb::TaskState::Succeeded).await;
    done.retain(|t| t.id != delayed);
    // Run order is the order of fencing tokens (assignment log indexes).
    done.sort_by_key(|t| t.fencing_token);
    let order: Vec<(u32, u64)> = done.iter().map(|t| (t.priority, t.id)).collect();
    let mut expected = order.clone();
    expected.sort_by_key(|(p, id)| (std::cmp::Reverse(*p), *id));
    assert_eq!(order, expected, "highest priority first, then arrival");
    let d = client.get_task(delayed, false, false).await.unwrap();
    let started = d.history.iter().find(|h| h.state == pb::TaskState::Running as i32).unwrap().at_unix_ms;
    assert!(started >= d.run_at_unix_ms, "started {started} before its run-at {}", d.run_at_unix_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_in_one_callback_does_not_hold_up_another_and_limits_hold() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("bulk");
    register(&client, pb::CallbackSettings { concurrency: 2, ..callback("bulk", 5000) }).await;
    register(&client, callback("urgent", 5000)).await;
    let mut sched = client.scheduler(0).unwrap();
    for _ in 0..5 {
        let tasks = (0..1000).map(|_| spec("bulk", b"100")).collect();
        sched.schedule_batch(pb::ScheduleBatchRequest { tasks, ..Default::default() }).await.unwrap();
    }
    let eps = endpoints(&c);
    let ra = record_arg(&rec);
    let _b1 =
        WorkerProc::start(&eps, s.path("b1.log"), &["--callback", "bulk", "--concurrency", "4", "--builtin", &ra]);
    let _b2 =
        WorkerProc::start(&eps, s.path("b2.log"), &["--callback", "bulk", "--concurrency", "4", "--builtin", &ra]);
    let _u = WorkerProc::start(&eps, s.path("u.log"), &["--callback", "urgent", "--builtin", "noop"]);
    wait_until(Duration::from_secs(20), "bulk work to start", || async { (!runs(&rec).is_empty()).then_some(()) })
        .await;
    let id = client.schedule(0, spec("urgent", b"")).await.unwrap().task_id;
    wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(20)).await;
    let still_pending = list(&client, "bulk", pb::TaskState::Ready).await.len();
    assert!(still_pending > 4000, "urgent ran while the bulk backlog waited ({still_pending} pending)");
    // The bulk callback's limit of 2 held across both workers (8 credits).
    let mut edges: Vec<(u128, i32)> =
        runs(&rec).values().flatten().flat_map(|r| [(r.first_ns, 1), (r.last_ns, -1)]).collect();
    edges.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in edges {
        now += d;
        max = max.max(now);
    }
    assert!(max <= 2, "{max} bulk tasks ran at once; the limit is 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_stops_queued_tasks_at_once_and_running_ones_on_their_worker() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("cx", 3000)).await;
    let mut sched = client.scheduler(0).unwrap();
    let later = client
        .schedule(0, pb::TaskSpec { when: Some(pb::task_spec::When::DelayMs(3_600_000)), ..spec("cx", b"") })
        .await
        .unwrap()
        .task_id;
    let r = sched.cancel_task(pb::CancelTaskRequest { task_id: later }).await.unwrap().into_inner();
    assert_eq!(r.state, pb::TaskState::Cancelled as i32);
    let _w = WorkerProc::start(&endpoints(&c), s.path("w.log"), &["--callback", "cx", "--builtin", &record_arg(&rec)]);
    let id = client.schedule(0, spec("cx", b"30000")).await.unwrap().task_id;
    wait_runs(&rec, id, 1, Duration::from_secs(20)).await;
    let r = sched.cancel_task(pb::CancelTaskRequest { task_id: id }).await.unwrap().into_inner();
    assert_eq!(r.state, pb::TaskState::Running as i32, "a running task is cancelled on its worker");
    let t = wait_state(&client, id, pb::TaskState::Cancelled, Duration::from_secs(10)).await;
    assert_eq!(t.attempts, 1);
    assert!(!runs(&rec)[&id][0].ended, "the handler stopped early");
    // Cancelling it again (a retried request) is not an error.
    let r = sched.cancel_task(pb::CancelTaskRequest { task_id: id }).await.expect("cancel again").into_inner();
    assert_eq!(r.state, pb::TaskState::Cancelled as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_worker_cuts_big_output_and_kills_timed_out_commands() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let marker = s.path("survivor");
    register(&client, pb::CallbackSettings { max_attempts: 1, timeout_ms: 1000, ..callback("sh", 5000) }).await;
    let script = format!(
        "if [ \"$(cat)\" = big ]; then head -c 100000 /dev/zero | tr '\\0' x; else (sleep 3; touch {m}) & sleep 30; fi",
        m = marker.display()
    );
    let _w = WorkerProc::start(
        &endpoints(&c),
        s.path("w.log"),
        &["--callback", "sh", "--concurrency", "2", "--max-output", "10", "--", "sh", "-c", &script],
    );
    let big = client.schedule(0, spec("sh", b"big")).await.unwrap().task_id;
    let slow = client.schedule(0, spec("sh", b"slow")).await.unwrap().task_id;
    let t = wait_state(&client, big, pb::TaskState::Succeeded, Duration::from_secs(20)).await;
    assert_eq!(t.result.as_deref(), Some(&b"xxxxxxxxxx"[..]), "stdout cut at --max-output");
    let t = wait_state(&client, slow, pb::TaskState::Dead, Duration::from_secs(20)).await;
    assert!(t.last_error.contains("timed out"), "{}", t.last_error);
    tokio::time::sleep(Duration::from_secs(4)).await; // the grandchild would have touched the marker by now
    assert!(!marker.exists(), "the timed-out command's process group was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_shut_down_gracefully_finishes_its_running_task() {
    let c = TestCluster::start(1, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("drain", 5000)).await;
    let mut w =
        WorkerProc::start(&endpoints(&c), s.path("w.log"), &["--callback", "drain", "--builtin", &record_arg(&rec)]);
    let id = client.schedule(0, spec("drain", b"1500")).await.unwrap().task_id;
    wait_runs(&rec, id, 1, Duration::from_secs(20)).await;
    let log = w.terminate();
    assert!(log.contains("1 succeeded"), "{log}");
    let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(5)).await;
    assert_eq!(t.attempts, 1);
    assert!(runs(&rec)[&id][0].ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_task_survives_a_leader_change_by_re_attaching() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let s = Scratch::new();
    let rec = s.path("rec");
    register(&client, callback("long", 5000)).await;
    let _w =
        WorkerProc::start(&endpoints(&c), s.path("w.log"), &["--callback", "long", "--builtin", &record_arg(&rec)]);
    let id = client.schedule(0, spec("long", b"4000")).await.unwrap().task_id;
    wait_runs(&rec, id, 1, Duration::from_secs(20)).await;
    let leader = c.leader().await;
    c.kill(leader);
    let t = wait_state(&client, id, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(t.attempts, 1, "the worker re-attached its run to the new leader; nothing was re-run");
    let r = &runs(&rec)[&id];
    assert_eq!(r.len(), 1);
    assert!(r[0].ended);
}
