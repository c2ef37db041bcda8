//! Inputs the fuzzers found (or that show a class of finding), as plain
//! tests: each decoded into an abort or a multi-gigabyte allocation before
//! its fix.

use super::{allowance, largest_allocation, seeds};
use crate::domain::{Command, NewTask, Operation};
use crate::encoding::{self, CodecError, FORMAT};
use crate::raft::{codec, network, snapshot, TypeConfig};

/// `bytes` with the u64 length prefix in front of the first `marker`
/// replaced by `len`.
fn inflate(mut bytes: Vec<u8>, marker: &[u8], len: u64) -> Vec<u8> {
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("marker in the encoding");
    assert_eq!(bytes[at - 8..at], (marker.len() as u64).to_le_bytes(), "a u64 length in front of the marker");
    bytes[at - 8..at].copy_from_slice(&len.to_le_bytes());
    bytes
}

/// Decode with `decode`, which must fail, and within [`allowance`].
fn refused<T, E>(bytes: &[u8], decode: impl FnOnce(&[u8]) -> Result<T, E>) {
    let (result, largest) = largest_allocation(|| decode(bytes));
    assert!(result.is_err(), "{} hostile bytes decoded", bytes.len());
    assert!(largest <= allowance(bytes.len()), "an allocation of {largest} bytes");
}

/// Was: `memory allocation of 1152921504606846976 bytes failed`, then
/// SIGABRT (bincode's `NoLimit` configuration let a string's length
/// prefix size a `vec![0; len]` before reading it).
#[test]
fn a_string_length_of_2_pow_60_in_a_record_is_an_error_not_an_abort() {
    // A `RegisterCallback` command whose callback name claims 2^60 bytes.
    let mut bytes = vec![FORMAT];
    bytes.extend_from_slice(&7u64.to_le_bytes()); // stamped_at_ms
    bytes.extend_from_slice(&1u32.to_le_bytes()); // Operation::RegisterCallback
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes()); // name: String
    bytes.extend_from_slice(b"emails");
    refused(&bytes, encoding::decode::<Command>);
    assert!(matches!(encoding::decode::<Command>(&bytes), Err(CodecError::Corrupt(_))));
}

/// Was: a panic, "capacity overflow" (a byte buffer's length prefix of
/// 2^64 - 1, past `isize::MAX`).
#[test]
fn a_payload_length_of_u64_max_is_an_error_not_a_panic() {
    let task = NewTask { payload: b"PAYLOAD-MARKER".to_vec(), ..seeds::new_task(1) };
    let cmd = Command { stamped_at_ms: 1, operation: Operation::Schedule { tasks: vec![task], auto_register: true } };
    let bytes = inflate(encoding::encode(&cmd), b"PAYLOAD-MARKER", u64::MAX);
    refused(&bytes, encoding::decode::<Command>);
    // The same command inside a log entry read back from disk.
    let entry = openraft::entry::RaftEntry::new_normal(seeds::log_id(1, 1, 1), cmd);
    let bytes = inflate(codec::encode_entry(&entry), b"PAYLOAD-MARKER", 1 << 40);
    refused(&bytes, codec::decode_entry);
}

/// Was: an abort as above, on the Raft port: a peer's `AppendEntries` whose
/// entry names a callback of 2^60 bytes.
#[test]
fn an_append_entries_with_an_inflated_string_is_refused() {
    let task = NewTask { callback: "CALLBACK-MARKER".into(), ..seeds::new_task(2) };
    let cmd = Command { stamped_at_ms: 1, operation: Operation::Schedule { tasks: vec![task], auto_register: true } };
    let request = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: seeds::vote(2, 1, true),
        prev_log_id: None,
        entries: vec![openraft::entry::RaftEntry::new_normal(seeds::log_id(2, 1, 1), cmd)],
        leader_commit: None,
    };
    let bytes = inflate(network::encode(&request), b"CALLBACK-MARKER", 1 << 60);
    refused(&bytes, network::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>);
}

/// Was: a 4 GiB zero-filled allocation (`Vec::resize` to the record's
/// u32 key length) before finding that the file is 12 bytes long; a
/// snapshot or backup file of a few bytes cost 4 GiB of memory.
#[test]
fn a_snapshot_record_longer_than_its_file_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hostile.snap");
    let mut key_too_long = b"DRVSNAP1".to_vec();
    key_too_long.extend_from_slice(&0xffff_fffeu32.to_be_bytes());
    key_too_long.extend_from_slice(b"key");
    let mut value_too_long = b"DRVSNAP1".to_vec();
    value_too_long.extend_from_slice(&3u32.to_be_bytes());
    value_too_long.extend_from_slice(b"key");
    value_too_long.extend_from_slice(&0x8000_0000u32.to_be_bytes());
    for bytes in [key_too_long, value_too_long] {
        std::fs::write(&path, &bytes).expect("write");
        let (result, largest) = largest_allocation(|| snapshot::read_records(&path, |_, _| Ok(())));
        assert!(result.is_err());
        assert!(largest <= allowance(bytes.len()), "an allocation of {largest} bytes");
        assert!(snapshot::verify(&path).is_err());
    }
}

/// Was: accepted. bincode ignores bytes after a value, so an
/// `AppendEntries` sent to `Vote` decoded as a vote request (its first
/// bytes) and reached Raft. Messages must be exactly one encoding.
#[test]
fn a_message_with_bytes_left_over_is_refused() {
    let request = openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: seeds::vote(2, 1, true),
        prev_log_id: None,
        entries: seeds::entries(),
        leader_commit: None,
    };
    let bytes = network::encode(&request);
    assert!(network::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&bytes).is_ok());
    assert!(network::decode::<openraft::raft::VoteRequest<TypeConfig>>(&bytes).is_err());
    let mut extended = bytes;
    extended.push(0);
    assert!(network::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(&extended).is_err());
}
