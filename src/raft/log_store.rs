//! The Raft log on RocksDB, with group commit.
//!
//! `append` writes the entries in one unsynced `WriteBatch` (so they are
//! readable at once) and hands openraft's completion callback to the
//! [`Flusher`]: one long-lived thread that takes every pending callback,
//! calls `flush_wal(true)` once, and completes them all. Many client writes
//! thus share one fsync, and no callback fires before its entries are on
//! disk.
//!
//! Vote and log share one RocksDB instance, hence one WAL: a synced vote
//! write also syncs every log write made before it, and nothing is reordered.
//!
//! A read that finds damage (a RocksDB checksum, an entry or vote that
//! fails drover's seal or does not decode) raises the node's damage alarm
//! before its error reaches openraft, which stops Raft: fail-stop, never a
//! skipped entry.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use super::{codec, Entry, LogId, TypeConfig, Vote};
use crate::store::{cf, keys, Damage, StoreError};

/// The log storage handle. Clones share the database and the flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: Flusher,
    /// Raised when a read finds damaged data.
    damage: Damage,
    /// Whether to seal records (the cluster's feature level is 2 or more).
    versions: super::versions::Versions,
}

/// Watches the group-commit thread: how long the WAL sync in progress (if
/// any) has been running. A leader whose syncs stall steps down.
#[derive(Clone)]
pub struct SyncWatch {
    /// Start of the sync in progress, in µs since `base` (+1); 0 when idle.
    started: Arc<std::sync::atomic::AtomicU64>,
    base: std::time::Instant,
}

impl SyncWatch {
    fn new() -> SyncWatch {
        SyncWatch { started: Arc::default(), base: std::time::Instant::now() }
    }

    fn begin(&self) {
        let now = self.base.elapsed().as_micros() as u64 + 1;
        self.started.store(now, std::sync::atomic::Ordering::Release);
    }

    fn end(&self) {
        self.started.store(0, std::sync::atomic::Ordering::Release);
    }

    /// How long the sync in progress has been running; `None` when idle.
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        match self.started.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            t => {
                let now = self.base.elapsed().as_micros() as u64 + 1;
                Some(std::time::Duration::from_micros(now.saturating_sub(t)))
            }
        }
    }
}

/// How appends become durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WalSync {
    /// One long-lived group-commit thread syncs for every pending append
    /// (production).
    #[default]
    GroupCommit,
    /// Each append syncs before it returns, on the caller's task: no thread
    /// runs beside the async runtime, so a simulation that drives every
    /// node on one thread stays deterministic. One sync per append.
    Inline,
}

impl LogStore {
    pub fn new(db: Arc<DB>, damage: Damage, versions: super::versions::Versions) -> io::Result<Self> {
        LogStore::with_sync(db, damage, versions, WalSync::GroupCommit)
    }

    /// A log whose appends become durable as `sync` says.
    pub fn with_sync(
        db: Arc<DB>,
        damage: Damage,
        versions: super::versions::Versions,
        sync: WalSync,
    ) -> io::Result<Self> {
        let flusher = match sync {
            WalSync::GroupCommit => Flusher::start(db.clone())?,
            WalSync::Inline => Flusher::inline(&db),
        };
        Ok(LogStore { db, flusher, damage, versions })
    }

    /// `r`, having raised the damage alarm if it found damaged data.
    fn checked<T>(&self, what: &str, r: Result<T, io::Error>) -> Result<T, io::Error> {
        if let Err(e) = &r {
            self.damage.note_io(what, e);
        }
        r
    }

    /// The WAL sync watch of this store's group-commit thread.
    pub fn sync_watch(&self) -> SyncWatch {
        self.flusher.watch.clone()
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(cf(&self.db, keys::CF_META)?, key)?)
    }

    fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        match self.meta_get(keys::META_LAST_PURGED)? {
            Some(v) => Ok(Some(codec::decode_log_id(&v)?)),
            None => Ok(None),
        }
    }

    fn last_entry(&self) -> Result<Option<LogId>, io::Error> {
        let log = cf(&self.db, keys::CF_LOG)?;
        match self.db.iterator_cf(log, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(StoreError::from)?;
                Ok(Some(codec::decode_entry(&v)?.log_id))
            }
            None => Ok(None),
        }
    }
}

fn range_start(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(&n) => n,
        Bound::Excluded(&n) => n.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

/// Log reads or writes larger than this many entries run on a blocking
/// thread; smaller ones (the steady state: a few entries, served from the
/// memtable in microseconds) run inline, since the thread hop would cost
/// more than the work (measured: a hop per append and per replication
/// read cut single-task Schedule throughput by about 40%).
const INLINE_ENTRIES: u64 = 64;
/// Writes larger than this many bytes run on a blocking thread.
const INLINE_BYTES: usize = 256 << 10;

/// Run RocksDB work that may take milliseconds (a synced write, a scan, a
/// big write) on a blocking thread, off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, io::Error> + Send + 'static,
) -> Result<T, io::Error> {
    crate::blocking::run(work).await?
}

/// The entries at `start..end` (`end` exclusive, `None` for no bound).
fn read_entries(db: &DB, start: u64, end: Option<u64>) -> Result<Vec<Entry>, io::Error> {
    let log = cf(db, keys::CF_LOG)?;
    let from = keys::log_entry(start);
    let mut out = Vec::new();
    for item in db.iterator_cf(log, IteratorMode::From(&from, Direction::Forward)) {
        let (k, v) = item.map_err(StoreError::from)?;
        let Some(index) = keys::log_index(&k) else {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed log key"));
        };
        if end.is_some_and(|end| index >= end) {
            break;
        }
        out.push(codec::decode_entry(&v)?);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = range_start(&range);
        let end = match range.end_bound() {
            Bound::Included(&n) => Some(n.saturating_add(1)),
            Bound::Excluded(&n) => Some(n),
            Bound::Unbounded => None,
        };
        // A follower far behind reads many entries, likely from disk.
        let read = if end.is_some_and(|end| end.saturating_sub(start) <= INLINE_ENTRIES) {
            read_entries(&self.db, start, end)
        } else {
            let db = self.db.clone();
            blocking(move || read_entries(&db, start, end)).await
        };
        self.checked("reading the Raft log", read)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let vote = match self.meta_get(keys::META_VOTE) {
            Ok(Some(v)) => codec::decode_vote(&v).map(Some).map_err(io::Error::from),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        };
        self.checked("reading the vote", vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = (|| -> Result<LogState<TypeConfig>, io::Error> {
            let last_purged_log_id = self.last_purged()?;
            // An empty log after a purge reports the purge point as its last id.
            let last_log_id = self.last_entry()?.or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        })();
        self.checked("reading the Raft log's state", state)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let db = self.db.clone();
        let value = codec::encode_vote_as(vote, self.versions.seal());
        blocking(move || {
            let mut synced = WriteOptions::default();
            synced.set_sync(true);
            let meta = cf(&db, keys::CF_META)?;
            // Durable on return: synced write.
            db.put_cf_opt(meta, keys::META_VOTE, value, &synced).map_err(StoreError::from)?;
            Ok(())
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let meta = cf(&self.db, keys::CF_META)?;
        // Not synced: it rides on the next WAL sync. Losing it only means
        // recovery re-learns the commit index from the leader.
        let res = match committed {
            Some(c) => self.db.put_cf(meta, keys::META_COMMITTED, codec::encode_log_id_as(&c, self.versions.seal())),
            None => self.db.delete_cf(meta, keys::META_COMMITTED),
        };
        res.map_err(StoreError::from)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let committed = match self.meta_get(keys::META_COMMITTED) {
            Ok(Some(v)) => codec::decode_log_id(&v).map(Some).map_err(io::Error::from),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        };
        self.checked("reading the commit point", committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, keys::CF_LOG)?;
        let mut batch = WriteBatch::default();
        // Unsealed below feature level 2 (a node rolled back to 0.1.0 reads
        // its log); both decode.
        let seal = self.versions.seal();
        for entry in entries {
            batch.put_cf(log, keys::log_entry(entry.log_id.index), codec::encode_entry_as(&entry, seal));
        }
        // Readable once this returns, not yet durable: the flusher syncs the
        // WAL before it fires the callback.
        let small = batch.len() as u64 <= INLINE_ENTRIES && batch.size_in_bytes() <= INLINE_BYTES;
        if small || self.flusher.inline.is_some() {
            self.db.write(batch).map_err(StoreError::from)?;
        } else {
            let db = self.db.clone();
            blocking(move || db.write(batch).map_err(|e| StoreError::from(e).into())).await?;
        }
        self.flusher.submit(callback)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let log = cf(&self.db, keys::CF_LOG)?;
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(log, keys::log_entry(from), keys::log_entry(u64::MAX));
        batch.delete_cf(log, keys::log_entry(u64::MAX));
        // Not synced: the WAL orders it before any later append, whose sync
        // covers it; if it is lost, the node merely keeps entries it had.
        self.db.write(batch).map_err(StoreError::from)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let log = cf(&self.db, keys::CF_LOG)?;
        let meta = cf(&self.db, keys::CF_META)?;
        let mut batch = WriteBatch::default();
        // last_purged first, then the delete, in one atomic batch.
        batch.put_cf(meta, keys::META_LAST_PURGED, codec::encode_log_id_as(&log_id, self.versions.seal()));
        batch.delete_range_cf(log, keys::log_entry(0), keys::log_entry(log_id.index + 1));
        let db = self.db.clone();
        blocking(move || db.write(batch).map_err(|e| StoreError::from(e).into())).await
    }
}

/// Handle to the group-commit thread (or, with [`WalSync::Inline`], the
/// database it syncs itself).
#[derive(Clone)]
struct Flusher {
    tx: mpsc::Sender<IOFlushed<TypeConfig>>,
    watch: SyncWatch,
    /// With [`WalSync::Inline`]: the database to sync on submit (weak, like
    /// the thread's handle).
    inline: Option<std::sync::Weak<DB>>,
}

impl Flusher {
    fn inline(db: &Arc<DB>) -> Self {
        let (tx, _) = mpsc::channel::<IOFlushed<TypeConfig>>();
        Flusher { tx, watch: SyncWatch::new(), inline: Some(Arc::downgrade(db)) }
    }

    fn start(db: Arc<DB>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let watch = SyncWatch::new();
        let sync_watch = watch.clone();
        // A weak handle: this detached thread must never hold the last
        // reference, or the database would be closed here, racing the
        // process's exit (RocksDB aborts on "pthread lock: Invalid
        // argument" when its statics are torn down under it).
        let db = Arc::downgrade(&db);
        std::thread::Builder::new().name("drover-wal-sync".into()).spawn(move || {
            // Ends when every LogStore clone (every sender) is dropped.
            while let Ok(first) = rx.recv() {
                let mut pending = vec![first];
                pending.extend(rx.try_iter());
                // Durable after this call: every entry written before the
                // callbacks in `pending` were submitted.
                sync_watch.begin();
                let started = std::time::Instant::now();
                let result = match db.upgrade() {
                    Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
                    None => Err("the database is closed".to_string()),
                };
                metrics::histogram!(crate::metrics::RAFT_LOG_FSYNC).record(started.elapsed().as_secs_f64());
                sync_watch.end();
                for callback in pending {
                    callback.io_completed(result.clone().map_err(io::Error::other));
                }
            }
        })?;
        Ok(Flusher { tx, watch, inline: None })
    }

    fn submit(&self, callback: IOFlushed<TypeConfig>) -> io::Result<()> {
        if let Some(db) = &self.inline {
            // Durable after this call: every entry written before it.
            let result = match db.upgrade() {
                Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
                None => Err("the database is closed".to_string()),
            };
            callback.io_completed(result.map_err(io::Error::other));
            return Ok(());
        }
        self.tx.send(callback).map_err(|_| io::Error::other("WAL sync thread has stopped"))
    }
}
