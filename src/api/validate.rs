//! Validation of client requests at the edge, with messages that say what
//! to fix. Runs on the node that receives the request, before forwarding, so
//! a bad request never costs a Raft round trip.

use super::ApiError;
use crate::config::Limits;
use crate::domain::NewTask;
use crate::pb;

/// Highest priority (0 is the lowest and the default).
pub const MAX_PRIORITY: u32 = 9;

/// When a validated task should run, before the leader resolves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    Delay(u64),
    At(u64),
}

/// A task spec that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidTask {
    pub callback: String,
    pub payload: Vec<u8>,
    pub priority: u8,
    pub when: When,
    pub idempotency_key: Option<String>,
    pub collection: Option<String>,
}

impl ValidTask {
    /// Resolve against the proposer's stamp into a replicated command part.
    pub fn resolve(self, stamp_ms: u64) -> NewTask {
        let run_at_ms = match self.when {
            When::Now => stamp_ms,
            When::Delay(d) => stamp_ms.saturating_add(d),
            When::At(t) => t,
        };
        NewTask {
            callback: self.callback,
            payload: self.payload,
            priority: self.priority,
            run_at_ms,
            idempotency_key: self.idempotency_key,
            collection: self.collection,
        }
    }
}

pub fn callback_name(name: &str, limits: &Limits) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::InvalidArgument(
            "callback name is empty: name the handler that should run this task".into(),
        ));
    }
    label("callback", name, limits.max_callback_len)
}

/// A collection name: the callback name's rules, at most 128 bytes.
pub fn collection_name(name: &str, limits: &Limits) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::InvalidArgument("collection name is empty".into()));
    }
    label("collection", name, limits.max_callback_len)
}

/// A non-empty name under the callback name's rules (`what` names it in
/// the message).
pub fn label_name(what: &str, name: &str, limits: &Limits) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::InvalidArgument(format!("{what} name is empty")));
    }
    label(what, name, limits.max_callback_len)
}

/// `value` is at most `max` bytes of [A-Za-z0-9_.:-].
fn label(what: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::InvalidArgument(format!("{what} name is {} bytes; the limit is {max}", value.len())));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))) {
        return Err(ApiError::InvalidArgument(format!(
            "{what} name {value:?} contains {c:?}; use letters, digits, '_', '-', '.' and ':'"
        )));
    }
    Ok(())
}

pub fn task_spec(spec: pb::TaskSpec, limits: &Limits, now_ms: u64) -> Result<ValidTask, ApiError> {
    callback_name(&spec.callback, limits)?;
    if spec.payload.len() > limits.max_payload_bytes {
        return Err(ApiError::InvalidArgument(format!(
            "payload is {} bytes; the limit is {} bytes: store large data elsewhere and pass a reference",
            spec.payload.len(),
            limits.max_payload_bytes
        )));
    }
    if spec.priority > MAX_PRIORITY {
        return Err(ApiError::InvalidArgument(format!(
            "priority {} is out of range; use 0 (lowest, default) to {MAX_PRIORITY} (highest)",
            spec.priority
        )));
    }
    let ahead_ms = limits.max_schedule_ahead.as_millis() as u64;
    let when = match spec.when {
        None | Some(pb::task_spec::When::DelayMs(0)) | Some(pb::task_spec::When::RunAtUnixMs(0)) => When::Now,
        Some(pb::task_spec::When::DelayMs(d)) if d > ahead_ms => {
            return Err(ApiError::InvalidArgument(format!(
                "delay of {} is too far away; the limit is {}",
                humantime::format_duration(std::time::Duration::from_millis(d)),
                humantime::format_duration(limits.max_schedule_ahead)
            )));
        }
        Some(pb::task_spec::When::DelayMs(d)) => When::Delay(d),
        Some(pb::task_spec::When::RunAtUnixMs(t)) if t > now_ms.saturating_add(ahead_ms) => {
            return Err(ApiError::InvalidArgument(format!(
                "run-at {} is more than {} away; check the time's unit (milliseconds since the epoch)",
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.min(253_402_300_799_000))
                ),
                humantime::format_duration(limits.max_schedule_ahead)
            )));
        }
        Some(pb::task_spec::When::RunAtUnixMs(t)) => When::At(t),
    };
    let idempotency_key = if spec.idempotency_key.is_empty() {
        None
    } else if spec.idempotency_key.len() > limits.max_key_len {
        return Err(ApiError::InvalidArgument(format!(
            "idempotency key is {} bytes; the limit is {}",
            spec.idempotency_key.len(),
            limits.max_key_len
        )));
    } else {
        Some(spec.idempotency_key)
    };
    let collection = if spec.collection.is_empty() {
        None
    } else {
        collection_name(&spec.collection, limits)?;
        Some(spec.collection)
    };
    Ok(ValidTask {
        collection,
        callback: spec.callback,
        payload: spec.payload,
        priority: spec.priority as u8,
        when,
        idempotency_key,
    })
}

/// A request id: absent (empty) or exactly 16 bytes.
pub fn request_id(bytes: &[u8]) -> Result<Option<crate::domain::RequestId>, ApiError> {
    match bytes.len() {
        0 => Ok(None),
        16 => {
            let mut id = [0u8; 16];
            id.copy_from_slice(bytes);
            Ok(Some(crate::domain::RequestId(id)))
        }
        n => Err(ApiError::InvalidArgument(format!(
            "request_id is {n} bytes; it must be empty or 16 random bytes, the same in every retry"
        ))),
    }
}

pub fn batch(specs: Vec<pb::TaskSpec>, limits: &Limits, now_ms: u64) -> Result<Vec<ValidTask>, ApiError> {
    if specs.is_empty() {
        return Err(ApiError::InvalidArgument("batch is empty: send at least one task".into()));
    }
    if specs.len() > limits.max_batch {
        return Err(ApiError::InvalidArgument(format!(
            "batch has {} tasks; the limit is {}: split it into several requests",
            specs.len(),
            limits.max_batch
        )));
    }
    let bytes: usize = specs.iter().map(|s| s.payload.len()).sum();
    if bytes > limits.max_batch_bytes {
        return Err(ApiError::InvalidArgument(format!(
            "batch carries {bytes} payload bytes; the limit is {}: split it",
            limits.max_batch_bytes
        )));
    }
    specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            task_spec(s, limits, now_ms).map_err(|e| match e {
                ApiError::InvalidArgument(m) => ApiError::InvalidArgument(format!("task {i}: {m}")),
                other => other,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cb: &str) -> pb::TaskSpec {
        pb::TaskSpec { callback: cb.into(), ..Default::default() }
    }

    fn msg(r: Result<ValidTask, ApiError>) -> String {
        match r {
            Err(ApiError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn callback_names_are_checked() {
        let l = Limits::default();
        assert!(msg(task_spec(spec(""), &l, 0)).contains("empty"));
        assert!(msg(task_spec(spec(&"x".repeat(129)), &l, 0)).contains("limit is 128"));
        assert!(msg(task_spec(spec("a b"), &l, 0)).contains("' '"));
        assert!(task_spec(spec("send_email.v2:eu-1"), &l, 0).is_ok());
    }

    #[test]
    fn payload_priority_key_and_time_limits() {
        let l = Limits { max_payload_bytes: 10, ..Limits::default() };
        let mut s = spec("cb");
        s.payload = vec![0; 11];
        assert!(msg(task_spec(s, &l, 0)).contains("limit is 10 bytes"));
        let mut s = spec("cb");
        s.priority = 10;
        assert!(msg(task_spec(s, &l, 0)).contains("out of range"));
        let mut s = spec("cb");
        s.idempotency_key = "k".repeat(257);
        assert!(msg(task_spec(s, &l, 0)).contains("idempotency key"));
        let now = 1_700_000_000_000;
        let mut s = spec("cb");
        s.when = Some(pb::task_spec::When::RunAtUnixMs(now * 1000));
        assert!(msg(task_spec(s, &l, now)).contains("unit"));
        let mut s = spec("cb");
        s.when = Some(pb::task_spec::When::DelayMs(400 * 24 * 3600 * 1000));
        assert!(msg(task_spec(s, &l, now)).contains("too far away"));
        let mut s = spec("cb");
        s.when = Some(pb::task_spec::When::DelayMs(10_000));
        assert_eq!(task_spec(s, &l, now).unwrap().when, When::Delay(10_000));
    }

    #[test]
    fn batches_are_bounded() {
        let l = Limits { max_batch: 3, ..Limits::default() };
        assert!(batch(vec![], &l, 0).is_err());
        let err = batch(vec![spec("a"); 4], &l, 0).unwrap_err();
        assert!(matches!(err, ApiError::InvalidArgument(m) if m.contains("limit is 3")));
        let err = batch(vec![spec("a"), spec("")], &l, 0).unwrap_err();
        assert!(matches!(err, ApiError::InvalidArgument(m) if m.starts_with("task 1:")));
        assert_eq!(batch(vec![spec("a"); 3], &l, 0).unwrap().len(), 3);
    }

    #[test]
    fn collections_follow_the_callback_name_rules() {
        let l = Limits::default();
        let ok = task_spec(pb::TaskSpec { collection: "password_reset".into(), ..spec("a") }, &l, 0).unwrap();
        assert_eq!(ok.collection.as_deref(), Some("password_reset"));
        assert_eq!(task_spec(spec("a"), &l, 0).unwrap().collection, None);
        for bad in ["a/b", "has space", &"x".repeat(129)] {
            let err = task_spec(pb::TaskSpec { collection: bad.into(), ..spec("a") }, &l, 0).unwrap_err();
            assert!(matches!(&err, ApiError::InvalidArgument(m) if m.contains("collection name")), "{bad}: {err:?}");
        }
    }

    #[test]
    fn resolve_turns_delays_into_absolute_times() {
        let t = ValidTask {
            callback: "c".into(),
            payload: vec![],
            priority: 0,
            when: When::Delay(500),
            idempotency_key: None,
            collection: None,
        };
        assert_eq!(t.resolve(1000).run_at_ms, 1500);
    }
}
