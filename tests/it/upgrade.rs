//! A rolling upgrade from the previous release under load, a rollback, and
//! the previous release's data dir and backup opened by this build.
//!
//! The previous release is the commit in `tests/upgrade/PREVIOUS_RELEASE`;
//! `tests/upgrade/run.sh` builds it into `target/upgrade-from/` and runs
//! these tests with `DROVER_PREVIOUS_BIN` naming its binary. They are
//! `#[ignore]`d in the plain suite (they need that second build), and fail
//! loudly, never skip, when run without it.
//!
//! What is measured: for each step (one node stopped, its binary swapped,
//! back and caught up), the longest time no schedule was acknowledged while
//! a client scheduled without pause, and the errors it saw.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::testkit::Spec;
use drover::pb;

/// The previous release's `drover` binary.
fn previous_bin() -> PathBuf {
    match std::env::var("DROVER_PREVIOUS_BIN") {
        Ok(p) if Path::new(&p).exists() => PathBuf::from(p),
        other => panic!(
            "DROVER_PREVIOUS_BIN ({other:?}) must name the previous release's binary: run tests/upgrade/run.sh, which \
             builds it"
        ),
    }
}

/// A client that schedules a task every few milliseconds and notes when
/// each was acknowledged.
struct Load {
    acked: Arc<Mutex<Vec<(Instant, u64)>>>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(client: drover::client::Client) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, e, s) = (acked.clone(), errors.clone(), stop.clone());
        let task = tokio::spawn(async move {
            // Pacing of the load, not synchronisation.
            let mut every = tokio::time::interval(Duration::from_millis(20));
            while !s.load(Ordering::Relaxed) {
                every.tick().await;
                match client.schedule(0, spec("up", b"x")).await {
                    Ok(r) => a.lock().unwrap().push((Instant::now(), r.task_id)),
                    Err(err) => e.lock().unwrap().push((Instant::now(), format!("{}: {}", err.code(), err.message()))),
                }
            }
        });
        Load { acked, errors, stop, task }
    }

    fn acked_ids(&self) -> Vec<u64> {
        self.acked.lock().unwrap().iter().map(|(_, id)| *id).collect()
    }

    /// The longest stretch of `[from, to]` without an acknowledgement, and
    /// the errors in it.
    fn gap(&self, from: Instant, to: Instant) -> (Duration, usize) {
        let acked = self.acked.lock().unwrap();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for (at, _) in acked.iter().filter(|(at, _)| *at >= from && *at <= to) {
            longest = longest.max(at.duration_since(last));
            last = *at;
        }
        longest = longest.max(to.duration_since(last));
        let errors = self.errors.lock().unwrap().iter().filter(|(at, _)| *at >= from && *at <= to).count();
        (longest, errors)
    }

    async fn finish(self) -> Vec<u64> {
        let Load { acked, stop, task, .. } = self;
        stop.store(true, Ordering::Relaxed);
        task.await.expect("the load task");
        let acked = acked.lock().unwrap();
        acked.iter().map(|(_, id)| *id).collect()
    }
}

/// A step of the upgrade and what it cost.
struct Step {
    name: String,
    took: Duration,
    longest_unavailable: Duration,
    errors: usize,
}

/// Wait until node `id` answers as the release `new` says (this build's
/// reports a version, the previous release none) and has applied what the
/// leader had committed when it came back.
async fn caught_up(c: &TestCluster, id: u64, new: bool) {
    let client = c.client();
    let committed = wait_until(Duration::from_secs(60), &format!("node {id} to answer"), || async {
        let own = c.node_status(id).await?;
        let s = client.cluster_status().await.ok()?;
        (own.version.is_empty() != new).then_some(s.committed_index)
    })
    .await;
    wait_until(Duration::from_secs(60), &format!("node {id} to apply up to {committed}"), || async {
        (c.node_status(id).await?.applied_index >= committed).then_some(())
    })
    .await;
}

/// Wait until `n` more schedules have been acknowledged.
async fn more_writes(load: &Load, n: usize, what: &str) {
    let now = load.acked_ids().len();
    wait_until(Duration::from_secs(30), what, || async { (load.acked_ids().len() >= now + n).then_some(()) }).await;
}

/// Stop node `id` (SIGTERM, a clean exit), start it on `binary`, wait
/// until it has caught up. `while_down` runs while it is stopped.
async fn swap<F, Fut>(c: &mut TestCluster, load: &Load, id: u64, binary: &Path, name: &str, while_down: F) -> Step
where
    F: FnOnce(drover::client::Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    c.stop(id).await;
    while_down(c.client()).await;
    c.set_binary(id, binary);
    c.restart(id);
    caught_up(c, id, binary == Path::new(&server_bin())).await;
    // The mixed cluster serves, and the node keeps up with it.
    more_writes(load, 100, &format!("{name}: writes with the node back")).await;
    caught_up(c, id, binary == Path::new(&server_bin())).await;
    let exited = c.exited();
    assert!(exited.is_empty(), "{name}: nodes exited: {exited:?}\n{}", c.log_tail(id));
    let (longest_unavailable, errors) = load.gap(started, Instant::now());
    Step { name: name.to_string(), took: started.elapsed(), longest_unavailable, errors }
}

/// The cluster status's feature level and cluster ID.
async fn level_and_id(c: &TestCluster) -> (u32, String) {
    let s = c.client().cluster_status().await.expect("cluster status");
    (s.active_feature_level, s.cluster_id)
}

/// Three nodes of the previous release, under a client scheduling without
/// pause and two workers (one of each release) running every task, are
/// upgraded one by one, followers first and the leader last. Then one node
/// goes back to the previous release (before the level is raised) and the
/// cluster still serves; the raise is refused while a member is behind,
/// naming it, and works once every member runs this build. Nothing
/// acknowledged is lost, nothing runs twice, the replicas' digests are
/// equal, and a backup taken by the previous release restores here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the previous release's binary: tests/upgrade/run.sh"]
async fn rolling_upgrade_from_the_previous_release_under_load_and_a_rollback() {
    let old = previous_bin();
    let new = PathBuf::from(server_bin());
    let mut layout = Spec::new(3, &new).flags(&["--auto-register"]);
    layout.binaries = (1..=3).map(|id| (id, old.clone())).collect();
    let mut c = TestCluster::start_spec(layout).await;
    let dir = tempfile::tempdir().unwrap();
    let client = c.client();
    register(&client, callback("up", 30_000)).await;
    let runs = dir.path().join("runs.txt");
    let run = format!("echo $DROVER_TASK_ID >> {}", runs.display());
    let worker_args = |id: &'static str| -> Vec<String> {
        ["--callback", "up", "--concurrency", "4", "--id", id, "--", "sh", "-c", &run].map(String::from).to_vec()
    };
    let args: Vec<String> = worker_args("w-new");
    let mut worker_new = WorkerProc::start(
        &endpoints(&c),
        dir.path().join("w-new.log"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut worker_old = std::process::Command::new(&old)
        .arg("worker")
        .args(["--endpoint", &endpoints(&c)])
        .args(worker_args("w-old"))
        .stdout(std::fs::File::create(dir.path().join("w-old.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("w-old.err")).unwrap())
        .spawn()
        .expect("the previous release's worker");
    let load = Load::start(c.client());
    more_writes(&load, 100, "the load to get going").await;

    // A backup written by the previous release.
    let backup = dir.path().join("old.backup");
    let before_backup = load.acked_ids();
    let o = std::process::Command::new(&old)
        .args(["admin", "backup", "--out"])
        .arg(&backup)
        .args(["--endpoint", &endpoints(&c)])
        .output()
        .expect("run the previous release's CLI");
    assert!(o.status.success(), "backup by the previous release: {}", String::from_utf8_lossy(&o.stderr));

    let mut steps = Vec::new();
    let leader = c.leader().await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    for id in &followers {
        steps.push(swap(&mut c, &load, *id, &new, &format!("upgrade follower {id}"), |_| async {}).await);
    }
    // The leader last. While it is down (a node of this build leads), the
    // raise is refused, naming it.
    let step = swap(&mut c, &load, leader, &new, &format!("upgrade leader {leader}"), |client| async move {
        let e = client.finalize_upgrade(0).await.expect_err("the raise with a member on the previous release");
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(&format!("node {leader}")), "names the member behind: {}", e.message());
    })
    .await;
    steps.push(step);
    assert_eq!(level_and_id(&c).await, (1, String::new()), "not raised by itself: level 1, no cluster ID");
    let s = c.client().cluster_status().await.unwrap();
    for m in &s.members {
        assert_eq!(m.feature_level, drover::domain::feature::SUPPORTED, "node {} reports its level: {m:?}", m.id);
    }

    // A rollback before the raise: the cluster still serves; the raise is
    // refused, naming the node.
    let back = followers[0];
    steps.push(swap(&mut c, &load, back, &old, &format!("roll node {back} back"), |_| async {}).await);
    let e = c.client().finalize_upgrade(0).await.expect_err("the raise with a node rolled back");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&format!("node {back} speaks feature level 1")), "{}", e.message());
    more_writes(&load, 100, "writes with a node rolled back").await;
    steps.push(swap(&mut c, &load, back, &new, &format!("upgrade node {back} again"), |_| async {}).await);

    // The raise.
    let raised = Instant::now();
    let r = c.client().finalize_upgrade(0).await.expect("the raise once every member runs this build");
    assert_eq!((r.previous_feature_level, r.active_feature_level), (1, drover::domain::feature::SUPPORTED));
    let named = wait_until(Duration::from_secs(20), "the cluster ID after the raise", || async {
        let (level, id) = level_and_id(&c).await;
        (level == drover::domain::feature::SUPPORTED && !id.is_empty()).then_some(id)
    })
    .await;
    more_writes(&load, 100, "writes after the raise").await;
    let (gap, errors) = load.gap(raised, Instant::now());
    steps.push(Step { name: "raise the level".into(), took: raised.elapsed(), longest_unavailable: gap, errors });
    for n in 1..=3 {
        let st = c.node_status(n).await.expect("node status");
        assert_eq!(st.cluster_id, named, "node {n}");
        assert_eq!(st.active_feature_level, drover::domain::feature::SUPPORTED, "node {n}");
    }

    // Nothing acknowledged lost, nothing run twice, equal replicas.
    let acked: BTreeSet<u64> = load.finish().await.into_iter().collect();
    let done = wait_until(Duration::from_secs(120), "every acknowledged task to succeed", || async {
        let done: BTreeMap<u64, pb::Task> =
            list(&client, "up", pb::TaskState::Succeeded).await.into_iter().map(|t| (t.id, t)).collect();
        acked.iter().all(|id| done.contains_key(id)).then_some(done)
    })
    .await;
    worker_new.terminate();
    crate::harness::signal_pid(worker_old.id() as i32, Signal::SIGTERM);
    let _ = worker_old.wait();
    let mut seen = BTreeMap::<u64, u32>::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        *seen.entry(line.trim().parse().expect("a task id")).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks run more than once: {twice:?}");
    for id in &acked {
        assert_eq!(seen.get(id), Some(&1), "task {id} ran once");
        assert_eq!(done[id].attempts, 1, "task {id}: one attempt");
    }
    let digests = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<BTreeSet<_>>().len(), 1, "replicas differ: {digests:?}");

    // The previous release's backup restores into this build.
    let restored = dir.path().join("restored");
    let (ok, _, err) = cli(
        "127.0.0.1:1",
        &["admin", "restore", "--in", backup.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()],
    );
    assert!(ok, "restore of the previous release's backup: {err}");
    let mut one = Spec::new(1, &new);
    one.node_dirs.insert(1, restored.clone());
    let mut r = TestCluster::layout(one);
    r.start_node(1, &["--bootstrap"]);
    let rc = r.client();
    for id in before_backup {
        wait_until(Duration::from_secs(30), &format!("task {id} in the restored cluster"), || async {
            rc.get_task(id, false, false).await.ok()
        })
        .await;
    }
    r.stop_all().await;
    c.stop_all().await;

    println!("rolling upgrade from {} ({} tasks acknowledged):", old.display(), acked.len());
    println!("{:<28} {:>10} {:>22} {:>8}", "STEP", "TOOK", "LONGEST UNAVAILABLE", "ERRORS");
    for s in &steps {
        println!(
            "{:<28} {:>9.1}s {:>21.0}ms {:>8}",
            s.name,
            s.took.as_secs_f64(),
            s.longest_unavailable.as_secs_f64() * 1000.0,
            s.errors
        );
    }
}

/// A data dir the previous release wrote, from a live cluster of it (not
/// the fixture): this build opens it at level 1 and serves; the previous
/// release opens it again after this build ran on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the previous release's binary: tests/upgrade/run.sh"]
async fn a_data_dir_of_the_previous_release_opens_here_and_back_there() {
    let old = previous_bin();
    let new = PathBuf::from(server_bin());
    let mut layout = Spec::new(1, &new).flags(&["--auto-register"]);
    layout.binaries.insert(1, old.clone());
    let mut c = TestCluster::start_spec(layout).await;
    let client = c.client();
    let mut ids = Vec::new();
    for i in 0..20u8 {
        ids.push(client.schedule(0, spec("fixture", &[i])).await.expect("schedule on the previous release").task_id);
    }
    c.stop(1).await;
    c.set_binary(1, &new);
    c.restart(1);
    c.wait_for_leader(Duration::from_secs(30)).await;
    for id in &ids {
        client.get_task(*id, false, false).await.expect("a task the previous release wrote");
    }
    ids.push(client.schedule(0, spec("fixture", b"new")).await.expect("a write on this build").task_id);
    assert_eq!(level_and_id(&c).await, (1, String::new()));
    // Back to the previous release: it reads what this build wrote.
    c.stop(1).await;
    c.set_binary(1, &old);
    c.restart(1);
    c.wait_for_leader(Duration::from_secs(30)).await;
    for id in &ids {
        client.get_task(*id, false, false).await.expect("the previous release reads this build's writes");
    }
    c.stop_all().await;
}

/// Log entries this binary cannot decode, from a member that says it
/// speaks a higher feature level (as after a raise past this binary): the
/// node stops with exit code 76 and says why; it neither applies nor skips
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_sent_entries_of_a_level_it_does_not_speak_stops_with_its_own_exit_code() {
    use drover::domain::{Command, Operation};
    use drover::raft::codec::LogIdRecord;
    use drover::raft::{Entry, LogId, TypeConfig, Vote};
    use openraft::entry::RaftEntry;
    let mut c = TestCluster::start(3, &[]).await;
    let leader = c.leader().await;
    let target = (1..=3).find(|id| *id != leader).expect("a follower");
    let named = wait_until(Duration::from_secs(20), "the cluster ID", || async {
        Some(c.node_status(target).await?.cluster_id).filter(|id| !id.is_empty())
    })
    .await;
    // An entry whose operation has a tag this build does not know.
    let marker = 0x1122_3344_5566_7788u64;
    let command = Command { stamped_at_ms: marker, operation: Operation::Cancel { task_id: 0 } };
    let request = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new(1, leader),
        prev_log_id: None,
        entries: vec![Entry::new_normal(LogId::from(LogIdRecord { term: 1, node_id: leader, index: 1 }), command)],
        leader_commit: None,
    };
    let mut data = Vec::new();
    drover::encoding::encode_into(&mut data, &request);
    let at = data.windows(8).position(|w| w == marker.to_le_bytes()).expect("the marker") + 8;
    data[at..at + 4].copy_from_slice(&999u32.to_le_bytes());
    let mut message = tonic::Request::new(pb::raft::RaftMessage { data });
    let env = drover::raft::identity::Envelope {
        cluster: Some(named.parse().expect("a cluster ID")),
        from: leader,
        from_addr: c.node(leader).addr.clone(),
        to: target,
        unborn: false,
        legacy: false,
    };
    env.write(message.metadata_mut());
    let higher = drover::domain::feature::SUPPORTED + 1;
    message.metadata_mut().insert(drover::raft::versions::LEVEL_HEADER, higher.to_string().parse().unwrap());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.node(target).addr))
        .unwrap()
        .connect()
        .await
        .expect("connect");
    let e = pb::raft::raft_client::RaftClient::new(channel).append_entries(message).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(&format!("feature level {higher}")), "{}", e.message());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some((_, status)) = c.exited().into_iter().find(|(id, _)| *id == target) {
            break status;
        }
        assert!(Instant::now() < deadline, "node {target} did not stop; log:\n{}", c.log_tail(target));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(76), "exit code; log:\n{}", c.log_tail(target));
    assert!(c.log_tail(target).contains("cannot decode"), "{}", c.log_tail(target));
    // The others go on.
    c.client().schedule(0, spec("after", b"x")).await.expect("the cluster serves");
}
