//! Verifying a data dir, in three layers (DESIGN.md, "Damaged storage"):
//!
//! 1. the write-ahead log, read by drover before RocksDB replays it
//!    ([`crate::store::wal`]): damage before its last record is refused,
//!    naming the file and byte offset; a torn last record is not;
//! 2. every RocksDB block against its checksum (RocksDB), every record's
//!    format, and every Raft record against drover's own seal (a CRC-32)
//!    and structure: each log entry decodes and sits at its own index;
//! 3. what only Raft knows ([`raft_invariants`]): the log has no holes, its
//!    terms never go down, it starts right after the purge point, the vote
//!    is at least the last entry's term, and the commit point is in the log.
//!    Lost records that every checksum missed (a whole WAL file or block
//!    gone) show here.
//!
//! A node runs layers 2 and 3 before it serves (layer 1 runs in
//! [`crate::store::open_db`]); `drover admin check` runs all three offline
//! on a stopped node's data dir, read-only.

use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, ReadOptions, DB};

use super::snapshot::{self, SnapshotDir};
use super::{codec, LogId};
use crate::encoding::{FORMAT, FORMAT_1, SEALED};
use crate::store::keys;
use crate::store::wal::{self, WalState};

/// What a check read.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Records read per column family.
    pub records: Vec<(&'static str, u64)>,
    /// The snapshot file verified, if there is one.
    pub snapshot: Option<PathBuf>,
    /// A torn last WAL record that the node drops when it starts (offline
    /// checks only: a starting node has already cut it off).
    pub torn_tail: Option<wal::TornTail>,
    /// The Raft log's first and last index, if it holds entries.
    pub log_span: Option<(u64, u64)>,
    /// The cluster ID the data dir holds, if any.
    pub cluster_id: Option<crate::domain::ClusterId>,
}

/// The data dir failed a check: what, and where.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Corrupt {
    pub what: String,
    /// Not damage: an intact record of a newer build (a log entry of a
    /// feature level this build does not speak).
    pub too_new: bool,
}

fn corrupt(what: impl Into<String>) -> Corrupt {
    Corrupt { what: what.into(), too_new: false }
}

/// Whether `e` says a record was written by a newer build.
fn too_new(e: &std::io::Error) -> bool {
    e.get_ref().and_then(|i| i.downcast_ref::<crate::encoding::CodecError>()).is_some_and(|c| c.is_too_new())
}

/// What the log and meta column families hold, as read by [`verify`].
#[derive(Debug, Default)]
struct RaftRecords {
    /// (first, last) log entries.
    first: Option<LogId>,
    last: Option<LogId>,
    vote_term: Option<u64>,
    committed: Option<u64>,
    purged: Option<u64>,
    applied: Option<u64>,
}

/// Read every record of every column family with checksums verified (and
/// without filling the block cache), decode every Raft record, check the
/// Raft log's invariants, then the current snapshot.
pub fn verify(db: &DB, data_dir: &Path) -> Result<CheckReport, Corrupt> {
    let mut report = CheckReport::default();
    let mut raft = RaftRecords::default();
    for name in [keys::CF_META, keys::CF_LOG, keys::CF_SM] {
        let cf = db.cf_handle(name).ok_or_else(|| corrupt(format!("column family {name} is missing")))?;
        let mut opts = ReadOptions::default();
        opts.set_verify_checksums(true);
        opts.fill_cache(false);
        let mut n = 0u64;
        for item in db.iterator_cf_opt(cf, opts, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| corrupt(format!("column family {name}: {e}")))?;
            match name {
                keys::CF_LOG => log_entry(&mut raft, &k, &v)?,
                keys::CF_META => meta_record(&mut raft, &k, &v)?,
                _ if keys::holds_record(&k) => check_format(name, &k, &v)?,
                _ => {}
            }
            if name == keys::CF_SM && &*k == keys::SM_LAST_APPLIED {
                let id = codec::decode_log_id(&v).map_err(|e| corrupt(format!("the last-applied record: {e}")))?;
                raft.applied = Some(id.index);
            }
            n += 1;
        }
        report.records.push((name, n));
    }
    raft_invariants(&raft)?;
    report.log_span = raft.first.zip(raft.last).map(|(f, l)| (f.index, l.index));
    report.cluster_id =
        super::identity::read_cluster_id(db).map_err(|e| corrupt(format!("the cluster ID record: {e}")))?;
    match SnapshotDir::existing(data_dir.join("snapshots")).current() {
        Ok(None) => {}
        Ok(Some((_, file))) => {
            snapshot::verify(&file.path).map_err(|e| corrupt(format!("snapshot {}: {e}", file.path.display())))?;
            report.snapshot = Some(file.path);
        }
        Err(e) => return Err(corrupt(format!("snapshot: {e}"))),
    }
    Ok(report)
}

/// One log entry: sealed and well-formed, at its own index, right after
/// the previous one, in a term no lower.
fn log_entry(raft: &mut RaftRecords, key: &[u8], value: &[u8]) -> Result<(), Corrupt> {
    let index = keys::log_index(key).ok_or_else(|| corrupt(format!("Raft log: malformed key {key:02x?}")))?;
    let entry = codec::decode_entry(value)
        .map_err(|e| Corrupt { too_new: too_new(&e), what: format!("Raft log entry {index}: {e}") })?;
    let id = entry.log_id;
    if id.index != index {
        return Err(corrupt(format!("Raft log entry at index {index} says it is entry {}", id.index)));
    }
    if let Some(prev) = raft.last {
        if index != prev.index + 1 {
            return Err(corrupt(format!(
                "Raft log: entries {}..={} are missing (the log jumps from {} to {index}): records were lost",
                prev.index + 1,
                index - 1,
                prev.index
            )));
        }
        if id.leader_id.term < prev.leader_id.term {
            return Err(corrupt(format!(
                "Raft log: entry {index} has term {}, below entry {}'s term {}",
                id.leader_id.term, prev.index, prev.leader_id.term
            )));
        }
    }
    raft.first.get_or_insert(id);
    raft.last = Some(id);
    Ok(())
}

fn meta_record(raft: &mut RaftRecords, key: &[u8], value: &[u8]) -> Result<(), Corrupt> {
    let bad = |what: &str, e: &dyn std::fmt::Display| corrupt(format!("the {what} record: {e}"));
    match key {
        keys::META_VOTE => {
            raft.vote_term = Some(codec::decode_vote(value).map_err(|e| bad("vote", &e))?.leader_id.term)
        }
        keys::META_COMMITTED => {
            raft.committed = Some(codec::decode_log_id(value).map_err(|e| bad("committed", &e))?.index)
        }
        keys::META_LAST_PURGED => {
            raft.purged = Some(codec::decode_log_id(value).map_err(|e| bad("last-purged", &e))?.index)
        }
        _ => {}
    }
    Ok(())
}

/// What Raft's own records must satisfy whatever the checksums say.
fn raft_invariants(r: &RaftRecords) -> Result<(), Corrupt> {
    if let (Some(first), Some(purged)) = (r.first, r.purged) {
        if first.index != purged + 1 {
            return Err(corrupt(format!(
                "Raft log: it starts at entry {} but was purged up to {purged}: entries {}..{} were lost",
                first.index,
                purged + 1,
                first.index
            )));
        }
    }
    if let Some(last) = r.last {
        let term = last.leader_id.term;
        match r.vote_term {
            // A node saves a term's vote (synced) before it takes entries of it.
            Some(v) if v < term => {
                return Err(corrupt(format!(
                    "the vote (term {v}) is older than the last log entry's term {term}: the record holding the vote was lost"
                )))
            }
            None if term > 0 => {
                return Err(corrupt(format!(
                    "there is no vote but the log holds entries of term {term}: the record holding the vote was lost"
                )))
            }
            _ => {}
        }
    }
    if let Some(c) = r.committed {
        // Committed is saved only for entries this node holds (or a
        // snapshot it applied).
        let held = [r.last.map(|l| l.index), r.purged, r.applied].into_iter().flatten().max();
        if held.is_none_or(|h| c > h) {
            return Err(corrupt(format!(
                "the commit point {c} is beyond the log (last entry {}): committed entries were lost",
                r.last.map_or("none".to_string(), |l| l.index.to_string())
            )));
        }
    }
    Ok(())
}

fn check_format(cf: &str, key: &[u8], value: &[u8]) -> Result<(), Corrupt> {
    match value.first() {
        Some(&(FORMAT | FORMAT_1 | SEALED)) => Ok(()),
        Some(v) => Err(corrupt(format!("column family {cf}: record {key:02x?} has unknown format {v}"))),
        None => Err(corrupt(format!("column family {cf}: record {key:02x?} is empty"))),
    }
}

/// Open a stopped node's database read-only and verify it: its WAL first
/// (without changing it: a torn tail is reported, and left for the node to
/// drop when it starts), then everything [`verify`] checks.
pub fn verify_offline(data_dir: &Path) -> Result<CheckReport, Corrupt> {
    let path = data_dir.join("db");
    if !path.exists() {
        return Err(corrupt(format!("{} does not exist: not a drover data dir", path.display())));
    }
    let torn_tail = match wal::scan(&path).map_err(|e| corrupt(format!("{}: {e}", path.display())))? {
        WalState::Damaged(d) => return Err(corrupt(d.to_string())),
        WalState::TornTail(t) => Some(t),
        WalState::Clean { .. } => None,
    };
    let db = crate::store::open_db_read_only(&path, torn_tail.is_some()).map_err(|e| corrupt(e.to_string()))?;
    let mut report = verify(&db, data_dir)?;
    report.torn_tail = torn_tail;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::LogId;

    fn id(term: u64, index: u64) -> LogId {
        LogId::from(codec::LogIdRecord { term, node_id: 1, index })
    }

    fn records(first: u64, last: u64, term: u64) -> RaftRecords {
        RaftRecords {
            first: Some(id(term, first)),
            last: Some(id(term, last)),
            vote_term: Some(term),
            ..Default::default()
        }
    }

    #[test]
    fn a_hole_in_the_log_or_a_term_going_down_is_damage() {
        let mut r = RaftRecords::default();
        for i in 1..=3 {
            log_entry(
                &mut r,
                &keys::log_entry(i),
                &codec::encode_entry(&openraft::entry::RaftEntry::new_blank(id(2, i))),
            )
            .unwrap();
        }
        let five = codec::encode_entry(&openraft::entry::RaftEntry::new_blank(id(2, 5)));
        let e = log_entry(&mut r, &keys::log_entry(5), &five).unwrap_err();
        assert!(e.what.contains("4..=4 are missing"), "{e}");
        let lower = codec::encode_entry(&openraft::entry::RaftEntry::new_blank(id(1, 4)));
        let e = log_entry(&mut r, &keys::log_entry(4), &lower).unwrap_err();
        assert!(e.what.contains("below"), "{e}");
        let misplaced = codec::encode_entry(&openraft::entry::RaftEntry::new_blank(id(2, 9)));
        assert!(log_entry(&mut r, &keys::log_entry(4), &misplaced).is_err());
    }

    #[test]
    fn a_vote_older_than_the_log_or_a_commit_beyond_it_is_damage() {
        assert!(raft_invariants(&records(1, 10, 3)).is_ok());
        let e = raft_invariants(&RaftRecords { vote_term: Some(2), ..records(1, 10, 3) }).unwrap_err();
        assert!(e.what.contains("record holding the vote was lost"), "{e}");
        let e = raft_invariants(&RaftRecords { vote_term: None, ..records(1, 10, 3) }).unwrap_err();
        assert!(e.what.contains("no vote"), "{e}");
        let e = raft_invariants(&RaftRecords { committed: Some(11), ..records(1, 10, 3) }).unwrap_err();
        assert!(e.what.contains("commit point 11"), "{e}");
        assert!(raft_invariants(&RaftRecords { committed: Some(12), applied: Some(12), ..records(1, 10, 3) }).is_ok());
        let e = raft_invariants(&RaftRecords { purged: Some(3), ..records(6, 10, 3) }).unwrap_err();
        assert!(e.what.contains("entries 4..6 were lost"), "{e}");
        assert!(raft_invariants(&RaftRecords { purged: Some(5), ..records(6, 10, 3) }).is_ok());
    }
}
