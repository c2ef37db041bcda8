//! `drover chaos run`: the chaos suite against a real multi-host cluster in
//! Docker (`cluster/`). Clients schedule continuously through every node
//! with idempotency keys and retries; in-process SDK workers run every task
//! and record each run with its fencing token; seeded random faults (kill,
//! pause, partition, isolate the leader, a wrong clock, a full disk, damaged
//! data and its recovery) hit the nodes. After healing it
//! checks every guarantee and fails loudly on any violation, keeping the
//! history for inspection.

use std::collections::HashMap;
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
use check::check;
use drover::client::Client;
use drover::pb;
use drover::worker::builtin::Builtin;
use drover::worker::{TaskContext, Worker};

mod auth;
mod check;
mod corrupt;
mod workflows;

#[derive(Subcommand, Debug)]
pub enum ChaosCommand {
    /// Run the suite: bring up a fresh Docker cluster, inject faults, check.
    Run(ChaosArgs),
    /// Flip bytes in a stopped node's WAL or table file (the `corrupt` fault; run by cluster/faults.sh).
    #[command(hide = true)]
    Corrupt(corrupt::CorruptArgs),
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
    /// Fault kinds to use: kill, pause, partition, isolate-leader, clock (a
    /// node's wall clock an hour off), disk (a node's data filesystem filled
    /// from outside, below --min-free-disk or full; cluster/chaos.sh then
    /// puts every node's data on a small tmpfs of its own), corrupt (bytes
    /// flipped in a stopped node's WAL or table file: it must refuse to
    /// start with exit 65, then `drover admin rejoin` brings it back under
    /// a new id, which must become a voter).
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
    /// Tasks each worker runs at once. Tasks run 0-300 ms, so two workers
    /// of 32 execute about 400 tasks/s: more than the clients schedule.
    #[arg(long, default_value_t = 32)]
    pub worker_concurrency: u32,
    /// Schedules per second across all clients (the main workload), kept
    /// below what the workers execute so that "not finished" means
    /// something.
    #[arg(long, default_value_t = 150)]
    pub rate: u32,
    /// The first faults to inject, in order (then random ones), so that a
    /// short run covers them for sure.
    #[arg(long, value_delimiter = ',')]
    pub first: Vec<String>,
    /// Longest a task may wait from ready to its first start (STARVED
    /// otherwise).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub max_start_wait: Duration,
    /// Leave the cluster up afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Turn auth on first: the harness runs with an admin token and the workers with a worker token; afterwards every node must still enforce it.
    #[arg(long)]
    pub auth: bool,
}

/// Fault kinds. `clock` restarts a node with its wall clock an hour off
/// (either way) for 10-20 s; it is not in the default set.
const KINDS: [&str; 7] = ["kill", "pause", "partition", "isolate-leader", "clock", "disk", "corrupt"];
const CALLBACK: &str = "chaos";
/// Tasks of this callback always fail, with one attempt allowed: they go
/// to the dead-letter queue, where a client keeps redriving and purging
/// them by callback and scheduling the purged keys again. The replica
/// digest check then covers the dead-letter paths of apply.
const DLQ_CALLBACK: &str = "chaos-dlq";
/// Delayed tasks (1-5 s), whose real start times are checked against their
/// run-at: none may start early, whatever a node's clock says.
const DELAYED_CALLBACK: &str = "chaos-delayed";
/// A start this much before run-at by the real clock counts as early (clock
/// sampling noise is a few ms).
const EARLY_TOLERANCE_MS: u64 = 5;

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
    script_env(dir, name, args, &[])
}

/// [`script`] with extra environment.
fn script_env(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String, CliError> {
    let out = Command::new("bash")
        .arg(dir.join(name))
        .args(args)
        .envs(env.iter().copied())
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

pub async fn run(cli: &super::Cli, cmd: &ChaosCommand) -> Result<(), CliError> {
    let args = match cmd {
        ChaosCommand::Run(args) => args,
        ChaosCommand::Corrupt(args) => return corrupt::run(args),
    };
    // TLS (DROVER_CA, DROVER_CERT, DROVER_KEY; chaos.sh with DROVER_CHAOS_TLS=1).
    let tls = cli.tls();
    if ![3, 5].contains(&args.nodes) {
        return Err(CliError("--nodes must be 3 or 5".into()));
    }
    if let Some(bad) = args.faults.iter().chain(&args.first).find(|f| !KINDS.contains(&f.as_str())) {
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
    if let Some(t) = &tls {
        client = client.with_tls(t.load().map_err(|e| CliError(e.to_string()))?);
    }
    client.deadline = Duration::from_secs(60);
    let anonymous = client.clone();
    let (client, tokens) = match args.auth {
        true => auth::enable(client).await.map(|(c, t)| (c, Some(t)))?,
        false => (client, None),
    };
    let client = Arc::new(client);
    register(&client).await?;

    let worker_token = tokens.as_ref().map(|t| t.worker.clone());
    let admin_token = tokens.as_ref().map(|t| t.admin.clone());
    let mut result =
        run_with_cluster(args, seed, &client, (tls, worker_token.clone()), admin_token, &records, &history).await;
    if let (Ok(()), Some(t)) = (&result, &tokens) {
        let worker = anonymous.clone().with_token(&t.worker).map_err(CliError)?;
        let violations = auth::check(&client, &anonymous, &worker, args.nodes as usize).await;
        history.log(json!({"event": "auth-check", "violations": violations}));
        if !violations.is_empty() {
            for v in &violations {
                println!("  {v}");
            }
            result = Err(CliError(format!("chaos: FAIL, auth: {} violation(s)", violations.len())));
        } else {
            println!("chaos: auth still enforced at every node (no token: UNAUTHENTICATED; worker purging: PERMISSION_DENIED)");
        }
    }
    history.log(json!({"event": "end", "ok": result.is_ok()}));
    if !args.keep {
        let _ = script(&args.cluster_dir, "down.sh", &[&n]);
    }
    println!("history: {}", args.out.join("history.jsonl").display());
    result
}

async fn register(client: &Client) -> Result<(), CliError> {
    let callbacks = [
        (CALLBACK, 1000),
        (DLQ_CALLBACK, 1),
        (DELAYED_CALLBACK, 1000),
        (workflows::DAG_CALLBACK, 1000),
        (workflows::TICK_CALLBACK, 1000),
    ];
    for (name, max_attempts) in callbacks {
        let settings = pb::CallbackSettings {
            name: name.into(),
            max_attempts,
            lease_ms: 3000,
            timeout_ms: 60_000,
            concurrency: 0,
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            ..Default::default()
        };
        client
            .register_callback(settings)
            .await
            .map_err(|s| CliError(format!("registering callback {name}: {}", status_message(&s))))?;
    }
    workflows::setup(client).await
}

/// Real time now, Unix ms (the chaos host's clock, which the containers
/// share: the reference the cluster must agree with).
fn real_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Schedule delayed tasks until `stop`; returns their ids.
async fn delayed_load(client: Arc<Client>, stop: CancellationToken, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xde1a7);
    let mut ids = Vec::new();
    let mut i = 0u64;
    while !stop.is_cancelled() {
        let spec = pb::TaskSpec {
            callback: DELAYED_CALLBACK.into(),
            idempotency_key: format!("t{i}"),
            when: Some(pb::task_spec::When::DelayMs(rng.gen_range(1000..5000))),
            ..Default::default()
        };
        // Same key until it is acknowledged.
        if let Ok(r) = client.schedule(i as usize, spec).await {
            ids.push(r.task_id);
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids
}

/// The dead-letter churn: schedule failing tasks over a few keys, and
/// redrive and purge them by callback, until `stop`.
async fn dead_letter_churn(client: Arc<Client>, stop: CancellationToken, history: Arc<History>) {
    let mut i = 0u64;
    while !stop.is_cancelled() {
        let spec = pb::TaskSpec {
            callback: DLQ_CALLBACK.into(),
            payload: Vec::new(),
            idempotency_key: format!("d{}", i % 30),
            ..Default::default()
        };
        let _ = client.schedule(i as usize, spec).await;
        if i % 10 == 5 || i % 15 == 0 {
            let redrive = i % 10 == 5;
            let req = pb::DeadLetterRequest {
                target: Some(pb::dead_letter_request::Target::Callback(DLQ_CALLBACK.into())),
                with_dependents: false,
            };
            // Not idempotent: retried only where it certainly applied nothing.
            let r = client.dead_letters(i as usize, req, !redrive).await;
            if let Err(s) = r {
                history.log(json!({"event": "dlq_error", "redrive": redrive, "code": format!("{:?}", s.code()), "message": s.message()}));
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run_with_cluster(
    args: &ChaosArgs,
    seed: u64,
    client: &Arc<Client>,
    creds: (Option<drover::tls::ClientTls>, Option<String>),
    admin_token: Option<String>,
    records: &Path,
    history: &Arc<History>,
) -> Result<(), CliError> {
    let stop_workers = CancellationToken::new();
    // First real start time of each delayed task.
    let starts: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let seen: Arc<workflows::Seen> = Arc::default();
    let workers = start_workers(args, client, creds, records, &starts, &seen, &stop_workers);

    let stop_clients = CancellationToken::new();
    let (acked, calls, mut client_tasks) = start_clients(args, seed, client, history, &stop_clients);
    client_tasks.push(tokio::spawn(dead_letter_churn(client.clone(), stop_clients.clone(), history.clone())));
    let delayed = tokio::spawn(delayed_load(client.clone(), stop_clients.clone(), seed));
    let graphs = tokio::spawn(workflows::dag_load(client.clone(), stop_clients.clone(), history.clone()));

    let faults = inject_faults(args, seed, client, admin_token.as_deref(), history).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_clients.cancel();
    for t in client_tasks {
        let _ = t.await;
    }
    let acked = lock(&acked).clone();
    println!(
        "faults done: {} injected; {} tasks acknowledged; waiting for execution to finish",
        faults.len(),
        acked.len()
    );
    workflows::pause(client).await?;
    let drain = drain(client, history).await?;
    let delayed = delayed.await.unwrap_or_default();
    let graphs = graphs.await.unwrap_or_default();
    stop_workers.cancel();
    for w in workers {
        let _ = w.await;
    }

    let calls = std::mem::take(&mut *lock(&calls));
    let starts = lock(&starts).clone();
    let load = Load {
        acked: &acked,
        delayed: &delayed,
        starts: &starts,
        faults: &faults,
        calls: &calls,
        drain,
        graphs: &graphs,
        seen: &seen,
    };
    check(args, client, &load, records, history).await
}

/// A node's container state and exit code ("exited 74", "running 0").
fn container_state(node: u64) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &format!("drover-node{node}")])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".into(),
    }
}

/// The last `lines` lines of node `node`'s container log (stdout and
/// stderr), for a report.
fn container_log_tail(node: u64, lines: usize) -> String {
    let out =
        Command::new("docker").args(["logs", "--tail", &lines.to_string(), &format!("drover-node{node}")]).output();
    match out {
        Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("(docker logs failed: {e})"),
    }
}

/// A lock whose holder panicked still holds valid data here (plain maps).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// In-process SDK workers: the main callback records every run (with its
/// fencing token), the dead-letter one always fails, the delayed one notes
/// its first real start.
fn start_workers(
    args: &ChaosArgs,
    client: &Client,
    (tls, token): (Option<drover::tls::ClientTls>, Option<String>),
    records: &Path,
    starts: &Arc<Mutex<HashMap<u64, u64>>>,
    seen: &Arc<workflows::Seen>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Result<drover::worker::WorkerStats, drover::worker::WorkerError>>> {
    let builtin = Builtin::Record(records.to_path_buf());
    (0..args.workers)
        .map(|i| {
            let b = builtin.clone();
            let mut w = Worker::builder(client.endpoints().to_vec());
            if let Some(t) = &tls {
                w = w.tls(t.clone());
            }
            if let Some(t) = &token {
                w = w.token(t.clone());
            }
            let w = w
                .id(format!("chaos-worker-{i}"))
                .shutdown_grace(Duration::from_secs(5))
                .handle(CALLBACK, args.worker_concurrency, move |ctx: TaskContext| {
                    let b = b.clone();
                    async move { b.run(ctx).await }
                })
                .handle(DLQ_CALLBACK, 4, |_ctx: TaskContext| async {
                    drover::worker::TaskResult::retry("fails on purpose (dead-letter churn)")
                })
                .handle(DELAYED_CALLBACK, 16, {
                    let starts = starts.clone();
                    move |ctx: TaskContext| {
                        let starts = starts.clone();
                        async move {
                            lock(&starts).entry(ctx.task_id).or_insert_with(real_ms);
                            drover::worker::TaskResult::Success(Vec::new())
                        }
                    }
                });
            let w = workflows::handlers(w, seen);
            tokio::spawn(w.run(stop.clone()))
        })
        .collect()
}

type Acked = Arc<Mutex<HashMap<String, u64>>>;
type Calls = Arc<Mutex<Vec<Call>>>;

/// Scheduling clients, paced to `--rate` in all, each key retried until
/// its outcome is known. Returns the acknowledged keys (with task ids) and
/// every call's timing.
fn start_clients(
    args: &ChaosArgs,
    seed: u64,
    client: &Arc<Client>,
    history: &Arc<History>,
    stop: &CancellationToken,
) -> (Acked, Calls, Vec<tokio::task::JoinHandle<()>>) {
    let acked: Acked = Arc::default();
    let calls: Calls = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (client, acked, calls, stop, history) =
            (client.clone(), acked.clone(), calls.clone(), stop.clone(), history.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ (c as u64 + 1));
        let every = Duration::from_secs_f64(args.clients as f64 / f64::from(args.rate.max(1)));
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut pace = tokio::time::interval(every);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.is_cancelled() {
                pace.tick().await;
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
                lock(&calls).push(Call { start, end: Instant::now(), ok: r.is_ok() });
                match r {
                    Ok(reply) => {
                        lock(&acked).insert(key, reply.task_id);
                        i += 1;
                    }
                    Err(s) => {
                        history.log(json!({"event": "client_error", "client": c, "key": key, "code": format!("{:?}", s.code()), "message": s.message()}));
                        // Same key again: a real client retries until it knows.
                    }
                }
            }
        }));
    }
    (acked, calls, tasks)
}

/// Seeded random faults for `--duration`, each held a few seconds then
/// healed; then heal everything.
async fn inject_faults(
    args: &ChaosArgs,
    seed: u64,
    client: &Client,
    admin_token: Option<&str>,
    history: &History,
) -> Result<Vec<Fault>, CliError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let began = Instant::now();
    while began.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..3000))).await;
        let mut kind = args.faults[rng.gen_range(0..args.faults.len())].clone();
        if let Some(first) = args.first.get(faults.len()) {
            kind = first.clone();
        }
        let hold = Duration::from_millis(rng.gen_range(2000..6000));
        if kind == "corrupt" {
            let start = Instant::now();
            let nth = faults.iter().filter(|f| f.kind == "corrupt").count();
            corrupt::inject(nth, &args.cluster_dir, client, args.nodes, &mut rng, admin_token, history).await?;
            faults.push(Fault { kind, start, end: Instant::now() });
            continue;
        }
        if let Some(fault) = inject_one(args, &mut rng, kind, hold, history).await? {
            faults.push(fault);
        }
    }
    script(&args.cluster_dir, "faults.sh", &["heal-all"])?;
    history.log(json!({"event": "healed_all"}));
    Ok(faults)
}

/// One fault of `kind` on a random node (or the leader), held, then healed.
/// `None` if it could not be injected (e.g. no leader to isolate).
async fn inject_one(
    args: &ChaosArgs,
    rng: &mut StdRng,
    kind: String,
    hold: Duration,
    history: &History,
) -> Result<Option<Fault>, CliError> {
    let dir = &args.cluster_dir;
    let node: u64 = match kind.as_str() {
        "isolate-leader" => match script(dir, "faults.sh", &["isolate-leader"]) {
            Ok(id) => id.parse().unwrap_or(0),
            Err(e) => {
                history.log(json!({"event": "fault_skipped", "kind": kind, "why": e.0}));
                return Ok(None);
            }
        },
        "clock" => {
            let node = rng.gen_range(1..=args.nodes as u64);
            let offset = if rng.gen_bool(0.5) { "+1h" } else { "-1h" };
            script(dir, "faults.sh", &["skew", &node.to_string(), offset])?;
            node
        }
        "disk" => {
            // Half the time below --min-free-disk (the space alarm), half
            // the time full (the node's storage fails and it exits 74).
            let node = rng.gen_range(1..=args.nodes as u64);
            let left = if rng.gen_bool(0.5) { (64u64 << 20).to_string() } else { "0".to_string() };
            script(dir, "faults.sh", &["fill", &node.to_string(), &left])?;
            node
        }
        _ => {
            let node = rng.gen_range(1..=args.nodes as u64);
            let verb = if kind == "partition" { "partition" } else { kind.as_str() };
            script(dir, "faults.sh", &[verb, &node.to_string()])?;
            node
        }
    };
    // A wrong clock or a full disk needs time to be noticed and to matter.
    let hold = if kind == "clock" || kind == "disk" { hold * 3 + Duration::from_secs(4) } else { hold };
    let start = Instant::now();
    history.log(json!({"event": "fault", "kind": kind, "node": node, "hold_ms": hold.as_millis() as u64}));
    println!("  fault: {kind} node {node} for {:.1}s", hold.as_secs_f64());
    tokio::time::sleep(hold).await;
    let undo = match kind.as_str() {
        "kill" => "start",
        "pause" => "unpause",
        "clock" => "unskew",
        "disk" => "unfill",
        _ => "heal",
    };
    script(dir, "faults.sh", &[undo, &node.to_string()])?;
    if kind == "disk" {
        // A node whose disk filled has exited (74): it comes back now.
        let state = container_state(node);
        println!("    node {node} after its disk filled: {state}");
        history.log(json!({"event": "disk_fault_outcome", "node": node, "container": state}));
        script(dir, "faults.sh", &["start", &node.to_string()])?;
    }
    history.log(json!({"event": "healed", "kind": kind, "node": node}));
    Ok(Some(Fault { kind, start, end: Instant::now() }))
}

/// Let every acknowledged task finish: wait as long as tasks keep
/// finishing; give up only when nothing has finished for [`STALL_AFTER`].
/// Returns how long it took.
async fn drain(client: &Client, history: &History) -> Result<Duration, CliError> {
    let started = Instant::now();
    let mut last_left = usize::MAX;
    let mut last_progress = Instant::now();
    loop {
        let left = pending_count(client).await?;
        if left == 0 {
            break;
        }
        if left < last_left {
            last_left = left;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > STALL_AFTER {
            println!("drain: no task finished for {STALL_AFTER:?} with {left} still pending: execution stalled");
            history.log(json!({"event": "drain_stalled", "pending": left}));
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let drain = started.elapsed();
    println!("drain: {:.1}s after the faults ended", drain.as_secs_f64());
    Ok(drain)
}

/// No task finished for this long while some are pending: stalled.
const STALL_AFTER: Duration = Duration::from_secs(30);

/// Tasks of the checked callbacks not yet finished (pending or running),
/// from the leader's queues.
async fn pending_count(client: &Client) -> Result<usize, CliError> {
    let r =
        client.list_callbacks().await.map_err(|s| CliError(format!("listing callbacks: {}", status_message(&s))))?;
    Ok(r.callbacks
        .iter()
        .filter(|c| {
            c.settings.as_ref().is_some_and(|s| {
                [CALLBACK, DELAYED_CALLBACK, workflows::DAG_CALLBACK, workflows::TICK_CALLBACK]
                    .contains(&s.name.as_str())
            })
        })
        .map(|c| c.running as usize + c.queues.iter().map(|q| (q.ready + q.scheduled) as usize).sum::<usize>())
        .sum())
}

/// What the run did, for the checks.
struct Load<'a> {
    acked: &'a HashMap<String, u64>,
    delayed: &'a [u64],
    starts: &'a HashMap<u64, u64>,
    faults: &'a [Fault],
    calls: &'a [Call],
    drain: Duration,
    /// The task graphs acknowledged (ids in item order) and what their
    /// workers saw.
    graphs: &'a [Vec<u64>],
    seen: &'a workflows::Seen,
}
