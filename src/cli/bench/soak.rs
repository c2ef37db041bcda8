//! `drover bench soak`: a steady end-to-end load with a retention of
//! seconds, sampled every minute, to show that disk, memory and the live
//! row count stay flat while retention deletes what the load finishes; and
//! the Schedule latency with retention deleting next to it, against a first
//! phase where nothing is deleted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{histogram, Report};
use crate::cli::{parse_duration, status_message, CliError};
use drover::client::Client;
use drover::pb;
use drover::worker::{TaskContext, TaskResult, Worker};

#[derive(Args, Debug, Clone)]
pub struct SoakBench {
    /// How long the load runs with retention deleting (after the baseline).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// First, this long with the same load and nothing deleted: the latency baseline.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub baseline: Duration,
    /// Tasks scheduled (one Schedule call each) and executed per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Scheduling clients sharing the rate.
    #[arg(long, default_value_t = 8)]
    pub clients: u64,
    /// Retention of the soak callback's finished tasks.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub retain: Duration,
    /// Time between samples of disk, memory and rows.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub sample: Duration,
    #[arg(long, default_value = "bench-soak")]
    pub callback: String,
    #[command(flatten)]
    pub target: super::Target,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One sample of the cluster.
struct Sample {
    at_s: f64,
    disk_bytes: Vec<u64>,
    rss_bytes: Vec<u64>,
    rows: u64,
    collected: u64,
    backlog: u64,
    executed: u64,
}

async fn sample(client: &Client, started: Instant, executed: u64) -> Result<Sample, CliError> {
    let st = client.cluster_status().await.map_err(|s| CliError(status_message(&s)))?;
    let gc = client.gc_status().await.map_err(|s| CliError(status_message(&s)))?;
    let of =
        |f: fn(&pb::NodeStatusResponse) -> u64| st.members.iter().filter_map(|m| m.status.as_ref().map(f)).collect();
    Ok(Sample {
        at_s: started.elapsed().as_secs_f64(),
        disk_bytes: of(|s| s.disk_bytes),
        rss_bytes: of(|s| s.rss_bytes),
        rows: gc.tasks,
        collected: gc.collected,
        backlog: gc.backlog,
        executed,
    })
}

async fn register(client: &Client, name: &str, retain: Option<Duration>) -> Result<(), CliError> {
    let ms = retain.map(|d| d.as_millis() as u64);
    let settings = pb::CallbackSettings {
        name: name.to_string(),
        max_attempts: 5,
        lease_ms: 30_000,
        timeout_ms: 300_000,
        backoff_initial_ms: 1000,
        backoff_max_ms: 60_000,
        retain_succeeded_ms: ms,
        retain_cancelled_ms: ms,
        retain_failed_ms: ms,
        retain_dead_ms: ms,
        ..Default::default()
    };
    client
        .register_callback(settings)
        .await
        .map_err(|s| CliError(format!("registering {name}: {}", status_message(&s))))?;
    Ok(())
}

/// Paced Schedule calls from `clients` tasks until `stop`; latencies go to
/// the histogram of the current phase.
fn start_load(
    client: &Arc<Client>,
    args: &SoakBench,
    phase: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let interval = Duration::from_secs_f64(args.clients as f64 / args.rate.max(1) as f64);
    (0..args.clients)
        .map(|c| {
            let (client, phase, errors, stop, callback) =
                (client.clone(), phase.clone(), errors.clone(), stop.clone(), args.callback.clone());
            tokio::spawn(async move {
                let mut next = tokio::time::Instant::now() + interval.mul_f64(c as f64 / 8.0);
                while !stop.is_cancelled() {
                    tokio::time::sleep_until(next).await;
                    next += interval;
                    let t0 = Instant::now();
                    let spec =
                        pb::TaskSpec { callback: callback.clone(), payload: vec![b'x'; 64], ..Default::default() };
                    match client.schedule(c as usize, spec).await {
                        Ok(_) => {
                            let _ = lock(&phase).record((t0.elapsed().as_micros() as u64).max(1));
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

pub async fn soak(client: &Arc<Client>, args: &SoakBench) -> Result<Report, CliError> {
    if args.rate == 0 || args.clients == 0 {
        return Err(CliError("--rate and --clients must be positive".into()));
    }
    // Baseline: kept forever (10 years), so nothing of this callback is deleted.
    register(client, &args.callback, Some(Duration::from_secs(10 * 365 * 24 * 3600))).await?;
    let stop = CancellationToken::new();
    let executed = Arc::new(AtomicU64::new(0));
    let counter = executed.clone();
    let worker = Worker::builder(client.endpoints().to_vec())
        .id(format!("soak-{}", std::process::id()))
        .handle(args.callback.clone(), 512, move |_ctx: TaskContext| {
            counter.fetch_add(1, Ordering::Relaxed);
            async { TaskResult::Success(Vec::new()) }
        })
        .run(stop.clone());
    let worker = tokio::spawn(worker);
    let errors = Arc::new(AtomicU64::new(0));
    let baseline = Arc::new(Mutex::new(histogram()));
    let started = Instant::now();
    let load = start_load(client, args, baseline.clone(), errors.clone(), &stop);
    tokio::time::sleep(args.baseline).await;
    let before_gc = sample(client, started, executed.load(Ordering::Relaxed)).await?;

    // Soak: the same load, finished tasks kept `--retain`.
    let soak_hist = histogram();
    let baseline_hist = std::mem::replace(&mut *lock(&baseline), soak_hist);
    register(client, &args.callback, Some(args.retain)).await?;
    let soak_started = Instant::now();
    let mut samples = vec![before_gc];
    while soak_started.elapsed() < args.duration {
        let left = args.duration.saturating_sub(soak_started.elapsed());
        tokio::time::sleep(args.sample.min(left)).await;
        let s = sample(client, started, executed.load(Ordering::Relaxed)).await?;
        eprintln!(
            "soak {:>5.0}s: rows {} collected {} backlog {} disk {:?} MiB rss {:?} MiB",
            s.at_s,
            s.rows,
            s.collected,
            s.backlog,
            s.disk_bytes.iter().map(|b| b >> 20).collect::<Vec<_>>(),
            s.rss_bytes.iter().map(|b| b >> 20).collect::<Vec<_>>()
        );
        samples.push(s);
    }
    stop.cancel();
    for l in load {
        let _ = l.await;
    }
    let _ = worker.await;
    let soak_hist = std::mem::replace(&mut *lock(&baseline), histogram());
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1000.0;
    let mib = |v: &[u64]| v.iter().map(|b| b >> 20).collect::<Vec<_>>();
    let json_samples: Vec<_> = samples
        .iter()
        .map(|s| {
            json!({
                "at_s": s.at_s, "disk_bytes": s.disk_bytes, "rss_bytes": s.rss_bytes, "rows": s.rows,
                "collected": s.collected, "backlog": s.backlog, "executed": s.executed,
            })
        })
        .collect();
    let ratio = p99(&soak_hist) / p99(&baseline_hist).max(1e-9);
    let report = json!({
        "scenario": "soak",
        "rate": args.rate,
        "retain_ms": args.retain.as_millis() as u64,
        "baseline_s": args.baseline.as_secs_f64(),
        "soak_s": args.duration.as_secs_f64(),
        "schedule_p50_ms_baseline": p50(&baseline_hist),
        "schedule_p99_ms_baseline": p99(&baseline_hist),
        "schedule_p50_ms_gc": p50(&soak_hist),
        "schedule_p99_ms_gc": p99(&soak_hist),
        "p99_ratio_gc_to_baseline": ratio,
        "scheduled": baseline_hist.len() + soak_hist.len(),
        "schedule_errors": errors.load(Ordering::Relaxed),
        "executed": executed.load(Ordering::Relaxed),
        "tasks_per_sec": (baseline_hist.len() + soak_hist.len()) as f64 / started.elapsed().as_secs_f64(),
        "samples": json_samples,
    });
    let mut lines = vec![
        format!(
            "soak: {} tasks/s end to end; {:?} baseline (nothing deleted), then {:?} with a retention of {:?}",
            args.rate, args.baseline, args.duration, args.retain
        ),
        format!(
            "  Schedule latency    p50 {:.2} / p99 {:.2} ms baseline, p50 {:.2} / p99 {:.2} ms with retention (p99 ratio {ratio:.2})",
            p50(&baseline_hist),
            p99(&baseline_hist),
            p50(&soak_hist),
            p99(&soak_hist)
        ),
        format!("  {:>8} {:>10} {:>10} {:>8}  {:<24} {:<24}", "AT", "ROWS", "COLLECTED", "BACKLOG", "DISK MiB", "RSS MiB"),
    ];
    for s in &samples {
        lines.push(format!(
            "  {:>7.0}s {:>10} {:>10} {:>8}  {:<24} {:<24}",
            s.at_s,
            s.rows,
            s.collected,
            s.backlog,
            format!("{:?}", mib(&s.disk_bytes)),
            format!("{:?}", mib(&s.rss_bytes))
        ));
    }
    let scheduled = baseline_hist.len() + soak_hist.len();
    let failure = (scheduled == 0).then(|| "nothing was scheduled".to_string());
    Ok(Report { json: report, lines, failure })
}
