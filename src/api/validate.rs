//! Validation of client requests at the edge, with messages that say what
//! to fix. Runs on the node that receives the request, before forwarding, so
//! a bad request never costs a Raft round trip.

use super::ApiError;
use crate::config::Limits;
use crate::domain::dependency::{After, AfterPolicy, Parent, MAX_PARENTS};
use crate::domain::trace::TraceContext;
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
    /// Its parents (none for most tasks).
    pub after: After,
    /// The W3C trace context it was scheduled under, kept beside the task
    /// (see `Operation::Traced`).
    pub trace: Option<TraceContext>,
}

impl ValidTask {
    /// Resolve against the proposer's stamp into a replicated command part
    /// (the parents go beside it: see `Operation::ScheduleGraph`).
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
    let trace = trace(spec.trace.as_ref())?;
    if !spec.after_refs.is_empty() {
        return Err(ApiError::InvalidArgument(
            "after_refs name items of the same batch: send the tasks together in one ScheduleBatch".into(),
        ));
    }
    let after = after(&spec)?;
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
        after,
        trace,
    })
}

/// A W3C trace context from the wire: none when absent or empty.
pub fn trace(t: Option<&pb::TraceContext>) -> Result<Option<TraceContext>, ApiError> {
    match t {
        None => Ok(None),
        Some(t) => TraceContext::parse(&t.traceparent, &t.tracestate).map_err(ApiError::InvalidArgument),
    }
}

/// A spec's parents by id, and its policy.
fn after(spec: &pb::TaskSpec) -> Result<After, ApiError> {
    if spec.after.len() > MAX_PARENTS {
        return Err(ApiError::InvalidArgument(format!(
            "{} parents; the limit is {MAX_PARENTS}: fan in through intermediate tasks",
            spec.after.len()
        )));
    }
    if spec.after.contains(&0) {
        return Err(ApiError::InvalidArgument("parent task id 0 does not exist (ids start at 1)".into()));
    }
    let policy = match pb::AfterPolicy::try_from(spec.after_policy) {
        Ok(pb::AfterPolicy::Unspecified | pb::AfterPolicy::AllSucceeded) => AfterPolicy::AllSucceeded,
        Ok(pb::AfterPolicy::AllFinished) => AfterPolicy::AllFinished,
        Err(_) => return Err(ApiError::InvalidArgument(format!("unknown after_policy {}", spec.after_policy))),
    };
    Ok(After { parents: spec.after.iter().map(|&id| Parent::Task(id)).collect(), policy })
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
    // Refs name earlier items only, so a batch's graph has no cycles.
    let mut refs: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, mut s) in specs.into_iter().enumerate() {
        let in_batch = |m: String| ApiError::InvalidArgument(format!("task {i}: {m}"));
        let after_refs = std::mem::take(&mut s.after_refs);
        let name = std::mem::take(&mut s.r#ref);
        let mut task = task_spec(s, limits, now_ms).map_err(|e| match e {
            ApiError::InvalidArgument(m) => in_batch(m),
            other => other,
        })?;
        for r in after_refs {
            match refs.get(&r) {
                Some(&j) => task.after.parents.push(Parent::Item(j)),
                None => {
                    return Err(in_batch(format!("after_refs names {r:?}, which is not the ref of an earlier item")))
                }
            }
        }
        if task.after.parents.len() > MAX_PARENTS {
            return Err(in_batch(format!("{} parents; the limit is {MAX_PARENTS}", task.after.parents.len())));
        }
        if !name.is_empty() {
            label("ref", &name, 128).map_err(|e| match e {
                ApiError::InvalidArgument(m) => in_batch(m),
                other => other,
            })?;
            if refs.insert(name.clone(), i as u32).is_some() {
                return Err(in_batch(format!("ref {name:?} is used by an earlier item")));
            }
        }
        out.push(task);
    }
    Ok(out)
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
            after: After::default(),
            trace: None,
        };
        assert_eq!(t.resolve(1000).run_at_ms, 1500);
    }

    #[test]
    fn batch_refs_name_earlier_items_only() {
        let l = Limits::default();
        let item = |name: &str, refs: &[&str], ids: &[u64]| pb::TaskSpec {
            r#ref: name.into(),
            after_refs: refs.iter().map(|r| r.to_string()).collect(),
            after: ids.to_vec(),
            ..spec("a")
        };
        let ok = batch(vec![item("x", &[], &[]), item("y", &["x"], &[7]), item("", &["y", "x"], &[])], &l, 0).unwrap();
        assert_eq!(ok[1].after.parents, vec![Parent::Task(7), Parent::Item(0)]);
        assert_eq!(ok[2].after.parents, vec![Parent::Item(1), Parent::Item(0)]);
        let msg = |r: Result<Vec<ValidTask>, ApiError>| format!("{:?}", r.unwrap_err());
        let e = msg(batch(vec![item("x", &["y"], &[]), item("y", &[], &[])], &l, 0));
        assert!(e.contains("task 0") && e.contains("not the ref of an earlier item"), "{e}");
        assert!(msg(batch(vec![item("x", &[], &[]), item("x", &[], &[])], &l, 0)).contains("earlier item"));
        assert!(msg(batch(vec![item("x", &["x"], &[])], &l, 0)).contains("not the ref of an earlier item"));
        assert!(format!("{:?}", task_spec(item("", &["x"], &[]), &l, 0).unwrap_err()).contains("ScheduleBatch"));
        let many = pb::TaskSpec { after: (1..=MAX_PARENTS as u64 + 1).collect(), ..spec("a") };
        assert!(format!("{:?}", task_spec(many, &l, 0).unwrap_err()).contains("parents"));
        let zero = pb::TaskSpec { after: vec![0], ..spec("a") };
        assert!(task_spec(zero, &l, 0).is_err());
    }
}
