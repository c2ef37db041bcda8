//! `drover gc status`: what retention has deleted and what it holds back.

use std::time::{Duration, UNIX_EPOCH};

use clap::Subcommand;
use serde_json::json;

use super::{failed, Cli, CliError};

#[derive(Subcommand, Debug)]
pub enum GcCommand {
    /// Rows deleted so far, the oldest finished task still kept, and the backlog past its retention.
    Status,
}

fn retention(ms: u64) -> String {
    if ms == 0 {
        "forever".into()
    } else {
        humantime::format_duration(Duration::from_millis(ms)).to_string()
    }
}

pub async fn run(cli: &Cli, cmd: &GcCommand) -> Result<(), CliError> {
    match cmd {
        GcCommand::Status => {
            let r = cli.client()?.gc_status().await.map_err(failed)?;
            let oldest = r
                .oldest_finished_unix_ms
                .map(|t| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(t)).to_string());
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "collected": r.collected,
                        "oldest_finished": oldest,
                        "oldest_finished_unix_ms": r.oldest_finished_unix_ms,
                        "backlog": r.backlog,
                        "finished": r.finished,
                        "tasks": r.tasks,
                        "defaults_ms": {
                            "succeeded": r.default_succeeded_ms, "cancelled": r.default_cancelled_ms,
                            "failed": r.default_failed_ms, "dead": r.default_dead_ms,
                        },
                    })
                );
                return Ok(());
            }
            println!("rows deleted so far:     {}", r.collected);
            println!("tasks kept:              {} ({} finished)", r.tasks, r.finished);
            println!("oldest finished kept:    {}", oldest.as_deref().unwrap_or("-"));
            println!("backlog (past retention): {}", r.backlog);
            println!(
                "defaults:                succeeded {}, cancelled {}, failed {}, dead {}",
                retention(r.default_succeeded_ms),
                retention(r.default_cancelled_ms),
                retention(r.default_failed_ms),
                retention(r.default_dead_ms)
            );
            Ok(())
        }
    }
}
