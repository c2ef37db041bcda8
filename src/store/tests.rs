//! Unit tests of the deterministic apply logic, through the same path the
//! state machine uses (apply batch -> write -> index ops).

use super::index::LiveIndex;
use super::*;
use crate::domain::*;

pub(super) struct Sm {
    _dir: tempfile::TempDir,
    pub(super) db: Arc<DB>,
    pub(super) applier: Applier,
    pub(super) index: LiveIndex,
    pub(super) next_index: u64,
}

impl Sm {
    pub(super) fn new() -> Sm {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let mut sm = Sm {
            applier: Applier::load(&db).unwrap(),
            index: LiveIndex::load(&db).unwrap(),
            db,
            _dir: dir,
            next_index: 1,
        };
        sm.run(
            0,
            Operation::RegisterCallback(CallbackConfig { max_attempts: 3, ..CallbackConfig::with_defaults("a") }),
        );
        sm.run(0, Operation::RegisterCallback(CallbackConfig::with_defaults("b")));
        sm
    }

    /// Apply commands as one batch at consecutive log indexes.
    pub(super) fn batch(&mut self, cmds: Vec<Command>) -> Vec<CommandResponse> {
        let mut b = ApplyBatch::new(&self.db);
        let mut out = Vec::new();
        for cmd in &cmds {
            out.push(self.applier.apply(&mut b, self.next_index, cmd).unwrap());
            self.next_index += 1;
        }
        self.applier.write_counters(&mut b).unwrap();
        let (wb, ops, _) = b.finish().unwrap();
        self.db.write(wb).unwrap();
        for op in ops {
            self.index.apply(op);
        }
        out
    }

    pub(super) fn run(&mut self, stamp: u64, operation: Operation) -> CommandResponse {
        self.batch(vec![Command { stamped_at_ms: stamp, operation }]).remove(0)
    }

    pub(super) fn schedule(&mut self, stamp: u64, tasks: Vec<NewTask>) -> Vec<ScheduleOutcome> {
        match self.run(stamp, Operation::Schedule { tasks, auto_register: false }) {
            CommandResponse::Scheduled(o) => o,
            other => panic!("expected Scheduled, got {other:?}"),
        }
    }

    pub(super) fn task(&self, id: u64) -> Task {
        TaskStore::new(self.db.clone()).get(id).unwrap().unwrap()
    }

    pub(super) fn assign(&mut self, stamp: u64, id: u64) -> Result<Leased, Rejection> {
        let attempts_seen = self.task(id).attempts;
        let a = Assignment { task_id: id, worker: "w1".into(), attempts_seen };
        match self.run(stamp, Operation::Assign { assignments: vec![a] }) {
            CommandResponse::Assigned(mut r) => r.remove(0),
            other => panic!("expected Assigned, got {other:?}"),
        }
    }

    pub(super) fn complete(
        &mut self,
        stamp: u64,
        id: u64,
        token: u64,
        outcome: Outcome,
    ) -> Result<TaskState, Rejection> {
        let c = Completion { task_id: id, fencing_token: token, outcome };
        match self.run(stamp, Operation::Complete { completions: vec![c] }) {
            CommandResponse::Transitioned(mut r) => r.remove(0),
            other => panic!("expected Transitioned, got {other:?}"),
        }
    }
}

pub(super) fn new_task(cb: &str, run_at_ms: u64, key: Option<&str>) -> NewTask {
    NewTask {
        callback: cb.into(),
        payload: b"p".to_vec(),
        priority: 3,
        run_at_ms,
        idempotency_key: key.map(String::from),
        collection: None,
    }
}

pub(super) fn retry(msg: &str) -> Outcome {
    Outcome::Retry { error: msg.into(), retry_after_ms: None }
}

#[test]
fn schedule_creates_rows_payloads_and_queue_entries() {
    let mut sm = Sm::new();
    let o = sm.schedule(1000, vec![new_task("a", 500, None), new_task("b", 5000, None)]);
    assert_eq!(
        o,
        vec![
            ScheduleOutcome { task_id: 1, created: true, state: TaskState::Ready },
            ScheduleOutcome { task_id: 2, created: true, state: TaskState::Scheduled }
        ]
    );
    let a = sm.task(1);
    assert_eq!((a.callback.as_str(), a.state, a.created_at_ms), ("a", TaskState::Scheduled, 1000));
    assert_eq!(a.display_state(1000), TaskState::Ready, "due: shown as ready");
    assert_eq!(sm.task(2).display_state(1000), TaskState::Scheduled, "not yet due");
    let store = TaskStore::new(sm.db.clone());
    assert_eq!(store.payload(1).unwrap().as_deref(), Some(&b"p"[..]));
    assert_eq!(store.task_count().unwrap(), 2);
    let sm_cf = cf(&sm.db, keys::CF_SM).unwrap();
    assert!(sm.db.get_cf(sm_cf, keys::pending("a", None, 3, 500, 1)).unwrap().is_some());
    assert_eq!(sm.index.depths("a", 1000)[3], (1, 0));
    assert_eq!(sm.index.depths("b", 1000)[3], (0, 1));
    // The index rebuilt from disk matches the one kept by apply.
    let reloaded = LiveIndex::load(&sm.db).unwrap();
    assert_eq!(reloaded.depths("a", 1000), sm.index.depths("a", 1000));
}

#[test]
fn unknown_callbacks_are_refused_unless_auto_registered() {
    let mut sm = Sm::new();
    let r = sm.run(
        1,
        Operation::Schedule { tasks: vec![new_task("a", 0, None), new_task("nope", 0, None)], auto_register: false },
    );
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(m)) if m.contains("nope")));
    assert_eq!(TaskStore::new(sm.db.clone()).task_count().unwrap(), 0, "all or nothing");
    let r = sm.run(1, Operation::Schedule { tasks: vec![new_task("fresh", 0, None)], auto_register: true });
    assert!(matches!(r, CommandResponse::Scheduled(_)));
    assert_eq!(sm.index.callback("fresh"), Some(&CallbackConfig::with_defaults("fresh")));
}

#[test]
fn idempotency_key_returns_the_first_task_across_and_within_batches() {
    let mut sm = Sm::new();
    let o = sm.schedule(10, vec![new_task("a", 0, Some("k")), new_task("a", 0, Some("k"))]);
    assert_eq!(
        o,
        vec![
            ScheduleOutcome { task_id: 1, created: true, state: TaskState::Ready },
            ScheduleOutcome { task_id: 1, created: false, state: TaskState::Ready }
        ]
    );
    sm.applier = Applier::load(&sm.db).unwrap();
    let o = sm.schedule(20, vec![new_task("a", 0, Some("k")), new_task("b", 0, Some("k"))]);
    assert_eq!(
        o,
        vec![
            ScheduleOutcome { task_id: 1, created: false, state: TaskState::Ready },
            ScheduleOutcome { task_id: 2, created: true, state: TaskState::Ready }
        ],
        "same key under another callback is another task"
    );
}

#[test]
fn apply_is_deterministic_and_uses_only_stamps() {
    let cmds = vec![
        Command {
            stamped_at_ms: 100,
            operation: Operation::Schedule { tasks: vec![new_task("a", 0, None)], auto_register: false },
        },
        Command {
            stamped_at_ms: 50,
            operation: Operation::Schedule { tasks: vec![new_task("a", 120, Some("x"))], auto_register: false },
        },
        Command {
            stamped_at_ms: 300,
            operation: Operation::Assign {
                assignments: vec![Assignment { task_id: 1, worker: "w".into(), attempts_seen: 0 }],
            },
        },
        Command {
            stamped_at_ms: 310,
            operation: Operation::Complete {
                completions: vec![Completion { task_id: 1, fencing_token: 5, outcome: retry("x") }],
            },
        },
    ];
    let run = || {
        let mut sm = Sm::new();
        let out = sm.batch(cmds.clone());
        let rows = TaskStore::new(sm.db.clone()).scan_tasks().unwrap();
        (out, rows, sm.applier.clone())
    };
    let (out1, rows1, a1) = run();
    let (out2, rows2, a2) = run();
    assert_eq!(out1, out2);
    assert_eq!(rows1, rows2, "same rows, same backoff jitter");
    assert_eq!(a1, a2);
    assert_eq!(rows1[1].created_at_ms, 100, "replicated time never goes back");
    assert_eq!(rows1[0].state, TaskState::RetryWait);
    assert_eq!(a1.now_ms, 310);
}

#[test]
fn the_lifecycle_is_a_compare_and_set_on_state_and_token() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, None)]);
    let lease = sm.assign(1000, 1).unwrap();
    assert_eq!(lease.attempt, 1);
    assert_eq!(sm.task(1).state, TaskState::Running);
    assert_eq!(sm.index.running_task(1).unwrap().fencing_token, lease.fencing_token);
    // A second assignment of a running task is refused.
    assert!(matches!(sm.assign(1000, 1), Err(Rejection::FailedPrecondition(_))));
    // A wrong token changes nothing.
    let stale = sm.complete(1001, 1, lease.fencing_token - 1, Outcome::Success { result: b"x".to_vec() });
    assert!(matches!(stale, Err(Rejection::FailedPrecondition(m)) if m.contains("stale fencing token")));
    assert_eq!(sm.task(1).state, TaskState::Running);
    // The right one completes it, once.
    assert_eq!(
        sm.complete(1002, 1, lease.fencing_token, Outcome::Success { result: b"ok".to_vec() }),
        Ok(TaskState::Succeeded)
    );
    // A repeat (a lost ack) is accepted and changes nothing.
    assert_eq!(
        sm.complete(1003, 1, lease.fencing_token, Outcome::Success { result: b"again".to_vec() }),
        Ok(TaskState::Succeeded)
    );
    assert_eq!(TaskStore::new(sm.db.clone()).result(1).unwrap().as_deref(), Some(&b"ok"[..]));
    assert!(sm.index.running_task(1).is_none());
    let t = sm.task(1);
    let states: Vec<TaskState> = t.history.iter().map(|h| h.state).collect();
    assert_eq!(states, vec![TaskState::Scheduled, TaskState::Running, TaskState::Succeeded]);
}

#[test]
fn retries_back_off_then_go_dead_and_redrive_resets_attempts() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, None)]);
    let mut now = 1000;
    for attempt in 1..=3u32 {
        let lease = sm.assign(now, 1).unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        assert_eq!(lease.attempt, attempt);
        let state = sm.complete(now, 1, lease.fencing_token, retry("boom")).unwrap();
        let t = sm.task(1);
        if attempt < 3 {
            assert_eq!(state, TaskState::RetryWait);
            let delay = t.run_at_ms - now;
            let base = 1000u64 << (attempt - 1);
            assert!((base / 2..=base).contains(&delay), "attempt {attempt}: delay {delay}");
            // Not due yet: cannot be assigned.
            assert!(sm.assign(now, 1).is_err());
            now = t.run_at_ms;
        } else {
            assert_eq!(state, TaskState::Dead, "max attempts 3");
            assert_eq!(t.last_error.as_deref(), Some("boom"));
        }
    }
    assert_eq!(sm.run(now, Operation::Redrive { target: Target::Callback("a".into()) }), CommandResponse::Count(1));
    let t = sm.task(1);
    assert_eq!((t.state, t.attempts), (TaskState::Scheduled, 0));
    assert_eq!(sm.assign(now, 1).unwrap().attempt, 1);
}

#[test]
fn expiry_counts_an_attempt_and_stale_expiry_is_ignored() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, None)]);
    let l1 = sm.assign(1000, 1).unwrap();
    let expire = |token| Operation::Expire {
        leases: vec![Expiry { task_id: 1, fencing_token: token, reason: "lease expired".into() }],
    };
    assert!(
        matches!(sm.run(2000, expire(l1.fencing_token)), CommandResponse::Transitioned(r) if r[0] == Ok(TaskState::RetryWait))
    );
    let t = sm.task(1);
    assert_eq!((t.attempts, t.last_error.as_deref()), (1, Some("lease expired")));
    let l2 = sm.assign(t.run_at_ms, 1).unwrap();
    assert!(l2.fencing_token > l1.fencing_token, "tokens strictly increase");
    // The old lease's expiry or completion must not touch the new run.
    assert!(matches!(sm.run(9000, expire(l1.fencing_token)), CommandResponse::Transitioned(r) if r[0].is_err()));
    assert!(sm.complete(9000, 1, l1.fencing_token, Outcome::Success { result: vec![] }).is_err());
    assert_eq!(sm.task(1).state, TaskState::Running);
}

#[test]
fn cancel_is_immediate_when_pending_and_deferred_when_running() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, None), new_task("a", 0, None)]);
    assert_eq!(
        sm.run(1000, Operation::Cancel { task_id: 1 }),
        CommandResponse::CancelRequested { state: TaskState::Cancelled }
    );
    assert_eq!(sm.index.depths("a", 1000)[3], (1, 0), "left the queue");
    let lease = sm.assign(1000, 2).unwrap();
    assert_eq!(
        sm.run(1000, Operation::Cancel { task_id: 2 }),
        CommandResponse::CancelRequested { state: TaskState::Running }
    );
    assert!(sm.index.running_task(2).unwrap().cancel_requested);
    // Whatever the worker reports, a cancel-requested task ends cancelled.
    assert_eq!(
        sm.complete(1001, 2, lease.fencing_token, Outcome::Success { result: vec![] }),
        Ok(TaskState::Cancelled)
    );
    assert_eq!(
        sm.run(1002, Operation::Cancel { task_id: 2 }),
        CommandResponse::CancelRequested { state: TaskState::Cancelled },
        "cancelling a cancelled task again is not an error"
    );
    sm.schedule(1003, vec![new_task("a", 0, None)]);
    let l3 = sm.assign(1003, 3).unwrap();
    sm.complete(1004, 3, l3.fencing_token, Outcome::Success { result: vec![] }).unwrap();
    assert!(matches!(
        sm.run(1005, Operation::Cancel { task_id: 3 }),
        CommandResponse::Rejected(Rejection::FailedPrecondition(_))
    ));
    assert!(matches!(
        sm.run(1002, Operation::Cancel { task_id: 99 }),
        CommandResponse::Rejected(Rejection::NotFound(_))
    ));
}

#[test]
fn fatal_failures_do_not_retry_and_purge_deletes_only_dead_tasks() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, Some("k1")), new_task("a", 0, None)]);
    let l = sm.assign(1000, 1).unwrap();
    assert_eq!(
        sm.complete(1000, 1, l.fencing_token, Outcome::Fatal { error: "bad input".into() }),
        Ok(TaskState::Failed)
    );
    assert_eq!(sm.run(1000, Operation::Purge { target: Target::Callback("a".into()) }), CommandResponse::Count(0));
    // Make task 2 dead, then purge it.
    for _ in 0..3 {
        let t = sm.task(2);
        let l = sm.assign(t.run_at_ms.max(1000), 2).unwrap();
        sm.complete(t.run_at_ms.max(1000), 2, l.fencing_token, retry("x")).unwrap();
    }
    assert_eq!(sm.task(2).state, TaskState::Dead);
    assert_eq!(sm.run(1000, Operation::Purge { target: Target::Task(2) }), CommandResponse::Count(1));
    assert!(TaskStore::new(sm.db.clone()).get(2).unwrap().is_none());
    assert_eq!(TaskStore::new(sm.db.clone()).task_count().unwrap(), 1);
}

#[test]
fn counters_survive_reload() {
    let mut sm = Sm::new();
    sm.schedule(10, vec![new_task("a", 0, None); 3]);
    let reloaded = Applier::load(&sm.db).unwrap();
    assert_eq!(reloaded, sm.applier);
    assert_eq!(reloaded.next_task_id, 4);
}

#[test]
fn a_repeated_completion_under_the_same_token_is_accepted_and_changes_nothing() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, None), new_task("a", 0, None)]);
    let l = sm.assign(1000, 1).unwrap();
    let ok = Outcome::Success { result: b"r".to_vec() };
    assert_eq!(sm.complete(1001, 1, l.fencing_token, ok.clone()), Ok(TaskState::Succeeded));
    let before = sm.task(1);
    // The ack was lost; the worker sends it again.
    assert_eq!(sm.complete(1002, 1, l.fencing_token, ok), Ok(TaskState::Succeeded), "a replay is accepted");
    assert_eq!(sm.task(1), before, "and changes nothing");
    // A different outcome under that token is still stale.
    let fatal = Outcome::Fatal { error: "x".into() };
    assert!(matches!(sm.complete(1003, 1, l.fencing_token, fatal), Err(Rejection::FailedPrecondition(_))));
    // A retry outcome repeats a retry-wait.
    let l2 = sm.assign(1000, 2).unwrap();
    assert_eq!(sm.complete(1004, 2, l2.fencing_token, retry("a")), Ok(TaskState::RetryWait));
    assert_eq!(sm.complete(1005, 2, l2.fencing_token, retry("a")), Ok(TaskState::RetryWait));
    // An older token is stale whatever the outcome.
    assert!(sm.complete(1006, 2, l2.fencing_token - 1, retry("a")).is_err());
}

#[test]
fn a_released_assignment_goes_back_to_pending_without_counting_an_attempt() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 0, None)]);
    let l = sm.assign(1000, 1).unwrap();
    assert_eq!(sm.task(1).attempts, 1);
    let release = |token| Operation::Release {
        leases: vec![Expiry { task_id: 1, fencing_token: token, reason: "undelivered".into() }],
    };
    assert_eq!(sm.run(1001, release(l.fencing_token)), CommandResponse::Transitioned(vec![Ok(TaskState::Scheduled)]));
    let t = sm.task(1);
    assert_eq!((t.state, t.attempts), (TaskState::Scheduled, 0));
    assert!(sm.index.running_task(1).is_none());
    assert_eq!(sm.index.depths("a", 1001)[3], (1, 0), "queued again");
    // A stale release changes nothing.
    let l2 = sm.assign(1002, 1).unwrap();
    assert!(matches!(sm.run(1003, release(l.fencing_token)), CommandResponse::Transitioned(r) if r[0].is_err()));
    assert_eq!(sm.task(1).fencing_token, l2.fencing_token);
    assert_eq!(sm.task(1).attempts, 1);
}

#[test]
fn cancelling_a_cancelled_task_again_is_not_an_error() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 5000, None)]);
    let cancelled = CommandResponse::CancelRequested { state: TaskState::Cancelled };
    assert_eq!(sm.run(1001, Operation::Cancel { task_id: 1 }), cancelled);
    assert_eq!(sm.run(1002, Operation::Cancel { task_id: 1 }), cancelled, "a retried cancel");
}
