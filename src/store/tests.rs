//! Unit tests of the deterministic apply logic.

use super::*;

fn db() -> (tempfile::TempDir, Arc<DB>) {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path()).unwrap();
    (dir, db)
}

fn new_task(cb: &str, run_at_ms: u64, key: Option<&str>) -> NewTask {
    NewTask {
        callback: cb.into(),
        payload: b"p".to_vec(),
        priority: 3,
        run_at_ms,
        idempotency_key: key.map(String::from),
    }
}

fn schedule(stamp: u64, tasks: Vec<NewTask>) -> Command {
    Command { stamped_at_ms: stamp, operation: Operation::Schedule { tasks } }
}

/// Apply commands as one batch, the way the state machine does.
fn apply_all(db: &DB, applier: &mut Applier, cmds: &[(u64, Command)]) -> Vec<CommandResponse> {
    let mut batch = ApplyBatch::new(db);
    let out = cmds.iter().map(|(index, cmd)| applier.apply(&mut batch, *index, cmd).unwrap()).collect();
    applier.write_counters(&mut batch).unwrap();
    db.write(batch.into_write_batch()).unwrap();
    out
}

fn outcomes(r: &CommandResponse) -> Vec<ScheduleOutcome> {
    match r {
        CommandResponse::Scheduled(o) => o.clone(),
        other => panic!("expected Scheduled, got {other:?}"),
    }
}

#[test]
fn schedule_creates_rows_payloads_and_indexes() {
    let (_d, db) = db();
    let mut applier = Applier::load(&db).unwrap();
    let r =
        apply_all(&db, &mut applier, &[(7, schedule(1000, vec![new_task("a", 500, None), new_task("b", 5000, None)]))]);
    let o = outcomes(&r[0]);
    assert_eq!(o, vec![ScheduleOutcome { task_id: 1, created: true }, ScheduleOutcome { task_id: 2, created: true }]);
    let store = TaskStore::new(db.clone());
    let a = store.get(1).unwrap().unwrap();
    assert_eq!((a.callback.as_str(), a.state, a.created_index, a.created_at_ms), ("a", TaskState::Ready, 7, 1000));
    let b = store.get(2).unwrap().unwrap();
    assert_eq!(b.state, TaskState::Scheduled, "run-at after the stamp: waits");
    assert_eq!(store.payload(1).unwrap().as_deref(), Some(&b"p"[..]));
    let sm = cf(&db, keys::CF_SM).unwrap();
    assert!(db.get_cf(sm, keys::ready("a", 3, 500, 1)).unwrap().is_some());
    assert!(db.get_cf(sm, keys::due(5000, 2)).unwrap().is_some());
    assert_eq!(store.task_count().unwrap(), 2);
}

#[test]
fn idempotency_key_returns_the_first_task_across_and_within_batches() {
    let (_d, db) = db();
    let mut applier = Applier::load(&db).unwrap();
    let r = apply_all(
        &db,
        &mut applier,
        &[(1, schedule(10, vec![new_task("a", 0, Some("k")), new_task("a", 0, Some("k"))]))],
    );
    assert_eq!(
        outcomes(&r[0]),
        vec![ScheduleOutcome { task_id: 1, created: true }, ScheduleOutcome { task_id: 1, created: false }]
    );
    // A later batch, after a reload from disk (as after a restart).
    let mut applier = Applier::load(&db).unwrap();
    let r = apply_all(
        &db,
        &mut applier,
        &[(2, schedule(20, vec![new_task("a", 0, Some("k")), new_task("b", 0, Some("k"))]))],
    );
    assert_eq!(
        outcomes(&r[0]),
        vec![ScheduleOutcome { task_id: 1, created: false }, ScheduleOutcome { task_id: 2, created: true }],
        "same key under another callback is another task"
    );
    assert_eq!(TaskStore::new(db).task_count().unwrap(), 2);
}

#[test]
fn apply_is_deterministic_and_uses_only_stamps() {
    let cmds = vec![
        (1, schedule(100, vec![new_task("a", 0, None)])),
        (2, schedule(50, vec![new_task("a", 120, Some("x"))])),
        (3, schedule(300, vec![new_task("b", 0, Some("x"))])),
    ];
    let run = || {
        let (d, db) = db();
        let mut applier = Applier::load(&db).unwrap();
        let out = apply_all(&db, &mut applier, &cmds);
        let rows = TaskStore::new(db.clone()).scan_tasks().unwrap();
        drop(d);
        (out, rows, applier)
    };
    let (out1, rows1, a1) = run();
    let (out2, rows2, a2) = run();
    assert_eq!(out1, out2);
    assert_eq!(rows1, rows2);
    assert_eq!(a1, a2);
    // Replicated time never goes back: the stamp-50 command is applied at 100.
    assert_eq!(rows1[1].created_at_ms, 100);
    assert_eq!(rows1[1].state, TaskState::Scheduled);
    assert_eq!(a1.now_ms, 300);
}

#[test]
fn counters_survive_reload() {
    let (_d, db) = db();
    let mut applier = Applier::load(&db).unwrap();
    apply_all(&db, &mut applier, &[(1, schedule(10, vec![new_task("a", 0, None); 3]))]);
    let reloaded = Applier::load(&db).unwrap();
    assert_eq!(reloaded, applier);
    assert_eq!(reloaded.next_task_id, 4);
}
