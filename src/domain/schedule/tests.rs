//! Fire times against known sequences around daylight-saving changes, and
//! a property test: computing from any fired slot continues the same
//! sequence (no gaps, no duplicates).

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;

fn schedule(cadence: Cadence, repeat: DstRepeat, gap: DstGap) -> Schedule {
    Schedule::new(
        "s".into(),
        ScheduleSpec { cadence, start_ms: None, end_ms: None, jitter_ms: 0, dst_repeat: repeat, dst_gap: gap },
        TaskTemplate { callback: "c".into(), payload: vec![], priority: 0, collection: None },
        SchedulePolicy {
            overlap: Overlap::Skip,
            catchup: Catchup::Latest,
            catchup_window_ms: 86_400_000,
            pause_on_failure: false,
        },
    )
}

fn cron(expr: &str, tz: &str) -> Cadence {
    Cadence::Cron { expr: expr.into(), tz: tz.into() }
}

/// Unix ms of a UTC time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().map(|t| t.timestamp_millis() as u64).unwrap_or(0)
}

fn times(s: &Schedule, after: u64, n: usize) -> Vec<u64> {
    s.slots_after(after, n).unwrap().into_iter().map(|s| s.at_ms).collect()
}

#[test]
fn new_york_fall_back_fires_the_repeated_half_hour_once_or_twice() {
    let once = schedule(cron("30 1 * * *", "America/New_York"), DstRepeat::Once, DstGap::Shift);
    let after = utc(2026, 10, 31, 0, 0);
    // 01:30 EDT on Oct 31 and Nov 1 (05:30Z), then 01:30 EST (06:30Z).
    assert_eq!(
        times(&once, after, 3),
        vec![utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    );
    let both = schedule(cron("30 1 * * *", "America/New_York"), DstRepeat::Both, DstGap::Shift);
    let slots = both.slots_after(after, 4).unwrap();
    assert_eq!(
        slots.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
        vec![utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6, 30)]
    );
    assert_eq!(slots[1].id, "2026-11-01T01:30:00-04:00");
    assert_eq!(slots[2].id, "2026-11-01T01:30:00-05:00");
}

#[test]
fn new_york_spring_forward_shifts_or_skips_the_missing_half_hour() {
    let after = utc(2026, 3, 7, 0, 0);
    let shift = schedule(cron("30 2 * * *", "America/New_York"), DstRepeat::Once, DstGap::Shift);
    // 02:30 EST on Mar 7 (07:30Z); on Mar 8 02:30 does not exist: 03:00 EDT
    // (07:00Z); Mar 9 02:30 EDT (06:30Z).
    assert_eq!(times(&shift, after, 3), vec![utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]);
    let skip = schedule(cron("30 2 * * *", "America/New_York"), DstRepeat::Once, DstGap::Skip);
    assert_eq!(times(&skip, after, 2), vec![utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)]);
}

#[test]
fn berlin_hourly_across_the_october_change() {
    let after = utc(2026, 10, 24, 22, 30);
    let once = schedule(cron("0 * * * *", "Europe/Berlin"), DstRepeat::Once, DstGap::Shift);
    // 01:00 CEST (23:00Z), 02:00 CEST (00:00Z), 02:00 CET is the same slot,
    // 03:00 CET (02:00Z).
    assert_eq!(
        times(&once, after, 3),
        vec![utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0)]
    );
    let both = schedule(cron("0 * * * *", "Europe/Berlin"), DstRepeat::Both, DstGap::Shift);
    assert_eq!(
        times(&both, after, 4),
        vec![utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 2, 0)]
    );
    // Spring: 02:00 does not exist on Mar 29; shifted to 03:00 CEST (01:00Z).
    let spring = times(&once, utc(2026, 3, 28, 23, 30), 3);
    assert_eq!(spring, vec![utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 2, 0)]);
    assert_eq!(once.slots_after(utc(2026, 3, 28, 23, 30), 3).unwrap()[1].id, "2026-03-29T02:00:00");
}

#[test]
fn lord_howe_half_hour_shifts() {
    // October 4 2026: 02:00 +10:30 -> 02:30 +11. 02:15 does not exist.
    let s = schedule(cron("15 2 * * *", "Australia/Lord_Howe"), DstRepeat::Once, DstGap::Shift);
    let got = times(&s, utc(2026, 10, 3, 0, 0), 2);
    // 02:30 +11 = 15:30Z on Oct 3; then 02:15 +11 = 15:15Z on Oct 4.
    assert_eq!(got, vec![utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]);
    // April 5 2026: 02:00 +11 -> 01:30 +10:30; 01:45 happens twice.
    let once = schedule(cron("45 1 * * *", "Australia/Lord_Howe"), DstRepeat::Once, DstGap::Shift);
    let both = schedule(cron("45 1 * * *", "Australia/Lord_Howe"), DstRepeat::Both, DstGap::Shift);
    let after = utc(2026, 4, 4, 12, 0);
    assert_eq!(times(&once, after, 2), vec![utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]);
    assert_eq!(times(&both, after, 3), vec![utc(2026, 4, 4, 14, 45), utc(2026, 4, 4, 15, 15), utc(2026, 4, 5, 15, 15)]);
}

#[test]
fn kolkata_has_no_daylight_saving_and_every_counts_from_the_start() {
    let s = schedule(cron("0 9 * * *", "Asia/Kolkata"), DstRepeat::Once, DstGap::Shift);
    assert_eq!(times(&s, utc(2026, 3, 1, 0, 0), 2), vec![utc(2026, 3, 1, 3, 30), utc(2026, 3, 2, 3, 30)]);
    let mut every = schedule(Cadence::Every { period_ms: 1_000 }, DstRepeat::Once, DstGap::Shift);
    every.spec.start_ms = Some(10_500);
    assert_eq!(times(&every, 0, 3), vec![10_500, 11_500, 12_500]);
    assert_eq!(times(&every, 11_500, 2), vec![12_500, 13_500]);
    every.spec.end_ms = Some(12_500);
    assert_eq!(times(&every, 0, 5), vec![10_500, 11_500, 12_500]);
}

#[test]
fn seconds_macros_and_bad_patterns() {
    let s = schedule(cron("*/15 * * * * *", "UTC"), DstRepeat::Once, DstGap::Shift);
    assert_eq!(times(&s, 0, 3), vec![15_000, 30_000, 45_000]);
    let h = schedule(cron("@hourly", "UTC"), DstRepeat::Once, DstGap::Shift);
    assert_eq!(times(&h, 0, 2), vec![3_600_000, 7_200_000]);
    assert!(parse_cron("* * *").unwrap_err().contains("fields"));
    assert!(parse_cron("61 * * * *").is_err());
    assert!(parse_cron("* * * * * * 2026").is_err(), "no year field");
    assert!(parse_tz("Mars/Olympus").unwrap_err().contains("IANA"));
}

#[test]
fn jitter_is_deterministic_and_below_the_gap() {
    let mut s = schedule(Cadence::Every { period_ms: 1_000 }, DstRepeat::Once, DstGap::Shift);
    s.spec.jitter_ms = 10_000;
    let slots = s.slots_after(0, 50).unwrap();
    let mut spread = std::collections::HashSet::new();
    for w in slots.windows(2) {
        let at = s.fire_at(&w[0], Some(&w[1]));
        assert!(at >= w[0].at_ms && at < w[1].at_ms, "{at} outside [{}, {})", w[0].at_ms, w[1].at_ms);
        assert_eq!(at, s.fire_at(&w[0], Some(&w[1])));
        spread.insert(at - w[0].at_ms);
    }
    assert!(spread.len() > 10, "jitter spreads slots");
}

const ZONES: [&str; 5] = ["America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"];
const PATTERNS: [&str; 5] = ["*/20 * * * *", "30 1 * * *", "15 2 * * *", "0 * * * *", "45 1,2,3 * * 0"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// From any fired slot, the next ones are the rest of the same
    /// sequence: slots strictly increase, ids never repeat, and resuming
    /// from slot i gives slots i+1... (a new leader skips and repeats
    /// nothing).
    #[test]
    fn resuming_from_any_slot_continues_the_sequence(
        zone in 0..ZONES.len(),
        pattern in 0..PATTERNS.len(),
        both in any::<bool>(),
        skip in any::<bool>(),
        // Around 2026's changes: any time of the year.
        after in 1_767_225_600_000u64..1_798_761_600_000,
    ) {
        let s = schedule(
            cron(PATTERNS[pattern], ZONES[zone]),
            if both { DstRepeat::Both } else { DstRepeat::Once },
            if skip { DstGap::Skip } else { DstGap::Shift },
        );
        let slots = s.slots_after(after, 40).unwrap();
        prop_assert!(!slots.is_empty());
        prop_assert!(slots[0].at_ms > after);
        for w in slots.windows(2) {
            prop_assert!(w[0].at_ms < w[1].at_ms, "{:?} then {:?}", w[0], w[1]);
        }
        let ids: std::collections::HashSet<&str> = slots.iter().map(|s| s.id.as_str()).collect();
        prop_assert_eq!(ids.len(), slots.len());
        for i in [0usize, 7, 20] {
            let resumed = s.slots_after(slots[i].at_ms, 10).unwrap();
            let expected: Vec<Slot> = slots[i + 1..].iter().take(10).cloned().collect();
            prop_assert_eq!(resumed, expected);
        }
    }
}

/// Found by the property test above: resuming from a time with a fraction
/// of a second gave slots with that fraction (the same slot at two
/// times).
#[test]
fn slots_are_whole_seconds_whatever_the_starting_time() {
    let s = schedule(cron("15 2 * * *", "America/New_York"), DstRepeat::Once, DstGap::Shift);
    let from_fraction = s.slots_after(1_772_867_700_001, 5).unwrap();
    let from_whole = s.slots_after(1_772_867_700_000, 5).unwrap();
    assert_eq!(from_fraction, from_whole);
    assert!(from_fraction.iter().all(|slot| slot.at_ms % 1_000 == 0), "{from_fraction:?}");
}
