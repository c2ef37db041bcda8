//! Versioned record encoding shared by everything drover writes to disk:
//! one format-version byte, then bincode of a drover-owned struct.

use serde::{Deserialize, Serialize};

/// Format version of every record this build writes.
pub const FORMAT: u8 = 1;

/// The disk holds something this build cannot read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is empty")]
    Empty,
    #[error("record has format version {0}, this build reads version {FORMAT}")]
    Version(u8),
    #[error("record is corrupt: {0}")]
    Corrupt(#[from] bincode::Error),
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
    // non-string keys, no unsized sequences.
    if let Err(e) = bincode::serialize_into(out, value) {
        unreachable!("bincode into a Vec failed: {e}");
    }
}

/// Decode a record written by [`encode`].
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT, rest)) => Ok(bincode::deserialize(rest)?),
        Some((&v, _)) => Err(CodecError::Version(v)),
    }
}
