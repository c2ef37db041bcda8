//! Periodic schedules at the edge: validation of definitions (cron, zone,
//! policies), conversions, and the `Scheduler` service's schedule handlers
//! (leader side).

use super::convert::state_to_pb;
use super::scheduler::SchedulerService;
use super::validate;
use super::ApiError;
use crate::config::Limits;
use crate::domain::schedule::*;
use crate::domain::trace::TraceContext;
use crate::domain::{CommandResponse, Operation};
use crate::pb;
use crate::store::index;

/// Longest schedule note, bytes.
const MAX_NOTE: usize = 1024;

fn pick<T: Copy>(what: &str, value: &str, default: T, options: &[(&str, T)]) -> Result<T, ApiError> {
    if value.is_empty() {
        return Ok(default);
    }
    options.iter().find(|(name, _)| *name == value).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        ApiError::InvalidArgument(format!("{what} {value:?} is not one of {}", names.join(", ")))
    })
}

/// A schedule from its definition, checked; its state empty.
pub fn schedule_from_pb(d: &pb::ScheduleDefinition, limits: &Limits) -> Result<Schedule, ApiError> {
    validate::label_name("schedule", &d.name, limits)?;
    validate::callback_name(&d.callback, limits)?;
    let cadence = match (d.cron.is_empty(), d.every_ms) {
        (false, 0) => {
            parse_cron(&d.cron).map_err(ApiError::InvalidArgument)?;
            let tz = if d.tz.is_empty() { "UTC".to_string() } else { d.tz.clone() };
            parse_tz(&tz).map_err(ApiError::InvalidArgument)?;
            Cadence::Cron { expr: d.cron.clone(), tz }
        }
        (true, ms) if ms >= 1_000 => {
            if !d.tz.is_empty() {
                return Err(ApiError::InvalidArgument("--tz goes with --cron, not --every".into()));
            }
            Cadence::Every { period_ms: ms }
        }
        (true, 0) => return Err(ApiError::InvalidArgument("give --cron EXPR or --every DURATION".into())),
        (true, _) => return Err(ApiError::InvalidArgument("--every must be at least 1s".into())),
        (false, _) => return Err(ApiError::InvalidArgument("give --cron or --every, not both".into())),
    };
    if d.payload.len() > limits.max_payload_bytes {
        return Err(ApiError::InvalidArgument(format!(
            "payload is {} bytes; the limit is {}",
            d.payload.len(),
            limits.max_payload_bytes
        )));
    }
    if d.priority > validate::MAX_PRIORITY {
        return Err(ApiError::InvalidArgument(format!("priority {} is out of range 0..=9", d.priority)));
    }
    let collection = if d.collection.is_empty() {
        None
    } else {
        validate::collection_name(&d.collection, limits)?;
        Some(d.collection.clone())
    };
    if let (Some(start), Some(end)) = (d.start_unix_ms, d.end_unix_ms) {
        if end <= start {
            return Err(ApiError::InvalidArgument("--end must be after --start".into()));
        }
    }
    let overlap = pick(
        "overlap",
        &d.overlap,
        Overlap::Skip,
        &[
            ("skip", Overlap::Skip),
            ("buffer-one", Overlap::BufferOne),
            ("buffer-all", Overlap::BufferAll),
            ("allow", Overlap::Allow),
            ("cancel-other", Overlap::CancelOther),
        ],
    )?;
    let catchup = pick(
        "catchup",
        &d.catchup,
        Catchup::Latest,
        &[("latest", Catchup::Latest), ("all", Catchup::All), ("none", Catchup::None)],
    )?;
    let dst_repeat =
        pick("dst-repeat", &d.dst_repeat, DstRepeat::Once, &[("once", DstRepeat::Once), ("both", DstRepeat::Both)])?;
    let dst_gap = pick("dst-gap", &d.dst_gap, DstGap::Shift, &[("shift", DstGap::Shift), ("skip", DstGap::Skip)])?;
    Ok(Schedule::new(
        d.name.clone(),
        ScheduleSpec {
            cadence,
            start_ms: d.start_unix_ms,
            end_ms: d.end_unix_ms,
            jitter_ms: d.jitter_ms,
            dst_repeat,
            dst_gap,
        },
        TaskTemplate {
            callback: d.callback.clone(),
            payload: d.payload.clone(),
            priority: d.priority as u8,
            collection,
        },
        SchedulePolicy {
            overlap,
            catchup,
            catchup_window_ms: if d.catchup_window_ms == 0 { 24 * 3_600_000 } else { d.catchup_window_ms },
            pause_on_failure: d.pause_on_failure,
        },
    ))
}

fn name_of<T: Copy + PartialEq>(value: T, options: &[(&'static str, T)]) -> String {
    options.iter().find(|(_, v)| *v == value).map_or("", |(n, _)| n).to_string()
}

pub fn definition_to_pb(s: &Schedule) -> pb::ScheduleDefinition {
    let (cron, tz, every_ms) = match &s.spec.cadence {
        Cadence::Cron { expr, tz } => (expr.clone(), tz.clone(), 0),
        Cadence::Every { period_ms } => (String::new(), String::new(), *period_ms),
    };
    pb::ScheduleDefinition {
        name: s.name.clone(),
        callback: s.template.callback.clone(),
        cron,
        tz,
        every_ms,
        payload: s.template.payload.clone(),
        priority: u32::from(s.template.priority),
        collection: s.template.collection.clone().unwrap_or_default(),
        overlap: name_of(
            s.policy.overlap,
            &[
                ("skip", Overlap::Skip),
                ("buffer-one", Overlap::BufferOne),
                ("buffer-all", Overlap::BufferAll),
                ("allow", Overlap::Allow),
                ("cancel-other", Overlap::CancelOther),
            ],
        ),
        catchup: name_of(
            s.policy.catchup,
            &[("latest", Catchup::Latest), ("all", Catchup::All), ("none", Catchup::None)],
        ),
        catchup_window_ms: s.policy.catchup_window_ms,
        jitter_ms: s.spec.jitter_ms,
        start_unix_ms: s.spec.start_ms,
        end_unix_ms: s.spec.end_ms,
        pause_on_failure: s.policy.pause_on_failure,
        dst_repeat: name_of(s.spec.dst_repeat, &[("once", DstRepeat::Once), ("both", DstRepeat::Both)]),
        dst_gap: name_of(s.spec.dst_gap, &[("shift", DstGap::Shift), ("skip", DstGap::Skip)]),
        trace: None,
    }
}

fn slot_to_pb(s: &Slot) -> pb::SlotInfo {
    pb::SlotInfo { at_unix_ms: s.at_ms, id: s.id.clone() }
}

impl SchedulerService {
    /// A schedule with its next fire times and its runs' states.
    fn schedule_info(&self, s: &Schedule, now_ms: u64) -> Result<pb::ScheduleInfo, ApiError> {
        let from = s.last_slot.as_ref().map_or(0, |l| l.at_ms).max(now_ms).max(s.not_before_ms);
        let next = s.slots_after(from, 5).unwrap_or_default();
        let mut runs = Vec::with_capacity(s.runs.len());
        for r in &s.runs {
            let state =
                self.store.get(r.task_id)?.map_or(pb::TaskState::Unspecified, |t| state_to_pb(t.display_state(now_ms)));
            runs.push(pb::ScheduleRun { slot: Some(slot_to_pb(&r.slot)), task_id: r.task_id, state: state as i32 });
        }
        let mut definition = definition_to_pb(s);
        definition.trace = self.store.schedule_trace(&s.name)?.map(super::convert::trace_to_pb);
        Ok(pb::ScheduleInfo {
            definition: Some(definition),
            paused: s.paused,
            note: s.note.clone(),
            created_unix_ms: s.created_ms,
            last_slot: s.last_slot.as_ref().map(slot_to_pb),
            fired: s.fired,
            skipped: s.skipped,
            active: s.active.clone(),
            buffered: s.buffered.len() as u64,
            next: next.iter().map(slot_to_pb).collect(),
            runs,
        })
    }

    pub(super) fn get_schedule_local(&self, name: &str) -> Result<pb::ScheduleInfo, ApiError> {
        let now = self.clock.stamp();
        let s = index::lock(&self.index).schedule(name).cloned();
        let s = s.ok_or_else(|| ApiError::NotFound(format!("schedule {name:?} does not exist")))?;
        self.schedule_info(&s, now)
    }

    pub(super) fn list_schedules_local(&self) -> Result<pb::ListSchedulesResponse, ApiError> {
        let now = self.clock.stamp();
        let all: Vec<Schedule> = index::lock(&self.index).schedules().cloned().collect();
        let schedules = all.iter().map(|s| self.schedule_info(s, now)).collect::<Result<_, _>>()?;
        Ok(pb::ListSchedulesResponse { schedules })
    }

    pub(super) async fn put_schedule_local(
        &self,
        s: &Schedule,
        create: bool,
        trace: Option<TraceContext>,
    ) -> Result<pb::ScheduleInfo, ApiError> {
        let operation = Operation::PutSchedule { schedule: Box::new(s.clone()), create }.traced(vec![trace]);
        match self.write(operation).await? {
            CommandResponse::ScheduleSaved { .. } => self.get_schedule_local(&s.name),
            other => Err(ApiError::internal(format!("unexpected reply {other}"))),
        }
    }

    pub(super) async fn schedule_op_local(
        &self,
        name: &str,
        operation: Operation,
    ) -> Result<CommandResponse, ApiError> {
        let r = self.write(operation).await?;
        if let CommandResponse::Fired { .. } | CommandResponse::Count(_) = r {
            return Ok(r);
        }
        Err(ApiError::internal(format!("unexpected reply {r} for schedule {name}")))
    }
}

/// Most slots one backfill runs.
const MAX_BACKFILL: usize = 1_000;

impl SchedulerService {
    /// Leader only: the slots of `name` in [from, to], run unless
    /// `dry_run`.
    pub(super) async fn backfill_local(
        &self,
        req: &pb::BackfillScheduleRequest,
    ) -> Result<pb::BackfillScheduleResponse, ApiError> {
        if req.from_unix_ms > req.to_unix_ms {
            return Err(ApiError::InvalidArgument("--from is after --to".into()));
        }
        let s = index::lock(&self.index).schedule(&req.name).cloned();
        let s = s.ok_or_else(|| ApiError::NotFound(format!("schedule {:?} does not exist", req.name)))?;
        let mut slots = s
            .slots_after(req.from_unix_ms.saturating_sub(1), MAX_BACKFILL + 1)
            .map_err(|e| ApiError::FailedPrecondition(format!("schedule {:?}: {e}", req.name)))?;
        slots.retain(|slot| slot.at_ms <= req.to_unix_ms);
        if slots.len() > MAX_BACKFILL {
            return Err(ApiError::InvalidArgument(format!(
                "more than {MAX_BACKFILL} slots between --from and --to: backfill a shorter range at a time"
            )));
        }
        let outcomes: Vec<(u64, bool)> = if req.dry_run || slots.is_empty() {
            slots
                .iter()
                .map(|slot| Ok((self.store.task_for_key(&s.template.callback, &s.task_key(slot))?.unwrap_or(0), false)))
                .collect::<Result<_, ApiError>>()?
        } else {
            if let Some(why) = self.disk.refusal() {
                return Err(ApiError::ResourceExhausted(why));
            }
            match self.write(Operation::BackfillSchedule { name: req.name.clone(), slots: slots.clone() }).await? {
                CommandResponse::Scheduled(o) if o.len() == slots.len() => {
                    o.into_iter().map(|o| (o.task_id, o.created)).collect()
                }
                other => return Err(ApiError::internal(format!("unexpected reply {other}"))),
            }
        };
        Ok(pb::BackfillScheduleResponse {
            slots: slots
                .iter()
                .zip(outcomes)
                .map(|(slot, (task_id, created))| pb::BackfillSlot { slot: Some(slot_to_pb(slot)), task_id, created })
                .collect(),
        })
    }
}

/// A schedule pause note, checked.
pub fn note(note: &str) -> Result<String, ApiError> {
    if note.len() > MAX_NOTE {
        return Err(ApiError::InvalidArgument(format!("the note is {} bytes; the limit is {MAX_NOTE}", note.len())));
    }
    Ok(note.to_string())
}
