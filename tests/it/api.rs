//! The public API's contract: status codes for bad requests, idempotency
//! under client retries.

use futures::future::join_all;
use tonic::Code;

use crate::harness::{spec, TestCluster};
use drover::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_gives_one_task_under_retries_through_every_node() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let mut s = spec("billing", b"charge 42");
    s.idempotency_key = "order-42".into();
    // 30 "retries", concurrently, through all three nodes.
    let replies = join_all((0..30).map(|i| {
        let client = &client;
        let s = s.clone();
        async move { client.schedule(i, s).await.expect("schedule") }
    }))
    .await;
    let id = replies[0].task_id;
    assert!(replies.iter().all(|r| r.task_id == id), "one task id: {replies:?}");
    assert_eq!(replies.iter().filter(|r| r.created).count(), 1, "exactly one creation");
    // The same key on another callback is a different task.
    let mut other = s.clone();
    other.callback = "shipping".into();
    let r = client.schedule(0, other).await.unwrap();
    assert!(r.created);
    assert_ne!(r.task_id, id);
    let t = client.get_task(id, false, false).await.unwrap();
    assert_eq!(t.idempotency_key, "order-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_clear_errors_with_the_right_codes() {
    let c = TestCluster::start(
        3,
        &["--max-payload", "1000", "--max-batch", "10", "--max-message-bytes", "1048576", "--max-page", "5"],
    )
    .await;
    let client = c.client();
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for node in [leader, follower] {
        let one = c.client_of(node);
        let mut sched = one.scheduler(0).unwrap();
        let cases: Vec<(pb::TaskSpec, &str)> = vec![
            (spec("", b""), "empty"),
            (spec(&"x".repeat(200), b""), "limit is 128"),
            (spec("bad name", b""), "contains"),
            (spec("ok", &[0u8; 1001]), "limit is 1000 bytes"),
            (pb::TaskSpec { priority: 42, ..spec("ok", b"") }, "priority"),
            (
                pb::TaskSpec {
                    when: Some(pb::task_spec::When::DelayMs(10 * 365 * 24 * 3600 * 1000)),
                    ..spec("ok", b"")
                },
                "too far",
            ),
            (pb::TaskSpec { when: Some(pb::task_spec::When::RunAtUnixMs(u64::MAX / 2)), ..spec("ok", b"") }, "away"),
        ];
        for (s, expect) in cases {
            let err = sched
                .schedule(pb::ScheduleRequest { task: Some(s.clone()), ..Default::default() })
                .await
                .expect_err("must be refused");
            assert_eq!(err.code(), Code::InvalidArgument, "{s:?}: {err:?}");
            assert!(err.message().contains(expect), "{:?} should mention {expect:?}", err.message());
        }
        let err = sched.schedule(pb::ScheduleRequest { task: None, ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = sched
            .schedule_batch(pb::ScheduleBatchRequest { tasks: vec![spec("ok", b""); 11], ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("limit is 10"), "{}", err.message());
        let err =
            sched.schedule_batch(pb::ScheduleBatchRequest { tasks: vec![], ..Default::default() }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = sched
            .get_task(pb::GetTaskRequest { task_id: 999_999, allow_stale: false, include_payload: false })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
        // The bounds set by flags: message size, page size.
        let err = sched
            .schedule(pb::ScheduleRequest { task: Some(spec("ok", &vec![7u8; 1 << 20])), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        let err = sched
            .list_tasks(pb::ListTasksRequest { limit: 6, allow_stale: true, ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("--max-page"), "{}", err.message());
    }
    // Nothing was created by any of that, and the cluster still works.
    let ok = client.schedule(0, spec("ok", b"fine")).await.unwrap();
    assert_eq!(ok.task_id, 1, "no refused request created a task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_is_one_entry_and_all_of_it_lands() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let before = c.node_status(leader).await.unwrap().last_log_index;
    let mut sched = c.client_of(leader).scheduler(0).unwrap();
    let tasks: Vec<_> = (0..1000).map(|i| spec("batch", format!("{i}").as_bytes())).collect();
    let reply = sched
        .schedule_batch(pb::ScheduleBatchRequest { tasks, ..Default::default() })
        .await
        .expect("batch of 1000")
        .into_inner();
    assert_eq!(reply.results.len(), 1000);
    let ids: std::collections::BTreeSet<u64> = reply.results.iter().map(|r| r.task_id).collect();
    assert_eq!(ids.len(), 1000, "distinct ids");
    let after = c.node_status(leader).await.unwrap().last_log_index;
    assert_eq!(after - before, 1, "one Raft entry for the whole batch");
    let client = c.client();
    for id in ids.iter().step_by(111) {
        assert_eq!(client.get_task(*id, false, false).await.unwrap().callback, "batch");
    }
}
