//! `drover bench schedule`: Schedule / ScheduleBatch from N clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use serde_json::json;

use super::{ensure_callback, histogram, verify, CpuMeter, Report};
use crate::cli::{parse_duration, status_message, CliError};
use drover::client::Client;
use drover::pb;

#[derive(Args, Debug, Clone)]
pub struct ScheduleBench {
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Tasks per request: 1 uses Schedule, more uses ScheduleBatch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Payload size per task, bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Acknowledged tasks to read back afterwards to check none was lost (0: all).
    #[arg(long, default_value_t = 2000)]
    pub verify: usize,
    /// Callback name to schedule against.
    #[arg(long, default_value = "bench")]
    pub callback: String,
    #[command(flatten)]
    pub target: super::Target,
}

struct ClientResult {
    histogram: Histogram<u64>,
    acked: Vec<u64>,
    requests: u64,
    errors: u64,
    last_error: Option<String>,
}

impl Default for ClientResult {
    fn default() -> Self {
        ClientResult { histogram: histogram(), acked: Vec::new(), requests: 0, errors: 0, last_error: None }
    }
}

pub async fn run(client: &Arc<Client>, args: &ScheduleBench) -> Result<Report, CliError> {
    if args.clients == 0 || args.batch == 0 {
        return Err(CliError("--clients and --batch must be positive".into()));
    }
    let client = client.clone();
    ensure_callback(&client, &args.callback).await?;
    let cpu = CpuMeter::start(&client).await;
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut handles = Vec::new();
    for c in 0..args.clients {
        handles.push(tokio::spawn(client_loop(client.clone(), args.clone(), c, deadline)));
    }
    let mut all = ClientResult::default();
    for h in handles {
        let r = h.await.map_err(|e| CliError(format!("bench client crashed: {e}")))?;
        all.histogram.add(&r.histogram).map_err(|e| CliError(e.to_string()))?;
        all.acked.extend(r.acked);
        all.requests += r.requests;
        all.errors += r.errors;
        all.last_error = r.last_error.or(all.last_error);
    }
    let ClientResult { histogram, mut acked, requests, errors, last_error } = all;
    let elapsed = started.elapsed().as_secs_f64();
    let tasks = acked.len();
    let cpu_s = cpu.finish(&client).await;

    // Read back a sample of acknowledged tasks (linearizable reads).
    acked.shuffle(&mut rand::thread_rng());
    let sample: Vec<u64> =
        if args.verify == 0 { acked.clone() } else { acked.iter().copied().take(args.verify).collect() };
    let lost = verify(&client, &sample).await?;

    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "scenario": "schedule",
        "clients": args.clients,
        "batch": args.batch,
        "duration_s": elapsed,
        "requests": requests,
        "errors": errors,
        "tasks": tasks,
        "tasks_per_sec": tasks as f64 / elapsed,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "node_cpu_s": cpu_s,
        "cpu_us_per_task": cpu_s.map(|c| c * 1e6 / tasks.max(1) as f64),
        "verified": sample.len(),
        "lost": lost,
        "last_error": last_error,
    });
    let mut lines = vec![
        format!("schedule: {} client(s), batch {}, {:.1}s", args.clients, args.batch, elapsed),
        format!(
            "  tasks acknowledged  {tasks}  ({:.0} tasks/s, {requests} requests, {errors} errors)",
            tasks as f64 / elapsed
        ),
        format!("  ack latency ms      p50 {:.2}  p99 {:.2}  p99.9 {:.2}", ms(0.5), ms(0.99), ms(0.999)),
        format!("  read back           {} checked, {lost} lost", sample.len()),
    ];
    if let Some(c) = cpu_s {
        lines.push(format!("  node CPU            {c:.1} s ({:.0} us per task)", c * 1e6 / tasks.max(1) as f64));
    }
    if let Some(e) = last_error {
        lines.push(format!("  last error          {e}"));
    }
    let failure = (lost > 0).then(|| format!("{lost} acknowledged task(s) are missing"));
    Ok(Report { json: report, lines, failure })
}

/// One bench client: schedule (one task or a batch per request) until the
/// deadline, timing every acknowledgement.
async fn client_loop(client: Arc<Client>, args: ScheduleBench, c: usize, deadline: Instant) -> ClientResult {
    let mut r = ClientResult::default();
    let spec =
        pb::TaskSpec { callback: args.callback.clone(), payload: vec![b'x'; args.payload_bytes], ..Default::default() };
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let result = if args.batch == 1 {
            client.schedule(c, spec.clone()).await.map(|r| vec![r.task_id])
        } else {
            let tasks = vec![spec.clone(); args.batch];
            client.schedule_batch(c, tasks).await.map(|r| r.results.into_iter().map(|r| r.task_id).collect())
        };
        r.requests += 1;
        match result {
            Ok(ids) => {
                let _ = r.histogram.record(t0.elapsed().as_micros().max(1) as u64);
                r.acked.extend(ids);
            }
            Err(s) => {
                r.errors += 1;
                r.last_error = Some(status_message(&s));
            }
        }
    }
    r
}
