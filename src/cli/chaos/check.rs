//! The chaos suite's checks, after the faults are healed and execution has
//! drained. Each names the guarantee it checks:
//! - LOST: every acknowledged task exists;
//! - DUPLICATE: one task per idempotency key;
//! - NOT FINISHED: every task ran to success (at-least-once), with the
//!   state, run-at and history of those that never started;
//! - OVERLAP / STALE: never two runs of a task at once, and a success
//!   recorded only for a run that finished;
//! - EARLY: no delayed task started before its run-at by the real clock;
//! - STARVED: no task waited longer than the bound from ready to start;
//! - SLOT / DAG: a periodic schedule and task graphs (see
//!   [`super::workflows`]);
//! - DIVERGED: every replica has the same state digest at one applied index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{status_message, ChaosArgs, CliError, History, Load, CALLBACK, DELAYED_CALLBACK, EARLY_TOLERANCE_MS};
use drover::client::Client;
use drover::pb;

pub(super) async fn list_all(client: &Client, callback: &str) -> Result<Vec<pb::Task>, CliError> {
    client
        .list_all_tasks(callback, pb::TaskState::Unspecified)
        .await
        .map_err(|s| CliError(format!("listing tasks: {}", status_message(&s))))
}

/// When a task first started (its first `running` transition), replicated
/// time.
fn first_start_ms(t: &pb::Task) -> Option<u64> {
    t.history.iter().find(|h| h.state == pb::TaskState::Running as i32).map(|h| h.at_unix_ms)
}

/// When a task first became ready: its run-at if it never failed, else its
/// creation (the chaos callbacks' tasks are immediate or delayed once).
fn first_ready_ms(t: &pb::Task) -> u64 {
    if t.attempts <= 1 {
        t.run_at_unix_ms.max(t.created_at_unix_ms)
    } else {
        t.created_at_unix_ms
    }
}

fn describe(t: &pb::Task) -> String {
    let state = pb::TaskState::try_from(t.state).map(|s| s.as_str_name()).unwrap_or("?");
    let history: Vec<String> = t
        .history
        .iter()
        .map(|h| {
            let s = pb::TaskState::try_from(h.state).map(|s| s.as_str_name()).unwrap_or("?");
            format!("{}@{}#{}", s.trim_start_matches("TASK_STATE_").to_lowercase(), h.at_unix_ms, h.attempt)
        })
        .collect();
    format!(
        "task {} {} priority {} run-at {} attempts {} token {} worker {:?} history [{}]",
        t.id,
        state.trim_start_matches("TASK_STATE_").to_lowercase(),
        t.priority,
        t.run_at_unix_ms,
        t.attempts,
        t.fencing_token,
        t.worker,
        history.join(", ")
    )
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub(super) async fn check(
    args: &ChaosArgs,
    client: &Client,
    load: &Load<'_>,
    records: &Path,
    history: &History,
) -> Result<(), CliError> {
    let mut violations: Vec<String> = Vec::new();
    let all = list_all(client, CALLBACK).await?;
    let delayed = list_all(client, DELAYED_CALLBACK).await?;
    let lost = check_lost(load, &all, &delayed, &mut violations);
    let unfinished = check_finished(&all, &delayed, history, &mut violations);
    let runs = check_runs(records, &all, &mut violations)?;
    let (early, lateness) = check_delayed(load, &delayed, &mut violations);
    let waits = check_starvation(args, &all, &mut violations);
    let disk_faults = load.faults.iter().filter(|f| f.kind == "disk").count();
    let workflows = super::workflows::check(client, load.graphs, load.seen, disk_faults, &mut violations).await?;
    let digests = converge(client, args.nodes).await;
    match &digests {
        Ok(d) if d.values().collect::<HashSet<_>>().len() == 1 => {}
        Ok(d) => violations.push(format!("DIVERGED: replica digests differ: {d:?}")),
        Err(e) => {
            violations.push(format!("DIVERGED: {e}"));
            // Say why a node did not answer: its container's state and the
            // end of its log, kept in the run's directory.
            for node in 1..=u64::from(args.nodes) {
                let state = super::container_state(node);
                let tail = super::container_log_tail(node, 80);
                println!("node {node}: container {state}; its log ends:\n{tail}");
                let _ = std::fs::write(args.out.join(format!("node-{node}.log")), &tail);
            }
        }
    }
    let windows = unavailability(load);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in load.faults {
        *counts.entry(f.kind.as_str()).or_default() += 1;
    }
    let wait_ms: Vec<u64> = waits.iter().map(|(w, _)| *w).collect();
    let longest_wait = waits.last().map(|w| w.0);
    let bound_ms = args.max_start_wait.as_millis() as u64;
    let summary = json!({
        "faults": counts,
        "longest_unavailability_s": windows,
        "acknowledged": load.acked.len() + load.delayed.len(),
        "tasks": all.len() + delayed.len(),
        "lost": lost,
        "unfinished": unfinished,
        "overlaps": runs.overlaps,
        "stale_accepted": runs.stale_accepted,
        "reruns": runs.reruns,
        "drain_s": load.drain.as_secs_f64(),
        "ready_to_start_ms": {"p50": percentile(&wait_ms, 0.5), "p99": percentile(&wait_ms, 0.99), "max": longest_wait},
        "delayed": {"tasks": delayed.len(), "early": early, "late_ms_p50": percentile(&lateness, 0.5),
                    "late_ms_p99": percentile(&lateness, 0.99), "late_ms_max": lateness.last()},
        "digests": digests.as_ref().ok(),
        "workflows": workflows,
        "violations": violations,
    });
    history.log(json!({"event": "summary", "summary": summary.clone()}));
    let _ = std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap_or_default());
    println!("faults injected: {counts:?}");
    println!("longest unavailability seen by clients (s): {windows:?}");
    println!(
        "acknowledged {} | tasks {} | lost {lost} | unfinished {unfinished} | overlapping runs {} | stale completions accepted {} | tasks re-run {}",
        load.acked.len() + load.delayed.len(),
        all.len() + delayed.len(),
        runs.overlaps,
        runs.stale_accepted,
        runs.reruns,
    );
    println!(
        "ready to start: p50 {} ms, p99 {} ms, max {} ms (bound {bound_ms} ms) | delayed tasks: {early} early, late p50 {} ms, p99 {} ms, max {} ms",
        percentile(&wait_ms, 0.5),
        percentile(&wait_ms, 0.99),
        longest_wait.unwrap_or(0),
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    match &digests {
        Ok(d) => println!("replica digests: {d:?}"),
        Err(e) => println!("replica digests: {e}"),
    }
    if violations.is_empty() {
        println!("chaos: PASS");
        Ok(())
    } else {
        for v in &violations {
            eprintln!("VIOLATION {v}");
        }
        Err(CliError(format!("chaos: FAIL, {} violation(s); history kept in {}", violations.len(), args.out.display())))
    }
}

/// Nothing acknowledged is lost, and one task per idempotency key. Returns
/// how many acknowledged tasks are missing.
fn check_lost(load: &Load<'_>, all: &[pb::Task], delayed: &[pb::Task], violations: &mut Vec<String>) -> usize {
    let ids: HashSet<u64> = all.iter().chain(delayed).map(|t| t.id).collect();
    let lost: Vec<u64> =
        load.acked.values().chain(load.delayed.iter()).filter(|id| !ids.contains(id)).copied().collect();
    if !lost.is_empty() {
        violations.push(format!(
            "LOST: {} acknowledged task(s) missing, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    let mut keys: HashMap<&str, u64> = HashMap::new();
    for t in all.iter().chain(delayed) {
        if let Some(prev) = keys.insert(t.idempotency_key.as_str(), t.id) {
            violations.push(format!("DUPLICATE: key {:?} has tasks {prev} and {}", t.idempotency_key, t.id));
        }
    }
    lost.len()
}

/// At-least-once: every task ran to success. Says what became of the ones
/// that did not, and in detail of those that never started. Returns how
/// many did not succeed.
fn check_finished(all: &[pb::Task], delayed: &[pb::Task], history: &History, violations: &mut Vec<String>) -> usize {
    let unfinished: Vec<&pb::Task> =
        all.iter().chain(delayed).filter(|t| t.state != pb::TaskState::Succeeded as i32).collect();
    if unfinished.is_empty() {
        return 0;
    }
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for t in &unfinished {
        let s = pb::TaskState::try_from(t.state).map(|s| s.as_str_name().to_string()).unwrap_or_default();
        *states.entry(s).or_default() += 1;
    }
    violations.push(format!(
        "NOT FINISHED: {} task(s) not succeeded ({states:?}), e.g. {:?}",
        unfinished.len(),
        unfinished.iter().take(10).map(|t| t.id).collect::<Vec<_>>()
    ));
    for t in unfinished.iter().filter(|t| first_start_ms(t).is_none()).take(10) {
        println!("never started: {}", describe(t));
        history.log(json!({"event": "never_started", "task": describe(t)}));
    }
    unfinished.len()
}

struct RunStats {
    overlaps: usize,
    stale_accepted: usize,
    reruns: usize,
}

/// Never concurrently (no two recorded runs of a task overlap), and no
/// stale completion accepted (a task succeeded with the token of a run
/// that finished).
fn check_runs(records: &Path, all: &[pb::Task], violations: &mut Vec<String>) -> Result<RunStats, CliError> {
    let runs = crate::testkit::invariants::runs(records).map_err(CliError)?;
    let overlaps = crate::testkit::invariants::overlaps(&runs);
    for v in &overlaps {
        violations.push(format!("OVERLAP: {v}"));
    }
    let mut stale_accepted = 0;
    for t in all.iter().filter(|t| t.state == pb::TaskState::Succeeded as i32) {
        let final_run = runs.get(&t.id).and_then(|r| r.iter().find(|r| r.token == t.fencing_token));
        if !final_run.is_some_and(|r| r.ended) {
            stale_accepted += 1;
            violations.push(format!(
                "STALE: task {} succeeded with token {} but that run did not finish",
                t.id, t.fencing_token
            ));
        }
    }
    let reruns = runs.values().filter(|r| r.len() > 1).count();
    Ok(RunStats { overlaps: overlaps.len(), stale_accepted, reruns })
}

/// No delayed task started early by the real clock. Returns how many did,
/// and how late the others were (sorted, ms).
fn check_delayed(load: &Load<'_>, delayed: &[pb::Task], violations: &mut Vec<String>) -> (usize, Vec<u64>) {
    let mut lateness: Vec<u64> = Vec::new();
    let mut early = 0usize;
    for t in delayed {
        let Some(start) = load.starts.get(&t.id) else { continue };
        if start.saturating_add(EARLY_TOLERANCE_MS) < t.run_at_unix_ms {
            early += 1;
            violations.push(format!(
                "EARLY: delayed task {} started {} ms before its run-at ({})",
                t.id,
                t.run_at_unix_ms - start,
                describe(t)
            ));
        } else {
            lateness.push(start.saturating_sub(t.run_at_unix_ms));
        }
    }
    lateness.sort_unstable();
    (early, lateness)
}

/// Starvation: the wait from ready to first start stays under
/// `--max-start-wait`. Returns every (wait ms, task id), sorted.
fn check_starvation(args: &ChaosArgs, all: &[pb::Task], violations: &mut Vec<String>) -> Vec<(u64, u64)> {
    let mut waits: Vec<(u64, u64)> =
        all.iter().filter_map(|t| Some((first_start_ms(t)?.saturating_sub(first_ready_ms(t)), t.id))).collect();
    waits.sort_unstable();
    let bound_ms = args.max_start_wait.as_millis() as u64;
    if let Some((wait, id)) = waits.last().copied().filter(|(w, _)| *w > bound_ms) {
        let t = all.iter().find(|t| t.id == id).map(describe).unwrap_or_default();
        violations.push(format!("STARVED: task {id} waited {wait} ms from ready to start (bound {bound_ms} ms): {t}"));
    }
    waits
}

/// The longest failed or slow (over 500 ms) client call, per fault kind
/// overlapping it, in seconds.
fn unavailability(load: &Load<'_>) -> BTreeMap<String, f64> {
    let mut windows: BTreeMap<String, f64> = BTreeMap::new();
    for call in load.calls.iter().filter(|c| !c.ok || c.end.duration_since(c.start) > Duration::from_millis(500)) {
        let secs = call.end.duration_since(call.start).as_secs_f64();
        let kind = load
            .faults
            .iter()
            .find(|f| call.start <= f.end + Duration::from_secs(2) && call.end >= f.start)
            .map_or("none".to_string(), |f| f.kind.clone());
        let w = windows.entry(kind).or_insert(0.0);
        *w = w.max(secs);
    }
    windows
}

/// Wait until every node reports the same applied index, then compare
/// their state digests.
async fn converge(client: &Client, nodes: u32) -> Result<BTreeMap<u64, String>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got = BTreeMap::new();
        for (i, _) in client.endpoints().iter().enumerate().take(nodes as usize) {
            let mut c = match client.cluster(i) {
                Ok(c) => c,
                Err(e) => return Err(e.message().to_string()),
            };
            if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(5), c.digest(pb::DigestRequest {})).await {
                let d = d.into_inner();
                got.insert(i as u64 + 1, (d.applied_index, d.digest));
            }
        }
        let indexes: HashSet<u64> = got.values().map(|(a, _)| *a).collect();
        if got.len() == nodes as usize && indexes.len() == 1 {
            return Ok(got.into_iter().map(|(k, (_, d))| (k, d)).collect());
        }
        if Instant::now() > deadline {
            return Err(format!("replicas did not reach one applied index within 60s: {got:?}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
