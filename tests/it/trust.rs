//! The guarantees that were once broken, each with the test that would
//! have caught it: replicas that agree however they batch apply, retries
//! that cannot duplicate, assignments that never reached a worker, status
//! codes a client can act on, and a clean shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::harness::*;
use crate::proxy::{Mode, Proxy};
use drover::client::Client;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

fn dead_letters(callback: &str) -> pb::DeadLetterRequest {
    pb::DeadLetterRequest {
        target: Some(pb::dead_letter_request::Target::Callback(callback.into())),
        with_dependents: false,
    }
}

/// Replicas must not diverge however each cuts the log into apply batches.
/// Workers fail every task into the dead-letter queue while clients keep
/// redriving and purging it by callback and scheduling the purged keys
/// again: the operations whose apply once read RocksDB instead of the batch
/// being applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_agree_while_dead_letters_are_redriven_purged_and_rescheduled() {
    let c = TestCluster::start(3, &[]).await;
    let client = Arc::new(c.client());
    let mut settings = callback("dlq", 2_000);
    settings.max_attempts = 1;
    register(&client, settings).await;

    let stop_worker = CancellationToken::new();
    let worker = Worker::builder(c.endpoints())
        .id("failing")
        .handle("dlq", 32, |_ctx: TaskContext| async { TaskResult::retry("always fails") })
        .run(stop_worker.clone());
    let worker = tokio::spawn(worker);

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    // Schedulers cycling over a few keys: purged keys come back as new tasks.
    for c_id in 0..2usize {
        let (client, stop) = (client.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let mut s = spec("dlq", b"x");
                s.idempotency_key = format!("k{}", (i * 2 + c_id) % 40);
                let _ = client.schedule(c_id, s).await;
                i += 1;
            }
        }));
    }
    // Redrive and purge by callback, through every node.
    for (op, pause) in [(0usize, 7u64), (1, 11)] {
        let (client, stop) = (client.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let req = dead_letters("dlq");
                let _ = client.dead_letters(i, req, op == 1).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(12 * scale() as u64)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    stop_worker.cancel();
    worker.await.expect("worker task").expect("worker");

    let digests = converged_digests(&c).await;
    let distinct: std::collections::HashSet<&String> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "replicas diverged: {digests:?}");
    // The workload did what it is for.
    let tasks = list(&client, "dlq", pb::TaskState::Unspecified).await;
    assert!(!tasks.is_empty(), "no tasks left at all: the test did not exercise anything");
}

/// Schedule through `proxy` first (which applies the request but loses the
/// reply), then fail over: exactly one task per request must exist.
async fn one_task_despite_a_lost_reply(mode: Mode, batch: bool, user_key: bool) {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let proxy = Proxy::start(c.node(leader).addr.clone()).await;
    let others: Vec<String> = c.nodes.iter().filter(|n| n.id != leader).map(|n| n.addr.clone()).collect();
    let mut endpoints = vec![proxy.addr.clone()];
    endpoints.extend(others);
    let mut client = Client::new(endpoints);
    client.attempt_timeout = Duration::from_millis(1500);
    // Open the connection through the proxy before it starts losing replies.
    client.get_task(1, true, false).await.expect_err("no task yet");
    proxy.set(mode);

    let callback = format!("lost-{}-{}", if batch { "batch" } else { "one" }, if user_key { "key" } else { "nokey" });
    let make = |i: usize| {
        let mut s = spec(&callback, format!("{i}").as_bytes());
        if user_key {
            s.idempotency_key = format!("user-key-{i}");
        }
        s
    };
    let replies: Vec<pb::ScheduleResponse> = if batch {
        client.schedule_batch(0, (0..5).map(make).collect()).await.expect("batch").results
    } else {
        vec![client.schedule(0, make(0)).await.expect("schedule")]
    };
    // The first attempt was applied (through the proxy); the retry got its
    // answer again instead of creating anything.
    assert!(
        replies.iter().all(|r| r.replayed && r.created),
        "{mode:?}: not a replay of the first attempt: {replies:?}"
    );
    proxy.set(Mode::Pass);
    let all = list(&c.client(), &callback, pb::TaskState::Unspecified).await;
    assert_eq!(all.len(), replies.len(), "{mode:?}: one task per request, got {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_whose_reply_is_lost_is_retried_without_a_duplicate() {
    one_task_despite_a_lost_reply(Mode::HoldReplies, false, false).await;
    one_task_despite_a_lost_reply(Mode::ResetOnReply, false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_reply_is_lost_is_retried_without_duplicates() {
    one_task_despite_a_lost_reply(Mode::ResetOnReply, true, false).await;
    one_task_despite_a_lost_reply(Mode::HoldReplies, true, true).await;
}

/// An assignment that cannot be handed to its worker (its stream is full)
/// is released at once, and the attempt does not count: with one attempt
/// allowed, the task must not go to the dead-letter queue without running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undelivered_assignment_is_released_without_costing_an_attempt() {
    // One message of buffer per worker stream, so that a worker that does
    // not read its stream overflows it at once.
    let c = TestCluster::start(3, &["--worker-buffer", "1"]).await;
    let client = c.client();
    let mut settings = callback("stuck", 60_000);
    settings.max_attempts = 1;
    register(&client, settings).await;
    let leader = c.leader().await;
    let big = vec![7u8; 512 * 1024];
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(client.schedule(0, spec("stuck", &big)).await.expect("schedule").task_id);
        }
        ids
    };
    // A raw worker that says hello, keeps heartbeating, and never reads.
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hello = pb::WorkerMessage {
        msg: Some(pb::worker_message::Msg::Hello(pb::Hello {
            worker_id: "never-reads".into(),
            callbacks: vec![pb::CallbackCredits { callback: "stuck".into(), concurrency: 6 }],
            running: vec![],
        })),
    };
    tx.send(hello).await.expect("hello");
    let mut raw = pb::worker_client::WorkerClient::new(c.client_of(leader).channel(0).expect("channel"));
    let _stream = raw.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.expect("connect");
    let beat = tokio::spawn(async move {
        for seq in 1.. {
            let hb = pb::Heartbeat { seq, tasks: vec![] };
            if tx.send(pb::WorkerMessage { msg: Some(pb::worker_message::Msg::Heartbeat(hb)) }).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    // Some assignment could not be queued: its task went back to pending
    // (a `scheduled` entry after `running` in its history), long before its
    // 60 s lease could lapse, and the attempt it never ran was not counted.
    let released_from_running = |t: &pb::Task| {
        t.history
            .windows(2)
            .any(|w| w[0].state == pb::TaskState::Running as i32 && w[1].state == pb::TaskState::Scheduled as i32)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let tasks = loop {
        let mut tasks = Vec::new();
        for id in &ids {
            if let Ok(t) = client.get_task(*id, true, false).await {
                tasks.push(t);
            }
        }
        if tasks.iter().any(released_from_running) {
            break tasks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no undelivered assignment was released within 20 s; leader log:\n{}",
            c.log_tail(leader)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    beat.abort();
    for t in &tasks {
        let runs = t.history.iter().filter(|h| h.state == pb::TaskState::Running as i32).count() as u32;
        let released = t
            .history
            .windows(2)
            .filter(|w| w[0].state == pb::TaskState::Running as i32 && w[1].state == pb::TaskState::Scheduled as i32)
            .count() as u32;
        assert_eq!(t.attempts, runs - released, "an undelivered attempt was counted: {t:?}");
        assert!(t.attempts <= 1, "{t:?}");
    }
    let dead = list(&client, "stuck", pb::TaskState::Dead).await;
    assert!(dead.is_empty(), "tasks went to the dead-letter queue without running: {dead:?}");
}

/// A request over the transport's size limit gets RESOURCE_EXHAUSTED, as
/// gRPC specifies (tonic's own answer is OUT_OF_RANGE).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversized_request_gets_resource_exhausted() {
    let c = TestCluster::start(1, &[]).await;
    let channel = c.client_of(1).channel(0).expect("channel");
    let mut raw = pb::scheduler_client::SchedulerClient::new(channel).max_encoding_message_size(usize::MAX);
    let tasks = vec![spec("big", &vec![0u8; 1 << 20]); 66];
    let err =
        raw.schedule_batch(pb::ScheduleBatchRequest { tasks, ..Default::default() }).await.expect_err("over 64 MiB");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

/// SIGTERM to every node at once: every node exits cleanly and logs no
/// ERROR (the leader's hand-over meets peers that are stopping too).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_every_node_at_once_logs_no_error() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    for i in 0..20 {
        client.schedule(i, spec("calm", b"x")).await.expect("schedule");
    }
    c.stop_all().await;
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).unwrap_or_default();
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(errors.is_empty(), "node {} logged errors on a clean shutdown:\n{}", n.id, errors.join("\n"));
    }
}
