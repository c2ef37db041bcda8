//! Valid values of every type the fuzzed decoders read, with every enum
//! variant present, so that mutations start from real encodings and reach
//! past the first check.

use std::collections::{BTreeMap, BTreeSet};

use openraft::entry::RaftEntry;
use serde_bytes::ByteBuf;

use crate::domain::dependency::{After, AfterPolicy, Counts, Deps, Edge, Parent};
use crate::domain::legacy::{CallbackConfigV1, CommandV1, NewTaskV1, OperationV1, TaskV1};
use crate::domain::schedule::{
    Cadence, Catchup, DstGap, DstRepeat, Overlap, Run, Schedule, SchedulePolicy, ScheduleSpec, Slot, TaskTemplate,
};
use crate::domain::*;
use crate::raft::codec::LogIdRecord;
use crate::raft::{Entry, LogId, Membership, Node, SnapshotMeta, StoredMembership, Vote};

/// Behind format byte `format`, bincode of `value` (what a build writing
/// that format put on disk).
pub fn with_format<T: serde::Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = vec![format];
    crate::encoding::encode_into(&mut out, value);
    out
}

pub fn new_task(i: u64) -> NewTask {
    NewTask {
        callback: format!("cb-{i}"),
        payload: vec![i as u8; (i % 5) as usize * 3],
        priority: (i % 10) as u8,
        run_at_ms: 1_700_000_000_000 + i,
        idempotency_key: (i % 2 == 0).then(|| format!("key-{i}")),
        collection: (i % 3 == 0).then(|| "batch".to_string()),
    }
}

pub fn callback_config(with_rate: bool) -> CallbackConfig {
    CallbackConfig {
        name: "emails".into(),
        max_attempts: 5,
        lease_ms: 30_000,
        timeout_ms: 600_000,
        concurrency: 8,
        backoff_initial_ms: 100,
        backoff_max_ms: 60_000,
        rate: with_rate.then_some(RateLimit { count: 10, per_ms: 1_000, burst: 20 }),
        retention: Retention { succeeded_ms: Some(3_600_000), cancelled_ms: None, failed_ms: Some(1), dead_ms: None },
    }
}

fn slot(at_ms: u64) -> Slot {
    Slot { at_ms, id: format!("2026-11-28T05:{:02}", at_ms % 60) }
}

pub fn schedule(cron: bool) -> Schedule {
    let cadence = if cron {
        Cadence::Cron { expr: "*/5 * * * *".into(), tz: "Europe/Berlin".into() }
    } else {
        Cadence::Every { period_ms: 60_000 }
    };
    Schedule {
        name: "nightly".into(),
        spec: ScheduleSpec {
            cadence,
            start_ms: Some(1),
            end_ms: cron.then_some(u64::MAX / 2),
            jitter_ms: 500,
            dst_repeat: if cron { DstRepeat::Both } else { DstRepeat::Once },
            dst_gap: if cron { DstGap::Skip } else { DstGap::Shift },
        },
        template: TaskTemplate { callback: "report".into(), payload: b"{}".to_vec(), priority: 3, collection: None },
        policy: SchedulePolicy {
            overlap: if cron { Overlap::CancelOther } else { Overlap::BufferAll },
            catchup: if cron { Catchup::All } else { Catchup::None },
            catchup_window_ms: 3_600_000,
            pause_on_failure: cron,
        },
        created_ms: 1_700_000_000_000,
        paused: !cron,
        note: "fuzz".into(),
        last_slot: Some(slot(7)),
        not_before_ms: 3,
        active: vec![4, 5],
        buffered: vec![slot(8), slot(9)],
        fired: 10,
        skipped: 2,
        runs: vec![Run { slot: slot(6), task_id: 4 }],
    }
}

pub fn gate(drop: bool) -> Gate {
    Gate {
        target: GateTarget::new("emails", drop.then(|| "batch".to_string())),
        mode: if drop { GateMode::Drop } else { GateMode::Pause },
        since_ms: 1,
        since_index: 2,
        until_ms: drop.then_some(99),
        note: "maintenance".into(),
    }
}

pub fn task(state: TaskState) -> Task {
    Task {
        id: 42,
        callback: "emails".into(),
        priority: 1,
        state,
        run_at_ms: 1_700_000_000_000,
        created_at_ms: 1_699_999_999_000,
        attempts: 2,
        payload_size: 17,
        idempotency_key: Some("k".into()),
        created_index: 9,
        fencing_token: 11,
        worker: Some("w-1".into()),
        last_error: Some("boom".into()),
        result_size: Some(3),
        cancel_requested: true,
        history: vec![
            Transition { state: TaskState::Running, at_ms: 5, attempt: 1 },
            Transition { state: TaskState::RetryWait, at_ms: 6, attempt: 1 },
        ],
        collection: Some("batch".into()),
        schedule: Some("nightly".into()),
    }
}

pub fn tasks() -> Vec<Task> {
    TaskState::ALL.into_iter().map(task).collect()
}

pub fn request_record() -> RequestRecord {
    RequestRecord {
        at_ms: 5,
        outcomes: vec![
            ScheduleOutcome { task_id: 1, created: true, state: TaskState::Scheduled },
            ScheduleOutcome { task_id: 2, created: false, state: TaskState::Cancelled },
        ],
    }
}

pub fn deps() -> Deps {
    Deps {
        policy: AfterPolicy::AllFinished,
        parents: 3,
        open: 1,
        ended: Counts { succeeded: 1, failed: 1, dead: 0, cancelled: 0 },
        cancelled_by: Some(8),
    }
}

pub fn edges() -> Vec<Edge> {
    vec![Edge { counted: None }, Edge { counted: Some(TaskState::Dead) }]
}

/// One command of every operation.
pub fn commands() -> Vec<Command> {
    let expiry = |i| Expiry { task_id: i, fencing_token: i + 1, reason: "lease lapsed".into() };
    let request_id = RequestId(*b"0123456789abcdef");
    let operations = vec![
        Operation::Schedule { tasks: (0..4).map(new_task).collect(), auto_register: true },
        Operation::RegisterCallback(callback_config(true)),
        Operation::Assign { assignments: vec![Assignment { task_id: 1, worker: "w".into(), attempts_seen: 0 }] },
        Operation::Complete {
            completions: vec![
                Completion { task_id: 1, fencing_token: 2, outcome: Outcome::Success { result: b"ok".to_vec() } },
                Completion {
                    task_id: 2,
                    fencing_token: 3,
                    outcome: Outcome::Retry { error: "later".into(), retry_after_ms: Some(10) },
                },
                Completion { task_id: 3, fencing_token: 4, outcome: Outcome::Fatal { error: "no".into() } },
                Completion { task_id: 4, fencing_token: 5, outcome: Outcome::Cancelled },
            ],
        },
        Operation::Expire { leases: vec![expiry(1), expiry(2)] },
        Operation::Cancel { task_id: 7 },
        Operation::Redrive { target: Target::Task(3) },
        Operation::Purge { target: Target::Callback("emails".into()) },
        Operation::RetireNode { node_id: 4 },
        Operation::Import {
            records: vec![
                (
                    ByteBuf::from(b"t\0\0\0\0\0\0\0\x01".to_vec()),
                    ByteBuf::from(crate::encoding::encode(&task(TaskState::Dead))),
                ),
                (ByteBuf::from(vec![0xff]), ByteBuf::from(Vec::new())),
            ],
        },
        Operation::Release { leases: vec![expiry(3)] },
        Operation::ScheduleRequest { request_id, tasks: vec![new_task(5)], auto_register: false },
        Operation::SetGate { gate: gate(true), cancel_running: true },
        Operation::OpenGate { target: GateTarget::new("emails", None), if_expired: true },
        Operation::Collect { task_ids: vec![1, 2, 3], request_ids: vec![request_id] },
        Operation::PutSchedule { schedule: Box::new(schedule(true)), create: true },
        Operation::DeleteSchedule { name: "nightly".into() },
        Operation::PauseSchedule { name: "nightly".into(), paused: true, note: "why".into(), catch_up: false },
        Operation::FireSchedule {
            name: "nightly".into(),
            slots: vec![slot(1), slot(2)],
            skip_to: Some(slot(0)),
            skipped: 4,
        },
        Operation::TriggerSchedule { name: "nightly".into() },
        Operation::ScheduleGraph {
            request_id: Some(request_id),
            tasks: vec![new_task(1), new_task(2)],
            after: vec![
                After::default(),
                After { parents: vec![Parent::Item(0), Parent::Task(9)], policy: AfterPolicy::AllFinished },
            ],
            auto_register: true,
        },
        Operation::RedriveWithDependents { target: Target::Task(1) },
        Operation::BackfillSchedule { name: "nightly".into(), slots: vec![slot(3)] },
        Operation::PutGrant {
            grant: crate::domain::auth::Grant {
                id: crate::domain::auth::Grant::subject_id("ops"),
                principal: crate::domain::auth::PrincipalKey::Subject("ops".into()),
                role: crate::domain::auth::Role::Operator,
                callbacks: vec!["email.*".into()],
                created_ms: 0,
                expires_ms: Some(9),
                note: "n".into(),
            },
        },
        Operation::RevokeGrant { id: "c-ops".into() },
        Operation::SetAuth { enabled: true },
        Operation::SkipSchedule { name: "nightly".into(), skip_to: slot(7), skipped: 3, note: "out of disk".into() },
        Operation::SetClusterId { cluster_id: crate::domain::ClusterId(0x00c0_ffee_0000_0000_0000_0000_0000_0001) },
        Operation::SetFeatureLevel { level: 3 },
        Operation::Traced {
            operation: Box::new(Operation::Schedule { tasks: vec![new_task(6)], auto_register: true }),
            traces: vec![Some(crate::domain::trace::TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: "k=v".into(),
            })],
        },
    ];
    operations
        .into_iter()
        .enumerate()
        .map(|(i, operation)| Command { stamped_at_ms: 1_000 + i as u64, operation })
        .collect()
}

/// Format-1 encodings (as earlier builds wrote them) of every type whose
/// layout format 2 changed.
pub fn format_1_tasks() -> Vec<Vec<u8>> {
    let t = task(TaskState::Running);
    let old = TaskV1 {
        id: t.id,
        callback: t.callback,
        priority: t.priority,
        state: t.state,
        run_at_ms: t.run_at_ms,
        created_at_ms: t.created_at_ms,
        attempts: t.attempts,
        payload_size: t.payload_size,
        idempotency_key: t.idempotency_key,
        created_index: t.created_index,
        fencing_token: t.fencing_token,
        worker: t.worker,
        last_error: t.last_error,
        result_size: t.result_size,
        cancel_requested: t.cancel_requested,
        history: t.history,
    };
    vec![with_format(crate::encoding::FORMAT_1, &old)]
}

fn callback_v1() -> CallbackConfigV1 {
    CallbackConfigV1 {
        name: "emails".into(),
        max_attempts: 3,
        lease_ms: 1,
        timeout_ms: 2,
        concurrency: 0,
        backoff_initial_ms: 3,
        backoff_max_ms: 4,
    }
}

pub fn format_1_callbacks() -> Vec<Vec<u8>> {
    vec![with_format(crate::encoding::FORMAT_1, &callback_v1())]
}

pub fn format_1_commands() -> Vec<CommandV1> {
    let old_task = |i| {
        let t = new_task(i);
        NewTaskV1 {
            callback: t.callback,
            payload: t.payload,
            priority: t.priority,
            run_at_ms: t.run_at_ms,
            idempotency_key: t.idempotency_key,
        }
    };
    let ops = vec![
        OperationV1::Schedule { tasks: vec![old_task(1), old_task(2)], auto_register: true },
        OperationV1::RegisterCallback(callback_v1()),
        OperationV1::Import { records: vec![(ByteBuf::from(vec![1, 2]), ByteBuf::from(vec![3]))] },
        OperationV1::ScheduleRequest { request_id: RequestId([7; 16]), tasks: vec![old_task(3)], auto_register: false },
    ];
    ops.into_iter().map(|operation| CommandV1 { stamped_at_ms: 9, operation }).collect()
}

pub fn log_id(term: u64, node_id: u64, index: u64) -> LogId {
    LogId::from(LogIdRecord { term, node_id, index })
}

pub fn membership(joint: bool) -> Membership {
    let nodes: BTreeMap<u64, Node> = (1..=4).map(|i| (i, Node { addr: format!("127.0.0.1:{}", 7000 + i) })).collect();
    let mut configs = vec![BTreeSet::from([1u64, 2, 3])];
    if joint {
        configs.push(BTreeSet::from([2u64, 3, 4]));
    }
    match Membership::new(configs, nodes) {
        Ok(m) => m,
        Err(e) => panic!("seed membership: {e}"),
    }
}

pub fn vote(term: u64, node_id: u64, committed: bool) -> Vote {
    let mut v = Vote::new(term, node_id);
    v.committed = committed;
    v
}

/// Log entries of every payload kind, a normal one per command.
pub fn entries() -> Vec<Entry> {
    let mut out = vec![Entry::new_blank(log_id(1, 1, 1)), Entry::new_membership(log_id(1, 1, 2), membership(true))];
    for (i, cmd) in commands().into_iter().enumerate() {
        out.push(Entry::new_normal(log_id(2, 3, 3 + i as u64), cmd));
    }
    out
}

pub fn stored_memberships() -> Vec<StoredMembership> {
    vec![
        StoredMembership::default(),
        StoredMembership::new(Some(log_id(3, 1, 10)), membership(false)),
        StoredMembership::new(Some(log_id(4, 2, 11)), membership(true)),
    ]
}

pub fn snapshot_metas() -> Vec<SnapshotMeta> {
    stored_memberships()
        .into_iter()
        .enumerate()
        .map(|(i, last_membership)| SnapshotMeta {
            last_log_id: (i > 0).then(|| log_id(5, 1, 20 + i as u64)),
            last_membership,
        })
        .collect()
}

/// A snapshot (or backup) file holding `records`, as
/// [`crate::raft::snapshot::build`] writes it.
pub fn snapshot_file(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"DRVSNAP1".to_vec();
    for (k, v) in records {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out.extend_from_slice(&u32::MAX.to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Snapshot files: empty, and holding real state-machine records.
pub fn snapshot_files() -> Vec<Vec<u8>> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = tasks()
        .iter()
        .map(|t| (format!("t{:08}", t.id).into_bytes(), crate::encoding::encode(t)))
        .chain([(b"c".to_vec(), crate::encoding::encode(&callback_config(false))), (b"e".to_vec(), Vec::new())])
        .collect();
    vec![snapshot_file(&[]), snapshot_file(&rows[..1]), snapshot_file(&rows)]
}
