//! `drover schedule ...`: periodic schedules that fire a task per slot.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::json;

use super::task::state_name;
use super::{failed, parse_duration, Cli, CliError};
use drover::pb;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Create a schedule: a task template fired per slot of a cron pattern or a period.
    #[command(after_help = "Examples:\n  \
        drover schedule create nightly-report --callback report --cron '0 2 * * *' --tz Europe/Berlin\n  \
        drover schedule create heartbeat --callback ping --every 30s --overlap skip --catchup none\n  \
        drover schedule create sync --callback sync --cron '*/5 * * * *' --overlap buffer-one --pause-on-failure\n\n\
        A slot fires once, whatever happens to the leaders: the firing is a compare-and-set on the\n\
        schedule's last slot, and each task's idempotency key names the schedule and the slot.\n\
        Local times repeated when clocks fall back fire once (--dst-repeat once) or twice (both);\n\
        local times skipped when clocks spring forward fire at the end of the gap (--dst-gap shift)\n\
        or not at all (skip).")]
    Create(DefinitionArgs),
    /// Replace a schedule's definition; its last slot, runs and counts are kept.
    Update(DefinitionArgs),
    /// Every schedule with its state and next fire time.
    List,
    /// A schedule: definition, state, the next 5 fire times and the last 10 runs.
    Get { name: String },
    /// Delete a schedule (its tasks stay).
    Delete { name: String },
    /// Stop firing until resumed.
    Pause {
        name: String,
        /// Why (shown by get and list).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Fire again. The slots missed while paused fire only with --catch-up (under the catch-up policy).
    Resume {
        name: String,
        #[arg(long)]
        catch_up: bool,
    },
    /// Run one task now, under the overlap policy; the slots are not moved.
    Trigger { name: String },
    /// Run the slots between two times (at most 1000), oldest first; a slot that already has a task gets no second one.
    #[command(after_help = "Examples:\n  \
        drover schedule backfill nightly-report --from 2026-11-01T00:00:00Z --to 2026-11-07T23:59:59Z --dry-run\n  \
        drover schedule backfill nightly-report --from 2026-11-01T00:00:00Z --to 2026-11-07T23:59:59Z\n\n\
        Each slot's task has the slot's own key (schedule:NAME:SLOT), exactly as if it had fired on\n\
        time, so a backfill run twice, or over slots that did fire, creates nothing twice. The overlap\n\
        policy and the schedule's last slot are not consulted or moved.")]
    Backfill {
        name: String,
        /// First slot time (RFC 3339), inclusive.
        #[arg(long, value_name = "RFC3339")]
        from: String,
        /// Last slot time (RFC 3339), inclusive.
        #[arg(long, value_name = "RFC3339")]
        to: String,
        /// Only list the slots and the tasks they already have.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug)]
pub struct DefinitionArgs {
    /// Schedule name: 1-128 of [A-Za-z0-9_.:-].
    pub name: String,
    /// The callback each slot's task runs.
    #[arg(long)]
    pub callback: String,
    /// Cron pattern: 5 fields (minute hour day month weekday), 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub cron: Option<String>,
    /// A fixed period instead of a cron pattern (at least 1s).
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// IANA time zone of the cron pattern (e.g. America/New_York); default UTC.
    #[arg(long)]
    pub tz: Option<String>,
    /// Payload of every task, as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload of every task, read from a file.
    #[arg(long, value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// Priority of every task: 0 (lowest) to 9.
    #[arg(long, default_value_t = 0)]
    pub priority: u32,
    /// Collection of every task (gates can pause or drop it).
    #[arg(long)]
    pub collection: Option<String>,
    /// When the previous run is still active: skip, buffer-one, buffer-all, allow or cancel-other.
    #[arg(long, default_value = "skip")]
    pub overlap: String,
    /// Missed slots after an outage: latest (the newest, within --catchup-window), all (oldest first, at most 1000) or none.
    #[arg(long, default_value = "latest")]
    pub catchup: String,
    /// With --catchup latest: how old the newest missed slot may be and still fire.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub catchup_window: Duration,
    /// Fire up to this much after each slot (deterministic per slot; the slot keeps its nominal time).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub jitter: Duration,
    /// No slot before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub start: Option<String>,
    /// No slot after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    pub end: Option<String>,
    /// A run that ends failed or dead pauses the schedule.
    #[arg(long)]
    pub pause_on_failure: bool,
    /// A local time repeated when clocks fall back fires once or both times.
    #[arg(long, default_value = "once")]
    pub dst_repeat: String,
    /// A local time skipped when clocks spring forward: shift (fire at the end of the gap) or skip.
    #[arg(long, default_value = "shift")]
    pub dst_gap: String,
}

fn rfc3339_ms(flag: &str, s: &str) -> Result<u64, CliError> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| CliError(format!("{flag} {s:?} is not an RFC 3339 time like 2026-12-01T09:00:00Z: {e}")))?;
    Ok(t.duration_since(UNIX_EPOCH).map_err(|_| CliError(format!("{flag} {s:?} is before 1970")))?.as_millis() as u64)
}

fn definition(a: &DefinitionArgs) -> Result<pb::ScheduleDefinition, CliError> {
    let payload = match (&a.payload, &a.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).map_err(|e| CliError(format!("--payload-file {}: {e}", f.display())))?,
        (None, None) => Vec::new(),
    };
    Ok(pb::ScheduleDefinition {
        name: a.name.clone(),
        callback: a.callback.clone(),
        cron: a.cron.clone().unwrap_or_default(),
        tz: a.tz.clone().unwrap_or_default(),
        every_ms: a.every.map_or(0, |d| d.as_millis() as u64),
        payload,
        priority: a.priority,
        collection: a.collection.clone().unwrap_or_default(),
        overlap: a.overlap.clone(),
        catchup: a.catchup.clone(),
        catchup_window_ms: a.catchup_window.as_millis() as u64,
        jitter_ms: a.jitter.as_millis() as u64,
        start_unix_ms: a.start.as_deref().map(|s| rfc3339_ms("--start", s)).transpose()?,
        end_unix_ms: a.end.as_deref().map(|s| rfc3339_ms("--end", s)).transpose()?,
        pause_on_failure: a.pause_on_failure,
        dst_repeat: a.dst_repeat.clone(),
        dst_gap: a.dst_gap.clone(),
        // Each fire's trace links to the context it was created under.
        trace: super::trace_from_env()?,
    })
}

fn fmt_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn cadence(d: &pb::ScheduleDefinition) -> String {
    if d.every_ms > 0 {
        format!("every {}", humantime::format_duration(Duration::from_millis(d.every_ms)))
    } else {
        format!("cron {:?} {}", d.cron, d.tz)
    }
}

fn slot_json(s: &pb::SlotInfo) -> serde_json::Value {
    json!({ "at": fmt_time(s.at_unix_ms), "at_unix_ms": s.at_unix_ms, "id": s.id })
}

fn info_json(i: &pb::ScheduleInfo) -> serde_json::Value {
    let d = i.definition.clone().unwrap_or_default();
    json!({
        "name": d.name, "callback": d.callback, "cron": if d.cron.is_empty() { None } else { Some(&d.cron) },
        "tz": if d.tz.is_empty() { None } else { Some(&d.tz) }, "every_ms": if d.every_ms == 0 { None } else { Some(d.every_ms) },
        "priority": d.priority, "collection": if d.collection.is_empty() { None } else { Some(&d.collection) },
        "overlap": d.overlap, "catchup": d.catchup, "catchup_window_ms": d.catchup_window_ms, "jitter_ms": d.jitter_ms,
        "start_unix_ms": d.start_unix_ms, "end_unix_ms": d.end_unix_ms, "pause_on_failure": d.pause_on_failure,
        "dst_repeat": d.dst_repeat, "dst_gap": d.dst_gap,
        "paused": i.paused, "note": i.note, "fired": i.fired, "skipped": i.skipped, "active": i.active, "buffered": i.buffered,
        "last_slot": i.last_slot.as_ref().map(slot_json),
        "next": i.next.iter().map(slot_json).collect::<Vec<_>>(),
        "runs": i.runs.iter().map(|r| json!({
            "slot": r.slot.as_ref().map(slot_json), "task_id": r.task_id, "state": state_name(r.state),
        })).collect::<Vec<_>>(),
    })
}

fn print_info(i: &pb::ScheduleInfo) {
    let d = i.definition.clone().unwrap_or_default();
    println!("name:        {}", d.name);
    println!("callback:    {}", d.callback);
    println!("when:        {}", cadence(&d));
    println!(
        "policies:    overlap {}, catch-up {} (window {}), dst {} / {}{}",
        d.overlap,
        d.catchup,
        humantime::format_duration(Duration::from_millis(d.catchup_window_ms)),
        d.dst_repeat,
        d.dst_gap,
        if d.pause_on_failure { ", pause on failure" } else { "" }
    );
    println!(
        "state:       {}{}",
        if i.paused { "paused" } else { "active" },
        if i.note.is_empty() { String::new() } else { format!(" ({})", i.note) }
    );
    println!("fired:       {} (skipped {}, running {}, buffered {})", i.fired, i.skipped, i.active.len(), i.buffered);
    println!("next:");
    for s in &i.next {
        println!("  {}  {}", fmt_time(s.at_unix_ms), s.id);
    }
    println!("runs:");
    for r in &i.runs {
        let slot = r.slot.clone().unwrap_or_default();
        println!("  {}  task {:<10} {}", fmt_time(slot.at_unix_ms), r.task_id, state_name(r.state));
    }
}

fn print_backfill(json_out: bool, dry_run: bool, r: &pb::BackfillScheduleResponse) {
    if json_out {
        let slots: Vec<_> = r
            .slots
            .iter()
            .map(|b| {
                json!({
                    "slot": b.slot.as_ref().map(slot_json),
                    "task_id": if b.task_id == 0 { None } else { Some(b.task_id) },
                    "created": b.created,
                })
            })
            .collect();
        println!("{}", json!({ "dry_run": dry_run, "slots": slots }));
        return;
    }
    for b in &r.slots {
        let slot = b.slot.clone().unwrap_or_default();
        let what = match (b.task_id, b.created) {
            (0, _) => "no task yet".to_string(),
            (id, true) => format!("task {id} (new)"),
            (id, false) => format!("task {id} (already there)"),
        };
        println!("  {}  {}", fmt_time(slot.at_unix_ms), what);
    }
    let new = r.slots.iter().filter(|b| b.created).count();
    match dry_run {
        true => println!(
            "{} slot(s); {} without a task (dry run: nothing scheduled)",
            r.slots.len(),
            r.slots.iter().filter(|b| b.task_id == 0).count()
        ),
        false => println!("{} slot(s); {new} task(s) scheduled", r.slots.len()),
    }
}

pub async fn run(cli: &Cli, cmd: &ScheduleCommand) -> Result<(), CliError> {
    let client = cli.client()?;
    let info = match cmd {
        ScheduleCommand::Create(a) => client.create_schedule(definition(a)?).await.map_err(failed)?,
        ScheduleCommand::Update(a) => client.update_schedule(definition(a)?).await.map_err(failed)?,
        ScheduleCommand::Get { name } => client.get_schedule(name).await.map_err(failed)?,
        ScheduleCommand::Pause { name, note } => client.pause_schedule(name, note).await.map_err(failed)?,
        ScheduleCommand::Resume { name, catch_up } => client.resume_schedule(name, *catch_up).await.map_err(failed)?,
        ScheduleCommand::Delete { name } => {
            client.delete_schedule(name).await.map_err(failed)?;
            if cli.json {
                println!("{}", json!({ "name": name, "deleted": true }));
            } else {
                println!("deleted schedule {name}");
            }
            return Ok(());
        }
        ScheduleCommand::Trigger { name } => {
            let r = client.trigger_schedule(name).await.map_err(failed)?;
            if cli.json {
                println!("{}", json!({ "name": name, "task_id": r.task_id }));
            } else {
                match r.task_id {
                    Some(id) => println!("{id}"),
                    None => println!("not run: the previous run is still active (overlap policy)"),
                }
            }
            return Ok(());
        }
        ScheduleCommand::Backfill { name, from, to, dry_run } => {
            let req = pb::BackfillScheduleRequest {
                name: name.clone(),
                from_unix_ms: rfc3339_ms("--from", from)?,
                to_unix_ms: rfc3339_ms("--to", to)?,
                dry_run: *dry_run,
            };
            let r = client.backfill_schedule(req).await.map_err(failed)?;
            print_backfill(cli.json, *dry_run, &r);
            return Ok(());
        }
        ScheduleCommand::List => {
            let r = client.list_schedules().await.map_err(failed)?;
            if cli.json {
                println!("{}", json!({ "schedules": r.schedules.iter().map(info_json).collect::<Vec<_>>() }));
                return Ok(());
            }
            println!(
                "{:<24} {:<20} {:<32} {:<8} {:>7} {:>7}  NEXT",
                "NAME", "CALLBACK", "WHEN", "STATE", "FIRED", "SKIPPED"
            );
            for i in &r.schedules {
                let d = i.definition.clone().unwrap_or_default();
                let next = i.next.first().map_or("-".to_string(), |s| fmt_time(s.at_unix_ms));
                println!(
                    "{:<24} {:<20} {:<32} {:<8} {:>7} {:>7}  {}",
                    d.name,
                    d.callback,
                    cadence(&d),
                    if i.paused { "paused" } else { "active" },
                    i.fired,
                    i.skipped,
                    next
                );
            }
            return Ok(());
        }
    };
    if cli.json {
        println!("{}", info_json(&info));
    } else {
        print_info(&info);
    }
    Ok(())
}
