//! Periodic schedules: a slot fires exactly once whatever happens to the
//! leaders; overlap policies against a slow worker; the command line.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::harness::*;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

fn every(name: &str, callback: &str, period: &str, overlap: &str, catchup: &str) -> Vec<String> {
    [
        "schedule",
        "create",
        name,
        "--callback",
        callback,
        "--every",
        period,
        "--overlap",
        overlap,
        "--catchup",
        catchup,
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_cli(ep: &str, args: &[String]) -> serde_json::Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(ep, &args);
    assert!(ok, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A worker whose handler takes `work` per task.
fn worker(c: &TestCluster, callback: &str, credits: u32, work: Duration) -> CancellationToken {
    let stop = CancellationToken::new();
    let w = Worker::builder(c.endpoints())
        .id(format!("w-{callback}"))
        .handle(callback, credits, move |_ctx: TaskContext| async move {
            tokio::time::sleep(work).await;
            TaskResult::Success(Vec::new())
        })
        .run(stop.clone());
    tokio::spawn(w);
    stop
}

/// The slot (nominal ms) of every task of a schedule, from its key.
async fn slots_of(client: &drover::client::Client, callback: &str, schedule: &str) -> Vec<u64> {
    let prefix = format!("schedule:{schedule}:");
    list(client, callback, pb::TaskState::Unspecified)
        .await
        .iter()
        .filter_map(|t| t.idempotency_key.strip_prefix(&prefix).and_then(|s| s.parse().ok()))
        .collect()
}

/// A 1-second schedule with `--catchup all` while the leader is SIGKILLed
/// over and over, and every fourth time also cut off (SIGSTOPped for 4 s:
/// the others elect a new leader, then the old one comes back believing it
/// still leads, its ticker state stale): every slot from the first to the
/// last fired has exactly one task. `DROVER_TEST_SCALE=4` gives 20 kills
/// and 5 cut-offs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_slot_fires_exactly_once_across_leader_kills() {
    let mut c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    register(&client, callback("tick", 5_000)).await;
    let stop = worker(&c, "tick", 64, Duration::ZERO);
    run_cli(&ep, &every("ticker", "tick", "1s", "allow", "all"));
    let kills = 5 * scale();
    let mut isolations = 0;
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        if k % 4 == 0 {
            let leader = c.leader().await;
            c.pause(leader);
            wait_until(Duration::from_secs(20), "a new leader while the old one is cut off", || async {
                for id in (1..=3).filter(|id| *id != leader) {
                    if c.node_status(id).await.is_some_and(|s| s.role == "leader") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.resume(leader);
            isolations += 1;
        }
        let leader = c.leader().await;
        c.kill(leader);
        c.wait_for_leader(Duration::from_secs(20)).await;
        c.restart(leader);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info = client.pause_schedule("ticker", "end of test").await.unwrap();
    stop.cancel();
    let last = info.last_slot.expect("a slot fired").at_unix_ms;
    let slots = slots_of(&client, "tick", "ticker").await;
    let distinct: BTreeSet<u64> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice");
    let first = *distinct.first().expect("some slots");
    let expected: BTreeSet<u64> = (0..=(last - first) / 1_000).map(|k| first + k * 1_000).collect();
    let missing: Vec<u64> = expected.difference(&distinct).copied().collect();
    eprintln!(
        "periodic: {kills} leader kills, {isolations} leaders cut off; {} slots expected from the first to the last fired, {} with exactly one task, {} missing, skipped {}",
        expected.len(),
        distinct.len(),
        missing.len(),
        info.skipped
    );
    assert!(missing.is_empty(), "slots without a task: {missing:?}");
    assert_eq!(distinct, expected);
    assert_eq!(info.skipped, 0, "catchup all skips nothing");
    assert!(expected.len() as u64 >= kills as u64 * 2, "the schedule kept firing: {} slots", expected.len());
    let digests = converged_digests(&c).await;
    assert_eq!(digests.values().collect::<BTreeSet<_>>().len(), 1, "{digests:?}");
}

/// Runs of a 1-second schedule against a worker that takes 2.5 s: `skip`
/// and `buffer-one` never run two at once, `allow` does, `cancel-other`
/// cancels the previous run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlap_policies_against_a_slow_worker() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    let policies = ["skip", "buffer-one", "allow", "cancel-other"];
    let mut stops = Vec::new();
    for p in policies {
        let cb = format!("slow-{p}");
        register(&client, callback(&cb, 10_000)).await;
        stops.push(worker(&c, &cb, 8, Duration::from_millis(2_500)));
        run_cli(&ep, &every(p, &cb, "1s", p, "latest"));
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    let mut infos = HashMap::new();
    for p in policies {
        infos.insert(p, client.pause_schedule(p, "").await.unwrap());
    }
    // Let running tasks end, then read their histories.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for s in stops {
        s.cancel();
    }
    let mut concurrency = HashMap::new();
    for p in policies {
        let tasks = list(&client, &format!("slow-{p}"), pb::TaskState::Unspecified).await;
        // Running intervals (replicated time) of each task.
        let mut edges: Vec<(u64, i32)> = Vec::new();
        for t in &tasks {
            let mut start = None;
            for h in &t.history {
                if h.state == pb::TaskState::Running as i32 {
                    start = Some(h.at_unix_ms);
                } else if let Some(s) = start.take() {
                    edges.push((s, 1));
                    edges.push((h.at_unix_ms, -1));
                }
            }
        }
        edges.sort();
        let (mut now, mut most) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            most = most.max(now);
        }
        concurrency.insert(
            p,
            (most, tasks.len(), tasks.iter().filter(|t| t.state == pb::TaskState::Cancelled as i32).count()),
        );
    }
    eprintln!("overlap: {concurrency:?}");
    let (skip_most, skip_tasks, _) = concurrency["skip"];
    assert_eq!(skip_most, 1, "skip ran two at once");
    assert!(infos["skip"].skipped >= 3, "{:?}", infos["skip"]);
    assert!(skip_tasks <= 5, "skip made {skip_tasks} tasks in 9 s of 2.5-s runs");
    let (buffer_most, buffer_tasks, _) = concurrency["buffer-one"];
    assert_eq!(buffer_most, 1, "buffer-one ran two at once");
    assert!(buffer_tasks >= skip_tasks, "buffer-one runs the buffered slot");
    let (allow_most, allow_tasks, _) = concurrency["allow"];
    assert!(allow_most >= 2 && allow_tasks >= 8, "allow: {allow_most} at once, {allow_tasks} tasks");
    let (_, _, cancelled) = concurrency["cancel-other"];
    assert!(cancelled >= 3, "cancel-other cancelled {cancelled}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schedule_commands_teach_and_refuse_bad_input() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    register(&client, callback("report", 5_000)).await;
    for (args, expect) in [
        (vec!["schedule", "create", "r", "--callback", "report", "--cron", "61 * * * *"], "cron"),
        (
            vec!["schedule", "create", "r", "--callback", "report", "--cron", "0 2 * * *", "--tz", "Mars/Base"],
            "time zone",
        ),
        (vec!["schedule", "create", "r", "--callback", "report", "--every", "10ms"], "at least 1s"),
        (vec!["schedule", "create", "r", "--callback", "report", "--every", "1m", "--overlap", "maybe"], "overlap"),
        (vec!["schedule", "create", "r", "--callback", "nope", "--every", "1m"], "not registered"),
        (vec!["schedule", "get", "missing"], "does not exist"),
    ] {
        let (ok, _, err) = cli(&ep, &args);
        assert!(!ok && err.contains(expect), "{args:?}: {err}");
    }
    let made = run_cli(
        &ep,
        &[
            "schedule",
            "create",
            "nightly",
            "--callback",
            "report",
            "--cron",
            "30 1 * * *",
            "--tz",
            "America/New_York",
            "--json",
        ]
        .map(String::from),
    );
    assert_eq!(made["next"].as_array().map(Vec::len), Some(5));
    let (ok, _, err) = cli(&ep, &["schedule", "create", "nightly", "--callback", "report", "--every", "1h"]);
    assert!(!ok && err.contains("already exists"), "{err}");
    // A manual trigger runs now; get shows it among the runs.
    let (ok, out, err) = cli(&ep, &["schedule", "trigger", "nightly", "--json"]);
    assert!(ok, "{err}");
    let task: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got = run_cli(&ep, &["schedule", "get", "nightly", "--json"].map(String::from));
    assert_eq!(got["runs"][0]["task_id"], task["task_id"]);
    let listed = run_cli(&ep, &["schedule", "list", "--json"].map(String::from));
    assert_eq!(listed["schedules"][0]["name"], "nightly");
    let (ok, _, err) = cli(&ep, &["schedule", "delete", "nightly"]);
    assert!(ok, "{err}");
}

/// A node whose wall clock is 5 s ahead or behind changes nothing: every
/// slot fires once, and no task starts before its slot by the real clock,
/// even when leadership is offered to the skewed node and the good leader is
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_skewed_clock_fires_nothing_early_or_twice() {
    for offset in ["+5s", "-5s"] {
        let skewed = 3u64;
        let env: HashMap<u64, Vec<(String, String)>> = [(skewed, crate::clock::faketime(offset))].into();
        let mut c = TestCluster::start_with_env(3, &[], env).await;
        let client = c.client();
        let ep = endpoints(&c);
        register(&client, callback("skew", 5_000)).await;
        // Record when, by the real clock, each task starts.
        let started: Arc<std::sync::Mutex<HashMap<u64, u64>>> = Arc::default();
        let rec = started.clone();
        let stop = CancellationToken::new();
        let w = Worker::builder(c.endpoints())
            .id("skew-worker")
            .handle("skew", 16, move |ctx: TaskContext| {
                let rec = rec.clone();
                async move {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    rec.lock().unwrap_or_else(|p| p.into_inner()).entry(ctx.task_id).or_insert(now);
                    TaskResult::Success(Vec::new())
                }
            })
            .run(stop.clone());
        tokio::spawn(w);
        run_cli(&ep, &every("skewed", "skew", "1s", "allow", "all"));
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Offer leadership to the skewed node (it may refuse), then kill
        // whoever leads.
        let _ = cli(&ep, &["cluster", "transfer-leader", "--to", &skewed.to_string()]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = c.leader().await;
        c.kill(leader);
        c.wait_for_leader(Duration::from_secs(20)).await;
        c.restart(leader);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let info = client.pause_schedule("skewed", "").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let tasks = list(&client, "skew", pb::TaskState::Unspecified).await;
        let by_slot: Vec<(u64, u64)> = tasks
            .iter()
            .filter_map(|t| Some((t.idempotency_key.strip_prefix("schedule:skewed:")?.parse().ok()?, t.id)))
            .collect();
        let slots: BTreeSet<u64> = by_slot.iter().map(|(s, _)| *s).collect();
        assert_eq!(slots.len(), by_slot.len(), "{offset}: a slot fired twice");
        let first = *slots.first().expect("some slots");
        let last = info.last_slot.expect("a slot").at_unix_ms;
        let expected: BTreeSet<u64> = (0..=(last - first) / 1_000).map(|k| first + k * 1_000).collect();
        assert_eq!(slots, expected, "{offset}: slots missing");
        let real = started.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (slot, id) in &by_slot {
            if let Some(at) = real.get(id) {
                // 250 ms for the clock reads of two processes.
                assert!(*at + 250 >= *slot, "{offset}: task {id} of slot {slot} started at {at}, early");
            }
        }
        eprintln!("skew {offset}: {} slots, each once; none started early", slots.len());
    }
}

/// `schedule backfill` runs each slot of a past range once: a dry run
/// lists them, the backfill creates one task per slot, and a second
/// backfill over an overlapping range creates only the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_runs_each_past_slot_once() {
    let c = TestCluster::start(3, &[]).await;
    let client = c.client();
    let ep = endpoints(&c);
    register(&client, callback("hourly", 5_000)).await;
    let mut create = every("hourly", "hourly", "1h", "skip", "none");
    create.extend(["--start".to_string(), "2026-01-01T00:00:00Z".to_string()]);
    run_cli(&ep, &create);
    let backfill = |to: &str, dry: bool| {
        let mut a: Vec<String> =
            ["schedule", "backfill", "hourly", "--from", "2026-01-01T00:00:00Z", "--to", to, "--json"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        if dry {
            a.push("--dry-run".into());
        }
        run_cli(&ep, &a)
    };
    let dry = backfill("2026-01-01T05:00:00Z", true);
    let slots = dry["slots"].as_array().expect("slots");
    assert_eq!(slots.len(), 6, "{dry}");
    assert!(slots.iter().all(|s| s["task_id"].is_null()), "{dry}");
    assert!(list(&client, "hourly", pb::TaskState::Unspecified).await.is_empty(), "a dry run schedules nothing");

    let first = backfill("2026-01-01T05:00:00Z", false);
    assert!(first["slots"].as_array().unwrap().iter().all(|s| s["created"] == true), "{first}");
    let again = backfill("2026-01-01T07:00:00Z", false);
    let created: Vec<bool> = again["slots"].as_array().unwrap().iter().map(|s| s["created"] == true).collect();
    assert_eq!(created, [false, false, false, false, false, false, true, true], "{again}");
    let start = 1_767_225_600_000u64; // 2026-01-01T00:00:00Z
                                      // (The ticker may fire today's slot on time: only January counts.)
    let slots: Vec<u64> =
        slots_of(&client, "hourly", "hourly").await.into_iter().filter(|s| *s < start + 86_400_000).collect();
    let distinct: BTreeSet<u64> = slots.iter().copied().collect();
    assert_eq!(distinct.len(), slots.len(), "a slot has two tasks");
    assert_eq!(distinct, (0..8).map(|h| start + h * 3_600_000).collect::<BTreeSet<u64>>());

    let (ok, _, err) =
        cli(&ep, &["schedule", "backfill", "nope", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-02T00:00:00Z"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, _, err) =
        cli(&ep, &["schedule", "backfill", "hourly", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z"]);
    assert!(!ok && err.contains("more than 1000 slots"), "{err}");
}
