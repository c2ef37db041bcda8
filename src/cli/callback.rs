//! `drover callback ...`: register callbacks and see their queues.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{failed, parse_duration, Cli, CliError};
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum CallbackCommand {
    /// Create a callback, or update its settings (every setting: the ones not given take their defaults).
    #[command(after_help = "Examples:\n  \
        drover callback register send_email --max-attempts 10 --lease 1m\n  \
        drover callback register send_email --rate 50/s --burst 10 --concurrency 100\n  \
        drover callback register report --retain-succeeded 1h --retain-dead 90d")]
    Register(RegisterArgs),
    /// Every callback with its queue depths per priority (and per collection), running and dead counts.
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
    /// Most starts across all workers: N/s, N/m or N/h (e.g. 50/s). Limited tasks wait ready.
    #[arg(long, value_parser = parse_rate, value_name = "N/s|N/m|N/h")]
    pub rate: Option<(u32, u64)>,
    /// Most starts at once after an idle spell, with --rate (default: N, the rate's count).
    #[arg(long, requires = "rate")]
    pub burst: Option<u32>,
    /// Keep succeeded tasks this long after they finish (default: the cluster's, 24h).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retain_succeeded: Option<Duration>,
    /// Keep cancelled tasks this long (default: the cluster's, 24h).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retain_cancelled: Option<Duration>,
    /// Keep failed tasks this long (default: the cluster's, 7d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retain_failed: Option<Duration>,
    /// Keep dead tasks (the dead-letter queue) this long (default: the cluster's, 30d).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub retain_dead: Option<Duration>,
}

/// "50/s", "300/m", "1000/h" into (count, period in ms).
pub fn parse_rate(s: &str) -> Result<(u32, u64), String> {
    let bad = || format!("{s:?} is not a rate like 50/s, 300/m or 1000/h");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    if n == 0 {
        return Err("a rate of 0 would never start anything; leave --rate out for no limit".into());
    }
    let period = match unit.trim() {
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        _ => return Err(bad()),
    };
    Ok((n, period))
}

fn ms(d: Option<Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

pub async fn run(cli: &Cli, cmd: &CallbackCommand) -> Result<(), CliError> {
    let client = cli.client()?;
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
                rate_count: a.rate.map_or(0, |(n, _)| n),
                rate_period_ms: a.rate.map_or(0, |(_, p)| p),
                rate_burst: a.rate.map_or(0, |(n, _)| a.burst.unwrap_or(n)),
                retain_succeeded_ms: ms(a.retain_succeeded),
                retain_cancelled_ms: ms(a.retain_cancelled),
                retain_failed_ms: ms(a.retain_failed),
                retain_dead_ms: ms(a.retain_dead),
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
                    "rate": (s.rate_count > 0).then(|| json!({"count": s.rate_count, "period_ms": s.rate_period_ms, "burst": s.rate_burst})),
                    "retain_ms": json!({"succeeded": s.retain_succeeded_ms, "cancelled": s.retain_cancelled_ms, "failed": s.retain_failed_ms, "dead": s.retain_dead_ms}),
                    "queues": c.queues.iter().map(|q| json!({"priority": q.priority, "ready": q.ready, "scheduled": q.scheduled})).collect::<Vec<_>>(),
                    "collections": c.collections.iter().map(|q| json!({"collection": q.collection, "ready": q.ready, "scheduled": q.scheduled})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({ "callbacks": v }));
        return;
    }
    println!(
        "{:<24} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>6}  QUEUES (priority:ready/scheduled)",
        "NAME", "LEASE", "TIMEOUT", "TRIES", "LIMIT", "RATE", "RUNNING", "DEAD"
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
        let rate = match (s.rate_count, s.rate_period_ms) {
            (0, _) => "-".to_string(),
            (n, 1_000) => format!("{n}/s"),
            (n, 60_000) => format!("{n}/m"),
            (n, 3_600_000) => format!("{n}/h"),
            (n, p) => format!("{n}/{p}ms"),
        };
        println!(
            "{:<24} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>6}  {}",
            s.name,
            humantime::format_duration(Duration::from_millis(s.lease_ms)).to_string(),
            humantime::format_duration(Duration::from_millis(s.timeout_ms)).to_string(),
            s.max_attempts,
            limit,
            rate,
            c.running,
            c.dead,
            queues
        );
        for q in &c.collections {
            println!("{:<24} {}/{}", format!("  /{}", q.collection), q.ready, q.scheduled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_unit_and_zero_is_refused() {
        assert_eq!(parse_rate("50/s"), Ok((50, 1_000)));
        assert_eq!(parse_rate("300/m"), Ok((300, 60_000)));
        assert_eq!(parse_rate("7/h"), Ok((7, 3_600_000)));
        assert!(parse_rate("0/s").unwrap_err().contains("never"));
        assert!(parse_rate("50").is_err());
        assert!(parse_rate("50/d").is_err());
        assert!(parse_rate("x/s").is_err());
    }
}
