//! Durability and availability: what a node crash, a full restart and a
//! long absence must not break.

use std::time::Duration;

use futures::future::join_all;

use crate::harness::{scale, spec, wait_until, TestCluster};

/// Schedule `n` tasks with `concurrency` requests in flight, through every
/// node in turn. Returns the acknowledged ids.
async fn schedule_many(c: &TestCluster, n: usize, concurrency: usize, tag: &str) -> Vec<u64> {
    let client = c.client();
    let mut acked = Vec::with_capacity(n);
    let mut next = 0;
    while next < n {
        let round: Vec<_> = (next..(next + concurrency).min(n))
            .map(|i| {
                let client = &client;
                let s = spec("replication", format!("{tag}-{i}").as_bytes());
                async move { client.schedule(i, s).await }
            })
            .collect();
        next += round.len();
        for r in join_all(round).await {
            acked.push(r.expect("schedule acknowledged").task_id);
        }
    }
    acked
}

/// Every id must be readable with a linearizable read.
async fn assert_all_present(c: &TestCluster, ids: &[u64]) {
    let client = c.client();
    for chunk in ids.chunks(64) {
        let reads = chunk.iter().map(|id| {
            let client = &client;
            async move { (*id, client.get_task_from(*id as usize, *id, false, false).await) }
        });
        for (id, r) in join_all(reads).await {
            let t = r.unwrap_or_else(|e| panic!("acknowledged task {id} is unreadable: {e}"));
            assert_eq!(t.id, id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_on_a_follower_is_readable_on_every_node() {
    let c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let reply = c.client_of(follower).schedule(0, spec("email", b"hello")).await.expect("follower forwards the write");
    assert!(reply.created);
    for id in 1..=3 {
        let client = c.client_of(id);
        let task = wait_until(Duration::from_secs(10), "the task on every node", || async {
            client.get_task(reply.task_id, true, false).await.ok()
        })
        .await;
        assert_eq!(task.callback, "email");
        assert_eq!(task.payload_size, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_loses_no_acknowledged_task_and_scheduling_resumes() {
    let mut c = TestCluster::start(3, &[]).await;
    let before = schedule_many(&c, 300, 16, "before").await;
    let old = c.leader().await;
    c.kill(old);
    let new = c.wait_for_leader(Duration::from_secs(15)).await;
    assert_ne!(new, old, "a new leader among the survivors");
    assert_all_present(&c, &before).await;
    let after = schedule_many(&c, 100, 16, "after").await;
    assert_all_present(&c, &after).await;
    // The killed node comes back and catches up.
    c.restart(old);
    let total = (before.len() + after.len()) as u64;
    wait_until(Duration::from_secs(20), "the old leader to catch up", || async {
        c.node_status(old).await.filter(|s| s.task_count == total).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_stop_and_restart_keeps_everything() {
    let mut c = TestCluster::start(3, &[]).await;
    let ids = schedule_many(&c, 200, 16, "restart").await;
    for id in 1..=3 {
        c.stop(id).await;
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for_leader(Duration::from_secs(30)).await;
    assert_all_present(&c, &ids).await;
    // And a SIGKILL of every node at once (no graceful flush) keeps them too.
    let more = schedule_many(&c, 100, 16, "killall").await;
    for id in 1..=3 {
        c.kill(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    c.wait_for_leader(Duration::from_secs(30)).await;
    assert_all_present(&c, &ids).await;
    assert_all_present(&c, &more).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_down_through_a_purge_catches_up_by_snapshot() {
    let mut c = TestCluster::start(3, &["--snapshot-every", "500", "--logs-to-keep", "100"]).await;
    let leader = c.leader().await;
    let lagger = (1..=3).find(|id| *id != leader).unwrap();
    schedule_many(&c, 50, 8, "warmup").await;
    let down_at = c.node_status(lagger).await.expect("lagger status").last_log_index;
    c.kill(lagger);
    let writes = 3000 * scale();
    let ids = schedule_many(&c, writes, 32, "while-down").await;
    // The leader must have purged past what the lagger has, so logs alone
    // cannot bring it back.
    let purged = wait_until(Duration::from_secs(30), "the leader to purge its log", || async {
        let leader = c.wait_for_leader(Duration::from_secs(5)).await;
        c.node_status(leader).await.filter(|s| s.purged_index > down_at).map(|s| s.purged_index)
    })
    .await;
    c.restart(lagger);
    let leader_status = c.node_status(c.leader().await).await.expect("leader status");
    let status = wait_until(Duration::from_secs(60), "the lagger to catch up", || async {
        c.node_status(lagger)
            .await
            .filter(|s| s.task_count == leader_status.task_count && s.applied_index >= leader_status.committed_index)
    })
    .await;
    assert!(
        status.snapshot_index > down_at,
        "the lagger holds a snapshot past where it went down (down at {down_at}, leader purged to {purged}): {status:?}"
    );
    // Its data is right, not just its counters: read from it alone.
    let client = c.client_of(lagger);
    for id in ids.iter().step_by(97) {
        let t = client.get_task(*id, true, false).await.expect("task on the caught-up follower");
        assert_eq!(t.id, *id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_quorum_writes_fail_fast_with_unavailable() {
    let mut c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    for id in 1..=3 {
        if id != survivor {
            c.kill(id);
        }
    }
    let started = std::time::Instant::now();
    let err = c.client_of(survivor).schedule(0, spec("x", b"")).await.expect_err("no quorum, no write");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.metadata().get("retry-after-ms").is_some(), "a retry hint: {err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "bounded wait, not a hang: {:?}", started.elapsed());
    // A majority again: writes work again.
    let back = (1..=3).find(|id| *id != survivor).unwrap();
    c.restart(back);
    c.wait_for_leader(Duration::from_secs(30)).await;
    c.client().schedule(0, spec("x", b"")).await.expect("a write once a majority is back");
}
