//! Records of every earlier build (bincode 1.3) decode, and this build
//! writes the same bytes: data directories, backups and replicas in a
//! rolling upgrade stay identical.

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::domain::{Command, Completion, NewTask, Operation, Outcome, RequestId, Task, TaskState, Transition};
use crate::encoding::{decode, encode, FORMAT};

/// What bincode 1.3 (every earlier build) wrote for `value`.
fn bincode1<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    out.extend(bincode1::serialize(value).unwrap());
    out
}

/// `value` encodes to the bytes bincode 1.3 wrote, and those decode back.
fn same_as_bincode1<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let old = bincode1(value);
    prop_assert_eq!(&encode(value), &old);
    let back: T = decode(&old).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, value);
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
        let task = NewTask { callback: callback.clone(), payload: payload.clone(), priority, run_at_ms: at, idempotency_key: key.clone() };
        let command = Command {
            stamped_at_ms: at,
            operation: Operation::ScheduleRequest { request_id: RequestId(request), tasks: vec![task.clone(), task], auto_register: id % 2 == 0 },
        };
        same_as_bincode1(&command)?;
        let outcome = match (id % 3, error.clone()) {
            (0, _) | (_, None) => Outcome::Success { result: payload.clone() },
            (1, Some(error)) => Outcome::Retry { error, retry_after_ms: Some(at) },
            (_, Some(error)) => Outcome::Fatal { error },
        };
        same_as_bincode1(&Command {
            stamped_at_ms: at,
            operation: Operation::Complete { completions: vec![Completion { task_id: id, fencing_token: at, outcome }] },
        })?;
        same_as_bincode1(&Task {
            id,
            callback,
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
        })?;
        same_as_bincode1(&numbers_map)?;
    }
}
