//! Task dependencies through the apply path: waiting, release, cascading
//! cancels, redrive with dependents, and a property test over random DAGs.

use proptest::prelude::*;

use super::tests::{new_task, Sm};
use super::*;
use crate::domain::dependency::*;
use crate::domain::*;

fn graph(sm: &mut Sm, stamp: u64, items: Vec<(&str, Vec<Parent>, AfterPolicy)>) -> Vec<ScheduleOutcome> {
    let (tasks, after) =
        items.into_iter().map(|(cb, parents, policy)| (new_task(cb, stamp, None), After { parents, policy })).unzip();
    match sm.run(stamp, Operation::ScheduleGraph { request_id: None, tasks, after, auto_register: false }) {
        CommandResponse::Scheduled(o) => o,
        other => panic!("expected Scheduled, got {other:?}"),
    }
}

fn run_to(sm: &mut Sm, stamp: u64, id: u64, outcome: Outcome) -> TaskState {
    let leased = sm.assign(stamp, id).unwrap_or_else(|r| panic!("task {id} cannot start: {r}"));
    sm.complete(stamp, id, leased.fencing_token, outcome).unwrap()
}

fn success() -> Outcome {
    Outcome::Success { result: b"ok".to_vec() }
}

fn fatal() -> Outcome {
    Outcome::Fatal { error: "boom".into() }
}

fn store(sm: &Sm) -> TaskStore {
    TaskStore::new(sm.db.clone())
}

use AfterPolicy::{AllFinished, AllSucceeded};
use Parent::Item;

#[test]
fn a_child_waits_for_its_parents_and_runs_once_they_succeeded() {
    let mut sm = Sm::new();
    let o = graph(
        &mut sm,
        1000,
        vec![("a", vec![], AllSucceeded), ("a", vec![], AllSucceeded), ("b", vec![Item(0), Item(1)], AllSucceeded)],
    );
    assert_eq!(o.iter().map(|o| o.state).collect::<Vec<_>>(), [TaskState::Ready, TaskState::Ready, TaskState::Waiting]);
    assert!(sm.assign(1000, 3).is_err(), "a waiting task is not assignable");
    run_to(&mut sm, 1001, 1, success());
    assert_eq!(sm.task(3).state, TaskState::Waiting);
    run_to(&mut sm, 1002, 2, success());
    assert_eq!(sm.task(3).state, TaskState::Scheduled, "released in the entry of the last parent's success");
    let up = store(&sm).upstream(3).unwrap().unwrap();
    assert_eq!(up.ended, Counts { succeeded: 2, ..Counts::default() });
    assert_eq!(
        up.parents.iter().map(|p| (p.task_id, p.result.clone())).collect::<Vec<_>>(),
        [(1, Some(b"ok".to_vec())), (2, Some(b"ok".to_vec()))]
    );
    assert_eq!(store(&sm).children(1, 10).unwrap(), [3]);
    assert_eq!(store(&sm).parents(3).unwrap(), [1, 2]);
}

#[test]
fn an_upstream_failure_cancels_exactly_its_descendants() {
    let mut sm = Sm::new();
    // 1 -> 2 -> 4, 1 -> 3 -> 4, 5 -> 6 (independent), 3 -> 7 (all-finished).
    let o = graph(
        &mut sm,
        1000,
        vec![
            ("a", vec![], AllSucceeded),
            ("a", vec![Item(0)], AllSucceeded),
            ("a", vec![Item(0)], AllSucceeded),
            ("a", vec![Item(1), Item(2)], AllSucceeded),
            ("a", vec![], AllSucceeded),
            ("a", vec![Item(4)], AllSucceeded),
            ("a", vec![Item(2)], AllFinished),
        ],
    );
    assert_eq!(o.len(), 7);
    assert_eq!(run_to(&mut sm, 1001, 1, fatal()), TaskState::Failed);
    for id in [2, 3, 4] {
        let t = sm.task(id);
        assert_eq!(t.state, TaskState::Cancelled, "task {id}");
        assert!(t.last_error.as_deref().unwrap_or("").starts_with("upstream task"), "{:?}", t.last_error);
    }
    assert_eq!(sm.task(2).last_error.as_deref(), Some("upstream task 1 failed: failed"));
    assert_eq!(sm.task(5).state, TaskState::Scheduled);
    assert_eq!(sm.task(6).state, TaskState::Waiting, "not a descendant of 1");
    // 7 is all-finished: its parent 3 was cancelled, so it runs.
    assert_eq!(sm.task(7).state, TaskState::Scheduled);
    assert_eq!(store(&sm).deps(7).unwrap().unwrap().ended.cancelled, 1);
}

#[test]
fn cancelling_a_waiting_task_cancels_its_waiting_descendants() {
    let mut sm = Sm::new();
    graph(
        &mut sm,
        1000,
        vec![("a", vec![], AllSucceeded), ("a", vec![Item(0)], AllSucceeded), ("a", vec![Item(1)], AllSucceeded)],
    );
    assert!(matches!(
        sm.run(1001, Operation::Cancel { task_id: 2 }),
        CommandResponse::CancelRequested { state: TaskState::Cancelled }
    ));
    assert_eq!(sm.task(3).state, TaskState::Cancelled);
    assert_eq!(sm.task(3).last_error.as_deref(), Some("upstream task 2 failed: cancelled"));
    assert_eq!(sm.task(1).state, TaskState::Scheduled, "parents are not touched");
}

#[test]
fn a_child_of_a_task_that_already_ended_is_decided_on_arrival() {
    let mut sm = Sm::new();
    sm.schedule(1000, vec![new_task("a", 1000, None), new_task("a", 1000, None)]);
    run_to(&mut sm, 1001, 1, success());
    run_to(&mut sm, 1002, 2, fatal());
    let o = graph(
        &mut sm,
        1003,
        vec![
            ("b", vec![Parent::Task(1)], AllSucceeded),
            ("b", vec![Parent::Task(1), Parent::Task(2)], AllSucceeded),
            ("b", vec![Parent::Task(1), Parent::Task(2)], AllFinished),
        ],
    );
    assert_eq!(
        o.iter().map(|o| o.state).collect::<Vec<_>>(),
        [TaskState::Ready, TaskState::Cancelled, TaskState::Ready]
    );
    assert_eq!(sm.task(4).last_error.as_deref(), Some("upstream task 2 failed: failed"));
}

#[test]
fn missing_and_forward_parents_are_refused_and_nothing_is_created() {
    let mut sm = Sm::new();
    let r = sm.run(
        1000,
        Operation::ScheduleGraph {
            request_id: None,
            tasks: vec![new_task("a", 1000, None), new_task("a", 1000, None)],
            after: vec![After::default(), After { parents: vec![Parent::Task(99)], policy: AllSucceeded }],
            auto_register: false,
        },
    );
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(ref m)) if m.contains("99")), "{r:?}");
    let r = sm.run(
        1000,
        Operation::ScheduleGraph {
            request_id: None,
            tasks: vec![new_task("a", 1000, None)],
            after: vec![After { parents: vec![Item(0)], policy: AllSucceeded }],
            auto_register: false,
        },
    );
    assert!(matches!(r, CommandResponse::Rejected(Rejection::InvalidArgument(_))), "{r:?}");
    assert_eq!(sm.applier.task_count, 0);
}

/// 1 (callback "a", 3 attempts) -> 2 -> 3; 4 (fails fatally); 5 after 4
/// and 1. Task 4 fails, then 1 dies: 2, 3 and 5 are cancelled. Returns the
/// state machine and its time.
fn dead_parent_with_dependents() -> (Sm, u64) {
    let mut sm = Sm::new();
    graph(
        &mut sm,
        1000,
        vec![
            ("a", vec![], AllSucceeded),
            ("b", vec![Item(0)], AllSucceeded),
            ("b", vec![Item(1)], AllSucceeded),
            ("b", vec![], AllSucceeded),
            ("b", vec![Item(3), Item(0)], AllSucceeded),
        ],
    );
    run_to(&mut sm, 1001, 4, fatal());
    let mut now = 2000;
    while sm.task(1).state != TaskState::Dead {
        now += 100_000;
        run_to(&mut sm, now, 1, Outcome::Retry { error: "x".into(), retry_after_ms: None });
    }
    assert_eq!([2, 3, 5].map(|id| sm.task(id).state), [TaskState::Cancelled; 3]);
    assert_eq!(store(&sm).deps(5).unwrap().unwrap().cancelled_by, Some(4), "4 failed first");
    (sm, now)
}

#[test]
fn a_plain_redrive_leaves_cancelled_dependents_alone() {
    let (mut sm, now) = dead_parent_with_dependents();
    assert!(matches!(sm.run(now, Operation::Redrive { target: Target::Task(1) }), CommandResponse::Count(1)));
    assert_eq!(sm.task(1).state, TaskState::Scheduled);
    run_to(&mut sm, now + 1, 1, success());
    assert_eq!([2, 3, 5].map(|id| sm.task(id).state), [TaskState::Cancelled; 3]);
}

#[test]
fn redrive_with_dependents_rearms_what_the_failure_cancelled() {
    let (mut sm, now) = dead_parent_with_dependents();
    let r = sm.run(now, Operation::RedriveWithDependents { target: Target::Task(1) });
    assert!(matches!(r, CommandResponse::Count(1)));
    assert_eq!(sm.task(1).state, TaskState::Scheduled);
    assert_eq!([2, 3].map(|id| sm.task(id).state), [TaskState::Waiting; 2], "re-armed down the chain");
    assert_eq!(sm.task(2).last_error, None);
    assert_eq!(sm.task(5).state, TaskState::Cancelled, "its other parent (4) failed: it stays cancelled");
    let d2 = store(&sm).deps(2).unwrap().unwrap();
    assert_eq!((d2.open, d2.ended.dead, d2.cancelled_by), (1, 0, None));
    run_to(&mut sm, now + 1, 1, success());
    assert_eq!(sm.task(2).state, TaskState::Scheduled);
    run_to(&mut sm, now + 2, 2, success());
    assert_eq!(sm.task(3).state, TaskState::Scheduled);
}

#[test]
fn collecting_a_task_removes_its_dependency_rows() {
    let mut sm = Sm::new();
    graph(&mut sm, 1000, vec![("a", vec![], AllSucceeded), ("a", vec![Item(0)], AllSucceeded)]);
    run_to(&mut sm, 1001, 1, success());
    run_to(&mut sm, 1002, 2, success());
    sm.run(1003, Operation::Collect { task_ids: vec![1, 2], request_ids: vec![] });
    let db = &sm.db;
    let sm_cf = cf(db, keys::CF_SM).unwrap();
    let left: Vec<Vec<u8>> = db
        .iterator_cf(sm_cf, rocksdb::IteratorMode::Start)
        .map(|i| i.unwrap().0.to_vec())
        .filter(|k| keys::parse_dependency(k).is_some())
        .collect();
    assert!(left.is_empty(), "dependency rows left: {left:02x?}");
}

/// One random DAG: per task, its parents (earlier tasks) and policy.
fn dag() -> impl Strategy<Value = Vec<(Vec<u32>, bool)>> {
    (1usize..25).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                let parents = if i == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    prop::collection::vec(0..i as u32, 0..4.min(i + 1)).boxed()
                };
                (parents, any::<bool>())
            })
            .collect::<Vec<_>>()
    })
}

/// The task ids of `t`'s parents and its policy, from the store.
fn parents_of(sm: &Sm, id: u64) -> (Vec<u64>, AfterPolicy) {
    let s = store(sm);
    (s.parents(id).unwrap(), s.deps(id).unwrap().map_or(AllSucceeded, |d| d.policy))
}

/// Whether `id`'s policy holds now (every parent final, and succeeded under
/// all-succeeded).
fn policy_holds(sm: &Sm, id: u64) -> bool {
    let (parents, policy) = parents_of(sm, id);
    parents.iter().all(|p| {
        let s = sm.task(*p).state;
        s.is_terminal() && (policy == AllFinished || s == TaskState::Succeeded)
    })
}

fn check_invariants(sm: &Sm, n: u64) -> Result<(), TestCaseError> {
    for id in 1..=n {
        let t = sm.task(id);
        let (parents, policy) = parents_of(sm, id);
        let states: Vec<TaskState> = parents.iter().map(|p| sm.task(*p).state).collect();
        let all_final = states.iter().all(|s| s.is_terminal());
        let failed = states.iter().any(|s| s.is_terminal() && *s != TaskState::Succeeded);
        match t.state {
            TaskState::Waiting => {
                prop_assert!(!all_final, "task {id} waits though its parents {parents:?} all ended: {states:?}");
                prop_assert!(!(policy == AllSucceeded && failed), "task {id} waits though a parent failed: {states:?}");
            }
            TaskState::Cancelled if t.last_error.as_deref().is_some_and(|e| e.starts_with("upstream")) => {
                prop_assert!(policy == AllSucceeded && failed, "task {id} cancelled by upstream: {states:?}");
            }
            _ if t.attempts > 0 || t.state.is_pending() => {
                prop_assert!(policy_holds(sm, id), "task {id} is {:?} before its policy held: {states:?}", t.state);
            }
            _ => {}
        }
        // The counts agree with the parents' states.
        if let Some(d) = store(sm).deps(id).unwrap() {
            let count = |s: TaskState| states.iter().filter(|x| **x == s).count() as u32;
            prop_assert_eq!(d.open, states.iter().filter(|s| !s.is_terminal()).count() as u32);
            prop_assert_eq!(
                (d.ended.succeeded, d.ended.failed, d.ended.dead, d.ended.cancelled),
                (
                    count(TaskState::Succeeded),
                    count(TaskState::Failed),
                    count(TaskState::Dead),
                    count(TaskState::Cancelled)
                )
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A task starts exactly when its policy holds, never before; nothing
    /// stays waiting once its parents are final; the counts are exact.
    #[test]
    fn random_dags_run_in_dependency_order(
        dag in dag(),
        steps in prop::collection::vec((any::<prop::sample::Index>(), 0u8..10), 1..200),
    ) {
        let mut sm = Sm::new();
        let n = dag.len() as u64;
        let items = dag
            .iter()
            .map(|(parents, all_finished)| {
                let policy = if *all_finished { AllFinished } else { AllSucceeded };
                ("a", parents.iter().map(|p| Item(*p)).collect(), policy)
            })
            .collect();
        graph(&mut sm, 1000, items);
        check_invariants(&sm, n)?;
        let mut now = 1000;
        for (pick, action) in steps {
            now += 10;
            let pending: Vec<u64> = (1..=n).filter(|id| sm.task(*id).state.is_pending()).collect();
            if pending.is_empty() {
                break;
            }
            let id = pending[pick.index(pending.len())];
            if action == 0 {
                sm.run(now, Operation::Cancel { task_id: id });
            } else {
                prop_assert!(policy_holds(&sm, id), "task {} is pending before its policy held", id);
                let outcome = match action {
                    1 => fatal(),
                    2 => Outcome::Retry { error: "r".into(), retry_after_ms: None },
                    _ => success(),
                };
                // Retries wait out their backoff: jump past it.
                now += 100_000;
                run_to(&mut sm, now, id, outcome);
            }
            check_invariants(&sm, n)?;
        }
        // Finish everything: nothing is left waiting.
        loop {
            now += 100_000;
            let pending: Vec<u64> = (1..=n).filter(|id| sm.task(*id).state.is_pending()).collect();
            if pending.is_empty() {
                break;
            }
            for id in pending {
                run_to(&mut sm, now, id, success());
            }
            check_invariants(&sm, n)?;
        }
        for id in 1..=n {
            prop_assert!(sm.task(id).state.is_terminal(), "task {} ended {:?}", id, sm.task(id).state);
        }
    }
}
