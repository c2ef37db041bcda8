//! `drover bench ...`: load generators against a running cluster. They
//! measure; they assert nothing about speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use serde_json::json;

use super::{parse_duration, status_message, Cli, CliError};
use crate::client::Client;
use crate::pb;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Schedule RPCs from N concurrent clients (ScheduleBatch when --batch > 1).
    Schedule(ScheduleBench),
}

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
}

pub async fn run(cli: &Cli, cmd: &BenchCommand) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Schedule(args) => schedule(cli, args).await,
    }
}

struct ClientResult {
    histogram: Histogram<u64>,
    acked: Vec<u64>,
    requests: u64,
    errors: u64,
    last_error: Option<String>,
}

async fn schedule(cli: &Cli, args: &ScheduleBench) -> Result<(), CliError> {
    if args.clients == 0 || args.batch == 0 {
        return Err(CliError("--clients and --batch must be positive".into()));
    }
    let client = Arc::new(cli.client());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut handles = Vec::new();
    for c in 0..args.clients {
        let client = client.clone();
        let args = args.clone();
        handles.push(tokio::spawn(async move {
            let mut r = ClientResult {
                histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("valid bounds")),
                acked: Vec::new(),
                requests: 0,
                errors: 0,
                last_error: None,
            };
            let spec = pb::TaskSpec {
                callback: args.callback.clone(),
                payload: vec![b'x'; args.payload_bytes],
                ..Default::default()
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let result = if args.batch == 1 {
                    let req = pb::ScheduleRequest { task: Some(spec.clone()) };
                    client
                        .call(c, |i| {
                            let req = req.clone();
                            let client = &client;
                            async move { Ok(vec![client.scheduler(i)?.schedule(req).await?.into_inner().task_id]) }
                        })
                        .await
                } else {
                    let req = pb::ScheduleBatchRequest { tasks: vec![spec.clone(); args.batch] };
                    client
                        .call(c, |i| {
                            let req = req.clone();
                            let client = &client;
                            async move {
                                Ok(client
                                    .scheduler(i)?
                                    .schedule_batch(req)
                                    .await?
                                    .into_inner()
                                    .results
                                    .into_iter()
                                    .map(|r| r.task_id)
                                    .collect())
                            }
                        })
                        .await
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
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| CliError(e.to_string()))?;
    let (mut acked, mut requests, mut errors, mut last_error) = (Vec::new(), 0, 0, None);
    for h in handles {
        let r = h.await.map_err(|e| CliError(format!("bench client crashed: {e}")))?;
        histogram.add(&r.histogram).map_err(|e| CliError(e.to_string()))?;
        acked.extend(r.acked);
        requests += r.requests;
        errors += r.errors;
        last_error = r.last_error.or(last_error);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tasks = acked.len();

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
        "verified": sample.len(),
        "lost": lost,
        "last_error": last_error,
    });
    if cli.json {
        println!("{report}");
    } else {
        println!("schedule: {} client(s), batch {}, {:.1}s", args.clients, args.batch, elapsed);
        println!(
            "  tasks acknowledged  {tasks}  ({:.0} tasks/s, {requests} requests, {errors} errors)",
            tasks as f64 / elapsed
        );
        println!("  ack latency ms      p50 {:.2}  p99 {:.2}  p99.9 {:.2}", ms(0.5), ms(0.99), ms(0.999));
        println!("  read back           {} checked, {lost} lost", sample.len());
        if let Some(e) = last_error {
            println!("  last error          {e}");
        }
    }
    if lost > 0 {
        return Err(CliError(format!("{lost} acknowledged task(s) are missing")));
    }
    Ok(())
}

/// Count the ids that cannot be read back.
async fn verify(client: &Arc<Client>, ids: &[u64]) -> Result<usize, CliError> {
    let mut lost = 0;
    for chunk in ids.chunks(64) {
        let reads = chunk.iter().map(|&id| {
            let client = client.clone();
            async move {
                client
                    .call(id as usize, |i| {
                        let client = &client;
                        async move {
                            Ok(client
                                .scheduler(i)?
                                .get_task(pb::GetTaskRequest {
                                    task_id: id,
                                    allow_stale: false,
                                    include_payload: false,
                                })
                                .await?
                                .into_inner())
                        }
                    })
                    .await
            }
        });
        for r in futures::future::join_all(reads).await {
            match r {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => lost += 1,
                Err(s) => return Err(CliError(format!("verifying: {}", status_message(&s)))),
            }
        }
    }
    Ok(lost)
}
