//! Task dependencies on a real cluster: a 10,000-parent fan-in across a
//! leader kill, an upstream failure that cancels exactly its descendants,
//! parents' results reaching shell and SDK workers, and the command line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::harness::*;
use drover::domain::dependency::Upstream;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

fn after(callback: &str, parents: Vec<u64>, policy: pb::AfterPolicy) -> pb::TaskSpec {
    pb::TaskSpec { after: parents, after_policy: policy as i32, ..spec(callback, b"") }
}

fn node(callback: &str, name: &str, refs: &[&str]) -> pb::TaskSpec {
    pb::TaskSpec {
        r#ref: name.into(),
        after_refs: refs.iter().map(|r| r.to_string()).collect(),
        ..spec(callback, name.as_bytes())
    }
}

/// A fan-in after 10,000 tasks (every tenth fails), with the leader
/// SIGKILLed while the parents run: the fan-in runs once, after every
/// parent ended, with exact counts and every result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ten_thousand_parent_fan_in_runs_once_with_exact_counts_across_a_leader_kill() {
    const PARENTS: u64 = 10_000;
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    register(&client, callback("leaf", 5_000)).await;
    register(&client, callback("fan-in", 5_000)).await;
    let runs: Arc<Mutex<Vec<(u64, u32, Upstream)>>> = Arc::default();
    let stop = CancellationToken::new();
    let w = Worker::builder(c.endpoints())
        .id("dag-worker")
        .handle("leaf", 64, |ctx: TaskContext| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if ctx.payload == b"fail" {
                TaskResult::Fatal("fails on purpose".into())
            } else {
                TaskResult::Success(format!("ok-{}", ctx.task_id).into_bytes())
            }
        })
        .handle("fan-in", 1, {
            let runs = runs.clone();
            move |ctx: TaskContext| {
                let runs = runs.clone();
                async move {
                    let up = ctx.parent_results.clone().unwrap_or_default();
                    runs.lock().unwrap().push((ctx.task_id, ctx.attempt, up));
                    TaskResult::Success(b"summed".to_vec())
                }
            }
        })
        .run(stop.clone());
    let worker = tokio::spawn(w);

    let mut parents = Vec::new();
    for chunk in 0..PARENTS / 1000 {
        let specs = (0..1000).map(|i| spec("leaf", if (chunk * 1000 + i) % 10 == 0 { b"fail" } else { b"" })).collect();
        let r = client.schedule_batch(0, specs).await.expect("schedule parents");
        parents.extend(r.results.iter().map(|r| r.task_id));
    }
    let fan_in = client
        .schedule(0, after("fan-in", parents.clone(), pb::AfterPolicy::AllFinished))
        .await
        .expect("schedule the fan-in");
    assert_eq!(fan_in.state, pb::TaskState::Waiting as i32);

    // Kill the leader once a tenth of the parents ended.
    let open_at_kill = wait_until(Duration::from_secs(60), "a tenth of the parents to end", || async {
        let t = client.get_task(fan_in.task_id, true, false).await.ok()?;
        let d = t.dependencies?;
        (d.open < (PARENTS as u32) * 9 / 10).then_some(d.open)
    })
    .await;
    let leader = c.leader().await;
    c.kill(leader);
    c.wait_for_leader(Duration::from_secs(20)).await;
    c.restart(leader);

    let done = wait_state(&client, fan_in.task_id, pb::TaskState::Succeeded, Duration::from_secs(180)).await;
    stop.cancel();
    let _ = worker.await;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(
        runs.len(),
        1,
        "the fan-in ran {} times: {:?}",
        runs.len(),
        runs.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    let (id, attempt, up) = &runs[0];
    assert_eq!((*id, *attempt), (fan_in.task_id, 1));
    assert_eq!((up.ended.succeeded, up.ended.failed, up.ended.dead, up.ended.cancelled), (9_000, 1_000, 0, 0));
    assert_eq!(up.parents.len(), PARENTS as usize);
    assert_eq!(up.omitted, 0);
    for p in &up.parents {
        match p.result.as_deref() {
            Some(r) => assert_eq!(r, format!("ok-{}", p.task_id).as_bytes()),
            None => assert_eq!(p.state, drover::domain::TaskState::Failed, "task {} has no result", p.task_id),
        }
    }
    let d = done.dependencies.expect("dependencies");
    assert_eq!(d.open, 0);
    assert_eq!(d.parents.len(), PARENTS as usize);
    eprintln!(
        "fan-in: {PARENTS} parents, leader {leader} killed with {open_at_kill} still open; the fan-in ran once with 9000 succeeded and 1000 failed"
    );
    let digests = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<BTreeSet<_>>().len(), 1, "{digests:?}");
}

/// A graph written in one batch with refs; one task fails: exactly its
/// descendants are cancelled, the rest run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_failure_cancels_exactly_its_descendants() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    let mut settings = callback("step", 5_000);
    settings.max_attempts = 1;
    register(&client, settings).await;
    // a -> b -> d, a -> c -> d, b -> e; x -> y (independent).
    let specs = vec![
        node("step", "a", &[]),
        node("step", "b", &["a"]),
        node("step", "c", &["a"]),
        node("step", "d", &["b", "c"]),
        node("step", "e", &["b"]),
        node("step", "x", &[]),
        node("step", "y", &["x"]),
    ];
    let r = client.schedule_batch(0, specs).await.expect("schedule the graph");
    let ids: BTreeMap<&str, u64> =
        ["a", "b", "c", "d", "e", "x", "y"].into_iter().zip(r.results.iter().map(|r| r.task_id)).collect();
    // "b" fails for good (exit 3).
    let dir = tempfile::tempdir().unwrap();
    let script = "name=$(cat); if [ \"$name\" = b ]; then echo broken >&2; exit 3; fi; echo \"$name\"";
    let mut worker = WorkerProc::start(
        &ep,
        dir.path().join("worker.log"),
        &["--callback", "step", "--concurrency", "4", "--", "sh", "-c", script],
    );
    wait_state(&client, ids["b"], pb::TaskState::Failed, Duration::from_secs(30)).await;
    for n in ["d", "e"] {
        let t = wait_state(&client, ids[n], pb::TaskState::Cancelled, Duration::from_secs(30)).await;
        assert_eq!(t.last_error, format!("upstream task {} failed: failed", ids["b"]), "{n}");
    }
    for n in ["a", "c", "x", "y"] {
        wait_state(&client, ids[n], pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    }
    // `task get` shows the edges.
    let (ok, out, err) = cli(&ep, &["task", "get", &ids["d"].to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("after:        {},{} (all-succeeded)", ids["b"], ids["c"])), "{out}");
    let (ok, out, _) = cli(&ep, &["task", "get", &ids["b"].to_string(), "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["children"], serde_json::json!([ids["d"], ids["e"]]));
    assert_eq!(v["state"], "failed");
    worker.terminate();
    let digests = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<BTreeSet<_>>().len(), 1, "{digests:?}");
}

/// Parents' results reach a shell worker as the JSON file named by
/// `DROVER_PARENT_RESULTS`; `--after` on the command line; a dead parent
/// redriven with `--with-dependents` re-arms its cancelled children.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shell_workers_get_parent_results_and_dlq_redrive_rearms_dependents() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    let mut settings = callback("job", 5_000);
    settings.max_attempts = 1;
    register(&client, settings).await;
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    // "flaky" exits 75 (retry) until the file exists; with one attempt it
    // dies. The child prints the parents' file.
    let script = format!(
        "p=$(cat); case \"$p\" in flaky) [ -e {} ] || exit 75; echo fixed;; child) cat \"$DROVER_PARENT_RESULTS\";; *) echo \"$p\";; esac",
        fixed.display()
    );
    let mut worker = WorkerProc::start(
        &ep,
        dir.path().join("worker.log"),
        &["--callback", "job", "--concurrency", "4", "--", "sh", "-c", &script],
    );
    let schedule = |args: &[&str]| {
        let mut a = vec!["task", "schedule", "job"];
        a.extend_from_slice(args);
        let (ok, out, err) = cli(&ep, &a);
        assert!(ok, "{a:?}: {err}");
        out.trim().parse::<u64>().unwrap_or_else(|e| panic!("{out}: {e}"))
    };
    let one = schedule(&["--payload", "one"]);
    let flaky = schedule(&["--payload", "flaky"]);
    let child = schedule(&["--payload", "child", "--after", &format!("{one},{flaky}")]);
    wait_state(&client, flaky, pb::TaskState::Dead, Duration::from_secs(30)).await;
    let t = wait_state(&client, child, pb::TaskState::Cancelled, Duration::from_secs(30)).await;
    assert_eq!(t.last_error, format!("upstream task {flaky} failed: dead"));

    std::fs::write(&fixed, b"").unwrap();
    let (ok, out, err) = cli(&ep, &["dlq", "redrive", &flaky.to_string(), "--with-dependents"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 dead task(s) redriven"), "{out}");
    let t = wait_state(&client, child, pb::TaskState::Succeeded, Duration::from_secs(30)).await;
    let result: serde_json::Value = serde_json::from_slice(&t.result.unwrap_or_default()).expect("the parents' JSON");
    assert_eq!(result["ended"]["succeeded"], 2);
    assert_eq!(result["parents"][0]["task_id"], one);
    assert_eq!(result["parents"][0]["result"], "one\n");
    assert_eq!(result["parents"][1]["task_id"], flaky);
    assert_eq!(result["parents"][1]["result"], "fixed\n");
    worker.terminate();
}
