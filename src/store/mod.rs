//! The task store: drover's state machine data on RocksDB.
//!
//! - [`keys`]: every RocksDB key and column family.
//! - [`apply`]: the deterministic apply logic ([`Applier`]), which turns a
//!   run of commands into one RocksDB `WriteBatch`. It never reads a clock.
//! - [`index`]: the in-memory live index (callbacks, queues, running tasks)
//!   the scheduler reads; rebuilt from disk.
//! - [`layout`]: derives the indexes an earlier build's data lacks.
//! - `intake`, `gating`, `periodic`, `retention`: the apply of new tasks,
//!   gates, periodic schedules and retention's deletes.
//! - [`TaskStore`]: reads (any thread, any time).

pub mod apply;
mod auth;
mod dependency;
mod gating;
pub mod index;
mod intake;
pub mod keys;
pub mod layout;
mod periodic;
pub mod retention;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use apply::{Applier, ApplyBatch};
pub use index::{LiveIndex, SharedIndex};
pub use retention::{Collectable, RetentionOf, RetentionStatus};

use crate::domain::{Task, TaskState};

use crate::encoding::{self, CodecError};

/// What the rest of the node learns from apply: the replicated clock and
/// the applied index, published after each batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    /// Replicated time as of that index.
    pub now_ms: u64,
    /// When this node applied it (its monotonic clock). The stamp was made
    /// no later, so `now_ms` plus the time since is a lower bound on
    /// replicated time now.
    pub at: std::time::Instant,
}

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
    // One WAL serves three column families, and a WAL file is kept until
    // every family's memtable holding part of it is flushed. `meta` takes
    // a few small writes and would almost never fill its memtable, so old
    // WAL files would pile up forever (the soak benchmark showed +50 MiB a
    // minute at 500 tasks/s). Past this total, RocksDB flushes the
    // families that pin the oldest WAL.
    opts.set_max_total_wal_size(256 << 20);
    // The log is written once and deleted after a snapshot: compressing it
    // only burns CPU. The state machine's recent levels churn too: compress
    // only the deeper, colder levels.
    let mut log = Options::default();
    log.set_compression_type(rocksdb::DBCompressionType::None);
    log.set_write_buffer_size(64 << 20);
    let mut sm = Options::default();
    sm.set_write_buffer_size(64 << 20);
    // Apply looks up keys that mostly do not exist (a new idempotency key,
    // every schedule): a bloom filter answers those misses from memory
    // instead of reading every level.
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    sm.set_block_based_table_factory(&table);
    sm.set_memtable_prefix_bloom_ratio(0.1);
    sm.set_memtable_whole_key_filtering(true);
    sm.set_compression_per_level(&[
        rocksdb::DBCompressionType::None,
        rocksdb::DBCompressionType::None,
        rocksdb::DBCompressionType::Lz4,
        rocksdb::DBCompressionType::Lz4,
        rocksdb::DBCompressionType::Lz4,
        rocksdb::DBCompressionType::Lz4,
        rocksdb::DBCompressionType::Lz4,
    ]);
    let cfs = [
        ColumnFamilyDescriptor::new(keys::CF_LOG, log),
        ColumnFamilyDescriptor::new(keys::CF_META, Options::default()),
        ColumnFamilyDescriptor::new(keys::CF_SM, sm),
    ];
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
}

/// The record at state-machine `key`, if any (every read of one).
pub(crate) fn read_record<T: encoding::Record>(db: &DB, key: &[u8]) -> Result<Option<T>, StoreError> {
    match db.get_pinned_cf(cf(db, keys::CF_SM)?, key)? {
        Some(v) => Ok(Some(encoding::decode(&v)?)),
        None => Ok(None),
    }
}

pub(crate) fn get_u64(db: &DB, key: &[u8]) -> Result<u64, StoreError> {
    Ok(read_record(db, key)?.unwrap_or(0))
}

/// Which tasks a listing wants; `None` matches anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskFilter<'a> {
    pub callback: Option<&'a str>,
    pub collection: Option<&'a str>,
    pub state: Option<TaskState>,
}

impl TaskFilter<'_> {
    pub fn matches(&self, t: &Task, now_ms: u64) -> bool {
        self.callback.is_none_or(|c| t.callback == c)
            && self.collection.is_none_or(|c| t.collection.as_deref() == Some(c))
            && self.state.is_none_or(|s| t.display_state(now_ms) == s)
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

    /// Make everything written durable (a WAL sync) and stop RocksDB's
    /// background work, so that process exit cannot race it.
    pub fn close(&self) -> Result<(), StoreError> {
        let synced = self.db.flush_wal(true);
        self.db.cancel_all_background_work(true);
        Ok(synced?)
    }

    /// The RocksDB underneath, for the Raft layer (snapshots, digests).
    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn get(&self, id: u64) -> Result<Option<Task>, StoreError> {
        read_record(&self.db, &keys::task(id))
    }

    /// What the state machine answered a request id, if it remembers it.
    pub fn request(&self, id: &crate::domain::RequestId) -> Result<Option<crate::domain::RequestRecord>, StoreError> {
        read_record(&self.db, &keys::request(&id.0))
    }

    /// The task an idempotency key of `callback` names, if any.
    pub fn task_for_key(&self, callback: &str, key: &str) -> Result<Option<u64>, StoreError> {
        read_record(&self.db, &keys::idempotency(callback, key))
    }

    pub fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        Ok(self.db.get_cf(sm, keys::payload(id))?)
    }

    pub fn result(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        Ok(self.db.get_cf(sm, keys::result(id))?)
    }

    /// Tasks with id > `after`, in id order, that match the filters; at most
    /// `limit`. Indexed states (see [`TaskState::has_state_index`]) walk the
    /// by-state index, others scan rows. `Ready` matches pending tasks due at
    /// `now_ms`; `Scheduled`
    /// matches those not yet due.
    pub fn list(
        &self,
        filter: &TaskFilter<'_>,
        after: u64,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        let state = filter.state;
        let keep = |t: &Task| filter.matches(t, now_ms);
        let mut out = Vec::new();
        // Indexed states walk the by-state index; the others scan rows.
        let stored_states: Vec<TaskState> = match state {
            Some(s) if s.has_state_index() => vec![s],
            _ => Vec::new(),
        };
        if stored_states.is_empty() {
            let start = keys::task(after.saturating_add(1));
            for item in self.db.iterator_cf(sm, rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward)) {
                let (k, v) = item?;
                if !k.starts_with(&keys::TASK_PREFIX) || out.len() >= limit {
                    break;
                }
                let t: Task = encoding::decode(&v)?;
                if keep(&t) {
                    out.push(t);
                }
            }
            return Ok(out);
        }
        let mut ids = Vec::new();
        for s in stored_states {
            let start = keys::by_state(s.code(), after.saturating_add(1));
            let prefix = keys::by_state_prefix(s.code());
            for item in self.db.iterator_cf(sm, rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward)) {
                let (k, _) = item?;
                if !k.starts_with(&prefix) {
                    break;
                }
                if let Some(id) = keys::by_state_id(&k) {
                    ids.push(id);
                }
            }
        }
        ids.sort_unstable();
        for id in ids {
            if out.len() >= limit {
                break;
            }
            if let Some(t) = self.get(id)?.filter(|t| keep(t)) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Number of task rows.
    pub fn task_count(&self) -> Result<u64, StoreError> {
        get_u64(&self.db, keys::SM_TASK_COUNT)
    }

    /// The replicated clock as last applied, Unix ms.
    pub fn now_ms(&self) -> Result<u64, StoreError> {
        get_u64(&self.db, keys::SM_NOW)
    }

    /// Whether `node_id` was removed from the cluster.
    pub fn is_retired(&self, node_id: u64) -> Result<bool, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        Ok(self.db.get_pinned_cf(sm, keys::retired(node_id))?.is_some())
    }

    /// 64-bit FNV-1a over every state machine key and value, from one
    /// point-in-time view, with that view's raw last-applied record (the
    /// Raft layer decodes it).
    pub fn digest(&self) -> Result<(Option<Vec<u8>>, u64), StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        let view = self.db.snapshot();
        let applied = view.get_cf(sm, keys::SM_LAST_APPLIED)?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for item in view.iterator_cf(sm, rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            for part in [&(k.len() as u32).to_be_bytes()[..], &k, &v] {
                for byte in part {
                    h ^= u64::from(*byte);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        Ok((applied, h))
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

#[cfg(test)]
mod batching_tests;
#[cfg(test)]
mod dependency_tests;
#[cfg(test)]
mod gating_tests;
#[cfg(test)]
mod periodic_tests;
#[cfg(test)]
mod tests;
