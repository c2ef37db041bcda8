//! `drover bench e2e` and `drover bench delayed`: scheduling and execution
//! with no-op SDK workers running in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ensure_callback, histogram, verify, CpuMeter, Report};
use crate::cli::{parse_duration, status_message, CliError};
use drover::client::Client;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker, WorkerStats};

#[derive(Args, Debug, Clone)]
pub struct E2eBench {
    /// Tasks to schedule and execute.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    /// Scheduling clients, each with one ScheduleBatch in flight.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Tasks per ScheduleBatch.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Target schedule rate in tasks/s (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// No-op SDK workers in this process.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Concurrency (credits) of each worker.
    #[arg(long, default_value_t = 256)]
    pub concurrency: u32,
    /// Give up waiting for execution after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[arg(long, default_value = "bench-e2e")]
    pub callback: String,
    #[command(flatten)]
    pub target: super::Target,
}

#[derive(Args, Debug, Clone)]
pub struct DelayedBench {
    /// Delayed tasks to schedule.
    #[arg(long, default_value_t = 2000)]
    pub tasks: usize,
    /// Run-at times spread evenly over this long...
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub spread: Duration,
    /// ...starting this long from now.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lead: Duration,
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[arg(long, default_value_t = 256)]
    pub concurrency: u32,
    #[arg(long, default_value = "bench-delayed")]
    pub callback: String,
    #[command(flatten)]
    pub target: super::Target,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the in-process workers saw: start and ack times per task.
#[derive(Default)]
struct Seen {
    started: HashMap<u64, (Instant, u64)>,
    acked: HashMap<u64, Instant>,
}

type Shared = Arc<Mutex<Seen>>;

/// A poisoned lock still guards plain data here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start `n` no-op workers for `callback`; they record into `seen`.
fn start_workers(
    client: &Client,
    callback: &str,
    n: usize,
    concurrency: u32,
    seen: &Shared,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<Result<WorkerStats, drover::worker::WorkerError>>> {
    (0..n)
        .map(|i| {
            let (s1, s2) = (seen.clone(), seen.clone());
            let worker = Worker::builder(client.endpoints().to_vec())
                .id(format!("bench-{}-{i}", std::process::id()))
                .shutdown_grace(Duration::from_secs(5))
                .handle(callback.to_string(), concurrency, move |ctx: TaskContext| {
                    lock(&s1).started.insert(ctx.task_id, (Instant::now(), unix_ms()));
                    async { TaskResult::Success(Vec::new()) }
                })
                .on_ack(move |id, accepted| {
                    if accepted {
                        lock(&s2).acked.insert(id, Instant::now());
                    }
                });
            tokio::spawn(worker.run(stop.clone()))
        })
        .collect()
}

async fn schedule_batch(client: &Client, start: usize, tasks: Vec<pb::TaskSpec>) -> Result<Vec<u64>, CliError> {
    let r = client.schedule_batch(start, tasks).await.map_err(|s| CliError(status_message(&s)))?;
    Ok(r.results.into_iter().map(|r| r.task_id).collect())
}

pub async fn e2e(client: &Arc<Client>, args: &E2eBench) -> Result<Report, CliError> {
    if args.tasks == 0 || args.clients == 0 || args.batch == 0 || args.workers == 0 {
        return Err(CliError("--tasks, --clients, --batch and --workers must be positive".into()));
    }
    let client = client.clone();
    ensure_callback(&client, &args.callback).await?;
    let seen: Shared = Arc::default();
    let stop = CancellationToken::new();
    let workers = start_workers(&client, &args.callback, args.workers, args.concurrency, &seen, &stop);
    // Let the workers connect before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = CpuMeter::start(&client).await;
    let started = Instant::now();
    let sent = schedule_all(&client, args).await?;
    let scheduled_in = started.elapsed();
    let deadline = Instant::now() + args.timeout;
    let mut progress = crate::cli::progress::Progress::new("tasks done", Some(args.tasks as u64), "tasks", false);
    while lock(&seen).acked.len() < args.tasks && Instant::now() < deadline {
        progress.set(lock(&seen).acked.len() as u64, None);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish();
    let cpu_s = cpu.finish(&client).await;
    stop.cancel();
    let mut stats = WorkerStats::default();
    for w in workers {
        if let Ok(Ok(s)) = w.await {
            stats.succeeded += s.succeeded;
            stats.fenced += s.fenced;
            stats.rejected += s.rejected;
        }
    }
    let seen = std::mem::take(&mut *lock(&seen));
    let (mut to_start, mut to_finish) = (histogram(), histogram());
    let mut last = started;
    for (id, t0) in &sent {
        if let Some((s, _)) = seen.started.get(id) {
            let _ = to_start.record(s.duration_since(*t0).as_micros().max(1) as u64);
        }
        if let Some(a) = seen.acked.get(id) {
            let _ = to_finish.record(a.duration_since(*t0).as_micros().max(1) as u64);
            last = last.max(*a);
        }
    }
    let executed = seen.acked.len();
    let elapsed = last.duration_since(started).as_secs_f64().max(1e-9);
    let ids: Vec<u64> = sent.keys().copied().take(2000).collect();
    let lost = verify(&client, &ids).await?;
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "scenario": "e2e",
        "tasks": args.tasks,
        "executed": executed,
        "tasks_per_sec": executed as f64 / elapsed,
        "scheduled_per_sec": args.tasks as f64 / scheduled_in.as_secs_f64(),
        "p50_ms": ms(&to_start, 0.5),
        "p99_ms": ms(&to_start, 0.99),
        "start_p50_ms": ms(&to_start, 0.5),
        "start_p99_ms": ms(&to_start, 0.99),
        "finish_p50_ms": ms(&to_finish, 0.5),
        "finish_p99_ms": ms(&to_finish, 0.99),
        "node_cpu_s": cpu_s,
        "cpu_us_per_task": cpu_s.map(|c| c * 1e6 / executed.max(1) as f64),
        "fenced": stats.fenced,
        "rejected": stats.rejected,
        "verified": ids.len(),
        "lost": lost,
    });
    let mut lines = vec![
        format!(
            "e2e: {} tasks, {} worker(s) x {} credits, {} client(s) x batch {}",
            args.tasks, args.workers, args.concurrency, args.clients, args.batch
        ),
        format!("  executed            {executed} ({:.0} tasks/s end to end)", executed as f64 / elapsed),
        format!("  schedule-to-start   p50 {:.1} ms  p99 {:.1} ms", ms(&to_start, 0.5), ms(&to_start, 0.99)),
        format!("  schedule-to-finish  p50 {:.1} ms  p99 {:.1} ms", ms(&to_finish, 0.5), ms(&to_finish, 0.99)),
    ];
    if let Some(c) = cpu_s {
        lines.push(format!("  node CPU            {c:.1} s ({:.0} us per task)", c * 1e6 / executed.max(1) as f64));
    }
    lines.push(format!("  read back           {} checked, {lost} lost", ids.len()));
    let failure = if executed < args.tasks {
        Some(format!("only {executed} of {} tasks executed within {:?}", args.tasks, args.timeout))
    } else if lost > 0 {
        Some(format!("{lost} acknowledged task(s) are missing"))
    } else {
        None
    };
    Ok(Report { json: report, lines, failure })
}

/// Schedule `args.tasks` tasks from `args.clients` clients in batches
/// (paced to `args.rate` if set). Returns when each task was sent, by id.
async fn schedule_all(client: &Arc<Client>, args: &E2eBench) -> Result<HashMap<u64, Instant>, CliError> {
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let per_client = args.tasks.div_ceil(args.clients);
    let mut schedulers = Vec::new();
    for c in 0..args.clients {
        let (client, sent, args) = (client.clone(), sent.clone(), args.clone());
        let mine = per_client.min(args.tasks.saturating_sub(c * per_client));
        schedulers.push(tokio::spawn(async move {
            let mut done = 0;
            // Each client paces itself to its share of the target rate.
            let interval = (args.rate > 0)
                .then(|| Duration::from_secs_f64(args.batch as f64 * args.clients as f64 / args.rate as f64));
            let mut next = Instant::now();
            while done < mine {
                if let Some(i) = interval {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
                    next += i;
                }
                let n = args.batch.min(mine - done);
                let spec = pb::TaskSpec { callback: args.callback.clone(), ..Default::default() };
                let t0 = Instant::now();
                let ids = schedule_batch(&client, c, vec![spec; n]).await?;
                let mut s = lock(&sent);
                for id in ids {
                    s.insert(id, t0);
                }
                done += n;
            }
            Ok::<_, CliError>(())
        }));
    }
    for s in schedulers {
        s.await.map_err(|e| CliError(e.to_string()))??;
    }
    let sent = std::mem::take(&mut *lock(&sent));
    Ok(sent)
}

pub async fn delayed(client: &Arc<Client>, args: &DelayedBench) -> Result<Report, CliError> {
    if args.tasks == 0 || args.workers == 0 {
        return Err(CliError("--tasks and --workers must be positive".into()));
    }
    let client = client.clone();
    ensure_callback(&client, &args.callback).await?;
    let seen: Shared = Arc::default();
    let stop = CancellationToken::new();
    let workers = start_workers(&client, &args.callback, args.workers, args.concurrency, &seen, &stop);
    let first = unix_ms() + args.lead.as_millis() as u64;
    let step = args.spread.as_millis() as f64 / args.tasks as f64;
    let mut run_at: HashMap<u64, u64> = HashMap::new();
    let specs: Vec<(u64, pb::TaskSpec)> = (0..args.tasks)
        .map(|i| {
            let at = first + (i as f64 * step) as u64;
            let spec = pb::TaskSpec {
                callback: args.callback.clone(),
                when: Some(pb::task_spec::When::RunAtUnixMs(at)),
                ..Default::default()
            };
            (at, spec)
        })
        .collect();
    for chunk in specs.chunks(500) {
        let ids = schedule_batch(&client, 0, chunk.iter().map(|(_, s)| s.clone()).collect()).await?;
        for (id, (at, _)) in ids.into_iter().zip(chunk) {
            run_at.insert(id, *at);
        }
    }
    if unix_ms() > first {
        eprintln!("warning: scheduling took longer than --lead; the first tasks were already due when scheduled");
    }
    let deadline = Instant::now() + args.lead + args.spread + Duration::from_secs(30);
    while lock(&seen).started.len() < args.tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for w in workers {
        let _ = w.await;
    }
    let seen = std::mem::take(&mut *lock(&seen));
    let mut late = histogram();
    let (mut early, mut max_ms) = (0usize, 0u64);
    for (id, at) in &run_at {
        if let Some((_, wall)) = seen.started.get(id) {
            if wall < at {
                early += 1;
            }
            let l = wall.saturating_sub(*at);
            max_ms = max_ms.max(l);
            let _ = late.record((l * 1000).max(1));
        }
    }
    let started = seen.started.len();
    let ms = |q: f64| late.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "scenario": "delayed",
        "tasks": args.tasks,
        "started": started,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "max_ms": max_ms,
        "early": early,
        "lost": args.tasks - started,
        "tasks_per_sec": args.tasks as f64 / args.spread.as_secs_f64().max(1e-9),
    });
    let lines = vec![
        format!("delayed: {} tasks over {:?}", args.tasks, args.spread),
        format!("  started             {started}"),
        format!(
            "  lateness            p50 {:.1} ms  p99 {:.1} ms  max {max_ms} ms  ({early} early)",
            ms(0.5),
            ms(0.99)
        ),
    ];
    let failure = (started < args.tasks).then(|| format!("only {started} of {} delayed tasks started", args.tasks));
    Ok(Report { json: report, lines, failure })
}
