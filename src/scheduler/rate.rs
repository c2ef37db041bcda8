//! Per-callback start-rate limits, enforced by the leader's dispatcher
//! before it proposes an assignment: a limited task stays `ready`, and no
//! worker is handed work it must throw back.
//!
//! A token bucket per callback: `burst` tokens at most, refilled at the
//! limit's rate on the leader's monotonic clock. A new leader starts every
//! bucket **empty**, so across a leader change any window of length T
//! admits at most `rate * T + burst` starts: the old leader's bucket held
//! at most `burst`, and the new one only earns tokens at `rate`.

use tokio::time::Instant;

use crate::domain::RateLimit;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// An empty bucket (a new leader's).
    pub fn empty(now: Instant) -> Self {
        TokenBucket { tokens: 0.0, refilled: now }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * limit.per_second();
        self.tokens = (self.tokens + earned).min(f64::from(limit.burst));
        self.refilled = now;
    }

    /// Whole starts allowed now.
    pub fn available(&mut self, limit: &RateLimit, now: Instant) -> u32 {
        self.refill(limit, now);
        self.tokens.floor() as u32
    }

    /// How long until a whole start is allowed (zero if one is now).
    pub fn until_next(&self, limit: &RateLimit, now: Instant) -> std::time::Duration {
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * limit.per_second();
        let tokens = (self.tokens + earned).min(f64::from(limit.burst));
        if tokens >= 1.0 || limit.per_second() <= 0.0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs_f64((1.0 - tokens) / limit.per_second())
    }

    /// Spend `n` starts (at most what [`TokenBucket::available`] said).
    pub fn take(&mut self, n: u32) {
        self.tokens = (self.tokens - f64::from(n)).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMIT: RateLimit = RateLimit { count: 50, per_ms: 1000, burst: 10 };

    #[test]
    fn starts_empty_fills_at_the_rate_and_caps_at_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::empty(t0);
        assert_eq!(b.available(&LIMIT, t0), 0, "a new leader has no credit");
        assert_eq!(b.available(&LIMIT, t0 + Duration::from_millis(100)), 5);
        b.take(5);
        assert_eq!(b.available(&LIMIT, t0 + Duration::from_millis(100)), 0);
        assert_eq!(b.available(&LIMIT, t0 + Duration::from_secs(60)), 10, "capped at the burst");
    }

    #[test]
    fn any_window_admits_at_most_rate_times_length_plus_burst() {
        // Take greedily every 7 ms for 10 s, and count starts per window.
        let t0 = Instant::now();
        let mut b = TokenBucket::empty(t0);
        let mut starts = Vec::new();
        for step in 0..(10_000 / 7) {
            let now = t0 + Duration::from_millis(step * 7);
            let n = b.available(&LIMIT, now);
            b.take(n);
            starts.extend(std::iter::repeat_n(step * 7, n as usize));
        }
        for window_start in (0..9_000).step_by(50) {
            let n = starts.iter().filter(|&&t| t >= window_start && t < window_start + 1000).count();
            assert!(n <= 60, "{n} starts in the second from {window_start} ms");
        }
        let total = starts.len() as f64;
        assert!((total - 500.0).abs() <= 10.0, "{total} starts in 10 s at 50/s");
    }
}
