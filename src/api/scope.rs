//! Callback scope checks of the Scheduler service's handlers: a grant
//! limited to some callbacks (`email.*`) reaches only their tasks, gates
//! and schedules. Each check runs where the handler runs: on the node the
//! client called, and again on the leader when the call is forwarded.

use tonic::{Request, Status};

use super::access;
use super::scheduler::SchedulerService;
use super::ApiError;
use crate::domain::Target;
use crate::store::index;

/// Whether the caller's grant is limited to some callbacks.
fn scoped<T>(req: &Request<T>) -> bool {
    access::principal_of(req).and_then(|p| p.grant()).is_some_and(|g| !g.unscoped())
}

impl SchedulerService {
    /// Refuse unless the caller may use task `id`'s callback. A task this
    /// node does not have yet passes here; the leader checks it again.
    pub(super) fn scope_task<T>(&self, req: &Request<T>, id: u64) -> Result<(), Status> {
        if !scoped(req) {
            return Ok(());
        }
        match self.store.get(id).map_err(ApiError::from)? {
            Some(task) => access::check_callback(req, &task.callback),
            None => Ok(()),
        }
    }

    /// Refuse unless the caller may use a dead-letter target: a task's
    /// callback, or the callback named.
    pub(super) fn scope_target<T>(&self, req: &Request<T>, target: &Target) -> Result<(), Status> {
        match target {
            Target::Task(id) => self.scope_task(req, *id),
            Target::Callback(c) => access::check_callback(req, c),
        }
    }

    /// Refuse unless the caller may use schedule `name`'s callback.
    pub(super) fn scope_schedule<T>(&self, req: &Request<T>, name: &str) -> Result<(), Status> {
        if !scoped(req) {
            return Ok(());
        }
        let callback = index::lock(&self.index).schedule(name).map(|s| s.template.callback.clone());
        match callback {
            Some(c) => access::check_callback(req, &c),
            None => Ok(()),
        }
    }
}
