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

/// Append bincode of `value` to `out` (no format byte).
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    // bincode of drover's plain structs into a Vec cannot fail: no maps with
    // non-string keys, no unsized sequences, and a Vec's writes cannot fail.
    if let Err(e) = bincode::serde::encode_into_std_write(value, out, LAYOUT) {
        unreachable!("bincode into a Vec failed: {e}");
    }
}

/// Decode bincode written by [`encode_into`] (no format byte).
pub fn decode_raw<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::borrow_decode_from_slice(bytes, LAYOUT).map(|(value, _)| value)
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

/// Decode a record written by [`encode`] (this format or format 1).
pub fn decode<T: Record>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
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
}
