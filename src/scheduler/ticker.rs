//! The leader's ticker: fires periodic schedules.
//!
//! Only the leader computes fire times. For each schedule it lists the
//! slots due since the schedule's last slot (replicated), decides which of
//! them fire under the catch-up policy, and proposes one `FireSchedule`.
//! Apply fires a slot only if it is later than the last one, so a new
//! leader, a retried proposal or two leaders in a row never fire a slot
//! twice, and a new leader resumes from the replicated last slot, so
//! nothing is skipped that the policy says to fire.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::consensus::clock::ProposerClock;
use crate::consensus::disk::DiskSpace;
use crate::consensus::Consensus;
use crate::domain::schedule::{Catchup, Schedule, Slot, MAX_CATCHUP};
use crate::domain::{Command, Operation};
use crate::store::{index, SharedIndex};

/// Longest the ticker sleeps between looks.
const MAX_SLEEP: Duration = Duration::from_millis(200);
/// A slot is on time (not "missed") while it is at most this late.
const ON_TIME_MS: u64 = 2_000;

/// What one schedule should propose now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub fire: Vec<Slot>,
    pub skip_to: Option<Slot>,
    pub skipped: u64,
}

/// The slots of `s` due at `now_ms`, and which of them fire under its
/// catch-up policy. `None` when nothing is due.
///
/// After a long outage, slots are walked in pages and only the newest
/// ones kept (the older are counted as skipped), so `--catchup all` fires
/// at most the newest [`MAX_CATCHUP`] missed slots, oldest first.
pub fn decide(s: &Schedule, now_ms: u64) -> Option<Decision> {
    let mut from = s.last_slot.as_ref().map_or(0, |l| l.at_ms).max(s.not_before_ms).max(s.created_ms.saturating_sub(1));
    // The common case, cheaply: the next slot is not due yet.
    match s.slots_after(from, 2) {
        Ok(next) if next.first().is_none_or(|slot| s.fire_at(slot, next.get(1)) > now_ms) => return None,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(schedule = %s.name, error = %e, "cannot compute fire times");
            return None;
        }
    }
    let (mut skipped_before, mut skip_mark) = (0u64, None);
    // The newest due slots, at most MAX_CATCHUP + 1; older ones are counted.
    let mut due: std::collections::VecDeque<Slot> = std::collections::VecDeque::new();
    for _ in 0..100 {
        let slots = match s.slots_after(from, MAX_CATCHUP + 1) {
            Ok(slots) => slots,
            Err(e) => {
                tracing::warn!(schedule = %s.name, error = %e, "cannot compute fire times");
                return None;
            }
        };
        let page: Vec<Slot> = slots
            .iter()
            .enumerate()
            .filter(|(i, slot)| s.fire_at(slot, slots.get(i + 1)) <= now_ms)
            .map(|(_, slot)| slot.clone())
            .collect();
        let whole_page_due = !page.is_empty() && page.len() == slots.len();
        if let Some(last) = page.last() {
            from = last.at_ms;
        }
        due.extend(page);
        while due.len() > MAX_CATCHUP + 1 {
            skipped_before += 1;
            skip_mark = due.pop_front();
        }
        if !whole_page_due {
            break;
        }
    }
    let due: Vec<Slot> = due.into();
    let Some(newest) = due.last().cloned() else {
        return skip_mark.map(|m| Decision { fire: Vec::new(), skip_to: Some(m), skipped: skipped_before });
    };
    let on_time = now_ms.saturating_sub(newest.at_ms) <= ON_TIME_MS + s.spec.jitter_ms;
    let skip = |older: &[Slot]| -> (Option<Slot>, u64) {
        (older.last().cloned().or_else(|| skip_mark.clone()), skipped_before + older.len() as u64)
    };
    let (fire, (skip_to, skipped)) = match s.policy.catchup {
        Catchup::All => {
            let keep = due.len().min(MAX_CATCHUP);
            (due[due.len() - keep..].to_vec(), skip(&due[..due.len() - keep]))
        }
        Catchup::Latest if now_ms.saturating_sub(newest.at_ms) <= s.policy.catchup_window_ms.max(ON_TIME_MS) => {
            (vec![newest.clone()], skip(&due[..due.len() - 1]))
        }
        Catchup::None if on_time => (vec![newest.clone()], skip(&due[..due.len() - 1])),
        Catchup::Latest | Catchup::None => (Vec::new(), skip(&due)),
    };
    Some(Decision { fire, skip_to, skipped })
}

/// What to propose for a schedule's due slots: fire them, or, while the
/// cluster refuses new tasks (`refusal`: why), skip them all with a note.
pub fn operation(name: &str, d: Decision, refusal: Option<&str>) -> Operation {
    let Some(why) = refusal else {
        return Operation::FireSchedule {
            name: name.to_string(),
            slots: d.fire,
            skip_to: d.skip_to,
            skipped: d.skipped,
        };
    };
    let skipped = d.skipped + d.fire.len() as u64;
    match d.fire.last().cloned().or(d.skip_to) {
        Some(skip_to) => Operation::SkipSchedule {
            name: name.to_string(),
            note: format!("{skipped} slot(s) up to {} skipped: {why}", skip_to.id),
            skip_to,
            skipped,
        },
        None => Operation::FireSchedule { name: name.to_string(), slots: Vec::new(), skip_to: None, skipped: 0 },
    }
}

/// `op` as a cluster of feature `level` can apply it: below level 2 (a
/// member may run 0.1.0, which knows no `SkipSchedule`) a skip is proposed
/// as a `FireSchedule` of no slot, which skips alike, without the note.
pub fn at_level(op: Operation, level: u32) -> Operation {
    match op {
        Operation::SkipSchedule { name, skip_to, skipped, .. } if level < crate::domain::feature::LEVEL_IDENTITY => {
            Operation::FireSchedule { name, slots: Vec::new(), skip_to: Some(skip_to), skipped }
        }
        op => op,
    }
}

/// The ticker's handles.
pub struct Ticker {
    pub consensus: Consensus,
    pub index: SharedIndex,
    pub clock: ProposerClock,
    /// The space guard: while a member is short of disk, due slots are
    /// skipped (counted, with a note), not fired, like every other way of
    /// making new tasks.
    pub disk: DiskSpace,
}

impl Ticker {
    /// One round over every schedule; returns when to look again.
    async fn round(&self) -> Duration {
        let now_ms = self.clock.stamp();
        let schedules: Vec<Schedule> = index::lock(&self.index).schedules().filter(|s| !s.paused).cloned().collect();
        let mut sleep = MAX_SLEEP;
        for s in schedules {
            if let Some(d) = decide(&s, now_ms) {
                let refusal = self.disk.refusal();
                if let Some(why) = &refusal {
                    let due = d.skipped + d.fire.len() as u64;
                    tracing::warn!(schedule = %s.name, skipped = due, reason = %why, "due slots skipped, not fired");
                } else if d.skipped > 0 {
                    tracing::info!(schedule = %s.name, skipped = d.skipped, firing = d.fire.len(), "missed slots");
                }
                let level = self.consensus.identity().versions().active();
                let operation = at_level(operation(&s.name, d, refusal.as_deref()), level);
                let cmd = Command { stamped_at_ms: self.clock.stamp(), operation };
                if let Err(e) = self.consensus.propose(cmd).await {
                    // Not fired: the next round proposes it again (the
                    // compare-and-set makes a repeat harmless).
                    tracing::debug!(schedule = %s.name, error = %e, "fire not committed");
                }
            } else if let Ok(next) = s.slots_after(now_ms, 2) {
                if let Some(slot) = next.first() {
                    let at = s.fire_at(slot, next.get(1));
                    sleep = sleep.min(Duration::from_millis(at.saturating_sub(now_ms)));
                }
            }
        }
        sleep.max(Duration::from_millis(5))
    }

    /// Fire schedules while this node leads, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let pause = if self.consensus.leadership().ready { self.round().await } else { MAX_SLEEP };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::*;

    fn every(catchup: Catchup, last: Option<u64>, period_ms: u64) -> Schedule {
        Schedule {
            last_slot: last.map(|at| Slot { at_ms: at, id: at.to_string() }),
            ..Schedule::new(
                "s".into(),
                ScheduleSpec {
                    cadence: Cadence::Every { period_ms },
                    start_ms: Some(0),
                    end_ms: None,
                    jitter_ms: 0,
                    dst_repeat: DstRepeat::Once,
                    dst_gap: DstGap::Shift,
                },
                TaskTemplate { callback: "c".into(), payload: vec![], priority: 0, collection: None },
                SchedulePolicy { overlap: Overlap::Allow, catchup, catchup_window_ms: 3_000, pause_on_failure: false },
            )
        }
    }

    fn at(d: &Decision) -> (Vec<u64>, Option<u64>, u64) {
        (d.fire.iter().map(|s| s.at_ms).collect(), d.skip_to.as_ref().map(|s| s.at_ms), d.skipped)
    }

    #[test]
    fn on_time_slots_fire_and_nothing_is_due_between_them() {
        let s = every(Catchup::Latest, Some(5_000), 1_000);
        assert_eq!(decide(&s, 5_999), None);
        assert_eq!(decide(&s, 6_000).map(|d| at(&d)), Some((vec![6_000], None, 0)));
    }

    #[test]
    fn catch_up_policies_after_an_outage() {
        // Last fired 5 s; the leader comes back at 10.5 s: 6..=10 are due.
        let after = |c| decide(&every(c, Some(5_000), 1_000), 10_500).map(|d| at(&d));
        assert_eq!(after(Catchup::All), Some((vec![6_000, 7_000, 8_000, 9_000, 10_000], None, 0)));
        assert_eq!(after(Catchup::Latest), Some((vec![10_000], Some(9_000), 4)));
        assert_eq!(after(Catchup::None), Some((vec![10_000], Some(9_000), 4)));
        // Every 10 s, back 5 s after a slot: late for `none` (2 s) and for
        // a 3 s catch-up window; `all` still fires it.
        let late = |c| decide(&every(c, Some(0), 10_000), 15_000).map(|d| at(&d));
        assert_eq!(late(Catchup::All), Some((vec![10_000], None, 0)));
        assert_eq!(late(Catchup::Latest), Some((vec![], Some(10_000), 1)));
        assert_eq!(late(Catchup::None), Some((vec![], Some(10_000), 1)));
    }

    #[test]
    fn below_level_2_a_skip_is_a_fire_of_no_slot() {
        let skip = operation("s", decide(&every(Catchup::All, Some(5_000), 1_000), 8_500).unwrap(), Some("full"));
        let Operation::SkipSchedule { skip_to, skipped, .. } = skip.clone() else { panic!("{skip:?}") };
        assert_eq!(at_level(skip.clone(), 2), skip);
        assert_eq!(
            at_level(skip, 1),
            Operation::FireSchedule { name: "s".into(), slots: vec![], skip_to: Some(skip_to), skipped }
        );
    }

    #[test]
    fn out_of_disk_every_due_slot_is_skipped_with_a_note() {
        let d = decide(&every(Catchup::All, Some(5_000), 1_000), 8_500).unwrap();
        assert_eq!(at(&d), (vec![6_000, 7_000, 8_000], None, 0));
        // Room: they fire.
        match operation("s", d.clone(), None) {
            Operation::FireSchedule { slots, .. } => assert_eq!(slots.len(), 3),
            other => panic!("{other:?}"),
        }
        // No room: nothing fires; all three are skipped up to the newest.
        match operation("s", d, Some("the cluster is out of disk")) {
            Operation::SkipSchedule { name, skip_to, skipped, note } => {
                assert_eq!((name.as_str(), skip_to.at_ms, skipped), ("s", 8_000, 3));
                assert!(note.contains("out of disk") && note.contains("3 slot(s)"), "{note}");
            }
            other => panic!("{other:?}"),
        }
        // Already-missed slots (skip_to, no fire) are skipped the same way.
        let late = decide(&every(Catchup::Latest, Some(0), 10_000), 15_000).unwrap();
        match operation("s", late, Some("full")) {
            Operation::SkipSchedule { skip_to, skipped, .. } => assert_eq!((skip_to.at_ms, skipped), (10_000, 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_long_outage_fires_at_most_the_newest_thousand() {
        let n = MAX_CATCHUP as u64 * 3 + 10;
        let d = decide(&every(Catchup::All, Some(0), 1_000), n * 1_000).unwrap();
        assert_eq!(d.fire.len(), MAX_CATCHUP);
        assert_eq!(d.fire.last().map(|s| s.at_ms), Some(n * 1_000), "up to the newest");
        assert_eq!(d.skipped + d.fire.len() as u64, n, "every slot fired or counted");
        assert_eq!(d.skip_to.map(|s| s.at_ms), Some(d.fire[0].at_ms - 1_000));
        let d = decide(&every(Catchup::Latest, Some(0), 1_000), n * 1_000).unwrap();
        assert_eq!((d.fire.len(), d.skipped), (1, n - 1));
    }
}
