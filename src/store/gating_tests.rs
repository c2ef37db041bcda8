//! Unit tests of gates, collections and retention in apply, and of the
//! upgrade of an earlier build's data.

use super::tests::{new_task, Sm};
use super::*;
use crate::domain::legacy::{CallbackConfigV1, TaskV1};
use crate::domain::*;

fn in_collection(cb: &str, collection: &str, key: Option<&str>) -> NewTask {
    NewTask { collection: Some(collection.into()), ..new_task(cb, 0, key) }
}

fn gate(cb: &str, collection: Option<&str>, mode: GateMode, until_ms: Option<u64>) -> Gate {
    Gate {
        target: GateTarget::new(cb, collection.map(String::from)),
        mode,
        since_ms: 0,
        since_index: 0,
        until_ms,
        note: "maintenance".into(),
    }
}

fn set(sm: &mut Sm, stamp: u64, g: Gate, cancel_running: bool) -> (u64, u64) {
    match sm.run(stamp, Operation::SetGate { gate: g, cancel_running }) {
        CommandResponse::GateSet { cancelled, cancel_requested } => (cancelled, cancel_requested),
        other => panic!("expected GateSet, got {other:?}"),
    }
}

#[test]
fn an_assignment_that_commits_after_a_pause_is_refused_and_the_other_collection_runs() {
    let mut sm = Sm::new();
    let o = sm.schedule(10, vec![in_collection("a", "x", None), in_collection("a", "y", None)]);
    let (x, y) = (o[0].task_id, o[1].task_id);
    // The leader picked both before the pause committed; its Assign lands after.
    let picked: Vec<Assignment> =
        [x, y].iter().map(|&id| Assignment { task_id: id, worker: "w".into(), attempts_seen: 0 }).collect();
    set(&mut sm, 20, gate("a", Some("x"), GateMode::Pause, None), false);
    let r = match sm.run(21, Operation::Assign { assignments: picked }) {
        CommandResponse::Assigned(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(matches!(&r[0], Err(Rejection::FailedPrecondition(m)) if m.contains("pause gate on a/x")), "{r:?}");
    assert!(r[1].is_ok(), "collection y is not gated");
    assert_eq!(sm.task(x).state, TaskState::Scheduled, "the paused task stays pending");
    assert_eq!(sm.index.pending_in(&GateTarget::new("a", Some("x".into()))), 1);
    // A pause on the whole callback holds every collection.
    set(&mut sm, 30, gate("a", None, GateMode::Pause, Some(100)), false);
    assert!(sm.assign(40, x).is_err());
    // It ends on replicated time: an entry stamped at its `until` may start it.
    // (The collection's own pause still holds x: open it first.)
    sm.run(50, Operation::OpenGate { target: GateTarget::new("a", Some("x".into())), if_expired: false });
    assert!(sm.assign(99, x).is_err(), "still paused at 99");
    assert!(sm.assign(100, x).is_ok(), "the pause ended at 100");
}

#[test]
fn a_drop_cancels_pending_tasks_and_arrivals_and_keys_still_return_the_same_task() {
    let mut sm = Sm::new();
    let o = sm.schedule(10, vec![in_collection("a", "x", None), in_collection("a", "x", None), new_task("a", 0, None)]);
    let running = o[1].task_id;
    sm.assign(11, running).unwrap();
    let (cancelled, asked) = set(&mut sm, 20, gate("a", Some("x"), GateMode::Drop, None), true);
    assert_eq!((cancelled, asked), (1, 1));
    let t = sm.task(o[0].task_id);
    assert_eq!(t.state, TaskState::Cancelled);
    assert_eq!(t.last_error.as_deref(), Some("dropped by gate a/x: maintenance"));
    assert!(sm.task(running).cancel_requested, "--cancel-running asks the running one to stop");
    assert_eq!(sm.task(o[2].task_id).state, TaskState::Scheduled, "tasks outside the gate are untouched");
    // Arrivals are acknowledged, cancelled, and a key returns the same task.
    let first = sm.schedule(30, vec![in_collection("a", "x", Some("k"))]);
    assert_eq!((first[0].created, first[0].state), (true, TaskState::Cancelled));
    assert!(sm.task(first[0].task_id).last_error.unwrap_or_default().contains("dropped by gate a/x"));
    let again = sm.schedule(31, vec![in_collection("a", "x", Some("k"))]);
    assert_eq!((again[0].task_id, again[0].created, again[0].state), (first[0].task_id, false, TaskState::Cancelled));
    // Opened: arrivals are scheduled again.
    sm.run(40, Operation::OpenGate { target: GateTarget::new("a", Some("x".into())), if_expired: false });
    let after = sm.schedule(41, vec![in_collection("a", "x", None)]);
    assert_eq!(after[0].state, TaskState::Ready);
    assert_eq!(LiveIndex::load(&sm.db).unwrap(), sm.index, "the index rebuilt from disk agrees");
}

#[test]
fn an_expired_gate_is_removed_only_if_it_was_not_set_again() {
    let mut sm = Sm::new();
    set(&mut sm, 10, gate("a", None, GateMode::Pause, Some(50)), false);
    let target = GateTarget::new("a", None);
    assert_eq!(
        sm.run(20, Operation::OpenGate { target: target.clone(), if_expired: true }),
        CommandResponse::GateOpened { existed: false }
    );
    assert_eq!(
        sm.run(60, Operation::OpenGate { target: target.clone(), if_expired: true }),
        CommandResponse::GateOpened { existed: true }
    );
    assert!(sm.index.gate(&target).is_none());
    let r = sm.run(70, Operation::SetGate { gate: gate("nope", None, GateMode::Pause, None), cancel_running: false });
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(_))), "{r:?}");
}

#[test]
fn collect_deletes_finished_tasks_with_their_keys_and_keeps_the_rest() {
    let mut sm = Sm::new();
    let o = sm.schedule(10, vec![new_task("a", 0, Some("k")), new_task("a", 0, Some("live"))]);
    let (done, live) = (o[0].task_id, o[1].task_id);
    let lease = sm.assign(11, done).unwrap();
    sm.complete(12, done, lease.fencing_token, Outcome::Success { result: b"r".to_vec() }).unwrap();
    assert_eq!(sm.index.queues("a").unwrap().finished(TaskState::Succeeded), 1);
    let r = sm.run(20, Operation::Collect { task_ids: vec![done, live, 999], request_ids: vec![] });
    assert_eq!(r, CommandResponse::Count(1), "only the finished task goes");
    let store = TaskStore::new(sm.db.clone());
    assert!(store.get(done).unwrap().is_none());
    assert!(store.payload(done).unwrap().is_none() && store.result(done).unwrap().is_none());
    assert!(store.get(live).unwrap().is_some());
    assert_eq!(sm.index.queues("a").unwrap().finished(TaskState::Succeeded), 0);
    assert_eq!(sm.applier.collected, 1);
    // The key names nothing now: it creates a new task.
    let again = sm.schedule(30, vec![new_task("a", 0, Some("k"))]);
    assert!(again[0].created && again[0].task_id != done);
    assert_eq!(LiveIndex::load(&sm.db).unwrap(), sm.index);
}

#[test]
fn collectable_finds_old_rows_per_callback_retention_and_request_ids_past_their_window() {
    let mut sm = Sm::new();
    let o = sm.schedule(1_000, vec![new_task("a", 0, None), new_task("b", 0, None)]);
    for (i, t) in o.iter().enumerate() {
        let lease = sm.assign(1_001 + i as u64, t.task_id).unwrap();
        sm.complete(2_000, t.task_id, lease.fencing_token, Outcome::Success { result: vec![] }).unwrap();
    }
    sm.run(
        2_000,
        Operation::ScheduleRequest {
            request_id: RequestId([7; 16]),
            tasks: vec![new_task("a", 99_999_999, None)],
            auto_register: false,
        },
    );
    let store = TaskStore::new(sm.db.clone());
    let callbacks = vec!["a".to_string(), "b".to_string()];
    // "a" keeps succeeded tasks 1 s, "b" 1 h.
    let retention =
        |cb: &str, s: TaskState| (s == TaskState::Succeeded).then_some(if cb == "a" { 1_000 } else { 3_600_000 });
    let c = store.collectable(&callbacks, &retention, 2_999, 100, &Default::default()).unwrap();
    assert!(c.is_empty(), "nothing is a second old yet: {c:?}");
    let c = store.collectable(&callbacks, &retention, 3_000, 100, &Default::default()).unwrap();
    assert_eq!(c.task_ids, vec![o[0].task_id]);
    // From that scan's cursor the same row is found again (rows share a
    // millisecond) until it is deleted; another callback's rows are not
    // skipped by it.
    assert_eq!(store.collectable(&callbacks, &retention, 3_000, 100, &c.cursors).unwrap().task_ids, c.task_ids);
    let later = store.collectable(&callbacks, &retention, 2_000 + 3_600_000, 100, &c.cursors).unwrap();
    assert_eq!(later.task_ids, vec![o[0].task_id, o[1].task_id]);
    let day = REQUEST_ID_WINDOW_MS;
    let c = store.collectable(&callbacks, &retention, 2_000 + day + 1, 100, &Default::default()).unwrap();
    assert_eq!(c.request_ids, vec![RequestId([7; 16])]);
    let status = store.retention_status(&callbacks, &retention, 3_000, 10).unwrap();
    assert_eq!((status.finished, status.backlog, status.oldest_finished_ms), (2, 1, Some(2_000)));
    // Apply never forgets a request id inside its window.
    let r = sm.run(3_000, Operation::Collect { task_ids: vec![], request_ids: vec![RequestId([7; 16])] });
    assert_eq!(r, CommandResponse::Count(0));
}

#[test]
fn an_earlier_build_s_data_gains_the_finished_index_and_is_collectable() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path()).unwrap();
    let sm = cf(&db, keys::CF_SM).unwrap();
    let format_1 = |v: &dyn erased::Ser| {
        let mut out = vec![crate::encoding::FORMAT_1];
        out.extend(v.bytes());
        out
    };
    let config = CallbackConfigV1 {
        name: "old".into(),
        max_attempts: 1,
        lease_ms: 30_000,
        timeout_ms: 60_000,
        concurrency: 0,
        backoff_initial_ms: 1_000,
        backoff_max_ms: 2_000,
    };
    let dead = TaskV1 {
        id: 1,
        callback: "old".into(),
        priority: 0,
        state: TaskState::Dead,
        run_at_ms: 0,
        created_at_ms: 5,
        attempts: 1,
        payload_size: 0,
        idempotency_key: None,
        created_index: 1,
        fencing_token: 2,
        worker: None,
        last_error: Some("boom".into()),
        result_size: None,
        cancel_requested: false,
        history: vec![Transition { state: TaskState::Dead, at_ms: 500, attempt: 1 }],
    };
    db.put_cf(sm, keys::callback("old"), format_1(&config)).unwrap();
    db.put_cf(sm, keys::task(1), format_1(&dead)).unwrap();
    db.put_cf(sm, keys::by_state(TaskState::Dead.code(), 1), []).unwrap();
    assert_eq!(layout::ensure(&db).unwrap(), 1, "one finished task indexed");
    assert_eq!(layout::ensure(&db).unwrap(), 0, "once");
    let index = LiveIndex::load(&db).unwrap();
    assert_eq!(index.queues("old").unwrap().finished(TaskState::Dead), 1, "dead counted from keys");
    assert_eq!(index.callback("old").unwrap().rate, None);
    let store = TaskStore::new(db.clone());
    let c = store.collectable(&["old".into()], &|_, _| Some(100), 600, 10, &Default::default()).unwrap();
    assert_eq!(c.task_ids, vec![1]);
}

/// bincode 1.3 bytes of a value, behind a trait object.
mod erased {
    pub trait Ser {
        fn bytes(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn bytes(&self) -> Vec<u8> {
            bincode1::serialize(self).unwrap()
        }
    }
}
