//! Versioned record encoding shared by everything drover writes to disk:
//! one format-version byte, then bincode of a drover-owned struct.
//!
//! Both formats use bincode's "legacy" layout (little-endian fixed-width
//! integers, u64 lengths, u32 enum tags): the layout of bincode 1.3, which
//! the first builds used, and which bincode 2 writes byte for byte (the
//! tests in `domain::encoding_tests` prove it against bincode 1.3).
//!
//! - Format 1: the first builds' structs.
//! - Format 2 (written now): tasks gained a collection, callbacks a rate
//!   limit and retention, a schedule's answer the task's state.
//!
//! bincode is positional, so every type read from disk says how to read
//! its format-1 layout ([`Record::from_format_1`]); the types format 2 did
//! not change read it as they are, and those it changed go through
//! [`crate::domain::legacy`].

use bincode::config::{Configuration, Fixint, LittleEndian, NoLimit};
use serde::{Deserialize, Serialize};

/// Format version of every record this build writes.
pub const FORMAT: u8 = 2;

/// The earlier format this build still reads.
pub const FORMAT_1: u8 = 1;

/// Format byte of a *sealed* record: format 2's body followed by a CRC-32
/// (IEEE, little-endian) of the format byte and the body. Raft's log
/// entries, vote and log ids are sealed (`raft::codec`), so that drover
/// itself notices a damaged one that RocksDB's checksums did not (a block
/// read without verification, a bit flip before the write, a bug), at
/// start and on every read.
pub const SEALED: u8 = 0x80 | FORMAT;

/// bincode layout of both formats.
pub(crate) const LAYOUT: Configuration<LittleEndian, Fixint, NoLimit> = bincode::config::legacy();

/// The disk holds something this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record has format version {0}, this build reads versions {FORMAT_1} and {FORMAT}")]
    Version(u8),
    #[error("record is corrupt: {0}")]
    Corrupt(#[from] bincode::error::DecodeError),
    #[error("record fails its checksum (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    /// An intact (sealed, checksum good) record holding a kind this build
    /// does not know: a build of a higher feature level wrote it.
    #[error(
        "record passes its checksum but holds a kind this build does not know ({0}): a newer build (a higher \
         feature level) wrote it"
    )]
    TooNew(String),
}

impl CodecError {
    /// Whether a newer build wrote the record (not damage).
    pub fn is_too_new(&self) -> bool {
        matches!(self, CodecError::TooNew(_))
    }
}

impl From<CodecError> for std::io::Error {
    fn from(e: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// Encode `value` behind the format byte.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    encode_into(&mut out, value);
    out
}

/// Encode `value` as a sealed record ([`SEALED`]).
pub fn encode_sealed<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![SEALED];
    encode_into(&mut out, value);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The body of a sealed record (after its format byte), checked against
/// its CRC.
fn unseal(rest: &[u8]) -> Result<&[u8], CodecError> {
    let Some(split) = rest.len().checked_sub(4) else {
        return Err(CodecError::Checksum { stored: 0, computed: 0 });
    };
    let (body, tail) = rest.split_at(split);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let mut h = crc32fast::Hasher::new();
    h.update(&[SEALED]);
    h.update(body);
    let computed = h.finalize();
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok(body)
}

/// Append bincode of `value` to `out` (no format byte).
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // bincode of drover's plain structs into a Vec cannot fail: no maps with
    // non-string keys, no unsized sequences, and a Vec's writes cannot fail.
    if let Err(e) = bincode::serde::encode_into_std_write(value, out, LAYOUT) {
        unreachable!("bincode into a Vec failed: {e}");
    }
}

/// Decode bincode written by [`encode_into`] (no format byte).
///
/// The bytes may be hostile (a corrupt disk, a peer's message), so no
/// length prefix is trusted: bincode sizes a string or byte buffer from its
/// prefix before reading it, and with no limit a prefix of 2^60 aborts the
/// process (allocation failure). Every byte a value holds was read from the
/// input, so a limit of the input's length never refuses a valid encoding;
/// bincode's limit is a compile-time constant, so the input's length is
/// rounded up to a power of 16 (at least 64 KiB). A length prefix beyond it
/// is an error, and decoding `n` bytes allocates at most `max(16 n, 64 KiB)`
/// for one string or buffer (serde preallocates at most 1 MiB for any
/// other sequence).
pub fn decode_raw<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, bincode::error::DecodeError> {
    decode_prefix(bytes).map(|(value, _)| value)
}

/// [`decode_raw`], refusing bytes left over after the value: for messages,
/// which are always exactly one encoding (so that the bytes of one message
/// type never pass for a shorter other).
pub fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, bincode::error::DecodeError> {
    match decode_prefix(bytes)? {
        (value, used) if used == bytes.len() => Ok(value),
        (_, used) => Err(bincode::error::DecodeError::OtherString(format!(
            "{} bytes left over after the message",
            bytes.len() - used
        ))),
    }
}

/// Decode a value from the start of `bytes`: the value and the bytes used.
fn decode_prefix<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    const FOUR_GIB: usize = (u32::MAX as usize).saturating_add(1);
    fn limited<'a, T: Deserialize<'a>, const N: usize>(
        bytes: &'a [u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::borrow_decode_from_slice(bytes, LAYOUT.with_limit::<N>())
    }
    match bytes.len() {
        0..=0x1_0000 => limited::<T, 0x1_0000>(bytes),
        0x1_0001..=0x10_0000 => limited::<T, 0x10_0000>(bytes),
        0x10_0001..=0x100_0000 => limited::<T, 0x100_0000>(bytes),
        0x100_0001..=0x1000_0000 => limited::<T, 0x1000_0000>(bytes),
        n if n <= FOUR_GIB => limited::<T, FOUR_GIB>(bytes),
        _ => limited::<T, { usize::MAX }>(bytes),
    }
}

/// Whether a decode failed on an enum variant this build does not know.
/// Through serde, bincode reports it only as serde's `invalid_value`
/// message ("expected variant index 0 <= i < N"); the test
/// `an_intact_record_of_a_kind_this_build_does_not_know_is_too_new_not_damage`
/// pins that text.
fn unknown_variant(e: &bincode::error::DecodeError) -> bool {
    match e {
        bincode::error::DecodeError::UnexpectedVariant { .. } => true,
        bincode::error::DecodeError::OtherString(m) => m.contains("expected variant index"),
        _ => false,
    }
}

/// A type drover stores behind a format byte.
pub trait Record: Sized + for<'de> Deserialize<'de> {
    /// Decode the body of a format-1 record. The default suits types whose
    /// layout format 2 did not change.
    fn from_format_1(body: &[u8]) -> Result<Self, bincode::error::DecodeError> {
        decode_raw(body)
    }
}

impl Record for u64 {}
impl<K: Record + Ord, V: Record> Record for std::collections::BTreeMap<K, V> {}
impl Record for i64 {}
impl Record for Vec<u8> {}
impl Record for Vec<u64> {}

/// Decode a record written by [`encode`] or [`encode_sealed`] (this format
/// or format 1).
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&SEALED, rest)) => decode_raw(unseal(rest)?).map_err(|e| {
            if unknown_variant(&e) {
                CodecError::TooNew(e.to_string())
            } else {
                CodecError::Corrupt(e)
            }
        }),
        Some((&FORMAT, rest)) => Ok(decode_raw(rest)?),
        Some((&FORMAT_1, rest)) => Ok(T::from_format_1(rest)?),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_formats_and_garbage_are_errors_not_panics() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<u64>(&[9, 0, 0, 0, 0, 0, 0, 0, 0]), Err(CodecError::Version(9))));
        assert_eq!(decode::<u64>(&[FORMAT_1, 7, 0, 0, 0, 0, 0, 0, 0]).unwrap(), 7);
        assert!(matches!(decode::<u64>(&[FORMAT, 1, 2]), Err(CodecError::Corrupt(_))));
        // A length prefix far beyond the record is refused, not allocated.
        let huge = [FORMAT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(decode::<Vec<u8>>(&huge), Err(CodecError::Corrupt(_))));
    }

    #[test]
    fn an_intact_record_of_a_kind_this_build_does_not_know_is_too_new_not_damage() {
        #[derive(Serialize, Deserialize, Debug)]
        enum Old {
            A,
        }
        impl Record for Old {}
        #[derive(Serialize)]
        enum New {
            _A,
            B,
        }
        let e = decode::<Old>(&encode_sealed(&New::B)).unwrap_err();
        assert!(e.is_too_new(), "{e}");
        assert!(decode::<Old>(&encode_sealed(&New::_A)).is_ok());
    }

    #[test]
    fn a_sealed_record_with_any_byte_changed_fails_its_checksum() {
        let sealed = encode_sealed(&0x0102_0304_0506_0708u64);
        assert_eq!(decode::<u64>(&sealed).unwrap(), 0x0102_0304_0506_0708);
        for i in 1..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(matches!(decode::<u64>(&bad), Err(CodecError::Checksum { .. })), "byte {i}");
        }
        for short in 0..5 {
            assert!(decode::<u64>(&sealed[..short]).is_err(), "{short} bytes");
        }
    }
}
