//! `drover bench failover` and `drover bench backlog`: scenarios that kill
//! and restart nodes of a `--local` cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::execution::{e2e, E2eBench};
use super::schedule::{run as schedule, ScheduleBench};
use super::{ensure_callback, verify, Report, Target};
use crate::cli::{failed, parse_duration, status_message, CliError};
use crate::testkit::LocalCluster;
use drover::client::Client;
use drover::pb;

#[derive(Args, Debug, Clone)]
pub struct FailoverBench {
    /// Leader kills (SIGKILL), one after the other.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Clients scheduling continuously (with idempotency keys and retries).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Load between kills.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Args, Debug, Clone)]
pub struct BacklogBench {
    /// Tasks pending (scheduled a week ahead) during the second measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub pending: usize,
    /// Length of each ScheduleBatch measurement.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Tasks of each e2e measurement.
    #[arg(long, default_value_t = 20_000)]
    pub e2e_tasks: usize,
    #[command(flatten)]
    pub target: Target,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// One client call: (started, ended, succeeded).
type Call = (Instant, Instant, bool);

pub async fn failover(
    client: &Arc<Client>,
    cluster: &mut LocalCluster,
    args: &FailoverBench,
) -> Result<Report, CliError> {
    const CALLBACK: &str = "bench-failover";
    ensure_callback(client, CALLBACK).await?;
    let stop = CancellationToken::new();
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut loads = Vec::new();
    for c in 0..args.clients {
        let (client, stop, calls, acked) = (client.clone(), stop.clone(), calls.clone(), acked.clone());
        loads.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let spec = pb::TaskSpec {
                    callback: CALLBACK.into(),
                    idempotency_key: format!("f{c}-{i}"),
                    ..Default::default()
                };
                let t0 = Instant::now();
                let r = client.schedule(c + i as usize, spec).await;
                calls.lock().unwrap_or_else(|p| p.into_inner()).push((t0, Instant::now(), r.is_ok()));
                if let Ok(reply) = r {
                    acked.lock().unwrap_or_else(|p| p.into_inner()).push(reply.task_id);
                    i += 1;
                }
            }
        }));
    }
    let started = Instant::now();
    let mut gaps_ms = Vec::new();
    for _ in 0..args.kills {
        tokio::time::sleep(args.settle).await;
        let leader = cluster.wait_for_leader(Duration::from_secs(15)).await?;
        let killed_at = Instant::now();
        cluster.kill(leader);
        // Unavailable until a call that started after the kill succeeds.
        let deadline = killed_at + Duration::from_secs(30);
        let back = loop {
            let first = calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(s, _, ok)| *ok && *s >= killed_at)
                .map(|(_, e, _)| *e)
                .min();
            if let Some(t) = first {
                break t;
            }
            if Instant::now() > deadline {
                stop.cancel();
                return Err(CliError(format!("scheduling did not resume within 30s of killing node {leader}")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        gaps_ms.push(back.duration_since(killed_at).as_secs_f64() * 1000.0);
        cluster.restart(leader)?;
    }
    stop.cancel();
    for l in loads {
        let _ = l.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ids = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let lost = verify(client, &ids).await?;
    let mut sorted = gaps_ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let report = json!({
        "scenario": "failover",
        "kills": args.kills,
        "unavailable_ms": gaps_ms,
        "p50_ms": quantile(&sorted, 0.5),
        "p99_ms": quantile(&sorted, 0.99),
        "max_ms": sorted.last().copied().unwrap_or(0.0),
        "tasks": ids.len(),
        "tasks_per_sec": ids.len() as f64 / elapsed,
        "verified": ids.len(),
        "lost": lost,
    });
    let lines = vec![
        format!("failover: {} leader kills under load from {} clients", args.kills, args.clients),
        format!(
            "  unavailable         p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.99),
            sorted.last().copied().unwrap_or(0.0)
        ),
        format!("  acknowledged        {} (all read back: {lost} lost)", ids.len()),
    ];
    let failure = (lost > 0).then(|| format!("{lost} acknowledged task(s) are missing"));
    Ok(Report { json: report, lines, failure })
}

async fn node_stats(client: &Client) -> Result<pb::ClusterStatusResponse, CliError> {
    client.cluster_status().await.map_err(failed)
}

pub async fn backlog(
    client: &Arc<Client>,
    cluster: &mut LocalCluster,
    args: &BacklogBench,
) -> Result<Report, CliError> {
    let sched = ScheduleBench {
        clients: 4,
        batch: 100,
        duration: args.duration,
        payload_bytes: 64,
        verify: 1000,
        callback: "bench".into(),
        target: Target::default(),
    };
    let e2e_args = E2eBench {
        tasks: args.e2e_tasks,
        clients: 4,
        batch: 100,
        rate: 0,
        workers: 2,
        concurrency: 256,
        timeout: Duration::from_secs(300),
        callback: "bench-e2e".into(),
        target: Target::default(),
    };
    let rate = |r: &Report| r.json["tasks_per_sec"].as_f64().unwrap_or(0.0);
    let empty_schedule = schedule(client, &sched).await?;
    let empty_e2e = e2e(client, &e2e_args).await?;

    let (pending, load_rate) = load_backlog(client, args.pending).await?;
    let full_schedule = schedule(client, &sched).await?;
    let full_e2e = e2e(client, &e2e_args).await?;
    let stats = node_stats(client).await?;
    let rss: Vec<u64> = stats.members.iter().filter_map(|m| m.status.as_ref().map(|s| s.rss_bytes)).collect();
    let disk: Vec<u64> = stats.members.iter().filter_map(|m| m.status.as_ref().map(|s| s.disk_bytes)).collect();

    let restart_s = restart_to_serving(client, cluster).await?;

    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let report = json!({
        "scenario": "backlog",
        "pending": pending,
        "load_tasks_per_sec": load_rate,
        "schedule_tasks_per_sec_empty": rate(&empty_schedule),
        "schedule_tasks_per_sec_backlog": rate(&full_schedule),
        "e2e_tasks_per_sec_empty": rate(&empty_e2e),
        "e2e_tasks_per_sec_backlog": rate(&full_e2e),
        "tasks_per_sec": rate(&full_schedule),
        "p50_ms": full_schedule.json["p50_ms"],
        "p99_ms": full_schedule.json["p99_ms"],
        "rss_bytes": rss,
        "disk_bytes": disk,
        "restart_to_serving_s": restart_s,
        "lost": full_schedule.json["lost"].as_u64().unwrap_or(0) + full_e2e.json["lost"].as_u64().unwrap_or(0),
    });
    let lines = vec![
        format!("backlog: {pending} tasks pending (loaded at {load_rate:.0} tasks/s)"),
        format!(
            "  ScheduleBatch(100)  {:.0} tasks/s with the backlog vs {:.0} empty ({:.0}%)",
            rate(&full_schedule),
            rate(&empty_schedule),
            100.0 * rate(&full_schedule) / rate(&empty_schedule).max(1e-9)
        ),
        format!(
            "  e2e no-op           {:.0} tasks/s with the backlog vs {:.0} empty ({:.0}%)",
            rate(&full_e2e),
            rate(&empty_e2e),
            100.0 * rate(&full_e2e) / rate(&empty_e2e).max(1e-9)
        ),
        format!(
            "  RSS per node        {}",
            rss.iter().map(|b| format!("{:.2} GiB", gib(*b))).collect::<Vec<_>>().join(", ")
        ),
        format!(
            "  disk per node       {}",
            disk.iter().map(|b| format!("{:.2} GiB", gib(*b))).collect::<Vec<_>>().join(", ")
        ),
        format!("  restart to serving  {restart_s:.1} s (all nodes stopped, started, first write acknowledged)"),
    ];
    let failure = [&empty_schedule, &empty_e2e, &full_schedule, &full_e2e].iter().find_map(|r| r.failure.clone());
    Ok(Report { json: report, lines, failure })
}

/// Schedule `pending` tasks (rounded up to thousands) a week ahead, so that
/// they stay pending, from 4 loaders in batches of 1000. Returns how many
/// and the rate.
async fn load_backlog(client: &Arc<Client>, pending: usize) -> Result<(usize, f64), CliError> {
    ensure_callback(client, "bench-backlog").await?;
    let week =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0) + 7 * 24 * 3_600_000;
    let started = Instant::now();
    let batches = pending.div_ceil(1000);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for l in 0..4 {
        let (client, next) = (client.clone(), next.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, CliError>(());
                }
                let spec = pb::TaskSpec {
                    callback: "bench-backlog".into(),
                    payload: vec![b'x'; 64],
                    when: Some(pb::task_spec::When::RunAtUnixMs(week)),
                    ..Default::default()
                };
                client
                    .schedule_batch(l, vec![spec; 1000])
                    .await
                    .map_err(|s| CliError(format!("loading the backlog: {}", status_message(&s))))?;
            }
        }));
    }
    for l in loaders {
        l.await.map_err(|e| CliError(e.to_string()))??;
    }
    Ok((batches * 1000, (batches * 1000) as f64 / started.elapsed().as_secs_f64()))
}

/// Stop every node, start them again, and time until the first write is
/// acknowledged (seconds).
async fn restart_to_serving(client: &Client, cluster: &mut LocalCluster) -> Result<f64, CliError> {
    cluster.stop_all().await?;
    let restart_at = Instant::now();
    for id in 1..=cluster.nodes.len() as u64 {
        cluster.restart(id)?;
    }
    let probe = pb::TaskSpec {
        callback: "bench".into(),
        idempotency_key: format!("restart-probe-{}", rand::random::<u32>()),
        ..Default::default()
    };
    client.schedule(0, probe).await.map_err(|s| CliError(format!("after restart: {}", status_message(&s))))?;
    Ok(restart_at.elapsed().as_secs_f64())
}
