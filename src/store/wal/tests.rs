//! The WAL scan against real RocksDB write-ahead logs, damaged the ways
//! disks and crashes damage them.

use std::path::{Path, PathBuf};

use super::*;
use crate::store::{keys, open_db, StoreError};

/// A database at `dir/db` holding `n` log-CF values of `size` bytes (keys
/// 0..n) in its WAL (never flushed to a table file); returns the WAL file
/// and where the last value's record starts (at or just before).
fn wal_with(dir: &Path, n: u64, size: usize, last_size: usize) -> (PathBuf, u64) {
    let path = dir.join("db");
    let db = open_db(&path).expect("open");
    let log = db.cf_handle(keys::CF_LOG).expect("cf");
    for i in 0..n - 1 {
        db.put_cf(log, keys::log_entry(i), vec![b'a' + (i % 26) as u8; size]).expect("put");
    }
    db.flush_wal(true).expect("sync");
    let wal = files(&path).expect("list").pop().expect("a WAL file");
    let before = std::fs::metadata(&wal).expect("stat").len();
    db.put_cf(log, keys::log_entry(n - 1), vec![b'z'; last_size]).expect("put");
    db.flush_wal(true).expect("sync");
    drop(db);
    (wal, before)
}

fn damage(file: &Path, at: u64, len: usize, f: impl Fn(u8) -> u8) {
    let mut bytes = std::fs::read(file).expect("read");
    for b in &mut bytes[at as usize..at as usize + len] {
        *b = f(*b);
    }
    std::fs::write(file, bytes).expect("write");
}

fn truncate(file: &Path, len: u64) {
    std::fs::OpenOptions::new().write(true).open(file).expect("open").set_len(len).expect("truncate");
}

/// The values the database holds after an open, by key.
fn values(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let db = open_db(&dir.join("db"))?;
    let log = db.cf_handle(keys::CF_LOG).expect("cf");
    let mut out = Vec::new();
    for item in db.iterator_cf(log, rocksdb::IteratorMode::Start) {
        let (k, _) = item?;
        out.extend(keys::log_index(&k));
    }
    Ok(out)
}

#[test]
fn crc32c_is_castagnoli() {
    let crc = Crc32c::new();
    assert_eq!(crc.checksum(b"123456789"), 0xe306_9283);
    assert_eq!(crc.checksum(b""), 0);
    // Every length and alignment agrees with the bit-by-bit definition.
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
    for len in 0..data.len() {
        let mut c = !0u32;
        for b in &data[..len] {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82f6_3b78 ^ (c >> 1) } else { c >> 1 };
            }
        }
        assert_eq!(crc.checksum(&data[..len]), !c, "{len} bytes");
    }
}

#[test]
fn an_intact_wal_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    wal_with(dir.path(), 40, 1000, 300_000);
    match scan(&dir.path().join("db")).unwrap() {
        WalState::Clean { files, records } => assert!(files >= 1 && records >= 40, "{files} files, {records} records"),
        other => panic!("{other:?}"),
    }
    assert_eq!(values(dir.path()).unwrap(), (0..40).collect::<Vec<_>>());
}

#[test]
fn bytes_flipped_in_the_middle_are_refused_with_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = wal_with(dir.path(), 3, 300_000, 300_000);
    let len = std::fs::metadata(&wal).unwrap().len();
    damage(&wal, len / 2, 64, |b| b ^ 0xff);
    let WalState::Damaged(d) = scan(&dir.path().join("db")).unwrap() else { panic!("not refused") };
    assert_eq!(d.file, wal);
    assert!(d.offset <= len / 2 && d.offset + BLOCK > len / 2, "offset {} for damage at {}", d.offset, len / 2);
    assert!(d.what.contains("intact records follow"), "{d}");
    let e = values(dir.path()).unwrap_err();
    assert!(e.is_damage(), "{e}");
    let name = wal.file_name().unwrap().to_str().unwrap();
    assert!(e.to_string().contains(name) && e.to_string().contains(&format!("at byte {}", d.offset)), "{e}");
}

#[test]
fn a_record_cut_short_at_the_end_is_a_torn_tail_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, last) = wal_with(dir.path(), 30, 1000, 100_000);
    let len = std::fs::metadata(&wal).unwrap().len();
    truncate(&wal, last + 50_000);
    let WalState::TornTail(t) = scan(&dir.path().join("db")).unwrap() else { panic!("not a torn tail") };
    assert!(t.offset >= last && t.offset < last + HEADER, "torn record at {} (last write began at {last})", t.offset);
    assert_eq!(t.bytes, last + 50_000 - t.offset);
    assert!(len > last + 50_000);
    // The node drops it (keeping the bytes) and holds everything before it.
    assert_eq!(values(dir.path()).unwrap(), (0..29).collect::<Vec<_>>());
    let kept =
        dir.path().join("torn-tails").join(format!("{}.{}.torn", wal.file_name().unwrap().to_str().unwrap(), t.offset));
    assert_eq!(std::fs::metadata(kept).unwrap().len(), t.bytes);
}

#[test]
fn a_last_record_ending_in_unwritten_sectors_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, last) = wal_with(dir.path(), 30, 1000, 10_000);
    let len = std::fs::metadata(&wal).unwrap().len();
    let from = (last + 1000).div_ceil(SECTOR) * SECTOR;
    damage(&wal, from, (len - from) as usize, |_| 0);
    match scan(&dir.path().join("db")).unwrap() {
        WalState::TornTail(t) => assert!(t.why.contains("zeros"), "{t}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(values(dir.path()).unwrap(), (0..29).collect::<Vec<_>>());
}

#[test]
fn a_last_record_with_bytes_flipped_is_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    // The last record fits in its block: one fragment, nothing after it.
    let (wal, last) = wal_with(dir.path(), 10, 1000, 5_000);
    damage(&wal, last + 2_000, 8, |b| b ^ 0x5a);
    let WalState::Damaged(d) = scan(&dir.path().join("db")).unwrap() else { panic!("not refused") };
    assert!(d.what.contains("not a torn write"), "{d}");
    assert!(values(dir.path()).is_err());
}

#[test]
fn a_zeroed_header_before_intact_records_is_refused() {
    // RocksDB itself skips the rest of a block after a zeroed header,
    // silently, in every recovery mode: a lost write.
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = wal_with(dir.path(), 200, 1000, 1000);
    damage(&wal, BLOCK * 2, SECTOR as usize, |_| 0);
    let WalState::Damaged(d) = scan(&dir.path().join("db")).unwrap() else { panic!("not refused") };
    assert_eq!(d.offset, BLOCK * 2);
    assert!(d.what.contains("zeros"), "{d}");
}

#[test]
fn damage_in_a_wal_file_older_than_the_newest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, last) = wal_with(dir.path(), 30, 1000, 1000);
    let db = dir.path().join("db");
    let older = db.join("000001.log");
    std::fs::copy(&wal, &older).unwrap();
    truncate(&older, last + 100);
    let WalState::Damaged(d) = scan(&db).unwrap() else { panic!("not refused") };
    assert_eq!(d.file, older);
    assert!(d.what.contains("older than the newest"), "{d}");
}
