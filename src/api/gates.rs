//! Gates and retention at the edge: validation of gate requests, and the
//! `Scheduler` service's gate and `GcStatus` handlers (leader side).

use super::convert::gate_to_pb;
use super::scheduler::SchedulerService;
use super::validate;
use super::ApiError;
use crate::config::Limits;
use crate::domain::{CommandResponse, Gate, GateMode, GateTarget, Operation};
use crate::pb;
use crate::store::index;

/// When a gate ends, before the leader resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Open,
    For(u64),
    At(u64),
}

/// A validated `SetGate`.
#[derive(Debug, Clone)]
pub struct GateSpec {
    pub target: GateTarget,
    pub mode: GateMode,
    pub until: Until,
    pub note: String,
    pub cancel_running: bool,
}

/// Longest gate note, bytes.
const MAX_NOTE: usize = 1024;

/// Longest a gate may be set for: 366 days.
const MAX_GATE_MS: u64 = 366 * 24 * 3_600_000;

/// A gate's target from a callback and an optional collection name.
pub fn target(callback: &str, collection: &str, limits: &Limits) -> Result<GateTarget, ApiError> {
    validate::callback_name(callback, limits)?;
    let collection = if collection.is_empty() {
        None
    } else {
        validate::collection_name(collection, limits)?;
        Some(collection.to_string())
    };
    Ok(GateTarget::new(callback, collection))
}

impl GateSpec {
    pub fn validate(req: &pb::SetGateRequest, limits: &Limits) -> Result<GateSpec, ApiError> {
        let target = target(&req.callback, &req.collection, limits)?;
        let mode = match pb::GateMode::try_from(req.mode) {
            Ok(pb::GateMode::Pause) => GateMode::Pause,
            Ok(pb::GateMode::Drop) => GateMode::Drop,
            _ => return Err(ApiError::InvalidArgument("gate mode must be pause or drop".into())),
        };
        let until = match req.until {
            None => Until::Open,
            Some(pb::set_gate_request::Until::ForMs(0)) => {
                return Err(ApiError::InvalidArgument("a gate's duration must be positive".into()))
            }
            Some(pb::set_gate_request::Until::ForMs(ms)) if ms > MAX_GATE_MS => {
                return Err(ApiError::InvalidArgument(
                    "a gate may be set for at most 366 days; leave --until out to keep it until opened".into(),
                ))
            }
            Some(pb::set_gate_request::Until::ForMs(ms)) => Until::For(ms),
            Some(pb::set_gate_request::Until::UntilUnixMs(at)) => Until::At(at),
        };
        if req.note.len() > MAX_NOTE {
            return Err(ApiError::InvalidArgument(format!(
                "the note is {} bytes; the limit is {MAX_NOTE}",
                req.note.len()
            )));
        }
        if req.cancel_running && mode != GateMode::Drop {
            return Err(ApiError::InvalidArgument("--cancel-running goes with drop, not pause".into()));
        }
        Ok(GateSpec { target, mode, until, note: req.note.clone(), cancel_running: req.cancel_running })
    }
}

impl SchedulerService {
    /// Leader only: propose the gate; its times resolve against the stamp.
    pub(super) async fn set_gate_local(&self, spec: &GateSpec) -> Result<pb::SetGateResponse, ApiError> {
        let stamp = self.stamp().await?;
        let until_ms = match spec.until {
            Until::Open => None,
            Until::For(ms) => Some(stamp.saturating_add(ms)),
            Until::At(at) => Some(at),
        };
        let gate = Gate {
            target: spec.target.clone(),
            mode: spec.mode,
            since_ms: stamp,
            since_index: 0,
            until_ms,
            note: spec.note.clone(),
        };
        match self.write(Operation::SetGate { gate, cancel_running: spec.cancel_running }).await? {
            CommandResponse::GateSet { cancelled, cancel_requested } => {
                let now = self.clock.stamp();
                let index = index::lock(&self.index);
                let gate = index
                    .gate(&spec.target)
                    .map(|g| gate_to_pb(g, index.pending_in(&g.target), index.running_in(&g.target), now));
                Ok(pb::SetGateResponse { cancelled, cancel_requested, gate })
            }
            other => Err(ApiError::internal(format!("unexpected reply {other}"))),
        }
    }

    pub(super) async fn open_gate_local(&self, target: &GateTarget) -> Result<pb::OpenGateResponse, ApiError> {
        match self.write(Operation::OpenGate { target: target.clone(), if_expired: false }).await? {
            CommandResponse::GateOpened { existed } => Ok(pb::OpenGateResponse { existed }),
            other => Err(ApiError::internal(format!("unexpected reply {other}"))),
        }
    }

    pub(super) fn gates_local(&self) -> pb::ListGatesResponse {
        let now = self.clock.stamp();
        let index = index::lock(&self.index);
        let gates = index
            .gates()
            .map(|g| gate_to_pb(g, index.pending_in(&g.target), index.running_in(&g.target), now))
            .collect();
        pb::ListGatesResponse { gates }
    }

    pub(super) async fn gc_status_local(&self) -> Result<pb::GcStatusResponse, ApiError> {
        let status = self.collector.status().await?;
        let defaults = self.collector.config.defaults;
        Ok(pb::GcStatusResponse {
            collected: status.collected,
            oldest_finished_unix_ms: status.oldest_finished_ms,
            backlog: status.backlog,
            finished: status.finished,
            tasks: self.store.task_count()?,
            default_succeeded_ms: defaults.succeeded_ms.unwrap_or(0),
            default_cancelled_ms: defaults.cancelled_ms.unwrap_or(0),
            default_failed_ms: defaults.failed_ms.unwrap_or(0),
            default_dead_ms: defaults.dead_ms.unwrap_or(0),
        })
    }
}
