//! Verifying a data dir: every RocksDB block against its checksum, every
//! state-machine record's format, and the current snapshot file's CRC. A
//! node runs it before it serves (and refuses to start on a failure);
//! `drover admin check` runs it offline on a stopped node's data dir.

use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, ReadOptions, DB};

use super::snapshot::{self, SnapshotDir};
use crate::encoding::{FORMAT, FORMAT_1};
use crate::store::keys;

/// What a check read.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Records read per column family.
    pub records: Vec<(&'static str, u64)>,
    /// The snapshot file verified, if there is one.
    pub snapshot: Option<PathBuf>,
}

/// The data dir failed a check: what, and where.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Corrupt {
    pub what: String,
}

fn corrupt(what: impl Into<String>) -> Corrupt {
    Corrupt { what: what.into() }
}

/// Read every record of every column family with checksums verified (and
/// without filling the block cache), then the current snapshot.
pub fn verify(db: &DB, data_dir: &Path) -> Result<CheckReport, Corrupt> {
    let mut report = CheckReport::default();
    for name in [keys::CF_META, keys::CF_LOG, keys::CF_SM] {
        let cf = db.cf_handle(name).ok_or_else(|| corrupt(format!("column family {name} is missing")))?;
        let mut opts = ReadOptions::default();
        opts.set_verify_checksums(true);
        opts.fill_cache(false);
        let mut n = 0u64;
        for item in db.iterator_cf_opt(cf, opts, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| corrupt(format!("column family {name}: {e}")))?;
            let record = match name {
                keys::CF_LOG => true,
                keys::CF_SM => keys::holds_record(&k),
                _ => false,
            };
            if record {
                check_format(name, &k, &v)?;
            }
            n += 1;
        }
        report.records.push((name, n));
    }
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

fn check_format(cf: &str, key: &[u8], value: &[u8]) -> Result<(), Corrupt> {
    match value.first() {
        Some(&(FORMAT | FORMAT_1)) => Ok(()),
        Some(v) => Err(corrupt(format!("column family {cf}: record {key:02x?} has unknown format {v}"))),
        None => Err(corrupt(format!("column family {cf}: record {key:02x?} is empty"))),
    }
}

/// Open a stopped node's database read-only and verify it.
pub fn verify_offline(data_dir: &Path) -> Result<CheckReport, Corrupt> {
    let path = data_dir.join("db");
    if !path.exists() {
        return Err(corrupt(format!("{} does not exist: not a drover data dir", path.display())));
    }
    let db = DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        &path,
        [keys::CF_LOG, keys::CF_META, keys::CF_SM],
        false,
    )
    .map_err(|e| corrupt(format!("{}: {e}", path.display())))?;
    verify(&db, data_dir)
}
