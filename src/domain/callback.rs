//! Callbacks: the named handlers tasks are scheduled against, and their
//! execution settings.

use serde::{Deserialize, Serialize};

/// A callback's settings. Every duration is in milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CallbackConfig {
    pub name: String,
    /// Attempts before a task goes to the dead-letter queue (>= 1).
    pub max_attempts: u32,
    /// Lease length: a worker must renew within this, or the task is re-run.
    pub lease_ms: u64,
    /// Longest one attempt may run.
    pub timeout_ms: u64,
    /// Most tasks of this callback running at once, across all workers;
    /// 0 means no limit beyond the workers' own credits.
    pub concurrency: u32,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Cap on the retry delay.
    pub backoff_max_ms: u64,
    /// Most starts per period across all workers, enforced by the leader's
    /// dispatcher; `None`: no limit.
    pub rate: Option<RateLimit>,
    /// How long finished tasks are kept; unset fields take the cluster's
    /// default (a `drover server` option of the leader).
    pub retention: Retention,
}

/// A start-rate limit: `count` starts per `per_ms`, with bursts of up to
/// `burst` starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per_ms: u64,
    pub burst: u32,
}

impl RateLimit {
    /// Starts per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) * 1000.0 / self.per_ms.max(1) as f64
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.count == 0 {
            return Err("a rate must allow at least 1 start per period; leave --rate out for no limit".into());
        }
        if !(1_000..=3_600_000).contains(&self.per_ms) {
            return Err("a rate's period must be between 1s and 1h (N/s, N/m or N/h)".into());
        }
        if self.burst == 0 || self.burst > 1_000_000 {
            return Err("burst must be between 1 and 1,000,000".into());
        }
        Ok(())
    }
}

/// How long finished tasks are kept, per final state, counted from when
/// they finished (replicated time). `None`: the cluster default.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Retention {
    pub succeeded_ms: Option<u64>,
    pub cancelled_ms: Option<u64>,
    pub failed_ms: Option<u64>,
    pub dead_ms: Option<u64>,
}

impl Retention {
    /// The setting for tasks that finished in `state` (None for states
    /// that are not final).
    pub fn for_state(&self, state: super::TaskState) -> Option<u64> {
        use super::TaskState::*;
        match state {
            Succeeded => self.succeeded_ms,
            Cancelled => self.cancelled_ms,
            Failed => self.failed_ms,
            Dead => self.dead_ms,
            _ => None,
        }
    }

    /// These settings, with unset ones taken from `defaults`.
    pub fn or(self, defaults: Retention) -> Retention {
        Retention {
            succeeded_ms: self.succeeded_ms.or(defaults.succeeded_ms),
            cancelled_ms: self.cancelled_ms.or(defaults.cancelled_ms),
            failed_ms: self.failed_ms.or(defaults.failed_ms),
            dead_ms: self.dead_ms.or(defaults.dead_ms),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("succeeded", self.succeeded_ms),
            ("cancelled", self.cancelled_ms),
            ("failed", self.failed_ms),
            ("dead", self.dead_ms),
        ] {
            if v.is_some_and(|ms| ms > 10 * 365 * 24 * 3_600_000) {
                return Err(format!("retention of {name} tasks must be at most 10 years"));
            }
        }
        Ok(())
    }
}

impl CallbackConfig {
    /// Defaults used by `drover callback register` and by auto-registration.
    pub fn with_defaults(name: impl Into<String>) -> Self {
        CallbackConfig {
            name: name.into(),
            max_attempts: 5,
            lease_ms: 30_000,
            timeout_ms: 300_000,
            concurrency: 0,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 600_000,
            rate: None,
            retention: Retention::default(),
        }
    }

    /// Check ranges; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.max_attempts > 1000 {
            return Err("max attempts must be between 1 and 1000".into());
        }
        if self.lease_ms < 1_000 || self.lease_ms > 3_600_000 {
            return Err("lease must be between 1s and 1h".into());
        }
        if self.timeout_ms < 1_000 || self.timeout_ms > 7 * 24 * 3_600_000 {
            return Err("timeout must be between 1s and 7 days".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            return Err("backoff initial must be positive and at most backoff max".into());
        }
        if self.backoff_max_ms > 7 * 24 * 3_600_000 {
            return Err("backoff max must be at most 7 days".into());
        }
        if let Some(rate) = &self.rate {
            rate.validate()?;
        }
        self.retention.validate()
    }

    /// Retry delay after failed attempt `attempt` (1-based): exponential
    /// with "equal jitter" (half fixed, half pseudo-random). The randomness
    /// is a hash of `seed`, so every replica computes the same delay.
    pub fn backoff_ms(&self, attempt: u32, seed: u64) -> u64 {
        let exp = attempt.saturating_sub(1).min(40);
        let base = self.backoff_initial_ms.saturating_mul(1u64 << exp).min(self.backoff_max_ms);
        let half = base / 2;
        half + if half == 0 { 0 } else { splitmix64(seed) % (half + 1) }
    }
}

/// A fixed pseudo-random mix (SplitMix64's finaliser).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let c =
            CallbackConfig { backoff_initial_ms: 1000, backoff_max_ms: 10_000, ..CallbackConfig::with_defaults("a") };
        for seed in 0..50 {
            let b1 = c.backoff_ms(1, seed);
            let b3 = c.backoff_ms(3, seed);
            let b9 = c.backoff_ms(9, seed);
            assert!((500..=1000).contains(&b1), "{b1}");
            assert!((2000..=4000).contains(&b3), "{b3}");
            assert!((5000..=10_000).contains(&b9), "{b9}");
            assert_eq!(b3, c.backoff_ms(3, seed), "deterministic");
        }
        let spread: std::collections::HashSet<u64> = (0..50).map(|s| c.backoff_ms(2, s)).collect();
        assert!(spread.len() > 10, "jitter spreads retries");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = CallbackConfig::with_defaults("a");
        assert!(c.validate().is_ok());
        c.max_attempts = 0;
        assert!(c.validate().unwrap_err().contains("max attempts"));
        let mut c = CallbackConfig::with_defaults("a");
        c.lease_ms = 10;
        assert!(c.validate().unwrap_err().contains("lease"));
    }
}
