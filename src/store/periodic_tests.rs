//! Unit tests of periodic schedules in apply: the slot compare-and-set,
//! overlap policies, buffered slots released by a run's final transition,
//! pause-on-failure, and resume without catch-up.

use super::tests::Sm;
use super::*;
use crate::domain::schedule::*;
use crate::domain::*;

fn every_second(name: &str, overlap: Overlap) -> Schedule {
    Schedule::new(
        name.into(),
        ScheduleSpec {
            cadence: Cadence::Every { period_ms: 1_000 },
            start_ms: None,
            end_ms: None,
            jitter_ms: 0,
            dst_repeat: DstRepeat::Once,
            dst_gap: DstGap::Shift,
        },
        TaskTemplate { callback: "a".into(), payload: b"p".to_vec(), priority: 1, collection: None },
        SchedulePolicy { overlap, catchup: Catchup::All, catchup_window_ms: 60_000, pause_on_failure: true },
    )
}

fn slot(at_ms: u64) -> Slot {
    Slot { at_ms, id: at_ms.to_string() }
}

fn fire(sm: &mut Sm, stamp: u64, name: &str, slots: Vec<Slot>) -> Vec<u64> {
    match sm.run(stamp, Operation::FireSchedule { name: name.into(), slots, skip_to: None, skipped: 0 }) {
        CommandResponse::Fired { task_ids, .. } => task_ids,
        other => panic!("expected Fired, got {other:?}"),
    }
}

fn create(sm: &mut Sm, s: Schedule) {
    assert_eq!(
        sm.run(1, Operation::PutSchedule { schedule: Box::new(s), create: true }),
        CommandResponse::ScheduleSaved { created: true }
    );
}

fn finish(sm: &mut Sm, stamp: u64, id: u64, outcome: Outcome) {
    let lease = sm.assign(stamp, id).unwrap();
    sm.complete(stamp, id, lease.fencing_token, outcome).unwrap();
}

#[test]
fn a_slot_fires_once_and_a_stale_fire_is_a_no_op() {
    let mut sm = Sm::new();
    create(&mut sm, every_second("s", Overlap::Allow));
    let first = fire(&mut sm, 1_000, "s", vec![slot(1_000)]);
    assert_eq!(first.len(), 1);
    let t = sm.task(first[0]);
    assert_eq!((t.schedule.as_deref(), t.idempotency_key.as_deref()), (Some("s"), Some("schedule:s:1000")));
    // The same slot again (a new leader that did not see it), and an older one.
    assert!(fire(&mut sm, 1_100, "s", vec![slot(1_000)]).is_empty());
    assert!(fire(&mut sm, 1_100, "s", vec![slot(500)]).is_empty());
    // Missed slots, oldest first, in one entry.
    assert_eq!(fire(&mut sm, 4_000, "s", vec![slot(2_000), slot(3_000), slot(4_000)]).len(), 3);
    let s = sm.index.schedule("s").unwrap();
    assert_eq!((s.fired, s.last_slot.as_ref().map(|l| l.at_ms)), (4, Some(4_000)));
    assert_eq!(s.runs.len(), 4);
    // A duplicate fire proposed by two leaders in one batch still fires once.
    let r = sm.batch(vec![
        Command {
            stamped_at_ms: 5_000,
            operation: Operation::FireSchedule {
                name: "s".into(),
                slots: vec![slot(5_000)],
                skip_to: None,
                skipped: 0,
            },
        },
        Command {
            stamped_at_ms: 5_000,
            operation: Operation::FireSchedule {
                name: "s".into(),
                slots: vec![slot(5_000)],
                skip_to: None,
                skipped: 0,
            },
        },
    ]);
    assert_eq!(r[0], CommandResponse::Fired { task_ids: vec![first[0] + 4], skipped: 0 });
    assert_eq!(r[1], CommandResponse::Fired { task_ids: vec![], skipped: 0 });
}

#[test]
fn overlap_policies_decide_in_apply_and_a_final_transition_releases_a_buffered_slot() {
    let mut sm = Sm::new();
    for (name, overlap) in [
        ("skip", Overlap::Skip),
        ("one", Overlap::BufferOne),
        ("all", Overlap::BufferAll),
        ("cancel", Overlap::CancelOther),
    ] {
        create(&mut sm, every_second(name, overlap));
    }
    let run = |sm: &mut Sm, name: &str, at: u64| fire(sm, at, name, vec![slot(at)]);
    // skip: while the first run is active, later slots are skipped.
    let t1 = run(&mut sm, "skip", 1_000)[0];
    assert!(run(&mut sm, "skip", 2_000).is_empty());
    assert_eq!(sm.index.schedule("skip").unwrap().skipped, 1);
    // buffer-one: the newest waiting slot runs when the active run ends.
    let b1 = run(&mut sm, "one", 1_000)[0];
    run(&mut sm, "one", 2_000);
    run(&mut sm, "one", 3_000);
    let s = sm.index.schedule("one").unwrap().clone();
    assert_eq!((s.buffered.len(), s.skipped), (1, 1));
    finish(&mut sm, 3_500, b1, Outcome::Success { result: vec![] });
    let s = sm.index.schedule("one").unwrap().clone();
    assert!(s.buffered.is_empty());
    assert_eq!(s.active.len(), 1, "the buffered slot runs in the same entry");
    assert_eq!(s.runs.last().map(|r| r.slot.at_ms), Some(3_000));
    // buffer-all: every waiting slot runs, one after another.
    let a1 = run(&mut sm, "all", 1_000)[0];
    run(&mut sm, "all", 2_000);
    run(&mut sm, "all", 3_000);
    assert_eq!(sm.index.schedule("all").unwrap().buffered.len(), 2);
    finish(&mut sm, 3_500, a1, Outcome::Success { result: vec![] });
    let a2 = *sm.index.schedule("all").unwrap().active.first().unwrap();
    finish(&mut sm, 3_600, a2, Outcome::Success { result: vec![] });
    let s = sm.index.schedule("all").unwrap().clone();
    assert_eq!((s.buffered.len(), s.fired), (0, 3));
    // cancel-other: the active run is cancelled, the new one runs.
    let c1 = run(&mut sm, "cancel", 1_000)[0];
    let c2 = run(&mut sm, "cancel", 2_000)[0];
    assert_eq!(sm.task(c1).state, TaskState::Cancelled);
    assert_eq!(sm.index.schedule("cancel").unwrap().active, vec![c2]);
    // A retried run stays active; its final failure pauses the schedule.
    finish(&mut sm, 4_000, t1, Outcome::Fatal { error: "bad".into() });
    let s = sm.index.schedule("skip").unwrap().clone();
    assert!(s.paused && s.note.contains(&format!("task {t1} ended failed")), "{s:?}");
    assert!(fire(&mut sm, 5_000, "skip", vec![slot(5_000)]).is_empty(), "a paused schedule fires nothing");
    assert_eq!(LiveIndex::load(&sm.db).unwrap(), sm.index);
}

#[test]
fn resume_without_catch_up_never_fires_the_slots_missed_while_paused() {
    let mut sm = Sm::new();
    create(&mut sm, every_second("s", Overlap::Allow));
    let pause = |paused, catch_up| Operation::PauseSchedule { name: "s".into(), paused, note: "n".into(), catch_up };
    sm.run(1_000, pause(true, false));
    sm.run(10_000, pause(false, false));
    assert!(fire(&mut sm, 10_000, "s", vec![slot(5_000), slot(10_000)]).is_empty());
    assert_eq!(fire(&mut sm, 11_000, "s", vec![slot(11_000)]).len(), 1);
    // With catch-up, missed slots may fire.
    sm.run(12_000, pause(true, false));
    sm.run(20_000, pause(false, true));
    assert_eq!(fire(&mut sm, 20_000, "s", vec![slot(15_000)]).len(), 1);
    // Skipping through a slot counts and moves the last slot.
    let r = sm.run(
        30_000,
        Operation::FireSchedule {
            name: "s".into(),
            slots: vec![slot(30_000)],
            skip_to: Some(slot(29_000)),
            skipped: 13,
        },
    );
    assert!(matches!(r, CommandResponse::Fired { ref task_ids, skipped: 13 } if task_ids.len() == 1), "{r:?}");
    let r = sm.run(31_000, Operation::DeleteSchedule { name: "s".into() });
    assert_eq!(r, CommandResponse::Count(1));
    assert!(matches!(fire_result(&mut sm), CommandResponse::Rejected(Rejection::NotFound(_))));
}

fn fire_result(sm: &mut Sm) -> CommandResponse {
    sm.run(40_000, Operation::FireSchedule { name: "s".into(), slots: vec![slot(40_000)], skip_to: None, skipped: 0 })
}

#[test]
fn a_skip_moves_the_last_slot_counts_and_notes_until_a_slot_fires() {
    let mut sm = Sm::new();
    create(&mut sm, every_second("s", Overlap::Allow));
    let skip = |sm: &mut Sm, stamp, to, n| {
        sm.run(
            stamp,
            Operation::SkipSchedule { name: "s".into(), skip_to: slot(to), skipped: n, note: "no disk".into() },
        )
    };
    assert_eq!(skip(&mut sm, 3_000, 3_000, 3), CommandResponse::Fired { task_ids: vec![], skipped: 3 });
    let s = sm.applier.schedules.get("s").cloned().unwrap();
    assert_eq!((s.skipped, s.fired, s.note.as_str()), (3, 0, "no disk"));
    assert_eq!(s.last_slot.map(|l| l.at_ms), Some(3_000));
    // A skipped slot never fires afterwards; a stale skip changes nothing.
    assert!(fire(&mut sm, 3_100, "s", vec![slot(2_000), slot(3_000)]).is_empty());
    assert_eq!(skip(&mut sm, 3_100, 2_000, 5), CommandResponse::Fired { task_ids: vec![], skipped: 0 });
    assert_eq!(sm.applier.schedules.get("s").map(|s| s.skipped), Some(3));
    // The next slot fires, and the note goes.
    assert_eq!(fire(&mut sm, 4_000, "s", vec![slot(4_000)]).len(), 1);
    let s = sm.applier.schedules.get("s").cloned().unwrap();
    assert_eq!((s.skipped, s.fired, s.note.as_str()), (3, 1, ""));
    // A paused schedule keeps its operator's note; a skip does nothing.
    sm.run(4_100, Operation::PauseSchedule { name: "s".into(), paused: true, note: "ops".into(), catch_up: false });
    assert_eq!(skip(&mut sm, 6_000, 6_000, 2), CommandResponse::Fired { task_ids: vec![], skipped: 0 });
    assert_eq!(sm.applier.schedules.get("s").map(|s| s.note.clone()), Some("ops".into()));
}
