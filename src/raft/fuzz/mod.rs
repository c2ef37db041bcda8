//! Property fuzzers for every decoder that reads bytes from outside the
//! process: state-machine records and their format byte
//! ([`crate::encoding`]), Raft log entries, votes and memberships
//! ([`crate::raft::codec`]), snapshot and backup files and snapshot meta
//! ([`crate::raft::snapshot`]), and the Raft messages peers exchange
//! ([`crate::raft::network`], [`crate::raft::service`]).
//!
//! Each decoder gets fully random bytes and, more usefully, valid
//! encodings ([`seeds`]) that are then mutated: truncated, bit-flipped,
//! bytes overwritten, a length prefix inflated, bytes inserted, cut or
//! appended. Properties, for every input:
//!
//! - decoding returns (an error or a value) and never panics;
//! - no single allocation made while decoding `n` bytes exceeds
//!   [`allowance`]`(n)`: a length prefix claiming 2^60 bytes is an error,
//!   not an out-of-memory abort (a tracking allocator measures it);
//! - whatever decodes re-encodes to bytes that decode to the same value.
//!
//! `DROVER_FUZZ_CASES=N` runs N cases per decoder instead of the default
//! (a few hundred, a few seconds in all). Failing inputs found so far are
//! kept as plain tests in [`regressions`].

mod alloc;
mod decoders;
mod regressions;
pub(super) mod seeds;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

pub use alloc::largest_allocation;

/// Cases per decoder: `DROVER_FUZZ_CASES`, or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("DROVER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The proptest configuration of a fuzzer with `default` cases. Failing
/// inputs are not persisted next to the sources: a finding becomes a test
/// in [`regressions`].
pub fn config(default: u32) -> Config {
    Config { cases: cases(default), failure_persistence: None, ..Config::default() }
}

/// The largest single allocation decoding `n` bytes may make: serde
/// preallocates at most 1 MiB for a sequence whatever its length prefix
/// says, and a string or byte buffer is at most 16 times the input (see
/// [`crate::encoding::decode_raw`]) and at least 64 KiB.
pub fn allowance(n: usize) -> usize {
    (1 << 20) + (64 << 10).max(n.saturating_mul(16))
}

/// One change to a valid encoding.
#[derive(Debug, Clone)]
pub enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Overwrite the 8 bytes at a position (an integer or a length).
    Word(Index, u64),
    /// Find the first plausible u64 length prefix at or after a position
    /// (little-endian, no larger than what follows it) and make it `u64`.
    InflateLength(Index, u64),
    /// The same for the big-endian u32 lengths of snapshot files.
    InflateLength32(Index, u32),
    Insert(Index, Vec<u8>),
    Cut(Index, usize),
    Extend(Vec<u8>),
}

/// Lengths an attacker would pick.
fn huge() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(1 << 60),
        Just(1 << 40),
        Just(1 << 32),
        Just(u64::from(u32::MAX)),
        Just(i64::MAX as u64),
        Just(usize::MAX as u64 / 2 + 1),
        1u64..(1 << 24),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..32);
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        2 => (any::<Index>(), huge()).prop_map(|(i, v)| Mutation::Word(i, v)),
        3 => (any::<Index>(), huge()).prop_map(|(i, v)| Mutation::InflateLength(i, v)),
        2 => (any::<Index>(), prop_oneof![Just(u32::MAX - 1), Just(1 << 31), any::<u32>()])
            .prop_map(|(i, v)| Mutation::InflateLength32(i, v)),
        1 => (any::<Index>(), bytes.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..16).prop_map(|(i, n)| Mutation::Cut(i, n)),
        1 => bytes.prop_map(Mutation::Extend),
    ]
}

impl Mutation {
    pub fn apply(&self, b: &mut Vec<u8>) {
        let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
        match self {
            Mutation::Truncate(i) => b.truncate(at(i, b.len())),
            Mutation::FlipBit(i, bit) if !b.is_empty() => {
                let p = at(i, b.len());
                b[p] ^= 1 << bit;
            }
            Mutation::SetByte(i, v) if !b.is_empty() => {
                let p = at(i, b.len());
                b[p] = *v;
            }
            Mutation::Word(i, v) => {
                let p = at(i, b.len());
                let end = (p + 8).min(b.len());
                b[p..end].copy_from_slice(&v.to_le_bytes()[..end - p]);
            }
            Mutation::InflateLength(i, v) => {
                let starts = b.len().saturating_sub(7);
                let from = at(i, b.len()).min(starts);
                let found = (from..starts).chain(0..from).find(|&p| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&b[p..p + 8]);
                    let n = u64::from_le_bytes(w);
                    n > 0 && n <= (b.len() - p - 8) as u64
                });
                if let Some(p) = found {
                    b[p..p + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            Mutation::InflateLength32(i, v) => {
                let starts = b.len().saturating_sub(3);
                let from = at(i, b.len()).min(starts);
                let found = (from..starts).chain(0..from).find(|&p| {
                    let n = u32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
                    n > 0 && n <= (b.len() - p - 4) as u32
                });
                if let Some(p) = found {
                    b[p..p + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            Mutation::Insert(i, more) => {
                let p = at(i, b.len() + 1);
                b.splice(p..p, more.iter().copied());
            }
            Mutation::Cut(i, n) => {
                let p = at(i, b.len());
                let end = (p + n).min(b.len());
                b.drain(p..end);
            }
            Mutation::Extend(more) => b.extend_from_slice(more),
            Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
        }
    }
}

/// Hostile input for a decoder whose valid encodings include `seeds`:
/// random bytes (a quarter of the cases), or a seed with 1 to 4 mutations.
pub fn hostile(seeds: Vec<Vec<u8>>) -> BoxedStrategy<Vec<u8>> {
    assert!(!seeds.is_empty(), "a fuzzer needs at least one valid encoding");
    let mutated = (proptest::sample::select(seeds), proptest::collection::vec(mutation(), 1..5)).prop_map(
        |(mut bytes, mutations)| {
            for m in &mutations {
                m.apply(&mut bytes);
            }
            bytes
        },
    );
    prop_oneof![1 => proptest::collection::vec(any::<u8>(), 0..512), 3 => mutated].boxed()
}

/// The properties every decoder must have on `bytes` (see the module doc).
pub fn survives<T, E: std::fmt::Display>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let (decoded, largest) = largest_allocation(|| decode(bytes));
    prop_assert!(
        largest <= allowance(bytes.len()),
        "decoding {} bytes made an allocation of {largest} bytes",
        bytes.len()
    );
    if let Ok(value) = decoded {
        let again = encode(&value);
        match decode(&again) {
            Ok(back) => prop_assert_eq!(encode(&back), again, "a decoded value does not re-encode stably"),
            Err(e) => return Err(TestCaseError::fail(format!("a decoded value's encoding does not decode: {e}"))),
        }
    }
    Ok(())
}

/// Every seed decodes and re-encodes to itself (the seeds are valid, so
/// the mutations start from real encodings).
pub fn seeds_roundtrip<T, E: std::fmt::Display>(
    seeds: &[Vec<u8>],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    for (i, seed) in seeds.iter().enumerate() {
        match decode(seed) {
            Ok(v) => assert_eq!(&encode(&v), seed, "seed {i} does not re-encode to itself"),
            Err(e) => panic!("seed {i} does not decode: {e}"),
        }
    }
}
