//! Operations: resizing the cluster live, leadership transfer, backup and
//! restore, and the refusals that keep membership changes safe.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;
use drover::pb;

fn voters(v: &serde_json::Value) -> BTreeSet<u64> {
    v["members"].as_array().unwrap().iter().filter(|m| m["voter"] == true).map(|m| m["id"].as_u64().unwrap()).collect()
}

/// Schedule continuously through every node until stopped; returns the
/// acknowledged ids.
fn background_load(c: &TestCluster, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u64>> {
    let client = c.client();
    tokio::spawn(async move {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let mut i = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let mut s = spec("resize", format!("{i}").as_bytes());
            s.idempotency_key = format!("resize-{i}");
            let r = client.schedule(i, s).await.expect("scheduling stays available across membership changes");
            acked.lock().unwrap().push(r.task_id);
            i += 1;
        }
        let v = acked.lock().unwrap().clone();
        v
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resizing_3_to_5_to_3_under_load_loses_nothing() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    register(&client, callback("resize", 5000)).await;
    let s = tempfile::tempdir().unwrap();
    let _w = WorkerProc::start(
        &endpoints(&c),
        s.path().join("w.log"),
        &["--callback", "resize", "--concurrency", "8", "--builtin", "noop"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = background_load(&c, stop.clone());
    for _ in 0..2 {
        let (id, addr) = c.spawn_new_node().await;
        let (ok, _, err) = cli(&endpoints(&c), &["cluster", "add-node", "--id", &id.to_string(), "--addr", &addr]);
        assert!(ok, "add-node {id}: {err}");
        assert!(err.contains("learner"), "progress is reported: {err}");
    }
    assert_eq!(voters(&status_json(&endpoints(&c))), BTreeSet::from([1, 2, 3, 4, 5]));
    // Shrink back: a follower, then the leader itself.
    let (ok, _, err) = cli(&endpoints(&c), &["cluster", "remove-node", "--id", "4"]);
    assert!(ok, "remove 4: {err}");
    let leader = c.leader().await;
    let (ok, _, err) = cli(&endpoints(&c), &["cluster", "remove-node", "--id", &leader.to_string()]);
    assert!(ok, "remove the leader {leader}: {err}");
    let remaining: BTreeSet<u64> = [1, 2, 3, 5].into_iter().filter(|id| *id != leader).collect();
    let st = wait_until(Duration::from_secs(20), "a leader among the remaining voters", || async {
        let v = status_json(&endpoints(&c));
        remaining.contains(&v["leader_id"].as_u64().unwrap_or(0)).then_some(v)
    })
    .await;
    assert_eq!(voters(&st), remaining);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let acked = load.await.unwrap();
    assert!(acked.len() > 20, "the load made progress: {}", acked.len());
    wait_until(Duration::from_secs(60), "every acknowledged task to run", || async {
        (list(&client, "resize", pb::TaskState::Succeeded).await.len() >= acked.len()).then_some(())
    })
    .await;
    let done: BTreeSet<u64> = list(&client, "resize", pb::TaskState::Succeeded).await.iter().map(|t| t.id).collect();
    for id in &acked {
        assert!(done.contains(id), "acknowledged task {id} lost or not run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_membership_changes_are_refused_with_clear_messages() {
    let mut c = TestCluster::start(1, &[]).await;
    let ep = endpoints(&c);
    let (ok, _, err) = cli(&ep, &["cluster", "remove-node", "--id", "1"]);
    assert!(!ok && err.contains("last voter"), "{err}");
    let (ok, _, err) = cli(&ep, &["cluster", "add-node", "--id", "7", "--addr", "127.0.0.1:1"]);
    assert!(!ok && err.contains("does not answer"), "{err}");
    let (id, addr) = c.spawn_new_node().await;
    let (ok, _, err) = cli(&ep, &["cluster", "add-node", "--id", "9", "--addr", &addr]);
    assert!(!ok && err.contains(&format!("is node {id}")), "a wrong id is caught: {err}");
    let (ok, _, err) = cli(&ep, &["cluster", "add-node", "--id", &id.to_string(), "--addr", &addr]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&ep, &["cluster", "remove-node", "--id", &id.to_string()]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&ep, &["cluster", "add-node", "--id", &id.to_string(), "--addr", &addr]);
    assert!(!ok && err.contains("cannot be reused"), "a removed id never comes back: {err}");
    let (ok, _, err) = cli(&ep, &["cluster", "remove-node", "--id", "42"]);
    assert!(!ok && err.contains("not a member"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_moves_on_request_and_on_graceful_shutdown() {
    let mut c = TestCluster::start(3, &[]).await;
    let ep = endpoints(&c);
    let leader = c.leader().await;
    let to = (1..=3).find(|id| *id != leader).unwrap();
    let (ok, out, err) = cli(&ep, &["cluster", "transfer-leader", "--to", &to.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("node {to} leads")), "{out}");
    assert_eq!(c.leader().await, to);
    // SIGTERM on the leader: it hands over before it stops.
    c.stop(to).await;
    let log = std::fs::read_to_string(&c.node(to).log).unwrap();
    assert!(log.contains("handing leadership over"), "{log}");
    let new = c.wait_for_leader(Duration::from_secs(10)).await;
    assert_ne!(new, to);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_and_restore_round_trip_keeps_every_task() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    register(&client, callback("keep", 5000)).await;
    let s = tempfile::tempdir().unwrap();
    let mut sched = client.scheduler(0).unwrap();
    for b in 0..3 {
        let tasks = (0..100)
            .map(|i| pb::TaskSpec {
                idempotency_key: format!("k{b}-{i}"),
                priority: i % 10,
                ..spec("keep", format!("{b}-{i}").as_bytes())
            })
            .collect();
        sched.schedule_batch(pb::ScheduleBatchRequest { tasks, ..Default::default() }).await.unwrap();
    }
    // Run some of them so the backup holds several states.
    let mut w = WorkerProc::start(&endpoints(&c), s.path().join("w.log"), &["--callback", "keep", "--builtin", "noop"]);
    wait_until(Duration::from_secs(30), "some tasks to finish", || async {
        (list(&client, "keep", pb::TaskState::Succeeded).await.len() >= 50).then_some(())
    })
    .await;
    // Stop the worker gracefully (its completions are applied before it
    // exits), then wait until nothing runs: the states are final.
    w.terminate();
    wait_until(Duration::from_secs(30), "no task to be running", || async {
        list(&client, "keep", pb::TaskState::Running).await.is_empty().then_some(())
    })
    .await;
    let before = list(&client, "keep", pb::TaskState::Unspecified).await;
    let file = s.path().join("backup.snap");
    let (ok, out, err) = cli(&endpoints(&c), &["admin", "backup", "--out", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("applied index"), "{out}");
    assert!(!err.contains("progress"), "no terminal, no --json: no progress lines: {err}");
    // With --json and no terminal, progress comes as JSON lines on stderr.
    let again = s.path().join("backup2.snap");
    let (ok, out, err) = cli(&endpoints(&c), &["admin", "backup", "--json", "--out", again.to_str().unwrap()]);
    assert!(ok, "{err}");
    let progress: serde_json::Value =
        serde_json::from_str(err.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(progress["progress"], "backup", "{err}");
    assert!(progress["done"].as_u64().is_some_and(|b| b > 0), "{err}");
    let done: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(done["bytes"].as_u64().is_some_and(|b| b > 0));
    let after_backup = list(&client, "keep", pb::TaskState::Unspecified).await;

    // A brand-new one-node cluster seeded from the file.
    let dir = s.path().join("restored");
    let (ok, _, err) =
        cli("127.0.0.1:1", &["admin", "restore", "--in", file.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        cli("127.0.0.1:1", &["admin", "restore", "--in", file.to_str().unwrap(), "--data-dir", dir.to_str().unwrap()]);
    assert!(!ok && err.contains("not empty"), "restore refuses a used data dir: {err}");
    let addr = format!("127.0.0.1:{}", free_port().expect("a free port"));
    let mut node = std::process::Command::new(BIN)
        .args(["server", "--id", "1", "--listen", &addr, "--data-dir", dir.to_str().unwrap(), "--bootstrap"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let restored = drover::client::Client::new(vec![addr.clone()]);
    let rows = wait_until(Duration::from_secs(30), "the import to finish", || async {
        // Writes resume once the import is done: the callback is registered again as a probe.
        let mut sched = restored.scheduler(0).ok()?;
        let settings = Some(callback("probe", 5000));
        sched.register_callback(pb::RegisterCallbackRequest { settings }).await.ok()?;
        Some(list(&restored, "keep", pb::TaskState::Unspecified).await)
    })
    .await;
    // A restore makes a new cluster, with an ID of its own.
    let original = c.client().cluster_status().await.expect("status").cluster_id;
    let renamed = restored.node_status().await.expect("restored status").cluster_id;
    assert!(!renamed.is_empty() && renamed != original, "restored {renamed:?}, original {original:?}");
    let _ = node.kill();
    let _ = node.wait();
    // Pending tasks are shown as ready or not by the clock at the time of
    // the listing: compare them as pending, with their run-at.
    let pending = [pb::TaskState::Scheduled as i32, pb::TaskState::Ready as i32, pb::TaskState::RetryWait as i32];
    let key = |t: &pb::Task| {
        let state = if pending.contains(&t.state) { -1 } else { t.state };
        (
            t.id,
            t.callback.clone(),
            state,
            t.run_at_unix_ms,
            t.attempts,
            t.payload_size,
            t.idempotency_key.clone(),
            t.priority,
        )
    };
    let got: Vec<_> = rows.iter().map(key).collect();
    assert_eq!(got.len(), before.len());
    // The backup was taken between the two listings (the worker was stopped, so they agree).
    assert_eq!(before.iter().map(key).collect::<Vec<_>>(), after_backup.iter().map(key).collect::<Vec<_>>());
    assert_eq!(got, before.iter().map(key).collect::<Vec<_>>(), "every task, in the same state");
}
