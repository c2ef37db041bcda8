//! One fuzzer per decoder that sees outside bytes (see the module doc of
//! [`super`] for the inputs and the properties).

use std::collections::BTreeMap;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use proptest::test_runner::TestRunner;
use serde::Serialize;

use super::seeds::{self, with_format};
use super::{config, hostile, seeds_roundtrip, survives};
use crate::domain::dependency::{Deps, Edge};
use crate::domain::legacy::{CommandV1, RequestRecordV1, ScheduleOutcomeV1};
use crate::domain::schedule::Schedule;
use crate::domain::{CallbackConfig, Command, Gate, RequestRecord, Task};
use crate::encoding::{self, Record, FORMAT_1};
use crate::raft::network::{decode as decode_message, encode as encode_message, RpcFailure};
use crate::raft::{codec, snapshot, TypeConfig, Vote};

/// Run the fuzzer of one decoder: `current` must round-trip byte for byte,
/// `older` (earlier formats) must decode; then `cases` hostile inputs
/// derived from both.
fn fuzz<T, E: std::fmt::Display>(
    cases: u32,
    current: Vec<Vec<u8>>,
    older: Vec<Vec<u8>>,
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    seeds_roundtrip(&current, &decode, &encode);
    for (i, seed) in older.iter().enumerate() {
        if let Err(e) = decode(seed) {
            panic!("earlier-format seed {i} does not decode: {e}");
        }
    }
    let all: Vec<Vec<u8>> = current.into_iter().chain(older).collect();
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&hostile(all), |bytes| survives(&bytes, &decode, &encode)) {
        panic!("{e}");
    }
}

/// The fuzzer of one state-machine record type.
fn fuzz_record<T: Record + Serialize>(cases: u32, values: &[T], older: Vec<Vec<u8>>) {
    let current = values.iter().map(encoding::encode).collect();
    fuzz(cases, current, older, encoding::decode::<T>, encoding::encode);
}

#[test]
fn commands_in_log_entries_and_imports() {
    let older = seeds::format_1_commands().iter().map(|c| with_format(FORMAT_1, c)).collect();
    fuzz_record::<Command>(2_000, &seeds::commands(), older);
}

#[test]
fn task_rows() {
    fuzz_record::<Task>(1_000, &seeds::tasks(), seeds::format_1_tasks());
}

#[test]
fn callback_configs() {
    let values = [seeds::callback_config(true), seeds::callback_config(false)];
    fuzz_record::<CallbackConfig>(500, &values, seeds::format_1_callbacks());
}

#[test]
fn request_records() {
    let old = RequestRecordV1 { at_ms: 1, outcomes: vec![ScheduleOutcomeV1 { task_id: 3, created: true }] };
    fuzz_record::<RequestRecord>(500, &[seeds::request_record()], vec![with_format(FORMAT_1, &old)]);
}

#[test]
fn gates_schedules_and_dependency_rows() {
    fuzz_record::<Gate>(300, &[seeds::gate(true), seeds::gate(false)], Vec::new());
    fuzz_record::<Schedule>(1_000, &[seeds::schedule(true), seeds::schedule(false)], Vec::new());
    fuzz_record::<Deps>(300, &[seeds::deps(), Deps { cancelled_by: None, ..seeds::deps() }], Vec::new());
    fuzz_record::<Edge>(200, &seeds::edges(), Vec::new());
}

#[test]
fn counters_and_id_lists() {
    fuzz_record::<u64>(200, &[0, 7, u64::MAX], Vec::new());
    fuzz_record::<i64>(200, &[-1, 7], Vec::new());
    fuzz_record::<Vec<u64>>(300, &[vec![], vec![1, 2, 3]], Vec::new());
    fuzz_record::<Vec<u8>>(300, &[vec![], b"result".to_vec()], Vec::new());
    let map: BTreeMap<u64, i64> = [(1, -1), (5, 9)].into();
    fuzz_record::<BTreeMap<u64, i64>>(300, &[map], Vec::new());
}

/// A format-1 log entry: bincode is positional, so this enum (the first
/// two variants of format 1's payload) writes the same bytes.
#[derive(Serialize)]
enum PayloadV1 {
    #[allow(dead_code)]
    Blank,
    Normal(CommandV1),
}

#[test]
fn raft_log_entries() {
    let current = seeds::entries().iter().map(codec::encode_entry).collect();
    let older = seeds::format_1_commands()
        .into_iter()
        .map(|c| with_format(FORMAT_1, &(codec::LogIdRecord { term: 1, node_id: 2, index: 3 }, PayloadV1::Normal(c))))
        .collect();
    fuzz(2_000, current, older, codec::decode_entry, codec::encode_entry);
}

#[test]
fn raft_log_ids_votes_and_memberships() {
    let ids = [seeds::log_id(1, 2, 3), seeds::log_id(u64::MAX, 0, 1)];
    fuzz(200, ids.iter().map(codec::encode_log_id).collect(), Vec::new(), codec::decode_log_id, codec::encode_log_id);
    let votes = [seeds::vote(3, 1, true), seeds::vote(4, 2, false)];
    fuzz(200, votes.iter().map(codec::encode_vote).collect(), Vec::new(), codec::decode_vote, codec::encode_vote);
    let memberships = seeds::stored_memberships();
    fuzz(
        500,
        memberships.iter().map(codec::encode_stored_membership).collect(),
        Vec::new(),
        codec::decode_stored_membership,
        codec::encode_stored_membership,
    );
}

#[test]
fn snapshot_meta_files() {
    let metas = seeds::snapshot_metas();
    let current = metas.iter().map(|m| snapshot::encode_meta(m, true)).collect();
    fuzz(500, current, Vec::new(), snapshot::decode_meta, |m| snapshot::encode_meta(m, true));
}

type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Snapshot files as received from a leader, and backup files (the same
/// format) given to `drover admin restore`: `read_records` reads both.
#[test]
fn snapshot_and_backup_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fuzz.snap");
    let read = |bytes: &[u8]| -> Result<Records, crate::store::StoreError> {
        std::fs::write(&path, bytes)?;
        let mut records = Vec::new();
        snapshot::read_records(&path, |k, v| {
            records.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(records)
    };
    fuzz(1_000, seeds::snapshot_files(), Vec::new(), read, |records: &Records| seeds::snapshot_file(records));
    // `verify` is `read_records` with nothing done per record.
    std::fs::write(&path, b"DRVSNAP1\xff\xff\xff\xfe").expect("write");
    assert!(snapshot::verify(&path).is_err());
}

fn message<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcFailure> {
    decode_message(bytes)
}

/// The requests a node's Raft service decodes (`AppendEntries`, `Vote`,
/// `PreVote`, `TransferLeader`, the header of `InstallSnapshot`).
#[test]
fn raft_requests() {
    let entries = seeds::entries();
    let appends: Vec<AppendEntriesRequest<TypeConfig>> = vec![
        AppendEntriesRequest {
            vote: seeds::vote(2, 1, true),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        },
        AppendEntriesRequest {
            vote: seeds::vote(2, 3, true),
            prev_log_id: Some(seeds::log_id(1, 1, 1)),
            entries,
            leader_commit: Some(seeds::log_id(2, 3, 4)),
        },
    ];
    let current = appends.iter().map(encode_message).collect();
    fuzz(2_000, current, Vec::new(), message::<AppendEntriesRequest<TypeConfig>>, encode_message);

    let mut transfer = VoteRequest::<TypeConfig>::new(seeds::vote(5, 2, false), Some(seeds::log_id(4, 1, 9)));
    transfer.leadership_transfer = true;
    let votes = [VoteRequest::<TypeConfig>::new(seeds::vote(5, 2, false), None), transfer];
    fuzz(
        500,
        votes.iter().map(encode_message).collect(),
        Vec::new(),
        message::<VoteRequest<TypeConfig>>,
        encode_message,
    );

    let transfers =
        [TransferLeaderRequest::<TypeConfig>::new(seeds::vote(6, 1, true), 2, Some(seeds::log_id(6, 1, 7)))];
    let current = transfers.iter().map(encode_message).collect();
    fuzz(300, current, Vec::new(), message::<TransferLeaderRequest<TypeConfig>>, encode_message);

    let headers: Vec<(Vote, Vec<u8>)> =
        seeds::snapshot_metas().iter().map(|m| (seeds::vote(7, 1, true), snapshot::encode_meta(m, true))).collect();
    let current = headers.iter().map(encode_message).collect();
    fuzz(500, current, Vec::new(), message::<(Vote, Vec<u8>)>, encode_message);
}

/// The replies a node decodes from its peers.
#[test]
fn raft_replies() {
    type Reply<T> = Result<T, String>;
    let appends: Vec<Reply<AppendEntriesResponse<TypeConfig>>> = vec![
        Ok(AppendEntriesResponse::Success),
        Ok(AppendEntriesResponse::PartialSuccess(Some(seeds::log_id(1, 2, 3)))),
        Ok(AppendEntriesResponse::Conflict),
        Ok(AppendEntriesResponse::HigherVote(seeds::vote(9, 1, false))),
        Err("node 2 is shutting down".into()),
    ];
    let current = appends.iter().map(encode_message).collect();
    fuzz(500, current, Vec::new(), message::<Reply<AppendEntriesResponse<TypeConfig>>>, encode_message);

    let votes: Vec<Reply<VoteResponse<TypeConfig>>> =
        vec![Ok(VoteResponse::new(seeds::vote(3, 1, false), Some(seeds::log_id(2, 1, 5)), true)), Err("x".into())];
    let current = votes.iter().map(encode_message).collect();
    fuzz(300, current, Vec::new(), message::<Reply<VoteResponse<TypeConfig>>>, encode_message);

    let snapshots: Vec<Reply<SnapshotResponse<TypeConfig>>> = vec![Ok(SnapshotResponse::new(seeds::vote(3, 2, true)))];
    let current = snapshots.iter().map(encode_message).collect();
    fuzz(200, current, Vec::new(), message::<Reply<SnapshotResponse<TypeConfig>>>, encode_message);

    let transfers: Vec<Reply<TransferLeaderResponse<TypeConfig>>> = vec![Ok(Ok(())), Err("no".into())];
    let current = transfers.iter().map(encode_message).collect();
    fuzz(200, current, Vec::new(), message::<Reply<TransferLeaderResponse<TypeConfig>>>, encode_message);
}
