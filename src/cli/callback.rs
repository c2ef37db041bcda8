//! `drover callback ...`: register callbacks and see their queues.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{failed, parse_duration, Cli, CliError};
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum CallbackCommand {
    /// Create a callback, or update its settings.
    Register(RegisterArgs),
    /// Every callback with its queue depths per priority and running count.
    List,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Callback name: 1-128 of [A-Za-z0-9_.:-].
    pub name: String,
    /// Attempts before a task goes to the dead-letter queue.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Lease: a worker must renew within this or the task is re-run.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// Longest one attempt may run.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most tasks running at once across all workers (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub concurrency: u32,
    /// First retry delay (doubles per attempt, with jitter).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub backoff_max: Duration,
}

pub async fn run(cli: &Cli, cmd: &CallbackCommand) -> Result<(), CliError> {
    let client = cli.client();
    match cmd {
        CallbackCommand::Register(a) => {
            let settings = pb::CallbackSettings {
                name: a.name.clone(),
                max_attempts: a.max_attempts,
                lease_ms: a.lease.as_millis() as u64,
                timeout_ms: a.timeout.as_millis() as u64,
                concurrency: a.concurrency,
                backoff_initial_ms: a.backoff_initial.as_millis() as u64,
                backoff_max_ms: a.backoff_max.as_millis() as u64,
            };
            let r = client.register_callback(settings).await.map_err(failed)?;
            if cli.json {
                println!("{}", json!({ "name": a.name, "created": r.created }));
            } else {
                println!("{} callback {}", if r.created { "registered" } else { "updated" }, a.name);
            }
        }
        CallbackCommand::List => {
            let r = client.list_callbacks().await.map_err(failed)?;
            print_list(cli.json, &r);
        }
    }
    Ok(())
}

fn print_list(json_out: bool, r: &pb::ListCallbacksResponse) {
    if json_out {
        let v: Vec<_> = r
            .callbacks
            .iter()
            .map(|c| {
                let s = c.settings.clone().unwrap_or_default();
                json!({
                    "name": s.name, "max_attempts": s.max_attempts, "lease_ms": s.lease_ms, "timeout_ms": s.timeout_ms,
                    "concurrency": s.concurrency, "backoff_initial_ms": s.backoff_initial_ms, "backoff_max_ms": s.backoff_max_ms,
                    "running": c.running, "dead": c.dead,
                    "queues": c.queues.iter().map(|q| json!({"priority": q.priority, "ready": q.ready, "scheduled": q.scheduled})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "callbacks": v }));
        return;
    }
    println!(
        "{:<24} {:>8} {:>8} {:>6} {:>6} {:>8} {:>6}  QUEUES (priority:ready/scheduled)",
        "NAME", "LEASE", "TIMEOUT", "TRIES", "LIMIT", "RUNNING", "DEAD"
    );
    for c in &r.callbacks {
        let s = c.settings.clone().unwrap_or_default();
        let queues = if c.queues.is_empty() {
            "-".to_string()
        } else {
            c.queues
                .iter()
                .map(|q| format!("p{}:{}/{}", q.priority, q.ready, q.scheduled))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let limit = if s.concurrency == 0 { "-".to_string() } else { s.concurrency.to_string() };
        println!(
            "{:<24} {:>8} {:>8} {:>6} {:>6} {:>8} {:>6}  {}",
            s.name,
            humantime::format_duration(Duration::from_millis(s.lease_ms)).to_string(),
            humantime::format_duration(Duration::from_millis(s.timeout_ms)).to_string(),
            s.max_attempts,
            limit,
            c.running,
            c.dead,
            queues
        );
    }
}
