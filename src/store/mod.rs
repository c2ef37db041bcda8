//! The task store: drover's state machine data on RocksDB.
//!
//! - [`keys`]: every RocksDB key and column family.
//! - [`apply`]: the deterministic apply logic ([`Applier`]), which turns a
//!   run of commands into one RocksDB `WriteBatch`. It never reads a clock.
//! - [`index`]: the in-memory live index (callbacks, queues, running tasks)
//!   the scheduler reads; rebuilt from disk.
//! - [`layout`]: derives the indexes an earlier build's data lacks.
//! - [`wal`]: drover's own reading of RocksDB's write-ahead log before it
//!   is replayed (damage before the last record is refused; a torn last
//!   record is cut off).
//! - `intake`, `gating`, `periodic`, `retention`: the apply of new tasks,
//!   gates, periodic schedules and retention's deletes.
//! - [`TaskStore`]: reads (any thread, any time).

pub mod apply;
mod auth;
mod damage;
mod dependency;
mod gating;
pub mod index;
mod intake;
pub mod keys;
pub mod layout;
mod periodic;
pub mod retention;
mod sorted_writes;
pub mod trace;
pub mod wal;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

pub use apply::{Applier, ApplyBatch};
pub use damage::Damage;
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
    pub at: tokio::time::Instant,
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
    /// The data on disk is damaged (a WAL record before the last, a table
    /// block, a record that fails its checksum): this node must not serve
    /// from it. Names the file, and the byte offset where known.
    #[error("{0}")]
    Damaged(String),
}

impl StoreError {
    /// Whether this error says the data on disk is damaged (as opposed to
    /// an I/O error, a full disk or a lock held by another process).
    pub fn is_damage(&self) -> bool {
        match self {
            StoreError::Damaged(_) | StoreError::Codec(_) => true,
            StoreError::Rocks(e) => e.kind() == rocksdb::ErrorKind::Corruption,
            StoreError::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            StoreError::MissingColumnFamily(_) => false,
        }
    }
}

impl From<StoreError> for std::io::Error {
    /// Damage becomes `InvalidData` (as [`CodecError`] does), so that it
    /// is still told apart from an I/O failure above the Raft layer.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(e) => e,
            other if other.is_damage() => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
            other => std::io::Error::other(other),
        }
    }
}

/// Open (or create) the node's single RocksDB instance with drover's column
/// families. One instance means one WAL, so vote, log and state-machine
/// writes reach disk in the order they were made.
///
/// The WAL is read by drover first ([`wal::scan`]): damage before its last
/// record is refused ([`StoreError::Damaged`], naming the file and offset);
/// a torn last record (a write a crash cut short, never acknowledged) is
/// cut off, its bytes kept in `DATA_DIR/torn-tails/`. RocksDB then opens in
/// `AbsoluteConsistency` mode (any bad WAL record is an error, never a
/// silent stop) with `paranoid_checks`, and tracks synced WAL files in its
/// MANIFEST (a closed WAL file missing or shorter than synced is an error).
pub fn open_db(path: &Path) -> Result<Arc<DB>, StoreError> {
    match wal::scan(path)? {
        wal::WalState::Damaged(d) => return Err(StoreError::Damaged(d.to_string())),
        wal::WalState::TornTail(torn) => {
            let keep = path.parent().unwrap_or(path).join("torn-tails");
            let saved = wal::repair(&torn, &keep)?;
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                bytes = torn.bytes,
                saved = %saved.display(),
                "{torn}: it was never acknowledged, so it is dropped (its bytes are kept)"
            );
        }
        wal::WalState::Clean { .. } => {}
    }
    let (opts, cfs) = db_options();
    DB::open_cf_descriptors(&opts, path, cfs).map(Arc::new).map_err(|e| opened(path, e))
}

/// Open the database read-only, without changing a file: for checks of a
/// stopped node. `torn_tail`: [`wal::scan`] found the newest WAL's last
/// record torn (and nothing intact after it), so RocksDB may stop there.
pub fn open_db_read_only(path: &Path, torn_tail: bool) -> Result<DB, StoreError> {
    let (mut opts, _) = db_options();
    if torn_tail {
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    }
    DB::open_cf_for_read_only(&opts, path, [keys::CF_LOG, keys::CF_META, keys::CF_SM], false)
        .map_err(|e| opened(path, e))
}

/// An error opening the database: damage (RocksDB's message names the file)
/// or something else (a lock held by another process, an I/O error).
fn opened(path: &Path, e: rocksdb::Error) -> StoreError {
    if e.kind() == rocksdb::ErrorKind::Corruption {
        StoreError::Damaged(format!("{}: {e}", path.display()))
    } else {
        StoreError::Rocks(e)
    }
}

fn db_options() -> (Options, [ColumnFamilyDescriptor; 3]) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.increase_parallelism(2);
    opts.set_keep_log_file_num(4);
    // Any bad WAL record fails the open, never a silent stop (drover's own
    // scan has already cut off a torn last record); see `wal`.
    opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::AbsoluteConsistency);
    opts.set_paranoid_checks(true);
    opts.set_track_and_verify_wals_in_manifest(true);
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
    (opts, cfs)
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
    /// Raised by any read that finds damaged data: the node then stops.
    damage: Damage,
}

impl TaskStore {
    pub fn new(db: Arc<DB>) -> Self {
        TaskStore { db, damage: Damage::default() }
    }

    /// The damage alarm every read of this store (and the Raft storage
    /// built on it) raises.
    pub fn damage(&self) -> &Damage {
        &self.damage
    }

    /// `r`, having raised the damage alarm if it says the data is damaged:
    /// a state row that fails its checksum or its decoding is never
    /// skipped, and stops the node (fail-stop).
    pub(crate) fn checked<T>(&self, what: &str, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            self.damage.note(what, e);
        }
        r
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
        self.checked("reading a task row", read_record(&self.db, &keys::task(id)))
    }

    /// What the state machine answered a request id, if it remembers it.
    pub fn request(&self, id: &crate::domain::RequestId) -> Result<Option<crate::domain::RequestRecord>, StoreError> {
        self.checked("reading a request id", read_record(&self.db, &keys::request(&id.0)))
    }

    /// The task an idempotency key of `callback` names, if any.
    pub fn task_for_key(&self, callback: &str, key: &str) -> Result<Option<u64>, StoreError> {
        self.checked("reading an idempotency key", read_record(&self.db, &keys::idempotency(callback, key)))
    }

    pub fn payload(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        self.checked("reading a payload", self.db.get_cf(sm, keys::payload(id)).map_err(StoreError::from))
    }

    pub fn result(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        self.checked("reading a result", self.db.get_cf(sm, keys::result(id)).map_err(StoreError::from))
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
        self.checked("listing tasks", self.list_unchecked(filter, after, limit, now_ms))
    }

    fn list_unchecked(
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
        self.checked("reading the task count", get_u64(&self.db, keys::SM_TASK_COUNT))
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

    /// Every retired node id.
    pub fn retired_ids(&self) -> Result<Vec<u64>, StoreError> {
        let sm = cf(&self.db, keys::CF_SM)?;
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(sm, keys::RETIRED_PREFIX) {
            let (k, _) = item?;
            match keys::retired_id(&k) {
                Some(id) => out.push(id),
                None => break,
            }
        }
        Ok(out)
    }

    /// 64-bit FNV-1a over every state machine key and value, from one
    /// point-in-time view, with that view's raw last-applied record (the
    /// Raft layer decodes it).
    pub fn digest(&self) -> Result<(Option<Vec<u8>>, u64), StoreError> {
        self.checked("computing the state digest", self.digest_unchecked())
    }

    fn digest_unchecked(&self) -> Result<(Option<Vec<u8>>, u64), StoreError> {
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
