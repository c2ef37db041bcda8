//! Replicated time: how the leader stamps commands, so that no single
//! node's wall clock can make tasks run early or late.
//!
//! Apply never reads a clock: it takes `now = max(now, stamp)`. The stamps
//! come from the [`TimeModel`] of the proposing node:
//! - it advances by this node's **monotonic** clock from the replicated
//!   time it last saw applied (plus the time since it was applied here, a
//!   lower bound on the time that really passed), never by its wall clock;
//! - it is steered toward the cluster's **reference**: the median of the
//!   voters' wall clocks, sampled over RPC with the round trip accounted
//!   for ([`ClockSample`], [`Reference`]). The median of a majority ignores
//!   one bad clock in three and two in five. The steering is a slew of at
//!   most [`SLEW_PER_SEC`] (10 ms per second) either way; only when
//!   replicated time is behind the reference by more than [`STEP_MS`] (a
//!   whole cluster that was down, a new cluster) does it step forward to
//!   it, never past it;
//! - it never goes backwards.
//!
//! A node whose own wall clock is off the reference by more than the
//! configured bound is *skewed*: it says so and does not lead (see
//! [`super::timekeeper`]). See DESIGN.md, "Time".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::store::Applied;

/// Fastest correction toward the reference, in ms per second of real time
/// (1 %).
pub const SLEW_PER_SEC: u64 = 10;
/// Behind the reference by more than this, replicated time steps forward to
/// it instead of slewing.
pub const STEP_MS: u64 = 1_000;
/// Samples older than this are not used.
pub const SAMPLE_TTL: Duration = Duration::from_secs(10);

/// This process's wall clock, with an optional injected offset (a fault for
/// tests and the chaos suite; zero in production).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WallClock {
    pub skew_ms: i64,
}

impl WallClock {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        real.saturating_add_signed(self.skew_ms)
    }
}

/// One sample of a peer's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The peer's wall clock minus ours, at the same instant, in ms.
    pub offset_ms: i64,
    /// The round trip of the sample; the offset is known within half of it.
    pub rtt: Duration,
    /// When it was taken (our monotonic clock).
    pub at: Instant,
}

impl ClockSample {
    /// A sample from a request sent at `sent` (our wall clock `sent_wall_ms`)
    /// and answered at `received` with the peer's wall clock `peer_ms`: the
    /// peer read its clock half-way through the round trip.
    pub fn new(sent: Instant, sent_wall_ms: u64, received: Instant, peer_ms: u64) -> ClockSample {
        let rtt = received.saturating_duration_since(sent);
        let midpoint_ms = sent_wall_ms as i128 + (rtt.as_millis() / 2) as i128;
        ClockSample { offset_ms: (peer_ms as i128 - midpoint_ms) as i64, rtt, at: received }
    }
}

/// The cluster's reference time as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// The median of the voters' clocks minus this node's clock, in ms.
    pub median_offset_ms: i64,
    /// Whether a majority of voters agree with the median within the bound:
    /// only then does the reference steer time or mark a node skewed.
    pub trusted: bool,
    /// Voters whose clocks were used.
    pub sampled: usize,
    /// How far off the median may be because of the samples' round trips
    /// (half the longest round trip among them), ms.
    pub uncertainty_ms: u64,
}

impl Reference {
    /// This node's own clock minus the reference.
    pub fn own_offset_ms(&self) -> i64 {
        -self.median_offset_ms
    }
}

/// The reference from `samples` of the `voters` (this node, `me`, counts
/// with offset 0). `None` when fewer than a majority could be sampled.
pub fn reference(
    me: u64,
    voters: &[u64],
    samples: &HashMap<u64, ClockSample>,
    now: Instant,
    max_offset: Duration,
) -> Option<Reference> {
    let used: Vec<(i64, u64)> = voters
        .iter()
        .filter_map(|v| {
            if *v == me {
                return Some((0, 0));
            }
            samples
                .get(v)
                .filter(|s| now.saturating_duration_since(s.at) <= SAMPLE_TTL)
                .map(|s| (s.offset_ms, s.rtt.as_millis() as u64 / 2 + 1))
        })
        .collect();
    let mut offsets: Vec<i64> = used.iter().map(|(o, _)| *o).collect();
    let uncertainty_ms = used.iter().map(|(_, u)| *u).max().unwrap_or(0);
    let majority = voters.len() / 2 + 1;
    if voters.is_empty() || offsets.len() < majority {
        return None;
    }
    offsets.sort_unstable();
    // The lower median: with an even count it is one of the samples.
    let median = offsets[(offsets.len() - 1) / 2];
    let bound = max_offset.as_millis() as i64;
    let agreeing = offsets.iter().filter(|o| (**o - median).abs() <= bound).count();
    Some(Reference { median_offset_ms: median, trusted: agreeing >= majority, sampled: offsets.len(), uncertainty_ms })
}

/// The deterministic core: replicated time as a function of the monotonic
/// clock, the applied floor and the reference. Pure, for tests.
///
/// Kept in microseconds as an offset from this node's monotonic clock, so
/// that calling it often loses nothing to rounding: between adjustments,
/// replicated time advances exactly with the monotonic clock.
#[derive(Debug, Clone)]
pub struct TimeModel {
    /// The monotonic origin of `offset_us`.
    origin: Instant,
    /// Replicated time in µs minus µs since `origin`.
    offset_us: i128,
    /// When the slew budget was last spent.
    last_update: Instant,
    /// The last value handed out, ms: nothing later is lower.
    last_ms: u64,
}

fn micros(d: Duration) -> i128 {
    d.as_micros() as i128
}

impl TimeModel {
    pub fn new(start_ms: u64, at: Instant) -> TimeModel {
        TimeModel { origin: at, offset_us: start_ms as i128 * 1000, last_update: at, last_ms: start_ms }
    }

    /// Replicated time at `now`.
    ///
    /// - `floor`: the replicated time last applied on this node and when
    ///   (that stamp was issued no later than it was applied here, so adding
    ///   the time since gives a lower bound on real time);
    /// - `reference_ms`: the cluster's reference time now, if trusted.
    pub fn at(&mut self, now: Instant, floor: Option<(u64, Instant)>, reference_ms: Option<u64>) -> u64 {
        let mono_us = micros(now.saturating_duration_since(self.origin));
        let mut est_us = mono_us + self.offset_us;
        if let Some((ms, at)) = floor {
            let floor_us = ms as i128 * 1000 + micros(now.saturating_duration_since(at));
            est_us = est_us.max(floor_us);
        }
        if let Some(r) = reference_ms {
            let r_us = r as i128 * 1000;
            let dt_us = micros(now.saturating_duration_since(self.last_update));
            let budget_us = dt_us * SLEW_PER_SEC as i128 / 1000;
            let err_us = r_us - est_us;
            if err_us > STEP_MS as i128 * 1000 {
                est_us = r_us;
            } else {
                est_us += err_us.clamp(-budget_us, budget_us);
            }
        }
        self.last_update = now;
        self.offset_us = est_us - mono_us;
        let ms = u64::try_from(est_us.max(0) / 1000).unwrap_or(u64::MAX).max(self.last_ms);
        self.last_ms = ms;
        ms
    }
}

/// What the clock knows of the cluster, kept by the timekeeper.
#[derive(Debug, Default)]
struct Cluster {
    voters: Vec<u64>,
    samples: HashMap<u64, ClockSample>,
}

/// The proposer's clock of one node: cheap to clone; every clone shares
/// the model and the samples.
#[derive(Clone)]
pub struct ProposerClock {
    me: u64,
    wall: WallClock,
    max_offset: Duration,
    applied: watch::Receiver<Applied>,
    /// Short critical sections (arithmetic on a few numbers), never held
    /// across I/O or an `.await`, hence std mutexes.
    model: Arc<Mutex<TimeModel>>,
    cluster: Arc<Mutex<Cluster>>,
}

impl ProposerClock {
    pub fn new(me: u64, wall: WallClock, max_offset: Duration, applied: watch::Receiver<Applied>) -> Self {
        let floor = *applied.borrow();
        let model = TimeModel::new(floor.now_ms, floor.at);
        ProposerClock { me, wall, max_offset, applied, model: Arc::new(Mutex::new(model)), cluster: Arc::default() }
    }

    /// This process's wall clock.
    pub fn wall(&self) -> WallClock {
        self.wall
    }

    /// The bound on a clock's offset from the reference.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// Record the current voters and a fresh sample of a peer.
    pub fn set_voters(&self, voters: Vec<u64>) {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner()).voters = voters;
    }

    pub fn record(&self, peer: u64, sample: ClockSample) {
        let mut c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        // A sample whose round trip was much slower than a recent one bounds
        // the offset worse: keep the recent one's offset, refreshed.
        let kept = c.samples.get(&peer).copied().filter(|old| {
            sample.at.saturating_duration_since(old.at) < Duration::from_secs(3) && sample.rtt > old.rtt * 4
        });
        let sample = match kept {
            Some(old) => ClockSample { at: sample.at, ..old },
            None => sample,
        };
        c.samples.insert(peer, sample);
    }

    /// The reference as of now, if enough voters were sampled.
    pub fn reference(&self) -> Option<Reference> {
        let c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        reference(self.me, &c.voters, &c.samples, Instant::now(), self.max_offset)
    }

    /// Every peer's offset from this node's clock, as last sampled.
    pub fn samples(&self) -> HashMap<u64, ClockSample> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner()).samples.clone()
    }

    /// Whether replicated time is established: a command was stamped
    /// before (it is in the state machine), or a majority of voters' clocks
    /// were sampled (a new cluster starts from their median).
    pub fn established(&self) -> bool {
        self.applied.borrow().now_ms > 0 || self.reference().is_some()
    }

    /// Wait until [`ProposerClock::established`], at most `timeout`.
    pub async fn wait_established(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.established() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Replicated time now, on this node.
    pub fn now_ms(&self) -> u64 {
        let now = Instant::now();
        let applied = *self.applied.borrow();
        // A new cluster (nothing stamped yet) starts from the median even if
        // the clocks disagree; after that only a trusted reference steers.
        // The reference is taken at its lowest (minus the samples'
        // uncertainty): steering never pushes time ahead of the majority's
        // clocks, only toward them.
        let reference_ms = self
            .reference()
            .filter(|r| r.trusted || applied.now_ms == 0)
            .map(|r| self.wall.now_ms().saturating_add_signed(r.median_offset_ms).saturating_sub(r.uncertainty_ms));
        let mut model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        model.at(now, Some((applied.now_ms, applied.at)), reference_ms)
    }

    /// A stamp for a new command: replicated time now.
    pub fn stamp(&self) -> u64 {
        self.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;

    fn sample(offset_ms: i64, at: Instant) -> ClockSample {
        ClockSample { offset_ms, rtt: Duration::from_millis(1), at }
    }

    #[test]
    fn one_bad_clock_in_three_or_two_in_five_do_not_move_the_reference() {
        let now = Instant::now();
        let bound = Duration::from_millis(500);
        // Seen from a good node: peer 3 is an hour ahead.
        let s: HashMap<u64, ClockSample> = [(2, sample(10, now)), (3, sample(HOUR, now))].into();
        let r = reference(1, &[1, 2, 3], &s, now, bound).unwrap();
        assert_eq!((r.median_offset_ms, r.trusted), (10, true), "the median of 0, 10 and an hour");
        // Seen from the bad node itself: the others are an hour behind it.
        let s: HashMap<u64, ClockSample> = [(1, sample(-HOUR, now)), (2, sample(-HOUR + 10, now))].into();
        let r = reference(3, &[1, 2, 3], &s, now, bound).unwrap();
        assert!(r.trusted);
        assert!((r.own_offset_ms() - HOUR).abs() <= 10, "{r:?}");
        // Five nodes, two wrong either way.
        let s: HashMap<u64, ClockSample> =
            [(2, sample(5, now)), (3, sample(-5, now)), (4, sample(HOUR, now)), (5, sample(-HOUR, now))].into();
        let r = reference(1, &[1, 2, 3, 4, 5], &s, now, bound).unwrap();
        assert!(r.trusted && r.median_offset_ms.abs() <= 5, "{r:?}");
    }

    #[test]
    fn no_majority_no_reference_and_disagreement_is_not_trusted() {
        let now = Instant::now();
        let bound = Duration::from_millis(500);
        assert_eq!(reference(1, &[1, 2, 3], &HashMap::new(), now, bound), None);
        // Two of three sampled, an hour apart: which one is wrong is unknown.
        let s: HashMap<u64, ClockSample> = [(2, sample(HOUR, now))].into();
        let r = reference(1, &[1, 2, 3], &s, now, bound).unwrap();
        assert!(!r.trusted, "{r:?}");
        // Stale samples are not used.
        let old = now.checked_sub(SAMPLE_TTL * 2).unwrap_or(now);
        let s: HashMap<u64, ClockSample> = [(2, sample(0, old)), (3, sample(0, old))].into();
        if old != now {
            assert_eq!(reference(1, &[1, 2, 3], &s, now, bound), None);
        }
    }

    #[test]
    fn a_sample_splits_the_round_trip() {
        let sent = Instant::now();
        let s = ClockSample::new(sent, 1_000_000, sent + Duration::from_millis(20), 1_000_510);
        assert_eq!((s.offset_ms, s.rtt), (500, Duration::from_millis(20)));
    }

    #[test]
    fn a_takeover_continues_from_the_applied_floor_by_monotonic_time() {
        let t0 = Instant::now();
        let mut m = TimeModel::new(0, t0);
        // The last stamp applied here was 5_000 at t0; 2 s later, with no
        // reference, time is 7_000 whatever any wall clock says.
        let t = t0 + Duration::from_secs(2);
        assert_eq!(m.at(t, Some((5_000, t0)), None), 7_000);
        // A bad reference far behind only slows it down, by at most 1 %.
        let t2 = t + Duration::from_secs(10);
        let v = m.at(t2, Some((5_000, t0)), Some(0));
        assert_eq!(v, 7_000 + 10_000 - 100);
    }

    #[test]
    fn frequent_calls_lose_nothing_to_rounding() {
        let t0 = Instant::now();
        let mut m = TimeModel::new(5_000, t0);
        let mut v = 0;
        for i in 1..=10_000u64 {
            // Every 100 µs for 1 s, with a reference in step with real time.
            v = m.at(t0 + Duration::from_micros(100 * i), None, Some(5_000 + i / 10));
        }
        assert!((5_999..=6_000).contains(&v), "{v}");
    }

    #[test]
    fn a_reference_far_ahead_is_stepped_to_and_a_near_one_slewed_to() {
        let t0 = Instant::now();
        let mut m = TimeModel::new(1_000, t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(m.at(t1, None, Some(1_000_000)), 1_000_000, "a whole cluster was down: step");
        let t2 = t1 + Duration::from_secs(1);
        // 500 ms behind a reference: catch up 10 ms per second.
        assert_eq!(m.at(t2, None, Some(1_001_500)), 1_001_010);
    }

    proptest! {
        /// Stamps never go back; without a reference they advance exactly
        /// with monotonic time from the floor; with one they never run
        /// faster than monotonic time plus the slew (or a step up to the
        /// reference), and they converge to a steady reference.
        #[test]
        fn stamps_are_monotonic_bounded_and_converge(
            start in 0u64..10_000_000,
            steps in prop::collection::vec((1u64..2_000, prop::option::of(-5_000i64..5_000)), 1..200),
        ) {
            let t0 = Instant::now();
            let mut m = TimeModel::new(start, t0);
            let mut now = t0;
            let mut prev = start;
            let mut real = start as i128;
            for (dt, offset) in steps {
                now += Duration::from_millis(dt);
                real += dt as i128;
                let reference = offset.map(|o| (real + o as i128).max(0) as u64);
                let v = m.at(now, None, reference);
                prop_assert!(v >= prev, "went back: {prev} -> {v}");
                // +1: values are whole ms of a µs-precise model.
                let slewed = prev + dt + dt * SLEW_PER_SEC / 1000 + 1;
                let allowed = match reference { Some(r) => slewed.max(r), None => prev + dt + 1 };
                prop_assert!(v <= allowed, "ran ahead: {prev} + {dt} ms -> {v} (allowed {allowed})");
                prev = v;
            }
            // A steady reference 2 s ahead is reached (by a step), and one
            // 500 ms behind is approached at the slew rate.
            let target = prev + 2_000 + 10;
            now += Duration::from_millis(10);
            prop_assert_eq!(m.at(now, None, Some(target)), target);
            let mut behind = target;
            for _ in 0..100 {
                now += Duration::from_secs(1);
                behind += 1_000;
                m.at(now, None, Some(behind - 500));
            }
            now += Duration::from_secs(1);
            let v = m.at(now, None, Some(behind + 1_000 - 500));
            prop_assert_eq!(v, behind + 1_000 - 500, "converged after 50 s of 10 ms/s");
        }
    }

    #[test]
    fn the_clock_follows_the_applied_floor_on_a_follower() {
        let at = Instant::now();
        let (_tx, rx) = watch::channel(Applied { index: 1, now_ms: 1_000_000, at });
        let clock = ProposerClock::new(1, WallClock { skew_ms: HOUR }, Duration::from_millis(500), rx);
        let v = clock.stamp();
        // An hour of wall-clock skew does not show: no reference, so the
        // floor plus monotonic time since it was applied.
        assert!((1_000_000..1_000_000 + 5_000).contains(&v), "{v}");
    }
}
