//! The task store: drover's state machine data on RocksDB.
//!
//! - [`keys`]: every RocksDB key and column family.
//! - [`command`]: the replicated commands and their replies.
//! - [`task`]: the task row.
//! - [`TaskStore`]: reads (any thread, any time).
//! - [`Applier`]: the deterministic apply logic, which turns a run of
//!   commands into one RocksDB `WriteBatch`. It never reads a clock.

pub mod command;
pub mod keys;
pub mod task;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

pub use command::{Command, CommandResponse, NewTask, Operation, ScheduleOutcome};
pub use task::{Task, TaskState};

use crate::encoding::{self, CodecError};

/// Storage-layer errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("column family {0} is missing")]
    MissingColumnFamily(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(e) => e,
            other => std::io::Error::other(other),
        }
    }
}

/// Open (or create) the node's single RocksDB instance with drover's column
/// families. One instance means one WAL, so vote, log and state-machine
/// writes reach disk in the order they were made.
pub fn open_db(path: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(2);
    opts.set_keep_log_file_num(4);
    let cfs = [keys::CF_LOG, keys::CF_META, keys::CF_SM]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
}

fn get_u64(db: &DB, key: &[u8]) -> Result<u64, StoreError> {
    match db.get_cf(cf(db, keys::CF_SM)?, key)? {
        Some(v) => Ok(encoding::decode(&v)?),
        None => Ok(0),
    }
}

/// Read access to the task store. Cheap to clone; safe from any thread.
#[derive(Clone)]
pub struct TaskStore {
    db: Arc<DB>,
}

impl TaskStore {
    pub fn new(db: Arc<DB>) -> Self {
        TaskStore { db }
    }

    pub fn get(&self, id: u64) -> Result<Option<Task>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        match self.db.get_pinned_cf(sm, keys::task(id))? {
            Some(v) => Ok(Some(encoding::decode(&v)?)),
            None => Ok(None),
        }
    }

    pub fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        Ok(self.db.get_cf(sm, keys::payload(id))?)
    }

    /// Number of task rows.
    pub fn task_count(&self) -> Result<u64, StoreError> {
        get_u64(&self.db, keys::SM_TASK_COUNT)
    }

    /// The replicated clock as last applied, Unix ms.
    pub fn now_ms(&self) -> Result<u64, StoreError> {
        get_u64(&self.db, keys::SM_NOW)
    }

    /// Every task row in id order (tests, digests, backups).
    pub fn scan_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(sm, keys::TASK_PREFIX) {
            let (k, v) = item?;
            if !k.starts_with(&keys::TASK_PREFIX) {
                break;
            }
            out.push(encoding::decode(&v)?);
        }
        Ok(out)
    }
}

/// The apply-side state of the state machine: counters that every command
/// reads and that are written back with each batch. Rebuilt from disk on
/// start ([`Applier::load`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applier {
    /// Replicated clock: max of every applied stamp, Unix ms.
    pub now_ms: u64,
    pub next_task_id: u64,
    pub task_count: u64,
}

/// Pending writes of one applied batch. Reads during apply go through it so
/// that a command sees the effects of earlier commands in the same batch.
pub struct ApplyBatch<'a> {
    db: &'a DB,
    batch: WriteBatch,
    idempotency: HashMap<Vec<u8>, u64>,
}

impl<'a> ApplyBatch<'a> {
    pub fn new(db: &'a DB) -> Self {
        ApplyBatch { db, batch: WriteBatch::default(), idempotency: HashMap::new() }
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.batch.put_cf(cf(self.db, keys::CF_SM)?, key, value);
        Ok(())
    }

    fn idempotent_task(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        if let Some(id) = self.idempotency.get(key) {
            return Ok(Some(*id));
        }
        match self.db.get_pinned_cf(cf(self.db, keys::CF_SM)?, key)? {
            Some(v) => Ok(Some(encoding::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// The write batch, ready to be written.
    pub fn into_write_batch(self) -> WriteBatch {
        self.batch
    }
}

impl Applier {
    /// Load the counters persisted by the last applied batch.
    pub fn load(db: &DB) -> Result<Self, StoreError> {
        Ok(Applier {
            now_ms: get_u64(db, keys::SM_NOW)?,
            next_task_id: get_u64(db, keys::SM_NEXT_TASK_ID)?.max(1),
            task_count: get_u64(db, keys::SM_TASK_COUNT)?,
        })
    }

    /// Apply one command at log index `index`. Deterministic: the result
    /// depends only on the store's contents and the command.
    pub fn apply(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        index: u64,
        cmd: &Command,
    ) -> Result<CommandResponse, StoreError> {
        self.now_ms = self.now_ms.max(cmd.stamped_at_ms);
        match &cmd.operation {
            Operation::Schedule { tasks } => self.schedule(batch, index, tasks),
        }
    }

    fn schedule(
        &mut self,
        batch: &mut ApplyBatch<'_>,
        index: u64,
        tasks: &[NewTask],
    ) -> Result<CommandResponse, StoreError> {
        let mut outcomes = Vec::with_capacity(tasks.len());
        for new in tasks {
            let idem_key = new.idempotency_key.as_deref().map(|k| keys::idempotency(&new.callback, k));
            if let Some(key) = &idem_key {
                if let Some(task_id) = batch.idempotent_task(key)? {
                    outcomes.push(ScheduleOutcome { task_id, created: false });
                    continue;
                }
            }
            let id = self.next_task_id;
            self.next_task_id += 1;
            self.task_count += 1;
            let state = if new.run_at_ms <= self.now_ms { TaskState::Ready } else { TaskState::Scheduled };
            let task = Task {
                id,
                callback: new.callback.clone(),
                priority: new.priority,
                state,
                run_at_ms: new.run_at_ms,
                created_at_ms: self.now_ms,
                attempts: 0,
                payload_size: new.payload.len() as u64,
                idempotency_key: new.idempotency_key.clone(),
                created_index: index,
            };
            batch.put(&keys::task(id), &encoding::encode(&task))?;
            batch.put(&keys::payload(id), &new.payload)?;
            match state {
                TaskState::Ready => batch.put(&keys::ready(&task.callback, task.priority, task.run_at_ms, id), &[])?,
                _ => batch.put(&keys::due(task.run_at_ms, id), &[])?,
            }
            if let Some(key) = idem_key {
                batch.put(&key, &encoding::encode(&id))?;
                batch.idempotency.insert(key, id);
            }
            outcomes.push(ScheduleOutcome { task_id: id, created: true });
        }
        Ok(CommandResponse::Scheduled(outcomes))
    }

    /// Write the counters into the batch, beside the rows they describe.
    pub fn write_counters(&self, batch: &mut ApplyBatch<'_>) -> Result<(), StoreError> {
        batch.put(keys::SM_NOW, &encoding::encode(&self.now_ms))?;
        batch.put(keys::SM_NEXT_TASK_ID, &encoding::encode(&self.next_task_id))?;
        batch.put(keys::SM_TASK_COUNT, &encoding::encode(&self.task_count))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
