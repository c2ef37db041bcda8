//! The leader's collector: proposes retention's deletes in bounded batches
//! and removes gates whose `until` has passed.
//!
//! Only the leader runs it, and only proposals change anything: apply
//! deletes exactly the rows an entry names (if they are still finished), so
//! replicas never diverge, and nothing is ever deleted by a RocksDB TTL or
//! compaction filter. Which rows are old enough is the leader's decision,
//! from each callback's retention and, where a callback sets none, this
//! node's defaults (`drover server --retain-*`; give every node the same).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consensus::clock::ProposerClock;
use crate::consensus::Consensus;
use crate::domain::{Command, Operation, Retention, TaskState};
use crate::store::retention::ScanFrom;
use crate::store::{index, Collectable, RetentionStatus, SharedIndex, StoreError, TaskStore};

/// How the collector paces itself.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Retention of callbacks that set none (the node sets it from
    /// `config::RetentionDefaults`, where the defaults live; empty here:
    /// keep forever).
    pub defaults: Retention,
    /// Most rows deleted per entry.
    pub batch: usize,
    /// Pause between batches while rows keep coming due.
    pub busy_interval: Duration,
    /// Pause between looks when nothing is old enough.
    pub idle_interval: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            defaults: Retention::default(),
            batch: 1_000,
            busy_interval: Duration::from_millis(250),
            idle_interval: Duration::from_secs(2),
        }
    }
}

/// What the collector reads and proposes through.
#[derive(Clone)]
pub struct Collector {
    pub consensus: Consensus,
    pub store: TaskStore,
    pub index: SharedIndex,
    pub clock: ProposerClock,
    pub config: CollectorConfig,
}

impl Collector {
    /// Callback names and their effective retention, from the live index.
    fn retention(&self) -> (Vec<String>, std::collections::HashMap<String, Retention>) {
        let index = index::lock(&self.index);
        let map: std::collections::HashMap<String, Retention> =
            index.callbacks().map(|c| (c.name.clone(), c.retention.or(self.config.defaults))).collect();
        (map.keys().cloned().collect(), map)
    }

    /// Retention's figures as this node sees them now.
    pub async fn status(&self) -> Result<RetentionStatus, StoreError> {
        let (callbacks, map) = self.retention();
        let store = self.store.clone();
        let now_ms = self.clock.stamp();
        crate::blocking::run(move || {
            let of = |cb: &str, s: TaskState| map.get(cb).and_then(|r| r.for_state(s));
            store.retention_status(&callbacks, &of, now_ms, 1_000_000)
        })
        .await
        .map_err(StoreError::Io)?
    }

    async fn collectable(&self, now_ms: u64, from: &ScanFrom) -> Result<Collectable, StoreError> {
        let (callbacks, map) = self.retention();
        let store = self.store.clone();
        let limit = self.config.batch;
        let from = from.clone();
        crate::blocking::run(move || {
            let of = |cb: &str, s: TaskState| map.get(cb).and_then(|r| r.for_state(s));
            store.collectable(&callbacks, &of, now_ms, limit, &from)
        })
        .await
        .map_err(StoreError::Io)?
    }

    async fn propose(&self, operation: Operation) -> bool {
        let cmd = Command { stamped_at_ms: self.clock.stamp(), operation };
        match self.consensus.propose(cmd).await {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "collector proposal not committed");
                false
            }
        }
    }

    /// One round: open expired gates, then delete one batch. True if it
    /// deleted something (more may come due soon).
    async fn round(&self, cursors: &mut ScanFrom) -> bool {
        let now_ms = self.clock.stamp();
        let expired: Vec<_> =
            index::lock(&self.index).gates().filter(|g| !g.active(now_ms)).map(|g| g.target.clone()).collect();
        for target in expired {
            tracing::info!(gate = %target, "gate expired; opening it");
            self.propose(Operation::OpenGate { target, if_expired: true }).await;
        }
        let batch = match self.collectable(now_ms, cursors).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading what retention may delete");
                return false;
            }
        };
        if batch.is_empty() {
            return false;
        }
        tracing::debug!(tasks = batch.task_ids.len(), request_ids = batch.request_ids.len(), "collecting");
        // While rows keep coming due, collect every `busy_interval`: many
        // small entries delay other writes less than a few large ones.
        let done = self.propose(Operation::Collect { task_ids: batch.task_ids, request_ids: batch.request_ids }).await;
        if done {
            // Deleted: later scans start past their tombstones. Not before
            // the delete committed, or a failed one would be skipped.
            *cursors = batch.cursors;
        }
        done
    }

    /// Run while this node leads, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut cursors = ScanFrom::default();
        loop {
            let busy = if self.consensus.leadership().ready {
                self.round(&mut cursors).await
            } else {
                // Another leader may have deleted since: scan from the start.
                cursors = ScanFrom::default();
                false
            };
            let pause = if busy { self.config.busy_interval } else { self.config.idle_interval };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
