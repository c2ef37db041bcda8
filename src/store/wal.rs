//! Drover's own reading of RocksDB's write-ahead log, before RocksDB
//! replays it.
//!
//! RocksDB's default recovery mode (point-in-time) stops at the first bad
//! record and silently drops everything after it, even records fsynced long
//! ago; and in every mode a record whose header was zeroed (a lost write)
//! makes it skip the rest of its 32 KiB block without a word. So drover
//! reads every WAL file itself first, verifying each record's CRC-32C
//! (RocksDB's own checksums, in RocksDB's own layout: `db/log_format.h`),
//! and tells three cases apart:
//!
//! - **clean**: every record intact;
//! - **torn tail**: only the last record of the newest WAL is bad, nothing
//!   intact follows it, and it looks like a write a crash cut short: it
//!   ends at the end of the file, or its bytes end in a run of zeros that
//!   starts at a 512-byte sector boundary (a sector never written, as etcd
//!   recognises a torn write). Its fsync never returned, so nothing in it
//!   was acknowledged: the node cuts it off ([`repair`], keeping the bytes)
//!   and starts;
//! - **damaged**: anything else (a bad record with intact records after
//!   it, in an older WAL file, or bad bytes that are not a torn write).
//!   The node refuses to start, naming the file and the byte offset.
//!
//! RocksDB then opens with `WALRecoveryMode::AbsoluteConsistency`, which
//! fails on any bad record it still finds (see [`super::open_db`]).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// RocksDB's WAL block size: records never cross a block boundary.
const BLOCK: u64 = 32 * 1024;
/// Checksum (4), length (2), type (1).
const HEADER: u64 = 7;
/// A disk writes whole sectors or none: a torn write leaves whole sectors
/// unwritten (zeros on every filesystem that hides stale data).
const SECTOR: u64 = 512;
/// A run of zeros shorter than this at the end of a record is too likely to
/// be the record's own bytes (a zero integer) to count as an unwritten sector.
const MIN_ZERO_RUN: u64 = 32;

// Record types (RocksDB `log::RecordType`).
const ZERO: u8 = 0;
const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;
const SET_COMPRESSION: u8 = 9;
const TIMESTAMP_SIZE: u8 = 10;
/// Types with this bit set carry metadata a reader may ignore.
const SAFE_IGNORE: u8 = 1 << 7;

/// What the WAL holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalState {
    Clean {
        files: usize,
        records: u64,
    },
    /// The last record of the newest file was cut short by a crash.
    TornTail(TornTail),
    /// Damage before the last record: this data dir must not be used.
    Damaged(WalDamage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the torn record starts: the file is cut here.
    pub offset: u64,
    /// Bytes after `offset` (all dropped).
    pub bytes: u64,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalDamage {
    pub file: PathBuf,
    /// Byte offset of the first bad record.
    pub offset: u64,
    pub what: String,
}

impl std::fmt::Display for WalDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "write-ahead log {} is damaged at byte {}: {}", self.file.display(), self.offset, self.what)
    }
}

impl std::fmt::Display for TornTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the last record of {} (byte {}, {} bytes) was cut short by a crash ({})",
            self.file.display(),
            self.offset,
            self.bytes,
            self.why
        )
    }
}

/// The WAL files of the database at `db_dir`, oldest first.
pub fn files(db_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out: Vec<(u64, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(db_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

/// Read every WAL file of `db_dir` and say what it holds.
pub fn scan(db_dir: &Path) -> io::Result<WalState> {
    let files = files(db_dir)?;
    let mut records = 0;
    for (i, path) in files.iter().enumerate() {
        let scan = scan_file(path)?;
        records += scan.records;
        let Some(p) = scan.problem else { continue };
        let newest = i + 1 == files.len();
        let damage = |what: String| WalState::Damaged(WalDamage { file: path.clone(), offset: p.offset, what });
        if !newest {
            return Ok(damage(format!(
                "{}, in a WAL file older than the newest ({} intact records after it in this file)",
                p.what, scan.intact_after
            )));
        }
        if scan.intact_after > 0 {
            return Ok(damage(format!("{}, and {} intact records follow it", p.what, scan.intact_after)));
        }
        let torn = match p.kind {
            Kind::CutShort => Some("it ends at the end of the file".to_string()),
            Kind::Zeros if scan.last_nonzero.is_none_or(|n| n < p.offset) => {
                Some("the file ends in zeros: sectors never written".to_string())
            }
            _ => scan
                .zero_run_after_problem
                .map(|at| format!("its bytes from {at} to the end of the file are zeros: sectors never written")),
        };
        return Ok(match torn {
            Some(why) => {
                WalState::TornTail(TornTail { file: path.clone(), offset: p.start, bytes: scan.len - p.start, why })
            }
            None => damage(format!("{} in the newest WAL's last record, and it is not a torn write", p.what)),
        });
    }
    Ok(WalState::Clean { files: files.len(), records })
}

/// Cut a torn tail off its file, after saving the bytes under `keep` (for a
/// post-mortem). Durable on return.
pub fn repair(torn: &TornTail, keep: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(keep)?;
    let name = torn.file.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    let saved = keep.join(format!("{name}.{}.torn", torn.offset));
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&torn.file)?;
    file.seek(SeekFrom::Start(torn.offset))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let mut out = File::create(&saved)?;
    out.write_all(&tail)?;
    out.sync_all()?;
    file.set_len(torn.offset)?;
    file.sync_all()?;
    if let Some(dir) = torn.file.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(saved)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A header or record running past the end of the file, or a record
    /// whose fragments stop at the end of the file.
    CutShort,
    /// A zeroed header where a record should be.
    Zeros,
    /// A checksum mismatch, an impossible length, type or fragment order.
    Bad,
}

#[derive(Debug, Clone)]
struct Problem {
    kind: Kind,
    /// The bad physical record.
    offset: u64,
    /// The logical record it belongs to (its first fragment).
    start: u64,
    what: String,
}

#[derive(Debug, Default)]
struct FileScan {
    len: u64,
    records: u64,
    problem: Option<Problem>,
    /// Intact physical records after the problem.
    intact_after: u64,
    last_nonzero: Option<u64>,
    /// Start of a sector-aligned run of zeros (at least [`MIN_ZERO_RUN`]
    /// bytes) at or after the problem that lasts to the end of the file.
    zero_run_after_problem: Option<u64>,
}

/// CRC-32C (Castagnoli), as RocksDB's `crc32c::Value`, eight bytes at a
/// time (slicing-by-8: about 4x a byte-wise table on the start path).
pub struct Crc32c {
    tables: Box<[[u32; 256]; 8]>,
}

impl Crc32c {
    pub fn new() -> Crc32c {
        let mut t = Box::new([[0u32; 256]; 8]);
        for i in 0..256 {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0x82f6_3b78 ^ (c >> 1) } else { c >> 1 };
            }
            t[0][i] = c;
        }
        for i in 0..256 {
            for k in 1..8 {
                t[k][i] = (t[k - 1][i] >> 8) ^ t[0][(t[k - 1][i] & 0xff) as usize];
            }
        }
        Crc32c { tables: t }
    }

    pub fn checksum(&self, data: &[u8]) -> u32 {
        let t = &self.tables;
        let mut c = !0u32;
        let mut chunks = data.chunks_exact(8);
        for ch in &mut chunks {
            let lo = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) ^ c;
            let hi = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            c = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for b in chunks.remainder() {
            c = t[0][((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8);
        }
        !c
    }
}

impl Default for Crc32c {
    fn default() -> Self {
        Crc32c::new()
    }
}

/// RocksDB stores CRCs masked (`crc32c::Mask`).
fn unmask(masked: u32) -> u32 {
    let rot = masked.wrapping_sub(0xa282_ead8);
    rot.rotate_left(15)
}

/// Walk one WAL file record by record, as RocksDB's `log::Reader` does,
/// noting the first problem and what comes after it.
fn scan_file(path: &Path) -> io::Result<FileScan> {
    let crc = Crc32c::new();
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut scan = FileScan { len, ..FileScan::default() };
    // Start of the logical record being assembled from fragments.
    let mut fragment: Option<u64> = None;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut block_start = 0u64;
    while block_start < len {
        let size = (len - block_start).min(BLOCK) as usize;
        file.read_exact(&mut buf[..size])?;
        let block = &buf[..size];
        let at_eof = block_start + size as u64 == len;
        note_zeros(&mut scan, block_start, block);
        let mut pos = 0usize;
        while pos < size {
            let offset = block_start + pos as u64;
            let left = (size - pos) as u64;
            if left < HEADER {
                // A full block ends in a zero trailer, which readers skip.
                // At the end of the file, a partial header: cut short.
                if at_eof && size < BLOCK as usize && block[pos..].iter().any(|b| *b != 0) {
                    problem(&mut scan, Kind::CutShort, offset, fragment, "a record header cut short");
                }
                break;
            }
            let h = &block[pos..pos + HEADER as usize];
            let masked = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let length = u64::from(u16::from_le_bytes([h[4], h[5]]));
            let kind = h[6];
            if kind == ZERO && length == 0 && masked == 0 {
                problem(&mut scan, Kind::Zeros, offset, fragment, "zeros where a record header should be");
                fragment = None;
                break; // RocksDB skips the rest of the block
            }
            if HEADER + length > left {
                if at_eof && size < BLOCK as usize {
                    problem(&mut scan, Kind::CutShort, offset, fragment, "a record cut short");
                } else {
                    problem(&mut scan, Kind::Bad, offset, fragment, "a record length beyond its block");
                }
                fragment = None;
                break;
            }
            let body = &block[pos + 6..pos + (HEADER + length) as usize];
            if unmask(masked) != crc.checksum(body) {
                problem(&mut scan, Kind::Bad, offset, fragment, "a record checksum mismatch");
                fragment = None;
                break; // the length itself may be damaged: the block is lost
            }
            pos += (HEADER + length) as usize;
            if scan.problem.is_some() {
                scan.intact_after += 1;
                continue;
            }
            match kind {
                FULL | FIRST if fragment.is_some() => {
                    problem(&mut scan, Kind::Bad, offset, fragment, "a record with no end");
                    fragment = (kind == FIRST).then_some(offset);
                }
                FULL => scan.records += 1,
                FIRST => fragment = Some(offset),
                MIDDLE | LAST if fragment.is_none() => {
                    problem(&mut scan, Kind::Bad, offset, None, "a record fragment with no start");
                }
                MIDDLE => {}
                LAST => {
                    fragment = None;
                    scan.records += 1;
                }
                SET_COMPRESSION | TIMESTAMP_SIZE => {}
                k if k & SAFE_IGNORE != 0 => {}
                k => {
                    problem(&mut scan, Kind::Bad, offset, fragment, &format!("an unknown record type {k}"));
                    fragment = None;
                }
            }
        }
        block_start += size as u64;
    }
    if let (Some(start), None) = (fragment, &scan.problem) {
        scan.problem = Some(Problem {
            kind: Kind::CutShort,
            offset: start,
            start,
            what: "a record whose fragments stop at the end of the file".into(),
        });
    }
    if let Some(p) = &scan.problem {
        // A run of zeros from a sector boundary to the end of the file, in
        // or after the bad record: sectors the crash left unwritten.
        let run = scan.last_nonzero.map_or(0, |n| (n + 1).div_ceil(SECTOR) * SECTOR);
        if run >= p.offset && run < len && len - run >= MIN_ZERO_RUN {
            scan.zero_run_after_problem = Some(run);
        }
    }
    Ok(scan)
}

fn problem(scan: &mut FileScan, kind: Kind, offset: u64, fragment: Option<u64>, what: &str) {
    if scan.problem.is_none() {
        scan.problem = Some(Problem { kind, offset, start: fragment.unwrap_or(offset), what: what.to_string() });
    }
}

fn note_zeros(scan: &mut FileScan, block_start: u64, block: &[u8]) {
    if let Some(i) = block.iter().rposition(|b| *b != 0) {
        scan.last_nonzero = Some(block_start + i as u64);
    }
}

#[cfg(test)]
mod tests;
