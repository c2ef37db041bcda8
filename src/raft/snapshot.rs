//! Snapshot files: a point-in-time copy of the state machine column family,
//! streamed from a RocksDB snapshot into a checksummed file, shipped in
//! chunks, and installed crash-safely.
//!
//! File layout:
//!
//! ```text
//! MAGIC (8 bytes)
//! { key_len: u32 BE, key, value_len: u32 BE, value }*
//! END (u32 BE 0xFFFF_FFFF)
//! crc32 of every byte before it (u32 BE)
//! ```
//!
//! Beside each `<name>.snap` sits `<name>.meta`: the snapshot's last log id
//! and membership in drover's own encoding (see [`super::codec`]).
//!
//! Install protocol (crash-safe without one giant write batch):
//! 1. verify the file's checksum;
//! 2. write the `installing` marker (synced);
//! 3. clear the state machine and load the records in bounded batches;
//! 4. delete the marker and sync.
//!
//! A node that crashes between 2 and 4 finds the marker on start and redoes
//! the install from the same file before Raft starts.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{WriteBatch, WriteOptions, DB};

use super::codec;
use super::{LogId, SnapshotMeta, StoredMembership};
use crate::encoding;
use crate::store::{cf, keys, StoreError};

const MAGIC: &[u8; 8] = b"DRVSNAP1";
const END: u32 = u32::MAX;
/// Bytes loaded per write batch while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// A snapshot's data: a file on local disk.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

impl crate::encoding::Record for MetaRecord {}

#[derive(serde::Serialize, serde::Deserialize)]
struct MetaRecord {
    last_log_id: Option<codec::LogIdRecord>,
    #[serde(with = "serde_bytes")]
    membership: Vec<u8>,
}

/// `seal`: the membership inside sealed (feature level 2 on; 0.1.0 reads
/// only unsealed ones).
pub fn encode_meta(meta: &SnapshotMeta, seal: bool) -> Vec<u8> {
    encoding::encode(&MetaRecord {
        last_log_id: meta.last_log_id.as_ref().map(codec::LogIdRecord::from),
        membership: codec::encode_stored_membership_as(&meta.last_membership, seal),
    })
}

pub fn decode_meta(bytes: &[u8]) -> io::Result<SnapshotMeta> {
    let r: MetaRecord = encoding::decode(bytes)?;
    Ok(SnapshotMeta {
        last_log_id: r.last_log_id.map(LogId::from),
        last_membership: codec::decode_stored_membership(&r.membership)?,
    })
}

/// The directory of snapshot files, and which one is current.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        // Leftovers of interrupted transfers or builds.
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(SnapshotDir { dir })
    }

    /// The snapshot dir as it is (nothing created or cleaned up): for
    /// reading only. A dir that does not exist holds no snapshot.
    pub fn existing(dir: PathBuf) -> Self {
        SnapshotDir { dir }
    }

    /// A fresh path for an incoming or new snapshot file.
    pub fn temp_path(&self) -> PathBuf {
        let n: u64 = rand::random();
        self.dir.join(format!("incoming-{n:016x}.tmp"))
    }

    fn name_of(meta: &SnapshotMeta) -> String {
        let idx = meta.last_log_id.as_ref().map(|l| (l.leader_id.term, l.index)).unwrap_or((0, 0));
        format!("snap-{:020}-{:020}", idx.1, idx.0)
    }

    /// Make `data` (a finished file) the current snapshot with `meta`, and
    /// delete older ones. Returns the file's final path.
    /// `seal`: as [`encode_meta`].
    pub fn commit(&self, meta: &SnapshotMeta, data: &Path, seal: bool) -> io::Result<PathBuf> {
        let name = Self::name_of(meta);
        let snap = self.dir.join(format!("{name}.snap"));
        let meta_path = self.dir.join(format!("{name}.meta"));
        if data != snap {
            fs::rename(data, &snap)?;
        }
        let tmp = self.dir.join(format!("{name}.meta.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&encode_meta(meta, seal))?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &meta_path)?;
        File::open(&self.dir)?.sync_all()?;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if stem.starts_with("snap-") && stem < name.as_str() && !stem.starts_with(&name) {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(snap)
    }

    /// The newest committed snapshot, if any.
    pub fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        let mut newest: Option<PathBuf> = None;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let is_meta = path.extension().is_some_and(|e| e == "meta");
            if is_meta && newest.as_ref().is_none_or(|n| path > *n) {
                newest = Some(path);
            }
        }
        let Some(meta_path) = newest else { return Ok(None) };
        let meta = decode_meta(&fs::read(&meta_path)?)?;
        let path = meta_path.with_extension("snap");
        if !path.exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} has no data file", meta_path.display())));
        }
        Ok(Some((meta, SnapshotFile { path })))
    }
}

fn write_record(out: &mut impl Write, crc: &mut crc32fast::Hasher, key: &[u8], value: &[u8]) -> io::Result<()> {
    for part in [&(key.len() as u32).to_be_bytes()[..], key, &(value.len() as u32).to_be_bytes()[..], value] {
        crc.update(part);
        out.write_all(part)?;
    }
    Ok(())
}

/// Stream the state machine, as of one RocksDB snapshot, into `path`.
/// Returns the meta read from the same RocksDB snapshot, so data and meta
/// always agree. Blocking: run it on a blocking thread.
/// A backup: a snapshot file of the state machine at `path`; returns the
/// applied index it holds.
pub fn build_backup(store: &crate::store::TaskStore, path: &Path) -> Result<u64, StoreError> {
    Ok(build(store.db(), path)?.last_log_id.map(|l| l.index).unwrap_or(0))
}

/// The state machine's digest and the applied index it is at: replicas at
/// the same applied index must agree.
pub fn digest(store: &crate::store::TaskStore) -> Result<(u64, u64), StoreError> {
    let (applied, hash) = store.digest()?;
    let applied = match applied {
        Some(v) => super::codec::decode_log_id(&v)?.index,
        None => 0,
    };
    Ok((applied, hash))
}

pub fn build(db: &DB, path: &Path) -> Result<SnapshotMeta, StoreError> {
    let sm = cf(db, keys::CF_SM)?;
    let view = db.snapshot();
    let last_log_id = match view.get_cf(sm, keys::SM_LAST_APPLIED)? {
        Some(v) => Some(codec::decode_log_id(&v)?),
        None => None,
    };
    let last_membership = match view.get_cf(sm, keys::SM_MEMBERSHIP)? {
        Some(v) => codec::decode_stored_membership(&v)?,
        None => StoredMembership::default(),
    };
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut crc = crc32fast::Hasher::new();
    crc.update(MAGIC);
    out.write_all(MAGIC)?;
    for item in view.iterator_cf(sm, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        write_record(&mut out, &mut crc, &k, &v)?;
    }
    let end = END.to_be_bytes();
    crc.update(&end);
    out.write_all(&end)?;
    out.write_all(&crc.finalize().to_be_bytes())?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(SnapshotMeta { last_log_id, last_membership })
}

/// Read every record of a snapshot file, calling `f` for each, and verify
/// the checksum at the end.
pub fn read_records(path: &Path, mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>) -> Result<(), StoreError> {
    let corrupt = |what: &str| {
        StoreError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("snapshot {}: {what}", path.display())))
    };
    let file = File::open(path)?;
    // The file may be hostile (a peer's transfer, a backup given to
    // `drover admin restore`): every length is checked against the bytes
    // left in the file before anything is allocated for it.
    let mut left = file.metadata()?.len();
    let mut claim = |n: u32| -> Result<usize, StoreError> {
        left = left.checked_sub(u64::from(n)).ok_or_else(|| corrupt("a record runs past the end of the file"))?;
        Ok(n as usize)
    };
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let mut magic = [0u8; 8];
    claim(8)?;
    input.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(corrupt("bad magic"));
    }
    crc.update(&magic);
    let mut len = [0u8; 4];
    let (mut key, mut value) = (Vec::new(), Vec::new());
    loop {
        claim(4)?;
        input.read_exact(&mut len)?;
        crc.update(&len);
        let klen = u32::from_be_bytes(len);
        if klen == END {
            break;
        }
        key.resize(claim(klen)?, 0);
        input.read_exact(&mut key)?;
        claim(4)?;
        input.read_exact(&mut len)?;
        value.resize(claim(u32::from_be_bytes(len))?, 0);
        input.read_exact(&mut value)?;
        crc.update(&key);
        crc.update(&len);
        crc.update(&value);
        f(&key, &value)?;
    }
    claim(4)?;
    input.read_exact(&mut len)?;
    if u32::from_be_bytes(len) != crc.finalize() {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(())
}

/// Check a snapshot file's framing and checksum. Blocking.
pub fn verify(path: &Path) -> Result<(), StoreError> {
    read_records(path, |_, _| Ok(()))
}

/// Replace the state machine with the snapshot at `path`. Blocking. See the
/// module doc for why this is crash-safe.
pub fn install(db: &DB, path: &Path) -> Result<(), StoreError> {
    // 1. Verify before touching anything.
    verify(path)?;
    let sm = cf(db, keys::CF_SM)?;
    let meta = cf(db, keys::CF_META)?;
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    // 2. Durable: from here on, a restart redoes this install.
    db.put_cf_opt(meta, keys::META_INSTALLING, path.to_string_lossy().as_bytes(), &synced)?;
    // 3. Clear and load.
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(sm, keys::sm_start(), keys::sm_end());
    read_records(path, |k, v| {
        batch.put_cf(sm, k, v);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    // 4. Durable: the state machine is the snapshot's, and the marker is gone.
    batch.delete_cf(meta, keys::META_INSTALLING);
    db.write_opt(batch, &synced)?;
    Ok(())
}

/// Finish an install that a crash interrupted. Call before Raft starts.
pub fn recover_interrupted_install(db: &Arc<DB>) -> Result<(), StoreError> {
    let meta = cf(db, keys::CF_META)?;
    if let Some(path) = db.get_cf(meta, keys::META_INSTALLING)? {
        let path = PathBuf::from(String::from_utf8_lossy(&path).into_owned());
        tracing::warn!(path = %path.display(), "redoing a snapshot install interrupted by a crash");
        install(db, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open_db;

    #[test]
    fn build_then_install_copies_the_state_machine_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let src = open_db(&dir.path().join("a")).unwrap();
        let dst = open_db(&dir.path().join("b")).unwrap();
        let sm = cf(&src, keys::CF_SM).unwrap();
        for i in 0..1000u64 {
            src.put_cf(sm, keys::task(i), vec![i as u8; (i % 50) as usize]).unwrap();
        }
        // The destination has rows the snapshot does not: they must go.
        dst.put_cf(cf(&dst, keys::CF_SM).unwrap(), keys::task(5000), b"stale").unwrap();
        let path = dir.path().join("s.snap");
        build(&src, &path).unwrap();
        install(&dst, &path).unwrap();
        type Rows = Vec<(Box<[u8]>, Box<[u8]>)>;
        let dump = |db: &DB| -> Rows {
            db.iterator_cf(cf(db, keys::CF_SM).unwrap(), rocksdb::IteratorMode::Start).map(|r| r.unwrap()).collect()
        };
        assert_eq!(dump(&src), dump(&dst));
        assert!(dst.get_cf(cf(&dst, keys::CF_META).unwrap(), keys::META_INSTALLING).unwrap().is_none());
    }

    #[test]
    fn a_corrupt_file_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("a")).unwrap();
        let sm = cf(&db, keys::CF_SM).unwrap();
        db.put_cf(sm, keys::task(1), b"row").unwrap();
        let path = dir.path().join("s.snap");
        build(&db, &path).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 7] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(install(&db, &path).is_err());
        assert_eq!(db.get_cf(sm, keys::task(1)).unwrap().as_deref(), Some(&b"row"[..]));
    }
}
