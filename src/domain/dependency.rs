//! Task dependencies: a task that runs after others (its parents).
//!
//! A child with unfinished parents is [`TaskState::Waiting`]. Each parent's
//! final transition is counted into the child's [`Deps`] in the same entry;
//! once the child's [`AfterPolicy`] holds it becomes scheduled, and under
//! `AllSucceeded` a parent that ends any other way cancels it ("upstream
//! task N failed"), which in turn cancels its own waiting children. A
//! redriven parent re-opens its edges, and with its dependents re-arms the
//! children its failure cancelled.
//!
//! Graphs cannot have cycles: a parent is either a task that already exists
//! (so it was created before the child) or an earlier item of the same
//! batch.

use serde::{Deserialize, Serialize};

use super::task::TaskState;

/// Most parents one task may have (a fan-in of this many tasks).
pub const MAX_PARENTS: usize = 10_000;

/// Total bytes of parents' results handed to a worker with an assignment;
/// the rest are fetched with `GetTask`.
pub const MAX_PARENT_RESULT_BYTES: usize = 4 << 20;

/// When a child may run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AfterPolicy {
    /// Every parent succeeded; any other end cancels the child.
    #[default]
    AllSucceeded,
    /// Every parent ended, however (a fan-in that gets the counts).
    AllFinished,
}

impl AfterPolicy {
    pub fn name(self) -> &'static str {
        match self {
            AfterPolicy::AllSucceeded => "all-succeeded",
            AfterPolicy::AllFinished => "all-finished",
        }
    }

    pub fn parse(s: &str) -> Option<AfterPolicy> {
        match s {
            "all-succeeded" => Some(AfterPolicy::AllSucceeded),
            "all-finished" => Some(AfterPolicy::AllFinished),
            _ => None,
        }
    }
}

/// A parent as a schedule names it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parent {
    /// A task that exists.
    Task(u64),
    /// An earlier item of the same batch, by position.
    Item(u32),
}

/// The parents of one new task and its policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct After {
    pub parents: Vec<Parent>,
    pub policy: AfterPolicy,
}

/// How many parents ended in each final state.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counts {
    pub succeeded: u32,
    pub failed: u32,
    pub dead: u32,
    pub cancelled: u32,
}

impl Counts {
    fn slot(&mut self, state: TaskState) -> Option<&mut u32> {
        match state {
            TaskState::Succeeded => Some(&mut self.succeeded),
            TaskState::Failed => Some(&mut self.failed),
            TaskState::Dead => Some(&mut self.dead),
            TaskState::Cancelled => Some(&mut self.cancelled),
            _ => None,
        }
    }

    /// Parents that ended other than succeeded.
    pub fn unsuccessful(&self) -> u32 {
        self.failed + self.dead + self.cancelled
    }
}

/// A child's dependency state, stored apart from its row and updated by
/// each parent's final transition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Deps {
    pub policy: AfterPolicy,
    /// Number of parents.
    pub parents: u32,
    /// Parents not final yet.
    pub open: u32,
    pub ended: Counts,
    /// The parent whose failure cancelled this task (a redrive of it with
    /// its dependents re-arms this task).
    pub cancelled_by: Option<u64>,
}

/// What a child's dependencies say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Run,
    /// Cancel it: the policy can no longer hold.
    Cancel,
}

impl Deps {
    pub fn new(policy: AfterPolicy, parents: u32) -> Deps {
        Deps { policy, parents, open: parents, ended: Counts::default(), cancelled_by: None }
    }

    /// Move one parent's count from `from` (`None`: not final) to `to`.
    pub fn recount(&mut self, from: Option<TaskState>, to: Option<TaskState>) {
        match from.and_then(|s| self.ended.slot(s)) {
            Some(n) => *n = n.saturating_sub(1),
            None => self.open = self.open.saturating_sub(1),
        }
        match to.and_then(|s| self.ended.slot(s)) {
            Some(n) => *n += 1,
            None => self.open += 1,
        }
    }

    pub fn verdict(&self) -> Verdict {
        match self.policy {
            AfterPolicy::AllSucceeded if self.ended.unsuccessful() > 0 => Verdict::Cancel,
            _ if self.open == 0 => Verdict::Run,
            _ => Verdict::Wait,
        }
    }
}

/// A parent-to-child edge: the parent's final state as counted into the
/// child's [`Deps`] (`None` while it is not final).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Edge {
    pub counted: Option<TaskState>,
}

/// One parent as its child's worker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentResult {
    pub task_id: u64,
    pub state: TaskState,
    /// Its result, if it has one and it fit in the assignment.
    pub result: Option<Vec<u8>>,
}

/// What an assignment carries from a task's parents.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Upstream {
    /// How many parents ended in each state (a fan-in's summary).
    pub ended: Counts,
    /// The parents that still exist, in the order the task named them.
    pub parents: Vec<ParentResult>,
    /// Results left out because they did not fit: fetch them with `GetTask`.
    pub omitted: u32,
}

/// The reason a child cancelled by its parent's failure carries.
pub fn upstream_failed(parent: u64, state: TaskState) -> String {
    format!("upstream task {parent} failed: {}", state.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_succeeded_runs_after_every_success_and_cancels_on_any_failure() {
        let mut d = Deps::new(AfterPolicy::AllSucceeded, 2);
        assert_eq!(d.verdict(), Verdict::Wait);
        d.recount(None, Some(TaskState::Succeeded));
        assert_eq!(d.verdict(), Verdict::Wait);
        d.recount(None, Some(TaskState::Dead));
        assert_eq!(d.verdict(), Verdict::Cancel);
        // The dead parent is redriven: open again, so the child waits.
        d.recount(Some(TaskState::Dead), None);
        assert_eq!((d.open, d.ended.dead), (1, 0));
        assert_eq!(d.verdict(), Verdict::Wait);
        d.recount(None, Some(TaskState::Succeeded));
        assert_eq!(d.verdict(), Verdict::Run);
        assert_eq!(d.ended.succeeded, 2);
    }

    #[test]
    fn all_finished_runs_once_every_parent_ended_and_counts_them() {
        let mut d = Deps::new(AfterPolicy::AllFinished, 3);
        d.recount(None, Some(TaskState::Failed));
        d.recount(None, Some(TaskState::Cancelled));
        assert_eq!(d.verdict(), Verdict::Wait);
        d.recount(None, Some(TaskState::Succeeded));
        assert_eq!(d.verdict(), Verdict::Run);
        assert_eq!(d.ended, Counts { succeeded: 1, failed: 1, dead: 0, cancelled: 1 });
    }

    #[test]
    fn a_task_without_parents_runs() {
        assert_eq!(Deps::new(AfterPolicy::AllSucceeded, 0).verdict(), Verdict::Run);
    }
}
