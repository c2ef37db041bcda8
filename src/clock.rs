//! The proposer's clock: how the leader stamps commands.
//!
//! A stamp is `max(wall clock, replicated now, previous stamp)`. The
//! replicated now (the highest stamp the state machine has applied) is the
//! floor, so time in the state machine never goes back, across restarts and
//! leader changes alike. Apply itself never reads a clock; it only takes
//! `max(now, stamp)`.
//!
//! Wall-clock skew between nodes can move replicated time forward by the
//! skew at a failover. Nothing safety-critical depends on replicated time
//! alone (see DESIGN.md, "Time"): lease expiry is also bounded by the
//! leader's own monotonic clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::raft::state_machine::Applied;

/// Milliseconds since the Unix epoch by this machine's wall clock.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Clone)]
pub struct ProposerClock {
    applied: watch::Receiver<Applied>,
    /// The last stamp handed out by this node, so stamps never go back even
    /// if the wall clock does.
    last: Arc<AtomicU64>,
}

impl ProposerClock {
    pub fn new(applied: watch::Receiver<Applied>) -> Self {
        ProposerClock { applied, last: Arc::new(AtomicU64::new(0)) }
    }

    /// A stamp for a new command.
    pub fn stamp(&self) -> u64 {
        let floor = self.applied.borrow().now_ms;
        let candidate = wall_ms().max(floor);
        let prev = self.last.fetch_max(candidate, Ordering::AcqRel);
        prev.max(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_go_below_replicated_time() {
        let ahead = wall_ms() + 3_600_000;
        let (tx, rx) = watch::channel(Applied { index: 1, now_ms: ahead });
        let clock = ProposerClock::new(rx);
        assert!(clock.stamp() >= ahead);
        tx.send_replace(Applied { index: 2, now_ms: 0 });
        // The floor moved back (it cannot in practice); stamps still do not.
        assert!(clock.stamp() >= ahead);
    }
}
