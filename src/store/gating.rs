//! Apply of gates: setting one (a drop cancels what it covers in the same
//! entry), opening one, and the checks schedule and assign make.

use super::apply::{Applier, ApplyBatch};
use super::index::IndexOp;
use super::{keys, StoreError};
use crate::domain::gate::strictest;
use crate::domain::{CommandResponse, Gate, GateMode, GateTarget, Rejection, Task, TaskState};
use crate::encoding;

impl Applier {
    /// The gate holding `task` at replicated now, if any.
    pub(super) fn gate_for(&self, task: &Task) -> Option<&Gate> {
        strictest(self.gates.values(), &task.callback, task.collection.as_deref(), self.now_ms)
    }

    /// The dropping gate that cancels `task` on arrival, if any.
    pub(super) fn dropping_gate(&self, task: &Task) -> Option<&Gate> {
        self.gate_for(task).filter(|g| g.mode == GateMode::Drop)
    }

    pub(super) fn set_gate(
        &mut self,
        b: &mut ApplyBatch<'_>,
        index: u64,
        gate: &Gate,
        cancel_running: bool,
    ) -> Result<CommandResponse, StoreError> {
        if !self.callbacks.contains_key(&gate.target.callback) {
            return Ok(CommandResponse::Rejected(Rejection::NotFound(format!(
                "callback {:?} is not registered",
                gate.target.callback
            ))));
        }
        if gate.until_ms.is_some_and(|until| until <= self.now_ms) {
            return Ok(CommandResponse::Rejected(Rejection::InvalidArgument(format!(
                "the gate would end at {} ms, which has already passed",
                gate.until_ms.unwrap_or_default()
            ))));
        }
        let gate = Gate { since_ms: self.now_ms, since_index: index, ..gate.clone() };
        let key = keys::gate(&gate.target.callback, gate.target.collection.as_deref());
        b.put(&key, &encoding::encode(&gate))?;
        self.gates.insert(gate.target.clone(), gate.clone());
        b.index_ops.push(IndexOp::PutGate(gate.clone()));
        let (mut cancelled, mut cancel_requested) = (0, 0);
        if gate.mode == GateMode::Drop {
            let reason = gate.drop_reason();
            let prefix = keys::pending_prefix(&gate.target.callback, gate.target.collection.as_deref());
            let mut ids = b.ids_under(&prefix, |k| keys::parse_pending(k).map(|p| p.id))?;
            ids.extend(
                b.tasks.iter().filter(|(_, t)| t.as_ref().is_some_and(|t| t.state.is_pending())).map(|(id, _)| *id),
            );
            for id in ids {
                let Some(before) = b.task(id)? else { continue };
                if !before.state.is_pending() || !gate.target.covers(&before.callback, before.collection.as_deref()) {
                    continue;
                }
                let mut t = before.clone();
                t.last_error = Some(reason.clone());
                t.transition(TaskState::Cancelled, self.now_ms);
                b.save(Some(&before), t)?;
                cancelled += 1;
            }
        }
        if cancel_running {
            for id in b.ids_in_state(TaskState::Running)? {
                let Some(before) = b.task(id)? else { continue };
                if before.state != TaskState::Running
                    || before.cancel_requested
                    || !gate.target.covers(&before.callback, before.collection.as_deref())
                {
                    continue;
                }
                let mut t = before.clone();
                t.cancel_requested = true;
                b.save(Some(&before), t)?;
                cancel_requested += 1;
            }
        }
        Ok(CommandResponse::GateSet { cancelled, cancel_requested })
    }

    pub(super) fn open_gate(
        &mut self,
        b: &mut ApplyBatch<'_>,
        target: &GateTarget,
        if_expired: bool,
    ) -> Result<CommandResponse, StoreError> {
        let Some(gate) = self.gates.get(target) else {
            return Ok(CommandResponse::GateOpened { existed: false });
        };
        if if_expired && gate.active(self.now_ms) {
            return Ok(CommandResponse::GateOpened { existed: false });
        }
        self.gates.remove(target);
        b.delete(&keys::gate(&target.callback, target.collection.as_deref()))?;
        b.index_ops.push(IndexOp::RemoveGate(target.clone()));
        Ok(CommandResponse::GateOpened { existed: true })
    }
}
