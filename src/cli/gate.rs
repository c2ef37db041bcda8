//! `drover gate ...`: pause or drop a callback, or one collection of its
//! tasks, and open it again (ATF's task gating).

use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{failed, Cli, CliError};
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum GateCommand {
    /// Stop dispatching a callback's (or a collection's) tasks; scheduling continues and running tasks finish.
    #[command(after_help = "Examples:\n  \
        drover gate pause send_email --note 'SMTP provider down'\n  \
        drover gate pause send_email/marketing --until 2h\n  \
        drover gate pause report --until 2026-12-01T09:00:00Z")]
    Pause(SetArgs),
    /// Cancel the pending tasks of a callback (or collection), and every task scheduled into it while the gate stands.
    #[command(after_help = "Examples:\n  \
        drover gate drop send_email/marketing --note 'campaign withdrawn'\n  \
        drover gate drop resize_image --until 30m --cancel-running\n\n\
        Producers still get an OK for tasks scheduled into a dropping gate: the answer says `cancelled`\n\
        and why (the CLI warns on stderr). Tasks already running finish unless --cancel-running.")]
    Drop(DropArgs),
    /// Remove a gate: its tasks are dispatched again.
    Open {
        /// CALLBACK or CALLBACK/COLLECTION.
        gate: String,
    },
    /// Every gate: mode, since, until, note, and the tasks it holds.
    List,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// CALLBACK (all its collections) or CALLBACK/COLLECTION.
    pub gate: String,
    /// End the gate after a duration (30m, 2h) or at a time (RFC 3339), on the cluster's replicated clock.
    #[arg(long, value_name = "DURATION|RFC3339")]
    pub until: Option<String>,
    /// Why: shown by `gate list`, and in the reason of tasks a drop cancels.
    #[arg(long, default_value = "")]
    pub note: String,
}

#[derive(Args, Debug)]
pub struct DropArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// Also ask running tasks in the gate to stop.
    #[arg(long)]
    pub cancel_running: bool,
}

/// "send_email" or "send_email/marketing".
fn split_target(s: &str) -> Result<(String, String), CliError> {
    match s.split_once('/') {
        Some((_, c)) if c.is_empty() || c.contains('/') => {
            Err(CliError(format!("{s:?} is not CALLBACK or CALLBACK/COLLECTION")))
        }
        Some((cb, c)) => Ok((cb.to_string(), c.to_string())),
        None => Ok((s.to_string(), String::new())),
    }
}

/// A duration from now, or an RFC 3339 time.
fn parse_until(s: &str) -> Result<pb::set_gate_request::Until, CliError> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(pb::set_gate_request::Until::ForMs(d.as_millis() as u64));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        CliError(format!("--until {s:?} is neither a duration (30m, 2h) nor an RFC 3339 time (2026-12-01T09:00:00Z)"))
    })?;
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| CliError(format!("--until {s:?} is before 1970")))?;
    Ok(pb::set_gate_request::Until::UntilUnixMs(ms.as_millis() as u64))
}

fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn mode_name(mode: i32) -> &'static str {
    match pb::GateMode::try_from(mode) {
        Ok(pb::GateMode::Pause) => "pause",
        Ok(pb::GateMode::Drop) => "drop",
        _ => "unknown",
    }
}

fn gate_json(g: &pb::Gate) -> serde_json::Value {
    json!({
        "callback": g.callback,
        "collection": if g.collection.is_empty() { None } else { Some(&g.collection) },
        "mode": mode_name(g.mode),
        "since": fmt_time(g.since_unix_ms),
        "since_unix_ms": g.since_unix_ms,
        "since_index": g.since_index,
        "until": g.until_unix_ms.map(fmt_time),
        "until_unix_ms": g.until_unix_ms,
        "note": g.note,
        "pending": g.pending,
        "running": g.running,
        "active": g.active,
    })
}

fn target_name(g: &pb::Gate) -> String {
    if g.collection.is_empty() {
        g.callback.clone()
    } else {
        format!("{}/{}", g.callback, g.collection)
    }
}

pub async fn run(cli: &Cli, cmd: &GateCommand) -> Result<(), CliError> {
    let client = cli.client()?;
    match cmd {
        GateCommand::Pause(a) => set(cli, &client, a, pb::GateMode::Pause, false).await,
        GateCommand::Drop(a) => set(cli, &client, &a.set, pb::GateMode::Drop, a.cancel_running).await,
        GateCommand::Open { gate } => {
            let (callback, collection) = split_target(gate)?;
            let r = client.open_gate(&callback, &collection).await.map_err(failed)?;
            if !r.existed {
                return Err(CliError(format!("not found: no gate on {gate} (see `drover gate list`)")));
            }
            if cli.json {
                println!("{}", json!({ "gate": gate, "existed": r.existed }));
            } else {
                println!("opened gate {gate}");
            }
            Ok(())
        }
        GateCommand::List => {
            let r = client.list_gates().await.map_err(failed)?;
            if cli.json {
                println!("{}", json!({ "gates": r.gates.iter().map(gate_json).collect::<Vec<_>>() }));
                return Ok(());
            }
            if r.gates.is_empty() {
                println!("no gates");
                return Ok(());
            }
            println!(
                "{:<32} {:<6} {:<20} {:<20} {:>8} {:>8}  NOTE",
                "GATE", "MODE", "SINCE", "UNTIL", "PENDING", "RUNNING"
            );
            for g in &r.gates {
                let until = match (g.until_unix_ms, g.active) {
                    (None, _) => "-".to_string(),
                    (Some(t), true) => fmt_time(t),
                    (Some(t), false) => format!("{} (ended)", fmt_time(t)),
                };
                println!(
                    "{:<32} {:<6} {:<20} {:<20} {:>8} {:>8}  {}",
                    target_name(g),
                    mode_name(g.mode),
                    fmt_time(g.since_unix_ms),
                    until,
                    g.pending,
                    g.running,
                    g.note
                );
            }
            Ok(())
        }
    }
}

async fn set(
    cli: &Cli,
    client: &drover::client::Client,
    a: &SetArgs,
    mode: pb::GateMode,
    cancel_running: bool,
) -> Result<(), CliError> {
    let (callback, collection) = split_target(&a.gate)?;
    let until = a.until.as_deref().map(parse_until).transpose()?;
    let req =
        pb::SetGateRequest { callback, collection, mode: mode as i32, until, note: a.note.clone(), cancel_running };
    let r = client.set_gate(req).await.map_err(failed)?;
    if cli.json {
        println!(
            "{}",
            json!({
                "gate": r.gate.as_ref().map(gate_json),
                "cancelled": r.cancelled,
                "cancel_requested": r.cancel_requested,
            })
        );
        return Ok(());
    }
    let verb = if mode == pb::GateMode::Pause { "paused" } else { "dropping" };
    let until =
        r.gate.as_ref().and_then(|g| g.until_unix_ms).map(|t| format!(" until {}", fmt_time(t))).unwrap_or_default();
    println!("{} {verb}{until}", a.gate);
    if mode == pb::GateMode::Drop {
        println!("cancelled {} pending task(s); asked {} running task(s) to stop", r.cancelled, r.cancel_requested);
    } else if let Some(g) = &r.gate {
        println!("holding {} pending task(s); {} running task(s) will finish", g.pending, g.running);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_untils_parse() {
        assert_eq!(split_target("a").unwrap(), ("a".into(), String::new()));
        assert_eq!(split_target("a/b").unwrap(), ("a".into(), "b".into()));
        assert!(split_target("a/").is_err());
        assert!(split_target("a/b/c").is_err());
        assert_eq!(parse_until("2h").unwrap(), pb::set_gate_request::Until::ForMs(7_200_000));
        assert_eq!(
            parse_until("2026-12-01T00:00:00Z").unwrap(),
            pb::set_gate_request::Until::UntilUnixMs(1_796_083_200_000)
        );
        assert!(parse_until("tomorrow").is_err());
    }
}
