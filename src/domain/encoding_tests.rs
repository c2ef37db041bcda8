//! This build writes bincode 1.3's layout byte for byte, and records of
//! earlier builds (format 1, bincode 1.3) still decode, into today's types
//! with the fields format 2 added left empty.

use proptest::prelude::*;
use serde::Serialize;

use crate::domain::legacy::{CallbackConfigV1, CommandV1, NewTaskV1, OperationV1, TaskV1};
use crate::domain::{
    CallbackConfig, Command, Completion, NewTask, Operation, Outcome, RequestId, Retention, Task, TaskState, Transition,
};
use crate::encoding::{decode, encode, Record, FORMAT, FORMAT_1};

/// What bincode 1.3 wrote for `value`, behind format byte `format`.
fn bincode1<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut out = vec![format];
    out.extend(bincode1::serialize(value).unwrap());
    out
}

/// `value` encodes to the bytes bincode 1.3 writes, and those decode back.
fn same_as_bincode1<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + Record + PartialEq + std::fmt::Debug,
{
    let bytes = bincode1(FORMAT, value);
    prop_assert_eq!(&encode(value), &bytes);
    let back: T = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
    Ok(())
}

/// A format-1 record (`old`, as an earlier build wrote it) decodes to
/// `expected`.
fn format_1_reads_as<Old: Serialize, T: Record + PartialEq + std::fmt::Debug>(
    old: &Old,
    expected: &T,
) -> Result<(), TestCaseError> {
    let back: T = decode(&bincode1(FORMAT_1, old)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn records_are_byte_identical_to_bincode_1(
        callback in "[a-z][a-z0-9_.-]{0,20}",
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        key in proptest::option::of("[ -~]{0,30}"),
        numbers in any::<(u64, u64, u32, u8)>(),
        error in proptest::option::of(".{0,20}"),
        request in any::<[u8; 16]>(),
        numbers_map in proptest::collection::btree_map(any::<u64>(), any::<i64>(), 0..8),
    ) {
        let (at, id, attempts, priority) = numbers;
        let collection = error.clone().filter(|_| id % 2 == 0);
        let task = NewTask { callback: callback.clone(), payload: payload.clone(), priority, run_at_ms: at, idempotency_key: key.clone(), collection: collection.clone() };
        let command = Command {
            stamped_at_ms: at,
            operation: Operation::ScheduleRequest { request_id: RequestId(request), tasks: vec![task.clone(), task], auto_register: id % 2 == 0 },
        };
        same_as_bincode1(&command)?;
        // An earlier build's log entry: the same schedule, without collections.
        let old_task = NewTaskV1 { callback: callback.clone(), payload: payload.clone(), priority, run_at_ms: at, idempotency_key: key.clone() };
        let old_command = CommandV1 {
            stamped_at_ms: at,
            operation: OperationV1::ScheduleRequest { request_id: RequestId(request), tasks: vec![old_task], auto_register: true },
        };
        let new_task = NewTask { collection: None, ..task_of(&callback, &payload, priority, at, &key) };
        format_1_reads_as(&old_command, &Command {
            stamped_at_ms: at,
            operation: Operation::ScheduleRequest { request_id: RequestId(request), tasks: vec![new_task], auto_register: true },
        })?;
        let old_config = CallbackConfigV1 {
            name: callback.clone(), max_attempts: attempts, lease_ms: at, timeout_ms: id, concurrency: attempts / 2,
            backoff_initial_ms: at / 3, backoff_max_ms: at,
        };
        format_1_reads_as(&old_config, &CallbackConfig {
            name: callback.clone(), max_attempts: attempts, lease_ms: at, timeout_ms: id, concurrency: attempts / 2,
            backoff_initial_ms: at / 3, backoff_max_ms: at, rate: None, retention: Retention::default(),
        })?;
        let outcome = match (id % 3, error.clone()) {
            (0, _) | (_, None) => Outcome::Success { result: payload.clone() },
            (1, Some(error)) => Outcome::Retry { error, retry_after_ms: Some(at) },
            (_, Some(error)) => Outcome::Fatal { error },
        };
        same_as_bincode1(&Command {
            stamped_at_ms: at,
            operation: Operation::Complete { completions: vec![Completion { task_id: id, fencing_token: at, outcome }] },
        })?;
        let row = Task {
            id,
            callback: callback.clone(),
            priority,
            state: TaskState::RetryWait,
            run_at_ms: at,
            created_at_ms: at / 2,
            attempts,
            payload_size: payload.len() as u64,
            idempotency_key: key,
            created_index: id / 3,
            fencing_token: id,
            worker: error.clone(),
            last_error: error,
            result_size: Some(at),
            cancel_requested: attempts % 2 == 0,
            history: vec![Transition { state: TaskState::Running, at_ms: at, attempt: attempts }],
            collection,
            schedule: Some(callback.clone()).filter(|_| id % 3 == 0),
        };
        same_as_bincode1(&row)?;
        let old_row = TaskV1 {
            id: row.id, callback: row.callback.clone(), priority, state: row.state, run_at_ms: at, created_at_ms: at / 2,
            attempts, payload_size: row.payload_size, idempotency_key: row.idempotency_key.clone(),
            created_index: row.created_index, fencing_token: id, worker: row.worker.clone(),
            last_error: row.last_error.clone(), result_size: Some(at), cancel_requested: row.cancel_requested,
            history: row.history.clone(),
        };
        format_1_reads_as(&old_row, &Task { collection: None, schedule: None, ..row })?;
        same_as_bincode1(&numbers_map)?;
    }
}

fn task_of(callback: &str, payload: &[u8], priority: u8, at: u64, key: &Option<String>) -> NewTask {
    NewTask {
        callback: callback.into(),
        payload: payload.to_vec(),
        priority,
        run_at_ms: at,
        idempotency_key: key.clone(),
        collection: None,
    }
}
