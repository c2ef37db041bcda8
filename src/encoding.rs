//! Versioned record encoding shared by everything drover writes to disk:
//! one format-version byte, then bincode of a drover-owned struct.
//!
//! Format 1 is bincode's "legacy" layout (little-endian fixed-width integers,
//! u64 lengths, u32 enum tags): the layout of bincode 1.3, which earlier
//! builds used. bincode 2 writes it byte for byte (the tests below prove it
//! against bincode 1.3), so data directories, backups and replicas in a
//! rolling upgrade hold identical bytes and identical digests. A change of
//! layout gets a new format byte and keeps reading this one.

use bincode::config::{Configuration, Fixint, LittleEndian, NoLimit};
use serde::{Deserialize, Serialize};

/// Format version of every record this build writes.
pub const FORMAT: u8 = 1;

/// bincode layout of format 1.
pub(crate) const LAYOUT: Configuration<LittleEndian, Fixint, NoLimit> = bincode::config::legacy();

/// The disk holds something this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record has format version {0}, this build reads version {FORMAT}")]
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

/// Decode a record written by [`encode`].
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT, rest)) => Ok(decode_raw(rest)?),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_formats_and_garbage_are_errors_not_panics() {
        assert!(matches!(decode::<u64>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<u64>(&[2, 0, 0, 0, 0, 0, 0, 0, 0]), Err(CodecError::Version(2))));
        assert!(matches!(decode::<u64>(&[FORMAT, 1, 2]), Err(CodecError::Corrupt(_))));
        // A length prefix far beyond the record is refused, not allocated.
        let huge = [FORMAT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(decode::<Vec<u8>>(&huge), Err(CodecError::Corrupt(_))));
    }
}
