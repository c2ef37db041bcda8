//! Periodic schedules: a replicated object that fires a task per slot.
//!
//! A **slot** is one nominal fire time. Its identity is its local time in
//! the schedule's zone (for `--dst-repeat once`, the default), so the hour
//! repeated when clocks fall back is one slot, fired at its first
//! occurrence; with `both` each occurrence is a slot of its own (the local
//! time plus its UTC offset). A local time skipped when clocks spring
//! forward fires at the first instant after the gap (`--dst-gap shift`,
//! the default) or not at all (`skip`). `--every` slots are multiples of the
//! period from the schedule's start.
//!
//! Only the leader computes fire times ([`Schedule::slots_after`]); apply
//! fires a slot only if it is later than the schedule's last fired slot (a
//! compare-and-set), so a slot fires once whatever the leaders do.

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// How slots follow each other.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Cadence {
    /// A cron pattern (5 fields, or 6 with seconds, or an `@hourly`-style
    /// macro) read in an IANA zone.
    Cron { expr: String, tz: String },
    /// Every `period_ms` from the schedule's start.
    Every { period_ms: u64 },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DstRepeat {
    /// A local time that occurs twice fires once, at its first occurrence.
    Once,
    /// It fires at both occurrences.
    Both,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DstGap {
    /// A local time skipped by the clock change fires at the first instant
    /// after the gap.
    Shift,
    /// It does not fire.
    Skip,
}

/// What a slot does while the schedule's previous run is still active
/// (retries count as active).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// The slot is skipped (counted).
    Skip,
    /// The newest such slot waits; it runs when the active run ends.
    BufferOne,
    /// Every such slot waits (at most [`MAX_BUFFERED`]).
    BufferAll,
    /// Runs at once, beside the active run.
    Allow,
    /// The active run is cancelled; the new one runs.
    CancelOther,
}

/// Which missed slots fire after an outage or an election.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Catchup {
    /// The newest missed slot, if within the catch-up window.
    Latest,
    /// All of them, oldest first (at most [`MAX_CATCHUP`]).
    All,
    /// None.
    None,
}

/// Most slots buffered by `buffer-all`.
pub const MAX_BUFFERED: usize = 100;
/// Most missed slots `--catchup all` fires.
pub const MAX_CATCHUP: usize = 1_000;
/// Runs a schedule remembers.
pub const MAX_RUNS: usize = 10;

/// When a schedule fires.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub cadence: Cadence,
    /// No slot before this (Unix ms).
    pub start_ms: Option<u64>,
    /// No slot after this (Unix ms).
    pub end_ms: Option<u64>,
    /// Fire up to this much after a slot's nominal time (a hash of the
    /// schedule and the slot, smaller than the gap to the next slot).
    pub jitter_ms: u64,
    pub dst_repeat: DstRepeat,
    pub dst_gap: DstGap,
}

/// The task each slot creates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskTemplate {
    pub callback: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub priority: u8,
    pub collection: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SchedulePolicy {
    pub overlap: Overlap,
    pub catchup: Catchup,
    pub catchup_window_ms: u64,
    /// A run that ends failed or dead pauses the schedule.
    pub pause_on_failure: bool,
}

/// One nominal fire time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The nominal instant, Unix ms.
    pub at_ms: u64,
    /// Its identity: local time (and offset, for `both`), or the instant
    /// for `--every`. Names the task's idempotency key.
    pub id: String,
}

/// A slot that fired, and its task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub slot: Slot,
    pub task_id: u64,
}

/// A schedule as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub spec: ScheduleSpec,
    pub template: TaskTemplate,
    pub policy: SchedulePolicy,
    /// When it was created (replicated time).
    pub created_ms: u64,
    pub paused: bool,
    /// Why it is paused (an operator's note, or the failure that paused it).
    pub note: String,
    /// The newest slot fired or skipped: only later slots may fire.
    pub last_slot: Option<Slot>,
    /// Slots at or before this (Unix ms) never fire (set by a resume that
    /// does not catch up).
    pub not_before_ms: u64,
    /// Its tasks that have not finished (retries included).
    pub active: Vec<u64>,
    /// Slots waiting for the active run to end.
    pub buffered: Vec<Slot>,
    pub fired: u64,
    pub skipped: u64,
    /// The last [`MAX_RUNS`] runs, oldest first.
    pub runs: Vec<Run>,
}

impl Schedule {
    /// A new schedule: nothing fired yet, not paused.
    pub fn new(name: String, spec: ScheduleSpec, template: TaskTemplate, policy: SchedulePolicy) -> Self {
        Schedule {
            name,
            spec,
            template,
            policy,
            created_ms: 0,
            paused: false,
            note: String::new(),
            last_slot: None,
            not_before_ms: 0,
            active: Vec::new(),
            buffered: Vec::new(),
            fired: 0,
            skipped: 0,
            runs: Vec::new(),
        }
    }

    /// The idempotency key of the task a slot creates.
    pub fn task_key(&self, slot: &Slot) -> String {
        format!("schedule:{}:{}", self.name, slot.id)
    }

    /// Up to `limit` slots strictly after `after_ms` (and after the start,
    /// before the end), in time order.
    pub fn slots_after(&self, after_ms: u64, limit: usize) -> Result<Vec<Slot>, String> {
        let after_ms = after_ms.max(self.spec.start_ms.map_or(0, |s| s.saturating_sub(1)));
        let mut out = match &self.spec.cadence {
            Cadence::Every { period_ms } => {
                let anchor = self.spec.start_ms.unwrap_or(self.created_ms);
                let period = (*period_ms).max(1);
                let first = if after_ms < anchor { 0 } else { (after_ms - anchor) / period + 1 };
                (first..first + limit as u64)
                    .map(|k| anchor + k * period)
                    .map(|at| Slot { at_ms: at, id: at.to_string() })
                    .collect()
            }
            Cadence::Cron { expr, tz } => {
                cron_slots(expr, tz, self.spec.dst_repeat, self.spec.dst_gap, after_ms, limit)?
            }
        };
        if let Some(end) = self.spec.end_ms {
            out.retain(|s| s.at_ms <= end);
        }
        Ok(out)
    }

    /// When the leader fires `slot`: its nominal time plus a deterministic
    /// jitter (a hash of the schedule and the slot) below both `--jitter`
    /// and the gap to `next`.
    pub fn fire_at(&self, slot: &Slot, next: Option<&Slot>) -> u64 {
        if self.spec.jitter_ms == 0 {
            return slot.at_ms;
        }
        let gap = next.map_or(u64::MAX, |n| n.at_ms.saturating_sub(slot.at_ms));
        let bound = self.spec.jitter_ms.min(gap.saturating_sub(1));
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name.bytes().chain([0]).chain(slot.id.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        slot.at_ms + if bound == 0 { 0 } else { super::callback::splitmix64(h) % (bound + 1) }
    }
}

/// Parse a cron pattern: 5 fields, 6 with seconds, or a macro.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!("cron pattern {expr:?} has {fields} fields; use 5 (minute hour day month weekday) or 6 (with seconds first)"));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron pattern {expr:?}: {e}"))
}

/// Parse an IANA zone name.
pub fn parse_tz(tz: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(tz)
        .map_err(|_| format!("unknown time zone {tz:?}; use an IANA name like Europe/Berlin or UTC"))
}

/// The first instant at or after the local time `naive` that exists in
/// `tz` (the end of a daylight-saving gap).
fn after_gap(tz: &chrono_tz::Tz, naive: NaiveDateTime) -> Option<DateTime<chrono_tz::Tz>> {
    let minute = naive.and_utc().timestamp().div_euclid(60) * 60;
    (1..=240).find_map(|m| {
        let candidate = DateTime::<Utc>::from_timestamp(minute + 60 * m, 0)?.naive_utc();
        tz.from_local_datetime(&candidate).earliest()
    })
}

fn cron_slots(
    expr: &str,
    tz_name: &str,
    repeat: DstRepeat,
    gap: DstGap,
    after_ms: u64,
    limit: usize,
) -> Result<Vec<Slot>, String> {
    let cron = parse_cron(expr)?;
    let tz = parse_tz(tz_name)?;
    // Walk local (naive) times, read as if UTC, from 3 hours before the
    // local time of `after_ms`: an instant after it may have an earlier
    // local time (the second pass of a repeated hour).
    let local_after =
        Utc.timestamp_millis_opt(after_ms as i64).single().ok_or("time out of range")?.with_timezone(&tz).naive_local();
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let start = (local_after - chrono::Duration::hours(3)).and_utc().max(epoch);
    // Whole seconds: croner keeps the cursor's fraction of a second, and a
    // slot is a whole second (the same slot computed from two starting
    // points must have one time).
    let mut cursor = DateTime::<Utc>::from_timestamp(start.timestamp(), 0).unwrap_or(epoch);
    let mut out: Vec<Slot> = Vec::new();
    // Once `limit` slots are in, go on for 3 more local hours: a later
    // local time can be an earlier instant around a clock change.
    let mut horizon: Option<NaiveDateTime> = None;
    // Bounded, so that a pattern that never matches ends.
    for _ in 0..(limit * 2 + 400) {
        let Ok(next) = cron.find_next_occurrence(&cursor, false) else { break };
        cursor = next;
        let naive = next.naive_utc();
        if horizon.is_some_and(|h| naive > h) {
            break;
        }
        let id = naive.format("%Y-%m-%dT%H:%M:%S").to_string();
        let instants: Vec<(DateTime<chrono_tz::Tz>, String)> = match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => vec![(t, id)],
            LocalResult::Ambiguous(a, b) => match repeat {
                DstRepeat::Once => vec![(a, id)],
                DstRepeat::Both => {
                    vec![(a, format!("{id}{}", a.format("%:z"))), (b, format!("{id}{}", b.format("%:z")))]
                }
            },
            LocalResult::None => match gap {
                DstGap::Shift => after_gap(&tz, naive).map(|t| (t, id)).into_iter().collect(),
                DstGap::Skip => Vec::new(),
            },
        };
        for (t, id) in instants {
            let at = t.timestamp_millis().max(0) as u64;
            if at > after_ms && !out.iter().any(|s| s.id == id) {
                out.push(Slot { at_ms: at, id });
            }
        }
        if horizon.is_none() && out.len() >= limit {
            horizon = Some(naive + chrono::Duration::hours(3));
        }
    }
    out.sort();
    // A shifted slot can land on the instant of the slot after the gap
    // (02:00 shifted to 03:00, and 03:00 itself): one instant, one slot.
    out.dedup_by_key(|s| s.at_ms);
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
mod tests;
