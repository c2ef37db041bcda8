//! `drover bench ...`: load generators against a running cluster. They
//! measure; they assert nothing about speed.
//!
//! - [`schedule`]: Schedule / ScheduleBatch throughput and ack latency.
//! - [`execution`]: `e2e` (no-op SDK workers) and `delayed` (lateness).
//! - [`ops`]: `failover` and `backlog` (local clusters it kills and fills).
//! - [`soak`]: a steady load with retention: disk, memory and rows over time.

pub mod execution;
pub mod ops;
pub mod schedule;
pub mod soak;

use std::sync::Arc;

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;

use super::{status_message, Cli, CliError};
use crate::testkit::{LocalCluster, Spec};
use drover::client::Client;
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Schedule RPCs from N concurrent clients (ScheduleBatch when --batch > 1).
    Schedule(schedule::ScheduleBench),
    /// Schedule and execute with no-op SDK workers: executed tasks/s, schedule-to-start latency.
    E2e(execution::E2eBench),
    /// Tasks with run-at spread over the next seconds: how late they start.
    Delayed(execution::DelayedBench),
    /// SIGKILL the leader under load, repeatedly: how long scheduling stops; nothing lost (needs --local).
    Failover(ops::FailoverBench),
    /// A large pending backlog: throughput against an empty cluster, memory, disk, restart time (needs --local).
    Backlog(ops::BacklogBench),
    /// A steady end-to-end load with a retention of seconds: disk, RSS and rows every minute stay flat; Schedule p99 with retention deleting vs without.
    Soak(soak::SoakBench),
}

/// Where a scenario runs.
#[derive(Args, Debug, Clone, Default)]
pub struct Target {
    /// Start a throwaway local cluster for this run instead of using --endpoint.
    #[arg(long)]
    pub local: bool,
    /// Nodes of the --local cluster.
    #[arg(long, default_value_t = 3)]
    pub local_nodes: u64,
}

/// A scenario's result: one JSON object (`--json`) or lines for people.
pub struct Report {
    pub json: serde_json::Value,
    pub lines: Vec<String>,
    /// Set when something acknowledged was lost or the run did not finish.
    pub failure: Option<String>,
}

pub async fn run(cli: &Cli, cmd: &BenchCommand) -> Result<(), CliError> {
    let target = match cmd {
        BenchCommand::Schedule(a) => &a.target,
        BenchCommand::E2e(a) => &a.target,
        BenchCommand::Delayed(a) => &a.target,
        BenchCommand::Failover(a) => &a.target,
        BenchCommand::Backlog(a) => &a.target,
        BenchCommand::Soak(a) => &a.target,
    };
    let mut local = match target.local {
        true => {
            let exe = std::env::current_exe().map_err(|e| CliError(format!("cannot find the drover binary: {e}")))?;
            let mut spec = Spec::new(target.local_nodes, exe).flags(&["--auto-register"]);
            spec.log_filter = "info,openraft=error".into();
            Some(LocalCluster::start(spec).await?)
        }
        false => None,
    };
    let client = Arc::new(match &local {
        Some(c) => Client::new(c.endpoints()),
        None => cli.client()?,
    });
    let needs_local =
        |what: &str| CliError(format!("the {what} scenario kills and restarts nodes: run it with --local"));
    // e2e draws its own bar (tasks done); the others, time spent.
    let expected = match cmd {
        BenchCommand::Schedule(a) => Some(a.duration),
        BenchCommand::E2e(_) => None,
        BenchCommand::Delayed(a) => Some(a.lead + a.spread),
        BenchCommand::Failover(a) => Some(a.settle * a.kills as u32),
        BenchCommand::Backlog(_) => None,
        BenchCommand::Soak(a) => Some(a.baseline + a.duration),
    };
    let ticker = (!matches!(cmd, BenchCommand::E2e(_)))
        .then(|| super::progress::Ticker::start("running the scenario", expected, false));
    let report = match cmd {
        BenchCommand::Schedule(args) => schedule::run(&client, args).await,
        BenchCommand::E2e(args) => execution::e2e(&client, args).await,
        BenchCommand::Delayed(args) => execution::delayed(&client, args).await,
        BenchCommand::Failover(args) => match local.as_mut() {
            Some(c) => ops::failover(&client, c, args).await,
            None => Err(needs_local("failover")),
        },
        BenchCommand::Backlog(args) => match local.as_mut() {
            Some(c) => ops::backlog(&client, c, args).await,
            None => Err(needs_local("backlog")),
        },
        BenchCommand::Soak(args) => soak::soak(&client, args).await,
    };
    drop(ticker);
    if let Some(mut c) = local {
        if let Err(e) = c.stop_all().await {
            eprintln!("warning: stopping the local cluster: {e}");
        }
    }
    let report = report?;
    if cli.json {
        println!("{}", report.json);
    } else {
        for l in &report.lines {
            println!("{l}");
        }
    }
    match report.failure {
        Some(f) => Err(CliError(f)),
        None => Ok(()),
    }
}

/// A latency histogram in microseconds, 1 us to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// Register the bench callback (or reset its settings).
pub async fn ensure_callback(client: &Client, name: &str) -> Result<(), CliError> {
    let settings = pb::CallbackSettings {
        name: name.to_string(),
        max_attempts: 5,
        lease_ms: 30_000,
        timeout_ms: 300_000,
        concurrency: 0,
        backoff_initial_ms: 1000,
        backoff_max_ms: 60_000,
        ..Default::default()
    };
    client
        .register_callback(settings)
        .await
        .map_err(|s| CliError(format!("registering callback {name}: {}", status_message(&s))))?;
    Ok(())
}

/// Count the ids that cannot be read back (linearizable reads).
pub async fn verify(client: &Arc<Client>, ids: &[u64]) -> Result<usize, CliError> {
    let mut lost = 0;
    for chunk in ids.chunks(64) {
        let reads = chunk.iter().map(|&id| {
            let client = client.clone();
            async move { client.get_task_from(id as usize, id, false, false).await }
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

/// The cluster's total CPU time, from every member's own status.
pub struct CpuMeter {
    start: Option<f64>,
}

async fn cluster_cpu_seconds(client: &Client) -> Option<f64> {
    let s = client.cluster_status().await.ok()?;
    let mut total = 0.0;
    for m in &s.members {
        total += m.status.as_ref()?.cpu_seconds;
    }
    Some(total)
}

impl CpuMeter {
    pub async fn start(client: &Client) -> Self {
        CpuMeter { start: cluster_cpu_seconds(client).await }
    }

    /// CPU seconds all nodes used since `start` (None if a node did not answer).
    pub async fn finish(&self, client: &Client) -> Option<f64> {
        Some(cluster_cpu_seconds(client).await? - self.start?)
    }
}
