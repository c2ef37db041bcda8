//! `drover chaos run`: the chaos suite against a real multi-host cluster in
//! Docker (`cluster/`). Clients schedule continuously through every node
//! with idempotency keys and retries; in-process SDK workers run every task
//! and record each run with its fencing token; seeded random faults (kill,
//! pause, partition, isolate the leader) hit the nodes. After healing it
//! checks every guarantee and fails loudly on any violation, keeping the
//! history for inspection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{parse_duration, status_message, CliError};
use crate::client::Client;
use crate::pb;
use crate::worker::builtin::Builtin;
use crate::worker::{TaskContext, Worker};

#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Run the suite: bring up a fresh Docker cluster, inject faults, check.
    Run(ChaosArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Cluster size: 3 or 5.
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// How long to inject faults.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Seed of the fault schedule (printed; pass it again to replay).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fault kinds to use.
    #[arg(long, default_value = "kill,pause,partition,isolate-leader", value_delimiter = ',')]
    pub faults: Vec<String>,
    /// The cluster/ directory with up.sh, down.sh and faults.sh.
    #[arg(long, default_value = "cluster")]
    pub cluster_dir: PathBuf,
    /// Where to write the history, the run records and the summary.
    #[arg(long, default_value = "chaos-out")]
    pub out: PathBuf,
    /// Scheduling clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// In-process SDK workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Leave the cluster up afterwards.
    #[arg(long)]
    pub keep: bool,
}

const KINDS: [&str; 4] = ["kill", "pause", "partition", "isolate-leader"];
const CALLBACK: &str = "chaos";

/// Append-only history of the run, one JSON object per line.
struct History(Mutex<std::fs::File>);

impl History {
    fn log(&self, v: serde_json::Value) {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut v = v;
        v["at_ms"] = json!(ms);
        if let Ok(mut f) = self.0.lock() {
            let _ = writeln!(f, "{v}");
        }
    }
}

fn script(dir: &Path, name: &str, args: &[&str]) -> Result<String, CliError> {
    let out = Command::new("bash")
        .arg(dir.join(name))
        .args(args)
        .output()
        .map_err(|e| CliError(format!("running {name}: {e}")))?;
    if !out.status.success() {
        return Err(CliError(format!("{name} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One client call, for availability accounting.
#[derive(Clone, Copy)]
struct Call {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// A fault, as applied.
#[derive(Clone)]
struct Fault {
    kind: String,
    start: Instant,
    end: Instant,
}

pub async fn run(cmd: &ChaosCommand) -> Result<(), CliError> {
    let ChaosCommand::Run(args) = cmd;
    if ![3, 5].contains(&args.nodes) {
        return Err(CliError("--nodes must be 3 or 5".into()));
    }
    if let Some(bad) = args.faults.iter().find(|f| !KINDS.contains(&f.as_str())) {
        return Err(CliError(format!("unknown fault {bad:?}; use {}", KINDS.join(","))));
    }
    let docker = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    if !docker.as_ref().is_ok_and(|o| o.status.success()) {
        return Err(CliError(
            "the chaos suite needs a running Docker engine (`docker info` failed); it does not pass without one".into(),
        ));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    println!(
        "chaos: seed {seed} (replay with --seed {seed}), {} nodes, {:?}, faults {:?}",
        args.nodes, args.duration, args.faults
    );
    std::fs::create_dir_all(&args.out).map_err(|e| CliError(format!("{}: {e}", args.out.display())))?;
    let records = args.out.join("records.log");
    let _ = std::fs::remove_file(&records);
    let history = Arc::new(History(Mutex::new(
        std::fs::File::create(args.out.join("history.jsonl")).map_err(|e| CliError(e.to_string()))?,
    )));
    history
        .log(json!({"event": "start", "seed": seed, "nodes": args.nodes, "duration_s": args.duration.as_secs_f64()}));

    let n = args.nodes.to_string();
    let _ = script(&args.cluster_dir, "down.sh", &[&n]);
    script(&args.cluster_dir, "up.sh", &[&n])?;
    let endpoints: Vec<String> = (1..=args.nodes).map(|i| format!("172.28.0.1{i}:7000")).collect();
    let mut client = Client::new(endpoints.clone());
    client.deadline = Duration::from_secs(60);
    let client = Arc::new(client);
    register(&client).await?;

    let result = run_with_cluster(args, seed, &client, &records, &history).await;
    history.log(json!({"event": "end", "ok": result.is_ok()}));
    if !args.keep {
        let _ = script(&args.cluster_dir, "down.sh", &[&n]);
    }
    println!("history: {}", args.out.join("history.jsonl").display());
    result
}

async fn register(client: &Client) -> Result<(), CliError> {
    let settings = pb::CallbackSettings {
        name: CALLBACK.into(),
        max_attempts: 1000,
        lease_ms: 3000,
        timeout_ms: 60_000,
        concurrency: 0,
        backoff_initial_ms: 100,
        backoff_max_ms: 1000,
    };
    let req = pb::RegisterCallbackRequest { settings: Some(settings) };
    client
        .call(0, |i| {
            let req = req.clone();
            async move { Ok(client.scheduler(i)?.register_callback(req).await?.into_inner()) }
        })
        .await
        .map_err(|s| CliError(format!("registering the callback: {}", status_message(&s))))?;
    Ok(())
}

async fn run_with_cluster(
    args: &ChaosArgs,
    seed: u64,
    client: &Arc<Client>,
    records: &Path,
    history: &Arc<History>,
) -> Result<(), CliError> {
    let stop_workers = CancellationToken::new();
    let builtin = Builtin::Record(records.to_path_buf());
    let workers: Vec<_> = (0..args.workers)
        .map(|i| {
            let b = builtin.clone();
            let w = Worker::builder(client.endpoints().to_vec())
                .id(format!("chaos-worker-{i}"))
                .shutdown_grace(Duration::from_secs(5))
                .handle(CALLBACK, 16, move |ctx: TaskContext| {
                    let b = b.clone();
                    async move { b.run(ctx).await }
                });
            tokio::spawn(w.run(stop_workers.clone()))
        })
        .collect();

    // Clients.
    let stop_clients = CancellationToken::new();
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let mut client_tasks = Vec::new();
    for c in 0..args.clients {
        let (client, acked, calls, stop, history) =
            (client.clone(), acked.clone(), calls.clone(), stop_clients.clone(), history.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ (c as u64 + 1));
        client_tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let key = format!("c{c}-{i}");
                let ms: u32 = rng.gen_range(0..300);
                let spec = pb::TaskSpec {
                    callback: CALLBACK.into(),
                    payload: ms.to_string().into_bytes(),
                    idempotency_key: key.clone(),
                    ..Default::default()
                };
                let start = Instant::now();
                let r = client.schedule(c + i as usize, spec).await;
                let call = Call { start, end: Instant::now(), ok: r.is_ok() };
                calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
                match r {
                    Ok(reply) => {
                        acked.lock().unwrap_or_else(|p| p.into_inner()).insert(key, reply.task_id);
                        i += 1;
                    }
                    Err(s) => {
                        history.log(json!({"event": "client_error", "client": c, "key": key, "code": format!("{:?}", s.code()), "message": s.message()}));
                        // Same key again: a real client retries until it knows.
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // Faults.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let began = Instant::now();
    while began.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
        let kind = args.faults[rng.gen_range(0..args.faults.len())].clone();
        let hold = Duration::from_millis(rng.gen_range(2000..6000));
        let dir = &args.cluster_dir;
        let node: u64 = match kind.as_str() {
            "isolate-leader" => match script(dir, "faults.sh", &["isolate-leader"]) {
                Ok(id) => id.parse().unwrap_or(0),
                Err(e) => {
                    history.log(json!({"event": "fault_skipped", "kind": kind, "why": e.0}));
                    continue;
                }
            },
            _ => {
                let node = rng.gen_range(1..=args.nodes as u64);
                let verb = if kind == "partition" { "partition" } else { kind.as_str() };
                script(dir, "faults.sh", &[verb, &node.to_string()])?;
                node
            }
        };
        let start = Instant::now();
        history.log(json!({"event": "fault", "kind": kind, "node": node, "hold_ms": hold.as_millis() as u64}));
        println!("  fault: {kind} node {node} for {:.1}s", hold.as_secs_f64());
        tokio::time::sleep(hold).await;
        let undo = match kind.as_str() {
            "kill" => vec!["start".to_string(), node.to_string()],
            "pause" => vec!["unpause".to_string(), node.to_string()],
            _ => vec!["heal".to_string(), node.to_string()],
        };
        let undo_args: Vec<&str> = undo.iter().map(String::as_str).collect();
        script(dir, "faults.sh", &undo_args)?;
        history.log(json!({"event": "healed", "kind": kind, "node": node}));
        faults.push(Fault { kind, start, end: Instant::now() });
    }
    script(&args.cluster_dir, "faults.sh", &["heal-all"])?;
    history.log(json!({"event": "healed_all"}));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_clients.cancel();
    for t in client_tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "faults done: {} injected; {} tasks acknowledged; waiting for execution to finish",
        faults.len(),
        acked.len()
    );

    // Let every acknowledged task finish.
    let pending_states =
        [pb::TaskState::Ready, pb::TaskState::Scheduled, pb::TaskState::Running, pb::TaskState::RetryWait];
    let drain_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut left = 0;
        for s in pending_states {
            left += list_all(client, Some(s)).await?.len();
        }
        if left == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop_workers.cancel();
    for w in workers {
        let _ = w.await;
    }

    let calls = std::mem::take(&mut *calls.lock().unwrap_or_else(|p| p.into_inner()));
    check(args, client, &acked, records, &faults, &calls, history).await
}

async fn list_all(client: &Client, state: Option<pb::TaskState>) -> Result<Vec<pb::Task>, CliError> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let req = pb::ListTasksRequest {
            callback: CALLBACK.into(),
            state: state.map_or(0, |s| s as i32),
            limit: 10_000,
            after_id: after,
            allow_stale: false,
        };
        let page = client
            .call(0, |i| {
                let req = req.clone();
                async move { Ok(client.scheduler(i)?.list_tasks(req).await?.into_inner()) }
            })
            .await
            .map_err(|s| CliError(format!("listing tasks: {}", status_message(&s))))?;
        out.extend(page.tasks);
        if page.next_after == 0 {
            return Ok(out);
        }
        after = page.next_after;
    }
}

#[allow(clippy::too_many_arguments)]
async fn check(
    args: &ChaosArgs,
    client: &Client,
    acked: &HashMap<String, u64>,
    records: &Path,
    faults: &[Fault],
    calls: &[Call],
    history: &History,
) -> Result<(), CliError> {
    let mut violations: Vec<String> = Vec::new();
    let all = list_all(client, None).await?;
    let by_id: HashMap<u64, &pb::Task> = all.iter().map(|t| (t.id, t)).collect();

    // 1. Nothing acknowledged is lost.
    let lost: Vec<u64> = acked.values().filter(|id| !by_id.contains_key(id)).copied().collect();
    if !lost.is_empty() {
        violations.push(format!(
            "LOST: {} acknowledged task(s) missing, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ));
    }
    // Idempotency: one task per key.
    let mut keys: HashMap<&str, u64> = HashMap::new();
    for t in &all {
        if let Some(prev) = keys.insert(t.idempotency_key.as_str(), t.id) {
            violations.push(format!("DUPLICATE: key {:?} has tasks {prev} and {}", t.idempotency_key, t.id));
        }
    }
    // 2. At-least-once: every task ran to a terminal state (success here).
    let unfinished: Vec<u64> =
        all.iter().filter(|t| t.state != pb::TaskState::Succeeded as i32).map(|t| t.id).collect();
    if !unfinished.is_empty() {
        violations.push(format!(
            "NOT FINISHED: {} task(s) not succeeded, e.g. {:?}",
            unfinished.len(),
            &unfinished[..unfinished.len().min(10)]
        ));
    }
    // 3. Never concurrently, and no stale completion accepted.
    let runs = crate::invariants::runs(records).map_err(CliError)?;
    for v in crate::invariants::overlaps(&runs) {
        violations.push(format!("OVERLAP: {v}"));
    }
    let mut stale_accepted = 0;
    for t in &all {
        if t.state == pb::TaskState::Succeeded as i32 {
            let final_run = runs.get(&t.id).and_then(|r| r.iter().find(|r| r.token == t.fencing_token));
            if !final_run.is_some_and(|r| r.ended) {
                stale_accepted += 1;
                violations.push(format!(
                    "STALE: task {} succeeded with token {} but that run did not finish",
                    t.id, t.fencing_token
                ));
            }
        }
    }
    let reruns = runs.values().filter(|r| r.len() > 1).count();
    // 4. Replicas converge.
    let digests = converge(client, args.nodes).await;
    match &digests {
        Ok(d) if d.values().collect::<HashSet<_>>().len() == 1 => {}
        Ok(d) => violations.push(format!("DIVERGED: replica digests differ: {d:?}")),
        Err(e) => violations.push(format!("DIVERGED: {e}")),
    }
    // 5. Unavailability seen by clients, per fault kind.
    let mut windows: BTreeMap<String, f64> = BTreeMap::new();
    for call in calls.iter().filter(|c| !c.ok || c.end.duration_since(c.start) > Duration::from_millis(500)) {
        let secs = call.end.duration_since(call.start).as_secs_f64();
        let kind = faults
            .iter()
            .find(|f| call.start <= f.end + Duration::from_secs(2) && call.end >= f.start)
            .map_or("none".to_string(), |f| f.kind.clone());
        let w = windows.entry(kind).or_insert(0.0);
        *w = w.max(secs);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in faults {
        *counts.entry(f.kind.as_str()).or_default() += 1;
    }
    let summary = json!({
        "faults": counts,
        "longest_unavailability_s": windows,
        "acknowledged": acked.len(),
        "tasks": all.len(),
        "lost": lost.len(),
        "unfinished": unfinished.len(),
        "overlaps": crate::invariants::overlaps(&runs).len(),
        "stale_accepted": stale_accepted,
        "reruns": reruns,
        "digests": digests.as_ref().ok(),
        "violations": violations,
    });
    history.log(json!({"event": "summary", "summary": summary.clone()}));
    let _ = std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap_or_default());
    println!("faults injected: {counts:?}");
    println!("longest unavailability seen by clients (s): {windows:?}");
    println!(
        "acknowledged {} | tasks {} | lost {} | unfinished {} | overlapping runs {} | stale completions accepted {stale_accepted} | tasks re-run {reruns}",
        acked.len(),
        all.len(),
        lost.len(),
        unfinished.len(),
        crate::invariants::overlaps(&runs).len()
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
