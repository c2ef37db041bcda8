//! Every RocksDB key drover writes, typed in one place.
//!
//! Keys are a prefix byte followed by big-endian integers, so RocksDB's
//! byte order is the intended iteration order (log by index, tasks by id,
//! queues by priority, run-at, then id).
//!
//! Column families (one RocksDB instance, hence one WAL: vote, log and state
//! machine writes are never reordered):
//! - [`CF_LOG`]: Raft log entries keyed by index.
//! - [`CF_META`]: Raft metadata (vote, committed, last purged, snapshot
//!   install marker).
//! - [`CF_SM`]: the state machine (tasks, indexes, applied state).

pub const CF_LOG: &str = "log";
pub const CF_META: &str = "meta";
pub const CF_SM: &str = "sm";

/// Raft log entry at `index`.
pub fn log_entry(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Parse a [`log_entry`] key.
pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub const META_VOTE: &[u8] = b"vote";
pub const META_COMMITTED: &[u8] = b"committed";
pub const META_LAST_PURGED: &[u8] = b"last_purged";
/// Present while a snapshot install is under way; holds the snapshot path.
pub const META_INSTALLING: &[u8] = b"installing_snapshot";
/// The cluster ID this node took from a leader (or was given when it was
/// added) before its state machine applied one; see
/// `crate::raft::identity`.
pub const META_CLUSTER_ID: &[u8] = b"cluster_id";

// State machine keys. Prefix bytes:
const SM_META: u8 = b'M';
const SM_TASK: u8 = b'T';
const SM_PAYLOAD: u8 = b'P';
const SM_IDEMPOTENCY: u8 = b'K';
const SM_PENDING: u8 = b'Q';
const SM_RESULT: u8 = b'R';
const SM_BY_STATE: u8 = b'S';
const SM_CALLBACK: u8 = b'C';
const SM_RETIRED: u8 = b'N';
const SM_REQUEST: u8 = b'D';
const SM_GATE: u8 = b'G';
const SM_SCHEDULE: u8 = b'H';
const SM_FINISHED: u8 = b'F';
const SM_REQUEST_BY_TIME: u8 = b'd';
const SM_DEPS: u8 = b'W';
const SM_PARENTS: u8 = b'A';
const SM_CHILD: u8 = b'E';
const SM_GRANT: u8 = b'Z';
const SM_TRACE: u8 = b'X';
const SM_SCHEDULE_TRACE: u8 = b'Y';

/// Last applied log id.
pub const SM_LAST_APPLIED: &[u8] = b"M/last_applied";
/// Last applied membership.
pub const SM_MEMBERSHIP: &[u8] = b"M/membership";
/// Replicated clock: the highest proposer stamp applied, in Unix ms.
pub const SM_NOW: &[u8] = b"M/now";
/// Next task id to hand out.
pub const SM_NEXT_TASK_ID: &[u8] = b"M/next_task_id";
/// Number of task rows.
pub const SM_TASK_COUNT: &[u8] = b"M/task_count";
/// Rows retention has deleted so far (tasks and request ids).
pub const SM_COLLECTED: &[u8] = b"M/collected";
/// Version of the derived index rows (2: with the finished and
/// request-by-time indexes); absent in data written before them.
pub const SM_LAYOUT: &[u8] = b"M/layout";
/// Whether grants are enforced (a `u64`, 1 when they are; absent: not).
pub const SM_AUTH_ENABLED: &[u8] = b"M/auth_enabled";
/// The cluster's ID (a [`crate::domain::ClusterId`] record), written by the
/// first `SetClusterId` applied; absent before it (and in data written
/// before cluster IDs).
pub const SM_CLUSTER_ID: &[u8] = b"M/cluster_id";
/// The cluster's feature level (a `u64`), written by `SetFeatureLevel`;
/// absent: level 1 (0.1.0). See `crate::domain::feature`.
pub const SM_FEATURE_LEVEL: &[u8] = b"M/feature_level";
/// The [`SM_LAYOUT`] this build writes.
pub const LAYOUT: u64 = 2;

/// First key of the state machine: every state-machine key sorts at or after
/// it, and before [`sm_end`].
pub fn sm_start() -> Vec<u8> {
    vec![0]
}

pub fn sm_end() -> Vec<u8> {
    vec![0xff; 9]
}

pub fn is_sm_meta(key: &[u8]) -> bool {
    key.first() == Some(&SM_META)
}

fn with_u64(prefix: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

/// Task row (without its payload).
pub fn task(id: u64) -> [u8; 9] {
    with_u64(SM_TASK, id)
}

/// Task payload, apart from the row so that scans of rows stay small.
pub fn payload(id: u64) -> [u8; 9] {
    with_u64(SM_PAYLOAD, id)
}

pub const TASK_PREFIX: [u8; 1] = [SM_TASK];

/// The task id of a [`task`] row key.
pub fn task_id(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&SM_TASK, rest)) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// Whether the value at state-machine `key` is a record behind a format
/// byte (task rows, idempotency keys, callbacks, request ids, gates); index
/// rows are empty and payloads and results are the user's bytes.
pub fn holds_record(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(
            &(SM_TASK
                | SM_IDEMPOTENCY
                | SM_CALLBACK
                | SM_REQUEST
                | SM_GATE
                | SM_SCHEDULE
                | SM_DEPS
                | SM_PARENTS
                | SM_CHILD
                | SM_TRACE
                | SM_SCHEDULE_TRACE)
        )
    )
}

/// Whether `key` is a row derived from task rows (pending queues, the
/// by-state, finished and request-by-time indexes): a restore rebuilds
/// these from the rows rather than trusting a backup's copies.
pub fn is_derived(key: &[u8]) -> bool {
    matches!(key.first(), Some(&(SM_PENDING | SM_BY_STATE | SM_FINISHED | SM_REQUEST_BY_TIME)))
}

/// Whether `key` is an [`idempotency`] key.
pub fn is_idempotency(key: &[u8]) -> bool {
    key.first() == Some(&SM_IDEMPOTENCY)
}

/// A periodic schedule.
pub fn schedule(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(SM_SCHEDULE);
    k.extend_from_slice(name.as_bytes());
    k
}

pub const SCHEDULE_PREFIX: [u8; 1] = [SM_SCHEDULE];

/// Whether `key` is a [`schedule`] key.
pub fn is_schedule(key: &[u8]) -> bool {
    key.first() == Some(&SM_SCHEDULE)
}

/// A grant, by its id.
pub fn grant(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(SM_GRANT);
    k.extend_from_slice(id.as_bytes());
    k
}

pub const GRANT_PREFIX: [u8; 1] = [SM_GRANT];

/// Whether `key` is a [`grant`] key.
pub fn is_grant(key: &[u8]) -> bool {
    key.first() == Some(&SM_GRANT)
}

/// Whether `key` is a [`gate`] key.
pub fn is_gate(key: &[u8]) -> bool {
    key.first() == Some(&SM_GATE)
}

/// Whether `key` is a [`callback`] key.
pub fn is_callback(key: &[u8]) -> bool {
    key.first() == Some(&SM_CALLBACK)
}

/// Idempotency index: (callback, key) -> task id.
pub fn idempotency(callback: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + callback.len() + key.len());
    k.push(SM_IDEMPOTENCY);
    k.extend_from_slice(callback.as_bytes());
    // Callback names never contain 0, so (callback, key) pairs cannot collide.
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Pending queue of one (callback, collection, priority): tasks waiting
/// to run, ordered by run-at, then arrival (task ids increase with
/// arrival).
///
/// A task without a collection has the key `Q callback 0 priority run_at
/// id` (the only form format 1 wrote); one in a collection `Q callback 0
/// collection 0 priority run_at id`. The two are told apart by length
/// (the tail after the first 0 is 17 bytes, or a collection, a 0 and 17
/// bytes), and the first sort before the second (priorities are below any
/// collection name's first byte).
pub fn pending(callback: &str, collection: Option<&str>, priority: u8, run_at_ms: u64, id: u64) -> Vec<u8> {
    let mut k = pending_prefix(callback, collection);
    k.push(priority);
    k.extend_from_slice(&run_at_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of every [`pending`] key of `callback` (with `None`: of all its
/// collections too) or of one of its collections.
pub fn pending_prefix(callback: &str, collection: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(20 + callback.len() + collection.map_or(0, str::len));
    k.push(SM_PENDING);
    k.extend_from_slice(callback.as_bytes());
    k.push(0);
    if let Some(c) = collection {
        k.extend_from_slice(c.as_bytes());
        k.push(0);
    }
    k
}

pub const PENDING_PREFIX: [u8; 1] = [SM_PENDING];

pub const REQUEST_PREFIX: [u8; 1] = [SM_REQUEST];

/// A parsed [`pending`] key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    pub callback: String,
    pub collection: Option<String>,
    pub priority: u8,
    pub run_at_ms: u64,
    pub id: u64,
}

/// Parse a [`pending`] key.
pub fn parse_pending(key: &[u8]) -> Option<PendingKey> {
    let rest = key.strip_prefix(&PENDING_PREFIX)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let callback = std::str::from_utf8(&rest[..nul]).ok()?.to_string();
    let tail = &rest[nul + 1..];
    let (collection, tail) = match tail.len() {
        17 => (None, tail),
        n if n >= 19 && tail[n - 18] == 0 => {
            (Some(std::str::from_utf8(&tail[..n - 18]).ok()?.to_string()), &tail[n - 17..])
        }
        _ => return None,
    };
    let run_at_ms = u64::from_be_bytes(tail[1..9].try_into().ok()?);
    let id = u64::from_be_bytes(tail[9..17].try_into().ok()?);
    Some(PendingKey { callback, collection, priority: tail[0], run_at_ms, id })
}

/// A gate on a callback or one of its collections.
pub fn gate(callback: &str, collection: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + callback.len() + collection.map_or(0, str::len));
    k.push(SM_GATE);
    k.extend_from_slice(callback.as_bytes());
    if let Some(c) = collection {
        k.push(0);
        k.extend_from_slice(c.as_bytes());
    }
    k
}

pub const GATE_PREFIX: [u8; 1] = [SM_GATE];

/// Finished index: tasks of one (callback, final state) by when they
/// finished, so that retention finds the oldest of each without reading
/// rows, and dead tasks are counted per callback by keys alone.
pub fn finished(callback: &str, state: u8, finished_at_ms: u64, id: u64) -> Vec<u8> {
    let mut k = finished_prefix(callback, state);
    k.extend_from_slice(&finished_at_ms.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of the [`finished`] keys of one (callback, state).
pub fn finished_prefix(callback: &str, state: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(19 + callback.len());
    k.push(SM_FINISHED);
    k.extend_from_slice(callback.as_bytes());
    k.push(0);
    k.push(state);
    k
}

pub const FINISHED_PREFIX: [u8; 1] = [SM_FINISHED];

/// Parse a [`finished`] key into (callback, state, finished_at, id).
pub fn parse_finished(key: &[u8]) -> Option<(String, u8, u64, u64)> {
    let rest = key.strip_prefix(&FINISHED_PREFIX)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let callback = std::str::from_utf8(&rest[..nul]).ok()?.to_string();
    let tail = &rest[nul + 1..];
    if tail.len() != 17 {
        return None;
    }
    let at = u64::from_be_bytes(tail[1..9].try_into().ok()?);
    let id = u64::from_be_bytes(tail[9..17].try_into().ok()?);
    Some((callback, tail[0], at, id))
}

/// Request ids by when they were first applied, so that retention finds
/// those past their window.
pub fn request_by_time(at_ms: u64, id: &[u8; 16]) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = SM_REQUEST_BY_TIME;
    k[1..9].copy_from_slice(&at_ms.to_be_bytes());
    k[9..].copy_from_slice(id);
    k
}

pub const REQUEST_BY_TIME_PREFIX: [u8; 1] = [SM_REQUEST_BY_TIME];

/// Parse a [`request_by_time`] key.
pub fn parse_request_by_time(key: &[u8]) -> Option<(u64, [u8; 16])> {
    if key.len() != 25 || key[0] != SM_REQUEST_BY_TIME {
        return None;
    }
    Some((u64::from_be_bytes(key[1..9].try_into().ok()?), key[9..].try_into().ok()?))
}

/// A child task's dependency state ([`crate::domain::dependency::Deps`]).
pub fn deps(child: u64) -> [u8; 9] {
    with_u64(SM_DEPS, child)
}

/// A child task's parents, in the order it named them (a `Vec<u64>`,
/// written once).
pub fn parents(child: u64) -> [u8; 9] {
    with_u64(SM_PARENTS, child)
}

/// A parent-to-child edge ([`crate::domain::dependency::Edge`]): a parent's
/// children are the keys under [`children_prefix`], in id order.
pub fn child(parent: u64, child: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = SM_CHILD;
    k[1..9].copy_from_slice(&parent.to_be_bytes());
    k[9..].copy_from_slice(&child.to_be_bytes());
    k
}

pub fn children_prefix(parent: u64) -> [u8; 9] {
    with_u64(SM_CHILD, parent)
}

/// The child id of a [`child`] key.
pub fn child_id(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(9..17)?.try_into().ok()?))
}

/// A parsed dependency key.
pub enum DependencyKey {
    Deps(u64),
    Parents(u64),
    Child(u64, u64),
}

pub fn parse_dependency(key: &[u8]) -> Option<DependencyKey> {
    let u64_at = |at: usize| Some(u64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?));
    match (key.first()?, key.len()) {
        (&SM_DEPS, 9) => Some(DependencyKey::Deps(u64_at(1)?)),
        (&SM_PARENTS, 9) => Some(DependencyKey::Parents(u64_at(1)?)),
        (&SM_CHILD, 17) => Some(DependencyKey::Child(u64_at(1)?, u64_at(9)?)),
        _ => None,
    }
}

/// A task's W3C trace context (feature level 3; absent for a task
/// scheduled without one).
pub fn trace(id: u64) -> [u8; 9] {
    with_u64(SM_TRACE, id)
}

/// A periodic schedule's trace context (feature level 3). Apart from the
/// schedule's record, whose encoding it leaves unchanged.
pub fn schedule_trace(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(SM_SCHEDULE_TRACE);
    k.extend_from_slice(name.as_bytes());
    k
}

/// A task's result bytes.
pub fn result(id: u64) -> [u8; 9] {
    with_u64(SM_RESULT, id)
}

/// By-state index: (state, id).
pub fn by_state(state: u8, id: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[0] = SM_BY_STATE;
    k[1] = state;
    k[2..].copy_from_slice(&id.to_be_bytes());
    k
}

pub fn by_state_prefix(state: u8) -> [u8; 2] {
    [SM_BY_STATE, state]
}

/// Parse the task id out of a [`by_state`] key.
pub fn by_state_id(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(2..10)?.try_into().ok()?))
}

/// A callback's settings.
pub fn callback(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(SM_CALLBACK);
    k.extend_from_slice(name.as_bytes());
    k
}

pub const CALLBACK_PREFIX: [u8; 1] = [SM_CALLBACK];

/// A node id that was removed from the cluster and must never come back.
pub fn retired(node_id: u64) -> [u8; 9] {
    with_u64(SM_RETIRED, node_id)
}

pub const RETIRED_PREFIX: [u8; 1] = [SM_RETIRED];

/// The node id of a [`retired`] key.
pub fn retired_id(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&SM_RETIRED, rest)) => Some(u64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// A client request id seen by `ScheduleRequest`, with what it answered.
pub fn request(id: &[u8; 16]) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = SM_REQUEST;
    k[1..].copy_from_slice(id);
    k
}

/// Whether `key` is a [`request`] key.
pub fn is_request(key: &[u8]) -> bool {
    key.first() == Some(&SM_REQUEST) && key.len() == 17
}

/// Keys that describe Raft's applied state rather than application data:
/// a restore never imports them.
pub fn is_raft_state(key: &[u8]) -> bool {
    key == SM_LAST_APPLIED || key == SM_MEMBERSHIP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_index() {
        assert!(log_entry(2) < log_entry(10));
        assert!(log_entry(255) < log_entry(256));
        assert_eq!(log_index(&log_entry(12345)), Some(12345));
        assert_eq!(log_index(b"bad"), None);
    }

    #[test]
    fn pending_keys_group_by_callback_and_priority_then_time_then_id() {
        assert!(pending("a", None, 1, 9, 9) < pending("a", None, 2, 0, 0));
        assert!(pending("a", None, 9, 9, 9) < pending("ab", None, 0, 0, 0));
        assert!(pending("a", None, 1, 5, 9) < pending("a", None, 1, 6, 1));
        assert!(pending("a", None, 1, 5, 1) < pending("a", None, 1, 5, 2));
        assert!(pending("a", None, 9, u64::MAX, u64::MAX) < pending("a", Some("-"), 0, 0, 0));
        assert!(pending("a", Some("x"), 9, u64::MAX, u64::MAX) < pending("ab", None, 0, 0, 0));
        for collection in [None, Some("x"), Some("email.reset-1")] {
            // Ids and times whose bytes are 0 must not confuse the parser.
            for (run_at, id) in [(123, 456), (0, 0), (1 << 56, 256)] {
                let key = pending("cb.x", collection, 7, run_at, id);
                assert!(key.starts_with(&pending_prefix("cb.x", None)));
                assert!(key.starts_with(&pending_prefix("cb.x", collection)));
                let parsed = parse_pending(&key).unwrap();
                assert_eq!(
                    parsed,
                    PendingKey {
                        callback: "cb.x".into(),
                        collection: collection.map(String::from),
                        priority: 7,
                        run_at_ms: run_at,
                        id
                    }
                );
            }
        }
        assert_eq!(parse_pending(b"Qbad"), None);
        assert!(!pending("a", Some("x"), 0, 0, 0).starts_with(&pending_prefix("a", Some("xy"))));
    }

    #[test]
    fn finished_and_request_keys_roundtrip_in_time_order() {
        assert!(finished("a", 4, 10, 99) < finished("a", 4, 11, 1));
        assert!(finished("a", 4, u64::MAX, 1) < finished("a", 5, 0, 0));
        assert_eq!(parse_finished(&finished("cb", 6, 77, 0)), Some(("cb".into(), 6, 77, 0)));
        assert!(finished("cb", 6, 77, 0).starts_with(&finished_prefix("cb", 6)));
        assert!(request_by_time(1, &[9; 16]) < request_by_time(2, &[0; 16]));
        assert_eq!(parse_request_by_time(&request_by_time(5, &[3; 16])), Some((5, [3; 16])));
    }

    #[test]
    fn by_state_keys_roundtrip() {
        assert_eq!(by_state_id(&by_state(3, 77)), Some(77));
        assert!(by_state(3, u64::MAX) < by_state(4, 0));
    }

    #[test]
    fn every_sm_key_sorts_inside_the_sm_range() {
        let keys: Vec<Vec<u8>> = vec![
            task(u64::MAX).to_vec(),
            payload(1).to_vec(),
            by_state(255, u64::MAX).to_vec(),
            idempotency("cb", "k"),
            pending("zzz", Some("zzz"), 255, u64::MAX, u64::MAX),
            gate("zzz", Some("zzz")),
            schedule("zzz"),
            finished("zzz", 255, u64::MAX, u64::MAX),
            request_by_time(u64::MAX, &[0xff; 16]).to_vec(),
            result(9).to_vec(),
            callback("zzz"),
            trace(u64::MAX).to_vec(),
            schedule_trace("zzz"),
            SM_LAST_APPLIED.to_vec(),
        ];
        for k in keys {
            assert!(k >= sm_start() && k < sm_end(), "{k:?}");
        }
    }
}
