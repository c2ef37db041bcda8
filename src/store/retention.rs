//! Apply of retention: deleting finished tasks and forgetting old request
//! ids, as the leader asks. The leader decides what is old enough (its
//! retention settings); apply only refuses to delete what is not finished,
//! so every replica deletes exactly the same rows at the same index.

use super::apply::{Applier, ApplyBatch};
use super::{cf, get_u64, keys, StoreError, TaskStore};
use crate::domain::{CommandResponse, RequestId, TaskState, REQUEST_ID_WINDOW_MS};

impl Applier {
    pub(super) fn collect(
        &mut self,
        b: &mut ApplyBatch<'_>,
        task_ids: &[u64],
        request_ids: &[RequestId],
    ) -> Result<CommandResponse, StoreError> {
        let mut n = 0;
        for id in task_ids {
            let Some(t) = b.task(*id)? else { continue };
            // A task that is not finished (or was redriven since the
            // leader looked) is still needed.
            if !t.state.is_terminal() {
                continue;
            }
            b.remove(&t)?;
            self.task_count = self.task_count.saturating_sub(1);
            n += 1;
        }
        for id in request_ids {
            let Some(record) = b.request(id)? else { continue };
            // Never forget an id a client may still retry under.
            if self.now_ms.saturating_sub(record.at_ms) <= REQUEST_ID_WINDOW_MS {
                continue;
            }
            b.delete(&keys::request_by_time(record.at_ms, &id.0))?;
            b.requests.insert(*id, None);
            n += 1;
        }
        self.collected += n;
        Ok(CommandResponse::Count(n))
    }
}

/// Finished tasks and request ids old enough to delete, as the leader's
/// collector sees them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Collectable {
    pub task_ids: Vec<u64>,
    pub request_ids: Vec<RequestId>,
    /// Where the next scan may start once these are deleted.
    pub cursors: ScanFrom,
}

/// Where the collector's scans start: per (callback, state code) the finish
/// time below which everything was deleted, and likewise for request ids.
/// Leader-local, an optimisation only (a new leader starts from 0).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanFrom {
    pub finished: std::collections::HashMap<(String, u8), u64>,
    pub requests: u64,
}

impl Collectable {
    pub fn is_empty(&self) -> bool {
        self.task_ids.is_empty() && self.request_ids.is_empty()
    }
}

/// What retention holds back and has done.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RetentionStatus {
    /// Rows deleted so far (replicated: the same on every node).
    pub collected: u64,
    /// Finish time of the oldest finished task still kept, Unix ms.
    pub oldest_finished_ms: Option<u64>,
    /// Rows past their retention, not yet deleted (counted up to a cap).
    pub backlog: u64,
    /// Finished tasks kept.
    pub finished: u64,
}

/// Retention of a callback's tasks in one final state, in ms (`None`: kept
/// forever).
pub type RetentionOf<'a> = &'a dyn Fn(&str, TaskState) -> Option<u64>;

impl TaskStore {
    /// Up to `limit` finished tasks of `callbacks` whose retention (from
    /// `retention`) has passed at `now_ms`, oldest first per callback and
    /// state, and request ids past their window. Each scan starts where
    /// `from` says (the collector's cursors), so it does not walk again over
    /// the tombstones of rows already deleted; `out.cursors` says where the
    /// next scan may start once this batch is deleted.
    pub fn collectable(
        &self,
        callbacks: &[String],
        retention: RetentionOf<'_>,
        now_ms: u64,
        limit: usize,
        from: &ScanFrom,
    ) -> Result<Collectable, StoreError> {
        self.checked(
            "scanning for collectable rows",
            self.collectable_unchecked(callbacks, retention, now_ms, limit, from),
        )
    }

    fn collectable_unchecked(
        &self,
        callbacks: &[String],
        retention: RetentionOf<'_>,
        now_ms: u64,
        limit: usize,
        from: &ScanFrom,
    ) -> Result<Collectable, StoreError> {
        let sm = cf(self.db(), keys::CF_SM)?;
        let mut out = Collectable { cursors: from.clone(), ..Default::default() };
        'callbacks: for callback in callbacks {
            for state in FINAL_STATES {
                let Some(keep_ms) = retention(callback, state) else { continue };
                let cutoff = now_ms.saturating_sub(keep_ms);
                let prefix = keys::finished_prefix(callback, state.code());
                let cursor = (callback.clone(), state.code());
                let start = keys::finished(callback, state.code(), from.finished.get(&cursor).copied().unwrap_or(0), 0);
                let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
                for item in self.db().iterator_cf(sm, mode) {
                    let (k, _) = item?;
                    if out.task_ids.len() >= limit {
                        break 'callbacks;
                    }
                    let Some((_, _, at, id)) = keys::parse_finished(&k).filter(|_| k.starts_with(&prefix)) else {
                        break;
                    };
                    if at > cutoff {
                        break;
                    }
                    out.task_ids.push(id);
                    // Not past `at`: other rows may share its millisecond.
                    out.cursors.finished.insert(cursor.clone(), at);
                }
            }
        }
        let cutoff = now_ms.saturating_sub(REQUEST_ID_WINDOW_MS);
        let start = keys::request_by_time(from.requests, &[0; 16]);
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        for item in self.db().iterator_cf(sm, mode) {
            let (k, _) = item?;
            if out.task_ids.len() + out.request_ids.len() >= limit {
                break;
            }
            match keys::parse_request_by_time(&k) {
                Some((at, id)) if at < cutoff => {
                    out.request_ids.push(RequestId(id));
                    out.cursors.requests = at;
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Retention's figures at `now_ms`; the backlog is counted up to
    /// `backlog_cap`.
    pub fn retention_status(
        &self,
        callbacks: &[String],
        retention: RetentionOf<'_>,
        now_ms: u64,
        backlog_cap: u64,
    ) -> Result<RetentionStatus, StoreError> {
        self.checked(
            "reading retention's figures",
            self.retention_status_unchecked(callbacks, retention, now_ms, backlog_cap),
        )
    }

    fn retention_status_unchecked(
        &self,
        callbacks: &[String],
        retention: RetentionOf<'_>,
        now_ms: u64,
        backlog_cap: u64,
    ) -> Result<RetentionStatus, StoreError> {
        let sm = cf(self.db(), keys::CF_SM)?;
        let mut status = RetentionStatus { collected: get_u64(self.db(), keys::SM_COLLECTED)?, ..Default::default() };
        for item in self.db().prefix_iterator_cf(sm, keys::FINISHED_PREFIX) {
            let (k, _) = item?;
            let Some((callback, code, at, _)) = keys::parse_finished(&k) else { break };
            status.finished += 1;
            status.oldest_finished_ms = Some(status.oldest_finished_ms.map_or(at, |o| o.min(at)));
            let state = FINAL_STATES.into_iter().find(|s| s.code() == code);
            let due = state.and_then(|s| retention(&callback, s)).is_some_and(|keep| at <= now_ms.saturating_sub(keep));
            if due && status.backlog < backlog_cap && callbacks.contains(&callback) {
                status.backlog += 1;
            }
        }
        let cutoff = now_ms.saturating_sub(REQUEST_ID_WINDOW_MS);
        for item in self.db().prefix_iterator_cf(sm, keys::REQUEST_BY_TIME_PREFIX) {
            let (k, _) = item?;
            match keys::parse_request_by_time(&k) {
                Some((at, _)) if at < cutoff && status.backlog < backlog_cap => status.backlog += 1,
                _ => break,
            }
        }
        Ok(status)
    }
}

const FINAL_STATES: [TaskState; 4] = [TaskState::Succeeded, TaskState::Cancelled, TaskState::Failed, TaskState::Dead];
