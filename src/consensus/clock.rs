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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

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

/// A source of wall-clock time. The system's clock in production
/// ([`SystemTime`]); a test or a simulation supplies its own (skewed,
/// jumping, virtual). Replicated time is only *steered* by it.
pub trait WallTime: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWallTime;

impl WallTime for SystemWallTime {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}

/// This node's wall clock: cheap to clone.
#[derive(Clone)]
pub struct WallClock(Arc<dyn WallTime>);

impl WallClock {
    /// The operating system's clock.
    pub fn system() -> WallClock {
        WallClock(Arc::new(SystemWallTime))
    }

    /// Any other source (tests, simulation).
    pub fn from_source(source: Arc<dyn WallTime>) -> WallClock {
        WallClock(source)
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::system()
    }
}

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WallClock").field(&self.now_ms()).finish()
    }
}

/// One sample of a peer's wall clock.
///
/// It holds the peer's reading and the instant of *our monotonic clock* it
/// belongs to, not an offset from our wall clock: our wall clock may jump
/// after the sample, and a stored offset would then carry the jump into the
/// reference (see [`ClockSample::offset_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The peer's wall clock, ms since the Unix epoch, at `mid`.
    pub peer_ms: u64,
    /// The midpoint of the round trip (our monotonic clock): when the peer
    /// is taken to have read its clock.
    pub mid: Instant,
    /// The round trip of the sample; the peer's reading is known within
    /// half of it.
    pub rtt: Duration,
    /// When it was taken (our monotonic clock).
    pub at: Instant,
}

impl ClockSample {
    /// A sample from a request sent at `sent` and answered at `received`
    /// with the peer's wall clock `peer_ms`: the peer read its clock
    /// half-way through the round trip.
    pub fn new(sent: Instant, received: Instant, peer_ms: u64) -> ClockSample {
        let rtt = received.saturating_duration_since(sent);
        ClockSample { peer_ms, mid: sent + rtt / 2, rtt, at: received }
    }

    /// The peer's wall clock at `now`, estimated from the sample by our
    /// monotonic clock (which no wall-clock step moves).
    pub fn peer_at(&self, now: Instant) -> u64 {
        self.peer_ms.saturating_add(now.saturating_duration_since(self.mid).as_millis() as u64)
    }

    /// The peer's wall clock minus ours (`wall_now_ms`), at `now`, in ms.
    pub fn offset_at(&self, now: Instant, wall_now_ms: u64) -> i64 {
        (self.peer_at(now) as i128 - wall_now_ms as i128) as i64
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
/// with offset 0), at `now`, when this node's wall clock reads
/// `wall_now_ms`. `None` when fewer than a majority could be sampled.
///
/// Each peer's clock is carried forward from its sample by the monotonic
/// clock, so a jump of this node's wall clock after the samples moves only
/// its own entry, which the median outvotes.
pub fn reference(
    me: u64,
    voters: &[u64],
    samples: &HashMap<u64, ClockSample>,
    now: Instant,
    wall_now_ms: u64,
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
                .map(|s| (s.offset_at(now, wall_now_ms), s.rtt.as_millis() as u64 / 2 + 1))
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
    pub fn wall(&self) -> &WallClock {
        &self.wall
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
        // the peer's clock worse: keep the recent one's reading, refreshed.
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
        self.reference_at(Instant::now(), self.wall.now_ms())
    }

    /// The reference at `now`, when this node's wall clock reads `wall_ms`.
    fn reference_at(&self, now: Instant, wall_ms: u64) -> Option<Reference> {
        let c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        reference(self.me, &c.voters, &c.samples, now, wall_ms, self.max_offset)
    }

    /// Every sampled peer's wall clock minus this node's, now.
    pub fn offsets(&self) -> HashMap<u64, i64> {
        let (now, wall) = (Instant::now(), self.wall.now_ms());
        let c = self.cluster.lock().unwrap_or_else(|p| p.into_inner());
        c.samples.iter().map(|(id, s)| (*id, s.offset_at(now, wall))).collect()
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
        let wall_ms = self.wall.now_ms();
        let reference_ms = self
            .reference_at(now, wall_ms)
            .filter(|r| r.trusted || applied.now_ms == 0)
            .map(|r| wall_ms.saturating_add_signed(r.median_offset_ms).saturating_sub(r.uncertainty_ms));
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
    /// This node's wall clock in the tests of `reference`.
    const WALL: u64 = 1_700_000_000_000;

    /// A sample taken at `at` of a peer `offset_ms` off [`WALL`].
    fn sample(offset_ms: i64, at: Instant) -> ClockSample {
        ClockSample { peer_ms: WALL.saturating_add_signed(offset_ms), mid: at, rtt: Duration::from_millis(1), at }
    }

    #[test]
    fn one_bad_clock_in_three_or_two_in_five_do_not_move_the_reference() {
        let now = Instant::now();
        let bound = Duration::from_millis(500);
        // Seen from a good node: peer 3 is an hour ahead.
        let s: HashMap<u64, ClockSample> = [(2, sample(10, now)), (3, sample(HOUR, now))].into();
        let r = reference(1, &[1, 2, 3], &s, now, WALL, bound).unwrap();
        assert_eq!((r.median_offset_ms, r.trusted), (10, true), "the median of 0, 10 and an hour");
        // Seen from the bad node itself: the others are an hour behind it.
        let s: HashMap<u64, ClockSample> = [(1, sample(-HOUR, now)), (2, sample(-HOUR + 10, now))].into();
        let r = reference(3, &[1, 2, 3], &s, now, WALL, bound).unwrap();
        assert!(r.trusted);
        assert!((r.own_offset_ms() - HOUR).abs() <= 10, "{r:?}");
        // Five nodes, two wrong either way.
        let s: HashMap<u64, ClockSample> =
            [(2, sample(5, now)), (3, sample(-5, now)), (4, sample(HOUR, now)), (5, sample(-HOUR, now))].into();
        let r = reference(1, &[1, 2, 3, 4, 5], &s, now, WALL, bound).unwrap();
        assert!(r.trusted && r.median_offset_ms.abs() <= 5, "{r:?}");
    }

    #[test]
    fn no_majority_no_reference_and_disagreement_is_not_trusted() {
        let now = Instant::now();
        let bound = Duration::from_millis(500);
        assert_eq!(reference(1, &[1, 2, 3], &HashMap::new(), now, WALL, bound), None);
        // Two of three sampled, an hour apart: which one is wrong is unknown.
        let s: HashMap<u64, ClockSample> = [(2, sample(HOUR, now))].into();
        let r = reference(1, &[1, 2, 3], &s, now, WALL, bound).unwrap();
        assert!(!r.trusted, "{r:?}");
        // Stale samples are not used.
        let old = now.checked_sub(SAMPLE_TTL * 2).unwrap_or(now);
        let s: HashMap<u64, ClockSample> = [(2, sample(0, old)), (3, sample(0, old))].into();
        if old != now {
            assert_eq!(reference(1, &[1, 2, 3], &s, now, WALL, bound), None);
        }
    }

    #[test]
    fn a_sample_splits_the_round_trip() {
        let sent = Instant::now();
        let s = ClockSample::new(sent, sent + Duration::from_millis(20), 1_000_510);
        assert_eq!(s.rtt, Duration::from_millis(20));
        // Our wall clock read 1_000_000 when we sent it: at the midpoint
        // it read 1_000_010, so the peer is 500 ms ahead.
        assert_eq!(s.offset_at(sent + Duration::from_millis(10), 1_000_010), 500);
        // A second later, by the monotonic clock, it still is.
        assert_eq!(s.offset_at(sent + Duration::from_millis(1_010), 1_001_010), 500);
    }

    #[test]
    fn a_jump_of_this_node_s_wall_clock_after_the_samples_does_not_move_the_reference() {
        let t0 = Instant::now();
        let bound = Duration::from_millis(500);
        let s: HashMap<u64, ClockSample> = [(2, sample(3, t0)), (3, sample(-3, t0))].into();
        let t = t0 + Duration::from_millis(400);
        let steady = reference(1, &[1, 2, 3], &s, t, WALL + 400, bound).unwrap();
        let at = |r: Reference, wall: u64| wall.saturating_add_signed(r.median_offset_ms);
        assert_eq!(at(steady, WALL + 400), WALL + 400);
        // Our clock jumps an hour ahead before the next samples: the peers'
        // readings, carried forward by monotonic time, outvote it, and this
        // node is the one seen as off.
        let jumped = reference(1, &[1, 2, 3], &s, t, WALL + 400 + HOUR as u64, bound).unwrap();
        assert_eq!(at(jumped, WALL + 400 + HOUR as u64), WALL + 400 + 3, "{jumped:?}");
        assert!(jumped.trusted && (jumped.own_offset_ms() - HOUR).abs() <= 3, "{jumped:?}");
        // An hour back: the lower median is its own clock, but the peers do
        // not agree with it, so the reference steers nothing.
        let back = reference(1, &[1, 2, 3], &s, t, WALL + 400 - HOUR as u64, bound).unwrap();
        assert!(!back.trusted || at(back, WALL + 400 - HOUR as u64) >= WALL, "{back:?}");
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

    /// A wall clock that a test moves.
    struct Movable(std::sync::atomic::AtomicI64);

    impl WallTime for Movable {
        fn now_ms(&self) -> u64 {
            SystemWallTime.now_ms().saturating_add_signed(self.0.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    /// The hole the simulation found (its seeds 4, 7 and 8 of the first
    /// version): the leader's wall clock jumped forward after its peers
    /// were sampled, and replicated time stepped forward by the jump.
    #[test]
    fn a_forward_jump_of_the_leader_s_wall_clock_does_not_move_replicated_time() {
        let at = Instant::now();
        let wall = Arc::new(Movable(std::sync::atomic::AtomicI64::new(0)));
        let (_tx, rx) = watch::channel(Applied { index: 1, now_ms: SystemWallTime.now_ms(), at });
        let clock = ProposerClock::new(1, WallClock::from_source(wall.clone()), Duration::from_millis(500), rx);
        clock.set_voters(vec![1, 2, 3]);
        let sampled = Instant::now();
        let peers = SystemWallTime.now_ms();
        for peer in [2, 3] {
            clock
                .record(peer, ClockSample { peer_ms: peers, mid: sampled, rtt: Duration::from_millis(1), at: sampled });
        }
        let before = clock.stamp();
        wall.0.store(HOUR, std::sync::atomic::Ordering::SeqCst);
        let after = clock.stamp();
        assert!(after < before + 5_000, "a jump of an hour moved replicated time from {before} to {after}");
        let r = clock.reference().unwrap();
        assert!(r.trusted && r.own_offset_ms() > HOUR - 5_000, "this node is the one seen as off: {r:?}");
    }

    #[test]
    fn the_clock_follows_the_applied_floor_on_a_follower() {
        let at = Instant::now();
        let (_tx, rx) = watch::channel(Applied { index: 1, now_ms: 1_000_000, at });
        struct Skewed;
        impl WallTime for Skewed {
            fn now_ms(&self) -> u64 {
                SystemWallTime.now_ms() + HOUR as u64
            }
        }
        let clock = ProposerClock::new(1, WallClock::from_source(Arc::new(Skewed)), Duration::from_millis(500), rx);
        let v = clock.stamp();
        // An hour of wall-clock skew does not show: no reference, so the
        // floor plus monotonic time since it was applied.
        assert!((1_000_000..1_000_000 + 5_000).contains(&v), "{v}");
    }
}
